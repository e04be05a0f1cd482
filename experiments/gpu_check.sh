#!/usr/bin/env bash
# The run sheet for one CUDA GPU, from a fresh clone (docs/results.md, "One GPU"):
#   tests     the test suite (python -m pytest -q -x), as CI runs it
#   tiny      a short train + eval of the tiny random backbone: the CUDA path end to end, in about a minute
#   budget120 the budget-120 recipe of SmolLM2-135M with GPU-sized batches, then eval.py's results table
# Prints step times per stage (ms_per_step of runs/*/metrics.jsonl, training only), the peak GPU memory
# in use (nvidia-smi sampled every 0.5 s over each part: the whole device, so other processes count
# too; torch's max_memory_allocated is per process and train.py does not log it) and eval.py's table.
#   bash experiments/gpu_check.sh                    # all three parts
#   bash experiments/gpu_check.sh tiny budget120     # some of them
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "gpu_check.sh: torch sees no CUDA device (torch.cuda.is_available() is False), and this script" \
       "measures one; on a CPU run python train.py && python eval.py instead" >&2
  exit 1
fi
[ $# -gt 0 ] || set -- tests tiny budget120
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

SAMPLES=$(mktemp)
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$SAMPLES" &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null; rm -f "$SAMPLES"' EXIT

peak() {  # the largest memory.used sampled since the last call, MiB
  sort -n "$SAMPLES" | tail -1 | xargs printf "peak GPU memory in use during %s: %s MiB\n" "$1"
  : > "$SAMPLES"
}

step_times() {  # RUN: ms_per_step per stage from its metrics.jsonl (min / median / max over logged intervals)
  python - "$1/metrics.jsonl" <<'PY'
import json, statistics, sys
recs = [json.loads(line) for line in open(sys.argv[1])]
for stage in ("pretrain", "instruct", "e2e"):
    ms = [r["ms_per_step"] for r in recs if r.get("stage") == stage and "ms_per_step" in r]
    if ms:
        print(f"{stage:9s} ms/step min {min(ms):7.0f}  median {statistics.median(ms):7.0f}  max {max(ms):7.0f}"
              f"  ({len(ms)} logged intervals)")
PY
}

for part in "$@"; do
  case $part in
    tests)
      python -m pytest -q -x
      peak tests ;;
    tiny)
      python train.py --backbone tiny --steps 20 20 20 --batch-size 8 8 8 --eval-rows 4 --log-every 5 \
        --out runs/gpu_tiny
      python eval.py --ckpt runs/gpu_tiny/e2e --limit 16 --out runs/gpu_tiny/results.json
      step_times runs/gpu_tiny
      peak tiny ;;
    budget120)
      # train.py --budget 120 is 840 / 240 / 300 steps at --batch-size 4 4 8: 3360 / 960 / 2400 rows.
      # At 32 rows a step the same rows take 105 / 30 / 75 steps. Learning rates and warm-up stay the
      # defaults, so this is the same data seen, not the same optimisation: compare its table with
      # docs/results.md's 131-minute column as a check of the GPU path, not as a repeat.
      python train.py --steps 105 30 75 --batch-size 32 32 32 --log-every 5 --out runs/gpu_budget120
      python eval.py --ckpt runs/gpu_budget120/e2e --out runs/gpu_budget120/results.json
      step_times runs/gpu_budget120
      peak budget120 ;;
    *) echo "usage: gpu_check.sh [tests] [tiny] [budget120]" >&2; exit 2 ;;
  esac
done
