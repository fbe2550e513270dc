"""Building blocks of TimeMAE: window slicer, attention, post-norm Transformer blocks, tokenizer."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.masked import masked_mean


class Dropout(nn.Module):
    """Dropout. On the CPU its keep-mask takes 16 random bits per element, four from each int64 draw:
    CPU random number generation is single-threaded and made F.dropout the costliest op of a training step.
    p is rounded to a multiple of 1/65536 (0.2 -> 0.199997). Elsewhere it is F.dropout."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.threshold = round(p * 65536) - 32768     # keep an int16 draw when it is >= this

    def active(self):
        return self.training and self.p > 0

    def mask(self, x):
        """The CPU keep-mask already scaled by 1 / (1 - p), in x's shape and dtype: one multiply applies it."""
        n = x.numel()
        bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)
        # an in-place comparison on a float copy writes 1.0/0.0 directly: several times faster than a bool mask.
        # bfloat16 (--amp) would round the draws before the comparison, and change the rate: compare in float32
        exact = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        keep = bits[:n].view(x.shape).to(exact).ge_(self.threshold).mul_(1.0 / (1.0 - self.p))
        return keep.to(x.dtype)

    def forward(self, x):
        if not self.active():
            return x
        return x * self.mask(x) if x.device.type == "cpu" else F.dropout(x, self.p, True)

    def add(self, x, branch):
        """x + dropout(branch); on the CPU one fused multiply-add (addcmul) instead of a multiply and an add."""
        if not self.active():
            return x + branch
        if branch.device.type == "cpu":
            return torch.addcmul(x, branch, self.mask(branch))
        return x + F.dropout(branch, self.p, True)


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


# ATen's CPU softmax over rows shorter than its vector of floats (16 with AVX512, 8 with AVX2) is 3-8 times
# slower than over a full vector. Below 16, SoftmaxLastDim (training) is faster with either kernel set, and ATen's
# masked softmax (fused blocks) faster with AVX512, about even with AVX2 (benchmarks/softmax_rows.py;
# docs/speed.md, 'Short rows')
SHORT_ROWS = 16


class SoftmaxLastDim(torch.autograd.Function):
    """Softmax over the last dimension from elementwise ops and its exact gradient y * (g - sum(g * y)):
    on the CPU, faster than ATen's softmax over rows shorter than SHORT_ROWS (`softmax_last_dim`)."""

    @staticmethod
    def forward(ctx, scores):
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))   # bfloat16 (--amp): in float32
        e = (scores - scores.amax(-1, keepdim=True)).exp_()
        y = e.div_(e.sum(-1, keepdim=True))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(-1, keepdim=True))


def softmax_last_dim(scores):
    """Softmax over the last dimension (in at least float32) by whichever CPU kernel is faster at its length."""
    if scores.shape[-1] < SHORT_ROWS:
        return SoftmaxLastDim.apply(scores)
    return scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32))


def spelled_out(x):
    """Whether attention on x's device is computed from bmm and SoftmaxLastDim rather than SDPA: on the CPU it
    is faster at these lengths (a dozen windows) in training and evaluation alike, since SDPA's CPU kernels take
    no dropout (they fall back to a math path with a slow bernoulli mask and ATen's softmax) and their flash
    kernel costs more than the two small bmm's. On a GPU SDPA's fused kernels win. (Tests patch this to run the
    GPU's SDPA path on the CPU.)"""
    return x.device.type == "cpu"


class Attention(nn.Module):
    """Multi-head attention with one fused QKV projection. Self-attention uses it in one matmul;
    cross-attention (decoupled encoder) projects queries and keys/values with slices of the same weight.
    `scale` (the residual's learnable scalar, or None) multiplies the output: it is folded into the small
    output weight and bias, which costs far less than multiplying the (B, L, d) output."""

    def __init__(self, d_model, heads, dropout):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = Dropout(dropout)

    def _heads(self, t, parts):                                  # (B, L, parts*d) -> (parts, B, h, L, d/h)
        return t.unflatten(-1, (parts, self.heads, -1)).permute(2, 0, 3, 1, 4)

    def forward(self, x, context=None, scale=None, key_padding=None):  # x (B, L, d), context (B, Lc, d)
        """key_padding (B, Lc) bool, True where a key is padding: such keys get no attention."""
        d = x.shape[-1]
        if context is None:
            q, k, v = self._heads(self.qkv(x), 3)
        else:
            q = self._heads(F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d]), 1)[0]
            k, v = self._heads(F.linear(context, self.qkv.weight[d:], self.qkv.bias[d:]), 2)
        if spelled_out(x):
            y = self._spelled_out(q, k, v, key_padding)
        else:
            keep = None if key_padding is None else ~key_padding[:, None, None, :]        # (B, 1, 1, Lc)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                               dropout_p=self.drop.p if self.drop.active() else 0.0)
        return scaled_linear(y.transpose(1, 2).flatten(2), self.out, scale)   # (B, L, d)

    def _spelled_out(self, q, k, v, key_padding):
        """softmax(q k^T / sqrt(d_h)) -> dropout -> @ v as two bmm's over (B*h) with one copy of the heads each
        way: the 1/sqrt(d_h) rides on the first bmm (baddbmm's alpha) instead of a pass over q."""
        B, h, L, dh = q.shape
        q, k, v = (t.reshape(B * h, -1, dh) for t in (q, k, v))                          # (B*h, L or Lc, d/h)
        logits = torch.baddbmm(q.new_empty(()).expand(B * h, L, k.shape[1]), q, k.transpose(1, 2),
                               beta=0.0, alpha=dh ** -0.5)                                # (B*h, L, Lc)
        logits = logits.view(B, h, L, -1)                                               # (B, h, L, Lc)
        if key_padding is not None:
            logits = logits.masked_fill(key_padding[:, None, None, :], float("-inf"))
        weights = self.drop(softmax_last_dim(logits)).flatten(0, 1)                      # (B*h, L, Lc)
        return torch.bmm(weights.to(v.dtype), v).view(B, h, L, dh)                       # (B, h, L, d/h)


def scaled_linear(x, linear, scale):
    """scale * linear(x) for a scalar `scale` (None: 1), with the scalar applied to the weight and bias."""
    if scale is None:
        return linear(x)
    return F.linear(x, linear.weight * scale, linear.bias * scale)


class Residual(nn.Module):
    """Post-norm residual: LayerNorm(x + dropout(a * f(x))), a learnable scalar initialised at 1e-8 so
    each block starts near the identity (the reference's `--enable_res_parameter 1`), else a = 1.
    The block applies a inside f's last linear layer (see `scaled_linear`); this module holds a."""

    def __init__(self, d_model, dropout, learnable_scale):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.drop = Dropout(dropout)
        self.scale = nn.Parameter(torch.tensor(1e-8)) if learnable_scale else None

    def forward(self, x, scaled_branch):                         # x + dropout(a * f(x)), normalised
        return self.norm(self.drop.add(x, scaled_branch))


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

    def forward(self, x, context=None, key_padding=None):       # key_padding: (B, L or Lc) of x or context
        if context is None and self.fusable(x):
            return self.fused(x, key_padding)
        x = self.res_attn(x, self.attn(x, context, self.res_attn.scale, key_padding))
        hidden = self.ffn[2](self.ffn[1](self.ffn[0](x)))   # Linear, GELU, Dropout: (B, L, 4d)
        return self.res_ffn(x, scaled_linear(hidden, self.ffn[3], self.res_ffn.scale))

    def fusable(self, x):
        """Whole-block fusion applies to passes that need no gradient and no dropout (the momentum encoder's
        targets, representations for the probe) outside autocast, in the weights' dtype."""
        return (not self.training and not torch.is_grad_enabled() and x.dtype == self.attn.qkv.weight.dtype
                and not torch.is_autocast_enabled(x.device.type))

    def fused(self, x, key_padding=None):                        # (B, L, d), (B, L) bool -> (B, L, d)
        """The same post-norm self-attention block as one ATen op, the fast path of nn.TransformerEncoderLayer
        (exact GELU, post-norm): one ATen call instead of ~20, and a quarter less time per block on the CPU.
        The residual scalars are folded into the two output weights, as `scaled_linear` does. With a key
        padding mask the op's softmax is ATen's masked softmax, up to 3 times faster on the CPU than its plain
        one over rows shorter than SHORT_ROWS: such rows get a mask that hides nothing."""
        if key_padding is None and x.device.type == "cpu" and x.shape[1] < SHORT_ROWS:
            key_padding = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        a1 = 1.0 if self.res_attn.scale is None else self.res_attn.scale
        a2 = 1.0 if self.res_ffn.scale is None else self.res_ffn.scale
        attn, n1, n2, f1, f2 = self.attn, self.res_attn.norm, self.res_ffn.norm, self.ffn[0], self.ffn[3]
        return torch._transformer_encoder_layer_fwd(
            x, x.shape[-1], attn.heads, attn.qkv.weight, attn.qkv.bias, attn.out.weight * a1, attn.out.bias * a1,
            True, False, n1.eps, n1.weight, n1.bias, n2.weight, n2.bias,     # use_gelu, norm_first, eps, norms
            f1.weight, f1.bias, f2.weight * a2, f2.bias * a2,                # FFN weights
            key_padding, None if key_padding is None else 1)                 # mask type 1: key padding (B, L)


class VisibleEncoder(nn.Module):
    """A stack of self-attention blocks (the visible encoder H_theta and its momentum copy H_xi)."""

    def __init__(self, d_model, heads, dropout, layers, learnable_scale):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, dropout, learnable_scale)
                                    for _ in range(layers))

    def forward(self, x, key_padding=None, layers=()):           # (B, L, d), (B, L) bool -> (B, L, d)
        """layers: return the outputs of these blocks side by side, (B, L, len(layers) * d), 0 being the input
        (the window embeddings); (): the last block's."""
        kept = [x] if 0 in layers else []
        for i, block in enumerate(self.blocks, 1):
            x = block(x, key_padding=key_padding)
            if i in layers:
                kept.append(x)
        return torch.cat(kept, -1) if layers else x


Encoder = VisibleEncoder   # the class's former name, which estimators pickled before the rename refer to


class DecoupledEncoder(nn.Module):
    """F_phi: cross-attention blocks whose queries (mask token + position of each masked window) read the
    visible encoder's outputs; mask tokens never pass through the visible encoder."""

    def __init__(self, d_model, heads, dropout, layers, learnable_scale):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, dropout, learnable_scale)
                                    for _ in range(layers))

    def forward(self, queries, visible, key_padding=None):      # (B, M, d), (B, S-M, d), (B, S-M) -> (B, M, d)
        for block in self.blocks:
            queries = block(queries, visible, key_padding)
        return queries


class Tokenizer(nn.Module):
    """Codebook of V codewords that scores a window embedding against every codeword.

    codebook='linear' scores by inner product, a Linear(d, V) (paper, reference code). 'cosine' scores by the
    cosine between the batch-centred vector and each codeword, divided by `codebook_tau`: raw window embeddings
    share one large bias direction, so inner products send most windows to a few codewords from the start.
    With `dim` > 0 the cosine is taken in a learned linear projection of that width (ViT-VQGAN's factorised,
    l2-normalised low-dimensional codes: Yu et al. 2022).

    `targets` turns scores into one-hot codeword targets from ONE sample y = (scores + g) / tau, where g is
    Gumbel noise with target_noise='gumbel' (the paper's Gumbel-softmax) and 0 with 'none' (a deterministic
    function of the window; Gumbel noise, std 1.28, swamps the ~0.3 spread of linear scores at initialisation).
    'ste' follows the paper: the forward value is one_hot(argmax y), the gradient that of softmax(y)
    (q_hat = q_soft + sg(q_hard - q_soft), both halves from the same y). 'argmax' follows the reference code:
    the index one_hot(argmax y), no gradient.

    ema > 0 (linear codebook only) learns the codewords as in VQ-VAE's EMA variant (van den Oord et al. 2017,
    appendix A.1) instead of by gradient: each codeword is an exponential moving average, with decay `ema`, of
    the window embeddings whose target it is (`ema_update`), kept as a nearest-centre codeword (set_codewords).
    The running counts and sums are training state (buffers outside the state_dict; last.pkl keeps them)."""

    def __init__(self, d_model, vocab_size, mode="ste", target_noise="none", tau=1.0, codebook="linear",
                 codebook_tau=0.1, ema=0.0, dim=0):
        super().__init__()
        self.project = nn.Linear(d_model, dim, bias=False) if dim else nn.Identity()   # to the codes' space
        self.codebook = nn.Linear(dim or d_model, vocab_size, bias=codebook == "linear")
        self.mode, self.target_noise, self.tau = mode, target_noise, tau
        self.kind, self.codebook_tau, self.ema = codebook, codebook_tau, ema
        self.register_buffer("ema_count", torch.ones(vocab_size), persistent=False)            # N_k (V,)
        self.register_buffer("ema_sum", self.codebook.weight.detach().clone(), persistent=False)  # m_k (V, d)
        if ema > 0:
            self.codebook.requires_grad_(False)
            self.restart_ema()

    def forward(self, z, valid=None):                            # (B, L, d), (B, L) bool -> scores (B, L, V)
        """`valid` marks the windows the cosine codebook's batch mean is taken over (None: all)."""
        if self.kind == "linear":
            return self.codebook(z)
        keep = None if valid is None else valid[..., None]                     # (B, L, 1)
        mean = masked_mean(z, keep, dim=(0, 1), keepdim=True)                  # (1, 1, d)
        z = self.project(z - mean.detach())                                    # (B, L, dim or d)
        return F.normalize(z, dim=-1) @ F.normalize(self.codebook.weight, dim=-1).T / self.codebook_tau

    def targets(self, scores):
        """(..., V) scores -> (one-hot targets (..., V), soft assignment softmax(y) (..., V))."""
        if self.target_noise == "gumbel":
            scores = scores - (-torch.rand_like(scores).clamp_min(1e-20).log()).log()   # + Gumbel(0, 1)
        sample = scores / self.tau                                                     # y
        soft = sample.softmax(-1)
        hard = F.one_hot(sample.argmax(-1), scores.shape[-1]).to(scores.dtype)
        if self.mode == "argmax":
            return hard.detach(), soft
        return hard - soft.detach() + soft, soft

    @torch.no_grad()
    def set_codewords(self, ids, centres):
        """Codewords `ids` (K,) become the centres (K, d) of window embeddings: for the linear codebook
        w = c, b = -|c|^2 / 2, so argmax of the scores is the nearest centre (|z - c|^2 = |z|^2 - 2 (w.z + b));
        for the cosine codebook the direction of c (window embeddings are centred by the batch mean, `centres`
        should be too). Their EMA statistics restart at one window at c."""
        self._write_codewords(ids, centres)
        self.ema_count[ids] = 1.0
        self.ema_sum[ids] = centres.to(self.ema_sum.dtype)

    def ema_state(self):
        """The EMA statistics by name (live buffers): what last.pkl keeps and `--resume` copies back."""
        return {"ema_count": self.ema_count, "ema_sum": self.ema_sum}

    @torch.no_grad()
    def restart_ema(self):
        """EMA statistics (and nearest-centre biases) from the codewords as they are now: after __init__, and
        before pretraining starts from loaded weights (--pretrained_path), which the statistics do not follow."""
        self.set_codewords(torch.arange(len(self.ema_count), device=self.ema_count.device),
                           self.codebook.weight.detach().clone())

    def _write_codewords(self, ids, centres):
        self.codebook.weight[ids] = centres.to(self.codebook.weight.dtype)
        if self.codebook.bias is not None:
            self.codebook.bias[ids] = -0.5 * centres.pow(2).sum(-1).to(self.codebook.bias.dtype)

    @torch.no_grad()
    def ema_update(self, z, targets, all_reduce=None):           # z (N, d), targets (N, V) one-hot (0 rows: none)
        """N_k <- ema N_k + (1 - ema) n_k and m_k <- ema m_k + (1 - ema) sum of the z targeted at k; the
        codewords targeted in this batch become m_k / N_k (for the others that ratio is unchanged, so they are
        left as they are, whatever the decay did to N_k). `all_reduce` sums n_k and the sums over processes."""
        targets = targets.to(self.ema_sum.dtype)
        stats = torch.cat([targets.sum(0)[:, None], targets.T @ z.to(self.ema_sum.dtype)], dim=1)   # (V, 1 + d)
        if all_reduce is not None:
            stats = all_reduce(stats)
        counts, sums = stats[:, 0], stats[:, 1:]
        rate = (counts.sum() > 0).to(counts.dtype) * (1.0 - self.ema)   # no targets (a skipped step): no change
        self.ema_count.lerp_(counts, rate)
        self.ema_sum.lerp_(sums, rate)
        centres = torch.where((counts > 0)[:, None], self.ema_sum / self.ema_count.clamp_min(1e-30)[:, None],
                              self.codebook.weight)
        self._write_codewords(slice(None), centres)


def sinusoid_init_(table):
    """Initialise a learnable (S, d) position table with sinusoids: distinct, bounded codes for every window."""
    pos = torch.arange(table.shape[0], dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, table.shape[1], 2, dtype=torch.float32) * (-math.log(1e4) / table.shape[1]))
    with torch.no_grad():
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq[: table.shape[1] // 2])
    return table
