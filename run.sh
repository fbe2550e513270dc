#!/usr/bin/env bash
# Pretrain + FineLast + FineAll with the per-dataset preset, over several seeds, then mean ± std.
#   bash run.sh <har|epilepsy|uwave|ps|ad> [runs=3] [extra main.py flags, e.g. --data_path DIR --overwrite]
#   bash run.sh ucr [runs=3] --UCR_folder <Name> [...]   (window length from the series length: experiments/presets.py)
# Results: $EXP_DIR/<dataset>/seed<k>/ (linear_result.txt, result.txt, metrics.json, ...) and
#          $EXP_DIR/<dataset>/summary.csv, with EXP_DIR=exp unless set. Later flags override the preset.
# A missing data folder (--data_path, else $TIMEMAE_DATA/<Name> or data/<Name>) is first prepared with
# `python -m data.prepare <dataset> --download` (checksummed; from $TIMEMAE_MIRROR when set).
set -euo pipefail
cd "$(dirname "$0")"

dataset=${1:-}
runs=${2:-3}
if [ $# -ge 2 ]; then shift 2; elif [ $# -ge 1 ]; then shift 1; fi

# the preset (window length, codebook size, MRR/MCC weights, epochs) lives in experiments/presets.py, shared with experiments/
preset_line=$(python -m experiments.presets "$dataset" "$@") || exit 2
read -ra preset <<< "$preset_line"
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then echo "error: runs must be a positive integer, got '$runs'" >&2; exit 2; fi

# the data folder the runs will read: the last --data_path among the extra flags, else the default one
data_path=""
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --data_path) data_path=${args[$((i + 1))]:-} ;;
    --data_path=*) data_path=${args[$i]#--data_path=} ;;
  esac
done
python -m data.prepare "$dataset" --download --if-missing ${data_path:+--out "$data_path"} || exit 2

exp_dir=${EXP_DIR:-exp}
for seed in $(seq 1 "$runs"); do
  echo "== $dataset run $seed/$runs (seed $seed)"
  python main.py --dataset "$dataset" "${preset[@]}" --seed "$seed" --save_path "$exp_dir/$dataset/seed$seed" "$@"
done
python -m tools.summarize "$exp_dir/$dataset" --out "$exp_dir/$dataset/summary.csv"
