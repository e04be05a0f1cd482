"""Ask your own documents: a compressed-vector index over a whole corpus, and an `ask` command.

The paper reranks N = 20 candidates handed in by another retriever (Sec. 3). A trained CLaRa
already holds what a search over a whole corpus needs: passages compressed once by theta_c into
l vectors each, and questions encoded by theta_qr into the same space. This file stores the
compressed corpus on disk and searches all of it; clara.py stays the method.

    python ask.py index --ckpt runs/default/e2e --docs notes.txt --out runs/notes_index
    python ask.py query --index runs/notes_index "Who founded the Holmvar Guild?"
    python ask.py query --index runs/notes_index        # one question per stdin line, until EOF

A question's path (letters of DESIGN.md: B questions, N candidates, k picked, l, D):
    CLaRa.encode_query (theta_qr)       question -> q (B, l, D)
    exact cosine over every passage     flatten(q) vs flatten(M), shard by shard -> top N (B, N)
                                        (or FAISS, for large corpora: --faiss flat|ivf|hnsw)
    differentiable_topk (Eq. 3.3-3.4)   the N scores -> k picks (forward: the exact top k)
    CLaRa.generate (theta_g)            the k picked vectors (B, k, l, D) -> answer

Passages come from a .txt (one per line, or per paragraph), a .jsonl or a dataset id
(read_passages); one longer than L = doc_max_len tokens is cut into chunks of at most L tokens.
An index directory holds index.json (checkpoint, fingerprint, counts), passages.jsonl (line i =
passage i, with its source "file:line") and float16 shards shard-00000.safetensors (1024, l, D):
l * D * 2 bytes per passage, 9 KB for SmolLM2-135M at 16x (l = 8, D = 576). docs/ask.md has more.
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

import checkpoint
import clara
import data

FORMAT = "clara-index/1"
ENCODING_FIELDS = clara.COMPRESSOR_FIELDS  # top_k, tau and query_max_len do not change the index
FAISS_KINDS = ("flat", "ivf", "hnsw")
HNSW_M, HNSW_EF_SEARCH = 32, 128  # HNSW graph degree and search breadth (FAISS defaults: 32, 16)


# ---------------------------------------------------------------------------------------------
# Passages: read, check, chunk to at most L tokens
# ---------------------------------------------------------------------------------------------


def read_passages(source, paragraphs: bool = False, split: str = "train") -> list[tuple[str, str]]:
    """(text, source) pairs; nothing is skipped silently, bad input names file, line and field.

    .txt    one passage per non-empty line (the rule of data.text_passages and scp.py); with
            paragraphs=True, blank-line separated paragraphs, each one's lines joined by spaces
    .jsonl  a "text" string per row, or a "docs" list (each entry a passage, as in the official
            CLaRa files)
    else    a Hugging Face dataset id whose rows have "text" or "docs", split `split`

    >>> # notes.txt: 'Paris is in France.\\n\\nRome is in Italy.\\n'
    >>> # read_passages("notes.txt") -> [('Paris is in France.', 'notes.txt:1'),
    >>> #                                ('Rome is in Italy.', 'notes.txt:3')]
    """
    path = Path(source)
    if path.suffix == ".txt" or (path.exists() and path.suffix != ".jsonl"):
        return _txt_passages(path, paragraphs)
    out = []
    for where, row in data._read_source(source, split):  # JSON errors name file:line
        if row.get("text") is not None:
            out.append((data._nonempty_str(row["text"], where, "text"), where))
        elif row.get("docs") is not None:
            docs = data._str_list(row["docs"], where, "docs")
            out += [(d, f"{where} docs[{i}]") for i, d in enumerate(docs)]
        else:
            data._fail(where, "text", f"missing: expected 'text' or 'docs' (row has fields {sorted(row)})")
    if not out:
        raise ValueError(f"{source}: no passages")
    return out


def _txt_passages(path: Path, paragraphs: bool) -> list[tuple[str, str]]:
    if path.suffix != ".txt":
        raise ValueError(f"{path}: expected a .txt or .jsonl file or a dataset id, got {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:  # name the line of the first bad byte
        line_no = raw[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line_no}: not UTF-8 text ({err.reason})") from None
    if not paragraphs:
        out = [(line.strip(), f"{path}:{i}") for i, line in enumerate(lines, 1) if line.strip()]
    else:  # a run of non-blank lines is one passage, named by its first line
        out, run = [], []
        for i, line in enumerate(lines + [""], 1):
            if line.strip():
                run.append((i, line.strip()))
            elif run:
                out.append((" ".join(text for _, text in run), f"{path}:{run[0][0]}"))
                run = []
    if not out:
        raise ValueError(f"{path}: no passages (the file is empty or blank)")
    return out


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


def fingerprint(model) -> dict:
    """What fixes a passage's vectors: the backbone, the config fields the compressor reads and a
    hash of theta_c and the memory tokens. Stage 3 freezes theta_c, so a run's instruct/ and e2e/
    checkpoints share a fingerprint and can query one index; another run's cannot."""
    h = hashlib.sha256()
    for name, p in sorted(model.trainable_state_dict().items()):
        if name.endswith(".compressor") or name == "memory_tokens":
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    config = asdict(model.config)
    return {"config": {f: config[f] for f in ENCODING_FIELDS},
            "backbone": checkpoint.fingerprint(model.backbone), "compressor_sha256": h.hexdigest()}


def _write_atomic(path: str, write) -> None:
    """write(tmp_path), then rename: a reader never sees a half-written file."""
    write(path + ".tmp")
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------
# The index: build (resumable), open (checked), search (exact or FAISS), fetch vectors
# ---------------------------------------------------------------------------------------------


class Index:
    """Passages compressed once, stored in float16 shards; searched whole, shard by shard.

    >>> model = CLaRa.load("runs/default/e2e")
    >>> index = Index.build(model, read_passages("notes.txt"), "runs/notes_index")
    >>> index = Index.open("runs/notes_index")          # later, or in another process
    >>> scores, ids = index.search(model, ["Who founded the Holmvar Guild?"], n=3)  # (1, 3) each
    >>> index.passages[ids[0, 0]]["source"]             # e.g. 'notes.txt:12'
    """

    def __init__(self, directory: str, manifest: dict, passages: list[dict]):
        self.directory, self.manifest, self.passages = directory, manifest, passages
        self.l, self.D, self.shard_size = manifest["l"], manifest["D"], manifest["shard_size"]
        self.n_shards = math.ceil(len(passages) / self.shard_size)
        self._faiss = {}  # kind -> FAISS index, built on first use

    def __len__(self) -> int:
        return len(self.passages)

    @classmethod
    def build(cls, model, passages, out: str, checkpoint: str | None = None, shard_size: int = 1024,
              batch_size: int = 16, stop_after: int | None = None) -> "Index":
        """Compress `passages` (strings, or (text, source) pairs from read_passages) with theta_c
        into `out`. Run again after an interruption: finished shards are kept, the rest is built.
        checkpoint: the model's directory, named in index.json so `ask.py query` can load it.
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
                return cls._write(out, records, fingerprint(model), model.compress, cfg, shard_size,
                                  batch_size, stop_after)
        finally:
            model.train(was_training)

    @classmethod
    def _write(cls, out, records, fp, encode, cfg, shard_size, batch_size, stop_after=None):
        """Write (or finish) an index of `records`; encode(texts) -> vectors (b, l, D). Shared by
        build() and the random-vector benchmark (experiments/bench_ask.py)."""
        from safetensors.torch import save_file
        from tqdm import tqdm
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        sha = hashlib.sha256(lines.encode()).hexdigest()
        ident = hashlib.sha256(f"{json.dumps(fp, sort_keys=True)} {sha} {shard_size}".encode()).hexdigest()[:16]
        manifest = {"format": FORMAT, "id": ident, **cfg, "fingerprint": fp, "passages": len(records),
                    "passages_sha256": sha, "shard_size": shard_size, "batch_size": batch_size,
                    "dtype": "float16", "complete": False}
        path = os.path.join(out, "index.json")
        if os.path.exists(path):
            if _check_resume(path, manifest)["complete"]:
                print(f"index: {out} is complete, nothing to do", file=sys.stderr)
                return cls.open(out)
        elif os.path.isdir(out) and os.listdir(out):
            raise ValueError(f"{out}: not empty and not an index (no index.json); choose another --out")
        os.makedirs(out, exist_ok=True)
        _write_atomic(os.path.join(out, "passages.jsonl"),
                      lambda p: Path(p).write_text(lines, encoding="utf-8"))
        _write_atomic(path, lambda p: Path(p).write_text(json.dumps(manifest, indent=1)))
        index, done = cls(out, manifest, records), 0
        bar = tqdm(total=len(records), desc="compress passages", unit="passage")
        for s in range(index.n_shards):
            first = s * shard_size
            texts = [r["text"] for r in records[first:first + shard_size]]
            if os.path.exists(index._shard_path(s)):  # finished before an interruption: checked, kept
                index._load_shard(s)
                bar.update(len(texts))
                continue
            vecs = []  # batches start at the shard's start, so a rebuilt shard is bit-identical
            for b in range(0, len(texts), batch_size):
                vecs.append(encode(texts[b:b + batch_size]).to("cpu", torch.float16))  # (b, l, D)
                bar.update(len(vecs[-1]))
            _write_atomic(index._shard_path(s), lambda p: save_file(
                {"vectors": torch.cat(vecs).contiguous()}, p, metadata={"index": ident}))  # (c, l, D)
            done += 1
            if stop_after is not None and done >= stop_after:
                bar.close()
                raise SystemExit(f"index: stopped after {done} shards (--stop-after); run again to finish")
        bar.close()
        manifest["complete"] = True
        _write_atomic(path, lambda p: Path(p).write_text(json.dumps(manifest, indent=1)))
        return index

    @classmethod
    def open(cls, directory: str) -> "Index":
        """Open a finished index, refusing an unfinished one or a truncated, foreign or misshapen
        shard with an error that names the file."""
        path = os.path.join(directory, "index.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory}: not an index (no index.json); build one with "
                                    f"`python ask.py index`")
        manifest = json.loads(Path(path).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: format {manifest.get('format')!r}, this code reads {FORMAT!r}")
        if not manifest["complete"]:
            raise ValueError(f"{path}: unfinished index; run the same `python ask.py index` command "
                             f"again to finish it")
        passages_path = os.path.join(directory, "passages.jsonl")
        text = Path(passages_path).read_text(encoding="utf-8")
        if hashlib.sha256(text.encode()).hexdigest() != manifest["passages_sha256"]:
            raise ValueError(f"{passages_path}: changed since {path} was written; rebuild the index")
        index = cls(directory, manifest, [json.loads(line) for line in text.splitlines()])
        for s in range(index.n_shards):
            index._load_shard(s, header_only=True)
        return index

    def _shard_path(self, s: int) -> str:
        return os.path.join(self.directory, f"shard-{s:05d}.safetensors")

    def _load_shard(self, s: int, header_only: bool = False) -> torch.Tensor | None:
        """Shard s as float16 vectors (c, l, D), after checking that it is whole and belongs here."""
        from safetensors import safe_open
        path, count = self._shard_path(s), min(self.shard_size, len(self) - s * self.shard_size)
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

    def check_model(self, model) -> None:
        """Refuse a model whose compressor differs from the one that built the index: its
        questions would be compared with vectors from another space."""
        got, want = fingerprint(model), self.manifest["fingerprint"]
        if got != want:
            diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            raise ValueError(f"{os.path.join(self.directory, 'index.json')}: built with another "
                             f"checkpoint (differs in {', '.join(diff)}); query with the checkpoint "
                             f"that built it, or rebuild the index")

    def search(self, model, questions: list[str], n: int = 20, faiss: str | None = None):
        """Top n passages of the whole index per question: (scores (B, n), ids (B, n)), best first."""
        self.check_model(model)
        with torch.no_grad():
            return self.search_vectors(model.encode_query(questions), n, faiss)  # q: (B, l, D)

    def search_vectors(self, query_vecs: torch.Tensor, n: int = 20, faiss: str | None = None):
        """Cosine of flattened l*D vectors (CLaRa.score) against every passage; exact, one shard in
        memory at a time (or FAISS: faiss="flat" | "ivf" | "hnsw"). q (B, l, D) -> (B, n) twice."""
        if query_vecs.dim() != 3 or tuple(query_vecs.shape[1:]) != (self.l, self.D):
            raise ValueError(f"query vectors must be (B, {self.l}, {self.D}), got {tuple(query_vecs.shape)}")
        n = min(n, len(self))
        q = F.normalize(query_vecs.detach().flatten(1).float(), dim=-1)  # (B, l*D), unit length
        if faiss is not None:
            scores, ids = self.faiss_index(faiss).search(q.cpu().numpy(), n)  # (B, n) each
            if (ids < 0).any():
                raise RuntimeError(f"FAISS {faiss} found fewer than n = {n} passages for a question; "
                                   f"raise its nprobe / efSearch (Index.faiss_index) or lower n")
            return torch.from_numpy(scores), torch.from_numpy(ids).long()
        best_s = q.new_empty(len(q), 0)  # (B, <= n): the best scores so far, and their ids
        best_i = torch.empty(len(q), 0, dtype=torch.long, device=q.device)
        for s in range(self.n_shards):
            m = self._load_shard(s).to(q.device).flatten(1).float()  # (c, l*D)
            cos = (q @ m.T) / m.norm(dim=1).clamp(min=1e-12)  # (B, c); no normalised copy of m
            ids = torch.arange(s * self.shard_size, s * self.shard_size + len(m), device=q.device)
            best_s, pos = torch.cat([best_s, cos], 1).topk(min(n, best_s.shape[1] + len(m)), dim=1)
            best_i = torch.cat([best_i, ids.expand(len(q), -1)], 1).gather(1, pos)
        return best_s.cpu(), best_i.cpu()

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """The stored vectors of passages `ids` (any shape S) -> (*S, l, D) float32."""
        flat = ids.flatten().cpu()
        out = torch.empty(len(flat), self.l, self.D)
        for s in (flat // self.shard_size).unique().tolist():
            rows = (flat // self.shard_size) == s
            out[rows] = self._load_shard(s)[flat[rows] - s * self.shard_size].float()
        return out.view(*ids.shape, self.l, self.D)

    def faiss_index(self, kind: str):
        """A FAISS inner-product index over the normalised flattened vectors (inner product =
        cosine), built once and kept as faiss-<kind>.index beside the shards. It holds float32
        copies: l*D*4 bytes per passage in memory. Tune it here, e.g. .nprobe (ivf) or
        .hnsw.efSearch (hnsw). flat: exact; ivf: sqrt(n) lists, nprobe = max(4, lists/8); hnsw: M = 32."""
        if kind not in FAISS_KINDS:
            raise ValueError(f"FAISS index kind must be one of {FAISS_KINDS}, got {kind!r}")
        if kind in self._faiss:
            return self._faiss[kind]
        faiss = import_faiss()
        path = os.path.join(self.directory, f"faiss-{kind}.index")
        if os.path.exists(path):
            index = faiss.read_index(path)  # FAISS's own binary format, no pickle
            if index.ntotal != len(self) or index.d != self.l * self.D:
                raise ValueError(f"{path}: holds {index.ntotal} vectors of size {index.d}, the index "
                                 f"{len(self)} of size {self.l * self.D}; delete it to rebuild it")
        else:
            index = self._build_faiss(faiss, kind)
            _write_atomic(path, lambda p: faiss.write_index(index, p))
        self._faiss[kind] = index
        return index

    def _build_faiss(self, faiss, kind: str):
        d, n = self.l * self.D, len(self)
        unit = lambda s: F.normalize(self._load_shard(s).flatten(1).float(), dim=-1).numpy()  # (c, l*D)
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = HNSW_EF_SEARCH
        else:  # IVF: k-means on a strided sample of 40 vectors per list (FAISS asks for >= 39)
            lists = max(1, round(math.sqrt(n)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
            sample = torch.arange(0, n, max(1, n // (40 * lists)))
            index.train(F.normalize(self.vectors(sample).flatten(1), dim=-1).numpy())
            index.nprobe = min(lists, max(4, lists // 8))  # >= 4: small corpora still fill n
        for s in range(self.n_shards):
            index.add(unit(s))
        return index


def import_faiss():
    """FAISS is optional: imported only when asked for, with an error that says what to install."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("FAISS search needs the optional package faiss-cpu: pip install faiss-cpu "
                          "(the exact search, without --faiss, needs nothing more)") from err
    return faiss


def _check_resume(path: str, manifest: dict) -> dict:
    """An existing index.json must describe the same index (checkpoint, passages, shards): it is
    returned, else the error says what differs."""
    old = json.loads(Path(path).read_text())
    if old.get("fingerprint") != manifest["fingerprint"]:
        raise ValueError(f"{path}: built with another checkpoint; choose another --out or delete it")
    for key in ("format", "passages_sha256", "shard_size", "batch_size", "l", "D"):
        if old.get(key) != manifest[key]:
            raise ValueError(f"{path}: {key} was {old.get(key)!r}, now {manifest[key]!r} (other "
                             f"passages or settings); choose another --out or delete it")
    return old


# ---------------------------------------------------------------------------------------------
# Ask: whole-corpus search -> straight-through top-k -> generator
# ---------------------------------------------------------------------------------------------


@dataclass
class Answer:
    question: str
    answer: str
    passages: list[dict]  # the k picked, best first: {"id", "score", "text", "source", "chunk", "of"}


@torch.no_grad()
def ask(model, index: Index, question: str, k: int | None = None, n: int = 20,
        faiss: str | None = None, max_new_tokens: int = 32) -> Answer:
    """Answer `question` from the whole index: the top n passages by cosine (the paper's N
    candidates), the straight-through top-k picks k of them, the generator reads their vectors.

    >>> a = ask(model, index, "Who founded the Holmvar Guild?", k=5)
    >>> a.answer, [(p["source"], round(p["score"], 3)) for p in a.passages]
    """
    k = model.config.top_k if k is None else k
    n = min(n, len(index))
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k = {k}, n = {n} (the index has {len(index)} passages)")
    scores, ids = index.search(model, [question], n, faiss)  # (1, N) each
    M = index.vectors(ids).to(model.device, model.memory_tokens.dtype)  # (1, N, l, D)
    W, picks = clara.differentiable_topk(scores.to(model.device), k, model.config.temperature)  # (1, k, N)
    selected = torch.einsum("bkn,bnld->bkld", W.to(M.dtype), M)  # (1, k, l, D): M[picks] exactly
    text = model.generate([question], selected, max_new_tokens)[0]
    picked = [{"id": int(ids[0, j]), "score": float(scores[0, j]), **index.passages[int(ids[0, j])]}
              for j in picks[0].tolist()]
    return Answer(question, text, picked)


def print_answer(a: Answer, width: int = 100) -> None:
    print(f"Q: {a.question}\nA: {a.answer}")
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
    q.add_argument("-n", type=int, default=20, help="candidates from the whole index (paper: N = 20)")
    q.add_argument("-k", type=int, default=None, help="passages the generator reads (default: top_k)")
    q.add_argument("--faiss", choices=FAISS_KINDS, default=None, help="search with FAISS (faiss-cpu)")
    q.add_argument("--max-new-tokens", type=int, default=32)
    q.add_argument("questions", nargs="*", help="questions; none: read one per stdin line until EOF")
    for sp in (i, q):
        sp.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    return p.parse_args(argv)


def load_model(ckpt: str, device_name: str):
    """CLaRa.load on the chosen device, in eval mode; says which device and why."""
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
        why = "a GPU is available" if device_name == "cuda" else "no GPU found"
        print(f"device: {device_name}, float32: {why}", file=sys.stderr)
    if not os.path.isfile(os.path.join(ckpt, "config.json")):
        raise FileNotFoundError(f"{ckpt}: not a checkpoint (no config.json); pass --ckpt")
    return clara.CLaRa.load(ckpt).to(device_name).eval()


def main(argv=None):
    args = parse_args(argv)
    if args.command == "index":
        passages = read_passages(args.docs, args.paragraphs, args.split)  # bad input fails before a slow load
        model = load_model(args.ckpt, args.device)
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
    model = load_model(ckpt, args.device)
    index.check_model(model)
    questions = args.questions or _stdin_questions()
    answers = []
    for question in questions:
        answers.append(ask(model, index, question, args.k, args.n, args.faiss, args.max_new_tokens))
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
