"""Shared fixtures: small synthetic datasets written in the formats the loaders read."""
import itertools
import os

import numpy as np
import pytest
import torch

import process
from model.config import as_flags

torch.set_num_threads(1)

@pytest.fixture(autouse=True, scope="session")
def no_proxy_for_loopback():
    """The download tests' servers listen on 127.0.0.1: never reached through a proxy the environment names
    (http_proxy without no_proxy sends urllib's requests there)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("no_proxy", "NO_PROXY"):
            mp.setenv(name, ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"])))
        yield


TINY = ["--d_model", "16", "--attn_heads", "2", "--layers", "1", "--reg_layers", "1", "--vocab_size", "16",
        "--train_batch_size", "32", "--threads", "1", "--no_progress", "--device", "cpu",
        *as_flags(process.NO_STEP_BUDGET)]  # exactly the epochs asked for


def synthetic_series(n, length=32, channels=2, classes=3, seed=0):
    """Sines whose frequency depends on the class, plus noise: (N, T, C) float32 and labels (N,)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    t = np.linspace(0, 1, length)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, channels))
    x = np.sin(2 * np.pi * (2 + 3 * y)[:, None, None] * t[None, :, None] + phase)
    x = x + 0.1 * rng.standard_normal((n, length, channels))
    return x.astype(np.float32), y.astype(np.int64)


def write_tstcc(folder, n_train=96, n_val=32, n_test=48, **kw):
    """TS-TCC dict files train/val/test.pt with samples (N, C, T)."""
    os.makedirs(folder, exist_ok=True)
    for i, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        x, y = synthetic_series(n, seed=i, **kw)
        torch.save({"samples": torch.from_numpy(x.transpose(0, 2, 1)), "labels": torch.from_numpy(y)},
                   os.path.join(folder, f"{name}.pt"))
    return str(folder)


def scripted_selection(accs):
    """A stand-in for Trainer._scores: the selection split's accuracy of FineAll's successive candidates (step
    0, then every evaluation) is read from `accs`, the last repeated; other splits are scored for real, so the
    kept step is the rule's alone."""
    calls, real = itertools.count(), process.Trainer._scores

    def scores(trainer, model, x, y):
        if x is not trainer.sel_x:
            return real(trainer, model, x, y)
        acc = accs[min(next(calls), len(accs) - 1)]
        return {"acc": acc, "f1": acc, "classes_predicted": 2}
    return scores


def assert_reported(run, metrics):
    """metrics.json's FineLast and FineAll scores are those of the final lines of linear_result.txt and result.txt
    (the files users of the reference code read)."""
    finelast = open(os.path.join(run, "linear_result.txt")).read().splitlines()[-1]
    assert finelast.startswith(f"epoch0, acc{metrics['finelast']['acc']:.4f}, f1{metrics['finelast']['f1']:.4f}")
    if "fineall" in metrics:
        fineall = open(os.path.join(run, "result.txt")).read().splitlines()[-1]
        assert fineall.startswith(f"final, acc{metrics['fineall']['acc']:.4f}, f1{metrics['fineall']['f1']:.4f}")


def folder_bytes(folder):
    """{file name: its bytes} of every file in `folder`: what a refused or failed command must leave as it was."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.fixture
def tstcc_dir(tmp_path):
    return write_tstcc(tmp_path / "Synthetic")
