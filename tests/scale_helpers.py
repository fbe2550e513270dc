"""Tiny synthetic data, flags and helpers shared by the tests (distributed, resume, bad input, baselines)."""
import os
import sys

import numpy as np
import torch

from process import NO_STEP_BUDGET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_pt_dataset(folder, n_train=48, n_val=16, n_test=32, channels=2, length=32, seed=0):
    """TS-TCC style train/val/test.pt, {'samples': (N, C, T), 'labels': (N,)}: two classes of noisy sines
    that differ in frequency and level, so a probe has something (but not everything) to find."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    t = np.arange(length)
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = np.arange(n) % 2
        freq = np.where(y == 1, 0.35, 0.12)[:, None, None]
        phase = rng.uniform(0, 2 * np.pi, (n, channels, 1))
        x = np.sin(freq * t + phase) + 0.5 * y[:, None, None] + 0.5 * rng.standard_normal((n, channels, length))
        torch.save({"samples": torch.tensor(x, dtype=torch.float32), "labels": torch.tensor(y)},
                   os.path.join(folder, f"{name}.pt"))
    return folder


def tiny_flags(data, run, **over):
    """Command-line flags of a tiny, fast CPU run on the data in `data`, writing into `run`."""
    flags = dict(dataset="epilepsy", data_path=data, save_path=run, d_model=16, attn_heads=2, layers=1,
                 reg_layers=1, vocab_size=16, wave_length=4, train_batch_size=16, test_batch_size=64,
                 num_epoch_pretrain=3, probe_every=1, num_epoch=2, eval_per_steps=2, threads=1, device="cpu",
                 seed=0, **NO_STEP_BUDGET)  # exactly the epochs and batches asked for
    flags.update(over)
    argv = [f"--{k}={v}" for k, v in flags.items() if v is not None]
    return argv + ["--no_progress"]


def subprocess_env():
    """Environment for child Python processes: the repository importable, one thread each."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


PYTHON = sys.executable


def majority_accuracy(train_y, test_y):
    """Accuracy of always predicting the most frequent training class: the floor a collapsed model hits."""
    return float(np.mean(np.asarray(test_y) == np.bincount(train_y).argmax()))
