"""Reading the benchmark formats into arrays of shape (N, T, C) with labels 0..K-1.

Formats (the folder decides which one is read, in this order):
- TS-TCC dicts `train.pt`, `val.pt` (optional), `test.pt`: {'samples': (N, C, T), 'labels': (N,)} (HAR, Epilepsy).
- `train_new.pt`/`test_new.pt`, or `train.pt`/`test.pt` for uwave: samples (N, T, C), labels 1..K (UWave 896/3582).
- the extracted UCI `UCI HAR Dataset/` folder (`train/Inertial Signals/...`), split as `data.prepare` splits it.
- UEA/UCR `<Name>_TRAIN.ts`/`<Name>_TEST.ts` or `.arff`: univariate or multivariate, variable lengths NaN-padded.
- `--dataset numpy`: a `.npy` file (N, C, T) or (N, T) of unlabelled series, or a `.npz` with `x` and optionally
  `y`, `x_val`/`y_val`, `x_test`/`y_test` (see NUMPY_FORMAT).

New series (the API, tools.encode) are prepared as the training data was: `data_description` is what a
checkpoint keeps of it (channels, length, normalisation statistics, class names, length policy) and
`prepare_series` applies it.

Lengths come from the training data: every split has the training split's number of time steps T. A test
or validation series of a variable-length set (UEA/UCR, NumPy arrays) longer than every training series is
cropped to its first T steps (`DatasetSplits.cropped` and `cropped_val` count them, and a run logs them); a
fixed-length split (.pt, HAR) whose length differs from train's is refused. Padding stays NaN through
`normalize`, so the model can tell padding from data (TimeMAE.window_padding).

Missing values inside a series (gaps: NaN before a channel's last value) are refused, unless `gaps` is
"interpolate" (`--gaps interpolate`): then `fill_gaps` fills them linearly in time, and the NaN before a channel's
first value with that value. NaN after a channel's last value is always padding, never filled.
"""
import glob
import math
import numbers
import os
import pickle
import shlex
import tempfile
import zipfile
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import pandas as pd
import torch

from common.errors import TimeMAEError, one_line
from common.unpickling import refused_global
from data.builders import read_har
from data.formats import DEFAULT_FOLDERS, UEA_NAMES, UEA_READERS, did_you_mean, float32_values, stack_ragged
from data.sources import SourceTree

DATA_ENV = "TIMEMAE_DATA"  # root folder holding one sub-folder per dataset

TIME_MAJOR_PT = {"uwave"}  # datasets whose plain train.pt/test.pt hold (N, T, C)
NUMPY_FORMAT = ("a .npy array (N, C, T) or (N, T) of unlabelled series, or a .npz with 'x' (N, C, T) or (N, T) "
                "and optional 'y' (N,) labels, 'x_val'/'y_val', 'x_test'/'y_test'")
# What happens to a new series whose length differs from the training length T: a shorter one is NaN-padded
# at the end (padding the model hides), as variable-length training series are; a longer one is refused (the
# model has one position embedding per window of the first T steps).
LENGTH_POLICY = {"shorter": "pad", "longer": "refuse"}
GAPS = ("refuse", "interpolate")  # what the loaders do with NaN inside a series (see the module doc)
DESCRIPTION_DEFAULTS = {"gaps": "refuse"}   # data descriptions written before --gaps: gaps were refused


@dataclass
class DatasetSplits:
    """float32 arrays (N, T, C) and int64 labels 0..K-1; val is None when the dataset ships none, test is None
    when it has no test split, and every label is None (classes empty) for unlabelled data."""
    name: str
    train_x: np.ndarray
    train_y: Optional[np.ndarray]
    test_x: Optional[np.ndarray]
    test_y: Optional[np.ndarray]
    val_x: Optional[np.ndarray] = None
    val_y: Optional[np.ndarray] = None
    classes: tuple = ()
    unlabelled_x: Optional[np.ndarray] = None  # the pretraining pool when it is not train + val (see restrict)
    cropped: int = 0                            # test series cropped to the training length (variable-length sets)
    cropped_val: int = 0                        # validation series cropped so
    gaps: str = "refuse"                        # one of GAPS: how NaN inside the series was treated
    filled: int = 0                             # series (of every split) whose gaps --gaps interpolate filled
    stats: Optional[dict] = None               # set by normalize: {'normalize', 'mean' (C,), 'std' (C,)}

    @property
    def labelled(self):
        return self.train_y is not None

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def seq_len(self):
        return self.train_x.shape[1]

    @property
    def channels(self):
        return self.train_x.shape[2]

    def cropped_note(self):
        """The line a run logs about the series cropped to the training length, naming each split; None if none."""
        counts = [f"{n} {split}" for split, n in (("validation", self.cropped_val), ("test", self.cropped)) if n]
        if counts:
            return (f"{' and '.join(counts)} series are longer than every training series: cropped to their first "
                    f"{self.seq_len} steps (the training length sizes the model)")
        return None

    def pretrain_x(self):
        """Unlabelled pretraining data: train + val, as the reference code does (or the pool set by restrict)."""
        if self.unlabelled_x is not None:
            return self.unlabelled_x
        return self.train_x if self.val_x is None else np.concatenate([self.train_x, self.val_x])


def dataset_name(dataset, ucr_folder=None):
    """What a run's data is called (its default run folder exp/<name>, the summaries' dataset): a UCR/UEA set
    (--dataset ucr) by its name, any other by --dataset."""
    return ucr_folder if dataset == "ucr" and ucr_folder else dataset


def resolve_folder(dataset, data_path=None, ucr_folder=None):
    """The dataset's folder (for numpy: its file). For ucr, --data_path DIR --UCR_folder NAME reads DIR/NAME as
    the reference code does when that is a folder, else DIR when DIR is NAME's folder: holding the files the
    loader reads for NAME (see _holds_dataset), or named NAME (so a resolved folder resolves to itself, present
    or not). DIR/NAME is also the folder data.prepare writes NAME to."""
    if dataset == "ucr" and ucr_folder and (os.path.basename(ucr_folder) != ucr_folder or ucr_folder in (".", "..")
                                            or (os.altsep and os.altsep in ucr_folder)):
        raise TimeMAEError(f"--UCR_folder {ucr_folder!r}: expected an archive name such as ArrowHead, not a path; "
                           "pass the folder that holds it as --data_path")
    if data_path:
        if dataset != "numpy" and os.path.isfile(data_path):   # a file of the dataset, say
            raise TimeMAEError(f"--data_path {data_path!r} is a file; pass the folder that holds it")
        if dataset != "ucr" or not ucr_folder:
            return data_path
        inner = os.path.join(data_path, ucr_folder)
        if os.path.isdir(inner):
            return inner
        named = os.path.basename(os.path.normpath(data_path)) == ucr_folder
        return data_path if named or _holds_dataset(data_path, ucr_folder) else inner
    if dataset == "numpy":
        raise TimeMAEError(f"--dataset numpy needs --data_path FILE: {NUMPY_FORMAT}")
    sub = ucr_folder if dataset == "ucr" else DEFAULT_FOLDERS[dataset]
    if not sub:
        raise TimeMAEError("--dataset ucr needs --UCR_folder <Name> (or --data_path <folder>)")
    return os.path.join(os.environ.get(DATA_ENV, "data"), sub)


def _holds_dataset(folder, name):
    """Whether `folder` holds files load_dataset reads as dataset `name` (a stray model.pt or NAME_notes.txt
    does not count). A file name is enough: a broken link is reported when it is read."""
    return _layout(folder) is not None or _uea_train(folder, name) is not None


def _layout(folder):
    """Which layout of fixed file names `folder` holds, the first in load_dataset's order of preference: "pt_new"
    (train_new.pt + test_new.pt), "pt" (train.pt + test.pt, val.pt optional) or "har" (the extracted UCI folder);
    None for none (then UEA/UCR files are looked for: _uea_train). A name is enough (a link to nothing, a folder):
    reading the file then says what is wrong with it, rather than that no dataset is there."""
    has = lambda f: os.path.lexists(os.path.join(folder, f))  # noqa: E731
    if has("train_new.pt") and has("test_new.pt"):
        return "pt_new"
    if has("train.pt") and has("test.pt"):
        return "pt"
    if os.path.isdir(os.path.join(folder, "train", "Inertial Signals")):
        return "har"
    return None


def existing_folder(dataset, data_path=None, ucr_folder=None):
    """The dataset's folder (resolve_folder), or a one-line error that says how to fetch it when it is missing."""
    folder = resolve_folder(dataset, data_path, ucr_folder)
    if not os.path.isdir(folder):
        prepare = " ".join(["python -m data.prepare", dataset, "--download",
                            *(["--data_path", shlex.quote(data_path)] if data_path else []),
                            *(["--UCR_folder", shlex.quote(ucr_folder)] if ucr_folder else [])])
        raise TimeMAEError(f"data folder {folder!r} does not exist{did_you_mean(folder)} (set --data_path or "
                           f"${DATA_ENV}, or fetch it: {prepare})")
    return folder


def load_dataset(dataset, data_path=None, ucr_folder=None, gaps="refuse"):
    """Load a benchmark by name (har, epilepsy, uwave, ps, ad, ucr) from its folder, or `numpy` from its .npy/.npz
    file; `gaps`: one of GAPS; see the module doc."""
    if dataset == "numpy":
        return _load_numpy(resolve_folder(dataset, data_path, ucr_folder), gaps)
    folder = existing_folder(dataset, data_path, ucr_folder)
    # --UCR_folder NAME reads the archive's NAME files alone: the archive's Epilepsy is not the paper's .pt files
    layout = None if dataset == "ucr" and ucr_folder else _layout(folder)
    if layout == "pt_new":
        splits = _load_pt(folder, "train_new.pt", None, "test_new.pt", time_major=True)
    elif layout == "pt":
        val = "val.pt" if os.path.lexists(os.path.join(folder, "val.pt")) else None
        splits = _load_pt(folder, "train.pt", val, "test.pt", time_major=dataset in TIME_MAJOR_PT)
    elif layout == "har":
        splits = _load_raw_har(folder)
    else:
        return _finalise(dataset, *_load_uea(folder, ucr_folder or UEA_NAMES.get(dataset)), fixed=False, gaps=gaps)
    return _finalise(dataset, *splits, gaps=gaps)


# ----------------------------------------------------------------------------------------------- .pt files

def _numpy_globals():
    """What unpickling a NumPy array needs (its reconstructor, ndarray, dtypes): .pt files of the TS-TCC
    family often store arrays, which weights-only loading admits only by name."""
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [np.ndarray(0).__reduce__()[0], np.ndarray, np.dtype, *dtypes]


def read_pt(path):
    """A .pt data file, read weights-only: tensors, NumPy arrays and plain values; a pickle of anything else
    (which could run code when loaded) is refused in one line."""
    if not os.path.isfile(path):
        raise TimeMAEError(f"{path} is not a file (a folder, or a link to nothing); expected a .pt data file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if refused := refused_global(e):
            raise TimeMAEError(f"cannot read {path}: it holds Python objects other than tensors, arrays and plain "
                               f"values ({refused}), which are not loaded: a data file must not run code") \
                from None
        raise TimeMAEError(f"cannot read {path}: UnpicklingError: {one_line(e)}") from None
    except Exception as e:
        raise TimeMAEError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def _load_pt(folder, train, val, test, time_major):
    out = []
    for name in (train, val, test):
        if name is None:
            out.append((None, None))
            continue
        path = os.path.join(folder, name)
        x, y = unpack_pt(read_pt(path), path)
        if x.ndim == 2:  # univariate (N, T)
            x = x[:, :, None] if time_major else x[:, None, :]
        if x.ndim != 3:
            raise TimeMAEError(f"{path}: samples must have 3 dimensions (N, C, T) or (N, T, C), got {x.shape}")
        _check_sizes(x, f"{path}: samples")
        out.append((x if time_major else x.transpose(0, 2, 1), y))
    (trx, try_), (vax, vay), (tex, tey) = out
    return trx, try_, vax, vay, tex, tey


def unpack_pt(obj, path):
    """(samples, labels) as NumPy arrays from what .pt file `path` holds: TS-TCC's dict {'samples', 'labels'}, or
    a pair (samples, labels); anything else, unequal counts or no samples are refused in one line."""
    if isinstance(obj, dict) and "samples" in obj and "labels" in obj:
        x, y = obj["samples"], obj["labels"]
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = obj
    else:
        raise TimeMAEError(f"{path}: expected a dict with 'samples' and 'labels' (or a pair (samples, labels))")
    try:
        x = float32_values(_numpy_values(x, f"{path}: samples"), f"{path}: samples")
    except TimeMAEError:   # its own words already (a ValueError too)
        raise
    except (TypeError, ValueError) as e:
        raise TimeMAEError(f"{path}: samples must be numbers in an array of equal-length series ({e})") from None
    y = label_vector(_numpy_values(y, f"{path}: labels"), f"{path}: labels")
    if len(x) != len(y):
        raise TimeMAEError(f"{path}: {len(x)} samples but {len(y)} labels")
    if len(x) == 0:
        raise TimeMAEError(f"{path}: holds no samples")
    return x, y


def _numpy_values(x, what):
    """x as NumPy values when it is a tensor: detached and on the CPU (one saved with requires_grad is data like
    any other), bfloat16 (which NumPy lacks) as float32. Complex values are refused: a cast to real numbers would
    drop their imaginary part."""
    if torch.is_tensor(x):
        x = x.detach().cpu().resolve_conj()
        x = (x.float() if x.dtype == torch.bfloat16 else x).numpy()
    if isinstance(x, np.ndarray) and x.dtype.kind == "c":
        raise TimeMAEError(f"{what} must be real numbers, got complex values ({x.dtype})")
    return x


def _check_sizes(x, what):
    """An array of series with none, or of no channels or steps, is refused: the model would fail on it."""
    if 0 in x.shape:
        raise TimeMAEError(f"{what} holds no series, or series of no channels or steps: shape {x.shape}")


def _load_raw_har(folder):
    """The extracted `UCI HAR Dataset/` folder, split exactly as `python -m data.prepare har` splits it."""
    with tempfile.TemporaryDirectory() as work:
        (trx, try_), (vax, vay), (tex, tey) = read_har(SourceTree([folder], work))
    time_major = lambda x: float32_values(x, folder).transpose(0, 2, 1)  # noqa: E731  (N, 9, T) -> (N, T, 9)
    return time_major(trx), try_, time_major(vax), vay, time_major(tex), tey


# ----------------------------------------------------------------------------------------------- NumPy files

def load_numpy_file(path):
    """The array of a .npy file, or a dict of a .npz file's arrays (read whole), without pickles. A file that is
    none (a pickle, object arrays, a damaged or truncated file) is a ValueError saying so: numpy's own advice,
    to pass allow_pickle, is not the user's to take."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError("not a NumPy array file of numbers (numpy.save / savez), or a damaged or truncated one; "
                         "pickles and object arrays are refused") from None


def _load_numpy(path, gaps="refuse"):
    """--dataset numpy: NUMPY_FORMAT; arrays in the aeon layout (N, C, T), labels of any type."""
    if not os.path.isfile(path):
        raise TimeMAEError(f"--data_path {path!r} is not a file; --dataset numpy reads {NUMPY_FORMAT}")
    if not path.lower().endswith((".npy", ".npz")):   # a torch .pt is a zip too, which numpy would open as .npz
        raise TimeMAEError(f"--data_path {path!r}: --dataset numpy reads {NUMPY_FORMAT}; name a .npy or .npz file")
    try:
        loaded = load_numpy_file(path)
        arrays = {"x": loaded} if isinstance(loaded, np.ndarray) else loaded
    except (OSError, ValueError) as e:
        raise TimeMAEError(f"cannot read {path}: {e}; --dataset numpy reads {NUMPY_FORMAT}") from None
    if "x" not in arrays:
        raise TimeMAEError(f"{path} holds {sorted(arrays)} but no 'x'; --dataset numpy reads {NUMPY_FORMAT}")
    unknown = sorted(set(arrays) - {"x", "y", "x_val", "y_val", "x_test", "y_test"})
    if unknown:
        raise TimeMAEError(f"{path}: unknown arrays {unknown}; --dataset numpy reads {NUMPY_FORMAT}")
    get = lambda k: None if k not in arrays else as_series_array(arrays[k], f"{path}: {k!r}")  # noqa: E731
    return splits_from_arrays("numpy", get("x"), arrays.get("y"), get("x_val"), arrays.get("y_val"),
                              get("x_test"), arrays.get("y_test"), gaps=gaps)


def as_series_array(x, what="X"):
    """(N, T_max, C) float32, NaN-padded, from the aeon layouts: an array (N, C, T), an array (N, T) of
    univariate series, or a list of (C, T_i) (or (T_i,)) arrays of unequal lengths. A pandas DataFrame of
    numbers is read as the array (N, T)."""
    if isinstance(x, (pd.DataFrame, pd.Series)):   # iterating one would give its column labels, not its rows
        x = x.to_numpy()
        if x.dtype == object:
            raise TimeMAEError(f"{what}: a DataFrame must hold numbers, one univariate series a row; give "
                               "multivariate or nested series as an array (n_cases, n_channels, n_timepoints)")
    if isinstance(x, np.ndarray) and x.dtype != object or torch.is_tensor(x):
        x = np.asarray(_numpy_values(x, what))
        if x.dtype.kind not in "biuf":   # dates and text would become numbers of another meaning, or fail later
            raise TimeMAEError(f"{what} must hold numbers, got {x.dtype}")
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3:
            raise TimeMAEError(f"{what} must be an array (n_cases, n_channels, n_timepoints), got shape {x.shape}")
        _check_sizes(x, what)
        return np.ascontiguousarray(float32_values(x, what).transpose(0, 2, 1))
    try:
        series = [np.atleast_2d(float32_values(_numpy_values(s, what), what)) for s in x]
    except TimeMAEError:   # its own words already (a ValueError too)
        raise
    except (TypeError, ValueError) as e:
        raise TimeMAEError(f"{what}: each series must be an array (n_channels, length) of numbers ({e})") from None
    if not series or any(s.ndim != 2 for s in series):
        raise TimeMAEError(f"{what} must be a non-empty list of (n_channels, length) arrays")
    return stack_ragged(series, what)


def label_vector(y, what):
    """Labels as a 1-D array, one a series (a column (n, 1) flattened); rows of several (one-hot, pairs) refused.
    `what` names them in the error."""
    if np.prod(np.shape(y)[1:], dtype=int) > 1:
        raise TimeMAEError(f"{what} must be one label a series (1-D), got shape {np.shape(y)}")
    return np.asarray(y).reshape(-1)


def splits_from_arrays(name, x, y=None, x_val=None, y_val=None, x_test=None, y_test=None, gaps="refuse"):
    """DatasetSplits from arrays (N, T, C) (see as_series_array), with the loaders' checks; y None: unlabelled;
    `gaps`: one of GAPS."""
    for xs, ys, split in ((x, y, "train"), (x_val, y_val, "val"), (x_test, y_test, "test")):
        labels = None if ys is None else label_vector(ys, f"{name}: {split} labels")
        if xs is not None and labels is not None and len(xs) != len(labels):
            raise TimeMAEError(f"{name}: {len(xs)} {split} series but {len(labels)} labels")
        if xs is not None and (ys is None) != (y is None):
            raise TimeMAEError(f"{name}: give labels for every split or for none")
        if xs is None and ys is not None:
            raise TimeMAEError(f"{name}: {split} labels without {split} series")
    return _finalise(name, x, y, x_val, y_val, x_test, y_test, fixed=False, gaps=gaps)   # labels: _label_array


# ----------------------------------------------------------------------------------------------- UEA / UCR

def _uea_train(folder, name):
    """(path, extension, reader) of the first <name>_TRAIN file in `folder`, in UEA_READERS' order (any name when
    `name` is None), or None."""
    for ext, reader in UEA_READERS:
        pattern = f"{glob.escape(name)}_TRAIN{ext}" if name else f"*_TRAIN{ext}"
        found = sorted(glob.glob(os.path.join(glob.escape(folder), pattern)))   # a folder named run[1] is literal
        if found:
            return found[0], ext, reader
    return None


def _load_uea(folder, name):
    found = _uea_train(folder, name)
    if found is None and name and _layout(folder):   # --dataset ucr --UCR_folder NAME: the archive's files alone
        raise TimeMAEError(f"{folder!r} holds one of the paper's benchmark layouts (.pt files or the UCI HAR "
                           f"folder), not the UEA/UCR archive's {name}_TRAIN file that --dataset ucr "
                           f"--UCR_folder {name} reads: put the archive's files in another folder (python -m "
                           f"data.prepare ucr --UCR_folder {name} --download --data_path DIR), or read these "
                           "with --dataset har, epilepsy or uwave")
    if found is None:
        want = name or "<Name>"
        raise TimeMAEError(
            f"no dataset files in {folder!r}: expected train.pt + test.pt (+ val.pt), train_new.pt + test_new.pt, "
            f"or {want}_TRAIN.ts + {want}_TEST.ts (or .arff, or the UCR 2018 archive's .tsv)")
    train_path, ext, reader = found
    test_path = train_path[: -len(f"_TRAIN{ext}")] + f"_TEST{ext}"
    if not os.path.isfile(train_path):
        raise TimeMAEError(f"{train_path} is not a file (a folder, or a link to nothing); expected the training "
                           "series")
    if not os.path.isfile(test_path):
        raise TimeMAEError(f"found {train_path} but not its test file {test_path}")
    (trx, try_), (tex, tey) = reader(train_path), reader(test_path)
    for path, labels in ((train_path, try_), (test_path, tey)):
        if labels is None:
            raise TimeMAEError(f"{path}: @classLabel false, no labels; this loader needs labelled series "
                               "(unlabelled pretraining: --dataset numpy, docs/api.md)")
    return trx, try_, None, None, tex, tey


def _to_length(x, t):
    """x (N, T', C) NaN-padded or cropped to t steps; returns it and how many series lost real steps."""
    if x is None:
        return None, 0
    if x.shape[1] <= t:
        return np.pad(x, ((0, 0), (0, t - x.shape[1]), (0, 0)), constant_values=np.nan), 0
    return x[:, :t], int((~np.isnan(x[:, t:])).any(axis=(1, 2)).sum())


# ----------------------------------------------------------------------------------------------- checks

def _class_order(labels):
    """Sorted unique labels; numerically when every label is a number, so '10' follows '9'."""
    uniq = [str(u) for u in np.unique(labels.astype(str))]
    try:
        return tuple(sorted(uniq, key=float))
    except ValueError:
        return tuple(uniq)


def _encode(y, classes, split, dataset):
    index = {c: i for i, c in enumerate(classes)}
    present, inverse = np.unique(np.asarray(y).astype(str), return_inverse=True)   # a lookup per class, not label
    unknown = [str(k) for k in present if k not in index]
    if unknown:
        raise TimeMAEError(f"{dataset}: {split} labels {unknown[:5]} do not occur in the training labels "
                           f"{list(classes)[:10]}")
    return np.array([index[k] for k in present], dtype=np.int64)[inverse.reshape(-1)]


def fill_gaps(x):
    """x (N, T, C) with the gaps of every channel filled linearly in time, and the NaN before a channel's first
    value set to that value; the NaN after its last value (padding) stays. Returns a new float array."""
    n, t, c = x.shape
    rows = pd.DataFrame(np.moveaxis(x, 1, 2).reshape(n * c, t), dtype=np.float64)     # (N*C, T): one channel a row
    rows = rows.interpolate(method="linear", axis=1, limit_area="inside").bfill(axis=1)
    return np.moveaxis(rows.to_numpy().reshape(n, c, t), 1, 2).astype(x.dtype, copy=False)


def _trailing_nan(x):
    """(N, T, C) bool: NaN from which a channel holds only NaN to the end (padding)."""
    return np.flip(np.cumprod(np.flip(np.isnan(x), axis=1), axis=1), axis=1).astype(bool)


GAPS_HINT = "fill the gaps (--gaps=interpolate fills NaN linearly; inf must be replaced) or drop those series"


def _check_values(x, split, dataset, hint=GAPS_HINT):
    """NaN is allowed only as trailing padding of a channel; inf never. `hint`: what the error advises."""
    trailing = _trailing_nan(x)
    bad = np.isinf(x) | (np.isnan(x) & ~trailing)
    if bad.any():
        n = int(bad.any(axis=(1, 2)).sum())
        raise TimeMAEError(f"{dataset}: {split} data has non-finite values (NaN/inf) inside {n} series; "
                           f"only trailing NaN padding of variable-length series is allowed: {hint}")
    empty = trailing.all(axis=1)                                              # (N, C) channels of no value
    if empty.any():
        series, channel = (int(i[0]) for i in np.nonzero(empty))
        raise TimeMAEError(f"{dataset}: {split} data has a series with an empty channel (series {series}, "
                           f"channel {channel}, counted from 0: all NaN or no values); drop it or give it values")


def _label_array(y, split, dataset):
    """Labels as a 1-D array of scalars (records are refused), whole-number floats as integers: 1.0 and 1 are the
    same class, whichever split or format stored floats."""
    y = label_vector(y, f"{dataset}: {split} labels")
    if y.dtype.kind == "V":
        raise TimeMAEError(f"{dataset}: {split} labels must be one number or string a series, got records of dtype "
                           f"{y.dtype}")
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def check_labels(y, split, dataset):
    """A missing label (NaN, or None in an object array) is refused rather than read as a class 'nan', and an
    infinite one (a division gone wrong, say) rather than read as a class of its own."""
    y = np.asarray(y)
    n = int(pd.isna(y).sum())
    if n:
        raise TimeMAEError(f"{dataset}: {split} labels hold {n} missing value{'s' * (n > 1)} (NaN or None); "
                           "every series needs a label")
    infinite = int(np.isinf(y).sum()) if y.dtype.kind == "f" else \
        sum(isinstance(v, float) and math.isinf(v) for v in y.tolist()) if y.dtype.kind == "O" else 0
    if infinite:
        raise TimeMAEError(f"{dataset}: {split} labels hold {infinite} infinite value{'s' * (infinite > 1)}; "
                           "labels are class names or numbers")


def _finalise(dataset, trx, try_, vax, vay, tex, tey, fixed=True, gaps="refuse"):
    """Checked splits with labels 0..K-1, every split at train's length (see the module doc); `fixed`: the
    format stores equal-length series, so another length in val or test is an error, not padding; `gaps`: one of
    GAPS."""
    if gaps not in GAPS:
        raise TimeMAEError(f"gaps must be one of {', '.join(GAPS)}, got {gaps!r}")
    filled = 0
    if gaps == "interpolate":
        present = [x for x in (trx, vax, tex) if x is not None]
        filled = sum(int((np.isnan(x) & ~_trailing_nan(x)).any(axis=(1, 2)).sum()) for x in present)
        trx, vax, tex = (None if x is None else fill_gaps(x) for x in (trx, vax, tex))
    try_, vay, tey = (None if y is None else _label_array(y, split, dataset)
                      for y, split in ((try_, "train"), (vay, "val"), (tey, "test")))
    for split, y in (("train", try_), ("val", vay), ("test", tey)):
        if y is not None:
            check_labels(y, split, dataset)
    classes = () if try_ is None else _class_order(np.asarray(try_).astype(str))
    if try_ is not None and len(classes) < 2:
        raise TimeMAEError(f"{dataset}: training labels hold {len(classes)} class; at least 2 are needed")
    for split, x in (("train", trx), ("val", vax), ("test", tex)):
        if x is not None:
            _check_values(x, split, dataset)
    for split, x in (("val", vax), ("test", tex)):
        if x is not None and x.shape[2] != trx.shape[2]:
            raise TimeMAEError(f"{dataset}: the {split} series have {x.shape[2]} channels but the training series "
                               f"{trx.shape[2]}")
    t = trx.shape[1]
    if fixed:
        for split, x in (("val", vax), ("test", tex)):
            if x is not None and x.shape[1] != t:
                raise TimeMAEError(f"{dataset}: the {split} series have {x.shape[1]} time steps but the training "
                                   f"series {t}: every split of this format must have the training length")
    vax, cropped_val = _to_length(vax, t)
    tex, cropped = _to_length(tex, t)
    code = lambda y, split: None if y is None else _encode(y, classes, split, dataset)  # noqa: E731
    return DatasetSplits(
        name=dataset, classes=classes, cropped=cropped, cropped_val=cropped_val, gaps=gaps, filled=filled,
        train_x=trx, train_y=code(try_, "train"),
        val_x=vax, val_y=code(vay, "val"),
        test_x=tex, test_y=code(tey, "test"))


# ----------------------------------------------------------------------------------------------- transforms

def normalize(splits, mode="channel"):
    """z-score each channel with the pretraining data's statistics, then fill NaN with 0 (the mean), except at
    padded time steps (NaN in every channel), which stay NaN: the model hides them (TimeMAE.window_padding).

    Global (not per-series) statistics keep amplitude, which is what separates e.g. seizure EEG."""
    channels = splits.channels
    mean, std = np.zeros(channels), np.ones(channels)
    if mode == "channel":
        ref = splits.pretrain_x()
        mean = np.nanmean(ref, axis=(0, 1))                                      # (C,)
        std = np.nanstd(ref, axis=(0, 1))
        std = np.where(std > 0, std, 1.0)
    splits.stats = {"normalize": mode, "mean": mean.tolist(), "std": std.tolist()}
    for k in ("train_x", "val_x", "test_x"):
        if getattr(splits, k) is not None:
            setattr(splits, k, apply_stats(getattr(splits, k), splits.stats))
    return splits


def apply_stats(x, stats):
    """x (N, T, C), NaN-padded -> z-scored with `stats` (normalize's), float32; NaN becomes 0 (the mean) except
    at padded time steps (NaN in every channel), which stay NaN for the model (TimeMAE.window_padding)."""
    mean, std = np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64)
    padding = np.isnan(x).all(-1, keepdims=True)                             # (N, T, 1)
    return np.where(padding, np.nan, np.nan_to_num((x - mean) / std, nan=0.0)).astype(np.float32)


def data_description(splits):
    """What a checkpoint keeps of the training data (plain values), so that new series can be prepared as it
    was without it: shape, normalisation statistics, class names, the length policy and what was done with gaps."""
    return {"channels": splits.channels, "seq_len": splits.seq_len, "classes": list(splits.classes),
            **splits.stats, **LENGTH_POLICY, "gaps": splits.gaps}


def description_changes(saved, data):
    """The keys of data description `data` in which `saved`, a checkpoint's (engine.checkpoint.training_data),
    differs."""
    return sorted(k for k in data if saved.get(k) != data[k])


def prepare_series(x, data, what="X"):
    """New series x (N, T, C) (NaN-padded, as as_series_array gives) made ready for a model trained on the
    data `data` describes: channels checked, the length policy applied, normalised -> (N, seq_len, C) float32."""
    if x.shape[2] != data["channels"]:
        raise TimeMAEError(f"{what} has {x.shape[2]} channels but the model was trained on {data['channels']}")
    last = np.flatnonzero(~np.isnan(x).all(axis=(0, 2)))                    # steps some series has values at
    length = int(last[-1]) + 1 if last.size else 0
    if length > data["seq_len"]:
        raise TimeMAEError(f"{what} holds series of {length} steps but the model was trained on {data['seq_len']}: "
                           "longer series are refused (cut them, or train on series of that length)")
    x = np.pad(x[:, : data["seq_len"]], ((0, 0), (0, max(0, data["seq_len"] - x.shape[1])), (0, 0)),
               constant_values=np.nan)
    gaps = data["gaps"]
    if gaps == "interpolate":
        x = fill_gaps(x)
    hint = {"interpolate": "replace the inf values (NaN gaps are filled as in training)",
            "refuse": "the model was trained to refuse gaps: fill them and replace inf, or train with gaps "
                      "interpolated (main.py --gaps interpolate, the API's gaps='interpolate'), which fills new "
                      "series as it filled its own"}[gaps]
    _check_values(x, "input", what, hint)
    return apply_stats(x, data)


def stratified_split(y, size, seed, hint="change --val_ratio or use --select_on test"):
    """Indices (fit, held_out) with `size` held out, stratified by class: a share of the series (float) or a count
    (int, exactly that many), with at least one series of every class on each side; `hint` ends the refusal."""
    from sklearn.model_selection import train_test_split
    refusal = unstratifiable(y, size)
    if refusal:
        raise TimeMAEError(f"{refusal}; {hint}")
    fit, held = train_test_split(np.arange(len(y)), test_size=size, stratify=y, random_state=seed)
    return np.sort(fit), np.sort(held)


def unstratifiable(y, size):
    """Why a stratified `size` (a share or a count) of class codes y cannot be held out with a series of every
    class on each side, or '' when it can."""
    counts = np.bincount(y)
    held_out = size if isinstance(size, numbers.Integral) else math.ceil(size * len(y))   # as train_test_split
    classes = np.count_nonzero(counts)
    if classes <= held_out <= len(y) - classes and counts[counts > 0].min() >= 2:
        return ""
    share = size if isinstance(size, numbers.Integral) else f"{size:.0%}"
    return f"cannot hold out a stratified {share} of {len(y)} labelled series with class counts {counts.tolist()}"


def stratified_subset(y, ratio, seed):
    """Sorted indices of a seeded, stratified `ratio` (in (0, 1], checked by main) of labels y: round(ratio * n_c)
    series of every class c, drawn at random within the class. Refuses a ratio that leaves a class empty."""
    # by hand, not train_test_split: it rounds each class on its own and keeps a class of a single series
    counts = np.bincount(y)
    keep = np.floor(ratio * counts + 0.5).astype(np.int64)                 # (K,) series kept per class
    empty = np.flatnonzero((counts > 0) & (keep < 1))
    if empty.size:
        raise TimeMAEError(f"--label_ratio {ratio} keeps no labelled series of class(es) {empty.tolist()} "
                           f"(class counts {counts.tolist()}): raise it")
    order = np.lexsort((np.random.default_rng(seed).random(len(y)), y))   # by class, random within a class
    grouped = y[order]
    rank = np.arange(len(y)) - np.searchsorted(grouped, grouped)         # position within its class
    return np.sort(order[rank < keep[grouped]])


def random_subset(n, ratio, seed):
    """Sorted indices of a seeded random `ratio` (in (0, 1]) of n items (at least one)."""
    return np.sort(np.random.default_rng(seed).permutation(n)[: max(1, round(ratio * n))])


def restrict_pretraining(splits, ratio, seed):
    """Splits whose pretraining pool (train + val, unlabelled) is cut to a seeded random `ratio`; the labelled
    data is untouched. Apply after `normalize`, so normalisation keeps the statistics of all pretraining data."""
    pool = splits.pretrain_x()
    return replace(splits, unlabelled_x=pool[random_subset(len(pool), ratio, seed)])
