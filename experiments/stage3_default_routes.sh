#!/usr/bin/env bash
# Two routes tried for "stage 3 teaches the reranker within 20 more CPU minutes of the default
# instruct checkpoint" (docs/lab_notebook.md), after `python train.py` (runs/default):
#   joint:  the paper's stage 3 (generator trained too) from a zero-init theta_qr, lr 3e-4,
#           220 steps (about 14 min here), then eval.py with the zero-init start as "before";
#   stage2: 100 more stage-2 steps at k = 5 (about 12 min), then the generator's own ranking
#           (stage3_probe.py counterfactual), the most a label-free stage 3 could teach.
# and, to see where the generator's own ranking comes from (needs runs/budget60 too):
#   stage1: the 60-minute run's stage-1 checkpoint (420 steps) + the default's 40 stage-2 steps,
#           then the same counterfactual probe (about 8 min).
#   bash experiments/stage3_default_routes.sh [joint] [stage2] [stage1]   # joint stage2 by default
# Writes runs/default_joint_scratch/, runs/default_more_s2/, runs/b60pretrain_s2_40/. Run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/default
for what in "${@:-joint stage2}"; do for w in $what; do case $w in
  joint)
    OUT=runs/default_joint_scratch
    python train.py --stage e2e --init $RUN/instruct --data $RUN/data --out $OUT --qr-init scratch \
      --steps 0 0 220 --lr 0 0 3e-4 --log-every 40
    python eval.py --ckpt $OUT/e2e --before $RUN/instruct --data $RUN/data/e2e_heldout.jsonl \
      --out $OUT/results.json ;;
  stage2)
    OUT=runs/default_more_s2
    python train.py --stage instruct --init $RUN/instruct --data $RUN/data --out $OUT \
      --steps 0 100 0 --instruct-k-start 5 --log-every 25
    python experiments/stage3_probe.py counterfactual --rows 40 --init $OUT/instruct --data $RUN/data ;;
  stage1)
    OUT=runs/b60pretrain_s2_40
    python train.py --stage instruct --init runs/budget60/pretrain --data $RUN/data --out $OUT --steps 0 40 0
    python experiments/stage3_probe.py counterfactual --rows 40 --init $OUT/instruct --data $RUN/data ;;
  *) echo "usage: stage3_default_routes.sh [joint] [stage2] [stage1]" >&2; exit 2 ;;
esac; done; done
