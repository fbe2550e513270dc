"""The probes' representations: each split encoded once per probe (the final FineLast encodes the labelled
fit and selection splits and the test set, nothing twice, and takes the fit and selection splits from the latest
periodic probe when that probe encoded the selected checkpoint), with the same C and scores as encoding every split
separately and fitting a pipeline per C (the previous path), then, with --probe_refit 1, fitting the chosen C on fit +
selection series; metrics.json reports the probes' share of the run."""
import json

import numpy as np
import pytest
import torch

import process
from classification import extract_representations, fit_probe, linear_probe, probe_as_head, select_probe
from conftest import TINY
from main import main
from model import TimeMAE


@pytest.mark.parametrize("select_on, refit, best", [("val", "1", 1), ("val", "0", 1), ("test", "1", 1),
                                                    ("val", "1", 2), ("test", "1", 2)])
def test_each_split_is_encoded_once_per_probe_and_results_match_the_previous_path(tstcc_dir, tmp_path,
                                                                                   monkeypatch, select_on, refit,
                                                                                   best):
    """best: the pretraining epoch the periodic probes select (their accuracies are replaced to choose it); at
    epoch 2, the last one probed, FineLast reuses that probe's fit and selection representations."""
    encoded, trainers, probe_accs = [], [], iter([0.9, 0.5] if best == 1 else [0.5, 0.9])
    real_extract, real_finelast = process.extract_representations, process.Trainer.finelast
    real_fit_probe = process.Trainer._fit_probe

    def counting(model, x, batch_size, padded=None):
        encoded.append(len(x))
        return real_extract(model, x, batch_size, padded)

    def keep_trainer(self):
        trainers.append(self)
        return real_finelast(self)

    def chosen_accuracy(self, *args):
        return {**real_fit_probe(self, *args), "acc": next(probe_accs)}

    monkeypatch.setattr(process, "extract_representations", counting)
    monkeypatch.setattr(process.Trainer, "finelast", keep_trainer)
    monkeypatch.setattr(process.Trainer, "_fit_probe", chosen_accuracy)
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "2", "--probe_every", "1", "--num_epoch", "0", "--select_on", select_on,
                 "--probe_C", "0.01", "1", "100", "--probe_refit", refit, *TINY]) == 0
    t = trainers[0]
    n_fit, n_sel, n_test = len(t.fit_x), len(t.sel_x), len(t.test_x)
    periodic = [n_fit, n_sel] * 2                                    # epochs 1 and 2: fit and selection splits
    final = [n_test, n_fit, n_sel] if select_on == "val" else [n_test, n_fit]   # FineLast fits on the fit split
    if best == 2:  # the probe of epoch 2 encoded fit and selection (with select_on test: the test set)
        final = [n_test] if select_on == "val" else []
    assert encoded == periodic + final
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finelast"]["epoch"] == best

    monkeypatch.undo()
    model = TimeMAE.from_config(t.model.config)
    t._load(t.record.path("pretrain_model.pkl"), model)
    rep = lambda x: extract_representations(model, x, t.eval_batch)  # noqa: E731
    fit_r, sel_r = rep(t.fit_x), rep(t.sel_x)
    if best == 2:  # what FineLast took from the probe is what the reloaded checkpoint gives, bit for bit
        assert t.probed[0] == 2 and np.array_equal(t.probed[1], fit_r) and np.array_equal(t.probed[2], sel_r)
    grid = sorted(t.cfg.probe_C)
    accs = [linear_probe(fit_r, t.fit_y, sel_r, t.sel_y, seed=t.cfg.seed, C=C)["acc"] for C in grid]
    C = grid[int(np.argmax(accs))]
    refits = select_on == "val" and refit == "1"          # never onto the test set, whatever the flag
    if refits:  # the chosen C fitted again on every labelled series
        fit_r, fit_y = np.concatenate([fit_r, sel_r]), np.concatenate([t.fit_y, t.sel_y])
    else:
        fit_y = t.fit_y
    previous = linear_probe(fit_r, fit_y, rep(t.test_x), t.test_y, seed=t.cfg.seed, C=C)
    # the Trainer keeps that very probe as a linear head, which the API's FineLast classifier takes
    weight, bias = probe_as_head(fit_probe(fit_r, fit_y, seed=t.cfg.seed, C=C), t.model.cfg.num_classes)
    assert torch.equal(t.finelast_head[0], weight) and torch.equal(t.finelast_head[1], bias)
    assert metrics["finelast"]["C"] == C
    assert metrics["finelast"]["fitted"] == n_fit + (n_sel if refits else 0) == len(fit_y)
    assert (metrics["finelast"]["acc"], metrics["finelast"]["f1"]) == (previous["acc"], previous["f1"])
    assert 0 < metrics["probe_seconds"] <= metrics["seconds"]
    rounding = 0.1 / metrics["seconds"] + 1e-3                     # seconds rounded to 0.1, probe_seconds to 0.001
    assert metrics["probe_share"] == pytest.approx(metrics["probe_seconds"] / metrics["seconds"], abs=rounding)


def test_select_probe_is_the_argmax_of_a_pipeline_per_C():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.standard_normal((300, 8)) * [5, 1, 1, 1, 1, 1, 1, 0.1] + 0.7 * y[:, None]
    fit, sel = slice(0, 200), slice(200, 300)
    grid = [1e-3, 0.1, 10.0]
    accs = [linear_probe(x[fit], y[fit], x[sel], y[sel], C=C)["acc"] for C in grid]
    assert len(set(accs)) > 1                                        # the grid's probes really differ here
    assert select_probe(x[fit], y[fit], x[sel], y[sel], grid[::-1])[0] == grid[int(np.argmax(accs))]
