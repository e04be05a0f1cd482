"""Print the README's ablation table from the runs of experiments/ablations.sh (and the default
run, the baseline of the reranker rows). Usage: python experiments/ablation_table.py [compression|reranker]"""
import json
import os
import sys

A, D = "runs/ablate", "runs/default"


def last_gap(run):
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    return [r for r in rows if "gap" in r][-1]["gap"]


def main(what="all"):
    if what in ("all", "compression"):
        compression()
    if what in ("all", "reranker"):
        reranker()


def compression():
    print("| row | command | held-out gap (step 30) | compressed CEM | shuffled CEM |")
    print("|---|---|---|---|---|")
    for name, flags in (("rate4", "--compression-rate 4"), ("rate16", "--compression-rate 16"),
                        ("rate64", "--compression-rate 64"), ("nomse", "--mse-weight 0")):
        run = os.path.join(A, name)
        s = json.load(open(os.path.join(run, "results.json")))["settings"]
        print(f"| {name} | `{flags}` | {last_gap(run):+.3f} | {100 * s['compressed']['cem']:.1f} | "
              f"{100 * s['compressed-shuffled']['cem']:.1f} |")
    print()


def reranker():
    print("| row | command | MRR | R@1 | R@3 | R@5 |")
    print("|---|---|---|---|---|---|")
    base = json.load(open(os.path.join(D, "results.json")))["reranking"]
    fmt = lambda r: " | ".join(f"{100 * r[m]:.1f}" for m in ("mrr", "recall@1", "recall@3", "recall@5"))
    print(f"| before stage 3 (theta_qr = theta_c) | `python eval.py` (before) | {fmt(base['before'])} |")
    print(f"| tau 0.02, no noise, from the compressor (default) | `python train.py` | {fmt(base['after'])} |")
    for name, flags in (("tau1", "--temperature 1.0"), ("gumbel", "--gumbel"), ("scratch", "--qr-init scratch")):
        r = json.load(open(os.path.join(A, name, "results.json")))["reranking"]
        print(f"| {name} | `{flags}` | {fmt(r['after'])} |")


if __name__ == "__main__":
    main(*sys.argv[1:2])
