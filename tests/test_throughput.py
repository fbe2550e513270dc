"""benchmarks/throughput.py: one row per device, shape and task, written to the CSV it prints."""
import ast
import math
import re
import subprocess
import sys
import warnings

import pandas as pd
import pytest
import torch

from benchmarks import throughput
from engine.provenance import git_commit
from scale_helpers import ROOT, subprocess_env, write_pt_dataset


def test_benchmark_writes_a_row_per_shape_and_task(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    throughput.main(["--device", "cpu", "--threads", "1", "--shapes", "epilepsy", "--batch_size", "8",
                     "--eval_series", "16", "--reps", "1", "--steps", "1", "--warmup", "0", "--out", str(out)])
    table = pd.read_csv(out)
    assert list(zip(table["shape"], table["task"])) == [("epilepsy", t) for t in ("pretrain", "finetune", "represent")]
    assert list(table["batch"][:2]) == [8, 8]                          # the training batch; represent: its own
    assert (table["windows"] == 12).all()                          # 178 steps / window 16, rounded up
    pre = table[table["task"] == "pretrain"].iloc[0]
    from types import SimpleNamespace
    from model import TimeMAE
    channels, length, classes, wave = throughput.SHAPES["epilepsy"]     # the step's count, made again here
    model = TimeMAE(channels=channels, seq_len=length, num_classes=classes, wave_length=wave).train()
    flops = throughput.pretrain_flops(model, torch.randn(8, length, channels), SimpleNamespace(amp=False),
                                      torch.device("cpu"))
    assert pre["gflop_per_batch"] == pytest.approx(flops / 1e9, rel=1e-3)          # the CSV keeps 4 digits
    assert pre["gflops"] == pytest.approx(pre["gflop_per_batch"] / (pre["ms_per_batch"] / 1e3), rel=1e-3)
    assert pre["of_matmul"] == pytest.approx(pre["gflops"] / pre["matmul_gflops"], rel=1e-3)
    printed = capsys.readouterr().out
    assert "of_matmul" in printed
    commit = git_commit()[0]                                         # the code that measured, before the figures
    assert (f"commit {commit[:7]}" if commit else "not a git checkout") in printed.splitlines()[0]
    assert table["syncs_per_step"][:2].isna().all()                 # counted on a GPU only


def test_the_step_flops_count_the_momentum_encoders_fused_blocks():
    """The momentum encoder's blocks run fused (one ATen op FlopCounterMode sees nothing inside); the count
    includes their products: the step with MRR minus the step without it (no momentum encoder pass, the same
    backward) is, per block, 24 B M d^2 (QKV, output and feed-forward 4d projections) + 4 B M^2 d (attention)."""
    from model import TimeMAE
    from types import SimpleNamespace
    cfg = SimpleNamespace(amp=False)
    x = torch.randn(8, 178, 1)
    counts = []
    for mrr in (True, False):
        torch.manual_seed(0)
        model = TimeMAE(channels=1, seq_len=178, num_classes=2, wave_length=8, mrr=mrr).train()
        counts.append(throughput.pretrain_flops(model, x, cfg, torch.device("cpu")))
    B, M, d, layers = 8, model.num_masked, 64, 8
    assert counts[0] - counts[1] == layers * (24 * B * M * d * d + 4 * B * M * M * d)


def test_the_benchmarks_fine_tuning_step_trains_what_fineall_trains():
    """After the pretraining step froze the head, the fine-tuning step trains it again, with the encoder, and
    leaves the pretraining-only parts (decoupled encoder, tokenizer, momentum encoder, mask token) alone."""
    from model import TimeMAE
    from types import SimpleNamespace
    cfg = SimpleNamespace(amp=False, compile=False)
    torch.manual_seed(0)
    model = TimeMAE(channels=1, seq_len=64, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                    wave_length=8).train()
    x, y = torch.randn(8, 64, 1), torch.arange(8) % 2
    throughput.pretrain_setup(model, x, cfg, torch.device("cpu"))()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = throughput.finetune_setup(model, x, y, cfg, torch.device("cpu"))
    step()
    step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head", "visible_encoder", "window_slicer", "position"}, changed


def test_sync_count_reads_the_warnings_of_torchs_sync_debug_mode(monkeypatch):
    """syncs_per_call counts the warnings torch's sync debug mode gives on a GPU (replayed here, without one) and
    sets the mode back; on the CPU it is NaN."""
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def step():
        warnings.warn("called a synchronizing CUDA operation")
        warnings.warn("something else")
    assert throughput.syncs_per_call(step, torch.device("cuda"), calls=2) == 1
    assert modes == ["warn", "default"]
    assert math.isnan(throughput.syncs_per_call(step, torch.device("cpu")))


def test_benchmark_refuses_unknown_shapes_and_counts_below_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        throughput.parse(["--shapes", "har,imagenet"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: unknown shapes ['imagenet']; choose from {','.join(throughput.SHAPES)}\n"
    for flag, value in (("--reps", "0"), ("--threads", "-1"), ("--batch_size", "x")):
        with pytest.raises(SystemExit):
            throughput.parse([flag, value])
        assert f"argument {flag}: expected a whole number of 1 or more, got '{value}'" in capsys.readouterr().err


def test_benchmarks_refuse_bad_values_before_measuring_in_one_line(tmp_path, capsys, monkeypatch):
    """Each refusal comes from the parser (one line, exit 2), before any measurement; parsing writes nothing."""
    from benchmarks import compile_ab, profile_step, softmax_rows
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "TimeMAE.py").write_text("")          # part of a checkout only
    (tmp_path / "folder.csv").mkdir()
    cases = [(throughput.parse, ["--e2e_epochs", "-1"], "expected a whole number of 0 or more, got '-1'"),
             (throughput.parse, ["--e2e_waves", "8,x"], "expected whole numbers of 1 or more like 8,16, got '8,x'"),
             (throughput.parse, ["--device", "gpu"], "--device gpu: "),
             (throughput.parse, ["--out", str(tmp_path / "folder.csv")], "is a folder; name a file"),
             (throughput.parse, ["--reference", str(tmp_path)], "expected a checkout of Mingyue-Cheng/TimeMAE"),
             (compile_ab.parse, ["--waves", "0,x"], "expected whole numbers of 0 or more like 8,16, got '0,x'"),
             (softmax_rows.parse, ["--lengths", "4,x"], "expected whole numbers of 1 or more")]
    if not torch.cuda.is_available():
        cases.append((profile_step.parse, ["--device", "cuda"], "--device cuda: no CUDA GPU is available"))
    (tmp_path / "file").write_text("")
    cases.append((throughput.parse, ["--out", str(tmp_path / "file" / "x.csv")], "its folder cannot be created in"))
    for parse, argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            parse(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err.splitlines()[-1], (argv, err)
    monkeypatch.chdir(tmp_path)
    assert throughput.parse([]).out == "exp/throughput.csv" and not (tmp_path / "exp").exists()


def test_benchmark_out_in_a_folder_it_cannot_write_says_so(tmp_path, capsys, monkeypatch):
    """--out in an existing folder this user cannot write is named as such; in a missing folder, by where it
    cannot be created. Refusing access is mocked: these tests may run as root, which chmod does not stop."""
    import os
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.abspath(path) != str(locked) and access(path, mode))
    for out, message in ((locked / "x.csv", f"its folder '{locked}' is not writable by this user"),
                         (locked / "new" / "x.csv", f"its folder cannot be created in '{locked}'")):
        with pytest.raises(SystemExit) as exit_info:
            throughput.parse(["--out", str(out)])
        err = capsys.readouterr().err.splitlines()
        assert exit_info.value.code == 2 and err[-1].endswith(f"error: --out '{out}': {message}"), err
    assert not (locked / "new").exists()


def test_benchmarks_take_their_device_as_main_py_does(capsys, monkeypatch):
    """--device goes through main.py's engine.distributed.resolve_device: a CUDA device without a GPU and a name
    that is no device are the parser's one-line errors; throughput's 'all' is the CPU, then CUDA when present."""
    from benchmarks import profile_step
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for parse in (throughput.parse, profile_step.parse):
        for device, message in (("cuda", "--device cuda: no CUDA GPU is available; use --device cpu"),
                                ("gpu", "--device gpu: 'gpu' is not a device name (cpu, cuda, cuda:N)")):
            with pytest.raises(SystemExit) as exit_info:
                parse(["--device", device])
            err = capsys.readouterr().err.splitlines()
            assert exit_info.value.code == 2 and err[-1].endswith(f"error: {message}"), (parse, device, err)
    assert throughput.parse(["--device", "all"]).devices == [torch.device("cpu")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert throughput.parse(["--device", "all"]).devices == [torch.device("cpu"), torch.device("cuda")]
    assert profile_step.parse([]).device == torch.device("cpu")


def test_a_failed_end_to_end_run_names_its_error_not_a_log_that_is_gone(tmp_path):
    from benchmarks.end_to_end import timed_process
    with pytest.raises(SystemExit, match=r"failed \(exit 1\): ValueError: no such data"):
        timed_process([sys.executable, "-c", "raise ValueError('no such data')"], str(tmp_path),
                      str(tmp_path / "run.log"), 1)


def test_reference_copy_gets_only_the_runtime_fixes(tmp_path):
    """--reference runs a temporary copy of the reference checkout with three runtime fixes; the checkout itself
    is left alone, and a folder without the expected code is refused."""
    from benchmarks.end_to_end import patched_reference
    ref = tmp_path / "TimeMAE"
    (ref / "model").mkdir(parents=True)
    (ref / "model" / "TimeMAE.py").write_text("# model\n")
    (ref / "classification.py").write_text("LogisticRegression(random_state=3407,\n  max_iter=9,\n"
                                           "  multi_class='ovr'\n)\n")
    (ref / "process.py").write_text("LambdaLR(opt, lr_lambda=f, verbose=self.verbose)\n")
    (ref / "main.py").write_text("torch.set_num_threads(12)\n")
    copy = patched_reference(str(ref), 1, str(tmp_path / "work"))
    assert "multi_class" not in open(f"{copy}/classification.py").read()
    assert open(f"{copy}/process.py").read() == "LambdaLR(opt, lr_lambda=f)\n"
    assert open(f"{copy}/main.py").read() == "torch.set_num_threads(1)\n"
    assert "multi_class" in (ref / "classification.py").read_text()
    (ref / "main.py").write_text("torch.set_num_threads(4)\n")
    with pytest.raises(SystemExit, match="expected one match"):
        patched_reference(str(ref), 1, str(tmp_path / "work2"))


def test_end_to_end_is_skipped_without_data(monkeypatch, capsys, tmp_path):
    from benchmarks.end_to_end import end_to_end
    monkeypatch.delenv("TIMEMAE_DATA", raising=False)
    assert end_to_end(str(tmp_path), [8], 1, 1, 1) == []
    assert "skipped" in capsys.readouterr().out


def test_end_to_end_runs_this_project_for_exactly_the_epochs_asked(tstcc_dir, tmp_path):
    """The step budget would raise 1 epoch of this 96-series set to 250; the benchmark turns it off, so this
    project does the reference's work, and it checks args.json for the epochs actually run."""
    import json

    from benchmarks.end_to_end import run_project
    row = run_project(tstcc_dir, 8, 1, 1, str(tmp_path))
    assert row["code"] == "project" and row["select_on"] == "val"
    with open(tmp_path / "project_w8" / "args.json") as f:
        args = json.load(f)
    with open(tmp_path / "project_w8" / "metrics.json") as f:
        metrics = json.load(f)
    assert row["acc"] == metrics["finelast"]["acc"]
    assert row["seconds"] > metrics["seconds"]          # the whole process: the run's own time and the imports
    assert (args["pretrain_epochs"], args["num_epoch_pretrain"], args["min_pretrain_steps"]) == (1, 1, 0)


def test_profile_parts_time_every_module_of_the_step(capsys):
    """--parts: each module's forward is timed by its hooks (a module that never ran would read 0), and the
    modules' times fit inside the forward (the rest is positive: none is timed twice); the command prints them as
    a table."""
    import torch

    from benchmarks import profile_step
    from model import TimeMAE
    args = profile_step.parse(["--shape", "epilepsy", "--batch_size", "8", "--steps", "2", "--warmup", "0"])
    model = TimeMAE(channels=1, seq_len=178, num_classes=2, wave_length=16).train()
    ms = profile_step.part_times(model, torch.randn(8, 178, 1), args, torch.device("cpu"))
    assert list(ms) == [*profile_step.MODULES, "rest of forward and loss", "backward", "AdamW", "momentum update",
                        "step"]
    assert all(ms[m] > 0 for m in profile_step.MODULES)                # hooks that never fired read 0
    assert ms["rest of forward and loss"] > 0                           # modules timed once, not nested twice
    profile_step.main(["--shape", "epilepsy", "--batch_size", "8", "--steps", "1", "--warmup", "0", "--parts"])
    assert "| visible_encoder |" in capsys.readouterr().out


def test_profile_by_shape_counts_each_matmuls_flops(capsys):
    """--by_shape: the matrix products grouped by input shape, with the FLOPs of each call (2 m k n per batch
    entry) over its time: the QKV projection of the visible windows, (B * Sv, d) x (d, 3d), must be among them."""
    from benchmarks import profile_step
    profile_step.main(["--shape", "epilepsy", "--wave_length", "8", "--batch_size", "8", "--steps", "1",
                       "--warmup", "0", "--by_shape", "--top", "100"])
    out = capsys.readouterr().out
    rows = [r.split("|") for r in out.splitlines() if r.startswith("| `aten::")]
    assert rows and any("[80, 64] x [64, 192]" in r[2] for r in rows)   # 8 series x 10 visible windows
    checked = 0
    for r in rows:                 # GFLOP/s = 2 batch m k n FLOPs x calls / self time; printed to 2 decimals of ms
        a, b = (ast.literal_eval(v) for v in r[2].split(" x "))        # (.., m, k), (.., k, n)
        ms, calls, rate = float(r[3]), float(r[4]), float(r[5])
        if ms >= 0.05:
            checked += 1
            assert rate == pytest.approx(2 * math.prod(a) * b[-1] * calls / ms / 1e6, rel=0.006 / ms + 0.006), r
    assert checked > 0
    assert re.search(r"a square \d+ x \d+ matmul \(the step's FLOPs\) runs at \d+ GFLOP/s", out)


def test_profile_callers_name_who_calls_an_operator(capsys):
    """--callers: a linear layer's bias copy shows under addmm, a dropout mask's int16-to-float copy under _to_copy."""
    from benchmarks import profile_step
    profile_step.main(["--shape", "epilepsy", "--wave_length", "8", "--batch_size", "8", "--steps", "2",
                       "--warmup", "1", "--callers", "aten::copy_", "--top", "100"])
    out = capsys.readouterr().out
    rows = [[c.strip() for c in r.split("|")] for r in out.splitlines() if r.startswith("| `aten::")]
    assert rows and all(r[1] == "`aten::copy_`" for r in rows)
    ms = [float(r[4]) for r in rows]
    assert ms == sorted(ms, reverse=True)                                              # costliest first
    assert any(r[3].startswith("aten::addmm") and r[2] == "[80, 192]" for r in rows)       # QKV of 80 visible windows
    assert any(r[3].startswith("aten::_to_copy") for r in rows)                            # dropout's mask


def test_profile_parts_refuse_compile(capsys):
    from benchmarks import profile_step
    with pytest.raises(SystemExit) as exit_info:
        profile_step.parse(["--parts", "--compile"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: --parts times the eager modules by hooks; it does not combine with "
                                       "--compile\n")


def test_compile_ab_times_both_steps(tmp_path, monkeypatch):
    """The interleaved torch.compile comparison (aot_eager: no code generation) writes a row per shape and window,
    with the ratio of both steps' times and the windows that window length implies; one of the two steps is the
    pretraining forward through torch.compile with --backend and --mode, called in every warm-up and timed step."""
    from benchmarks import compile_ab
    compiles, calls, torch_compile = [], [], torch.compile

    def spy(f, **kw):
        compiles.append((f.__name__, kw))
        step = torch_compile(f, **kw)
        return lambda *a, **k: calls.append(1) or step(*a, **k)
    monkeypatch.setattr(torch, "compile", spy)
    out = tmp_path / "ab.csv"
    torch._dynamo.reset()
    try:
        compile_ab.main(["--threads", "1", "--shapes", "epilepsy", "--waves", "8", "--batch_size", "4",
                         "--rounds", "1", "--warmup", "1", "--backend", "aot_eager", "--out", str(out)])
    finally:
        torch._dynamo.reset()
    assert compiles == [("forward_pretrain", {"backend": "aot_eager", "mode": None})]   # the eager step is not
    assert len(calls) == 1 + 2                                      # warm-up 1, then 1 round of 2 timed steps
    row = pd.read_csv(out).iloc[0]
    assert (row["wave"], row["windows"]) == (8, 23)                # 178 steps / window 8, rounded up
    assert (row["backend"], row["mode"]) == ("aot_eager", "default")
    # eager over compiled, so that > 1 reads "compile helps" (three figures of 4 digits each: up to 1.5e-3 apart)
    assert row["speedup"] == pytest.approx(row["eager_ms"] / row["compiled_ms"], rel=2e-3)


def test_softmax_rows_prints_every_kernel_and_the_models_choice(monkeypatch, capsys):
    """Each row prints the five medians measured, in order; the forward-only kernels timed all compute the softmax
    of the scores (B, h, L, L); the model's kernel changes at SHORT_ROWS."""
    from benchmarks import softmax_rows
    measured, median_ms = [], softmax_rows.median_ms

    def spy(fn, *inputs):
        if len(inputs) == 1 or inputs[1].dtype == torch.bool:     # forward only: (scores) or (scores, key mask)
            torch.testing.assert_close(fn(*inputs), inputs[0].softmax(-1))
        measured.append(median_ms(fn, *inputs))
        return measured[-1]
    monkeypatch.setattr(softmax_rows, "median_ms", spy)
    softmax_rows.main(["--batch_size", "2", "--heads", "1", "--lengths", "4,20"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| 4 ") or
            line.startswith("| 20 ")]
    assert [len(r) for r in rows] == [7, 7] and len(measured) == 2 * 5
    assert [r[1:6] for r in rows] == [[f"{v:.3f}" for v in measured[i:i + 5]] for i in (0, 5)]
    assert rows[0][6].startswith("masked") and rows[1][6].startswith("ATen softmax")


def test_gpu_check_runs_every_measurement_in_smoke_mode(tmp_path):
    """benchmarks/gpu_check.sh runs once, on a GPU lent for minutes, so its plumbing is checked here: DEVICE=cpu
    SMOKE=1 takes every measurement in miniature (the six benchmarks, the profile, the four runs of the Epilepsy
    preset on a tiny Epilepsy-shaped set) and the summary holds a line for each and no failure."""
    write_pt_dataset(str(tmp_path / "data" / "Epilepsy"), channels=1, length=178)
    out = tmp_path / "out" / "gpu_check"
    env = dict(subprocess_env(), DEVICE="cpu", SMOKE="1", OUT=str(tmp_path / "out"),
               TIMEMAE_DATA=str(tmp_path / "data"))
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (out / "summary.txt").read_text()
    for name in ("fp32", "amp", "compile", "compile_amp", "cudagraphs", "variable"):
        assert re.search(rf"^{name}: HAR-shaped pretraining epoch of 8823 series [0-9.]+ s", summary, re.M), name
    runs = ("epilepsy1", "epilepsy1--amp", "epilepsy1--compile", "epilepsy1--compile--compile_modereduce-overhead")
    for name in runs:
        assert re.search(rf'^{name}: [0-9.]+ s wall .*"finelast"', summary, re.M), name
    assert "failed measurements: 0" in summary and "FAILED" not in summary
    assert "| `aten::" in (out / "profile_har.md").read_text()
    assert "profile of the HAR step:" in summary and "| `aten::" in summary        # the summary holds it too


def test_variable_lengths_pad_each_series_after_a_third_to_all_of_its_steps(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = throughput.with_lengths(torch.randn(500, 30, 2), True)
    real = (~x.isnan().all(-1)).sum(1)                               # (500,) real steps per series
    assert real.min() >= 10 and set(real.tolist()) >= set(range(11, 31))   # ceil(10 + 20 u), u uniform
    assert torch.equal(x.isnan().any(-1), x.isnan().all(-1))         # padding covers every channel
    assert not (x.isnan()[:, 1:] < x.isnan()[:, :-1]).any()          # and only the end of a series
    assert torch.equal(throughput.with_lengths(x[:, :, :1].nan_to_num(1.0), False), x[:, :, :1].nan_to_num(1.0))
    # --variable_lengths: the training batch (8, 93, 13) and the series encoded (16, 93, 13) are padded
    made, with_lengths = [], throughput.with_lengths
    monkeypatch.setattr(throughput, "with_lengths",
                        lambda x, variable: made.append((tuple(x.shape), variable)) or with_lengths(x, variable))
    out = tmp_path / "bench.csv"
    throughput.main(["--device", "cpu", "--threads", "1", "--shapes", "ad", "--batch_size", "8", "--variable_lengths",
                     "--eval_series", "16", "--reps", "1", "--steps", "1", "--warmup", "0", "--out", str(out)])
    assert made == [((8, 93, 13), True), ((16, 93, 13), True)]
    table = pd.read_csv(out)
    assert table["variable_lengths"].all()
