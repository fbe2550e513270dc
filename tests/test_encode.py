"""python -m tools.encode on a main.py run: every input format, predictions, refusals; a checkpoint alone
encodes new series exactly as the training data would have them prepared; weights-only checkpoint reading."""
import os
import pickle
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from classification import extract_representations, predict_proba
from common.errors import TimeMAEError
from conftest import TINY, synthetic_series, write_tstcc
from datautils import load_dataset, normalize, prepare_series
from engine.checkpoint import load_model, open_checkpoint
from main import main
from tools.encode import main as encode


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("encode")
    data = write_tstcc(root / "Synthetic", n_train=48, n_val=16, n_test=16)
    out = root / "run"
    assert main(["--dataset", "har", "--data_path", data, "--save_path", str(out), "--wave_length", "4",
                 "--num_epoch_pretrain", "1", "--num_epoch", "1", "--eval_per_steps", "1", *TINY]) == 0
    return root, data, out


def new_series(n=6, channels=2):
    """(N, C, T) series unlike the training data: shifted and scaled, so normalisation matters."""
    x, _ = synthetic_series(n, channels=channels, seed=11)
    return (3 * x + 1).transpose(0, 2, 1).copy()


def write_all_formats(folder, x):
    """x (N, 1, T) univariate in every input format; returns the paths."""
    paths = {ext: str(folder / f"new{ext}") for ext in (".npy", ".npz", ".pt", ".ts", ".arff", ".tsv", ".csv")}
    np.save(paths[".npy"], x)
    np.savez(paths[".npz"], x=x)
    torch.save({"samples": torch.from_numpy(x)}, paths[".pt"])
    rows = [",".join(repr(float(v)) for v in s[0]) + ":0" for s in x]
    with open(paths[".ts"], "w") as f:
        f.write("@problemName New\n@univariate true\n@classLabel true 0\n@data\n" + "\n".join(rows))
    pd.DataFrame(x[:, 0]).to_csv(paths[".csv"], header=False, index=False)
    with open(paths[".arff"], "w") as f:                          # Weka's: one attribute per step, class last
        f.write("@relation New\n" + "".join(f"@attribute t{i} numeric\n" for i in range(x.shape[2])) +
                "@attribute class {0}\n@data\n" + "\n".join(r.replace(":", ",") for r in rows) + "\n")
    with open(paths[".tsv"], "w") as f:                           # the UCR 2018 archive: label, values, NaN tail
        f.write("".join("0\t" + "\t".join(repr(float(v)) for v in s[0]) + "\tNaN\n" for s in x))
    return paths


def test_every_input_format_gives_the_same_representations(tmp_path):
    data = write_tstcc(tmp_path / "Uni", n_train=40, n_val=8, n_test=8, channels=1)
    out = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", data, "--save_path", str(out), "--wave_length", "4",
                 "--num_epoch_pretrain", "1", "--num_epoch", "0", *TINY]) == 0
    paths = write_all_formats(tmp_path, new_series(channels=1))
    got = {}
    for ext, path in paths.items():
        assert encode([str(out), path, "--out", str(tmp_path / f"z{ext[1:]}.npy")]) == 0
        got[ext] = np.load(tmp_path / f"z{ext[1:]}.npy")
    unlabelled = tmp_path / "unlabelled.ts"                        # aeon's form of series without labels
    text = open(paths[".ts"]).read().replace("@classLabel true 0", "@classLabel false")
    unlabelled.write_text("\n".join(line.removesuffix(":0") for line in text.split("\n")))
    assert encode([str(out), str(unlabelled), "--out", str(tmp_path / "z_unlabelled.npy")]) == 0
    got["unlabelled .ts"] = np.load(tmp_path / "z_unlabelled.npy")
    assert got[".npy"].shape == (6, 16)
    for ext in got:
        np.testing.assert_allclose(got[ext], got[".npy"], rtol=1e-5, atol=1e-6, err_msg=ext)  # .ts/.csv are text
    assert encode([str(out), paths[".csv"], "--out", str(tmp_path / "z.csv")]) == 0
    table = pd.read_csv(tmp_path / "z.csv")
    assert list(table.columns[:2]) == ["z0", "z1"]
    np.testing.assert_allclose(table.to_numpy(), got[".npy"], rtol=1e-5, atol=1e-6)


def test_gaps_interpolate_run_encodes_new_series_with_gaps_as_it_filled_its_own(tmp_path, capsys):
    data = write_tstcc(tmp_path / "Gappy", n_train=40, n_val=8, n_test=8, channels=1)
    d = torch.load(os.path.join(data, "train.pt"))
    d["samples"][::4, 0, 6:9] = float("nan")                      # gaps inside every fourth training series
    torch.save(d, os.path.join(data, "train.pt"))
    flags = ["--dataset", "har", "--data_path", data, "--wave_length", "4", "--num_epoch_pretrain", "1",
             "--num_epoch", "0", *TINY]
    assert main([*flags, "--save_path", str(tmp_path / "refused")]) == 2
    assert "--gaps=interpolate fills NaN linearly" in capsys.readouterr().err
    assert main([*flags, "--save_path", str(tmp_path / "run"), "--gaps", "interpolate"]) == 0
    assert "--gaps interpolate: filled the missing values of 10 series linearly in time" in capsys.readouterr().out
    x = new_series(channels=1)
    gappy = x.copy()
    gappy[:, 0, 10] = np.nan                                        # halfway between its neighbours
    x[:, 0, 10] = (x[:, 0, 9] + x[:, 0, 11]) / 2
    for name, series in (("gappy", gappy), ("filled", x)):
        np.save(tmp_path / f"{name}.npy", series)
        out = str(tmp_path / f"z_{name}.npy")
        assert encode([str(tmp_path / "run"), str(tmp_path / f"{name}.npy"), "--out", out]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "z_gappy.npy"), np.load(tmp_path / "z_filled.npy"), atol=1e-6)


def test_meanmax_run_encodes_and_predicts_from_the_command_line(tmp_path, capsys):
    data = write_tstcc(tmp_path / "Synthetic", n_train=48, n_val=16, n_test=16)
    out = tmp_path / "run"
    assert main(["--dataset", "har", "--data_path", data, "--save_path", str(out), "--wave_length", "4",
                 "--num_epoch_pretrain", "1", "--num_epoch", "1", "--pooling", "meanmax", *TINY]) == 0
    np.save(tmp_path / "x.npy", new_series())
    assert encode([str(out), str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.npy")]) == 0
    model, _ = load_model(str(out / "pretrain_model.pkl"))
    assert model.cfg.pooling == "meanmax" and np.load(tmp_path / "z.npy").shape == (6, 32)   # 2 x d_model 16
    assert encode([str(out), str(tmp_path / "x.npy"), "--predict", "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 6
    series = (tmp_path / "x.npy").read_bytes()
    for given in ([], ["--predict"]):                             # --out naming the series it reads
        assert encode([str(out), str(tmp_path / "x.npy"), *given, "--out", str(tmp_path / "x.npy")]) == 2
        assert capsys.readouterr().err == (f"error: --out '{tmp_path / 'x.npy'}' would replace "
                                           f"'{tmp_path / 'x.npy'}', which this command reads: name another file\n")
    os.rename(tmp_path / "x.npy", tmp_path / "p_proba.npy")       # --predict --out p.npy writes p_proba.npy too
    assert encode([str(out), str(tmp_path / "p_proba.npy"), "--predict", "--out", str(tmp_path / "p.npy")]) == 2
    assert "would replace" in capsys.readouterr().err and not (tmp_path / "p.npy").exists()
    assert (tmp_path / "p_proba.npy").read_bytes() == series


def test_checkpoint_alone_encodes_as_the_training_data_prepares(run, tmp_path):
    root, data, out = run
    x = new_series()
    model, _ = load_model(str(out / "pretrain_model.pkl"))
    splits = load_dataset("har", data)                     # with the training data: its statistics, by hand
    splits = normalize(replace(splits, test_x=x.transpose(0, 2, 1), test_y=np.zeros(len(x), np.int64)))
    expected = extract_representations(model, torch.from_numpy(splits.test_x), 128)
    moved = root / "elsewhere"
    shutil.move(data, moved)                               # the training data is gone
    try:
        np.save(tmp_path / "x.npy", x)
        assert encode([str(out), str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.npy")]) == 0
    finally:
        shutil.move(moved, data)
    assert np.array_equal(np.load(tmp_path / "z.npy"), expected)


def test_predict_writes_labels_and_probabilities(run, tmp_path):
    _, _, out = run
    np.save(tmp_path / "x.npy", new_series())
    assert encode([str(out), str(tmp_path / "x.npy"), "--predict", "--out", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["label", "p_0", "p_1", "p_2"] and len(table) == 6
    proba = table[["p_0", "p_1", "p_2"]].to_numpy()
    # the fine-tuned model's own softmax on the series prepared as its training data was, not through the API
    model, ckpt = load_model(str(out / "model.pkl"))
    x = torch.as_tensor(prepare_series(new_series().transpose(0, 2, 1), ckpt["data"]))
    expected = predict_proba(model, x, 4)
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-7)
    assert table["label"].astype(str).tolist() == [ckpt["data"]["classes"][k] for k in expected.argmax(1)]
    assert encode([str(out), str(tmp_path / "x.npy"), "--predict", "--out", str(tmp_path / "p.npy")]) == 0
    assert (np.load(tmp_path / "p.npy") == table["label"].astype(str).to_numpy()).all()
    np.testing.assert_allclose(np.load(tmp_path / "p_proba.npy"), proba, rtol=1e-6)


@pytest.mark.parametrize("case, message", [
    ("channels", "has 3 channels but the model was trained on 2"),
    ("longer", "x.npy holds series of 40 steps but the model was trained on 32: longer series are refused"),
    ("nan", "x.npy: input data has non-finite values (NaN/inf) inside 1 series; only trailing NaN padding of "
            "variable-length series is allowed: the model was trained to refuse gaps: fill them and replace inf, or "
            "train with gaps interpolated (main.py --gaps interpolate, the API's gaps='interpolate')"),
    ("no_head", "has no trained classification head"),
    ("no_model", "holds no model.pkl (the run did not fine-tune: --num_epoch 0, or its data had no labels); to "
                 "predict, fit a classifier on its representations, e.g. a LogisticRegression on "
                 "TimeMAEEncoder.load(<run>/pretrain_model.pkl)"),
    ("unfinished", "holds no model.pkl: the run has not finished (no metrics.json); last.pkl is there: rerun its "
                   "command with --resume to finish it"),
    ("not_a_run", "is not a run folder (no args.json, no pretrain_model.pkl): pass a run folder"),
    ("format", "unknown file type .txt"),
    ("folder", "is a folder; pass one file of series (.npy, .npz, .pt, .ts, .arff, .tsv, .csv)"),
    ("not_npy", "x.npy: not a NumPy array file of numbers (numpy.save / savez), or a damaged or truncated one; "),
    ("objects", "x.npy: not a NumPy array file of numbers (numpy.save / savez), or a damaged or truncated one; "),
    ("truncated", "x.npy: not a NumPy array file of numbers (numpy.save / savez), or a damaged or truncated one; "),
    ("not_zip", "x.npz: not a NumPy array file of numbers (numpy.save / savez), or a damaged or truncated one; "),
    ("npz_objects", "x.npz: not a NumPy array file of numbers (numpy.save / savez), or a damaged or truncated one; "),
    ("npz_two", "error: " + "{tmp}/x.npz: holds ['a', 'b']; expected an array 'x' (or a single array)\n"),  # once
])
def test_refusals_are_one_line(run, tmp_path, capsys, case, message):
    _, _, out = run
    gap = new_series()
    gap[0, 0, 3] = np.nan
    x = {"channels": new_series(channels=3), "longer": np.zeros((2, 2, 40), np.float32), "nan": gap,
         "objects": np.array([{"a": 1}], dtype=object)}.get(case, new_series())
    path = tmp_path / ("x.txt" if case == "format" else "x.npz" if case.startswith(("npz", "not_zip")) else "x.npy")
    np.save(tmp_path / "x.npy", x, allow_pickle=case == "objects")
    if case in ("format", "not_npy"):
        path.write_text("1,2,3\n")
    if case == "folder":
        path = tmp_path / "series.ts"
        path.mkdir()
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    if case == "not_zip":
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    if case == "npz_objects":
        np.savez(path, x=np.array([0, "a"], dtype=object))
    if case == "npz_two":
        np.savez(path, a=x, b=x)
    model = str(out / "pretrain_model.pkl") if case == "no_head" else str(out)
    if case == "no_model":                                        # a run folder of FineLast only
        model = str(tmp_path / "finelast")
        shutil.copytree(out, model, ignore=shutil.ignore_patterns("model.pkl"))
    if case == "not_a_run":                                       # a dataset folder, say
        model = str(tmp_path)
    if case == "unfinished":                                      # killed while fine-tuning
        model = str(tmp_path / "unfinished")
        shutil.copytree(out, model, ignore=shutil.ignore_patterns("model.pkl", "metrics.json"))
        shutil.copy(os.path.join(model, "pretrain_model.pkl"), os.path.join(model, "last.pkl"))
    predict = ["--predict"] * (case in ("no_head", "no_model", "unfinished"))
    assert encode([model, str(path), "--out", str(tmp_path / "z.npy"), *predict]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "z.npy").exists()


class Payload:
    """Unpickling this runs a command: what weights-only loading must refuse."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_weights_only_refuses_a_pickle_that_carries_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": Payload(), "config": {}}, tmp_path / "evil.pkl")
    with pytest.raises(TimeMAEError, match=r"other than tensors and plain values \(posix.system\)"):
        open_checkpoint(str(tmp_path / "evil.pkl"))
    with open(tmp_path / "old.pkl", "wb") as f:                  # a plain pickle with an ndarray: refused too
        pickle.dump({"model": {}, "config": {}, "rng": np.zeros(3)}, f, protocol=2)
    with pytest.raises(TimeMAEError, match="docs/api.md#old-checkpoints"):
        open_checkpoint(str(tmp_path / "old.pkl"))
    assert not (tmp_path / "PWNED").exists()
    (tmp_path / "notes.txt").write_text("# not a checkpoint\n")
    with pytest.raises(TimeMAEError, match=r"notes.txt' is not a TimeMAE checkpoint \(not a file torch.save wrote\)"):
        open_checkpoint(str(tmp_path / "notes.txt"))


def test_run_checkpoints_load_weights_only(run):
    _, _, out = run
    for name in ("pretrain_model.pkl", "model.pkl"):
        ckpt = torch.load(out / name, weights_only=True)
        assert {"channels", "seq_len", "classes", "mean", "std", "shorter", "longer"} <= set(ckpt["data"])
        assert ckpt["data"]["classes"] == ["0", "1", "2"] and len(ckpt["data"]["mean"]) == 2
    assert torch.load(out / "model.pkl", weights_only=True)["head"] == "fineall"
