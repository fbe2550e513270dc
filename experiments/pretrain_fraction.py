"""Pretraining data: accuracy against the share of the unlabelled data used for pretraining (0 = FineZero /
FineZero+, no pretraining). All labelled data is used for the probe and fine-tuning.

    python -m experiments.pretrain_fraction --dataset epilepsy --quick
"""
from experiments.runner import FIXED_BUDGET, NO_PRETRAINING, Study, lines, main_guard, parse, parser, shares

FRACTIONS = {"quick": [0.05, 0.1, 0.25], "full": [0.1, 0.25, 0.5, 1.0]}


def plot(ax, table):
    table = table.assign(protocol=table.protocol.replace({"FineZero": "FineLast", "FineZero+": "FineAll"}))
    lines(ax, table, "pretrain_ratio", "share of the pretraining data (0: no pretraining)")


def main(argv=None):
    p = parser(__doc__, "experiments.pretrain_fraction")
    p.add_argument("--fractions", type=float, nargs="+",
                   help="each in (0, 1]; default: 0.05 0.1 0.25 (--quick), else 0.1 .. 1")
    a = parse(p, argv)
    # the same epochs and batch at every share (FIXED_BUDGET)
    configs = [("no_pretraining", [*NO_PRETRAINING, *FIXED_BUDGET], dict(pretrain_ratio=0.0))]
    configs += [(f"pretrain_{r:g}", ["--pretrain_ratio", str(r), *FIXED_BUDGET], dict(pretrain_ratio=r))
                for r in shares(a.fractions or FRACTIONS[a.scale], "--fractions")]
    study = Study("pretrain_fraction", a)
    study.sweep(a.dataset, configs)
    return study.finish(plot, order=[c[0] for c in configs])


if __name__ == "__main__":
    raise SystemExit(main_guard(main))
