#!/usr/bin/env bash
# Stage 3 variants behind docs/lab_notebook.md "Does the answer loss teach the reranker?".
# The default recipe in split commands (stage 1 -> stage 2 -> stage 3, the same steps and seeds as
# `python train.py`), then three stage-3 variants from the same instruct checkpoint, each evaluated
# on the 200 default held-out questions. About 75 minutes on a 2-core CPU; run it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
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
