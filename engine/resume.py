"""Resumable runs: what the last-state checkpoint (last.pkl) holds beyond the model, and the checks that
make `--resume` continue exactly the run that was killed.

last.pkl is written atomically at the end of every epoch (pretraining and fine-tuning) and removed when the
run finishes. Besides model, optimiser and scheduler it keeps every RNG state (per rank) and the size of each
log, so a resumed run rewinds the logs to that moment and replays the lost epoch with the same draws.
"""
import os
import random
import re

import numpy as np
import torch

from common.errors import TimeMAEError
from datautils import description_changes
from engine.runfiles import RUN_STATE as LAST, clear_half_written, read_json

# the step budget main.py derives from the flags, the data and the number of processes (process.training_budget)
BUDGET = ("pretrain_batch_size", "pretrain_epochs", "finetune_batch_size", "finetune_epochs")
LOGS = ("pretrain_result.txt", "pretrain_log.jsonl", "linear_result.txt", "result.txt")
STATE_KEYS = ("phase", "epoch", "optimizer", "scheduler", "best", "pending", "rng", "logs", "elapsed")


def check_last_state(state, path):
    """Refuse a checkpoint without the training state a resumed run needs (e.g. a best-model file)."""
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise TimeMAEError(f"{path!r} is not a last-state checkpoint (it lacks {', '.join(missing)}); start the "
                           "run afresh with --overwrite")


def check_same_data(saved, data, path):
    """Refuse to resume on other data than the run started with: `saved` is last.pkl's description of its
    training data (datautils.data_description), `data` that of the data loaded now."""
    changed = description_changes(saved, data)
    if changed:
        raise TimeMAEError(f"--resume: the data differs from the one the run in {os.path.dirname(path)!r} started "
                           f"on ({', '.join(changed)} changed); resume on that data or start a new run")


def rng_state(device, generator=None):
    """Every RNG a run draws from: Python, NumPy, torch (CPU and the CUDA device) and the DataLoader's, as
    tensors and plain values (last.pkl loads with weights_only=True, which refuses NumPy arrays)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss], "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state, device, generator=None):
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])


def log_sizes(run_dir):
    """Bytes in each log now: a resumed run cuts the logs back to these sizes."""
    return {name: os.path.getsize(os.path.join(run_dir, name)) for name in LOGS
            if os.path.isfile(os.path.join(run_dir, name))}


def rewind_logs(run_dir, sizes):
    """Drop the lines written after the checkpoint (the epoch being replayed) and logs begun after it. A log
    shorter than the checkpoint recorded (or gone) was changed after it: refused before any log is touched
    (truncating would pad it with zero bytes)."""
    for name in LOGS:
        path = os.path.join(run_dir, name)
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        if size < sizes.get(name, 0):
            raise TimeMAEError(f"--resume: {path} holds {size} bytes but {LAST} recorded {sizes[name]}: the log was "
                               "cut or removed after the checkpoint; restore it, or start afresh with --overwrite")
    for name in LOGS:
        path = os.path.join(run_dir, name)
        if name in sizes and os.path.isfile(path):
            os.truncate(path, sizes[name])
        elif os.path.isfile(path):
            os.remove(path)


def resumes(cfg):
    """Whether this run continues one in cfg.save_path (--resume and a run's args.json there)."""
    return bool(cfg.resume) and os.path.isfile(os.path.join(cfg.save_path, "args.json"))


def resumes_from_state(cfg):
    """Whether this run goes on from the last.pkl of the run it continues (it gets its weights from there)."""
    return resumes(cfg) and os.path.isfile(os.path.join(cfg.save_path, LAST))


def check_resumable(run_dir, cfg, runtime):
    """Refuse to resume a finished run or one started with other flags (args.json), the `runtime` ones aside
    (args.runtime_flags: the data may move, check_same_data compares what it holds); return the path of last.pkl,
    or None when the run was killed before its first epoch ended."""
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        # a run killed after its metrics.json, before it removed last.pkl: finished, so that is left over
        if os.path.isfile(os.path.join(run_dir, LAST)):
            os.remove(os.path.join(run_dir, LAST))
        clear_half_written(run_dir)
        raise TimeMAEError(f"--resume: the run in {run_dir!r} has finished (metrics.json exists); nothing to "
                           "resume")
    try:
        saved = read_json(os.path.join(run_dir, "args.json"))
    except TimeMAEError as e:
        raise TimeMAEError(f"--resume: {e}") from None
    # a run started with --UCR_folder beside another dataset (refused since) resumes without it: it read nothing
    unread = () if saved.get("dataset") == "ucr" else ("UCR_folder",)
    differ = [k for k, v in sorted(vars(cfg).items())
              if k in saved and k not in runtime and k not in unread and saved[k] != v]
    changed = [f"--{k} {saved[k]} -> {getattr(cfg, k)}" for k in differ]
    if differ and set(differ) <= set(BUDGET):   # no flag changed: the number of processes did
        processes = (saved.get("provenance") or {}).get("processes", "as many")
        raise TimeMAEError(f"--resume: the step budget differs from the run's ({', '.join(changed)}): a small set's "
                           f"batch is capped to a multiple of the processes; resume with {processes} process(es), "
                           "as the run had")
    if changed:   # the flags alone: the budget derived from them (finetune_epochs, ...) follows, and is no flag
        flags = [text for k, text in zip(differ, changed) if k not in BUDGET]
        raise TimeMAEError(f"--resume: flags differ from the run's args.json ({', '.join(flags)}); resume "
                           "with the original flags or start a new run")
    last = os.path.join(run_dir, LAST)
    if not os.path.isfile(last) and (os.path.lexists(last) or _had_last_state(run_dir)):
        what = f"{LAST} is not a file" if os.path.lexists(last) else \
            f"its logs show epochs after which {LAST} was written, but it is gone"
        raise TimeMAEError(f"--resume: nothing to continue from in {run_dir!r}: {what}; restore {LAST}, or start "
                           "afresh with --overwrite")
    clear_half_written(run_dir)   # the killed process's
    return last if os.path.isfile(last) else None


def _had_last_state(run_dir):
    """Whether the run's logs show an epoch after which last.pkl was written (each epoch logs its line first,
    then writes last.pkl): a second pretraining epoch logged, fine-tuning begun after pretraining, or a second
    fine-tuning epoch begun (result.txt's lines name their epoch). A run without last.pkl then lost it, and
    starting again in place would replace those logs; one killed in its first epoch starts again."""
    def text(name):
        path = os.path.join(run_dir, name)
        return open(path, errors="replace").read() if os.path.isfile(path) else ""
    pretrained = text("pretrain_log.jsonl").count("\n")
    finetuning = max((int(e) for e in re.findall(r"^epoch(\d+), step", text("result.txt"), re.M)), default=0)
    return pretrained >= 2 or (pretrained >= 1 and finetuning >= 1) or finetuning >= 2
