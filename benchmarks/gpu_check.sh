#!/usr/bin/env bash
# Every GPU measurement of docs/speed.md in one pass, on a machine with a CUDA GPU (not run yet: no GPU was lent
# to this work). Figures go to $OUT/gpu_check (default exp/gpu_check): throughput CSVs (float32, bfloat16,
# torch.compile, both) with the fraction of a same-FLOP matmul, a profile of the HAR-shape step, and the full
# Epilepsy preset (100 pretraining epochs + probes, --wave_length 16) timed end to end, float32 and --amp.
#   TIMEMAE_DATA=/path/to/data bash benchmarks/gpu_check.sh        # about 10 minutes on one H100/H200
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-exp}/gpu_check"
mkdir -p "$out"
log="$out/summary.txt"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA GPU visible to torch')"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git rev-parse --short HEAD; } > "$log"

bench() {  # name, extra flags
    python benchmarks/throughput.py --device cuda --reps 7 --steps 10 --eval_series 16384 --out "$out/$1.csv" "${@:2}" \
        | tee "$out/$1.log" | sed -n '/^ *device/,$p' >> "$log"
}
bench fp32
bench amp --amp
bench compile --compile --warmup 5
bench compile_amp --compile --amp --warmup 5
python - "$out" >> "$log" <<'EOF'
import sys, pandas as pd
for name in ("fp32", "amp", "compile", "compile_amp"):
    t = pd.read_csv(f"{sys.argv[1]}/{name}.csv")
    har = t[(t["shape"] == "har") & (t["task"] == "pretrain")].iloc[0]
    print(f"{name}: HAR-shaped pretraining epoch of 8823 series {8823 / har['series_per_s']:.2f} s (target < 1 s), "
          f"{har['of_matmul']:.2f} of a same-FLOP matmul")
EOF
python benchmarks/profile_step.py --device cuda --shape har --wave_length 8 --top 15 > "$out/profile_har.md"

if [ -f "${TIMEMAE_DATA:-data}/Epilepsy/train.pt" ]; then
    for flags in "" "--amp" "--compile"; do
        name="epilepsy100${flags// /}"
        start=$(date +%s.%N)
        python main.py --dataset epilepsy --wave_length 16 --num_epoch_pretrain 100 --num_epoch 0 --device cuda \
            --no_progress --overwrite --save_path "$out/$name" $flags > "$out/$name.log" 2>&1
        echo "$name: $(python -c "print(f'{$(date +%s.%N) - $start:.1f}')") s wall (target < 120 s);" \
            "metrics: $(cat "$out/$name/metrics.json")" >> "$log"
    done
else
    echo "Epilepsy not found under \${TIMEMAE_DATA:-data}: full-run timing skipped" >> "$log"
fi
cat "$log"
