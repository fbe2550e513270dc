"""Mean ± std of the final metrics over the runs found under a folder.

    python summarize.py exp/epilepsy --out exp/epilepsy/summary.csv
"""
import argparse
import glob
import json
import os
import sys

import pandas as pd

METRICS = [("finelast", "acc"), ("finelast", "f1"), ("fineall", "acc"), ("fineall", "f1")]


def collect_runs(root):
    """One row per run folder below root that holds metrics.json: its config and final metrics (in %)."""
    rows = []
    for path in sorted(glob.glob(os.path.join(root, "**", "metrics.json"), recursive=True)):
        folder = os.path.dirname(path)
        with open(path) as f:
            metrics = json.load(f)
        args_path = os.path.join(folder, "args.json")
        config = json.load(open(args_path)) if os.path.isfile(args_path) else {}
        row = {"run": folder, "dataset": metrics.get("dataset"), "seed": metrics.get("seed"),
               "select_on": metrics.get("select_on"), "pretrain_epochs": config.get("num_epoch_pretrain"),
               "finetune_epochs": config.get("num_epoch")}
        for phase, key in METRICS:
            if phase in metrics:
                row[f"{phase}_{key}"] = 100 * metrics[phase][key]
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(runs):
    """Group runs by dataset, protocol and budget; mean, std and count of every metric."""
    keys = ["dataset", "select_on", "pretrain_epochs", "finetune_epochs"]
    cols = [c for c in (f"{p}_{k}" for p, k in METRICS) if c in runs]
    grouped = runs.groupby(keys, dropna=False)[cols]
    table = grouped.mean().round(2).add_suffix("_mean").join(grouped.std(ddof=1).round(2).add_suffix("_std"))
    table["runs"] = grouped.size()
    return table.reset_index()


def format_table(summary):
    """Human-readable 'mean ± std' columns."""
    out = summary[["dataset", "select_on", "pretrain_epochs", "finetune_epochs", "runs"]].copy()
    for phase, key in METRICS:
        if f"{phase}_{key}_mean" in summary:
            out[f"{phase} {key}"] = [f"{m:.2f} ± {s:.2f}" if s == s else f"{m:.2f}"
                                     for m, s in zip(summary[f"{phase}_{key}_mean"], summary[f"{phase}_{key}_std"])]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="folder searched recursively for run folders (metrics.json)")
    p.add_argument("--out", help="CSV to write the summary to")
    a = p.parse_args(argv)
    runs = collect_runs(a.root)
    if runs.empty:
        print(f"error: no run folder with metrics.json under {a.root!r}", file=sys.stderr)
        return 2
    summary = summarize(runs)
    if a.out:
        summary.to_csv(a.out, index=False)
    print(format_table(summary).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
