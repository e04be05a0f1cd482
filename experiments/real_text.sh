#!/usr/bin/env bash
# Issue 5, item 3: stages 1-2 on real Wikipedia text (the official SCP sample, passages 1-700),
# then closed-book vs text vs compressed on the first question of passages 701-800.
# Usage: bash experiments/real_text.sh [path to scp_sample_800.jsonl]   (about 15 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data/scp_sample_800.jsonl}
OUT=${OUT:-runs/real}
NORM=${MEMORY_NORM:-standardize}   # MEMORY_NORM=rescale reproduces the figures measured before session 3
python experiments/real_text.py --input "$SRC" --out $OUT/data
python train.py --stage pretrain --data pretrain=$OUT/data/pretrain.jsonl --steps 60 1 1 --memory-norm $NORM --out $OUT
python train.py --stage instruct --init $OUT/pretrain --data instruct=$OUT/data/instruct.jsonl \
    --instruct-k 1 --steps 1 30 1 --batch-size 4 8 8 --memory-norm $NORM --out $OUT
python eval.py --ckpt $OUT/instruct --data $OUT/data/eval.jsonl --k 1 \
    --settings closed-book text-rag compressed --out $OUT/results.json
