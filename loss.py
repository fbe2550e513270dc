"""Pretraining objectives (MCC, MRR) and the codeword diagnostics printed every epoch."""
import math

import torch
import torch.nn.functional as F

from common.masked import masked_mean


def mrr_loss(rep_predicted, rep_target, valid=None):
    """Masked representation regression: MSE between F_phi's output and the momentum encoder's, (B, M, d),
    over the real masked windows."""
    return masked_mean((rep_predicted - rep_target).pow(2).mean(-1), valid)


MCC_LABEL_SMOOTHING = 0.2   # the paper's MCC loss: cross-entropy with label smoothing


def mcc_loss(codeword_scores, codeword_target, valid=None):
    """Masked codeword classification: cross-entropy, with label smoothing 0.2, of predicted scores (B, M, V)
    against one-hot targets (B, M, V) over the real masked windows. Targets are probabilities, so the
    straight-through gradient reaches the tokenizer."""
    ce = F.cross_entropy(codeword_scores.flatten(0, -2), codeword_target.flatten(0, -2),
                         label_smoothing=MCC_LABEL_SMOOTHING, reduction="none")
    return masked_mean(ce.view(codeword_scores.shape[:-1]), valid)


def usage_loss(codeword_soft, valid=None):
    """Codebook usage regulariser: log V - H(mean soft assignment) over the batch's real masked windows, 0 when
    every codeword is used equally; its gradient spreads the windows over the codebook (the soft assignments
    (B, M, V) come from the same sample as the targets)."""
    keep = None if valid is None else valid.flatten()[:, None]           # (B*M, 1)
    p = masked_mean(codeword_soft.flatten(0, -2), keep, dim=0)            # (V,)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return math.log(p.shape[-1]) - entropy


def pretrain_loss(out, alpha, beta, usage=0.0):
    """Total = alpha * MRR + beta * MCC (+ usage * the codebook usage regulariser); returns (total, mrr, mcc)."""
    valid = out.get("masked_valid")
    mrr = mrr_loss(out["rep_predicted"], out["rep_target"], valid)
    mcc = mcc_loss(out["codeword_scores"], out["codeword_target"], valid)
    total = alpha * mrr + beta * mcc
    if usage:
        total = total + usage * usage_loss(out["codeword_soft"], valid)
    return total, mrr, mcc


@torch.no_grad()
def hits_ndcg(scores, target, k=10):
    """Per-prediction top-1 hit and NDCG@k of the target codeword. scores (N, V), target (N,) indices.
    With one relevant item, NDCG@k = 1 / log2(rank + 2) when its 0-based rank is below k, else 0."""
    target_score = scores.gather(-1, target[:, None])                    # (N, 1)
    rank = (scores > target_score).sum(-1)                              # (N,) codewords scored higher
    hits = (rank == 0).float()
    ndcg = torch.where(rank < k, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros_like(hits))
    return hits, ndcg


def codebook_usage(counts):
    """From assignment counts (V,): number of codewords used and perplexity exp(H) of their distribution."""
    p = counts.float() / counts.sum().clamp_min(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())
