"""A fresh machine: `bash run.sh <dataset>` prepares a missing dataset (from a local mirror on 127.0.0.1), then
runs; offline it stops with one line that says what to download and which --source command to run."""
import hashlib
import json
import os
import subprocess

from conftest import TINY, assert_reported
from data.prepare import main as prepare_main
from scale_helpers import ROOT
from test_prepare import EPILEPSY_ZIP, Publisher, closed_port, small_epilepsy_zip, uea_archive

BUDGET = ["--num_epoch_pretrain", "1", "--num_epoch", "0", *TINY]


def run_sh(tmp_path, mirror, *flags, dataset="epilepsy", runs=("1",)):
    env = {**os.environ, "TIMEMAE_MIRROR": mirror, "EXP_DIR": str(tmp_path / "exp")}
    env.pop("TIMEMAE_DATA", None)
    return subprocess.run(["bash", os.path.join(ROOT, "run.sh"), dataset, *runs, *flags], env=env,
                          capture_output=True, text=True, timeout=300)


def test_missing_data_is_downloaded_then_run(tmp_path):
    publisher = Publisher()
    try:
        body = publisher.files[f"/static/public/388/{EPILEPSY_ZIP}"] = small_epilepsy_zip()
        data = tmp_path / "data" / "Epilepsy"
        done = run_sh(tmp_path, publisher.url + "/static/public", "--data_path", str(data), *BUDGET)
        assert done.returncode == 0, done.stderr[-2000:]
        assert sorted(os.listdir(data)) == ["test.pt", "train.pt", "val.pt"]
        digest = hashlib.sha256(body).hexdigest()                       # the download's own digest, printed
        assert f"SHA-256 {digest}" in done.stdout + done.stderr
        metrics = json.loads((tmp_path / "exp" / "epilepsy" / "seed1" / "metrics.json").read_text())
        assert metrics["dataset"] == "epilepsy" and metrics["labelled"] > 0
        assert_reported(tmp_path / "exp" / "epilepsy" / "seed1", metrics)
        assert (tmp_path / "exp" / "epilepsy" / "summary.csv").is_file()
        requests = len(publisher.requests)
        assert prepare_main(["epilepsy", "--download", "--if-missing", "--out", str(data)]) == 0
        assert len(publisher.requests) == requests == 1                # a prepared folder is not fetched again
    finally:
        publisher.close()


def test_offline_is_one_line_naming_the_download_and_the_source_command(tmp_path):
    data = tmp_path / "Epilepsy"
    done = run_sh(tmp_path, f"http://127.0.0.1:{closed_port()}/static/public", "--data_path", str(data), *BUDGET)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: cannot reach 127.0.0.1")
    assert f"/388/{EPILEPSY_ZIP} on a machine with network" in done.stderr
    assert f"python -m data.prepare epilepsy --source {EPILEPSY_ZIP} --out {data}" in done.stderr
    assert not data.exists() and not (tmp_path / "exp").exists()


def test_run_sh_ucr_reads_the_named_set_where_main_does_and_keeps_each_set_apart(tmp_path):
    """`bash run.sh ucr --UCR_folder NAME` finds NAME under --data_path's folder (no download), runs into
    exp/NAME; a second set gets its own folder; without --UCR_folder it stops with one line. The run count is
    optional (the second set: 3 seeds, as README writes the command); one that is not a positive integer is
    refused in one line."""
    offline = f"http://127.0.0.1:{closed_port()}/static/public"
    for name, seed, runs in (("Toy", 0, ("1",)), ("Other", 1, ())):
        _, members, _ = uea_archive(name, 1, [20], 2, 24, 12, seed=seed)
        (tmp_path / "data" / name).mkdir(parents=True)
        for file, text in members.items():
            (tmp_path / "data" / name / file).write_text(text)
        done = run_sh(tmp_path, offline, "--UCR_folder", name, "--data_path", str(tmp_path / "data"), *BUDGET,
                      dataset="ucr", runs=runs)
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(list((tmp_path / "exp" / name).glob("seed*"))) == (int(runs[0]) if runs else 3)
        run = tmp_path / "exp" / name / "seed1"
        assert json.loads((run / "args.json").read_text())["UCR_folder"] == name
        assert_reported(run, json.loads((run / "metrics.json").read_text()))
        assert (tmp_path / "exp" / name / "summary.csv").is_file()
    assert sorted(os.listdir(tmp_path / "data")) == ["Other", "Toy"]    # nothing downloaded or written there
    missing = run_sh(tmp_path, offline, "--data_path", str(tmp_path / "data"), *BUDGET, dataset="ucr")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: ucr needs --UCR_folder <Name>")
    refused = run_sh(tmp_path, offline, "--UCR_folder", "Toy", dataset="ucr", runs=("two",))
    assert refused.returncode == 2 and refused.stderr == "error: runs must be a positive integer, got 'two'\n"

