#!/usr/bin/env bash
# Real text: stages 1-2 on the official SCP sample (800 rows of Wikipedia passages; passages 1-700
# train), then closed-book vs text vs compressed (and its shuffled control) on the first question of
# each of passages 701-800, never trained on (k = 1). Prints eval.py's table (docs/results.md, "Real text").
#   bash experiments/real_text.sh FILE            # the 16x row: about 23 min on 2 cores with AMX;
#                                                 # a mean-pooling row took 44 on 2 AMD EPYC cores (AVX2)
#   bash experiments/real_text.sh FILE rows       # then the 64x, 4x and no-MSE rows (about 20 min each)
#                                                 # and the table of all four (experiments/ablation_table.py real)
#   bash experiments/real_text.sh FILE meanpool 0 1   # per seed S: memory tokens (runs/real_seedS) and
#                                                 # mean pooling (runs/real_meanpool_seedS), then the paired
#                                                 # table (experiments/ablation_table.py meanpool 0 1)
#   NAME=real_x2 STEPS1=300 STEPS2=60 bash experiments/real_text.sh FILE meanpool 0 1   # a longer rung, twice
#                                                 # the steps of both stages, in runs/real_x2_seedS and
#                                                 # runs/real_x2_meanpool_seedS (NAME reaches the table too)
#   OUT=DIR bash experiments/real_text.sh FILE --seed 1 --compressor mean-pool   # one row, these train flags
# FILE is the official sample, scp_sample_800.jsonl. Run it alone. Writes runs/real/ (and runs/real_<row>/).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: real_text.sh FILE [rows | meanpool SEED... | TRAIN_FLAG...]"
SRC=${1:?$usage}
OUT=${OUT:-runs/real}
STEPS1=${STEPS1:-150}              # stage-1 steps (60 left the answer gap inside its interval)
STEPS2=${STEPS2:-30}               # stage-2 steps
MAX_PAIRS=${MAX_PAIRS:-6}          # QA pairs per stage-1 row (0: a passage's pairs in one target)
NORM=${MEMORY_NORM:-standardize}   # MEMORY_NORM=rescale reproduces the figures measured before the standardize fix

one_row() {  # OUT, then more train.py flags for both stages; run again, it continues an interrupted row
  local out=$1; shift
  python experiments/real_text.py --input "$SRC" --out "$out/data" --max-pairs "$MAX_PAIRS"
  python train.py --stage pretrain --data "pretrain=$out/data/pretrain.jsonl" --steps "$STEPS1" 1 1 \
      --memory-norm "$NORM" --out "$out" --resume "$@"
  python train.py --stage instruct --init "$out/pretrain" --data "instruct=$out/data/instruct.jsonl" \
      --instruct-k 1 --steps 1 "$STEPS2" 1 --batch-size 4 8 8 --memory-norm "$NORM" --out "$out" --resume "$@"
  python eval.py --ckpt "$out/instruct" --data "$out/data/eval.jsonl" --k 1 \
      --settings closed-book text-rag compressed --out "$out/results.json"
}

case ${2:-} in
  "") one_row "$OUT" ;;
  --*) shift; one_row "$OUT" "$@" ;;
  meanpool)
    shift 2; seeds=${*:-0 1}; export NAME=${NAME:-real}
    for s in $seeds; do  # a finished row (its results.json) is not run again
      [ -f "runs/${NAME}_seed$s/results.json" ] || one_row "runs/${NAME}_seed$s" --seed "$s"
      [ -f "runs/${NAME}_meanpool_seed$s/results.json" ] || \
        one_row "runs/${NAME}_meanpool_seed$s" --seed "$s" --compressor mean-pool
    done
    python experiments/ablation_table.py meanpool $seeds ;;
  rows)
    [ -f runs/real/results.json ] || one_row runs/real
    for row in "rate64 --compression-rate 64" "rate4 --compression-rate 4" "nomse --mse-weight 0"; do
      set -- $row; name=$1; shift
      one_row "runs/real_$name" "$@"
    done
    python experiments/ablation_table.py real ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
