"""The training engine: pretraining with periodic linear probes, FineLast and FineAll.

Model selection (`select_on`): 'val' holds out a stratified share of the labelled training data and selects
the pretraining checkpoint and the fine-tuning step on it; 'test' is the reference code's protocol, which
selects on the test set and so reports an optimistic number. Every result line names the protocol.
"""
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from classification import extract_representations, linear_probe, predict, scores
from dataset import SeriesDataset, make_loader
from datautils import stratified_split
from errors import TimeMAEError
from loss import codebook_usage, hits_ndcg, pretrain_loss
from model import TimeMAE
from utils import append_line, atomic_save, atomic_write_json


def save_checkpoint(path, model, **extra):
    atomic_save({"model": model.state_dict(), "config": model.config, **extra}, path)


def load_checkpoint(path, model):
    """Load a checkpoint into `model`, refusing one built with another architecture."""
    if not os.path.isfile(path):
        raise TimeMAEError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise TimeMAEError(f"cannot read checkpoint {path!r}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise TimeMAEError(f"{path!r} is not a TimeMAE checkpoint (expected a dict with 'model' and 'config')")
    diff = {k: (ckpt["config"].get(k), v) for k, v in model.config.items()
            if ckpt["config"].get(k) != v and k not in ("dropout", "momentum", "mask_ratio", "mask_mode")}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs run {b}" for k, (a, b) in diff.items())
        raise TimeMAEError(f"checkpoint {path!r} was built for another configuration ({shown})")
    model.load_state_dict(ckpt["model"])
    return ckpt


class Trainer:
    """Runs one experiment into `run_dir`. `cfg` is the parsed command line (an argparse.Namespace)."""

    def __init__(self, model, splits, cfg, run_dir, device, log=print):
        self.model, self.cfg, self.run_dir, self.device, self.log = model.to(device), cfg, run_dir, device, log
        self.splits = splits
        self.protocol = cfg.select_on
        to = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        self.pretrain_set = SeriesDataset(splits.pretrain_x(), device=device)
        if self.protocol == "val":
            fit, held = stratified_split(splits.train_y, cfg.val_ratio, cfg.seed)
            self.fit_x, self.fit_y = to(splits.train_x[fit]), splits.train_y[fit]
            self.sel_x, self.sel_y = to(splits.train_x[held]), splits.train_y[held]
        else:
            self.fit_x, self.fit_y = to(splits.train_x), splits.train_y
            self.sel_x, self.sel_y = to(splits.test_x), splits.test_y
        self.train_x, self.train_y = to(splits.train_x), splits.train_y
        self.test_x, self.test_y = to(splits.test_x), splits.test_y
        self.path = lambda name: os.path.join(run_dir, name)  # noqa: E731

    def bar(self, total, desc):
        return tqdm(total=total, desc=desc, disable=self.cfg.no_progress, dynamic_ncols=True, leave=False)

    # ------------------------------------------------------------------------------------------ pretraining
    def pretrain(self):
        """Pretrain for num_epoch_pretrain epochs, probing every probe_every epochs (and after the last);
        the checkpoint with the best selection accuracy becomes pretrain_model.pkl. With 0 epochs the
        untrained model is saved and probed (FineZero)."""
        cfg, model = self.cfg, self.model
        params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_steps, gamma=cfg.lr_decay_rate)
        loader = make_loader(self.pretrain_set, cfg.train_batch_size, shuffle=True, seed=cfg.seed,
                             num_workers=cfg.num_workers)
        for f in ("pretrain_result.txt", "linear_result.txt"):
            open(self.path(f), "w").close()
        self.best = (-1.0, 0)  # (selection accuracy, epoch)
        if cfg.num_epoch_pretrain == 0:
            self._probe_and_keep(0)
        bar = self.bar(cfg.num_epoch_pretrain, "pretrain")
        for epoch in range(1, cfg.num_epoch_pretrain + 1):
            stats = self._pretrain_epoch(loader, opt, sched)
            append_line(self.path("pretrain_result.txt"),
                        f"epoch{epoch}, " + ", ".join(f"{k}{v:.4f}" for k, v in stats.items()))
            if epoch % cfg.probe_every == 0 or epoch == cfg.num_epoch_pretrain:
                stats["probe"] = self._probe_and_keep(epoch)
            bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items() if k in ("loss", "ce", "hits", "probe")})
            bar.update()
            self.log(f"pretrain epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in stats.items()))
        bar.close()
        self.log(f"selected pretraining epoch {self.best[1]} ({self.protocol} acc {self.best[0]:.4f})")
        return self.best

    def _pretrain_epoch(self, loader, opt, sched):
        model, cfg = self.model.train(), self.cfg
        V = model.config["vocab_size"]
        sums = torch.zeros(5, device=self.device)     # loss, mse, ce, hits, ndcg, summed on device
        counts = torch.zeros(V, dtype=torch.long, device=self.device)
        steps = preds = 0
        start = time.perf_counter()
        for (x,) in loader:
            out = model.forward_pretrain(x)
            loss, mrr, mcc = pretrain_loss(out, cfg.alpha, cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            model.update_target_encoder()
            target = out["codeword_target"].argmax(-1).flatten()                 # (B*M,)
            hits, ndcg = hits_ndcg(out["codeword_scores"].detach().flatten(0, 1), target)
            sums += torch.stack([loss.detach(), mrr.detach(), mcc.detach(), hits.sum(), ndcg.sum()])
            counts += torch.bincount(target, minlength=V)
            steps, preds = steps + 1, preds + target.numel()
        loss, mse, ce, hits, ndcg = sums.tolist()      # the epoch's only host-device sync
        if not np.isfinite(loss):
            raise TimeMAEError("pretraining loss became non-finite; lower --lr or check the data")
        used, ppl = codebook_usage(counts)
        return dict(loss=loss / steps, mse=mse / steps, ce=ce / steps, hits=hits / preds, ndcg=ndcg / preds,
                    used=used, ppl=ppl, sec=time.perf_counter() - start)

    def _probe_and_keep(self, epoch):
        bs = self.cfg.test_batch_size
        acc = linear_probe(extract_representations(self.model, self.fit_x, bs), self.fit_y,
                           extract_representations(self.model, self.sel_x, bs), self.sel_y, seed=self.cfg.seed)["acc"]
        append_line(self.path("linear_result.txt"), f"epoch{epoch}, acc{acc:.4f}, select_on={self.protocol}")
        if acc > self.best[0]:
            self.best = (acc, epoch)
            save_checkpoint(self.path("pretrain_model.pkl"), self.model, epoch=epoch, select_acc=acc,
                            select_on=self.protocol, args=vars(self.cfg))
        return acc

    # ------------------------------------------------------------------------------------------ evaluation
    def finelast(self):
        """Linear probe of the selected checkpoint: fit on all labelled training data, report test."""
        model = TimeMAE.from_config(self.model.config).to(self.device)
        ckpt = load_checkpoint(self.path("pretrain_model.pkl"), model)
        bs = self.cfg.test_batch_size
        res = linear_probe(extract_representations(model, self.train_x, bs), self.train_y,
                           extract_representations(model, self.test_x, bs), self.test_y, seed=self.cfg.seed)
        append_line(self.path("linear_result.txt"),
                    f"epoch0, acc{res['acc']:.4f}, f1{res['f1']:.4f}, select_on={self.protocol}")
        self.log(f"FineLast (checkpoint of epoch {ckpt['epoch']}): test acc {res['acc']:.4f}, "
                 f"macro-F1 {res['f1']:.4f}")
        return {**res, "epoch": ckpt["epoch"]}

    def fineall(self):
        """Fine-tune encoder + linear head with Adam; evaluate every eval_per_steps steps on the selection
        split, keep the best state as model.pkl, report its test accuracy and macro-F1."""
        cfg = self.cfg
        model = TimeMAE.from_config(self.model.config).to(self.device)
        if cfg.load_pretrained_model:
            load_checkpoint(self.path("pretrain_model.pkl"), model)
        model.head.reset_parameters()
        params = [p for n, p in model.named_parameters() if not n.startswith("target_encoder.")]
        opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_steps, gamma=cfg.lr_decay_rate)
        loader = make_loader(SeriesDataset(self.fit_x, self.fit_y, device=self.device), cfg.train_batch_size,
                             shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers)
        log_path = self.path("result.txt")
        open(log_path, "w").close()
        best, step = (-1.0, 0), 0
        bar = self.bar(cfg.num_epoch, "fine-tune")
        for epoch in range(1, cfg.num_epoch + 1):
            model.train()
            loss_sum = torch.zeros((), device=self.device)
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach()
                step += 1
                last = epoch == cfg.num_epoch and step % len(loader) == 0
                if step % cfg.eval_per_steps == 0 or last:
                    sel = scores(self.sel_y, predict(model, self.sel_x, cfg.test_batch_size))
                    append_line(log_path, f"epoch{epoch}, step{step}, {self.protocol}_acc{sel['acc']:.4f}, "
                                          f"{self.protocol}_f1{sel['f1']:.4f}")
                    if sel["acc"] > best[0]:
                        best = (sel["acc"], step)
                        save_checkpoint(self.path("model.pkl"), model, step=step, epoch=epoch,
                                        select_acc=sel["acc"], select_on=self.protocol, args=vars(cfg))
            bar.set_postfix(loss=f"{loss_sum.item() / len(loader):.4f}", best=f"{best[0]:.3f}")
            bar.update()
        bar.close()
        load_checkpoint(self.path("model.pkl"), model)
        res = scores(self.test_y, predict(model, self.test_x, cfg.test_batch_size))
        append_line(log_path, f"final, acc{res['acc']:.4f}, f1{res['f1']:.4f}, select_on={self.protocol}, "
                              f"best_step{best[1]}")
        self.log(f"FineAll (step {best[1]}): test acc {res['acc']:.4f}, macro-F1 {res['f1']:.4f}")
        return {**res, "step": best[1]}

    def run(self):
        start = time.perf_counter()
        self.pretrain()
        metrics = {"dataset": self.splits.name, "seed": self.cfg.seed, "select_on": self.protocol,
                   "finelast": self.finelast()}
        if self.cfg.num_epoch > 0:
            metrics["fineall"] = self.fineall()
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        atomic_write_json(metrics, self.path("metrics.json"))
        return metrics
