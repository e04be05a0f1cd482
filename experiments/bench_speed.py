"""Speed of CLaRa against its own backbone on this machine: inference and one training step.
Run it alone (no other PyTorch job on the machine), from the repository root:

    python experiments/bench_speed.py                    # packaged SmolLM2-135M, the dtype train.py picks
    python experiments/bench_speed.py --dtype float32    # or bfloat16: compare the two on this CPU

Prints medians of --reps repetitions:
  prefill   one forward over a --prefill-positions prompt at batch 1, filling the KV cache, with the
            LM head at the last position only (backbones.last_logits, as greedy_decode runs it);
  decode    ms per new token with the KV cache, batch 1, --new-tokens tokens;
  each three ways: raw (the backbone before CLaRa wraps it: the floor), unmerged (the generator
  adapter run beside each frozen linear, x W + s x A^T B^T, as training runs it) and merged (the
  adapter folded into the weights, W + s B A: CLaRa.adapter's default in inference); and "raw, all":
  the raw prefill with the LM head at every position, as every prefill ran before last_logits;
  under bf16 also "merged, f32": the merged weights and the LM head kept in float32, so that autocast
  casts every weight at every matmul, as inference ran before they took autocast's dtype. (The raw
  backbone's weights still require grad: autocast casts them once per block, not per token.)
  step      one default stage-1 step (batch 4 of the embedded corpus, forward, backward, AdamW),
            with the frozen backbone's weights in float32 and, under bf16, in bf16 too;
  stage 2   one default stage-2 step (batch 4, k = 5 passages each, forward, backward, AdamW), theta_c
            and theta_g trained (the paper) and theta_c frozen (train.py --compressor-lr-mult 1 0 1:
            no gradient through the compressor), backbone weights in float32.
With --profile, also where one stage-1 step's time goes (CPU only): its matmuls with the frozen weights,
recorded by torch.profiler and replayed alone, and all matmuls' share of the profiled step; both bound
what a cut that keeps the recipe's arithmetic (its tokens and layers) could save.
"""
import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import runtime  # noqa: E402
import train  # noqa: E402  (the default recipe's rows and loss, as train.py runs them)
from backbones import last_logits, past  # noqa: E402
from clara import CLaRa, CLaRaConfig, load_backbone  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--backbone", default="smollm2-135m")
p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
p.add_argument("--reps", type=int, default=5)
p.add_argument("--prefill-positions", type=int, default=100)
p.add_argument("--new-tokens", type=int, default=16)
p.add_argument("--steps", type=int, default=3, help="timed stage-1 steps per weight dtype, after a warm-up step")
p.add_argument("--profile", action="store_true", help="also profile one stage-1 step: where its time goes")
args = p.parse_args()


def median_ms(fn, reps):
    fn()  # warm-up: first-call allocations and kernel choices
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


@torch.no_grad()
def decode_ms(model, x, n):
    """ms per token of n greedy steps after the prefill of x (the prefill not counted)."""
    out = model(inputs_embeds=x, use_cache=True, **last_logits(model))
    nxt = out.logits[:, -1].argmax(-1)
    runtime.sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        out = model(input_ids=nxt[:, None], use_cache=True, **past(model, out))
        nxt = out.logits[:, -1].argmax(-1)
    runtime.sync(device)
    return 1000 * (time.perf_counter() - t0) / n


device, autocast, dtype = runtime.pick_device(args.dtype)
backbone, tokenizer = load_backbone(args.backbone, runtime.backbone_dtype(device, dtype))
backbone = backbone.to(device).eval()
ids = torch.randint(0, len(tokenizer), (1, args.prefill_positions), device=device)
x = backbone.get_input_embeddings()(ids).detach()  # (1, T, D)
figures = {}


def measure(name, context, keep=None):
    """keep: the prefill's LM-head keyword, by default the last position only (as greedy_decode)."""
    keep = last_logits(backbone) if keep is None else keep
    with torch.no_grad(), autocast(), context():  # the adapter entered under autocast, as eval.py does
        prefill = median_ms(lambda: (backbone(inputs_embeds=x, use_cache=True, **keep), runtime.sync(device)),
                            args.reps)
        decode = statistics.median(decode_ms(backbone, x, args.new_tokens) for _ in range(args.reps))
    figures[name] = (prefill, decode)


measure("raw", lambda: torch.no_grad())
measure("raw, all", lambda: torch.no_grad(), keep={})
model = CLaRa(backbone, tokenizer, CLaRaConfig(backbone=args.backbone)).to(device).eval()
with torch.no_grad():  # a trained-looking generator adapter (non-zero B), so the adapter does work
    for layer in model.lora_layers:
        layer.lora_B["generator"].normal_(0, 0.01)
measure("unmerged", lambda: model.adapter("generator", merge=False))
measure("merged", lambda: model.adapter("generator", merge=True))


def merged_in_float32():
    """The adapter merged with autocast off: float32 weights and head, which autocast casts per call."""
    stack = contextlib.ExitStack()
    with torch.autocast(device.type, enabled=False):
        stack.enter_context(model.adapter("generator", merge=True))
    return stack


if dtype == "bfloat16":
    measure("merged, f32", merged_in_float32)
print(f"\n{args.backbone} on {device}, compute dtype {dtype}; medians of {args.reps}")
print(f"{'':12s}{'prefill ' + str(args.prefill_positions) + ' positions (ms)':>30s}{'decode (ms/token)':>20s}"
      f"{'decode vs raw':>15s}")
for name, (pre, dec) in figures.items():
    print(f"{name:12s}{pre:30.1f}{dec:20.1f}{dec / figures['raw'][1]:14.2f}x")
print(f"prefill, LM head at the last position vs at every position: "
      f"{figures['raw, all'][0] / figures['raw'][0]:.2f}x faster")

def stage_rows(stage):
    """The default run's shuffled training rows of a stage (the embedded corpus, as train.py writes it)."""
    with tempfile.TemporaryDirectory() as out:
        targs = train.parse_args(["--out", out, "--dtype", dtype, "--backbone", args.backbone])
        rows = train.load_stage_rows(targs, stage, train.resolve_sources(targs))[0]
    random.Random(0).shuffle(rows)
    return rows


def train_step(model, opt, stage, batch, targs):
    """One optimizer step as train.py takes it: forward, backward, AdamW."""
    with autocast():
        loss = train.stage_loss(model, stage, batch, targs)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    runtime.sync(device)


def step_seconds(model, stage, rows, targs):
    """Median seconds of args.steps optimizer steps at batch 4 (forward, backward, AdamW) training
    what train.py trains in the stage under targs, after one warm-up step."""
    opt = torch.optim.AdamW(train.trainable(model, train.stage_trains(stage, targs)), lr=1e-4)
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        train_step(model, opt, stage, rows[4 * i:4 * i + 4], targs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def profile_step(model, stage, rows, targs, step):
    """The floor under a step that keeps the recipe's arithmetic: torch.profiler records the shapes of
    one step's aten::mm calls (after a warm-up step); those with the frozen weights (every matrix dim >
    lora_r) are then replayed alone, unprofiled (the profiler's per-call overhead would swamp the small
    ones), and their summed time is set against `step`, the unprofiled median step time."""
    from torch.profiler import ProfilerActivity, profile
    if device.type != "cpu":  # on a GPU a replayed matmul would need its own synchronisation
        print("  --profile: CPU only; skipped")
        return
    opt = torch.optim.AdamW(train.trainable(model, train.stage_trains(stage, targs)), lr=1e-4)
    for i in range(2):  # the warm-up step is profiled too, and discarded
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
            train_step(model, opt, stage, rows[4 * i:4 * i + 4], targs)
    frozen, lora = {}, [0, 0.0]  # {(shape a, shape b): calls}; adapter matmuls: calls, GFLOP
    events = prof.key_averages(group_by_input_shape=True)
    in_step = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm") / sum(
        e.self_cpu_time_total for e in events)  # all matmuls' share of the profiled step's op time
    for e in events:
        if e.key == "aten::mm":
            a, b = e.input_shapes[:2]
            if min(a + b) <= targs.lora_r:
                lora[0] += e.count
                lora[1] += e.flops / 1e9
            else:
                frozen[tuple(a), tuple(b)] = frozen.get((tuple(a), tuple(b)), 0) + e.count
    seconds = flops = 0.0
    for (a, b), calls in frozen.items():
        x, w = torch.randn(a, dtype=model.backbone.dtype), torch.randn(b, dtype=model.backbone.dtype)
        with autocast():
            seconds += calls * median_ms(lambda: x @ w, args.reps) / 1000
        flops += calls * 2 * a[0] * a[1] * b[1] / 1e9
    print(f"  the step's {sum(frozen.values())} frozen-weight matmuls replayed alone: {seconds:.2f} s, "
          f"{100 * seconds / step:.0f}% of the step ({flops:.0f} GFLOP at {flops / seconds:.0f} GFLOP/s); "
          f"{lora[0]} adapter matmuls ({lora[1]:.1f} GFLOP) and all else: the other {step - seconds:.2f} s\n"
          f"  a cut that keeps the recipe's arithmetic (its tokens, layers and matmuls) saves at most "
          f"{step / seconds:.2f}x; replayed alone the operands stay in cache, so that bound is loose: in the\n"
          f"  profiled step itself all {sum(frozen.values()) + lora[0]} matmuls take {100 * in_step:.0f}% of the op time "
          f"(a cut of everything else: {1 / in_step:.2f}x)")


rows, targs = stage_rows("pretrain"), train.parse_args(["--dtype", dtype, "--backbone", args.backbone])
weight_dtypes = [torch.float32] + ([torch.bfloat16] if dtype == "bfloat16" else [])
for weights in weight_dtypes:
    del model, backbone
    torch.manual_seed(0)
    model = CLaRa(*load_backbone(args.backbone, weights), train.clara_config(targs)).to(device).train()
    backbone = model.backbone
    step = step_seconds(model, "pretrain", rows, targs)
    print(f"stage-1 step (batch 4), backbone weights {str(weights).replace('torch.', '')}, compute {dtype}: "
          f"{step:.2f} s (median of {args.steps}, after a warm-up step)")
    if args.profile:
        profile_step(model, "pretrain", rows, targs, step)

rows, stage2 = stage_rows("instruct"), {}
del model, backbone
torch.manual_seed(0)
model = CLaRa(*load_backbone(args.backbone, torch.float32), train.clara_config(targs)).to(device).train()
for name, mult in (("theta_c and theta_g trained (paper)", "1"), ("theta_c frozen (--compressor-lr-mult 1 0 1)", "0")):
    targs = train.parse_args(["--compressor-lr-mult", "1", mult, "1", "--dtype", dtype, "--backbone", args.backbone])
    stage2[name] = step_seconds(model, "instruct", rows, targs)
    print(f"stage-2 step (batch 4, k = {targs.instruct_k}), {name}, backbone weights float32, compute {dtype}: "
          f"{stage2[name]:.2f} s (median of {args.steps}, after a warm-up step)")
joint, frozen = stage2.values()
print(f"stage-2 step, joint / theta_c frozen: {joint / frozen:.2f}x")
