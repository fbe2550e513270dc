"""Where a pretraining step's time goes: torch.profiler over the step that benchmarks/throughput.py times
(forward, loss, AdamW, momentum update, codeword statistics), at a dataset's shape, on synthetic data. Prints the
operators with the most self time (CPU, and CUDA when profiling a GPU) as a markdown table.

    python benchmarks/profile_step.py --shape har --wave_length 8 --threads 1
    python benchmarks/profile_step.py --shape epilepsy --wave_length 8 --threads 1 --top 15
"""
import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.throughput import SHAPES, pretrain_setup, sync  # noqa: E402
from model import TimeMAE  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shape", default="har", choices=sorted(SHAPES))
    p.add_argument("--wave_length", type=int, default=0, help="0: run.sh's preset for the shape")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="profiled steps, after --warmup untimed ones")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=12, help="operators listed")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    p.add_argument("--compile_backend", default="inductor")
    return p.parse_args(argv)


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


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    channels, length, classes, preset_wave = SHAPES[args.shape]
    wave = args.wave_length or preset_wave
    torch.manual_seed(0)
    model = TimeMAE(channels=channels, seq_len=length, num_classes=classes, wave_length=wave).to(device).train()
    x = torch.randn(args.batch_size, length, channels, device=device)
    step = pretrain_setup(model, x, args, device)
    for _ in range(args.warmup):
        step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        sync(device)
    events = prof.key_averages()
    print(f"{args.shape} ({channels} x {length}), wave_length {wave}: {model.num_windows} windows, "
          f"{model.num_masked} masked; batch {args.batch_size}, {device.type}, {torch.get_num_threads()} threads, "
          f"amp {args.amp}, compile {args.compile}; {args.steps} steps")
    keys = ["self_cpu_time_total"] + (["self_device_time_total"] if device.type == "cuda" else [])
    for key in keys:
        table, per_step = self_time_table(events, key, args.steps, args.top)
        print(f"\n{key}: {per_step:.1f} ms per step in all operators\n{table}")


if __name__ == "__main__":
    main()
