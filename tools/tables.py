"""The tools' tables: which flags tell a run's configuration apart and its label, per-run rows reduced to means
and standard deviations over runs and quoted as 'mean ± std', their printing and CSV output, and markdown tables
(tools.summarize, tools.pooling, tools.baselines, tools.runs and the studies share them)."""
import os
import re

import pandas as pd

from args import flag_defaults, runtime_flags
from common.errors import TimeMAEError
from engine.runfiles import atomic_write_text, check_output_file, make_writable_dir


def config_flags():
    """The flags whose values tell configurations apart: all but the runtime flags (args.runtime_flags: paths,
    machine, speed), the seed (a group's runs differ in it) and the epochs asked for (tools.summarize groups by
    those run). args.json's other entries, derived values and provenance, are no flags."""
    return [k for k in flag_defaults() if k not in runtime_flags() | {"seed", "num_epoch_pretrain", "num_epoch"}]


def comparable(value):
    """A flag value as text, one word (a list's items joined by commas, so a config label splits at its flags);
    seed folders in paths (a --pretrained_path per seed) count as one value."""
    return re.sub(r"seed\d+", "seed*", ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))


def config_labels(runs):
    """Per run, 'flag=value' for every flag whose value differs between the runs of its dataset."""
    labels = pd.Series("", index=runs.index)
    for _, part in runs.groupby("dataset", dropna=False):
        table = pd.DataFrame(list(part.args), index=part.index)
        varying = [c for c in table.columns if table[c].nunique(dropna=False) > 1]
        labels[part.index] = [" ".join(f"{c}={v}" for c, v in r.items() if v == v) for _, r in
                              table[varying].iterrows()]
    return labels


def mean_std(mean, std):
    """'mean ± std' with two decimals; the mean alone where std is undefined (one run); '' without a mean."""
    if mean != mean:
        return ""
    return f"{mean:.2f} ± {std:.2f}" if std == std else f"{mean:.2f}"


def run_means(table, keys, extra=None):
    """A tool's per-run rows (run, acc, f1, ...) -> one row per `keys`: runs, the means of `extra` ({column: its
    source column}), and test accuracy and macro-F1 as mean and sample standard deviation (NaN for one run), all in
    %. A key read back from CSV as NaN (an empty config: one configuration) is kept."""
    extra = extra or {}
    out = table.groupby(keys, sort=False, dropna=False).agg(
        runs=("run", "nunique"), **{k: (v, "mean") for k, v in extra.items()}, acc=("acc", "mean"),
        acc_std=("acc", "std"), f1=("f1", "mean"), f1_std=("f1", "std"))
    out[[*extra, "acc", "acc_std", "f1", "f1_std"]] *= 100
    return out.reset_index()


def quoted(means):
    """run_means' rows with accuracy and macro-F1 as 'mean ± std', as the results tables quote them."""
    return means.assign(acc=[mean_std(m, s) for m, s in zip(means.acc, means.acc_std)],
                        f1=[mean_std(m, s) for m, s in zip(means.f1, means.f1_std)]).drop(columns=["acc_std", "f1_std"])


def check_named_output(path, what, suffix, create_folder=False):
    """An output file of setting `what`, refused before any work unless its name ends in `suffix` (so a run's own
    args.json or metrics.json is never overwritten by mistake) and its folder exists (or, with create_folder, can
    be made)."""
    if not path.lower().endswith(suffix):
        raise TimeMAEError(f"{what} {path!r}: name a {suffix} file")
    check_output_file(path, what, create_folder)


def check_table_out(path):
    """--out of a tool's per-run rows (report_runs): a .csv file, its folder made if need be."""
    check_named_output(path, "--out", ".csv", create_folder=True)


def report_runs(table, means, out=None):
    """Print the per-run rows of a tool's `table` (a `run` column; accuracies as fractions), then `means(table)` (a
    DataFrame of figures in %) when it holds several runs, and write the rows as CSV to `out` (atomically, its
    folder created; None: print only)."""
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if table.run.nunique() > 1:
        print("\nmean over the runs (%):\n" + means(table).to_string(index=False))
    if out:
        make_writable_dir(os.path.dirname(os.path.abspath(out)), "--out's folder")   # check_table_out let it be made
        atomic_write_text(table.to_csv(index=False), out)


def markdown(table):
    """A GitHub markdown table of a DataFrame of strings and numbers; missing values are empty cells (pandas 3's
    astype(str) keeps them as NaN). Not DataFrame.to_markdown: it needs tabulate, which is no requirement."""
    cells = table.astype(object).where(table.notna(), "")
    rows = [list(map(str, table.columns))] + [list(map(str, row)) for row in cells.values.tolist()]
    return "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ["---"] * len(rows[0]), *rows[1:]])
