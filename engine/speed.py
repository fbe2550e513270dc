"""The --compile, --amp and --eval_batch_size switches: how fast a run goes, never what it computes
(--amp excepted: bfloat16 rounds differently)."""
import contextlib

import torch

from common.errors import TimeMAEError

GPU_EVAL_BATCH = 8192  # inference batch on a GPU: a few hundred MB of activations at d_model 64
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def check_compile(cfg):
    """--compile_backend must name a backend torch.compile knows, checked before the run starts (torch would
    first complain at the first compiled step)."""
    if cfg.compile and cfg.compile_backend not in torch.compiler.list_backends(exclude_tags=()):
        raise TimeMAEError(f"--compile_backend {cfg.compile_backend!r} is not a torch.compile backend (one of "
                           f"{', '.join(torch.compiler.list_backends())}, or a debugging one such as aot_eager)")


def compiled(forward, cfg):
    """`forward` through torch.compile when --compile is set (the first steps then take the compile time).
    In the modes that replay CUDA graphs every call marks a new step (torch.compiler.cudagraph_mark_step_begin):
    a step reads its outputs before the next one runs, so the graphs may reuse the last step's memory rather
    than infer where a step begins."""
    if not cfg.compile:
        return forward
    mode = None if cfg.compile_mode == "default" else cfg.compile_mode
    step = torch.compile(forward, backend=cfg.compile_backend, mode=mode)
    if mode not in ("reduce-overhead", "max-autotune"):
        return step

    def new_step(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return step(*args, **kwargs)
    return new_step


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
