"""A finished run's flags and data, for the tools that read its series again (tools.pooling, tools.baselines):
the data loaded and normalised as the run did, checked against what its checkpoint says it trained on."""
import argparse
import os

from args import saved_flags
from common.errors import TimeMAEError
from datautils import data_description, description_changes
from engine.checkpoint import open_checkpoint
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
    Refused when the data is not what the checkpoint trained on (checkpoints from before they described their
    data are taken at their word), or has no labels or no test split."""
    if data_path == "":
        raise TimeMAEError("--data_path is empty: name the folder the runs' data is in now, or leave it out")
    cfg = run_settings(folder)
    cfg.data_path = cfg.data_path if data_path is None else data_path
    splits = load_splits(cfg)
    ckpt = open_checkpoint(os.path.join(folder, CHECKPOINT))
    changed = description_changes(ckpt["data"], data_description(splits)) if "data" in ckpt else []
    if changed:
        raise TimeMAEError(f"{folder!r}: the data in {cfg.data_path!r} is not what the run trained on "
                           f"({', '.join(changed)} differ): pass --data_path with the run's data")
    if not splits.labelled or splits.test_x is None:
        raise TimeMAEError(f"{folder!r}: the run's data has no labels or no test split")
    fit, held = labelled_splits(splits, cfg.select_on, cfg.val_ratio, cfg.label_ratio, cfg.seed)
    return cfg, splits, fit, held, ckpt
