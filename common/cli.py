"""The command-line parser of every entry point: argparse's, with a usage error in one line."""
import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose usage errors (an unknown flag, a value its type refuses, a missing argument)
    are one line, `error: ...` with exit code 2 and a pointer to --help, rather than the whole usage first."""

    def error(self, message):
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the arguments)\n")

    def refuse(self, message):
        """A check of the caller's own (a value the flags' types accept but the command cannot use): the
        one-line error and exit code 2, without the pointer to --help."""
        self.exit(2, f"error: {message}\n")
