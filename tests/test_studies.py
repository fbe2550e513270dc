"""The section 4.2 studies end to end on tiny synthetic data, and the pieces they rest on: transfer between
datasets of other shapes, stratified label fractions, pretraining fractions and the ablation switches."""
import json
import os
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from args import build_parser
from conftest import TINY, synthetic_series, write_tstcc
from datautils import random_subset, stratified_subset
from common.errors import TimeMAEError
from experiments import ablation, label_fraction, mask_ratio, model_size, pretrain_fraction, transfer
from experiments.presets import UCR
from experiments import runner
from experiments.runner import Study, base_flags, main_guard, parse, parser
from loss import pretrain_loss
import process
from main import main as main_cli
from engine.pipeline import run as main_run
from model import TimeMAE

STUDY_FLAGS = [*TINY, "--wave_length", "4", "--num_epoch_pretrain", "2", "--num_epoch", "1", "--probe_every", "2"]


def write_uwave(folder, n_train=64, n_test=32, channels=3, length=48, classes=4):
    """UWave-style train.pt/test.pt: samples (N, T, C), labels 1..K."""
    os.makedirs(folder, exist_ok=True)
    for i, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        x, y = synthetic_series(n, length, channels, classes, seed=10 + i)
        torch.save({"samples": torch.from_numpy(x), "labels": torch.from_numpy(y + 1)},
                   os.path.join(folder, name + ".pt"))


def write_ucr(folder, seed, n_train=40, n_test=20, length=32, classes=2):
    """A univariate UCR/UEA set <name>_TRAIN.ts/_TEST.ts named as its folder."""
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(folder)
    header = f"@problemName {name}\n@univariate true\n@equalLength true\n@classLabel true 0 1\n@data\n"
    for i, (split, n) in enumerate((("TRAIN", n_train), ("TEST", n_test))):
        x, y = synthetic_series(n, length, 1, classes, seed=seed + i)
        rows = [",".join(f"{v:.4f}" for v in series[:, 0]) + f":{label}" for series, label in zip(x, y)]
        with open(os.path.join(folder, f"{name}_{split}.ts"), "w") as f:
            f.write(header + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies_data")
    write_tstcc(root / "Epilepsy")                # 2 channels x 32 steps, 3 classes
    write_uwave(root / "UWave")                   # 3 channels x 48 steps, 4 classes
    write_ucr(root / "ToyA", seed=20)             # two UCR/UEA sets: 1 channel x 32 steps, 2 classes
    write_ucr(root / "ToyB", seed=30)
    return root


@pytest.fixture
def studies_env(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TIMEMAE_DATA", str(data_root))
    return ["--quick", "--out", str(tmp_path / "studies")]


def outputs(tmp_path, study):
    folder = tmp_path / "studies" / study
    runs = pd.read_csv(folder / "results.csv")
    assert (folder / f"{study}.png").stat().st_size > 10_000 and (folder / "results.md").read_text().count("|") > 20
    return runs


def test_results_csv_reads_back_its_names_as_text(tmp_path):
    """A budget, dataset or config whose name looks like a number or a missing value comes back as written, so the
    next invocation's rows merge with it (they had come back as 2, NaN and 1: a merge of int and str columns)."""
    rows = pd.DataFrame(dict(study="ablation", budget=["2", "2"], dataset=["NA", "None"], config=["01", "1e3"],
                             seed=[1, 1], protocol=["FineLast", "refused"], status=["ok", "NA"], acc=[90.0, None]))
    rows.to_csv(tmp_path / "results.csv", index=False)
    back = runner.read_results(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(back, rows, check_dtype=False)
    key = ["budget", "dataset", "config", "seed"]
    assert len(back.merge(rows[key], on=key)) == 2


# results.csv's protocol names and the metrics.json entry each reports
PROTOCOL_KEYS = {"FineLast": "finelast", "FineZero": "finelast", "FineAll": "fineall", "FineZero+": "fineall"}


def assert_rows_are_their_runs(tmp_path, study, runs):
    """Every row's acc and f1 are 100 x its run folder's metrics.json scores of the row's protocol, and its raw
    1-NN and logistic accuracies the run's raw-series baselines; results.md shows both beside each row."""
    assert len(runs) > 0
    for row in runs.itertuples():
        folder = tmp_path / "studies" / study / row.budget / row.dataset / row.config / f"seed{row.seed}"
        saved = json.loads((folder / "metrics.json").read_text())
        metrics, raw = saved[PROTOCOL_KEYS[row.protocol]], saved["baselines"]
        assert (row.acc, row.f1) == pytest.approx((100 * metrics["acc"], 100 * metrics["f1"]), rel=1e-12, abs=0), \
            (row.config, row.protocol)
        assert (row.raw_nn1, row.raw_logistic) == pytest.approx((100 * raw["nn1"]["acc"], 100 * raw["logistic"]["acc"]))
    header = (tmp_path / "studies" / study / "results.md").read_text().split("\n| ---")[0].splitlines()[-1]
    assert header.endswith("| accuracy | macro-F1 | raw 1-NN | raw logistic | runs | note |"), header


# ----------------------------------------------------------------------------------------------- studies

def test_ablation_runs_every_configuration_and_reruns_reuse_finished_runs(studies_env, tmp_path, monkeypatch):
    """The quick ablation runs every configuration (FineZero rows for the untrained one). A second epilepsy
    invocation runs nothing (main.run is never called: CPU runs are deterministic, so equal numbers alone would not
    show it) and reads the same rows back; uwave's rows are kept beside them."""
    calls = []
    monkeypatch.setattr(runner, "run", lambda cfg, **kw: calls.append(cfg.dataset) or main_run(cfg, **kw))
    ablation.main(["--dataset", "epilepsy", *studies_env, *STUDY_FLAGS])
    runs = outputs(tmp_path, "ablation")
    assert set(runs.config) == {c for c, _ in ablation.CONFIGS} and (runs.status == "ok").all()
    zero = runs[runs.config == "no_pretraining"]
    assert set(zero.protocol) == {"FineZero", "FineZero+"}
    assert_rows_are_their_runs(tmp_path, "ablation", runs)
    args = json.load(open(tmp_path / "studies/ablation/quick/epilepsy/no_decouple/seed1/args.json"))
    assert args["no_decouple"] and args["num_windows"] == 8
    first = pd.read_csv(tmp_path / "studies/ablation/results.csv")
    ablation.main(["--dataset", "uwave", *studies_env, *STUDY_FLAGS])
    assert calls == ["epilepsy"] * len(ablation.CONFIGS) + ["uwave"] * len(ablation.CONFIGS)
    ablation.main(["--dataset", "epilepsy", *studies_env, *STUDY_FLAGS])  # reused from disk: same numbers
    assert len(calls) == 2 * len(ablation.CONFIGS)                        # no run again
    runs = pd.read_csv(tmp_path / "studies/ablation/results.csv")
    assert set(runs.dataset) == {"epilepsy", "uwave"}
    again = runs[runs.dataset == "epilepsy"].reset_index(drop=True)
    pd.testing.assert_frame_equal(again[["config", "protocol", "acc"]], first[["config", "protocol", "acc"]])
    reused = tmp_path / "studies/ablation/quick/epilepsy/no_decouple/seed1/metrics.json"   # edited by hand, say
    reused.write_text(json.dumps({**json.loads(reused.read_text()), "finelast": {"acc": 1.7, "f1": 0.5}}))
    with pytest.raises(TimeMAEError, match=rf"^cannot read {re.escape(str(reused))}: expected finelast.acc to be a "
                                           r"score in \[0, 1\], got 1.7$"):
        ablation.main(["--dataset", "epilepsy", *studies_env, *STUDY_FLAGS])


def test_mask_ratio_quick_sweeps_ratios_and_modes(studies_env, tmp_path):
    mask_ratio.main(["--dataset", "epilepsy", "--ratios", "0.25", "0.5", "--budget", "tiny", *studies_env,
                     *STUDY_FLAGS])
    runs = outputs(tmp_path, "mask_ratio")
    assert set(zip(runs.mask_ratio, runs.mask_mode)) == {(r, m) for r in (0.25, 0.5) for m in ("sample", "batch")}
    assert set(runs.budget) == {"tiny"}
    args = json.load(open(tmp_path / "studies/mask_ratio/tiny/epilepsy/batch_0.25/seed1/args.json"))
    assert args["num_masked"] == 2 and args["mask_mode"] == "batch"


def test_a_refused_setting_is_a_row_of_the_study_and_a_study_of_refusals_one_error(studies_env, tmp_path, capsys,
                                                                                   monkeypatch):
    """A value main.py refuses for this data (0.05 of 8 windows masks none) is a row saying why."""
    mask_ratio.main(["--dataset", "epilepsy", "--ratios", "0.5", "0.05", *studies_env, *STUDY_FLAGS])
    runs = outputs(tmp_path, "mask_ratio")
    refused = runs[runs.protocol == "refused"]
    assert set(refused.mask_ratio) == {0.05} and len(refused) == 2          # both masking modes
    assert (runs[runs.mask_ratio == 0.5].status == "ok").all()
    message = "--mask_ratio 0.05 masks 0 of 8 windows: at least one window must be masked and one visible"
    assert (refused.status == message).all()
    # a refused run leaves no folder that looks like a run to come; a finished one holds its metrics
    study = tmp_path / "studies/mask_ratio"
    assert sorted(p.parent.name for p in study.rglob("seed*")) == sorted(runs[runs.status == "ok"].config.unique())
    assert all((p / "metrics.json").exists() for p in study.rglob("seed*"))
    table = (tmp_path / "studies/mask_ratio/results.md").read_text()
    assert sum(message in line and "| refused |" in line for line in table.splitlines()) == 2   # cells, not 'nan'
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["mask_ratio", "--dataset", "epilepsy", "--ratios", "0.05", *studies_env,
                                      *STUDY_FLAGS])
    assert main_guard(mask_ratio.main) == 2
    err = capsys.readouterr().err                       # one error line (no progress bar off a terminal)
    assert err == f"error: mask_ratio: every run was refused, the first with: {message}\n"


def test_sweep_values_outside_their_range_are_one_line_before_any_run_and_repeats_run_once(studies_env, tmp_path,
                                                                                          capsys, monkeypatch):
    for study, flags, message in ((label_fraction, ["--fractions", "0.5", "2"], "--fractions: each value must lie "
                                                                                "in (0, 1], got 2"),
                                  (pretrain_fraction, ["--fractions", "0"], "--fractions: each value must lie in "
                                                                            "(0, 1], got 0"),
                                  (mask_ratio, ["--ratios", "0.5", "1"], "--ratios: each value must lie in (0, 1), "
                                                                         "got 1")):
        monkeypatch.setattr(sys, "argv", ["study", "--dataset", "epilepsy", *studies_env, *STUDY_FLAGS, *flags])
        assert main_guard(study.main) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "studies").exists()
    table = mask_ratio.main(["--dataset", "epilepsy", "--ratios", "0.5", "0.50", "--seeds", "1", "1", *studies_env,
                             *STUDY_FLAGS])
    assert len(outputs(tmp_path, "mask_ratio")) == 2 * 2                   # modes x protocols, each once
    assert len(table) == 2 * 2 and (table.runs == 1).all()


def test_bad_input_is_one_line_before_any_run_or_folder(studies_env, tmp_path, capsys, monkeypatch):
    """A flag main.py refuses and an --out that is a file are one line each, before any run writes a folder (not
    main.py's usage mid-progress-bar, nor a traceback); an unknown dataset is the study's own usage error."""
    (tmp_path / "file").write_text("")
    for flags, message in ((["--mask_mode", "x"], "error: a flag passed on to main.py: argument --mask_mode: "
                                                  "invalid choice: 'x' (choose from 'sample', 'batch')\n"),
                           (["--out", str(tmp_path / "file")], f"error: --out folder '{tmp_path / 'file'}' cannot "
                                                               "be created: "),
                           (["--seeds", "1", "-1"], "error: --seeds must lie in 0..4294967295, got 1 -1\n"),
                           (["--data_path", str(tmp_path / "nowhere")],     # once, not by each of the runs
                            f"error: data folder '{tmp_path / 'nowhere'}' does not exist (set --data_path or "
                            f"$TIMEMAE_DATA, or fetch it: python -m data.prepare epilepsy --download --data_path "
                            f"{tmp_path / 'nowhere'})\n")):
        monkeypatch.setattr(sys, "argv", ["ablation", "--dataset", "epilepsy", *studies_env, *STUDY_FLAGS, *flags])
        assert main_guard(ablation.main) == 2
        err = capsys.readouterr().err
        # without quotes: Python versions differ in quoting argparse's choices
        assert err.replace("'", "").startswith(message.replace("'", "")) and err.count("\n") == 1, err
    for study, flag in ((ablation, "--dataset"), (transfer, "--datasets")):
        with pytest.raises(SystemExit) as exit_:
            study.main([flag, "foo", *studies_env])
        assert exit_.value.code == 2 and "invalid choice: 'foo'" in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()


def test_each_ucr_set_has_its_own_runs_and_rows_and_the_full_budget_takes_the_ucr_preset(studies_env, tmp_path,
                                                                                        capsys, monkeypatch):
    for name in ("ToyA", "ToyB"):        # ToyB's runs are not ToyA's, reused
        mask_ratio.main(["--dataset", "ucr", "--UCR_folder", name, "--ratios", "0.5", *studies_env, *STUDY_FLAGS])
    runs = outputs(tmp_path, "mask_ratio")
    assert set(runs.dataset) == {"ToyA", "ToyB"} and len(runs) == 2 * 2 * 2      # sets x modes x protocols
    assert_rows_are_their_runs(tmp_path, "mask_ratio", runs)
    for name in ("ToyA", "ToyB"):
        args = json.load(open(tmp_path / f"studies/mask_ratio/quick/{name}/sample_0.5/seed1/args.json"))
        assert args["UCR_folder"] == name
    assert base_flags("ucr", quick=False) == ["--dataset", "ucr", *UCR]
    quick = base_flags("ucr", quick=True)
    assert quick[quick.index("--wave_length") + 1] == "0"                # the window from the series length
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["mask_ratio", "--dataset", "ucr", *studies_env, *STUDY_FLAGS])
    assert main_guard(mask_ratio.main) == 2
    assert capsys.readouterr().err == "error: --dataset ucr needs --UCR_folder <Name>: the study's folders and " \
                                      "tables are named by the set\n"


def test_model_size_and_pretrain_fraction_quick(studies_env, tmp_path):
    """Each model_size run trains the width and depth its name says (over STUDY_FLAGS' --d_model 16 --layers 1)."""
    model_size.main(["--dataset", "epilepsy", *studies_env, *STUDY_FLAGS])
    configs = set(outputs(tmp_path, "model_size").config)
    assert configs == {f"d{d}_L{n}" for d, n in model_size.SIZES["quick"]}
    for config in configs:
        d_model, layers = map(int, re.fullmatch(r"d(\d+)_L(\d+)", config).groups())
        args = json.load(open(tmp_path / f"studies/model_size/quick/epilepsy/{config}/seed1/args.json"))
        assert (args["d_model"], args["layers"]) == (d_model, layers), config
    budget = ["--min_batches", "4", "--min_pretrain_steps", "40", "--min_steps", "20"]   # main.py's, asked for
    pretrain_fraction.main(["--dataset", "epilepsy", "--fractions", "0.25", *studies_env, *STUDY_FLAGS, *budget])
    runs = outputs(tmp_path, "pretrain_fraction")
    assert set(runs.pretrain_ratio) == {0.0, 0.25} and (runs.status == "ok").all()
    log = open(tmp_path / "studies/pretrain_fraction/quick/epilepsy/pretrain_0.25/seed1/log.txt").read()
    assert "pretraining on 32 series" in log          # a quarter of train 96 + val 32
    args = json.load(open(tmp_path / "studies/pretrain_fraction/quick/epilepsy/pretrain_0.25/seed1/args.json"))
    # every share trains the epochs and batch asked for: the step budget would have raised a small share's
    assert (args["pretrain_epochs"], args["pretrain_batch_size"]) == (2, 32)


def test_label_fraction_quick_reuses_one_pretrained_encoder(studies_env, tmp_path):
    budget = ["--min_batches", "4", "--min_steps", "20"]   # main.py's step budget, asked for: the sweep holds it off
    label_fraction.main(["--dataset", "epilepsy", "--fractions", "0.25", "1", *studies_env, *STUDY_FLAGS, *budget])
    runs = outputs(tmp_path, "label_fraction")
    assert_rows_are_their_runs(tmp_path, "label_fraction", runs)
    ok = runs[runs.config == "timemae_0.25"]
    # a quarter of the 96 labelled series: FineLast's probe refits on all 24, FineAll fits on the 19 left after
    # the 20% selection split
    assert ok.set_index("protocol").labelled.to_dict() == {"FineLast": 24, "FineAll": 19}
    assert set(runs[runs.config == "no_pretraining_1"].protocol) == {"FineZero", "FineZero+"}
    log = open(tmp_path / "studies/label_fraction/quick/epilepsy/timemae_0.25/seed1/log.txt").read()
    assert "transfer from" in log and "re-initialised: none; not used: none" in log
    for config in ("timemae_0.25", "timemae_1", "no_pretraining_0.25"):    # the same epochs and batch at every share
        args = json.load(open(tmp_path / f"studies/label_fraction/quick/epilepsy/{config}/seed1/args.json"))
        fit = json.load(open(tmp_path / f"studies/label_fraction/quick/epilepsy/{config}/seed1/metrics.json"))
        assert (args["finetune_epochs"], args["finetune_batch_size"]) == (1, min(32, fit["labelled"])), config


def test_transfer_quick_fills_the_matrix(studies_env, tmp_path):
    transfer.main(["--datasets", "epilepsy", "uwave", *studies_env, *STUDY_FLAGS])
    runs = outputs(tmp_path, "transfer")
    assert_rows_are_their_runs(tmp_path, "transfer", runs)
    last = runs[runs.protocol == "FineLast"]
    assert len(last[["source", "dataset", "config"]].drop_duplicates()) == 2 * 2 + 2  # 2x2 + the sources
    assert set(runs[runs.config == "pretrained"].protocol) == {"FineLast"}           # pretraining only
    same = last[(last.source == "uwave") & (last.dataset == "uwave")].set_index("config").acc
    assert same["from_uwave"] == same["pretrained"]       # the transferred encoder is the pretrained one
    assert set(runs[runs.source == "none"].protocol) == {"FineZero", "FineZero+"}
    log = open(tmp_path / "studies/transfer/quick/uwave/from_epilepsy/seed1/log.txt").read()
    assert "window_slicer (2: window_slicer.conv.weight has shape (16, 2, 4) there, (16, 3, 4) here)" in log
    assert "position (1: position has shape (8, 16) there, (12, 16) here)" in log
    assert log.count("; not used: none") == 1

# ----------------------------------------------------------------------------------------------- options

def test_transfer_loads_a_checkpoint_of_other_channels_and_length(data_root, tmp_path, capsys):
    src = tmp_path / "src"
    assert main_cli(["--dataset", "epilepsy", "--data_path", str(data_root / "Epilepsy"), *STUDY_FLAGS,
                     "--num_epoch", "0", "--save_path", str(src)]) == 0
    ckpt = torch.load(src / "pretrain_model.pkl", weights_only=False)["model"]
    capsys.readouterr()
    dst = tmp_path / "dst"
    assert main_cli(["--dataset", "uwave", "--data_path", str(data_root / "UWave"), *STUDY_FLAGS, "--num_epoch",
                     "0", "--num_epoch_pretrain", "0", "--pretrained_path", str(src / "pretrain_model.pkl"),
                     "--save_path", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "re-initialised: position" in out and "window_slicer (2:" in out and "not used: none" in out
    got = torch.load(dst / "pretrain_model.pkl", weights_only=False)["model"]
    for name in ("visible_encoder.blocks.0.attn.qkv.weight", "tokenizer.codebook.weight", "mask_token"):
        assert torch.equal(got[name], ckpt[name])
    assert got["position"].shape == (12, 16) and got["window_slicer.conv.weight"].shape == (16, 3, 4)
    assert not torch.equal(got["window_slicer.conv.bias"], ckpt["window_slicer.conv.bias"])
    assert main_cli(["--dataset", "uwave", "--data_path", str(data_root / "UWave"), *STUDY_FLAGS, "--num_epoch",
                     "0", "--num_epoch_pretrain", "0", "--no_decouple", "--pretrained_path",
                     str(src / "pretrain_model.pkl"), "--save_path", str(tmp_path / "nodec")]) == 0
    assert "; not used: decoupled_encoder (14)" in capsys.readouterr().out   # its one block's tensors


def test_transfer_refuses_another_encoder_even_where_its_tensors_fit(data_root, tmp_path, capsys):
    """Another width, depth, head count or residual setting is another visible encoder: refused in one line,
    though more heads or no residual scalars leave every copied tensor's shape as it was."""
    src = tmp_path / "src"
    main_cli(["--dataset", "epilepsy", "--data_path", str(data_root / "Epilepsy"), *STUDY_FLAGS, "--num_epoch",
              "0", "--save_path", str(src)])
    capsys.readouterr()
    for flag, value, differ in (("--d_model", "32", "d_model 16 there, 32 here"), ("--layers", "2", "layers 1 there"),
                                ("--attn_heads", "4", "attn_heads 2 there, 4 here"),
                                ("--enable_res_parameter", "0", "enable_res_parameter 1 there, 0 here")):
        assert main_cli(["--dataset", "epilepsy", "--data_path", str(data_root / "Epilepsy"), *STUDY_FLAGS,
                         flag, value, "--pretrained_path", str(src / "pretrain_model.pkl"),
                         "--save_path", str(tmp_path / "dst"), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "holds another visible encoder" in err and differ in err, err


def test_pretrain_ratio_keeps_the_normalisation_statistics_of_all_pretraining_data(tstcc_dir, tmp_path, capsys):
    """docs/studies.md: with --pretrain_ratio the statistics still come from all of train + val."""
    data = {}
    for ratio in ("1", "0.25"):
        run = tmp_path / ratio
        assert main_cli(["--dataset", "epilepsy", "--data_path", tstcc_dir, *STUDY_FLAGS, "--num_epoch_pretrain", "0",
                         "--num_epoch", "0", "--pretrain_ratio", ratio, "--save_path", str(run)]) == 0
        data[ratio] = torch.load(run / "pretrain_model.pkl", weights_only=False)["data"]
    assert "--pretrain_ratio 0.25: pretraining on 32 series" in capsys.readouterr().out    # a quarter of 128
    pool = np.concatenate([torch.load(os.path.join(tstcc_dir, f"{split}.pt"))["samples"].numpy()
                           for split in ("train", "val")])                  # (128, C, T) raw
    for ratio in data:
        np.testing.assert_allclose(data[ratio]["mean"], pool.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(data[ratio]["std"], pool.std(axis=(0, 2)), rtol=1e-5)
    assert (data["0.25"]["mean"], data["0.25"]["std"]) == (data["1"]["mean"], data["1"]["std"])


def test_a_transfer_study_gives_its_ucr_set_to_the_ucr_runs_alone(data_root, tmp_path):
    """main.py refuses --UCR_folder without --dataset ucr: a transfer between epilepsy and a UCR/UEA set passes
    the set's name to the ucr runs only, whichever way the flag is spelt; a study of one dataset passes it on,
    to be refused there."""
    for given in (["--UCR_folder", "ToyA"], ["--UCR_folder=ToyA"]):
        a = parse(parser(transfer.__doc__, "experiments.transfer", datasets="many"),
                  ["--datasets", "epilepsy", "ucr", "--quick", *given, "--out", str(tmp_path), "--data_path",
                   str(data_root), "--probe_every", "2"])
        study = Study("transfer", a)
        assert not any(f.startswith("--UCR_folder") for f in study.prefix["epilepsy"])
        assert given[-1] in study.prefix["ucr"] and "--probe_every" in study.prefix["epilepsy"]
        assert study.names == {"epilepsy": "epilepsy", "ucr": "ToyA"}
    one = Study("ablation", parse(parser(ablation.__doc__, "experiments.ablation"),        # one dataset: main.py's
                                  ["--dataset", "epilepsy", "--quick", "--UCR_folder", "ToyA", "--out",   # refusal
                                   str(tmp_path)]))
    assert "--UCR_folder" in one.prefix["epilepsy"]


def test_label_subsets_are_stratified_deterministic_and_refuse_empty_classes():
    y = np.repeat(np.arange(4), [40, 20, 10, 30])
    a, b = stratified_subset(y, 0.3, seed=5), stratified_subset(y, 0.3, seed=5)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert np.bincount(y[a]).tolist() == [12, 6, 3, 9]
    assert not np.array_equal(a, stratified_subset(y, 0.3, seed=6))
    assert np.array_equal(stratified_subset(y, 1.0, seed=5), np.arange(len(y)))
    with pytest.raises(TimeMAEError, match="keeps no labelled series of class"):
        stratified_subset(y, 0.04, seed=0)                # class 2 would keep round(0.4) = 0
    p = random_subset(100, 0.25, seed=3)
    assert len(p) == 25 and np.array_equal(p, random_subset(100, 0.25, seed=3)) and len(np.unique(p)) == 25


def test_no_mcc_and_no_mrr_together_are_refused(tstcc_dir, tmp_path, capsys):
    assert main_cli(["--dataset", "epilepsy", "--data_path", tstcc_dir, *STUDY_FLAGS, "--no_mcc", "--no_mrr",
                     "--save_path", str(tmp_path / "r")]) == 2
    assert "leave nothing to learn" in capsys.readouterr().err


def test_no_mrr_never_runs_the_momentum_encoder(tstcc_dir, tmp_path, monkeypatch):
    """docs/studies.md: without MRR the momentum (target) encoder is not run; with it, it runs every step."""
    calls, real = [], process.Trainer.__init__

    def init(self, model, *args, **kw):
        real(self, model, *args, **kw)
        model.momentum_encoder.register_forward_pre_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(process.Trainer, "__init__", init)
    for flags in (["--no_mrr"], []):
        calls.clear()
        assert main_cli(["--dataset", "epilepsy", "--data_path", tstcc_dir, *STUDY_FLAGS, "--num_epoch", "0",
                         "--save_path", str(tmp_path / f"run{len(flags)}"), *flags]) == 0
        assert len(calls) == (0 if flags else 2 * (96 + 32) // 32)           # one pass per pretraining step


@pytest.mark.parametrize("switch", ["mcc", "mrr", "decouple"])
def test_ablation_switches_drop_their_gradient_path(switch):
    torch.manual_seed(0)
    model = TimeMAE(channels=2, seq_len=32, num_classes=3, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                    vocab_size=16, wave_length=4, **{switch: False})
    out = model.forward_pretrain(torch.randn(8, 32, 2))
    assert set(out) == {"rep_predicted", "rep_target", "codeword_scores", "codeword_target", "codeword_soft",
                        "masked_valid", "z_masked"}
    assert not out["z_masked"].requires_grad            # read by the EMA codebook only, outside the losses
    loss, mrr, mcc = pretrain_loss(out, 5.0, 1.0)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    if switch == "mcc":
        assert not mcc.requires_grad and grads["tokenizer.codebook.weight"] is None
    if switch == "mrr":
        assert mrr.item() == 0.0 and model.decoupled_encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    if switch == "decouple":
        assert len(model.decoupled_encoder.blocks) == 0 and grads["mask_token"].abs().sum() > 0
    assert grads["visible_encoder.blocks.0.attn.qkv.weight"].abs().sum() > 0


def test_label_ratio_is_described_as_taken_first_with_the_selection_split_held_out_of_it():
    """The share is of all labelled series and selection holds its split out of it (at 0.5 the selection split has
    half the series it has at 1): --label_ratio's help and the label fraction study say so, as docs/studies.md."""
    splits = types.SimpleNamespace(train_y=np.repeat(np.arange(2), 40))
    held = {r: len(process.labelled_splits(splits, "val", 0.2, r, seed=1)[1]) for r in (0.5, 1.0)}
    assert held == {0.5: 8, 1.0: 16}
    help_ = next(action.help for action in build_parser()._actions if action.dest == "label_ratio")
    for text in (help_, label_fraction.__doc__):
        assert "selection holds out a stratified --val_ratio of that share" in " ".join(text.split())


@pytest.mark.parametrize("flags, message", [
    (["--label_ratio", "1.5"], "--label_ratio must lie in (0, 1]"),
    (["--pretrain_ratio", "0"], "--pretrain_ratio must lie in (0, 1]"),
    (["--label_ratio", "0.01"], "keeps no labelled series of class"),
    (["--pretrained_path", "missing.pkl"], "does not exist"),
])
def test_bad_study_flags_are_one_line_errors(tstcc_dir, tmp_path, capsys, flags, message):
    assert main_cli(["--dataset", "epilepsy", "--data_path", tstcc_dir, *STUDY_FLAGS, *flags,
                     "--save_path", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
