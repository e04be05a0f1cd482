#!/usr/bin/env bash
# Stage 3 from a zero-init theta_qr (train.py --qr-init scratch, lr 3e-4) on the instruct checkpoint
# of an existing run, with the generator frozen (the default) or trained too ("joint", the paper's
# stage 3 otherwise), then eval.py on its 200 held-out questions ("before" = the zero-init start).
# Behind the README's label-free reranking rows:
#   bash experiments/stage3_scratch.sh runs/default 300         # frozen; 15 min of training here
#   bash experiments/stage3_scratch.sh runs/default 220 joint   # 13-14 min
#   bash experiments/stage3_scratch.sh runs/budget60 360        # after train.py --budget 60; 18 min
# Writes <RUN>_frozen/ or <RUN>_joint/. Run it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: stage3_scratch.sh RUN_DIR STEPS [frozen|joint]"
RUN=${1:?$usage}
STEPS=${2:?$usage}
MODE=${3:-frozen}
case $MODE in
  frozen) FREEZE=--freeze-generator ;;
  joint) FREEZE= ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
OUT=${RUN%/}_$MODE
python train.py --stage e2e --init "$RUN/instruct" --data "$RUN/data" --out "$OUT" --qr-init scratch \
  $FREEZE --steps 0 0 "$STEPS" --lr 0 0 3e-4 --log-every 40
python eval.py --ckpt "$OUT/e2e" --before "$RUN/instruct" --data "$RUN/data/e2e_heldout.jsonl" \
  --out "$OUT/results.json"
