"""The --compile, --amp and --eval_batch_size switches: how fast a run goes, never what it computes
(--amp excepted: bfloat16 rounds differently)."""
import contextlib

import torch

GPU_EVAL_BATCH = 8192  # inference batch on a GPU: a few hundred MB of activations at d_model 64


def compiled(forward, cfg):
    """`forward` through torch.compile when --compile is set (the first steps then take the compile time)."""
    return torch.compile(forward, backend=cfg.compile_backend) if cfg.compile else forward


def autocast(device, cfg):
    """bfloat16 autocast on `device` when --amp is set; a no-op context otherwise."""
    if not cfg.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def eval_batch_size(cfg, device):
    """--eval_batch_size, or by default --test_batch_size on the CPU and GPU_EVAL_BATCH on a GPU: evaluation
    keeps no activations for a backward pass, so a GPU is best fed a few large batches."""
    if cfg.eval_batch_size:
        return cfg.eval_batch_size
    return max(cfg.test_batch_size, GPU_EVAL_BATCH) if device.type == "cuda" else cfg.test_batch_size
