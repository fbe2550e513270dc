"""Losses and the codeword diagnostics against hand-computed values."""
import math

import pytest
import torch

from loss import codebook_usage, hits_ndcg, mcc_loss, mrr_loss, pretrain_loss


def test_hits_and_ndcg_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5],     # target 0 ranked first
                           [0.9, 0.1, 0.5],     # target 2 ranked second
                           [0.9, 0.1, 0.5]])    # target 1 ranked third
    hits, ndcg = hits_ndcg(scores, torch.tensor([0, 2, 1]))
    assert hits.tolist() == [1.0, 0.0, 0.0]
    assert ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(4)])
    _, ndcg_k1 = hits_ndcg(scores, torch.tensor([0, 2, 1]), k=1)
    assert ndcg_k1.tolist() == [1.0, 0.0, 0.0]


def test_mcc_uses_label_smoothing_and_mrr_is_mse():
    scores = torch.tensor([[[2.0, 0.0, 0.0]]])
    target = torch.tensor([[[1.0, 0.0, 0.0]]])
    logp = scores.log_softmax(-1).flatten()
    smoothed = -(0.8 * logp[0] + 0.2 / 3 * logp.sum())
    assert mcc_loss(scores, target).item() == pytest.approx(smoothed.item(), rel=1e-6)
    # differences 2, 0, 0, 0: MSE 1 (the mean absolute error would be 0.5, a per-window root mean square 0.71)
    predicted = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])                  # (B, M, d)
    assert mrr_loss(predicted, torch.zeros(1, 2, 2)).item() == 1.0
    out = dict(rep_predicted=predicted, rep_target=torch.zeros(1, 2, 2), codeword_scores=scores.expand(1, 2, 3),
               codeword_target=target.expand(1, 2, 3))
    total, mrr, mcc = pretrain_loss(out, alpha=5.0, beta=2.0)
    assert mrr.item() == 1.0 and mcc.item() == pytest.approx(smoothed.item(), rel=1e-6)
    assert total.item() == pytest.approx(5.0 * 1.0 + 2.0 * smoothed.item(), rel=1e-6)


def test_codebook_usage():
    """Perplexity exp(H) of the codewords' shares: 3/4 and 1/4 give exp(0.5623) = 1.7548, not the 2 in use."""
    used, ppl = codebook_usage(torch.tensor([6, 2, 0, 0]))
    assert used == 2 and ppl == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_masked_mean_counts_the_entries_it_averages():
    """keep may broadcast along a reduced dimension: the mean is still over the kept entries of x."""
    from common.masked import masked_mean
    x = torch.arange(12.0).view(2, 3, 2)                     # (B, S, d)
    keep = torch.tensor([[True, True, False], [True, False, False]])[..., None]   # (B, S, 1)
    kept = x[keep.expand_as(x)]
    assert masked_mean(x, keep).item() == pytest.approx(kept.mean().item())
    torch.testing.assert_close(masked_mean(x, keep, dim=(0, 1)), x[keep[..., 0]].mean(0))
    assert masked_mean(x, torch.zeros_like(keep)).item() == 0.0          # nothing kept: 0, not NaN


def test_jsonl_logs_that_cannot_be_read_are_one_line(tmp_path):
    from common.errors import TimeMAEError
    from engine.runfiles import read_jsonl
    path = tmp_path / "pretrain_log.jsonl"
    path.write_text('{"epoch": 1, "probe": 0.5}\n\n{"epoch": 2, "pro')
    with pytest.raises(TimeMAEError, match="pretrain_log.jsonl: expected one JSON object a line"):
        read_jsonl(path)
    path.write_text('{"epoch": 1, "probe": 0.5}\n{"epoch": 2}\n')
    assert read_jsonl(path) == [{"epoch": 1, "probe": 0.5}, {"epoch": 2}]
