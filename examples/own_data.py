"""The README's "Your own data" example on a UCR dataset, with the baselines docs/api.md reports beside it.

    python examples/own_data.py "$TIMEMAE_DATA"/ArrowHead --seeds 1 2 3 --threads 1
    python examples/own_data.py "$TIMEMAE_DATA"/ArrowHead --quick     # a smoke run of the path (seconds)

Per seed: TimeMAEClassifier (pretrain, then fine-tune: FineAll), Pipeline(TimeMAEEncoder, StandardScaler,
LogisticRegression) (frozen representations: FineLast), and FineZero (the same classifier without pretraining); once: a
LogisticRegression on the raw (normalised, zero-padded) series. Test accuracy on the dataset's test split.
Every estimator at its defaults (preset 'ucr'), or with --preset none main.py's (the paper's).
"""
import glob
import os
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from args import non_negative_int, positive_int  # noqa: E402
from common.cli import ArgumentParser  # noqa: E402
from common.errors import TimeMAEError  # noqa: E402
from data.formats import read_ts  # noqa: E402
from engine.runfiles import make_writable_dir  # noqa: E402
from process import NO_STEP_BUDGET  # noqa: E402
from timemae import TimeMAEClassifier, TimeMAEEncoder, load  # noqa: E402

# --quick: a small model and a few steps, no step budget: checks that the data and the path work, nothing more
QUICK = dict(d_model=16, attn_heads=2, layers=1, reg_layers=1, num_epoch_pretrain=2, flags=NO_STEP_BUDGET)


def read(path):
    """A .ts file as the API takes it: a list of (n_channels, length_i) arrays (NaN padding cut), labels."""
    x, y = read_ts(path)                                                   # (N, T_max, C), NaN-padded
    return [s[~np.isnan(s).all(axis=1)].T for s in x], y


def main(argv=None):
    p = ArgumentParser(prog="python examples/own_data.py", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a UCR/UEA dataset folder with <Name>_TRAIN.ts and <Name>_TEST.ts")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=[1, 2, 3])
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--out", default="exp/own_data", help="where the classifiers are saved")
    p.add_argument("--preset", default="ucr", help="the estimators' preset ('none': main.py's defaults)")
    p.add_argument("--quick", action="store_true", help="a smoke run: small model, 2 epochs each, no step budget")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    found = sorted(glob.glob(os.path.join(glob.escape(args.folder), "*_TRAIN.ts")))
    if not found:
        raise TimeMAEError(f"{args.folder!r} holds no <Name>_TRAIN.ts (a UCR/UEA dataset folder is expected)")
    train = found[0]
    X, y = read(train)
    X_test, y_test = read(train.replace("_TRAIN.ts", "_TEST.ts"))
    make_writable_dir(args.out, "--out")
    for seed in args.seeds:
        common = dict(random_state=seed, threads=args.threads, verbose=False,
                      preset=None if args.preset == "none" else args.preset, **(QUICK if args.quick else {}))
        fine = {"num_epoch": 2} if args.quick else {}
        start = time.perf_counter()
        # --- the README's example ---
        clf = TimeMAEClassifier(**common, **fine).fit(X, y)           # pretrain, then fine-tune
        clf.save(os.path.join(args.out, f"clf_seed{seed}.pkl"))
        same = load(os.path.join(args.out, f"clf_seed{seed}.pkl"))
        pipe = make_pipeline(TimeMAEEncoder(**common), StandardScaler(), LogisticRegression(max_iter=1000))
        pipe.fit(X, y)                                                # frozen representations + a linear probe
        # ---
        zero = TimeMAEClassifier(**{**common, "num_epoch_pretrain": 0}, **fine).fit(X, y)
        print(f"seed {seed}: FineAll {clf.score(X_test, y_test):.4f} (loaded: {same.score(X_test, y_test):.4f}), "
              f"encoder + LogisticRegression {pipe.score(X_test, y_test):.4f}, "
              f"FineZero {zero.score(X_test, y_test):.4f}; {time.perf_counter() - start:.0f} s", flush=True)
    length = max(s.shape[1] for s in X + X_test)
    flat = lambda xs: np.stack([np.pad(s, ((0, 0), (0, length - s.shape[1]))).ravel() for s in xs])  # noqa: E731
    raw = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(flat(X), y)
    print(f"raw series + LogisticRegression: {raw.score(flat(X_test), y_test):.4f}")


if __name__ == "__main__":
    try:
        main()
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
