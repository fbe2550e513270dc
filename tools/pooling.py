"""FineLast of finished runs' selected checkpoints under each pooling asked for (--pooling: mean, max, meanmax, flat;
default: all), each number of grid phases (--phases; default: the run's own), each choice of the visible encoder's
layers (--layers; default: the run's own), each encoder (--encoders: the visible encoder H_theta, the paper's, or
the momentum encoder H_xi, its moving average), each probe (--probes: logistic, FineLast's; nn1, 1-NN on the
standardised representations, the classifier of the raw series' baseline; ridge, a ridge classifier whose alpha
leave-one-out picks on the series it fits; phase_samples, the logistic probe fitted on each grid phase's
representation as a sample of its own, a series scored by the mean of its phases' probabilities) and both probe
fits (--probe_refit 0: the fit split's probe; 1: fitted again, with its C where it has one, on fit + selection):
the same data, split and selection as the run's own FineLast (and for logistic and phase_samples its C grid), only
the series representation, the classifier and its training series differ. The logistic row of the run's own
pooling, phases, layers, visible encoder and refit reproduces its metrics.json.

Validation here favours the run's own settings: its checkpoint is the best of the periodic probes on that very
split under them. --cv K adds cv_acc, the K-fold accuracy over every labelled training series (never test): the
split is a fifth of them, so less of its edge remains, and on small sets five times as many series are scored.

    python -m tools.pooling exp/uwave/seed1 exp/uwave/seed2 --out exp/uwave/pooling.csv
    python -m tools.pooling exp/uwave/seed1 --phases 1 8       # also the representation over 8 grid phases
    python -m tools.pooling exp/uwave/seed1 --pooling mean --layers 8 5-8 0,8   # blocks 5-8; embeddings + block 8
    python -m tools.pooling exp/uwave/seed1 --pooling mean --encoders visible momentum
    python -m tools.pooling exp/uwave/seed1 --pooling mean --probes logistic nn1 ridge
    python -m tools.pooling exp/uwave/seed1 --phases 8 --probes logistic phase_samples
    python -m tools.pooling exp/uwave/seed{1,2,3} --pooling mean max --phases 1 8 --cv 5   # cross-validated too

With several runs (seeds), a second table gives each dataset's and setting's mean over them: validation, and test
accuracy and macro-F1 as mean and standard deviation, in % (as the results tables quote them). The runs' data must
be the data their checkpoints trained on; --data_path says where it is now when it moved (one folder for every run
named: a UCR runs' parent folder serves each set).
"""
import copy
import dataclasses
import itertools
import os
import sys

import numpy as np
import torch

from args import layer_spec, positive_int
from classification import (PhaseSampleProbe, cross_validated_accuracy, extract_representations, fold_count,
                            refit_probe, scores, select_phase_sample_probe, select_probe, untuned_probe)
from common.cli import ArgumentParser
from common.errors import TimeMAEError
from datautils import dataset_name
from engine.checkpoint import model_from_checkpoint
from engine.pipeline import check_probe_grid, flag_message
from model.config import POOLINGS
from tools.runs import CHECKPOINT, run_data, run_table
from tools.tables import check_table_out, quoted, report_runs, run_means


def layer_name(layers):
    """(5, 6, 7, 8) -> '5,6,7,8'; () (the last block) -> 'last'."""
    return ",".join(map(str, layers)) or "last"


ENCODERS = ("visible", "momentum")
PROBES = ("logistic", "nn1", "ridge", "phase_samples")


def with_encoder(model, encoder):
    """`model` itself ('visible'), or a copy whose visible encoder holds the momentum encoder's weights
    ('momentum'), so that represent() runs H_xi."""
    if encoder == "visible":
        return model
    other = copy.deepcopy(model)
    other.visible_encoder.load_state_dict(model.momentum_encoder.state_dict())
    return other


def check_probes(probes, cv):
    """Refuse --cv with phase_samples, which has no K-fold figure (before any run's files are read)."""
    if cv and "phase_samples" in probes:
        raise TimeMAEError("--cv does not combine with --probes phase_samples (no K-fold of it): run it apart")


def pooled_finelast(folder, batch_size=512, probe_C=None, phases=None, layers=None, poolings=POOLINGS,
                    encoders=ENCODERS[:1], probes=PROBES[:1], cv=0, data_path=None, settings=None):
    """Rows (run, dataset, encoder, pooling, phases, layers, probe, refit, C, val_acc, acc, f1) for the run in
    `folder`, one per encoder (`encoders`, of ENCODERS), pooling, number of grid phases (`phases`, a list; None: the
    run's own; the column gives the phases the grid has, at most the window length, each once), choice of layers
    (`layers`, a list of `layer_spec` values; None: the run's own), probe (`probes`, of PROBES; nn1 and ridge
    have no C) and probe fit (refit 0 only when the selection split is the test set); probe_C: a C grid other than
    the run's; poolings: those to probe (default: all); cv: K > 0 adds cv_C and cv_acc, the K-fold accuracy over
    every labelled training series (`cross_validated_accuracy`; its best C for logistic; not for phase_samples);
    data_path: where the run's data is now, when it moved; settings: the run's flags when already read
    (tools.runs.run_table's)."""
    cfg, splits, fit, held, ckpt = run_data(folder, data_path, settings)
    grid = probe_C or cfg.probe_C
    both = fit if held is None else np.concatenate([fit, held])                # every labelled training series
    if cv:  # refuse before encoding anything
        try:
            fold_count(splits.train_y[both], cv)
        except TimeMAEError as e:
            raise TimeMAEError(f"{folder!r}: --cv: {e}") from None
    saved = model_from_checkpoint(ckpt, os.path.join(folder, CHECKPOINT))
    models = {encoder: with_encoder(saved, encoder) for encoder in encoders}   # one copy each, not one a pass
    train, test = torch.as_tensor(splits.train_x), torch.as_tensor(splits.test_x)
    rows = []
    done = set()
    for encoder, pooling, asked, chosen in itertools.product(encoders, poolings, phases or [saved.cfg.phases],
                                                             layers or [saved.cfg.repr_layers]):
        model = models[encoder]
        # represent() reads these settings; the weights stay the same
        model.cfg = dataclasses.replace(model.cfg, pooling=pooling, phases=asked, repr_layers=chosen).validate()
        k = model.num_phases      # a grid of sigma has sigma phases at most: more computes the same representation
        if (encoder, pooling, k, layer_name(chosen)) in done:
            continue
        done.add((encoder, pooling, k, layer_name(chosen)))
        if "phase_samples" in probes:   # each phase's (K, N, D); their mean is represent()'s, bit for bit
            train_k, test_k = (extract_representations(model, x, batch_size, each_phase=True) for x in (train, test))
            sel_k = test_k if held is None else train_k[:, held]
            train_r, test_r = (torch.from_numpy(k).mean(0).numpy() for k in (train_k, test_k))
        else:
            train_r, test_r = (extract_representations(model, x, batch_size) for x in (train, test))
        sel_r, sel_y = (test_r, splits.test_y) if held is None else (train_r[held], splits.train_y[held])
        for kind in probes:
            if kind == "phase_samples":   # the same C grid and selection as logistic, K samples a series
                C, probe, sel = select_phase_sample_probe(train_k[:, fit], splits.train_y[fit], sel_k, sel_y, grid,
                                                          seed=cfg.seed)
                fits = {0: probe, 1: None if held is None else PhaseSampleProbe(C, cfg.seed).fit(
                    train_k[:, both], splits.train_y[both])}
            elif kind == "logistic":
                C, probe, sel = select_probe(train_r[fit], splits.train_y[fit], sel_r, sel_y, grid, seed=cfg.seed)
                fits = {0: probe, 1: None if held is None else refit_probe(probe, train_r[both], splits.train_y[both],
                                                                           seed=cfg.seed)}
            else:  # nn1, ridge: no C to choose; validation scores the fit split's classifier
                C, probe = float("nan"), untuned_probe(kind, train_r[fit], splits.train_y[fit])
                sel = scores(sel_y, probe.predict(sel_r))
                fits = {0: probe, 1: None if held is None else untuned_probe(kind, train_r[both], splits.train_y[both])}
            crossed = {} if not cv else dict(zip(("cv_C", "cv_acc"), cross_validated_accuracy(
                train_r[both], splits.train_y[both], grid, cv, seed=cfg.seed, probe=kind)))
            for refit, fitted in fits.items():
                if fitted is not None:
                    res = scores(splits.test_y, fitted.predict(test_k if kind == "phase_samples" else test_r))
                    rows.append(dict(run=folder, dataset=dataset_name(cfg.dataset, cfg.UCR_folder), encoder=encoder,
                                     pooling=pooling, phases=k, layers=layer_name(chosen), probe=kind, refit=refit,
                                     C=C, val_acc=sel["acc"], acc=res["acc"], f1=res["f1"], **crossed))
    return rows


def summary(table):
    """The rows of several runs -> one row per (dataset, config, encoder, pooling, phases, layers, probe, refit):
    runs, mean validation accuracy (and cross-validated, with --cv), and test accuracy and macro-F1 as mean and sample
    standard deviation (NaN for one run), in %."""
    return run_means(table, ["dataset", "config", "encoder", "pooling", "phases", "layers", "probe", "refit"],
                     {"val": "val_acc", **({"cv": "cv_acc"} if "cv_acc" in table else {})})


def printable(means):
    """summary()'s rows with accuracy and macro-F1 as 'mean ± std', as tools.summarize and the results tables
    quote them."""
    if "cv" in means:
        means = means.assign(cv=means.cv.map("{:.2f}".format))
    return quoted(means.assign(val=means.val.map("{:.2f}".format)))


def main(argv=None):
    p = ArgumentParser(prog="python -m tools.pooling", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (args.json, pretrain_model.pkl)")
    p.add_argument("--out", help="CSV file for the rows")
    p.add_argument("--data_path", help="where the runs' data is now, when it moved (default: each run's args.json)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--probe_C", type=float, nargs="+", help="C grid of the probes (default: each run's --probe_C)")
    p.add_argument("--phases", type=int, nargs="+",
                   help="numbers of grid phases to probe (default: each run's; a grid of windows of sigma steps has "
                        "sigma at most, which the phases column then shows)")
    p.add_argument("--pooling", nargs="+", choices=POOLINGS, default=POOLINGS, help="poolings to probe (default: all)")
    p.add_argument("--layers", type=layer_spec, nargs="+",
                   help="visible-encoder layers to pool, side by side: 8, 5-8 or 0,8 (0: the window embeddings; "
                        "default: each run's own, the last block unless it ran with --repr_layers)")
    p.add_argument("--encoders", nargs="+", choices=ENCODERS, default=ENCODERS[:1],
                   help="whose weights represent the series: the visible encoder (the paper's, default) or the "
                        "momentum encoder (its moving average)")
    p.add_argument("--cv", type=int, default=0, metavar="K",
                   help="also the K-fold accuracy over every labelled training series (cv_acc; 0: off): a selection "
                        "figure with less of the edge the split that chose the checkpoint gives the run's own settings")
    p.add_argument("--probes", nargs="+", choices=PROBES, default=PROBES[:1],
                   help="classifiers on the representations: logistic (FineLast's probe, default), nn1 (1-NN on "
                        "the standardised representations, the raw series' baseline classifier), ridge (a ridge "
                        "classifier, its alpha by leave-one-out on the series it fits) or phase_samples (the "
                        "logistic probe fitted on each grid phase's representation as a sample, a series scored by "
                        "the mean of its phases' probabilities; not with --cv)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        if a.out is not None:   # before the work, not after it
            check_table_out(a.out)
        if a.probe_C:  # the runs' own grids passed main.py's check
            check_probe_grid(a.probe_C)
        check_probes(a.probes, a.cv)
        table = run_table(a.runs, lambda run, flags: pooled_finelast(
            run, probe_C=a.probe_C, phases=a.phases, layers=a.layers, poolings=a.pooling, encoders=a.encoders,
            probes=a.probes, cv=a.cv, data_path=a.data_path, settings=flags), a.data_path)
        report_runs(table, lambda rows: printable(summary(rows)), a.out)
    except TimeMAEError as e:
        print(f"error: {flag_message(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
