"""Small labelled sets: the step budget, the labelled set at every --label_ratio, selection that never reads the
test labels, the single-class warning and the raw-series baselines."""
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from classification import accuracy_standard_error, raw_baselines
from conftest import TINY, scripted_selection, synthetic_series, write_tstcc
from scale_helpers import majority_accuracy
from experiments.presets import CODEBOOK
import process
from main import main
from process import labelled_splits

# TINY without its budget override: the defaults (--min_batches 4, --min_pretrain_steps, --min_steps) apply
MODEL = TINY[: TINY.index("--min_batches")]


@pytest.mark.parametrize("ratio, select_on, fit, held", [(1.0, "val", 76, 20), (0.25, "val", 19, 5),
                                                         (1.0, "test", 96, None), (0.25, "test", 24, None)])
def test_finelast_and_fineall_fit_on_the_same_labelled_set_at_every_ratio(ratio, select_on, fit, held):
    y = np.arange(96) % 3
    splits = SimpleNamespace(train_y=y)
    fit_ids, held_ids = labelled_splits(splits, select_on, 0.2, ratio, seed=1)
    assert len(fit_ids) == fit and (held_ids is None if held is None else len(held_ids) == held)
    if held is not None:
        assert not set(fit_ids) & set(held_ids)
        assert np.bincount(y[fit_ids]).min() >= fit // 3 - 1        # stratified
    labelled = fit_ids if held is None else np.concatenate([fit_ids, held_ids])
    assert len(labelled) == round(ratio * 96)                       # r of ALL labelled training series


def test_metrics_report_the_set_both_fit_on(tstcc_dir, tmp_path, monkeypatch):
    calls = []

    def slow_baselines(fit_x, *rest, **kw):  # the real baselines, 0.3 s slower: their seconds are reported
        calls.append((len(fit_x), raw_baselines(fit_x, *rest, **kw)))
        time.sleep(0.3)
        return calls[-1][1]

    monkeypatch.setattr(process, "raw_baselines", slow_baselines)
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "1", "--num_epoch", "1", "--label_ratio", "0.25", *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["labelled"], metrics["selection"]) == (19, 5)                # FineAll fits on 19 series
    assert metrics["finelast"]["fitted"] == 24 == round(0.25 * 96)    # FineLast's chosen C refits on all 24
    assert calls[0][0] == 19 and metrics["baselines"] == calls[0][1]      # C chosen with the 19 series ...
    assert 0.3 <= metrics["baseline_seconds"] <= metrics["seconds"]
    args = json.loads((run / "args.json").read_text())
    assert args["pretrain_epochs"] == 1 and args["finetune_batch_size"] == 19   # never more than the data


def test_budget_gives_a_small_set_enough_steps(tmp_path):
    folder = write_tstcc(tmp_path / "Small", n_train=40, n_val=0, n_test=60, length=32, channels=2)
    os.remove(os.path.join(folder, "val.pt"))
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", folder, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "2", "--min_pretrain_steps", "20", "--num_epoch", "20", "--min_steps",
                 "300", *MODEL]) == 0
    args = json.loads((run / "args.json").read_text())
    # pretraining: 40 series in batches of 10 (4 per epoch), 5 epochs for 20 steps; fine-tuning: 32 series
    assert (args["pretrain_batch_size"], args["pretrain_epochs"]) == (10, 5)
    assert (args["finetune_batch_size"], args["finetune_epochs"]) == (8, 75)
    assert (args["num_epoch_pretrain"], args["num_epoch"]) == (2, 20)          # the flags as given
    metrics = json.loads((run / "metrics.json").read_text())
    _, test_y = synthetic_series(60, seed=2)
    majority = majority_accuracy(np.arange(40) % 3, test_y)
    assert metrics["fineall"]["acc"] > majority + 0.2, metrics
    assert metrics["fineall"]["single_class"] is False and metrics["finelast"]["single_class"] is False


@pytest.mark.parametrize("n, epochs, plan", [
    (40, 2, (10, 250)),       # small: batches of ceil(40 / 4), epochs raised to 250 x 4 = 1000 steps
    (40, 300, (10, 300)),     # small, already 1200 steps: as asked
    (511, 2, (128, 250)),     # one series short of 4 full batches: still small (4 steps per epoch)
    (512, 2, (128, 2)),       # 4 full batches: a short run on a large set runs the epochs asked for
    (9200, 5, (128, 5)),      # Epilepsy, 5 epochs of 72 steps: not raised to 14
    (40, 0, (10, 0)),         # a phase asked for 0 epochs stays off
])
def test_budget_raises_the_epochs_of_small_sets_only(n, epochs, plan):
    cfg = SimpleNamespace(train_batch_size=128, min_batches=4, num_epoch_pretrain=epochs, num_epoch=epochs,
                          min_pretrain_steps=1000, min_steps=1000)
    got = process.training_budget(cfg, n, n)
    assert (got["pretrain_batch_size"], got["pretrain_epochs"]) == plan
    assert (got["finetune_batch_size"], got["finetune_epochs"]) == plan


def test_budget_batches_are_a_multiple_of_the_processes():
    cfg = SimpleNamespace(train_batch_size=128, min_batches=4, num_epoch_pretrain=1, num_epoch=1,
                          min_pretrain_steps=0, min_steps=0)
    assert process.training_budget(cfg, 42, 42, world_size=4)["pretrain_batch_size"] == 8   # ceil(42/4)=11 -> 8
    assert process.training_budget(cfg, 9200, 42, world_size=3)["pretrain_batch_size"] == 126


def test_single_class_classifier_is_reported(tmp_path, capsys):
    folder = write_tstcc(tmp_path / "data")
    for split in ("train", "val", "test"):            # identical series: any classifier predicts one class
        d = torch.load(os.path.join(folder, f"{split}.pt"))
        d["samples"] = torch.ones_like(d["samples"])
        torch.save(d, os.path.join(folder, f"{split}.pt"))
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", folder, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "1", "--num_epoch", "1", *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finelast"]["single_class"] is True and metrics["fineall"]["single_class"] is True
    out = capsys.readouterr().out
    assert "warning: FineLast predicts a single class on the val split" in out
    assert "warning: FineAll predicts a single class on the val split" in out


@pytest.mark.parametrize("head", ["random", "probe"])
def test_selection_never_reads_the_test_labels(tmp_path, head):
    """Other test labels leave the chosen epoch, C, fine-tuning step and model.pkl bitwise unchanged (with
    --fineall_head probe too: the probe that starts FineAll is fitted and chosen without them)."""
    folder = write_tstcc(tmp_path / "data")
    out = []
    for flip in (False, True):
        if flip:
            test = torch.load(os.path.join(folder, "test.pt"))
            test["labels"] = (test["labels"] + 1) % 3
            torch.save(test, os.path.join(folder, "test.pt"))
        run = tmp_path / "run"
        assert main(["--dataset", "har", "--data_path", folder, "--save_path", str(run), "--wave_length", "4",
                     "--num_epoch_pretrain", "4", "--probe_every", "1", "--num_epoch", "3", "--eval_per_steps", "2",
                     "--fineall_head", head, "--overwrite", *TINY]) == 0
        metrics = json.loads((run / "metrics.json").read_text())
        out.append((metrics["finelast"]["epoch"], metrics["finelast"]["C"], metrics["fineall"]["step"],
                    (run / "model.pkl").read_bytes(), (run / "pretrain_model.pkl").read_bytes(),
                    metrics["finelast"]["acc"]))
    assert out[0][:5] == out[1][:5]
    assert out[0][5] != out[1][5]                                   # the test labels did change


@pytest.mark.parametrize("head, refit", [("random", "0"), ("probe", "0"), ("probe", "1")])
def test_fineall_from_the_probe_starts_as_finelast_and_keeps_it_unless_beaten(tmp_path, monkeypatch, head, refit):
    """--fineall_head probe: FineAll's head is FineLast's probe fitted on the fit split (not refitted on the
    selection split, which FineAll selects on) and step 0 is a candidate, so with no optimiser step the selected
    model is step 0's and predicts on test what FineLast predicts: with --probe_refit 1 the kept probe is then
    fitted again on every labelled series, as FineLast's is, and model.pkl holds that head. The paper's random
    head has no step-0 candidate."""
    folder = write_tstcc(tmp_path / "data")
    # no step changes a weight
    monkeypatch.setattr(process.Trainer, "_optimise", staticmethod(lambda *args: torch.tensor(True)))
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", folder, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "1", "--num_epoch", "2", "--eval_per_steps", "2", "--fineall_head", head,
                 "--probe_refit", refit, *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    step0 = [line for line in (run / "result.txt").read_text().splitlines() if line.startswith("epoch0, step0,")]
    if head == "random":
        assert step0 == [] and metrics["fineall"]["step"] > 0
        return
    assert len(step0) == 1 and metrics["fineall"]["step"] == 0
    assert (metrics["fineall"]["acc"], metrics["fineall"]["f1"]) == (metrics["finelast"]["acc"],
                                                                     metrics["finelast"]["f1"])
    kept = torch.load(run / "model.pkl", weights_only=True)
    assert kept.get("head_fitted") == (metrics["finelast"]["fitted"] if refit == "1" else None)
    assert metrics["finelast"]["fitted"] == metrics["labelled"] + (metrics["selection"] if refit == "1" else 0)


SE = accuracy_standard_error(0.5, 32)          # the probe at 0.5 on write_tstcc's 32 validation series


@pytest.mark.parametrize("accs, kept", [
    ([0.5, 0.5 + SE / 2], {"none": 2, "1se": 0}),                       # fine-tuning ahead within one SE
    ([0.5, 0.5 + SE / 2, 0.5 + 2 * SE, 0.5 + 2.5 * SE], {"none": 6, "1se": 6})])   # the margin is the probe's only
@pytest.mark.parametrize("margin", ["none", "1se"])
def test_fineall_margin_keeps_the_probe_unless_a_step_beats_it_by_one_standard_error(tmp_path, monkeypatch, capsys,
                                                                                   accs, kept, margin):
    """--fineall_margin 1se: a fine-tuning step replaces the probe (step 0) only when its selection accuracy is
    ahead by more than sqrt(p(1-p)/n); once a step has replaced it, later steps need only be better. none: any
    higher accuracy replaces it."""
    assert SE == pytest.approx((0.25 / 32) ** 0.5)
    folder = write_tstcc(tmp_path / "data")
    monkeypatch.setattr(process.Trainer, "_scores", scripted_selection(accs))
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", folder, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "1", "--num_epoch", "3", "--eval_per_steps", "2", "--fineall_head", "probe",
                 "--fineall_margin", margin, *TINY]) == 0
    steps = [line.split(", ")[1] for line in (run / "result.txt").read_text().splitlines()[:-1]]
    assert steps[:4] == ["step0", "step2", "step4", "step6"]         # the candidates the script scores
    assert json.loads((run / "metrics.json").read_text())["fineall"]["step"] == kept[margin]
    assert "applies to FineAll from the probe only" not in capsys.readouterr().out   # the margin applies here


def test_fineall_margin_without_the_probe_head_says_it_does_not_apply(tmp_path, capsys):
    folder = write_tstcc(tmp_path / "data")
    assert main(["--dataset", "har", "--data_path", folder, "--save_path", str(tmp_path / "run"), "--wave_length",
                 "4", "--num_epoch_pretrain", "1", "--num_epoch", "1", "--fineall_margin", "1se", *TINY]) == 0
    assert "note: --fineall_margin 1se applies to FineAll from the probe only" in capsys.readouterr().out


def test_raw_baselines_fit_and_score():
    x, y = synthetic_series(60, seed=0)
    tx, ty = synthetic_series(45, seed=1)
    res = raw_baselines(x[:40], y[:40], x[40:], y[40:], tx, ty, [0.1, 1.0], seed=0)
    assert res["nn1"]["acc"] > 0.9 and res["logistic"]["C"] in (0.1, 1.0)
    x_nan, x_zero = x.copy(), x.copy()
    x_nan[:, 20:], x_zero[:, 20:] = np.nan, 0.0                     # padding counts as 0 (the mean)
    assert (raw_baselines(x_nan[:40], y[:40], x_nan[40:], y[40:], tx, ty, [1.0])
            == raw_baselines(x_zero[:40], y[:40], x_zero[40:], y[40:], tx, ty, [1.0]))


def test_raw_baselines_refit_on_fit_and_selection_series():
    """With refit the baselines also learn from the selection series: test series equal to selection series,
    under labels only the selection split has, are then recognised (1-NN exactly) and missed without it."""
    x, y = synthetic_series(60, seed=0)
    sel_y = (y[40:] + 1) % 3                                          # labels the fit split never shows
    kept = raw_baselines(x[:40], y[:40], x[40:], sel_y, x[40:], sel_y, [0.1, 1.0, 10.0], seed=0)
    refit = raw_baselines(x[:40], y[:40], x[40:], sel_y, x[40:], sel_y, [0.1, 1.0, 10.0], seed=0, refit=True)
    assert refit["nn1"]["acc"] == 1.0 and kept["nn1"]["acc"] < 0.2
    assert refit["logistic"]["C"] == kept["logistic"]["C"]           # C is still chosen on the selection split
    assert refit["logistic"]["acc"] > kept["logistic"]["acc"]


def codewords_used(tstcc_dir, run, *extra):
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "6", "--probe_every", "6", "--num_epoch", "0", "--vocab_size", "32",
                 "--lr", "3e-3", *TINY, *extra]) == 0
    log = [json.loads(line) for line in (run / "pretrain_log.jsonl").read_text().splitlines()]
    return log[-1]["used"], json.loads((run / "metrics.json").read_text())["codebook"]


@pytest.mark.parametrize("protection", [("--codebook_init", "kmeans", "--codebook_reset", "--codebook_usage", "1.0"),
                                        ("--codebook_ema", "0.9"),
                                        ("--codebook", "cosine", "--codebook_dim", "4", "--codebook_init", "kmeans",
                                         "--codebook_reset")])
def test_protected_codebook_keeps_more_codewords_in_use(tstcc_dir, tmp_path, protection):
    plain, report = codewords_used(tstcc_dir, tmp_path / "plain")
    assert report["used"] == plain and report["ppl_warn"] == 8.0
    protected, _ = codewords_used(tstcc_dir, tmp_path / "protected", *protection)
    assert protected > plain, (protected, plain)


@pytest.mark.parametrize("extra, remedy", [((), " ".join(CODEBOOK)),                # the presets' codebook, whole
                                           (("--tokenizer", "argmax"), "--codebook_ema 0.99"),
                                           (("--tokenizer", "argmax", "--codebook_ema", "0.9"), "--codebook_reset"),
                                           (("--codebook", "cosine", "--codebook_dim", "4"), "--codebook_reset"),
                                           (("--codebook", "cosine", "--codebook_init", "kmeans", "--codebook_reset"),
                                            "add --codebook_dim 8 to"),
                                           (("--codebook", "cosine", "--codebook_dim", "4", "--codebook_init", "kmeans",
                                             "--codebook_reset"), "every remedy measured")])
def test_collapse_warning_names_the_measured_remedy(tstcc_dir, tmp_path, capsys, extra, remedy):
    """Below --ppl_warn the run warns, names what to try next for its own tokenizer, and metrics.json says so."""
    _, report = codewords_used(tstcc_dir, tmp_path / "run", "--ppl_warn", "1e9", *extra)
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: codebook")]
    assert report["collapsed"] is True and len(warning) == 1 and remedy in warning[0], warning
    if not extra:   # the UCR preset runs this codebook on purpose: the advice says what validation preferred there
        assert "on the UCR sets validation preferred this collapsed one" in warning[0]


def test_no_collapse_warning_above_the_threshold(tstcc_dir, tmp_path, capsys):
    _, report = codewords_used(tstcc_dir, tmp_path / "run", "--ppl_warn", "0")
    assert report["collapsed"] is False and "warning: codebook" not in capsys.readouterr().out


class Stop(Exception):
    """Ends a run once the test has what it needs."""


def kmeans_run(tstcc_dir, run, monkeypatch, *extra):
    """The codebook right after --codebook_init kmeans and the window embeddings it was fitted on, computed here
    from the pretraining series (train + val, 128 series of 8 windows: fewer than the 2048 series it draws)."""
    seen, real = {}, process.Trainer.init_codebook

    def init_then_stop(self):
        real(self)
        with torch.no_grad():
            z = self.model.window_slicer(self.pretrain_set.x).flatten(0, 1).double()       # (N * S, d)
        seen.update(z=z, weight=self.model.tokenizer.codebook.weight.detach().double().clone(),
                    bias=self.model.tokenizer.codebook.bias.detach().double().clone(), tokenizer=self.model.tokenizer)
        raise Stop
    monkeypatch.setattr(process.Trainer, "init_codebook", init_then_stop)
    with pytest.raises(Stop):
        main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(run), "--wave_length", "4",
              "--num_epoch_pretrain", "1", "--num_epoch", "0", *TINY, "--codebook_init", "kmeans", *extra])
    return seen


def test_kmeans_init_makes_every_codeword_the_mean_of_the_windows_nearest_to_it(tstcc_dir, tmp_path, monkeypatch):
    seen = kmeans_run(tstcc_dir, tmp_path / "run", monkeypatch)
    z, w = seen["z"], seen["weight"]
    assert len(z) == 128 * 8 and len(w) == 16
    nearest = torch.cdist(z, w).argmin(1)                                  # Lloyd's assignment step
    assert torch.bincount(nearest, minlength=16).min() > 0                 # every codeword is some windows' centre
    means = torch.stack([z[nearest == k].mean(0) for k in range(16)])      # ... and their mean (k-means' fixed point)
    torch.testing.assert_close(w, means, rtol=1e-4, atol=1e-4)
    # the linear codebook scores so that its argmax is the nearest centre: bias -|c|^2 / 2
    torch.testing.assert_close(seen["bias"], -0.5 * w.pow(2).sum(1))
    with torch.no_grad():
        assert torch.equal(seen["tokenizer"](z.float()).argmax(1), nearest)


def test_codebook_reset_replaces_exactly_the_unused_codewords_by_window_embeddings(tstcc_dir, tmp_path, monkeypatch):
    """After every pretraining epoch the codewords no masked window targeted in it (a count of 0) restart at
    window embeddings of the pretraining series; every other codeword stays bitwise as it was."""
    counts, resets = [], []
    real_epoch, real_reset = process.Trainer.pretrain_epoch, process.Trainer.reset_codewords

    def epoch(self, *args):
        stats, c = real_epoch(self, *args)
        counts.append(c.clone())
        return stats, c

    def reset(self, dead, ep):
        book = self.model.tokenizer.codebook
        before = book.weight.detach().clone(), book.bias.detach().clone()
        n = real_reset(self, dead, ep)
        with torch.no_grad():
            z = self.model.window_slicer(self.pretrain_set.x).flatten(0, 1)   # the windows the codewords may take
        resets.append((dead.clone(), n, before, (book.weight.detach().clone(), book.bias.detach().clone()), z))
        return n
    monkeypatch.setattr(process.Trainer, "pretrain_epoch", epoch)
    monkeypatch.setattr(process.Trainer, "reset_codewords", reset)
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(run), "--wave_length", "4",
                 "--num_epoch_pretrain", "2", "--probe_every", "2", "--num_epoch", "0", *TINY, "--vocab_size", "64",
                 "--codebook_reset"]) == 0
    log = [json.loads(line) for line in (run / "pretrain_log.jsonl").read_text().splitlines()]
    assert len(resets) == len(counts) == len(log) == 2
    for (dead, n, (w0, b0), (w1, b1), z), c, entry in zip(resets, counts, log):
        assert torch.equal(dead, c == 0) and 0 < n == int(dead.sum()) == entry["reset"] == 64 - entry["used"] < 64
        assert torch.equal(w1[~dead], w0[~dead]) and torch.equal(b1[~dead], b0[~dead])   # bitwise unchanged
        assert not (w1[dead] == w0[dead]).all(1).any()                                   # every dead one replaced
        gap = (w1[dead][:, None] - z[None]).abs().amax(-1).min(1).values                  # to the nearest window
        assert gap.max() < 1e-5                                                          # ... one of them
        torch.testing.assert_close(b1[dead], -0.5 * w1[dead].pow(2).sum(1))
