"""A run end to end, for every entry point (main.py, the timemae API, the studies, the tools): check the flags,
load and normalise the data, build TimeMAE, open the run folder (new, resumed or replaced), write args.json and
hand model and data to the Trainer (process.py)."""
import math
import os
import re

import torch

from args import available_cpus, flag_defaults, runtime_flags
from common.errors import TimeMAEError
from datautils import data_description, dataset_name, load_dataset, normalize, resolve_folder, restrict_pretraining
from engine.checkpoint import load_checkpoint, open_checkpoint, training_data
from engine.distributed import init_distributed, rank_seed, seed_everything
from engine.provenance import provenance
from engine.resume import check_last_state, check_resumable, check_same_data, resumes, resumes_from_state, rewind_logs
from engine.runfiles import atomic_write_json, prepare_run_dir
from engine.speed import check_compile
from engine.transfer import describe_transfer, transfer_weights
from model import TimeMAE
from model.bert import BERT_LR, bert_config, resolve_bert_path
from model.config import TimeMAEConfig, window_length
from process import Trainer, labelled_splits, training_budget


# model settings the command line turns off with a flag; every other setting is the flag of its own name
NEGATED = {"mcc": "no_mcc", "mrr": "no_mrr", "decouple": "no_decouple"}


def model_config(cfg, splits, bert):
    """The TimeMAEConfig of the flags `cfg`, the data's shape and the BERT settings `bert` (empty: native)."""
    # unlabelled data still gets a (one-output, never trained) head: the model always has one
    data = dict(channels=splits.channels, seq_len=splits.seq_len, num_classes=max(splits.num_classes, 1))
    flags = {name: getattr(cfg, name) for name in TimeMAEConfig.names()
             if name not in data and name not in NEGATED and not name.startswith("bert_") and name != "encoder"}
    flags.update({name: not getattr(cfg, flag) for name, flag in NEGATED.items()})
    return TimeMAEConfig(**data, **flags, **bert)


def flag_message(error):
    """A model error's wording with the settings it names spelled as this command line's flags."""
    text = str(error)
    for name in getattr(error, "settings", ()):
        if name in NEGATED:
            text = re.sub(rf"\b{name}=False\b", f"--{NEGATED[name]}", text)
        text = re.sub(rf"(?<![-\w]){name}\b", f"--{name}", text)
    return text


def build_model(cfg, splits, log=print):
    bert, described = bert_settings(cfg) if cfg.encoder == "bert" else ({}, None)
    model = TimeMAE(model_config(cfg, splits, bert))
    if described:   # once the model took the settings (it refuses a freeze deeper than the BERT, say)
        log(described)
    if bert and cfg.bert_init == "pretrained":
        copied = model.visible_encoder.load_pretrained(cfg.bert_path)
        model.momentum_encoder.load_state_dict(model.visible_encoder.state_dict())
        log(f"BERT encoder: {copied} pretrained tensors from {cfg.bert_path}")
    return model


def bert_settings(cfg):
    """The BERT encoder's model arguments and the line that describes them; sets cfg.d_model to its hidden size
    (refusing another width) and resolves cfg.bert_path (None: the packaged MiniLM)."""
    cfg.bert_path = resolve_bert_path(cfg.bert_path)
    config = bert_config(cfg.bert_path, cfg.bert_positions)
    if cfg.d_model is not None and cfg.d_model != config["hidden_size"]:
        raise TimeMAEError(f"--d_model {cfg.d_model} conflicts with the BERT's hidden size {config['hidden_size']}: "
                           "with --encoder bert leave --d_model out (the width follows BERT)")
    cfg.d_model = config["hidden_size"]
    if cfg.bert_lr is None:
        cfg.bert_lr = BERT_LR
    described = (f"BERT encoder ({cfg.bert_init} init from {cfg.bert_path}): d_model {cfg.d_model} (BERT's hidden "
                 f"size), {config['num_hidden_layers']} layers, {config['num_attention_heads']} heads; --layers is "
                 f"not used; lr {cfg.bert_lr}; lowest {cfg.bert_freeze_layers} layers frozen; positions "
                 f"{cfg.bert_positions}, input norm {cfg.bert_input_norm}")
    return dict(encoder="bert", bert_config=config, bert_positions=cfg.bert_positions,
                bert_input_norm=cfg.bert_input_norm, bert_freeze_layers=cfg.bert_freeze_layers), described


def check_probe_grid(grid):
    """The probes' C grid (--probe_C) must hold positive, finite values (NaN refused too)."""
    if not all(0 < c < math.inf for c in grid):
        raise TimeMAEError(f"--probe_C values must be positive, got {grid}")


def check_flags(cfg):
    if not 0 < cfg.val_ratio < 1:
        raise TimeMAEError(f"--val_ratio must lie in (0, 1), got {cfg.val_ratio}")
    for flag in ("train_batch_size", "test_batch_size", "probe_every", "eval_per_steps", "lr_decay_steps",
                 "threads", "min_batches"):
        if getattr(cfg, flag) < 1:
            raise TimeMAEError(f"--{flag} must be at least 1, got {getattr(cfg, flag)}")
    for flag in ("num_epoch_pretrain", "num_epoch", "eval_batch_size", "min_steps", "min_pretrain_steps",
                 "num_workers"):
        if getattr(cfg, flag) < 0:
            raise TimeMAEError(f"--{flag} must be 0 or more, got {getattr(cfg, flag)}")
    check_probe_grid(cfg.probe_C)
    if cfg.threads > available_cpus():   # torch would try to start them all (100000: a MemoryError)
        raise TimeMAEError(f"--threads {cfg.threads} exceeds the {available_cpus()} CPUs this process may use: pass "
                           f"at most {available_cpus()}, or leave it out for the default")
    # `not low < value` refuses NaN too
    for flag in ("lr", "lr_decay_rate") + (("bert_lr",) if cfg.bert_lr is not None else ()):
        if not 0 < getattr(cfg, flag) < math.inf:
            raise TimeMAEError(f"--{flag} must be positive, got {getattr(cfg, flag)}")
    for flag in ("weight_decay", "alpha", "beta", "ppl_warn"):
        if not 0 <= getattr(cfg, flag) < math.inf:
            raise TimeMAEError(f"--{flag} must be 0 or more, got {getattr(cfg, flag)}")
    if not 0 <= cfg.seed < 2 ** 32:  # numpy's seed range
        raise TimeMAEError(f"--seed must lie in 0..{2 ** 32 - 1}, got {cfg.seed}")
    for flag in ("label_ratio", "pretrain_ratio"):
        if not 0 < getattr(cfg, flag) <= 1:
            raise TimeMAEError(f"--{flag} must lie in (0, 1], got {getattr(cfg, flag)}")
    bert_flags = [k for k, v in vars(cfg).items() if k.startswith("bert_") and v != flag_defaults()[k]]
    if cfg.encoder != "bert" and bert_flags:   # given for a BERT run, they would be ignored without a word
        raise TimeMAEError(f"--{bert_flags[0]} applies to the BERT encoder: add --encoder bert, or leave it out")
    if cfg.UCR_folder is not None and cfg.dataset != "ucr":   # as would the set it names
        raise TimeMAEError(f"--UCR_folder applies to --dataset ucr, not {cfg.dataset}: leave it out, or pass "
                           "--dataset ucr")
    check_compile(cfg)
    if cfg.resume and cfg.overwrite:
        raise TimeMAEError("--resume continues a run and --overwrite replaces it: pass one of them")
    for flag in ("data_path", "save_path"):   # '' would silently mean the default folder
        if getattr(cfg, flag) is not None and not getattr(cfg, flag).strip():
            raise TimeMAEError(f"--{flag} is empty: name a folder, or leave the flag out for the default")


def open_run(cfg, model, data):
    """Rank 0's part: with --resume and a run in the folder, check it and return its last state (None when
    it had not finished an epoch: it starts again in place), cutting the logs back to that state only once
    all of it fits `model` and the run's data is `data` (datautils.data_description). Otherwise prepare a new
    run folder. So the same command, --resume included, can start a run and continue it (as torchrun
    --max_restarts reruns it)."""
    if resumes(cfg):
        last = check_resumable(cfg.save_path, cfg, runtime_flags())
        if last is None:
            return None
        state = load_checkpoint(last, model)
        check_last_state(state, last)
        check_same_data(training_data(state, last), data, last)
        rewind_logs(cfg.save_path, state["logs"])
        return state
    prepare_run_dir(cfg.save_path, cfg.overwrite, cfg.resume)
    return None


def load_splits(cfg, splits=None):
    """The run's data, normalised (with the statistics kept in splits.stats) and restricted as the flags say:
    `splits` (raw arrays, e.g. from the timemae API) or else the dataset the flags name."""
    if splits is None:
        cfg.data_path = resolve_folder(cfg.dataset, cfg.data_path, cfg.UCR_folder)
        splits = load_dataset(cfg.dataset, cfg.data_path, cfg.UCR_folder, cfg.gaps)
    if cfg.select_on == "test" and splits.labelled and splits.test_x is None:
        raise TimeMAEError("--select_on test needs a test split, and this data has none: use --select_on val")
    splits = normalize(splits, cfg.normalize)
    if cfg.pretrain_ratio < 1:
        splits = restrict_pretraining(splits, cfg.pretrain_ratio, cfg.seed)
    return splits


def describe(cfg, splits, model, dist, held):
    """The run's first log line; `held`: the training series held out for selection (None: selection on test)."""
    count = lambda x: 0 if x is None else len(x)  # noqa: E731
    labels = f"{splits.num_classes} classes" if splits.labelled else "unlabelled (pretraining only)"
    # a shipped val split only pretrains: selection holds its own share of the training series out
    selection = ("the last epoch (no labels)" if not splits.labelled else "test" if held is None else
                 f"val, {len(held)} training series held out")
    return (f"{cfg.dataset}: train {count(splits.train_x)}, val {count(splits.val_x)}, test {count(splits.test_x)}; "
            f"{splits.channels} channels x {splits.seq_len} steps, {labels}; {model.num_windows} windows, "
            f"{model.num_masked} masked; device {dist.device} x {dist.world_size} processes; selection on "
            f"{selection}; run folder {cfg.save_path}")


def run(cfg, log=print, splits=None, trainer=Trainer, command=None):
    """One experiment; under torchrun (WORLD_SIZE > 1) this process's share of it, with rank 0 logging.
    `splits`: raw DatasetSplits to run on instead of the dataset the flags name (the timemae API's path);
    `trainer`: builds the Trainer from its arguments (the class; a diagnostic tool's subclass that records more;
    the API's function that keeps the instance, whose FineLast probe it takes); `command`: main.py's arguments,
    recorded in args.json's provenance."""
    check_flags(cfg)
    torch.set_num_threads(cfg.threads)
    with init_distributed(cfg.device) as dist:
        if cfg.train_batch_size % dist.world_size:
            raise TimeMAEError(f"--train_batch_size {cfg.train_batch_size} is the global batch and must be "
                               f"divisible by the {dist.world_size} processes")
        log = log if dist.is_main else (lambda *_: None)
        seed_everything(cfg.seed)
        splits = load_splits(cfg, splits)
        if cfg.wave_length == 0:  # args.json and the checkpoints keep the sigma it resolves to
            cfg.wave_length = window_length(splits.seq_len)
            log(f"--wave_length 0: windows of {cfg.wave_length} steps for series of {splits.seq_len}")
        if cfg.d_model is None and cfg.encoder == "timemae":
            cfg.d_model = 64
        model = build_model(cfg, splits, log)
        if model.num_phases < cfg.phases:
            log(f"--phases {cfg.phases}: windows of {cfg.wave_length} steps have {model.num_phases} phases of the "
                f"grid; the representation averages over {model.num_phases}")
        fit, held = labelled_splits(splits, cfg.select_on, cfg.val_ratio, cfg.label_ratio, cfg.seed) \
            if splits.labelled else ((), None)
        budget = training_budget(cfg, len(splits.pretrain_x()), len(fit), dist.world_size)
        if dist.enabled:  # the same initial weights everywhere, but masks and dropout drawn per rank
            seed_everything(rank_seed(cfg.seed, dist.rank))
        cfg.save_path = cfg.save_path or os.path.join("exp", dataset_name(cfg.dataset, cfg.UCR_folder),
                                                      f"seed{cfg.seed}")
        # a checkpoint that does not fit is refused before the run folder is touched (--overwrite clears it); a run
        # resumed from last.pkl takes its weights from there, and needs no pretrained file. Rank 0 decides and reads:
        # the run folder may be on its machine alone, and every rank must then make the same collective calls
        transfer = (transfer_weights(model, cfg.pretrained_path, lambda path: dist.on_main(open_checkpoint, path))
                    if cfg.pretrained_path and not dist.on_main(resumes_from_state, cfg) else None)
        state = dist.on_main(open_run, cfg, model, data_description(splits))
        run_dir = cfg.save_path
        log(describe(cfg, splits, model, dist, held))
        if budget != dict(pretrain_batch_size=cfg.train_batch_size, pretrain_epochs=cfg.num_epoch_pretrain,
                          finetune_batch_size=cfg.train_batch_size, finetune_epochs=cfg.num_epoch):
            finetune = (f", fine-tuning {cfg.finetune_epochs} epochs of batch {cfg.finetune_batch_size}"
                        if cfg.finetune_epochs else ", no fine-tuning")
            log(f"budget (--min_batches, --min_pretrain_steps, --min_steps): pretraining {cfg.pretrain_epochs} "
                f"epochs of batch {cfg.pretrain_batch_size}{finetune}")
        if splits.filled:
            log(f"--gaps interpolate: filled the missing values of {splits.filled} series linearly in time")
        if note := splits.cropped_note():
            log(note)
        if cfg.pretrain_ratio < 1:
            log(f"--pretrain_ratio {cfg.pretrain_ratio}: pretraining on {len(splits.pretrain_x())} series")
        if cfg.fineall_margin != "none" and cfg.num_epoch and not (cfg.fineall_head == "probe"
                                                                    and cfg.load_pretrained_model):
            log(f"note: --fineall_margin {cfg.fineall_margin} applies to FineAll from the probe only (--fineall_head "
                "probe --load_pretrained_model 1); this FineAll keeps its most accurate step")
        if transfer and state is None:
            log(describe_transfer(cfg.pretrained_path, *transfer))
        if cfg.resume and state is None:
            log(f"--resume: no finished epoch to continue in {run_dir}; starting the run from the beginning")
        if dist.is_main and state is None:
            atomic_write_json({**vars(cfg), "num_windows": model.num_windows, "num_masked": model.num_masked,
                               "num_classes": splits.num_classes, "classes": list(splits.classes),
                               "provenance": provenance(dist.device, command, dist.world_size)},
                              os.path.join(run_dir, "args.json"))
        return trainer(model, splits, cfg, run_dir, dist.device, log=log, dist=dist, state=state).run()
