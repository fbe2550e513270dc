"""data.prepare end to end: tiny archives in each publisher's layout, served over HTTP from 127.0.0.1."""
import hashlib
import io
import os
import pathlib
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import torch

import data.prepare
from data import catalog
from data.prepare import _source_names, main, prepare, run_target
from data.sources import SourceTree
from datautils import load_dataset
from common.errors import TimeMAEError

HAR_ZIP = "human+activity+recognition+using+smartphones.zip"
EPILEPSY_ZIP = "epileptic+seizure+recognition.zip"


# ----------------------------------------------------------------------------------------------- a local publisher

class Publisher:
    """Serves files by URL path. `cut` names paths whose next response stops halfway (the connection drops);
    `ignore_range` makes it answer every request with the whole file, as servers without range support do."""

    def __init__(self):
        self.files, self.cut, self.requests, self.ignore_range = {}, set(), [], False
        publisher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                publisher.requests.append((self.path, self.headers.get("Range")))
                body = publisher.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                etag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and not publisher.ignore_range and self.headers.get("If-Range") in (None, etag):
                    start, status = int(wanted.split("=")[1].rstrip("-")), 206
                part = body[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(part)))
                self.send_header("ETag", etag)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if self.path in publisher.cut:
                    publisher.cut.discard(self.path)
                    part = part[: len(part) // 2]
                self.wfile.write(part)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def publisher():
    p = Publisher()
    yield p
    p.close()


def zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def run(dataset, tmp_path, publisher, base, name="out", **kw):
    """prepare() against the local publisher; returns (output folder, log lines)."""
    lines = []
    out = tmp_path / name
    prepare(dataset, out=str(out), download=True, cache=str(tmp_path / "cache"), base_url=publisher.url + base,
            log=lines.append, **kw)
    return out, lines


def load_pt(path):
    return torch.load(path, weights_only=True)


# ----------------------------------------------------------------------------------------------- file layouts

def matrix_text(m):
    return "".join(" " + " ".join(f"{v:15.7e}" for v in row) + "\n" for row in m)


def har_archive(n_train_per_class=6, n_test_per_class=2, length=128):
    """UCI's outer zip holding `UCI HAR Dataset.zip`; value of window i, channel c: c + i / 100 (+ a ramp)."""
    rng = np.random.default_rng(0)
    signals = [f"{k}_{a}" for k in ("body_acc", "body_gyro", "total_acc") for a in "xyz"]
    inner, expected = {}, {}
    for split, per_class in (("train", n_train_per_class), ("test", n_test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(1, 7), per_class))
        n = len(labels)
        x = (np.arange(9)[None, :, None] + np.arange(n)[:, None, None] / 100
             + np.linspace(0, 1e-3, length)[None, None, :])  # (N, 9, T)
        root = "UCI HAR Dataset/" + split
        for c, s in enumerate(signals):
            inner[f"{root}/Inertial Signals/{s}_{split}.txt"] = matrix_text(x[:, c])
        inner[f"{root}/y_{split}.txt"] = "".join(f"{v}\n" for v in labels)
        inner[f"{root}/subject_{split}.txt"] = "".join(f"{1 + i % 30}\n" for i in range(n))
        expected[split] = (x, labels)
    inner["UCI HAR Dataset/activity_labels.txt"] = "1 WALKING\n2 WALKING_UPSTAIRS\n3 WALKING_DOWNSTAIRS\n" \
                                                   "4 SITTING\n5 STANDING\n6 LAYING\n"
    inner["UCI HAR Dataset/README.txt"] = "Human Activity Recognition Using Smartphones Dataset\n"
    inner["__MACOSX/UCI HAR Dataset/._README.txt"] = "\x00\x05\x16\x07"
    outer = zip_bytes({"UCI HAR Dataset.zip": zip_bytes(inner), "UCI HAR Dataset.names": "names\n"})
    return outer, expected


def epilepsy_csv(values, labels):
    """The UCI CSV layout: an id column, X1..X178, y."""
    table = pd.DataFrame(values, columns=[f"X{i + 1}" for i in range(values.shape[1])])
    table.insert(0, "", [f"X{1 + i % 23}.V1.{i}" for i in range(len(values))])
    table["y"] = labels
    return table.to_csv(index=False)


def ts_text(name, series, labels):
    """sktime/aeon .ts: series is a list of (C, T_i) arrays."""
    equal = len({s.shape[1] for s in series}) == 1
    head = [f"@problemName {name}", "@timeStamps false", "@missing false",
            f"@univariate {'true' if series[0].shape[0] == 1 else 'false'}",
            f"@dimensions {series[0].shape[0]}", f"@equalLength {'true' if equal else 'false'}",
            f"@classLabel true {' '.join(sorted(set(labels), key=int))}", "@data"]
    rows = [":".join(",".join(repr(float(v)) for v in ch) for ch in s) + f":{lab}" for s, lab in zip(series, labels)]
    return "\n".join(head + rows) + "\n"


def uea_archive(name, channels, lengths, classes, n_train, n_test, seed=0):
    rng = np.random.default_rng(seed)
    members, expected = {}, {}
    for split, n in (("TRAIN", n_train), ("TEST", n_test)):
        labels = [str(1 + i % classes) for i in range(n)]
        series = [rng.standard_normal((channels, int(rng.choice(lengths)))).round(4) for _ in range(n)]
        members[f"{name}_{split}.ts"] = ts_text(name, series, labels)
        expected[split] = (series, labels)
    return zip_bytes(members), members, expected


# ----------------------------------------------------------------------------------------------- HAR

def test_har_download_prepare_and_load(tmp_path, publisher):
    outer, expected = har_archive()
    publisher.files[f"/static/public/240/{HAR_ZIP}"] = outer
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(catalog.SHA256, HAR_ZIP, sha(outer))
        out, lines = run("har", tmp_path, publisher, "/static/public")
        again, _ = run("har", tmp_path, publisher, "/static/public", name="again")  # from the cache
    assert sorted(os.listdir(out)) == ["test.pt", "train.pt", "val.pt"]
    train, val, test = (load_pt(out / f) for f in ("train.pt", "val.pt", "test.pt"))
    x, labels = expected["train"]
    assert train["samples"].shape == (36, 9, 128) and train["samples"].dtype == torch.float64
    np.testing.assert_allclose(train["samples"].numpy(), x, rtol=1e-7)       # channel order body_acc, gyro, total
    np.testing.assert_array_equal(train["labels"].numpy(), labels - 1)       # activity 1..6 -> 0..5
    assert train["labels"].dtype == torch.int64 and test["samples"].shape == (12, 9, 128)
    assert val["samples"].shape == (8, 9, 128)                               # ceil(20% of 36)
    assert sorted(np.bincount(val["labels"].numpy(), minlength=6)) == [1, 1, 1, 1, 2, 2]   # stratified
    rows = {round(float(r), 4) for r in train["samples"][:, 0, 0]}
    assert all(round(float(r), 4) in rows for r in val["samples"][:, 0, 0])  # val windows are train copies
    assert any("wrote" in line for line in lines)

    assert len(publisher.requests) == 1
    for f in ("train.pt", "val.pt", "test.pt"):
        a, b = load_pt(out / f), load_pt(again / f)
        assert torch.equal(a["samples"], b["samples"]) and torch.equal(a["labels"], b["labels"])

    s = load_dataset("har", str(out))
    assert (s.train_x.shape, s.val_x.shape, s.test_x.shape) == ((36, 128, 9), (8, 128, 9), (12, 128, 9))
    assert s.num_classes == 6


def test_har_from_an_extracted_folder_and_read_directly(tmp_path):
    outer, expected = har_archive()
    with zipfile.ZipFile(io.BytesIO(outer)) as z:
        zipfile.ZipFile(io.BytesIO(z.read("UCI HAR Dataset.zip"))).extractall(tmp_path / "src")
    raw = str(tmp_path / "src" / "UCI HAR Dataset")
    prepared = prepare("har", out=str(tmp_path / "HAR"), sources=[raw], log=lambda _: None)
    np.testing.assert_array_equal(prepared.test_y, expected["test"][1] - 1)
    direct = load_dataset("har", raw)                               # datautils reads the raw folder as well
    for split in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(direct, split), getattr(prepared, split))
    signal = next(pathlib.Path(raw).rglob("body_acc_x_train.txt"))
    signal.write_text(signal.read_text().replace("\n", " 1.0\n", 1))        # a row with one value too many
    with pytest.raises(TimeMAEError, match=r"body_acc_x_train.txt: expected whitespace-separated numbers, one "
                                           r"window per line \(the number of columns changed from \d+ to \d+ at "
                                           r"row \d+\)$"):                 # numpy's own advice left out
        load_dataset("har", raw)


# ----------------------------------------------------------------------------------------------- Epilepsy

def test_epilepsy_scaling_labels_and_splits(tmp_path, publisher):
    rng = np.random.default_rng(1)
    values = rng.integers(-500, 500, size=(50, 178))
    labels = np.arange(50) % 5 + 1
    body = zip_bytes({"data.csv": epilepsy_csv(values, labels)})
    publisher.files[f"/static/public/388/{EPILEPSY_ZIP}"] = body
    out, lines = run("epilepsy", tmp_path, publisher, "/static/public")
    assert any(sha(body) in line for line in lines)                 # no digest recorded: it is printed
    parts = {f: load_pt(out / f"{f}.pt") for f in ("train", "val", "test")}
    assert [len(parts[f]["labels"]) for f in ("train", "val", "test")] == [32, 8, 10]
    x = np.concatenate([parts[f]["samples"].numpy() for f in parts])
    y = np.concatenate([parts[f]["labels"].numpy() for f in parts])
    assert x.shape == (50, 1, 178) and parts["train"]["samples"].dtype == torch.float64
    scaled = (values - values.min(0)) / (values.max(0) - values.min(0))  # min-max per column over all rows
    order = [np.flatnonzero(np.isclose(scaled, row).all(1))[0] for row in x[:, 0]]
    assert sorted(order) == list(range(50))                          # every row once, none lost or doubled
    np.testing.assert_array_equal(y, (labels[order] != 1).astype(int))  # seizure (1) -> 0, others -> 1
    s = load_dataset("epilepsy", str(out))
    assert s.train_x.shape == (32, 178, 1) and s.num_classes == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_epilepsy_csv_with_empty_or_infinite_values_is_refused(tmp_path, bad):
    values = (np.arange(20 * 178).reshape(20, 178) % 97).astype(float)
    values[3, 5] = bad
    (tmp_path / "data.csv").write_text(epilepsy_csv(values, np.arange(20) % 5 + 1))
    with pytest.raises(TimeMAEError, match="data.csv: has empty or infinite values; expected a number in every"):
        prepare("epilepsy", out=str(tmp_path / "out"), sources=[str(tmp_path / "data.csv")], log=lambda _: None)
    assert sorted(os.listdir(tmp_path)) == ["data.csv"]


def recover_raw_rows(x):
    """The integer EEG values behind TS-TCC's MinMaxScaler output x (N, 178): per column, the range is the
    inverse of the smallest gap and the minimum the one integer offset whose scaling gives x back exactly."""
    gaps = np.diff(np.sort(x, axis=0), axis=0)
    span = np.rint(1 / np.where(gaps > 0, gaps, np.inf).min(0))
    steps = np.rint(x * span).astype(np.int64)
    raw = np.empty_like(steps)
    for j in range(x.shape[1]):  # candidates for the column minimum, narrowed on a few rows, then on all
        cand = np.arange(-4096, 1)
        for rows in (slice(0, 200), slice(None)):
            c = cand[:, None]
            cand = cand[(((steps[rows, j] + c) * (1 / span[j]) + (0 - c * (1 / span[j]))) == x[rows, j]).all(1)]
        raw[:, j] = steps[:, j] + cand[0]
    return raw


@pytest.mark.skipif(not os.environ.get("TIMEMAE_DATA"), reason="needs TIMEMAE_DATA with Epilepsy/")
def test_epilepsy_reproduces_tstcc_val_and_test_exactly(tmp_path):
    """Rebuild the UCI CSV from the shared rows (raw integers, original row positions), prepare it, and compare."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import MinMaxScaler
    folder = os.path.join(os.environ["TIMEMAE_DATA"], "Epilepsy")
    if not os.path.isfile(os.path.join(folder, "test.pt")):
        pytest.skip(f"{folder} holds no Epilepsy files")
    shared = {f: load_pt(os.path.join(folder, f"{f}.pt")) for f in ("train", "val", "test")}
    n = sum(len(d["labels"]) for d in shared.values())
    rest, test_pos = train_test_split(np.arange(n), test_size=0.2, random_state=42)  # where TS-TCC's rows sat
    train_pos, val_pos = train_test_split(rest, test_size=0.2, random_state=42)
    x = np.empty((n, 178))
    y = np.empty(n, dtype=np.int64)
    for f, pos in (("train", train_pos), ("val", val_pos), ("test", test_pos)):
        x[pos], y[pos] = shared[f]["samples"][:, 0].numpy(), shared[f]["labels"].numpy()
    raw = recover_raw_rows(x)
    assert np.array_equal(MinMaxScaler().fit_transform(raw), x)     # the CSV is exactly what TS-TCC scaled
    labels = np.where(y == 0, 1, 2 + np.arange(n) % 4)              # seizure = 1, others 2..5
    (tmp_path / "data.csv").write_text(epilepsy_csv(raw, labels))
    splits = prepare("epilepsy", out=str(tmp_path / "Epilepsy"), sources=[str(tmp_path / "data.csv")],
                     log=lambda _: None)
    for f in ("val", "test"):
        ours = load_pt(tmp_path / "Epilepsy" / f"{f}.pt")
        assert ours["samples"].dtype == shared[f]["samples"].dtype == torch.float64
        assert torch.equal(ours["samples"], shared[f]["samples"]), f
        assert torch.equal(ours["labels"], shared[f]["labels"]), f
    assert len(splits.train_x) + len(splits.val_x) + len(splits.test_x) == 11500
    assert (splits.seq_len, splits.channels, splits.num_classes) == (178, 1, 2)


# ----------------------------------------------------------------------------------------------- UEA / UCR

def test_uea_variable_length_copied_as_distributed(tmp_path, publisher):
    body, members, expected = uea_archive("SpokenArabicDigits", 13, [4, 7, 9], 10, 20, 10)
    publisher.files["/uea/SpokenArabicDigits.zip"] = body
    out, _ = run("ad", tmp_path, publisher, "/uea")
    assert sorted(os.listdir(out)) == ["SpokenArabicDigits_TEST.ts", "SpokenArabicDigits_TRAIN.ts"]
    assert (out / "SpokenArabicDigits_TRAIN.ts").read_text() == members["SpokenArabicDigits_TRAIN.ts"]
    s = load_dataset("ad", str(out))
    t = max(x.shape[1] for x in expected["TRAIN"][0] + expected["TEST"][0])
    assert s.train_x.shape == (20, t, 13) and s.test_x.shape == (10, t, 13) and s.num_classes == 10
    first = expected["TRAIN"][0][0]
    np.testing.assert_allclose(s.train_x[0, : first.shape[1]], first.T, rtol=1e-6)
    assert np.isnan(s.train_x[0, first.shape[1]:]).all()            # shorter series padded at the end


def test_a_misspelt_name_beside_a_prepared_set_gets_a_hint_when_it_cannot_be_fetched(tmp_path, capsys, publisher):
    """run.sh's --if-missing preparation of a name one letter off a set already there still tries that name (FordA
    and FordB are both sets), and the error of its failed download suggests the set beside it; main.py's missing
    folder does the same."""
    from data.prepare import main as prepare_main
    from main import main
    (tmp_path / "ItalyPowerDemand").mkdir()
    (tmp_path / "ItalyPowerDemand" / "ItalyPowerDemand_TRAIN.ts").write_text("")
    assert prepare_main(["ucr", "--data_path", str(tmp_path), "--UCR_folder", "ItalyPowerDemnd", "--if-missing",
                         "--download", "--base-url", publisher.url + "/uea"]) == 2
    err = capsys.readouterr().err
    assert err.endswith(" (did you mean ItalyPowerDemand?)\n") and err.count("\n") == 1, err
    assert main(["--dataset", "ucr", "--data_path", str(tmp_path), "--UCR_folder", "ItalyPowerDemnd"]) == 2
    assert "does not exist (did you mean ItalyPowerDemand?)" in capsys.readouterr().err


def test_the_prepared_folder_gets_the_umask_mode(tmp_path, publisher):
    """A shared data folder must be readable by others where the umask says so (the staging folder is made
    0700 by mkdtemp)."""
    body, _, _ = uea_archive("SpokenArabicDigits", 13, [4, 7, 9], 10, 20, 10)
    publisher.files["/uea/SpokenArabicDigits.zip"] = body
    old = os.umask(0o022)
    try:
        out, _ = run("ad", tmp_path, publisher, "/uea")
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == 0o755


def test_any_uea_dataset_by_name_into_the_default_folder(tmp_path, publisher, monkeypatch, capsys):
    body, _, _ = uea_archive("BasicMotions", 6, [100], 4, 8, 8)
    publisher.files["/aeon/BasicMotions.zip"] = body
    monkeypatch.setenv("TIMEMAE_DATA", str(tmp_path / "root"))
    assert main(["BasicMotions", "--download", "--base-url", publisher.url + "/aeon"]) == 0
    assert "BasicMotions: wrote" in capsys.readouterr().out
    s = load_dataset("ucr", None, "BasicMotions")                   # $TIMEMAE_DATA/BasicMotions
    assert s.train_x.shape == (8, 100, 6) and s.num_classes == 4
    assert sorted(os.listdir(tmp_path / "root")) == ["BasicMotions", "downloads"]


def test_uwave_paper_split_stacks_xyz(tmp_path, publisher):
    members = {}
    for a, axis in enumerate("XYZ"):
        name = f"UWaveGestureLibrary{axis}"
        files = {}
        for split, n in (("TRAIN", 16), ("TEST", 8)):
            series = [np.full((1, 315), a + i / 100) for i in range(n)]
            files[f"{name}_{split}.ts"] = ts_text(name, series, [str(1 + i % 8) for i in range(n)])
        members[name] = files
        publisher.files[f"/uea/{name}.zip"] = zip_bytes(files)
    out, _ = run("uwave", tmp_path, publisher, "/uea")
    assert sorted(os.listdir(out)) == ["test_new.pt", "train_new.pt"]
    train = load_pt(out / "train_new.pt")
    assert train["samples"].shape == (16, 315, 3)                   # time-major
    np.testing.assert_allclose(train["samples"][3, 0].numpy(), [0.03, 1.03, 2.03], rtol=1e-6)
    np.testing.assert_array_equal(train["labels"].numpy(), 1 + np.arange(16) % 8)
    s = load_dataset("uwave", str(out))
    assert s.train_x.shape == (16, 315, 3) and s.test_x.shape == (8, 315, 3) and s.num_classes == 8

    # the same three zips handed over by hand, as one folder
    for name, files in members.items():
        (tmp_path / "zips").mkdir(exist_ok=True)
        (tmp_path / "zips" / f"{name}.zip").write_bytes(zip_bytes(files))
    prepare("uwave", out=str(tmp_path / "local"), sources=[str(tmp_path / "zips")], log=lambda _: None)
    assert torch.equal(load_pt(tmp_path / "local" / "test_new.pt")["samples"],
                       load_pt(out / "test_new.pt")["samples"])


# ----------------------------------------------------------------------------------------------- failures

def leftovers(folder):
    """Everything in `folder` except the download cache."""
    return sorted(f for f in os.listdir(folder) if f != "cache")


def small_epilepsy_zip():
    values = np.arange(40 * 178).reshape(40, 178) % 97
    return zip_bytes({"data.csv": epilepsy_csv(values, np.arange(40) % 5 + 1)})


def test_checksum_mismatch_is_refused(tmp_path, publisher, monkeypatch):
    body = small_epilepsy_zip()
    tampered = bytearray(body)
    tampered[len(body) // 2] ^= 0xFF
    path = f"/static/public/388/{EPILEPSY_ZIP}"
    publisher.files[path] = bytes(tampered)
    monkeypatch.setitem(catalog.SHA256, EPILEPSY_ZIP, sha(body))
    with pytest.raises(TimeMAEError, match="SHA-256"):
        run("epilepsy", tmp_path, publisher, "/static/public")
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path / "cache") == []

    publisher.files[path] = body                                     # the genuine file goes through
    out, lines = run("epilepsy", tmp_path, publisher, "/static/public")
    assert (out / "test.pt").is_file() and not any("no digest" in line for line in lines)


@pytest.mark.parametrize("ignore_range", [False, True])
def test_interrupted_download_leaves_nothing_and_resumes(tmp_path, publisher, ignore_range):
    body = small_epilepsy_zip()
    path = f"/static/public/388/{EPILEPSY_ZIP}"
    publisher.files[path] = body
    publisher.cut.add(path)
    with pytest.raises(TimeMAEError, match="interrupted"):
        run("epilepsy", tmp_path, publisher, "/static/public")
    assert leftovers(tmp_path) == []                                  # no dataset folder, no staging folder
    part = tmp_path / "cache" / (EPILEPSY_ZIP + ".part")
    assert 0 < part.stat().st_size < len(body)

    publisher.ignore_range = ignore_range                             # a server without ranges: start over
    out, _ = run("epilepsy", tmp_path, publisher, "/static/public")
    assert publisher.requests[-1][1] == f"bytes={len(body) // 2}-"
    assert (tmp_path / "cache" / EPILEPSY_ZIP).read_bytes() == body and not part.exists()
    assert len(load_pt(out / "test.pt")["labels"]) == 8


def test_a_download_that_is_not_a_zip_is_not_kept_and_a_damaged_cached_copy_is_deleted(tmp_path, publisher):
    """A download that is not a zip archive, fresh (an error page, a body cut short) or damaged in the cache, is
    deleted, and the same message says to run again, which downloads it anew."""
    body, _, _ = uea_archive("Toy", 1, [5], 2, 4, 2)
    unreadable = (r"cache/Toy.zip is not a readable zip archive \(.*\): the downloaded copy was deleted; run the same "
                  r"command again to download it anew")
    publisher.files["/uea/Toy.zip"] = b"<html>Service unavailable</html>"
    lines = []
    with pytest.raises(TimeMAEError, match=unreadable):
        prepare("Toy", out=str(tmp_path / "out"), download=True, cache=str(tmp_path / "cache"),
                base_url=publisher.url + "/uea", log=lines.append)
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path / "cache") == []
    assert not any("SHA-256" in line for line in lines), lines      # no digest to record for an error page
    (tmp_path / "cache" / "Toy.zip").write_bytes(body[: len(body) // 2])      # a copy damaged in the cache
    publisher.files["/uea/Toy.zip"] = body
    with pytest.raises(TimeMAEError, match=unreadable):
        run("Toy", tmp_path, publisher, "/uea")
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path / "cache") == []
    out, _ = run("Toy", tmp_path, publisher, "/uea")
    assert sorted(os.listdir(out)) == ["Toy_TEST.ts", "Toy_TRAIN.ts"]


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_is_a_one_line_refusal(tmp_path, capsys):
    code = main(["har", "--download", "--out", str(tmp_path / "HAR"),
                 "--base-url", f"http://127.0.0.1:{closed_port()}/static/public"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot reach 127.0.0.1") and "--source" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []                                 # no dataset, no empty cache folder


@pytest.mark.parametrize("base", ["notaurl", "127.0.0.1:8000/uea", "/srv/mirror"])
def test_a_base_url_that_is_no_url_is_a_one_line_refusal(tmp_path, capsys, monkeypatch, base):
    for argv in (["--base-url", base], []):                        # the flag, or the variable that is its default
        monkeypatch.setenv("TIMEMAE_MIRROR", base)
        assert main(["BasicMotions", "--download", *argv, "--out", str(tmp_path / "BM")]) == 2
        assert capsys.readouterr().err == (f"error: --base-url (or $TIMEMAE_MIRROR) {base!r} is not a URL: expected "
                                           "the address of a mirror laid out like the publisher's (https://..., "
                                           "http://..., ftp://..., file://...)\n")
    assert os.listdir(tmp_path) == []


def test_an_empty_mirror_setting_means_the_publisher(tmp_path, monkeypatch):
    class Stop(BaseException):
        """Stops the preparation at its first download."""
    fetched = []

    def fetch(url, *args, **kwargs):
        fetched.append(url)
        raise Stop
    monkeypatch.setattr(data.prepare, "fetch", fetch)
    monkeypatch.setenv("TIMEMAE_MIRROR", "")
    with pytest.raises(Stop):
        main(["BasicMotions", "--download", "--out", str(tmp_path / "BM")])
    assert fetched == [catalog.lookup("BasicMotions").downloads()[0][0]]


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / EPILEPSY_ZIP).write_bytes(small_epilepsy_zip())
    out = tmp_path / "Epilepsy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TimeMAEError, match="--overwrite"):
        prepare("epilepsy", out=str(out), sources=[str(tmp_path / "src")], log=lambda _: None)
    assert (out / "notes.txt").read_text() == "mine"
    prepare("epilepsy", out=str(out), sources=[str(tmp_path / "src")], overwrite=True, log=lambda _: None)
    assert sorted(os.listdir(out)) == ["test.pt", "train.pt", "val.pt"]
    assert sorted(os.listdir(tmp_path)) == ["Epilepsy", "src"]        # the old folder is gone, nothing hidden


def test_an_output_or_cache_that_cannot_be_written_is_one_line(tmp_path, capsys, publisher):
    """--out under a file, or in a folder nobody can write (/proc), and --cache under a file, are one-line errors
    naming the flag; nothing is written, and the file in the way is untouched."""
    body, members, _ = uea_archive("Toy", 1, [5], 2, 4, 2)
    (tmp_path / "src").mkdir()
    for name, text in members.items():
        (tmp_path / "src" / name).write_text(text)
    (tmp_path / "afile").write_text("mine")
    outs = [tmp_path / "afile" / "Toy", tmp_path / "afile" / "a" / "Toy"] + [f"/proc/{tmp_path.name}"] * \
        os.path.isdir("/proc")
    for out in outs:
        assert main(["Toy", "--source", str(tmp_path / "src"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out}: cannot write in ") and err.count("\n") == 1, err
    publisher.files["/uea/Toy.zip"] = body
    assert main(["Toy", "--download", "--base-url", publisher.url + "/uea", "--out", str(tmp_path / "Toy"),
                 "--cache", str(tmp_path / "afile" / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --cache {tmp_path / 'afile' / 'cache'}: cannot keep the download there") \
        and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["afile", "src"] and (tmp_path / "afile").read_text() == "mine"


def test_ucr_2018_archive_folder_as_source(tmp_path):
    """The UCR 2018 archive, extracted (its zip is encrypted): <Name>/<Name>_TRAIN.tsv, copied as distributed."""
    src = tmp_path / "UCRArchive_2018" / "Toy"
    src.mkdir(parents=True)
    (src / "Toy_TRAIN.tsv").write_text("1\t0.5\t1.5\t2.5\n2\t3\t4\tNaN\n1\t1\t2\t3\n2\t0\t1\tNaN\n")
    (src / "Toy_TEST.tsv").write_text("2\t1\t2\tNaN\n1\t0\t0\t0\n")
    splits = prepare("Toy", out=str(tmp_path / "Toy"), sources=[str(tmp_path / "UCRArchive_2018")],
                     log=lambda _: None)
    assert sorted(os.listdir(tmp_path / "Toy")) == ["Toy_TEST.tsv", "Toy_TRAIN.tsv"]
    assert (tmp_path / "Toy" / "Toy_TRAIN.tsv").read_text() == (src / "Toy_TRAIN.tsv").read_text()
    s = load_dataset("ucr", str(tmp_path), "Toy")
    assert s.train_x.shape == (4, 3, 1) and s.classes == ("1", "2") and np.isnan(s.train_x[1, 2, 0])
    assert len(splits.train_x) == 4 and len(splits.test_x) == 2
    gappy = tmp_path / "UCRArchive_2018" / "Gappy"                     # missing values, as some archive sets have
    gappy.mkdir()
    (gappy / "Gappy_TRAIN.tsv").write_text("1\t0.5\tNaN\t2.5\n2\t3\t4\t5\n1\t1\t2\t3\n2\tNaN\t1\t2\n")
    (gappy / "Gappy_TEST.tsv").write_text("2\t1\t2\tNaN\n1\t0\t0\t0\n")
    prepare("Gappy", out=str(tmp_path / "Gappy"), sources=[str(tmp_path / "UCRArchive_2018")], log=lambda _: None)
    with pytest.raises(TimeMAEError, match="inside 2 series; .*--gaps=interpolate"):   # prepared; a run says what to do
        load_dataset("ucr", str(tmp_path), "Gappy")
    assert load_dataset("ucr", str(tmp_path), "Gappy", gaps="interpolate").train_x[:, :, 0].tolist() == \
        [[0.5, 1.5, 2.5], [3, 4, 5], [1, 2, 3], [1, 1, 2]]


def test_errors_name_the_source_files_not_their_hidden_copies(tmp_path):
    """A file that does not parse is named as the user knows it: its path in a --source folder, or
    <archive>/<member> in a zip; never the hidden staging or extraction copy."""
    _, members, _ = uea_archive("Toy", 1, [5], 2, 4, 2)
    members["Toy_TEST.ts"] = members["Toy_TEST.ts"].replace(",", ",x", 1)
    (tmp_path / "src").mkdir()
    for name, text in members.items():
        (tmp_path / "src" / name).write_text(text)
    (tmp_path / "Toy.zip").write_bytes(zip_bytes(members))
    names = {tmp_path / "src": tmp_path / "src" / "Toy_TEST.ts",
             tmp_path / "Toy.zip": f"{tmp_path}/Toy.zip/Toy_TEST.ts"}
    for source, named in names.items():
        with pytest.raises(TimeMAEError) as e:
            prepare("Toy", out=str(tmp_path / "Toy"), sources=[str(source)], log=lambda _: None)
        assert str(e.value).startswith(f"{named}:9: cannot parse values"), str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["Toy.zip", "src"]


def test_wording_an_error_extracts_no_archive(tmp_path):
    """A staged file is named by the source file it copies among those found so far: an archive the build never
    opened stays unextracted (wording an error must neither extract it nor fail on it)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Toy_TRAIN.ts").write_text("")
    (tmp_path / "more.zip").write_bytes(b"not a zip")
    staging, work = tmp_path / "staging", tmp_path / "work"
    staging.mkdir()
    work.mkdir()
    for name in ("Toy_TRAIN.ts", "train.pt"):
        (staging / name).write_text("")
    tree = SourceTree([str(tmp_path / "src"), str(tmp_path / "more.zip")], str(work))
    message = _source_names(f"{staging / 'Toy_TRAIN.ts'}: bad; {staging / 'train.pt'}: bad", tree, str(staging))
    assert message == f"{tmp_path / 'src' / 'Toy_TRAIN.ts'}: bad; {staging / 'train.pt'}: bad"
    assert os.listdir(work) == [] and tree.zips == [str(tmp_path / "more.zip")]


def test_a_source_file_that_cannot_be_read_is_one_line(tmp_path, capsys):
    _, members, _ = uea_archive("Toy", 1, [5], 2, 4, 2)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Toy_TEST.ts").write_text(members["Toy_TEST.ts"])
    (tmp_path / "src" / "Toy_TRAIN.ts").symlink_to(tmp_path / "gone.ts")         # a link to nothing
    assert main(["Toy", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "Toy")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot prepare Toy: {tmp_path / 'src' / 'Toy_TRAIN.ts'}: No such file or directory\n"
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_encrypted_archive_says_to_extract_it(tmp_path):
    body = bytearray(zip_bytes({"UCRArchive_2018/Toy/Toy_TRAIN.tsv": "1\t1\t2\n"}))
    body[body.find(b"PK\x03\x04") + 6] |= 1                       # the encryption flag, in both headers
    body[body.find(b"PK\x01\x02") + 8] |= 1
    (tmp_path / "UCRArchive_2018.zip").write_bytes(bytes(body))
    with pytest.raises(TimeMAEError, match=r"UCRArchive_2018.zip is encrypted: extract it with its password"):
        prepare("Toy", out=str(tmp_path / "Toy"), sources=[str(tmp_path / "UCRArchive_2018.zip")],
                log=lambda _: None)
    assert not (tmp_path / "Toy").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="../etc"), "not a dataset name"),
    (dict(dataset="har"), "either --download"),
    (dict(dataset="har", sources=["missing.zip"]), "does not exist"),
    (dict(dataset="BasicMotions", sources=["EMPTY"]), "no BasicMotions_TRAIN.ts"),
    (dict(dataset="har", sources=["EMPTY"]), "no file named 'body_acc_x_train.txt'"),
])
def test_bad_requests_are_clear_errors(tmp_path, kwargs, message):
    (tmp_path / "EMPTY").mkdir()
    kwargs["sources"] = [str(tmp_path / s) for s in kwargs.get("sources", [])]
    with pytest.raises(TimeMAEError, match=message):
        prepare(out=str(tmp_path / "out"), log=lambda _: None, **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["EMPTY"]


def test_run_target_is_the_folder_main_reads(tmp_path, monkeypatch):
    """run.sh prepares, for `--dataset ucr --UCR_folder N [--data_path P]`, the folder main.py will read N from."""
    monkeypatch.setenv("TIMEMAE_DATA", str(tmp_path / "root"))
    (tmp_path / "P" / "N").mkdir(parents=True)
    (tmp_path / "P" / "N" / "N_TRAIN.ts").write_text("")
    (tmp_path / "Q").mkdir()
    (tmp_path / "Q" / "N_TRAIN.ts").write_text("")
    assert run_target("ucr", str(tmp_path / "P"), "N") == ("N", str(tmp_path / "P" / "N"))     # the parent
    assert run_target("ucr", str(tmp_path / "Q"), "N") == ("N", str(tmp_path / "Q"))           # the folder itself
    assert run_target("ucr", str(tmp_path / "R"), "N") == ("N", str(tmp_path / "R" / "N"))     # not there yet
    assert run_target("ucr", str(tmp_path / "R" / "N"), "N") == ("N", str(tmp_path / "R" / "N"))   # resolved
    assert run_target("ucr", None, "N") == ("N", str(tmp_path / "root" / "N"))
    assert run_target("epilepsy", str(tmp_path / "E")) == ("epilepsy", str(tmp_path / "E"))
    with pytest.raises(TimeMAEError, match="--UCR_folder"):
        run_target("ucr", str(tmp_path / "P"))


# ----------------------------------------------------------------------------------------------- realistic quirks

def test_the_archives_epilepsy_is_not_the_papers(tmp_path, publisher):
    """`ucr --UCR_folder Epilepsy` is the UEA archive's Epilepsy (3 channels, 4 classes), fetched and read as such;
    a folder of the paper's Epilepsy .pt files under that name is refused, not read as the archive's set."""
    body, _, _ = uea_archive("Epilepsy", 3, [20], 4, 8, 8)
    publisher.files["/uea/Epilepsy.zip"] = body
    assert main(["ucr", "--UCR_folder", "Epilepsy", "--data_path", str(tmp_path / "uea"), "--download",
                 "--base-url", publisher.url + "/uea"]) == 0
    s = load_dataset("ucr", str(tmp_path / "uea"), "Epilepsy")
    assert s.train_x.shape == (8, 20, 3) and s.num_classes == 4
    paper = tmp_path / "paper" / "Epilepsy"
    paper.mkdir(parents=True)
    for split in ("train", "test"):
        torch.save({"samples": torch.zeros(4, 1, 178), "labels": torch.arange(4) % 2}, paper / f"{split}.pt")
    with pytest.raises(TimeMAEError, match="holds one of the paper's benchmark layouts .* not the UEA/UCR archive's "
                                           "Epilepsy_TRAIN file"):
        load_dataset("ucr", str(tmp_path / "paper"), "Epilepsy")
    assert load_dataset("epilepsy", str(paper)).train_x.shape == (4, 178, 1)


def test_an_epilepsy_csv_without_its_id_column_keeps_every_step(tmp_path):
    values = (np.arange(20 * 178).reshape(20, 178) % 97).astype(float)
    without_id = pd.DataFrame(values, columns=[f"X{i + 1}" for i in range(178)]).assign(y=np.arange(20) % 5 + 1)
    (tmp_path / "data.csv").write_text(without_id.to_csv(index=False))
    s = prepare("epilepsy", out=str(tmp_path / "out"), sources=[str(tmp_path / "data.csv")], log=lambda _: None)
    assert s.seq_len == 178                                          # X1 had been taken for the id and dropped
    without_id.iloc[:, :100].assign(y=1).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(TimeMAEError, match=r"short.csv: expected columns X1..X178 and y .* found 101 columns"):
        prepare("epilepsy", out=str(tmp_path / "out2"), sources=[str(tmp_path / "short.csv")], log=lambda _: None)


def test_a_regression_ts_file_is_refused(tmp_path):
    from data.formats import read_ts
    (tmp_path / "r.ts").write_text("@problemName R\n@targetLabel true\n@data\n1,2,3:0.5\n4,5,6:1.75\n")
    with pytest.raises(TimeMAEError, match="@targetLabel true: its values are regression targets"):
        read_ts(str(tmp_path / "r.ts"))


def test_an_arff_class_label_in_quotes_after_a_relational_field(tmp_path):
    from data.formats import read_arff
    (tmp_path / "a.arff").write_text("@relation A\n@attribute s relational\n@attribute t0 numeric\n@attribute t1 "
                                     "numeric\n@end s\n@attribute c {'walk fast',run}\n@data\n"
                                     "'1,2\\n3,4','walk fast'\n'5,6\\n7,8',run\n")
    x, labels = read_arff(str(tmp_path / "a.arff"))
    assert x.shape == (2, 2, 2) and labels.tolist() == ["walk fast", "run"]
    np.testing.assert_array_equal(x[0], [[1, 3], [2, 4]])               # (T, C): channel 2 is 3,4


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    from data.formats import read_ts, read_ucr_tsv
    (tmp_path / "t.tsv").write_bytes(b"\xef\xbb\xbf1\t1\t2\t3\n2\t4\t5\t6\n1\t1\t1\t1\n")
    _, labels = read_ucr_tsv(str(tmp_path / "t.tsv"))
    assert sorted(set(labels.tolist())) == ["1", "2"]
    (tmp_path / "b.ts").write_bytes(b"\xef\xbb\xbf@classLabel true a b\n@data\n1,2:a\n3,4:c\n")
    with pytest.raises(TimeMAEError, match=r"labels \['c'\] are not among those @classLabel declares"):
        read_ts(str(tmp_path / "b.ts"))                              # the header is read, so is its check
