"""TimeMAEEncoder and TimeMAEClassifier: scikit-learn estimators over engine.pipeline.run, main.py's engine.

fit() builds the command line's configuration (args.defaults: parse_args of the preset's flags, with the
estimator's parameters set over them), turns X and y into DatasetSplits and calls pipeline.run with them, in a
temporary run folder (or `save_path`). It then keeps the selected checkpoint in memory: pretrain_model.pkl for
the encoder, model.pkl (fine-tuned) or the pretrained encoder plus the FineLast probe folded into its head for the
classifier (the probe pipeline.run's Trainer fitted, taken from it).
transform/predict prepare new series as the training data was (the checkpoint's data description) and encode
them with the visible encoder. save/load write and read one self-contained, weights-only checkpoint.
"""
import inspect
import io
import numbers
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state, metadata_routing
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from args import default_device, defaults, flag_defaults, runtime_flags
from classification import extract_representations, predict_proba
from common.errors import TimeMAEError
from common.unpickling import refused_global
from datautils import (as_series_array, check_labels, label_vector, prepare_series, splits_from_arrays,
                       unstratifiable)
from engine.checkpoint import model_from_checkpoint, open_checkpoint, save_checkpoint, training_data
from engine import pipeline
from engine.distributed import resolve_device
from engine.runfiles import read_json
from engine.speed import eval_batch_size
from experiments.presets import ALL as PRESETS
from process import Trainer

# main.py flags whose estimator parameter has another name
API_NAMES = {"seed": "random_state"}
# estimator parameters that are main.py flags of the same name
FLAGS = ("wave_length", "d_model", "attn_heads", "layers", "reg_layers", "dropout", "vocab_size", "mask_ratio",
         "alpha", "beta", "momentum", "num_epoch_pretrain", "probe_every", "train_batch_size", "test_batch_size",
         "lr", "weight_decay", "val_ratio", "normalize", "gaps", "threads", "pooling")


class _TimeMAE(BaseEstimator):
    """Parameters are main.py's flags of the same name, with its defaults (`threads=None`: the CPUs this
    process may use; `d_model=None`: 64), plus: preset, run.sh's preset the flags start from ('ucr', the
    default: the UCR/UEA preset chosen for data nobody tuned for, window length from the series length; a paper
    preset such as 'epilepsy'; None: main.py's defaults, the paper's) with the parameters left at None taking
    its values; device (None: cuda if available, else cpu), random_state (--seed), verbose (log lines and
    progress bars, as main.py prints them), save_path (keep the run folder there; None: a temporary one) and
    flags (a dict of any other main.py flag, e.g. {'tokenizer': 'argmax'}), which come last."""

    # `what` only names X in errors: no metadata for scikit-learn's routing (no set_transform_request and kin)
    __metadata_request__transform = {"what": metadata_routing.UNUSED}
    __metadata_request__predict = {"what": metadata_routing.UNUSED}
    __metadata_request__predict_proba = {"what": metadata_routing.UNUSED}

    def __init__(self, wave_length=None, d_model=None, attn_heads=4, layers=8, reg_layers=4, dropout=0.2,
                 vocab_size=None, mask_ratio=0.6, alpha=None, beta=None, momentum=0.99, num_epoch_pretrain=None,
                 probe_every=5, train_batch_size=128, test_batch_size=128, lr=1e-3, weight_decay=0.01,
                 val_ratio=0.2, normalize="channel", gaps="refuse", device=None, random_state=0, threads=None,
                 verbose=True, save_path=None, flags=None, pooling=None, preset="ucr"):
        self.wave_length = wave_length
        self.d_model = d_model
        self.attn_heads = attn_heads
        self.layers = layers
        self.reg_layers = reg_layers
        self.dropout = dropout
        self.vocab_size = vocab_size
        self.mask_ratio = mask_ratio
        self.alpha = alpha
        self.beta = beta
        self.momentum = momentum
        self.num_epoch_pretrain = num_epoch_pretrain
        self.probe_every = probe_every
        self.train_batch_size = train_batch_size
        self.test_batch_size = test_batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_ratio = val_ratio
        self.normalize = normalize
        self.gaps = gaps
        self.device = device
        self.random_state = random_state
        self.threads = threads
        self.verbose = verbose
        self.save_path = save_path
        self.flags = flags
        self.pooling = pooling
        self.preset = preset

    # ------------------------------------------------------------------------------------------ training
    def _config(self, num_epoch=None, seed=None):
        """main.py's configuration for these parameters: its defaults, the preset's flags, the parameters (those
        not None), then `flags`; no run folder yet (save_path None). num_epoch: fine-tuning epochs (None: the
        preset's, main.py's or `flags`'); seed: the seed to take (None: random_state's, drawn from it when it is
        None or a RandomState: once per fit, so a fit resolves its configuration once)."""
        if self.preset is not None and self.preset not in PRESETS:
            raise TimeMAEError(f"preset must be one of {', '.join(PRESETS)} or None (main.py's defaults), got "
                               f"{self.preset!r}")
        params = self.get_params(deep=False)
        for name in ("verbose", "finetune"):   # switches of the estimator's own, not main.py's ('False' is truthy)
            if name in params and not (isinstance(params[name], (bool, np.bool_, numbers.Integral))
                                       and params[name] in (0, 1)):
                raise TimeMAEError(f"{name}={params[name]!r}: expected True or False")
        settings = {name: params[name] for name in FLAGS if params[name] is not None}
        seed = self.random_state if seed is None else seed
        if not isinstance(seed, numbers.Integral):   # None or a RandomState, as in scikit-learn: a seed drawn from it
            try:
                seed = check_random_state(seed).randint(2**31)
            except ValueError:
                raise TimeMAEError(f"random_state must be an int, a numpy RandomState or None, got {seed!r}") from None
        settings.update(dataset="numpy", seed=int(seed), no_progress=not self.verbose,
                        **({"num_epoch": num_epoch} if num_epoch is not None else {}),
                        **({"device": self.device} if self.device else {}))
        try:
            return defaults(PRESETS[self.preset] if self.preset else (), **{**settings, **(self.flags or {})})
        except TypeError as e:
            raise TimeMAEError(f"flags: {e} (they must be main.py flag names)") from None
        except ValueError as e:
            raise TimeMAEError(f"{type(self).__name__}: {e}") from None

    def _splits(self, X, y, gaps):
        """X and its labels y (or None) as the engine's DatasetSplits (training series only), checked in the
        API's words."""
        try:
            return splits_from_arrays("fit(X, y)" if y is not None else "fit(X)", as_series_array(X), y, gaps=gaps)
        except TimeMAEError as e:
            raise self._api_error(e) from None

    def _api_error(self, error):
        """An engine error in the API's words (api_spelling: parameters and flags keys, not --flags)."""
        return TimeMAEError(api_spelling(pipeline.flag_message(error), self.get_params(deep=False)))

    def _train(self, splits, cfg):
        """pipeline.run with the configuration `cfg` (from _config) on `splits` (from _splits); the estimator's
        _keep(cfg, trainer) then takes what it needs from the run folder, before a temporary one is removed, and
        from the run's Trainer."""
        trainers = []

        def trainer(*args, **kwargs):   # pipeline.run builds the Trainer: kept for _keep
            trainers.append(Trainer(*args, **kwargs))
            return trainers[-1]
        with tempfile.TemporaryDirectory(prefix="timemae-") as tmp:
            cfg.save_path = self.save_path or os.path.join(tmp, "run")
            log = print if self.verbose else (lambda *_: None)
            try:
                metrics = pipeline.run(cfg, log=log, splits=splits, trainer=trainer)
            except TimeMAEError as e:
                raise self._api_error(e) from None
            self.metrics_, self.seed_ = metrics, cfg.seed   # seed_: the seed a RandomState random_state gave
            # where this fit ran: commit, versions, ...
            self.provenance_ = read_json(os.path.join(cfg.save_path, "args.json"))["provenance"]
            self._keep(cfg, trainers[0])
        return self

    def _adopt(self, path, head, ckpt=None, cfg=None):
        """Keep the checkpoint at `path` (its dict `ckpt`, when already read) as the fitted model; `cfg`: the
        fit's configuration (None: loaded, built from the parameters)."""
        self.device_ = resolve_device(self.device or default_device())
        # the encoding batch, fixed with the fit: set_params after it changes what a next fit does, not predict
        self.batch_ = self._encoding_batch(cfg)
        ckpt = open_checkpoint(path) if ckpt is None else ckpt
        model = model_from_checkpoint(ckpt, path)
        self.model_, self.data_, self.head_ = model.to(self.device_), training_data(ckpt, path), head

    def __setstate__(self, state):
        """An estimator pickled by an earlier version: what it lacks is filled once (parameters added since take
        their defaults, which only a new fit reads; the encoding batch from its parameters; no provenance; the
        data description's newer entries as that version behaved)."""
        super().__setstate__(state)
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name != "self" and name not in state:
                setattr(self, name, parameter.default)
        if hasattr(self, "model_"):
            self.data_ = training_data({"data": self.data_}, "the pickled estimator")
            if not hasattr(self, "batch_"):
                self.batch_ = self._encoding_batch()
            if not hasattr(self, "provenance_"):
                self.provenance_ = None

    def _encoding_batch(self, cfg=None):
        """The batch transform/predict encode with on device_: the fit's configuration `cfg`'s, or (loaded, or
        pickled before the estimator kept it) the parameters' (the seed given: no draw from a RandomState)."""
        return eval_batch_size(cfg or self._config(0, seed=0), self.device_)

    # ------------------------------------------------------------------------------------------ encoding
    def _series(self, X, what="X"):
        """X as the model's input: (n_cases, seq_len, n_channels) float32 on the device, prepared as the
        training data was; `what` names X in errors."""
        check_is_fitted(self, "model_")
        x = prepare_series(as_series_array(X, what), self.data_, what)
        return torch.as_tensor(x, device=self.device_)

    def transform(self, X, what="X"):
        """Representations, the visible encoder's windows pooled by `pooling` (meanmax, the UCR preset's:
        (n_cases, 2 d_model); mean, the paper's: (n_cases, d_model); flat: (n_cases, n_windows * d_model)); with
        k `repr_layers` (flags), k times as wide. `what` names X in errors (tools.encode: its input file)."""
        x = self._series(X, what)   # first: it checks that the estimator is fitted
        return extract_representations(self.model_, x, self.batch_)

    # ------------------------------------------------------------------------------------------ files
    def save(self, path):
        """One checkpoint file holding everything transform/predict need: weights, model config, the training
        data's description (normalisation statistics, class names, length policy) and these parameters; and
        where the fit ran (provenance_)."""
        check_is_fitted(self, "model_")
        save_checkpoint(path, self.model_, data=self.data_, head=self.head_, estimator=type(self).__name__,
                        params=self._saved_params(), provenance=self.provenance_)
        return path

    def _saved_params(self):
        """The parameters as plain Python values, which weights-only loading reads back: numpy numbers and arrays
        as Python's, a random_state of None or a RandomState as the seed the fit drew from it; any other object is
        refused in one line."""
        params = _plain(self.get_params(deep=False))
        if not isinstance(params["random_state"], int):   # None and a RandomState drew it: the fit's own seed
            params["random_state"] = getattr(self, "seed_", None)
        for name, value in params.items():
            buffer = io.BytesIO()
            try:
                torch.save(value, buffer)
                torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
            except (pickle.PickleError, AttributeError, TypeError) as e:   # a lambda cannot even be pickled
                what = refused_global(e) or type(value).__name__
                raise TimeMAEError(f"save: parameter {name} holds a {what}, which a checkpoint cannot store: give it "
                                   "numbers, text, lists or dicts of them") from None
        return params

    @classmethod
    def load(cls, path, device=None):
        """The fitted estimator saved at `path` (by save, or a main.py run's pretrain_model.pkl / model.pkl)."""
        return cls._from_checkpoint(path, open_checkpoint(path), device)

    @classmethod
    def _from_checkpoint(cls, path, ckpt, device):
        """load() of the checkpoint dict `ckpt`, read from `path` (the file is read once)."""
        training_data(ckpt, path)   # refuse an old checkpoint before anything is built
        params = ckpt.get("params") or _params_of_run(ckpt.get("args") or {}, ckpt.get("head"))
        est = cls(**{k: v for k, v in params.items() if k in cls._get_param_names()})
        if device is not None:
            est.device = device
        est._adopt_loaded(path, ckpt)
        est.provenance_ = ckpt.get("provenance")   # None for a main.py checkpoint: its args.json holds it
        return est

    def _adopt_loaded(self, path, ckpt):
        self._adopt(path, ckpt.get("head"), ckpt)


def _plain(value):
    """`value` with numpy numbers and arrays as Python's, in dicts, lists and tuples too."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def api_spelling(text, params):
    """An engine message in the API's words: the flag --name becomes the parameter `name` where the estimator has
    one (--seed: random_state), else `flags['name']` (--no-name: `flags['name']=False`). Other words that start
    with -- (a pip command's --no-deps, say) stay as they are."""
    known = flag_defaults()

    def spell(match):
        name = match[2]
        if name not in known:
            return match[0]
        if match[1]:
            return f"flags['{name}']=False"
        name = API_NAMES.get(name, name)
        return name if name in params else f"flags['{name}']"
    return re.sub(r"--(no-)?([A-Za-z]\w*)", spell, text)


def not_settings():
    """main.py flags of a run that are no setting of its training: the runtime flags (args.runtime_flags: paths,
    machine, speed), the data (X is), and those the estimator takes as parameters of other names."""
    return runtime_flags() | {"dataset", "UCR_folder", "seed", "num_epoch"}


def _params_of_run(args, head):
    """Estimator parameters from a main.py run's args.json values (a checkpoint's 'args'; `head` its trained
    head, 'fineall', or None): the run's settings, so that clone(load(path)).fit trains as the run did."""
    known, not_setting = flag_defaults(), not_settings()
    params = {k: args[k] for k in FLAGS if k in args and k != "threads"}
    params["flags"] = {k: v for k, v in args.items() if k in known and k not in FLAGS and k not in not_setting}
    params["preset"] = None   # the run's flags, all recorded in its args.json
    if "seed" in args:
        params["random_state"] = args["seed"]
    if head == "fineall" and "num_epoch" in args:
        params.update(finetune=True, num_epoch=args["num_epoch"])
    return params


class TimeMAEEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _TimeMAE):
    """fit(X, y=None) pretrains TimeMAE on X (y, when it holds class labels, selects the pretraining checkpoint
    with the periodic linear probe, as main.py does; without them the last epoch is kept); transform(X) gives the
    representations (see transform), whose columns get_feature_names_out names timemaeencoder0, 1, ... X:
    (n_cases, n_channels, n_timepoints), or a list of (n_channels, length_i) arrays."""

    def fit(self, X, y=None):
        labels, codes = self._selection_labels(y)
        cfg = self._config(num_epoch=0)
        refusal = labels is not None and unstratifiable(codes, cfg.val_ratio)
        if refusal:   # a pipeline's labels that the probe cannot select with: pretraining alone, as without y
            warnings.warn(f"TimeMAEEncoder.fit: {refusal} for selecting the pretraining checkpoint; y is not used "
                          "and the last epoch is kept", UserWarning, stacklevel=2)
            labels = None
        return self._train(self._splits(X, labels, cfg.gaps), cfg)

    @staticmethod
    def _selection_labels(y):
        """(y as labels for selection, their codes), or (None, None): a target that is not class labels (a
        regression pipeline's continuous y, which a transformer passes on) selects nothing."""
        if y is None:
            return None, None
        labels = label_vector(y, "fit(X, y): y")
        check_labels(labels, "train", "fit(X, y)")      # before type_of_target, which cannot read NaN
        codes = _class_codes(labels)[1]                 # labels of one kind
        return (labels, codes) if type_of_target(labels) in ("binary", "multiclass") else (None, None)

    def transform(self, X, what="X"):
        # defined on this class, as scikit-learn's set_output wraps only a transform its class defines itself
        return super().transform(X, what)

    @property
    def _n_features_out(self):
        """transform's output width, for get_feature_names_out (and so scikit-learn's set_output)."""
        check_is_fitted(self, "model_")
        return self.model_.cfg.representation_size

    def _keep(self, cfg, trainer):
        self._adopt(os.path.join(cfg.save_path, "pretrain_model.pkl"), None, cfg=cfg)


class TimeMAEClassifier(ClassifierMixin, _TimeMAE):
    """fit(X, y) pretrains, then fine-tunes encoder and a linear head for num_epoch epochs (FineAll,
    finetune=True) or fits the linear probe on the frozen encoder (FineLast, finetune=False); the checkpoint and
    fine-tuning step are selected on a stratified val_ratio share of (X, y). predict, predict_proba, score and
    classes_ as in scikit-learn; y holds any labels."""

    def __init__(self, wave_length=None, d_model=None, attn_heads=4, layers=8, reg_layers=4, dropout=0.2,
                 vocab_size=None, mask_ratio=0.6, alpha=None, beta=None, momentum=0.99, num_epoch_pretrain=None,
                 probe_every=5, train_batch_size=128, test_batch_size=128, lr=1e-3, weight_decay=0.01,
                 val_ratio=0.2, normalize="channel", gaps="refuse", device=None, random_state=0, threads=None,
                 verbose=True, save_path=None, flags=None, pooling=None, preset="ucr", finetune=True, num_epoch=None):
        super().__init__(
            wave_length=wave_length, d_model=d_model, attn_heads=attn_heads, layers=layers, reg_layers=reg_layers,
            dropout=dropout, vocab_size=vocab_size, mask_ratio=mask_ratio, alpha=alpha, beta=beta, momentum=momentum,
            num_epoch_pretrain=num_epoch_pretrain, probe_every=probe_every, train_batch_size=train_batch_size,
            test_batch_size=test_batch_size, lr=lr, weight_decay=weight_decay, val_ratio=val_ratio,
            normalize=normalize, gaps=gaps, device=device, random_state=random_state, threads=threads,
            verbose=verbose, save_path=save_path, flags=flags, pooling=pooling, preset=preset)
        self.finetune = finetune
        self.num_epoch = num_epoch

    def fit(self, X, y):
        if y is None:
            raise TimeMAEError("TimeMAEClassifier.fit needs labels y; to pretrain on unlabelled series use "
                               "TimeMAEEncoder")
        labels = label_vector(y, "fit(X, y): train labels")
        check_labels(labels, "train", "fit(X, y)")      # before np.unique, which cannot sort NaN or None
        classes, codes = _class_codes(labels)           # codes: 0..K-1 in classes order, which the engine keeps
        checked = self._config(self.num_epoch, seed=0)   # num_epoch None: the preset's (or main.py's)
        if self.finetune and checked.num_epoch < 1:
            raise TimeMAEError(f"finetune=True needs num_epoch >= 1, got {checked.num_epoch} (finetune=False: the "
                               "linear probe)")
        splits = self._splits(X, codes, checked.gaps)
        refusal = unstratifiable(codes, checked.val_ratio)
        if refusal:   # the API has no test split to select on instead, which main.py's hint offers
            raise TimeMAEError(f"fit(X, y): {refusal} for selection; give every class 2 series or more, or "
                               "change val_ratio")
        cfg = self._config(self.num_epoch)   # after every check: a refused fit draws no seed from a RandomState
        if not self.finetune:   # FineLast: the probe alone, whatever num_epoch says
            cfg.num_epoch = 0
        self.classes_ = classes
        # the run folder's files name the classes as y does, not by their codes
        return self._train(replace(splits, classes=tuple(str(c) for c in classes)), cfg)

    def _keep(self, cfg, trainer):
        if self.finetune:
            self._adopt(os.path.join(cfg.save_path, "model.pkl"), "fineall", cfg=cfg)
        else:  # FineLast: the very probe Trainer.finelast fitted and scored, as head (its C, its series)
            self._adopt(os.path.join(cfg.save_path, "pretrain_model.pkl"), "probe", cfg=cfg)
            self.model_.set_head(*trainer.finelast_head)
        self.data_["classes"] = self.classes_.tolist()

    def _adopt_loaded(self, path, ckpt):
        if ckpt.get("head") not in ("fineall", "probe"):
            raise TimeMAEError(f"{path!r} has no trained classification head (a pretraining checkpoint): load it "
                               "with TimeMAEEncoder.load, or use a run's model.pkl")
        self._adopt(path, ckpt["head"], ckpt)
        self.classes_ = np.asarray(self.data_["classes"])

    def predict_proba(self, X, what="X"):
        """Probabilities (n_cases, n_classes), columns in classes_ order; `what` names X in errors."""
        check_is_fitted(self, "classes_")
        return predict_proba(self.model_, self._series(X, what), self.batch_)

    def predict(self, X, what="X"):
        proba = self.predict_proba(X, what)   # first: it checks that the estimator is fitted
        return self.classes_[proba.argmax(axis=1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy of predict(X) against y, as scikit-learn's; labels y of another count than X's series, or of
        another kind than the fit's (text against numbers), are a one-line error."""
        predicted = self.predict(X)
        labels = label_vector(y, "score(X, y): y")
        if len(labels) != len(predicted):
            raise TimeMAEError(f"score(X, y): {len(predicted)} series but {len(labels)} labels")
        text = lambda a: a.dtype.kind in "OUS" and any(isinstance(v, str) for v in a.tolist())  # noqa: E731
        if text(labels) != text(self.classes_):
            kinds = ("text", "numbers") if text(labels) else ("numbers", "text")
            raise TimeMAEError(f"score(X, y): y holds {kinds[0]} but the classifier was fitted on {kinds[1]} "
                               f"(classes_ {self.classes_.tolist()[:5]})")
        return accuracy_score(labels, predicted, sample_weight=sample_weight)


def _class_codes(labels):
    """(the sorted classes, each label's code 0..K-1 in their order)."""
    try:
        classes, codes = np.unique(labels, return_inverse=True)
    except TypeError:   # sorting fails on mixed types
        raise TimeMAEError("y must hold labels of one kind (all numbers or all strings)") from None
    return classes, codes.reshape(-1)


def load(path, device=None):
    """The estimator a checkpoint holds: TimeMAEClassifier when it has a trained head (a saved classifier,
    a run's model.pkl), else TimeMAEEncoder."""
    ckpt = open_checkpoint(path)
    cls = TimeMAEClassifier if ckpt.get("head") in ("fineall", "probe") else TimeMAEEncoder
    return cls._from_checkpoint(path, ckpt, device)
