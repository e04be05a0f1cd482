"""Figures for docs/ask.md: the routes of `ask.py query` over a whole corpus, and search speed.

    python experiments/bench_ask.py corpus --ckpt runs/default/e2e     # (a) embedded corpus
    python experiments/bench_ask.py corpus --ckpt runs/default/e2e --scp scp_sample_800.jsonl  # + real text
    python experiments/bench_ask.py speed                              # (b) 10^5 random vectors
    python experiments/bench_ask.py speed --n 2000 --faiss flat        # a quick check of the script
    python experiments/bench_ask.py speed --index runs/notes_index     # (b) on your own index

(a) corpus: every held-out passage of the embedded corpus (corpus.build_world with the run's seed:
80 passages no training row contains) goes into one index, and every held-out question (the rows
of corpus.e2e_rows, one per passage and fact) is asked of all of them, not of 20 candidates; with
--scp, the same on real text: the SCP sample's passages after the first 700 (never trained on by
experiments/real_text.sh) and every QA pair of theirs. Three routes, each as `ask.py query` runs it:
BM25 alone (metrics.BM25 over the indexed texts, the generator reads its top k), the query
reasoner alone (the default: cosine of theta_qr against theta_c vectors over the whole index), and
BM25 then the query reasoner (--first-stage bm25: BM25's top N, the query reasoner picks k of
them). Recall@1, Recall@5 and MRR are per question at the passage level (a passage cut into chunks is found
where its first chunk ranks; BM25 then the query reasoner ranks only its N, so a gold outside them
counts as not found); EM and F1 score the generator's answer from the k passages the route picks.
The differences between routes come with 95% paired-bootstrap intervals over questions.

(b) speed: n random vectors of the real size (l = 8, D = 576: SmolLM2-135M at 16x) written as an
index with the same code as `ask.py index`, then searched with the exact chunked search and with
FAISS (flat, ivf, hnsw) at their default settings (ask.faiss_index); a FAISS build time
includes writing the index to disk, as `ask.py query --faiss` does. The vectors are
clustered like a corpus of topics: c clusters (default 1000, --clusters 0 for pure Gaussian noise),
a vector = its cluster's centre + the same amount of noise (cosine ~0.5 within a cluster, ~0
across); queries are drawn the same way. FAISS recall@10 = the fraction of the exact top 10 that
FAISS returns. Queries per second at batch 1 (one question at a time, as `ask.py query` does) and
at batch --queries (a benchmark or an evaluation run). With --index, the same figures on an
index built by `ask.py index`, queried with its own passages' vectors: each finds itself first,
so recall@10 measures the other nine neighbours, on real memory vectors.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ask  # noqa: E402
import corpus  # noqa: E402
import data  # noqa: E402
import metrics  # noqa: E402
from clara import CLaRa  # noqa: E402


# --- (a) routes over a whole corpus: BM25, the query reasoner, BM25 then the query reasoner ----

ROUTES = ("BM25 alone", "query reasoner alone", "BM25 then query reasoner")
COMPARED = {"BM25 then QR - QR alone": ("BM25 then query reasoner", "query reasoner alone"),
            "BM25 then QR - BM25 alone": ("BM25 then query reasoner", "BM25 alone")}  # QR: query reasoner


def passage_ranking(chunk_ids, owner):
    """Chunk ids, best first -> passage ids, best first (each passage where its first chunk is)."""
    seen = {}
    for i in chunk_ids:
        seen.setdefault(owner[i], None)
    return list(seen)


def embedded_questions(args):
    """The embedded corpus's held-out passages and questions: (passages, [(question, gold passage,
    gold answers)]), with the corpus seed of the checkpoint's run."""
    args_path = os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "args.json")
    seed = json.load(open(args_path))["seed"] if os.path.exists(args_path) else args.seed
    world = corpus.build_world(seed)
    passages = world.passages("heldout")
    rows = corpus.e2e_rows(world, "heldout", seed=seed)
    items = [(r["question"], passages.index(r["docs"][r["pos_index"][0]]), [r["gold_answer"]]) for r in rows]
    return f"embedded corpus (seed {seed}), held-out", passages, items


def scp_questions(args):
    """Real text: the SCP sample's passages after the first --scp-train (never trained on by
    experiments/real_text.sh) and every QA pair of theirs."""
    rows = data.load_rows(args.scp, "pretrain")[args.scp_train:]
    if not rows:
        raise SystemExit(f"{args.scp}: no rows after the first --scp-train {args.scp_train}")
    passages = [r["doc"] for r in rows]
    items = [(q, passages.index(r["doc"]), [a]) for r in rows if r["kind"] == "qa"
             for q, a in zip(r["questions"], r["answers"])]
    return f"SCP sample, passages {args.scp_train + 1}-{args.scp_train + len(rows)}", passages, items


@torch.no_grad()
def run_routes(model, index, questions, args):
    """Per route: each question's passage ranking and the generator's answer from the k passages
    the route picks (BM25 alone: BM25's top k; the others: ask.candidates then ask.pick_top_k, as
    `ask.py query` does)."""
    owner = [int(p["source"].split()[1]) for p in index.passages]  # chunk -> passage
    k, n = args.k or model.config.top_k, args.n
    out = {route: {"ranking": [], "answer": []} for route in ROUTES}
    for b in range(0, len(questions), args.batch_size):
        qs = questions[b:b + args.batch_size]
        _, bm25_ids = ask.bm25_search(index, qs, len(index))  # (B, all chunks)
        qr_s, qr_ids = ask.search(model, index, qs, len(index))  # (B, all chunks), best first
        first_s, first_ids = ask.candidates(model, index, qs, n, first_stage="bm25")  # (B, N), BM25's order
        reranked = first_ids.gather(1, first_s.argsort(dim=1, descending=True))  # (B, N) by the reasoner
        reads = {"BM25 alone": index.vectors(bm25_ids[:, :k]).to(model.device, model.memory_tokens.dtype),
                 "query reasoner alone": ask.pick_top_k(model, index, qr_s[:, :n], qr_ids[:, :n], k)[1],
                 "BM25 then query reasoner": ask.pick_top_k(model, index, first_s, first_ids, k)[1]}
        for route, ids in zip(ROUTES, (bm25_ids, qr_ids, reranked)):  # a gold outside N is not found
            out[route]["ranking"] += [passage_ranking(r, owner) for r in ids.tolist()]
            out[route]["answer"] += model.generate(qs, reads[route], args.max_new_tokens)  # (B, k, l, D) read
    return out


def per_question(route, items):
    """{metric: one value per question} in percent."""
    golds, answers = [g for _, g, _ in items], [a for _, _, a in items]
    return {"R@1": [100 * metrics.recall_at_k(r, [g], 1) for r, g in zip(route["ranking"], golds)],
            "R@5": [100 * metrics.recall_at_k(r, [g], 5) for r, g in zip(route["ranking"], golds)],
            "MRR": [100 * metrics.reciprocal_rank(r, [g]) for r, g in zip(route["ranking"], golds)],
            "EM": [100 * metrics.exact_match(p, a) for p, a in zip(route["answer"], answers)],
            "F1": [100 * metrics.f1_score(p, a) for p, a in zip(route["answer"], answers)]}


def routes(args):
    model = CLaRa.load(args.ckpt).eval()
    sets = [embedded_questions(args)] + ([scp_questions(args)] if args.scp else [])
    k = args.k or model.config.top_k
    print(f"checkpoint {args.ckpt}; each question searched against every passage of its set; "
          f"N = {args.n} candidates, the generator reads k = {k}; intervals: paired bootstrap (95%)")
    table = []
    for name, passages, items in sets:
        items = items[:args.limit or None]
        with tempfile.TemporaryDirectory() as out:
            index = ask.Index.build(model, [(p, f"passage {i}") for i, p in enumerate(passages)], out + "/idx")
            values = {route: per_question(v, items)
                      for route, v in run_routes(model, index, [q for q, _, _ in items], args).items()}
        table.append((f"{name}: {len(passages)} passages ({len(index)} chunks), {len(items)} questions", values))
    cols = ("R@1", "R@5", "MRR", "EM", "F1")
    print(f"{'route':44s}" + "".join(f"{c:>24s}" for c in cols))
    for title, values in table:
        print(title)
        for route in ROUTES:
            print(f"  {route:42s}" + "".join(f"{metrics.summarize(values[route][c]):24.1f}" for c in cols))
        for label, (a, b) in COMPARED.items():
            diffs = [metrics.paired_bootstrap(values[a][c], values[b][c]) for c in cols]
            print(f"  {label:42s}" + "".join(f"{d['diff']:+7.1f} [{d['lo']:+6.1f}, {d['hi']:+6.1f}]" for d in diffs))


# --- (b) speed at 10^5 passages ------------------------------------------------------------------

def random_vectors(n, l, D, clusters, seed, centre_seed):
    """encode(texts) for Index.write: text i -> vector i (l, D) of a fixed random set of n, each
    the centre of a random one of `clusters` clusters (drawn from centre_seed) + N(0, 1) noise."""
    centres = torch.randn(max(clusters, 1), l, D, generator=torch.Generator().manual_seed(centre_seed))
    centres = centres * (clusters > 0)  # (c, l, D); all zero when unclustered
    assign = torch.randint(0, max(clusters, 1), (n,), generator=torch.Generator().manual_seed(seed))  # (n,)

    def encode(texts):
        ids = torch.tensor([int(t) for t in texts])  # (b,)
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(ids[0]))  # batch by batch, reproducible
        return centres[assign[ids]] + torch.randn(len(ids), l, D, generator=g)  # (b, l, D)
    return encode


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def random_index(args, out):
    """Write n clustered random vectors as an index in `out`; return it and Q queries (Q, l, D)."""
    l, D, n = args.l, args.D, args.n
    records = [{"text": str(i), "source": "random", "chunk": 1, "of": 1} for i in range(n)]
    cfg = {"checkpoint": None, "l": l, "D": D, "config": None, "duplicates_dropped": 0}
    fp = {"random": [args.seed, args.clusters]}
    corpus_vectors = random_vectors(n, l, D, args.clusters, args.seed, args.seed)
    _, build_s = timed(lambda: ask.Index.write(out, records, fp, corpus_vectors, cfg, args.shard_size, 1024))
    queries = random_vectors(args.queries, l, D, args.clusters, args.seed + 1, args.seed)  # same clusters
    print(f"{n} random vectors (l = {l}, D = {D}, {args.clusters} clusters), {l * D * 2 * n / 2**20:.0f} MiB "
          f"float16, written in {build_s:.1f} s; {args.queries} queries drawn the same way")
    return ask.Index.open(out), queries([str(i) for i in range(args.queries)])


def speed(args):
    if args.threads:  # torch and FAISS alike
        torch.set_num_threads(args.threads)
        ask.import_faiss().omp_set_num_threads(args.threads) if args.faiss else None
    out = args.index or args.out or tempfile.mkdtemp(prefix="bench_ask_")
    if args.index:  # your own index: its passages' own vectors as queries (each finds itself first)
        index = ask.Index.open(args.index)
        q = index.vectors(torch.linspace(0, len(index) - 1, args.queries).long())  # (Q, l, D)
        print(f"{args.index}: {len(index)} passages (l = {index.l}, D = {index.D}); {len(q)} queries: "
              f"the vectors of evenly spaced passages of it")
    else:
        index, q = random_index(args, out)
    print(f"{index.n_shards} shards; {os.cpu_count()} CPUs, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")
    ask.search_vectors(index, q[:1], 10)  # warm the page cache: every run then reads shards from memory
    exact, batch_s = timed(lambda: ask.search_vectors(index, q, 10))  # (Q, 10) twice
    _, one_s = timed(lambda: [ask.search_vectors(index, q[i:i + 1], 10) for i in range(args.single)])
    print(f"{'search':28s} {'build s':>8s} {'q/s batch 1':>12s} {f'q/s batch {len(q)}':>14s} "
          f"{'recall@10':>10s}")
    print(f"{'exact, chunked (ask.py)':28s} {'-':>8s} {args.single / one_s:12.1f} "
          f"{len(q) / batch_s:14.1f} {1.0:10.3f}")
    for kind in args.faiss:
        cached = os.path.join(out, f"faiss-{kind}.index")
        if os.path.exists(cached):  # a kept --out from an earlier run: time a real build
            os.remove(cached)
        _, fbuild_s = timed(lambda: ask.faiss_index(index, kind))
        (_, ids), fbatch_s = timed(lambda: ask.search_vectors(index, q, 10, faiss=kind))
        _, fone_s = timed(lambda: [ask.search_vectors(index, q[i:i + 1], 10, faiss=kind)
                                   for i in range(args.single)])
        recall = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact[1].tolist())) / ids.numel()
        print(f"{'FAISS ' + kind:28s} {fbuild_s:8.1f} {args.single / fone_s:12.1f} {len(q) / fbatch_s:14.1f} "
              f"{recall:10.3f}")
        index.faiss.pop(kind)  # free its float32 copy before the next one
    if not (args.out or args.index):
        import shutil
        shutil.rmtree(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("corpus", help="(a) Recall@1/5, MRR, EM, F1 of BM25, the query reasoner, and both")
    c.add_argument("--ckpt", required=True, help="a trained checkpoint, e.g. runs/default/e2e")
    c.add_argument("--seed", type=int, default=0, help="corpus seed when the run has no args.json")
    c.add_argument("--scp", default=None, help="also real text: the SCP sample JSONL (official format)")
    c.add_argument("--scp-train", type=int, default=700, help="its first passages, trained on: skipped")
    c.add_argument("-n", type=int, default=20, help="BM25's candidates for the query reasoner (paper: N = 20)")
    c.add_argument("-k", type=int, default=0, help="passages the generator reads (0: the checkpoint's top_k)")
    c.add_argument("--max-new-tokens", type=int, default=16)
    c.add_argument("--batch-size", type=int, default=16, help="questions per batch")
    c.add_argument("--limit", type=int, default=0, help="first LIMIT questions of each set (0 = all)")
    s = sub.add_parser("speed", help="(b) exact vs FAISS search on random vectors")
    s.add_argument("--n", type=int, default=100_000, help="passages (vectors) in the index")
    s.add_argument("--l", type=int, default=8)
    s.add_argument("--D", type=int, default=576)
    s.add_argument("--clusters", type=int, default=1000, help="0: unclustered Gaussian vectors")
    s.add_argument("--queries", type=int, default=64, help="queries, searched as one batch")
    s.add_argument("--single", type=int, default=8, help="of them, searched one at a time")
    s.add_argument("--shard-size", type=int, default=1024)
    s.add_argument("--faiss", nargs="*", choices=ask.FAISS_KINDS, default=list(ask.FAISS_KINDS))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=0, help="CPU threads for torch and FAISS (0: their default)")
    s.add_argument("--out", default=None, help="keep the index here (default: a temporary directory)")
    s.add_argument("--index", default=None, help="time an index built by ask.py instead of random vectors")
    args = p.parse_args(argv)
    routes(args) if args.command == "corpus" else speed(args)


if __name__ == "__main__":
    main()
