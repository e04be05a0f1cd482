#!/usr/bin/env bash
# The same-budget text-RAG reference of a run, the fair opponent of its compressed answers
# (eval.py --text-reference): stage 2 again from RUN's stage-1 checkpoint, on the same rows,
# batches, steps and learning rates, but theta_g reads the k passages as text, uncompressed
# (train.py --instruct-reads text). Writes RUN_text/instruct; eval.py finds it there.
#
#   bash experiments/text_reference.sh runs/default      # the default's 40 stage-2 steps
#   bash experiments/text_reference.sh RUN [train.py flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: text_reference.sh RUN [train.py flags...]}; shift
# RUN's recipe, read from its args.json: the flags that decide stage 2's rows, batches and model
read -r -a same < <(python - "$RUN/args.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
flags = ["--steps", 0, a["steps"][1], 0]
for key in ("seed", "backbone", "batch_size", "lr", "schedule", "warmup", "grad_accum", "instruct_k",
            "instruct_k_start", "eval_rows", "doc_max_len", "compression_rate", "top_k", "temperature",
            "mse_weight", "memory_layer", "memory_norm", "lora_r", "lora_dropout", "compressor", "limit"):
    if key in a:  # older runs lack newer keys: train.py's default is what they ran with
        value = a[key]
        flags += [f"--{key.replace('_', '-')}", *(value if isinstance(value, list) else [value])]
print(" ".join(map(str, flags)))
PY
)
python train.py --stage instruct --instruct-reads text --init "$RUN/pretrain" --data "$RUN/data" \
  --out "${RUN}_text" "${same[@]}" "$@"
