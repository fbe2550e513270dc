"""Which CPU softmax is fastest at each row length: the measurement behind `model.layers.softmax_last_dim` and the
fused blocks' masked softmax. Attention weights of a batch (B, h, L, L) at d_model 64's 4 heads; for each L the
median ms of ATen's softmax, ATen's masked softmax (the fused block's kernel with a key padding mask) and
SoftmaxLastDim (elementwise ops), forward only and forward + backward, and the kernel the model uses.

    python benchmarks/softmax_rows.py --threads 1
    ATEN_CPU_CAPABILITY=avx2 python benchmarks/softmax_rows.py --threads 1     # ATen's AVX2 kernels
"""
import argparse
import os
import sys

import torch
from torch.utils.benchmark import Timer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from args import positive_int, whole_numbers  # noqa: E402
from common.cli import ArgumentParser  # noqa: E402
from model.layers import SHORT_ROWS, SoftmaxLastDim  # noqa: E402


def parse(argv=None):
    p = ArgumentParser(prog="python benchmarks/softmax_rows.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--batch_size", type=positive_int, default=128)
    p.add_argument("--heads", type=positive_int, default=4)
    p.add_argument("--lengths", type=whole_numbers, default="4,7,9,12,13,15,16,17,20,23,32",
                   help="comma-separated row lengths L")
    return p.parse_args(argv)


def median_ms(fn, *inputs):
    timer = Timer("fn(*inputs)", globals=dict(fn=fn, inputs=inputs), num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=0.3).median * 1e3


def forward_backward(softmax):
    def run(scores, grad):
        softmax(scores).backward(grad)
    return run


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads; (B, h, L, L) = "
          f"({args.batch_size}, {args.heads}, L, L); median ms; the model's kernels change at L = {SHORT_ROWS}\n")
    print("| L | ATen softmax | masked softmax | SoftmaxLastDim | fwd+bwd: ATen | fwd+bwd: SoftmaxLastDim "
          "| model's kernel |")
    print("|---|---|---|---|---|---|---|")
    for length in args.lengths:
        scores = torch.randn(args.batch_size, args.heads, length, length)
        no_key_hidden = torch.zeros(args.batch_size, length, dtype=torch.bool)   # (B, L), as the fused block passes
        grad = torch.randn_like(scores)
        trained = scores.clone().requires_grad_()
        row = [median_ms(lambda s: s.softmax(-1), scores),
               median_ms(lambda s, m: torch._masked_softmax(s, m, -1, 1), scores, no_key_hidden),   # key padding
               median_ms(SoftmaxLastDim.apply, scores),
               median_ms(forward_backward(lambda s: s.softmax(-1)), trained, grad),
               median_ms(forward_backward(SoftmaxLastDim.apply), trained, grad)]
        short = length < SHORT_ROWS
        used = "masked (no grad) / SoftmaxLastDim (training)" if short else "ATen softmax"
        print(f"| {length} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {used} |")


if __name__ == "__main__":
    main()
