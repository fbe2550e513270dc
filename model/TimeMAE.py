"""TimeMAE (Cheng et al., arXiv 2303.00320): a decoupled masked autoencoder over windows of a time series.

Pretraining step for a batch x (B, T, C):
  Z = window slicer(x) (B, S, d) -> H = Z + P -> random masking into visible (S-M) and masked (M) windows ->
  visible encoder H_theta over the visible windows only -> decoupled encoder F_phi: mask-token queries
  (z_mask + P[masked]) cross-attend to them -> two targets for each masked window:
    MCC: the tokenizer's codeword of Z[masked] (classified from F_phi's output with the same codebook),
    MRR: the momentum encoder H_xi's representation of H[masked] (regressed by F_phi's output).

Ablations (section 4.2 of the paper): mcc=False detaches the codeword pair (hits and codebook usage are still
logged, with no gradient); mrr=False skips the momentum encoder's pass and takes the prediction itself, detached,
as the target (an MSE of 0 with no gradient); decouple=False puts mask tokens at the masked positions and runs
the whole sequence through the visible encoder (BERT/TST style), whose outputs there are the predictions.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.masked import masked_mean
from model.bert import BertEncoder
from model.config import TimeMAEConfig
from model.layers import DecoupledEncoder, Tokenizer, VisibleEncoder, WindowSlicer, sinusoid_init_


def _gather(t, ids):                                             # (B, S, d), (B, K) -> (B, K, d)
    return t.gather(1, ids[..., None].expand(-1, -1, t.shape[-1]))


def _real_steps(x):                                              # (B, T, C) -> (B, 1) T_i, padding at the end
    return (~x.isnan().all(-1)).sum(1, keepdim=True)


def _shift(x, r):
    """x (B, T, C), r (B, 1) -> series i moved r_i steps earlier: its first r_i steps dropped, r_i padding (NaN)
    steps appended."""
    source = torch.arange(x.shape[1], device=x.device) + r               # (B, T)
    shifted = x.gather(1, source.clamp_max(x.shape[1] - 1)[..., None].expand_as(x))
    return shifted.masked_fill((source >= x.shape[1])[..., None], float("nan"))


class TimeMAE(nn.Module):
    """Built from a TimeMAEConfig, or from its settings as keyword arguments: TimeMAE(channels=1, seq_len=178,
    num_classes=2, wave_length=8)."""

    def __init__(self, config=None, **settings):
        super().__init__()
        cfg = (config or TimeMAEConfig(**settings)).validate()
        self.cfg = cfg
        self.num_windows, self.num_masked = cfg.num_windows, cfg.num_masked
        self.mask_mode, self.momentum = cfg.mask_mode, cfg.momentum
        self.mcc, self.mrr, self.decouple = cfg.mcc, cfg.mrr, cfg.decouple
        res, d_model = bool(cfg.enable_res_parameter), cfg.d_model

        self.window_slicer = WindowSlicer(cfg.channels, d_model, cfg.wave_length)
        self.position = nn.Parameter(sinusoid_init_(torch.empty(self.num_windows, d_model)))   # P (S, d)
        self.mask_token = nn.Parameter(torch.randn(d_model) * 0.02)                         # z_mask (d,)
        if cfg.encoder == "bert":
            self.visible_encoder = BertEncoder(cfg.bert_config, cfg.bert_positions, cfg.bert_input_norm,
                                               cfg.bert_freeze_layers)                       # H_theta
        else:
            self.visible_encoder = VisibleEncoder(d_model, cfg.attn_heads, cfg.dropout, cfg.layers, res)  # H_theta
        self.decoupled_encoder = DecoupledEncoder(d_model, cfg.attn_heads, cfg.dropout,
                                                  cfg.reg_layers if cfg.decouple else 0, res)     # F_phi
        self.tokenizer = Tokenizer(d_model, cfg.vocab_size, cfg.tokenizer, cfg.target_noise, cfg.tau, cfg.codebook,
                                   cfg.codebook_tau, cfg.codebook_ema, cfg.codebook_dim)
        # without MCC the codebook only scores diagnostics; an EMA codebook follows its windows, not gradients
        self.tokenizer.requires_grad_(cfg.mcc and not cfg.codebook_ema)
        self.momentum_encoder = copy.deepcopy(self.visible_encoder).requires_grad_(False)     # H_xi
        self.head = nn.Linear(cfg.representation_size, cfg.num_classes)                       # FineAll

    # module names of checkpoints and pickles written before the modules took the paper's names
    FORMER_NAMES = {"feature_encoder": "window_slicer", "target_encoder": "momentum_encoder"}

    @classmethod
    def current_name(cls, name):
        """A tensor or module name of an earlier version ('feature_encoder.conv.weight', 'target_encoder') as
        today's (FORMER_NAMES); any other name as it is."""
        module, dot, rest = name.partition(".")
        return cls.FORMER_NAMES.get(module, module) + dot + rest

    @classmethod
    def renamed_state(cls, state):
        """A checkpoint's state_dict with its former module names as today's (current_name); one that holds a
        tensor under both names is no checkpoint this code wrote, and is refused."""
        if not all(isinstance(name, str) for name in state):
            raise ValueError("its weights are keyed by something other than tensor names")
        twice = sorted(name for name in state if cls.current_name(name) != name and cls.current_name(name) in state)
        if twice:
            shown = ", ".join(twice[:3]) + (", ..." if len(twice) > 3 else "")
            raise ValueError(f"it holds tensors under their former and today's names ({shown})")
        return {cls.current_name(name): tensor for name, tensor in state.items()}

    def __setstate__(self, state):
        """A TimeMAE pickled (inside an API estimator) before its modules took the paper's names gets today's."""
        state["_modules"] = {self.current_name(name): module for name, module in state["_modules"].items()}
        super().__setstate__(state)

    @property
    def config(self):
        """The settings as a plain dict (what checkpoints store)."""
        return self.cfg.to_dict()

    @classmethod
    def from_config(cls, config):
        """From a TimeMAEConfig or its dict (a checkpoint's 'config')."""
        return cls(config if isinstance(config, TimeMAEConfig) else TimeMAEConfig.from_dict(config))

    def train(self, mode=True):
        """The momentum encoder always runs in eval mode: its targets carry no dropout noise."""
        super().train(mode)
        self.momentum_encoder.eval()
        return self

    # ------------------------------------------------------------------------------------------ padding
    def window_padding(self, x, padded=None):
        """x (B, T, C) with NaN at padded time steps (variable-length series, see datautils.normalize) ->
        (x with NaN filled by 0, (B, S) bool True where a window is all padding, or None when none is).
        padded=False: the caller knows x holds no padding (a split of fixed-length series); True: it knows the
        data may hold some (variable-length series), so the mask is returned, all False for a batch without
        padding. Neither checks the batch: on a GPU that check waits for the device in every step, and under
        torch.compile it splits the graph. None: check the batch."""
        if padded is False:
            return x, None
        step_pad = x.isnan().all(-1)                                          # (B, T)
        x = x.nan_to_num(0.0)
        if padded is None and not bool(step_pad.any()):
            return x, None
        sigma = self.cfg.wave_length
        step_pad = F.pad(step_pad, (0, -x.shape[1] % sigma), value=True)      # (B, S*sigma)
        return x, step_pad.unflatten(1, (-1, sigma)).all(-1)                  # (B, S)

    # ------------------------------------------------------------------------------------------ pretraining
    @property
    def max_shift(self):
        """The most steps random_shift moves a series."""
        return int(self.cfg.random_shift * self.cfg.wave_length)

    def random_shift(self, x):
        """x (B, T, C) -> x with series i moved r_i steps earlier: its first r_i steps dropped, r_i padding (NaN)
        steps appended, r_i uniform on {0, ..., min(floor(random_shift * sigma), T_i - 1)} for T_i real steps.
        A random crop that moves the window grid: on a small set the windows meet each series at a new phase
        in every epoch. No draw at all when random_shift is 0, so the default run is unchanged."""
        most = self.max_shift
        if most == 0:
            return x
        top = (_real_steps(x) - 1).clamp(0, most)                             # (B, 1)
        return _shift(x, (torch.rand(top.shape, device=x.device) * (top + 1)).long())

    def scale_and_jitter(self, x):
        """x (B, T, C) -> x * s + e, s (B, 1, C) ~ N(1, scaling^2) per series and channel, e (B, T, C) ~
        N(0, jitter^2) per step: the weak augmentation of contrastive time-series methods (TS-TCC), here to
        keep a small set from being memorised window by window. Padding (NaN) stays padding. No draw at all
        when both are 0, so the default run is unchanged."""
        if self.cfg.scaling > 0:
            x = x * (1.0 + self.cfg.scaling * torch.randn(x.shape[0], 1, x.shape[2], device=x.device))
        if self.cfg.jitter > 0:
            x = x + self.cfg.jitter * torch.randn_like(x)
        return x

    def resized_crop(self, x):
        """x (B, T, C) -> series i replaced by the crop of its T_i real steps from step a_i to a_i + l_i (T_i - 1),
        l_i ~ U[1 - s, 1] and a_i uniform on what is left, stretched back to T_i steps by linear interpolation
        (s = resized_crop): MAE's random resized crop, in time, so a small set shows the encoders each series at
        new speeds and offsets.
        Padding stays padding. No draw at all when s is 0, so the default run is unchanged."""
        s = self.cfg.resized_crop
        if s == 0:
            return x
        real = _real_steps(x)                                                 # (B, 1) T_i
        # positions in float32 at least: bfloat16 cannot tell step 300 from 301
        draws = torch.rand(x.shape[0], 2, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        span = (real - 1) * (1 - s * draws[:, :1])                           # (B, 1) l_i (T_i - 1) steps
        start = (real - 1 - span) * draws[:, 1:]                              # (B, 1) a_i
        steps = torch.arange(x.shape[1], device=x.device)                     # (T,)
        source = start + steps * span / (real - 1).clamp_min(1)               # (B, T) where step j reads
        low = source.floor().long().clamp(0, x.shape[1] - 1)                  # padding steps read anything
        high = torch.minimum(low + 1, (real - 1).clamp_min(0))
        weight = (source - low)[..., None].to(x.dtype)                        # (B, T, 1)
        out = torch.lerp(_gather(x, low), _gather(x, high), weight)           # (B, T, C)
        return out.masked_fill((steps >= real)[..., None], float("nan"))

    def random_masking(self, batch, device, window_pad=None):
        """Indices (B, S-M) of visible and (B, M) of masked windows, every window equally likely.
        Per-sample masks come from argsort of uniform noise; 'batch' mode shares one draw (reference code).

        With padding (window_pad (B, S)) series i has S_i real windows and floor(ratio * S_i) of them are
        masked: padding windows get noise 2 (> any uniform draw), so they sort after every real window and are
        never masked. Returns (ids_visible (B, S-M), ids_masked (B, M), visible_pad (B, S-M), masked_valid (B, M)):
        visible_pad marks visible slots that hold padding (hidden from attention), masked_valid the masked slots
        that count (the rest are filler, outside every loss). Series i has S_i - M_i real visible windows, which
        never decreases with S_i, so the S - M slots of a full-length series hold every series' (fixed width:
        nothing is read back from the device)."""
        rows = 1 if self.mask_mode == "batch" else batch
        noise = torch.rand(rows, self.num_windows, device=device).expand(batch, -1)           # (B, S)
        if window_pad is None:
            order = noise.argsort(dim=1)
            return order[:, self.num_masked:], order[:, : self.num_masked], None, None
        order = noise.masked_fill(window_pad, 2.0).argsort(dim=1)
        real = (~window_pad).sum(1, keepdim=True)                                             # (B, 1) S_i
        n_masked = (self.cfg.mask_ratio * real + 1e-9).long()                                 # (B, 1) M_i
        ids_masked = order[:, : self.num_masked]                                              # (B, M)
        masked_valid = torch.arange(self.num_masked, device=device) < n_masked                # (B, M)
        is_masked = torch.zeros_like(window_pad).scatter(1, ids_masked, masked_valid)         # (B, S)
        # real visible windows first, then padding, then masked
        rank = is_masked.long() * 2 + window_pad.long()
        ids_visible = rank.argsort(dim=1, stable=True)[:, : self.num_windows - self.num_masked]  # (B, S-M)
        return ids_visible, ids_masked, rank.gather(1, ids_visible) > 0, masked_valid

    def forward_pretrain(self, x, padded=None):
        """x (B, T, C) -> dict with the MRR pair, the MCC pair (targets and their soft assignments),
        `masked_valid` (B, M) bool, or None when every masked slot is a real window, and `z_masked`, the
        masked windows' embeddings (B, M, d) that the targets tokenize (an EMA codebook follows them).
        padded: see window_padding (a random shift pads any series)."""
        padded = True if self.max_shift else padded
        x, window_pad = self.window_padding(self.scale_and_jitter(self.random_shift(self.resized_crop(x))), padded)
        z = self.window_slicer(x)                              # (B, S, d)
        h = z + self.position                                    # (B, S, d)
        ids_visible, ids_masked, visible_pad, valid = self.random_masking(x.shape[0], x.device, window_pad)

        # positions by gather, not indexing: indexing's backward accumulates the B*M rows into the table in a
        # thread-dependent order, so the same seed gave a different `position` gradient from run to run
        queries = self.mask_token + _gather(self.position.expand(x.shape[0], -1, -1), ids_masked)   # (B, M, d)
        if self.decouple:
            rep_visible = self.visible_encoder(_gather(h, ids_visible), visible_pad)        # (B, S-M, d)
            rep_predicted = self.decoupled_encoder(queries, rep_visible, visible_pad)       # (B, M, d)
        else:  # mask tokens in place of the masked windows, all S positions through H_theta
            index = ids_masked[..., None].expand(-1, -1, h.shape[-1])        # (B, M, d)
            filled = h.scatter(1, index, queries)
            if valid is not None:  # filler slots keep their window
                filled = torch.where(torch.zeros_like(window_pad).scatter(1, ids_masked, valid)[..., None],
                                     filled, h)
            rep_predicted = self.visible_encoder(filled, window_pad).gather(1, index)

        if self.mrr:
            # filler slots are hidden from the masked windows (a series with none masked attends to all, so
            # no row is empty: its outputs are outside the loss)
            target_pad = None if valid is None else ~valid & valid.any(1, keepdim=True)
            with torch.no_grad():
                rep_target = self.momentum_encoder(_gather(h, ids_masked), target_pad)     # (B, M, d)
        else:  # no momentum encoder pass: target = prediction, so the MSE is 0 with zero gradient
            rep_target = rep_predicted.detach()
        z_masked = _gather(z, ids_masked)                                                  # (B, M, d)
        codeword_target, codeword_soft = self.tokenizer.targets(self.tokenizer(z_masked, valid))
        codeword_scores = self.tokenizer(rep_predicted, valid)                            # (B, M, V) both
        if not self.mcc:  # diagnostics only (hits, codebook usage): no gradient through either side
            codeword_target, codeword_scores = codeword_target.detach(), codeword_scores.detach()
            codeword_soft = codeword_soft.detach()
        return dict(rep_predicted=rep_predicted, rep_target=rep_target, codeword_scores=codeword_scores,
                    codeword_target=codeword_target, codeword_soft=codeword_soft, masked_valid=valid,
                    z_masked=z_masked.detach())

    @torch.no_grad()
    def update_momentum_encoder(self, taken=None):
        """xi <- m * xi + (1 - m) * theta, after every optimiser step; `taken` (a bool tensor, on the device) says
        whether the step was taken: a skipped step (--skip_nonfinite) leaves xi as it was, with no host sync."""
        target = list(self.momentum_encoder.parameters())
        online = [p.detach() for p in self.visible_encoder.parameters()]
        # a flag's weight goes as a list of 0-dim tensors, which stay on the device (one tensor is read as a number)
        weight = 1.0 - self.momentum if taken is None else [(1.0 - self.momentum) * taken] * len(target)
        torch._foreach_lerp_(target, online, weight)

    # ------------------------------------------------------------------------------------------ evaluation
    def forward_encoder(self, x, padded=None):
        """All windows, no mask: (B, T, C) -> ((B, S, d), window padding (B, S) bool or None); padding windows
        are hidden from attention. With repr_layers, (B, S, k * d): those k layers' outputs side by side.
        padded: see window_padding."""
        x, window_pad = self.window_padding(x, padded)
        h = self.window_slicer(x) + self.position                                # (B, S, d)
        if self.cfg.repr_layers:  # several blocks side by side (validate: TimeMAE's own encoder)
            return self.visible_encoder(h, window_pad, layers=self.cfg.repr_layers), window_pad
        return self.visible_encoder(h, window_pad), window_pad

    @property
    def num_phases(self):
        """K = min(phases, sigma): a window of sigma steps meets a series at sigma phases of its grid at most."""
        return min(self.cfg.phases, self.cfg.wave_length)

    def grid_phases(self, x):
        """x (B, T, C) -> (K*B, T, C): K = num_phases copies of the batch, copy j started floor(j * sigma / K)
        steps late (at most T_i - 1), so the window grid meets each series at K phases."""
        phases = self.num_phases
        if phases == 1:
            return x
        offsets = torch.arange(phases, device=x.device) * self.cfg.wave_length // phases       # (K,)
        r = torch.minimum(offsets[:, None, None], (_real_steps(x) - 1).clamp_min(0))          # (K, B, 1)
        return _shift(x.expand(phases, -1, -1, -1).flatten(0, 1), r.flatten(0, 1))

    def represent(self, x, padded=None):
        """Series representation (probes, FineAll, encode) pooled over the real (non-padding) windows: the mean
        (paper), the max, or both, (B, d) or (B, 2d) with pooling 'meanmax'; with 'flat' the windows side by side
        in time order, (B, S*d), padding windows as zeros (the position of a shape, which a mean discards).
        With phases K > 1 it is the average of the representations at K phases of the window grid (grid_phases):
        one fixed grid cuts a short shape at an arbitrary phase, which a small labelled set cannot average out.
        padded: see window_padding (a late phase pads any series)."""
        reps = self.phase_representations(x, padded)                          # (K, B, D)
        return reps[0] if len(reps) == 1 else reps.mean(0)  # one phase: FineAll's training steps, nothing to average

    def phase_representations(self, x, padded=None):
        """(K, B, D): the series representation at each of the K phases of the window grid (grid_phases)."""
        copies = self.grid_phases(x)                                          # (K*B, T, C)
        pooled = self.pool(*self.forward_encoder(copies, padded if copies is x else True))   # (K*B, D)
        return pooled.unflatten(0, (-1, x.shape[0]))

    def pool(self, rep, window_pad):
        """Window representations (B, S, d) and padding (B, S) or None -> the series representation (B, D)."""
        if self.cfg.pooling == "flat":
            real = rep if window_pad is None else rep.masked_fill(window_pad[..., None], 0.0)
            return real.flatten(1)                                            # (B, S*d)
        pooled = []
        if self.cfg.pooling in ("mean", "meanmax"):
            pooled.append(masked_mean(rep, None if window_pad is None else ~window_pad[..., None], dim=1))
        if self.cfg.pooling in ("max", "meanmax"):
            masked = rep if window_pad is None else rep.masked_fill(window_pad[..., None], float("-inf"))
            pooled.append(masked.amax(dim=1))
        return torch.cat(pooled, dim=-1) if len(pooled) > 1 else pooled[0]

    def freeze_pretraining_parts(self):
        """Fine-tuning trains the encoder and the head: the decoupled encoder, the tokenizer, the momentum encoder
        and the mask token are frozen (also so that DDP sees only parameters in use)."""
        for part in (self.decoupled_encoder, self.tokenizer, self.momentum_encoder, self.mask_token):
            part.requires_grad_(False)

    @torch.no_grad()
    def set_head(self, weight, bias):
        """The classification head becomes this (num_classes, D) weight and bias: a linear probe, folded in."""
        self.head.weight.copy_(weight)
        self.head.bias.copy_(bias)

    def forward(self, x, padded=None):
        """Class logits (B, num_classes) for fine-tuning; padded: see window_padding."""
        return self.head(self.represent(x, padded))
