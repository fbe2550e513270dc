"""TimeMAE (Cheng et al., arXiv 2303.00320): a decoupled masked autoencoder over windows of a time series.

Pretraining step for a batch x (B, T, C):
  Z = window slicer(x) (B, S, d) -> H = Z + P -> random masking into visible (S-M) and masked (M) windows ->
  visible encoder H_theta over the visible windows only -> decoupled encoder F_phi: mask-token queries
  (z_mask + P[masked]) cross-attend to them -> two targets for each masked window:
    MCC: the tokenizer's codeword of Z[masked] (classified from F_phi's output with the same codebook),
    MRR: the momentum encoder H_xi's representation of H[masked] (regressed by F_phi's output).

Ablations (section 4.2 of the paper): mcc=False / mrr=False drop that task (its pair is returned detached, so
it is logged as a diagnostic but gives no gradient); decouple=False puts mask tokens at the masked positions
and runs the whole sequence through the visible encoder (BERT/TST style), whose outputs there are the predictions.
"""
import copy
import inspect
import math

import torch
import torch.nn as nn

from errors import TimeMAEError
from model.bert import BertEncoder
from model.layers import DecoupledEncoder, Encoder, Tokenizer, WindowSlicer, sinusoid_init_


def _gather(t, ids):                                             # (B, S, d), (B, K) -> (B, K, d)
    return t.gather(1, ids[..., None].expand(-1, -1, t.shape[-1]))


class TimeMAE(nn.Module):
    def __init__(self, channels, seq_len, num_classes, d_model=64, attn_heads=4, layers=8, reg_layers=4,
                 dropout=0.2, enable_res_parameter=1, vocab_size=192, wave_length=8, mask_ratio=0.6,
                 mask_mode="sample", tokenizer="ste", target_noise="none", tau=1.0, codebook="linear",
                 codebook_tau=0.1, momentum=0.99, mcc=True, mrr=True, decouple=True, encoder="timemae",
                 bert_config=None, bert_positions="timemae", bert_input_norm="bert", bert_freeze_layers=0):
        super().__init__()
        self.config = dict(channels=channels, seq_len=seq_len, num_classes=num_classes, d_model=d_model,
                           attn_heads=attn_heads, layers=layers, reg_layers=reg_layers, dropout=dropout,
                           enable_res_parameter=enable_res_parameter, vocab_size=vocab_size,
                           wave_length=wave_length, mask_ratio=mask_ratio, mask_mode=mask_mode,
                           tokenizer=tokenizer, target_noise=target_noise, tau=tau, codebook=codebook,
                           codebook_tau=codebook_tau, momentum=momentum, mcc=mcc, mrr=mrr, decouple=decouple,
                           # with BERT the BertConfig itself, so a checkpoint rebuilds the model without --bert_path
                           encoder=encoder, bert_config=bert_config, bert_positions=bert_positions,
                           bert_input_norm=bert_input_norm, bert_freeze_layers=bert_freeze_layers)
        self.num_windows, self.num_masked = check_config(self.config)
        self.mask_mode, self.momentum = mask_mode, momentum
        self.mcc, self.mrr, self.decouple = mcc, mrr, decouple
        res = bool(enable_res_parameter)

        self.feature_encoder = WindowSlicer(channels, d_model, wave_length)
        self.position = nn.Parameter(sinusoid_init_(torch.empty(self.num_windows, d_model)))   # P (S, d)
        self.mask_token = nn.Parameter(torch.randn(d_model) * 0.02)                         # z_mask (d,)
        if encoder == "bert":
            self.visible_encoder = BertEncoder(bert_config, bert_positions, bert_input_norm,
                                               bert_freeze_layers)                           # H_theta
        else:
            self.visible_encoder = Encoder(d_model, attn_heads, dropout, layers, res)       # H_theta
        self.decoupled_encoder = DecoupledEncoder(d_model, attn_heads, dropout, reg_layers if decouple else 0,
                                                  res)                                       # F_phi
        self.tokenizer = Tokenizer(d_model, vocab_size, tokenizer, target_noise, tau, codebook, codebook_tau)
        self.tokenizer.requires_grad_(mcc)  # without MCC the codebook only scores diagnostics
        self.target_encoder = copy.deepcopy(self.visible_encoder).requires_grad_(False)     # H_xi
        self.head = nn.Linear(d_model, num_classes)                                          # FineAll

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def train(self, mode=True):
        """The momentum encoder always runs in eval mode: its targets carry no dropout noise."""
        super().train(mode)
        self.target_encoder.eval()
        return self

    # ------------------------------------------------------------------------------------------ pretraining
    def random_masking(self, batch, device):
        """Indices (B, S-M) of visible and (B, M) of masked windows, every window equally likely.
        Per-sample masks come from argsort of uniform noise; 'batch' mode shares one draw (reference code)."""
        rows = 1 if self.mask_mode == "batch" else batch
        order = torch.rand(rows, self.num_windows, device=device).argsort(dim=1).expand(batch, -1)
        return order[:, self.num_masked:], order[:, : self.num_masked]

    def forward_pretrain(self, x):
        """x (B, T, C) -> dict with the MRR pair, the MCC pair and the target codeword indices."""
        z = self.feature_encoder(x)                              # (B, S, d)
        h = z + self.position                                    # (B, S, d)
        ids_visible, ids_masked = self.random_masking(x.shape[0], x.device)

        queries = self.mask_token + self.position[ids_masked]                # (B, M, d)
        if self.decouple:
            rep_visible = self.visible_encoder(_gather(h, ids_visible))      # (B, S-M, d)
            rep_predicted = self.decoupled_encoder(queries, rep_visible)     # (B, M, d)
        else:  # mask tokens in place of the masked windows, all S positions through H_theta
            index = ids_masked[..., None].expand(-1, -1, h.shape[-1])        # (B, M, d)
            rep_predicted = self.visible_encoder(h.scatter(1, index, queries)).gather(1, index)

        if self.mrr:
            with torch.no_grad():
                rep_target = self.target_encoder(_gather(h, ids_masked))     # (B, M, d)
        else:  # no momentum encoder pass: target = prediction, so the MSE is 0 with zero gradient
            rep_target = rep_predicted.detach()
        codeword_target = self.tokenizer.targets(self.tokenizer(_gather(z, ids_masked)))  # (B, M, V)
        codeword_scores = self.tokenizer(rep_predicted)                                   # (B, M, V)
        if not self.mcc:  # diagnostics only (hits, codebook usage): no gradient through either side
            codeword_target, codeword_scores = codeword_target.detach(), codeword_scores.detach()
        return dict(rep_predicted=rep_predicted, rep_target=rep_target,
                    codeword_scores=codeword_scores, codeword_target=codeword_target)

    @torch.no_grad()
    def update_target_encoder(self):
        """xi <- m * xi + (1 - m) * theta, after every optimiser step."""
        target = list(self.target_encoder.parameters())
        online = [p.detach() for p in self.visible_encoder.parameters()]
        torch._foreach_lerp_(target, online, 1.0 - self.momentum)

    # ------------------------------------------------------------------------------------------ evaluation
    def forward_encoder(self, x):
        """All windows, no mask: (B, T, C) -> (B, S, d)."""
        return self.visible_encoder(self.feature_encoder(x) + self.position)

    def represent(self, x):
        """Series representation for the probe: mean over windows, (B, d)."""
        return self.forward_encoder(x).mean(dim=1)

    def forward(self, x):
        """Class logits (B, num_classes) for fine-tuning."""
        return self.head(self.represent(x))


def config_defaults():
    """Constructor defaults: a checkpoint written before a setting existed was built with its default."""
    params = inspect.signature(TimeMAE.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def check_config(cfg):
    """Raise a one-line TimeMAEError for settings that cannot work; return (S windows, M masked)."""
    if not (cfg["mcc"] or cfg["mrr"]):
        raise TimeMAEError("--no_mcc and --no_mrr together leave nothing to learn: drop at most one of the tasks")
    if cfg["d_model"] % cfg["attn_heads"]:
        raise TimeMAEError(f"--d_model {cfg['d_model']} must be divisible by --attn_heads {cfg['attn_heads']}")
    if cfg["encoder"] == "bert" and cfg["d_model"] != cfg["bert_config"]["hidden_size"]:
        raise TimeMAEError(f"--d_model {cfg['d_model']} differs from the BERT's hidden size "
                           f"{cfg['bert_config']['hidden_size']}: with --encoder bert leave --d_model out")
    if cfg["wave_length"] < 1:
        raise TimeMAEError(f"--wave_length must be at least 1, got {cfg['wave_length']}")
    if cfg["wave_length"] > cfg["seq_len"]:
        raise TimeMAEError(f"--wave_length {cfg['wave_length']} is longer than the series ({cfg['seq_len']} "
                           "steps): choose a window no longer than the series")
    windows = math.ceil(cfg["seq_len"] / cfg["wave_length"])
    masked = int(cfg["mask_ratio"] * windows + 1e-9)  # floor, robust to 0.58 * 100 = 57.99..
    if not 0 < masked < windows:
        raise TimeMAEError(f"--mask_ratio {cfg['mask_ratio']} masks {masked} of {windows} windows: at least "
                           "one window must be masked and one visible")
    return windows, masked
