"""One recipe, several training seeds: does each headline claim survive the seed?

For each seed S this runs `python train.py --budget B --seed S --out runs/<name>_seedS --resume`, its
same-budget text reference (`bash experiments/text_reference.sh runs/<name>_seedS`) and then
`python eval.py --ckpt runs/<name>_seedS/e2e --out runs/<name>_seedS/results.json` (the test part of
the embedded corpus), skipping any step already done (and continuing an interrupted training run
from its last checkpoint), and prints one table: per figure, each seed's value (for a
difference, beside its paired-bootstrap 95% interval over questions, from results.json's
"intervals"), the mean over seeds and the seed spread (min..max). A claim (a difference expected
to be positive) holds only when the mean is positive and no seed's value is at or below zero; the
question-level intervals say how sure each seed is, the spread how much the training run moves it.

train.py's --seed seeds the embedded corpus too, so each seed also draws its own people, questions
and held-out set: the spread covers both the data draw and the training run.

    python experiments/seeds.py --seeds 0 1 2 --budget 20          # per seed: train, text reference, eval (docs/results.md)
    python experiments/seeds.py --seeds 0 1 2 --budget 60 --name budget60
    python experiments/seeds.py --seeds 0 1 --table-only           # print the table of finished seeds
    python experiments/seeds.py --table-only --plot docs/seeds.png  # and draw each seed's training curves
    python experiments/seeds.py --seeds 0 1 --name meanpool --train-args="--compressor mean-pool"
    python experiments/seeds.py --seeds 0 1 --name meanpool --table-only --versus budget20  # recipe against recipe
    python experiments/seeds.py --seeds 1 --budget 60 --compression-only   # stages 1-2, compressed vs shuffled

--compression-only measures the compression claim alone: stages 1 and 2 (`train.py --stage pretrain`,
then `--stage instruct --init RUN/pretrain`: the same batches as `--stage all`, each stage draws its
own), no stage 3 and no text reference, then `eval.py --ckpt RUN/instruct --settings compressed`
(compressed and its shuffled control) into RUN/results_instruct.json, which the table and --versus
then read. A later full run of the seed continues from those stages. With --text-reference it also
trains the seed's same-budget text reference and runs `eval.py --ckpt RUN/instruct --settings
compressed text-rag` into RUN/results_instruct_text.json: compressed, shuffled and text RAG after
stage 2, the three read by generators of the same rows and steps.

    python experiments/seeds.py --seeds 0 1 --budget 60 --compression-only --text-reference
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # train.py and eval.py live here
sys.path.insert(0, ROOT)
import metrics  # noqa: E402
# (label, how to read one run's value, in points): levels, then the claims (differences)
LEVELS = [("closed-book EM", ("settings", "closed-book", "em")),
          ("text RAG EM, same-budget theta_g", ("settings", "text-rag", "em")),
          ("text RAG EM, untuned backbone", ("settings", "text-rag-untuned", "em")),
          ("compressed EM", ("settings", "compressed", "em")),
          ("compressed, shuffled control EM", ("settings", "compressed-shuffled", "em")),
          ("end-to-end EM", ("settings", "end-to-end", "em")),
          ("end-to-end, shuffled control EM", ("settings", "end-to-end-shuffled", "em")),
          ("MRR of BM25 over the same N", ("reranking", "bm25", "mrr")),
          ("MRR before stage 3", ("reranking", "before", "mrr")),
          ("MRR after stage 3", ("reranking", "after", "mrr"))]
CLAIMS = [("compressed - shuffled (EM)", "compressed - shuffled", "em"),
          ("compressed - text RAG, same budget (EM)", "compressed - text RAG (same budget)", "em"),
          ("end-to-end - shuffled (EM)", "end-to-end - shuffled", "em"),
          ("end-to-end: after - before stage-3 picks (EM)", "end-to-end: after - before stage-3 picks", "em"),
          ("MRR: after - before stage 3", "MRR: after - before stage 3", "mrr")]


def level(res: dict, path: tuple):
    """A level in points, or None where the run has no such setting."""
    section, name, metric = path
    value = res.get(section, {}).get(name, {}).get(metric)
    return None if value is None else 100 * value


def difference(res: dict, label: str, metric: str):
    """(diff, lo, hi) in points from results.json's "intervals", or None where it is absent."""
    d = res.get("intervals", {}).get(label, {}).get(metric)
    return None if d is None else tuple(100 * d[key] for key in ("diff", "lo", "hi"))


def verdict(values: list) -> str:
    """The rule for a claim (expected positive) over the seeds that measured it."""
    if len(values) < 2:
        return f"too few seeds ({len(values)})"
    mean, lo, hi = sum(values) / len(values), min(values), max(values)
    if mean > 0 and lo > 0:
        return "holds"
    if mean < 0 and hi < 0:
        return "reversed: negative for every seed"
    return f"does not hold: the seed spread {lo:+.1f}..{hi:+.1f} reaches zero"


def table(runs: dict) -> str:
    """runs: {seed: results dict} -> the markdown table (levels, then claims with a verdict)."""
    seeds = sorted(runs)
    head = "| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | seed spread | verdict |"
    lines = [head, "|" + "---|" * (len(seeds) + 4)]

    def summary(values, sign):  # "mean | min..max", "+" shown on differences only
        if not values:
            return "- | -"
        f = f"{{:{sign}.1f}}".format
        return f"{f(sum(values) / len(values))} | {f(min(values))}..{f(max(values))}"

    for label, path in LEVELS:
        values = {s: level(runs[s], path) for s in seeds}
        cells = [f"{v:.1f}" if v is not None else "-" for v in values.values()]
        present = [v for v in values.values() if v is not None]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {summary(present, '')} | |")
    for label, key, metric in CLAIMS:
        values = {s: difference(runs[s], key, metric) for s in seeds}
        cells = [f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]" if d is not None else "-"
                 for d, lo, hi in (v or (None, None, None) for v in values.values())]
        present = [v[0] for v in values.values() if v is not None]
        beyond = sum(1 for v in values.values() if v is not None and v[1] > 0)
        note = f" ({beyond} of {len(present)} seeds beyond their interval)" if present else ""
        lines.append(f"| **{label}** | " + " | ".join(cells) + f" | {summary(present, '+')} | "
                     f"{verdict(present) if present else 'not measured'}{note} |")
    return "\n".join(lines)


# (label, setting) whose EM --versus compares between two recipes, question by question
VERSUS = [("compressed EM", "compressed"), ("end-to-end EM", "end-to-end")]


def versus(runs: dict, others: dict, name: str, other: str) -> str:
    """Recipe `name` minus recipe `other`, seed by seed on the same questions (the same seed draws
    the same corpus): per setting both evaluated, each seed's paired-bootstrap difference, mean and verdict."""
    seeds = sorted(set(runs) & set(others))
    if not seeds:
        raise SystemExit(f"--versus {other}: no seed evaluated for both {name} and {other}")
    lines = [f"| {name} - {other} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | verdict |",
             "|" + "---|" * (len(seeds) + 3)]
    for label, setting in VERSUS:
        if any(setting not in runs[s]["settings"] or setting not in others[s]["settings"] for s in seeds):
            continue  # e.g. --compression-only: no end-to-end answers
        cells, values, beyond = [], [], 0
        for s in seeds:
            a, b = runs[s]["predictions"], others[s]["predictions"]
            if [q["question"] for q in a] != [q["question"] for q in b]:
                raise SystemExit(f"--versus {other}: seed {s}'s two results.json hold different questions "
                                 f"({runs[s]['data']} and {others[s]['data']}): nothing to pair")
            d = metrics.paired_bootstrap([q[setting]["em"] for q in a], [q[setting]["em"] for q in b])
            values.append(100 * d["diff"])
            beyond += d["lo"] > 0
            cells.append(f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {sum(values) / len(values):+.1f} | "
                     f"{verdict(values)} ({beyond} of {len(seeds)} seeds beyond their interval) |")
    return "\n".join(lines)


def results_path(out: str, compression_only: bool, text: bool = False) -> str:
    if not compression_only:
        return os.path.join(out, "results.json")
    return os.path.join(out, "results_instruct_text.json" if text else "results_instruct.json")


def run_seed(seed: int, out: str, args):
    """Train one seed, its same-budget text reference, and evaluate; each command is printed before
    it runs, and a finished step (its DONE file or results file) is not run again. train.py runs with
    --resume: an interrupted seed (a longer rung takes hours on a CPU) continues from its last saved
    step, and a run directory of another configuration is refused. Explicit --steps in --train-args
    replace --budget (train.py takes one or the other). --compression-only: stages 1-2 and the
    compressed setting alone (module docstring)."""
    train_args, eval_args = shlex.split(args.train_args), shlex.split(args.eval_args)
    budget = [] if "--steps" in train_args else ["--budget", str(args.budget)]
    train = [sys.executable, "train.py", *budget, "--seed", str(seed), "--out", out, "--resume", *train_args]
    result = results_path(out, args.compression_only, args.text_reference)
    text = [(os.path.join(out + "_text", "instruct", "DONE"), ["bash", "experiments/text_reference.sh", out])]
    if args.compression_only:
        settings = ["compressed", "text-rag"] if args.text_reference else ["compressed"]
        steps = [(os.path.join(out, "pretrain", "DONE"), [*train, "--stage", "pretrain"]),
                 (os.path.join(out, "instruct", "DONE"),
                  [*train, "--stage", "instruct", "--init", os.path.join(out, "pretrain")]),
                 *(text if args.text_reference else []),
                 (result, [sys.executable, "eval.py", "--ckpt", os.path.join(out, "instruct"),
                           "--settings", *settings, "--out", result, *eval_args])]
    else:
        steps = [(os.path.join(out, "e2e", "DONE"), train), *text,
                 (result, [sys.executable, "eval.py", "--ckpt", os.path.join(out, "e2e"), "--out", result,
                           *eval_args])]
    for done, cmd in steps:
        if os.path.exists(done):
            print(f"{done}: exists, not re-run")
            continue
        print("+ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


CURVES = [("pretrain", "gap", "stage 1: held-out gap\n(loss with another passage's vectors - own)"),
          ("instruct", "gap", "stage 2: held-out gap"),
          ("e2e", "eval_mrr", "stage 3: held-out MRR of the N")]


def plot(run_dirs: dict, path: str):
    """One panel per stage, one line per seed: each run's metrics.jsonl, as train.py logged it.
    matplotlib is optional for clara, so it is imported only here."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for seed, out in sorted(run_dirs.items()):
        with open(os.path.join(out, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
        for ax, (stage, key, title) in zip(axes, CURVES):
            points = [(r["step"], r[key]) for r in records if r["stage"] == stage and key in r]
            ax.plot(*zip(*points), marker=".", label=f"seed {seed}")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    for ax in axes[:2]:
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")
    return fig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=20, help="train.py --budget (20 is the default run)")
    p.add_argument("--name", default=None, help="runs/<name>_seedS (default: budget<B>)")
    p.add_argument("--runs", default=os.path.join(ROOT, "runs"), help="where the run directories go")
    p.add_argument("--table-only", action="store_true", help="train nothing; table of the seeds already evaluated")
    p.add_argument("--train-args", default="", help='more train.py flags, one string '
                   '(e.g. --train-args="--compressor mean-pool"; with --steps, no --budget is passed)')
    p.add_argument("--eval-args", default="", help='more eval.py flags, one string (e.g. --eval-args="--limit 4")')
    p.add_argument("--versus", default=None, metavar="NAME",
                   help="also compare with recipe runs/NAME_seedS, seed by seed, question by question")
    p.add_argument("--compression-only", action="store_true",
                   help="stages 1-2 and eval.py --settings compressed only, into RUN/results_instruct.json")
    p.add_argument("--text-reference", action="store_true",
                   help="with --compression-only: also the same-budget text reference, and eval.py --settings "
                   "compressed text-rag, into RUN/results_instruct_text.json")
    p.add_argument("--plot", default=None, help="also draw each seed's training curves into this PNG (matplotlib)")
    args = p.parse_args(argv)
    if args.text_reference and not args.compression_only:
        p.error("--text-reference goes with --compression-only (a full run always trains its text reference)")
    name = args.name or f"budget{args.budget}"
    runs = {}
    for seed in args.seeds:
        out = os.path.join(args.runs, f"{name}_seed{seed}")
        path = results_path(out, args.compression_only, args.text_reference)
        if not os.path.exists(path):
            if args.table_only:
                print(f"{path}: missing, seed {seed} left out of the table")
                continue
            run_seed(seed, out, args)
        else:
            print(f"{path}: exists, seed {seed} not re-run")
        with open(path) as f:
            runs[seed] = json.load(f)
    if not runs:
        missing = os.path.basename(results_path("", args.compression_only, args.text_reference))
        raise SystemExit(f"no seed has a {missing}: nothing to tabulate")
    print(f"\n{name}, seeds {' '.join(map(str, sorted(runs)))}: points; a difference is 'value [95% interval "
          f"over questions]'; a claim holds when its mean is positive and no seed's value is at or below zero\n")
    print(table(runs))
    if args.versus:
        others = {}
        for seed in runs:
            path = results_path(os.path.join(args.runs, f"{args.versus}_seed{seed}"), args.compression_only,
                                args.text_reference)
            if os.path.exists(path):
                with open(path) as f:
                    others[seed] = json.load(f)
        print("\n" + versus(runs, others, name, args.versus))
    if args.plot:
        plot({seed: os.path.join(args.runs, f"{name}_seed{seed}") for seed in runs}, args.plot)


if __name__ == "__main__":
    main()
