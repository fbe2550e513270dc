"""What every study shares: the command line, the flags of each budget, running engine.pipeline.run per configuration
and seed, and writing results.csv, results.md and a figure.

A run lands in <out>/<study>/<budget>/<dataset>/<config>/seed<k> (for ucr <dataset> is the --UCR_folder name, as
in the tables); a run folder that already holds metrics.json is reused, so an interrupted study continues where it
stopped. results.csv gathers every run of the study done so far (all datasets and budgets), one row per run and
protocol, so Epilepsy and UWave invocations add up.
"""
import os
import sys

import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from args import DATASETS, build_parser, parse_args
from common.cli import ArgumentParser
from common.errors import TimeMAEError
from datautils import dataset_name, existing_folder
from engine.pipeline import flag_message, run
from experiments.presets import ALL
from model.config import as_flags
from process import NO_STEP_BUDGET
from tools.tables import markdown, mean_std
from engine.runfiles import append_line, atomic_save_figure, atomic_write_text, make_writable_dir, metric, read_json

# --quick: a small model, few epochs and a quarter of the pretraining data: minutes on 2 CPU cores.
# UWave's 120 training series make one batch of 128, so quick UWave runs take batches of 16 instead.
QUICK_MODEL = ["--d_model", "32", "--attn_heads", "2", "--layers", "2", "--reg_layers", "1", "--vocab_size", "64",
               "--probe_every", "5"]
QUICK = {"uwave": ["--num_epoch_pretrain", "20", "--num_epoch", "50",
                   "--train_batch_size", "16"]}
QUICK_DEFAULT = ["--num_epoch_pretrain", "5", "--num_epoch", "3", "--pretrain_ratio", "0.25"]
METRICS = ("acc", "f1")
# the raw-series baselines each run scores on its own test split (metrics.json's baselines): beside every row
RAW = {"raw_nn1": ("nn1", "raw 1-NN"), "raw_logistic": ("logistic", "raw logistic")}
PROTOCOLS = ("finelast", "fineall")
NO_PRETRAINING = ["--num_epoch_pretrain", "0"]  # FineZero (its FineLast) and FineZero+ (its FineAll)
# Pretraining whose checkpoint is the last epoch (probed once, so no label selects it), not fine-tuned: the
# source of runs that start from it with --pretrained_path.
PRETRAIN_ONLY = ["--num_epoch", "0", "--probe_every", "100000"]
# The budget's epochs and batch as asked, at every point of a sweep over data shares: main.py's small-set step budget
# would give a small share more steps than a larger one (below 4 batches it raises the epochs), so the points would
# differ in training as well as in data.
FIXED_BUDGET = as_flags(NO_STEP_BUDGET)


def parser(doc, module, datasets="one"):
    """The command line of the study `module` (run as python -m module; its docstring `doc`, whose first paragraph
    describes it); flags it does not know are passed on to every main.py run (last wins)."""
    p = ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0],
                       epilog="Further flags (e.g. --wave_length 8 --d_model 16) go to every main.py run; "
                              "they override the budget's flags, not the study's own.")
    if datasets == "one":
        p.add_argument("--dataset", required=True, choices=DATASETS)
        p.add_argument("--data_path", help="dataset folder (default: $TIMEMAE_DATA/<Name>)")
    else:
        p.add_argument("--datasets", nargs="+", required=True, choices=DATASETS,
                       help="pretrain on each, evaluate on each")
    p.add_argument("--quick", action="store_true", help="small model, few epochs, data subsets: a few minutes")
    p.add_argument("--seeds", type=int, nargs="+", help="default: 1 with --quick, else 1 2 3")
    p.add_argument("--threads", default="1", help="torch CPU threads per run")
    p.add_argument("--out", default=os.path.join("exp", "studies"), help="root of the study folders")
    p.add_argument("--budget", help="name of the budget in folders and tables when further flags change it "
                                    "(default: quick or full)")
    return p


def parse(p, argv):
    a, extra = p.parse_known_args(argv)
    a.seeds = list(dict.fromkeys(a.seeds or ([1] if a.quick else [1, 2, 3])))   # a repeated seed is one run
    if any(not 0 <= s < 2**32 for s in a.seeds):   # main.py's --seed range, before any run folder
        raise TimeMAEError(f"--seeds must lie in 0..{2**32 - 1}, got {' '.join(map(str, a.seeds))}")
    if "datasets" in a:
        a.datasets = list(dict.fromkeys(a.datasets))
    a.scale = "quick" if a.quick else "full"  # picks the sweep's default values
    a.budget = a.budget or a.scale
    a.extra = extra
    return a


def shares(values, flag, one=True):
    """A sweep's values, each once in the order given; one outside (0, 1] (without `one`: (0, 1)) is refused
    before any run, as main.py would refuse it in every run."""
    for v in values:
        if not (0 < v < 1 or (one and v == 1)):
            raise TimeMAEError(f"{flag}: each value must lie in (0, 1{']' if one else ')'}, got {v:g}")
    return list(dict.fromkeys(values))


def main_flags(argv):
    """main.py's settings from `argv`; a flag it refuses is a one-line error rather than main.py's usage."""
    p = build_parser()

    def refuse(message):
        raise TimeMAEError(f"a flag passed on to main.py: {message}")
    p.error = refuse
    return p.parse_args(argv)


def without_flag(argv, flag):
    """argv without `flag` and its value (`flag value` or `flag=value`)."""
    kept, skip = [], False
    for arg in argv:
        if not skip and arg != flag and not arg.startswith(flag + "="):
            kept.append(arg)
        skip = arg == flag and not skip
    return kept


def base_flags(dataset, quick):
    """Flags of one dataset at one budget, before the study's own."""
    full = ALL.get(dataset, ["--wave_length", "8"])
    if not quick:
        return ["--dataset", dataset, *full]
    return ["--dataset", dataset, *QUICK_MODEL, *full[:2], *QUICK.get(dataset, QUICK_DEFAULT)]


class Study:
    """Runs configurations of one study over seeds and collects their metrics."""

    def __init__(self, name, a):
        self.name, self.a = name, a
        self.folder = os.path.join(a.out, name)
        self.rows = []
        self.names = {}    # folders and tables name a UCR/UEA set by --UCR_folder: each set has its own runs
        self.prefix = {}   # each dataset's main.py flags before a run's own: checked here, as every run gets them
        data_path = vars(a).get("data_path")    # transfer reads each dataset from its default folder
        for dataset in [a.dataset] if "dataset" in a else a.datasets:   # before any run writes a folder
            # the UCR/UEA set a transfer study names goes to its ucr runs alone (main.py refuses it elsewhere)
            extra = a.extra if dataset == "ucr" or "dataset" in a else without_flag(a.extra, "--UCR_folder")
            self.prefix[dataset] = [*base_flags(dataset, a.quick), *extra,
                                    *(["--data_path", data_path] if data_path else [])]
            cfg = main_flags(self.prefix[dataset])
            if cfg.dataset == "ucr" and not cfg.UCR_folder:
                raise TimeMAEError("--dataset ucr needs --UCR_folder <Name>: the study's folders and tables are "
                                   "named by the set")
            self.names[dataset] = dataset_name(cfg.dataset, cfg.UCR_folder)
            if cfg.dataset != "numpy":   # missing data refused once, not by every run
                existing_folder(cfg.dataset, cfg.data_path, cfg.UCR_folder)
        make_writable_dir(a.out, "--out folder")

    def run_dir(self, dataset, config, seed):
        return os.path.join(self.folder, self.a.budget, self.names[dataset], config, f"seed{seed}")

    def run(self, dataset, config, flags, seed, **fields):
        """One main.py run (or the finished one already on disk); adds a row per protocol and returns the run
        folder, or None when main.py refused the configuration (the row then says why)."""
        folder = self.run_dir(dataset, config, seed)
        argv = [*self.prefix[dataset], *flags, "--seed", str(seed), "--save_path", folder, "--threads",
                str(self.a.threads), "--no_progress"]
        row = dict(study=self.name, budget=self.a.budget, dataset=self.names[dataset], config=config, seed=seed,
                   **fields)
        done = os.path.join(folder, "metrics.json")
        try:
            if not os.path.isfile(done):
                os.makedirs(folder, exist_ok=True)
                run(parse_args([*argv, "--overwrite"]), log=lambda *m: append_line(os.path.join(folder, "log.txt"),
                                                                                    " ".join(map(str, m))))
        except TimeMAEError as e:
            reason = flag_message(e)
            self.drop_empty(folder)
            tqdm.write(f"{self.name}: {self.names[dataset]}/{config} seed {seed} refused: {reason}")
            self.rows.append({**row, "protocol": "refused", "status": reason})
            return None
        metrics = read_json(done)   # a reused run's file is checked as the tools check it
        raw = {column: metric(metrics, done, "baselines", name, "acc") for column, (name, _) in RAW.items()}
        for protocol in PROTOCOLS:
            if protocol in metrics:
                scores = {m: metric(metrics, done, protocol, m) for m in METRICS}
                self.rows.append({**row, "protocol": protocol_name(config, protocol), "status": "ok",
                                  "seconds": metric(metrics, done, "seconds"),
                                  "labelled": metrics[protocol].get("fitted", metrics.get("labelled")),
                                  **{m: None if v is None else 100 * v for m, v in scores.items()},
                                  **{c: None if v is None else 100 * v for c, v in raw.items()}})
        return folder

    def drop_empty(self, folder):
        """Remove `folder`, a run main.py refused before it wrote anything, and the folders above it that it
        leaves empty, up to the study's own: no empty run folder looks like a run to come."""
        while folder != self.folder and not os.path.islink(folder) and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
            folder = os.path.dirname(folder)

    def sweep(self, dataset, configs):
        """Run [(config name, main.py flags, fields)] over the seeds, with a progress bar."""
        jobs = [(c, s) for c in configs for s in self.a.seeds]
        # disable None: drawn on a terminal only, so a log file gets no carriage-return frames
        progress = tqdm(jobs, desc=f"{self.name} {self.names[dataset]}", dynamic_ncols=True, disable=None)
        for (config, flags, fields), seed in progress:
            self.run(dataset, config, flags, seed, **fields)

    def finish(self, plot, order=None, panels=("dataset", "budget")):
        """Merge this invocation's rows into results.csv, write results.md and the figure (one panel per value of
        `panels`, drawn by plot(ax, rows of the panel)); print the table."""
        refused = [row["status"] for row in self.rows if row["protocol"] == "refused"]
        if refused and len(refused) == len(self.rows):
            raise TimeMAEError(f"{self.name}: every run was refused, the first with: {refused[0]}")
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, "results.csv")
        runs = pd.DataFrame(self.rows)
        if os.path.isfile(path):
            old = read_results(path)
            key = ["budget", "dataset", "config", "seed"]
            fresh = old.merge(runs[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"] == "left_only"
            runs = pd.concat([old[fresh.to_numpy()], runs], ignore_index=True)
        atomic_write_text(runs.to_csv(index=False), path)      # it holds earlier sessions' rows too
        table = aggregate(runs, order)
        text = markdown(study_table(table))
        atomic_write_text(f"# {self.name}\n\nTest accuracy and macro-F1 in %, mean ± std over seeds "
                          f"(FineZero / FineZero+ = FineLast / FineAll without pretraining).\n\n{text}\n",
                          os.path.join(self.folder, "results.md"))
        figure = os.path.join(self.folder, f"{self.name}.png")
        ok = table[table.protocol != "refused"]
        groups = list(ok.groupby(list(panels), sort=False))
        fig = Figure(figsize=(5.5 * max(1, len(groups)), 4.2))   # no pyplot: no backend chosen, no window
        axes = fig.subplots(1, max(1, len(groups)), squeeze=False)
        for ax, (values, part) in zip(axes[0], groups):
            ax.grid(alpha=0.3)
            plot(ax, part)
            ax.set_title(f"{self.name}: " + ", ".join(map(str, values)))
        fig.tight_layout()
        atomic_save_figure(fig, figure)
        print(text)
        print(f"{path}\n{figure}")
        return table


def protocol_name(config, protocol):
    """FineLast/FineAll, or FineZero/FineZero+ for the run without pretraining."""
    if config.startswith("no_pretraining"):
        return {"finelast": "FineZero", "fineall": "FineZero+"}[protocol]
    return {"finelast": "FineLast", "fineall": "FineAll"}[protocol]


def read_results(path):
    """A study's results.csv as written: its names as text, as the new rows hold them (a budget named 2, a
    dataset NA or a config 01 would otherwise come back as numbers or missing and never match them)."""
    return pd.read_csv(path, dtype={k: str for k in ("study", "budget", "dataset", "config", "protocol", "status")},
                       keep_default_na=False, na_values=[""])


def aggregate(runs, order=None):
    """Mean, std and count over seeds of every (budget, dataset, config, protocol) with the study's fields."""
    scored = [*METRICS, *RAW]
    fields = [c for c in runs.columns if c not in
              ("study", "seed", "status", "seconds", "budget", "dataset", "config", "protocol", *scored)]
    keys = ["budget", "dataset", "config", "protocol"] + fields  # 'labelled': series the probe or FineAll fit on
    for m in scored:
        if m not in runs:
            runs[m] = float("nan")
    grouped = runs.groupby(keys, dropna=False, sort=False)
    table = grouped[scored].mean().join(grouped[scored].std(ddof=1), rsuffix="_std")
    table["runs"] = grouped.size()
    table["note"] = grouped["status"].first().where(lambda s: s != "ok", "")
    table = table.reset_index()
    if order:  # the study's own order of configurations
        table["_order"] = table.config.map({c: i for i, c in enumerate(order)})
        table = table.sort_values(["budget", "dataset", "_order"], kind="stable").drop(columns="_order")
    return table


def study_table(table):
    """The aggregate table with 'mean ± std' cells, for results.md: TimeMAE's accuracy and macro-F1, then the
    raw-series baselines' accuracy on the same test split."""
    scores = {"acc": "accuracy", "f1": "macro-F1", **{c: name for c, (_, name) in RAW.items()}}
    out = table[[c for c in table.columns if c not in (*scores, *(f"{c}_std" for c in scores), "runs", "note")]].copy()
    for column, name in scores.items():
        out[name] = [mean_std(m, s) for m, s in zip(table[column], table[f"{column}_std"])]
    return out.assign(runs=table.runs, note=table.note)


def lines(ax, table, x, xlabel, log=False):
    """Accuracy against a numeric field, one line (with std band) per protocol."""
    for protocol, part in table.groupby("protocol", sort=False):
        part = part.sort_values(x)
        ax.errorbar(part[x], part.acc, yerr=part.acc_std.fillna(0), marker="o", capsize=3, label=protocol)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)


def main_guard(study):
    """Run a study's main(argv) and turn bad input into a one-line error with exit code 2."""
    try:
        study(sys.argv[1:])
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
