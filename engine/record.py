"""A run folder's bookkeeping beside the Trainer: the reference-format logs plus a machine-readable per-epoch
log (and its reader, which checks each record), the best checkpoint of an epoch (written after last.pkl), and
the last-state checkpoint a killed run resumes from. Only rank 0 writes; every rank keeps the same view of what
is pending.

Order at the end of an epoch: last.pkl (atomically), then the best checkpoint chosen during the epoch, so a
kill at any moment leaves a consistent state for --resume.
"""
import json
import os
import time

from engine.checkpoint import checkpoint, load_state
from engine.distributed import rank_seed, seed_everything
from engine.resume import LAST, log_sizes, rng_state, set_rng_state
from common.errors import TimeMAEError
from engine.runfiles import append_line, atomic_save, atomic_write_text, is_number, read_jsonl

EPOCH_LOG = "pretrain_log.jsonl"  # one JSON object per pretraining epoch
# the numbers every epoch's record holds (RunRecord.epoch), which its readers plot and report
EPOCH_KEYS = ("epoch", "loss", "mse", "ce", "hits", "ndcg", "used", "ppl")


def read_epoch_log(path):
    """The records of a pretraining epoch log, each checked to be an object with the numbers EPOCH_KEYS (and a
    number or null as probe, where a probe ran)."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        if not (isinstance(row, dict) and all(is_number(row.get(k)) for k in EPOCH_KEYS)
                and (row.get("probe") is None or is_number(row["probe"]))):
            raise TimeMAEError(f"cannot read {path}: record {i} is not a pretraining epoch's (an object with the "
                               f"numbers {', '.join(EPOCH_KEYS)}): {json.dumps(row)[:80]}")
    return rows



def epoch_stats(stats, sep, skip=()):
    """`name{sep}value, ...` of an epoch's figures: counts (codewords used, reset) as whole numbers, the rest to 4
    decimals."""
    return ", ".join(f"{k}{sep}{v}" if isinstance(v, int) else f"{k}{sep}{v:.4f}"
                     for k, v in stats.items() if k not in skip)

class RunRecord:
    """`data`: the training data's description (datautils.data_description) that every checkpoint carries, so
    that a checkpoint alone can prepare and encode new series."""

    def __init__(self, run_dir, dist, state=None, log=print, data=None):
        self.run_dir, self.dist, self.state, self.log, self.data = run_dir, dist, state, log, data
        self.pending = None                                   # best checkpoint of this epoch, not yet written
        self.best = (-1.0, 0)                                 # (selection accuracy, epoch or step)
        self.elapsed, self.started = (state["elapsed"] if state else 0.0), time.perf_counter()

    def path(self, name):
        return os.path.join(self.run_dir, name)

    # ------------------------------------------------------------------------------------------ logs
    def start_log(self, name):
        """An empty log `name`, replacing an old one; a failed write is a one-line error, as append_line's."""
        if self.dist.is_main:
            atomic_write_text("", self.path(name))

    def line(self, name, line):
        if self.dist.is_main:
            append_line(self.path(name), line)

    def epoch(self, epoch, stats):
        """One pretraining epoch as the reference code began its line (`pretrain epoch1, loss..., mse..., ce...,
        hits..., ndcg...`, hits a share here, a count there), then the codebook's figures (pretrain_result.txt,
        whose probe accuracy goes to linear_result.txt), and as JSON with everything (pretrain_log.jsonl)."""
        self.line("pretrain_result.txt", f"pretrain epoch{epoch}, " + epoch_stats(stats, "", skip=("probe",)))
        self.line(EPOCH_LOG, json.dumps({"epoch": epoch, **stats}))

    def elapsed_seconds(self):
        """Seconds spent on this run, summed over the sessions of a resumed run."""
        return self.elapsed + time.perf_counter() - self.started

    # ------------------------------------------------------------------------------------------ best checkpoint
    def reset_best(self):
        self.best, self.pending = (-1.0, 0), None

    def offer(self, model, acc, at, margin=0.0, **meta):
        """Keep `model` as the new best when `acc` beats the best so far by more than `margin`; written at the
        end of the epoch."""
        if acc <= self.best[0] + margin:
            return False
        self.best = (acc, at)
        if self.dist.is_main:
            self.pending = checkpoint(model, select_acc=acc, data=self.data, **meta)
        return True

    def write_best(self, name):
        if self.dist.is_main and self.pending is not None:
            atomic_save(self.pending, self.path(name))
        self.pending = None

    # ------------------------------------------------------------------------------------------ last state
    def save_last(self, phase, epoch, model, opt, sched, loader, **extra):
        """The state to resume from, written atomically by rank 0 at the end of every epoch and before the
        best checkpoint of that epoch: a kill between the two finds that checkpoint in last.pkl."""
        self.dist.check_replicas(model)
        rng = self.dist.gather_objects(rng_state(self.dist.device, loader.generator))  # one entry per rank
        if self.dist.is_main:
            atomic_save({"model": model.state_dict(), "config": model.config, "phase": phase, "epoch": epoch,
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "best": self.best,
                         "pending": self.pending, "rng": rng, "logs": log_sizes(self.run_dir),
                         "elapsed": self.elapsed_seconds(), "data": self.data, **extra}, self.path(LAST))

    def resume(self, phase, model, opt, sched, loader, best_name, seed):
        """Restore the last-state checkpoint if it was written in `phase`; return the first epoch to run."""
        s = self.state
        if s is None or s["phase"] != phase:
            return 1
        load_state(model, s, self.path(LAST))
        opt.load_state_dict(s["optimizer"])
        sched.load_state_dict(s["scheduler"])
        self.best, self.pending = tuple(s["best"]), s["pending"]
        self.write_best(best_name)  # a kill right after last.pkl may have lost it
        if len(s["rng"]) == self.dist.world_size:
            set_rng_state(s["rng"][self.dist.rank], self.dist.device, loader.generator)
        else:
            self.log(f"resuming with {self.dist.world_size} processes instead of {len(s['rng'])}: masks, dropout "
                     "and batch order will differ from an uninterrupted run")
            seed_everything(rank_seed(seed, self.dist.rank, s["epoch"]))
            if loader.generator is not None:
                loader.generator.manual_seed(rank_seed(seed, s["epoch"]))
        self.log(f"resuming {phase} after epoch {s['epoch']} from {self.path(LAST)}")
        return s["epoch"] + 1

    def finish(self):
        """The run is complete: nothing is left to resume."""
        if self.dist.is_main and os.path.exists(self.path(LAST)):
            os.remove(self.path(LAST))
