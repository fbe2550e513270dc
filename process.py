"""The training engine: pretraining with periodic linear probes, FineLast and FineAll.

Model selection (`select_on`): 'val' holds out a stratified share of the labelled training data and selects
the pretraining checkpoint and the fine-tuning step on it; 'test' is the reference code's protocol, which
selects on the test set and so reports an optimistic number. Every result line names the protocol.

Reliability: at the end of every epoch the whole training state goes to last.pkl (atomically), and only then
the best checkpoint chosen during that epoch, so a kill at any moment leaves a consistent state for --resume.
A non-finite loss stops the run before anything of its epoch is saved (--skip_nonfinite skips such steps).
Under torchrun the same code runs on every rank; see distributed.py.
"""
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from classification import extract_representations, linear_probe, predict, scores, select_probe_C
from dataset import SeriesDataset
from datautils import stratified_split, stratified_subset
from distributed import Dist, rank_seed
from errors import TimeMAEError
from loss import codebook_usage, hits_ndcg, pretrain_loss
from model import TimeMAE
from model.TimeMAE import config_defaults
from model.bert import param_groups
from resume import LAST, log_sizes, rng_state, set_rng_state
from speed import autocast, compiled, eval_batch_size
from utils import append_line, atomic_save, atomic_write_json, seed_everything


def checkpoint(model, **extra):
    """A checkpoint dict holding a copy of the model's state (safe to keep while training goes on)."""
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}, "config": model.config,
            **extra}


def save_checkpoint(path, model, **extra):
    atomic_save(checkpoint(model, **extra), path)


def open_checkpoint(path):
    """The checkpoint dict at `path` ('model' state and 'config'), refusing a file that is none."""
    if not os.path.isfile(path):
        raise TimeMAEError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise TimeMAEError(f"cannot read checkpoint {path!r}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise TimeMAEError(f"{path!r} is not a TimeMAE checkpoint (expected a dict with 'model' and 'config')")
    return ckpt


def read_checkpoint(path, config):
    """The checkpoint dict at `path`, refusing a file that is none or was built for another architecture."""
    ckpt = open_checkpoint(path)
    saved = {**config_defaults(), **ckpt["config"]}
    diff = {k: (saved.get(k), v) for k, v in config.items()
            if saved.get(k) != v and k not in ("dropout", "momentum", "mask_ratio", "mask_mode")}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs run {b}" for k, (a, b) in diff.items())
        raise TimeMAEError(f"checkpoint {path!r} was built for another configuration ({shown})")
    return ckpt


def load_state(model, ckpt, path):
    """Put a checkpoint's weights into `model`; a state that does not fit is a one-line error."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        detail = " ".join(str(e).split())
        raise TimeMAEError(f"checkpoint {path!r} does not fit this model: {detail[:300]}") from None


def load_checkpoint(path, model):
    """Load a checkpoint into `model`, refusing one built with another architecture."""
    ckpt = read_checkpoint(path, model.config)
    load_state(model, ckpt, path)
    return ckpt


class Trainer:
    """Runs one experiment into `run_dir`. `cfg` is the parsed command line (an argparse.Namespace); `dist`
    places this process in a torchrun job (None: one process); `state` is the last-state checkpoint of a
    killed run to continue (None: start afresh)."""

    def __init__(self, model, splits, cfg, run_dir, device, log=print, dist=None, state=None):
        self.model, self.cfg, self.run_dir, self.device, self.log = model.to(device), cfg, run_dir, device, log
        self.splits = splits
        self.protocol = cfg.select_on
        self.dist = dist or Dist(device)
        self.state, self.pending = state, None      # pending: best checkpoint of this epoch, not yet written
        self.elapsed, self.started = (state["elapsed"] if state else 0.0), time.perf_counter()
        to = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        self.pretrain_set = SeriesDataset(splits.pretrain_x(), device=device)
        if self.protocol == "val":
            fit, held = stratified_split(splits.train_y, cfg.val_ratio, cfg.seed)
            self.fit_x, self.fit_y = to(splits.train_x[fit]), splits.train_y[fit]
            self.sel_x, self.sel_y = to(splits.train_x[held]), splits.train_y[held]
        else:
            fit = np.arange(len(splits.train_y))
            self.fit_x, self.fit_y = to(splits.train_x), splits.train_y
            self.sel_x, self.sel_y = to(splits.test_x), splits.test_y
        self.train_x, self.train_y = to(splits.train_x), splits.train_y
        if cfg.label_ratio < 1:  # the probe and fine-tuning fit on a fraction of the labels left after selection's
            fit = fit[stratified_subset(splits.train_y[fit], cfg.label_ratio, cfg.seed)]
            self.fit_x, self.fit_y = self.train_x, self.train_y = to(splits.train_x[fit]), splits.train_y[fit]
        self.test_x, self.test_y = to(splits.test_x), splits.test_y
        self.path = lambda name: os.path.join(run_dir, name)  # noqa: E731
        self.eval_batch = eval_batch_size(cfg, device)

    def bar(self, total, desc, initial=0):
        return tqdm(total=total, initial=initial, desc=desc, disable=self.cfg.no_progress or not self.dist.is_main,
                    dynamic_ncols=True, leave=False)

    # ------------------------------------------------------------------------------------------ pretraining
    def pretrain(self):
        """Pretrain for num_epoch_pretrain epochs, probing every probe_every epochs (and after the last);
        the checkpoint with the best selection accuracy becomes pretrain_model.pkl. With 0 epochs the
        untrained model is saved and probed (FineZero)."""
        cfg, model = self.cfg, self.model
        model.head.requires_grad_(False)  # fine-tuning only; frozen so DDP sees only parameters pretraining uses
        opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.bert_lr), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                fused=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_steps, gamma=cfg.lr_decay_rate)
        loader = self.dist.loader(self.pretrain_set, cfg.train_batch_size, cfg.seed, cfg.num_workers)
        forward, scaler = compiled(self.dist.wrap(model, "forward_pretrain"), cfg), self._scaler()
        self.best = (-1.0, 0)  # (selection accuracy, epoch)
        first = self._resume("pretrain", model, opt, sched, loader, "pretrain_model.pkl")
        if first == 1:
            for f in ("pretrain_result.txt", "linear_result.txt"):
                self._start_log(f)
            if cfg.num_epoch_pretrain == 0:
                self._probe_and_keep(0)
                self._write_best("pretrain_model.pkl")
        bar = self.bar(cfg.num_epoch_pretrain, "pretrain", first - 1)
        for epoch in range(first, cfg.num_epoch_pretrain + 1):
            self.dist.set_epoch(loader, epoch)
            stats = self._pretrain_epoch(forward, loader, opt, sched, scaler, epoch)
            self._log_line("pretrain_result.txt",
                           f"epoch{epoch}, " + ", ".join(f"{k}{v:.4f}" for k, v in stats.items()))
            if epoch % cfg.probe_every == 0 or epoch == cfg.num_epoch_pretrain:
                stats["probe"] = self._probe_and_keep(epoch)
            self._save_last("pretrain", epoch, model, opt, sched, loader)
            self._write_best("pretrain_model.pkl")
            bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items() if k in ("loss", "ce", "hits", "probe")})
            bar.update()
            self.log(f"pretrain epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in stats.items()))
        bar.close()
        self.log(f"selected pretraining epoch {self.best[1]} ({self.protocol} acc {self.best[0]:.4f})")
        return self.best

    def _pretrain_epoch(self, forward, loader, opt, sched, scaler, epoch):
        model, cfg = self.model.train(), self.cfg
        V = model.config["vocab_size"]
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)  # loss, mse, ce, hits, ndcg, predictions
        counts = torch.zeros(V, dtype=torch.long, device=self.device)
        finite = torch.ones(len(loader), dtype=torch.bool, device=self.device)  # per step, read once per epoch
        start = time.perf_counter()
        for i, (x,) in enumerate(loader):
            with autocast(self.device, cfg):
                out = forward(x)
                loss, mrr, mcc = pretrain_loss(out, cfg.alpha, cfg.beta)
            self._optimise(loss, opt, sched, scaler)
            model.update_target_encoder()
            finite[i] = ok = torch.isfinite(loss)
            target = out["codeword_target"].argmax(-1).flatten()                 # (B*M,)
            hits, ndcg = hits_ndcg(out["codeword_scores"].detach().flatten(0, 1), target)
            step = torch.stack([loss.detach(), mrr.detach(), mcc.detach(), hits.sum(), ndcg.sum(),
                                ok * float(target.numel())])
            sums += torch.where(ok, step.double(), 0.0)                          # skipped steps add nothing
            counts += torch.bincount(target, minlength=V) * ok
        self._check_finite(finite, "pretraining", epoch)
        totals = self.dist.all_reduce(torch.cat([sums, finite.sum(dtype=torch.float64)[None]]))
        self.dist.all_reduce(counts)
        loss, mse, ce, hits, ndcg, preds, steps = totals.tolist()               # the epoch's one sync
        used, ppl = codebook_usage(counts)
        return dict(loss=loss / steps, mse=mse / steps, ce=ce / steps, hits=hits / preds, ndcg=ndcg / preds,
                    used=used, ppl=ppl, sec=time.perf_counter() - start)

    def _probe_and_keep(self, epoch):
        acc = self._probe(self.model, self.fit_x, self.fit_y, self.sel_x, self.sel_y)["acc"]
        self._log_line("linear_result.txt", f"epoch{epoch}, acc{acc:.4f}, select_on={self.protocol}")
        if acc > self.best[0]:
            self.best = (acc, epoch)
            self._keep(self.model, epoch=epoch, select_acc=acc)
        return acc

    # ------------------------------------------------------------------------------------------ evaluation
    def finelast(self):
        """Linear probe of the selected checkpoint: fit on all labelled training data, report test."""
        model = TimeMAE.from_config(self.model.config).to(self.device)
        ckpt = self._load(self.path("pretrain_model.pkl"), model)
        C = self._probe_C(model)
        res = self._probe(model, self.train_x, self.train_y, self.test_x, self.test_y, C)
        self._log_line("linear_result.txt",
                       f"epoch0, acc{res['acc']:.4f}, f1{res['f1']:.4f}, C{C:g}, select_on={self.protocol}")
        self.log(f"FineLast (checkpoint of epoch {ckpt['epoch']}, C {C:g}): test acc {res['acc']:.4f}, "
                 f"macro-F1 {res['f1']:.4f}")
        return {**res, "epoch": ckpt["epoch"], "C": C}

    def fineall(self, finelast):
        """Fine-tune encoder + linear head with Adam; evaluate every eval_per_steps steps on the selection
        split, keep the best state as model.pkl, report its test accuracy and macro-F1. `finelast` (the
        FineLast result) goes into last.pkl, so a run resumed here need not probe again."""
        cfg = self.cfg
        model = TimeMAE.from_config(self.model.config).to(self.device)
        if cfg.load_pretrained_model:
            self._load(self.path("pretrain_model.pkl"), model)
        model.head.reset_parameters()  # under torchrun DDP starts every rank from rank 0's draw
        for part in (model.decoupled_encoder, model.tokenizer, model.target_encoder, model.mask_token):
            part.requires_grad_(False)  # pretraining-only parts, frozen so DDP sees only parameters in use
        opt = torch.optim.Adam(param_groups(model, cfg.lr, cfg.bert_lr), lr=cfg.lr, fused=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_steps, gamma=cfg.lr_decay_rate)
        loader = self.dist.loader(SeriesDataset(self.fit_x, self.fit_y, device=self.device), cfg.train_batch_size,
                                  cfg.seed, cfg.num_workers)
        forward, scaler = compiled(self.dist.wrap(model, "forward"), cfg), self._scaler()
        self.best = (-1.0, 0)  # (selection accuracy, step)
        first = self._resume("fineall", model, opt, sched, loader, "model.pkl")
        if first == 1:
            self._start_log("result.txt")
        step = (first - 1) * len(loader)
        bar = self.bar(cfg.num_epoch, "fine-tune", first - 1)
        for epoch in range(first, cfg.num_epoch + 1):
            self.dist.set_epoch(loader, epoch)
            model.train()
            loss_sum = torch.zeros((), device=self.device)
            finite = torch.ones(len(loader), dtype=torch.bool, device=self.device)
            for i, (x, y) in enumerate(loader):
                with autocast(self.device, cfg):
                    loss = F.cross_entropy(forward(x), y)
                self._optimise(loss, opt, sched, scaler)
                finite[i] = ok = torch.isfinite(loss)
                loss_sum += torch.where(ok, loss.detach(), 0.0)
                step += 1
                last = epoch == cfg.num_epoch and step % len(loader) == 0
                if step % cfg.eval_per_steps == 0 or last:
                    sel = self._scores(model, self.sel_x, self.sel_y)
                    self._log_line("result.txt", f"epoch{epoch}, step{step}, {self.protocol}_acc{sel['acc']:.4f}, "
                                                 f"{self.protocol}_f1{sel['f1']:.4f}")
                    if sel["acc"] > self.best[0]:
                        self.best = (sel["acc"], step)
                        self._keep(model, step=step, epoch=epoch, select_acc=sel["acc"])
            self._check_finite(finite, "fine-tuning", epoch)
            self._save_last("fineall", epoch, model, opt, sched, loader, finelast=finelast)
            self._write_best("model.pkl")
            bar.set_postfix(loss=f"{loss_sum.item() / len(loader):.4f}", best=f"{self.best[0]:.3f}")
            bar.update()
        bar.close()
        self._load(self.path("model.pkl"), model)
        res = self._scores(model, self.test_x, self.test_y)
        self._log_line("result.txt", f"final, acc{res['acc']:.4f}, f1{res['f1']:.4f}, select_on={self.protocol}, "
                                     f"best_step{self.best[1]}")
        self.log(f"FineAll (step {self.best[1]}): test acc {res['acc']:.4f}, macro-F1 {res['f1']:.4f}")
        return {**res, "step": self.best[1]}

    def run(self):
        if self.state is None or self.state["phase"] == "pretrain":
            self.pretrain()
            finelast = self.finelast()
        else:
            finelast = self.state["finelast"]
        metrics = {"dataset": self.splits.name, "seed": self.cfg.seed, "select_on": self.protocol,
                   "labelled": len(self.train_y), "finelast": finelast}
        if self.cfg.num_epoch > 0:
            metrics["fineall"] = self.fineall(finelast)
        metrics["seconds"] = round(self._elapsed(), 1)
        if self.dist.is_main:
            atomic_write_json(metrics, self.path("metrics.json"))
            if os.path.exists(self.path(LAST)):  # the run is complete: nothing is left to resume
                os.remove(self.path(LAST))
        return metrics

    # ------------------------------------------------------------------------------------------ steps
    def _scaler(self):
        """With --skip_nonfinite a GradScaler held at scale 1: it finds NaN/inf gradients on the device and
        the fused optimiser then skips its update there, with no host-device sync per step."""
        return torch.amp.GradScaler(self.device.type, init_scale=1.0) if self.cfg.skip_nonfinite else None

    @staticmethod
    def _optimise(loss, opt, sched, scaler):
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update(1.0)
        sched.step()

    def _check_finite(self, finite, phase, epoch):
        """Stop at a NaN/inf loss, naming its first step; with --skip_nonfinite report the skipped steps.
        The per-step flags stay on the device and are read here, once per epoch: a GPU never waits for the
        host mid-epoch (on a GPU the rest of the epoch still runs, but nothing of it is saved)."""
        flags = self.dist.all_reduce(finite.int(), "min")  # a step is bad when it is bad on any rank
        bad = (flags == 0).nonzero().flatten().tolist()
        if not bad:
            return
        where = f"{phase} loss became non-finite (NaN/inf) at epoch {epoch}, step {bad[0] + 1} of {len(flags)}"
        if self.cfg.skip_nonfinite and len(bad) < len(flags):
            self.log(f"{where}: skipped {len(bad)} of {len(flags)} steps (--skip_nonfinite)")
            return
        if self.cfg.skip_nonfinite:
            raise TimeMAEError(f"{where}; every step of the epoch was non-finite, so skipping cannot help: lower "
                               "--lr or check the data")
        kept = (f"{self.path(LAST)} keeps the state after the previous epoch"
                if self.dist.on_main(os.path.isfile, self.path(LAST)) else "no epoch had finished, nothing was kept")
        raise TimeMAEError(f"{where}; {kept}. Lower --lr or check the data, or pass --skip_nonfinite to skip such "
                           "steps (with --resume to continue from the kept state)")

    # ------------------------------------------------------------------------------------------ ranks
    def _represent(self, model, x):
        """Representations of x gathered from every rank's shard (complete on rank 0)."""
        with autocast(self.device, self.cfg):
            return self.dist.gather_rows(lambda rows: extract_representations(model, rows, self.eval_batch), x)

    def _probe(self, model, fit_x, fit_y, eval_x, eval_y, C=1.0):
        """FineLast on representations gathered from every rank's shard; the probe is fitted once, by rank 0."""
        fit_r, eval_r = self._represent(model, fit_x), self._represent(model, eval_x)
        return self.dist.broadcast(linear_probe(fit_r, fit_y, eval_r, eval_y, seed=self.cfg.seed, C=C)
                                   if self.dist.is_main else None)

    def _probe_C(self, model):
        """The probe's C from --probe_C, chosen on the selection split like every other model choice."""
        grid = self.cfg.probe_C
        if len(grid) == 1:
            return grid[0]
        fit_r, sel_r = self._represent(model, self.fit_x), self._represent(model, self.sel_x)
        return self.dist.broadcast(select_probe_C(fit_r, self.fit_y, sel_r, self.sel_y, grid, seed=self.cfg.seed)
                                   if self.dist.is_main else None)

    def _scores(self, model, x, y):
        """Accuracy and macro-F1 of the fine-tuned model, from predictions gathered from every rank's shard."""
        with autocast(self.device, self.cfg):
            return scores(y, self.dist.gather_rows(lambda rows: predict(model, rows, self.eval_batch), x))

    def _load(self, path, model):
        """Load a checkpoint that rank 0 reads and broadcasts (nodes need not share a file system)."""
        ckpt = self.dist.on_main(read_checkpoint, path, model.config)
        load_state(model, ckpt, path)
        return ckpt

    # ------------------------------------------------------------------------------------------ files
    def _log_line(self, name, line):
        if self.dist.is_main:
            append_line(self.path(name), line)

    def _start_log(self, name):
        if self.dist.is_main:
            open(self.path(name), "w").close()

    def _keep(self, model, **meta):
        """Remember a new best checkpoint; it is written at the end of the epoch, after last.pkl."""
        if self.dist.is_main:
            self.pending = checkpoint(model, select_on=self.protocol, args=vars(self.cfg), **meta)

    def _write_best(self, name):
        if self.dist.is_main and self.pending is not None:
            atomic_save(self.pending, self.path(name))
        self.pending = None

    def _elapsed(self):
        """Seconds spent on this run, summed over the sessions of a resumed run."""
        return self.elapsed + time.perf_counter() - self.started

    def _save_last(self, phase, epoch, model, opt, sched, loader, **extra):
        """The state to resume from, written atomically by rank 0 at the end of every epoch and before the
        best checkpoint of that epoch: a kill between the two finds that checkpoint in last.pkl."""
        self.dist.check_replicas(model)
        rng = self.dist.gather_objects(rng_state(self.device, loader.generator))  # one entry per rank
        if self.dist.is_main:
            atomic_save({"model": model.state_dict(), "config": model.config, "phase": phase, "epoch": epoch,
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "best": self.best,
                         "pending": self.pending, "rng": rng, "logs": log_sizes(self.run_dir),
                         "elapsed": self._elapsed(), **extra}, self.path(LAST))

    def _resume(self, phase, model, opt, sched, loader, best_name):
        """Restore the last-state checkpoint if it was written in `phase`; return the first epoch to run."""
        s = self.state
        if s is None or s["phase"] != phase:
            return 1
        load_state(model, s, self.path(LAST))
        opt.load_state_dict(s["optimizer"])
        sched.load_state_dict(s["scheduler"])
        self.best, self.pending = tuple(s["best"]), s["pending"]
        self._write_best(best_name)  # a kill right after last.pkl may have lost it
        if len(s["rng"]) == self.dist.world_size:
            set_rng_state(s["rng"][self.dist.rank], self.device, loader.generator)
        else:
            self.log(f"resuming with {self.dist.world_size} processes instead of {len(s['rng'])}: masks, dropout "
                     "and batch order will differ from an uninterrupted run")
            seed_everything(rank_seed(self.cfg.seed, self.dist.rank, s["epoch"]))
            if loader.generator is not None:
                loader.generator.manual_seed(rank_seed(self.cfg.seed, s["epoch"]))
        self.log(f"resuming {phase} after epoch {s['epoch']} from {self.path(LAST)}")
        return s["epoch"] + 1
