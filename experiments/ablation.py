"""Ablations: TimeMAE against itself without MCC, without MRR, without the decoupled encoder, with the
reference code's argmax tokenizer, and without pretraining (FineZero, and FineZero+ = fine-tuned from scratch).

    python -m experiments.ablation --dataset epilepsy --quick
"""
from experiments.runner import NO_PRETRAINING, Study, main_guard, parse, parser

CONFIGS = [("full", []), ("no_mcc", ["--no_mcc"]), ("no_mrr", ["--no_mrr"]), ("no_decouple", ["--no_decouple"]),
           ("tokenizer_argmax", ["--tokenizer", "argmax"]), ("no_pretraining", NO_PRETRAINING)]


def plot(ax, table):
    """Grouped bars: FineLast and FineAll accuracy per configuration (FineZero/FineZero+ for no pretraining)."""
    configs = list(dict.fromkeys(table.config))
    for k, family in enumerate((("FineLast", "FineZero"), ("FineAll", "FineZero+"))):
        part = table[table.protocol.isin(family)].set_index("config").reindex(configs)
        ax.bar([i + 0.4 * k for i in range(len(configs))], part.acc, 0.4, yerr=part.acc_std.fillna(0),
               capsize=3, label=" / ".join(family))
    ax.set_xticks([i + 0.2 for i in range(len(configs))], configs, rotation=30, ha="right", fontsize=8)
    low = table.acc.min()
    ax.set_ylim(max(0, low - 5), min(100, table.acc.max() + 2))
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)


def main(argv=None):
    a = parse(parser(__doc__, "experiments.ablation"), argv)
    study = Study("ablation", a)
    study.sweep(a.dataset, [(name, flags, {}) for name, flags in CONFIGS])
    return study.finish(plot, order=[c for c, _ in CONFIGS])


if __name__ == "__main__":
    raise SystemExit(main_guard(main))
