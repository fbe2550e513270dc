"""tools.baselines: the aeon baselines fit on the series a finished run's FineLast fitted on and score its test
split, on the data the run trained on; without aeon the tool says how to install it, in one line."""
import json
import os
import shutil
import sys
import types

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import main
import tools.baselines
import tools.pooling
import tools.runs
from scale_helpers import tiny_flags, write_pt_dataset

AEON = ("aeon", "aeon.classification", "aeon.classification.convolution_based", "aeon.classification.distance_based")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_pt_dataset(str(tmp_path_factory.mktemp("data")))


def finished_run(data, folder, **flags):
    assert main.main(tiny_flags(data, str(folder), **{"num_epoch_pretrain": 1, "num_epoch": 0, **flags})) == 0
    return str(folder)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    return finished_run(data, tmp_path_factory.mktemp("run") / "run")


@pytest.fixture
def euclidean_nn(monkeypatch):
    """1-NN (Euclidean) in aeon's place, recording the series each fit gets."""
    fitted = []

    def classifier(method, seed, threads):
        record = FunctionTransformer(lambda x: fitted.append(len(x)) or x.reshape(len(x), -1))
        return make_pipeline(record, KNeighborsClassifier(1))   # the transformer also sees the test series
    monkeypatch.setattr(tools.baselines, "aeon_classifier", classifier)
    return fitted


@pytest.mark.parametrize("refit", [1, 0])
def test_the_baselines_fit_on_finelasts_series_and_score_the_test_split(data, tmp_path, euclidean_nn, refit):
    """The series FineLast's final probe fitted on (fit and selection series with --probe_refit 1, the fit split
    with 0), as the run's own raw 1-NN baseline: with 1-NN in aeon's place the tool reproduces that baseline."""
    run = finished_run(data, tmp_path / "run", probe_refit=refit)
    row, = tools.baselines.baseline_rows(run, ["minirocket"])
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    assert row["fitted"] == euclidean_nn[0] == metrics["finelast"]["fitted"] == (48 if refit else 38)
    assert euclidean_nn[1:] == [32]                                           # the test split, once
    own = metrics["baselines"]["nn1"]
    assert (row["dataset"], row["method"], row["acc"], row["f1"]) == ("epilepsy", "minirocket", own["acc"], own["f1"])


def test_dtw_runs_once_for_seeds_of_the_same_series(data, run, tmp_path, euclidean_nn, capsys):
    """1-NN DTW draws nothing: another seed's run on the same labelled series (all of them, refit) takes the first
    run's predictions; MiniRocket, seeded, fits again."""
    other = finished_run(data, tmp_path / "seed1", seed=1)
    assert tools.baselines.main([run, other, "--out", str(tmp_path / "b.csv")]) == 0
    assert euclidean_nn == [48, 32, 48, 32, 48, 32]        # minirocket, dtw, then minirocket of the second run only
    table = pd.read_csv(tmp_path / "b.csv")
    assert table.reused.tolist() == [False, False, False, True]
    dtw = table[table.method == "dtw"]
    assert dtw.acc.nunique() == 1 and len(dtw) == 2


def test_the_means_are_per_dataset(data, run, tmp_path, euclidean_nn, capsys):
    other = finished_run(data, tmp_path / "har", dataset="har")               # the same files read as HAR
    assert tools.baselines.main([run, other, "--methods", "minirocket", "dtw"]) == 0
    out = capsys.readouterr().out
    means = out.split("mean over the runs (%):\n")[1].splitlines()
    assert [line.split()[:3] for line in means[1:]] == [["epilepsy", "minirocket", "1"], ["epilepsy", "dtw", "1"],
                                                        ["har", "minirocket", "1"], ["har", "dtw", "1"]]


def test_data_that_is_not_the_runs_is_refused_and_moved_data_is_found(tmp_path, euclidean_nn, capsys):
    """tools.runs.run_data, which tools.pooling reads runs with too."""
    data = write_pt_dataset(str(tmp_path / "data"))
    run = finished_run(data, tmp_path / "run")
    moved = shutil.copytree(data, tmp_path / "moved")
    write_pt_dataset(data, n_train=60)                                        # other series where the run's were
    out = tmp_path / "baselines.csv"
    assert tools.baselines.main([run, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not what the run trained on" in err and "--data_path" in err
    assert not out.exists()
    assert tools.baselines.main([run, "--data_path", str(moved), "--out", str(out)]) == 0
    assert pd.read_csv(out).fitted.tolist() == [48, 48]
    assert tools.pooling.main([run, "--pooling", "mean"]) == 2
    assert "is not what the run trained on" in capsys.readouterr().err
    assert tools.pooling.main([run, "--pooling", "mean", "--data_path", str(moved)]) == 0


def test_minirocket_refuses_series_shorter_than_its_kernels(tmp_path, capsys):
    data = write_pt_dataset(str(tmp_path / "data"), length=8)
    run = finished_run(data, tmp_path / "run")
    assert tools.baselines.main([run, "--methods", "minirocket"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MiniRocket needs series of at least 9 steps, these have 8" in err


def test_series_reach_aeon_as_numpy3d_with_padding_as_zero():
    x = np.arange(12, dtype=np.float32).reshape(1, 4, 3)     # (N, T, C)
    x[0, 3] = np.nan                                          # the last step is padding
    out = tools.baselines.numpy3d(x)
    assert out.shape == (1, 3, 4) and out.dtype == np.float64
    np.testing.assert_array_equal(out[0, :, :3], x[0, :3].T)
    assert (out[0, :, 3] == 0).all()


def test_without_aeon_the_tool_says_how_to_install_it(run, tmp_path, monkeypatch, capsys):
    for name in AEON:                                         # import raises ImportError, even where aeon is loaded
        monkeypatch.setitem(sys.modules, name, None)
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


def test_the_aeon_classifiers_are_built_as_the_baselines_say(monkeypatch):
    """Without aeon (CI) the classifiers' settings are still checked, through stand-in modules: MiniRocket seeded
    and threaded, 1-NN with the DTW distance (not aeon's default Euclidean), threaded."""
    built = []

    def recorder(name):
        return type(name, (), {"__init__": lambda self, **kw: built.append((name, kw))})

    modules = {"aeon": None, "aeon.classification": None,
               "aeon.classification.convolution_based": {"MiniRocketClassifier": recorder("MiniRocket")},
               "aeon.classification.distance_based": {"KNeighborsTimeSeriesClassifier": recorder("KNN")}}
    for name, members in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(members or {})
        monkeypatch.setitem(sys.modules, name, module)
    tools.baselines.aeon_classifier("minirocket", 7, 2)
    tools.baselines.aeon_classifier("dtw", 7, 3)
    assert built == [("MiniRocket", {"random_state": 7, "n_jobs": 2}),
                     ("KNN", {"distance": "dtw", "n_neighbors": 1, "n_jobs": 3})]


def test_each_run_and_method_counts_once_and_every_folder_is_checked_first(data, run, tmp_path, euclidean_nn,
                                                                          capsys, monkeypatch):
    monkeypatch.chdir(os.path.dirname(run))
    spellings = [run, run + "/", os.path.basename(run)]          # one folder, however spelt
    assert tools.baselines.main([*spellings, "--methods", "dtw", "dtw", "--out", str(tmp_path / "b.CSV")]) == 0
    assert euclidean_nn == [48, 32]                              # one run, one method
    assert "mean over the runs" not in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "b.CSV").run.tolist() == [run]
    euclidean_nn.clear()
    missing = str(tmp_path / "nope")
    assert tools.baselines.main([run, missing]) == 2
    assert capsys.readouterr().err == f"error: run folder {missing!r} does not exist\n"
    moved_data = shutil.copytree(data, tmp_path / "data")
    moved = finished_run(str(moved_data), tmp_path / "moved")
    shutil.rmtree(moved_data)
    assert tools.baselines.main([run, moved]) == 2
    assert "(args.json) is not there: pass --data_path" in capsys.readouterr().err
    assert euclidean_nn == []                                    # nothing fitted before either refusal


def test_moved_data_is_named_with_its_run(tmp_path, euclidean_nn, capsys):
    data = write_pt_dataset(str(tmp_path / "data"))
    run = finished_run(data, tmp_path / "run")
    os.rename(data, tmp_path / "elsewhere")
    assert tools.baselines.main([run]) == 2
    assert capsys.readouterr().err == (f"error: {run!r}: its data {data!r} (args.json) is not there: pass "
                                       "--data_path with the folder it is in now\n")
    assert tools.baselines.main([run, "--data_path", str(tmp_path / "elsewhere")]) == 0



def test_the_means_keep_configurations_apart(data, run, tmp_path, euclidean_nn, capsys):
    """Runs of other label ratios fit on other series: their means are not pooled."""
    half = finished_run(data, tmp_path / "half", label_ratio=0.5)
    assert tools.baselines.main([run, half, "--methods", "minirocket"]) == 0
    means = capsys.readouterr().out.split("mean over the runs (%):\n")[1].splitlines()[1:]
    assert [line.split()[:3] for line in means] == [["epilepsy", "label_ratio=1.0", "minirocket"],
                                                    ["epilepsy", "label_ratio=0.5", "minirocket"]]


def test_an_error_reading_a_runs_data_names_the_run_and_keeps_its_kind(run, monkeypatch, capsys):
    """A setting named in the error (a ConfigError's settings) is still spelt as the tool's --flag."""
    from model.config import ConfigError

    def refuse(cfg):
        raise ConfigError("wave_length 99 is longer than the series", ["wave_length"])
    monkeypatch.setattr(tools.runs, "load_splits", refuse)
    assert tools.baselines.main([run]) == 2
    assert capsys.readouterr().err == f"error: {run!r}: --wave_length 99 is longer than the series\n"


def test_the_tools_read_each_runs_args_json_once(data, run, euclidean_nn, monkeypatch, capsys):
    """run_table reads a run's flags for its checks and hands them to the rows; run_data does not read them again."""
    reads = []
    read = tools.runs.saved_flags
    monkeypatch.setattr(tools.runs, "saved_flags", lambda folder: reads.append(folder) or read(folder))
    assert tools.baselines.main([run, run + "/", "--methods", "dtw"]) == 0
    assert tools.pooling.main([run, "--pooling", "mean"]) == 0
    assert reads == [os.path.normpath(run)] * 2
