"""experiments/presets.py: the paper's presets and the UCR/UEA preset, whose window length comes from the
training series' length, whose FineAll starts from the FineLast probe and whose representation is meanmax
averaged over phases of the window grid."""
import json

import pytest

from args import parse_args
from conftest import TINY
from experiments import presets
from main import main
from model.config import CODEBOOK_IN_USE, MAX_WINDOWS, window_length


@pytest.mark.parametrize("length, window", [(24, 1), (32, 1), (33, 2), (100, 4), (251, 8), (1460, 64)])
def test_ucr_window_cuts_the_series_into_at_most_32_windows(length, window):
    assert window_length(length) == window
    assert -(-length // window) <= MAX_WINDOWS and (window == 1 or -(-length // (window // 2)) > 32)


def test_ucr_preset_takes_the_window_from_the_training_split(tmp_path, capsys):
    """The preset passes --wave_length 0, and main.py sizes the windows from the training series (100 steps)."""
    folder = tmp_path / "Toy"
    folder.mkdir()
    header = "@problemName Toy\n@univariate true\n@equalLength true\n@classLabel true a b\n@data\n"
    for split, n in (("TRAIN", 12), ("TEST", 4)):
        rows = [",".join(str((i * 7 + t) % 5) for t in range(100)) + (":a" if i % 2 else ":b") for i in range(n)]
        (folder / f"Toy_{split}.ts").write_text(header + "\n".join(rows) + "\n")
    assert presets.main(["ucr", "--UCR_folder", "Toy", "--data_path", str(folder)]) == 0
    flags = capsys.readouterr().out.split()
    assert flags[flags.index("--fineall_head") + 1] == "probe"
    assert flags[flags.index("--pooling") + 1] == "meanmax"
    assert "--random_shift" not in flags
    assert flags[flags.index("--phases") + 1] == "8"
    assert flags[flags.index("--min_pretrain_steps") + 1] == "2000"   # chosen on validation over 500 and 1000
    assert flags[flags.index("--fineall_margin") + 1] == "1se"        # chosen on held-out halves over none
    out = tmp_path / "run"   # later flags override the preset's epochs, as run.sh's extra flags do
    assert main(["--dataset", "ucr", "--data_path", str(folder), "--UCR_folder", "Toy", *flags, *TINY,
                 "--num_epoch_pretrain", "0", "--num_epoch", "0", "--save_path", str(out)]) == 0
    saved = json.loads((out / "args.json").read_text())
    assert saved["wave_length"] == 4 and saved["random_shift"] == 0.0   # 100 steps -> 25 windows of 4
    assert saved["phases"] == 8


def test_paper_presets_keep_the_papers_fineall_pooling_window_grid_and_step_budget():
    for name, flags in presets.PRESETS.items():
        assert not {"--fineall_head", "--fineall_margin", "--pooling", "--random_shift", "--phases",
                    "--min_pretrain_steps"} & set(flags), name


@pytest.mark.parametrize("dataset", sorted(presets.PRESETS))
def test_paper_presets_parse_to_the_codebook_in_use(dataset):
    """run.sh's paper presets, read back by main.py's parser, hold exactly CODEBOOK_IN_USE's settings."""
    cfg = parse_args(["--dataset", dataset, *presets.PRESETS[dataset]])
    assert {k: getattr(cfg, k) for k in CODEBOOK_IN_USE} == CODEBOOK_IN_USE
    assert parse_args(["--dataset", dataset]).codebook_reset is False   # the defaults keep the paper's codebook
