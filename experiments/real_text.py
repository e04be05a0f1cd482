"""Real text: split the official SCP sample (Wikipedia passages with QA pairs) into stage-1
rows (passages 1-700; a passage with more than --max-pairs QA pairs becomes several rows of at
most that many, so no pair is lost and no step pays for a 34-pair target), stage-2 rows (one
question per passage 1-700, its passage as the single document) and evaluation rows (the first
question of each of passages 701-800, never trained on), in the official JSONL formats. The file is not part of the repository.

    python experiments/real_text.py --input scp_sample_800.jsonl --out runs/real/data
    bash experiments/real_text.sh scp_sample_800.jsonl     # the whole run: this, stage 1, stage 2, eval
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="SCP pretraining JSONL (official format)")
    p.add_argument("--out", required=True, help="directory for pretrain/instruct/eval JSONL")
    p.add_argument("--n-train", type=int, default=700, help="passages 1..n-train train; the rest evaluate")
    p.add_argument("--max-pairs", type=int, default=6, help="at most this many QA pairs per stage-1 row "
                   "(a step's cost follows its longest target; 0 keeps each passage whole)")
    args = p.parse_args(argv)
    rows = data.load_rows(args.input, "pretrain")  # validated: file:line errors on bad rows
    if len(rows) <= args.n_train:
        raise SystemExit(f"{args.input}: {len(rows)} rows, need more than --n-train {args.n_train}")
    qa = [r for r in rows if r["kind"] == "qa"]
    if len(qa) != len(rows):
        raise SystemExit(f"{args.input}: expected only qa rows, found {len(rows) - len(qa)} others")

    def single(r):  # the passage's first QA pair, its passage the only document
        return {"question": r["questions"][0], "docs": [r["doc"]], "answer": r["answers"][0]}

    if args.max_pairs < 0:
        raise SystemExit(f"--max-pairs must be 0 (no cap) or more, got {args.max_pairs}")

    def pieces(r):  # the passage's QA pairs, at most --max-pairs to a stage-1 row
        cap = args.max_pairs or len(r["questions"])
        return [{"data_type": "qa", "question": r["questions"][i:i + cap], "answers": r["answers"][i:i + cap],
                 "docs": [r["doc"]]} for i in range(0, len(r["questions"]), cap)]

    out = {"pretrain": [piece for r in rows[:args.n_train] for piece in pieces(r)],
           "instruct": [{**single(r), "gold_answer": r["answers"][0]} for r in rows[:args.n_train]],
           "eval": [{**single(r), "pos_index": [0]} for r in rows[args.n_train:]]}
    os.makedirs(args.out, exist_ok=True)
    for name, items in out.items():
        with open(os.path.join(args.out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(x, ensure_ascii=False) + "\n" for x in items)
        print(f"{os.path.join(args.out, name + '.jsonl')}: {len(items)} rows")


if __name__ == "__main__":
    main()
