"""run.sh over seeds with its summary, summarize.py and visualize.py on real run folders."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, folder_bytes
from experiments.presets import PRESETS
from tools.summarize import main as summarize_main
from visualize import main as visualize_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--wave_length", "4", "--num_epoch_pretrain", "2", "--probe_every", "1", "--num_epoch", "1", *TINY]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from conftest import write_tstcc
    tmp = tmp_path_factory.mktemp("runsh")
    data = write_tstcc(tmp / "HAR")
    env = {**os.environ, "EXP_DIR": str(tmp / "exp")}
    proc = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "har", "2", "--data_path", data, *FAST],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "exp" / "har", proc.stdout, data


def test_run_sh_runs_each_seed_and_summarises(two_runs):
    folder, stdout, _ = two_runs
    assert (folder / "seed1" / "metrics.json").exists() and (folder / "seed2" / "metrics.json").exists()
    summary = pd.read_csv(folder / "summary.csv", dtype={"commit": str})   # a short hash may be all digits, or 1e5...
    assert summary.loc[0, "runs"] == 2 and summary.loc[0, "select_on"] == "val"
    runs = [pd.read_json(folder / f"seed{k}" / "metrics.json", typ="series") for k in (1, 2)]
    for protocol in ("finelast", "fineall"):       # mean and the sample standard deviation (ddof 1) over seeds
        accs = pd.Series([100 * r[protocol]["acc"] for r in runs])
        assert summary.loc[0, f"{protocol}_acc_mean"] == pytest.approx(accs.mean(), abs=0.01)
        assert summary.loc[0, f"{protocol}_acc_std"] == pytest.approx(accs.std(ddof=1), abs=0.01)
    for name in ("nn1", "logistic"):                          # the raw-series baselines beside TimeMAE
        raw = 100 * sum(r["baselines"][name]["acc"] for r in runs) / 2
        assert summary.loc[0, f"raw_{name}_acc_mean"] == pytest.approx(raw, abs=0.01)
    assert "raw 1-NN acc" in stdout and "raw logistic acc" in stdout
    assert "±" in stdout
    from engine.provenance import short_commit               # the commit the runs came from, as args.json has it
    provenance = [json.loads((folder / f"seed{k}" / "args.json").read_text())["provenance"] for k in (1, 2)]
    assert summary.fillna("").loc[0, "commit"] == " ".join(sorted({short_commit(p["commit"], p["dirty"])
                                                                   for p in provenance} - {""}))
    assert (short_commit("0123456789", True), short_commit("0123456789", False),
            short_commit(None, None)) == ("0123456+dirty", "0123456", "")
    with open(folder / "summary.png", "rb") as f:                # run.sh's plot of the same summary
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_run_sh_rejects_unknown_dataset():
    proc = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "mnist"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown dataset 'mnist'; usage: bash run.sh <")
    assert proc.stderr.count("\n") == 1
    proc = subprocess.run(["bash", os.path.join(ROOT, "run.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no dataset given; usage: bash run.sh <")


def test_run_sh_refuses_the_seed_and_run_folder_it_sets_in_one_line(two_runs, tmp_path):
    """An extra --seed (or a prefix main.py reads as it) would give every run that seed: refused before any run."""
    env = {**os.environ, "EXP_DIR": str(tmp_path / "exp")}
    for flags in (["--seed", "7"], ["--see=7"], ["--save_path", "x"], ["--sav=x"]):
        proc = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "har", "2", "--data_path", two_runs[2], *FAST,
                               *flags], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr == (
            "error: run.sh sets --seed (1 to runs) and --save_path ($EXP_DIR/<dataset>/seed<k>) of each run; drop "
            f"{flags[0]} from the extra flags\n"), proc.stderr
    assert not (tmp_path / "exp").exists()


def test_run_sh_again_on_its_runs_names_resume_overwrite_and_exp_dir_before_any_run(two_runs):
    """Its runs are there: the hint names what run.sh takes (main.py's would name --save_path, which it refuses)."""
    folder = two_runs[0]
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    proc = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "har", "2", "--data_path", two_runs[2], *FAST],
                          env={**os.environ, "EXP_DIR": str(folder.parent)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {folder}/seed1 holds a run: pass --resume to continue the runs, --overwrite to replace them, or set "
        "EXP_DIR to run into another folder\n")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_run_sh_summarises_its_own_runs_only(two_runs, tmp_path):
    """A seed folder left by an earlier invocation with more runs is not one of this invocation's runs."""
    shutil.copytree(two_runs[0] / "seed2", tmp_path / "exp" / "har" / "seed2")
    proc = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "har", "1", "--data_path", two_runs[2], *FAST],
                          env={**os.environ, "EXP_DIR": str(tmp_path / "exp")}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = pd.read_csv(tmp_path / "exp" / "har" / "summary.csv")
    run = pd.read_json(tmp_path / "exp" / "har" / "seed1" / "metrics.json", typ="series")
    assert summary.loc[0, "runs"] == 1
    assert summary.loc[0, "finelast_acc_mean"] == pytest.approx(100 * run["finelast"]["acc"], abs=0.01)
    folder = two_runs[0]              # several folders, a run below two of them counted once
    assert summarize_main([str(folder / "seed1"), str(folder), "--out", str(tmp_path / "s.csv")]) == 0
    assert pd.read_csv(tmp_path / "s.csv").loc[0, "runs"] == 2


def test_summarize_counts_a_run_found_in_two_study_folders_once(two_runs, tmp_path, capsys):
    """The same run in two folders (one configuration in two studies): one seed, not two."""
    folder = two_runs[0]
    shutil.copytree(folder / "seed1", tmp_path / "other_study" / "seed1")
    assert summarize_main([str(folder), str(tmp_path / "other_study"), "--out", str(tmp_path / "s.csv")]) == 0
    assert pd.read_csv(tmp_path / "s.csv").loc[0, "runs"] == 2                    # seed1 once, seed2
    assert (f"note: 1 run(s) repeat another's configuration, seed, commit and scores, and count once: "
            f"{tmp_path / 'other_study' / 'seed1'}") in capsys.readouterr().out


def test_run_sh_reads_relative_paths_from_the_callers_folder(two_runs, tmp_path):
    """run.sh starts the runs in the repository; a relative --data_path and EXP_DIR are still the caller's."""
    caller = tmp_path / "caller"
    caller.mkdir()
    data = os.path.relpath(two_runs[2], caller)
    proc = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "har", "1", "--data_path", data, *FAST],
                          cwd=caller, env={**os.environ, "EXP_DIR": "exp"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    args = json.loads((caller / "exp" / "har" / "seed1" / "args.json").read_text())
    assert args["data_path"] == str(caller / data) and os.path.samefile(args["data_path"], two_runs[2])
    assert (caller / "exp" / "har" / "summary.csv").exists()


def test_summarize_refuses_empty_folder(tmp_path, capsys):
    assert summarize_main([str(tmp_path)]) == 2 and "no run folder" in capsys.readouterr().err


def test_summarize_reads_a_folder_whose_name_holds_glob_characters(two_runs, tmp_path):
    folder = shutil.copytree(two_runs[0], tmp_path / "runs[1]" / "har")
    assert summarize_main([str(folder.parent), "--out", str(tmp_path / "s.csv")]) == 0
    assert pd.read_csv(tmp_path / "s.csv").loc[0, "runs"] == 2


def test_summarize_refuses_an_unwritable_output_in_one_line(two_runs, tmp_path, capsys, monkeypatch):
    """Each output is checked before any work: its name (a run's metrics.json is never overwritten by mistake) and
    its folder; one that cannot be written after all (a full disk, say) is one line too."""
    folder = str(two_runs[0])
    metrics = os.path.join(folder, "seed1", "metrics.json")
    before = open(metrics).read()
    for flag, suffix in (("--out", ".csv"), ("--markdown", ".md"), ("--plot", ".png")):
        assert summarize_main([folder, flag, metrics]) == 2
        assert capsys.readouterr().err == f"error: {flag} {metrics!r}: name a {suffix} file\n"
        missing = str(tmp_path / "missing" / f"s{suffix}")
        assert summarize_main([folder, flag, missing]) == 2
        assert capsys.readouterr().err == (f"error: {flag} {missing!r}: its folder {str(tmp_path / 'missing')!r} "
                                           "does not exist\n")
    assert open(metrics).read() == before
    import engine.runfiles
    monkeypatch.setattr(engine.runfiles.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left")))
    assert summarize_main([folder, "--plot", str(tmp_path / "s.png")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot write '{tmp_path / 's.png'}': No space left")


def test_visualize_writes_curves_and_tsne(two_runs, tmp_path, monkeypatch):
    import numpy as np
    import torch
    from sklearn.manifold import TSNE
    import visualize
    from classification import extract_representations
    from datautils import load_dataset, prepare_series
    from engine.checkpoint import load_model
    folder, _, data = two_runs
    run = folder / "seed1"
    embedded, figures = [], {}
    real_fit, real_save = TSNE.fit_transform, visualize.atomic_save_figure
    monkeypatch.setattr(TSNE, "fit_transform", lambda self, x: embedded.append(x) or real_fit(self, x))
    monkeypatch.setattr(visualize, "atomic_save_figure",
                        lambda fig, path: figures.setdefault(os.path.basename(path), fig) and real_save(fig, path))
    assert visualize_main([str(run), "--data_path", data, "--max_points", "40"]) == 0
    for name in ("curves.png", "codebook.png", "finetune.png", "tsne.png"):
        with open(run / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the t-SNE embeds the selected encoder's representations of 40 test series drawn with seed 0, one colour a class
    test = load_dataset("har", data)
    idx = np.random.default_rng(0).permutation(len(test.test_x))[:40]
    model, ckpt = load_model(str(run / "pretrain_model.pkl"))
    reps = extract_representations(model, torch.from_numpy(prepare_series(test.test_x[idx], ckpt["data"])), 512)
    np.testing.assert_array_equal(embedded[0], reps)
    points = [len(c.get_offsets()) for c in figures["tsne.png"].axes[0].collections]
    assert points == np.bincount(test.test_y[idx], minlength=test.num_classes).tolist()
    from visualize import read_finetune                       # what finetune.png draws: result.txt's evaluations
    steps, kept = read_finetune(str(run))
    lines = (run / "result.txt").read_text().splitlines()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(steps) == len(lines) - 1 and kept == metrics["fineall"]["step"] and kept in set(steps.step)
    first = lines[0].split(", ")
    assert (steps.step[0], steps.acc[0]) == (int(first[1][4:]), float(first[2].split("_acc")[1]))
    (tmp_path / "result.txt").write_text("")                   # a run without FineAll (--num_epoch 0)
    assert read_finetune(str(tmp_path))[0].empty and read_finetune(str(tmp_path))[1] is None


def test_visualize_draws_the_t_sne_of_a_run_without_pretraining_epochs(two_runs, tmp_path, capsys):
    folder, _, data = two_runs
    run = tmp_path / "finezero"
    shutil.copytree(folder / "seed1", run, ignore=shutil.ignore_patterns("*.png"))
    (run / "pretrain_log.jsonl").write_text("")                  # as a FineZero run leaves it
    assert visualize_main([str(run), "--data_path", data, "--max_points", "40"]) == 0
    assert "no pretraining epochs" in capsys.readouterr().out
    assert sorted(p.name for p in run.glob("*.png")) == ["finetune.png", "tsne.png"]      # FineZero+ still drawn


def test_visualize_skips_what_a_run_without_labels_or_test_split_lacks_and_refuses_bad_input_in_one_line(
        two_runs, tmp_path, capsys):
    """--dataset numpy runs: unlabelled (no probe panel; the t-SNE in one colour, or none without a test split) and
    labelled without a test split (no t-SNE); data other than the run's (another channel count, or the same shape
    with other statistics), --max_points 1 and a damaged args.json are refused in one line."""
    import torch

    from conftest import synthetic_series, write_tstcc
    from datautils import data_description, load_dataset, normalize
    folder, _, data = two_runs
    x, y = synthetic_series(40)                                         # the runs' shape: 2 channels, 32 steps
    x = x.transpose(0, 2, 1)
    epochs = pd.read_json(folder / "seed1" / "pretrain_log.jsonl", lines=True)
    for name, arrays, log in (("unlabelled", {"x": x}, epochs.drop(columns="probe")),
                              ("unlabelled_test", {"x": x, "x_test": x}, epochs.drop(columns="probe")),
                              ("no_test", {"x": x, "y": y}, epochs)):
        run = tmp_path / name
        shutil.copytree(folder / "seed1", run, ignore=shutil.ignore_patterns("*.png"))
        np.savez(tmp_path / f"{name}.npz", **arrays)
        args = json.loads((run / "args.json").read_text())
        (run / "args.json").write_text(json.dumps({**args, "dataset": "numpy",
                                                   "data_path": str(tmp_path / f"{name}.npz")}))
        log.to_json(run / "pretrain_log.jsonl", orient="records", lines=True)
        if "y" not in arrays:
            (run / "result.txt").unlink()                               # nothing to fine-tune on
        ckpt = torch.load(run / "pretrain_model.pkl", weights_only=False)   # as if trained on this data
        ckpt["data"] = data_description(normalize(load_dataset("numpy", str(tmp_path / f"{name}.npz"))))
        torch.save(ckpt, run / "pretrain_model.pkl")
    assert visualize_main([str(tmp_path / "unlabelled")]) == 0
    assert capsys.readouterr().out.splitlines()[1::2] == [
        f"{tmp_path / 'unlabelled'}: no probe ran (unlabelled data): curves.png has no probe panel",
        f"{tmp_path / 'unlabelled'}: the data has no test split, a t-SNE needs 2 or more: no tsne.png"]
    assert visualize_main([str(tmp_path / "unlabelled_test"), "--max_points", "20"]) == 0
    assert (tmp_path / "unlabelled_test" / "tsne.png").exists()
    assert visualize_main([str(tmp_path / "no_test")]) == 0
    assert capsys.readouterr().out.endswith("the data has no test split, a t-SNE needs 2 or more: no tsne.png\n")
    assert sorted(p.name for p in (tmp_path / "no_test").glob("*.png")) == ["codebook.png", "curves.png",
                                                                           "finetune.png"]
    run = str(folder / "seed1")
    wide, other = write_tstcc(tmp_path / "wide", channels=3), write_tstcc(tmp_path / "other", n_train=50)
    for argv, error in (([run, "--data_path", wide], f"{run!r}: the data in {wide!r} is not what the run trained on "
                                                     "(channels, mean, std differ): pass --data_path with the run's "
                                                     "data\n"),
                        ([run, "--data_path", other], f"{run!r}: the data in {other!r} is not what the run trained "
                                                      "on (mean, std differ)"),
                        ([run, "--data_path", data, "--max_points", "1"], "--max_points must be 2 or more")):
        assert visualize_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {error}") and err.count("\n") == 1
    (tmp_path / "no_test" / "args.json").write_text('{"dataset": ')
    assert visualize_main([str(tmp_path / "no_test")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read {tmp_path / 'no_test' / 'args.json'}: expected a "
                                              "JSON object, the file is not valid JSON (")


def test_plotting_leaves_the_matplotlib_backend_and_pyplot_alone(two_runs, tmp_path):
    """visualize and tools.summarize --plot draw on Figure objects (the studies' runner too): a notebook's backend
    and its pyplot figures are left as they were, and the figures are written."""
    folder, _, _ = two_runs
    shutil.copytree(folder / "seed1", tmp_path / "run")                 # visualize writes into the run folder
    code = ("import sys, matplotlib; matplotlib.use('svg'); import visualize, tools.summarize; "
            "assert tools.summarize.main([sys.argv[1], '--plot', sys.argv[2]]) == 0; "
            "assert visualize.main([sys.argv[3], '--no_tsne']) == 0; "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "s.png"), str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["svg", "False"] and (tmp_path / "s.png").stat().st_size > 0
    assert all((tmp_path / "run" / name).stat().st_size > 0 for name in ("curves.png", "codebook.png"))


def test_visualize_refuses_a_non_run_folder(tmp_path, capsys):
    assert visualize_main([str(tmp_path)]) == 2 and "not a run folder" in capsys.readouterr().err


def test_summarize_notes_runs_without_test_scores_and_refuses_unreadable_json_in_one_line(two_runs, tmp_path,
                                                                                            capsys):
    """Runs on unlabelled data, or labelled data without a test split (metrics.json as main.py writes it then),
    are listed in a note with empty accuracy columns; a damaged JSON file is named in one line."""
    folder, _, _ = two_runs
    exp = tmp_path / "exp"
    for name in ("labelled", "no_test", "unlabelled"):
        shutil.copytree(folder / "seed1", exp / name, ignore=shutil.ignore_patterns("*.png"))
    metrics = json.loads((folder / "seed1" / "metrics.json").read_text())
    no_test = {**metrics, "baselines": None, "finelast": {"C": 1.0, "epoch": 2, "fitted": 96, "single_class": False},
               "fineall": {"single_class": False, "step": 3}}
    unlabelled = {k: v for k, v in metrics.items() if k not in ("baselines", "finelast", "fineall")}
    for name, content in (("no_test", no_test), ("unlabelled", unlabelled)):
        (exp / name / "metrics.json").write_text(json.dumps(content))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert summarize_main([str(exp), "--out", str(tmp_path / "s.csv"), "--plot", str(tmp_path / "s.png")]) == 0
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]     # every file it read is closed
    summary = pd.read_csv(tmp_path / "s.csv")
    assert summary.runs.tolist() == [3]
    assert summary.finelast_acc_mean[0] == pytest.approx(100 * metrics["finelast"]["acc"], abs=0.01)  # labelled's
    out = capsys.readouterr().out
    assert f"note: 2 run(s) without a test accuracy (unlabelled data, or no test split), counted in `runs` with " \
           f"empty accuracy columns: {exp / 'no_test'}, {exp / 'unlabelled'}\n" in out
    assert summarize_main([str(exp / "unlabelled"), "--plot", str(tmp_path / "u.png")]) == 2
    assert capsys.readouterr().err == \
        "error: --plot: no run has a test accuracy to draw (unlabelled data, or no test split)\n"
    args_json = exp / "labelled" / "args.json"
    good = args_json.read_text()
    for content, error in (({"seed": "x"}, "seed='x': expected a whole number"),
                           ({"dataset": ["har"]}, "dataset=['har']: expected one of"),
                           ({"provenance": "x"}, "expected provenance to be an object, got 'x'")):
        args_json.write_text(json.dumps({**json.loads(good), **content}))
        for command in (summarize_main, visualize_main):
            assert command([str(exp / "labelled")]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: cannot read {args_json}: ") and error in err and err.count("\n") == 1, err
    args_json.write_text(good)
    for name in ("args.json", "metrics.json", "pretrain_log.jsonl"):
        broken = exp / "labelled" / name
        good = broken.read_text()
        broken.write_text(good[:-10])                                    # cut short by a full disk, say
        assert summarize_main([str(exp)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot read {broken}: expected ") and err.count("\n") == 1
        broken.write_text(good)
    metrics_json, log = exp / "labelled" / "metrics.json", exp / "labelled" / "pretrain_log.jsonl"
    good_log = log.read_text()
    assert '"mse": ' in good_log and '"probe": ' in good_log
    for path, content, error in (   # valid JSON of the wrong shape, edited by hand, say
            (metrics_json, {**metrics, "finelast": 5}, "expected finelast to be an object, got 5"),
            (metrics_json, {**metrics, "finelast": {"acc": "x"}}, "expected finelast.acc to be a number, got 'x'"),
            (metrics_json, {**metrics, "finelast": {"acc": 1.7}},
             "expected finelast.acc to be a score in [0, 1], got 1.7"),
            (metrics_json, {**metrics, "fineall": {"acc": float("nan")}},
             "expected fineall.acc to be a score in [0, 1], got nan"),
            (metrics_json, {**metrics, "finelast": {**metrics["finelast"], "epoch": float("inf")}},
             "expected finelast.epoch to be a finite number, got inf"),
            (metrics_json, {**metrics, "baselines": {"nn1": {"acc": None}, "logistic": []}},
             "expected baselines.logistic to be an object, got []"),
            (log, '{"epoch": "x"}\n', 'record 1 is not a pretraining epoch\'s (an object with the numbers epoch, '
                                      'loss, mse, ce, hits, ndcg, used, ppl): {"epoch": "x"}'),
            (log, good_log.replace('"mse": ', '"mse": "x", "was": ', 1), "record 1 is not a pretraining epoch's"),
            (log, good_log.replace('"probe": ', '"probe": "x", "was": ', 1), "record "),
            (log, "[1, 2]\n", "record 1 is not a pretraining epoch's")):
        good = path.read_text()
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        for command in (summarize_main, visualize_main):
            if command is visualize_main and "baselines" in error or command is summarize_main and "epoch" in error:
                continue   # visualize does not read the baselines, summarize not FineLast's epoch
            assert command([str(exp / "labelled")]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"error: cannot read {path}: {error}") and err.count("\n") == 1, err
        path.write_text(good)
    os.remove(exp / "labelled" / "args.json")                           # its dataset and flags would be defaults
    assert summarize_main([str(exp)]) == 2
    assert capsys.readouterr().err == (f"error: {str(exp / 'labelled')!r} holds metrics.json but no args.json: the "
                                       "run's flags are unknown; restore it, or move the folder out of the summary\n")


def test_summarize_groups_every_run_below_a_root_by_the_flags_that_differ(two_runs, tmp_path, capsys):
    folder, _, data = two_runs
    other = tmp_path / "exp" / "ablation" / "no_mcc"
    for seed in (1, 2):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "--dataset", "har", "--data_path",
                               data, *PRESETS["har"], *FAST, "--no_mcc", "--seed", str(seed),
                               "--save_path", str(other / f"seed{seed}")],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for seed in (1, 2):
        shutil.copytree(folder / f"seed{seed}", tmp_path / "exp" / "full" / f"seed{seed}")
    md = tmp_path / "summary.md"
    assert summarize_main([str(tmp_path / "exp"), "--out", str(tmp_path / "s.csv"), "--markdown", str(md)]) == 0
    summary = pd.read_csv(tmp_path / "s.csv").set_index("config")
    assert sorted(summary.index) == ["no_mcc=False", "no_mcc=True"] and (summary.runs == 2).all()
    assert "FineLast acc" in md.read_text() and "±" in md.read_text()
    used = [pd.read_json(tmp_path / "exp" / "full" / f"seed{s}" / "pretrain_log.jsonl", lines=True).used.iloc[-1]
            for s in (1, 2)]                                   # the last epoch's usage, as summarize reads it
    assert summary.loc["no_mcc=False", "codewords_used_mean"] == pytest.approx(sum(used) / 2)


def test_summarize_names_a_ucr_run_by_its_set_as_its_run_folder_is_named(two_runs, tmp_path):
    folder, _, _ = two_runs
    for name in ("GunPoint", "ArrowHead"):
        run = tmp_path / "exp" / name / "seed1"
        shutil.copytree(folder / "seed1", run)
        for file, fields in (("args.json", {"dataset": "ucr", "UCR_folder": name}),
                             ("metrics.json", {"dataset": "ucr"})):
            (run / file).write_text(json.dumps({**json.loads((run / file).read_text()), **fields}))
    assert summarize_main([str(tmp_path / "exp"), "--out", str(tmp_path / "s.csv")]) == 0
    summary = pd.read_csv(tmp_path / "s.csv")
    assert list(summary.dataset) == ["ArrowHead", "GunPoint"] and summary.config.isna().all()   # nothing differs
    args = json.loads((tmp_path / "exp" / "ArrowHead" / "seed1" / "args.json").read_text())
    (tmp_path / "exp" / "ArrowHead" / "seed1" / "args.json").write_text(json.dumps({**args, "pretrain_epochs": 40}))
    assert summarize_main([str(tmp_path / "exp"), "--out", str(tmp_path / "s.csv")]) == 0
    summary = pd.read_csv(tmp_path / "s.csv")                   # the epochs run (the step budget's), not the flag
    assert summary.pretrain_epochs.tolist() == [40, args["pretrain_epochs"]] and summary.config.isna().all()


def test_curves_panels_share_the_epochs_and_a_single_probe_sits_on_a_whole_number_tick(monkeypatch, tmp_path):
    import visualize
    figures = []
    monkeypatch.setattr(visualize, "atomic_save_figure", lambda fig, path: figures.append(fig))
    pre = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.9], "mse": [0.5, 0.4], "ce": [0.5, 0.5], "hits": [0.1, 0.2],
                        "ndcg": [0.2, 0.3], "used": [10, 12], "ppl": [5.0, 6.0], "probe": [float("nan"), 0.8]})
    visualize.plot_curves(str(tmp_path), {"select_on": "val"}, pre, {"finelast": {"epoch": 2, "acc": 0.9}})
    axes = figures[0].axes
    assert {ax.get_xlim() for ax in axes} == {(0.5, 2.5)}                  # the probe panel had 1.9 .. 2.1
    probe = axes[5]
    assert probe.get_title() == "probe accuracy"
    assert [t for t in probe.get_xticks() if 0.5 <= t <= 2.5] == [1.0, 2.0]


def test_summary_plot_draws_each_groups_means_and_stds_beside_the_baselines_per_dataset():
    from tools.summarize import group_label, plot_summary
    summary = pd.DataFrame({"dataset": ["ArrowHead", "ArrowHead", "OSULeaf"], "pretrain_epochs": [100, 0, 100],
                            "config": ["dropout=0.1", "", float("nan")], "runs": [3, 3, 1],
                            "finelast_acc_mean": [72.8, 60.0, 64.2], "finelast_acc_std": [3.2, 1.0, float("nan")],
                            "fineall_acc_mean": [float("nan")] * 3, "fineall_acc_std": [float("nan")] * 3,
                            "raw_nn1_acc_mean": [80.0, 80.0, 52.1], "raw_nn1_acc_std": [0.0, 0.0, float("nan")]})
    fig = plot_summary(summary)
    arrow, osu = fig.axes
    assert [t.get_text() for t in arrow.get_yticklabels()] == ["100 epochs, dropout=0.1 (n=3)", "FineZero (n=3)"]
    assert [t.get_text() for t in osu.get_yticklabels()] == ["100 epochs (n=1)"]
    widths = [p.get_width() for p in arrow.patches]           # FineLast's bars, then raw 1-NN's; FineAll has none
    assert widths == [72.8, 60.0, 80.0, 80.0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["FineLast", "raw 1-NN"]
    errors = [c for c in arrow.containers if hasattr(c, "errorbar")][0].errorbar.lines[2][0].get_segments()
    assert [s[1][0] - s[0][0] for s in errors] == pytest.approx([6.4, 2.0])    # 2 std: mean - std to mean + std
    long = {"pretrain_epochs": 5, "config": "attn_heads=2 vocab_size=64 tokenizer=argmax no_mcc=True", "runs": 2}
    assert group_label(long) == "5 epochs, attn_heads=2 vocab_size=64\ntokenizer=argmax no_mcc=True (n=2)"   # whole
    assert group_label({"pretrain_epochs": 0, "config": "", "runs": 1, "transfer": True}) == "0 epochs (n=1)"
    old = plot_summary(summary.assign(dataset=float("nan")))      # metrics.json without a dataset: one panel
    assert [(ax.get_title(), ax.get_xlabel()) for ax in old.axes] == [("dataset not recorded",
                                                                        "test accuracy (%), mean ± std over seeds")]


def test_summarize_reads_a_flag_missing_from_an_older_args_json_as_its_default(two_runs, tmp_path):
    """A run written before a flag existed ran with what is now its default: it groups with runs that set it."""
    import json
    folder, _, _ = two_runs
    for seed in (1, 2):
        shutil.copytree(folder / f"seed{seed}", tmp_path / "exp" / f"seed{seed}")
    old = tmp_path / "exp" / "seed1" / "args.json"
    args = json.loads(old.read_text())
    assert args.pop("pooling") == "mean"
    old.write_text(json.dumps(args))
    assert summarize_main([str(tmp_path / "exp"), "--out", str(tmp_path / "s.csv")]) == 0
    summary = pd.read_csv(tmp_path / "s.csv")
    assert len(summary) == 1 and summary.loc[0, "runs"] == 2


def test_pooling_tool_reproduces_the_runs_finelast_and_probes_the_other_poolings_and_fits(two_runs, tmp_path,
                                                                                           capsys):
    import json

    from tools.pooling import main as pooling_main
    folder, _, _ = two_runs
    runs = [str(folder / f"seed{s}") for s in (1, 2)]
    assert pooling_main([*runs, "--out", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.pooling) == ["mean", "mean", "max", "max", "meanmax", "meanmax", "flat", "flat"] * 2
    assert list(table.refit) == [0, 1] * 8
    for run in runs:
        own = json.loads(open(os.path.join(run, "metrics.json")).read())["finelast"]
        rows = table[(table.run == run) & (table.pooling == "mean")]     # the runs used --pooling mean
        row = rows[rows.refit == 1].iloc[0]                              # and --probe_refit 1
        assert (row.C, row.acc, row.f1) == (own["C"], own["acc"], own["f1"])
        assert (rows.C.nunique(), rows.val_acc.nunique()) == (1, 1)      # one choice of C, two fits of it
    from tools.pooling import summary
    means = summary(table)
    assert len(means) == 8 and set(means.runs) == {2}
    printed = capsys.readouterr().out
    assert "mean over the runs" in printed
    for _, row in means.iterrows():                                      # each setting over the two runs, in %
        both = table[(table.pooling == row.pooling) & (table.phases == row.phases) & (table.refit == row.refit)]
        assert row.val == pytest.approx(100 * both.val_acc.mean())
        assert (row.acc, row.acc_std) == pytest.approx((100 * both.acc.mean(), 100 * both.acc.std()))
        assert (row.f1, row.f1_std) == pytest.approx((100 * both.f1.mean(), 100 * both.f1.std()))
        assert f"{row.acc:.2f} ± {row.acc_std:.2f}" in printed                # quoted as the results tables do
    assert pooling_main([runs[0], "--probe_C", "0.003", "--out", str(tmp_path / "c.csv")]) == 0
    assert set(pd.read_csv(tmp_path / "c.csv").C) == {0.003}                # a grid other than the run's
    assert pooling_main([runs[0], "--phases", "1", "2", "--out", str(tmp_path / "k.csv")]) == 0
    phased = pd.read_csv(tmp_path / "k.csv")
    assert list(phased.phases) == [1, 1, 2, 2] * 4
    one = phased[phased.phases == 1].drop(columns="phases").reset_index(drop=True)
    pd.testing.assert_frame_equal(one, table[table.run == runs[0]].drop(columns="phases").reset_index(drop=True))
    assert pooling_main([runs[0], "--pooling", "mean", "max", "--layers", "1", "0,1",        # TINY: 1 block
                         "--out", str(tmp_path / "l.csv")]) == 0
    layered = pd.read_csv(tmp_path / "l.csv", dtype={"layers": str})
    assert list(layered.pooling) == ["mean"] * 4 + ["max"] * 4
    assert list(layered.layers) == ["1", "1", "0,1", "0,1"] * 2
    last = layered[layered.layers == "1"].drop(columns="layers").reset_index(drop=True)
    own = table[(table.run == runs[0]) & table.pooling.isin(["mean", "max"])]
    pd.testing.assert_frame_equal(last, own.drop(columns="layers").reset_index(drop=True))
    assert pooling_main([runs[0], "--pooling", "mean", "--encoders", "visible", "momentum",
                         "--out", str(tmp_path / "e.csv")]) == 0
    encoded = pd.read_csv(tmp_path / "e.csv")
    assert list(encoded.encoder) == ["visible"] * 2 + ["momentum"] * 2
    own = table[(table.run == runs[0]) & (table.pooling == "mean")].reset_index(drop=True)
    pd.testing.assert_frame_equal(encoded[encoded.encoder == "visible"].reset_index(drop=True), own)
    assert pooling_main([runs[0], "--pooling", "mean", "--probes", "logistic", "nn1", "ridge",
                         "--out", str(tmp_path / "n.csv")]) == 0
    probed = pd.read_csv(tmp_path / "n.csv")
    assert list(probed.probe) == ["logistic"] * 2 + ["nn1"] * 2 + ["ridge"] * 2 and list(probed.refit) == [0, 1] * 3
    pd.testing.assert_frame_equal(probed[probed.probe == "logistic"].reset_index(drop=True), own)
    for kind in ("nn1", "ridge"):   # no C; one validation, of the fit split's classifier
        assert probed[probed.probe == kind].C.isna().all() and probed[probed.probe == kind].val_acc.nunique() == 1
    probed = probed[probed.probe != "ridge"]
    # each grid phase a sample: with one phase it is the logistic probe itself; with two, its own rows
    assert pooling_main([runs[0], "--pooling", "mean", "--phases", "1", "2", "--probes", "logistic", "phase_samples",
                         "--out", str(tmp_path / "k.csv")]) == 0
    stacked = pd.read_csv(tmp_path / "k.csv")
    assert list(stacked.phases) == [1] * 4 + [2] * 4
    assert list(stacked.probe) == (["logistic"] * 2 + ["phase_samples"] * 2) * 2
    assert pooling_main([runs[0], "--pooling", "mean", "--phases", "1", "2", "--out", str(tmp_path / "l2.csv")]) == 0
    pd.testing.assert_frame_equal(stacked[stacked.probe == "logistic"].reset_index(drop=True),
                                  pd.read_csv(tmp_path / "l2.csv"))   # the phases' mean: represent()'s, bit for bit
    one, two = (stacked[stacked.phases == k].drop(columns="probe").reset_index(drop=True) for k in (1, 2))
    pd.testing.assert_frame_equal(one.iloc[:2], one.iloc[2:].reset_index(drop=True))
    # two phases, written out: the probe fitted with the row's C on every labelled series' two phases, on test
    import dataclasses
    import torch
    from classification import PhaseSampleProbe, extract_representations, scores
    from engine.checkpoint import model_from_checkpoint
    from tools.runs import CHECKPOINT, run_data
    cfg, splits, fit, held, ckpt = run_data(runs[0])
    model = model_from_checkpoint(ckpt, os.path.join(runs[0], CHECKPOINT))
    model.cfg = dataclasses.replace(model.cfg, pooling="mean", phases=2)
    train_k, test_k = (extract_representations(model, torch.as_tensor(x), 512, each_phase=True)
                       for x in (splits.train_x, splits.test_x))                  # (2, N, D) each
    both = np.concatenate([fit, held])
    row = stacked[(stacked.phases == 2) & (stacked.probe == "phase_samples") & (stacked.refit == 1)].iloc[0]
    probe = PhaseSampleProbe(row.C, cfg.seed).fit(train_k[:, both], splits.train_y[both])
    assert scores(splits.test_y, probe.predict(test_k))["acc"] == pytest.approx(row.acc, abs=1e-12)
    assert pooling_main([str(tmp_path / "not a run"), "--probes", "phase_samples", "--cv", "2"]) == 2
    assert "--cv does not combine with --probes phase_samples" in capsys.readouterr().err   # before any folder
    assert pooling_main([*runs, "--pooling", "mean", "--probes", "logistic", "nn1", "--cv", "2",
                         "--out", str(tmp_path / "v.csv")]) == 0
    crossed = pd.read_csv(tmp_path / "v.csv")
    pd.testing.assert_frame_equal(crossed.drop(columns=["cv_C", "cv_acc"]).iloc[:4], probed)  # the same rows, and:
    assert (crossed.groupby(["run", "probe"]).cv_acc.nunique() == 1).all()  # one K-fold score per run and probe
    assert crossed[crossed.probe == "nn1"].cv_C.isna().all() and crossed[crossed.probe == "logistic"].cv_C.notna().all()
    assert " cv " in capsys.readouterr().out.split("mean over the runs")[1]
    assert pooling_main([runs[0], "--layers", "2"]) == 2
    assert "repr_layers [2] must lie in 0 (the window embeddings) to 1" in capsys.readouterr().err
    assert pooling_main([str(tmp_path)]) == 2
    assert "is not a finished run folder" in capsys.readouterr().err
    assert pooling_main([runs[0], "--phases", "0"]) == 2
    assert capsys.readouterr().err == "error: --phases must be 1 or more, got 0\n"
    for bad in (["--probe_C", "1", "-1"], ["--probe_C", "nan"]):
        assert pooling_main([runs[0], *bad]) == 2
        assert capsys.readouterr().err.startswith("error: --probe_C values must be positive, got [")
    with pytest.raises(SystemExit):
        pooling_main([runs[0], "--threads", "0"])
    assert "argument --threads: expected a whole number of 1 or more, got '0'" in capsys.readouterr().err


def test_pooling_tool_refuses_an_unwritable_output_before_the_work_in_one_line(two_runs, tmp_path, capsys):
    """--out names a .csv file in a folder that exists or can be made: never a run's own args.json or
    metrics.json, checked before any probing; a missing folder is made."""
    from tools.pooling import main as pooling_main
    run = str(two_runs[0] / "seed1")
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "p.csv"                                    # a folder that cannot be made
    assert pooling_main([run, "--pooling", "mean", "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert printed.err == f"error: --out {str(out)!r}: its folder cannot be created in {str(out.parent)!r}\n"
    assert printed.out == ""                                             # refused before probing anything
    for bad in (os.path.join(run, "metrics.json"), ""):
        before = open(os.path.join(run, "metrics.json")).read()
        assert pooling_main([run, "--pooling", "mean", "--out", bad]) == 2
        assert capsys.readouterr().err == f"error: --out {bad!r}: name a .csv file\n"
        assert open(os.path.join(run, "metrics.json")).read() == before
    (tmp_path / "dir.csv").mkdir()
    assert pooling_main([run, "--pooling", "mean", "--out", str(tmp_path / "dir.csv")]) == 2
    assert capsys.readouterr().err == f"error: --out {str(tmp_path / 'dir.csv')!r} is a folder; name a file\n"
    made = tmp_path / "new" / "p.csv"
    assert pooling_main([run, "--pooling", "mean", "--out", str(made)]) == 0 and made.is_file()


def test_tools_build_no_parser_at_import_and_read_a_runs_flags_over_todays_defaults(two_runs, tmp_path, capsys):
    code = ("import args\n"
            "def refuse():\n"
            "    raise AssertionError('the flag parser was built at import')\n"
            "args.build_parser = refuse\n"
            "import tools.summarize, tools.pooling")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from args import flag_defaults, saved_flags
    from tools.pooling import main as pooling_main
    from tools.runs import run_settings
    run = tmp_path / "run"
    shutil.copytree(two_runs[0] / "seed1", run)
    args = json.loads((run / "args.json").read_text())
    args.pop("pooling")                                                  # a run from before --pooling
    (run / "args.json").write_text(json.dumps({**args, "dropout": 0.3}))
    flags = saved_flags(str(run))
    assert (flags["pooling"], flags["dropout"]) == (flag_defaults()["pooling"], 0.3)
    assert vars(run_settings(str(run))) == flags                         # the pooling tool reads them alike
    with pytest.raises(TypeError):
        flag_defaults()["dropout"] = 0.5                                 # shared by every caller: read-only
    (run / "args.json").write_text('{"dropout": ')
    assert pooling_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {run / 'args.json'}: expected a JSON object") and err.count("\n") == 1


def test_with_encoder_represents_by_the_momentum_encoder_and_leaves_the_model_alone():
    import torch

    from model import TimeMAE
    from tools.pooling import with_encoder
    torch.manual_seed(0)
    model = TimeMAE(channels=1, seq_len=32, num_classes=2, wave_length=4).eval()
    with torch.no_grad():
        for p in model.momentum_encoder.parameters():   # H_xi away from H_theta, as after pretraining
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = TimeMAE(channels=1, seq_len=32, num_classes=2, wave_length=4).eval()   # H_xi's weights put by name
    reference.load_state_dict({**before, **{k.replace("momentum_encoder.", "visible_encoder."): v
                                            for k, v in before.items() if k.startswith("momentum_encoder.")}})
    x = torch.randn(3, 32, 1)
    assert torch.equal(with_encoder(model, "momentum").represent(x), reference.represent(x))
    assert not torch.allclose(model.represent(x), reference.represent(x))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert with_encoder(model, "visible") is model


def test_fineall_margin_rules_keep_the_probe_or_the_first_best_step():
    from tools.fineall_margin import keep
    acc = np.array([0.5, 0.55, 0.58, 0.58])               # one SE of 0.5 on 32 series: 0.088
    assert keep(acc, 32, "none") == 2 and keep(acc, 32, "1se") == 0
    assert keep(np.array([0.5, 0.7, 0.6]), 32, "1se") == 1
    assert keep(np.array([0.5, 0.5, 0.4]), 32, "none") == 0  # a tie keeps the probe


def test_fineall_margin_halves_cut_every_class_and_the_one_series_classes_in_two():
    from tools.fineall_margin import halves
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 5])        # classes 2-5 hold one series each
    for _ in range(50):
        a, b = halves(y, rng)
        assert (a ^ b).all() and (y[a] == 0).sum() == 2 and (y[a] == 1).sum() in (1, 2)
        assert np.isin(y[a], [2, 3, 4, 5]).sum() == 2


@pytest.mark.parametrize("margin", ["none", "1se"])
def test_fineall_margin_tool_records_every_candidate_and_screens_them(tmp_path, capsys, margin):
    """`run` saves each FineAll candidate's predictions; `screen` reproduces the run's kept step and FineAll's
    test accuracy from them under the run's own rule, and compares the rules on halves of the selection split."""
    from conftest import write_tstcc
    from tools.fineall_margin import CANDIDATES, main as margin_main, screen_run
    data = write_tstcc(tmp_path / "data")
    run = tmp_path / "run"
    assert margin_main(["run", "--dataset", "har", "--data_path", data, "--save_path", str(run), *FAST,
                        "--num_epoch", "6", "--eval_per_steps", "2", "--fineall_head", "probe",
                        "--fineall_margin", margin]) == 0
    z = np.load(run / CANDIDATES)
    lines = [line for line in (run / "result.txt").read_text().splitlines() if line.startswith("epoch")]
    assert z["step"].tolist() == [int(line.split(", ")[1][4:]) for line in lines]   # every candidate, in order
    metrics = json.loads((run / "metrics.json").read_text())
    assert z["sel_pred"].shape == (len(lines), metrics["selection"]) and z["test_pred"].shape == (len(lines), 48)
    logged = [float(line.split("val_acc")[1].split(",")[0]) for line in lines]
    assert np.allclose((z["sel_pred"] == z["sel_y"]).mean(1), logged, atol=5e-5)
    row = screen_run(str(run), repeats=20)
    assert row[f"step_{margin}"] == metrics["fineall"]["step"] and row["step_none"] > 0   # fine-tuning helped
    assert row[f"test_{margin}"] == pytest.approx(100 * metrics["fineall"]["acc"])
    assert margin_main(["screen", str(run), "--repeats", "20"]) == 0
    assert "mean over sets" in capsys.readouterr().out


def test_fineall_margin_tool_refuses_a_run_without_the_probe_head_and_folders_it_did_not_write(tmp_path, capsys):
    from tools.fineall_margin import CANDIDATES, main as margin_main
    assert margin_main(["run", "--dataset", "har", "--data_path", str(tmp_path), *FAST]) == 2
    assert "pass --fineall_head probe" in capsys.readouterr().err
    (tmp_path / CANDIDATES).write_text("not an npz")
    for folder in (tmp_path / "missing", tmp_path):
        assert margin_main(["screen", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "written by `python -m tools.fineall_margin run`" in err


def test_subset_refuses_its_source_as_destination_and_checks_every_size_before_writing(tmp_path, capsys):
    import torch

    from conftest import write_tstcc
    from tools.subset import main as subset_main
    src = write_tstcc(tmp_path / "src")
    before = folder_bytes(tmp_path / "src")
    sizes = ["--train", "30", "--val", "8", "--test", "12"]
    os.symlink(src, tmp_path / "link")
    for dst in (src, str(tmp_path / "link")):
        assert subset_main([src, dst, *sizes]) == 2
        assert capsys.readouterr().err == (f"error: destination {dst!r} is the source folder: the subset would "
                                           "replace the dataset; choose another destination\n")
    assert folder_bytes(tmp_path / "src") == before
    dst = tmp_path / "dst"
    assert subset_main([src, str(dst), *sizes[:-1], "999999"]) == 2
    assert capsys.readouterr().err == "error: --test must lie in 3..45 (test.pt holds 48 series of 3 classes), got " \
                                      "999999\n"
    assert not dst.exists()                                      # not even train.pt and val.pt
    assert subset_main([src, str(dst), *sizes]) == 0
    assert capsys.readouterr().out == f"{dst}: train 30, val 8, test 12\n"
    for split, n in (("train", 30), ("val", 8), ("test", 12)):
        subset = torch.load(dst / f"{split}.pt")
        counts = np.bincount(subset["labels"].numpy(), minlength=3)
        assert subset["samples"].shape == (n, 2, 32) and counts.max() - counts.min() <= 1   # stratified: a third each
    assert sorted(os.listdir(dst)) == ["test.pt", "train.pt", "val.pt"]      # no temporary file left
    for split in ("train", "val", "test"):                          # TS-TCC files may hold NumPy arrays
        data = torch.load(dst / f"{split}.pt")
        torch.save({k: v.numpy() for k, v in data.items()}, tmp_path / "src" / f"{split}.pt")
    assert subset_main([src, str(tmp_path / "from_numpy"), "--train", "20", "--val", "4", "--test", "6"]) == 0
    assert torch.load(tmp_path / "from_numpy" / "train.pt", weights_only=False)["samples"].shape == (20, 2, 32)


def test_subset_reads_a_split_as_main_does(tmp_path, capsys):
    """tools.subset reads a .pt file with the loaders' check: the pair (samples, labels) main.py reads is read too,
    and anything else is refused with the loaders' message."""
    import torch

    from conftest import write_tstcc
    from datautils import read_pt, unpack_pt
    from tools.subset import main as subset_main
    src, val = tmp_path / "src", tmp_path / "src" / "val.pt"
    write_tstcc(src)
    data = torch.load(val)
    args = [str(src), str(tmp_path / "dst"), "--train", "30", "--val", "8", "--test", "12", "--overwrite"]
    torch.save((data["samples"], data["labels"]), val)
    assert subset_main(args) == 0
    assert torch.load(tmp_path / "dst" / "val.pt")["samples"].shape == (8, 2, 32)
    capsys.readouterr()
    torch.save({"samples": data["samples"].numpy(), "labels": np.array(list("ab") * 16)}, val)   # text labels
    assert subset_main(args) == 0
    kept = torch.load(tmp_path / "dst" / "val.pt", weights_only=False)["labels"]
    assert kept.tolist().count("a") == kept.tolist().count("b") == 4                   # stratified, kept as text
    subset = str(tmp_path / "dst" / "val.pt")
    assert sorted(set(unpack_pt(read_pt(subset), subset)[1].tolist())) == ["a", "b"]   # as main.py reads them
    for stored, message in (({"samples": data["samples"]}, "expected a dict with 'samples' and 'labels' (or a pair "
                                                           "(samples, labels))"),
                            ({"samples": data["samples"].numpy(), "labels": np.array([1, "a"] * 16, dtype=object)},
                             "labels must be of one kind (all numbers or all text)")):
        torch.save(stored, val)
        assert subset_main(args) == 2
        assert capsys.readouterr().err == f"error: {val}: {message}\n"


def test_subset_replaces_a_dataset_only_with_overwrite_and_whole(tmp_path, capsys, monkeypatch):
    """A destination holding a dataset is refused without --overwrite; a write that fails part-way (the second
    file) leaves the three files there as they were; --train 1 of 3 classes is refused in tools.subset's words."""
    import torch

    import tools.subset
    from common.errors import TimeMAEError
    from conftest import write_tstcc
    src, dst = write_tstcc(tmp_path / "src"), str(tmp_path / "dst")
    args = [src, dst, "--train", "30", "--val", "8", "--test", "12"]
    smaller = [src, dst, "--train", "20", "--val", "8", "--test", "12"]
    assert tools.subset.main(args) == 0
    before = folder_bytes(dst)
    capsys.readouterr()
    assert tools.subset.main(smaller) == 2
    assert capsys.readouterr().err == (f"error: destination {dst!r} already holds test.pt, train.pt, val.pt: pass "
                                       "--overwrite to replace the dataset, or choose another destination\n")
    real, calls = tools.subset.atomic_save, []

    def fails_second(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise TimeMAEError(f"cannot write {path!r}: No space left on device")
        real(obj, path)
    monkeypatch.setattr(tools.subset, "atomic_save", fails_second)
    assert tools.subset.main([*smaller, "--overwrite"]) == 2
    monkeypatch.undo()
    assert folder_bytes(dst) == before
    assert tools.subset.main([*smaller, "--overwrite"]) == 0
    assert torch.load(os.path.join(dst, "train.pt"))["labels"].shape == (20,)
    capsys.readouterr()
    open(os.path.join(dst, "train_new.pt"), "w").close()         # a layout main.py prefers to the subset's
    assert tools.subset.main([*smaller, "--overwrite"]) == 2
    assert capsys.readouterr().err == (f"error: destination {dst!r} holds train_new.pt, which main.py reads before "
                                       "train.pt and test.pt: choose another destination\n")
    assert tools.subset.main([src, str(tmp_path / "one"), "--train", "1"]) == 2
    assert capsys.readouterr().err == "error: --train must lie in 3..93 (train.pt holds 96 series of 3 classes), " \
                                      "got 1\n"


def test_subset_keeps_exactly_the_series_asked_for(tmp_path):
    """29 of 35 series (a share 29/35 rounded up to 30, over the range of a 6-class draw) and 7 of 25: n exactly."""
    import torch

    from tools.subset import write_subset
    src = tmp_path / "src"
    src.mkdir()
    for split, counts in (("train", [6, 6, 6, 6, 6, 5]), ("val", [5, 5, 5]), ("test", [9, 8, 8])):
        labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        torch.save({"samples": torch.randn(len(labels), 1, 8), "labels": labels}, src / f"{split}.pt")
    assert write_subset(str(src), str(tmp_path / "dst"), {"train": 29, "val": 4, "test": 7}) == \
        {"train": 29, "val": 4, "test": 7}


def test_subset_stratifies_labels_of_any_numbers(tmp_path):
    """Labels main.py reads (-1 and 1, as in the UCR files) are drawn by class, not refused by np.bincount."""
    import torch

    from conftest import write_tstcc
    from tools.subset import write_subset
    src = tmp_path / "src"
    write_tstcc(src)
    train = torch.load(src / "train.pt")
    torch.save({"samples": train["samples"], "labels": train["labels"] * 2 - 1}, src / "train.pt")   # -1, 1, 3
    write_subset(str(src), str(tmp_path / "dst"), {"train": 30, "val": 8, "test": 12})
    kept = torch.load(tmp_path / "dst" / "train.pt")["labels"]
    assert sorted(kept.unique(return_counts=True)[1].tolist()) == [10, 10, 10] and set(kept.tolist()) == {-1, 1, 3}


def test_the_run_reading_tools_mean_per_dataset_and_take_older_checkpoints(tmp_path, capsys):
    """tools.pooling's means are per dataset, as tools.baselines' are; tools.runs takes a checkpoint that predates
    the data description's gaps entry (gaps were refused then) or the description itself, and refuses an empty
    --data_path."""
    import torch

    import main
    from scale_helpers import tiny_flags, write_pt_dataset
    from tools.pooling import main as pooling_main
    data = write_pt_dataset(str(tmp_path / "data"))
    runs = [str(tmp_path / name) for name in ("epilepsy", "har")]
    for run, dataset in zip(runs, ("epilepsy", "har")):                   # the same files read by two loaders
        assert main.main(tiny_flags(data, run, dataset=dataset, num_epoch_pretrain=1, num_epoch=0)) == 0
    out = tmp_path / "p.csv"
    assert pooling_main([*runs, "--pooling", "mean", "--out", str(out)]) == 0
    means = capsys.readouterr().out.split("mean over the runs (%):\n")[1].splitlines()[1:]
    assert [line.split()[:2] for line in means] == [["epilepsy", "visible"]] * 2 + [["har", "visible"]] * 2
    finezero = str(tmp_path / "finezero")                                  # beside a pretrained run: kept apart
    assert main.main(tiny_flags(data, finezero, num_epoch_pretrain=0, num_epoch=0)) == 0
    assert pooling_main([runs[0], finezero, "--pooling", "mean", "--probes", "nn1", "--phases", "1", "1", "4", "5",
                         "--out", str(tmp_path / "z.csv")]) == 0
    means = capsys.readouterr().out.split("mean over the runs (%):\n")[1].splitlines()[1:]
    assert [line.split()[:2] for line in means] == [["epilepsy", "num_epoch_pretrain=1"]] * 4 + \
        [["epilepsy", "num_epoch_pretrain=0"]] * 4                       # phases 1 and 4, each fitted and refit
    assert pd.read_csv(tmp_path / "z.csv").phases.tolist() == [1, 1, 4, 4] * 2   # windows of 4: 4 phases at most
    table = pd.read_csv(out)
    own = table[table.run == runs[0]].acc.tolist()
    path = os.path.join(runs[0], "pretrain_model.pkl")
    ckpt = torch.load(path)
    for older in ("gaps", "data"):
        del (ckpt["data"] if older == "gaps" else ckpt)[older]
        torch.save(ckpt, path)
        assert pooling_main([runs[0], "--pooling", "mean", "--out", str(out)]) == 0
        assert pd.read_csv(out).acc.tolist() == own
    capsys.readouterr()
    assert pooling_main([runs[0], "--data_path", ""]) == 2
    assert capsys.readouterr().err == ("error: --data_path is empty: name the folder the runs' data is in now, or "
                                       "leave it out\n")


def test_config_labels_are_one_word_per_flag():
    """A list-valued flag (--probe_C 0.1 1) reads as one word, so a printed label splits at its flags."""
    import pandas as pd

    from tools.tables import comparable, config_labels
    assert comparable([0.1, 1.0]) == "0.1,1.0" and comparable("exp/x/seed3/m.pkl") == "exp/x/seed*/m.pkl"
    runs = pd.DataFrame({"dataset": ["a", "a"], "args": [{"probe_C": comparable([0.1, 1.0]), "lr": "0.001"},
                                                         {"probe_C": comparable([1.0]), "lr": "0.001"}]})
    assert config_labels(runs).tolist() == ["probe_C=0.1,1.0", "probe_C=1.0"]
