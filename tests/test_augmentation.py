"""Pretraining augmentation `--scaling` / `--jitter` / `--resized_crop`: what each draws, that padding stays
padding, that off means no draw at all, and that only pretraining sees it."""
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
    assert plain.scale_and_jitter(x) is x and plain.resized_crop(x) is x
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


def test_resized_crop_stretches_a_crop_of_each_series_back_to_its_length():
    """On a ramp x_t = t (every channel) linear interpolation is exact, so series i's output is the ramp from its
    crop's start a_i to its end b_i in equal steps: 0 <= a_i, b_i <= T_i - 1, b_i - a_i >= (1 - s)(T_i - 1),
    with crop lengths and starts drawn uniformly."""
    s, n = 0.5, 4000
    x = padded(n)
    ramp = torch.arange(T, dtype=torch.float32)[None, :, None].expand(n, T, C)
    x = torch.where(x.isnan(), x, ramp)
    torch.manual_seed(4)
    out = model(resized_crop=s).resized_crop(x)
    assert torch.equal(out.isnan(), x.isnan())                       # padding stays padding, real steps stay real
    real = (~x.isnan()[..., 0]).sum(1)                               # (n,) T_i
    first, last = out[:, 0, 0], out[torch.arange(n), real - 1, 0]    # a_i, b_i
    steps = out[..., 0].diff(dim=1)                                  # (n, T-1), NaN past the end
    ok = ~steps.isnan()
    even = (steps - ((last - first) / (real - 1).clamp_min(1))[:, None]).abs()
    assert even[ok].max() < 1e-4                                     # equal steps
    assert torch.equal(out[..., 0].nan_to_num(-1.0), out[..., C - 1].nan_to_num(-1.0))   # every channel alike
    assert (first >= 0).all() and (last <= real - 1 + 1e-4).all()
    span = (last - first) / (real - 1).clamp_min(1)                  # l_i / T_i, for series of 2 or more steps
    many = real > 1
    assert span[many].min() >= 1 - s - 1e-5 and span[many].max() <= 1 + 1e-5
    assert abs(span[many].mean().item() - (1 - s / 2)) < 0.01        # U[1 - s, 1]
    slack = (real - 1 - (last - first))[many]                        # where the start falls: U[0, 1] of the slack
    share = (first[many] / slack.clamp_min(1e-6))[slack > 1]
    assert abs(share.mean().item() - 0.5) < 0.02
    assert (out[real == 1, 0] == 0).all()                            # a one-step series is itself


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_resized_crop_keeps_the_dtype_and_an_all_padding_row(dtype):
    """A row with no real step (reachable through the model, not the loaders) stays all padding, not an index
    error; the output keeps the input's dtype. In float64 a ramp stays a ramp to float64's precision: the read
    positions are not drawn in float32."""
    x = torch.arange(T, dtype=dtype)[None, :, None].repeat(3, 1, C)
    x[1] = float("nan")
    out = model(resized_crop=0.5).resized_crop(x)
    assert out.dtype == dtype and out[1].isnan().all() and not out[[0, 2]].isnan().any()
    if dtype == torch.float64:
        steps = out[[0, 2], :, 0].diff(dim=1)
        assert (steps - steps[:, :1]).abs().max() < 1e-9


def test_resized_crop_is_refused_outside_zero_to_one():
    for bad in (-0.1, 1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=f"resized_crop must be at least 0 .* and below 1 .*, got {bad}"):
            model(resized_crop=bad)


@pytest.mark.parametrize("flags", [dict(scaling=0.3, jitter=0.3), dict(resized_crop=0.5), dict(random_shift=1.0)])
def test_only_pretraining_sees_it(flags):
    """The window slicer of pretraining reads the augmented series (the draws come first, so the same seed gives
    them again); probes, encode (eval) and FineAll (train mode) read the series as they are."""
    x = padded(16)
    plain, augmented = model().eval(), model(**flags).eval()
    assert torch.equal(plain.represent(x), augmented.represent(x))
    torch.manual_seed(5)
    tuned_plain = plain.train()(x)
    torch.manual_seed(5)
    assert torch.equal(augmented.train()(x), tuned_plain)             # FineAll's forward: the same dropout draws
    seen = []
    augmented.window_slicer.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    torch.manual_seed(3)
    total, _, _ = pretrain_loss(augmented.forward_pretrain(x), 5.0, 1.0)
    torch.manual_seed(3)
    expected = augmented.scale_and_jitter(augmented.random_shift(augmented.resized_crop(x)))
    assert torch.equal(seen[0], expected.nan_to_num(0.0))
    assert not torch.allclose(expected.nan_to_num(0.0), x.nan_to_num(0.0))  # the augmentation changed the series
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(p.grad).all() for p in augmented.parameters()
                                         if p.grad is not None)


@pytest.mark.parametrize("name", ["random_shift", "scaling", "jitter"])
def test_negative_infinite_or_nan_strength_is_refused(name):
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=f"{name} must be a finite number of .*, 0 or more, got {bad}"):
            model(**{name: bad})
