#!/usr/bin/env bash
# Does the answer loss alone teach the query reasoner? The stage-3 routes of docs/results.md
# ("Reranking"), one ROUTE per row; each ends by printing its table (eval.py's report, or the
# generator's own ranking from experiments/stage3_probe.py counterfactual). Run each alone.
#
#   bash experiments/reranking.sh scratch RUN STEPS [frozen|joint]
#       stage 3 from a zero-init theta_qr (lr 3e-4) on RUN's instruct checkpoint, the generator
#       frozen (default) or trained too, then eval.py ("before" = the zero-init start). Writes RUN_MODE/.
#         scratch runs/default 300 (15 min of training) | scratch runs/default 220 joint (13-14 min)
#         scratch runs/budget60 360 (after python train.py --budget 60; 18 min)
#   bash experiments/reranking.sh k1 RUN STEPS
#       60 more stage-2 steps at k = 1 (the gold passage alone; writes RUN_k1/), then stage 3 at
#       top-k 1 from a zero-init theta_qr, generator frozen, lr 3e-4 (writes RUN_k1_frozen/), then
#       eval.py's end-to-end and reranking rows.  k1 runs/default 300 (39 min of training, float32)
#   bash experiments/reranking.sh generator WHAT...
#       the generator's own ranking (each candidate alone, lowest answer CE; 40 questions) after:
#         default  the default run's instruct checkpoint, as it is
#         stage2   + 100 more stage-2 steps at k = 5 (12-13 min; runs/default_more_s2/)
#         stage1   the 60-minute run's stage-1 checkpoint + the default's 40 stage-2 steps
#                  (about 4 min; needs runs/budget60; runs/b60pretrain_s2_40/)
#         k1       + 60 more stage-2 steps at k = 1, the first step of the k1 route (runs/default_k1/)
#   bash experiments/reranking.sh variants
#       the default recipe in split commands, then stage 3 with labels (--rank-loss supervised,
#       not the paper), tau 1.0 and lr 1e-3 from the same instruct checkpoint (about 75 min);
#       prints the table of the four (experiments/ablation_table.py stage3).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: reranking.sh scratch RUN STEPS [frozen|joint] | k1 RUN STEPS | generator WHAT... | variants"
route=${1:?$usage}; shift

stage2_k1() {  # RUN -> RUN_k1/instruct: 60 more stage-2 steps reading the gold passage alone
  python train.py --stage instruct --init "$1/instruct" --data "$1/data" --out "$1_k1" \
    --steps 0 60 0 --instruct-k 1 --instruct-k-start 1 --log-every 20
}

stage3_scratch() {  # INIT OUT STEPS [train.py flags]: zero-init theta_qr, answer loss only, lr 3e-4
  local init=$1 out=$2 steps=$3; shift 3
  python train.py --stage e2e --init "$init" --data "$RUN/data" --out "$out" --qr-init scratch \
    --steps 0 0 "$steps" --lr 0 0 3e-4 --log-every 40 "$@"
}

counterfactual() {  # CHECKPOINT: the generator's own ranking on 40 held-out questions
  python experiments/stage3_probe.py counterfactual --rows 40 --init "$1" --data runs/default/data
}

case $route in
  scratch)
    RUN=${1:?$usage}; RUN=${RUN%/}; STEPS=${2:?$usage}; MODE=${3:-frozen}
    case $MODE in frozen) FREEZE=(--freeze-generator) ;; joint) FREEZE=() ;; *) echo "$usage" >&2; exit 2 ;; esac
    stage3_scratch "$RUN/instruct" "${RUN}_$MODE" "$STEPS" "${FREEZE[@]}"
    python eval.py --ckpt "${RUN}_$MODE/e2e" --before "$RUN/instruct" --data "$RUN/data/e2e_heldout.jsonl" \
      --out "${RUN}_$MODE/results.json" ;;
  k1)
    RUN=${1:?$usage}; RUN=${RUN%/}; STEPS=${2:?$usage}
    stage2_k1 "$RUN"
    stage3_scratch "${RUN}_k1/instruct" "${RUN}_k1_frozen" "$STEPS" --freeze-generator --top-k 1
    python eval.py --ckpt "${RUN}_k1_frozen/e2e" --before "${RUN}_k1/instruct" \
      --data "$RUN/data/e2e_heldout.jsonl" --settings end-to-end rerank --out "${RUN}_k1_frozen/results.json" ;;
  generator)
    [ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
    for what in "$@"; do
      case $what in
        default) counterfactual runs/default/instruct ;;
        stage2) python train.py --stage instruct --init runs/default/instruct --data runs/default/data \
                  --out runs/default_more_s2 --steps 0 100 0 --instruct-k-start 5 --log-every 25
                counterfactual runs/default_more_s2/instruct ;;
        stage1) python train.py --stage instruct --init runs/budget60/pretrain --data runs/default/data \
                  --out runs/b60pretrain_s2_40 --steps 0 40 0
                counterfactual runs/b60pretrain_s2_40/instruct ;;
        k1) stage2_k1 runs/default; counterfactual runs/default_k1/instruct ;;
        *) echo "$usage" >&2; exit 2 ;;
      esac
    done ;;
  variants)
    python train.py --stage pretrain --steps 150 0 0 --out runs/s1
    python train.py --stage instruct --init runs/s1/pretrain --steps 0 40 0 --out runs/expA
    python train.py --stage e2e --init runs/expA/instruct --steps 0 0 60 --out runs/expA
    python eval.py --ckpt runs/expA/e2e --limit 200 --out runs/expA/results.json
    for v in "sup --rank-loss supervised" "tau1 --temperature 1.0" "lr1e3 --lr 0 0 1e-3"; do
      set -- $v; name=$1; shift
      mkdir -p "runs/expB_$name"
      cp -r runs/expA/instruct runs/expA/data "runs/expB_$name/"   # eval.py's "before" is the sibling instruct/
      python train.py --stage e2e --init runs/expA/instruct --steps 0 0 60 --out "runs/expB_$name" "$@"
      python eval.py --ckpt "runs/expB_$name/e2e" --limit 200 --settings end-to-end rerank \
        --out "runs/expB_$name/results.json"
    done
    python experiments/ablation_table.py stage3 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
