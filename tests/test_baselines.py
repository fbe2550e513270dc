"""tools.baselines: the aeon baselines fit on a finished run's labelled series and score its test split; without
aeon the tool says how to install it, in one line."""
import json
import os
import sys

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import main
import tools.baselines
from scale_helpers import tiny_flags, write_pt_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = write_pt_dataset(str(tmp_path_factory.mktemp("data")))
    folder = str(tmp_path_factory.mktemp("run") / "run")
    assert main.main(tiny_flags(data, folder, num_epoch_pretrain=1, num_epoch=0)) == 0
    return folder


def test_the_baselines_fit_on_the_runs_labelled_series_and_score_its_test_split(run, monkeypatch):
    """With 1-NN (Euclidean) in aeon's place the tool reproduces the run's own raw 1-NN baseline, which fits on
    every labelled training series (--probe_refit 1) and scores test: the same series, labels and split."""
    def euclidean_nn(method, seed, threads):
        return make_pipeline(FunctionTransformer(lambda x: x.reshape(len(x), -1)), KNeighborsClassifier(1))
    monkeypatch.setattr(tools.baselines, "aeon_classifier", euclidean_nn)
    rows = tools.baselines.baseline_rows(run, ["minirocket"])
    with open(os.path.join(run, "metrics.json")) as f:
        own = json.load(f)["baselines"]["nn1"]
    assert [r["method"] for r in rows] == ["minirocket"]
    assert rows[0]["acc"] == own["acc"] and rows[0]["f1"] == own["f1"]


def test_series_reach_aeon_as_numpy3d_with_padding_as_zero():
    x = np.arange(12, dtype=np.float32).reshape(1, 4, 3)     # (N, T, C)
    x[0, 3] = np.nan                                          # the last step is padding
    out = tools.baselines.numpy3d(x)
    assert out.shape == (1, 3, 4) and out.dtype == np.float64
    np.testing.assert_array_equal(out[0, :, :3], x[0, :3].T)
    assert (out[0, :, 3] == 0).all()


def test_without_aeon_the_tool_says_how_to_install_it(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "aeon", None)            # import aeon raises ImportError
    out = tmp_path / "baselines.csv"
    assert tools.baselines.main([run, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -r requirements-baselines.txt" in err
    assert not out.exists()


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert tools.baselines.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a finished run folder" in err


def test_minirocket_and_dtw_learn_the_tiny_set(run):
    pytest.importorskip("aeon", reason="optional: pip install -r requirements-baselines.txt")
    rows = tools.baselines.baseline_rows(run)
    assert [r["method"] for r in rows] == ["minirocket", "dtw"]
    assert all(r["acc"] >= 0.8 for r in rows), rows        # two classes of sines, 32 test series
