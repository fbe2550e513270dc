"""Every loader on small files written here in each format."""
import os

import numpy as np
import pytest
import torch

from conftest import synthetic_series, write_tstcc
from data.formats import read_arff, read_ts, read_ucr_tsv
from datautils import (as_series_array, data_description, fill_gaps, load_dataset, normalize, prepare_series,
                       resolve_folder, splits_from_arrays, stratified_split)
from common.errors import TimeMAEError


def test_tstcc_dicts_are_channel_first(tmp_path):
    folder = write_tstcc(tmp_path / "HAR", n_train=30, n_val=12, n_test=18, length=20, channels=3)
    s = load_dataset("har", str(folder))
    assert s.train_x.shape == (30, 20, 3) and s.val_x.shape == (12, 20, 3) and s.test_x.shape == (18, 20, 3)
    raw = torch.load(os.path.join(folder, "train.pt"))["samples"].numpy()
    np.testing.assert_array_equal(s.train_x, raw.transpose(0, 2, 1))
    assert s.classes == ("0", "1", "2") and s.pretrain_x().shape == (42, 20, 3)


class RunsCode:
    """Unpickling this runs a command: a data file must not be able to."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pt_files_are_read_weights_only_with_numpy_arrays_admitted(tmp_path, monkeypatch):
    """TS-TCC-style files may hold NumPy arrays (and string labels): they load. A pickle of anything else is
    refused in one line, and its code never runs."""
    monkeypatch.chdir(tmp_path)
    x, y = synthetic_series(10, channels=2)
    for split in ("train", "test"):
        torch.save({"samples": x.transpose(0, 2, 1), "labels": np.array(["a", "b"])[y % 2]}, tmp_path / f"{split}.pt")
    s = load_dataset("epilepsy", str(tmp_path))
    np.testing.assert_array_equal(s.train_x, x.astype(np.float32))
    assert s.classes == ("a", "b")
    torch.save({"samples": torch.from_numpy(x), "labels": torch.from_numpy(y), "note": RunsCode()},
               tmp_path / "train.pt")
    with pytest.raises(TimeMAEError, match=r"train.pt: it holds Python objects other than tensors, arrays and plain "
                                           r"values \(posix.system\), which are not loaded"):
        load_dataset("epilepsy", str(tmp_path))
    assert not (tmp_path / "PWNED").exists()


def test_tstcc_univariate_2d_samples(tmp_path):
    x, y = synthetic_series(10, channels=1)
    for split in ("train", "test"):
        torch.save({"samples": torch.from_numpy(x[:, :, 0]), "labels": torch.from_numpy(y)}, tmp_path / f"{split}.pt")
    s = load_dataset("epilepsy", str(tmp_path))
    assert s.train_x.shape == (10, 32, 1) and s.val_x is None


def test_pt_samples_of_any_real_tensor_load_and_complex_or_empty_ones_are_refused(tmp_path):
    """Samples saved with requires_grad or as bfloat16 are data like any other; complex ones are refused (a cast
    would drop the imaginary part), and so are samples of no channels or steps (the model would fail on them)."""
    x, y = synthetic_series(12)
    samples = torch.from_numpy(x.transpose(0, 2, 1).copy())

    def load(samples):
        for split in ("train", "test"):
            torch.save({"samples": samples, "labels": torch.from_numpy(y)}, tmp_path / f"{split}.pt")
        return load_dataset("epilepsy", str(tmp_path)).train_x
    np.testing.assert_array_equal(load(samples.clone().requires_grad_()), x)
    half = samples.to(torch.bfloat16)
    np.testing.assert_array_equal(load(half), half.float().numpy().transpose(0, 2, 1))
    with pytest.raises(TimeMAEError, match=r"train.pt: samples must be real numbers, got complex values \(complex64"):
        load(samples.to(torch.complex64))
    with pytest.raises(TimeMAEError, match=r"train.pt: samples holds no series, or series of no channels or steps: "
                                           r"shape \(12, 0, 32\)"):
        load(samples[:, :0])
    np.testing.assert_array_equal(as_series_array(samples.clone().requires_grad_()), x)   # the API too


@pytest.mark.parametrize("train_file, test_file, dataset", [("train_new.pt", "test_new.pt", "ucr"),
                                                             ("train.pt", "test.pt", "uwave")])
def test_time_major_pt_with_one_based_labels(tmp_path, train_file, test_file, dataset):
    x, y = synthetic_series(16, length=24, channels=3, classes=4)
    torch.save({"samples": torch.from_numpy(x), "labels": torch.from_numpy(y + 1)}, tmp_path / train_file)
    torch.save({"samples": torch.from_numpy(x[:8]), "labels": torch.from_numpy(y[:8] + 1)}, tmp_path / test_file)
    s = load_dataset(dataset, str(tmp_path))
    assert s.train_x.shape == (16, 24, 3)
    np.testing.assert_array_equal(s.train_y, y)                    # 1..4 -> 0..3
    assert s.classes == ("1", "2", "3", "4")


def _write_ts(path, rows, labels, univariate=False, declared=None):
    declared = declared or list(dict.fromkeys(labels))   # the labels used, in order of appearance
    header = ["# a comment", "@problemName Toy", "@timeStamps false", "@missing false",
              f"@univariate {str(univariate).lower()}", "@equalLength false", f"@classLabel true {' '.join(declared)}",
              "@data"]
    lines = [":".join(",".join(str(v) for v in ch) for ch in row) + f":{lab}" for row, lab in zip(rows, labels)]
    path.write_text("\n".join(header + lines) + "\n")


def test_ts_variable_length_with_string_labels(tmp_path):
    train = [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], [[0, 1], [1, 0]]]
    _write_ts(tmp_path / "Toy_TRAIN.ts", train, ["walk", "run", "jump"])
    _write_ts(tmp_path / "Toy_TEST.ts", [[[1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1]]], ["run"])
    x, y = read_ts(tmp_path / "Toy_TRAIN.ts")
    assert x.shape == (3, 5, 2) and list(y) == ["walk", "run", "jump"]
    assert np.isnan(x[0, 3:]).all() and not np.isnan(x[1]).any()
    s = load_dataset("ucr", str(tmp_path), "Toy")
    # lengths come from train: the 6-step test series is cropped to the longest training series (5)
    assert s.train_x.shape == (3, 5, 2) and s.test_x.shape == (1, 5, 2) and s.cropped == 1
    assert s.cropped_note() == ("1 test series are longer than every training series: cropped to their first 5 "
                                "steps (the training length sizes the model)")
    np.testing.assert_array_equal(s.test_x[0, :, 0], [1, 2, 3, 4, 5])
    assert s.classes == ("jump", "run", "walk")                              # stable sorted order
    assert list(s.train_y) == [2, 1, 0] and list(s.test_y) == [1]
    normalize(s)
    assert np.isnan(s.train_x[0, 3:]).all() and np.isfinite(s.train_x[0, :3]).all()   # padding stays NaN
    assert np.isfinite(s.train_x[1]).all()


def test_ts_rows_with_channels_of_unequal_length_or_without_a_label_are_one_line_errors(tmp_path):
    """Padding one channel of a series would pass its missing tail off as the series' end; a row whose last part
    holds values where the header declares labels is named by its line, not by the values as labels."""
    ragged = tmp_path / "R_TRAIN.ts"
    _write_ts(ragged, [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3, 4], [5, 6, 7]]], ["a", "b"])
    with pytest.raises(TimeMAEError, match=r"^.*R_TRAIN.ts:10: the series' channels have different lengths \[4, 3\]; "
                                           r"every channel of a series needs the same length$"):
        read_ts(ragged)
    unlabelled = tmp_path / "N_TRAIN.ts"
    unlabelled.write_text("@classLabel true a b\n@data\n1,2,3:4,5,6\n")
    with pytest.raises(TimeMAEError, match=r"^.*N_TRAIN.ts:3: no label after the values, which the header's "
                                           r"@classLabel true a b asks for \(@classLabel false: series without "
                                           r"labels\)$"):
        read_ts(unlabelled)


def test_ts_header_unlabelled_files_undeclared_labels_and_timestamps(tmp_path):
    """`@classLabel false`: every ':'-separated part is a channel and the labels are None (tools.encode reads
    such files; the ucr loader refuses them in one line); a label `@classLabel true ...` does not declare, and
    timestamped series, are one-line errors."""
    path = tmp_path / "U_TRAIN.ts"
    path.write_text("@problemName U\n@univariate false\n@classLabel false\n@data\n1,2,3:4,5,6\n7,8:9,10\n")
    x, y = read_ts(path)
    assert y is None and x.shape == (2, 3, 2)
    np.testing.assert_array_equal(x[0], [[1, 4], [2, 5], [3, 6]])
    (tmp_path / "U_TEST.ts").write_text(path.read_text())
    with pytest.raises(TimeMAEError, match="U_TRAIN.ts: @classLabel false, no labels; this loader needs labelled"):
        load_dataset("ucr", str(tmp_path), "U")
    _write_ts(tmp_path / "Toy_TRAIN.ts", [[[1, 2, 3]], [[4, 5, 6]]], ["walk", "crawl"], univariate=True,
              declared=["walk", "run", "jump"])
    with pytest.raises(TimeMAEError, match=r"labels \['crawl'\] are not among those @classLabel declares "
                                           r"\(walk run jump\)"):
        read_ts(tmp_path / "Toy_TRAIN.ts")
    stamped = tmp_path / "S_TRAIN.ts"
    stamped.write_text("@timeStamps true\n@classLabel true a b\n@data\n(0,1.0),(1,2.0):a\n")
    with pytest.raises(TimeMAEError, match=r"timestamped series \(@timestamps true\) are not supported"):
        read_ts(stamped)


def test_ts_shorter_test_series_are_padded_to_the_training_length(tmp_path):
    _write_ts(tmp_path / "Toy_TRAIN.ts", [[[1, 2, 3, 4]], [[1, 2]]], ["walk", "run"], univariate=True)
    _write_ts(tmp_path / "Toy_TEST.ts", [[[1, 2]]], ["run"], univariate=True)
    s = load_dataset("ucr", str(tmp_path), "Toy")
    assert s.test_x.shape == (1, 4, 1) and s.cropped == 0 and np.isnan(s.test_x[0, 2:]).all()


def test_fixed_length_test_split_of_another_length_is_refused(tmp_path):
    x, y = synthetic_series(10, length=32, channels=1)
    torch.save({"samples": torch.from_numpy(x[:, :, 0]), "labels": torch.from_numpy(y)}, tmp_path / "train.pt")
    torch.save({"samples": torch.from_numpy(x[:, :30, 0]), "labels": torch.from_numpy(y)}, tmp_path / "test.pt")
    with pytest.raises(TimeMAEError, match="the test series have 30 time steps but the training series 32") as e:
        load_dataset("epilepsy", str(tmp_path))
    assert "\n" not in str(e.value)


def test_ts_numeric_labels_sort_numerically(tmp_path):
    rows = [[[float(i), 1.0, 2.0]] for i in range(3)]
    _write_ts(tmp_path / "N_TRAIN.ts", rows, ["10.0", "9.0", "2.0"], univariate=True)
    _write_ts(tmp_path / "N_TEST.ts", rows[:1], ["9.0"], univariate=True)
    s = load_dataset("ucr", str(tmp_path), "N")
    assert s.classes == ("2.0", "9.0", "10.0") and list(s.train_y) == [2, 1, 0]


def test_arff_univariate_and_multivariate(tmp_path):
    uni = tmp_path / "U_TRAIN.arff"
    uni.write_text("% comment\n@relation U\n@attribute t1 numeric\n@attribute t2 numeric\n@attribute t3 numeric\n"
                   "@attribute target {a,b}\n@data\n1,2,3,a\n4,5,?,b\n")
    x, y = read_arff(uni)
    assert x.shape == (2, 3, 1) and list(y) == ["a", "b"] and np.isnan(x[1, 2, 0])
    multi = tmp_path / "M_TRAIN.arff"
    multi.write_text("@relation M\n@attribute series relational\n@attribute t1 numeric\n@end series\n"
                     "@attribute target {1,2}\n@data\n'1,2,3\\n4,5,6',1\n'7,8,9\\n1,1,1',2\n")
    x, y = read_arff(multi)
    assert x.shape == (2, 3, 2) and x[0, :, 1].tolist() == [4, 5, 6] and list(y) == ["1", "2"]
    (tmp_path / "M_TEST.arff").write_text(multi.read_text())
    assert load_dataset("ucr", str(tmp_path), "M").train_x.shape == (2, 3, 2)
    multi.write_text(multi.read_text().replace("'7,8,9\\n1,1,1',2", "'7,8,9\\n1,1,1',3"))
    with pytest.raises(TimeMAEError, match=r"labels \['3'\] are not among those the class attribute declares \(1 2\)"):
        read_arff(multi)                                # the relational block's inner attribute is not the class
    uni.write_text(uni.read_text().replace("{a,b}", "numeric"))
    assert list(read_arff(uni)[1]) == ["a", "b"]        # no classes declared: nothing to check against


def test_a_text_file_that_cannot_be_read_is_one_line(tmp_path):
    """The readers (also used by tools.encode) turn an OSError (here: a folder where the file should be) into a
    one-line error naming the path."""
    (tmp_path / "F_TRAIN.ts").mkdir()
    for reader in (read_ts, read_arff, read_ucr_tsv):
        with pytest.raises(TimeMAEError, match=r"cannot read .*F_TRAIN.ts: Is a directory; expected a text file"):
            reader(tmp_path / "F_TRAIN.ts")


def test_missing_folder_and_files_name_what_was_expected(tmp_path):
    with pytest.raises(TimeMAEError, match="does not exist"):
        load_dataset("har", str(tmp_path / "nowhere"))
    with pytest.raises(TimeMAEError, match=r"expected train.pt \+ test.pt .*PhonemeSpectra_TRAIN.ts"):
        load_dataset("ps", str(tmp_path))


def test_bad_values_and_labels_are_refused(tmp_path):
    x, y = synthetic_series(12)
    x[8, 5, 0] = np.nan                                                  # a hole, not trailing padding
    torch.save({"samples": torch.from_numpy(x.transpose(0, 2, 1).copy()), "labels": torch.from_numpy(y)},
               tmp_path / "train.pt")
    torch.save({"samples": torch.from_numpy(x[:4].transpose(0, 2, 1).copy()), "labels": torch.tensor([0, 1, 2, 7])},
               tmp_path / "test.pt")
    with pytest.raises(TimeMAEError, match="non-finite"):
        load_dataset("har", str(tmp_path))
    x[8, 5, 0] = 0.0
    torch.save({"samples": torch.from_numpy(x.transpose(0, 2, 1).copy()), "labels": torch.from_numpy(y)},
               tmp_path / "train.pt")
    with pytest.raises(TimeMAEError, match=r"test labels \['7'\] do not occur"):
        load_dataset("har", str(tmp_path))


def _write_tsv(path, rows, labels, length):
    """The UCR 2018 archive's layout: label, then the values, tab-separated, NaN after a shorter series' end."""
    path.write_text("".join(f"{lab}\t" + "\t".join(map(str, [*row, *["NaN"] * (length - len(row))])) + "\n"
                            for row, lab in zip(rows, labels)))


def test_ucr_2018_tsv_loads_as_the_same_series_in_ts(tmp_path):
    train, test = [[1.5, 2, 3], [4, 5, 6, 7, 8], [0, 1, 2, 3]], [[1, 2, 3, 4], [3, 2, 1]]
    for name, ext in (("Ts", "ts"), ("Tsv", "tsv")):
        (tmp_path / name).mkdir()
        for split, rows, labels in (("TRAIN", train, ["-1", "1", "-1"]), ("TEST", test, ["1", "-1"])):
            path = tmp_path / name / f"{name}_{split}.{ext}"
            if ext == "ts":
                _write_ts(path, [[r] for r in rows], labels, univariate=True)
            else:
                _write_tsv(path, rows, labels, length=6)                     # padded past the longest series
    x, y = read_ucr_tsv(tmp_path / "Tsv" / "Tsv_TRAIN.tsv")
    assert x.shape == (3, 5, 1) and list(y) == ["-1", "1", "-1"] and np.isnan(x[0, 3:]).all()   # NaN tail cut
    ts, tsv = load_dataset("ucr", str(tmp_path), "Ts"), load_dataset("ucr", str(tmp_path), "Tsv")
    for field in ("train_x", "train_y", "test_x", "test_y"):                 # the archive's NaN tail is padding
        np.testing.assert_array_equal(getattr(tsv, field), getattr(ts, field))
    assert tsv.classes == ts.classes == ("-1", "1") and tsv.seq_len == 5
    (tmp_path / "Tsv" / "Tsv_TEST.tsv").write_text("1\t1\t2\n-1\n")
    with pytest.raises(TimeMAEError, match=r"Tsv_TEST.tsv:2: expected values and a label"):
        read_ucr_tsv(tmp_path / "Tsv" / "Tsv_TEST.tsv")
    (tmp_path / "Tsv" / "Tsv_TEST.tsv").write_text("1\t1\tx\n")
    with pytest.raises(TimeMAEError, match=r"Tsv_TEST.tsv:1: cannot parse values '1,x'"):
        load_dataset("ucr", str(tmp_path), "Tsv")


def test_ucr_tsv_row_cut_short_is_refused(tmp_path):
    """The archive pads every row of a .tsv with NaN to one field count: a row with fewer fields (a file cut
    short) is refused, naming the file and line, instead of being read as a shorter series."""
    path = tmp_path / "Cut_TRAIN.tsv"
    _write_tsv(path, [[1, 2, 3], [4, 5, 6, 7], [1, 2]], ["1", "2", "1"], length=4)
    assert read_ucr_tsv(path)[0].shape == (3, 4, 1)
    path.write_text(path.read_text() + "2\t1\t2\n")
    with pytest.raises(TimeMAEError, match=r"Cut_TRAIN.tsv:4: 3 tab-separated fields but the first row has 5"):
        read_ucr_tsv(path)


def test_empty_labels_are_missing_labels(tmp_path):
    """An empty label (a .ts row ending in ':', an .arff row ending in ',', a .tsv row starting with a tab) is a
    missing label, refused with its file and line: not a class '', nor the first value read as the label."""
    _write_ts(tmp_path / "E_TRAIN.ts", [[[1, 2, 3]], [[4, 5, 6]]], ["a", ""], univariate=True, declared=["a"])
    (tmp_path / "E_TRAIN.arff").write_text("@relation E\n@attribute t1 numeric\n@attribute target {a,b}\n@data\n"
                                           "1,a\n2,\n")
    (tmp_path / "E_TRAIN.tsv").write_text("\t1\t2\t3\n1\t1\t2\t3\n")
    for reader, path, line in ((read_ts, "E_TRAIN.ts", 10), (read_arff, "E_TRAIN.arff", 6),
                               (read_ucr_tsv, "E_TRAIN.tsv", 1)):
        with pytest.raises(TimeMAEError, match=f"{path}:{line}: the label is missing \\(empty\\); every series needs"):
            reader(tmp_path / path)
    (tmp_path / "Q_TRAIN.arff").write_text("@relation Q\n@attribute t1 numeric\n@attribute target string\n@data\n"
                                           "1,a\n2,?\n")                  # ARFF's missing value, undeclared classes
    with pytest.raises(TimeMAEError, match=r"Q_TRAIN.arff:6: the label is missing \(\?\)"):
        read_arff(tmp_path / "Q_TRAIN.arff")


def test_stratified_split_is_stratified_and_deterministic():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    fit, held = stratified_split(y, 0.2, seed=1)
    assert np.bincount(y[held]).tolist() == [10, 6, 4]
    assert set(fit).isdisjoint(held) and len(fit) + len(held) == 100
    np.testing.assert_array_equal(held, stratified_split(y, 0.2, seed=1)[1])
    for ratio in (0.02, 0.99, 0.0):             # too few held out, too few left to fit, none held out
        with pytest.raises(TimeMAEError, match=f"cannot hold out a stratified {ratio:.0%} of 100"):
            stratified_split(y, ratio, seed=1)
    assert [len(part) for part in stratified_split(y, 0.97, seed=1)] == [3, 97]   # the edges: one per class
    assert [len(part) for part in stratified_split(y, 0.03, seed=1)] == [97, 3]


def test_ucr_data_path_may_be_the_parent_as_in_the_reference_code(tmp_path):
    rows = [[[float(i), 1.0, 2.0, 3.0]] for i in range(4)]
    folder = tmp_path / "Toy"
    folder.mkdir()
    _write_ts(folder / "Toy_TRAIN.ts", rows, ["a", "b", "a", "b"], univariate=True)
    _write_ts(folder / "Toy_TEST.ts", rows[:2], ["a", "b"], univariate=True)
    assert resolve_folder("ucr", str(tmp_path), "Toy") == str(folder)           # DIR + NAME, as the reference
    assert resolve_folder("ucr", str(folder), "Toy") == str(folder)             # the dataset folder itself
    assert resolve_folder("ucr", str(tmp_path / "Gone"), "Gone") == str(tmp_path / "Gone")   # resolved: itself
    outer = tmp_path / "Nest" / "Toy"                                           # Toy/Toy/Toy_TRAIN.ts: the inner one
    (outer / "Toy").mkdir(parents=True)
    for f in ("Toy_TRAIN.ts", "Toy_TEST.ts"):
        (outer / "Toy" / f).write_bytes((folder / f).read_bytes())
    assert resolve_folder("ucr", str(outer), "Toy") == str(outer / "Toy")
    assert resolve_folder("ucr", str(outer / "Toy"), "Toy") == str(outer / "Toy")
    for path in (tmp_path, folder):
        s = load_dataset("ucr", str(path), "Toy")
        assert s.train_x.shape == (4, 4, 1) and s.classes == ("a", "b")


def test_ucr_data_path_with_stray_files_reads_the_named_folder(tmp_path):
    """--data_path DIR --UCR_folder NAME reads the folder DIR/NAME: a stray .pt or NAME_* file in DIR (not the
    files the loader reads) does not make DIR the dataset's folder."""
    rows = [[[float(i), 1.0, 2.0, 3.0]] for i in range(4)]
    folder = tmp_path / "Toy"
    folder.mkdir()
    _write_ts(folder / "Toy_TRAIN.ts", rows, ["a", "b", "a", "b"], univariate=True)
    _write_ts(folder / "Toy_TEST.ts", rows[:2], ["a", "b"], univariate=True)
    for stray in ("model.pt", "Toy_notes.txt"):
        (tmp_path / stray).write_text("")
        assert resolve_folder("ucr", str(tmp_path), "Toy") == str(folder)
        assert load_dataset("ucr", str(tmp_path), "Toy").train_x.shape == (4, 4, 1)


def test_ucr_data_path_holding_a_layout_the_loader_reads_is_the_dataset_folder(tmp_path):
    """--data_path DIR --UCR_folder NAME reads DIR itself when it holds any layout load_dataset reads (one list of
    them serves both): a .pt pair, the extracted UCI HAR folder, or NAME's files, a broken link included (reading
    it reports it)."""
    layouts = (lambda d: [(d / f).write_text("") for f in ("train_new.pt", "test_new.pt")],
               lambda d: (d / "train" / "Inertial Signals").mkdir(parents=True),
               lambda d: (d / "Toy_TRAIN.arff").symlink_to(d / "gone.arff"))
    for i, make in enumerate(layouts):
        folder = tmp_path / f"layout{i}"
        folder.mkdir()
        make(folder)
        assert resolve_folder("ucr", str(folder), "Toy") == str(folder)


def test_folders_with_glob_characters_in_their_names_are_read(tmp_path):
    """A folder named like run[1] or x[a] is a name, not a glob pattern."""
    rows = [[[float(i), 1.0, 2.0]] for i in range(4)]
    for folder in (tmp_path / "run[1]" / "To[y]", tmp_path / "x[a]"):
        folder.mkdir(parents=True)
        _write_ts(folder / "To[y]_TRAIN.ts", rows, ["a", "b", "a", "b"], univariate=True)
        _write_ts(folder / "To[y]_TEST.ts", rows[:2], ["a", "b"], univariate=True)
    assert load_dataset("ucr", str(tmp_path / "run[1]"), "To[y]").train_x.shape == (4, 3, 1)   # DIR + NAME
    assert load_dataset("ucr", str(tmp_path / "x[a]"), "To[y]").train_x.shape == (4, 3, 1)     # the folder itself
    assert load_dataset("ucr", str(tmp_path / "x[a]")).train_x.shape == (4, 3, 1)              # no name given


def test_numpy_files_labelled_and_unlabelled(tmp_path):
    x, y = synthetic_series(20, channels=2)
    aeon = x.transpose(0, 2, 1)
    np.save(tmp_path / "u.npy", aeon)
    s = load_dataset("numpy", str(tmp_path / "u.npy"))
    assert not s.labelled and s.classes == () and s.test_x is None
    np.testing.assert_array_equal(s.train_x, x)                                 # (N, C, T) read as (N, T, C)
    np.save(tmp_path / "uni.npy", aeon[:, 0])                                   # (N, T): univariate
    assert load_dataset("numpy", str(tmp_path / "uni.npy")).train_x.shape == (20, 32, 1)
    np.savez(tmp_path / "l.npz", x=aeon, y=np.array(["a", "b"])[y % 2], x_test=aeon[:6],
             y_test=np.array(["a", "b"])[y[:6] % 2])
    s = load_dataset("numpy", str(tmp_path / "l.npz"))
    assert s.labelled and s.classes == ("a", "b") and s.test_x.shape == (6, 32, 2) and s.val_x is None
    np.savez(tmp_path / "bad.npz", x=aeon, y=y[:5])
    with pytest.raises(TimeMAEError, match="20 train series but 5 labels"):
        load_dataset("numpy", str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "odd.npz", x=aeon, labels=y)
    with pytest.raises(TimeMAEError, match=r"unknown arrays \['labels'\]"):
        load_dataset("numpy", str(tmp_path / "odd.npz"))
    with pytest.raises(TimeMAEError, match="needs --data_path FILE"):
        load_dataset("numpy")
    np.savez(tmp_path / "orphan.npz", x=aeon, y=y, y_val=y[:4])          # labels of a split that is not there
    with pytest.raises(TimeMAEError, match="val labels without val series"):
        load_dataset("numpy", str(tmp_path / "orphan.npz"))
    np.save(tmp_path / "dates.npy", np.zeros((4, 1, 8), dtype="datetime64[s]"))
    with pytest.raises(TimeMAEError, match=r"must hold numbers, got datetime64\[s\]"):
        load_dataset("numpy", str(tmp_path / "dates.npy"))


def test_validation_series_longer_than_training_ones_are_counted_as_cropped(tmp_path):
    """Val and test crops are counted apart, and the line a run logs names each split."""
    x, y = synthetic_series(12, classes=2)
    longer, _ = synthetic_series(4, length=40, classes=2)
    s = splits_from_arrays("arrays", x, y, x_val=longer[:3], y_val=y[:3], x_test=longer, y_test=y[:4])
    assert s.val_x.shape == (3, 32, 2) and (s.cropped_val, s.cropped) == (3, 4)
    assert s.cropped_note().startswith("3 validation and 4 test series are longer than every training series: "
                                       "cropped to their first 32 steps")
    s = splits_from_arrays("arrays", x, y, x_val=longer[:3], y_val=y[:3])
    assert s.cropped_note().startswith("3 validation series are longer")
    assert splits_from_arrays("arrays", x, y, x_val=x[:2], y_val=y[:2]).cropped_note() is None


def test_whole_number_float_labels_are_the_classes_of_integer_ones_in_every_format(tmp_path):
    """1.0 and 1 are one class whichever split or format stored floats (.npz here, .pt, arrays); record labels are
    refused in one line."""
    x, y = synthetic_series(12, classes=2)
    aeon = x.transpose(0, 2, 1)
    np.savez(tmp_path / "f.npz", x=aeon, y=y.astype(float), x_test=aeon[:4], y_test=y[:4])
    s = load_dataset("numpy", str(tmp_path / "f.npz"))
    assert s.classes == ("0", "1") and s.test_y.tolist() == y[:4].tolist()
    for split, labels in (("train", y.astype(np.float32)), ("test", y)):
        torch.save({"samples": torch.from_numpy(aeon), "labels": torch.from_numpy(labels)}, tmp_path / f"{split}.pt")
    assert load_dataset("epilepsy", str(tmp_path)).classes == ("0", "1")
    s = splits_from_arrays("arrays", x, y, x_val=x[:4], y_val=y[:4].astype(float))
    assert s.val_y.tolist() == y[:4].tolist()
    records = np.zeros(12, dtype=[("a", "i4"), ("b", "f4")])
    np.savez(tmp_path / "r.npz", x=aeon, y=records)
    with pytest.raises(TimeMAEError, match=r"numpy: train labels must be one number or string a series, got records"):
        load_dataset("numpy", str(tmp_path / "r.npz"))


def test_normalisation_statistics_are_kept_and_reapplied(tmp_path):
    x, y = synthetic_series(30, channels=2)
    x[:, :, 1] = 10 * x[:, :, 1] + 4
    s = normalize(splits_from_arrays("numpy", x, y, x_test=x[:5], y_test=y[:5]))
    np.testing.assert_allclose(s.stats["mean"], x.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(s.stats["std"], x.std(axis=(0, 1)), rtol=1e-5)
    data = data_description(s)
    assert data["channels"] == 2 and data["seq_len"] == 32 and data["classes"] == ["0", "1", "2"]
    np.testing.assert_array_equal(prepare_series(x[:5], data), s.test_x)        # new series: the same preparation


def _padded_splits():
    """Raw splits with a val split, channels of other scales, variable lengths (NaN padding in every channel) and a
    test split far from both, so statistics from the wrong series, or counting padding, show."""
    rng = np.random.default_rng(3)

    def part(n, lengths, loc, scale):
        x = (loc + scale * rng.standard_normal((n, 24, 2))).astype(np.float32)
        for i, t in enumerate(lengths):
            x[i, t:] = np.nan                                               # trailing padding, all channels
        return x, np.arange(n) % 2
    (x, y), (xv, yv) = part(20, [24, 10] * 10, [1.0, -5.0], [2.0, 30.0]), part(8, [24, 7] * 4, [4.0, 20.0], [1.0, 3.0])
    xt, yt = part(6, [24] * 6, [100.0, 100.0], [50.0, 50.0])
    return x, y, xv, yv, xt, yt


def test_channel_normalisation_makes_the_pretraining_series_zero_mean_unit_std():
    """normalize's statistics are those of the pretraining pool, train + val (not train, not test), padding left
    out: after it each channel of that pool has mean 0 and std 1, computed here with numpy alone."""
    x, y, xv, yv, xt, yt = _padded_splits()
    s = normalize(splits_from_arrays("numpy", x, y, xv, yv, xt, yt), "channel")
    pool = np.concatenate([s.train_x, s.val_x]).reshape(-1, 2)
    real = pool[~np.isnan(pool).any(axis=1)]                                # time steps that are not padding
    assert len(real) == 10 * 24 + 10 * 10 + 4 * 24 + 4 * 7                 # padding stayed NaN, nothing else
    np.testing.assert_allclose(real.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(real.std(axis=0), 1.0, rtol=1e-5)
    raw = np.concatenate([x, xv]).reshape(-1, 2)
    raw = raw[~np.isnan(raw).any(axis=1)].astype(np.float64)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    np.testing.assert_allclose(s.stats["mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(s.stats["std"], std, rtol=1e-5)
    np.testing.assert_allclose(s.test_x, (xt - mean) / std, rtol=1e-4, atol=1e-5)   # test: the pool's statistics


def test_normalize_none_leaves_the_data_untouched(tmp_path):
    from args import parse_args
    from engine.pipeline import load_splits
    x, y, xv, yv, xt, yt = _padded_splits()
    s = normalize(splits_from_arrays("numpy", x, y, xv, yv, xt, yt), "none")
    for got, raw in ((s.train_x, x), (s.val_x, xv), (s.test_x, xt)):
        np.testing.assert_array_equal(got, raw)                             # padding stays NaN
    assert (s.stats["mean"], s.stats["std"]) == ([0.0, 0.0], [1.0, 1.0])
    np.savez(tmp_path / "d.npz", x=x.transpose(0, 2, 1), y=y, x_val=xv.transpose(0, 2, 1), y_val=yv)
    flags = ["--dataset", "numpy", "--data_path", str(tmp_path / "d.npz")]
    np.testing.assert_array_equal(load_splits(parse_args([*flags, "--normalize", "none"])).train_x, x)
    assert not np.allclose(load_splits(parse_args(flags)).train_x, x, equal_nan=True)   # the default normalises


def test_gaps_are_refused_or_filled_linearly_in_time_and_new_series_are_filled_as_training_was(tmp_path):
    nan = np.nan
    x = np.array([[[nan, 1.0], [1.0, nan], [nan, 3.0], [3.0, nan], [4.0, nan], [nan, nan]]])   # (1, 6, 2)
    np.testing.assert_array_equal(fill_gaps(x)[0].T, [[1, 1, 2, 3, 4, nan],      # leading: the first value
                                                      [1, 2, 3, nan, nan, nan]])   # the tail stays padding
    rows = [[[0.0, nan, nan, 3.0, 4.0]], [[nan, 1.0, 2.0]], [[0.0, 1.0, 2.0, 3.0]], [[5.0, nan, 1.0]]]
    for split, part in (("TRAIN", rows), ("TEST", rows[::-1])):
        _write_ts(tmp_path / f"Gappy_{split}.ts", rows if split == "TRAIN" else part, ["a", "b", "a", "b"],
                  univariate=True)
    with pytest.raises(TimeMAEError, match=r"inside 3 series; .*\(--gaps=interpolate fills NaN linearly"):
        load_dataset("ucr", str(tmp_path), "Gappy")
    s = load_dataset("ucr", str(tmp_path), "Gappy", gaps="interpolate")
    np.testing.assert_array_equal(s.train_x[:, :, 0], [[0, 1, 2, 3, 4], [1, 1, 2, nan, nan], [0, 1, 2, 3, nan],
                                                       [5, 3, 1, nan, nan]])
    assert s.gaps == "interpolate" and np.isnan(s.test_x).sum() == np.isnan(s.train_x).sum()
    assert s.filled == 6                                            # three series with gaps in each split
    with pytest.raises(TimeMAEError, match="gaps must be one of refuse, interpolate, got 'fill'"):
        load_dataset("ucr", str(tmp_path), "Gappy", gaps="fill")
    data = data_description(normalize(s))
    assert data["gaps"] == "interpolate"
    new = np.array([[[2.0], [nan], [4.0]]])
    np.testing.assert_array_equal(prepare_series(new, data), prepare_series(np.array([[[2.0], [3.0], [4.0]]]), data))
    with pytest.raises(TimeMAEError, match="inside 1 series"):     # a model trained on data without gaps refuses
        prepare_series(new, {**data, "gaps": "refuse"})
