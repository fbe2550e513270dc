#!/usr/bin/env bash
# Every GPU measurement of docs/speed.md in one pass, on a machine with a CUDA GPU (not run yet: no GPU was lent
# to this work). Figures go to $OUT/gpu_check (default exp/gpu_check): throughput CSVs (float32, bfloat16,
# torch.compile, both, and CUDA graphs: --compile_mode reduce-overhead; float32 on variable-length series) with the
# fraction of a same-FLOP matmul and the host syncs per step, a profile of the HAR-shape step, and run.sh's Epilepsy
# preset (100 pretraining epochs + probes, --wave_length 16, no FineAll) timed end to end: float32, --amp, --compile
# and CUDA graphs. A measurement that fails is logged in the summary and the others still run: device time is
# short. Its duration on a GPU is unknown; PARTS splits it in two calls.
#   TIMEMAE_DATA=/path/to/data bash benchmarks/gpu_check.sh        # everything
#   PARTS=bench bash benchmarks/gpu_check.sh; PARTS=runs OUT=exp2 bash benchmarks/gpu_check.sh   # in two calls
#   DEVICE=cpu SMOKE=1 bash benchmarks/gpu_check.sh               # seconds: the script itself, on the CPU (tests)
set -uo pipefail
cd "$(dirname "$0")/.."
device="${DEVICE:-cuda}"
out="${OUT:-exp}/gpu_check"
mkdir -p "$out"
log="$out/summary.txt"
if [ -n "${SMOKE:-}" ]; then   # one tiny repetition of everything, compile with the eager backend: the plumbing only
    bench_flags=(--reps 1 --steps 1 --shapes har --batch_size 8 --eval_series 32 --compile_backend eager)
    profile_flags=(--steps 1 --warmup 1 --batch_size 8)
    epochs=1
    run_flags=(--min_pretrain_steps 0 --compile_backend eager)
else
    bench_flags=(--reps 7 --steps 10 --eval_series 16384)
    profile_flags=()
    epochs=100
    run_flags=()
fi
if [ "$device" = cuda ]; then
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA GPU visible to torch')" \
        || exit 1
    gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)
else
    gpu="no GPU: --device $device"
fi
{ date -u; echo "$gpu"; git rev-parse --short HEAD 2>/dev/null || echo "(not a git checkout)"; } > "$log"
failed=0

measure() {  # name, command...: run it, log its output to $out/name.log, record a failure and go on
    "${@:2}" > "$out/$1.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "$1: FAILED (exit $rc; see $out/$1.log)" >> "$log"
        failed=$((failed + 1))
        return 1
    fi
}

parts=" ${PARTS:-bench runs} "
bench() {  # name, extra flags
    measure "$1" python benchmarks/throughput.py --device "$device" "${bench_flags[@]}" --out "$out/$1.csv" "${@:2}" \
        && sed -n '/^ *device/,$p' "$out/$1.log" >> "$log"
}
if [[ $parts == *" bench "* ]]; then
    bench fp32
    bench amp --amp
    bench compile --compile --warmup 5
    bench compile_amp --compile --amp --warmup 5
    bench cudagraphs --compile --compile_mode reduce-overhead --warmup 5
    bench variable --variable_lengths
    python - "$out" >> "$log" <<'EOF'
import os, sys, pandas as pd
for name in ("fp32", "amp", "compile", "compile_amp", "cudagraphs", "variable"):
    path = f"{sys.argv[1]}/{name}.csv"
    if not os.path.isfile(path):
        continue
    t = pd.read_csv(path)
    har = t[(t["shape"] == "har") & (t["task"] == "pretrain")].iloc[0]
    print(f"{name}: HAR-shaped pretraining epoch of 8823 series {8823 / har['series_per_s']:.2f} s (target < 1 s), "
          f"{har['of_matmul']:.2f} of a same-FLOP matmul, {har['syncs_per_step']:g} host syncs per step")
EOF
    measure profile_har python benchmarks/profile_step.py --device "$device" --shape har --wave_length 8 --top 15 \
        "${profile_flags[@]}" && cp "$out/profile_har.log" "$out/profile_har.md" \
        && { echo "profile of the HAR step:"; cat "$out/profile_har.md"; } >> "$log"
fi

if [[ $parts == *" runs "* && ! -f "${TIMEMAE_DATA:-data}/Epilepsy/train.pt" ]]; then
    echo "Epilepsy not found under \${TIMEMAE_DATA:-data}: full-run timing skipped" >> "$log"
elif [[ $parts == *" runs "* ]]; then
    for flags in "" "--amp" "--compile" "--compile --compile_mode reduce-overhead"; do
        name="epilepsy${epochs}${flags// /}"
        start=$(date +%s.%N)
        measure "$name" python main.py --dataset epilepsy $(python -m experiments.presets epilepsy) \
            --num_epoch_pretrain "$epochs" --num_epoch 0 --device "$device" --no_progress --overwrite \
            --save_path "$out/$name" "${run_flags[@]}" $flags || continue
        echo "$name: $(python -c "print(f'{$(date +%s.%N) - $start:.1f}')") s wall (target < 120 s);" \
            "metrics: $(python -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))" \
                        "$out/$name/metrics.json")" >> "$log"
    done
fi
echo "failed measurements: $failed" >> "$log"
cat "$log"
exit $((failed > 0))
