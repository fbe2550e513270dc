"""A finished run's flags and data, for the tools that read its series again (tools.pooling, tools.baselines):
the data loaded and normalised as the run did, checked against what its checkpoint says it trained on."""
import argparse
import os

import pandas as pd

from args import saved_flags
from common.errors import TimeMAEError
from datautils import dataset_name
from engine.checkpoint import check_trained_on, open_checkpoint
from engine.pipeline import load_splits
from process import labelled_splits
from tools.tables import comparable, config_flags, config_labels

CHECKPOINT = "pretrain_model.pkl"


def run_settings(folder):
    """The flags of the finished run in `folder` (args.saved_flags)."""
    if not os.path.isdir(folder):
        raise TimeMAEError(f"run folder {folder!r} is not a folder" if os.path.lexists(folder) else
                           f"run folder {folder!r} does not exist")
    if not all(os.path.isfile(os.path.join(folder, f)) for f in ("args.json", CHECKPOINT)):
        raise TimeMAEError(f"{folder!r} is not a finished run folder (args.json and {CHECKPOINT})")
    return argparse.Namespace(**saved_flags(folder))


def run_table(folders, rows_of, data_path=None):
    """The rows `rows_of(folder, settings)` of every run folder named (settings: its flags, run_settings), each
    folder once (however spelt; the first spelling kept), every one and the presence of its data (`data_path`:
    where it is now, when it moved) checked before any work, with each run's configuration (run_configs) as a
    column."""
    unique = list({os.path.realpath(f): os.path.normpath(f) for f in reversed(folders)}.values())[::-1]
    settings = {folder: run_settings(folder) for folder in unique}
    for folder, cfg in settings.items():
        data_present(folder, cfg, data_path)
    table = pd.DataFrame([row for folder in unique for row in rows_of(folder, settings[folder])])
    table.insert(2, "config", table.run.map(run_configs(settings)))
    return table


def data_present(folder, cfg, data_path):
    """Refuse an empty `data_path`, and, without one, a run whose data is gone from where its args.json says."""
    if data_path == "":
        raise TimeMAEError("--data_path is empty: name the folder the runs' data is in now, or leave it out")
    if data_path is None and cfg.data_path and not os.path.exists(cfg.data_path):
        raise TimeMAEError(f"{folder!r}: its data {cfg.data_path!r} (args.json) is not there: pass --data_path with "
                           "the folder it is in now")


def run_configs(settings):
    """{run folder: 'flag=value ...'} of `settings` ({run folder: its flags}): the flags (the seed and runtime
    flags aside, the pretraining epochs included) in which a run differs from the other runs of its dataset, so
    that the tools' means never pool two configurations (a FineZero run and a pretrained one, or runs of other
    label ratios)."""
    flags = [*config_flags(), "num_epoch_pretrain"]
    table = pd.DataFrame({"dataset": [dataset_name(s.dataset, s.UCR_folder) for s in settings.values()],
                          "args": [{k: comparable(getattr(s, k)) for k in flags} for s in settings.values()]},
                         index=list(settings))
    return config_labels(table).to_dict()


def run_data(folder, data_path=None, settings=None):
    """(flags, splits, fit, held, checkpoint) of the finished run in `folder`: its data (`data_path`: where that
    data is now, when it moved) loaded and normalised as the run did, the indices of the training series its
    probes fitted on (fit) and selected on (held; None: selection on test), and its selected checkpoint's dict.
    Refused when the data is not what the checkpoint trained on (its description: shape, class names,
    normalisation statistics; checkpoints from before they described their data are taken at their word), or has
    no labels or no test split. settings: the run's flags when already read and checked (run_table's)."""
    if settings is None:
        settings = run_settings(folder)
        data_present(folder, settings, data_path)
    cfg = argparse.Namespace(**vars(settings))
    cfg.data_path = cfg.data_path if data_path is None else data_path
    try:
        splits = load_splits(cfg)
    except TimeMAEError as e:   # with several runs, say whose data it is; the error keeps its kind (a ConfigError
        e.args = (f"{folder!r}: {e}",)   # its settings, which the tools spell as --flags)
        raise
    path = os.path.join(folder, CHECKPOINT)
    ckpt = open_checkpoint(path)
    check_trained_on(ckpt, path, splits, folder, cfg.data_path)
    if not splits.labelled or splits.test_x is None:
        raise TimeMAEError(f"{folder!r}: the run's data has no labels or no test split")
    fit, held = labelled_splits(splits, cfg.select_on, cfg.val_ratio, cfg.label_ratio, cfg.seed)
    return cfg, splits, fit, held, ckpt
