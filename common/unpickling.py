"""What a weights-only torch.load refused, for the one-line errors of the readers of data files and checkpoints."""
import re


def refused_global(error):
    """The Python object a weights-only torch.load refused, as its UnpicklingError names it ('GLOBAL module.name'),
    or None when the bytes were no pickle at all."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None
