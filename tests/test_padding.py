"""Padding-aware windows: windows that are all padding (NaN time steps of variable-length series) are never
masked, never targets, never attended to, and left out of the representation."""
import dataclasses
import math
import os

import pytest
import torch

from common.errors import TimeMAEError
from conftest import TINY, write_tstcc
from loss import pretrain_loss
from main import main
from model import TimeMAE

C, SIGMA = 2, 4


def pair(**kw):
    """The same weights at two lengths: 5 windows (20 steps) and 8 windows (32 steps, 3 more positions)."""
    torch.manual_seed(0)
    settings = dict(channels=C, num_classes=3, d_model=16, attn_heads=2, layers=2, reg_layers=2, vocab_size=12,
                    wave_length=SIGMA, **kw)
    short, long = TimeMAE(seq_len=20, **settings), TimeMAE(seq_len=32, **settings)
    state = short.state_dict()
    state["position"] = torch.cat([state["position"], long.position.detach()[5:]])
    long.load_state_dict(state)
    for model in (short, long):
        with torch.no_grad():  # residual scales of order 1, so every block really contributes
            for name, p in model.named_parameters():
                if name.endswith("scale"):
                    p.fill_(0.7)
    return short.eval(), long.eval()


def pad(x, steps):
    return torch.cat([x, torch.full((x.shape[0], steps, x.shape[2]), float("nan"))], 1)


@pytest.mark.parametrize("kw", [dict(), dict(decouple=False), dict(codebook="cosine"), dict(pooling="max"),
                                dict(pooling="meanmax")])
def test_appended_padding_windows_change_neither_representation_nor_pretraining_losses(kw):
    short, long = pair(**kw)
    x = torch.randn(3, 19, C)                       # 19 steps: the 5th window is partly real, so it is real
    torch.testing.assert_close(long.represent(pad(x, 13)), short.represent(pad(x, 1)))
    assert not torch.allclose(long.represent(pad(x, 13).nan_to_num(0.0)), short.represent(pad(x, 1)), atol=1e-4)
    one = x[:1]                                     # one series: the masking noise of its windows is the same draw
    torch.manual_seed(5)
    ref = pretrain_loss(short.forward_pretrain(pad(one, 1)), 5.0, 1.0, usage=0.5)
    torch.manual_seed(5)
    out = long.forward_pretrain(pad(one, 13))
    assert out["masked_valid"].tolist() == [[True, True, True, False]]   # floor(0.6 * 5) of the 4 slots
    for a, b in zip(pretrain_loss(out, 5.0, 1.0, usage=0.5), ref):
        torch.testing.assert_close(a, b)


def test_flat_representation_keeps_real_windows_in_place_and_padding_windows_at_zero():
    short, long = pair()
    for model in (short, long):
        model.cfg = dataclasses.replace(model.cfg, pooling="flat")      # represent() reads it; same weights
    x = torch.randn(3, 19, C)
    flat_short, flat_long = short.represent(pad(x, 1)), long.represent(pad(x, 13))   # (3, 5 * 16), (3, 8 * 16)
    assert flat_short.shape == (3, 80) and flat_long.shape == (3, 128)
    torch.testing.assert_close(flat_long[:, :80], flat_short)
    assert (flat_long[:, 80:] == 0).all() and (flat_short[:, 64:] != 0).any()   # the partly real 5th window counts


def test_padding_windows_are_never_masked_targeted_or_visible():
    model = TimeMAE(channels=C, seq_len=40, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                    vocab_size=12, wave_length=SIGMA)                 # 10 windows
    real = torch.arange(1, 11).repeat(20)                             # (200,) 1..10 real windows per series
    window_pad = torch.arange(10)[None] >= real[:, None]              # (200, 10)
    for _ in range(5):
        ids_visible, ids_masked, visible_pad, valid = model.random_masking(len(real), "cpu", window_pad)
        masked_pad = window_pad.gather(1, ids_masked)
        assert not (masked_pad & valid).any()                         # a padding window is never a target
        assert torch.equal(valid.sum(1), (0.6 * real + 1e-9).long())  # floor(ratio * S_i) masked per series
        shown = ~visible_pad
        assert not (window_pad.gather(1, ids_visible) & shown).any()  # nor visible to attention
        seen = torch.zeros_like(window_pad).scatter(1, ids_visible, shown)
        hidden = torch.zeros_like(window_pad).scatter(1, ids_masked, valid)
        assert not (seen & hidden).any() and torch.equal(seen | hidden, ~window_pad)   # a partition of real
        assert shown.sum(1).min() >= 1
        assert ids_visible.shape == (200, 10 - 6)                      # the S - M slots of a full-length series


def test_series_of_one_real_window_trains_without_nan():
    model = TimeMAE(channels=C, seq_len=40, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                    vocab_size=12, wave_length=SIGMA).train()
    x = torch.randn(4, 40, C)
    x[0, 3:] = float("nan")                                           # 1 real window: nothing masked
    x[1, 9:] = float("nan")
    total, mrr, mcc = pretrain_loss(model.forward_pretrain(x), 5.0, 1.0, usage=0.1)
    assert all(math.isfinite(v.item()) for v in (total, mrr, mcc))
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(model(x)).all()


def test_random_shift_crops_each_series_start_and_appends_padding():
    model = TimeMAE(channels=C, seq_len=40, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                    vocab_size=12, wave_length=SIGMA, random_shift=2.0)   # up to 8 steps
    x = torch.randn(300, 40, C)
    lengths = torch.randint(1, 41, (300,))
    lengths[:100] = 40
    x[torch.arange(40) >= lengths[:, None]] = float("nan")           # variable lengths, padding at the end
    shifted = model.random_shift(x)
    real = ~shifted.isnan().all(-1)                                   # (300, 40)
    r = lengths - real.sum(1)                                         # steps each series lost
    assert (r >= 0).all() and (r <= 8).all() and (r <= lengths - 1).all()
    assert len(set(r[:100].tolist())) == 9                            # every offset 0..8 occurs
    for i in range(300):                                              # the rest of the series, in order
        assert torch.equal(shifted[i, : lengths[i] - r[i]], x[i, r[i]: lengths[i]])
    assert not shifted[real].isnan().any()
    one = x[lengths == 1]
    torch.testing.assert_close(model.random_shift(one), one, equal_nan=True)   # a single real step always stays


def test_random_shift_zero_draws_nothing_and_trains_with_padding():
    x = torch.randn(16, 40, C)
    plain = TimeMAE(channels=C, seq_len=40, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                    vocab_size=12, wave_length=SIGMA)
    state = torch.random.get_rng_state()
    assert plain.random_shift(x) is x and torch.equal(torch.random.get_rng_state(), state)
    shifting = TimeMAE(channels=C, seq_len=40, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                       vocab_size=12, wave_length=SIGMA, random_shift=2.0).train()
    torch.manual_seed(3)
    out = shifting.forward_pretrain(x)
    assert out["masked_valid"] is not None and not out["masked_valid"].all()   # shifted by 4+ steps: a window lost
    total, _, _ = pretrain_loss(out, 5.0, 1.0)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(p.grad).all() for p in shifting.parameters()
                                         if p.grad is not None)


def test_grid_phases_start_each_copy_a_fraction_of_a_window_late():
    model = TimeMAE(channels=C, seq_len=20, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                    vocab_size=12, wave_length=SIGMA, phases=2)
    x = pad(torch.randn(3, 19, C), 1)
    x[2, 1:] = float("nan")                                           # one real step: it cannot start later
    copies = model.grid_phases(x)                                     # (2 * 3, 20, C): offsets 0 and SIGMA / 2
    assert copies.shape == (6, 20, C)
    torch.testing.assert_close(copies[:3], x, equal_nan=True)
    torch.testing.assert_close(copies[3:5], pad(x[:2, 2:], 2), equal_nan=True)
    torch.testing.assert_close(copies[5], x[2], equal_nan=True)
    more = dataclasses.replace(model.cfg, phases=9)                   # at most sigma phases: offsets 0, 1, 2, 3
    model.cfg = more
    assert model.grid_phases(x).shape == (SIGMA * 3, 20, C)


@pytest.mark.parametrize("pooling", ["mean", "meanmax"])
def test_phases_average_the_representations_of_the_shifted_copies(pooling):
    short, _ = pair(pooling=pooling)
    x = torch.randn(5, 20, C)
    x[3, 13:] = float("nan")                                          # a variable-length series too
    one = short.represent(x)
    torch.testing.assert_close(one, short.pool(*short.forward_encoder(x)), rtol=0, atol=0)   # phases 1: the paper's
    short.cfg = dataclasses.replace(short.cfg, phases=SIGMA)
    each = torch.stack([one] + [short.pool(*short.forward_encoder(pad(x[:, r:], r))) for r in range(1, SIGMA)])
    torch.testing.assert_close(short.phase_representations(x), each)                # (K, B, D), phase by phase
    torch.testing.assert_close(short.represent(x), each.mean(0))
    assert not torch.allclose(short.represent(x), one)
    assert short(x).shape == (5, 3)


def test_phases_below_one_are_refused():
    with pytest.raises(TimeMAEError, match="phases must be 1 or more, got 0"):
        TimeMAE(channels=C, seq_len=20, num_classes=2, wave_length=SIGMA, phases=0)


def test_padded_false_skips_the_check_and_computes_the_same():
    """padded=False (the caller knows the split is fixed-length) skips the per-batch padding check, which on a GPU
    waits for the device, and computes bitwise what the check gives. A random shift or a late grid phase pads any
    series, so there the batch is checked whatever the caller says (else NaN would reach the encoder)."""
    short, _ = pair()
    x = torch.randn(3, 20, C)
    assert torch.equal(short.represent(x, padded=False), short.represent(x))
    for kw in (dict(), dict(random_shift=1.0)):
        model, _ = pair(**kw)
        losses = []
        for padded in (None, False):
            torch.manual_seed(5)
            losses.append(torch.stack(pretrain_loss(model.train().forward_pretrain(x, padded), 5.0, 1.0)))
        assert torch.isfinite(losses[0]).all() and torch.equal(*losses)
    phased, _ = pair(phases=2)
    rep = phased.represent(x, padded=False)
    assert torch.isfinite(rep).all() and torch.equal(rep, phased.represent(x))


def test_fixed_length_forward_passes_trace_as_one_graph():
    """With padded=False the pretraining and fine-tuning forward passes hold no data-dependent branch: Dynamo
    traces each whole (fullgraph=True), as CUDA graphs (--compile_mode reduce-overhead) want. The batch's
    padding check is such a branch: traced with it, fullgraph refuses."""
    model, _ = pair()
    x = torch.randn(3, 20, C)
    torch._dynamo.reset()
    try:
        for method in (model.train().forward_pretrain, model.forward):
            torch.compile(method, backend="eager", fullgraph=True)(x, padded=False)
        with pytest.raises(torch._dynamo.exc.UserError, match="data-dependent"):   # a graph break fullgraph refuses
            torch.compile(model.forward, backend="eager", fullgraph=True)(x)
    finally:
        torch._dynamo.reset()


def test_a_run_never_checks_a_batch_for_padding(tmp_path, monkeypatch):
    """The Trainer decides once per run whether its splits hold padding and tells every call
    (TimeMAE.window_padding): False for fixed-length series, True for variable-length ones, so no batch of its
    pretraining steps, probes or fine-tuning is asked (None; on a GPU the question waits for the device)."""
    seen, window_padding = [], TimeMAE.window_padding

    def spy(self, x, padded=None):
        seen.append(padded)
        return window_padding(self, x, padded)
    monkeypatch.setattr(TimeMAE, "window_padding", spy)

    def run(folder):
        seen.clear()
        assert main(["--dataset", "har", "--data_path", folder, "--save_path", str(tmp_path / "run"), "--overwrite",
                     "--wave_length", "4", "--num_epoch_pretrain", "1", "--num_epoch", "1", *TINY]) == 0
        return set(seen)

    fixed = write_tstcc(tmp_path / "Fixed")
    assert run(fixed) == {False}
    train = torch.load(os.path.join(fixed, "train.pt"))
    train["samples"][::2, :, 20:] = float("nan")                   # every other series 20 steps long
    torch.save(train, os.path.join(fixed, "train.pt"))
    assert run(fixed) == {True}
