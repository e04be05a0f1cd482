"""Plot one stage's learning curves from the metrics.jsonl that train.py writes.

    python plot_curves.py runs/default/metrics.jsonl --out docs/e2e_curve.png
    python plot_curves.py runs/default/metrics.jsonl --stage pretrain --out runs/default/pretrain.png

Stage e2e (default): the answer loss (training batch and held-out) and the held-out MRR and hit@k
against step, a small-scale version of the paper's end-to-end training curves. Stages pretrain and
instruct: the held-out loss with each passage's own memory vectors and with another passage's, and
their gap, which is what the vectors carry (README, "Results"). matplotlib is optional for clara,
so it is imported only here.
"""

import argparse
import json
import os

import data

# (panel title, y label, y limits, [(metrics key, legend label, line style)]) per stage, left then right
PANELS = {
    "e2e": [("answer loss", "cross-entropy per answer token", None,
             [("loss", "train (one batch)", "-"), ("eval_loss", "held-out", "-")]),
            ("held-out ranking of the N candidates", "", (0, 1.02),
             [("eval_mrr", "MRR", "-"), ("eval_hit", "hit@k", "-")])],
    "pretrain": [("loss", "cross-entropy per target token", None,
                  [("loss", "train (one batch, + lambda MSE)", "-"), ("eval_own", "held-out, own vectors", "-"),
                   ("eval_shuffled", "held-out, another passage's vectors", "--")]),
                 ("held-out gap: what the vectors carry", "shuffled - own", None, [("gap", "gap", "-")])],
}
PANELS["instruct"] = PANELS["pretrain"]


def read_stage(path: str, stage: str) -> list[dict]:
    """Rows of `stage`, sorted by step. A resumed run may log a step twice: the last row wins."""
    keys = [key for *_, series in PANELS[stage] for key, _, _ in series]
    by_step, seen = {}, set()
    try:
        rows = data.read_jsonl(path)  # (line, object) pairs; file:line errors for bad JSON
    except ValueError as err:
        raise SystemExit(str(err)) from None
    for n, rec in rows:
        if "stage" not in rec or "step" not in rec:
            raise SystemExit(f"{path}:{n}: expected an object with 'stage' and 'step'")
        seen.add(rec["stage"])
        if rec["stage"] != stage:
            continue
        missing = [k for k in keys if k not in rec]
        if missing:
            raise SystemExit(f"{path}:{n}: stage {stage} row has no {', '.join(map(repr, missing))}")
        by_step[rec["step"]] = rec
    if not by_step:
        raise SystemExit(f"{path}: no rows for stage {stage!r} (stages in the file: "
                         f"{', '.join(sorted(seen)) or 'none'})")
    return [by_step[s] for s in sorted(by_step)]


def top_k_of(path: str) -> str:
    """k for the hit@k label, from the args.json train.py writes beside metrics.jsonl."""
    try:
        with open(os.path.join(os.path.dirname(path), "args.json")) as f:
            return str(json.load(f)["top_k"])
    except (OSError, ValueError, KeyError):
        return "k"


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", help="metrics.jsonl written by train.py")
    p.add_argument("--stage", choices=sorted(PANELS), default="e2e")
    p.add_argument("--out", help="PNG to write (default: STAGE_curve.png beside the metrics file)")
    args = p.parse_args(argv)
    rows = read_stage(args.metrics, args.stage)  # data errors first, even without matplotlib
    out = args.out or os.path.join(os.path.dirname(args.metrics), f"{args.stage}_curve.png")
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plot_curves.py needs matplotlib, which clara itself does not: "
                         "pip install matplotlib") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, (title, ylabel, ylim, series) in zip(axes, PANELS[args.stage]):
        for key, label, style in series:
            ax.plot(steps, [r[key] for r in rows], style, marker="o", ms=3,
                    label=label.replace("hit@k", f"hit@{top_k_of(args.metrics)}"))
        if key == "gap":
            ax.axhline(0, color="grey", lw=0.8)  # no gap: the vectors carry nothing measurable
        ax.set(title=title, xlabel="step", ylabel=ylabel, ylim=ylim)
        ax.legend()
    fig.suptitle(f"stage {args.stage}: {args.metrics}")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out} ({len(rows)} logged steps of stage {args.stage})")
    return out


if __name__ == "__main__":
    main()
