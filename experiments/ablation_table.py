"""Print the ablation tables of docs/results.md from the runs that write them:
  compression, reranker  experiments/ablations.sh (and runs/default, the baseline of the reranker rows)
  real                   experiments/real_text.sh FILE rows (runs/real is the 16x row)
  meanpool SEED...       experiments/real_text.sh FILE meanpool SEED... (runs/real_seedS, runs/real_meanpool_seedS;
                         with NAME=X in the environment, as real_text.sh passes it: runs/X_seedS, runs/X_meanpool_seedS)
  stage3                 experiments/reranking.sh variants (runs/expA and runs/expB_*)
Usage: python experiments/ablation_table.py [compression|reranker|real|stage3|meanpool SEED...]"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import metrics  # noqa: E402

A, D = "runs/ablate", "runs/default"


def last_gap(run, stage=None):
    """The last held-out gap a run logged (of `stage` alone, when given)."""
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    return [r for r in rows if "gap" in r and stage in (None, r.get("stage"))][-1]["gap"]


def f1(res, setting):  # per-question F1 of one setting, in results.json's question order
    return [p[setting]["f1"] for p in res["predictions"]]


def pct(d):  # a paired difference with its interval, in points
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def main(what="all", *seeds):
    if what == "meanpool":
        return meanpool(seeds or ("0", "1"), os.environ.get("NAME", "real"))
    if what in ("all", "compression"):
        compression()
    if what in ("all", "reranker"):
        reranker()
    if what in ("all", "real"):
        real()
    if what in ("all", "stage3"):
        stage3()


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


def real():
    """Real-text compression rows: F1 of every setting on the same 100 unseen questions, the paired
    compressed - shuffled interval, and the paired difference of compressed F1 from the 16x row."""
    base = json.load(open("runs/real/results.json"))
    print("| row | command | stage-1 gap (last) | closed-book / text / compressed / shuffled F1 | "
          "compressed - shuffled | compressed - the 16x row |")
    print("|---|---|---|---|---|---|")
    for name, flags in (("real_rate4", "--compression-rate 4"), ("real", "(16x, the default)"),
                        ("real_rate64", "--compression-rate 64"), ("real_nomse", "--mse-weight 0")):
        run = os.path.join("runs", name)
        if not os.path.exists(os.path.join(run, "results.json")):
            print(f"| {name} | `{flags}` | not run | | | |")
            continue
        res = json.load(open(os.path.join(run, "results.json")))
        if [p["question"] for p in res["predictions"]] != [p["question"] for p in base["predictions"]]:
            raise SystemExit(f"{run}: not the questions of runs/real")
        gap = last_gap(run, "pretrain")
        s = res["settings"]
        vs16 = pct(metrics.paired_bootstrap(f1(res, "compressed"), f1(base, "compressed"))) if name != "real" else "-"
        print(f"| {name} | `{flags}` | {gap:+.3f} | " + " / ".join(
            f"{100 * s[n]['f1']:.1f}" if n in s else "-" for n in (
            "closed-book", "text-rag", "compressed", "compressed-shuffled")) +
            f" | {pct(res['intervals']['compressed - shuffled']['f1'])} | {vs16} |")


def stage3():
    """Stage-3 variants from one instruct checkpoint: MRR before / after, the paired interval of
    after - before, and end-to-end EM with the after / before picks (eval.py's keys)."""
    em = lambda s, name: f"{100 * s[name]['em']:.1f}" if name in s else "-"
    print("| stage 3 (60 steps x 8 from one instruct checkpoint) | MRR before | MRR after | after - before | "
          "end-to-end EM after / before picks |")
    print("|---|---|---|---|---|")
    for run, label in (("runs/expA", "answer loss only, tau 0.02, lr 2e-4 (the default)"),
                       ("runs/expB_tau1", "answer loss only, tau 1.0"), ("runs/expB_lr1e3", "answer loss only, lr 1e-3"),
                       ("runs/expB_sup", "`--rank-loss supervised` (labels; not the paper)")):
        res = json.load(open(os.path.join(run, "results.json")))
        r, s = res["reranking"], res["settings"]
        print(f"| {label} | {100 * r['before']['mrr']:.1f} | {100 * r['after']['mrr']:.1f} | "
              f"{pct(res['intervals']['MRR: after - before stage 3']['mrr'])} | "
              f"{em(s, 'end-to-end')} / {em(s, 'end-to-end-before')} |")


def meanpool(seeds, name="real"):
    """Real text, mean pooling against memory tokens, seed by seed on the same 100 unseen questions:
    each recipe's F1 and paired compressed - shuffled interval, then mean pooling - memory tokens
    (compressed F1, paired bootstrap over questions)."""
    print("| recipe | seed | stage-1 gap (last) | closed-book / compressed / shuffled F1 | compressed - shuffled |")
    print("|---|---|---|---|---|")
    pairs = []
    for seed in seeds:
        res = {}
        runs = (("memory tokens", f"runs/{name}_seed{seed}"), ("mean pooling", f"runs/{name}_meanpool_seed{seed}"))
        for label, run in runs:
            path = os.path.join(run, "results.json")
            if not os.path.exists(path):
                print(f"| {label} | {seed} | not run ({run}: `bash experiments/real_text.sh FILE meanpool {seed}`) | | |")
                continue
            res[label] = r = json.load(open(path))
            s = r["settings"]
            print(f"| {label} | {seed} | {last_gap(run, 'pretrain'):+.3f} | " + " / ".join(
                f"{100 * s[n]['f1']:.1f}" for n in ("closed-book", "compressed", "compressed-shuffled")) +
                f" | {pct(r['intervals']['compressed - shuffled']['f1'])} |")
        if len(res) < 2:
            continue  # nothing to pair on this seed
        a, b = res["mean pooling"], res["memory tokens"]
        if [p["question"] for p in a["predictions"]] != [p["question"] for p in b["predictions"]]:
            raise SystemExit(f"seed {seed}: {runs[0][1]} and {runs[1][1]} hold different questions")
        pairs.append((seed, metrics.paired_bootstrap(f1(a, "compressed"), f1(b, "compressed"))))
    print()
    if not pairs:
        print("mean pooling - memory tokens: no seed has both runs")
        return
    print("| mean pooling - memory tokens, compressed F1 | " + " | ".join(f"seed {s}" for s, _ in pairs) + " | mean |")
    print("|" + "---|" * (len(pairs) + 2))
    print("| paired over the same questions | " + " | ".join(pct(d) for _, d in pairs) +
          f" | {100 * sum(d['diff'] for _, d in pairs) / len(pairs):+.1f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
