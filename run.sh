#!/usr/bin/env bash
# Pretrain + FineLast + FineAll with the per-dataset preset, over several seeds, then mean ± std.
#   bash run.sh <har|epilepsy|uwave|ps|ad> [runs=3] [extra main.py flags, e.g. --data_path DIR --overwrite]
# Results: $EXP_DIR/<dataset>/seed<k>/ (linear_result.txt, result.txt, metrics.json, ...) and
#          $EXP_DIR/<dataset>/summary.csv, with EXP_DIR=exp unless set. Later flags override the preset.
set -euo pipefail
cd "$(dirname "$0")"

dataset=${1:-}
runs=${2:-3}
if [ $# -ge 2 ]; then shift 2; elif [ $# -ge 1 ]; then shift 1; fi

# wave length, codebook size, MRR weight alpha, MCC weight beta, pretraining and fine-tuning epochs
case "$dataset" in
  har)      preset=(--wave_length 8  --vocab_size 192 --alpha 5.0 --beta 1.0 --num_epoch_pretrain 100 --num_epoch 100) ;;
  epilepsy) preset=(--wave_length 16 --vocab_size 192 --alpha 5.0 --beta 1.0 --num_epoch_pretrain 100 --num_epoch 20) ;;
  uwave)    preset=(--wave_length 16 --vocab_size 192 --alpha 5.0 --beta 1.0 --num_epoch_pretrain 100 --num_epoch 100) ;;
  ps)       preset=(--wave_length 8  --vocab_size 192 --alpha 5.0 --beta 1.0 --num_epoch_pretrain 100 --num_epoch 100) ;;
  ad)       preset=(--wave_length 4  --vocab_size 192 --alpha 5.0 --beta 1.0 --num_epoch_pretrain 100 --num_epoch 100) ;;
  *) echo "usage: bash run.sh <har|epilepsy|uwave|ps|ad> [runs] [extra main.py flags]" >&2; exit 2 ;;
esac
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then echo "error: runs must be a positive integer, got '$runs'" >&2; exit 2; fi

exp_dir=${EXP_DIR:-exp}
for seed in $(seq 1 "$runs"); do
  echo "== $dataset run $seed/$runs (seed $seed)"
  python main.py --dataset "$dataset" "${preset[@]}" --seed "$seed" --save_path "$exp_dir/$dataset/seed$seed" "$@"
done
python summarize.py "$exp_dir/$dataset" --out "$exp_dir/$dataset/summary.csv"
