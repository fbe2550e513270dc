"""End-to-end time of "pretrain N epochs + final probe" on real Epilepsy, the whole process as a user runs it
(interpreter start, imports, data loading, pretraining with its periodic probes, the final FineLast probe):
this project's main.py and, given a checkout of the reference code (Mingyue-Cheng/TimeMAE, never part of this
repository), the reference's main.py beside it, alternating, in the same run. benchmarks/throughput.py calls it
(--e2e_epochs, --reference).

The reference code no longer runs on current libraries, so it runs from a temporary copy with these runtime
fixes, and nothing else changed: LogisticRegression(multi_class='ovr') loses the removed `multi_class`,
LambdaLR loses the removed `verbose`, and torch.set_num_threads(12) becomes the benchmark's thread count.
Its Epilepsy run is `--dataset har` (its loader of train/val/test.pt) with the same window length and epochs.
This project's run sets `--min_pretrain_steps 0`, so that its small-set step budget can never change the epochs
(the two codes must do the same work), and args.json is checked for the epochs actually run.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_FIXES = {  # file: [(pattern, replacement)], each pattern must be found once
    "classification.py": [(r",\s*multi_class='ovr'", "")],
    "process.py": [(r",\s*verbose=self\.verbose\)", ")")],
    "main.py": [(r"torch\.set_num_threads\(12\)", "torch.set_num_threads({threads})")],
}


def epilepsy_folder(data_path):
    """--data_path, else $TIMEMAE_DATA/Epilepsy; None when neither holds Epilepsy's train.pt."""
    folder = data_path or (os.path.join(os.environ["TIMEMAE_DATA"], "Epilepsy") if "TIMEMAE_DATA" in os.environ
                           else None)
    return folder if folder and os.path.isfile(os.path.join(folder, "train.pt")) else None


def patched_reference(checkout, threads, into):
    """A copy of the reference checkout in `into` with the runtime fixes applied; returns its folder."""
    copy = os.path.join(into, "reference")
    shutil.copytree(checkout, copy, ignore=shutil.ignore_patterns(".git", "exp", "data"))
    for name, fixes in REFERENCE_FIXES.items():
        path = os.path.join(copy, name)
        with open(path) as f:
            text = f.read()
        for pattern, replacement in fixes:
            text, n = re.subn(pattern, replacement.format(threads=threads), text)
            if n != 1:
                sys.exit(f"error: {path}: expected one match of {pattern!r}, found {n}: is this the reference code?")
        with open(path, "w") as f:
            f.write(text)
    return copy


def timed_process(cmd, cwd, log_path, threads):
    """Wall seconds of a whole process; its output goes to log_path. OMP/MKL threads match --threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if rc != 0:   # the log is in a temporary folder that goes with the exit: its last line goes into the message
        with open(log_path) as f:
            last = next((line.strip() for line in reversed(f.read().splitlines()) if line.strip()), "no output")
        sys.exit(f"error: {' '.join(cmd)} failed (exit {rc}): {last}")
    return seconds


def run_project(folder, wave, epochs, threads, work):
    save = os.path.join(work, f"project_w{wave}")
    cmd = [sys.executable, "main.py", "--dataset", "epilepsy", "--data_path", folder, "--wave_length", str(wave),
           "--num_epoch_pretrain", str(epochs), "--num_epoch", "0", "--min_pretrain_steps", "0",
           "--threads", str(threads), "--device", "cpu", "--no_progress", "--overwrite", "--save_path", save]
    seconds = timed_process(cmd, ROOT, save + ".log", threads)
    with open(os.path.join(save, "args.json")) as f:
        ran = json.load(f)["pretrain_epochs"]
    if ran != epochs:
        sys.exit(f"error: this project pretrained {ran} epochs instead of {epochs}; see {save}.log")
    with open(os.path.join(save, "metrics.json")) as f:
        m = json.load(f)
    return dict(code="project", seconds=seconds, acc=m["finelast"]["acc"], select_on=m["select_on"],
                probe_seconds=m["probe_seconds"], probe_share=m["probe_share"])


def run_reference(copy, folder, wave, epochs, work, threads):
    save = os.path.join(work, f"reference_w{wave}")
    cmd = [sys.executable, "main.py", "--dataset", "har", "--data_path", folder.rstrip("/") + "/", "--device", "cpu",
           "--wave_length", str(wave), "--num_epoch_pretrain", str(epochs), "--num_epoch", "0", "--save_path", save]
    seconds = timed_process(cmd, copy, save + ".log", threads)
    with open(os.path.join(save, "linear_result.txt")) as f:
        last = f.read().strip().splitlines()[-1]                    # 'epoch0, acc0.97, f10.95': the final probe
    return dict(code="reference", seconds=seconds, acc=float(last.split(", ")[1][3:]), select_on="test")


def end_to_end(data_path, waves, epochs, threads, reps, reference=None):
    """Rows of (wave, code, rep, seconds, acc, ...): for each window length and repetition, the reference
    (when given) then this project, so both see the same machine load."""
    folder = epilepsy_folder(data_path)
    if folder is None:
        print("end-to-end: skipped (no Epilepsy data: pass --data_path DIR or set TIMEMAE_DATA)", flush=True)
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="timemae_e2e_") as work:
        copy = patched_reference(reference, threads, work) if reference else None
        for wave in waves:
            for rep in range(reps):
                runs = ([run_reference(copy, folder, wave, epochs, work, threads)] if copy else [])
                runs.append(run_project(folder, wave, epochs, threads, work))
                for r in runs:
                    rows.append(dict(task=f"e2e_{epochs}ep", wave=wave, rep=rep, threads=threads,
                                     load=os.getloadavg()[0], **r))
                    print(f"end-to-end epilepsy wave {wave} rep {rep}: {r['code']} {r['seconds']:.1f} s, final probe "
                          f"acc {r['acc']:.4f} (select_on {r['select_on']}), load {rows[-1]['load']:.2f}", flush=True)
    return rows
