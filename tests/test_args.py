"""The runtime flags, defined once (args.runtime_flags: the flags of the groups system and speed), as --resume, the
summary and the estimators read them."""
import argparse
import json

import pytest

import args
from engine import pipeline
from common.errors import TimeMAEError
from timemae.estimators import _params_of_run
from tools.summarize import collect_runs

RUNTIME = {"data_path", "save_path", "device", "threads", "num_workers", "overwrite", "resume", "skip_nonfinite",
           "no_progress", "compile", "compile_backend", "compile_mode", "eval_batch_size"}


@pytest.fixture
def new_runtime_flag(monkeypatch):
    """A flag added to the group system, as a future runtime flag would be."""
    build = args.build_parser

    def with_new_flag():
        parser = build()
        system = next(g for g in parser._action_groups if g.title == args.SYSTEM)
        system.add_argument("--new_runtime_flag", type=int, default=0)
        return parser
    monkeypatch.setattr(args, "build_parser", with_new_flag)
    args.flag_defaults.cache_clear()
    args.runtime_flags.cache_clear()
    yield "new_runtime_flag"
    args.flag_defaults.cache_clear()    # the parser comes back after this fixture
    args.runtime_flags.cache_clear()


def test_the_flags_of_the_system_and_speed_groups_and_a_new_one_are_runtime_flags_everywhere(new_runtime_flag,
                                                                                              tmp_path):
    """--resume lets them differ, the summary groups runs over them, an estimator loaded from a run leaves them
    out of its settings; the seed and --amp change what is computed and count."""
    runtime = args.runtime_flags()
    assert runtime == RUNTIME | {new_runtime_flag}

    run = tmp_path / "run"
    run.mkdir()
    cfg = args.parse_args(["--save_path", str(run), "--resume"])
    (run / "args.json").write_text(json.dumps({**vars(cfg), **dict.fromkeys(runtime - {"save_path"}, "other")}))
    assert pipeline.open_run(cfg, None, None) is None     # resumable (no epoch had finished: it starts in place)
    cfg.amp = True
    with pytest.raises(TimeMAEError, match=r"flags differ from the run's args.json \(--amp False -> True\)"):
        pipeline.open_run(cfg, None, None)

    actions = {a.dest: a for a in args.build_parser()._actions}

    def valid(name, seed):
        """A value the flag takes, another one for each seed (args.json's values are checked as the parser would)."""
        action = actions[name]
        return seed == 2 if action.nargs == 0 else action.choices[seed - 1] if action.choices else \
            seed if action.type is int else f"v{seed}"
    for seed in (1, 2):
        folder = tmp_path / "exp" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"dataset": "har", "seed": seed, "select_on": "val"}))
        (folder / "args.json").write_text(json.dumps({"seed": seed, **{k: valid(k, seed) for k in runtime}}))
    assert collect_runs([str(tmp_path / "exp")]).config.tolist() == ["", ""]     # one configuration
    (folder / "args.json").write_text(json.dumps({"seed": seed, "amp": True}))
    assert collect_runs([str(tmp_path / "exp")]).config.tolist() == ["amp=False", "amp=True"]

    flags = _params_of_run({**args.flag_defaults(), **dict.fromkeys(runtime, "other")}, None)["flags"]
    assert not runtime & set(flags) and flags["amp"] is False


@pytest.mark.parametrize("parse, text, expected", [
    (args.positive_int, "3", 3), (args.positive_int, " 4", 4), (args.non_negative_int, "0", 0),
    (args.whole_numbers, "8,16", [8, 16]), (args.whole_number, "2", 2)])
def test_the_whole_number_types_read_what_they_admit(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("parse, text, least", [
    (args.positive_int, "0", 1), (args.positive_int, "x", 1), (args.positive_int, "1,2", 1),
    (args.non_negative_int, "-1", 0), (args.non_negative_int, "", 0), (args.whole_numbers, "8,0", 1)])
def test_the_whole_number_types_refuse_in_one_line_naming_the_least_value(parse, text, least):
    with pytest.raises(argparse.ArgumentTypeError, match=rf"^expected (a )?whole numbers? of {least} or more.*"
                                                         rf"got {text!r}$"):
        parse(text)


def test_the_reference_codes_dataset_mat_reads_as_uwave_and_other_names_are_refused(capsys):
    """The reference code's `--dataset mat` (train.pt / test.pt of (N, T, C) series) is uwave's loader here."""
    assert args.parse_args(["--dataset", "mat"]).dataset == "uwave"
    assert args.parse_args(["--dataset", "har"]).dataset == "har"
    with pytest.raises(SystemExit):
        args.parse_args(["--dataset", "mnist"])
    assert "invalid choice: 'mnist'" in capsys.readouterr().err
