#!/usr/bin/env bash
# What raises the generator's own ranking (stage3_probe.py counterfactual: each candidate alone,
# lowest answer CE), the most a label-free stage 3 can teach (docs/lab_notebook.md):
#   stage2: the default run's instruct checkpoint + 100 more stage-2 steps at k = 5 (12-13 min);
#   stage1: the 60-minute run's stage-1 checkpoint (420 steps) + the default's 40 stage-2 steps
#           (about 4 min; needs runs/budget60);
#   k1:     the default run's instruct checkpoint + 60 more stage-2 steps at k = 1, the gold passage
#           alone (6 min in float32; the first step of stage3_k1.sh).
#   bash experiments/generator_ranking.sh [stage2] [stage1] [k1]    # stage2 stage1 by default; run alone
# Writes runs/default_more_s2/, runs/b60pretrain_s2_40/ and runs/default_k1/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- stage2 stage1
for what in "$@"; do
  case $what in
    stage2) OUT=runs/default_more_s2
      python train.py --stage instruct --init runs/default/instruct --data runs/default/data --out $OUT \
        --steps 0 100 0 --instruct-k-start 5 --log-every 25 ;;
    stage1) OUT=runs/b60pretrain_s2_40
      python train.py --stage instruct --init runs/budget60/pretrain --data runs/default/data --out $OUT \
        --steps 0 40 0 ;;
    k1) OUT=runs/default_k1
      python train.py --stage instruct --init runs/default/instruct --data runs/default/data --out $OUT \
        --steps 0 60 0 --instruct-k 1 --instruct-k-start 1 --log-every 20 ;;
    *) echo "usage: generator_ranking.sh [stage2] [stage1] [k1]" >&2; exit 2 ;;
  esac
  python experiments/stage3_probe.py counterfactual --rows 40 --init $OUT/instruct --data runs/default/data
done
