"""Labels: accuracy against the share of labelled training data the probe and fine-tuning use (a stratified,
seeded share of all the labelled training series; selection holds out a stratified --val_ratio of that share), for
TimeMAE and for the same encoder without pretraining (FineZero / FineZero+).

The encoder is pretrained once per seed on all the unlabelled data (config 'pretrained', whose checkpoint is
the last epoch, so no label chooses it); every label fraction then probes and fine-tunes that checkpoint
(--pretrained_path, no further pretraining).

    python -m experiments.label_fraction --dataset epilepsy --quick
"""
from experiments.runner import (FIXED_BUDGET, NO_PRETRAINING, PRETRAIN_ONLY, Study, lines, main_guard, parse, parser,
                                shares)

FRACTIONS = {"quick": [0.05, 0.1, 0.25, 0.5, 1.0], "full": [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]}


def plot(ax, table):
    lines(ax, table[table.config != "pretrained"], "label_ratio", "share of the labelled training data", log=True)


def main(argv=None):
    p = parser(__doc__, "experiments.label_fraction")
    p.add_argument("--fractions", type=float, nargs="+", help="each in (0, 1]; default: 0.05 .. 1 (--quick), 0.01 .. 1")
    a = parse(p, argv)
    fractions = shares(a.fractions or FRACTIONS[a.scale], "--fractions")
    study = Study("label_fraction", a)
    for seed in a.seeds:
        pretrained = study.run(a.dataset, "pretrained", PRETRAIN_ONLY, seed, label_ratio=1.0)
        for r in fractions:
            ratio = ["--label_ratio", str(r), *FIXED_BUDGET]   # the same epochs and batch at every share
            if pretrained:
                study.run(a.dataset, f"timemae_{r:g}", [*ratio, "--num_epoch_pretrain", "0", "--pretrained_path",
                                                        f"{pretrained}/pretrain_model.pkl"], seed, label_ratio=r)
            study.run(a.dataset, f"no_pretraining_{r:g}", [*ratio, *NO_PRETRAINING], seed, label_ratio=r)
    return study.finish(plot)


if __name__ == "__main__":
    raise SystemExit(main_guard(main))
