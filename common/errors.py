"""The one exception type the command line turns into a one-line message instead of a traceback."""


class TimeMAEError(Exception):
    """A problem with the user's input (paths, data, flags, checkpoints) that they can fix."""
