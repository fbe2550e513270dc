"""TimeMAEConfig: the one list of TimeMAE's settings. The model, the command line (engine.pipeline.build_model),
checkpoints and `config_defaults` all read it.

Settings whose field metadata says `architecture=False` shape training, not the weights (dropout, momentum,
masking): a checkpoint may be loaded into a model that differs in them.
"""
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Optional

from common.errors import TimeMAEError


POOLINGS = ("mean", "max", "meanmax", "flat")   # series representations over the windows (TimeMAE.represent)
# the settings named by a word, and their words (the command line offers the same choices)
CHOICES = {"mask_mode": ("sample", "batch"), "tokenizer": ("ste", "argmax"), "target_noise": ("none", "gumbel"),
           "codebook": ("linear", "cosine"), "codebook_init": ("random", "kmeans"), "pooling": POOLINGS,
           "encoder": ("timemae", "bert"), "bert_positions": ("timemae", "naive"), "bert_input_norm": ("bert", "none")}
MAX_WINDOWS = 32                        # the window rule's ceiling (window_length)
# the STE's codebook that stays in use: low-dimensional cosine codes, k-means initialisation, reset of unused
# codewords; validation preferred it to the inner product on Epilepsy and UWave ("Low-dimensional codes" in
# docs/results.md). run.sh's presets take it and the collapse warning advises it; the defaults keep the paper's
CODEBOOK_IN_USE = {"codebook": "cosine", "codebook_dim": 8, "codebook_init": "kmeans", "codebook_reset": True}


def window_length(seq_len, max_windows=MAX_WINDOWS):
    """The smallest power of two sigma that cuts seq_len steps into at most max_windows windows: 17-32 windows
    whenever seq_len > 32, one window per step below. `--wave_length 0` and the UCR preset use it."""
    return 2 ** max(0, math.ceil(math.log2(seq_len / max_windows)))


def _training(default):
    """A setting that does not change the weights' shapes or meaning."""
    return field(default=default, metadata={"architecture": False})


def _visible(default):
    """A setting of what the visible encoder computes: a checkpoint that differs in one holds another encoder,
    even where its tensors have the same names and shapes (transfer learning refuses it)."""
    return field(default=default, metadata={"visible_encoder": True})


@dataclass
class TimeMAEConfig:
    channels: int
    seq_len: int
    num_classes: int
    d_model: int = _visible(64)
    attn_heads: int = _visible(4)
    layers: int = _visible(8)           # visible encoder H_theta blocks
    reg_layers: int = 4                 # decoupled encoder F_phi blocks
    dropout: float = _training(0.2)
    enable_res_parameter: int = _visible(1)   # residual branches scaled by a learnable scalar initialised at 1e-8
    vocab_size: int = 192               # tokenizer codewords
    wave_length: int = 8                # window length sigma of the window slicer
    mask_ratio: float = _training(0.6)
    mask_mode: str = _training("sample")   # 'sample': a fresh mask per series; 'batch': one per batch
    random_shift: float = _training(0.0)   # pretraining: series start up to this many windows late (random crop)
    scaling: float = _training(0.0)        # pretraining: each series' channels times N(1, scaling^2) factors
    jitter: float = _training(0.0)         # pretraining: N(0, jitter^2) noise added to every step
    resized_crop: float = _training(0.0)   # pretraining: a random crop of >= (1 - this) of a series, stretched back
    tokenizer: str = "ste"              # 'ste': straight-through Gumbel-softmax targets; 'argmax': index targets
    target_noise: str = "none"          # Gumbel noise in the hard codeword target
    tau: float = 1.0                    # Gumbel-softmax temperature of the STE gradient path
    codebook: str = "linear"            # 'linear': inner product; 'cosine': cosine over codebook_tau
    codebook_tau: float = 0.1
    codebook_dim: int = 0               # cosine codebook: > 0 compares in a learned projection of this width
    # keeping the codebook in use (vector-quantisation practice); they shape training, not the weights
    codebook_init: str = _training("random")   # 'kmeans': codewords = k-means centres of window embeddings
    codebook_reset: bool = _training(False)    # unused codewords of an epoch restart at random window embeddings
    codebook_usage: float = _training(0.0)     # weight of the usage regulariser log V - H(mean soft assignment)
    codebook_ema: float = _training(0.0)       # > 0: codewords are EMAs (this decay) of their windows, no gradient
    pooling: str = "mean"               # series representation: 'mean' (paper), 'max', 'meanmax' (2d), 'flat' (S*d)
    phases: int = _training(1)          # the representation averages over this many phases of the window grid
    repr_layers: tuple = ()             # visible-encoder layers pooled side by side (0: window embeddings); (): last
    momentum: float = _training(0.99)   # EMA rate of the momentum encoder H_xi
    mcc: bool = True                    # masked codeword classification
    mrr: bool = True                    # masked representation regression
    decouple: bool = True               # False: mask tokens go through H_theta (no decoupled encoder)
    encoder: str = _visible("timemae")  # 'timemae' or 'bert'
    bert_config: Optional[dict] = _visible(None)   # with BERT the BertConfig itself, so a checkpoint rebuilds the model
    bert_positions: str = _visible("timemae")
    bert_input_norm: str = _visible("bert")
    bert_freeze_layers: int = 0

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, settings):
        """A config from a dict (e.g. a checkpoint's); keys it does not know are refused."""
        unknown = sorted(set(settings) - set(cls.names()))
        if unknown:
            raise ConfigError(f"unknown model settings {unknown}", unknown)
        return cls(**settings)

    def __post_init__(self):
        self.repr_layers = tuple(sorted(set(self.repr_layers)))   # args.json gives a list; the blocks' order

    def to_dict(self):
        return asdict(self)

    @property
    def representation_size(self):
        """Width of the series representation: d_model; twice that with pooling 'meanmax'; S * d_model with 'flat';
        times the number of repr_layers when several layers are pooled side by side."""
        return self.d_model * {"meanmax": 2, "flat": self.num_windows}.get(self.pooling, 1) * \
            max(1, len(self.repr_layers))

    @property
    def num_windows(self):
        """S = ceil(T / sigma) windows."""
        return math.ceil(self.seq_len / self.wave_length)

    @property
    def num_masked(self):
        """M = floor(mask_ratio * S), robust to 0.58 * 100 = 57.99.."""
        return int(self.mask_ratio * self.num_windows + 1e-9)

    def validate(self):
        """Raise a one-line ConfigError for settings that cannot work."""
        for name, words in CHOICES.items():   # a misspelt word would silently build another model
            if getattr(self, name) not in words:
                raise ConfigError(f"{name} must be one of {', '.join(words)}, got {getattr(self, name)!r}", (name,))
        for name, least in (("channels", 1), ("seq_len", 1), ("num_classes", 1), ("d_model", 1), ("attn_heads", 1),
                            ("layers", 1), ("reg_layers", 1), ("vocab_size", 2)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name} must be at least {least}, got {getattr(self, name)}", (name,))
        # `not low <= value` refuses NaN too
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}", ("dropout",))
        if not 0 <= self.mask_ratio <= 1:  # 0 and 1 get the message below, in windows
            raise ConfigError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}", ("mask_ratio",))
        if not 0 <= self.momentum <= 1:
            raise ConfigError(f"momentum must lie in [0, 1], got {self.momentum}", ("momentum",))
        for name in ("tau", "codebook_tau"):  # temperatures divide the scores
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a positive finite number, got {getattr(self, name)}", (name,))
        if not (self.mcc or self.mrr):
            raise ConfigError("mcc=False and mrr=False together leave nothing to learn: drop at most one of the tasks",
                              ("mcc", "mrr"))
        if self.d_model % self.attn_heads:
            raise ConfigError(f"d_model {self.d_model} must be divisible by attn_heads {self.attn_heads}",
                              ("d_model", "attn_heads"))
        if self.encoder == "bert" and not isinstance(self.bert_config, dict):
            raise ConfigError("encoder 'bert' needs bert_config, the BertConfig as a dict (main.py and the API "
                              "read it from bert_path)", ("bert_config",))
        if self.encoder == "bert" and self.d_model != self.bert_config["hidden_size"]:
            raise ConfigError(f"d_model {self.d_model} differs from the BERT's hidden size "
                              f"{self.bert_config['hidden_size']}: with the BERT encoder the width follows BERT",
                              ("d_model",))
        if self.encoder == "bert" and self.bert_positions == "naive" and \
                self.num_windows > self.bert_config["max_position_embeddings"]:
            raise ConfigError(f"bert_positions 'naive' numbers the {self.num_windows} windows with BERT's positions, "
                              f"and this BERT has {self.bert_config['max_position_embeddings']}: use bert_positions "
                              "'timemae' or a longer wave_length", ("bert_positions", "wave_length"))
        if not 0 <= self.codebook_usage < math.inf:
            raise ConfigError(f"codebook_usage must be a finite weight, 0 or more, got {self.codebook_usage}",
                              ("codebook_usage",))
        if not 0 <= self.codebook_ema < 1:
            raise ConfigError(f"codebook_ema must be in [0, 1), got {self.codebook_ema}", ("codebook_ema",))
        if self.codebook_ema and self.codebook != "linear":
            raise ConfigError("codebook_ema keeps nearest-centre codewords: it needs the linear codebook, not "
                              f"{self.codebook!r}", ("codebook_ema", "codebook"))
        if self.codebook_dim < 0 or (self.codebook_dim and self.codebook != "cosine"):
            raise ConfigError(f"codebook_dim {self.codebook_dim}: a projection width (> 0) of the cosine codebook, "
                              "or 0 for none", ("codebook_dim", "codebook"))
        if self.wave_length < 1:
            raise ConfigError(f"wave_length must be at least 1 (or 0 as a flag: from the series length), got "
                              f"{self.wave_length}", ("wave_length",))
        if self.wave_length > self.seq_len:
            raise ConfigError(f"wave_length {self.wave_length} is longer than the series ({self.seq_len} steps): "
                              "choose a window no longer than the series", ("wave_length",))
        if self.repr_layers and self.encoder != "timemae":
            raise ConfigError("repr_layers picks blocks of TimeMAE's own encoder: leave it out with encoder "
                              f"{self.encoder!r}", ("repr_layers", "encoder"))
        if self.repr_layers and not (0 <= min(self.repr_layers) and max(self.repr_layers) <= self.layers):
            raise ConfigError(f"repr_layers {list(self.repr_layers)} must lie in 0 (the window embeddings) to "
                              f"{self.layers} (the visible encoder's last block)", ("repr_layers", "layers"))
        if self.phases < 1:
            raise ConfigError(f"phases must be 1 or more, got {self.phases}", ("phases",))
        for name, unit in (("random_shift", "windows"), ("scaling", "standard deviations"),
                           ("jitter", "standard deviations")):   # the augmentations: 0 is off
            if not 0 <= getattr(self, name) < math.inf:          # NaN is refused too
                raise ConfigError(f"{name} must be a finite number of {unit}, 0 or more, got {getattr(self, name)}",
                                  (name,))
        if not 0 <= self.resized_crop < 1:
            raise ConfigError(f"resized_crop must be at least 0 (off) and below 1 (a crop keeps more than nothing "
                              f"of a series), got {self.resized_crop}", ("resized_crop",))
        if self.num_windows < 2:
            raise ConfigError(f"series of {self.seq_len} step(s) make one window of {self.wave_length} step(s): "
                              "masking needs at least 2 windows (one masked, one visible): a shorter wave_length, or "
                              "longer series", ("wave_length",))
        if not 0 < self.num_masked < self.num_windows:
            raise ConfigError(f"mask_ratio {self.mask_ratio} masks {self.num_masked} of {self.num_windows} "
                              "windows: at least one window must be masked and one visible", ("mask_ratio",))
        return self


class ConfigError(TimeMAEError):
    """A model setting that cannot work, worded in the settings' own names (`settings` lists them), so a
    front end can name its own spelling of them (the command line: --flags)."""

    def __init__(self, message, settings=()):
        super().__init__(message)
        self.settings = tuple(settings)


def config_defaults():
    """Every setting's default: a checkpoint written before a setting existed was built with its default."""
    return {f.name: f.default for f in fields(TimeMAEConfig) if f.default is not MISSING}


def as_flags(settings):
    """Settings as main.py's flags, which carry their names: {'codebook_dim': 8, 'codebook_reset': True} ->
    ['--codebook_dim', '8', '--codebook_reset']."""
    return [item for name, value in settings.items()
            for item in ([f"--{name}"] if value is True else [f"--{name}", str(value)])]


def architecture_settings():
    """The settings that must agree between a checkpoint and the model it is loaded into."""
    return [f.name for f in fields(TimeMAEConfig) if f.metadata.get("architecture", True)]


def visible_encoder_settings():
    """The settings of what the visible encoder computes, which a transferred checkpoint must share."""
    return [f.name for f in fields(TimeMAEConfig) if f.metadata.get("visible_encoder")]
