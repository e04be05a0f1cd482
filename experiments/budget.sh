#!/usr/bin/env bash
# What more training buys (docs/results.md): the default recipe at about 20, 60 and 120 minutes
# of a 2-core CPU (train.py --budget, which scales every stage's steps), each followed by the
# default evaluation (its report holds the intervals); then the plot, docs/budget.png, and one line
# per run with its EM and MRR (budget_plot.py). `python train.py` is `--budget 20`.
# Usage: bash experiments/budget.sh [20 60 120]   (run alone)
set -euo pipefail
cd "$(dirname "$0")/.."
for B in "${@:-20 60 120}"; do
  for b in $B; do
    start=$SECONDS
    python train.py --budget "$b" --out "runs/budget$b"
    echo $(( SECONDS - start )) > "runs/budget$b/train_seconds"
    python eval.py --ckpt "runs/budget$b/e2e" --out "runs/budget$b/results.json"
  done
done
# only the budget runs themselves (runs/budget60_frozen/ from reranking.sh scratch is not one)
runs=(); for d in runs/budget*/; do [[ $(basename "$d") =~ ^budget[0-9]+$ ]] && runs+=("$d"); done
python experiments/budget_plot.py "${runs[@]}" --out docs/budget.png
