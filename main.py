"""Entry point: parse flags, load data, build TimeMAE, hand both to the Trainer.

    python main.py --dataset epilepsy --data_path data/Epilepsy --wave_length 8 --vocab_size 192
"""
import os
import sys

import torch

from args import parse_args
from datautils import load_dataset, normalize, resolve_folder
from errors import TimeMAEError
from model import TimeMAE
from process import Trainer
from utils import atomic_write_json, prepare_run_dir, resolve_device, seed_everything


def build_model(cfg, splits):
    return TimeMAE(channels=splits.channels, seq_len=splits.seq_len, num_classes=splits.num_classes,
                   d_model=cfg.d_model, attn_heads=cfg.attn_heads, layers=cfg.layers, reg_layers=cfg.reg_layers,
                   dropout=cfg.dropout, enable_res_parameter=cfg.enable_res_parameter,
                   vocab_size=cfg.vocab_size, wave_length=cfg.wave_length, mask_ratio=cfg.mask_ratio,
                   mask_mode=cfg.mask_mode, tokenizer=cfg.tokenizer, target_noise=cfg.target_noise, tau=cfg.tau,
                   codebook=cfg.codebook, codebook_tau=cfg.codebook_tau,
                   momentum=cfg.momentum)


def check_flags(cfg):
    if not 0 < cfg.val_ratio < 1:
        raise TimeMAEError(f"--val_ratio must lie in (0, 1), got {cfg.val_ratio}")
    for flag in ("train_batch_size", "test_batch_size", "probe_every", "eval_per_steps", "lr_decay_steps",
                 "threads"):
        if getattr(cfg, flag) < 1:
            raise TimeMAEError(f"--{flag} must be at least 1, got {getattr(cfg, flag)}")
    for flag in ("num_epoch_pretrain", "num_epoch"):
        if getattr(cfg, flag) < 0:
            raise TimeMAEError(f"--{flag} must be 0 or more, got {getattr(cfg, flag)}")


def run(cfg, log=print):
    check_flags(cfg)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    cfg.data_path = resolve_folder(cfg.dataset, cfg.data_path, cfg.UCR_folder)
    splits = normalize(load_dataset(cfg.dataset, cfg.data_path, cfg.UCR_folder), cfg.normalize)
    model = build_model(cfg, splits)
    cfg.save_path = cfg.save_path or os.path.join("exp", cfg.dataset, f"seed{cfg.seed}")
    run_dir = prepare_run_dir(cfg.save_path, cfg.overwrite)
    log(f"{cfg.dataset}: train {len(splits.train_x)}, val {0 if splits.val_x is None else len(splits.val_x)}, "
        f"test {len(splits.test_x)}; {splits.channels} channels x {splits.seq_len} steps, "
        f"{splits.num_classes} classes; {model.num_windows} windows, {model.num_masked} masked; "
        f"device {device}; selection on {cfg.select_on}; run folder {run_dir}")
    atomic_write_json({**vars(cfg), "num_windows": model.num_windows, "num_masked": model.num_masked,
                       "num_classes": splits.num_classes, "classes": list(splits.classes)},
                      os.path.join(run_dir, "args.json"))
    return Trainer(model, splits, cfg, run_dir, device, log=log).run()


def main(argv=None):
    cfg = parse_args(argv)
    try:
        metrics = run(cfg)
    except TimeMAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {cfg.save_path}/metrics.json  FineLast acc {metrics['finelast']['acc']:.4f}"
          + (f", FineAll acc {metrics['fineall']['acc']:.4f}" if "fineall" in metrics else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
