"""Where a default stage-1 step spends its time: torch.profiler over one step (batch 4, the default
corpus, the packaged SmolLM2-135M) after two warm-up steps, in the dtype train.py would pick (or
--dtype). If aten::mm dominates, the step is bound by the matmul rate (experiments/peak_flops.py),
and only fewer FLOPs, not fusion, would make it faster. Run alone:

    python experiments/profile_step.py
"""
import argparse
import os
import random
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import runtime  # noqa: E402
import train  # noqa: E402
from clara import CLaRa, load_backbone  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto", help="as in train.py")
p.add_argument("--out", default="runs/profile", help="where the default corpus is written")
args = p.parse_args()
targs = train.parse_args(["--out", args.out, "--dtype", args.dtype])
device, autocast, dtype = runtime.pick_device(args.dtype)
torch.manual_seed(0)
backbone, tokenizer = load_backbone(targs.backbone, runtime.backbone_dtype(device, dtype))
model = CLaRa(backbone.to(device), tokenizer, train.clara_config(targs)).train()
rows = train.load_stage_rows(targs, "pretrain", train.resolve_sources(targs))[0]
random.Random(0).shuffle(rows)
params = train.trainable(model, train.TRAINS["pretrain"])
opt = torch.optim.AdamW(params, lr=1e-4)


def step(batch):
    with autocast():
        loss = train.stage_loss(model, "pretrain", batch, targs)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad()


for i in range(2):  # warm-up
    step(rows[4 * i:4 * i + 4])
t = time.perf_counter()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    step(rows[8:12])
print(f"one step: {time.perf_counter() - t:.1f} s under the profiler")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
