#!/usr/bin/env bash
# Stage 3 with the generator frozen and theta_qr from zero (train.py --freeze-generator --qr-init
# scratch, lr 3e-4), from the instruct checkpoint of an existing run, then eval.py on its 200
# held-out questions ("before" = the zero-init start). Behind the README's label-free reranking rows:
#   bash experiments/stage3_frozen.sh runs/default 300    # 15 min of training on a 2-core CPU
#   bash experiments/stage3_frozen.sh runs/budget60 360   # after train.py --budget 60; 18 min
# Writes <RUN>_frozen/. Run it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: stage3_frozen.sh RUN_DIR STEPS}
STEPS=${2:?usage: stage3_frozen.sh RUN_DIR STEPS}
OUT=${RUN%/}_frozen
python train.py --stage e2e --init "$RUN/instruct" --data "$RUN/data" --out "$OUT" --qr-init scratch \
  --freeze-generator --steps 0 0 "$STEPS" --lr 0 0 3e-4 --log-every 40
python eval.py --ckpt "$OUT/e2e" --before "$RUN/instruct" --data "$RUN/data/e2e_heldout.jsonl" \
  --out "$OUT/results.json"
