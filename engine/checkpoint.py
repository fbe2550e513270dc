"""Checkpoint files: a dict with the model's weights ('model') and its settings ('config', a TimeMAEConfig
as a dict), plus whatever the writer adds (epoch, selection accuracy, training state, and 'data': the
description of the training data that new series are prepared with, see datautils.data_description).
Reading needs no Trainer, and no training data.

Files are read with torch.load(weights_only=True): only tensors and plain Python values (dict, list, tuple,
str, numbers, None) are accepted, so a shared checkpoint cannot run code. A pickle holding anything else
(an older checkpoint with NumPy arrays, or a crafted file) is refused with a one-line error.
"""
import os
import pickle

import torch

from common.errors import TimeMAEError, one_line
from common.unpickling import refused_global
from datautils import DESCRIPTION_DEFAULTS, data_description, description_changes
from engine.runfiles import atomic_save
from model import TimeMAE
from model.bert import require_transformers
from model.config import architecture_settings, config_defaults


def checkpoint(model, **extra):
    """A checkpoint dict holding a copy of the model's state (safe to keep while training goes on)."""
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}, "config": model.config,
            **extra}


def save_checkpoint(path, model, **extra):
    atomic_save(checkpoint(model, **extra), path)


def open_checkpoint(path):
    """The checkpoint dict at `path` ('model' state and 'config'), refusing a file that is none."""
    if os.path.isdir(path):
        raise TimeMAEError(f"checkpoint {path!r} is a folder: pass a checkpoint file in it (a run folder's "
                           "pretrain_model.pkl or model.pkl)")
    if not os.path.isfile(path):
        raise TimeMAEError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = refused_global(e)
        if not refused:  # bytes that are no pickle at all (a text file, say)
            raise TimeMAEError(f"{path!r} is not a TimeMAE checkpoint (not a file torch.save wrote)") from None
        raise TimeMAEError(f"{path!r} holds Python objects other than tensors and plain values "
                           f"({refused}), which weights-only loading refuses: it is not a checkpoint of "
                           "this version (retrain, or see docs/api.md#old-checkpoints)") from None
    except Exception as e:
        raise TimeMAEError(f"cannot read checkpoint {path!r}: not a file torch.save wrote, or damaged "
                           f"({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise TimeMAEError(f"{path!r} is not a TimeMAE checkpoint (expected a dict with 'model' and 'config')")
    if isinstance(ckpt["model"], dict):   # anything else is refused where the weights are loaded
        try:
            ckpt["model"] = TimeMAE.renamed_state(ckpt["model"])
        except ValueError as e:
            raise TimeMAEError(f"{path!r} is not a TimeMAE checkpoint: {e}") from None
    return ckpt


def saved_settings(ckpt):
    """A checkpoint's model settings, with today's default for each setting newer than the checkpoint."""
    return {**config_defaults(), **ckpt["config"]}


def settings_diff(saved, config, names):
    """{name: (the checkpoint's value, the model's)} for the settings `names` in which the two differ."""
    return {k: (saved.get(k), config[k]) for k in names if saved.get(k) != config[k]}


def read_checkpoint(path, config):
    """The checkpoint dict at `path`, refusing a file that is none or was built for another architecture
    (settings that only shape training, such as dropout, may differ)."""
    ckpt = open_checkpoint(path)
    saved = saved_settings(ckpt)
    diff = settings_diff(saved, config, architecture_settings())
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs run {b}" for k, (a, b) in diff.items())
        raise TimeMAEError(f"checkpoint {path!r} was built for another configuration ({shown})")
    return ckpt


def load_state(model, ckpt, path):
    """Put a checkpoint's weights into `model`; a state that does not fit is a one-line error."""
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise TimeMAEError(f"checkpoint {path!r} does not fit this model: {one_line(e, 300)}") from None


def load_checkpoint(path, model):
    """Load a checkpoint into `model`, refusing one built with another architecture."""
    ckpt = read_checkpoint(path, model.config)
    load_state(model, ckpt, path)
    return ckpt


def training_data(ckpt, path):
    """The description of the training data (datautils.data_description) that the checkpoint at `path` keeps to
    prepare new series with, an entry it predates read as what its version did (DESCRIPTION_DEFAULTS); refused
    for a checkpoint written before checkpoints kept it."""
    if not isinstance(ckpt.get("data"), dict):
        raise TimeMAEError(f"{path!r} holds no description of its training data (written by an earlier "
                           "version): see docs/api.md#old-checkpoints")
    return {**DESCRIPTION_DEFAULTS, **ckpt["data"]}


def check_trained_on(ckpt, path, splits, run_dir, data_path):
    """Refuse data (`splits`, normalised as the run did, loaded from `data_path`) that is not what the run in
    `run_dir` trained on, as its checkpoint dict `ckpt` (read from `path`) describes it (shape, class names,
    normalisation statistics); a checkpoint from before checkpoints described their data is taken at its word."""
    changed = description_changes(training_data(ckpt, path), data_description(splits)) if "data" in ckpt else []
    if changed:
        raise TimeMAEError(f"{run_dir!r}: the data in {data_path!r} is not what the run trained on "
                           f"({', '.join(changed)} differ): pass --data_path with the run's data")


def model_from_checkpoint(ckpt, path):
    """The TimeMAE the checkpoint dict `ckpt` (read from `path`) describes, with its weights, in eval mode."""
    settings = saved_settings(ckpt)
    if settings.get("encoder") == "bert":   # a missing package, not a version that cannot build the settings
        require_transformers()
    try:
        model = TimeMAE.from_config(settings)
    except (TypeError, TimeMAEError) as e:
        raise TimeMAEError(f"checkpoint {path!r} holds settings this version cannot build: {e}") from None
    load_state(model, ckpt, path)
    return model.eval()


def load_model(path):
    """The TimeMAE a checkpoint describes, with its weights, in eval mode; and the checkpoint dict."""
    ckpt = open_checkpoint(path)
    return model_from_checkpoint(ckpt, path), ckpt
