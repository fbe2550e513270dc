"""Transfer learning: start a run from another run's pretrained TimeMAE, possibly of another dataset.

Every tensor of the checkpoint whose name and shape match the new model is copied. The rest keep their fresh
initialisation: the window slicer when the number of channels or the window length differs, the positions
when the number of windows differs, the head when the number of classes differs.
"""
from collections import defaultdict

import torch

from common.errors import TimeMAEError
from engine.checkpoint import open_checkpoint, saved_settings, settings_diff
from model.config import visible_encoder_settings


def _module(name):
    """'visible_encoder.blocks.0.attn.qkv.weight' -> 'visible_encoder'."""
    return name.split(".", 1)[0]


def _owner(name):
    """'window_slicer.conv.weight' -> 'window_slicer.conv': the layer a tensor belongs to."""
    return name.rpartition(".")[0] or name


def transfer_weights(model, path, read=open_checkpoint):
    """Copy the matching tensors of the checkpoint at `path` (opened by `read`: under torchrun rank 0 reads it
    and sends it to the others) into `model`, refusing one whose visible encoder differs; return (transferred,
    reinitialised, unused): the copied tensors' names, each other tensor of the model mapped to why it was not
    copied, and the checkpoint's tensors the model has no place for.
    A layer is copied whole or not at all: a window slicer whose weight does not fit keeps its fresh bias too."""
    ckpt = read(path)
    diff = settings_diff(saved_settings(ckpt), model.config, visible_encoder_settings())
    if "encoder" in diff:   # another kind of encoder: its other settings (BERT ignores --layers) say nothing more
        diff = {"encoder": diff["encoder"]}
    differ = [f"{k} {a} there, {b} here" for k, (a, b) in diff.items() if k != "bert_config"] or \
        (["another BERT (bert_config)"] if "bert_config" in diff else [])
    if differ:
        raise TimeMAEError(f"--pretrained_path {path!r} holds another visible encoder ({'; '.join(differ)}): "
                           "pass the pretrained run's encoder flags (its args.json)")
    source = ckpt["model"]
    own = model.state_dict()
    reinitialised = {}
    for name, tensor in own.items():
        theirs = source.get(name)
        if theirs is None:
            reinitialised[name] = "not in the checkpoint"
        elif theirs.shape != tensor.shape:
            reinitialised[name] = f"{name} has shape {tuple(theirs.shape)} there, {tuple(tensor.shape)} here"
    misfit = {_owner(n): why for n, why in reinitialised.items()}
    for name in own:
        if name not in reinitialised and _owner(name) in misfit:
            reinitialised[name] = misfit[_owner(name)]
    transferred = [n for n in own if n not in reinitialised]
    if any(_module(n) == "visible_encoder" for n in reinitialised) or not transferred:
        raise TimeMAEError(f"--pretrained_path {path!r}: its visible encoder does not fit this model (its tensors "
                           "differ in name or shape)")
    with torch.no_grad():
        for name in transferred:
            own[name].copy_(source[name])
    return transferred, reinitialised, sorted(set(source) - set(own))


def _by_module(names):
    groups = defaultdict(list)
    for name in names:
        groups[_module(name)].append(name)
    return groups


def describe_transfer(path, transferred, reinitialised, unused):
    """One log line: the modules copied, those re-initialised (tensor counts, and why) and the checkpoint's
    tensors left unused."""
    copied = ", ".join(f"{m} ({len(n)})" for m, n in _by_module(transferred).items())
    fresh = "; ".join(f"{m} ({len(n)}: {reinitialised[n[0]]})" for m, n in _by_module(reinitialised).items())
    left = ", ".join(f"{m} ({len(n)})" for m, n in _by_module(unused).items())
    return (f"transfer from {path}: copied {len(transferred)} tensors: {copied or 'none'}; "
            f"re-initialised: {fresh or 'none'}; not used: {left or 'none'}")
