"""Write a fixed, stratified subset of a TS-TCC dataset folder (train/val/test.pt) for short experiments.

    python -m tools.subset $TIMEMAE_DATA/Epilepsy exp/data/Epilepsy --train 800 --val 200 --test 1000

The destination must be another folder than the source, and one holding a dataset is replaced only with
--overwrite; every size is checked before any file is written, and the three files are written before any of them
replaces a file there.
"""
import os
import sys

import numpy as np
import torch

from common.cli import ArgumentParser
from common.errors import TimeMAEError
from datautils import read_pt, stratified_split, unpack_pt
from engine.runfiles import atomic_save, make_writable_dir


def write_subset(src, dst, sizes, seed=0, overwrite=False):
    """Write a stratified draw of sizes[split] series of every split in `src` into `dst`, as TS-TCC dicts of the
    tensors main.py reads; return the counts. Every split is read and every size checked before anything is
    written; the files are written under temporary names first, then renamed (a failed write leaves `dst` as it
    was); a dataset already in `dst` is replaced only with `overwrite`."""
    if os.path.isdir(src) and os.path.isdir(dst) and os.path.samefile(src, dst):   # links and mounts too
        raise TimeMAEError(f"destination {dst!r} is the source folder: the subset would replace the dataset; "
                           "choose another destination")
    # a killed run's temporary files (dot names) are no dataset: the next write replaces them
    present = sorted(f for f in os.listdir(dst) if f.endswith(".pt") and not f.startswith(".")) \
        if os.path.isdir(dst) else []
    if present and not overwrite:
        raise TimeMAEError(f"destination {dst!r} already holds {', '.join(present)}: pass --overwrite to replace "
                           "the dataset, or choose another destination")
    shadowing = [f for f in ("train_new.pt", "test_new.pt") if f in present]
    if shadowing:   # main.py would read them instead of the subset
        raise TimeMAEError(f"destination {dst!r} holds {', '.join(shadowing)}, which main.py reads before train.pt "
                           "and test.pt: choose another destination")
    subsets = {}
    for split, n in sizes.items():
        path = os.path.join(src, f"{split}.pt")
        if not os.path.isfile(path):
            raise TimeMAEError(f"{path!r} does not exist: expected a folder with train.pt, val.pt and test.pt")
        samples, labels = unpack_pt(read_pt(path), path)   # read and checked as main.py reads the file
        try:
            codes = np.unique(labels, return_inverse=True)[1]     # 0..K-1 whatever the labels (-1/1, 'walk', ...)
        except TypeError:   # labels of mixed kinds cannot be sorted
            raise TimeMAEError(f"{path}: labels must be of one kind (all numbers or all text)") from None
        classes = int(codes.max()) + 1
        if not classes <= n <= len(labels) - classes:   # the draw keeps and leaves out a series of every class
            raise TimeMAEError(f"--{split} must lie in {classes}..{len(labels) - classes} ({split}.pt holds "
                               f"{len(labels)} series of {classes} classes), got {n}")
        _, keep = stratified_split(codes, n, seed, f"each class needs 2 series or more for --{split}")   # exactly n
        # numbers as a tensor, text as the array it was (a .pt file holds NumPy arrays, which main.py reads)
        kept = torch.from_numpy(labels[keep]) if labels.dtype.kind in "biuf" else labels[keep]
        subsets[split] = {"samples": torch.from_numpy(samples[keep]), "labels": kept}
    make_writable_dir(dst, "destination")
    temporary = {split: os.path.join(dst, f".tmp-subset-{split}.pt") for split in subsets}
    try:
        for split, subset in subsets.items():
            atomic_save(subset, temporary[split])
    except BaseException:
        for path in temporary.values():
            if os.path.exists(path):
                os.remove(path)
        raise
    for split, path in temporary.items():
        os.replace(path, os.path.join(dst, f"{split}.pt"))
    return {split: len(subset["labels"]) for split, subset in subsets.items()}


def main(argv=None):
    p = ArgumentParser(prog="python -m tools.subset", description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    for split, n in (("train", 800), ("val", 200), ("test", 1000)):
        p.add_argument(f"--{split}", type=int, default=n, help=f"series kept from {split}.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace the dataset files already in dst")
    a = p.parse_args(argv)
    try:
        counts = write_subset(a.src, a.dst, {"train": a.train, "val": a.val, "test": a.test}, a.seed, a.overwrite)
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.dst}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
