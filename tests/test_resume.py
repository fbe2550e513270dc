"""Nothing lost: a run killed at any moment continues with --resume to the same result files as a run never
interrupted; a kill while a checkpoint is written leaves the previous one loadable; a non-finite loss stops
the run naming epoch and step (or, with --skip_nonfinite, its steps are skipped)."""
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
import time

import pytest
import torch

import main
import engine.distributed
import engine.record
import process
from engine.resume import LAST, LOGS
from common.errors import TimeMAEError
from conftest import folder_bytes, scripted_selection
from model import TimeMAE
from scale_helpers import PYTHON, ROOT, subprocess_env, tiny_flags, write_pt_dataset
from engine.runfiles import append_line, atomic_save, prepare_run_dir

EPOCHS = dict(num_epoch_pretrain=5, num_epoch=3)  # 4 pretraining and 3 fine-tuning steps per epoch


class Crash(Exception):
    """Stands for the process dying at the point where it is raised."""


def crash_at(method, n, argv):
    """main.main(argv) up to the n-th call of process.Trainer.<method>, which raises Crash (the process dying
    there); the stand-in is gone afterwards."""
    real, calls = getattr(process.Trainer, method), itertools.count(1)

    def crashing(self, *args):
        if next(calls) == n:
            raise Crash
        return real(self, *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(process.Trainer, method, crashing)
        with pytest.raises(Crash):
            main.main(argv)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_pt_dataset(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The same run, never interrupted."""
    run = str(tmp_path_factory.mktemp("reference") / "run")
    assert main.main(tiny_flags(data, run, **EPOCHS)) == 0
    return run


@pytest.fixture(scope="module")
def crashed(data, tmp_path_factory):
    """The same run, killed in pretraining epoch 2 (after epoch 1's last.pkl): a copy for each test that needs one."""
    run = str(tmp_path_factory.mktemp("crashed") / "run")
    crash_at("pretrain_epoch", 3, tiny_flags(data, run, **EPOCHS))
    return run


def outputs(run):
    """Metrics (less wall time), logs (less per-epoch seconds) and the weights of both best checkpoints."""
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("seconds", "probe_seconds", "probe_share", "baseline_seconds"):  # wall time
        metrics.pop(key)
    logs = {}
    for name in LOGS:
        with open(os.path.join(run, name)) as f:
            logs[name] = re.sub(r', "?sec"?:? ?[0-9.e-]+', "", f.read())
    weights = {name: torch.load(os.path.join(run, name), weights_only=False)["model"]
               for name in ("pretrain_model.pkl", "model.pkl")}
    return metrics, logs, weights


def assert_same_run(run, reference):
    metrics, logs, weights = outputs(run)
    ref_metrics, ref_logs, ref_weights = outputs(reference)
    assert metrics == ref_metrics
    assert logs == ref_logs
    for name, state in weights.items():
        assert all(torch.equal(v, ref_weights[name][k]) for k, v in state.items()), name
    assert not os.path.exists(os.path.join(run, LAST))  # a finished run leaves nothing to resume
    assert not [f for f in os.listdir(run) if f.startswith(".tmp-")]


# main.py's run in a child process that stops, after its optimiser step, at step 2 of pretraining epoch 2 (of 4),
# touches the file argv[1] and waits there to be killed: the kill lands inside epoch 2 whatever the timing
BLOCK_IN_EPOCH_2 = textwrap.dedent("""
    import sys, time
    import process
    from main import main
    marker, argv = sys.argv[1], sys.argv[2:]
    real_epoch, real_optimise, now = process.Trainer.pretrain_epoch, process.Trainer._optimise, {}

    def pretrain_epoch(self, *args):
        now.update(epoch=args[-1], steps=0)
        return real_epoch(self, *args)

    def optimise(*args):
        taken = real_optimise(*args)
        now["steps"] = now.get("steps", 0) + 1
        if now.get("epoch") == 2 and now["steps"] == 2:
            open(marker, "w").close()
            time.sleep(3600)
        return taken
    process.Trainer.pretrain_epoch = pretrain_epoch
    process.Trainer._optimise = staticmethod(optimise)
    sys.exit(main(argv))
""")


def test_sigkill_mid_epoch_then_resume_gives_the_same_run(data, reference, tmp_path):
    run, marker = str(tmp_path / "run"), str(tmp_path / "in-epoch-2")
    proc = subprocess.Popen([PYTHON, "-c", BLOCK_IN_EPOCH_2, marker, *tiny_flags(data, run, **EPOCHS)], cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(marker):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
    state = torch.load(os.path.join(run, LAST), weights_only=True)
    assert (state["phase"], state["epoch"]) == ("pretrain", 1)          # killed inside epoch 2, after epoch 1 ended
    with open(os.path.join(run, "pretrain_result.txt")) as f:
        assert f.read().count("\n") == 1
    assert not os.path.exists(os.path.join(run, "metrics.json"))

    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 0
    assert_same_run(run, reference)


def test_crash_in_fine_tuning_resumes_from_its_last_epoch(data, reference, tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    # fine-tuning epoch 2, step 6: mid-epoch, after last.pkl of epoch 1; --resume from the start, as torchrun
    # --max_restarts would rerun the command
    crash_at("_scores", 3, tiny_flags(data, run, **EPOCHS) + ["--resume"])
    assert "starting the run from the beginning" in capsys.readouterr().out
    state = torch.load(os.path.join(run, LAST), weights_only=True)
    assert (state["phase"], state["epoch"]) == ("fineall", 1)
    with open(os.path.join(reference, "metrics.json")) as f:
        ref = json.load(f)
    assert (state["finelast"], state["baselines"]) == (ref["finelast"], ref["baselines"])

    def again(*args, **kwargs):
        raise AssertionError("computed again on resume")
    monkeypatch.setattr(process, "raw_baselines", again)       # kept in last.pkl with FineLast's result
    monkeypatch.setattr(process.Trainer, "finelast", again)
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 0
    assert "resuming fineall after epoch 1" in capsys.readouterr().out
    assert_same_run(run, reference)
    with open(os.path.join(run, "metrics.json")) as f:
        assert json.load(f)["baseline_seconds"] == state["baseline_seconds"]


def test_resume_on_other_data_is_refused_and_the_run_left_as_it_was(data, reference, tmp_path, capsys):
    """--data_path may change on --resume (the data may have moved), what it holds may not: series of the same
    shape drawn anew are another dataset, refused in one line before the logs are rewound."""
    run, other = str(tmp_path / "run"), write_pt_dataset(str(tmp_path / "other"), seed=1)
    crash_at("_scores", 3, tiny_flags(data, run, **EPOCHS))
    before = folder_bytes(run)
    capsys.readouterr()
    assert main.main(tiny_flags(other, run, **EPOCHS) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume: the data differs from the one the run in") and "\n" not in err
    assert "(mean, std changed)" in err
    assert folder_bytes(run) == before
    moved = shutil.copytree(data, str(tmp_path / "moved"))              # the same data elsewhere: resumed
    assert main.main(tiny_flags(moved, run, **EPOCHS) + ["--resume"]) == 0
    assert_same_run(run, reference)


@pytest.mark.parametrize("last", ["removed", "a folder"])
def test_a_run_whose_last_state_is_gone_is_refused_and_left_as_it_was(data, crashed, tmp_path, capsys, last):
    """Two logged epochs mean last.pkl had been written: without it (removed, or a folder in its place)
    --resume refuses in one line instead of starting again in place over the logs."""
    run = str(tmp_path / "run")
    shutil.copytree(crashed, run)
    os.remove(os.path.join(run, LAST))
    if last == "a folder":
        os.mkdir(os.path.join(run, LAST))
    before = folder_bytes(run) if last == "removed" else sorted(os.listdir(run))
    capsys.readouterr()
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 2
    what = "last.pkl is not a file" if last == "a folder" else \
        "its logs show epochs after which last.pkl was written, but it is gone"
    assert capsys.readouterr().err == (f"error: --resume: nothing to continue from in {run!r}: {what}; restore "
                                       "last.pkl, or start afresh with --overwrite\n")
    assert (folder_bytes(run) if last == "removed" else sorted(os.listdir(run))) == before


def test_a_run_killed_in_its_first_fine_tuning_epoch_without_pretraining_starts_again(data, tmp_path):
    """FineZero (no pretraining) writes no last.pkl before its first fine-tuning epoch ends, however many
    evaluations result.txt logged in it: --resume starts it again in place, as torchrun --max_restarts would."""
    run, flags = str(tmp_path / "run"), dict(EPOCHS, num_epoch_pretrain=0, eval_per_steps=1)
    crash_at("fineall_candidate", 3, tiny_flags(data, run, **flags))   # at step 3 of fine-tuning epoch 1
    assert not os.path.exists(os.path.join(run, LAST))
    assert open(os.path.join(run, "result.txt")).read().count("epoch1, step") >= 2
    assert main.main(tiny_flags(data, run, **flags) + ["--resume"]) == 0
    whole = str(tmp_path / "whole")                                   # the same run, never interrupted
    assert main.main(tiny_flags(data, whole, **flags)) == 0
    assert_same_run(run, whole)                                       # the killed attempt's evaluations gone too


def test_a_run_started_with_an_unread_ucr_folder_resumes_without_it(data, crashed, reference, tmp_path):
    """--UCR_folder beside another dataset is refused now; a run started with it before, which read nothing of
    it, resumes without the flag."""
    run = str(tmp_path / "run")
    shutil.copytree(crashed, run)
    args = json.load(open(os.path.join(run, "args.json")))
    with open(os.path.join(run, "args.json"), "w") as f:
        json.dump({**args, "UCR_folder": "ArrowHead"}, f)
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 0
    assert_same_run(run, reference)


def test_resume_without_args_json_is_refused_and_left_as_it_was(data, crashed, tmp_path, capsys):
    run = str(tmp_path / "run")
    shutil.copytree(crashed, run)
    os.remove(os.path.join(run, "args.json"))
    before = folder_bytes(run)
    capsys.readouterr()
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 2
    assert capsys.readouterr().err == (f"error: --resume: run folder {run!r} holds pretrain_result.txt, "
                                       "pretrain_log.jsonl, linear_result.txt, pretrain_model.pkl, last.pkl but no "
                                       "args.json, so the run's flags cannot be checked: restore it, or start "
                                       "afresh with --overwrite\n")
    assert folder_bytes(run) == before


def test_resume_clears_a_folder_an_overwrite_left_aside(data, reference, tmp_path):
    """A process killed while --overwrite removed the old run's files leaves them in a .tmp- folder; --resume
    clears it with the half-written files."""
    run = str(tmp_path / "run")
    crash_at("pretrain_epoch", 2, tiny_flags(data, run, **EPOCHS))
    aside = os.path.join(run, ".tmp-overwrite-x")
    os.mkdir(aside)
    open(os.path.join(aside, "model.pkl"), "w").close()
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 0
    assert_same_run(run, reference)


@pytest.mark.parametrize("change", ["emptied", "removed"])
def test_a_log_cut_after_the_checkpoint_is_refused_and_the_run_left_as_it_was(data, tmp_path, capsys, change):
    """Truncating a log to the size last.pkl recorded would pad a shorter one with zero bytes."""
    run = str(tmp_path / "run")
    crash_at("_scores", 3, tiny_flags(data, run, **EPOCHS))
    log = os.path.join(run, "pretrain_log.jsonl")
    if change == "emptied":
        open(log, "w").close()
    else:
        os.remove(log)
    before = folder_bytes(run)
    capsys.readouterr()
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"error: --resume: \S+pretrain_log.jsonl holds 0 bytes but last.pkl recorded [1-9]\d*: "
                        r"the log was cut or removed after the checkpoint; restore it, or start afresh with "
                        r"--overwrite", err), err
    assert folder_bytes(run) == before


def test_ema_codebook_resumes_with_its_running_statistics(data, tmp_path):
    """The EMA codebook's counts and sums live outside the state_dict: last.pkl keeps them, so a run crashed
    in pretraining epoch 3 resumes to the weights of the run never interrupted."""
    flags = dict(num_epoch_pretrain=4, probe_every=4, num_epoch=0, codebook_ema=0.9)   # epoch 4's weights kept
    reference, run = str(tmp_path / "reference"), str(tmp_path / "run")
    assert main.main(tiny_flags(data, reference, **flags)) == 0
    crash_at("pretrain_epoch", 3, tiny_flags(data, run, **flags))
    state = torch.load(os.path.join(run, LAST), weights_only=True)
    assert state["epoch"] == 2 and state["codebook_ema"]["ema_sum"].shape == (16, 16)
    assert not torch.equal(state["codebook_ema"]["ema_count"], torch.ones(16))   # statistics the resume needs
    assert main.main(tiny_flags(data, run, **flags) + ["--resume"]) == 0
    ours, ref = (torch.load(os.path.join(r, "pretrain_model.pkl"), weights_only=True)["model"]
                 for r in (run, reference))
    assert all(torch.equal(v, ref[k]) for k, v in ours.items())


def test_fineall_resumed_after_keeping_the_probe_fits_its_head_as_the_uninterrupted_run(data, tmp_path, monkeypatch):
    """--fineall_head probe --probe_refit 1 with no optimiser step: FineAll keeps step 0, FineLast's probe, and
    model.pkl takes it fitted again on every labelled series. The uninterrupted run reuses FineLast's refit probe
    (fitting nothing again); a run resumed in FineAll encodes the series and fits it: the same model.pkl."""
    flags = dict(EPOCHS, fineall_head="probe", probe_refit=1)
    no_step = staticmethod(lambda *args: torch.tensor(True))   # taken, changing nothing

    def not_again(*args, **kwargs):
        raise AssertionError("FineLast's refit probe fitted again in the same session")
    monkeypatch.setattr(process.Trainer, "_optimise", no_step)
    monkeypatch.setattr(process, "fit_probe", not_again)
    reference, run = str(tmp_path / "reference"), str(tmp_path / "run")
    assert main.main(tiny_flags(data, reference, **flags)) == 0
    real = process.Trainer.fineall_epoch

    def crash_in_epoch_2(self, model, forward, loader, opt, sched, scaler, epoch):
        if epoch == 2:
            raise Crash
        return real(self, model, forward, loader, opt, sched, scaler, epoch)
    monkeypatch.setattr(process.Trainer, "fineall_epoch", crash_in_epoch_2)
    with pytest.raises(Crash):
        main.main(tiny_flags(data, run, **flags))
    monkeypatch.undo()
    monkeypatch.setattr(process.Trainer, "_optimise", no_step)
    fits, fit_probe = [], process.fit_probe
    monkeypatch.setattr(process, "fit_probe", lambda *args: fits.append(len(args[1])) or fit_probe(*args))
    assert main.main(tiny_flags(data, run, **flags) + ["--resume"]) == 0
    metrics, ref_metrics = (json.load(open(os.path.join(r, "metrics.json"))) for r in (run, reference))
    assert metrics["fineall"]["step"] == ref_metrics["fineall"]["step"] == 0
    assert fits == [metrics["finelast"]["fitted"]]                 # the resumed session fitted the head once
    ours, ref = (torch.load(os.path.join(r, "model.pkl"), weights_only=True) for r in (run, reference))
    assert ours["head_fitted"] == ref["head_fitted"] == metrics["finelast"]["fitted"]
    assert all(torch.equal(v, ref["model"][k]) for k, v in ours["model"].items())


def test_fineall_margin_survives_a_resume(data, tmp_path, monkeypatch):
    """--fineall_margin 1se: a run killed while the probe is kept applies the same margin after --resume (it is
    read from the resumed record), so a step ahead of the probe by less than one standard error does not replace
    it there either: the same kept step and model.pkl as the uninterrupted run."""
    flags = dict(EPOCHS, fineall_head="probe", fineall_margin="1se")
    accs = [0.5, 0.5, 0.501]            # step 0, step 2 (epoch 1), then steps ahead by far less than one SE
    reference, run = str(tmp_path / "reference"), str(tmp_path / "run")
    monkeypatch.setattr(process.Trainer, "_scores", scripted_selection(accs))
    assert main.main(tiny_flags(data, reference, **flags)) == 0
    scripted, calls = scripted_selection(accs), itertools.count()

    def crash_in_epoch_2(self, model, x, y):
        if x is self.sel_x and next(calls) == 2:   # the first evaluation of epoch 2, after last.pkl of epoch 1
            raise Crash
        return scripted(self, model, x, y)
    monkeypatch.setattr(process.Trainer, "_scores", crash_in_epoch_2)
    with pytest.raises(Crash):
        main.main(tiny_flags(data, run, **flags))
    assert torch.load(os.path.join(run, LAST), weights_only=True)["best"] == (0.5, 0)
    monkeypatch.setattr(process.Trainer, "_scores", scripted_selection(accs[2:]))
    assert main.main(tiny_flags(data, run, **flags) + ["--resume"]) == 0
    metrics, ref_metrics = (json.load(open(os.path.join(r, "metrics.json"))) for r in (run, reference))
    assert metrics["fineall"]["step"] == ref_metrics["fineall"]["step"] == 0
    ours, ref = (torch.load(os.path.join(r, "model.pkl"), weights_only=True)["model"] for r in (run, reference))
    assert all(torch.equal(v, ref[k]) for k, v in ours.items())


def test_crash_between_last_state_and_best_checkpoint_loses_nothing(data, reference, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    real = engine.record.atomic_save

    def save_or_crash(obj, path):
        if path.endswith("pretrain_model.pkl"):  # last.pkl of epoch 1 is written, its best checkpoint is not
            raise Crash
        real(obj, path)
    monkeypatch.setattr(engine.record, "atomic_save", save_or_crash)
    with pytest.raises(Crash):
        main.main(tiny_flags(data, run, **EPOCHS))
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(run, "pretrain_model.pkl"))

    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 0
    assert_same_run(run, reference)


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    path = str(tmp_path / "last.pkl")
    script = textwrap.dedent(f"""
        import os, signal, torch
        from engine.runfiles import atomic_save
        atomic_save({{"epoch": 1, "w": torch.ones(1000)}}, {path!r})
        def dies_before_the_rename(fd):    # the new file written, not yet in place
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = dies_before_the_rename
        atomic_save({{"epoch": 2, "w": torch.zeros(1000)}}, {path!r})
    """)
    proc = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=subprocess_env(), capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], torch.ones(1000))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # the half-written file, beside it


# atomic_save with the file size capped (RLIMIT_FSIZE): a real write that fails half-way, as on a full disk
CAPPED_SAVE = textwrap.dedent("""
    import resource, signal, sys
    import torch
    from engine.runfiles import atomic_save
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # the write fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        atomic_save({"epoch": 2, "model": torch.zeros(100000)}, sys.argv[1])
    except Exception as e:
        print(type(e).__name__, e)
""")


def test_failed_checkpoint_write_keeps_the_previous_one_and_cleans_up(tmp_path):
    """A write that fails half-way (torch.save straight to the file gave its own RuntimeError, 'unexpected pos'):
    one line naming the file and the cause, the old file intact, no temporary file left."""
    path = str(tmp_path / "model.pkl")
    atomic_save({"epoch": 1}, path)
    out = subprocess.run([PYTHON, "-c", CAPPED_SAVE, path], cwd=ROOT, env=subprocess_env(), capture_output=True,
                         text=True, check=True).stdout
    assert out == f"WriteError cannot write {path!r}: File too large\n"
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["model.pkl"]
    with pytest.raises(OSError, match="cannot write .*result.txt': No such file or directory") as error:   # logs too
        append_line(str(tmp_path / "gone" / "result.txt"), "epoch 1")
    assert isinstance(error.value, TimeMAEError)


def test_a_log_that_cannot_be_started_is_a_one_line_error_as_an_append_is(tmp_path):
    from types import SimpleNamespace
    record = engine.record.RunRecord(str(tmp_path / "gone"), SimpleNamespace(is_main=True))
    with pytest.raises(OSError, match="cannot write .*pretrain_result.txt': No such file or directory") as error:
        record.start_log("pretrain_result.txt")
    assert isinstance(error.value, TimeMAEError)
    (tmp_path / "result.txt").write_text("epoch1, an earlier run's line\n")
    engine.record.RunRecord(str(tmp_path), SimpleNamespace(is_main=True)).start_log("result.txt")
    assert (tmp_path / "result.txt").read_text() == "" and os.listdir(tmp_path) == ["result.txt"]


def test_nonfinite_loss_stops_then_resume_skips_it(data, tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    real = process.pretrain_loss

    def poison(bad_call):
        calls = itertools.count(1)

        def loss_with_nan(out, alpha, beta, *usage):
            loss, mrr, mcc = real(out, alpha, beta, *usage)
            return (loss * float("nan") if next(calls) == bad_call else loss), mrr, mcc
        return loss_with_nan

    monkeypatch.setattr(process, "pretrain_loss", poison(6))  # epoch 2, step 2 of 4
    assert main.main(tiny_flags(data, run, **EPOCHS)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pretraining loss became non-finite (NaN/inf) at epoch 2, step 2 of 4" in err, err
    assert "last.pkl keeps the state after the previous epoch" in err and "--skip_nonfinite" in err
    assert torch.load(os.path.join(run, LAST), weights_only=False)["epoch"] == 1
    with open(os.path.join(run, "pretrain_result.txt")) as f:
        assert f.read().count("\n") == 1  # nothing of the failed epoch was kept

    monkeypatch.setattr(process, "pretrain_loss", poison(2))  # the same step, counted from the resumed epoch 2
    momentum, updates = [], TimeMAE.update_momentum_encoder

    def record_update(model, taken=None):
        momentum.append(bool(taken))
        updates(model, taken)
    monkeypatch.setattr(TimeMAE, "update_momentum_encoder", record_update)
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume", "--skip_nonfinite"]) == 0
    assert momentum[:4] == [True, False, True, True]       # the momentum encoder skips the skipped step too
    assert "at epoch 2, step 2 of 4: skipped 1 of 4 steps" in capsys.readouterr().out
    final = torch.load(os.path.join(run, "model.pkl"), weights_only=False)["model"]
    assert all(torch.isfinite(v).all() for v in final.values())


def test_skipped_step_leaves_weights_and_optimiser_untouched():
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    process.Trainer._optimise(layer(torch.ones(4, 3)).sum(), opt, sched, scaler)
    before = [p.detach().clone() for p in layer.parameters()]
    process.Trainer._optimise(layer(torch.full((4, 3), float("nan"))).sum(), opt, sched, scaler)
    assert all(torch.equal(a, p) for a, p in zip(before, layer.parameters()))
    assert int(opt.state[layer.weight]["step"]) == 1
    process.Trainer._optimise(layer(torch.ones(4, 3)).sum(), opt, sched, scaler)
    assert not torch.equal(before[0], layer.weight) and int(opt.state[layer.weight]["step"]) == 2


def test_overwrite_drops_the_old_runs_outputs_and_nothing_else(tmp_path):
    """... with what a killed process left half-written: a temporary file of a run file's name, the folder an
    earlier --overwrite moved its old run to."""
    run = str(tmp_path)
    for name in (LAST, "metrics.json", "pretrain_result.txt", "model.pkl", "result.txt", "tsne.png", "notes.md",
                 ".tmp-x-last.pkl", ".tmp-mine"):
        open(os.path.join(run, name), "w").close()
    os.mkdir(os.path.join(run, ".tmp-overwrite-x"))
    open(os.path.join(run, ".tmp-overwrite-x", "model.pkl"), "w").close()
    prepare_run_dir(run, overwrite=True)
    assert sorted(os.listdir(run)) == [".tmp-mine", "notes.md"]          # the user's own files stay


def test_overwrite_that_cannot_remove_one_file_leaves_the_whole_old_run(tmp_path, monkeypatch):
    """A file --overwrite cannot remove (immutable, say) is met before any other is gone: the one-line error
    names it, and the folder holds the old run as it was."""
    run = str(tmp_path)
    for name in ("args.json", "pretrain_log.jsonl", "pretrain_model.pkl", "model.pkl", "metrics.json", "tsne.png"):
        with open(os.path.join(run, name), "w") as f:
            f.write(name)
    before, rename = folder_bytes(run), os.rename

    def refuse_model(src, dst):
        if src.endswith(os.sep + "model.pkl"):
            raise PermissionError(1, "Operation not permitted")
        rename(src, dst)
    monkeypatch.setattr(os, "rename", refuse_model)
    with pytest.raises(TimeMAEError, match=r"^--overwrite: cannot remove '.*/model\.pkl': Operation not permitted; "
                                           r"the old run is left as it was$"):
        prepare_run_dir(run, overwrite=True)
    assert folder_bytes(run) == before                     # pretrain_model.pkl, moved aside first, is back too


def test_overwrite_with_a_checkpoint_that_cannot_be_read_leaves_the_old_run(data, reference, tmp_path, capsys):
    """--pretrained_path is checked before --overwrite clears the folder: a refused transfer loses nothing, and a
    new folder is not even created."""
    run = shutil.copytree(reference, str(tmp_path / "run"))
    before = folder_bytes(run)
    bad = tmp_path / "pretrain_model.pkl"
    bad.write_bytes(open(os.path.join(run, "pretrain_model.pkl"), "rb").read()[:1000])     # truncated
    assert main.main(tiny_flags(data, run) + ["--overwrite", f"--pretrained_path={bad}"]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    assert folder_bytes(run) == before
    assert main.main(tiny_flags(data, str(tmp_path / "new")) + [f"--pretrained_path={bad}"]) == 2
    assert not os.path.exists(tmp_path / "new")


def test_a_transfer_run_resumes_without_its_pretrained_file(data, reference, tmp_path, capsys):
    """last.pkl holds the weights a resumed run goes on from: the checkpoint it started from may be gone. The run
    resumes after pretraining epoch 1 (no transfer again) and ends as the same transfer run never interrupted."""
    source = shutil.copy(os.path.join(reference, "pretrain_model.pkl"), tmp_path / "source.pkl")
    run, uninterrupted = str(tmp_path / "run"), str(tmp_path / "uninterrupted")
    assert main.main(tiny_flags(data, uninterrupted, **EPOCHS) + [f"--pretrained_path={source}"]) == 0
    flags = tiny_flags(data, run, **EPOCHS) + [f"--pretrained_path={source}"]
    crash_at("pretrain_epoch", 2, flags)
    os.remove(source)
    capsys.readouterr()
    assert main.main(flags + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert f"resuming pretrain after epoch 1 from {os.path.join(run, LAST)}" in out and "transfer from" not in out
    assert_same_run(run, uninterrupted)


def test_the_pretrained_file_is_read_by_rank_0_alone(data, reference, tmp_path, monkeypatch):
    """Under torchrun Dist.on_main runs a read on rank 0 and sends its result: the other machines need no copy of
    --pretrained_path (docs/distributed.md), and whether the run goes on from last.pkl is rank 0's finding too (the
    run folder may be on its machine alone; ranks that decided otherwise would pair other collectives)."""
    read_on_main, on_main = [], engine.distributed.Dist.on_main

    def record(dist, fn, *args):
        read_on_main.append((fn.__name__, *args))
        return on_main(dist, fn, *args)
    monkeypatch.setattr(engine.distributed.Dist, "on_main", record)
    source = os.path.join(reference, "pretrain_model.pkl")
    assert main.main(tiny_flags(data, str(tmp_path / "run"), num_epoch=0) + [f"--pretrained_path={source}"]) == 0
    assert ("open_checkpoint", source) in read_on_main
    assert [name for name, *_ in read_on_main][:2] == ["resumes_from_state", "open_checkpoint"]


def test_overwrite_by_a_run_without_fine_tuning_leaves_no_old_model(data, reference, tmp_path, capsys):
    """A run that writes fewer files than the one it replaces: tools.encode --predict would otherwise use the
    old model.pkl, and visualize.py draw the old result.txt."""
    run = shutil.copytree(reference, str(tmp_path / "run"))
    open(os.path.join(run, "finetune.png"), "w").close()
    assert main.main(tiny_flags(data, run, num_epoch=0) + ["--overwrite"]) == 0
    left = set(os.listdir(run))
    assert {"pretrain_model.pkl", "metrics.json", "linear_result.txt"} <= left
    assert not left & {"model.pkl", "result.txt", "finetune.png"}, left


def test_a_finite_loss_with_nan_gradients_counts_as_skipped(data, tmp_path, monkeypatch, capsys):
    """The scaler skips a step whose gradients hold NaN even when the loss is finite: the momentum encoder and
    the epoch's count of skipped steps follow the scaler, not the loss."""
    real, calls = process.pretrain_loss, itertools.count(1)

    def nan_gradients_at_step_2(out, alpha, beta, *usage):
        loss, mrr, mcc = real(out, alpha, beta, *usage)
        zero = loss - loss.detach()                        # 0, with gradient 1 towards every parameter
        return (loss + zero.abs().sqrt() * 0 if next(calls) == 2 else loss), mrr, mcc   # value 0, gradient NaN
    monkeypatch.setattr(process, "pretrain_loss", nan_gradients_at_step_2)
    momentum, updates = [], TimeMAE.update_momentum_encoder

    def record_update(model, taken=None):
        momentum.append(bool(taken))
        updates(model, taken)
    monkeypatch.setattr(TimeMAE, "update_momentum_encoder", record_update)
    run = str(tmp_path / "run")
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--skip_nonfinite"]) == 0
    assert momentum[:4] == [True, False, True, True]
    assert "loss or gradients became non-finite (NaN/inf) at epoch 1, step 2 of 4: skipped 1 of 4 steps" in \
        capsys.readouterr().out


def test_the_step_flag_is_the_scalers_decision():
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    assert bool(process.Trainer._optimise(layer(torch.ones(4, 3)).sum(), opt, sched, scaler))
    before = [p.detach().clone() for p in layer.parameters()]
    out = layer(torch.ones(4, 3)).sum()
    taken = process.Trainer._optimise(out * 0 + (out - out.detach()).abs().sqrt() * 0, opt, sched, scaler)
    assert not bool(taken) and all(torch.equal(a, p) for a, p in zip(before, layer.parameters()))
    assert bool(process.Trainer._optimise(torch.tensor(1e30) * layer(torch.ones(4, 3)).sum(), opt, sched, scaler))


def test_resuming_with_other_processes_that_change_a_small_sets_batch_names_the_runs_process_count(tmp_path):
    """The capped batch is a multiple of the processes (process.training_budget): 17 with one, 16 with two."""
    from types import SimpleNamespace

    from engine.resume import check_resumable
    saved = {"lr": 0.001, "pretrain_batch_size": 17, "pretrain_epochs": 300, "provenance": {"processes": 1}}
    (tmp_path / "args.json").write_text(json.dumps(saved))
    cfg = SimpleNamespace(lr=0.001, pretrain_batch_size=16, pretrain_epochs=300)
    with pytest.raises(TimeMAEError, match=r"^--resume: the step budget differs from the run's "
                                           r"\(--pretrain_batch_size 17 -> 16\): a small set's batch is capped to a "
                                           r"multiple of the processes; resume with 1 process\(es\), as the run had$"):
        check_resumable(str(tmp_path), cfg, runtime=set())
    cfg.lr = 0.01                              # a flag changed too: the flags are named, not the budget they set
    with pytest.raises(TimeMAEError, match=r"flags differ from the run's args.json \(--lr 0.001 -> 0.01\); resume"):
        check_resumable(str(tmp_path), cfg, runtime=set())


def test_resume_of_a_finished_run_removes_a_last_pkl_left_by_a_kill_after_its_metrics(data, reference, tmp_path,
                                                                                       capsys):
    """Killed between writing metrics.json and removing last.pkl, a run is finished: --resume refuses it, as any
    finished run, and takes the leftover away (nothing else)."""
    run = str(tmp_path / "run")
    shutil.copytree(reference, run)
    shutil.copy(os.path.join(run, "pretrain_model.pkl"), os.path.join(run, LAST))
    before = {f: b for f, b in folder_bytes(run).items() if f != LAST}
    assert main.main(tiny_flags(data, run, **EPOCHS) + ["--resume"]) == 2
    assert "has finished (metrics.json exists); nothing to resume" in capsys.readouterr().err
    assert folder_bytes(run) == before                                  # last.pkl gone, nothing else touched
