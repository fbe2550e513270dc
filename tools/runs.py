"""A finished run's flags and data, for the tools that read its series again (tools.pooling, tools.baselines):
the data loaded and normalised as the run did, checked against what its checkpoint says it trained on."""
import argparse
import os

from args import saved_flags
from common.errors import TimeMAEError
from datautils import data_description
from engine.checkpoint import data_changes, open_checkpoint, training_data
from main import load_splits
from process import labelled_splits

CHECKPOINT = "pretrain_model.pkl"


def run_settings(folder):
    """The flags of the finished run in `folder` (args.saved_flags)."""
    if not all(os.path.isfile(os.path.join(folder, f)) for f in ("args.json", CHECKPOINT)):
        raise TimeMAEError(f"{folder!r} is not a finished run folder (args.json and {CHECKPOINT})")
    return argparse.Namespace(**saved_flags(folder))


def run_data(folder, data_path=None):
    """(flags, splits, fit, held, checkpoint) of the finished run in `folder`: its data (`data_path`: where that
    data is now, when it moved) loaded and normalised as the run did, the indices of the training series its
    probes fitted on (fit) and selected on (held; None: selection on test), and its selected checkpoint's dict.
    Refused when the data is not what the checkpoint trained on, or has no labels or no test split."""
    cfg = run_settings(folder)
    cfg.data_path = data_path or cfg.data_path
    splits = load_splits(cfg)
    path = os.path.join(folder, CHECKPOINT)
    ckpt = open_checkpoint(path)
    changed = data_changes(training_data(ckpt, path), data_description(splits))
    if changed:
        raise TimeMAEError(f"{folder!r}: the data in {cfg.data_path!r} is not what the run trained on "
                           f"({', '.join(changed)} differ): pass --data_path with the run's data")
    if not splits.labelled or splits.test_x is None:
        raise TimeMAEError(f"{folder!r}: the run's data has no labels or no test split")
    fit, held = labelled_splits(splits, cfg.select_on, cfg.val_ratio, cfg.label_ratio, cfg.seed)
    return cfg, splits, fit, held, ckpt
