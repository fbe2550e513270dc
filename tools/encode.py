"""python -m tools.encode: representations, or predicted labels and probabilities, of new series from a trained
run (or one checkpoint), with nothing else needed: the checkpoint holds the normalisation statistics, the class
names and the length policy.

    python -m tools.encode exp/epilepsy/seed1 new.npy --out reps.npy              # (N, d_model), pretrain_model.pkl
    python -m tools.encode exp/epilepsy/seed1 new.csv --predict --out pred.csv    # label + one column per class

Input files (one series per case): .npy (N, C, T) or (N, T); .npz with an array 'x' (or a single array);
.pt holding such a tensor or a dict with 'samples' (TS-TCC) or 'x'; .ts, .arff or .tsv (the UEA/UCR archive's
formats, as the ucr loader reads them; labels ignored); .csv with one univariate series per row, no header
(shorter rows end in empty cells). Output: .npy or .csv; with
--predict, .npy gets the labels and <stem>_proba.npy the probabilities (columns in class order).
"""
import argparse
import os
import sys

import numpy as np
import pandas as pd
import torch

from common.cli import ArgumentParser
from common.errors import TimeMAEError, one_line
from data.formats import UEA_READERS
from datautils import load_numpy_file, read_pt
from engine.runfiles import RUN_STATE, atomic_save_npy, atomic_write_text, check_output_file
from timemae import TimeMAEClassifier, TimeMAEEncoder

ARCHIVE_READERS = dict(UEA_READERS)   # .ts, .arff, .tsv
INPUTS = (".npy", ".npz", ".pt", *ARCHIVE_READERS, ".csv")


def read_series(path):
    """The series in `path` (see the module doc) as an aeon-style array (N, C, T) or a list of (C, T_i)
    arrays, which as_series_array reads."""
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        raise TimeMAEError(f"input {path!r} is a folder; pass one file of series ({', '.join(INPUTS)})")
    if not os.path.isfile(path):
        raise TimeMAEError(f"input {path!r} does not exist")
    try:
        if ext == ".npy":
            return load_numpy_file(path)
        if ext == ".npz":
            arrays = load_numpy_file(path)
            if "x" not in arrays and len(arrays) != 1:
                raise TimeMAEError(f"{path}: holds {sorted(arrays)}; expected an array 'x' (or a single array)")
            return arrays["x"] if "x" in arrays else next(iter(arrays.values()))
        if ext == ".pt":
            obj = read_pt(path)
            if isinstance(obj, dict):
                key = next((k for k in ("samples", "x") if k in obj), None)
                if key is None:
                    raise TimeMAEError(f"{path}: a dict without 'samples' or 'x' (it holds {sorted(obj)[:5]})")
                obj = obj[key]
            if not (torch.is_tensor(obj) or isinstance(obj, np.ndarray)):
                raise TimeMAEError(f"{path}: expected a tensor or array (N, C, T) or a dict holding one")
            return obj
        if ext in ARCHIVE_READERS:
            x, _ = ARCHIVE_READERS[ext](path)                                  # (N, T, C), NaN-padded
            return x.transpose(0, 2, 1)
        if ext == ".csv":
            return pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    except TimeMAEError:   # the readers' own words already (a ValueError too)
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise TimeMAEError(f"cannot read {path}: {one_line(e)}") from None
    raise TimeMAEError(f"input {path!r}: unknown file type {ext or '(none)'}; use one of {', '.join(INPUTS)}")


def checkpoint_path(model, predict):
    """A checkpoint file as given, or in a run folder: model.pkl (fine-tuned) to predict, else
    pretrain_model.pkl (the selected pretrained encoder)."""
    if os.path.isfile(model):
        return model
    name = "model.pkl" if predict else "pretrain_model.pkl"
    path = os.path.join(model, name)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(model):
        raise TimeMAEError(f"{model!r} is neither a run folder nor a checkpoint file")
    if not os.path.isfile(os.path.join(model, "args.json")):
        raise TimeMAEError(f"{model!r} is not a run folder (no args.json, no {name}): pass a run folder "
                           "(exp/<dataset>/seed<k>) or a checkpoint file")
    if not os.path.isfile(os.path.join(model, "metrics.json")):
        resume = os.path.isfile(os.path.join(model, RUN_STATE))
        raise TimeMAEError(f"run folder {model!r} holds no {name}: the run has not finished (no metrics.json)" + (
            f"; {RUN_STATE} is there: rerun its command with --resume to finish it" if resume else ""))
    raise TimeMAEError(f"run folder {model!r} holds no {name}" + (
        " (the run did not fine-tune: --num_epoch 0, or its data had no labels); to predict, fit a classifier on "
        "its representations, e.g. a LogisticRegression on TimeMAEEncoder.load(<run>/pretrain_model.pkl)"
        ".transform(X) (docs/api.md)"
        if predict else ""))


def write(path, table):
    """A DataFrame to .csv, or its values to .npy, atomically."""
    if path.endswith(".csv"):
        atomic_write_text(table.to_csv(index=False), path)
    else:
        atomic_save_npy(table.to_numpy(), path)


def encode(model, inputs, out, predict=False, device=None):
    """Write representations (or, with predict, labels and probabilities) of the series in `inputs` to `out`;
    returns the number of series."""
    if not out.endswith((".npy", ".csv")):
        raise TimeMAEError(f"--out {out!r}: write .npy or .csv")
    check_output_file(out, "--out")
    path = checkpoint_path(model, predict)
    written = [out] + ([out[: -len(".npy")] + "_proba.npy"] if predict and out.endswith(".npy") else [])
    for target in written:   # writing would replace what it reads
        for source in (inputs, path):
            if os.path.exists(target) and os.path.exists(source) and os.path.samefile(target, source):
                raise TimeMAEError(f"--out {out!r} would replace {source!r}, which this command reads: name "
                                   "another file")
    est = (TimeMAEClassifier if predict else TimeMAEEncoder).load(path, device)
    series = read_series(inputs)
    if predict:
        proba = est.predict_proba(series, inputs)                 # errors name the file
        labels = est.classes_[proba.argmax(axis=1)]
        probs = pd.DataFrame(proba, columns=[f"p_{c}" for c in est.classes_])
        if out.endswith(".csv"):
            write(out, pd.concat([pd.DataFrame({"label": labels}), probs], axis=1))
        else:
            atomic_save_npy(labels, out)
            write(out[: -len(".npy")] + "_proba.npy", probs)
        return len(proba)
    reps = est.transform(series, inputs)
    write(out, pd.DataFrame(reps, columns=[f"z{i}" for i in range(reps.shape[1])]))
    return len(reps)


def main(argv=None):
    p = ArgumentParser(prog="python -m tools.encode", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a run folder (exp/<dataset>/seed<k>) or a checkpoint file")
    p.add_argument("inputs", help=f"file of series: {', '.join(INPUTS)}")
    p.add_argument("--out", required=True, help=".npy or .csv")
    p.add_argument("--predict", action="store_true",
                   help="predicted labels and class probabilities (needs a fine-tuned model.pkl or a saved "
                        "classifier) instead of representations")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N; default cuda if available")
    args = p.parse_args(argv)
    try:
        n = encode(args.model, args.inputs, args.out, args.predict, args.device)
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {'predictions' if args.predict else 'representations'} of {n} series")
    return 0


if __name__ == "__main__":
    sys.exit(main())
