"""Model size: accuracy against the width (--d_model) and depth (--layers) of the visible encoder.

    python -m experiments.model_size --dataset epilepsy --quick
"""
from experiments.runner import Study, lines, main_guard, parse, parser

SIZES = {"quick": [(16, 1), (32, 2), (64, 4)], "full": [(32, 2), (32, 4), (64, 4), (64, 8), (128, 8)]}


def plot(ax, table):
    table = table.assign(parameters=table.d_model ** 2 * table.layers)  # ~ encoder size, for the x axis
    lines(ax, table, "parameters", "d_model² × layers (∝ visible encoder parameters)", log=True)
    for _, r in table.drop_duplicates("config").iterrows():
        ax.annotate(r.config, (r.parameters, r.acc), fontsize=7, textcoords="offset points", xytext=(3, -10))


def main(argv=None):
    a = parse(parser(__doc__, "experiments.model_size"), argv)
    configs = [(f"d{d}_L{n}", ["--d_model", str(d), "--layers", str(n)], dict(d_model=d, layers=n))
               for d, n in SIZES[a.scale]]
    study = Study("model_size", a)
    study.sweep(a.dataset, configs)
    return study.finish(plot, order=[c[0] for c in configs])


if __name__ == "__main__":
    raise SystemExit(main_guard(main))
