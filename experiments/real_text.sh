#!/usr/bin/env bash
# Stages 1-2 on real Wikipedia text (the official SCP sample, passages 1-700),
# then closed-book vs text vs compressed on the first question of passages 701-800.
# Usage: bash experiments/real_text.sh [path to scp_sample_800.jsonl]   (about 23 min on 2 CPU cores)
# The compression rows: bash experiments/real_text_ablation.sh [path]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data/scp_sample_800.jsonl}
OUT=${OUT:-runs/real}
STEPS1=${STEPS1:-150}              # stage-1 steps (60 left the answer gap inside its interval)
MAX_PAIRS=${MAX_PAIRS:-6}          # QA pairs per stage-1 row (0: a passage's pairs in one target)
NORM=${MEMORY_NORM:-standardize}   # MEMORY_NORM=rescale reproduces the figures measured before the standardize fix
EXTRA=${TRAIN_ARGS:-}              # more train.py flags for both stages, e.g. TRAIN_ARGS="--compression-rate 4"
python experiments/real_text.py --input "$SRC" --out $OUT/data --max-pairs $MAX_PAIRS
python train.py --stage pretrain --data pretrain=$OUT/data/pretrain.jsonl --steps $STEPS1 1 1 --memory-norm $NORM --out $OUT $EXTRA
python train.py --stage instruct --init $OUT/pretrain --data instruct=$OUT/data/instruct.jsonl \
    --instruct-k 1 --steps 1 30 1 --batch-size 4 8 8 --memory-norm $NORM --out $OUT $EXTRA
python eval.py --ckpt $OUT/instruct --data $OUT/data/eval.jsonl --k 1 \
    --settings closed-book text-rag compressed --out $OUT/results.json
