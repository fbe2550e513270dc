"""Per-dataset presets of the paper's runs (window length, codebook size, MRR/MCC weights, epochs): the one
source that run.sh and the studies (experiments/) read.

    python -m experiments.presets epilepsy    # prints the preset's main.py flags
"""
import sys

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


def main(argv):
    if len(argv) != 1 or argv[0] not in PRESETS:
        print(f"usage: bash run.sh <{'|'.join(PRESETS)}> [runs] [extra main.py flags]", file=sys.stderr)
        return 2
    print(" ".join(PRESETS[argv[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
