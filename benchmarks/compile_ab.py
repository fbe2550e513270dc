"""torch.compile against eager for the pretraining step, interleaved in one process: the two steps alternate
round by round, so drift in the machine's speed (a shared or throttled CPU) hits both alike. Prints, per shape,
the median ms per step of each, their ratio, and the seconds the first compiled steps took (the compile).

    python benchmarks/compile_ab.py --threads 2 --shapes har,epilepsy --waves 8,16 --rounds 25
"""
import argparse
import functools
import os
import statistics
import sys
import time
from types import SimpleNamespace

import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from args import default_threads, positive_int, whole_numbers  # noqa: E402
from benchmarks.throughput import SHAPES, check_shapes, pretrain_setup, print_machine, write_table  # noqa: E402
from common.cli import ArgumentParser  # noqa: E402
from engine.speed import COMPILE_MODES  # noqa: E402
from model import TimeMAE  # noqa: E402


def parse(argv=None):
    p = ArgumentParser(prog="python benchmarks/compile_ab.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=positive_int, default=default_threads(), help="torch CPU threads")
    p.add_argument("--shapes", default="har,epilepsy", help="comma-separated subset of " + ",".join(SHAPES))
    p.add_argument("--waves", type=functools.partial(whole_numbers, least=0), default="0",
                   help="window lengths to try at each shape, e.g. 8,16; 0: run.sh's")
    p.add_argument("--batch_size", type=positive_int, default=128)
    p.add_argument("--rounds", type=positive_int, default=25, help="alternations; each times 2 steps of each")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps of each first (the compile among them)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend")
    p.add_argument("--mode", default="default", choices=COMPILE_MODES, help="torch.compile mode")
    p.add_argument("--out", default="exp/speed/compile_ab.csv")
    args = p.parse_args(argv)
    check_shapes(p, args.shapes)
    return args


def compare(name, wave, args):
    """Median seconds per pretraining step, eager and compiled, alternating; and the warm-up's seconds."""
    channels, length, classes, preset_wave = SHAPES[name]
    x = torch.randn(args.batch_size, length, channels)
    steps, warm = {}, {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = TimeMAE(channels=channels, seq_len=length, num_classes=classes,
                        wave_length=wave or preset_wave).train()
        cfg = SimpleNamespace(compile=mode == "compiled", compile_backend=args.backend, compile_mode=args.mode,
                              amp=False)
        steps[mode] = pretrain_setup(model, x, cfg, torch.device("cpu"))
        start = time.perf_counter()
        for _ in range(args.warmup):
            steps[mode]()
        warm[mode] = time.perf_counter() - start
    times = {mode: [] for mode in steps}
    for _ in range(args.rounds):
        for mode, step in steps.items():
            start = time.perf_counter()
            step(), step()
            times[mode].append((time.perf_counter() - start) / 2)
    eager, comp = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return dict(shape=name, wave=wave or preset_wave, windows=model.num_windows, batch=args.batch_size,
                threads=torch.get_num_threads(), backend=args.backend, mode=args.mode, eager_ms=1e3 * eager,
                compiled_ms=1e3 * comp, speedup=eager / comp, warmup_s_eager=warm["eager"],
                warmup_s_compiled=warm["compiled"])


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    print_machine()
    waves = args.waves
    rows = []
    for name in args.shapes.split(","):
        for wave in waves:
            rows.append(compare(name, wave, args))
            r = rows[-1]
            print(f"{name}, window {r['wave']}: eager {r['eager_ms']:.1f} ms, compiled {r['compiled_ms']:.1f} ms "
                  f"per step ({r['speedup']:.2f} x); first {args.warmup} compiled steps {r['warmup_s_compiled']:.0f} s",
                  flush=True)
    table = pd.DataFrame(rows)
    write_table(table, args.out)
    print(f"written to {args.out}")
    return table


if __name__ == "__main__":
    main()
