"""Building blocks of TimeMAE: window slicer, attention, post-norm Transformer blocks, tokenizer."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Dropout(nn.Module):
    """Dropout. On the CPU its keep-mask takes 16 random bits per element, four from each int64 draw:
    CPU random number generation is single-threaded and made F.dropout the costliest op of a training step.
    p is rounded to a multiple of 1/65536 (0.2 -> 0.199997). Elsewhere it is F.dropout."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536) - 32768     # keep an int16 draw when it is >= this

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        n = x.numel()
        bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)
        keep = bits[:n].view(x.shape) >= self.threshold
        return x * keep * (1.0 / (1.0 - self.p))


class WindowSlicer(nn.Module):
    """Window-slicing feature encoder: one shared Conv1d over non-overlapping windows of length sigma.
    (B, T, C) -> zero-pad T to a multiple of sigma -> (B, S, d) with S = ceil(T / sigma)."""

    def __init__(self, channels, d_model, wave_length):
        super().__init__()
        self.wave_length = wave_length
        self.conv = nn.Conv1d(channels, d_model, kernel_size=wave_length, stride=wave_length)

    def forward(self, x):                                        # (B, T, C)
        pad = -x.shape[1] % self.wave_length
        x = F.pad(x.transpose(1, 2), (0, pad))                   # (B, C, S*sigma)
        return self.conv(x).transpose(1, 2)                      # (B, S, d)


class Attention(nn.Module):
    """Multi-head attention with one fused QKV projection. Self-attention uses it in one matmul;
    cross-attention (decoupled encoder) projects queries and keys/values with slices of the same weight."""

    def __init__(self, d_model, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, t):                                         # (B, L, d) -> (B, h, L, d/h)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x, context=None):                          # x (B, L, d), context (B, Lc, d)
        d = x.shape[-1]
        if context is None:
            q, k, v = self.qkv(x).split(d, dim=-1)
        else:
            q = F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d])
            k, v = F.linear(context, self.qkv.weight[d:], self.qkv.bias[d:]).split(d, dim=-1)
        y = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).flatten(2))            # (B, L, d)


class Residual(nn.Module):
    """Post-norm residual: LayerNorm(x + dropout(a * f(x))), a learnable scalar initialised at 1e-8 so
    each block starts near the identity (the reference's `--enable_res_parameter 1`), else a = 1."""

    def __init__(self, d_model, dropout, learnable_scale):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)
        self.scale = nn.Parameter(torch.tensor(1e-8)) if learnable_scale else None

    def forward(self, x, branch):
        return self.norm(x + self.drop(branch if self.scale is None else self.scale * branch))


class TransformerBlock(nn.Module):
    """Self-attention + FFN (4d, GELU). With `context`, attention is cross-attention from x to context:
    the decoupled encoder's block, where only the queries x are updated."""

    def __init__(self, d_model, heads, dropout, learnable_scale):
        super().__init__()
        self.attn = Attention(d_model, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), Dropout(dropout),
                                 nn.Linear(4 * d_model, d_model))
        self.res_attn = Residual(d_model, dropout, learnable_scale)
        self.res_ffn = Residual(d_model, dropout, learnable_scale)

    def forward(self, x, context=None):
        x = self.res_attn(x, self.attn(x, context))
        return self.res_ffn(x, self.ffn(x))


class Encoder(nn.Module):
    """A stack of self-attention blocks (the visible encoder H_theta and its momentum copy H_xi)."""

    def __init__(self, d_model, heads, dropout, layers, learnable_scale):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, dropout, learnable_scale)
                                    for _ in range(layers))

    def forward(self, x):                                        # (B, L, d) -> (B, L, d)
        for block in self.blocks:
            x = block(x)
        return x


class DecoupledEncoder(nn.Module):
    """F_phi: cross-attention blocks whose queries (mask token + position of each masked window) read the
    visible encoder's outputs; mask tokens never pass through the visible encoder."""

    def __init__(self, d_model, heads, dropout, layers, learnable_scale):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, dropout, learnable_scale)
                                    for _ in range(layers))

    def forward(self, queries, visible):                         # (B, M, d), (B, S-M, d) -> (B, M, d)
        for block in self.blocks:
            queries = block(queries, visible)
        return queries


class Tokenizer(nn.Module):
    """Codebook of V codewords that scores a window embedding against every codeword.

    codebook='linear' scores by inner product, a Linear(d, V) (paper, reference code). 'cosine' scores by the
    cosine between the batch-centred vector and each codeword, divided by `codebook_tau`: raw window embeddings
    share one large bias direction, so inner products send most windows to a few codewords from the start.

    `targets` turns scores into one-hot codeword targets. 'ste' follows the paper: the forward value is the
    hard one-hot, the gradient is that of the Gumbel-softmax (q_hat = q_soft + sg(q_hard - q_soft)).
    'argmax' follows the reference code: a plain index, no gradient. With target_noise='none' the hard target
    is the argmax of the noise-free scores, a deterministic function of the window; with 'gumbel' the Gumbel
    noise (std 1.28) swamps the ~0.3 spread of linear scores at initialisation."""

    def __init__(self, d_model, vocab_size, mode="ste", target_noise="none", tau=1.0, codebook="linear",
                 codebook_tau=0.1):
        super().__init__()
        self.codebook = nn.Linear(d_model, vocab_size, bias=codebook == "linear")
        self.mode, self.target_noise, self.tau = mode, target_noise, tau
        self.kind, self.codebook_tau = codebook, codebook_tau

    def forward(self, z):                                        # (B, L, d) -> scores (B, L, V)
        if self.kind == "linear":
            return self.codebook(z)
        z = z - z.mean(dim=(0, 1), keepdim=True).detach()
        return F.normalize(z, dim=-1) @ F.normalize(self.codebook.weight, dim=-1).T / self.codebook_tau

    def targets(self, scores):                                   # (..., V) -> one-hot (..., V)
        gumbel = -(-torch.rand_like(scores).clamp_min(1e-20).log()).log()   # Gumbel(0, 1)
        noisy = scores + gumbel if self.target_noise == "gumbel" else scores
        hard = F.one_hot(noisy.argmax(-1), scores.shape[-1]).to(scores.dtype)
        if self.mode == "argmax":
            return hard.detach()
        soft = ((scores + gumbel) / self.tau).softmax(-1)
        return hard - soft.detach() + soft


def sinusoid_init_(table):
    """Initialise a learnable (S, d) position table with sinusoids: distinct, bounded codes for every window."""
    pos = torch.arange(table.shape[0], dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, table.shape[1], 2, dtype=torch.float32) * (-math.log(1e4) / table.shape[1]))
    with torch.no_grad():
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq[: table.shape[1] // 2])
    return table
