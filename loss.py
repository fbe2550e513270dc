"""Pretraining objectives (MCC, MRR) and the codeword diagnostics printed every epoch."""
import torch
import torch.nn.functional as F


def mrr_loss(rep_predicted, rep_target):
    """Masked representation regression: MSE between F_phi's output and the momentum encoder's, (B, M, d)."""
    return F.mse_loss(rep_predicted, rep_target)


def mcc_loss(codeword_scores, codeword_target, label_smoothing=0.2):
    """Masked codeword classification: cross-entropy of predicted scores (B, M, V) against one-hot targets
    (B, M, V). Targets are probabilities, so the straight-through gradient reaches the tokenizer."""
    return F.cross_entropy(codeword_scores.flatten(0, -2), codeword_target.flatten(0, -2),
                           label_smoothing=label_smoothing)


def pretrain_loss(out, alpha, beta):
    """Total = alpha * MRR + beta * MCC; returns (total, mrr, mcc)."""
    mrr = mrr_loss(out["rep_predicted"], out["rep_target"])
    mcc = mcc_loss(out["codeword_scores"], out["codeword_target"])
    return alpha * mrr + beta * mcc, mrr, mcc


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
