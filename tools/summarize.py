"""Mean ± std of the final metrics over the runs found under folders (searched recursively): FineLast and FineAll
accuracy and macro-F1, the raw-series baselines beside them (1-NN and logistic regression), the codebook in use.

    python -m tools.summarize exp/epilepsy --out exp/epilepsy/summary.csv
    python -m tools.summarize exp/epilepsy/seed1 exp/epilepsy/seed2                   # those runs only (run.sh)
    python -m tools.summarize exp --out exp/summary.csv --markdown exp/summary.md     # every run of every study
    python -m tools.summarize exp/ArrowHead --plot exp/ArrowHead/summary.png           # bars beside the baselines

Runs are grouped by dataset (for --dataset ucr the set's name), selection protocol, pretraining / fine-tuning
epochs (those run, which the small-set step budget may raise above the flags') and `config`: the flags of
args.json whose values differ between the runs of that dataset (seeds, paths, runtime flags and derived values
aside). Runs with 0 pretraining epochs and no --pretrained_path give FineZero (their FineLast) and FineZero+
(their FineAll). `commit` lists the commits the group's runs came from (args.json's provenance; `+dirty`:
tracked files differed). --plot draws the test accuracies, one panel per dataset and one row of bars per group
(mean, with the standard deviation over seeds as an error bar): FineLast and FineAll beside the raw-series 1-NN
and logistic regression. Runs without a test accuracy (unlabelled data, or no test split) count in `runs` with empty
accuracy columns, are listed in a note, and are left out of the plot.
"""
import glob
import os
import sys
import textwrap

import pandas as pd

from args import saved_flags
from common.cli import ArgumentParser
from common.errors import TimeMAEError
from datautils import dataset_name
from engine.provenance import short_commit
from engine.record import EPOCH_LOG, read_epoch_log
from engine.runfiles import atomic_save_figure, atomic_write_text, metric, read_json
from tools.tables import check_named_output, comparable, config_flags, config_labels, markdown, mean_std

METRICS = [("finelast", "acc"), ("finelast", "f1"), ("fineall", "acc"), ("fineall", "f1")]
CODEBOOK = {"codewords_used": "codewords used", "perplexity": "perplexity"}  # last pretraining epoch
BASELINES = {"nn1": "raw 1-NN acc", "logistic": "raw logistic acc"}          # on the raw normalised series
KEYS = ["dataset", "select_on", "pretrain_epochs", "finetune_epochs", "config"]


def collect_runs(roots):
    """One row per run folder below the folders `roots` (or one of them) that holds metrics.json: its config and
    final metrics (in %); a run without test scores (unlabelled data, or no test split) has none in its row."""
    found = {}
    for root in roots:
        for path in glob.glob(os.path.join(glob.escape(root), "**", "metrics.json"), recursive=True):
            found.setdefault(os.path.realpath(path), path)     # a run below two of the folders counts once
    rows, flags = [], config_flags()
    for path in sorted(found.values()):
        folder = os.path.dirname(path)
        metrics = read_json(path)
        if not os.path.isfile(os.path.join(folder, "args.json")):   # its dataset and flags would read as defaults
            raise TimeMAEError(f"{folder!r} holds metrics.json but no args.json: the run's flags are unknown; "
                               "restore it, or move the folder out of the summary")
        config = saved_flags(folder)
        provenance = config.get("provenance") or {}   # runs from before provenance have none
        row = {"run": folder, "dataset": dataset_name(config["dataset"], config["UCR_folder"]),
               "seed": config["seed"], "select_on": config["select_on"],
               # the epochs run (the step budget's; runs from before it: the flags')
               "pretrain_epochs": config.get("pretrain_epochs", config.get("num_epoch_pretrain")),
               "finetune_epochs": config.get("finetune_epochs", config.get("num_epoch")),
               "commit": short_commit(provenance.get("commit"), provenance.get("dirty")),
               "transfer": bool(config.get("pretrained_path")),     # started from another run's encoder
               "args": {k: comparable(config[k]) for k in flags}}
        for phase, key in METRICS:
            if (value := metric(metrics, path, phase, key)) is not None:
                row[f"{phase}_{key}"] = 100 * value
        for name in BASELINES:   # baselines is None without a test split
            if (value := metric(metrics, path, "baselines", name, "acc")) is not None:
                row[f"raw_{name}_acc"] = 100 * value
        row.update(final_codebook(folder))
        rows.append(row)
    runs = pd.DataFrame(rows)
    if not runs.empty:
        runs["config"] = config_labels(runs)
    return runs.drop(columns="args", errors="ignore")


def final_codebook(folder):
    """Codewords used and their perplexity in the last pretraining epoch (pretrain_log.jsonl), if any."""
    path = os.path.join(folder, EPOCH_LOG)
    rows = read_epoch_log(path) if os.path.isfile(path) else []
    if not rows:
        return {}
    last = rows[-1]
    return {"codewords_used": int(last["used"]), "perplexity": round(float(last["ppl"]), 1)}


def summarize(runs):
    """Group runs by dataset, protocol, budget and config; mean, std and count of every metric."""
    keys = [k for k in KEYS if k in runs]
    cols = [c for c in [*(f"{p}_{k}" for p, k in METRICS), *(f"raw_{b}_acc" for b in BASELINES), *CODEBOOK]
            if c in runs]
    groups = runs.groupby(keys, dropna=False)
    grouped = groups[cols]
    table = grouped.mean().round(2).add_suffix("_mean").join(grouped.std(ddof=1).round(2).add_suffix("_std"))
    table["runs"] = grouped.size()
    if "commit" in runs:
        table["commit"] = groups["commit"].agg(lambda c: " ".join(sorted(set(c) - {""})))
    if "transfer" in runs:
        table["transfer"] = groups["transfer"].any()
    return table.reset_index()


def format_table(summary):
    """Human-readable 'mean ± std' columns."""
    out = summary[[k for k in KEYS if k in summary] + ["runs"]].copy()
    for phase, key in METRICS:
        if f"{phase}_{key}_mean" in summary:
            name = {"finelast": "FineLast", "fineall": "FineAll"}[phase] + (" acc" if key == "acc" else " macro-F1")
            out[name] = [mean_std(m, s) for m, s in zip(summary[f"{phase}_{key}_mean"], summary[f"{phase}_{key}_std"])]
    for col, name in [*((f"raw_{b}_acc", name) for b, name in BASELINES.items()), *CODEBOOK.items()]:
        if f"{col}_mean" in summary:
            out[name] = [mean_std(m, s) for m, s in zip(summary[f"{col}_mean"], summary[f"{col}_std"])]
    if "commit" in summary:
        out["commit"] = summary["commit"]
    return out


LABEL_WIDTH = 48   # characters a line of a group's label in the plot
PLOTTED = {"finelast_acc": "FineLast", "fineall_acc": "FineAll", "raw_nn1_acc": "raw 1-NN",
           "raw_logistic_acc": "raw logistic"}   # summary columns (their _mean and _std) drawn by plot_summary


def group_label(row):
    """A summary row's name in the plot: FineZero for runs without pretraining, else its epochs and config, whole
    (the flags that tell groups apart may come last), in lines of at most LABEL_WIDTH characters."""
    name = "FineZero" if row["pretrain_epochs"] == 0 and not row.get("transfer", False) \
        else f"{row['pretrain_epochs']} epochs"
    config = str(row["config"]) if row["config"] == row["config"] and row["config"] else ""
    label = f"{name}, {config}" if config else name
    return "\n".join(textwrap.wrap(f"{label} (n={row['runs']})", LABEL_WIDTH, break_on_hyphens=False))


def plot_summary(summary):
    """A figure of summarize()'s table: per dataset, horizontal bars of each group's mean test accuracy with the
    seeds' standard deviation (PLOTTED's columns that the runs have); groups without one are left out."""
    columns = [c for c in PLOTTED if f"{c}_mean" in summary and summary[f"{c}_mean"].notna().any()]
    summary = summary[summary[[f"{c}_mean" for c in columns]].notna().any(axis=1)]
    if summary.empty:
        raise TimeMAEError("--plot: no run has a test accuracy to draw (unlabelled data, or no test split)")
    from matplotlib.figure import Figure   # only --plot needs matplotlib; no pyplot, so no backend is chosen
    summary = summary.assign(dataset=summary.dataset.fillna("dataset not recorded"))   # a metrics.json without one
    datasets = list(dict.fromkeys(summary.dataset))
    summary = summary.assign(label=[group_label(r) for _, r in summary.iterrows()])
    lines = max(label.count("\n") + 1 for label in summary.label)   # a group's rows: its bars, or its label's lines
    heights = [len(summary[summary.dataset == d]) for d in datasets]
    fig = Figure(figsize=(9, 1.2 + sum(max(0.3 * len(columns), 0.2 * lines) * h + 0.8 for h in heights)))
    axes = fig.subplots(len(datasets), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    bar = 0.8 / max(1, len(columns))
    for ax, dataset in zip(axes[:, 0], datasets):
        part = summary[summary.dataset == dataset].reset_index(drop=True)
        for k, column in enumerate(columns):
            bars = ax.barh(part.index + k * bar, part[f"{column}_mean"], height=bar,
                           xerr=part[f"{column}_std"].fillna(0), label=PLOTTED[column], color=f"C{k}", capsize=2)
            ax.bar_label(bars, [f"{v:.1f}" if v == v else "" for v in part[f"{column}_mean"]], label_type="center",
                         fontsize="x-small", color="white")
        ax.set_yticks(part.index + bar * (len(columns) - 1) / 2, part.label.tolist())
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_title(dataset)
        ax.set_xlabel("test accuracy (%), mean ± std over seeds")
        ax.grid(axis="x", alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=len(columns), fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def main(argv=None):
    p = ArgumentParser(prog="python -m tools.summarize", description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", metavar="folder",
                   help="folders searched recursively for run folders (metrics.json), or run folders")
    p.add_argument("--out", help="CSV to write the summary to")
    p.add_argument("--markdown", help="markdown file to write the 'mean ± std' table to")
    p.add_argument("--plot", help="PNG to draw the accuracies in, beside the raw-series baselines")
    a = p.parse_args(argv)
    try:
        for what, path, suffix in (("--out", a.out, ".csv"), ("--markdown", a.markdown, ".md"),
                                   ("--plot", a.plot, ".png")):
            if path is not None:   # before the work
                check_named_output(path, what, suffix)
        runs = collect_runs(a.roots)
        if runs.empty:
            raise TimeMAEError(f"no run folder with metrics.json under {', '.join(map(repr, a.roots))}")
        # one run in several study folders (the ablation's full model is mask_ratio's 0.6): one seed, not several;
        # runs without test scores have too little to tell them apart by, and are all kept
        scored = runs.filter(["finelast_acc", "fineall_acc"]).notna().any(axis=1)
        repeats = runs.astype(str).duplicated([c for c in runs if c != "run"]) & scored
        runs, repeated = runs[~repeats], runs.run[repeats]
        summary = summarize(runs)
        table = format_table(summary)
        if a.out:
            atomic_write_text(summary.to_csv(index=False), a.out)
        if a.markdown:
            atomic_write_text(markdown(table) + "\n", a.markdown)
        if a.plot:
            atomic_save_figure(plot_summary(summary), a.plot)
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table.to_string(index=False))
    if len(repeated):
        print(f"note: {len(repeated)} run(s) repeat another's configuration, seed, commit and scores, and count once: "
              f"{', '.join(repeated)}")
    untested = runs.run[~scored[runs.index]]
    if len(untested):
        print(f"note: {len(untested)} run(s) without a test accuracy (unlabelled data, or no test split), counted "
              f"in `runs` with empty accuracy columns: {', '.join(untested)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
