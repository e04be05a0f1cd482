"""EM against training minutes, one point per run directory (its train_seconds and results.json,
as experiments/budget.sh writes them); the intervals are in each run's eval.py report.

    python experiments/budget_plot.py runs/budget20 runs/budget60 --out docs/budget.png
"""
import argparse
import json
import os

SERIES = [("text-rag", "text RAG (5 passages as text)", "-"), ("compressed", "compressed (the same 5, 16x)", "-"),
          ("end-to-end", "end-to-end (query reasoner picks 5 of 20)", "-"),
          ("compressed-shuffled", "compressed, shuffled control", "--"), ("closed-book", "closed-book", ":")]


def read_run(directory):
    """-> (training minutes, results dict); errors name the missing file."""
    paths = [os.path.join(directory, n) for n in ("train_seconds", "results.json")]
    for p in paths:
        if not os.path.exists(p):
            raise SystemExit(f"{p}: missing (run experiments/budget.sh, which writes it)")
    with open(paths[0]) as f:
        seconds = float(f.read().strip())
    with open(paths[1]) as f:
        return seconds / 60, json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="docs/budget.png")
    args = p.parse_args(argv)
    import matplotlib  # optional: only this script needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = sorted(read_run(d) for d in args.runs)
    minutes = [m for m, _ in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label, style in SERIES:
        ax.plot(minutes, [100 * r["settings"][key]["em"] for _, r in points], style, marker="o", label=label)
    for m, r in points:
        print(f"{m:6.1f} min  " + "  ".join(f"{key} {100 * r['settings'][key]['em']:.1f}" for key, _, _ in SERIES)
              + f"  MRR after/before {r['reranking']['after']['mrr'] * 100:.1f}/"
                f"{r['reranking']['before']['mrr'] * 100:.1f}")
    ax.set_xlabel("training minutes (2-core CPU, bf16 autocast)")
    ax.set_ylabel("EM on 200 held-out questions")
    ax.set_title("what more training buys (train.py --budget)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
