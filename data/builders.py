"""Turning each publisher's files into exactly the files `datautils.load_dataset` reads.

Every builder takes a `SourceTree` (the distribution's files) and an empty output folder.
"""
import os
import shutil

import numpy as np
import pandas as pd
import torch

from data.formats import UEA_READERS
from common.errors import TimeMAEError

SPLIT_SEED = 42        # TS-TCC's random_state for every split
HAR_VAL_RATIO = 0.2
HAR_SIGNALS = tuple(f"{kind}_{axis}" for kind in ("body_acc", "body_gyro", "total_acc") for axis in "xyz")
EPILEPSY_TEST_RATIO = 0.2
EPILEPSY_VAL_RATIO = 0.2   # of what the test split leaves
EPILEPSY_CSV_NAMES = ("data.csv", "Epileptic Seizure Recognition.csv")
EPILEPSY_STEPS = 178       # one EEG segment: columns X1..X178
UWAVE_AXES = tuple(f"UWaveGestureLibrary{axis}" for axis in "XYZ")


def save_split(folder, name, samples, labels):
    torch.save({"samples": torch.from_numpy(np.ascontiguousarray(samples)),
                "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64))}, os.path.join(folder, name))


def _integer_labels(values, path, low, high):
    """Labels that must be whole numbers in [low, high] (files store them as '5', '5.0' or 5.0e+00)."""
    try:
        values = np.asarray(values).astype(np.float64)
    except ValueError:
        raise TimeMAEError(f"{path}: labels must be whole numbers {low}..{high}") from None
    bad = (values != np.round(values)) | (values < low) | (values > high)
    if bad.any():
        raise TimeMAEError(f"{path}: labels must be whole numbers {low}..{high}, found {values[bad][0]:g}")
    return values.astype(np.int64)


def _split(arrays, labels, ratio, stratify, where):
    """scikit-learn's train_test_split with TS-TCC's seed; a clear message when the data is too small."""
    from sklearn.model_selection import train_test_split
    try:
        return train_test_split(arrays, labels, test_size=ratio, random_state=SPLIT_SEED,
                                stratify=labels if stratify else None)
    except ValueError as e:
        raise TimeMAEError(f"{where}: cannot split {len(labels)} series {ratio:.0%} / {1 - ratio:.0%} ({e})") \
            from None


# ----------------------------------------------------------------------------------------------- HAR

def _read_matrix(path):
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:   # numpy's advice (usecols) is not the user's to take: its finding alone
        finding = str(e).split("; use `usecols`")[0]
        raise TimeMAEError(f"{path}: expected whitespace-separated numbers, one window per line ({finding})") from None


def read_har(tree):
    """UCI HAR `Inertial Signals` as ((train x, y), (val x, y), (test x, y)) with x (N, 9, 128) float64: channels
    body_acc, body_gyro, total_acc (x, y, z each); activity ids 1..6 become labels 0..5.

    Like TS-TCC: train keeps all training windows and val is a stratified 20% of them (copies, not removed)."""
    data = {}
    for split in ("train", "test"):
        channels = [_read_matrix(tree.require(f"{signal}_{split}.txt")) for signal in HAR_SIGNALS]
        shapes = {c.shape for c in channels}
        if len(shapes) != 1:
            raise TimeMAEError(f"HAR {split}: the 9 inertial signal files have different shapes {sorted(shapes)}")
        labels_path = tree.require(f"y_{split}.txt")
        labels = _integer_labels(_read_matrix(labels_path).reshape(-1), labels_path, 1, 6) - 1
        x = np.stack(channels, axis=1)  # (N, 9, T)
        if len(labels) != len(x):
            raise TimeMAEError(f"{labels_path}: {len(labels)} labels for {len(x)} windows")
        data[split] = (x, labels)
    train_x, train_y = data["train"]
    _, val_x, _, val_y = _split(train_x, train_y, HAR_VAL_RATIO, stratify=True, where="HAR validation split")
    return data["train"], (val_x, val_y), data["test"]


def build_har(tree, out):
    """TS-TCC-style train.pt / val.pt / test.pt from the UCI HAR archive (see read_har)."""
    for name, (x, y) in zip(("train.pt", "val.pt", "test.pt"), read_har(tree)):
        save_split(out, name, x, y)


# ----------------------------------------------------------------------------------------------- Epilepsy

def _epilepsy_csv(tree):
    path = tree.find(*EPILEPSY_CSV_NAMES)
    if path:
        return path
    found = tree.find_all("*.csv")
    if len(found) != 1:
        raise TimeMAEError(f"expected the Epileptic Seizure Recognition CSV ({' or '.join(EPILEPSY_CSV_NAMES)}) "
                           f"in the source, found {len(found)} CSV files")
    return found[0]


def build_epilepsy(tree, out):
    """UCI Epileptic Seizure Recognition CSV (an id column, 178 values, label y 1..5) as TS-TCC prepared it:
    min-max scale every column over all rows, label 1 (seizure) -> 0 and 2..5 -> 1, then
    train_test_split(test_size=0.2, random_state=42) for test and again on the rest for val (not stratified).
    Fed the same rows in the same order, this reproduces TS-TCC's released val.pt and test.pt bit for bit."""
    from sklearn.preprocessing import MinMaxScaler
    path = _epilepsy_csv(tree)
    try:
        table = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as e:
        raise TimeMAEError(f"{path}: cannot read the CSV ({e})") from None
    named = [f"X{i}" for i in range(1, EPILEPSY_STEPS + 1)]
    if set(named) <= set(table.columns) and "y" in table.columns:   # by name: a copy saved without the id column too
        values, labels = table[named], table["y"]
    elif table.shape[1] == EPILEPSY_STEPS + 2:
        values, labels = table.iloc[:, 1:-1], table.iloc[:, -1]
    else:
        raise TimeMAEError(f"{path}: expected columns X1..X{EPILEPSY_STEPS} and y (an id column first or not), or "
                           f"{EPILEPSY_STEPS + 2} unnamed ones; found {table.shape[1]} columns")
    if not all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes):
        raise TimeMAEError(f"{path}: expected an id column, numeric value columns and a label column y")
    if not np.isfinite(values.to_numpy(dtype=np.float64)).all():
        raise TimeMAEError(f"{path}: has empty or infinite values; expected a number in every value column")
    raw_labels = _integer_labels(labels.to_numpy(), path, 1, 5)
    x = MinMaxScaler().fit_transform(values.to_numpy())  # per column, over all rows (float64)
    y = (raw_labels != 1).astype(np.int64)                 # 1 = seizure activity -> 0; every other -> 1
    rest_x, test_x, rest_y, test_y = _split(x, y, EPILEPSY_TEST_RATIO, stratify=False, where="Epilepsy test split")
    train_x, val_x, train_y, val_y = _split(rest_x, rest_y, EPILEPSY_VAL_RATIO, stratify=False,
                                            where="Epilepsy validation split")
    for name, sx, sy in (("train.pt", train_x, train_y), ("val.pt", val_x, val_y), ("test.pt", test_x, test_y)):
        save_split(out, name, sx[:, None, :], sy)  # (N, 1, T)


# ----------------------------------------------------------------------------------------------- UEA / UCR

def find_uea_pair(tree, name):
    """(train path, test path, reader) of `<name>_TRAIN/_TEST`, preferring .ts over .arff over .tsv."""
    for ext, reader in UEA_READERS:
        train, test = tree.find(f"{name}_TRAIN{ext}"), tree.find(f"{name}_TEST{ext}")
        if train and test:
            return train, test, reader
    raise TimeMAEError(f"the source holds no {name}_TRAIN.ts + {name}_TEST.ts (or .arff, .tsv) pair; is {name!r} the "
                       "dataset's exact name in the UEA/UCR archive?")


def copy_uea(tree, out, name):
    """A UEA/UCR dataset is read as distributed: copy its train and test files unchanged."""
    train, test, _ = find_uea_pair(tree, name)
    for path in (train, test):
        shutil.copyfile(path, os.path.join(out, os.path.basename(path)))


def _read_univariate(tree, name):
    """[(path, x (N, T, 1), labels)] for the train and test files of a univariate UCR dataset."""
    train, test, reader = find_uea_pair(tree, name)
    splits = []
    for path in (train, test):
        x, y = reader(path)
        if x.shape[2] != 1 or np.isnan(x).any():
            raise TimeMAEError(f"{path}: expected univariate series of one length, got shape {x.shape}")
        splits.append((path, x, y))
    return splits


def build_uwave(tree, out):
    """The paper's UWave split (896 train / 3582 test): the UCR univariate UWaveGestureLibraryX/Y/Z, whose series
    are the same gestures in the same order, stacked as 3 channels into train_new.pt/test_new.pt with samples
    (N, 315, 3) time-major and labels 1..8."""
    axes = [_read_univariate(tree, name) for name in UWAVE_AXES]
    for s, split in enumerate(("train", "test")):
        (first_path, first_x, labels), *others = [axis[s] for axis in axes]
        for path, x, y in others:
            if x.shape != first_x.shape or (y != labels).any():
                raise TimeMAEError(f"{path}: its series do not line up with {first_path} (shapes or labels differ)")
        samples = np.concatenate([first_x] + [x for _, x, _ in others], axis=2)  # (N, T, 3)
        save_split(out, f"{split}_new.pt", samples, _integer_labels(labels, first_path, 1, 8))
