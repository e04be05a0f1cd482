#!/usr/bin/env bash
# Are the paper's memory tokens needed? The default recipe with memory tokens against the same recipe
# with train.py --compressor mean-pool (Feldman and Artzi 2025, arXiv 2510.20797: the l vectors are
# means of l windows of the passage's own states, no memory tokens, no MSE term), both at 16x, on the
# same seeds; then seeds.py's table for each: compressed vs its shuffled control vs text RAG, per seed,
# with paired intervals, mean and seed spread, and mean pooling minus memory tokens on the same questions.
#   bash experiments/meanpool.sh                  # seeds 0 1, the 20-minute recipe (4 runs of train + text reference + eval)
#   bash experiments/meanpool.sh --longer 0 1 2   # also the budget-60 rung (train.py --budget 60)
#   BUDGETS=60 bash experiments/meanpool.sh --compression-only 1   # that rung's compression claim alone
# --compression-only (seeds.py's): stages 1-2 and the compressed setting with its shuffled control, no
# text reference or stage 3; --compression-only --text-reference adds the same-budget text reference,
# scored on the same stage-2 checkpoints. BUDGETS replaces the list of budgets.
#   BUDGETS=60 bash experiments/meanpool.sh --compression-only --text-reference 0 1
# Memory tokens: runs/budget<B>_seedS (seeds.py's own runs of the default recipe, shared with it);
# mean pooling: runs/meanpool_seedS (budget 20) and runs/meanpool_budget60_seedS. A seed whose
# results.json exists is not re-run. Run it alone. TRAIN_ARGS / EVAL_ARGS add flags to every train.py /
# eval.py call, RUNS moves the run directories: a check of the script itself in a few minutes is
#   RUNS=/tmp/mp EVAL_ARGS="--limit 4 --latency-questions 2" TRAIN_ARGS="--backbone tiny --steps 2 2 2
#     --batch-size 2 2 2 --limit 12 --eval-rows 4 --doc-max-len 48 --n-candidates 6 --top-k 2
#     --instruct-k 2" bash experiments/meanpool.sh     (TRAIN_ARGS on one line; --steps replaces --budget)
set -euo pipefail
cd "$(dirname "$0")/.."
budgets=(${BUDGETS:-20})
if [ "${1:-}" = --longer ]; then budgets+=(60); shift; fi
only=()
if [ "${1:-}" = --compression-only ]; then only=(--compression-only); shift; fi
if [ "${1:-}" = --text-reference ]; then only+=(--text-reference); shift; fi
seeds=("${@:-0 1}")
seeds=(${seeds[*]})
common=(--seeds "${seeds[@]}" --runs "${RUNS:-runs}" --eval-args="${EVAL_ARGS:-}" "${only[@]}")
name() {  # the run name of budget $1 and compressor $2 (the default recipe's own for memory tokens)
  if [ "$2" = memory-tokens ]; then echo "budget$1"; elif [ "$1" = 20 ]; then echo meanpool
  else echo "meanpool_budget$1"; fi
}
for b in "${budgets[@]}"; do
  for c in memory-tokens mean-pool; do
    python experiments/seeds.py "${common[@]}" --budget "$b" --name "$(name "$b" "$c")" \
        --train-args="--compressor $c ${TRAIN_ARGS:-}"
  done
done
echo; echo "=== memory tokens vs mean pooling, 16x (compression_rate 16): the tables again, side by side ==="
for b in "${budgets[@]}"; do
  python experiments/seeds.py "${common[@]}" --budget "$b" --name "$(name "$b" memory-tokens)" --table-only
  python experiments/seeds.py "${common[@]}" --budget "$b" --name "$(name "$b" mean-pool)" --table-only \
      --versus "$(name "$b" memory-tokens)"   # mean pooling - memory tokens, question by question
done
