"""Entry point: parse flags, run (engine/pipeline.py: load data, build TimeMAE, hand both to the Trainer), and
report in one line: where the metrics are, or the error.

    python main.py --dataset epilepsy --data_path data/Epilepsy --wave_length 8 --vocab_size 192
"""
import os
import sys

from args import parse_args
from common.errors import TimeMAEError
from engine.distributed import exit_process, is_main_process
from engine.pipeline import flag_message, run
from engine.runfiles import RUN_STATE


def resume_hint(run_dir):
    """What an interrupted run left to continue from."""
    if run_dir and os.path.isfile(os.path.join(run_dir, RUN_STATE)):
        return f"{run_dir}/{RUN_STATE} holds the state after the last finished epoch; rerun with --resume (the same " \
               "flags, without --overwrite) to continue from it"
    return ("no epoch had finished; rerun with --resume (it starts again in place) or --overwrite" if run_dir and
            os.path.isfile(os.path.join(run_dir, "args.json")) else "no epoch had finished, nothing to resume")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_args(argv)
    try:
        metrics = run(cfg, command=argv)
    except TimeMAEError as e:
        print(f"error: {flag_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if is_main_process():
            print(f"interrupted: {resume_hint(cfg.save_path)}", file=sys.stderr)
        return 130
    if is_main_process():
        scores = [f"{name} acc {metrics[key]['acc']:.4f}" for key, name in (("finelast", "FineLast"),
                                                                           ("fineall", "FineAll"))
                  if "acc" in metrics.get(key, {})]
        print(f"done: {cfg.save_path}/metrics.json" + (f"  {', '.join(scores)}" if scores else ""))
    return 0


if __name__ == "__main__":
    exit_process(main())
