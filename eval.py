"""Evaluate a CLaRa checkpoint: answers (EM/F1/CEM), reranking (MRR, Recall@k) and efficiency.

    python train.py    # writes runs/default/{pretrain,instruct,e2e}/ and runs/default/data/
    python eval.py     # runs/default/e2e on the 280 test questions of the embedded corpus
    python eval.py --part dev    # the development questions (for choosing recipes), not the test
    python eval.py --settings compressed end-to-end rerank    # no text references (docs/results.md: 5 of 14 min)
    python eval.py --ckpt runs/x/e2e --data e2e_test.jsonl --limit 0 --out results.json

A number alone says nothing, so every setting runs on the same questions, with the same backbone,
the same generator adapter (theta_g, except the text references), the same prompt and the same
greedy decoding:
    closed-book  no documents: what the generator knows or guesses without retrieval (on the
                 fictional corpus, the floor: nobody can know these people).
    text-rag     the k passages as text (truncated to L tokens), two references, neither the method:
                 "text-rag" is theta_g of the same-budget text run (experiments/text_reference.sh:
                 stage 2 again, same rows and steps, reading text), the fair opponent of compressed;
                 "text-rag-untuned" is the backbone with no adapter reading them.
    compressed   the same k passages as l memory vectors each (paper Sec. 2): what compression keeps.
    shuffled     control of compressed: each question reads the vectors of another question's k
                 passages. The gap compressed - shuffled is what the vectors carry (docs/design.md
                 section 8); no gap means the answers come from style and priors, not the passages.
    end-to-end   the query reasoner scores all N candidates, its top k go to the generator (Sec. 3);
                 with its own shuffled control (another question's picked vectors).
The k passages of text-rag and compressed are the positives (pos_index) plus the first
non-positive candidates until there are k, in candidate order: the same oracle passages, so the
two settings differ only in how the passages reach the generator.
Reranking on the same N candidates: BM25 (lexical baseline), the query reasoner before stage 3
(theta_qr = copy of theta_c of the instruct checkpoint, where stage 3 starts) and after it.
Efficiency: generator prompt positions; median latency per question at batch size 1, compressed
(from cached vectors) vs text RAG, generation included; compression throughput (passages/s).
Answers score the max over all gold aliases, or only the first with --first-alias-only (the
official script's rule).
"""

import argparse
import json
import os
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch

import corpus
import data
import metrics
from backbones import last_logits, past
from clara import QUERY_FIELDS, CLaRa
from runtime import (VectorCache, backbone_dtype, config_differences, load_tensors, pick_device, sync,
                     trained_dtype)

SETTINGS = ("closed-book", "text-rag", "compressed", "end-to-end", "rerank", "efficiency")
PARTS = {"test": "e2e_test.jsonl", "dev": "e2e_heldout.jsonl"}  # corpus.py: held-out people, 40 + 40
RECALL_AT = (1, 3, 5)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="runs/default/e2e", help="checkpoint directory written by train.py")
    p.add_argument("--data", default=None, help="e2e JSONL file or HF dataset id (default: the run's "
                   "embedded corpus, its --part)")
    p.add_argument("--part", choices=tuple(PARTS), default="test",
                   help="which held-out part of the embedded corpus: test (what results report) or dev "
                        "(for choosing recipes)")
    p.add_argument("--text-reference", default="auto", help="checkpoint of the same-budget text-RAG "
                   "reference (experiments/text_reference.sh); auto: <run dir>_text/instruct if it exists")
    p.add_argument("--split", default="train", help="split, when --data is a HF dataset id")
    p.add_argument("--limit", type=int, default=0, help="first LIMIT questions (0 = all: 280 in the "
                   "embedded test part, intervals of about +-3.5 EM points on a gap)")
    p.add_argument("--k", type=int, default=None, help="passages per question (default: checkpoint's top_k)")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--before", default=None, help="checkpoint for the before-stage-3 reranker "
                   "(default: the sibling instruct/ of --ckpt)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16, help="the same for every setting")
    p.add_argument("--latency-questions", type=int, default=10)
    p.add_argument("--first-alias-only", action="store_true", help="official rule: score golds[0] only")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="auto: as trained (the dtype the checkpoint records; one without: train.py's auto rule)")
    p.add_argument("--out", default=None, help="write all results (per-question predictions too) as JSON")
    return p.parse_args(argv)


# --- data ----------------------------------------------------------------------------------------

def default_data(run_dir, part="test"):
    """The run's embedded held-out part: the file train.py wrote, else the corpus written again from
    the run's seed (its training files come out byte-identical: runs older than the test part)."""
    path = os.path.join(run_dir, "data", PARTS[part])
    if os.path.exists(path):
        return path
    args_path, seed = os.path.join(run_dir, "args.json"), 0
    if os.path.exists(args_path):
        with open(args_path) as f:
            seed = json.load(f)["seed"]
    print(f"data: {path} missing; writing the embedded corpus there (seed {seed}"
          f"{'' if os.path.exists(args_path) else ', no args.json'})")
    corpus.write_corpus(os.path.dirname(path), seed=seed)
    return path


def donors(rows, passages):
    """For question i, the next question j (cyclically) whose passages exclude i's own (its
    positives; all its passages when it has no pos_index): metrics.shuffle_donors, the rule of the
    training controls too, so the shuffled control never reads i's own facts."""
    own = [{r["docs"][p] for p in r["pos_index"]} or set(shown) for r, shown in zip(rows, passages)]
    return metrics.shuffle_donors(own, passages, [r["where"] for r in rows])


def batched(rows, size, fn):
    """fn(list of row indices) -> list, over all rows in batches. A failure (out of memory, a bad
    row) stops the run and names the rows at fault: it is never scored as an empty answer."""
    out = []
    for start in range(0, len(rows), size):
        idx = list(range(start, min(start + size, len(rows))))
        try:
            out += fn(idx)
        except (RuntimeError, ValueError) as err:
            raise RuntimeError(f"evaluation failed on {', '.join(rows[i]['where'] for i in idx)}: "
                               f"{type(err).__name__}: {err}") from err
    return out


# --- scores --------------------------------------------------------------------------------------

def answer_metrics(preds, rows, first_only):
    """Per-question and mean EM / F1 / CEM (max over aliases unless first_only)."""
    per = [{"em": metrics.exact_match(p, r["answers"], first_only),
            "f1": metrics.f1_score(p, r["answers"], first_only),
            "cem": metrics.cover_em(p, r["answers"], first_only)} for p, r in zip(preds, rows)]
    return per, {m: metrics.summarize(x[m] for x in per) for m in ("em", "f1", "cem")}


def ranking_metrics(scores, rows):
    """MRR and Recall@1/3/5 of the rankings given by (per question) N scores, over rows with positives."""
    return metrics.ranking_metrics(scores, [r["pos_index"] for r in rows], recall_at=RECALL_AT)


def query_scores(model, rows, cache, size):
    """Cosine scores of theta_qr's query vectors against each row's N cached candidate vectors."""
    def fn(idx):
        q = model.encode_query([rows[i]["question"] for i in idx])  # (B, l, D)
        return [model.score(q[b:b + 1], cache([rows[i]["docs"]]))[0].float().tolist()  # (1, N) -> N
                for b, i in enumerate(idx)]  # per row, so N may differ between rows
    return batched(rows, size, fn)


def qr_start(ckpt) -> str:
    """How the run of ckpt started theta_qr in stage 3 (train.py --qr-init, from its args.json):
    "compressor" (theta_qr <- theta_c, the default) or "scratch" (the instruct checkpoint's zero-init)."""
    path = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "args.json")
    if not os.path.exists(path):
        return "compressor"
    with open(path) as f:
        return json.load(f).get("qr_init", "compressor")


def check_same_config(model, directory, ckpt):
    """Another checkpoint whose adapters eval swaps in must share the model's QUERY_FIELDS."""
    diff = config_differences(directory, model.config, QUERY_FIELDS)
    if diff:
        raise SystemExit(f"{directory}: configuration differs from {ckpt}: {', '.join(diff)}")


def text_reference(args) -> tuple[str | None, str]:
    """(checkpoint, note) of the same-budget text-RAG reference; a checkpoint whose run did not
    train with --instruct-reads text is refused (its label would be wrong)."""
    path = args.text_reference
    if path == "auto":
        path = os.path.join(os.path.dirname(os.path.abspath(args.ckpt)) + "_text", "instruct")
        if not os.path.exists(os.path.join(path, "config.json")):
            return None, f"skipped: no {path} (bash experiments/text_reference.sh RUN writes it)"
    run_args = os.path.join(os.path.dirname(os.path.abspath(path)), "args.json")
    reads = json.load(open(run_args)).get("instruct_reads") if os.path.exists(run_args) else None
    if reads != "text":
        raise SystemExit(f"--text-reference {path}: its run ({run_args}) did not train with --instruct-reads text")
    return path, path


@contextmanager
def generator_of(model, directory):
    """theta_g of another checkpoint in place of the model's for the block (one backbone: the
    tensors are swapped in place and restored after)."""
    own = {n: t.detach().clone() for n, t in model.trainable_state_dict().items()}
    theirs = {n: t for n, t in load_tensors(directory).items() if n.endswith(".generator")}
    model.load_trainable({**own, **theirs}, directory)
    try:
        yield
    finally:
        model.load_trainable(own, "the evaluated checkpoint")


def before_scores(model, rows, cache, args):
    """Scores of the query reasoner where stage 3 starts: the instruct checkpoint with theta_qr <-
    theta_c, or as saved (zero-init) when the run used --qr-init scratch. Returns (scores or None,
    checkpoint or a note)."""
    before = args.before or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "instruct")
    if not os.path.exists(os.path.join(before, "config.json")):
        return None, f"no checkpoint at {before}"
    check_same_config(model, before, args.ckpt)
    after = {n: t.detach().clone() for n, t in model.trainable_state_dict().items()}
    model.load_trainable(load_tensors(before), before)  # one backbone: swap the adapters in place
    start = qr_start(args.ckpt)
    if start == "compressor":
        model.init_query_reasoner()
    try:
        now = model.trainable_state_dict()
        same = all(torch.equal(now[n], after[n]) for n in now if "compressor" in n or n == "memory_tokens")
        own_cache = cache if same else VectorCache(model, rows, batch_size=args.batch_size)  # stage 3 froze theta_c
        where = before if start == "compressor" else f"{before} (theta_qr zero-init: the run used --qr-init scratch)"
        return query_scores(model, rows, own_cache, args.batch_size), where
    finally:
        model.load_trainable(after, args.ckpt)


# --- efficiency ----------------------------------------------------------------------------------

@torch.no_grad()
def prefill_and_decode(model, prompt, new_tokens, device):
    """Seconds of the prefill (one forward over the prompt (T, D), filling the KV cache) and per
    token of new_tokens greedy steps after it, never stopping early: the same token count for every
    setting, so the two settings are timed like for like."""
    with model.adapter("generator"):
        sync(device)
        t0 = time.perf_counter()
        out = model.backbone(inputs_embeds=prompt[None], use_cache=True, **last_logits(model.backbone))  # (1, 1, V)
        nxt = out.logits[:, -1].argmax(-1)  # (1,)
        sync(device)
        t1 = time.perf_counter()
        for _ in range(new_tokens):
            out = model.backbone(input_ids=nxt[:, None], use_cache=True, **past(model.backbone, out))
            nxt = out.logits[:, -1].argmax(-1)
        sync(device)
    return t1 - t0, (time.perf_counter() - t1) / new_tokens


def efficiency(model, rows, passages, cache, args, device):
    """Prompt positions (all questions); prefill time and time per generated token at batch size 1
    (medians), compressed (vectors cached) vs text RAG; the ratios of like-for-like figures."""
    prompts = {"compressed": lambda i: model.prompt_embeds(rows[i]["question"], list(cache([passages[i]])[0])),
               "text-rag": lambda i: model.prompt_embeds(rows[i]["question"], passages[i])}
    positions = {name: [len(fn(i)) for i in range(len(rows))] for name, fn in prompts.items()}
    n, T = min(args.latency_questions, len(rows)), args.max_new_tokens
    times = {name: [] for name in prompts}
    for fn in prompts.values():
        prefill_and_decode(model, fn(0), 2, device)  # warm-up: first-call allocations and kernel choices
    for i in range(n):  # interleaved, so a busy machine slows both settings alike
        for name, fn in prompts.items():
            times[name].append(prefill_and_decode(model, fn(i), T, device))
    out = {name: {"prompt_positions": statistics.mean(positions[name]),
                  "prefill_ms": 1000 * statistics.median(t[0] for t in times[name]),
                  "ms_per_token": 1000 * statistics.median(t[1] for t in times[name])} for name in prompts}
    for e in out.values():
        e["answer_ms"] = e["prefill_ms"] + T * e["ms_per_token"]  # a T-token answer, from the medians
    c, t = out["compressed"], out["text-rag"]
    out.update(latency_questions=n, new_tokens=T, fewer_positions=t["prompt_positions"] / c["prompt_positions"],
               prefill_speedup=t["prefill_ms"] / c["prefill_ms"],
               per_token_speedup=t["ms_per_token"] / c["ms_per_token"], answer_speedup=t["answer_ms"] / c["answer_ms"])
    return out


# --- the run -------------------------------------------------------------------------------------

def compress_candidates(model, rows, args, device):
    """Cache every distinct candidate's vectors, timed: the corpus compression throughput."""
    model.compress([rows[0]["docs"][0]])  # warm-up before the clock
    sync(device)
    t0 = time.perf_counter()
    cache = VectorCache(model, rows, batch_size=args.batch_size)
    sync(device)
    seconds = time.perf_counter() - t0
    return cache, {"passages": len(cache.index), "seconds": seconds, "batch_size": args.batch_size,
                   "passages_per_s": len(cache.index) / seconds}


def answer_settings(model, rows, passages, cache, picks, args, reference=None, seconds=None):
    """Predictions of each requested setting: same questions, prompt and decoding; the generator
    theta_g, except the text references (reference: the same-budget one's checkpoint, or None).
    picks: {"end-to-end": after-stage-3 picks, "end-to-end-before": before-stage-3 picks}.
    seconds, when given, receives each setting's wall time."""
    T, want, questions = args.max_new_tokens, set(args.settings), [r["question"] for r in rows]
    runs, donor_of = {}, {}
    if "closed-book" in want:
        runs["closed-book"] = lambda idx: None
    if "text-rag" in want:
        runs["text-rag-untuned"] = lambda idx: [passages[i] for i in idx]
        if reference:
            runs["text-rag"] = lambda idx: [passages[i] for i in idx]
    if "compressed" in want:
        donor_of["compressed"] = donors(rows, passages)
        runs["compressed"] = lambda idx: cache([passages[i] for i in idx])  # (B, k, l, D)
        # the donor list is bound now, as a default argument: a free name would be read later and
        # see the end-to-end donors the loop below assigns (a control about the wrong passages)
        runs["compressed-shuffled"] = lambda idx, donor=donor_of["compressed"]: cache([passages[donor[i]] for i in idx])
    for name, chosen in picks.items():  # rerank + generate from cached vectors, as CLaRa.answer does
        picked = [[r["docs"][c] for c in cs] for r, cs in zip(rows, chosen)]
        runs[name] = lambda idx, picked=picked: cache([picked[i] for i in idx])
        if name == "end-to-end":  # its control: another question's picked vectors
            donor = donor_of[name] = donors(rows, picked)
            runs[name + "-shuffled"] = lambda idx, picked=picked, donor=donor: cache([picked[donor[i]] for i in idx])
    preds = {}
    for name, docs in runs.items():
        t0 = time.perf_counter()
        with generator_of(model, reference) if name == "text-rag" else nullcontext():
            preds[name] = batched(rows, args.batch_size, lambda idx: model.generate(
                [questions[i] for i in idx], docs(idx), T, docs_as_text=name.startswith("text-rag"),
                adapter=None if name == "text-rag-untuned" else "generator"))
        if seconds is not None:
            seconds[name] = time.perf_counter() - t0
    return preds, donor_of


# The differences the report gives a 95% paired-bootstrap interval: (name, setting a, setting b).
COMPARISONS = [("compressed - shuffled", "compressed", "compressed-shuffled"),
               ("end-to-end - shuffled", "end-to-end", "end-to-end-shuffled"),
               ("end-to-end: after - before stage-3 picks", "end-to-end", "end-to-end-before"),
               ("shuffled - closed-book", "compressed-shuffled", "closed-book"),
               ("compressed - closed-book", "compressed", "closed-book"),
               ("compressed - text RAG (same budget)", "compressed", "text-rag"),
               ("compressed - text RAG (untuned)", "compressed", "text-rag-untuned")]


def intervals(per_question, reranking):
    """Paired bootstrap 95% intervals (metrics.paired_bootstrap) of every gap the report states."""
    out = {}
    for name, a, b in COMPARISONS:
        if a in per_question and b in per_question:
            out[name] = {m: metrics.paired_bootstrap([x[m] for x in per_question[a]], [x[m] for x in per_question[b]])
                         for m in ("em", "f1")}
    rr = {n: reranking.get(n, {}).get("per_question_rr") for n in ("after", "before", "bm25")}
    if rr["after"] and rr["before"]:
        out["MRR: after - before stage 3"] = {"mrr": metrics.paired_bootstrap(rr["after"], rr["before"])}
    if rr["after"] and rr["bm25"]:
        out["MRR: after stage 3 - BM25"] = {"mrr": metrics.paired_bootstrap(rr["after"], rr["bm25"])}
    return out


def evaluate(args):
    """Run every requested setting; return the results dict (printed, and written to --out)."""
    start = time.perf_counter()
    if not os.path.exists(os.path.join(args.ckpt, "config.json")):
        raise SystemExit(f"{args.ckpt}: no checkpoint (config.json) here; run python train.py first")
    with open(os.path.join(args.ckpt, "config.json")) as f:
        k = args.k or json.load(f)["config"]["top_k"]
    source = args.data or default_data(os.path.dirname(os.path.abspath(args.ckpt)), args.part)
    reference, reference_note = text_reference(args) if "text-rag" in args.settings else (None, "not asked")
    rows = data.load_rows(source, "e2e", split=args.split)
    rows = rows[:args.limit] if args.limit else rows
    data.check_candidates(rows, k)  # before loading a model: "file:line: ... fewer than k"
    fields = sorted({r["gold_field"] for r in rows})
    rule = (f"{'the first gold alias only (official rule)' if args.first_alias_only else 'max over all gold aliases'}"
            f" of field {' / '.join(fields)}")
    # train.py's policy and printed reason; --dtype auto: the dtype the checkpoint was trained in
    device, autocast, dtype = pick_device(args.dtype, args.device, trained=trained_dtype(args.ckpt))
    sizes = sorted({len(r["docs"]) for r in rows})
    print(f"checkpoint: {args.ckpt}\ndata: {source}: {len(rows)} questions, k = {k}, N = "
          f"{'-'.join(map(str, sorted({sizes[0], sizes[-1]})))} candidates\nanswers scored against: {rule}")
    model = CLaRa.load(args.ckpt, backbone_dtype=backbone_dtype(device, dtype)).to(device).eval()
    if reference:
        check_same_config(model, reference, args.ckpt)
    chosen = [data.oracle_k(r, k) for r in rows]
    passages = [[r["docs"][c] for c in cs] for r, cs in zip(rows, chosen)]
    res = {"checkpoint": args.ckpt, "data": source, "part": None if args.data else args.part,
           "text_reference": reference_note, "device": str(device), "dtype": dtype, "questions": len(rows),
           "k": k, "alias_rule": rule, "max_new_tokens": args.max_new_tokens, "settings": {}, "reranking": {},
           "passages": "text-rag and compressed read the positives (pos_index) plus the first "
                       "non-positive candidates up to k, in candidate order"}
    want, cache, picks = set(args.settings), None, {}
    seconds = res["seconds"] = {"loading": time.perf_counter() - start}  # where eval.py's time goes
    with torch.no_grad(), autocast():
        if want - {"closed-book", "text-rag"}:
            cache, res["compression"] = compress_candidates(model, rows, args, device)
            seconds["compression"] = res["compression"]["seconds"]
        if want & {"end-to-end", "rerank"}:
            t0 = time.perf_counter()
            after = query_scores(model, rows, cache, args.batch_size)
            before, where = before_scores(model, rows, cache, args)
            if "end-to-end" in want:  # the top k of the scores = the hard top-k's forward
                picks["end-to-end"] = [metrics.rank_from_scores(s)[:k] for s in after]
                if before:
                    picks["end-to-end-before"] = [metrics.rank_from_scores(s)[:k] for s in before]
            seconds["query scores"] = time.perf_counter() - t0
        preds, donor_of = answer_settings(model, rows, passages, cache, picks, args, reference, seconds)
        if "rerank" in want:
            bm25 = [metrics.bm25_scores(r["question"], r["docs"]) for r in rows]
            res["reranking"] = {"bm25": ranking_metrics(bm25, rows),
                                "before": dict(ranking_metrics(before, rows), checkpoint=where)
                                if before else {"skipped": where},
                                "after": dict(ranking_metrics(after, rows), checkpoint=args.ckpt)}
        if "efficiency" in want:
            t0 = time.perf_counter()
            res["efficiency"] = efficiency(model, rows, passages, cache, args, device)
            seconds["efficiency"] = time.perf_counter() - t0
    per_question = {}
    for name, p in preds.items():
        per_question[name], res["settings"][name] = answer_metrics(p, rows, args.first_alias_only)
    res["intervals"] = intervals(per_question, res["reranking"])
    seconds["total"] = time.perf_counter() - start  # the rest (BM25, scoring, intervals) is in the total only
    res["predictions"] = [
        {"where": r["where"], "question": r["question"], "answers": r["answers"], "passages": chosen[i],
         **{f"{name.replace('-', '_')}_picks": p[i] for name, p in picks.items()},
         **{f"{name.replace('-', '_')}_donor": d[i] for name, d in donor_of.items()},
         **{name: {"prediction": preds[name][i], **per_question[name][i]} for name in preds}}
        for i, r in enumerate(rows)]
    return res


def print_report(res):
    print(f"\n{'setting (percent)':38s}{'EM':>7s}{'F1':>7s}{'CEM':>7s}")
    labels = {"closed-book": "closed-book (no documents)", "text-rag": "text RAG, same-budget theta_g",
              "text-rag-untuned": "text RAG, backbone with no adapter",
              "compressed": "compressed (same k, as vectors)", "compressed-shuffled": "  shuffled control",
              "end-to-end": "end-to-end (reasoner picks k of N)", "end-to-end-shuffled": "  shuffled control",
              "end-to-end-before": "end-to-end, before-stage-3 picks"}
    for name, label in labels.items():
        if name in res["settings"]:
            row = res["settings"][name]
            print(f"{label:38s}" + "".join(f"{100 * row[m]:7.1f}" for m in ("em", "f1", "cem")))
    print(f"{res['questions']} questions ({res['data']}), k = {res['k']}, {res['alias_rule']};\n"
          f"{res['passages']}; same-budget text reference: {res['text_reference']}")
    if res["reranking"]:
        print(f"\n{'reranking the same N candidates':38s}{'MRR':>7s}"
              + "".join(f"{'R@%d' % k:>7s}" for k in RECALL_AT))
        for name, label in (("bm25", "BM25"), ("before", "query reasoner before e2e"),
                            ("after", "query reasoner after e2e")):
            r = res["reranking"][name]
            cells = [100 * r[m] for m in ("mrr", *(f"recall@{k}" for k in RECALL_AT)) if m in r]
            print(f"{label:38s}" + ("".join(f"{c:7.1f}" for c in cells) or f"  skipped: {r['skipped']}"))
        left = res["reranking"]["bm25"].get("without_positives")
        if left:  # never silently: the rankings cover only the questions with a positive
            print(f"  over the {res['reranking']['bm25']['questions']} questions with a positive; "
                  f"{left} without one have no rank and are left out")
    if res["intervals"]:
        print(f"\ndifferences, points, with paired-bootstrap 95% intervals over the {res['questions']} questions")
        for name, by_metric in res["intervals"].items():
            cells = [f"{m.upper()} {100 * v['diff']:+6.1f} [{100 * v['lo']:+6.1f}, {100 * v['hi']:+6.1f}]"
                     for m, v in by_metric.items()]
            print(f"  {name:42s} " + "   ".join(cells))
    if "efficiency" in res:
        e, c = res["efficiency"], res["compression"]
        print(f"\nefficiency (batch size 1, medians of {e['latency_questions']} questions; decoding timed "
              f"for {e['new_tokens']} new tokens in both settings)")
        for name in ("compressed", "text-rag"):
            print(f"  {name:11s} {e[name]['prompt_positions']:7.1f} prompt positions  prefill "
                  f"{e[name]['prefill_ms']:7.1f} ms  {e[name]['ms_per_token']:6.1f} ms/token  "
                  f"{e['new_tokens']}-token answer {e[name]['answer_ms']:7.1f} ms")
        print(f"  text RAG / compressed: {e['fewer_positions']:.1f}x the positions, prefill "
              f"{e['prefill_speedup']:.2f}x, per token {e['per_token_speedup']:.2f}x, "
              f"{e['new_tokens']}-token answer {e['answer_speedup']:.2f}x the time (vectors cached)")
        print(f"  compression: {c['passages_per_s']:.1f} passages/s ({c['passages']} distinct passages "
              f"in {c['seconds']:.2f} s, batch {c['batch_size']})")
    t = res.get("seconds")  # absent from results written before it was recorded
    if t:
        print(f"\ntime: {t['total'] / 60:.1f} min in all; " + ", ".join(
            f"{name} {sec / 60:.1f}" for name, sec in t.items() if name != "total") + " min")


def main(argv=None):
    args = parse_args(argv)
    res = evaluate(args)
    print_report(res)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"\nresults with per-question predictions: {args.out}")
    return res


if __name__ == "__main__":
    main()
