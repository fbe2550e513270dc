"""The training engine, one method per step of the paper's procedure: pretraining epochs with periodic
linear probes, FineLast (linear probe of the selected checkpoint) and FineAll (fine-tuning).

Model selection (`select_on`): 'val' holds out a stratified share of the labelled training data and selects
the pretraining checkpoint and the fine-tuning step on it; 'test' is the reference code's protocol, which
selects on the test set and so reports an optimistic number. Every result line names the protocol.

Files and resume live beside it (engine/record.py); a non-finite loss stops the run before anything of its
epoch is saved (--skip_nonfinite skips such steps). Under torchrun the same code runs on every rank; see
engine/distributed.py.
"""
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from classification import (accuracy_standard_error, extract_representations, fit_probe, linear_probe, predict,
                            probe_as_head, raw_baselines, refit_probe, scores, select_probe)
from common.errors import TimeMAEError
from dataset import SeriesDataset
from datautils import data_description, stratified_split, stratified_subset
from engine.checkpoint import checkpoint, load_state, read_checkpoint
from engine.distributed import Dist
from engine.record import EPOCH_LOG, RunRecord, epoch_stats, read_epoch_log
from engine.resume import BUDGET, LAST
from engine.runfiles import atomic_save, atomic_write_json
from engine.speed import autocast, compiled, eval_batch_size
from loss import codebook_usage, hits_ndcg, pretrain_loss
from model import TimeMAE
from model.bert import param_groups
from model.config import CODEBOOK_IN_USE, as_flags, config_defaults


def labelled_splits(splits, select_on, val_ratio, label_ratio, seed):
    """Indices into train of the series FineLast and FineAll fit on, and of the selection split.

    The labelled set is a seeded, stratified `label_ratio` share of the training series (all of them at 1).
    With select_on 'val' a stratified `val_ratio` of the labelled set is held out for selection and both
    FineLast and FineAll fit on the rest; with 'test' they fit on the whole labelled set and selection uses the
    test set (None). So at every ratio the two fit on the same series, and `labelled` counts them. (With
    --probe_refit 1 the final FineLast probe then fits again on fit + selection series: `finelast.fitted`.)"""
    labelled = np.arange(len(splits.train_y))
    if label_ratio < 1:
        labelled = stratified_subset(splits.train_y, label_ratio, seed)
    if select_on != "val":
        return labelled, None
    fit, held = stratified_split(splits.train_y[labelled], val_ratio, seed)
    return labelled[fit], labelled[held]


# the budget's flags set so that every set runs exactly the epochs and batches asked for (smoke runs, tests)
NO_STEP_BUDGET = {"min_batches": 1, "min_pretrain_steps": 0, "min_steps": 0}


def training_budget(cfg, n_pretrain, n_fit, world_size=1):
    """Batch sizes and epochs so that a small set still gets enough optimiser steps; sets them on `cfg`
    (pretrain_batch_size, pretrain_epochs, finetune_batch_size, finetune_epochs; the flags stay as given).

    A phase's set is small when it holds fewer than --min_batches full batches of --train_batch_size. Then
    its batch is capped at ceil(n / --min_batches) (a multiple of the processes), so an epoch has at least
    --min_batches steps, and its epochs are raised, when needed, to reach --min_pretrain_steps (pretraining)
    and --min_steps (fine-tuning) optimiser steps. A larger set runs exactly the epochs asked for (a short run
    on it is the user's choice, not a lack of data). Phases with 0 epochs stay off. Returns the plan (main
    writes it into args.json)."""
    def plan(n, epochs, min_steps):
        small = n < cfg.min_batches * cfg.train_batch_size
        batch = math.ceil(n / cfg.min_batches) if small else cfg.train_batch_size
        batch = max(world_size, batch // world_size * world_size)
        if epochs <= 0 or n <= 0:
            return batch, 0
        return batch, (max(epochs, math.ceil(min_steps / math.ceil(n / batch))) if small else epochs)

    cfg.pretrain_batch_size, cfg.pretrain_epochs = plan(n_pretrain, cfg.num_epoch_pretrain, cfg.min_pretrain_steps)
    cfg.finetune_batch_size, cfg.finetune_epochs = plan(n_fit, cfg.num_epoch, cfg.min_steps)
    return {k: getattr(cfg, k) for k in BUDGET}


class Trainer:
    """Runs one experiment into `run_dir`. `cfg` is the parsed command line (an argparse.Namespace); `dist`
    places this process in a torchrun job (None: one process); `state` is the last-state checkpoint of a
    killed run to continue (None: start afresh)."""

    def __init__(self, model, splits, cfg, run_dir, device, log=print, dist=None, state=None):
        self.model, self.cfg, self.device, self.log = model.to(device), cfg, device, log
        self.splits = splits
        self.protocol = cfg.select_on if splits.labelled else "last"   # without labels the last epoch is kept
        self.dist = dist or Dist(device)
        self.record = RunRecord(run_dir, self.dist, state, log, data=data_description(splits))
        self.state = state
        to = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        self.pretrain_set = SeriesDataset(splits.pretrain_x(), device=device)
        self.test_x, self.test_y = to(splits.test_x), splits.test_y  # None: no test split, nothing to report
        if splits.labelled:
            fit, held = labelled_splits(splits, cfg.select_on, cfg.val_ratio, cfg.label_ratio, cfg.seed)
            self.sel_rows = held   # rows of train (None: the selection split is test)
            self.refit = bool(cfg.probe_refit) and held is not None   # never onto test series
            self.fit_x, self.fit_y = to(splits.train_x[fit]), splits.train_y[fit]
            if held is None:
                self.sel_x, self.sel_y = self.test_x, self.test_y
            else:
                self.sel_x, self.sel_y = to(splits.train_x[held]), splits.train_y[held]
        self.eval_batch = eval_batch_size(cfg, device)
        # decided once per run, so no batch is checked for padding (on a GPU the check waits for the device):
        # False, no split holds any; True, variable-length series, every batch gets a padding mask
        parts = [splits.train_x, splits.val_x, splits.unlabelled_x, splits.test_x]
        self.padded = any(a is not None and np.isnan(a).any() for a in parts)
        self.probe_seconds = state.get("probe_seconds", 0.0) if state else 0.0  # in the probes, all sessions
        self.probe_head = None  # with --fineall_head probe: FineLast's probe as (weight, bias) of a linear head
        # FineLast's final probe (with --probe_refit 1 its refit), the same way: the classifier it scores, which
        # FineAll's kept step 0 and the API's FineLast classifier take over rather than fit it again
        self.finelast_head = None
        self.probed = None      # (epoch, fit, selection representations) of this session's latest periodic probe

    def run(self):
        """Pretrain, FineLast, FineAll (the last two with labels only); metrics.json; last.pkl removed once
        nothing is left to resume."""
        metrics = {"dataset": self.splits.name, "seed": self.cfg.seed, "select_on": self.protocol}
        if self.state is None or self.state["phase"] == "pretrain":
            epochs = self.pretrain()
            if not self.splits.labelled:
                return self.finish({**metrics, "labelled": 0, "pretrained_series": len(self.pretrain_set)}, epochs)
            done = {"finelast": self.finelast()}
        else:  # resumed in FineAll: FineLast's result, and the baselines' once last.pkl has them, are kept there
            epochs = self.epoch_log()
            done = {k: self.state[k] for k in ("finelast", "baselines", "baseline_seconds") if k in self.state}
        if "baselines" not in done:
            start = time.perf_counter()
            done.update(baselines=self.baselines(), baseline_seconds=round(time.perf_counter() - start, 1))
        metrics.update(labelled=len(self.fit_y), selection=len(self.sel_y) if self.protocol == "val" else 0, **done)
        if self.cfg.finetune_epochs > 0:
            metrics["fineall"] = self.fineall(done)
        return self.finish(metrics, epochs)

    def finish(self, metrics, epochs):
        """metrics.json: `metrics` with the codebook report of `epochs` (pretrain_log.jsonl's rows) and the time."""
        metrics.update(self.codebook_report(epochs))
        seconds = self.record.elapsed_seconds()
        # the probes to the millisecond: a small set's take less than the 0.05 s that would round to 0.0
        metrics.update(seconds=round(seconds, 1), probe_seconds=round(self.probe_seconds, 3),
                       probe_share=round(self.probe_seconds / seconds, 3))
        if self.dist.is_main:
            atomic_write_json(metrics, self.record.path("metrics.json"))
        self.record.finish()
        return metrics

    def baselines(self):
        """1-NN (Euclidean) and logistic regression on the raw normalised series, fitted on the same series as
        FineLast (the logistic C chosen on the selection split), scored on test."""
        if not self.dist.is_main or self.test_x is None:
            return None
        return raw_baselines(self.fit_x.cpu().numpy(), self.fit_y, self.sel_x.cpu().numpy(), self.sel_y,
                             self.test_x.cpu().numpy(), self.test_y, self.cfg.probe_C, self.cfg.seed, self.refit)

    def epoch_log(self):
        """pretrain_log.jsonl's rows, one per pretraining epoch of every session ([] without the file), read by
        rank 0: once pretraining is over, for the selection line's ties and the codebook report."""
        path = self.record.path(EPOCH_LOG)
        return self.dist.on_main(lambda: read_epoch_log(path) if os.path.isfile(path) else [])

    def codebook_report(self, epochs):
        """Codewords used and perplexity of the last pretraining epoch (`epochs`: pretrain_log.jsonl's rows, none
        after 0 epochs), with a warning when the perplexity is below --ppl_warn (a collapsed codebook leaves MCC a
        trivial task)."""
        if not epochs:
            return {}
        last = epochs[-1]
        low = last["ppl"] < self.cfg.ppl_warn
        if low:
            self.log(f"warning: codebook perplexity {last['ppl']:.2f} ({last['used']} codewords used) after "
                     f"pretraining epoch {last['epoch']} is below --ppl_warn {self.cfg.ppl_warn:g}: the codebook "
                     f"collapsed; {self.collapse_remedy()} (docs/results.md)")
        return {"codebook": {"used": last["used"], "ppl": last["ppl"], "ppl_warn": self.cfg.ppl_warn,
                             "collapsed": low}}

    def collapse_remedy(self):
        """What was measured to help a collapsed codebook (docs/results.md): with the STE the targets drift to the
        codewords already predicted; low-dimensional cosine codes with k-means and reset (the presets' codebook)
        keep it in use, argmax targets made MCC useful, and an EMA codebook keeps argmax targets in use."""
        cfg = self.model.cfg
        if cfg.codebook == "linear" and not cfg.codebook_ema:
            if cfg.tokenizer == "ste":
                return (f"{' '.join(as_flags(CODEBOOK_IN_USE))} (the paper presets') keeps it in use (measured on "
                        "Epilepsy and UWave; on the UCR sets validation preferred this collapsed one, as the UCR "
                        "preset keeps it); --tokenizer argmax makes MCC help")
            return "--codebook_ema 0.99 keeps the codebook in use"
        # the presets' settings left at their defaults (a projection width only for cosine codes)
        defaults = config_defaults()
        missing = {k: v for k, v in CODEBOOK_IN_USE.items() if k != "codebook" and getattr(cfg, k) == defaults[k]
                   and (k != "codebook_dim" or cfg.codebook == "cosine")}
        if missing:
            return f"add {' '.join(as_flags(missing))} to keep more codewords in use"
        return "every remedy measured here is on"

    def bar(self, total, desc, initial=0):
        # None: tqdm draws only on a terminal (a log file gets no carriage-return clutter)
        return tqdm(total=total, initial=initial, desc=desc,
                    disable=True if self.cfg.no_progress or not self.dist.is_main else None,
                    dynamic_ncols=True, leave=False)

    # ------------------------------------------------------------------------------------------ pretraining
    def pretrain(self):
        """Pretrain for pretrain_epochs (--num_epoch_pretrain, see training_budget), probing every probe_every
        epochs (and after the last);
        the checkpoint with the best selection accuracy becomes pretrain_model.pkl. With 0 epochs the
        untrained model is saved and probed (FineZero). Returns pretrain_log.jsonl's rows (epoch_log)."""
        cfg, model, record = self.cfg, self.model, self.record
        model.head.requires_grad_(False)  # fine-tuning only; frozen so DDP sees only parameters pretraining uses
        opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.bert_lr), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                fused=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_steps, gamma=cfg.lr_decay_rate)
        loader = self.dist.loader(self.pretrain_set, cfg.pretrain_batch_size, cfg.seed, cfg.num_workers)
        forward, scaler = compiled(self.dist.wrap(model, "forward_pretrain"), cfg), self._scaler()
        record.reset_best()
        first = record.resume("pretrain", model, opt, sched, loader, "pretrain_model.pkl", cfg.seed)
        if first > 1 and "codebook_ema" in self.state:  # the EMA codebook's statistics (outside the state_dict)
            for name, buffer in model.tokenizer.ema_state().items():
                buffer.copy_(self.state["codebook_ema"][name])
        if first == 1 and cfg.pretrain_epochs > 0 and model.cfg.codebook_init == "kmeans":
            self.init_codebook()
        elif first == 1 and model.cfg.codebook_ema:
            model.tokenizer.restart_ema()
        if first == 1:
            for f in ("pretrain_result.txt", "pretrain_log.jsonl", "linear_result.txt"):
                record.start_log(f)
            if cfg.pretrain_epochs == 0:
                self.probe(0)
                record.write_best("pretrain_model.pkl")
        bar = self.bar(cfg.pretrain_epochs, "pretrain", first - 1)
        # the console's epoch lines: about 20 of them, and every probe's (pretrain_result.txt holds every epoch)
        every = math.ceil(cfg.pretrain_epochs / 20)
        if every > 1 and first == 1:
            self.log(f"pretraining {cfg.pretrain_epochs} epochs: a line every {every} epochs and at each probe "
                     "here; pretrain_result.txt has every epoch")
        for epoch in range(first, cfg.pretrain_epochs + 1):
            self.dist.set_epoch(loader, epoch)
            stats, counts = self.pretrain_epoch(forward, loader, opt, sched, scaler, epoch)
            if model.cfg.codebook_reset:
                stats["reset"] = self.reset_codewords(counts == 0, epoch)
            if (epoch % cfg.probe_every == 0 or epoch == cfg.pretrain_epochs) and \
                    (acc := self.probe(epoch)) is not None:
                stats["probe"] = acc
            record.epoch(epoch, stats)
            record.save_last("pretrain", epoch, model, opt, sched, loader, probe_seconds=self.probe_seconds,
                             codebook_ema=model.tokenizer.ema_state())
            record.write_best("pretrain_model.pkl")
            bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items() if k in ("loss", "ce", "hits", "probe")})
            bar.update()
            if epoch % every == 0 or "probe" in stats or epoch in (1, cfg.pretrain_epochs):
                self.log(f"pretrain epoch {epoch}: " + epoch_stats(stats, " "))
        bar.close()
        how = "the last: no labels" if self.protocol == "last" else f"{self.protocol} acc {record.best[0]:.4f}"
        epochs = self.epoch_log()
        self.log(f"selected pretraining epoch {record.best[1]} ({how}{self.ties(record.best[0], epochs)})")
        return epochs

    def ties(self, best, epochs):
        """', N of M probes scored it, the earliest is kept' when other periodic probes (`epochs`: pretrain_log.jsonl's
        rows, every session of a resumed run; without labels there are none) tied with the kept one: on a small
        selection split many do."""
        probes = [row["probe"] for row in epochs if "probe" in row]
        tied = sum(acc == best for acc in probes)
        return f", {tied} of {len(probes)} probes scored it, the earliest is kept" if tied > 1 else ""

    def pretrain_epoch(self, forward, loader, opt, sched, scaler, epoch):
        """One pass over the pretraining data: alpha * MRR + beta * MCC per batch, the momentum encoder updated
        after every step; the epoch's mean losses, MCC hits/NDCG@10 and codebook usage."""
        model, cfg = self.model.train(), self.cfg
        V = model.cfg.vocab_size
        sums = torch.zeros(6, dtype=torch.float64, device=self.device)  # loss, mse, ce, hits, ndcg, predictions
        counts = torch.zeros(V, dtype=torch.long, device=self.device)
        finite = torch.ones(len(loader), dtype=torch.bool, device=self.device)  # per step, read once per epoch
        start = time.perf_counter()
        for i, (x,) in enumerate(loader):
            with autocast(self.device, cfg):
                out = forward(x, padded=self.padded)
                loss, mrr, mcc = pretrain_loss(out, cfg.alpha, cfg.beta, model.cfg.codebook_usage)
            ok = self._optimise(loss, opt, sched, scaler)
            if cfg.skip_nonfinite:   # under torchrun a step is skipped on every rank when any rank skipped it
                ok = self.dist.all_reduce(ok.int(), "min").bool()   # (DDP averages the gradients): so is all
            finite[i] = ok                                          # that follows it, alike on every rank
            model.update_momentum_encoder(ok if cfg.skip_nonfinite else None)
            target = out["codeword_target"].argmax(-1).flatten()                 # (B*M,)
            real = (torch.ones_like(target, dtype=torch.bool) if out["masked_valid"] is None
                    else out["masked_valid"].flatten())                          # filler slots are not counted
            if model.cfg.codebook_ema:  # the codewords follow the real masked windows targeted at them
                model.tokenizer.ema_update(torch.where(ok, out["z_masked"].flatten(0, 1), 0.0),
                                           out["codeword_target"].detach().flatten(0, 1) * (real & ok)[:, None],
                                           self.dist.all_reduce)
            hits, ndcg = hits_ndcg(out["codeword_scores"].detach().flatten(0, 1), target)
            step = torch.stack([loss.detach(), mrr.detach(), mcc.detach(), (hits * real).sum(), (ndcg * real).sum(),
                                ok * real.sum().double()])
            sums += torch.where(ok, step.double(), 0.0)                          # skipped steps add nothing
            counts.index_add_(0, target, (real & ok).long())  # not bincount: on a GPU it reads back max(target)
        self._check_finite(finite, "pretraining", epoch)
        totals = self.dist.all_reduce(torch.cat([sums, finite.sum(dtype=torch.float64)[None]]))
        self.dist.all_reduce(counts)
        loss, mse, ce, hits, ndcg, preds, steps = totals.tolist()               # the epoch's one sync
        used, ppl = codebook_usage(counts)
        return dict(loss=loss / steps, mse=mse / steps, ce=ce / steps, hits=hits / preds, ndcg=ndcg / preds,
                    used=used, ppl=ppl, sec=time.perf_counter() - start), counts

    # ------------------------------------------------------------------------------------------ codebook
    @torch.no_grad()
    def window_embeddings(self, count, seed):
        """Window-slicer embeddings (N, d) of real windows of up to `count` pretraining series drawn with a
        seeded numpy generator (the same on every rank); for the cosine codebook batch-centred and in the
        codes' space (--codebook_dim), where its codewords live."""
        model, data = self.model, self.pretrain_set.x
        rows = np.random.default_rng(seed).permutation(len(data))[:count]
        x, window_pad = model.window_padding(data[torch.as_tensor(rows, device=data.device)], self.padded)
        z = model.window_slicer(x)                                         # (n, S, d)
        z = z[~window_pad] if window_pad is not None else z.flatten(0, 1)    # (N, d) real windows
        return model.tokenizer.project(z - z.mean(0)) if model.cfg.codebook == "cosine" else z

    def init_codebook(self):
        """--codebook_init kmeans: codewords = k-means centres (sklearn) of the window embeddings of up to 2048
        pretraining series, so every codeword starts as the nearest centre of some windows."""
        from sklearn.cluster import KMeans
        z = self.window_embeddings(2048, self.cfg.seed)
        k = min(self.model.cfg.vocab_size, len(z))
        km = KMeans(n_clusters=k, n_init=1, max_iter=50, random_state=self.cfg.seed).fit(z.double().cpu().numpy())
        centres = torch.as_tensor(km.cluster_centers_, device=z.device)
        self.model.tokenizer.set_codewords(torch.arange(k, device=z.device), centres)
        self.log(f"codebook: {k} codewords initialised by k-means on {len(z)} window embeddings")

    def reset_codewords(self, dead, epoch):
        """--codebook_reset: codewords no masked window was assigned to this epoch restart at random window
        embeddings; returns how many were reset."""
        n = int(dead.sum())
        if n:
            z = self.window_embeddings(max(n, 256), (self.cfg.seed, epoch))
            rng = np.random.default_rng((self.cfg.seed, epoch, 1))
            pick = torch.as_tensor(rng.choice(len(z), n, replace=len(z) < n), device=z.device)
            self.model.tokenizer.set_codewords(dead.nonzero().flatten(), z[pick])
        return n

    def probe(self, epoch):
        """The periodic linear probe (C = 1) on the selection split; its best checkpoint is kept. Without
        labels there is nothing to select on: the latest checkpoint is kept."""
        if self.protocol == "last":
            self.record.offer(self.model, epoch, epoch, epoch=epoch, select_on=self.protocol, args=vars(self.cfg))
            return None
        start = time.perf_counter()
        fit_r, sel_r = self._represent(self.model, self.fit_x), self._represent(self.model, self.sel_x)
        self.probed = (epoch, fit_r, sel_r)
        acc = self._fit_probe(fit_r, self.fit_y, sel_r, self.sel_y)["acc"]
        self.probe_seconds += time.perf_counter() - start
        self.record.line("linear_result.txt", f"epoch{epoch}, acc{acc:.4f}, select_on={self.protocol}")
        self.record.offer(self.model, acc, epoch, epoch=epoch, select_on=self.protocol, args=vars(self.cfg))
        return acc

    # ------------------------------------------------------------------------------------------ evaluation
    def finelast(self):
        """Linear probe of the selected checkpoint with the C chosen on the selection split (probes fitted on
        the fit split, the series FineAll trains on); with --probe_refit 1 the chosen C is then fitted on fit +
        selection series, every labelled training series (the paper's FineLast fits on the labelled training set).
        Reports test."""
        start = time.perf_counter()
        model = TimeMAE.from_config(self.model.config).to(self.device)
        ckpt = self._load(self.record.path("pretrain_model.pkl"), model)
        fit_r, sel_r, test_r = self._finelast_representations(model, ckpt["epoch"])

        def choose():  # rank 0: C chosen on the selection split like every other model choice; one probe fit per C
            C, probe, sel = select_probe(fit_r, self.fit_y, sel_r, self.sel_y, self.cfg.probe_C, seed=self.cfg.seed)
            classes = self.model.cfg.num_classes
            # FineAll's head: the fit split's probe, since FineAll selects its step on the selection split
            head = probe_as_head(probe, classes) if self.cfg.fineall_head == "probe" else None
            if self.refit:
                probe = refit_probe(probe, np.concatenate([fit_r, sel_r]), np.concatenate([self.fit_y, self.sel_y]),
                                    seed=self.cfg.seed)
            res = None if test_r is None else scores(self.test_y, probe.predict(test_r))
            return C, sel, res, (head, probe_as_head(probe, classes))

        C, sel, res, heads = self.dist.broadcast(choose() if self.dist.is_main else None)
        self.probe_head, self.finelast_head = heads
        fitted = len(self.fit_y) + (len(self.sel_y) if self.refit else 0)
        single = self._single_class("FineLast", sel)
        if self.test_x is None:  # no test split: the selected checkpoint and C, no score
            self.probe_seconds += time.perf_counter() - start
            self.record.line("linear_result.txt", f"epoch0, C{C:g}, select_on={self.protocol}, no test split")
            self.log(f"FineLast (checkpoint of epoch {ckpt['epoch']}, C {C:g}): no test split to score")
            return {"epoch": ckpt["epoch"], "C": C, "fitted": fitted, "single_class": single}
        res["single_class"] = single
        self.probe_seconds += time.perf_counter() - start
        self.record.line("linear_result.txt",
                         f"epoch0, acc{res['acc']:.4f}, f1{res['f1']:.4f}, C{C:g}, select_on={self.protocol}")
        self.log(f"FineLast (checkpoint of epoch {ckpt['epoch']}, C {C:g}, fitted on {fitted} series): test acc "
                 f"{res['acc']:.4f}, macro-F1 {res['f1']:.4f}")
        return {**res, "epoch": ckpt["epoch"], "C": C, "fitted": fitted}

    def fineall(self, done):
        """Fine-tune encoder + linear head with Adam; evaluate every eval_per_steps steps on the selection
        split, keep the best state as model.pkl, report its test accuracy and macro-F1. `done` (the FineLast
        result and the raw baselines) goes into last.pkl, so a run resumed here need not compute them again."""
        cfg, record = self.cfg, self.record
        model = TimeMAE.from_config(self.model.config).to(self.device)
        if cfg.load_pretrained_model:
            self._load(record.path("pretrain_model.pkl"), model)
        elif model.cfg.encoder == "bert" and cfg.bert_init == "pretrained":  # no TimeMAE pretraining, BERT's still
            model.visible_encoder.load_pretrained(cfg.bert_path)
        model.head.reset_parameters()  # under torchrun DDP starts every rank from rank 0's draw
        from_probe = self.probe_head is not None and cfg.load_pretrained_model   # set only with --fineall_head probe
        if from_probe:  # linear probing, then fine-tuning: the head starts as FineLast's classifier
            model.set_head(*self.probe_head)
        model.freeze_pretraining_parts()
        opt = torch.optim.Adam(param_groups(model, cfg.lr, cfg.bert_lr), lr=cfg.lr, fused=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_steps, gamma=cfg.lr_decay_rate)
        loader = self.dist.loader(SeriesDataset(self.fit_x, self.fit_y, device=self.device), cfg.finetune_batch_size,
                                  cfg.seed, cfg.num_workers)
        forward, scaler = compiled(self.dist.wrap(model, "forward"), cfg), self._scaler()
        record.reset_best()
        first = record.resume("fineall", model, opt, sched, loader, "model.pkl", cfg.seed)
        if first == 1:
            record.start_log("result.txt")
            if from_probe:  # step 0, FineLast's classifier, is a candidate: fine-tuning must beat it to be kept
                self.fineall_candidate(model, 0, 0)
        bar = self.bar(cfg.finetune_epochs, "fine-tune", first - 1)
        for epoch in range(first, cfg.finetune_epochs + 1):
            self.dist.set_epoch(loader, epoch)
            loss = self.fineall_epoch(model, forward, loader, opt, sched, scaler, epoch)
            record.save_last("fineall", epoch, model, opt, sched, loader, probe_seconds=self.probe_seconds, **done)
            record.write_best("model.pkl")
            bar.set_postfix(loss=f"{loss:.4f}", best=f"{record.best[0]:.3f}")
            bar.update()
        bar.close()
        kept = self._load(record.path("model.pkl"), model)
        single = self._single_class("FineAll", self._scores(model, self.sel_x, self.sel_y))
        if self.refit and record.best[1] == 0:   # step 0 is a candidate only when FineAll starts from the probe
            self._refit_kept_probe(model, kept, done["finelast"]["C"])
        if self.test_x is None:
            record.line("result.txt", f"final, select_on={self.protocol}, best_step{record.best[1]}, no test split")
            return {"step": record.best[1], "single_class": single}
        res = self._scores(model, self.test_x, self.test_y)
        res["single_class"] = single
        record.line("result.txt", f"final, acc{res['acc']:.4f}, f1{res['f1']:.4f}, select_on={self.protocol}, "
                                  f"best_step{record.best[1]}")
        self.log(f"FineAll (step {record.best[1]}): test acc {res['acc']:.4f}, macro-F1 {res['f1']:.4f}")
        return {**res, "step": record.best[1]}

    def _refit_kept_probe(self, model, kept, C):
        """FineAll kept step 0: no fine-tuning step beat linear probing on the selection split, so the classifier
        kept is FineLast's probe, fitted on the fit split so that the selection split could judge it. Its job
        done, the probe is fitted again with its C on every labelled series, as FineLast's is (--probe_refit 1),
        over the unchanged encoder; model.pkl takes that head. That is FineLast's refit probe: this session's
        FineLast already fitted it (finelast_head); a run resumed in FineAll encodes the labelled series again to
        fit it."""
        labels = np.concatenate([self.fit_y, self.sel_y])
        head = self.finelast_head
        if head is None:
            reps = self._represent(model, torch.cat([self.fit_x, self.sel_x]))       # (N_fit + N_sel, d)
            head = self.dist.broadcast(probe_as_head(fit_probe(reps, labels, self.cfg.seed, C), model.cfg.num_classes)
                                       if self.dist.is_main else None)
        model.set_head(*head)
        if self.dist.is_main:
            atomic_save({**kept, **checkpoint(model), "head_fitted": len(labels)}, self.record.path("model.pkl"))
        self.log(f"FineAll kept step 0 (FineLast's probe): its head fitted again on {len(labels)} series")

    def fineall_epoch(self, model, forward, loader, opt, sched, scaler, epoch):
        """One fine-tuning epoch with cross-entropy, evaluated on the selection split every eval_per_steps
        steps (and after the last step); returns the epoch's mean loss."""
        cfg = self.cfg
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        finite = torch.ones(len(loader), dtype=torch.bool, device=self.device)
        step = (epoch - 1) * len(loader)
        for i, (x, y) in enumerate(loader):
            with autocast(self.device, cfg):
                loss = F.cross_entropy(forward(x, padded=self.padded), y)
            finite[i] = ok = self._optimise(loss, opt, sched, scaler)
            loss_sum += torch.where(ok, loss.detach(), 0.0)
            step += 1
            last = epoch == cfg.finetune_epochs and i == len(loader) - 1
            if step % cfg.eval_per_steps == 0 or last:
                self.fineall_candidate(model, epoch, step)
        self._check_finite(finite, "fine-tuning", epoch)
        return loss_sum.item() / len(loader)

    def fineall_candidate(self, model, epoch, step):
        """Score the fine-tuned model on the selection split, log it, and keep it if it is the best so far (by
        more than fineall_margin while the kept model is the probe)."""
        sel = self._scores(model, self.sel_x, self.sel_y)
        self.record.line("result.txt", f"epoch{epoch}, step{step}, {self.protocol}_acc{sel['acc']:.4f}, "
                                       f"{self.protocol}_f1{sel['f1']:.4f}")
        self.record.offer(model, sel["acc"], step, margin=self.fineall_margin(), step=step, epoch=epoch,
                          select_on=self.protocol, args=vars(self.cfg), head="fineall")

    def fineall_margin(self):
        """What a fine-tuning step must beat the kept model by: with --fineall_margin 1se, one standard error
        of the probe's selection accuracy while the probe (step 0) is kept; otherwise nothing. Read from the
        record, so a resumed run applies the same margin."""
        acc, step = self.record.best
        if self.cfg.fineall_margin != "1se" or step != 0 or acc < 0:   # acc < 0: nothing kept yet
            return 0.0
        return accuracy_standard_error(acc, len(self.sel_y))

    def _single_class(self, name, sel):
        """True (and a warning in the log) when the selected classifier predicts one class on the selection
        split: a collapsed classifier, whatever its accuracy."""
        if sel["classes_predicted"] > 1:
            return False
        self.log(f"warning: {name} predicts a single class on the {self.protocol} split "
                 f"(acc {sel['acc']:.4f}): the classifier collapsed")
        return True

    # ------------------------------------------------------------------------------------------ steps
    def _scaler(self):
        """With --skip_nonfinite a GradScaler held at scale 1: it finds NaN/inf gradients on the device and
        the fused optimiser then skips its update there, with no host-device sync per step."""
        return torch.amp.GradScaler(self.device.type, init_scale=1.0) if self.cfg.skip_nonfinite else None

    @staticmethod
    def _optimise(loss, opt, sched, scaler):
        """One optimiser step; returns whether it counts as taken, a flag on the device (no sync): the loss is
        finite and, with a scaler (--skip_nonfinite), so is every gradient (a finite loss can have NaN gradients),
        the scaler skipping the update where one is not."""
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
            ok = torch.isfinite(loss)
        else:
            scaler.scale(loss).backward()
            grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
            # the max norm: NaN or inf exactly where a gradient holds one (a 2-norm can overflow on finite ones)
            ok = torch.isfinite(loss) & torch.isfinite(torch.nn.utils.get_total_norm(grads, float("inf")))
            scaler.step(opt)
            scaler.update(1.0)
        sched.step()
        return ok

    def _check_finite(self, finite, phase, epoch):
        """Stop at a NaN/inf loss, naming its first step; with --skip_nonfinite report the skipped steps.
        The per-step flags stay on the device and are read here, once per epoch: a GPU never waits for the
        host mid-epoch (on a GPU the rest of the epoch still runs, but nothing of it is saved)."""
        flags = self.dist.all_reduce(finite.int(), "min")  # a step is bad when it is bad on any rank
        bad = (flags == 0).nonzero().flatten().tolist()
        if not bad:
            return
        what = "loss or gradients" if self.cfg.skip_nonfinite else "loss"   # the scaler checks both
        where = f"{phase} {what} became non-finite (NaN/inf) at epoch {epoch}, step {bad[0] + 1} of {len(flags)}"
        if self.cfg.skip_nonfinite and len(bad) < len(flags):
            self.log(f"{where}: skipped {len(bad)} of {len(flags)} steps (--skip_nonfinite)")
            return
        if self.cfg.skip_nonfinite:
            raise TimeMAEError(f"{where}; every step of the epoch was non-finite, so skipping cannot help: lower "
                               "--lr or check the data")
        last = self.record.path(LAST)
        kept = (f"{last} keeps the state after the previous epoch"
                if self.dist.on_main(os.path.isfile, last) else "no epoch had finished, nothing was kept")
        raise TimeMAEError(f"{where}; {kept}. Lower --lr or check the data, or pass --skip_nonfinite to skip such "
                           "steps (with --resume to continue from the kept state)")

    # ------------------------------------------------------------------------------------------ ranks
    def _represent(self, model, x):
        """Representations of x gathered from every rank's shard (complete on rank 0)."""
        with autocast(self.device, self.cfg):
            return self.dist.gather_rows(
                lambda rows: extract_representations(model, rows, self.eval_batch, self.padded), x)

    def _fit_probe(self, fit_r, fit_y, eval_r, eval_y, C=1.0):
        """FineLast on representations gathered from every rank's shard; the probe is fitted once, by rank 0."""
        return self.dist.broadcast(linear_probe(fit_r, fit_y, eval_r, eval_y, seed=self.cfg.seed, C=C)
                                   if self.dist.is_main else None)

    def _finelast_representations(self, model, epoch):
        """Representations of the fit, selection and test series of the checkpoint of `epoch`, each split
        encoded once (the selection split is the test set with select_on test). When this session's latest
        periodic probe encoded that checkpoint (the last epoch was the best, as in every run with one probe),
        its fit and selection representations are taken as they are: the checkpoint holds the weights it used."""
        if self.probed is not None and self.probed[0] == epoch:
            _, fit_r, sel_r = self.probed
            if self.sel_rows is None:
                return fit_r, sel_r, sel_r
            return fit_r, sel_r, None if self.test_x is None else self._represent(model, self.test_x)
        test_r = None if self.test_x is None else self._represent(model, self.test_x)
        fit_r = self._represent(model, self.fit_x)
        sel_r = test_r if self.sel_rows is None else self._represent(model, self.sel_x)
        return fit_r, sel_r, test_r

    def _scores(self, model, x, y):
        """Accuracy and macro-F1 of the fine-tuned model, from predictions gathered from every rank's shard."""
        return scores(y, self.predictions(model, x))

    def predictions(self, model, x):
        """The fine-tuned model's class predictions (N,) for x, gathered from every rank's shard."""
        with autocast(self.device, self.cfg):
            return self.dist.gather_rows(lambda rows: predict(model, rows, self.eval_batch, self.padded), x)

    def _load(self, path, model):
        """Load a checkpoint that rank 0 reads and broadcasts (nodes need not share a file system)."""
        ckpt = self.dist.on_main(read_checkpoint, path, model.config)
        load_state(model, ckpt, path)
        return ckpt
