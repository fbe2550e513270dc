"""The one exception type the command line turns into a one-line message instead of a traceback, and the one-line
form of a library's error message that such messages quote."""


class TimeMAEError(ValueError):
    """A problem with the user's input (paths, data, flags, checkpoints) that they can fix; a ValueError, as
    scikit-learn raises for input it refuses, so that `except ValueError` catches it."""


class WriteError(TimeMAEError, OSError):
    """A file that could not be written (a missing or read-only folder, a full disk): an OSError that the
    command line also reports in one line."""


def one_line(error, limit=200):
    """An exception's message on one line (its whitespace collapsed), cut at `limit` characters."""
    return " ".join(str(error).split())[:limit]
