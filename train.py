"""Train CLaRa's three stages on one GPU or a CPU: pretrain (SCP) -> instruct -> end-to-end.

    python train.py                                   # all stages, embedded corpus, SmolLM2-135M
    python train.py --budget 60 --out runs/budget60   # the same recipe, about 3x the steps
    python train.py --backbone tiny --steps 4 ...     # smoke run (checks the pipeline, not quality)
    python train.py --stage pretrain --data pretrain.jsonl --out runs/scp
    torchrun --standalone --nproc_per_node=4 train.py ...   # 4 GPUs, one process each (docs/multi_gpu.md)

Layout of --out: args.json (the resolved run), data/ (the embedded corpus, when used),
<stage>/ (checkpoint: config.json + adapters.safetensors, trainer_state.pt, DONE when finished),
metrics.jsonl (one line per logging step).

Each log line carries held-out diagnostics (docs/design.md section 8): in stages 1-2 the "gap", the
eval loss with another passage's vectors minus with its own; in stage 3 the reranker's hit@k and MRR.
"""

import argparse
import json
import math
import os
import pathlib
import random
import time
from dataclasses import fields

import torch
from tqdm import tqdm

import corpus
import data
import metrics
from clara import ADAPTERS, CLaRa, CLaRaConfig, load_backbone
from data import STAGES
from runtime import (FlopCounter, VectorCache, all_reduce_grads, atomic_write, backbone_dtype, barrier,
                     check_batch_split, config_differences, gather_chunks, is_main, load_tensors,
                     measure_peak_flops, micro_batches, pick_device, setup_distributed, shard,
                     teardown_distributed, world_size)

TRAINS = {"pretrain": ("compressor", "generator", "memory"),  # paper Sec. 2-3; docs/design.md section 4
          "instruct": ("compressor", "generator"),
          "e2e": ("query_reasoner", "generator")}


# --budget: minutes on a 2-core CPU -> steps per stage (pretrain instruct e2e). The 20-minute recipe
# is the default; the others scale every stage by about 3x and 6x (docs/lab_notebook.md, "budget";
# shorter 20-minute mixes that fit in 18 minutes lost the compressed answers' gap there).
BUDGETS = {20: (150, 40, 60), 60: (420, 120, 150), 120: (840, 240, 300)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    p.add_argument("--backbone", default="smollm2-135m", help="smollm2-135m | tiny | hub id | dir | .gguf")
    p.add_argument("--data", nargs="*", default=[], metavar="[STAGE=]SOURCE",
                   help="a directory of pretrain/instruct/e2e_train.jsonl (+ *_heldout.jsonl), STAGE=FILE_OR_HF_ID "
                        "per stage, or one source for a single --stage; default: the embedded corpus (corpus.py)")
    p.add_argument("--out", default="runs/default")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--init", default=None, help="start from this checkpoint (e.g. runs/x/instruct for --stage e2e)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, choices=sorted(BUDGETS), default=None,
                   help="minutes on a 2-core bf16 CPU, SmolLM2-135M: the recipe's steps scaled (BUDGETS; default 20)")
    p.add_argument("--steps", type=int, nargs=3, default=None, metavar=("PRE", "INS", "E2E"),
                   help="optimizer steps per stage (pretrain instruct e2e), instead of a --budget")
    p.add_argument("--batch-size", type=int, nargs=3, default=[4, 4, 8], metavar=("PRE", "INS", "E2E"))
    p.add_argument("--grad-accum", type=int, default=1,
                   help="cut each step's batch into this many micro-batches (less memory; a step's rows stay the same)")
    p.add_argument("--lr", type=float, nargs=3, default=[1e-3, 5e-4, 2e-4], metavar=("PRE", "INS", "E2E"),
                   help="paper: 1e-4 1e-4 5e-6 at batch 128/128/32 for 7B; 135M on a few hundred steps needs more")
    p.add_argument("--schedule", choices=("cosine", "constant"), nargs=3, default=["cosine", "cosine", "constant"])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--doc-max-len", type=int, default=128, help="L")
    p.add_argument("--compression-rate", type=int, default=16, help="l = L // rate")
    p.add_argument("--top-k", type=int, default=5, help="k")
    p.add_argument("--n-candidates", type=int, default=20, help="N (stage 3; rows must have at least N)")
    p.add_argument("--instruct-k", type=int, default=5,
                   help="passages per instruct row at the end of stage 2: positives first (data.oracle_k)")
    p.add_argument("--instruct-k-start", type=int, default=1,
                   help="passages per instruct row at the start of stage 2, growing linearly to --instruct-k")
    p.add_argument("--rank-loss", choices=("answer", "supervised"), default="answer",
                   help="stage 3: answer = the paper; supervised adds a contrastive loss on pos_index (a reference)")
    p.add_argument("--temperature", type=float, default=0.02, help="tau")
    p.add_argument("--gumbel", action="store_true")
    p.add_argument("--mse-weight", type=float, default=0.1, help="lambda")
    p.add_argument("--memory-layer", type=int, default=-2)
    p.add_argument("--memory-norm", choices=("none", "rescale", "standardize"), default="standardize",
                   help="how memory states become generator inputs (clara.CLaRaConfig.memory_norm)")
    p.add_argument("--compressor", choices=("memory-tokens", "mean-pool"), default="memory-tokens",
                   help="memory tokens (paper) or means of l windows of states (clara.CLaRaConfig.compressor)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--qr-init", choices=("compressor", "scratch"), default="compressor",
                   help="theta_qr start for stage 3 (paper Table 14: compressor copy is better)")
    p.add_argument("--freeze-generator", action="store_true",
                   help="stage 3 trains theta_qr alone (the paper updates theta_g too): the loss can only re-rank")
    p.add_argument("--curriculum", type=int, default=0, metavar="STEPS",
                   help="stage 1 starts with STEPS steps of repeating growing passage prefixes")
    p.add_argument("--pretrain-kinds", default="qa,paraphrase",
                   help="which SCP rows stage 1 trains on (data_type values, comma-separated)")
    p.add_argument("--instruct-reads", choices=("vectors", "text"), default="vectors",
                   help="text: stage 2 trains theta_g alone reading text, the same-budget text-RAG reference "
                        "(--stage instruct; experiments/text_reference.sh)")
    p.add_argument("--compressor-lr-mult", type=float, nargs="+", default=[1.0, 1.0, 1.0], metavar="MULT",
                   help="learning rate of theta_c and the MEM embeddings = this x the stage's lr: one value "
                        "for every stage, or three (PRE INS E2E; 1 0 1 freezes theta_c in stage 2 alone)")
    p.add_argument("--limit", type=int, default=0, help="use at most this many training rows per stage")
    p.add_argument("--eval-rows", type=int, default=8, help="held-out rows for the logged diagnostics (>= 2)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="auto: bf16 autocast on a GPU or a CPU with native bf16, else float32 (runtime.pick_device)")
    p.add_argument("--peak-flops", type=float, default=0,
                   help="the device's peak FLOP/s for the MFU on the log line; 0: measure a matmul at start")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--stop-after", type=int, default=0,
                   help="exit after this many steps of a stage, as an interruption would (tests --resume)")
    args = p.parse_args(argv)
    if args.steps is not None and args.budget is not None:
        p.error("give --budget or --steps, not both")
    if args.steps is None:
        args.steps = list(BUDGETS[args.budget or 20])
    if len(args.compressor_lr_mult) not in (1, 3):
        p.error(f"--compressor-lr-mult takes 1 value or 3 (one per stage), got {len(args.compressor_lr_mult)}")
    args.compressor_lr_mult = args.compressor_lr_mult * (3 // len(args.compressor_lr_mult))
    if args.instruct_reads == "text" and args.stage != "instruct":
        p.error("--instruct-reads text trains the text-RAG reference: give it with --stage instruct")
    if args.eval_rows < 2:  # the shuffled control needs a second row; 0 would also empty nothing to hold out
        p.error(f"--eval-rows must be at least 2 (the shuffled control reads another row), got {args.eval_rows}")
    return args


def clara_config(args) -> CLaRaConfig:
    return CLaRaConfig(backbone=args.backbone, doc_max_len=args.doc_max_len, compression_rate=args.compression_rate,
                       top_k=args.top_k, temperature=args.temperature, gumbel=args.gumbel, lora_r=args.lora_r,
                       lora_alpha=2 * args.lora_r, lora_dropout=args.lora_dropout, mse_weight=args.mse_weight,
                       memory_layer=args.memory_layer, memory_norm=args.memory_norm, compressor=args.compressor)


# --- data ----------------------------------------------------------------------------------------

def resolve_sources(args) -> dict:
    """-> {stage: (train source, held-out source or None)}; the embedded corpus when --data is empty."""
    if not args.data:
        directory = os.path.join(args.out, "data")
        if is_main() and not os.path.exists(os.path.join(directory, "e2e_test.jsonl")):
            corpus.write_corpus(directory, seed=args.seed)
        barrier()  # the other ranks read what rank 0 wrote
        args.data = [directory]
    return data.stage_sources(args.data, args.stage)


def load_stage_rows(args, stage, sources):
    """Training rows and held-out rows (from the *_heldout file, else the last --eval-rows rows)."""
    train_src, eval_src = sources[stage]
    rows = data.load_rows(train_src, stage)
    held = data.load_rows(eval_src, stage) if eval_src is not None else None
    if stage == "pretrain":
        kinds = set(args.pretrain_kinds.split(","))
        rows = [r for r in rows if r["kind"] in kinds]
        held = held if held is None else [r for r in held if r["kind"] in kinds]
        if not rows:
            raise SystemExit(f"{train_src}: no rows of kinds {sorted(kinds)} (--pretrain-kinds)")
    if held is None:  # hold out the rows about the last passages of the file; never trained on
        rows, held, dropped = data.split_by_passage(rows, stage, args.eval_rows, train_src)
        print(f"stage {stage}: held out {len(held)} rows about the last passages of {train_src}; "
              f"dropped {dropped} training rows that show one of them")
    random.Random(args.seed).shuffle(held)
    held = held[:args.eval_rows] if stage == "e2e" else \
        data.pick_held_out(held, stage, args.eval_rows, eval_src or train_src)  # with shuffled-control donors
    if args.limit:
        rows = rows[:args.limit]
    if not rows:
        raise SystemExit(f"{train_src}: no training rows left after holding out {len(held)} for evaluation")
    if stage == "e2e":
        data.check_candidates(rows + held, max(args.n_candidates, args.top_k))
    if stage == "instruct":
        data.check_candidates(rows + held, max(args.instruct_k, args.instruct_k_start))
    return rows, held


def sharded(fn, batches):
    """VectorCache's map_batches under torchrun: each process compresses its share of the batches,
    then every process gets all of them in order (one process: a plain loop with a progress bar)."""
    mine = [fn(b) for b in tqdm(shard(batches), desc="compress candidates", leave=False)]
    return gather_chunks(mine, torch.device("cpu"))


# --- one stage -----------------------------------------------------------------------------------

def instruct_k_at(args, step, steps):
    """Stage 2's k at this step: from --instruct-k-start up to --instruct-k in equal parts."""
    k0, k1 = min(args.instruct_k_start, args.instruct_k), args.instruct_k
    return min(k1, k0 + (k1 - k0 + 1) * step // max(1, steps))  # 1 -> 5 over 40 steps: 8 steps each


def stage_loss(model, stage, rows, args, cache=None, shuffle=False, k=None):
    """A stage's loss on rows; shuffle=True (stages 1-2): the shuffled control, each row reading the
    vectors of a row about other passages (metrics.shuffle_donors)."""
    if stage == "pretrain":
        docs, targets, kinds = data.pretrain_inputs(rows)
        donors = metrics.shuffle_donors([[d] for d in docs], [[d] for d in docs]) if shuffle else None
        return model.pretrain_loss(docs, targets, kinds, donors=donors)
    if stage == "instruct":
        k = args.instruct_k if k is None else k
        docs = [[r["docs"][i] for i in data.oracle_k(r, k)] for r in rows]
        donors = metrics.shuffle_donors(docs, docs) if shuffle else None
        return model.instruct_loss([r["question"] for r in rows], docs, [r["answer"] for r in rows], donors=donors,
                                   as_text=args.instruct_reads == "text")
    questions, candidates = [r["question"] for r in rows], cache([r["docs"][:args.n_candidates] for r in rows])
    out = model.e2e_loss(questions, candidates, [r["answer"] for r in rows])
    if args.rank_loss == "supervised":  # NOT the paper: a labelled reference (InfoNCE over the N)
        s = model.score(model.encode_query(questions), candidates)  # (B, N)
        out["loss"] = out["loss"] + metrics.supervised_rank_loss(
            s / model.config.temperature, [r["pos_index"] for r in rows], [r["where"] for r in rows])
    return out


def ranking_metrics(scores, rows, k):
    """hit@k (a positive among the top k) and MRR from (B, N) scores; pos_index is used only here."""
    m = metrics.ranking_metrics(scores.tolist(), [r["pos_index"] for r in rows], hit_at=(k,))
    return (m[f"hit@{k}"], m["mrr"]) if "mrr" in m else (float("nan"), float("nan"))


@torch.no_grad()
def diagnostics(model, stage, held, args, cache, autocast):
    """Held-out diagnostics: own vs shuffled eval loss (stages 1-2), hit@k and MRR (stage 3)."""
    model.eval()
    # stages 1-2: all held-out rows in one batch, so each row's shuffled-control donor (a row about
    # other passages) is found among all of them; stage 3 reads cached vectors, in training batches
    bs = len(held) if stage != "e2e" else max(2, args.batch_size[STAGES.index(stage)])
    batches = [held[i:i + bs] for i in range(0, len(held), bs) if len(held[i:i + bs]) >= 2]
    out = {}
    with autocast():
        if stage in ("pretrain", "instruct"):
            own = [stage_loss(model, stage, b, args)["ce"].item() for b in batches]
            shuf = [stage_loss(model, stage, b, args, shuffle=True)["ce"].item() for b in batches]
            out = {"eval_own": sum(own) / len(own), "eval_shuffled": sum(shuf) / len(shuf)}
            out["gap"] = out["eval_shuffled"] - out["eval_own"]
        else:
            res = [stage_loss(model, stage, b, args, cache) for b in batches]
            scores = torch.cat([r["scores"] for r in res])
            out["eval_loss"] = sum(r["ce"].item() for r in res) / len(res)
            out["eval_hit"], out["eval_mrr"] = ranking_metrics(scores, held, args.top_k)
    model.train()
    return out


def trainable(model, names):
    """Switch gradients on for the parts named (TRAINS values) and off for every other trained tensor."""
    params = [layer.lora_A[a] for layer in model.lora_layers for a in ADAPTERS if a in names] + \
             [layer.lora_B[a] for layer in model.lora_layers for a in ADAPTERS if a in names]
    if "memory" in names:
        params.append(model.memory_tokens)
    for p in model.trainable_state_dict().values():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def stage_trains(stage, args):
    """The parts a stage updates (TRAINS): less the generator in stage 3 under --freeze-generator,
    the generator alone in stage 2 under --instruct-reads text (no compressor is read), less theta_c
    and the MEM embeddings where --compressor-lr-mult is 0 for the stage: frozen, so no gradient is
    computed for them at all."""
    if args.freeze_generator and stage == "e2e":
        return tuple(n for n in TRAINS[stage] if n != "generator")
    if args.instruct_reads == "text" and stage == "instruct":
        return ("generator",)
    if args.compressor_lr_mult[STAGES.index(stage)] == 0:
        return tuple(n for n in TRAINS[stage] if n not in ("compressor", "memory"))
    return TRAINS[stage]


def param_groups(model, params, lr, compressor_lr_mult=1.0):
    """Optimiser groups: theta_c and the MEM embeddings at lr x compressor_lr_mult, the rest at lr
    (a knob for the compressor/generator race of docs/design.md section 8; 1.0 = one lr, as the paper)."""
    fast = {id(p) for layer in model.lora_layers for p in (layer.lora_A["compressor"], layer.lora_B["compressor"])}
    fast.add(id(model.memory_tokens))
    groups = [{"params": [p for p in params if id(p) in fast], "lr": lr * compressor_lr_mult},
              {"params": [p for p in params if id(p) not in fast], "lr": lr}]
    return [g for g in groups if g["params"]]


def run_stage(model, stage, args, sources, device, autocast, log, counter=None):
    i = STAGES.index(stage)
    steps, bs, lr, schedule = args.steps[i], args.batch_size[i], args.lr[i], args.schedule[i]
    directory = os.path.join(args.out, stage)
    rows, held = load_stage_rows(args, stage, sources)
    print(f"stage {stage}: {len(rows)} training rows, {len(held)} held-out rows; trains "
          f"{', '.join(stage_trains(stage, args))}; {steps} steps x batch {bs} (in {args.grad_accum} micro-batches per "
          f"process), lr {lr:g} {schedule}"
          + ("; mean-pool compressor: the memory tokens are unused (no gradient), the MSE term is off"
             if args.compressor == "mean-pool" and stage != "e2e" else ""))
    params = trainable(model, stage_trains(stage, args))
    opt = torch.optim.AdamW(param_groups(model, params, lr, args.compressor_lr_mult[i]), weight_decay=0.0)
    warm = min(args.warmup, steps // 5)

    def lr_at(step):  # linear warm-up, then cosine to 10% or constant
        if step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start = 0
    state_path = os.path.join(directory, "trainer_state.pt")
    if args.resume and os.path.exists(state_path):
        state = torch.load(state_path, weights_only=True)  # tensors and numbers only: no pickle code
        model.load_trainable(load_tensors(directory), directory)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["step"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        print(f"stage {stage}: resumed at step {start} from {directory}")
        log_path = os.path.join(args.out, "metrics.jsonl")
        if is_main() and os.path.exists(log_path):  # the steps after the checkpoint log again
            with open(log_path) as f:
                kept = metrics.records_up_to(f.readlines(), stage, start)
            atomic_write(log_path, lambda path: pathlib.Path(path).write_text("".join(kept)))
    cache = None
    if stage == "e2e":
        t0 = time.time()
        with autocast():  # the vectors stage 3 reads: compressed as training and evaluation run
            cache = VectorCache(model, rows + held, args.n_candidates, map_batches=sharded)
        print(f"stage e2e: cached {len(cache.index)} passages' vectors in {time.time() - t0:.1f} s")
    order = random.Random(args.seed + i)
    for _ in range(start):  # replay the batches already seen, so a resumed run
        order.sample(rows, min(bs, len(rows)))  # sees exactly the batches an uninterrupted one would
    model.train()
    t_last, last_logged = time.time(), start
    counter = counter or FlopCounter(model)
    counter.take()
    bar = tqdm(range(start, steps), desc=stage, initial=start, total=steps, leave=False)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        step_batch = order.sample(rows, min(bs, len(rows)))  # a data set smaller than a batch is used whole
        for batch in micro_batches(step_batch, args.grad_accum):  # this process's share, in pieces
            if stage == "pretrain" and step < args.curriculum:
                batch = data.curriculum_rows(batch, (step + 1) / args.curriculum)
            with autocast():
                out = stage_loss(model, stage, batch, args, cache, k=instruct_k_at(args, step, steps))
            (out["loss"] / args.grad_accum).backward()
        all_reduce_grads(params)  # the mean over processes (nothing to do in one)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        done = step + 1
        if is_main() and (done % args.log_every == 0 or done == steps):
            seconds = time.time() - t_last  # training time only: diagnostics come after the clock
            positions, flops = counter.take()  # this process's; every process does the same work
            rec = {"stage": stage, "step": done, "loss": out["loss"].item(), "lr": sched.get_last_lr()[-1],
                   "ms_per_step": 1000 * seconds / (done - last_logged),
                   "tokens_per_s": positions * world_size() / seconds, "mfu": flops / seconds / args.peak_flops}
            if "mse" in out:
                rec["mse"] = out["mse"].item()
            if stage == "e2e":
                rec["hit"], rec["mrr"] = ranking_metrics(out["scores"], batch, args.top_k)
            rec.update(diagnostics(model, stage, held, args, cache, autocast))
            if stage == "pretrain" and step < args.curriculum:  # the gap on the warm-up task itself
                easy = diagnostics(model, stage, data.curriculum_rows(held, (step + 1) / args.curriculum),
                                   args, cache, autocast)
                rec.update({f"curriculum_{k}": v for k, v in easy.items()})
            log(rec)
            counter.take()  # the diagnostics' passes are not training
            t_last, last_logged = time.time(), done
        if is_main() and (done % args.save_every == 0 or done == steps):
            rng = {"torch_rng": torch.get_rng_state()}
            if torch.cuda.is_available():  # dropout and Gumbel noise draw from the CUDA generator there
                rng["cuda_rng"] = torch.cuda.get_rng_state_all()
            state = {"step": done, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), **rng}
            model.save(directory, args.dtype)  # the compute dtype: eval.py and ask.py run in it (--dtype auto)
            atomic_write(state_path, lambda path: torch.save(state, path))
        if args.stop_after and done - start >= args.stop_after and done < steps:
            barrier()  # rank 0 has written the checkpoint before any process exits
            raise SystemExit(f"stage {stage}: stopped after step {done} as asked (--stop-after)")
    if is_main():
        if not os.path.exists(os.path.join(directory, "config.json")):  # a stage of 0 steps: its
            model.save(directory, args.dtype)  # checkpoint is the one it started from
        open(os.path.join(directory, "DONE"), "w").write("done\n")


# Settings of stage 3's selection and of dropout: a run started with --init may change them, as
# they change no tensor of the checkpoint (e.g. the temperature ablation starts from one checkpoint).
INIT_MAY_CHANGE = ("top_k", "temperature", "gumbel", "lora_dropout")


def check_resume_config(args, directory, may_change=()):
    """A resumed run must have the same method configuration as the checkpoint (a run started
    from one with --init: the same except the fields in may_change)."""
    diff = config_differences(directory, clara_config(args),
                              [f.name for f in fields(CLaRaConfig) if f.name not in may_change])
    if diff:
        raise SystemExit(f"{directory}: checkpoint configuration differs from this run: {', '.join(diff)}")


def main(argv=None):
    args = parse_args(argv)
    setup_distributed()
    check_batch_split({stage: bs for stage, bs in zip(STAGES, args.batch_size) if args.stage in (stage, "all")},
                      args.grad_accum)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    print(f"seed {args.seed}")
    device, autocast, args.dtype = pick_device(args.dtype)  # resolved: args.json and checkpoints record it
    if not args.peak_flops:
        args.peak_flops = measure_peak_flops(device, autocast)
        print(f"peak for MFU: {args.peak_flops / 1e9:.0f} GFLOP/s, the best 2048 x 2048 matmul in the training dtype")
    os.makedirs(args.out, exist_ok=True)
    sources = resolve_sources(args)
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        if stage not in sources:
            raise SystemExit(f"no data for stage {stage}: pass --data {stage}=SOURCE")
    if is_main():
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump({**vars(args), "processes": world_size()}, f, indent=2)
    t0 = time.time()
    model = CLaRa(*load_backbone(args.backbone, backbone_dtype(device, args.dtype)), clara_config(args)).to(device)
    counter = FlopCounter(model)
    print(f"backbone {args.backbone} loaded in {time.time() - t0:.1f} s; l = {model.config.n_memory} memory "
          f"tokens of D = {model.memory_tokens.shape[1]}")
    if args.init:
        check_resume_config(args, args.init, INIT_MAY_CHANGE)
        model.load_trainable(load_tensors(args.init), args.init)
        print(f"started from checkpoint {args.init}")
    metrics_path = os.path.join(args.out, "metrics.jsonl")

    def log(rec):
        tqdm.write(metrics.format_log(rec))
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    previous = None
    for stage in stages:
        directory = os.path.join(args.out, stage)
        for d in (directory, previous):
            if args.resume and d and os.path.exists(os.path.join(d, "config.json")):
                check_resume_config(args, d)
        if args.resume and os.path.exists(os.path.join(directory, "DONE")):
            print(f"stage {stage}: already done in {directory}, loading it")
            model.load_trainable(load_tensors(directory), directory)
        else:
            if stage == "e2e":
                metrics.warn_if_no_gap(metrics_path)
            resuming = args.resume and os.path.exists(os.path.join(directory, "trainer_state.pt"))
            if stage == "e2e" and args.qr_init == "compressor" and not resuming:
                # a fresh adapter has B = 0 (clara.LoRALinear): a non-zero B was trained (--init from stage 3)
                if any(layer.lora_B["query_reasoner"].any() for layer in model.lora_layers):
                    print("stage e2e: theta_qr of --init is already trained: kept, not overwritten by theta_c")
                else:
                    model.init_query_reasoner()  # theta_qr <- theta_c (paper Table 14)
            t0 = time.time()
            run_stage(model, stage, args, sources, device, autocast, log, counter)
            print(f"stage {stage}: finished in {time.time() - t0:.0f} s -> {directory}")
        previous = directory
    print(f"done: final checkpoint in {previous}")
    teardown_distributed()


if __name__ == "__main__":
    main()
