"""The run folder and crash-safe writes: atomic replacement of whole files, appends of whole log lines; and reads of
its JSON files."""
import io
import json
import math
import numbers
import os
import shutil
import tempfile

import numpy as np
import torch

from common.errors import TimeMAEError, WriteError
from common.modes import umask

RUN_OUTPUTS = ("args.json", "pretrain_result.txt", "pretrain_log.jsonl", "linear_result.txt", "result.txt",
               "pretrain_model.pkl", "model.pkl", "metrics.json")
RUN_STATE = "last.pkl"  # the state to resume from; present only while a run is unfinished
# written from a run's outputs afterwards: visualize.py's figures, tools.fineall_margin's candidates (their
# writers take the names from here, so that --overwrite removes what they write)
FIGURES = {"curves": "curves.png", "codebook": "codebook.png", "finetune": "finetune.png", "tsne": "tsne.png"}
CANDIDATES = "fineall_candidates.npz"
RUN_DERIVED = (*FIGURES.values(), CANDIDATES)
TMP_PREFIX = ".tmp-"                       # _atomic's temporary files, which half_written recognises
OVERWRITE_ASIDE = f"{TMP_PREFIX}overwrite-"   # the folder --overwrite moves the old run's files to before removing them


def prepare_run_dir(path, overwrite, resume=False):
    """Create the run folder; refuse to reuse one that holds results unless overwrite is set (`resume`: --resume
    was given, and the folder has no args.json to resume by). Overwriting removes every output of the old run at
    once (and the files drawn from them), so that none of them can pass for the new run's: a new run that writes
    fewer files (no fine-tuning, say) leaves no old model.pkl behind."""
    existing = [f for f in (*RUN_OUTPUTS, RUN_STATE) if os.path.exists(os.path.join(path, f))]
    if existing and resume and not overwrite:
        raise TimeMAEError(f"--resume: run folder {path!r} holds {', '.join(existing)} but no args.json, so the "
                           "run's flags cannot be checked: restore it, or start afresh with --overwrite")
    if existing and not overwrite:
        raise TimeMAEError(f"run folder {path!r} already holds {', '.join(existing)}; pass --resume to continue "
                           "that run, --overwrite to replace it, or choose another --save_path")
    make_writable_dir(path, "--save_path")
    stale = [f for f in (*RUN_OUTPUTS, RUN_STATE, *RUN_DERIVED) if os.path.lexists(os.path.join(path, f))] + \
        half_written(path)
    if not stale:
        return path
    # all or nothing: the old files move aside first (renames in one folder), and back if one cannot
    aside = tempfile.mkdtemp(dir=path, prefix=OVERWRITE_ASIDE)
    moved = []
    try:
        for name in stale:
            os.rename(os.path.join(path, name), os.path.join(aside, name))
            moved.append(name)
    except OSError as e:
        for name in moved:
            os.rename(os.path.join(aside, name), os.path.join(path, name))
        os.rmdir(aside)
        raise TimeMAEError(f"--overwrite: cannot remove {os.path.join(path, stale[len(moved)])!r}: {e.strerror}; "
                           "the old run is left as it was") from None
    try:
        shutil.rmtree(aside)
    except OSError as e:
        raise TimeMAEError(f"--overwrite: the old run's files, moved to {aside!r}, cannot be removed: "
                           f"{e.strerror}") from None
    return path


def half_written(path):
    """What a killed process left in run folder `path`: _atomic's temporary files of the run's file names, and
    the folder an --overwrite moved an old run to. A user's own .tmp- file is none of them."""
    names = (*RUN_OUTPUTS, RUN_STATE, *RUN_DERIVED)
    return sorted(f for f in os.listdir(path)
                  if f.startswith(OVERWRITE_ASIDE) or f.startswith(TMP_PREFIX) and f.endswith(names))


def clear_half_written(path):
    """Remove what half_written finds in run folder `path` (--resume, before the run goes on)."""
    for name in half_written(path):
        leftover = os.path.join(path, name)
        shutil.rmtree(leftover) if os.path.isdir(leftover) and not os.path.islink(leftover) else os.remove(leftover)


def make_writable_dir(path, what):
    """Create folder `path` (and its parents) and check that files can be written in it; `what` names the
    setting in the one-line error."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise TimeMAEError(f"{what} {path!r} cannot be created: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise TimeMAEError(f"{what} {path!r} is not writable by this user")
    return path


def check_output_file(path, what, create_folder=False):
    """Refuse, before any work, output file `path` (given by setting `what`) whose folder is missing or not
    writable, or that names a folder; the file itself is written later, atomically. With `create_folder` a
    missing folder is accepted where it can be created: its writer creates it, and checking creates nothing."""
    folder = os.path.dirname(os.path.abspath(path))
    if create_folder and not os.path.isdir(folder):
        parent = folder
        while not os.path.lexists(parent):   # a link to nothing is in the way, not a folder to make
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise TimeMAEError(f"{what} {path!r}: its folder cannot be created in {parent!r}")
    elif not os.path.isdir(folder):
        raise TimeMAEError(f"{what} {path!r}: its folder {folder!r} does not exist")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise TimeMAEError(f"{what} {path!r}: its folder {folder!r} is not writable by this user")
    if os.path.isdir(path):
        raise TimeMAEError(f"{what} {path!r} is a folder; name a file")
    return path


def write_error(path, error, hint=""):
    """An OSError met writing `path` as a WriteError: one line on the command line, and still an OSError."""
    return WriteError(f"cannot write {path!r}: {error.strerror or error}{hint}")


def _atomic(path, write):
    """Write through a temporary file in the same folder, then rename: a crash leaves the old file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=os.path.basename(path))
    except OSError as e:
        raise write_error(path, e, " (its folder must exist and be writable)") from None
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600 files; results get the umask's mode, as open() does
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from None
        raise


def atomic_save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)   # in memory first: a full disk is then the file's OSError, not torch's RuntimeError
    _atomic(path, lambda f: f.write(buffer.getbuffer()))


def atomic_save_npy(array, path):
    _atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def atomic_save_npz(path, **arrays):
    _atomic(path, lambda f: np.savez(f, allow_pickle=False, **arrays))


def atomic_write_text(text, path):
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_json(obj, path):
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def atomic_save_figure(fig, path, dpi=110):
    """A matplotlib Figure (made without pyplot, so nothing holds it once the caller lets go) as a PNG at `path`,
    whole or not at all."""
    _atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def read_jsonl(path):
    """The JSON objects of file `path`, one a line (pretrain_log.jsonl); a line that is none is a one-line error."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        raise TimeMAEError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise TimeMAEError(f"cannot read {path}: expected one JSON object a line ({e})") from None


def read_json(path):
    """The JSON object in file `path` (args.json, metrics.json); a file that cannot be read, is no JSON or holds
    something else is a one-line error."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except OSError as e:
        raise TimeMAEError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
        raise TimeMAEError(f"cannot read {path}: expected a JSON object, the file is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise TimeMAEError(f"cannot read {path}: expected a JSON object, got a {type(obj).__name__}")
    return obj


def is_number(value):
    """A JSON number (bool, which Python counts as one, aside)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


SCORES = ("acc", "f1")   # metrics.json's entries that are fractions of series


def metric(metrics, path, *keys):
    """metrics[keys[0]][keys[1]]... of metrics.json at `path`: None where an entry is absent (or null), a finite
    number (a score, SCORES, in [0, 1]), or a one-line error for anything else: a file edited by hand is never
    averaged or plotted as it stands."""
    value = metrics
    for i, key in enumerate(keys):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise TimeMAEError(f"cannot read {path}: expected {'.'.join(keys[:i])} to be an object, got {value!r}")
        value = value.get(key)
    if value is not None and not is_number(value):
        raise TimeMAEError(f"cannot read {path}: expected {'.'.join(keys)} to be a number, got {value!r}")
    if value is not None and not (0 <= value <= 1 if keys[-1] in SCORES else math.isfinite(value)):
        kind = "a score in [0, 1]" if keys[-1] in SCORES else "a finite number"
        raise TimeMAEError(f"cannot read {path}: expected {'.'.join(keys)} to be {kind}, got {value!r}")
    return value


def append_line(path, line):
    """Append one line of a log (a kill can lose at most the line being written, never earlier ones)."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:   # as for whole files
        raise write_error(path, e) from None
