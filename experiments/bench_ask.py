"""Figures for docs/ask.md: whole-corpus retrieval quality, and search speed at 10^5 passages.

    python experiments/bench_ask.py corpus --ckpt runs/default/e2e     # (a) quality vs BM25
    python experiments/bench_ask.py speed                              # (b) 10^5 random vectors
    python experiments/bench_ask.py speed --n 2000 --faiss flat        # a quick check of the script
    python experiments/bench_ask.py speed --index runs/notes_index     # (b) on your own index

(a) corpus: every held-out passage of the embedded corpus (corpus.build_world with the run's seed:
80 passages no training row contains) goes into one index, and every held-out question (the rows
of corpus.e2e_rows, one per passage and fact) is searched against all of them, not against 20
candidates. Recall@k and MRR are per question at the passage level (a passage cut into chunks is
found where its first chunk ranks), for the CLaRa index (theta_qr vs theta_c vectors, exact
cosine) and for BM25 (metrics.BM25) fitted on the same passages.

(b) speed: n random vectors of the real size (l = 8, D = 576: SmolLM2-135M at 16x) written as an
index with the same code as `ask.py index`, then searched with the exact chunked search and with
FAISS (flat, ivf, hnsw) at their default settings (ask.Index.faiss_index); a FAISS build time
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
import metrics  # noqa: E402
from clara import CLaRa  # noqa: E402


# --- (a) retrieval quality over the whole held-out corpus ---------------------------------------

def passage_ranking(chunk_ids, owner):
    """Chunk ids, best first -> passage ids, best first (each passage where its first chunk is)."""
    seen = {}
    for i in chunk_ids:
        seen.setdefault(owner[i], None)
    return list(seen)


def scores_of(rankings, golds):
    """{R@1, R@5, MRR} in percent over questions, each with one gold passage."""
    out = {f"R@{k}": 100 * metrics.summarize(metrics.recall_at_k(r, [g], k) for r, g in zip(rankings, golds))
           for k in (1, 5)}
    out["MRR"] = 100 * metrics.summarize(metrics.reciprocal_rank(r, [g]) for r, g in zip(rankings, golds))
    return out


def corpus_quality(args):
    args_path = os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), "args.json")
    seed = json.load(open(args_path))["seed"] if os.path.exists(args_path) else args.seed
    world = corpus.build_world(seed)
    passages = world.passages("heldout")
    rows = corpus.e2e_rows(world, "heldout", seed=seed)[:args.limit or None]
    questions = [r["question"] for r in rows]
    golds = [passages.index(r["docs"][r["pos_index"][0]]) for r in rows]
    model = CLaRa.load(args.ckpt).eval()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        index = ask.Index.build(model, [(p, f"heldout {i}") for i, p in enumerate(passages)], out + "/idx")
        build_s = time.perf_counter() - t
        owner = [int(p["source"].split()[1]) for p in index.passages]  # chunk -> passage
        t, clara_rankings = time.perf_counter(), []
        for b in range(0, len(questions), 32):
            _, ids = index.search(model, questions[b:b + 32], n=len(index))  # (B, all chunks)
            clara_rankings += [passage_ranking(r, owner) for r in ids.tolist()]
        search_ms = 1000 * (time.perf_counter() - t) / len(questions)
    bm25 = metrics.BM25(passages)
    bm25_rankings = [metrics.rank_from_scores(bm25.scores(q)) for q in questions]
    n = len(passages)
    print(f"checkpoint {args.ckpt}, embedded corpus seed {seed}: {n} held-out passages "
          f"({len(index)} chunks), {len(questions)} held-out questions, each searched against all")
    print(f"index built in {build_s:.1f} s; search {search_ms:.1f} ms per question (batches of 32, "
          f"query encoding included)")
    harmonic = sum(1 / r for r in range(1, n + 1))
    table = {"CLaRa index (theta_qr, exact cosine)": scores_of(clara_rankings, golds),
             "BM25 over the same passages": scores_of(bm25_rankings, golds),
             "random order (computed)": {"R@1": 100 / n, "R@5": 500 / n, "MRR": 100 * harmonic / n}}
    print(f"{'method':40s} {'R@1':>6s} {'R@5':>6s} {'MRR':>6s}")
    for name, s in table.items():
        print(f"{name:40s} {s['R@1']:6.1f} {s['R@5']:6.1f} {s['MRR']:6.1f}")


# --- (b) speed at 10^5 passages ------------------------------------------------------------------

def random_vectors(n, l, D, clusters, seed, centre_seed):
    """encode(texts) for Index._write: text i -> vector i (l, D) of a fixed random set of n, each
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
    _, build_s = timed(lambda: ask.Index._write(out, records, fp, corpus_vectors, cfg, args.shard_size, 1024))
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
    index.search_vectors(q[:1], 10)  # warm the page cache: every run then reads shards from memory
    exact, batch_s = timed(lambda: index.search_vectors(q, 10))  # (Q, 10) twice
    _, one_s = timed(lambda: [index.search_vectors(q[i:i + 1], 10) for i in range(args.single)])
    print(f"{'search':28s} {'build s':>8s} {'q/s batch 1':>12s} {f'q/s batch {len(q)}':>14s} "
          f"{'recall@10':>10s}")
    print(f"{'exact, chunked (ask.py)':28s} {'-':>8s} {args.single / one_s:12.1f} "
          f"{len(q) / batch_s:14.1f} {1.0:10.3f}")
    for kind in args.faiss:
        cached = os.path.join(out, f"faiss-{kind}.index")
        if os.path.exists(cached):  # a kept --out from an earlier run: time a real build
            os.remove(cached)
        _, fbuild_s = timed(lambda: index.faiss_index(kind))
        (_, ids), fbatch_s = timed(lambda: index.search_vectors(q, 10, faiss=kind))
        _, fone_s = timed(lambda: [index.search_vectors(q[i:i + 1], 10, faiss=kind)
                                   for i in range(args.single)])
        recall = sum(len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact[1].tolist())) / ids.numel()
        print(f"{'FAISS ' + kind:28s} {fbuild_s:8.1f} {args.single / fone_s:12.1f} {len(q) / fbatch_s:14.1f} "
              f"{recall:10.3f}")
        index._faiss.pop(kind)  # free its float32 copy before the next one
    if not (args.out or args.index):
        import shutil
        shutil.rmtree(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("corpus", help="(a) whole-corpus Recall@k and MRR against BM25")
    c.add_argument("--ckpt", required=True, help="a trained checkpoint, e.g. runs/default/e2e")
    c.add_argument("--seed", type=int, default=0, help="corpus seed when the run has no args.json")
    c.add_argument("--limit", type=int, default=0, help="first LIMIT questions (0 = all)")
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
    corpus_quality(args) if args.command == "corpus" else speed(args)


if __name__ == "__main__":
    main()
