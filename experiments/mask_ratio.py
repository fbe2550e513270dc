"""Masking ratio and strategy: accuracy against the share of masked windows, with a fresh mask per series
(`--mask_mode sample`) and one mask per batch (`batch`, the reference code).

    python -m experiments.mask_ratio --dataset epilepsy --quick
"""
from experiments.runner import Study, lines, main_guard, parse, parser, shares

RATIOS = {"quick": [0.2, 0.4, 0.6, 0.8], "full": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}
MODES = ("sample", "batch")


def plot(ax, table):
    for mode, part in table.groupby("mask_mode", sort=False):
        part = part.assign(protocol=part.protocol + f" ({mode})")
        lines(ax, part, "mask_ratio", "masking ratio")


def main(argv=None):
    p = parser(__doc__, "experiments.mask_ratio")
    p.add_argument("--ratios", type=float, nargs="+",
                   help="each in (0, 1); default: 0.2 0.4 0.6 0.8 (--quick), else 0.1 .. 0.9")
    a = parse(p, argv)
    ratios = shares(a.ratios or RATIOS[a.scale], "--ratios", one=False)
    configs = [(f"{mode}_{r:g}", ["--mask_ratio", str(r), "--mask_mode", mode], dict(mask_ratio=r, mask_mode=mode))
               for mode in MODES for r in ratios]
    study = Study("mask_ratio", a)
    study.sweep(a.dataset, configs)
    return study.finish(plot, order=[c[0] for c in configs])


if __name__ == "__main__":
    raise SystemExit(main_guard(main))
