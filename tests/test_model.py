"""Shapes, masking, the decoupled design, the momentum encoder and the tokenizer's straight-through estimator."""
import pytest
import torch

from common.errors import TimeMAEError
from model import TimeMAE
from model import layers
from model.layers import (Attention, DecoupledEncoder, Dropout, Tokenizer, TransformerBlock, VisibleEncoder,
                          WindowSlicer)

B, T, C, D = 4, 30, 3, 16


def tiny(**kw):
    cfg = dict(channels=C, seq_len=T, num_classes=5, d_model=D, attn_heads=2, layers=2, reg_layers=1,
               vocab_size=12, wave_length=4, mask_ratio=0.6)
    return TimeMAE(**{**cfg, **kw})


def test_window_slicer_pads_and_slices():
    slicer = WindowSlicer(C, D, wave_length=4)
    x = torch.randn(B, T, C)
    z = slicer(x)
    assert z.shape == (B, 8, D)                       # ceil(30 / 4) windows
    # the last window sees 2 real steps and 2 zeros: equal to convolving the zero-padded series
    padded = torch.cat([x, torch.zeros(B, 2, C)], dim=1)
    last = padded[:, 28:32].transpose(1, 2)           # (B, C, 4)
    expected = torch.einsum("bck,dck->bd", last, slicer.conv.weight) + slicer.conv.bias
    torch.testing.assert_close(z[:, -1], expected)


def test_block_shapes_self_and_cross():
    x, ctx = torch.randn(B, 5, D), torch.randn(B, 7, D)
    assert Attention(D, 2, 0.0)(x).shape == (B, 5, D)
    assert Attention(D, 2, 0.0)(x, ctx).shape == (B, 5, D)
    assert TransformerBlock(D, 2, 0.1, True)(x, ctx).shape == (B, 5, D)
    assert VisibleEncoder(D, 2, 0.1, 3, True)(x).shape == (B, 5, D)
    assert DecoupledEncoder(D, 2, 0.1, 2, True)(x, ctx).shape == (B, 5, D)
    assert Tokenizer(D, 12)(x).shape == (B, 5, 12)


def test_cross_attention_matches_explicit_softmax():
    attn = Attention(D, 2, 0.0).eval()
    x, ctx = torch.randn(B, 3, D), torch.randn(B, 6, D)
    w, b = attn.qkv.weight, attn.qkv.bias
    q, k, v = x @ w[:D].T + b[:D], ctx @ w[D:2 * D].T + b[D:2 * D], ctx @ w[2 * D:].T + b[2 * D:]
    split = lambda t: t.view(B, -1, 2, D // 2).transpose(1, 2)  # noqa: E731
    att = (split(q) @ split(k).transpose(-1, -2) / (D // 2) ** 0.5).softmax(-1) @ split(v)
    expected = attn.out(att.transpose(1, 2).reshape(B, 3, D))
    torch.testing.assert_close(attn(x, ctx), expected, atol=1e-5, rtol=1e-5)


def test_learnable_residual_scale_starts_near_identity():
    block = TransformerBlock(D, 2, 0.0, learnable_scale=True).eval()
    assert block.res_attn.scale.item() == pytest.approx(1e-8)
    x = torch.randn(B, 5, D)
    torch.testing.assert_close(block(x), torch.nn.functional.layer_norm(x, (D,)), atol=1e-5, rtol=1e-4)
    assert TransformerBlock(D, 2, 0.0, learnable_scale=False).res_attn.scale is None


def test_pretrain_outputs_and_representation_shapes():
    model = tiny()
    out = model.forward_pretrain(torch.randn(B, T, C))
    S, M = 8, 4                                       # floor(0.6 * 8) masked
    assert (model.num_windows, model.num_masked) == (S, M)
    assert out["rep_predicted"].shape == out["rep_target"].shape == (B, M, D)
    assert out["codeword_scores"].shape == out["codeword_target"].shape == (B, M, 12)
    assert model.represent(torch.randn(B, T, C)).shape == (B, D)
    assert model(torch.randn(B, T, C)).shape == (B, 5)


def test_pooling_takes_the_mean_the_max_both_or_all_of_the_window_representations():
    x = torch.randn(B, T, C)
    mean = tiny(pooling="mean").eval()
    rep, _ = mean.forward_encoder(x)                                   # (B, S, D)
    encoder = {k: v for k, v in mean.state_dict().items() if not k.startswith("head.")}   # meanmax: 2D-wide head
    for pooling, expected in (("mean", rep.mean(1)), ("max", rep.amax(1)),
                              ("meanmax", torch.cat([rep.mean(1), rep.amax(1)], -1)),
                              ("flat", torch.cat(rep.unbind(1), -1))):    # windows in time order
        model = tiny(pooling=pooling).eval()
        model.load_state_dict(encoder, strict=False)
        torch.testing.assert_close(model.represent(x), expected)
        assert model(x).shape == (B, 5) and model.head.in_features == expected.shape[-1]
    with pytest.raises(TimeMAEError, match="pooling must be one of mean, max, meanmax, flat"):
        tiny(pooling="median")


@pytest.mark.parametrize("mode", ["sample", "batch"])
def test_random_masking_counts_and_partition(mode):
    model = tiny(mask_mode=mode)
    visible, masked, *_ = model.random_masking(64, "cpu")
    assert visible.shape == (64, 4) and masked.shape == (64, 4)
    everything = torch.cat([visible, masked], 1).sort(1).values
    assert torch.equal(everything, torch.arange(8).expand(64, -1))   # disjoint, covering every window
    distinct_rows = len({tuple(r) for r in masked.sort(1).values.tolist()})
    assert (distinct_rows == 1) == (mode == "batch")
    # drawn afresh at every step
    assert not torch.equal(masked, model.random_masking(64, "cpu")[1])


def test_visible_encoder_never_sees_mask_tokens():
    model = tiny().eval()
    seen = {}
    model.visible_encoder.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0]))
    x = torch.randn(B, T, C)
    torch.manual_seed(3)
    ids_visible, ids_masked, *_ = model.random_masking(B, "cpu")
    torch.manual_seed(3)
    model.forward_pretrain(x)
    h = model.window_slicer(x) + model.position
    expected = torch.stack([h[i, ids_visible[i]] for i in range(B)])
    assert seen["x"].shape == (B, model.num_windows - model.num_masked, D)
    torch.testing.assert_close(seen["x"], expected)


def test_momentum_update_arithmetic_and_no_gradient():
    model = tiny(momentum=0.9)
    for p in model.visible_encoder.parameters():
        torch.nn.init.normal_(p)
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    online = [p.clone() for p in model.visible_encoder.parameters()]
    model.update_momentum_encoder(torch.tensor(False))          # a step --skip_nonfinite skipped: no update
    assert all(torch.equal(xi, old) for xi, old in zip(model.momentum_encoder.parameters(), before))
    model.update_momentum_encoder()
    for xi, old, theta in zip(model.momentum_encoder.parameters(), before, online):
        torch.testing.assert_close(xi, 0.9 * old + 0.1 * theta)
    after = [p.clone() for p in model.momentum_encoder.parameters()]
    with torch.profiler.profile() as prof:                     # the device's flag is not read back to the host
        model.update_momentum_encoder(torch.tensor(True))
    assert not [e.key for e in prof.key_averages() if e.key in ("aten::item", "aten::_local_scalar_dense")]
    for xi, old, theta in zip(model.momentum_encoder.parameters(), after, online):
        torch.testing.assert_close(xi, 0.9 * old + 0.1 * theta)
    out = model.forward_pretrain(torch.randn(B, T, C))
    (out["rep_predicted"] - out["rep_target"]).pow(2).mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in model.momentum_encoder.parameters())
    assert not out["rep_target"].requires_grad


def test_momentum_encoder_stays_in_eval_mode():
    model = tiny().train()
    assert model.visible_encoder.training and not model.momentum_encoder.training


@pytest.mark.parametrize("codebook", ["linear", "cosine"])
def test_ste_targets_are_one_hot_and_pass_gradient_to_codebook(codebook):
    tok = Tokenizer(D, 12, mode="ste", codebook=codebook)
    z = torch.randn(B, 5, D, requires_grad=True)
    target, _ = tok.targets(tok(z))
    assert set(target.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(target.detach().sum(-1), torch.ones(B, 5))
    torch.testing.assert_close(target.argmax(-1), tok(z).argmax(-1))   # noise-free hard target
    (target * torch.randn(12)).sum().backward()
    assert tok.codebook.weight.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


@pytest.mark.parametrize("noise", ["none", "gumbel"])
def test_ste_hard_target_is_the_argmax_of_the_sample_whose_softmax_gives_the_gradient(monkeypatch, noise):
    """q_hat = q_soft + sg(q_hard - q_soft) with q_hard = one_hot(argmax y), q_soft = softmax(y), one y."""
    tok = Tokenizer(D, 12, mode="ste", target_noise=noise, tau=0.3)
    scores = torch.randn(64, 12, dtype=torch.float64, requires_grad=True)
    uniform = torch.rand(64, 12, dtype=torch.float64)
    monkeypatch.setattr(torch, "rand_like", lambda t: uniform)
    gumbel = -torch.log(-torch.log(uniform)) if noise == "gumbel" else 0.0
    sample = (scores + gumbel) / 0.3
    target, soft = tok.targets(scores)
    assert torch.equal(target.detach().argmax(-1), sample.argmax(-1))
    if noise == "gumbel":  # the noise really moves targets away from the noise-free argmax
        assert (sample.argmax(-1) != scores.argmax(-1)).any()
    weights = torch.randn(64, 12, dtype=torch.float64)
    grad, = torch.autograd.grad((target * weights).sum(), scores)
    expected, = torch.autograd.grad((sample.softmax(-1) * weights).sum(), scores)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(soft, sample.softmax(-1))


def test_low_dimensional_cosine_codes_score_in_the_projection():
    """--codebook_dim k: the cosine, over codebook_tau, of the projected batch-centred window and each codeword
    (V, k); the STE gradient reaches the projection, and the default (k = 0) has no projection at all."""
    tok = Tokenizer(D, 12, codebook="cosine", codebook_tau=0.2, dim=3).double()
    z = torch.randn(B, 5, D, dtype=torch.float64)
    assert tok.codebook.weight.shape == (12, 3) and tok.project.weight.shape == (3, D)
    code = (z - z.mean((0, 1))) @ tok.project.weight.T                        # (B, 5, 3)
    expected = (code / code.norm(dim=-1, keepdim=True)) @ \
        (tok.codebook.weight / tok.codebook.weight.norm(dim=-1, keepdim=True)).T / 0.2
    torch.testing.assert_close(tok(z), expected)
    target, _ = tok.targets(tok(z))
    (target * torch.randn(12, dtype=torch.float64)).sum().backward()
    assert tok.project.weight.grad.abs().sum() > 0
    assert isinstance(Tokenizer(D, 12, codebook="cosine").project, torch.nn.Identity)
    for bad in (dict(codebook_dim=4), dict(codebook="cosine", codebook_dim=-1)):
        with pytest.raises(TimeMAEError, match="codebook_dim"):
            tiny(**bad)


def test_argmax_targets_carry_no_gradient():
    tok = Tokenizer(D, 12, mode="argmax")
    target, _ = tok.targets(tok(torch.randn(B, 5, D)))
    assert not target.requires_grad and set(target.unique().tolist()) == {0.0, 1.0}


def test_gumbel_target_noise_changes_targets():
    tok = Tokenizer(D, 12, target_noise="gumbel")
    scores = tok(torch.randn(256, 5, D))
    assert (tok.targets(scores)[0].argmax(-1) != scores.argmax(-1)).float().mean() > 0.3


def test_set_codewords_makes_scores_pick_the_nearest_centre():
    tok = Tokenizer(D, 12)
    centres = torch.randn(12, D) * 3
    tok.set_codewords(torch.arange(12), centres)
    z = torch.randn(200, D) * 3
    assert torch.equal(tok(z).argmax(-1), torch.cdist(z, centres).argmin(-1))


def test_ema_codebook_update_arithmetic():
    """N_k <- g N_k + (1-g) n_k, m_k <- g m_k + (1-g) sum_k z; targeted codewords become m_k / N_k (nearest-
    centre form), the others stay; the codebook takes no gradient; a batch without targets changes nothing."""
    tok = Tokenizer(D, 6, ema=0.9).double()
    assert not tok.codebook.weight.requires_grad and tok.state_dict().keys() == {"codebook.weight", "codebook.bias"}
    w0 = tok.codebook.weight.clone()
    torch.testing.assert_close(tok.codebook.bias, -0.5 * w0.pow(2).sum(-1))      # nearest-centre from the start
    z = torch.randn(10, D, dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 2, 2, 5, 5, 5, 5, 5])
    targets = torch.nn.functional.one_hot(ids, 6).double()
    targets[-1] = 0                                                              # a filler slot: no target
    tok.ema_update(z, targets)
    count, total = 0.9 + 0.1 * torch.bincount(ids[:9], minlength=6).double(), 0.9 * w0 + 0.1 * (targets.T @ z)
    torch.testing.assert_close(tok.ema_count, count)
    for k in (0, 2, 5):
        torch.testing.assert_close(tok.codebook.weight[k], total[k] / count[k])
    for k in (1, 3, 4):
        torch.testing.assert_close(tok.codebook.weight[k], w0[k])
    torch.testing.assert_close(tok.codebook.bias, -0.5 * tok.codebook.weight.pow(2).sum(-1))
    before = {k: v.clone() for k, v in tok.named_buffers()}, tok.codebook.weight.clone()
    tok.ema_update(z, torch.zeros_like(targets))
    assert all(torch.equal(v, before[0][k]) for k, v in tok.named_buffers())
    assert torch.equal(tok.codebook.weight, before[1])


def test_ema_statistics_restart_from_loaded_codewords():
    tok, trained = Tokenizer(D, 6, ema=0.9), Tokenizer(D, 6)
    tok.load_state_dict(trained.state_dict())                                  # e.g. --pretrained_path
    tok.restart_ema()
    torch.testing.assert_close(tok.ema_sum, trained.codebook.weight.detach())
    assert torch.equal(tok.ema_count, torch.ones(6))
    torch.testing.assert_close(tok.codebook.bias, -0.5 * tok.codebook.weight.pow(2).sum(-1))


def test_ema_codebook_converges_to_the_cluster_means():
    torch.manual_seed(0)
    centres = torch.randn(4, D) * 4
    z = (centres[torch.arange(400) % 4] + 0.1 * torch.randn(400, D))            # 4 tight clusters
    tok = Tokenizer(D, 4, ema=0.5)
    tok.set_codewords(torch.arange(4), z[:4])                                    # one seed window per cluster
    for _ in range(20):
        tok.ema_update(z, tok.targets(tok(z))[0])
    torch.testing.assert_close(tok.codebook.weight, centres, atol=0.05, rtol=0)


def test_ema_codebook_needs_the_linear_codebook_and_a_decay_below_one():
    with pytest.raises(TimeMAEError, match="needs the linear codebook"):
        tiny(codebook_ema=0.99, codebook="cosine")
    with pytest.raises(TimeMAEError, match=r"codebook_ema must be in \[0, 1\)"):
        tiny(codebook_ema=1.0)
    model = tiny(codebook_ema=0.99)
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    assert model.forward_pretrain(torch.randn(B, T, C))["z_masked"].shape == (B, model.num_masked, D)


def test_dropout_rate_scale_and_eval_identity():
    drop = Dropout(0.2)
    x = torch.ones(200_000)
    y = drop(x)
    assert set(y.unique().tolist()) == {0.0, 1.25}
    assert (y == 0).float().mean().item() == pytest.approx(0.2, abs=0.005)
    assert torch.equal(drop.eval()(x), x)


def test_dropout_keeps_the_same_series_of_units_in_bfloat16():
    """Under --amp the branch is bfloat16: its keep-mask must come from the same draws compared exactly (rounded
    to bfloat16 first, the draws near the threshold kept more often: 80.18% instead of 80.00% at p = 0.2)."""
    drop = Dropout(0.2)
    x = torch.ones(1_000_000)
    torch.manual_seed(0)
    full = drop(x)
    torch.manual_seed(0)
    half = drop(x.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.equal(half.float(), full)


@pytest.mark.parametrize("kw, message", [
    (dict(d_model=18, attn_heads=4), "divisible"),
    (dict(wave_length=40), "longer than the series"),
    (dict(mask_ratio=0.05), "at least one window must be masked"),
    (dict(mask_ratio=1.0), "at least one window must be masked"),
    (dict(mask_ratio=float("nan")), r"mask_ratio must lie in \(0, 1\), got nan"),
    (dict(attn_heads=0), "attn_heads must be at least 1, got 0"),
    (dict(reg_layers=0), "reg_layers must be at least 1, got 0"),
    (dict(vocab_size=1), "vocab_size must be at least 2, got 1"),
    (dict(dropout=1.0), r"dropout must lie in \[0, 1\), got 1.0"),
    (dict(momentum=-0.1), r"momentum must lie in \[0, 1\], got -0.1"),
    (dict(tau=0.0), "tau must be a positive finite number, got 0.0"),
    (dict(codebook="Linear"), "codebook must be one of linear, cosine, got 'Linear'"),
    (dict(tokenizer="argmx"), "tokenizer must be one of ste, argmax"),
    (dict(target_noise="gumbell"), "target_noise must be one of none, gumbel"),
    (dict(mask_mode="per-batch"), "mask_mode must be one of sample, batch"),
    (dict(encoder="Bert"), "encoder must be one of timemae, bert"),
    (dict(codebook_init="k-means"), "codebook_init must be one of random, kmeans"),
    (dict(encoder="bert"), "encoder 'bert' needs bert_config"),
    (dict(channels=0), "channels must be at least 1, got 0"),
    (dict(num_classes=0), "num_classes must be at least 1, got 0"),
    (dict(seq_len=1, wave_length=1), r"^series of 1 step\(s\) make one window of 1 step\(s\): masking needs at "
                                     r"least 2 windows"),
])
def test_bad_config_is_refused_in_one_line(kw, message):
    with pytest.raises(TimeMAEError, match=message):
        tiny(**kw)


def test_one_config_lists_every_setting_and_the_cli_maps_each_flag():
    """TimeMAEConfig is the single list: the model's config, the defaults and the command line agree on it."""
    from args import parse_args
    from engine.pipeline import NEGATED, model_config
    from model.config import TimeMAEConfig, config_defaults
    from types import SimpleNamespace
    model = tiny()
    assert list(model.config) == TimeMAEConfig.names()
    assert set(config_defaults()) == set(TimeMAEConfig.names()) - {"channels", "seq_len", "num_classes"}
    flags = parse_args(["--no_mcc", "--wave_length", "4"])
    splits = SimpleNamespace(channels=3, seq_len=32, num_classes=5)
    cfg = model_config(flags, splits, {})
    assert (cfg.channels, cfg.seq_len, cfg.num_classes, cfg.wave_length, cfg.mcc, cfg.mrr) == (3, 32, 5, 4, False, True)
    native = set(TimeMAEConfig.names()) - {"channels", "seq_len", "num_classes", "bert_config"} - set(NEGATED)
    assert native <= set(vars(flags)), native - set(vars(flags))


def test_model_errors_name_settings_and_the_cli_names_flags():
    from engine.pipeline import flag_message
    from model.config import ConfigError
    with pytest.raises(ConfigError) as err:
        tiny(d_model=18, attn_heads=4)
    assert "--" not in str(err.value) and err.value.settings == ("d_model", "attn_heads")
    assert flag_message(err.value) == "--d_model 18 must be divisible by --attn_heads 4"
    with pytest.raises(ConfigError) as err:
        tiny(mcc=False, mrr=False)
    assert flag_message(err.value).startswith("--no_mcc and --no_mrr together leave nothing to learn")


@pytest.mark.parametrize("spelled_out", [False, True])
def test_key_padding_hides_padded_keys_from_attention(spelled_out, monkeypatch):
    """A padded key changes nothing: outputs at real positions equal those of the sequence without it, through
    SDPA (the GPU's path, forced here) and through the CPU's spelled-out softmax with an active attention
    dropout that keeps all."""
    torch.manual_seed(0)
    monkeypatch.setattr(layers, "spelled_out", lambda x: spelled_out)
    enc = VisibleEncoder(D, 2, 0.0, 2, True).train(spelled_out)
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.3)
    for block in enc.blocks:
        block.attn.drop.p = 1e-9 if spelled_out else 0.0      # threshold -32768: every element kept
    x = torch.randn(2, 5, D)
    padded = torch.cat([x, torch.randn(2, 3, D) * 10], dim=1)                    # (2, 8, D): 3 junk windows
    pad = torch.tensor([[False] * 5 + [True] * 3] * 2)
    assert torch.allclose(enc(padded, key_padding=pad)[:, :5], enc(x), atol=1e-5)
    assert not torch.allclose(enc(padded)[:, :5], enc(x), atol=1e-3)              # unmasked, the junk leaks in
    cross = DecoupledEncoder(D, 2, 0.0, 1, True)
    q = torch.randn(2, 4, D)
    assert torch.allclose(cross(q, padded, pad), cross(q, x), atol=1e-5)


@pytest.mark.parametrize("length", [7, 20])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_block_equals_the_block_written_out(length, padded):
    """No-grad, no-dropout passes (momentum encoder, probe representations) run each block as one fused op, with
    or without key padding, over rows shorter (7) and longer (20) than a 16-float vector register."""
    torch.manual_seed(0)
    block = TransformerBlock(D, 2, 0.2, True).eval()
    with torch.no_grad():
        block.res_attn.scale.fill_(0.7)
        block.res_ffn.scale.fill_(0.4)
    x = torch.randn(B, length, D)
    pad = None
    if padded:
        pad = torch.zeros(B, length, dtype=torch.bool)
        pad[0, -3:], pad[2, 1:] = True, True          # series 2 has one real window
    assert not block.fusable(x)                       # gradients enabled: the written-out block
    written_out = block(x, key_padding=pad)
    with torch.no_grad():
        assert block.fusable(x) and not block.train().fusable(x)
        torch.testing.assert_close(block.eval()(x, key_padding=pad), written_out, rtol=1e-5, atol=1e-5)


def test_pretraining_gradients_are_repeatable_on_two_threads():
    """The same seed and batch give bitwise the same loss and gradients on 2 CPU threads, run after run. (The
    mask queries' positions were read by indexing the position table, whose backward accumulated B*M rows into
    it in a thread-dependent order: `position`'s gradient, and so the whole run, changed between runs.)"""
    from loss import pretrain_loss

    def step():
        torch.manual_seed(0)
        model = TimeMAE(channels=1, seq_len=178, num_classes=2, wave_length=8).train()
        loss = pretrain_loss(model.forward_pretrain(torch.randn(128, 178, 1)), 5.0, 1.0)[0]
        loss.backward()
        return [loss.detach()] + [p.grad for p in model.parameters() if p.grad is not None]

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = step()
        for _ in range(5):
            assert all(torch.equal(a, b) for a, b in zip(first, step()))
    finally:
        torch.set_num_threads(threads)


def test_repr_layers_pools_the_chosen_layers_side_by_side():
    torch.manual_seed(0)
    model = tiny().eval()                                                # 2 visible blocks
    x = torch.randn(B, T, C)
    with torch.no_grad():
        own = model.represent(x)                                         # (B, D): the mean of block 2
        embeddings = (model.window_slicer(x) + model.position).mean(1)  # layer 0: the encoder's input
        after_block1 = model.visible_encoder.blocks[0](model.window_slicer(x) + model.position).mean(1)
    assert tiny(repr_layers=[2, 0, 2]).cfg.repr_layers == (0, 2)         # a list (args.json): in layer order, once
    three = tiny(repr_layers=(0, 1, 2))
    assert three.head.in_features == three.cfg.representation_size == 3 * D
    three.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")}, strict=False)
    with torch.no_grad():
        rep = three.eval().represent(x)                                  # (B, 3D)
    torch.testing.assert_close(rep[:, :D], embeddings)
    torch.testing.assert_close(rep[:, D:2 * D], after_block1)
    torch.testing.assert_close(rep[:, 2 * D:], own)
    assert tiny(repr_layers=(0, 2), pooling="meanmax").head.in_features == 4 * D
    with pytest.raises(TimeMAEError, match=r"repr_layers \[0, 3\] must lie in 0 .* to 2"):
        tiny(repr_layers=(0, 3))


def test_the_visible_encoders_settings_are_architecture_settings_and_leave_the_data_to_the_new_run():
    """Transfer learning refuses a checkpoint that differs in one of them, and takes any channels, length, window,
    classes, codebook or decoupled encoder (their tensors are reinitialised instead)."""
    from model.config import architecture_settings, visible_encoder_settings
    visible = visible_encoder_settings()
    assert set(visible) <= set(architecture_settings())
    assert visible == ["d_model", "attn_heads", "layers", "enable_res_parameter", "encoder", "bert_config",
                       "bert_positions", "bert_input_norm"]   # engine.transfer's hand list before, in field order


def test_transfer_from_another_kind_of_encoder_names_the_kind_alone():
    """A BERT run's checkpoint offered to a TimeMAE encoder: its layers (which BERT ignores) are no reason."""
    from engine.transfer import transfer_weights
    model = TimeMAE(channels=1, seq_len=16, num_classes=2, d_model=16, attn_heads=2, layers=2, reg_layers=1,
                    vocab_size=8, wave_length=4)
    ckpt = {"model": {}, "config": {**model.config, "encoder": "bert", "layers": 8, "bert_config": {"x": 1}}}
    with pytest.raises(TimeMAEError, match=r"holds another visible encoder \(encoder bert there, timemae here\): "):
        transfer_weights(model, "bert_run.pkl", read=lambda path: ckpt)


def test_a_checkpoint_with_the_former_module_names_loads_and_transfers(tmp_path):
    """Checkpoints written before the window slicer and the momentum encoder took the paper's names held
    'feature_encoder.*' and 'target_encoder.*': they load, and transfer, under today's names."""
    from engine.checkpoint import checkpoint, load_model
    from engine.transfer import transfer_weights
    torch.manual_seed(0)
    model = tiny()
    ckpt = checkpoint(model)
    former = {"window_slicer.": "feature_encoder.", "momentum_encoder.": "target_encoder."}
    ckpt["model"] = {next((former[p] + k[len(p):] for p in former if k.startswith(p)), k): v
                     for k, v in ckpt["model"].items()}
    assert not any(k.startswith(tuple(former)) for k in ckpt["model"]) and len(ckpt["model"]) == len(model.state_dict())
    path = str(tmp_path / "old.pkl")
    torch.save(ckpt, path)
    loaded, _ = load_model(path)
    for (name, mine), (other, theirs) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == other and torch.equal(mine, theirs), name
    fresh = tiny()
    transferred, reinitialised, unused = transfer_weights(fresh, path)
    assert not reinitialised and not unused and torch.equal(fresh.window_slicer.conv.weight,
                                                            model.window_slicer.conv.weight)
    both = {**ckpt["model"], "window_slicer.conv.bias": model.window_slicer.conv.bias}   # one tensor under both
    torch.save({**ckpt, "model": both}, path)
    with pytest.raises(TimeMAEError, match="is not a TimeMAE checkpoint: it holds tensors under their former and "
                                           r"today's names \(feature_encoder.conv.bias\)$"):
        load_model(path)
    torch.save({**ckpt, "model": {1: model.window_slicer.conv.bias}}, path)
    with pytest.raises(TimeMAEError, match="its weights are keyed by something other than tensor names"):
        load_model(path)
