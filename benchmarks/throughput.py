"""Throughput of TimeMAE at the shapes of the paper's datasets (synthetic data): series per second and peak
memory of a pretraining step, a fine-tuning step and representation extraction for the probe, on the CPU and
(when present) CUDA; and the achieved GFLOP/s of the pretraining step against a square torch.matmul of the
same FLOP count, timed in the same repetitions, so the ratio holds on a machine shared with other work.

    python benchmarks/throughput.py --device cpu --threads 2 --out exp/throughput_cpu.csv
    python benchmarks/throughput.py --device cpu --threads 1 --e2e_epochs 5 --data_path DIR/Epilepsy \
        --reference PATH/TO/TimeMAE      # also: 5 epochs + final probe on Epilepsy, this project and the reference

With --e2e_epochs N (and Epilepsy from --data_path or $TIMEMAE_DATA) it also times whole runs of "pretrain N
epochs + final probe" on real Epilepsy at each --e2e_waves window length (benchmarks/end_to_end.py), beside a
checkout of the reference code when --reference is given.

Times are medians over --reps repetitions of --steps batches each, after --warmup batches. Peak memory is
torch.cuda.max_memory_allocated on CUDA; on the CPU it is the growth of the process's peak resident set
(Linux VmHWM, reset through /proc/self/clear_refs) over its resident set at the start, after freed heap memory
is handed back to the OS (malloc_trim), so memory kept from earlier work does not hide the peak.
`cpu_share` is the CPU time the process got over wall time x threads: below 1 the machine was busy with other
work and the wall-clock figures understate what it does alone. On CUDA `syncs_per_step` counts the times a
training step waits for the device (torch's sync debug mode): at 0 the host queues steps ahead of the GPU.
"""
import argparse
import ctypes
import os
import statistics
import sys
import time
import warnings
from unittest import mock

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from args import default_threads, non_negative_int, positive_int, whole_numbers  # noqa: E402
from benchmarks.end_to_end import REFERENCE_FIXES, end_to_end  # noqa: E402
from classification import extract_representations  # noqa: E402
from common.cli import ArgumentParser  # noqa: E402
from common.errors import TimeMAEError  # noqa: E402
from experiments.presets import PRESETS  # noqa: E402
from loss import hits_ndcg, pretrain_loss  # noqa: E402
from model import TimeMAE  # noqa: E402
from model.layers import TransformerBlock  # noqa: E402
from process import Trainer  # noqa: E402
from engine.distributed import resolve_device  # noqa: E402
from engine.provenance import cpu_name, git_commit, short_commit  # noqa: E402
from engine.runfiles import atomic_write_text, check_output_file  # noqa: E402
from engine.speed import COMPILE_MODES, autocast, compiled, eval_batch_size  # noqa: E402

# dataset: (channels, length, classes, window length of run.sh's preset)
# channels, length, classes of each benchmark, and run.sh's window length for it (its preset's first flag)
SHAPES = {name: (*size, int(PRESETS[name][PRESETS[name].index("--wave_length") + 1]))
          for name, size in {"har": (9, 128, 6), "ps": (11, 217, 39), "ad": (13, 93, 10), "uwave": (3, 315, 8),
                             "epilepsy": (1, 178, 2)}.items()}


def parse(argv=None):
    p = ArgumentParser(prog="python benchmarks/throughput.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="all", help="cpu, cuda, cuda:N, or all (cpu, then cuda when present)")
    p.add_argument("--threads", type=positive_int, default=default_threads(), help="torch CPU threads")
    p.add_argument("--batch_size", type=positive_int, default=128, help="training batch (pretraining and fine-tuning)")
    p.add_argument("--eval_series", type=positive_int, default=2048, help="series encoded per extraction repetition")
    p.add_argument("--eval_batch_size", type=non_negative_int, default=0,
                   help="0: as main.py (test batch on CPU, 8192 GPU)")
    p.add_argument("--reps", type=positive_int, default=5, help="timed repetitions (the median is reported)")
    p.add_argument("--steps", type=positive_int, default=3, help="batches per timed repetition")
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed batches first (more with --compile)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of " + ",".join(SHAPES))
    p.add_argument("--out", default="exp/throughput.csv", help="CSV file for the table")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward passes")
    p.add_argument("--compile_backend", default="inductor")
    p.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode; reduce-overhead: CUDA graphs on a GPU")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--variable_lengths", action="store_true",
                   help="series of variable length: each real for a uniform 1/3 to all of its steps, NaN-padded after")
    p.add_argument("--e2e_epochs", type=non_negative_int, default=0,
                   help="also time whole runs of N pretraining epochs + final probe on real Epilepsy (0: off)")
    p.add_argument("--e2e_waves", type=whole_numbers, default="8,16", help="window lengths of the end-to-end runs")
    p.add_argument("--e2e_reps", type=positive_int, default=1, help="end-to-end runs per window length and code")
    p.add_argument("--data_path", default=None, help="the Epilepsy folder (default: $TIMEMAE_DATA/Epilepsy)")
    p.add_argument("--reference", default=None,
                   help="a checkout of the reference code (Mingyue-Cheng/TimeMAE) to time beside this project")
    p.add_argument("--no_shapes", action="store_true", help="only the end-to-end runs")
    args = p.parse_args(argv)
    needed = ["model/TimeMAE.py", *REFERENCE_FIXES]
    if args.reference and not all(os.path.isfile(os.path.join(args.reference, f)) for f in needed):
        p.refuse(f"--reference {args.reference}: expected a checkout of Mingyue-Cheng/TimeMAE holding "
                f"{', '.join(needed)}")
    try:
        args.devices = devices(args.device)
    except TimeMAEError as e:
        p.refuse(str(e))
    try:   # refused before the measurements, not after them (write_table creates the folder, at the end)
        check_output_file(args.out, "--out", create_folder=True)
    except TimeMAEError as e:
        p.refuse(str(e))
    args.test_batch_size = args.batch_size
    check_shapes(p, args.shapes)
    return args


def check_shapes(parser, shapes):
    """Refuse (through the parser's one-line error) names in the comma-separated `shapes` outside SHAPES."""
    unknown = set(shapes.split(",")) - set(SHAPES)
    if unknown:
        parser.refuse(f"unknown shapes {sorted(unknown)}; choose from {','.join(SHAPES)}")


def print_machine():
    """The conditions a benchmark's figures depend on, and the code that measured them, printed before them."""
    commit = short_commit(*git_commit())
    code = f"commit {commit}" if commit else "not a git checkout"
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs ({cpu_name()}), torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {code}", flush=True)


def write_table(table, out):
    """The benchmark's rows as CSV at `out`, written whole or not at all."""
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    atomic_write_text(table.to_csv(index=False, float_format="%.4g"), out)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


class PeakMemory:
    """Peak memory (MB) of the work inside the block: CUDA allocator peak, or CPU peak-RSS growth."""

    def __init__(self, device):
        self.device, self.mb = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif os.path.exists("/proc/self/clear_refs"):
            ctypes.CDLL(None).malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            self.start = _status_kb("VmRSS:")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif hasattr(self, "start"):
            self.mb = (_status_kb("VmHWM:") - self.start) / 1024


def timed(fn, device, reps, steps, warmup, between=None):
    """Median seconds per call of fn over `reps` repetitions of `steps` calls, and the median share of the
    threads' CPU time the process got; `between` runs after each repetition (untimed here) so that a
    reference kernel sees the same load."""
    for _ in range(warmup):
        fn()
    sync(device)
    times, shares = [], []
    for _ in range(reps):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            fn()
        sync(device)
        wall = time.perf_counter() - start
        times.append(wall / steps)
        shares.append((time.process_time() - cpu) / wall / torch.get_num_threads())
        if between:
            between()
    return statistics.median(times), statistics.median(shares)


def syncs_per_call(fn, device, calls=3):
    """Host-device synchronisations per call of fn on a GPU, as torch's sync debug mode counts them (it warns
    at each one it knows); NaN on the CPU, where nothing waits for a device."""
    if device.type != "cuda":
        return float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(calls):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / calls


def pretrain_optimizer(model):
    """AdamW over the parameters pretraining trains (the FineAll head frozen), as the Trainer builds it."""
    model.head.requires_grad_(False)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01,
                             fused=True)


def pretrain_setup(model, x, cfg, device, padded=False):
    """One pretraining step as the Trainer takes it (the padding decided for the run, no check of the batch):
    forward, loss, AdamW, momentum update, codeword stats."""
    opt = pretrain_optimizer(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=1.0)
    forward = compiled(model.forward_pretrain, cfg)
    sums = torch.zeros(2, dtype=torch.float64, device=device)

    def step():
        with autocast(device, cfg):
            out = forward(x, padded=padded)
            loss, _, _ = pretrain_loss(out, 5.0, 1.0)
        Trainer._optimise(loss, opt, sched, None)
        model.update_momentum_encoder()
        hits, ndcg = hits_ndcg(out["codeword_scores"].detach().flatten(0, 1),
                               out["codeword_target"].argmax(-1).flatten())
        sums.add_(torch.stack([hits.sum(), ndcg.sum()]))
    return step


def finetune_setup(model, x, y, cfg, device, padded=False):
    """One FineAll step as the Trainer takes it: the head trained, the pretraining-only parts frozen."""
    model.head.requires_grad_(True)
    model.freeze_pretraining_parts()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=1.0)
    forward = compiled(model.forward, cfg)

    def step():
        with autocast(device, cfg):
            loss = F.cross_entropy(forward(x, padded=padded), y)
        Trainer._optimise(loss, opt, sched, None)
    return step


def pretrain_flops(model, x, cfg, device, padded=False):
    """FLOPs of one pretraining forward + backward (matmuls, convolutions, attention), counted by torch. The
    momentum encoder's blocks are counted unfused: FlopCounterMode counts nothing inside the fused block's single
    ATen op (torch._transformer_encoder_layer_fwd), which does the same products."""
    with mock.patch.object(TransformerBlock, "fusable", lambda self, x: False), \
            FlopCounterMode(display=False) as counter, autocast(device, cfg):
        loss, _, _ = pretrain_loss(model.forward_pretrain(x, padded=padded), 5.0, 1.0)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def with_lengths(x, variable):
    """x (N, T, C); with variable, series i keeps its first ceil(T * u_i) steps, u_i uniform on [1/3, 1], and is
    NaN after them, as the loaders pad variable-length series (datautils)."""
    if not variable:
        return x
    T = x.shape[1]
    steps = torch.ceil(T * (1 + 2 * torch.rand(x.shape[0], 1, device=x.device)) / 3)    # (N, 1)
    return x.masked_fill((torch.arange(T, device=x.device) >= steps)[..., None], float("nan"))


def bench_shape(name, device, args):
    channels, length, classes, wave = SHAPES[name]
    torch.manual_seed(0)
    model = TimeMAE(channels=channels, seq_len=length, num_classes=classes, wave_length=wave).to(device).train()
    B, reps, steps = args.batch_size, args.reps, args.steps
    warmup = args.warmup + (3 if args.compile else 0)
    padded = args.variable_lengths
    x = with_lengths(torch.randn(B, length, channels, device=device), padded)
    y = torch.randint(classes, (B,), device=device)
    base = dict(device=device.type, threads=torch.get_num_threads(), shape=name, channels=channels,
                length=length, windows=model.num_windows, masked=model.num_masked, batch=B,
                compile=args.compile, compile_mode=args.compile_mode, amp=args.amp, variable_lengths=padded)
    rows = []

    flops = pretrain_flops(model, x, args, device, padded)
    n = max(64, round((flops / 2) ** (1 / 3)))  # square matmul with the step's FLOP count
    mm_dtype = torch.bfloat16 if args.amp else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=mm_dtype), torch.randn(n, n, device=device, dtype=mm_dtype)
    mm_times = []

    def time_matmul():
        mm_times.append(timed(lambda: torch.matmul(a, b), device, 1, 3, 1)[0])

    step = pretrain_setup(model, x, args, device, padded)
    with PeakMemory(device) as mem:
        sec, share = timed(step, device, reps, steps, warmup, between=time_matmul)
    gflops, mm_gflops = flops / sec / 1e9, 2 * n**3 / statistics.median(mm_times) / 1e9
    rows.append(dict(base, task="pretrain", series_per_s=B / sec, ms_per_batch=1e3 * sec, peak_mem_MB=mem.mb,
                     cpu_share=share, syncs_per_step=syncs_per_call(step, device),
                     gflop_per_batch=flops / 1e9, gflops=gflops, matmul_n=n, matmul_gflops=mm_gflops,
                     of_matmul=gflops / mm_gflops))

    step = finetune_setup(model, x, y, args, device, padded)
    with PeakMemory(device) as mem:
        sec, share = timed(step, device, reps, steps, warmup)
    rows.append(dict(base, task="finetune", series_per_s=B / sec, ms_per_batch=1e3 * sec, peak_mem_MB=mem.mb,
                     cpu_share=share, syncs_per_step=syncs_per_call(step, device)))

    batch = eval_batch_size(args, device)
    xe = with_lengths(torch.randn(args.eval_series, length, channels, device=device), padded)
    with PeakMemory(device) as mem:
        sec, share = timed(lambda: extract_representations(model, xe, batch, padded), device, reps, 1, 1)
    rows.append(dict(base, task="represent", batch=batch, series_per_s=args.eval_series / sec,
                     ms_per_batch=1e3 * sec * batch / args.eval_series, peak_mem_MB=mem.mb, cpu_share=share))
    return rows


def devices(spec):
    """The devices --device names: one, or for 'all' the CPU, then CUDA when present."""
    if spec == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(spec)]


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    print_machine()
    rows = []
    for device in [] if args.no_shapes else args.devices:
        for name in args.shapes.split(","):
            shape_rows = bench_shape(name, device, args)
            rows += shape_rows
            print(f"{device.type} {name}: " + ", ".join(f"{r['task']} {r['series_per_s']:.0f}/s" for r in shape_rows),
                  flush=True)
    if rows:   # the shapes' figures are kept even if an end-to-end run then fails
        write_table(pd.DataFrame(rows), args.out)
    e2e = (end_to_end(args.data_path, args.e2e_waves, args.e2e_epochs, args.threads, args.e2e_reps, args.reference)
           if args.e2e_epochs else [])
    table = pd.DataFrame(rows + e2e)
    write_table(table, args.out)
    shown = ["device", "threads", "shape", "windows", "batch", "task", "series_per_s", "ms_per_batch", "peak_mem_MB",
             "cpu_share", "syncs_per_step", "gflops", "matmul_gflops", "of_matmul"]
    if rows:
        print(table[table["task"].isin(["pretrain", "finetune", "represent"])][shown]
              .to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep=""))
    if e2e:
        summary = pd.DataFrame(e2e).groupby(["wave", "code"])[["seconds", "acc"]].median()
        print(f"end-to-end, {args.e2e_epochs} pretraining epochs + final probe, median of {args.e2e_reps}:")
        print(summary.to_string(float_format=lambda v: f"{v:.4g}"))
        for wave, part in summary["seconds"].unstack().iterrows():
            if {"reference", "project"} <= set(part.dropna().index):
                ratio = part["reference"] / part["project"]
                print(f"wave {wave}: the reference took {ratio:.2f} x this project's time")
    print(f"written to {args.out}")
    return table


if __name__ == "__main__":
    main()
