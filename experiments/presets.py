"""Per-dataset presets of the paper's runs (window length, codebook size, MRR/MCC weights, epochs): the one
source that run.sh and the studies (experiments/) read.

    python -m experiments.presets epilepsy    # prints the preset's main.py flags
    python -m experiments.presets ucr --UCR_folder ArrowHead [--data_path DIR]   # window from the series length

UCR/UEA sets (`ucr`) get their window length from the training series' length T by
`model.config.window_length` (what `--wave_length 0` does inside main.py): the
smallest power of two sigma with ceil(T / sigma) <= 32 windows (so 17-32 windows whenever T > 32; T <= 32 gives
sigma = 1, one window per step). Their small training sets rely on main.py's step budget (--min_batches,
--min_pretrain_steps, --min_steps), their FineAll starts from the FineLast probe (--fineall_head probe), and their
representation is the windows' mean and max (--pooling meanmax); the paper's presets keep its random head and mean.
"""
import argparse
import sys

from common.errors import TimeMAEError
from model.config import window_length

PRESETS = {  # the window length comes first: quick studies keep only it
    "har":      ["--wave_length", "8", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100"],
    "epilepsy": ["--wave_length", "16", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "20"],
    "uwave":    ["--wave_length", "16", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100"],
    "ps":       ["--wave_length", "8", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100"],
    "ad":       ["--wave_length", "4", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100"],
}


# small labelled sets: FineAll starts from the FineLast probe and keeps it unless fine-tuning beats it on the
# selection split (docs/results.md, "FineAll from the probe")
# and the series representation is the windows' mean and max, chosen on validation over the five UCR sets
# (docs/results.md, "The UCR preset's pooling")
UCR = ["--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0", "--num_epoch_pretrain", "100", "--num_epoch", "100",
       "--fineall_head", "probe", "--pooling", "meanmax"]


def ucr_preset(ucr_folder, data_path=None):
    """The flags of a UCR/UEA set, with the window length from its training series' length."""
    from datautils import load_dataset
    seq_len = load_dataset("ucr", data_path, ucr_folder).seq_len
    return ["--wave_length", str(window_length(seq_len)), *UCR]


def main(argv):
    if argv[:1] == ["ucr"]:  # run.sh passes its extra main.py flags along: only these two are read
        p = argparse.ArgumentParser(prog="python -m experiments.presets ucr")
        p.add_argument("--UCR_folder", required=True)
        p.add_argument("--data_path", default=None)
        a, _ = p.parse_known_args(argv[1:])
        try:
            print(" ".join(ucr_preset(a.UCR_folder, a.data_path)))
        except TimeMAEError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if len(argv) < 1 or argv[0] not in PRESETS:
        print(f"usage: bash run.sh <{'|'.join(PRESETS)}|ucr> [runs] [extra main.py flags; for ucr: --UCR_folder "
              "<Name>]", file=sys.stderr)
        return 2
    print(" ".join(PRESETS[argv[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
