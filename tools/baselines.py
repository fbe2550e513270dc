"""Supervised baselines from aeon beside finished runs: MiniRocket (random convolution kernels and a ridge
classifier, Dempster et al. 2021) and 1-NN with dynamic time warping, on each run's own data, normalisation,
labelled series and seed, scored on its test split as FineLast is. The raw-series baselines every run reports
(1-NN Euclidean, logistic regression) are in its metrics.json; these are the stronger ones users compare with.

aeon is optional (through numba it needs numpy below 2.4): `pip install -r requirements-baselines.txt`.

    python -m tools.baselines exp/uwave/seed1 exp/uwave/seed2 exp/uwave/seed3 --out exp/uwave/baselines.csv
    python -m tools.baselines exp/ArrowHead/seed1 --methods minirocket          # DTW is slow on large sets

Both fit on the labelled training series FineLast's final probe fitted on (with --probe_refit 1 the fit and
selection series, with 0 the fit split) and need no selection split: MiniRocket's ridge picks its regularisation
by leave-one-out on the training series, 1-NN has nothing to choose. Variable-length series are zero-filled past
their end, as for the raw-series baselines. The data must be the data the run trained on (--data_path: where it
is now, when it moved). With several runs, a second table gives each dataset's and method's mean and standard
deviation over them, in % (the per-run rows give fractions). 1-NN DTW draws nothing: the runs of other seeds on
the same series take the first one's predictions (column `reused`) rather than computing them again.
"""
import argparse
import hashlib
import sys
import time
import warnings

import numpy as np

from args import positive_int
from classification import scores
from common.cli import ArgumentParser
from common.errors import TimeMAEError
from datautils import dataset_name
from engine.pipeline import flag_message
from tools.runs import run_data, run_table
from tools.tables import check_table_out, quoted, report_runs, run_means

METHODS = ("minirocket", "dtw")
MINIROCKET_STEPS = 9   # the length of its kernels
DRAWS_NOTHING = {"dtw"}   # the same series give the same predictions whatever the seed


def aeon_classifier(method, seed, threads):
    """A fresh aeon classifier for `method` (of METHODS), seeded where it draws anything."""
    try:
        from aeon.classification.convolution_based import MiniRocketClassifier
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    except ImportError as e:
        raise TimeMAEError(f"the aeon baselines need aeon ({e}): pip install -r requirements-baselines.txt (it "
                           "downgrades numpy and pandas; or in its own venv, see that file)") from None
    if method == "minirocket":
        return MiniRocketClassifier(random_state=seed, n_jobs=threads)
    return KNeighborsTimeSeriesClassifier(distance="dtw", n_neighbors=1, n_jobs=threads)


def numpy3d(x):
    """(N, T, C) normalised series, NaN padding as 0 (the mean) -> aeon's (N, C, T) float64."""
    return np.nan_to_num(np.asarray(x, dtype=np.float64).transpose(0, 2, 1), nan=0.0)


def baseline_rows(folder, methods=METHODS, threads=1, data_path=None, done=None, settings=None):
    """Rows (run, dataset, method, fitted, acc, f1, seconds, reused) for the finished run in `folder`, one per method:
    fitted on the labelled training series FineLast's final probe fitted on (`fitted` of them), acc and f1 on the
    run's test split, seconds to fit and predict (the first fit in a process also compiles aeon's numba code);
    data_path: where the run's data is now, when it moved. `done`: a dict of the predictions of 1-NN DTW, which
    draws nothing, by its series: a run on the same series as one before (another seed, all series labelled)
    takes them from there (reused) rather than computing every distance again. settings: the run's flags when
    already read (tools.runs.run_table's)."""
    cfg, splits, fit, held, _ = run_data(folder, data_path, settings)
    rows = fit if held is None or not cfg.probe_refit else np.concatenate([fit, held])
    if "minirocket" in methods and splits.seq_len < MINIROCKET_STEPS:
        raise TimeMAEError(f"{folder!r}: MiniRocket needs series of at least {MINIROCKET_STEPS} steps, these have "
                           f"{splits.seq_len}: use --methods dtw")
    test = numpy3d(splits.test_x)
    done = {} if done is None else done
    out = []
    for method in methods:
        start = time.perf_counter()
        # in index order where nothing is drawn: each seed's split orders the same series otherwise
        use = np.sort(rows) if method in DRAWS_NOTHING else rows
        train, labels = numpy3d(splits.train_x[use]), splits.train_y[use]
        key = (method, hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in (train, labels, test))
                                      ).hexdigest()) if method in DRAWS_NOTHING else None
        reused = key in done
        if reused:
            predicted = done[key]
        else:
            predicted = aeon_classifier(method, cfg.seed, threads).fit(train, labels).predict(test)
            if key:
                done[key] = predicted
        res = scores(splits.test_y, predicted)
        out.append(dict(run=folder, dataset=dataset_name(cfg.dataset, cfg.UCR_folder), method=method,
                        fitted=len(rows), acc=res["acc"], f1=res["f1"], seconds=time.perf_counter() - start,
                        reused=reused))
    return out


def summary(table):
    """One row per dataset, configuration (tools.runs.run_configs) and method: runs, and test accuracy and macro-F1
    as 'mean ± std' in % (the mean alone for one run)."""
    return quoted(run_means(table, ["dataset", "config", "method"]))


def main(argv=None):
    p = ArgumentParser(prog="python -m tools.baselines", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished run folders (args.json, pretrain_model.pkl)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="default: both (1-NN DTW takes long on large sets: 35 min on Epilepsy here, on 2 cores "
                        "with other work beside it)")
    p.add_argument("--threads", type=positive_int, default=1, help="aeon's n_jobs")
    p.add_argument("--out", help="CSV file for the per-run rows")
    p.add_argument("--data_path", help="where the runs' data is now, when it moved (default: each run's args.json)")
    a = p.parse_args(argv)
    # numba's note on a cast inside aeon's compiled DTW: about aeon's code, not the user's input
    warnings.filterwarnings("ignore", message=".*unsafe cast from uint64 to int64")
    try:
        if a.out is not None:   # before the work, not after it
            check_table_out(a.out)
        done = {}   # 1-NN DTW's predictions, shared by runs on the same series
        methods = list(dict.fromkeys(a.methods))
        table = run_table(a.runs, lambda run, flags: baseline_rows(run, methods, a.threads, a.data_path, done, flags),
                          a.data_path)
        report_runs(table, summary, a.out)
    except TimeMAEError as e:
        print(f"error: {flag_message(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
