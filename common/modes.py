"""The modes new files and folders get: mkstemp and mkdtemp create them private, and what is written for the user
gets the mode open() and os.makedirs would give."""
import os


def umask():
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
