"""FineAll's rule for replacing the probe (`--fineall_head probe`: step 0 is FineLast's classifier), chosen on
the selection split alone (test is printed beside it, for the record). `run` is main.py that also saves every
FineAll candidate's predictions on the selection split and on test (fineall_candidates.npz); `screen` then
compares the rules of `--fineall_margin` on those runs:

- halves: the selection split is cut at random into halves A and B (by class); each rule picks a candidate on A
  and is scored on B, series it did not pick on. `none`: the first candidate at the highest accuracy on A (a
  fine-tuning step replaces the probe when it is ahead at all); `1se`: the probe, unless a step is ahead of it
  on A by more than sqrt(p(1-p)/|A|). Test is not read: this is the figure to choose a rule on.
- test: each rule applied to the whole selection split, as a run applies it, and the test accuracy of the
  candidate it keeps (step 0: FineLast's, the probe's refit head that FineAll then reports). The rule the run
  used must keep the step its metrics.json reports.

    python -m tools.fineall_margin run --dataset ucr --UCR_folder ArrowHead $(python -m experiments.presets ucr) \\
        --seed 1 --save_path exp/margin/ArrowHead/seed1
    python -m tools.fineall_margin screen exp/margin/*/seed*
"""
import os
import sys
import zipfile

import numpy as np
import pandas as pd

from args import parse_args
from classification import accuracy_standard_error
from common.cli import ArgumentParser
from common.errors import TimeMAEError
from engine.distributed import is_main_process
from engine.runfiles import CANDIDATES, atomic_save_npz, metric, read_json
from engine.pipeline import flag_message, run
from process import Trainer

RULES = ("none", "1se")


def recording_trainer(candidates):
    """A Trainer that appends (step, selection predictions, test predictions) of every FineAll candidate."""
    class Recording(Trainer):
        def predictions(self, model, x):
            pred = super().predictions(model, x)
            if x is self.sel_x:   # the candidate's selection score: kept, not predicted again
                self.sel_pred = pred
            return pred

        def fineall_candidate(self, model, epoch, step):
            super().fineall_candidate(model, epoch, step)
            no_test = self.test_x is None
            candidates.append((step, self.sel_pred,
                               np.empty(0, int) if no_test else self.predictions(model, self.test_x),
                               self.sel_y, np.empty(0, int) if no_test else self.test_y))
    return Recording


def record(argv):
    """main.py with argv, then fineall_candidates.npz in its run folder (written whole, once the run is done)."""
    cfg = parse_args(argv)
    if cfg.fineall_head != "probe" or cfg.num_epoch < 1 or cfg.select_on != "val" or cfg.resume:
        raise TimeMAEError("the screen compares rules for replacing the probe: pass --fineall_head probe, "
                           "--num_epoch >= 1 and --select_on val, without --resume")
    candidates = []
    run(cfg, trainer=recording_trainer(candidates))
    if not is_main_process():   # under torchrun every rank gathers the same predictions; rank 0 writes them
        return
    steps, sel, test, sel_y, test_y = zip(*candidates)
    path = os.path.join(cfg.save_path, CANDIDATES)
    atomic_save_npz(path, step=np.array(steps), sel_pred=np.stack(sel), test_pred=np.stack(test),
                    sel_y=np.asarray(sel_y[0]), test_y=np.asarray(test_y[0]))
    print(f"FineAll's {len(steps)} candidates: {path}")


def keep(acc, n, rule):
    """The candidate a rule keeps, from their accuracies acc (K,) on n series, acc[0] the probe's: the first
    fine-tuning candidate at the highest accuracy if it is ahead of the probe (by more than one standard error of
    the probe's accuracy under 1se), else 0."""
    best = int(np.argmax(acc[1:])) + 1
    margin = accuracy_standard_error(acc[0], n) if rule == "1se" else 0.0
    return best if acc[best] > acc[0] + margin else 0


def halves(y, rng):
    """A random half A of the series and the rest B, each class cut in two (its odd series, and the series of
    one-series classes taken together, fall in A or B at random), so that neither half is empty."""
    a, singles = np.zeros(len(y), dtype=bool), []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) == 1:
            singles.append(idx[0])
        else:
            a[idx[: (len(idx) + rng.integers(2)) // 2]] = True
    singles = rng.permutation(np.array(singles, dtype=int))
    a[singles[: (len(singles) + rng.integers(2)) // 2]] = True
    return a, ~a


def screen_run(folder, repeats=500, seed=0):
    """One run's row: the halves figures (B accuracy of each rule's pick, and of the probe alone) and the test
    accuracy each rule gives on the whole selection split."""
    z = np.load(os.path.join(folder, CANDIDATES))
    metrics_path = os.path.join(folder, "metrics.json")
    metrics, args = read_json(metrics_path), read_json(os.path.join(folder, "args.json"))
    if z["step"][0] != 0:
        raise TimeMAEError(f"{folder}: FineAll's first candidate is not the probe (run with --fineall_head probe)")
    correct = z["sel_pred"] == z["sel_y"][None, :]                        # (candidates, selection series)
    test = (z["test_pred"] == z["test_y"][None, :]).mean(1)                # (candidates,)
    test[0] = metric(metrics, metrics_path, "finelast", "acc")             # step 0 kept: FineLast's refit probe
    n = correct.shape[1]
    if n < 2:
        raise TimeMAEError(f"{folder}: a selection split of {n} series cannot be cut in halves")
    kept = {rule: keep(correct.mean(1), n, rule) for rule in RULES}
    own = args.get("fineall_margin", "none")
    if z["step"][kept[own]] != metrics["fineall"]["step"]:
        raise TimeMAEError(f"{folder}: the {own} rule keeps step {z['step'][kept[own]]}, the run kept "
                           f"{metrics['fineall']['step']}: not a run of this code")
    rng = np.random.default_rng(seed)
    b = {rule: [] for rule in (*RULES, "probe")}
    for _ in range(repeats):
        a_rows, b_rows = halves(z["sel_y"], rng)
        acc_a, acc_b = correct[:, a_rows].mean(1), correct[:, b_rows].mean(1)
        for rule in RULES:
            b[rule].append(acc_b[keep(acc_a, a_rows.sum(), rule)])
        b["probe"].append(acc_b[0])
    name = args["UCR_folder"] if args["dataset"] == "ucr" else args["dataset"]
    return {"dataset": name, "seed": args["seed"], "n_sel": n, "candidates": len(correct),
            **{f"halves_{k}": 100 * np.mean(v) for k, v in b.items()},
            **{f"step_{rule}": int(z["step"][kept[rule]]) for rule in RULES},
            **{f"test_{rule}": 100 * test[kept[rule]] for rule in RULES}, "test_finelast": 100 * test[0]}


def screen(folders, repeats):
    runs = pd.DataFrame([screen_run(f, repeats) for f in folders])
    pd.set_option("display.width", 200)
    print(runs.round(2).to_string(index=False))
    figures = [c for c in runs.columns if c.startswith(("halves_", "test_"))]
    sets = runs.groupby("dataset", sort=False)[figures].mean()
    sets.loc["mean over sets"] = sets.mean()
    print(f"\nmeans over seeds ({repeats} random halves per run; %)")
    print(sets.round(2).to_string())
    return runs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        try:
            record(argv[1:])
        except TimeMAEError as e:
            print(f"error: {flag_message(e)}", file=sys.stderr)
            return 2
        return 0
    p = ArgumentParser(prog="python -m tools.fineall_margin", description=__doc__.split("\n\n")[0],
                       usage="python -m tools.fineall_margin run <main.py flags> | screen RUN [RUN ...]")
    p.add_argument("command", choices=("screen",))
    p.add_argument("runs", nargs="+", help="run folders written by `run`")
    p.add_argument("--repeats", type=int, default=500, help="random halves per run")
    a = p.parse_args(argv)
    try:
        screen(a.runs, a.repeats)
    except (TimeMAEError, OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        print(f"error: {e} (expected run folders written by `python -m tools.fineall_margin run`)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
