"""Transfer: pretrain on each dataset, then probe and fine-tune on each dataset from that encoder (window
slicer and positions re-initialised where channels or lengths differ), beside no pretraining at all.

    python -m experiments.transfer --datasets epilepsy uwave --quick
"""
import numpy as np

from experiments.runner import NO_PRETRAINING, PRETRAIN_ONLY, Study, main_guard, parse, parser


def plot(ax, table):
    """Heat-map source (pretrained on) x target (evaluated on). Colour: FineLast accuracy minus FineZero (no
    pretraining) of the same target, so transfer gains show across datasets; cells: 'FineLast / FineAll'."""
    table = table[table.config != "pretrained"]
    sources = list(dict.fromkeys(table.source))
    targets = list(dict.fromkeys(table.dataset))
    cell = lambda p: table[table.protocol.isin(p)].pivot_table("acc", "source", "dataset").reindex(  # noqa: E731
        index=sources, columns=targets)
    last, full = cell(["FineLast", "FineZero"]), cell(["FineAll", "FineZero+"])
    gain = (last - last.loc["none"]) if "none" in sources else last * 0
    bound = max(1.0, float(np.nanmax(np.abs(gain.to_numpy(float)))))
    image = ax.imshow(gain.to_numpy(float), cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    for i in range(len(sources)):
        for j in range(len(targets)):
            a, b = last.iat[i, j], full.iat[i, j]
            dark = abs(gain.iat[i, j]) > 0.6 * bound                     # white text on saturated cells
            ax.text(j, i, "" if np.isnan(a) else f"{a:.1f}\n/ {b:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(targets)), targets)
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("evaluated on (cells: FineLast / FineAll accuracy, %)")
    ax.set_ylabel("pretrained on")
    ax.grid(False)
    ax.figure.colorbar(image, ax=ax, label="FineLast gain over no pretraining (points)")


def main(argv=None):
    a = parse(parser(__doc__, "experiments.transfer", datasets="many"), argv)
    study = Study("transfer", a)
    for seed in a.seeds:
        for source in a.datasets:
            name = study.names[source]     # a UCR/UEA set by its name, as the targets' column
            pretrained = study.run(source, "pretrained", PRETRAIN_ONLY, seed, source=name)
            for target in a.datasets if pretrained else []:
                study.run(target, f"from_{name}", ["--num_epoch_pretrain", "0", "--pretrained_path",
                                                   f"{pretrained}/pretrain_model.pkl"], seed, source=name)
        for target in a.datasets:
            study.run(target, "no_pretraining", NO_PRETRAINING, seed, source="none")
    return study.finish(plot, panels=("budget",))


if __name__ == "__main__":
    raise SystemExit(main_guard(main))
