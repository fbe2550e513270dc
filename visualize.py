"""Plots of a run folder: pretraining curves, codebook usage, fine-tuning and a t-SNE of the representations.

    python visualize.py exp/epilepsy/seed1 [--data_path DIR] [--max_points 2000]

Writes curves.png (the probe panel marks the selected checkpoint), codebook.png, finetune.png (FineAll's
selection-split accuracy per evaluation, the kept step marked; runs with FineAll) and tsne.png into the run
folder. codebook.png shows, per pretraining epoch, how many of the tokenizer's codewords the MCC targets used and
the perplexity of their distribution (the number of equally used codewords it equals): a tokenizer that collapsed
onto a few codewords shows at a glance.
"""
import argparse
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from classification import extract_representations  # noqa: E402
from common.errors import TimeMAEError  # noqa: E402
from datautils import load_dataset, normalize  # noqa: E402
from engine.checkpoint import load_model  # noqa: E402
from engine.record import EPOCH_LOG  # noqa: E402
from engine.runfiles import atomic_save_figure  # noqa: E402


def read_epochs(run_dir):
    """pretrain_log.jsonl as a DataFrame, one row per pretraining epoch (probe: NaN where none ran); empty for a
    run that pretrained no epoch (FineZero, or --pretrained_path with --num_epoch_pretrain 0)."""
    path = os.path.join(run_dir, EPOCH_LOG)
    if not os.path.isfile(path):
        raise TimeMAEError(f"{run_dir!r} has no {EPOCH_LOG} (not a run folder, or one written before the "
                           "per-epoch log existed)")
    try:
        epochs = pd.read_json(path, lines=True)
    except ValueError as e:
        raise TimeMAEError(f"cannot read {path}: {e}") from None
    return epochs


def read_args(run_dir):
    """args.json: the run's flags (read once; every plot takes what it needs)."""
    path = os.path.join(run_dir, "args.json")
    if not os.path.isfile(path):
        raise TimeMAEError(f"{run_dir!r} is not a run folder (no args.json)")
    with open(path) as f:
        return json.load(f)


def read_metrics(run_dir):
    """metrics.json, or {} while the run is unfinished."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


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


def plot_curves(run_dir, cfg, pre, metrics):
    probe = pre.dropna(subset=["probe"])  # the last epoch is always probed
    finelast = metrics.get("finelast", {})
    chosen = probe[probe.epoch == finelast.get("epoch")]
    panels = [("loss", "total loss"), ("mse", "MRR (MSE)"), ("ce", "MCC (cross-entropy)"),
              ("hits", "codeword hits@1 / NDCG@10"), ("used", "codewords used / perplexity"), (None, "probe accuracy")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, title) in zip(axes.flat, panels):
        if key is None:
            ax.plot(probe.epoch, 100 * probe.probe, "o-", label="probe (selection split)")
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
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run_dir}  (probe selection on {cfg['select_on']})")
    fig.tight_layout()
    out = os.path.join(run_dir, "curves.png")
    atomic_save_figure(fig, out)
    return out


def plot_codebook(run_dir, cfg, pre):
    """Codewords used and perplexity of the codeword targets per epoch (`pre`: read_epochs), against the codebook
    size."""
    vocab = cfg["vocab_size"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(pre.epoch, pre.used, "o-", ms=3, label="codewords used")
    ax.plot(pre.epoch, pre.ppl, "s-", ms=3, label="perplexity of the assignments")
    ax.axhline(vocab, ls="--", color="grey", label=f"codebook size {vocab}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel("codewords (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    last = pre.iloc[-1]
    ax.set_title(f"codebook usage, {run_dir}\nlast epoch: {int(last.used)} of {vocab} codewords used, "
                 f"perplexity {last.ppl:.1f} ({100 * last.ppl / vocab:.1f}% of the codebook)", fontsize=9)
    fig.tight_layout()
    out = os.path.join(run_dir, "codebook.png")
    atomic_save_figure(fig, out)
    return out


def plot_finetune(run_dir, cfg, steps, kept, metrics):
    """FineAll's selection-split accuracy and macro-F1 per evaluation (`steps`, `kept`: read_finetune), the kept
    step marked, with its test accuracy and FineLast's (`metrics`: metrics.json) in the title."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(steps.step, 100 * steps.acc, "o-", ms=3, label="accuracy")
    ax.plot(steps.step, 100 * steps.f1, "s-", ms=3, alpha=0.6, label="macro-F1")
    best = steps[steps.step == kept].head(1)
    if len(best):
        ax.plot(best.step, 100 * best.acc, "*", ms=15, color="C3", label=f"kept: step {kept}" +
                (" (FineLast's probe)" if kept == 0 and steps.step.iloc[0] == 0 else ""))
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(f"% on the {cfg['select_on']} split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    scores = [f"{name} test {100 * metrics[key]['acc']:.2f}" for key, name in (("fineall", "FineAll"),
                                                                               ("finelast", "FineLast"))
              if "acc" in metrics.get(key, {})]
    ax.set_title(f"fine-tuning (FineAll), {run_dir}" + (f"\n{', '.join(scores)}" if scores else ""), fontsize=9)
    fig.tight_layout()
    out = os.path.join(run_dir, "finetune.png")
    atomic_save_figure(fig, out)
    return out


def plot_tsne(run_dir, cfg, data_path=None, max_points=2000, seed=0):
    from sklearn.manifold import TSNE
    splits = normalize(load_dataset(cfg["dataset"], data_path or cfg["data_path"], cfg.get("UCR_folder"),
                                    cfg.get("gaps", "refuse")),
                       cfg.get("normalize", "channel"))
    model, ckpt = load_model(os.path.join(run_dir, "pretrain_model.pkl"))
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(splits.test_x))[:max_points]
    reps = extract_representations(model, torch.from_numpy(splits.test_x[idx]), 512)
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(idx) - 1)).fit_transform(reps)
    fig, ax = plt.subplots(figsize=(7, 6))
    labels = splits.test_y[idx]
    for k, name in enumerate(splits.classes):
        ax.scatter(*xy[labels == k].T, s=6, alpha=0.7, label=name)
    ax.legend(markerscale=3, fontsize=8, title="class")
    ax.set_title(f"t-SNE of test representations, {cfg['dataset']}, pretraining epoch {ckpt['epoch']}")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out = os.path.join(run_dir, "tsne.png")
    atomic_save_figure(fig, out)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--data_path", help="dataset folder, if it moved since the run")
    p.add_argument("--max_points", type=int, default=2000, help="test series shown in the t-SNE")
    p.add_argument("--no_tsne", action="store_true")
    a = p.parse_args(argv)
    try:
        cfg = read_args(a.run_dir)
        epochs = read_epochs(a.run_dir)
        metrics = read_metrics(a.run_dir)   # {} while the run is unfinished
        if epochs.empty:  # the t-SNE of its checkpoint is still worth a look
            print(f"{a.run_dir}: no pretraining epochs (FineZero, or pretrained in another run): no curves.png or "
                  "codebook.png")
        else:
            print(plot_curves(a.run_dir, cfg, epochs, metrics))
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
