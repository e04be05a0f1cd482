#!/usr/bin/env bash
# The paper's small-scale ablations on the embedded corpus, short enough for a
# 2-core CPU. Needs the default run first (python train.py): the reranker rows start stage 3 from
# its instruct checkpoint, as the default run's own stage 3 did (the baseline row).
# Usage: bash experiments/ablations.sh [reranker|compression]      (reranker 13.5 min, compression 14 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-runs/default}
A=${A:-runs/ablate}
NORM=${MEMORY_NORM:-standardize}   # MEMORY_NORM=rescale D=<a run of: python train.py --memory-norm rescale
#                                    --steps 100 20 40> reproduces the figures measured before the standardize fix
HELD=$D/data/e2e_heldout.jsonl
what=${1:-all}
if [ "$what" = all ] || [ "$what" = reranker ]; then
  # top-k temperature, Gumbel noise, query-reasoner start (paper Table 14): stage 3 only, the default 60 x 8
  for row in "tau1 --temperature 1.0" "gumbel --gumbel" "scratch --qr-init scratch"; do
    set -- $row; name=$1; shift
    python train.py --stage e2e --init $D/instruct --data $D/data --memory-norm $NORM --out $A/$name "$@"
    python eval.py --ckpt $A/$name/e2e --before $D/instruct --data $HELD --settings rerank \
        --out $A/$name/results.json
  done
fi
if [ "$what" = all ] || [ "$what" = compression ]; then
  # compression rate 4 / 16 / 64 and the MSE term off: stage 1 only, 30 x 4 steps, then compressed
  # answers (and the shuffled control) on 50 held-out questions
  for row in "rate4 --compression-rate 4" "rate16 --compression-rate 16" "rate64 --compression-rate 64" \
             "nomse --mse-weight 0"; do
    set -- $row; name=$1; shift
    python train.py --stage pretrain --data $D/data --steps 30 1 1 --memory-norm $NORM --out $A/$name "$@"
    python eval.py --ckpt $A/$name/pretrain --data $HELD --limit 50 --settings compressed \
        --out $A/$name/results.json
  done
fi
