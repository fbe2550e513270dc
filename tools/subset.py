"""Write a fixed, stratified subset of a TS-TCC dataset folder (train/val/test.pt) for short experiments.

    python -m tools.subset $TIMEMAE_DATA/Epilepsy exp/data/Epilepsy --train 800 --val 200 --test 1000

The destination must be another folder than the source; every size is checked before any file is written.
"""
import argparse
import os
import sys

import numpy as np
import torch

from common.errors import TimeMAEError
from datautils import read_pt, stratified_split, unpack_pt
from engine.runfiles import atomic_save, make_writable_dir


def write_subset(src, dst, sizes, seed=0):
    """Write a stratified draw of sizes[split] series of every split in `src` into `dst`, as TS-TCC dicts of the
    tensors main.py reads; return the counts. Every split is read and every size checked before anything is
    written, and each file is replaced whole."""
    if os.path.isdir(src) and os.path.isdir(dst) and os.path.samefile(src, dst):   # links and mounts too
        raise TimeMAEError(f"destination {dst!r} is the source folder: the subset would replace the dataset; "
                           "choose another destination")
    subsets = {}
    for split, n in sizes.items():
        path = os.path.join(src, f"{split}.pt")
        if not os.path.isfile(path):
            raise TimeMAEError(f"{path!r} does not exist: expected a folder with train.pt, val.pt and test.pt")
        samples, labels = unpack_pt(read_pt(path), path)   # read and checked as main.py reads the file
        if labels.dtype.kind not in "biuf":   # the draw is stratified by class number, and kept as a tensor
            raise TimeMAEError(f"{path}: labels must be class numbers, got {labels.dtype}")
        if not 0 < n < len(labels):
            raise TimeMAEError(f"--{split} must lie in 1..{len(labels) - 1} ({split}.pt holds {len(labels)}), got {n}")
        codes = np.unique(labels, return_inverse=True)[1]     # 0..K-1 whatever the labels (-1/1, 0.5, ...)
        _, keep = stratified_split(codes, n / len(labels), seed)
        subsets[split] = {"samples": torch.from_numpy(samples[keep]), "labels": torch.from_numpy(labels[keep])}
    make_writable_dir(dst, "destination")
    for split, subset in subsets.items():
        atomic_save(subset, os.path.join(dst, f"{split}.pt"))
    return {split: len(subset["labels"]) for split, subset in subsets.items()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.subset", description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    for split, n in (("train", 800), ("val", 200), ("test", 1000)):
        p.add_argument(f"--{split}", type=int, default=n, help=f"series kept from {split}.pt")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        counts = write_subset(a.src, a.dst, {"train": a.train, "val": a.val, "test": a.test}, a.seed)
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.dst}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
