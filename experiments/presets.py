"""Per-dataset presets of the paper's runs (window length, codebook size, MRR/MCC weights, epochs): the one
source that run.sh and the studies (experiments/) read.

    python -m experiments.presets epilepsy    # prints the preset's main.py flags
    python -m experiments.presets ucr         # the UCR/UEA preset: the window from the series length

UCR/UEA sets (`ucr`) pass `--wave_length 0`: main.py takes sigma from the training series' length T
(`model.config.window_length`: the smallest power of two with ceil(T / sigma) <= 32 windows, so 17-32 windows
whenever T > 32; T <= 32 gives sigma = 1) and records it in args.json. Their small training sets rely on
main.py's step budget (--min_batches, --min_steps, and --min_pretrain_steps raised to 2000), their FineAll starts
from the FineLast probe (--fineall_head probe) and keeps it unless a fine-tuning step is ahead on the selection
split by more than one standard error (--fineall_margin 1se), and their representation is the windows' mean and
max (--pooling meanmax) averaged over 8 phases of the window grid (--phases 8, at most sigma); the paper's presets
keep its random head, mean, one grid and main.py's 1000 pretraining steps.
"""
import sys

from model.config import CODEBOOK_IN_USE, as_flags

CODEBOOK = as_flags(CODEBOOK_IN_USE)   # the paper's STE tokenizer with a codebook that stays in use

PRESETS = {  # the window length comes first: quick studies keep only it
    "har":      ["--wave_length", "8", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100", *CODEBOOK],
    "epilepsy": ["--wave_length", "16", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "20", *CODEBOOK],
    "uwave":    ["--wave_length", "16", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100", *CODEBOOK],
    "ps":       ["--wave_length", "8", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100", *CODEBOOK],
    "ad":       ["--wave_length", "4", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0",
                 "--num_epoch_pretrain", "100", "--num_epoch", "100", *CODEBOOK],
}


# small labelled sets: FineAll starts from the FineLast probe and keeps it unless fine-tuning beats it on the
# selection split ("FineAll from the probe" in docs/results.md); meanmax was chosen on validation over the five
# UCR sets ("The UCR preset's pooling and window"), and so was the representation over 8 grid phases ("--phases";
# with it, validation prefers pretraining on the fixed grid to --random_shift 2), and so were at least 2000
# pretraining steps over 500 and main.py's 1000 ("The pretraining step budget on the UCR sets"); the one-standard-
# error margin over the probe was chosen on held-out halves of the selection split ("FineAll's margin over the probe")
UCR = ["--wave_length", "0", "--vocab_size", "192", "--alpha", "5.0", "--beta", "1.0", "--num_epoch_pretrain", "100",
       "--num_epoch", "100", "--fineall_head", "probe", "--fineall_margin", "1se", "--pooling", "meanmax",
       "--phases", "8", "--min_pretrain_steps", "2000"]


ALL = {**PRESETS, "ucr": UCR}


def main(argv):
    """Print a preset's flags; run.sh passes its extra main.py flags along, which are not read."""
    if len(argv) < 1 or argv[0] not in ALL:
        problem = f"unknown dataset {argv[0]!r}" if argv and argv[0] else "no dataset given"
        print(f"error: {problem}; usage: bash run.sh <{'|'.join(ALL)}> [runs] [extra main.py flags; for ucr: "
              "--UCR_folder <Name>]", file=sys.stderr)
        return 2
    print(" ".join(ALL[argv[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
