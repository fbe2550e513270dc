"""Where a pretraining step's time goes: torch.profiler over the step that benchmarks/throughput.py times
(forward, loss, AdamW, momentum update, codeword statistics), at a dataset's shape, on synthetic data. Prints the
operators with the most self time (CPU, and CUDA when profiling a GPU) as a markdown table.

    python benchmarks/profile_step.py --shape har --wave_length 8 --threads 1
    python benchmarks/profile_step.py --shape epilepsy --wave_length 8 --threads 1 --top 15
    python benchmarks/profile_step.py --shape epilepsy --wave_length 8 --threads 2 --parts   # ms per part
    python benchmarks/profile_step.py --shape epilepsy --wave_length 8 --by_shape          # GFLOP/s per matmul
    python benchmarks/profile_step.py --shape epilepsy --wave_length 8 --callers aten::copy_ aten::mul  # who calls them

--parts times the step's parts instead, without the profiler's overhead: the forward of each module of the paper
(window slicer, visible encoder, decoupled encoder, momentum encoder, tokenizer; forward hooks), the rest of the
forward pass and the loss (masking, gathers, targets), the backward pass, AdamW and the momentum update.
"""
import argparse
import collections
import math
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from args import positive_int  # noqa: E402
from benchmarks.throughput import SHAPES, pretrain_flops, pretrain_optimizer, pretrain_setup, sync, timed  # noqa: E402
from common.cli import ArgumentParser  # noqa: E402
from common.errors import TimeMAEError  # noqa: E402
from engine.distributed import resolve_device  # noqa: E402
from engine.speed import COMPILE_MODES, autocast  # noqa: E402
from loss import pretrain_loss  # noqa: E402
from model import TimeMAE  # noqa: E402


def parse(argv=None):
    p = ArgumentParser(prog="python benchmarks/profile_step.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shape", default="har", choices=sorted(SHAPES))
    p.add_argument("--wave_length", type=int, default=0, help="0: run.sh's preset for the shape")
    p.add_argument("--batch_size", type=positive_int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--steps", type=positive_int, default=10, help="profiled steps, after --warmup untimed ones")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=positive_int, default=12, help="operators listed")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    p.add_argument("--compile_backend", default="inductor")
    p.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode; reduce-overhead: CUDA graphs on a GPU")
    p.add_argument("--parts", action="store_true", help="median ms per step of each part, not the operator table")
    p.add_argument("--by_shape", action="store_true",
                   help="the matrix products (mm, addmm, bmm, baddbmm) by input shape, with the GFLOP/s each reached")
    p.add_argument("--callers", nargs="+", metavar="OP",
                   help="these operators' self time (e.g. aten::copy_ aten::mul) by first input's shape and caller")
    args = p.parse_args(argv)
    try:
        args.device = resolve_device(args.device)
    except TimeMAEError as e:
        p.refuse(str(e))
    if args.parts and args.compile:
        p.refuse("--parts times the eager modules by hooks; it does not combine with --compile")
    return args


MODULES = ["window_slicer", "visible_encoder", "decoupled_encoder", "momentum_encoder", "tokenizer"]


def part_times(model, x, args, device):
    """Median ms per step of each part of a pretraining step (forward by module, the rest of the forward and the
    loss, backward, AdamW, momentum update), as a dict in the step's order. The codeword statistics that
    throughput.py's step also computes are left out."""
    opt = pretrain_optimizer(model)
    started, spent = {}, {}

    def clock():
        sync(device)
        return time.perf_counter()

    def timed_module(name):  # forward hooks: a module's calls in one step add up (the tokenizer runs twice)
        def pre(*_):
            started[name] = clock()

        def post(*_):
            spent[name] = spent.get(name, 0.0) + clock() - started[name]
        module = getattr(model, name)
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    for name in MODULES:
        timed_module(name)
    rows = []
    for i in range(args.warmup + args.steps):
        spent.clear()
        t0 = clock()
        with autocast(device, args):
            loss, _, _ = pretrain_loss(model.forward_pretrain(x, padded=False), 5.0, 1.0)
        t1 = clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = clock()
        opt.step()
        t3 = clock()
        model.update_momentum_encoder()
        t4 = clock()
        modules = {name: spent.get(name, 0.0) for name in MODULES}
        rows.append({**modules, "rest of forward and loss": t1 - t0 - sum(modules.values()), "backward": t2 - t1,
                     "AdamW": t3 - t2, "momentum update": t4 - t3, "step": t4 - t0})
    return {k: 1e3 * statistics.median(r[k] for r in rows[args.warmup:]) for k in rows[0]}


def self_time_table(events, key, steps, top):
    """Markdown rows of the `top` operators by self time (`key`: 'self_cpu_time_total' or the CUDA one),
    per step, with their share of the profiled self time and their calls per step."""
    events = [e for e in events if getattr(e, key) > 0]
    total = sum(getattr(e, key) for e in events)
    rows = ["| operator | self ms / step | share | calls / step |", "|---|---|---|---|"]
    for e in sorted(events, key=lambda e: -getattr(e, key))[:top]:
        t = getattr(e, key)
        rows.append(f"| `{e.key}` | {t / 1e3 / steps:.2f} | {t / total:.1%} | {e.count / steps:g} |")
    return "\n".join(rows), total / 1e3 / steps


MATMULS = {"aten::mm": (0, 1), "aten::addmm": (1, 2), "aten::bmm": (0, 1), "aten::baddbmm": (1, 2)}


def matmul_table(events, steps, top):
    """Markdown rows of the `top` matrix products by self time, one per operator and input shapes (events grouped
    by input shape), with the GFLOP/s each call reached: 2 * batch * m * k * n FLOPs per call."""
    rows = ["| operator | shapes | self ms / step | calls / step | GFLOP/s |", "|---|---|---|---|---|"]
    events = sorted((e for e in events if e.key in MATMULS and e.self_cpu_time_total > 0),
                    key=lambda e: -e.self_cpu_time_total)
    for e in events[:top]:
        a, b = (e.input_shapes[i] for i in MATMULS[e.key])
        flops = 2 * math.prod(a) * b[-1]                                   # (.., m, k) @ (.., k, n)
        rate = flops * e.count / (e.self_cpu_time_total * 1e-6) / 1e9
        rows.append(f"| `{e.key}` | {a} x {b} | {e.self_cpu_time_total / 1e3 / steps:.2f} | {e.count / steps:g} "
                    f"| {rate:.3g} |")  # 3 figures: a preempted tiny product reads 0.2, not 0
    return "\n".join(rows)


def callers_table(events, ops, steps, top):
    """Markdown rows of the `top` groups of the operators `ops` by self time, one per operator, shape of its first
    input and the two operators that called it (nearest first; autograd's backward nodes name the forward op),
    which tells, say, the bias copy inside a linear layer's `addmm` from the copy of a dropout mask."""
    groups = collections.defaultdict(lambda: [0, 0.0])                  # key -> [calls, self us]
    for e in events:
        if e.name in ops:
            parents, p = [], e.cpu_parent
            while p is not None and len(parents) < 2:
                parents.append(p.name)
                p = p.cpu_parent
            key = (e.name, str(e.input_shapes[0]) if e.input_shapes else "", " < ".join(parents) or "(top level)")
            groups[key][0] += 1
            groups[key][1] += e.self_cpu_time_total
    rows = ["| operator | first input | called by | self ms / step | calls / step |", "|---|---|---|---|---|"]
    for (name, shape, caller), (calls, us) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:top]:
        rows.append(f"| `{name}` | {shape} | {caller} | {us / 1e3 / steps:.2f} | {calls / steps:g} |")
    return "\n".join(rows)


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    channels, length, classes, preset_wave = SHAPES[args.shape]
    wave = args.wave_length or preset_wave
    torch.manual_seed(0)
    model = TimeMAE(channels=channels, seq_len=length, num_classes=classes, wave_length=wave).to(device).train()
    x = torch.randn(args.batch_size, length, channels, device=device)
    header = (f"{args.shape} ({channels} x {length}), wave_length {wave}: {model.num_windows} windows, "
              f"{model.num_masked} masked; batch {args.batch_size}, {device.type}, {torch.get_num_threads()} threads, "
              f"amp {args.amp}")
    if args.parts:
        print(f"{header}; median of {args.steps} steps\n\n| part | ms / step |\n|---|---|")
        for part, ms in part_times(model, x, args, device).items():
            print(f"| {part} | {ms:.1f} |")
        return
    step = pretrain_setup(model, x, args, device)
    for _ in range(args.warmup):
        step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=args.by_shape or bool(args.callers)) as prof:
        for _ in range(args.steps):
            step()
        sync(device)
    print(f"{header}, compile {args.compile} ({args.compile_mode}); {args.steps} steps")
    if args.by_shape:
        print("\n" + matmul_table(prof.key_averages(group_by_input_shape=True), args.steps, args.top))
        n = max(64, round((pretrain_flops(model, x, args, device) / 2) ** (1 / 3)))   # the step's FLOP count
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        sec, _ = timed(lambda: a @ b, device, 5, 3, 1)
        print(f"\nfor scale: a square {n} x {n} matmul (the step's FLOPs) runs at {2 * n**3 / sec / 1e9:.0f} GFLOP/s")
        return
    if args.callers:
        print("\n" + callers_table(prof.events(), set(args.callers), args.steps, args.top))
        return
    events = prof.key_averages()
    keys = ["self_cpu_time_total"] + (["self_device_time_total"] if device.type == "cuda" else [])
    for key in keys:
        table, per_step = self_time_table(events, key, args.steps, args.top)
        print(f"\n{key}: {per_step:.1f} ms per step in all operators\n{table}")


if __name__ == "__main__":
    main()
