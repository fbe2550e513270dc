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

import torch
import torch.nn as nn

from model.bert import BertEncoder
from model.config import TimeMAEConfig
from model.layers import DecoupledEncoder, Encoder, Tokenizer, WindowSlicer, sinusoid_init_


def _gather(t, ids):                                             # (B, S, d), (B, K) -> (B, K, d)
    return t.gather(1, ids[..., None].expand(-1, -1, t.shape[-1]))


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

        self.feature_encoder = WindowSlicer(cfg.channels, d_model, cfg.wave_length)
        self.position = nn.Parameter(sinusoid_init_(torch.empty(self.num_windows, d_model)))   # P (S, d)
        self.mask_token = nn.Parameter(torch.randn(d_model) * 0.02)                         # z_mask (d,)
        if cfg.encoder == "bert":
            self.visible_encoder = BertEncoder(cfg.bert_config, cfg.bert_positions, cfg.bert_input_norm,
                                               cfg.bert_freeze_layers)                       # H_theta
        else:
            self.visible_encoder = Encoder(d_model, cfg.attn_heads, cfg.dropout, cfg.layers, res)  # H_theta
        self.decoupled_encoder = DecoupledEncoder(d_model, cfg.attn_heads, cfg.dropout,
                                                  cfg.reg_layers if cfg.decouple else 0, res)     # F_phi
        self.tokenizer = Tokenizer(d_model, cfg.vocab_size, cfg.tokenizer, cfg.target_noise, cfg.tau, cfg.codebook,
                                   cfg.codebook_tau)
        self.tokenizer.requires_grad_(cfg.mcc)  # without MCC the codebook only scores diagnostics
        self.target_encoder = copy.deepcopy(self.visible_encoder).requires_grad_(False)     # H_xi
        self.head = nn.Linear(d_model, cfg.num_classes)                                      # FineAll

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
