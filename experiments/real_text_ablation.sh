#!/usr/bin/env bash
# The compression ablation rows on real text: experiments/real_text.sh (150 stage-1 steps, 30
# stage-2 steps, k = 1, 100 unseen passages) with one setting changed per row; the 16x row with MSE
# is real_text.sh itself (runs/real). About 25 min a row on 2 CPU cores; run it alone.
# Usage: bash experiments/real_text_ablation.sh [path to scp_sample_800.jsonl]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data/scp_sample_800.jsonl}
for row in "rate64 --compression-rate 64" "rate4 --compression-rate 4" "nomse --mse-weight 0"; do
  set -- $row; name=$1; shift
  start=$(date +%s)
  OUT=runs/real_$name TRAIN_ARGS="$*" bash experiments/real_text.sh "$SRC"
  echo $(( $(date +%s) - start )) > runs/real_$name/total_seconds
done
