"""Bad-input matrix: every case ends in exit code 2 and ONE line `error: ...` on stderr naming the problem,
never a traceback. Each case builds its broken input in a fresh folder and runs main.main in-process."""
import json
import os

import numpy as np
import pytest
import torch

import main
from args import parse_args
from model import TimeMAE
from engine.checkpoint import save_checkpoint
from scale_helpers import tiny_flags, write_pt_dataset


def _pt(folder, name, obj):
    torch.save(obj, os.path.join(folder, name))


def _pt_split(folder, name, x, y):
    _pt(folder, name, {"samples": torch.as_tensor(x, dtype=torch.float32), "labels": torch.as_tensor(y)})


def _ts(folder, name, lines, header="@problemName toy\n@univariate true\n@classLabel true 1 2\n@data\n"):
    with open(os.path.join(folder, name), "w") as f:
        f.write(header + "".join(line + "\n" for line in lines))


def _model(channels=2, layers=1):
    """A TimeMAE shaped like the tiny runs' (see tiny_flags), on data with `channels` channels."""
    return TimeMAE(channels=channels, seq_len=32, num_classes=2, d_model=16, attn_heads=2, layers=layers,
                   reg_layers=1, vocab_size=16, wave_length=4)


def _killed_run(data, run, ckpt_writer):
    """A run folder as a killed run leaves it: args.json of the same flags plus a last.pkl from `ckpt_writer`."""
    os.makedirs(run)
    cfg = vars(parse_args(tiny_flags(data, run)))
    with open(os.path.join(run, "args.json"), "w") as f:
        json.dump(cfg, f)
    ckpt_writer(os.path.join(run, "last.pkl"))


# ---------------------------------------------------------------------------------------------- the cases
# Each case: (prepare(data, run) -> extra argv or None, expected fragment of the message).

def no_folder(data, run):
    return ["--data_path", os.path.join(data, "missing")]


def no_files(data, run):
    os.makedirs(data)


def empty_pt(data, run):
    write_pt_dataset(data)
    open(os.path.join(data, "train.pt"), "wb").close()


def corrupt_pt(data, run):
    write_pt_dataset(data)
    with open(os.path.join(data, "train.pt"), "wb") as f:
        f.write(b"\x80\x02not a torch file at all" * 10)


def truncated_pt(data, run):
    write_pt_dataset(data)
    path = os.path.join(data, "test.pt")
    os.truncate(path, os.path.getsize(path) // 2)


def pt_without_samples(data, run):
    write_pt_dataset(data)
    _pt(data, "train.pt", {"x": torch.zeros(4, 2, 32), "y": torch.zeros(4)})


def pt_text_samples(data, run):
    write_pt_dataset(data)
    _pt(data, "train.pt", {"samples": [["a", "b"]] * 4, "labels": [0, 1, 0, 1]})


def pt_complex_samples(data, run):
    write_pt_dataset(data)
    _pt(data, "train.pt", {"samples": torch.ones(4, 2, 32, dtype=torch.complex64), "labels": torch.arange(4) % 2})


def pt_beyond_float32(data, run):
    write_pt_dataset(data)
    samples = torch.ones(8, 2, 32, dtype=torch.float64)
    samples[0, 0, :3] = 1e39                                    # the cast to float32 would make them inf
    _pt(data, "train.pt", {"samples": samples, "labels": torch.arange(8) % 2})


def pt_one_hot_labels(data, run):
    write_pt_dataset(data)
    _pt(data, "train.pt", {"samples": torch.ones(8, 2, 32), "labels": torch.eye(2)[torch.arange(8) % 2]})


def pt_no_channels(data, run):
    write_pt_dataset(data)
    _pt_split(data, "train.pt", np.zeros((8, 0, 32)), np.arange(8) % 2)


def pt_count_mismatch(data, run):
    write_pt_dataset(data)
    _pt_split(data, "train.pt", np.zeros((10, 2, 32)), np.arange(8) % 2)


def pt_wrong_rank(data, run):
    write_pt_dataset(data)
    _pt_split(data, "train.pt", np.zeros((8, 2, 32, 1)), np.arange(8) % 2)


def empty_ts(data, run):
    os.makedirs(data)
    _ts(data, "Toy_TRAIN.ts", [])
    _ts(data, "Toy_TEST.ts", ["1,2,3,4:1"])
    return ["--dataset", "ucr", "--UCR_folder", "Toy"]


def ts_beyond_float32(data, run):
    os.makedirs(data)
    _ts(data, "Toy_TRAIN.ts", ["1,2,3,4:1", "1,2,1e39,4:2"])
    _ts(data, "Toy_TEST.ts", ["1,2,3,4:1"])
    return ["--dataset", "ucr", "--UCR_folder", "Toy"]


def corrupt_ts(data, run):
    os.makedirs(data)
    _ts(data, "Toy_TRAIN.ts", ["1,2,3,4:1", "1,2,x?,4:2"])
    _ts(data, "Toy_TEST.ts", ["1,2,3,4:1"])
    return ["--dataset", "ucr", "--UCR_folder", "Toy"]


def binary_ts(data, run):
    os.makedirs(data)
    with open(os.path.join(data, "Toy_TRAIN.ts"), "wb") as f:
        f.write(os.urandom(256))
    _ts(data, "Toy_TEST.ts", ["1,2,3,4:1"])
    return ["--dataset", "ucr", "--UCR_folder", "Toy"]


def ts_without_test(data, run):
    os.makedirs(data)
    _ts(data, "Toy_TRAIN.ts", ["1,2,3,4:1", "2,3,4,5:2"])
    return ["--dataset", "ucr", "--UCR_folder", "Toy"]


def ts_train_is_a_folder(data, run):
    os.makedirs(os.path.join(data, "Toy_TRAIN.ts"))
    _ts(data, "Toy_TEST.ts", ["1,2,3,4:1"])
    return ["--dataset", "ucr", "--UCR_folder", "Toy"]


def ts_train_link_to_nothing(data, run):
    os.makedirs(data)
    os.symlink(os.path.join(data, "gone.ts"), os.path.join(data, "Toy_TRAIN.ts"))
    _ts(data, "Toy_TEST.ts", ["1,2,3,4:1"])
    return ["--dataset", "ucr", "--UCR_folder", "Toy"]


def pt_test_link_to_nothing(data, run):
    write_pt_dataset(data)
    os.remove(os.path.join(data, "test.pt"))
    os.symlink(os.path.join(data, "gone.pt"), os.path.join(data, "test.pt"))
    return []


def pt_val_is_a_folder(data, run):
    write_pt_dataset(data)
    os.remove(os.path.join(data, "val.pt"))
    os.makedirs(os.path.join(data, "val.pt"))
    return []


def label_outside_classes(data, run):
    write_pt_dataset(data)
    x = torch.load(os.path.join(data, "test.pt"))["samples"]
    _pt_split(data, "test.pt", x, np.r_[np.zeros(len(x) - 1), 7])


def negative_label(data, run):
    write_pt_dataset(data)
    x = torch.load(os.path.join(data, "val.pt"))["samples"]
    _pt_split(data, "val.pt", x, np.r_[np.zeros(len(x) - 1), -1])


def one_class(data, run):
    write_pt_dataset(data)
    x = torch.load(os.path.join(data, "train.pt"))["samples"]
    _pt_split(data, "train.pt", x, np.zeros(len(x)))


def nan_label(data, run):
    write_pt_dataset(data)
    x = torch.load(os.path.join(data, "train.pt"))["samples"]
    _pt_split(data, "train.pt", x, np.r_[np.zeros(len(x) - 2), 1, np.nan])


def nan_in_data(data, run):
    write_pt_dataset(data)
    d = torch.load(os.path.join(data, "train.pt"))
    d["samples"][3, 0, 5] = float("nan")
    _pt(data, "train.pt", d)


def inf_in_data(data, run):
    write_pt_dataset(data)
    d = torch.load(os.path.join(data, "test.pt"))
    d["samples"][0, 1, 0] = float("inf")
    _pt(data, "test.pt", d)


def series_shorter_than_window(data, run):
    write_pt_dataset(data, length=3)


def channels_differ_between_splits(data, run):
    write_pt_dataset(data)
    _pt_split(data, "val.pt", np.zeros((6, 3, 32)), np.arange(6) % 2)


def checkpoint_other_channels(data, run):
    write_pt_dataset(data)  # 2 channels; the killed run's checkpoint was built for 3
    _killed_run(data, run, lambda path: save_checkpoint(path, _model(channels=3)))
    return ["--resume"]


def checkpoint_other_architecture(data, run):
    write_pt_dataset(data)
    _killed_run(data, run, lambda path: save_checkpoint(path, _model(layers=2)))
    return ["--resume"]


def checkpoint_not_timemae(data, run):
    write_pt_dataset(data)
    _killed_run(data, run, lambda path: torch.save(torch.nn.Linear(2, 2).state_dict(), path))
    return ["--resume"]


def checkpoint_state_mismatch(data, run):
    write_pt_dataset(data)

    def writer(path):  # right config, but weights of something else
        torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "config": _model().config}, path)
    _killed_run(data, run, writer)
    return ["--resume"]


def checkpoint_without_training_state(data, run):
    write_pt_dataset(data)  # a best-model file put where the last state belongs
    _killed_run(data, run, lambda path: save_checkpoint(path, _model()))
    return ["--resume"]


def pretrained_path_a_run_folder(data, run):
    write_pt_dataset(data)
    os.makedirs(run + "_source")   # a run folder where its checkpoint file belongs
    return ["--pretrained_path", run + "_source"]


def checkpoint_truncated(data, run):
    write_pt_dataset(data)

    def writer(path):
        save_checkpoint(path, _model())
        os.truncate(path, os.path.getsize(path) // 3)
    _killed_run(data, run, writer)
    return ["--resume"]


def resume_unreadable_args(data, run):
    write_pt_dataset(data)
    _killed_run(data, run, lambda path: save_checkpoint(path, _model()))
    with open(os.path.join(run, "args.json"), "w") as f:
        f.write('{"lr": 0.0')
    return ["--resume"]


def resume_changed_flags(data, run):
    write_pt_dataset(data)
    _killed_run(data, run, lambda path: save_checkpoint(path, _model()))
    return ["--resume", "--lr", "0.5"]


def resume_finished_run(data, run):
    write_pt_dataset(data)
    _killed_run(data, run, lambda path: None)
    open(os.path.join(run, "metrics.json"), "w").close()
    return ["--resume"]


def resume_and_overwrite(data, run):
    write_pt_dataset(data)
    return ["--resume", "--overwrite"]


def existing_run_folder(data, run):
    write_pt_dataset(data)
    os.makedirs(run)
    open(os.path.join(run, "last.pkl"), "w").close()


def negative_shift(data, run):
    write_pt_dataset(data)
    return ["--random_shift", "-0.5"]


def negative_jitter(data, run):
    write_pt_dataset(data)
    return ["--jitter", "-0.1"]


def zero_phases(data, run):
    write_pt_dataset(data)
    return ["--phases", "0"]


def repr_layer_past_the_encoder(data, run):
    write_pt_dataset(data)
    return ["--layers", "1", "--repr_layers", "0-2"]


def cuda_without_gpu(data, run):
    write_pt_dataset(data)
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    return ["--device", "cuda"]


def unknown_device(data, run):
    write_pt_dataset(data)
    return ["--device", "tpu:9"]


CASES = [
    (no_folder, ("does not exist", " or fetch it: python -m data.prepare epilepsy --download --data_path ",
                 "/data/missing)")),
    (no_files, ("no dataset files in", "train.pt + test.pt")),
    (empty_pt, ("cannot read ", "/data/train.pt: ")),            # the damaged file named: test.pt is intact
    (corrupt_pt, ("cannot read ", "/data/train.pt: ")),
    (truncated_pt, ("cannot read ", "/data/test.pt: ")),
    (pt_without_samples, "expected a dict with 'samples' and 'labels'"),
    (pt_text_samples, "samples must be numbers in an array"),
    (pt_complex_samples, "train.pt: samples must be real numbers, got complex values (complex64)"),
    (pt_beyond_float32, "train.pt: samples: 3 value(s) beyond float32's range (|v| > 3.4e38), the model's "
                        "precision: rescale the data"),
    (pt_one_hot_labels, "train.pt: labels must be one label a series (1-D), got shape (8, 2)"),
    (pt_no_channels, "train.pt: samples holds no series, or series of no channels or steps: shape (8, 0, 32)"),
    (pt_count_mismatch, "10 samples but 8 labels"),
    (pt_wrong_rank, "samples must have 3 dimensions"),
    (empty_ts, "no series after an @data line"),
    (corrupt_ts, "cannot parse values"),
    (ts_beyond_float32, "Toy_TRAIN.ts:6: 1 value(s) beyond float32's range (|v| > 3.4e38)"),
    (binary_ts, "no series after an @data line"),
    (ts_without_test, "but not its test file"),
    (ts_train_is_a_folder, "Toy_TRAIN.ts is not a file (a folder, or a link to nothing); expected the training"),
    (ts_train_link_to_nothing, "Toy_TRAIN.ts is not a file (a folder, or a link to nothing)"),
    (pt_test_link_to_nothing, "test.pt is not a file (a folder, or a link to nothing); expected a .pt data file"),
    (pt_val_is_a_folder, "val.pt is not a file (a folder, or a link to nothing); expected a .pt data file"),
    (label_outside_classes, "test labels ["),
    (negative_label, "val labels ["),
    (one_class, "at least 2 are needed"),
    (nan_label, "train labels hold 1 missing value (NaN or None); every series needs a label"),
    (nan_in_data, "train data has non-finite values (NaN/inf) inside 1 series; only trailing NaN padding of "
                  "variable-length series is allowed: fill the gaps (--gaps=interpolate fills NaN linearly; inf "
                  "must be replaced) or drop those series"),
    (inf_in_data, "test data has non-finite values (NaN/inf) inside 1 series"),
    (series_shorter_than_window, "--wave_length 4 is longer than the series (3 steps)"),
    (channels_differ_between_splits, "the val series have 3 channels but the training series 2"),
    (checkpoint_other_channels, "built for another configuration (channels: checkpoint 3 vs run 2)"),
    (checkpoint_other_architecture, "built for another configuration (layers: checkpoint 2 vs run 1)"),
    (checkpoint_not_timemae, "is not a TimeMAE checkpoint"),
    (checkpoint_state_mismatch, "does not fit this model"),
    (checkpoint_without_training_state, "is not a last-state checkpoint (it lacks phase, epoch"),
    (checkpoint_truncated, "cannot read checkpoint"),
    (pretrained_path_a_run_folder, "is a folder: pass a checkpoint file in it (a run folder's pretrain_model.pkl"),
    (resume_unreadable_args, "--resume: cannot read"),
    (resume_changed_flags, "flags differ from the run's args.json (--lr 0.001 -> 0.5)"),
    (resume_finished_run, "has finished"),
    (resume_and_overwrite, "pass one of them"),
    (existing_run_folder, "pass --resume to continue that run, --overwrite to replace it"),
    (negative_shift, "--random_shift must be a finite number of windows, 0 or more, got -0.5"),
    (negative_jitter, "--jitter must be a finite number of standard deviations, 0 or more, got -0.1"),
    (zero_phases, "--phases must be 1 or more, got 0"),
    (repr_layer_past_the_encoder, "--repr_layers [0, 1, 2] must lie in 0 (the window embeddings) to 1 (the visible"),
    (cuda_without_gpu, "no CUDA GPU is available"),
    (unknown_device, "is not a device name"),
]


@pytest.mark.parametrize("prepare, expected", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_gives_one_line_error(tmp_path, capsys, prepare, expected):
    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    extra = prepare(data, run) or []
    code = main.main(tiny_flags(data, run) + extra)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert all(part in err for part in (expected if isinstance(expected, tuple) else (expected,))), err


@pytest.mark.parametrize("text", ["last", "8-5", "-1", ""])
def test_repr_layers_that_are_not_layer_numbers_are_refused_by_the_parser(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--repr_layers", text])
    assert exit_info.value.code == 2
    assert f"expected layers like 8, 5-8 or 0,8 (0: the window embeddings), got '{text}'" in capsys.readouterr().err
