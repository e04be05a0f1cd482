#!/usr/bin/env bash
# Stage 3 after a generator that reads one passage: from an existing run's instruct checkpoint,
#   1. 60 more stage-2 steps at k = 1 (the gold passage alone, `--instruct-k 1`), so that the
#      generator's answer CE tells the gold from a distractor (stage3_probe.py counterfactual);
#   2. stage 3 at top-k 1 from a zero-init theta_qr, generator frozen, lr 3e-4, answer loss only;
#   3. eval.py's reranking and end-to-end rows on the 200 held-out questions ("before" = the
#      zero-init start).
#   bash experiments/stage3_k1.sh runs/default 300    # after python train.py; run it alone
# (docs/lab_notebook.md's figures: runs/default from the same recipe in split commands, as there).
# Writes <RUN>_k1/ (stage 2) and <RUN>_k1_frozen/ (stage 3 and results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: stage3_k1.sh RUN_DIR STEPS"
RUN=${1:?$usage}
STEPS=${2:?$usage}
RUN=${RUN%/}
python train.py --stage instruct --init "$RUN/instruct" --data "$RUN/data" --out "${RUN}_k1" \
  --steps 0 60 0 --instruct-k 1 --instruct-k-start 1 --log-every 20
python train.py --stage e2e --init "${RUN}_k1/instruct" --data "$RUN/data" --out "${RUN}_k1_frozen" \
  --qr-init scratch --freeze-generator --top-k 1 --steps 0 0 "$STEPS" --lr 0 0 3e-4 --log-every 40
python eval.py --ckpt "${RUN}_k1_frozen/e2e" --before "${RUN}_k1/instruct" --data "$RUN/data/e2e_heldout.jsonl" \
  --settings end-to-end rerank --out "${RUN}_k1_frozen/results.json"
