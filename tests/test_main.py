"""End-to-end runs through main.main: every output file, FineZero, repeatability, errors, real Epilepsy data."""
import json
import os

import numpy as np
import pytest
import torch

from args import available_cpus
from conftest import TINY, assert_reported, synthetic_series
from main import main
import process
from engine.runfiles import RUN_OUTPUTS


def run_main(args, capsys=None):
    code = main(args)
    return code, (capsys.readouterr().err if capsys else "")


def test_end_to_end_writes_every_output(tstcc_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(out), "--wave_length", "4",
                 "--num_epoch_pretrain", "2", "--probe_every", "1", "--num_epoch", "2", "--eval_per_steps", "1",
                 *TINY]) == 0
    for name in RUN_OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    pre = (out / "pretrain_result.txt").read_text().splitlines()
    assert len(pre) == 2 and pre[0].startswith("pretrain epoch1, loss") and "ce" in pre[0] and "ndcg" in pre[0]
    linear = (out / "linear_result.txt").read_text().splitlines()
    assert linear[0].startswith("epoch1, acc") and linear[-1].startswith("epoch0, acc")
    assert all(line.endswith("select_on=val") for line in linear)
    assert (out / "result.txt").read_text().splitlines()[-1].startswith("final, acc")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["select_on"] == "val" and set(metrics["finelast"]) >= {"acc", "f1"}
    assert f", C{metrics['finelast']['C']:g}, " in linear[-1]
    assert_reported(out, metrics)
    args = json.loads((out / "args.json").read_text())
    assert args["num_windows"] == 8 and args["num_masked"] == 4
    ckpt = torch.load(out / "pretrain_model.pkl", weights_only=False)
    assert {"model", "config", "epoch", "select_on"} <= set(ckpt)


def test_args_json_records_where_the_run_came_from(tstcc_dir, tmp_path):
    """provenance: the command that reproduces the run, the code's commit as git gives it, the versions."""
    import shlex
    import subprocess
    import sys
    from engine import provenance
    from engine.provenance import ROOT, git_commit
    import datetime
    import sklearn
    argv = ["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run dir"), "--wave_length",
            "4", "--num_epoch_pretrain", "1", "--num_epoch", "0", *TINY]
    utc = datetime.timezone.utc
    before = datetime.datetime.now(utc).replace(microsecond=0)             # `started` is kept to the second
    assert main(argv) == 0
    after = datetime.datetime.now(utc)
    record = json.loads((tmp_path / "run dir" / "args.json").read_text())["provenance"]
    started = datetime.datetime.fromisoformat(record["started"])
    assert started.utcoffset() == datetime.timedelta(0) and before <= started <= after   # UTC, when it ran
    assert record["sklearn"] == sklearn.__version__
    assert record["cpu"] == provenance.cpu_name() != ""
    assert shlex.split(record["command"]) == ["python", "main.py", *argv] and "process" not in record
    assert (record["torch"], record["device"], record["gpu"]) == (torch.__version__, "cpu", None)
    assert record["python"] == ".".join(map(str, sys.version_info[:3])) and record["numpy"] == np.__version__
    def git(*args):
        try:
            return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True).stdout.strip()
        except OSError:                                                   # no git: nothing to compare with
            return ""
    top = git("rev-parse", "--show-toplevel")                            # a checkout of this repository, or none
    head = git("rev-parse", "HEAD") if top and os.path.samefile(top, ROOT) else ""
    assert record["commit"] == (head or None) and git_commit(ROOT)[0] == record["commit"]
    assert isinstance(record["dirty"], bool) or record["commit"] is None
    assert git_commit(str(tmp_path)) == (None, None)                     # not a checkout
    if head:                                                              # a folder inside a checkout is not its top
        assert git_commit(os.path.join(ROOT, "model")) == (None, None)


def test_cpu_name_is_the_model_name_line_of_cpuinfo(monkeypatch, tmp_path):
    import builtins
    import io
    from engine.provenance import cpu_name
    real = builtins.open
    info = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000 @ 1.0GHz\nmodel name\t: other\n"
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: io.StringIO(info) if path == "/proc/cpuinfo"
                        else real(path, *a, **k))
    assert cpu_name() == "Test CPU 9000 @ 1.0GHz"


def test_default_run_folder_is_exp_dataset_seed_under_the_working_directory(tstcc_dir, tmp_path, monkeypatch):
    """README: --save_path defaults to exp/<dataset>/seed<seed>, and for ucr exp/<UCR_folder>/seed<seed>."""
    monkeypatch.chdir(tmp_path)                                              # nothing written into the repository
    flags = ["--wave_length", "4", "--num_epoch_pretrain", "0", "--num_epoch", "0", *TINY]
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--seed", "3", *flags]) == 0
    ucr = tmp_path / "ucr"
    ucr.mkdir()
    x, y = synthetic_series(24, channels=1)
    for split in ("TRAIN", "TEST"):   # the UCR 2018 archive's .tsv: the label, then the values
        (ucr / f"Wavy_{split}.tsv").write_text("".join(f"{label}\t" + "\t".join(map(str, series[:, 0])) + "\n"
                                                      for series, label in zip(x, y + 1)))
    assert main(["--dataset", "ucr", "--UCR_folder", "Wavy", "--data_path", str(ucr), *flags]) == 0
    for run in ("exp/har/seed3", "exp/Wavy/seed0"):
        assert json.loads((tmp_path / run / "metrics.json").read_text())["seed"] == int(run[-1])
        assert json.loads((tmp_path / run / "args.json").read_text())["save_path"] == run
    assert sorted(os.listdir(tmp_path / "exp")) == ["Wavy", "har"]


def test_fewer_than_five_epochs_and_finezero(tstcc_dir, tmp_path):
    for epochs in ("3", "0"):
        out = tmp_path / f"e{epochs}"
        assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(out), "--wave_length", "4",
                     "--num_epoch_pretrain", epochs, "--num_epoch", "1", *TINY]) == 0
        linear = (out / "linear_result.txt").read_text().splitlines()
        assert linear[0].startswith(f"epoch{epochs}, acc")           # probed after the last epoch
        assert json.loads((out / "metrics.json").read_text())["finelast"]["epoch"] == int(epochs)


def test_a_long_pretraining_prints_about_20_epoch_lines_and_logs_every_epoch(tstcc_dir, tmp_path, capsys):
    """The console shows every ceil(epochs / 20)-th epoch, the first, the last and each probe's; the log file every
    epoch, in the reference code's form (`pretrain epoch1, loss...`), codeword counts as whole numbers."""
    import re
    out = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(out), "--wave_length", "16",
                 "--num_epoch_pretrain", "43", "--probe_every", "7", "--num_epoch", "0", "--codebook_reset",
                 *TINY]) == 0
    printed = [int(e) for e in re.findall(r"^pretrain epoch (\d+): ", capsys.readouterr().out, re.M)]
    assert printed == sorted({1, 43} | set(range(3, 44, 3)) | set(range(7, 44, 7)))   # every 3rd: 43 / 20 -> 3
    logged = (out / "pretrain_result.txt").read_text().splitlines()
    assert [int(re.match(r"pretrain epoch(\d+), loss", line)[1]) for line in logged] == list(range(1, 44))
    assert all(re.search(r", used\d+, ppl\d+\.\d{4}, sec\d+\.\d{4}, reset\d+$", line) for line in logged), logged[0]


def test_the_selection_line_says_how_many_probes_tied(tstcc_dir, tmp_path, capsys, monkeypatch):
    """Of equally accurate checkpoints the earliest is kept; the log says so when probes tie. pretrain_log.jsonl
    is read once, at the end of pretraining, for those ties and for the codebook report of metrics.json."""
    import process
    accs = iter([0.5, 0.8, 0.8, 0.7])
    reads, read_epoch_log = [], process.read_epoch_log
    monkeypatch.setattr(process.Trainer, "_fit_probe", lambda *args, **kw: {"acc": next(accs)})
    monkeypatch.setattr(process, "read_epoch_log", lambda path: reads.append(path) or read_epoch_log(path))
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "r"), "--wave_length",
                 "4", "--num_epoch_pretrain", "4", "--probe_every", "1", "--num_epoch", "0", *TINY]) == 0
    out = capsys.readouterr().out
    assert "selected pretraining epoch 2 (val acc 0.8000, 2 of 4 probes scored it, the earliest is kept)" in out
    assert reads == [str(tmp_path / "r" / "pretrain_log.jsonl")]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    last = read_epoch_log(reads[0])[-1]
    assert (metrics["codebook"]["used"], metrics["codebook"]["ppl"]) == (last["used"], last["ppl"])
    held = metrics["selection"]
    assert f"; selection on val, {held} training series held out; " in out.splitlines()[0] and held > 0


def test_same_seed_same_result_and_test_protocol(tstcc_dir, tmp_path):
    common = ["--dataset", "har", "--data_path", tstcc_dir, "--wave_length", "4", "--num_epoch_pretrain", "2",
              "--num_epoch", "1", "--select_on", "test", *TINY]
    curves, finals = [], []
    for name in ("a", "b"):
        assert main([*common, "--save_path", str(tmp_path / name)]) == 0
        curves.append([line.split(", sec")[0] for line in (tmp_path / name / "pretrain_result.txt").open()])
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["select_on"] == "test"
        finals.append((metrics["finelast"], metrics["fineall"]))
    assert curves[0] == curves[1] and finals[0] == finals[1]


def test_lr_decays_by_the_rate_every_n_steps_in_both_phases(tstcc_dir, tmp_path, monkeypatch):
    """README: lr x --lr_decay_rate every --lr_decay_steps optimiser steps; fine-tuning's optimiser starts again
    at --lr. Read here: the learning rate each step is taken with."""
    used, real = {}, process.Trainer._optimise

    def optimise(loss, opt, sched, scaler):
        lr, = {group["lr"] for group in opt.param_groups}                      # every group at the same rate
        used.setdefault(id(opt), []).append(lr)
        return real(loss, opt, sched, scaler)
    monkeypatch.setattr(process.Trainer, "_optimise", staticmethod(optimise))
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run"), "--wave_length",
                 "4", "--num_epoch_pretrain", "2", "--num_epoch", "2", *TINY, "--lr", "0.004", "--lr_decay_rate",
                 "0.5", "--lr_decay_steps", "3"]) == 0
    pretraining, fineall = used.values()                                     # one optimiser per phase, in order
    assert len(pretraining) == 2 * (96 + 32) // 32 and len(fineall) > 3   # 2 epochs of train + val in batches of 32
    for steps in (pretraining, fineall):
        expected = [0.004 * 0.5 ** (k // 3) for k in range(len(steps))]     # step k + 1: floor(k / 3) decays
        assert steps == pytest.approx(expected, rel=1e-12)


def test_existing_run_folder_is_not_overwritten(tstcc_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(out), "--wave_length", "4",
            "--num_epoch_pretrain", "1", "--num_epoch", "0", *TINY]
    assert main(args) == 0
    before = (out / "metrics.json").read_text()
    code, err = run_main(args, capsys)
    assert code == 2 and "already holds" in err and "--overwrite" in err
    assert (out / "metrics.json").read_text() == before
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize("flag", ["--enable_res_parameter", "--load_pretrained_model"])
def test_switches_spelled_0_or_1_take_nothing_else(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([flag, "7"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {flag}: invalid choice: 7 (choose from 0, 1)" in err


@pytest.mark.parametrize("extra, message", [
    (["--wave_length", "64"], "longer than the series"),
    (["--wave_length", "4", "--mask_ratio", "0.1"], "at least one window must be masked"),
    (["--wave_length", "4", "--mask_ratio", "1"], "at least one window must be masked"),
    (["--d_model", "30", "--attn_heads", "4"], "divisible by --attn_heads"),
    (["--probe_C", "1", "0"], "--probe_C values must be positive"),
    (["--probe_C", "nan"], "--probe_C values must be positive"),
    (["--lr", "nan"], "--lr must be positive, got nan"),
    (["--lr_decay_rate", "0"], "--lr_decay_rate must be positive, got 0.0"),
    (["--weight_decay", "-1"], "--weight_decay must be 0 or more, got -1.0"),
    (["--beta", "-1"], "--beta must be 0 or more, got -1.0"),
    (["--seed", "-1"], "--seed must lie in 0..4294967295, got -1"),
    (["--threads", "100000"], f"--threads 100000 exceeds the {available_cpus()} CPUs this process may use"),
    (["--num_workers", "-1"], "--num_workers must be 0 or more, got -1"),
    (["--dropout", "1"], "--dropout must lie in [0, 1), got 1.0"),
    (["--codebook", "cosine", "--codebook_tau", "0"], "--codebook_tau must be a positive finite number, got 0.0"),
    (["--vocab_size", "1"], "--vocab_size must be at least 2, got 1"),
    (["--save_path", ""], "--save_path is empty: name a folder, or leave the flag out for the default"),
    (["--dataset", "ucr", "--UCR_folder", "../ArrowHead"], "--UCR_folder '../ArrowHead': expected an archive name "
                                                            "such as ArrowHead, not a path; pass the folder that holds "
                                                            "it as --data_path"),
    (["--bert_path", "/models/my-bert"], "--bert_path applies to the BERT encoder: add --encoder bert, or leave it "
                                         "out"),
    (["--UCR_folder", "ArrowHead"], "--UCR_folder applies to --dataset ucr, not har: leave it out, or pass --dataset "
                                    "ucr"),
    (["--compile", "--compile_backend", "nonsense"], "--compile_backend 'nonsense' is not a torch.compile backend"),
    (["--resized_crop", "1"], "--resized_crop must be at least 0 (off) and below 1"),
    (["--codebook_usage", "nan"], "--codebook_usage must be a finite weight, 0 or more, got nan"),
    (["--codebook_usage", "inf"], "--codebook_usage must be a finite weight, 0 or more, got inf"),
    (["--tau", "inf"], "--tau must be a positive finite number, got inf"),
])
def test_bad_settings_give_one_line_errors(tstcc_dir, tmp_path, capsys, extra, message):
    code, err = run_main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "r"),
                          *TINY, *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_are_one_line_in_every_command(capsys):
    """argparse's own errors (a value its type refuses, an unknown flag, a missing argument) print one line and
    a pointer to --help, not the whole usage first: main.py's 45 lines of it, say."""
    from tools.encode import main as encode_main
    for command, argv, message in (
            (main, ["--lr", "abc"], "argument --lr: invalid float value: 'abc' (`python main.py --help` lists the "
                                    "arguments)"),
            (main, ["--no_such_flag"], "unrecognized arguments: --no_such_flag (`python main.py --help` lists the "
                                       "arguments)"),
            (encode_main, ["run"], "the following arguments are required: inputs, --out (`python -m tools.encode "
                                   "--help` lists the arguments)")):
        with pytest.raises(SystemExit) as e:
            command(argv)
        assert e.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"


def test_a_data_file_given_as_data_path_is_named_as_a_file(tstcc_dir, tmp_path, capsys):
    """--data_path naming a dataset's file rather than its folder; a torch .pt file for --dataset numpy (a zip,
    which numpy would open as an .npz of torch's internals)."""
    train = os.path.join(tstcc_dir, "train.pt")
    for dataset, extra, error in (("har", [], f"--data_path {train!r} is a file; pass the folder that holds it"),
                                  ("ucr", ["--UCR_folder", "Toy"], f"--data_path {train!r} is a file; pass the "
                                                                   "folder that holds it"),
                                  ("numpy", [], f"--data_path {train!r}: --dataset numpy reads a .npy array")):
        code, err = run_main(["--dataset", dataset, "--data_path", train, *extra, *TINY], capsys)
        assert code == 2 and err.startswith(f"error: {error}") and err.count("\n") == 1, err


@pytest.mark.skipif(not os.path.isfile(os.path.join(os.environ.get("TIMEMAE_DATA", ""), "Epilepsy", "test.pt")),
                    reason="real Epilepsy data not found under $TIMEMAE_DATA")
def test_short_real_epilepsy_run_beats_majority(tmp_path):
    src = os.path.join(os.environ["TIMEMAE_DATA"], "Epilepsy")
    sub = tmp_path / "Epilepsy"
    sub.mkdir()
    for split, n in (("train", 400), ("val", 100), ("test", 400)):
        d = torch.load(os.path.join(src, f"{split}.pt"))
        torch.save({"samples": d["samples"][:n], "labels": d["labels"][:n]}, sub / f"{split}.pt")
    out = tmp_path / "run"
    assert main(["--dataset", "epilepsy", "--data_path", str(sub), "--save_path", str(out), "--d_model", "32",
                 "--layers", "2", "--reg_layers", "1", "--num_epoch_pretrain", "3", "--num_epoch", "0",
                 "--threads", "2", "--no_progress", "--device", "cpu"]) == 0
    test_y = torch.load(sub / "test.pt")["labels"].numpy()
    majority = np.mean(test_y == np.bincount(torch.load(sub / "train.pt")["labels"].numpy()).argmax())
    acc = json.loads((out / "metrics.json").read_text())["finelast"]["acc"]
    assert acc > majority + 0.05, (acc, majority)


def test_unlabelled_numpy_pretrains_only(tmp_path):
    x, _ = synthetic_series(40)
    np.save(tmp_path / "x.npy", x.transpose(0, 2, 1))
    out = tmp_path / "run"
    assert main(["--dataset", "numpy", "--data_path", str(tmp_path / "x.npy"), "--save_path", str(out),
                 "--wave_length", "4", "--num_epoch_pretrain", "2", "--probe_every", "1", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labelled"] == 0 and "finelast" not in metrics and "fineall" not in metrics
    assert metrics["select_on"] == "last"                       # as the checkpoint says: nothing to select on
    assert not (out / "model.pkl").exists() and not (out / "linear_result.txt").read_text()
    assert len((out / "pretrain_result.txt").read_text().splitlines()) == 2
    ckpt = torch.load(out / "pretrain_model.pkl", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["select_on"] == "last" and ckpt["data"]["classes"] == []


def test_the_budget_line_of_an_unlabelled_run_says_it_does_not_fine_tune(tmp_path, capsys):
    x, _ = synthetic_series(40)
    np.save(tmp_path / "x.npy", x.transpose(0, 2, 1))
    assert main(["--dataset", "numpy", "--data_path", str(tmp_path / "x.npy"), "--save_path", str(tmp_path / "run"),
                 "--wave_length", "4", "--num_epoch_pretrain", "1", *TINY, "--min_batches", "4",
                 "--min_pretrain_steps", "8"]) == 0
    budget = [line for line in capsys.readouterr().out.splitlines() if line.startswith("budget")]
    assert budget == ["budget (--min_batches, --min_pretrain_steps, --min_steps): pretraining 2 epochs of batch 10, "
                      "no fine-tuning"]


def test_labelled_numpy_without_a_test_split_probes_and_fine_tunes(tmp_path):
    x, y = synthetic_series(60)
    np.savez(tmp_path / "l.npz", x=x.transpose(0, 2, 1), y=y)
    out = tmp_path / "run"
    assert main(["--dataset", "numpy", "--data_path", str(tmp_path / "l.npz"), "--save_path", str(out),
                 "--wave_length", "4", "--num_epoch_pretrain", "1", "--num_epoch", "1", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # FineLast and FineAll fit on the 48 series left after the 20% selection split
    args = json.loads((out / "args.json").read_text())
    assert metrics["labelled"] == 48 and "acc" not in metrics["finelast"]
    assert metrics["finelast"]["C"] in args["probe_C"]
    assert metrics["finelast"]["fitted"] == 48 + 12 * args["probe_refit"]     # refit on the selection series too
    assert "step" in metrics["fineall"] and (out / "model.pkl").is_file()
    assert (out / "linear_result.txt").read_text().splitlines()[-1].endswith("no test split")


@pytest.mark.parametrize("damage", ["not a zip", "truncated", "object labels"])
def test_damaged_numpy_files_are_one_line(tmp_path, capsys, damage):
    """--dataset numpy on a damaged .npz (numpy raises BadZipFile, EOFError or ValueError, by damage) or one whose
    labels are objects: one line, nothing written."""
    x, y = synthetic_series(40, length=32)
    path = tmp_path / "l.npz"
    np.savez(path, x=x.transpose(0, 2, 1), y=y.astype(object) if damage == "object labels" else y)
    if damage == "not a zip":
        path.write_bytes(b"PK\x03\x04" + bytes(64))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    assert main(["--dataset", "numpy", "--data_path", str(path), "--save_path", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "not a NumPy array file of numbers (numpy.save / savez), or a damaged or truncated one" in err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_wave_length_0_takes_the_window_from_the_training_length_and_resumes(tmp_path, capsys, monkeypatch):
    """100 steps -> windows of 4 (25 windows), kept in args.json and the checkpoint; a run stopped in epoch 2
    resumes with the same flags (0 again) against the resolved configuration."""
    x, _ = synthetic_series(40, length=100)
    np.save(tmp_path / "x.npy", x.transpose(0, 2, 1))
    out = tmp_path / "run"
    args = ["--dataset", "numpy", "--data_path", str(tmp_path / "x.npy"), "--save_path", str(out),
            "--wave_length", "0", "--phases", "8", "--num_epoch_pretrain", "2", *TINY]
    epochs, real = iter(range(1, 9)), process.Trainer.pretrain_epoch

    def second_epoch_dies(self, *a, **k):
        if next(epochs) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(process.Trainer, "pretrain_epoch", second_epoch_dies)
    assert main(args) == 130                                                     # Ctrl-C: one line, no traceback
    captured = capsys.readouterr()
    assert "--wave_length 0: windows of 4 steps for series of 100" in captured.out
    assert "--phases 8: windows of 4 steps have 4 phases of the grid; the representation averages over 4" \
        in captured.out
    assert captured.err == (f"interrupted: {out}/last.pkl holds the state after the last finished epoch; rerun with "
                            "--resume (the same flags, without --overwrite) to continue from it\n")
    saved = json.loads((out / "args.json").read_text())
    assert (saved["wave_length"], saved["num_windows"]) == (4, 25)
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert "from the beginning" not in capsys.readouterr().out                 # epoch 1 was kept
    assert len((out / "pretrain_result.txt").read_text().splitlines()) == 2
    assert torch.load(out / "pretrain_model.pkl", weights_only=True)["config"]["wave_length"] == 4


def test_ctrl_c_before_any_epoch_finished_says_how_to_start_again(tmp_path, capsys, monkeypatch):
    x, _ = synthetic_series(40, length=32)
    np.save(tmp_path / "x.npy", x.transpose(0, 2, 1))

    def interrupted(*_, **__):
        raise KeyboardInterrupt
    monkeypatch.setattr(process.Trainer, "pretrain_epoch", interrupted)
    out, flags = tmp_path / "run", ["--num_epoch_pretrain", "1", "--num_epoch", "0"]
    assert main(["--dataset", "numpy", "--data_path", str(tmp_path / "x.npy"), "--save_path", str(out), *TINY,
                 *flags]) == 130
    assert capsys.readouterr().err == ("interrupted: no epoch had finished; rerun with --resume (it starts again in "
                                       "place) or --overwrite\n")
    assert not (out / "last.pkl").exists()
    monkeypatch.undo()                                                 # and the hint's command does start it again
    assert main(["--dataset", "numpy", "--data_path", str(tmp_path / "x.npy"), "--save_path", str(out), *TINY,
                 *flags, "--resume"]) == 0


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_result_files_follow_the_umask(tstcc_dir, tmp_path, mask):
    old = os.umask(mask)
    try:
        out = tmp_path / "run"
        assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(out), "--wave_length", "4",
                     "--num_epoch_pretrain", "1", "--num_epoch", "0", *TINY]) == 0
    finally:
        os.umask(old)
    for name in ("args.json", "metrics.json", "pretrain_model.pkl", "linear_result.txt"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_impossible_save_path_is_one_line(tstcc_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "file" / "run", "/proc/timemae-run"):
        code, err = run_main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(path),
                              "--wave_length", "4", *TINY], capsys)
        assert code == 2 and err.startswith(f"error: --save_path '{path}' cannot be created: ") and \
            err.count("\n") == 1, err


def test_default_threads_share_the_cpus_among_torchrun_processes(monkeypatch):
    from args import default_threads
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_threads() == cpus
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == max(1, cpus // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cpus))
    assert default_threads() == 1
