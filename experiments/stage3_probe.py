"""Stage-3 probe: does the answer loss point the query reasoner at the gold passage, and which
stage-3 settings turn that signal into held-out MRR? Loads an instruct checkpoint (theta_qr <-
theta_c as train.py does), then

  signal:         for training questions, the straight-through gradient -dL/ds on the N candidate
                  scores: how often the gold passage gets the strongest push up (chance: 1/N), and
                  the generator's loss when the gold is or is not among the k picks.
  counterfactual: for held-out questions, the answer's CE with each candidate alone in one slot
                  (as vectors, or --text): how well the answer loss itself ranks the gold, the
                  most any label-free stage 3 can teach (docs/lab_notebook.md).
  train:          a stage-3 run in this process (optionally theta_qr alone, its own lr, a tau
                  schedule), printing held-out MRR (the first --heldout questions of
                  e2e_heldout.jsonl) every --every steps; --agree also tracks the MRR of the
                  generator's own favourite candidate.

pos_index is read only to score; no loss sees it. Held-out queries are encoded in float32 here
(eval.py uses the training autocast: MRR 47.1 there, 46.8 here for the default run). Run alone.

  python experiments/stage3_probe.py signal --init runs/default/instruct --data runs/default/data --rows 64
  python experiments/stage3_probe.py counterfactual --init runs/default/instruct --data runs/default/data --rows 40
  python experiments/stage3_probe.py train --init runs/default/instruct --data runs/default/data \
      --train-generator 0 --steps 100 --every 25 --agree --rows 40
"""
import argparse
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import data  # noqa: E402
import metrics  # noqa: E402
from clara import CLaRa  # noqa: E402
from runtime import VectorCache, pick_device  # noqa: E402


def heldout_mrr(model, rows, cache, bs=25):
    model.eval()
    rr = []
    with torch.no_grad():
        for i in range(0, len(rows), bs):
            b = rows[i:i + bs]
            s = model.score(model.encode_query([r["question"] for r in b]), cache([r["docs"] for r in b]))
            rr += [metrics.reciprocal_rank(metrics.rank_from_scores(x), r["pos_index"]) for x, r in zip(s.float().tolist(), b)]
    model.train()
    return 100 * sum(rr) / len(rr), rr


def signal(model, rows, cache, args, autocast):
    """-dL/ds per candidate: rank of the gold's push among the N, and CE with / without gold picked."""
    top1, ranks, ce_in, ce_out = 0, [], [], []
    model.train()
    for i in range(0, args.rows, args.batch):
        b = rows[i:i + args.batch]
        with autocast():
            q = [r["question"] for r in b]
            M = cache([r["docs"] for r in b])
            sel, idx, s = model.rerank(q, M)
            s.retain_grad()
            ce_rows = []
            for j in range(len(b)):  # per row, so each row's CE is known
                ce_rows.append(model.generator_loss(q[j:j + 1], sel[j:j + 1], [b[j]["answer"]]))
            sum(ce_rows).backward()
        g = -s.grad.float()  # (B, N): positive = the loss wants this score higher
        for j, r in enumerate(b):
            order = g[j].argsort(descending=True).tolist()
            rank = min(order.index(p) for p in r["pos_index"])
            ranks.append(rank)
            top1 += rank == 0
            picked = set(idx[j].tolist()) & set(r["pos_index"])
            (ce_in if picked else ce_out).append(ce_rows[j].item())
        model.zero_grad(set_to_none=True)
    n = len(ranks)
    print(f"signal over {n} rows: gold gets the strongest push up in {100 * top1 / n:.1f}% (chance "
          f"{100 / len(rows[0]['docs']):.1f}%), mean rank of its push {sum(ranks) / n:.2f} of {len(rows[0]['docs'])}")
    print(f"  CE with gold among the k picks {sum(ce_in) / max(1, len(ce_in)):.3f} ({len(ce_in)} rows), "
          f"without {sum(ce_out) / max(1, len(ce_out)):.3f} ({len(ce_out)} rows)")


@torch.no_grad()
def counterfactual(model, rows, cache, args, autocast):
    """The generator's own verdict, no linearisation: CE of the answer with each candidate alone in
    one slot. How often is the gold the candidate that lowers the answer loss most?"""
    model.eval()
    first, ranks, gap, ces = 0, [], [], []
    for r in rows[:args.rows]:
        n = len(r["docs"])
        with autocast():
            M = [[[d]] for d in r["docs"]] if args.text else cache([r["docs"]])[0][:, None, None]  # (N, 1, 1, l, D)
            ce = torch.stack([model.generator_loss([r["question"]], M[i], [r["answer"]]) for i in range(n)])
        ces.append(ce.float().tolist())
        order = ce.float().argsort().tolist()
        rank = min(order.index(p) for p in r["pos_index"])
        first += rank == 0
        ranks.append(rank)
        gold = min(ce[p].item() for p in r["pos_index"])
        gap.append(sum(ce[i].item() for i in range(n) if i not in r["pos_index"]) / (n - len(r["pos_index"])) - gold)
    k = len(ranks)
    print(f"counterfactual over {k} rows: the gold alone gives the lowest answer CE in {100 * first / k:.1f}% "
          f"(chance {100 / n:.1f}%), mean rank {sum(ranks) / k:.2f} of {n}; mean CE(others) - CE(gold) "
          f"{sum(gap) / k:+.3f} nats; as a ranking, MRR {100 * sum(1 / (x + 1) for x in ranks) / k:.1f}")
    model.train()
    return ces


def agreement(model, rows, cache, ces) -> str:
    """MRR of the generator's favourite (the candidate with the lowest answer CE alone) under the
    query reasoner's scores: how far the reranker ranks what the answer loss prefers. "" without CEs."""
    if not ces:
        return ""
    favourite = [dict(r, pos_index=[min(range(len(c)), key=c.__getitem__)]) for r, c in zip(rows, ces)]
    return f" | generator's favourite MRR {heldout_mrr(model, favourite, cache)[0]:.1f}"


def train(model, rows, held, cache, args, autocast):
    names = ["query_reasoner"] + (["generator"] if args.train_generator else [])
    params = [p for layer in model.lora_layers for a in names for p in (layer.lora_A[a], layer.lora_B[a])]
    for p in model.trainable_state_dict().values():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    qr = {id(layer.lora_A["query_reasoner"]) for layer in model.lora_layers} | \
         {id(layer.lora_B["query_reasoner"]) for layer in model.lora_layers}
    groups = [{"params": [p for p in params if id(p) in qr], "lr": args.lr * args.qr_lr_mult},
              {"params": [p for p in params if id(p) not in qr], "lr": args.lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    order = random.Random(args.seed)
    ces = counterfactual(model, held, cache, args, autocast) if args.agree else None
    mrr0, rr0 = heldout_mrr(model, held, cache)
    print(f"step 0: held-out MRR {mrr0:.1f}{agreement(model, held, cache, ces)}", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        b = order.sample(rows, args.batch)
        if args.tau_end:
            model.config.temperature = args.tau * (args.tau_end / args.tau) ** (step / args.steps)
        with autocast():
            out = model.e2e_loss([r["question"] for r in b], cache([r["docs"] for r in b]), [r["answer"] for r in b])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % args.every == 0 or step == args.steps:
            mrr, rr = heldout_mrr(model, held, cache)
            d = metrics.paired_bootstrap(rr, rr0)
            print(f"step {step}: loss {out['loss'].item():.3f} held-out MRR {mrr:.1f} (after - before "
                  f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]) {(time.time() - t0) / step:.2f} s/step{agreement(model, held, cache, ces)}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("signal", "counterfactual", "train"))
    p.add_argument("--init", required=True, help="instruct checkpoint")
    p.add_argument("--data", required=True, help="run data dir (e2e_train.jsonl, e2e_heldout.jsonl)")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--heldout", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--qr-lr-mult", type=float, default=1.0)
    p.add_argument("--train-generator", type=int, default=1)
    p.add_argument("--tau", type=float, default=0.02)
    p.add_argument("--tau-end", type=float, default=0)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--gumbel", action="store_true")
    p.add_argument("--text", action="store_true", help="counterfactual: each candidate as text, not vectors")
    p.add_argument("--agree", action="store_true", help="train: also track the MRR of the generator's "
                   "own favourite among the first --rows held-out questions (needs --train-generator 0)")
    p.add_argument("--qr-init", choices=("compressor", "scratch"), default="compressor")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    device, autocast, _ = pick_device("auto")
    model = CLaRa.load(args.init).to(device)
    if args.qr_init == "compressor":
        model.init_query_reasoner()  # as train.py does; "scratch" keeps the checkpoint's untrained theta_qr
    model.config.temperature, model.config.top_k, model.config.gumbel = args.tau, args.top_k, args.gumbel
    rows = data.load_rows(os.path.join(args.data, "e2e_train.jsonl"), "e2e")
    held = data.load_rows(os.path.join(args.data, "e2e_heldout.jsonl"), "e2e")[:args.heldout]
    random.Random(1).shuffle(rows)
    with autocast():
        cache = VectorCache(model, rows + held, 20)
    if args.what == "signal":
        print(f"held-out MRR {heldout_mrr(model, held, cache)[0]:.1f}")
        signal(model, rows, cache, args, autocast)
    elif args.what == "counterfactual":
        counterfactual(model, held, cache, args, autocast)
    else:
        train(model, rows, held, cache, args, autocast)


if __name__ == "__main__":
    main()
