"""Correctness guard for the fast paths: the model's pretraining losses and the gradients of every parameter
equal those of a plain float64 formulation written out here (window conv by unfold + matmul, explicit softmax
attention, post-norm blocks, decoupled cross-attention, MRR MSE, MCC cross-entropy with label smoothing 0.2),
under a fixed mask, fixed Gumbel noise and the model's own dropout masks replayed. Also: --amp and --compile
run end to end on the CPU."""
import collections
import json
import logging
import math
import os

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import process
from args import parse_args
from conftest import TINY, assert_reported
from loss import pretrain_loss
from main import main
from model import TimeMAE
from model import layers
from model.layers import Dropout, SoftmaxLastDim, TransformerBlock, softmax_last_dim
from engine.speed import COMPILE_MODES, GPU_EVAL_BATCH, compiled, eval_batch_size

B, T, C = 6, 30, 3
ALPHA, BETA = 5.0, 1.0


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def attention(x, context, attn, heads, masks):
    """Explicit multi-head attention from the fused QKV weight, optional dropout mask on the weights."""
    d = x.shape[-1]
    w, b = attn.qkv.weight, attn.qkv.bias
    q = x @ w[:d].T + b[:d]
    k = context @ w[d:2 * d].T + b[d:2 * d]
    v = context @ w[2 * d:].T + b[2 * d:]
    heads_of = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d // heads).permute(0, 2, 1, 3)  # noqa: E731
    q, k, v = heads_of(q), heads_of(k), heads_of(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    if masks is not None:
        weights = weights * masks.pop(0)
    y = (weights @ v).permute(0, 2, 1, 3).reshape(x.shape)
    return y @ attn.out.weight.T + attn.out.bias


def block(x, context, blk, heads, masks):
    """Post-norm block: LN(x + drop(a * attn)), then LN(x + drop(a * FFN)) with exact GELU."""
    drop = (lambda t: t * masks.pop(0)) if masks is not None else (lambda t: t)  # noqa: E731
    a1, a2 = blk.res_attn.scale, blk.res_ffn.scale
    x = layer_norm(x + drop(a1 * attention(x, context, blk.attn, heads, masks)), blk.res_attn.norm)
    lin1, lin2 = blk.ffn[0], blk.ffn[3]
    h = x @ lin1.weight.T + lin1.bias
    h = drop(0.5 * h * (1 + torch.erf(h / math.sqrt(2))))
    return layer_norm(x + drop(a2 * (h @ lin2.weight.T + lin2.bias)), blk.res_ffn.norm)


def reference_losses(model, x, ids_visible, ids_masked, uniform, masks, noise, tau):
    """Total, MRR and MCC losses of a pretraining step, written without any of the model's fast paths."""
    cfg = model.config
    sigma, heads, V = cfg["wave_length"], cfg["attn_heads"], cfg["vocab_size"]
    conv = model.window_slicer.conv
    pad = -x.shape[1] % sigma
    xp = torch.cat([x, x.new_zeros(x.shape[0], pad, x.shape[2])], 1)                 # (B, S*sigma, C)
    windows = xp.unfold(1, sigma, sigma).flatten(2)                                  # (B, S, C*sigma)
    z = windows @ conv.weight.flatten(1).T + conv.bias                               # (B, S, d)
    h = z + model.position
    pick = lambda t, ids: torch.stack([t[i, ids[i]] for i in range(len(ids))])       # noqa: E731

    rep = pick(h, ids_visible)
    for blk in model.visible_encoder.blocks:
        rep = block(rep, rep, blk, heads, masks)
    pred = model.mask_token + model.position[ids_masked]
    for blk in model.decoupled_encoder.blocks:
        pred = block(pred, rep, blk, heads, masks)
    with torch.no_grad():
        target = pick(h, ids_masked)
        for blk in model.momentum_encoder.blocks:
            target = block(target, target, blk, heads, None)

    book = model.tokenizer.codebook
    target_scores = pick(z, ids_masked) @ book.weight.T + book.bias                  # (B, M, V)
    gumbel = -torch.log(-torch.log(uniform)) if noise == "gumbel" else 0.0
    sample = (target_scores + gumbel) / tau                                          # ONE sample for both halves
    soft = torch.softmax(sample, -1)
    hard = torch.nn.functional.one_hot(sample.argmax(-1), V).to(x.dtype)
    codeword_target = hard - soft.detach() + soft                                    # straight-through
    smoothed = codeword_target * 0.8 + 0.2 / V
    logp = torch.log_softmax(pred @ book.weight.T + book.bias, -1)
    mcc = -(smoothed * logp).sum(-1).mean()
    mrr = ((pred - target) ** 2).mean()
    return ALPHA * mrr + BETA * mcc, mrr, mcc


@pytest.mark.parametrize("dropout, sdpa, noise, tau, short_rows", [
    (0.0, False, "none", 0.5, 16), (0.2, False, "none", 1.0, 16), (0.2, False, "none", 1.0, 1),
    (0.0, True, "gumbel", 0.5, 16)])
def test_fast_pretraining_step_matches_reference_losses_and_gradients(monkeypatch, dropout, sdpa, noise, tau,
                                                                      short_rows):
    """sdpa: attention through F.scaled_dot_product_attention, the GPU's path, forced on the CPU. With
    target_noise 'none' the Gumbel draw must reach neither half of the straight-through target (the old
    mismatch, a noise-free hard target with a noisy soft gradient, fails here), with 'gumbel' both.
    short_rows: at 16 every row here is short (SoftmaxLastDim in training, the masked softmax in the fused
    blocks), at 1 none is (ATen's softmax in both)."""
    torch.manual_seed(0)
    monkeypatch.setattr(layers, "spelled_out", lambda x: not sdpa)
    monkeypatch.setattr(layers, "SHORT_ROWS", short_rows)
    model = TimeMAE(channels=C, seq_len=T, num_classes=3, d_model=16, attn_heads=2, layers=2, reg_layers=2,
                    vocab_size=12, wave_length=4, dropout=dropout, target_noise=noise, tau=tau).double().train()
    with torch.no_grad():  # residual scales of order 1, so every branch really contributes
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.fill_(0.7)
    S, M = model.num_windows, model.num_masked
    order = torch.stack([torch.randperm(S) for _ in range(B)])
    ids_visible, ids_masked = order[:, M:], order[:, :M]
    monkeypatch.setattr(model, "random_masking", lambda batch, device, pad: (ids_visible, ids_masked, None, None))
    uniform = torch.rand(B, M, 12, dtype=torch.float64)
    monkeypatch.setattr(torch, "rand_like", lambda t: uniform)
    masks, mask = [], Dropout.mask
    monkeypatch.setattr(Dropout, "mask", lambda self, t: masks.append(mask(self, t)) or masks[-1])
    x = torch.randn(B, T, C, dtype=torch.float64)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")]
    params = [p for _, p in named]

    fast = pretrain_loss(model.forward_pretrain(x), ALPHA, BETA)
    fast_grads = torch.autograd.grad(fast[0], params)
    assert (len(masks) > 0) == (dropout > 0)      # with dropout the CPU fast paths (mask, addcmul) ran
    ref = reference_losses(model, x, ids_visible, ids_masked, uniform, list(masks) if dropout else None, noise, tau)
    ref_grads = torch.autograd.grad(ref[0], params)

    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for (name, _), a, b in zip(named, fast_grads, ref_grads):
        assert a.abs().max() > 0 or b.abs().max() == 0, name
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12, msg=name)


@pytest.mark.parametrize("length", [9, 20])
def test_short_row_softmax_matches_torch_and_its_gradient(length):
    """SoftmaxLastDim, and softmax_last_dim by either kernel (rows of 9 are short, of 20 long, at 16 floats)."""
    scores = torch.randn(4, 3, 7, length, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(SoftmaxLastDim.apply(scores), scores.softmax(-1))
    assert torch.autograd.gradcheck(SoftmaxLastDim.apply, (scores,))
    torch.testing.assert_close(softmax_last_dim(scores), scores.softmax(-1))
    assert torch.autograd.gradcheck(softmax_last_dim, (scores,))
    bf16 = scores.detach().to(torch.bfloat16)
    assert SoftmaxLastDim.apply(bf16).dtype == torch.float32           # --amp: softmax in float32
    assert softmax_last_dim(bf16).dtype == torch.float32


def test_short_rows_pick_the_faster_cpu_kernel(monkeypatch):
    """Rows shorter than SHORT_ROWS: SoftmaxLastDim in training, ATen's masked softmax in fused blocks;
    longer rows: ATen's softmax in both (docs/speed.md, 'Short rows')."""
    monkeypatch.setattr(layers, "SHORT_ROWS", 16)
    block = TransformerBlock(16, 2, 0.0, True)

    def kernels(length, train):
        x = torch.randn(3, length, 16)
        with profile(activities=[ProfilerActivity.CPU]) as prof, torch.set_grad_enabled(train):
            block.train(train)(x)
        return {e.key for e in prof.key_averages()} & {"aten::_softmax", "aten::_masked_softmax", "aten::exp_"}

    assert kernels(9, train=True) == {"aten::exp_"}
    assert kernels(20, train=True) == {"aten::_softmax"}
    assert kernels(9, train=False) == {"aten::_masked_softmax"}
    assert kernels(20, train=False) == {"aten::_softmax"}


def test_dropout_add_matches_mask_then_add():
    drop = Dropout(0.2)
    x, branch = torch.randn(50, 16), torch.randn(50, 16)
    torch.manual_seed(1)
    fused = drop.add(x, branch)
    torch.manual_seed(1)
    torch.testing.assert_close(fused, x + drop(branch))
    assert torch.equal(drop.eval().add(x, branch), x + branch)


def run_flags(tstcc_dir, path, *extra):
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(path), "--wave_length", "4",
                 "--num_epoch_pretrain", "2", "--probe_every", "1", "--num_epoch", "1", "--eval_per_steps", "2",
                 *TINY, *extra]) == 0
    losses = [float(line.split(", ")[1][4:]) for line in (path / "pretrain_result.txt").read_text().splitlines()]
    return losses, json.loads((path / "metrics.json").read_text())


def test_compile_and_amp_run_on_cpu(tstcc_dir, tmp_path, caplog):
    """--compile (with the aot_eager backend: Dynamo and AOTAutograd without minutes of C++ code generation)
    computes what eager mode does, without Dynamo's graph-break warning; --amp (bfloat16 autocast) runs end to
    end and stays close."""
    eager, _ = run_flags(tstcc_dir, tmp_path / "eager")
    torch._dynamo.reset()  # compile afresh: Dynamo caches what it compiled
    dynamo_log = logging.getLogger("torch._dynamo")   # its own logger, which does not propagate to caplog's root
    dynamo_log.addHandler(caplog.handler)
    try:
        compiled, metrics = run_flags(tstcc_dir, tmp_path / "compiled", "--compile", "--compile_backend", "aot_eager")
    finally:
        dynamo_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if "Graph break" in r.getMessage()]
    assert_reported(tmp_path / "compiled", metrics)
    assert compiled == pytest.approx(eager, rel=1e-3)
    amp, metrics = run_flags(tstcc_dir, tmp_path / "amp", "--amp")
    assert_reported(tmp_path / "amp", metrics)
    assert amp == pytest.approx(eager, rel=0.05)


def test_eval_batch_is_large_on_a_gpu_only():
    cfg = parse_args(["--test_batch_size", "128"])
    assert eval_batch_size(cfg, torch.device("cpu")) == 128
    assert eval_batch_size(cfg, torch.device("cuda")) == GPU_EVAL_BATCH
    cfg.eval_batch_size = 512
    assert eval_batch_size(cfg, torch.device("cuda")) == eval_batch_size(cfg, torch.device("cpu")) == 512


@pytest.mark.parametrize("mode, marks", [("default", 0), ("max-autotune-no-cudagraphs", 0), ("reduce-overhead", 2)])
def test_compile_modes_that_replay_cuda_graphs_mark_each_step(mode, marks, monkeypatch, capsys):
    """--compile_mode reaches torch.compile; in the CUDA-graph modes every call of the compiled forward starts a
    new step (cudagraph_mark_step_begin), so a training loop's graphs know the last step's outputs are done with."""
    calls, modes, torch_compile = [], [], torch.compile
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    monkeypatch.setattr(torch, "compile", lambda f, **kw: modes.append(kw["mode"]) or torch_compile(f, **kw))
    cfg = parse_args(["--compile", "--compile_backend", "aot_eager", "--compile_mode", mode])
    torch._dynamo.reset()
    try:
        step = compiled(lambda x: x.sin() + 1, cfg)
        for _ in range(2):
            torch.testing.assert_close(step(torch.ones(3)), torch.ones(3).sin() + 1)
    finally:
        torch._dynamo.reset()
    assert len(calls) == marks and modes == [None if mode == "default" else mode]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--compile_mode", "fast"])
    assert exit_info.value.code == 2
    expected = (f"error: argument --compile_mode: invalid choice: fast (choose from {', '.join(COMPILE_MODES)}) "
                "(`python main.py --help` lists the arguments)\n")   # one line
    assert capsys.readouterr().err.replace("'", "") == expected   # Python versions differ in quoting the choices


@pytest.mark.parametrize("lengths", ["fixed", "variable"])
def test_pretraining_steps_read_nothing_back_from_the_device(lengths, tstcc_dir, tmp_path, monkeypatch):
    """A pretraining epoch reads tensors back to Python (item, bool, tolist, ...) the same number of times
    whether it takes 4 steps or 16: only at the epoch's end, with fixed-length series and with variable-length
    ones (padding masks of a fixed width). On a GPU each such read waits for the device. (Reads inside ATen,
    such as bincount's, do not show on the CPU: abdc4a4 removed the one known.)"""
    if lengths == "variable":
        train = torch.load(os.path.join(tstcc_dir, "train.pt"))
        train["samples"][::2, :, 20:] = float("nan")               # every other series 20 of 32 steps long
        torch.save(train, os.path.join(tstcc_dir, "train.pt"))
    reads, counting = collections.Counter(), [False]
    for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy", "cpu", "nonzero"):
        def read(self, *args, _name=name, _real=getattr(torch.Tensor, name), **kwargs):
            reads[_name] += counting[0]
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, read)
    pretrain_epoch = process.Trainer.pretrain_epoch

    def counted(*args):
        counting[0] = True
        try:
            return pretrain_epoch(*args)
        finally:
            counting[0] = False
    monkeypatch.setattr(process.Trainer, "pretrain_epoch", counted)
    per_epoch = []
    for batch in ("32", "8"):           # 128 pretraining series: 4 steps, then 16
        reads.clear()
        tiny = [batch if prev == "--train_batch_size" else a for prev, a in zip([None, *TINY], TINY)]
        assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(tmp_path / batch),
                     "--wave_length", "4", "--num_epoch_pretrain", "1", "--num_epoch", "0", *tiny]) == 0
        per_epoch.append(dict(reads))
    assert per_epoch[0] == per_epoch[1] and sum(per_epoch[0].values()) > 0
