"""The one exception type the command line turns into a one-line message instead of a traceback."""


class TimeMAEError(Exception):
    """A problem with the user's input (paths, data, flags, checkpoints) that they can fix."""


class WriteError(TimeMAEError, OSError):
    """A file that could not be written (a missing or read-only folder, a full disk): an OSError that the
    command line also reports in one line."""
