#!/usr/bin/env bash
# Pretrain + FineLast + FineAll with the per-dataset preset, over several seeds, then mean ± std.
#   bash run.sh <har|epilepsy|uwave|ps|ad> [runs=3] [extra main.py flags, e.g. --data_path DIR --overwrite]
#   bash run.sh ucr [runs=3] --UCR_folder <Name> [...]   (window length from the series length: experiments/presets.py)
# Results: $EXP_DIR/<dataset>/seed<k>/ (linear_result.txt, result.txt, metrics.json, ...) and
#          $EXP_DIR/<dataset>/summary.csv and summary.png (these runs' accuracies beside the raw baselines), with
#          EXP_DIR=exp unless set; for ucr <dataset> is the --UCR_folder name. Later flags override the preset;
#          --seed and --save_path are run.sh's own (seed 1 to runs, the folder above) and refused among them.
# A missing data folder (--data_path, else $TIMEMAE_DATA/<Name> or data/<Name>) is first prepared with
# `python -m data.prepare <dataset> --download` (checksummed; from $TIMEMAE_MIRROR when set).
# Relative paths (--data_path, --pretrained_path, --bert_path, EXP_DIR, TIMEMAE_DATA) are read from the folder
# run.sh is called from; the defaults (exp, data/<Name>) are the repository's.
set -euo pipefail

# the runs start in the repository: the caller's relative paths are made absolute first
caller=$PWD
absolute() { if [[ -n $1 && $1 != /* ]]; then printf '%s' "$caller/$1"; else printf '%s' "$1"; fi; }
if [[ -n ${EXP_DIR:-} ]]; then EXP_DIR=$(absolute "$EXP_DIR"); fi
if [[ -n ${TIMEMAE_DATA:-} ]]; then TIMEMAE_DATA=$(absolute "$TIMEMAE_DATA"); export TIMEMAE_DATA; fi
args=()
previous=""
for arg in "$@"; do
  case $previous in --data_path|--pretrained_path|--bert_path) arg=$(absolute "$arg") ;; esac
  case $arg in --data_path=*|--pretrained_path=*|--bert_path=*) arg=${arg%%=*}=$(absolute "${arg#*=}") ;; esac
  args+=("$arg")
  previous=$arg
done
set -- ${args[@]+"${args[@]}"}
cd "$(dirname "$0")"

dataset=${1:-}
if [ $# -ge 1 ]; then shift; fi
runs=3   # the run count is optional: a flag right after the dataset starts the extra flags
if [ $# -ge 1 ] && [[ "$1" != --* ]]; then runs=$1; shift; fi

# the preset (window length, codebook size, MRR/MCC weights, epochs) lives in experiments/presets.py, shared with
# experiments/
preset_line=$(python -m experiments.presets "$dataset" "$@") || exit 2
read -ra preset <<< "$preset_line"
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then echo "error: runs must be a positive integer, got '$runs'" >&2; exit 2; fi
again=""   # --resume or --overwrite among the extra flags: runs already in the seed folders may go on
for arg in "$@"; do   # main.py reads a flag's unambiguous prefix as the flag: --see 7 is --seed 7
  flag=${arg%%=*}
  if [[ $flag == --see* && --seed == "$flag"* ]] || [[ $flag == --sa* && --save_path == "$flag"* ]]; then
    echo "error: run.sh sets --seed (1 to runs) and --save_path (\$EXP_DIR/<dataset>/seed<k>) of each run; drop" \
      "$arg from the extra flags" >&2
    exit 2
  fi
  if [[ $flag == --res* && --resume == "$flag"* ]] || [[ $flag == --ov* && --overwrite == "$flag"* ]]; then again=1; fi
done

# the data the runs will read: the last --data_path and --UCR_folder among the extra flags, else the defaults
data_path=""
ucr_folder=""
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    --data_path) data_path=${args[$((i + 1))]:-} ;;
    --data_path=*) data_path=${args[$i]#--data_path=} ;;
    --UCR_folder) ucr_folder=${args[$((i + 1))]:-} ;;
    --UCR_folder=*) ucr_folder=${args[$i]#--UCR_folder=} ;;
  esac
done
python -m data.prepare "$dataset" --download --if-missing ${data_path:+--data_path "$data_path"} \
  ${ucr_folder:+--UCR_folder "$ucr_folder"} || exit 2

exp_dir=${EXP_DIR:-exp}
name=$dataset
if [ "$dataset" = ucr ]; then name=$ucr_folder; fi   # each UCR/UEA set in its own folder
# a run already in a seed folder: main.py would refuse it and point to --save_path, which run.sh sets itself
for seed in $(seq 1 "$runs"); do
  if [ -z "$again" ] && [ -e "$exp_dir/$name/seed$seed/args.json" ]; then
    echo "error: $exp_dir/$name/seed$seed holds a run: pass --resume to continue the runs, --overwrite to replace" \
      "them, or set EXP_DIR to run into another folder" >&2
    exit 2
  fi
done
folders=()
for seed in $(seq 1 "$runs"); do
  echo "== $name run $seed/$runs (seed $seed)"
  python main.py --dataset "$dataset" "${preset[@]}" --seed "$seed" --save_path "$exp_dir/$name/seed$seed" "$@"
  folders+=("$exp_dir/$name/seed$seed")
done
# these runs only: an earlier invocation with more runs left seed folders beyond them
python -m tools.summarize "${folders[@]}" --out "$exp_dir/$name/summary.csv" --plot "$exp_dir/$name/summary.png"
