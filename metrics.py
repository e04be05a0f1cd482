"""Evaluation metrics (docs/design.md section 6), a BM25 baseline and the shuffled control's donor
rule: small pure functions.

Answers: SQuAD normalisation, then exact match (EM), token F1 and cover-EM (CEM, the paper's
"acc"). With several gold aliases we take the max over aliases; `first_only=True` scores only
golds[0], as the official CLaRa script does. Report which one you use.
Retrieval: Recall@k and reciprocal rank (MRR when averaged; the paper reports no MRR) of a
ranking of the N candidates, and BM25 scores as a text-only reranking baseline.
Controls: shuffle_donors, which row's passages another row reads in the shuffled control (used by
train.py's stage-1/2 diagnostics and by eval.py).
Training: supervised_rank_loss (the labelled reference of --rank-loss supervised, on tensors), and
train.py's log line and no-gap warning, from the records it writes to metrics.jsonl.
"""
import json
import math
import os
import random
import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)


# ---------------------------------------------------------------------------- answer metrics

def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles a/an/the, squeeze spaces.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    >>> normalize_answer("An apple a day")
    'apple day'
    """
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _check_golds(prediction, golds, first_only: bool) -> list[str]:
    """Validate inputs; return the golds to score against (all, or only the first)."""
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a string, got {type(prediction).__name__}")
    if isinstance(golds, str):  # a bare string would be scored character by character
        raise TypeError(f"golds must be a list of strings, got the string {golds!r}")
    if not golds:
        raise ValueError("no gold answer")
    for g in golds:
        if not isinstance(g, str) or not g.strip():
            raise ValueError(f"gold answers must be non-empty strings, got {g!r} in {golds!r}")
    return list(golds[:1]) if first_only else list(golds)


def exact_match(prediction: str, golds: list[str], first_only: bool = False) -> float:
    """1.0 if the normalised prediction equals a normalised gold (max over aliases).

    >>> exact_match("The Beatles.", ["beatles"])
    1.0
    >>> exact_match("Lennon", ["Paul McCartney", "John Lennon"])
    0.0
    """
    golds = _check_golds(prediction, golds, first_only)
    return max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)


def _token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:  # SQuAD v2 rule: two empties agree, one empty scores 0
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: list[str], first_only: bool = False) -> float:
    """SQuAD token F1 (bag of normalised tokens), max over aliases.

    "the cat sat" vs "cat sat down": tokens [cat, sat] vs [cat, sat, down], 2 shared,
    precision 2/2, recall 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8.
    >>> round(f1_score("the cat sat", ["cat sat down"]), 6)
    0.8
    """
    golds = _check_golds(prediction, golds, first_only)
    return max(_token_f1(prediction, g) for g in golds)


def cover_em(prediction: str, golds: list[str], first_only: bool = False) -> float:
    """Cover-EM (CEM): 1.0 if every normalised token of a gold appears in the normalised prediction.

    Word order and extra words in the prediction do not matter, so long answers are not punished.
    A gold that normalises to nothing (e.g. "The") covers only an empty prediction.
    >>> cover_em("It was John Lennon, in 1980.", ["John Lennon"])
    1.0
    >>> cover_em("Lennon", ["John Lennon"])
    0.0
    """
    golds = _check_golds(prediction, golds, first_only)
    pred = set(normalize_answer(prediction).split())

    def covers(gold: str) -> float:
        ref = set(normalize_answer(gold).split())
        return float(ref <= pred) if ref else float(not pred)

    return max(covers(g) for g in golds)


# ---------------------------------------------------------------------------- retrieval metrics

def _check_positives(positives) -> set[int]:
    if not positives:
        raise ValueError("no positive documents: recall and reciprocal rank are undefined")
    return set(positives)


def recall_at_k(ranking: list[int], positives: list[int], k: int) -> float:
    """Fraction of the positive documents found among the first k of the ranking.

    >>> recall_at_k([3, 0, 2, 1], positives=[0, 1], k=2)   # finds 0, misses 1
    0.5
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    positives = _check_positives(positives)
    return len(positives & set(ranking[:k])) / len(positives)


def reciprocal_rank(ranking: list[int], positives: list[int]) -> float:
    """1 / (1-based rank of the first positive), 0.0 if no positive is ranked.

    >>> reciprocal_rank([3, 0, 2, 1], positives=[2, 1])   # first positive at rank 3
    0.3333333333333333
    """
    positives = _check_positives(positives)
    for rank, doc in enumerate(ranking, start=1):
        if doc in positives:
            return 1.0 / rank
    return 0.0


def rank_from_scores(scores: list[float]) -> list[int]:
    """Document indices by score, highest first; ties go to the lower index (stable, deterministic).

    >>> rank_from_scores([0.1, 0.7, 0.1, 0.9])
    [3, 1, 0, 2]
    """
    scores = [float(s) for s in scores]  # also accepts a 1-D tensor or array
    if any(math.isnan(s) for s in scores):
        raise ValueError(f"scores contain NaN: {scores}")
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def ranking_metrics(scores, positives, recall_at=(), hit_at=()) -> dict:
    """MRR, Recall@k (k in recall_at) and hit@k (a positive among the top k, k in hit_at) of the
    rankings given by each question's N scores, over the questions with positives (positives[i]:
    question i's positive indices; one without any has no rank and is left out). -> {"mrr",
    "recall@k".., "hit@k".., "questions", "without_positives" (how many were left out),
    "per_question_rr"}, or {"skipped"} if none has positives.

    >>> ranking_metrics([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]], [[2], []], recall_at=(1,), hit_at=(2,))["hit@2"]
    1.0
    """
    rr, at = [], {**{f"recall@{k}": [] for k in recall_at}, **{f"hit@{k}": [] for k in hit_at}}
    for s, pos in zip(scores, positives):
        if not pos:
            continue
        ranking = rank_from_scores(s)
        rr.append(reciprocal_rank(ranking, pos))
        for k in recall_at:
            at[f"recall@{k}"].append(recall_at_k(ranking, pos, k))
        for k in hit_at:
            at[f"hit@{k}"].append(float(any(i in pos for i in ranking[:k])))
    if not rr:
        return {"skipped": "no row has pos_index"}
    return {"mrr": summarize(rr), **{name: summarize(v) for name, v in at.items()},
            "questions": len(rr), "without_positives": len(scores) - len(rr), "per_question_rr": rr}


def summarize(values: list[float]) -> float:
    """Mean of per-question values (e.g. EM over a test set), refusing an empty list."""
    values = list(values)
    if not values:
        raise ValueError("no values to summarize")
    return sum(values) / len(values)


def paired_bootstrap(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean difference mean(a) - mean(b) of paired per-question values, with a 95% interval from
    the paired bootstrap (questions resampled with replacement, the same draw for a and b, so what
    the two settings share cancels; percentile interval). Seeded, so a report is reproducible.

    >>> paired_bootstrap([1, 1, 0, 1], [0, 1, 0, 0])["diff"]
    0.5
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values needed: got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    rng, n = random.Random(seed), len(d)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return {"diff": sum(d) / n, "lo": means[int(0.025 * resamples)],
            "hi": means[min(resamples - 1, int(0.975 * resamples))], "questions": n}


# ---------------------------------------------------------------------------- BM25 baseline

def _tokenize(text: str) -> list[str]:
    """Lowercase word tokens, punctuation dropped: "Eiffel's tower!" -> ['eiffel', 's', 'tower']."""
    return re.findall(r"\w+", text.lower())


class BM25:
    """Okapi BM25 with k1 = 1.5, b = 0.75, fitted on a list of documents.

    score(q, d) = sum over query tokens t of
        idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(1 + (n_docs - df(t) + 0.5) / (df(t) + 0.5))   (Lucene's form: never negative,
    so a word found in most documents still counts a little instead of lowering the score).
    A query token repeated twice counts twice.

    Toy corpus ["the cat sat", "the dog barked loudly"], query "cat": df(cat) = 1, idf = ln 2,
    |d0| = 3, avgdl = 3.5, so score(d0) = ln 2 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 3 / 3.5)) ~ 0.7408;
    the dog document lacks the word and scores 0.
    >>> [round(s, 4) for s in BM25(["the cat sat", "the dog barked loudly"]).scores("cat")]
    [0.7408, 0.0]
    """

    def __init__(self, documents: list[str], k1: float = 1.5, b: float = 0.75):
        self._fit([Counter(_tokenize(d)) for d in documents], k1, b)

    @classmethod
    def from_counts(cls, doc_tokens: list[Counter], k1: float = 1.5, b: float = 0.75) -> "BM25":
        """The same BM25 from each document's term counts, without tokenizing again (ask.py
        stores them beside its index)."""
        bm25 = cls.__new__(cls)
        bm25._fit([Counter(tf) for tf in doc_tokens], k1, b)
        return bm25

    def _fit(self, doc_tokens: list[Counter], k1: float, b: float):
        if not doc_tokens:
            raise ValueError("BM25 needs at least one document to fit on")
        self.k1, self.b = k1, b
        self.doc_tokens = doc_tokens  # term frequencies per doc
        self.doc_lens = [sum(tf.values()) for tf in self.doc_tokens]
        self.avgdl = sum(self.doc_lens) / len(doc_tokens) or 1.0  # all-empty corpus: avoid 0/0
        df = Counter(t for tf in self.doc_tokens for t in tf)  # documents containing each term
        n = len(doc_tokens)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: str) -> list[float]:
        """One BM25 score per fitted document, in document order."""
        out = []
        for tf, length in zip(self.doc_tokens, self.doc_lens):
            norm = self.k1 * (1 - self.b + self.b * length / self.avgdl)
            out.append(sum((self.idf[t] * tf[t] * (self.k1 + 1) / (tf[t] + norm)
                           for t in _tokenize(query) if tf[t]), 0.0))
        return out


def bm25_scores(question: str, docs: list[str]) -> list[float]:
    """BM25 scores of a question's N candidates, with IDF computed over those N candidates only
    (the reranking setting: no outside corpus). Rank them with `rank_from_scores`."""
    return BM25(docs).scores(question)


# ---------------------------------------------------------------------------- controls

def shuffle_donors(own: list, shown: list, names: list[str] | None = None) -> list[int]:
    """The shuffled control (docs/design.md section 8): for row i, the next row j (cyclically) none
    of whose passages shown[j] is one of row i's own passages own[i], so that the "shuffled" row
    never reads its own facts. A roll by one is not enough: rows share passages (several questions
    per passage, similar passages as distractors). names[i] (e.g. "file.jsonl:7") labels row i in
    errors.

    >>> shuffle_donors([{"a"}, {"a"}, {"b"}], [["a"], ["a"], ["b"]])
    [2, 2, 0]
    """
    donors = []
    for i in range(len(own)):
        j = next((j % len(own) for j in range(i + 1, i + len(own)) if not set(own[i]) & set(shown[j % len(own)])), None)
        if j is None:
            raise ValueError(f"{names[i] if names else f'row {i}'}: every other row holds one of its "
                             f"passages, so the shuffled control has no donor; use rows about other passages")
        donors.append(j)
    return donors


# ---------------------------------------------------------------------------- training (train.py)

def supervised_rank_loss(logits, positives: list[list[int]], names: list[str]):
    """-log (softmax mass of the positives), averaged over rows: logits (B, N) = s / tau over the N
    candidates, positives[b] row b's pos_index. A contrastive loss on relevance labels, NOT the paper's
    label-free stage 3 but the upper reference it is compared with (train.py --rank-loss supervised).
    names[b] (e.g. "file.jsonl:7") labels row b in errors."""
    pos = logits.new_zeros(logits.shape).bool()  # (B, N)
    for b, p in enumerate(positives):
        if not p:
            raise ValueError(f"{names[b]}: --rank-loss supervised needs pos_index on every row")
        pos[b, p] = True
    return (logits.logsumexp(-1) - logits.masked_fill(~pos, float("-inf")).logsumexp(-1)).mean()


def format_log(rec: dict) -> str:
    """One metrics.jsonl record of train.py as its printed log line."""
    s = f"stage {rec['stage']:8s} step {rec['step']:04d} | loss {rec['loss']:.3f} | lr {rec['lr']:.1e}"
    if "gap" in rec:
        s += f" | eval own {rec['eval_own']:.3f} shuffled {rec['eval_shuffled']:.3f} gap {rec['gap']:+.3f}"
    if "curriculum_gap" in rec:
        s += f" | warm-up gap {rec['curriculum_gap']:+.3f}"
    if "mrr" in rec:
        s += (f" | hit@k {rec['hit']:.2f} mrr {rec['mrr']:.2f}"
              f" | eval hit@k {rec['eval_hit']:.2f} mrr {rec['eval_mrr']:.2f}")
    return s + f" | {rec['ms_per_step']:.0f} ms/step {rec['tokens_per_s']:.0f} tok/s mfu {100 * rec['mfu']:.1f}%"


def records_up_to(lines: list[str], stage: str, step: int) -> list[str]:
    """metrics.jsonl lines without a stage's records past `step`: a run resumed from its checkpoint
    at `step` replays the steps after it, and would otherwise log them twice."""
    return [line for line in lines if not ((r := json.loads(line))["stage"] == stage and r["step"] > step)]


def warn_if_no_gap(metrics_path: str, threshold: float = 0.01):
    """Stage 3 learns only through the generator reading the chosen vectors: if the last stage-1/2
    gap is ~0, the answer loss cannot tell good documents from bad (measured: MRR fell 43 -> 16)."""
    if not os.path.exists(metrics_path):
        return
    gaps = [r["gap"] for r in map(json.loads, open(metrics_path)) if "gap" in r]
    if gaps and gaps[-1] < threshold:
        print(f"warning: the last held-out gap is {gaps[-1]:+.3f}: the memory vectors carry no measurable "
              f"information yet, so stage 3 has no signal to train the reranker with")
