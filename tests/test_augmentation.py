"""Pretraining augmentation `--scaling` / `--jitter`: what each draws, that padding stays padding, that off means
no draw at all, and that only pretraining sees it."""
import pytest
import torch

from loss import pretrain_loss
from model import TimeMAE
from model.config import ConfigError

C, T, SIGMA = 3, 40, 4


def model(**kw):
    torch.manual_seed(0)
    return TimeMAE(channels=C, seq_len=T, num_classes=2, d_model=16, attn_heads=2, layers=1, reg_layers=1,
                   vocab_size=12, wave_length=SIGMA, **kw)


def padded(n):
    """(n, T, C) series of lengths 1..T, NaN after each one's end."""
    x = torch.randn(n, T, C)
    lengths = torch.randint(1, T + 1, (n,))
    x[torch.arange(T) >= lengths[:, None]] = float("nan")
    return x


def test_off_draws_nothing_and_returns_the_input():
    x, plain = padded(8), model()
    state = torch.random.get_rng_state()
    assert plain.scale_and_jitter(x) is x
    assert torch.equal(torch.random.get_rng_state(), state)


def test_scaling_multiplies_each_series_channel_by_one_factor_around_one():
    x = padded(4000).abs() + 0.5                                     # no zeros to divide by
    torch.manual_seed(1)
    out = model(scaling=0.2).scale_and_jitter(x)
    assert torch.equal(out.isnan(), x.isnan())                       # padding stays padding, real steps stay real
    ratio = out / x                                                  # (N, T, C), NaN on padding
    factor = ratio[:, :1]                                            # every series has its first step
    same = (ratio - factor).abs().nan_to_num(0.0)
    assert same.max() < 1e-5                                         # one factor per series and channel
    factor = factor.flatten()
    assert abs(factor.mean().item() - 1.0) < 0.01 and abs(factor.std().item() - 0.2) < 0.01


def test_jitter_adds_independent_noise_of_that_scale():
    x = padded(4000)
    torch.manual_seed(2)
    out = model(jitter=0.1).scale_and_jitter(x)
    assert torch.equal(out.isnan(), x.isnan())
    noise = (out - x)[~x.isnan()]
    assert abs(noise.mean().item()) < 0.002 and abs(noise.std().item() - 0.1) < 0.002
    assert abs(torch.corrcoef(torch.stack([noise, x[~x.isnan()]]))[0, 1].item()) < 0.01


def test_only_pretraining_sees_it():
    x = padded(16)
    plain, augmented = model().eval(), model(scaling=0.3, jitter=0.3).eval()
    assert torch.equal(plain.represent(x), augmented.represent(x))   # probes, FineAll and encode: no augmentation
    torch.manual_seed(3)
    a = plain.train().forward_pretrain(x)["rep_target"]
    torch.manual_seed(3)
    b = augmented.train().forward_pretrain(x)["rep_target"]
    assert not torch.allclose(a, b)                                  # the momentum encoder saw other windows
    total, _, _ = pretrain_loss(augmented.forward_pretrain(x), 5.0, 1.0)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(p.grad).all() for p in augmented.parameters()
                                         if p.grad is not None)


@pytest.mark.parametrize("name", ["random_shift", "scaling", "jitter"])
def test_negative_infinite_or_nan_strength_is_refused(name):
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=f"{name} must be a finite number of .*, 0 or more, got {bad}"):
            model(**{name: bad})
