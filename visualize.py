"""Plots of a run folder: pretraining curves, codebook usage, fine-tuning and a t-SNE of the representations.

    python visualize.py exp/epilepsy/seed1 [--data_path DIR] [--max_points 2000]

Writes curves.png (the probe panel marks the selected checkpoint; runs on labelled data), codebook.png,
finetune.png (FineAll's selection-split accuracy per evaluation, the kept step marked; runs with FineAll) and
tsne.png (the test series, prepared as the checkpoint's training data was; runs with a test split) into the run
folder. codebook.png shows, per pretraining epoch, how many of the tokenizer's codewords the MCC targets used and
the perplexity of their distribution (the number of equally used codewords it equals): a tokenizer that collapsed
onto a few codewords shows at a glance.
"""
import os
import re
import sys

import matplotlib.ticker
from matplotlib.figure import Figure
import numpy as np
import pandas as pd
import torch

from args import saved_flags
from classification import extract_representations
from common.cli import ArgumentParser
from common.errors import TimeMAEError
from datautils import load_dataset, normalize, prepare_series
from engine.checkpoint import check_trained_on, load_model, training_data
from engine.record import EPOCH_LOG, read_epoch_log
from engine.runfiles import FIGURES, atomic_save_figure, metric, read_json


def read_epochs(run_dir):
    """pretrain_log.jsonl as a DataFrame, one row per pretraining epoch (probe: NaN where none ran); empty for a
    run that pretrained no epoch (FineZero, or --pretrained_path with --num_epoch_pretrain 0)."""
    path = os.path.join(run_dir, EPOCH_LOG)
    if not os.path.isfile(path):
        raise TimeMAEError(f"{run_dir!r} has no {EPOCH_LOG} (not a run folder, or one written before the "
                           "per-epoch log existed)")
    return pd.DataFrame(read_epoch_log(path))


def read_args(run_dir):
    """The run's flags, args.json over today's defaults (args.saved_flags; read once, every plot takes what it
    needs)."""
    if not os.path.isfile(os.path.join(run_dir, "args.json")):
        raise TimeMAEError(f"{run_dir!r} is not a run folder (no args.json)")
    return saved_flags(run_dir)


def read_metrics(run_dir):
    """What the plots read of metrics.json, each value checked (engine.runfiles.metric): FineLast's epoch and test
    accuracy, FineAll's test accuracy; {} while the run is unfinished."""
    path = os.path.join(run_dir, "metrics.json")
    metrics, read = (read_json(path) if os.path.isfile(path) else {}), {}
    for phase, key in (("finelast", "epoch"), ("finelast", "acc"), ("fineall", "acc")):
        if (value := metric(metrics, path, phase, key)) is not None:
            read.setdefault(phase, {})[key] = value
    return read


def read_finetune(run_dir):
    """FineAll's evaluations in result.txt as a DataFrame (epoch, step, acc, f1: on the selection split) and the
    step the run kept (None before the run ended); empty without FineAll."""
    path = os.path.join(run_dir, "result.txt")
    text = ""
    if os.path.isfile(path):
        with open(path) as f:
            text = f.read()
    rows = re.findall(r"^epoch(\d+), step(\d+), \w+_acc([0-9.]+), \w+_f1([0-9.]+)$", text, re.M)
    steps = pd.DataFrame(rows, columns=["epoch", "step", "acc", "f1"]).astype(
        {"epoch": int, "step": int, "acc": float, "f1": float})
    kept = re.search(r"^final,.*best_step(\d+)", text, re.M)
    return steps, int(kept[1]) if kept else None


def probed(pre):
    """Whether the pretraining epochs (`pre`: read_epochs) were probed: on labelled data the last always is; on
    unlabelled data none."""
    return "probe" in pre and pre.probe.notna().any()


def plot_curves(run_dir, cfg, pre, metrics):
    """The pretraining losses, codeword hits, codebook usage and, where the epochs were probed, the probe's
    accuracy with the selected epoch starred."""
    probe = pre.dropna(subset=["probe"]) if probed(pre) else None
    panels = [("loss", "total loss"), ("mse", "MRR (MSE)"), ("ce", "MCC (cross-entropy)"),
              ("hits", "codeword hits@1 / NDCG@10"), ("used", "codewords used / perplexity"), (None, "probe accuracy")]
    fig = Figure(figsize=(13, 7))
    axes = fig.subplots(2, 3)
    for ax, (key, title) in zip(axes.flat, panels):
        if key is None and probe is None:
            ax.set_axis_off()
            continue
        if key is None:
            ax.plot(probe.epoch, 100 * probe.probe, "o-", label="probe (selection split)")
            finelast = metrics.get("finelast", {})
            chosen = probe[probe.epoch == finelast.get("epoch")]
            if len(chosen):
                test = f"; FineLast test {100 * finelast['acc']:.2f}" if "acc" in finelast else ""
                ax.plot(chosen.epoch, 100 * chosen.probe, "*", ms=15, color="C3",
                        label=f"selected: epoch {int(chosen.epoch.iloc[0])}{test}")
            ax.legend(fontsize=8)
            ax.set_ylabel("%")
        else:
            ax.plot(pre.epoch, pre[key], label=key)
            partner = {"hits": "ndcg", "used": "ppl"}.get(key)
            if partner in pre:
                ax.plot(pre.epoch, pre[partner], label=partner)
                ax.legend()
        ax.set_title(title)
        ax.set_xlabel("epoch")
        # every panel over the same epochs, half an epoch either side: a single probe's panel gets a whole-number tick
        ax.set_xlim(pre.epoch.min() - 0.5, pre.epoch.max() + 0.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))   # no epoch 1.5 on short runs
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run_dir}  " + ("(no probe: unlabelled data)" if probe is None
                                    else f"(probe selection on {cfg['select_on']})"))
    fig.tight_layout()
    out = os.path.join(run_dir, FIGURES["curves"])
    atomic_save_figure(fig, out)
    return out


def plot_codebook(run_dir, cfg, pre):
    """Codewords used and perplexity of the codeword targets per epoch (`pre`: read_epochs), against the codebook
    size."""
    vocab = cfg["vocab_size"]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(pre.epoch, pre.used, "o-", ms=3, label="codewords used")
    ax.plot(pre.epoch, pre.ppl, "s-", ms=3, label="perplexity of the assignments")
    ax.axhline(vocab, ls="--", color="grey", label=f"codebook size {vocab}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("pretraining epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("codewords (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    last = pre.iloc[-1]
    ax.set_title(f"codebook usage, {run_dir}\nlast epoch: {int(last.used)} of {vocab} codewords used, "
                 f"perplexity {last.ppl:.1f} ({100 * last.ppl / vocab:.1f}% of the codebook)", fontsize=9)
    fig.tight_layout()
    out = os.path.join(run_dir, FIGURES["codebook"])
    atomic_save_figure(fig, out)
    return out


def plot_finetune(run_dir, cfg, steps, kept, metrics):
    """FineAll's selection-split accuracy and macro-F1 per evaluation (`steps`, `kept`: read_finetune), the kept
    step marked, with its test accuracy and FineLast's (`metrics`: metrics.json) in the title."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(steps.step, 100 * steps.acc, "o-", ms=3, label="accuracy")
    ax.plot(steps.step, 100 * steps.f1, "s-", ms=3, alpha=0.6, label="macro-F1")
    best = steps[steps.step == kept].head(1)
    if len(best):
        ax.plot(best.step, 100 * best.acc, "*", ms=15, color="C3", label=f"kept: step {kept}" +
                (" (FineLast's probe)" if kept == 0 and steps.step.iloc[0] == 0 else ""))
    ax.set_xlabel("fine-tuning step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"% on the {cfg['select_on']} split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    scores = [f"{name} test {100 * metrics[key]['acc']:.2f}" for key, name in (("fineall", "FineAll"),
                                                                               ("finelast", "FineLast"))
              if "acc" in metrics.get(key, {})]
    ax.set_title(f"fine-tuning (FineAll), {run_dir}" + (f"\n{', '.join(scores)}" if scores else ""), fontsize=9)
    fig.tight_layout()
    out = os.path.join(run_dir, FIGURES["finetune"])
    atomic_save_figure(fig, out)
    return out


def plot_tsne(run_dir, cfg, data_path=None, max_points=2000, seed=0):
    """A t-SNE of the representations of up to `max_points` test series, prepared as the checkpoint's training
    data was (its statistics); data other than the run's (its description: shape, classes, statistics) is
    refused. Returns the file written, or a note saying why there is none."""
    from sklearn.manifold import TSNE
    path = data_path or cfg["data_path"]
    splits = load_dataset(cfg["dataset"], path, cfg["UCR_folder"], cfg["gaps"])
    shown = 0 if splits.test_x is None else len(splits.test_x)
    if shown < 2:   # a test split of one series has no neighbours to place it among
        held = f"the test split holds {shown} series" if shown else "the data has no test split"
        return f"{run_dir}: {held}, a t-SNE needs 2 or more: no tsne.png"
    ckpt_path = os.path.join(run_dir, "pretrain_model.pkl")
    model, ckpt = load_model(ckpt_path)
    test_x = splits.test_x   # raw: prepare_series normalises it with the checkpoint's statistics
    check_trained_on(ckpt, ckpt_path, normalize(splits, cfg["normalize"]), run_dir, path)
    idx = np.random.default_rng(seed).permutation(len(test_x))[:max_points]
    x = prepare_series(test_x[idx], training_data(ckpt, ckpt_path), f"the test split of {path}")
    reps = extract_representations(model, torch.from_numpy(x), 512)
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(idx) - 1)).fit_transform(reps)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    if splits.test_y is None:   # unlabelled data: no classes to colour
        ax.scatter(*xy.T, s=6, alpha=0.7)
    else:
        labels = splits.test_y[idx]
        for k, name in enumerate(splits.classes):
            ax.scatter(*xy[labels == k].T, s=6, alpha=0.7, label=name)
        ax.legend(markerscale=3, fontsize=8, title="class")
    ax.set_title(f"t-SNE of test representations, {cfg['dataset']}, pretraining epoch {ckpt['epoch']}")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out = os.path.join(run_dir, FIGURES["tsne"])
    atomic_save_figure(fig, out)
    return out


def main(argv=None):
    p = ArgumentParser(prog="python visualize.py", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--data_path", help="dataset folder, if it moved since the run")
    p.add_argument("--max_points", type=int, default=2000, help="test series shown in the t-SNE")
    p.add_argument("--no_tsne", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.max_points < 2 and not a.no_tsne:
            raise TimeMAEError(f"--max_points must be 2 or more (a t-SNE places a series among others), got "
                               f"{a.max_points}")
        cfg = read_args(a.run_dir)
        epochs = read_epochs(a.run_dir)
        metrics = read_metrics(a.run_dir)   # {} while the run is unfinished
        if epochs.empty:  # the t-SNE of its checkpoint is still worth a look
            print(f"{a.run_dir}: no pretraining epochs (FineZero, or pretrained in another run): no curves.png or "
                  "codebook.png")
        else:
            print(plot_curves(a.run_dir, cfg, epochs, metrics))
            if not probed(epochs):
                print(f"{a.run_dir}: no probe ran (unlabelled data): curves.png has no probe panel")
            print(plot_codebook(a.run_dir, cfg, epochs))
        steps, kept = read_finetune(a.run_dir)
        if len(steps):
            print(plot_finetune(a.run_dir, cfg, steps, kept, metrics))
        if not a.no_tsne:
            print(plot_tsne(a.run_dir, cfg, a.data_path, a.max_points))
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
