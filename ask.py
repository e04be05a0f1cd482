"""Ask your own documents: a compressed-vector index over a whole corpus, and an `ask` command.

The paper reranks N = 20 candidates handed in by another retriever (Sec. 3). A trained CLaRa
already holds what a search over a whole corpus needs: passages compressed once by theta_c into
l vectors each, and questions encoded by theta_qr into the same space. This file stores the
compressed corpus on disk and searches all of it; clara.py stays the method.

    python ask.py index --ckpt runs/default/e2e --docs notes.txt --out runs/notes_index
    python ask.py query --index runs/notes_index "Who founded the Holmvar Guild?"
    python ask.py query --index runs/notes_index --first-stage bm25 "Who founded the Holmvar Guild?"
    python ask.py query --index runs/notes_index        # one question per stdin line, until EOF

Three parts, each readable alone:
    storage   class Index: build (resumable), open (checked), shards, stored vectors, BM25 counts
    search    plain functions: exact cosine over the shards, FAISS, BM25, the query reasoner's
              scores of given candidates -> each question's N candidates
    answer    ask(): the straight-through top-k picks k of the N, the generator reads them

A question's path (B questions, N candidates, k picked, l memory vectors of size D):
    first stage, one of
      query-reasoner (default)  CLaRa.encode_query (theta_qr): question -> q (B, l, D); cosine of
                                flatten(q) vs flatten(M) over every passage -> top N (B, N)
                                (exact, shard by shard, or FAISS: --faiss flat|ivf|hnsw)
      bm25                      BM25 over the indexed texts -> top N (B, N), then the query
                                reasoner's cosine of those N only (the paper's setting)
    differentiable_topk (Eq. 3.3-3.4)   the N scores -> k picks (forward: the exact top k)
    CLaRa.generate (theta_g)            the k picked vectors (B, k, l, D) -> answer

Passages come from data.read_passages (.txt, .jsonl or a dataset id); one longer than
L = doc_max_len tokens is cut into chunks of at most L tokens. An index directory holds
index.json (checkpoint, fingerprint, counts), passages.jsonl (line i = passage i, with its source
"file:line"), bm25.json (each passage's term counts) and float16 shards shard-00000.safetensors
(1024, l, D): l * D * 2 bytes per passage, 9 KB for SmolLM2-135M at 16x (l = 8, D = 576).
docs/ask.md has more.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import clara
import data
import metrics
import runtime

FORMAT = "clara-index/2"  # 2: with bm25.json
BM25_FORMAT = "clara-bm25/1"
FIRST_STAGES = ("query-reasoner", "bm25")
FAISS_KINDS = ("flat", "ivf", "hnsw")
HNSW_M, HNSW_EF_SEARCH = 32, 128  # HNSW graph degree and search breadth (FAISS defaults: 32, 16)


# ---------------------------------------------------------------------------------------------
# Passages: chunk to at most L tokens; what fixes their vectors
# ---------------------------------------------------------------------------------------------


def split_tokens(tokenizer, text: str, L: int) -> list[str]:
    """Cut `text` at token boundaries into pieces of at most L tokens each (no overlap).

    >>> # split_tokens(tok, "one two three four five", 2) -> ['one two', 'three four', 'five']
    """
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= L:
        return [text]
    word_start = lambda t: text[offsets[t][0]].isspace() or offsets[t][0] > offsets[t - 1][1]
    pieces, start = [], 0
    while start < len(offsets):
        end = min(start + L, len(offsets))
        if end < len(offsets):  # cut before a word, not inside one, when the piece has a word break
            end = next((e for e in range(end, start, -1) if word_start(e)), end)
        while True:  # re-tokenised, a piece can merge differently at its cut: keep it within L
            piece = text[offsets[start][0]:offsets[end - 1][1]].strip()
            if end - start == 1 or len(tokenizer(piece, add_special_tokens=False)["input_ids"]) <= L:
                break
            end -= 1
        if piece:  # a piece of only whitespace carries nothing
            pieces.append(piece)
        start = end
    return pieces


def chunk_passages(tokenizer, passages, L: int) -> tuple[list[dict], int]:
    """(text, source) pairs -> (records {"text", "source", "chunk", "of"}, duplicates dropped)."""
    records, seen = [], set()
    for text, source in passages:
        if text in seen:
            continue
        seen.add(text)
        pieces = split_tokens(tokenizer, text, L)
        records += [{"text": p, "source": source, "chunk": j + 1, "of": len(pieces)}
                    for j, p in enumerate(pieces)]
    return records, len(passages) - len(seen)


def compressor_fingerprint(model) -> dict:
    """What fixes a passage's vectors: the backbone, the config fields the compressor reads and a
    hash of theta_c and the memory tokens. Stage 3 freezes theta_c, so a run's instruct/ and e2e/
    checkpoints share a fingerprint and can query one index; another run's cannot."""
    h = hashlib.sha256()
    for name, p in sorted(model.trainable_state_dict().items()):
        if name.endswith(".compressor") or name == "memory_tokens":
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    config = asdict(model.config)
    return {"config": {f: config[f] for f in clara.COMPRESSOR_FIELDS},
            "backbone": runtime.backbone_fingerprint(model.backbone), "compressor_sha256": h.hexdigest()}


def bm25_counts(texts: list[str]) -> dict:
    """What bm25.json holds: each passage's term counts under metrics.BM25's tokenizer, as
    [term id, count] pairs over one sorted vocabulary, so a query never re-tokenizes the corpus."""
    fitted = metrics.BM25(texts)
    vocab = sorted({t for tf in fitted.doc_tokens for t in tf})
    ids = {t: i for i, t in enumerate(vocab)}
    return {"format": BM25_FORMAT, "k1": fitted.k1, "b": fitted.b, "vocab": vocab,
            "counts": [sorted([ids[t], c] for t, c in tf.items()) for tf in fitted.doc_tokens]}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Storage: build (resumable), open (checked), shards, stored vectors, BM25 counts
# ---------------------------------------------------------------------------------------------


class Index:
    """Passages compressed once, stored in float16 shards beside their texts and BM25 counts.
    It stores and checks; the search functions below read it.

    >>> model = CLaRa.load("runs/default/e2e")
    >>> index = Index.build(model, data.read_passages("notes.txt"), "runs/notes_index")
    >>> index = Index.open("runs/notes_index")          # later, or in another process
    >>> scores, ids = search(model, index, ["Who founded the Holmvar Guild?"], n=3)  # (1, 3) each
    >>> index.passages[ids[0, 0]]["source"]             # e.g. 'notes.txt:12'
    """

    def __init__(self, directory: str, manifest: dict, passages: list[dict]):
        self.directory, self.manifest, self.passages = directory, manifest, passages
        self.l, self.D, self.shard_size = manifest["l"], manifest["D"], manifest["shard_size"]
        self.n_shards = math.ceil(len(passages) / self.shard_size)
        self.faiss = {}  # kind -> FAISS index, built or read on first use (faiss_index)
        self._bm25 = None  # metrics.BM25 from bm25.json, read on first use (Index.bm25)

    def __len__(self) -> int:
        return len(self.passages)

    @classmethod
    def build(cls, model, passages, out: str, checkpoint: str | None = None, shard_size: int = 1024,
              batch_size: int = 16, stop_after: int | None = None) -> "Index":
        """Compress `passages` (strings, or (text, source) pairs from data.read_passages) with
        theta_c into `out`. Run again after an interruption: finished shards are kept, the rest is
        built. checkpoint: the model's directory, named in index.json so `ask.py query` can load it.
        stop_after: stop after computing that many shards, as an interruption would (tests)."""
        pairs = [(p, f"passages[{i}]") if isinstance(p, str) else tuple(p) for i, p in enumerate(passages)]
        for text, source in pairs:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{source}: empty passage {text!r:.40}")
        records, dropped = chunk_passages(model.tokenizer, pairs, model.config.doc_max_len)
        print(f"index: {len(pairs)} passages ({dropped} exact duplicates dropped) -> {len(records)} "
              f"chunks of at most L = {model.config.doc_max_len} tokens", file=sys.stderr)
        cfg = {"checkpoint": None if checkpoint is None else os.path.relpath(checkpoint, out),
               "l": model.config.n_memory, "D": model.backbone.config.hidden_size,
               "config": asdict(model.config), "duplicates_dropped": dropped}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return cls.write(out, records, compressor_fingerprint(model), model.compress, cfg,
                                 shard_size, batch_size, stop_after)
        finally:
            model.train(was_training)

    @classmethod
    def write(cls, out, records, fp, encode, cfg, shard_size, batch_size, stop_after=None) -> "Index":
        """Write (or finish) an index of `records`; encode(texts) -> vectors (b, l, D). Shared by
        build() and the random-vector benchmark (experiments/bench_ask.py)."""
        from safetensors.torch import save_file
        from tqdm import tqdm
        # one JSON object a line, split on "\n" only when read back: ensure_ascii=False keeps
        # U+2028, U+2029 and U+0085 raw, which str.splitlines() would also split on
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        bm25 = json.dumps(bm25_counts([r["text"] for r in records]), separators=(",", ":"))
        sha = _sha256(lines)
        ident = _sha256(f"{json.dumps(fp, sort_keys=True)} {sha} {shard_size}")[:16]
        manifest = {"format": FORMAT, "id": ident, **cfg, "fingerprint": fp, "passages": len(records),
                    "passages_sha256": sha, "bm25_sha256": _sha256(bm25), "shard_size": shard_size,
                    "batch_size": batch_size, "dtype": "float16", "complete": False}
        path = os.path.join(out, "index.json")
        old = None
        if os.path.exists(path):
            old = _check_resume(path, manifest)
        elif os.path.isdir(out) and os.listdir(out):
            raise ValueError(f"{out}: not empty and not an index (no index.json); choose another --out")
        os.makedirs(out, exist_ok=True)
        for name, text in (("passages.jsonl", lines), ("bm25.json", bm25)):  # cheap: a rerun repairs them
            runtime.atomic_write(os.path.join(out, name), lambda p: Path(p).write_text(text, encoding="utf-8"))
        if old is not None and old["complete"]:
            print(f"index: {out} is complete, nothing to do", file=sys.stderr)
            return cls.open(out)
        runtime.atomic_write(path, lambda p: Path(p).write_text(json.dumps(manifest, indent=1)))
        index, done = cls(out, manifest, records), 0
        bar = tqdm(total=len(records), desc="compress passages", unit="passage")
        for s in range(index.n_shards):
            first = s * shard_size
            texts = [r["text"] for r in records[first:first + shard_size]]
            if os.path.exists(index.shard_path(s)):  # finished before an interruption: checked, kept
                index.load_shard(s)
                bar.update(len(texts))
                continue
            vecs = []  # batches start at the shard's start, so a rebuilt shard is bit-identical
            for b in range(0, len(texts), batch_size):
                vecs.append(encode(texts[b:b + batch_size]).to("cpu", torch.float16))  # (b, l, D)
                bar.update(len(vecs[-1]))
            with torch.autocast("cpu", enabled=False):  # a CPU's bf16 autocast refuses float16 in cat
                shard = torch.cat(vecs).contiguous()  # (c, l, D)
            runtime.atomic_write(index.shard_path(s), lambda p: save_file({"vectors": shard}, p,
                                                                         metadata={"index": ident}))
            done += 1
            if stop_after is not None and done >= stop_after:
                bar.close()
                raise SystemExit(f"index: stopped after {done} shards (--stop-after); run again to finish")
        bar.close()
        manifest["complete"] = True
        runtime.atomic_write(path, lambda p: Path(p).write_text(json.dumps(manifest, indent=1)))
        return index

    @classmethod
    def open(cls, directory: str) -> "Index":
        """Open a finished index, refusing an unfinished one, an edited passages.jsonl, a missing or
        damaged bm25.json, or a truncated, foreign or misshapen shard, with an error naming the file."""
        path = os.path.join(directory, "index.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory}: not an index (no index.json); build one with "
                                    f"`python ask.py index`")
        manifest = json.loads(Path(path).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: format {manifest.get('format')!r}, this code reads {FORMAT!r}; "
                             f"build the index again")
        if not manifest["complete"]:
            raise ValueError(f"{path}: unfinished index; run the same `python ask.py index` command "
                             f"again to finish it")
        passages_path = os.path.join(directory, "passages.jsonl")
        text = Path(passages_path).read_text(encoding="utf-8")
        if _sha256(text) != manifest["passages_sha256"]:
            raise ValueError(f"{passages_path}: changed since {path} was written; rebuild the index")
        index = cls(directory, manifest, [json.loads(line) for line in text.split("\n")[:-1]])
        index._read_bm25()  # checked now, parsed on first use
        for s in range(index.n_shards):
            index.load_shard(s, header_only=True)
        return index

    def shard_path(self, s: int) -> str:
        return os.path.join(self.directory, f"shard-{s:05d}.safetensors")

    def load_shard(self, s: int, header_only: bool = False) -> torch.Tensor | None:
        """Shard s as float16 vectors (c, l, D), after checking that it is whole and belongs here."""
        from safetensors import safe_open
        path, count = self.shard_path(s), min(self.shard_size, len(self) - s * self.shard_size)
        try:
            with safe_open(path, "pt") as f:  # tensors only, no pickle
                meta, shape = f.metadata() or {}, tuple(f.get_slice("vectors").get_shape())
                vecs = None if header_only else f.get_tensor("vectors")
        except FileNotFoundError:
            raise ValueError(f"{path}: missing shard of {self.directory}; run `python ask.py index` "
                             f"again to rebuild it") from None
        except Exception as err:  # safetensors refuses a truncated or overwritten file
            raise ValueError(f"{path}: corrupt or truncated shard ({err}); delete it and run "
                             f"`python ask.py index` again to rebuild it") from None
        if meta.get("index") != self.manifest["id"]:
            raise ValueError(f"{path}: belongs to another index (id {meta.get('index')!r}, "
                             f"index.json says {self.manifest['id']!r})")
        if shape != (count, self.l, self.D) or (vecs is not None and vecs.dtype != torch.float16):
            raise ValueError(f"{path}: vectors of shape {shape}, expected {(count, self.l, self.D)} float16")
        return vecs

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """The stored vectors of passages `ids` (any shape S) -> (*S, l, D) float32."""
        flat = ids.flatten().cpu()
        out = torch.empty(len(flat), self.l, self.D)
        for s in (flat // self.shard_size).unique().tolist():
            rows = (flat // self.shard_size) == s
            out[rows] = self.load_shard(s)[flat[rows] - s * self.shard_size].float()
        return out.view(*ids.shape, self.l, self.D)

    def bm25(self) -> metrics.BM25:
        """metrics.BM25 over the indexed texts, from bm25.json's counts (the same scores as
        metrics.BM25 fitted on the texts, without tokenizing them again)."""
        if self._bm25 is None:
            stored, path = json.loads(self._read_bm25()), os.path.join(self.directory, "bm25.json")
            if stored.get("format") != BM25_FORMAT or len(stored["counts"]) != len(self):
                raise ValueError(f"{path}: not the BM25 counts of {len(self)} passages; run the same "
                                 f"`python ask.py index` command again to rebuild it")
            vocab = stored["vocab"]
            self._bm25 = metrics.BM25.from_counts([{vocab[t]: c for t, c in pairs} for pairs in stored["counts"]],
                                                  stored["k1"], stored["b"])
        return self._bm25

    def _read_bm25(self) -> str:
        path = os.path.join(self.directory, "bm25.json")
        if not os.path.isfile(path):
            raise ValueError(f"{path}: missing (the BM25 counts of this index); run the same "
                             f"`python ask.py index` command again to rebuild it")
        text = Path(path).read_text(encoding="utf-8")
        if _sha256(text) != self.manifest["bm25_sha256"]:
            raise ValueError(f"{path}: corrupt or changed since index.json was written; run the same "
                             f"`python ask.py index` command again to rebuild it")
        return text

    def check_model(self, model) -> None:
        """Refuse a model whose compressor differs from the one that built the index: its
        questions would be compared with vectors from another space."""
        got, want = compressor_fingerprint(model), self.manifest["fingerprint"]
        if got != want:
            diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            raise ValueError(f"{os.path.join(self.directory, 'index.json')}: built with another "
                             f"checkpoint (differs in {', '.join(diff)}); query with the checkpoint "
                             f"that built it, or rebuild the index")


def _check_resume(path: str, manifest: dict) -> dict:
    """An existing index.json must describe the same index (checkpoint, passages, shards): it is
    returned, else the error says what differs."""
    old = json.loads(Path(path).read_text())
    if old.get("fingerprint") != manifest["fingerprint"]:
        raise ValueError(f"{path}: built with another checkpoint; choose another --out or delete it")
    for key in ("format", "passages_sha256", "bm25_sha256", "shard_size", "batch_size", "l", "D"):
        if old.get(key) != manifest[key]:
            raise ValueError(f"{path}: {key} was {old.get(key)!r}, now {manifest[key]!r} (other "
                             f"passages or settings); choose another --out or delete it")
    return old


# ---------------------------------------------------------------------------------------------
# Search: plain functions over an Index -> (scores (B, n), ids (B, n)), best first
# ---------------------------------------------------------------------------------------------


def search(model, index: Index, questions: list[str], n: int = 20, faiss: str | None = None):
    """The query reasoner's top n passages of the whole index per question."""
    index.check_model(model)
    with torch.no_grad():
        return search_vectors(index, model.encode_query(questions), n, faiss)  # q: (B, l, D)


def search_vectors(index: Index, query_vecs: torch.Tensor, n: int = 20, faiss: str | None = None):
    """Cosine of flattened l*D vectors (CLaRa.score) against every passage: exact, or FAISS
    (faiss="flat" | "ivf" | "hnsw"). q (B, l, D) -> (B, n) twice."""
    if query_vecs.dim() != 3 or tuple(query_vecs.shape[1:]) != (index.l, index.D):
        raise ValueError(f"query vectors must be (B, {index.l}, {index.D}), got {tuple(query_vecs.shape)}")
    n = min(n, len(index))
    q = F.normalize(query_vecs.detach().flatten(1).float(), dim=-1)  # (B, l*D), unit length
    return exact_search(index, q, n) if faiss is None else faiss_search(index, q, n, faiss)


def exact_search(index: Index, q: torch.Tensor, n: int):
    """Unit query vectors q (B, l*D) against every passage, one shard in memory at a time,
    keeping the best n so far: (B, n) twice."""
    best_s = q.new_empty(len(q), 0)  # (B, <= n): the best scores so far, and their ids
    best_i = torch.empty(len(q), 0, dtype=torch.long, device=q.device)
    with torch.autocast(q.device.type, enabled=False):  # exact: float32 scores under any autocast
        for s in range(index.n_shards):
            m = index.load_shard(s).to(q.device).flatten(1).float()  # (c, l*D)
            cos = (q @ m.T) / m.norm(dim=1).clamp(min=1e-12)  # (B, c); no normalised copy of m
            ids = torch.arange(s * index.shard_size, s * index.shard_size + len(m), device=q.device)
            best_s, pos = torch.cat([best_s, cos], 1).topk(min(n, best_s.shape[1] + len(m)), dim=1)
            best_i = torch.cat([best_i, ids.expand(len(q), -1)], 1).gather(1, pos)
    return best_s.cpu(), best_i.cpu()


def faiss_search(index: Index, q: torch.Tensor, n: int, kind: str):
    """Unit query vectors q (B, l*D) -> (B, n) twice, from the FAISS index of that kind."""
    scores, ids = faiss_index(index, kind).search(q.cpu().numpy(), n)  # (B, n) each
    if (ids < 0).any():
        raise RuntimeError(f"FAISS {kind} found fewer than n = {n} passages for a question; "
                           f"raise its nprobe / efSearch (ask.faiss_index) or lower n")
    return torch.from_numpy(scores), torch.from_numpy(ids).long()


def faiss_index(index: Index, kind: str):
    """A FAISS inner-product index over the normalised flattened vectors (inner product =
    cosine), built once and kept as faiss-<kind>.index beside the shards. It holds float32
    copies: l*D*4 bytes per passage in memory. Tune it here, e.g. .nprobe (ivf) or
    .hnsw.efSearch (hnsw). flat: exact; ivf: sqrt(n) lists, nprobe = max(4, lists/8); hnsw: M = 32."""
    if kind not in FAISS_KINDS:
        raise ValueError(f"FAISS index kind must be one of {FAISS_KINDS}, got {kind!r}")
    if kind in index.faiss:
        return index.faiss[kind]
    faiss = import_faiss()
    path = os.path.join(index.directory, f"faiss-{kind}.index")
    if os.path.exists(path):
        built = faiss.read_index(path)  # FAISS's own binary format, no pickle
        if built.ntotal != len(index) or built.d != index.l * index.D:
            raise ValueError(f"{path}: holds {built.ntotal} vectors of size {built.d}, the index "
                             f"{len(index)} of size {index.l * index.D}; delete it to rebuild it")
    else:
        built = _build_faiss(index, faiss, kind)
        runtime.atomic_write(path, lambda p: faiss.write_index(built, p))
    index.faiss[kind] = built
    return built


def _build_faiss(index: Index, faiss, kind: str):
    d, n = index.l * index.D, len(index)
    unit = lambda s: F.normalize(index.load_shard(s).flatten(1).float(), dim=-1).numpy()  # (c, l*D)
    if kind == "flat":
        built = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        built = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        built.hnsw.efSearch = HNSW_EF_SEARCH
    else:  # IVF: k-means on a strided sample of 40 vectors per list (FAISS asks for >= 39)
        lists = max(1, round(math.sqrt(n)))
        built = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        sample = torch.arange(0, n, max(1, n // (40 * lists)))
        built.train(F.normalize(index.vectors(sample).flatten(1), dim=-1).numpy())
        built.nprobe = min(lists, max(4, lists // 8))  # >= 4: small corpora still fill n
    for s in range(index.n_shards):
        built.add(unit(s))
    return built


def import_faiss():
    """FAISS is optional: imported only when asked for, with an error that says what to install."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("FAISS search needs the optional package faiss-cpu: pip install faiss-cpu "
                          "(the exact search, without --faiss, needs nothing more)") from err
    return faiss


def bm25_search(index: Index, questions: list[str], n: int = 20):
    """BM25's top n passages of the whole index per question, from the stored counts: (B, n) twice."""
    bm25, n = index.bm25(), min(n, len(index))
    scores = torch.tensor([bm25.scores(question) for question in questions])  # (B, all passages)
    return scores.topk(n, dim=1)


def score_candidates(model, index: Index, questions: list[str], ids: torch.Tensor) -> torch.Tensor:
    """The query reasoner's cosine of each question with its candidates' stored vectors, the
    same cosine as search(): questions (B), ids (B, N) -> scores (B, N)."""
    index.check_model(model)
    with torch.no_grad():
        q = F.normalize(model.encode_query(questions).flatten(1).float(), dim=-1).cpu()  # (B, l*D)
    m = index.vectors(ids).flatten(2)  # (B, N, l*D)
    return torch.einsum("bd,bnd->bn", q, m) / m.norm(dim=-1).clamp(min=1e-12)


def candidates(model, index: Index, questions: list[str], n: int = 20, first_stage: str = "query-reasoner",
               faiss: str | None = None):
    """Each question's N candidates and the query reasoner's scores of them: (scores (B, N),
    ids (B, N)). query-reasoner: the top N of the whole index by that cosine (best first);
    bm25: BM25's top N (in BM25's order), scored by the query reasoner, as in the paper."""
    if first_stage not in FIRST_STAGES:
        raise ValueError(f"first_stage must be one of {FIRST_STAGES}, got {first_stage!r}")
    if first_stage == "query-reasoner":
        return search(model, index, questions, n, faiss)
    if faiss is not None:
        raise ValueError("faiss searches the query reasoner's vectors; the bm25 first stage does not use it")
    _, ids = bm25_search(index, questions, n)  # (B, N)
    return score_candidates(model, index, questions, ids), ids


# ---------------------------------------------------------------------------------------------
# Answer: N candidates -> straight-through top-k -> generator
# ---------------------------------------------------------------------------------------------


@dataclass
class Answer:
    question: str
    answer: str
    passages: list[dict]  # the k picked, best first: {"id", "score", "text", "source", "chunk", "of"}
    note: str | None = None  # said when the answer read fewer passages than asked


def pick_top_k(model, index: Index, scores: torch.Tensor, ids: torch.Tensor, k: int):
    """The straight-through top-k (Eq. 3.3-3.4) over each question's N candidates: (picks (B, k),
    positions into N, best first; the picked vectors (B, k, l, D), exactly M[picks])."""
    M = index.vectors(ids).to(model.device, model.memory_tokens.dtype)  # (B, N, l, D)
    W, picks = clara.differentiable_topk(scores.to(model.device), k, model.config.temperature)  # (B, k, N)
    return picks.cpu(), clara.select_picked(W, M)


@torch.no_grad()
def ask(model, index: Index, question: str, k: int | None = None, n: int = 20, faiss: str | None = None,
        max_new_tokens: int = 32, first_stage: str = "query-reasoner") -> Answer:
    """Answer `question` from the whole index: N candidates (the paper's N, by the query reasoner
    over the whole index, or by BM25 then scored by the query reasoner), the straight-through
    top-k picks k of them, the generator reads their vectors. An index of fewer than k passages
    is read whole, and the answer's note says so.

    >>> a = ask(model, index, "Who founded the Holmvar Guild?", k=5, first_stage="bm25")
    >>> a.answer, [(p["source"], round(p["score"], 3)) for p in a.passages]
    """
    k, note = model.config.top_k if k is None else k, None
    if k > len(index):
        note = f"the index holds {len(index)} passages, fewer than k = {k}: the generator reads all of them"
        k = len(index)
    n = min(n, len(index))
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k = {k}, n = {n} (the index has {len(index)} passages)")
    scores, ids = candidates(model, index, [question], n, first_stage, faiss)  # (1, N) each
    picks, selected = pick_top_k(model, index, scores, ids, k)  # (1, k), (1, k, l, D)
    text = model.generate([question], selected, max_new_tokens)[0]
    picked = [{"id": int(ids[0, j]), "score": float(scores[0, j]), **index.passages[int(ids[0, j])]}
              for j in picks[0].tolist()]
    return Answer(question, text, picked, note)


def print_answer(a: Answer, width: int = 100) -> None:
    print(f"Q: {a.question}\nA: {a.answer}")
    if a.note:
        print(f"  note: {a.note}")
    for rank, p in enumerate(a.passages, 1):
        where = p["source"] + (f" chunk {p['chunk']}/{p['of']}" if p["of"] > 1 else "")
        print(f"  {rank}. {p['score']:.4f}  {where}  {textwrap.shorten(p['text'], width)}")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("index", help="compress a corpus once into an index directory")
    i.add_argument("--ckpt", required=True, help="checkpoint directory written by train.py")
    i.add_argument("--docs", required=True, help=".txt, .jsonl or Hugging Face dataset id")
    i.add_argument("--out", required=True, help="index directory (run again to resume)")
    i.add_argument("--paragraphs", action="store_true", help=".txt: blank-line separated passages")
    i.add_argument("--split", default="train", help="split, when --docs is a dataset id")
    i.add_argument("--batch-size", type=int, default=16, help="passages per compressor pass")
    i.add_argument("--shard-size", type=int, default=1024, help="passages per shard file")
    i.add_argument("--stop-after", type=int, default=None, help="stop after this many shards, as an "
                   "interruption would (tests the resume)")
    q = sub.add_parser("query", help="answer questions from an index")
    q.add_argument("--index", required=True, help="index directory")
    q.add_argument("--ckpt", default=None, help="checkpoint (default: the one named in index.json)")
    q.add_argument("--first-stage", choices=FIRST_STAGES, default="query-reasoner",
                   help="who picks the N candidates: the query reasoner over the whole index, or BM25 "
                        "(then the query reasoner scores only those N)")
    q.add_argument("-n", type=int, default=20, help="candidates from the whole index (paper: N = 20)")
    q.add_argument("-k", type=int, default=None, help="passages the generator reads (default: top_k)")
    q.add_argument("--faiss", choices=FAISS_KINDS, default=None, help="search with FAISS (faiss-cpu)")
    q.add_argument("--max-new-tokens", type=int, default=32)
    q.add_argument("questions", nargs="*", help="questions; none: read one per stdin line until EOF")
    for sp in (i, q):
        sp.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
        sp.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="auto: as trained (the dtype the checkpoint records; one without: train.py's auto rule)")
    args = p.parse_args(argv)
    if args.command == "query" and args.faiss and args.first_stage == "bm25":
        p.error("--faiss searches with the query reasoner; --first-stage bm25 does not use it")
    return args


def load_model(ckpt: str, device_name: str = "auto", dtype: str = "auto"):
    """CLaRa.load on the chosen device, in eval mode, with the autocast to run it under (--dtype
    auto: the dtype it was trained in, runtime.pick_device); says which and why. -> (model, autocast)"""
    if not os.path.isfile(os.path.join(ckpt, "config.json")):
        raise FileNotFoundError(f"{ckpt}: not a checkpoint (no config.json); pass --ckpt")
    device, autocast, dtype = runtime.pick_device(dtype, device_name, file=sys.stderr,
                                                  trained=runtime.trained_dtype(ckpt))
    model = clara.CLaRa.load(ckpt, backbone_dtype=runtime.backbone_dtype(device, dtype))
    return model.to(device).eval(), autocast


def main(argv=None):
    args = parse_args(argv)
    if args.command == "index":
        passages = data.read_passages(args.docs, args.paragraphs, args.split)  # bad input fails before a slow load
        model, autocast = load_model(args.ckpt, args.device, args.dtype)
        with autocast():
            index = Index.build(model, passages, args.out, args.ckpt, args.shard_size, args.batch_size,
                                args.stop_after)
        print(f"index: {len(index)} passages in {index.n_shards} shard file(s), "
              f"{index.l * index.D * 2} bytes per passage -> {args.out}")
        return index
    index = Index.open(args.index)
    ckpt = args.ckpt
    if ckpt is None:
        if index.manifest["checkpoint"] is None:
            raise SystemExit(f"{args.index}/index.json names no checkpoint; pass --ckpt")
        ckpt = os.path.join(args.index, index.manifest["checkpoint"])
    model, autocast = load_model(ckpt, args.device, args.dtype)
    index.check_model(model)
    questions = args.questions or _stdin_questions()
    answers = []
    for question in questions:
        with autocast():
            answers.append(ask(model, index, question, args.k, args.n, args.faiss, args.max_new_tokens,
                               args.first_stage))
        print_answer(answers[-1])
    return answers


def _stdin_questions():
    """One question per line until EOF (blank lines are not questions); prompts on a terminal."""
    while True:
        if sys.stdin.isatty():
            print("question (Ctrl-D to end)> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.strip()


if __name__ == "__main__":
    main()
