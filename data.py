"""Readers for the official CLaRa JSONL formats (DESIGN.md section 5), with loud, precise errors.

Three stages, three row shapes (official data: HF dataset `apple/CLaRa_multi_stage`):

    pretrain  {"data_type": "qa", "question": [q1, ..], "answers": [a1, ..], "docs": [passage]}
              {"data_type": "paraphrase", "question": "", "answers": [paraphrase], "docs": [passage]}
    instruct  {"question": q, "docs": [k passages], "answer": teacher_answer, "gold_answer": short}
    e2e       {"question": q, "docs": [N passages], "answer" | "gold_answer" | "golden_answers": ..,
               "pos_index": [i, ..]}

`load_rows` turns each into a plain normalised dict carrying `"where"` ("path:17"), so that any
later error (too few candidates, a bad target) can name the file and line it came from. Nothing
is silently skipped: every bad row raises `ValueError("path:17: field 'docs': ...")`.
A `None` value counts as absent, because `datasets` fills a column missing from a row with None.
"""
import json
from pathlib import Path

STAGES = ("pretrain", "instruct", "e2e")
GOLD_FIELDS = ("gold_answer", "golden_answers")  # the gold answers a prediction is scored against
# `answer` is a gold only in rows that have neither: in official instruct rows it is the teacher's long
# answer (the training target), and the official evaluation scores against golden_answers.


# ---------------------------------------------------------------------------- reading files

def read_jsonl(path) -> list[tuple[int, dict]]:
    """Read a JSONL file into (line number, row) pairs; line numbers are 1-based, blank lines skipped.

    >>> # file: '{"a": 1}\\n\\n{"a": 2}\\n'   ->   [(1, {'a': 1}), (3, {'a': 2})]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            rows.append((line_no, row))
    return rows


def _read_source(source, split: str) -> list[tuple[str, dict]]:
    """(where, row) pairs from a local JSONL file, or else from a Hugging Face dataset id."""
    path = Path(source)
    if path.exists():
        return [(f"{path}:{line_no}", row) for line_no, row in read_jsonl(path)]
    if path.suffix in (".jsonl", ".json", ".txt"):  # clearly meant as a file: don't ask the hub
        raise FileNotFoundError(f"{path}: no such file")
    try:
        from datasets import load_dataset  # imported here: importing this module stays cheap
        dataset = load_dataset(str(source), split=split)
    except Exception as e:
        raise RuntimeError(
            f"{source!r} is not a local file, and loading it as a Hugging Face dataset "
            f"(split {split!r}) failed: {type(e).__name__}: {e}. The hub may be unreachable; "
            f"pass a local JSONL file instead.") from e
    return [(f"{source}[{split}]:{i}", dict(row)) for i, row in enumerate(dataset, start=1)]


# ---------------------------------------------------------------------------- field checks

def _fail(where: str, field: str, problem: str):
    raise ValueError(f"{where}: field {field!r}: {problem}")


def _get(row: dict, where: str, field: str):
    """row[field], or a clear error naming the missing field and the fields the row has."""
    if row.get(field) is None:
        _fail(where, field, f"missing (row has fields {sorted(k for k, v in row.items() if v is not None)})")
    return row[field]


def _nonempty_str(value, where: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(where, field, f"expected a non-empty string, got {value!r:.80}")
    return value


def _str_list(value, where: str, field: str) -> list[str]:
    """A non-empty list of non-empty strings; the error names the bad item's index."""
    if not isinstance(value, list) or not value:
        _fail(where, field, f"expected a non-empty list of strings, got {value!r:.80}")
    for i, item in enumerate(value):
        _nonempty_str(item, where, f"{field}[{i}]")
    return list(value)


def _aliases(row: dict, where: str) -> tuple[list[str], str]:
    """(gold aliases, the field they came from): gold_answer then golden_answers, deduplicated in
    order; `answer` only when the row has neither (the official evaluation's rule).

    Each field may hold a string or a list of strings.
    >>> _aliases({"answer": "It is Paris.", "gold_answer": "Paris", "golden_answers": ["Paris", "City of Light"]}, "f:1")
    (['Paris', 'City of Light'], 'gold_answer+golden_answers')
    >>> _aliases({"answer": "Paris"}, "f:1")
    (['Paris'], 'answer')
    """
    for fields in (GOLD_FIELDS, ("answer",)):
        aliases, used = [], []
        for field in fields:
            value = row.get(field)
            if value is None:
                continue
            used.append(field)
            values = [_nonempty_str(value, where, field)] if isinstance(value, str) else _str_list(value, where, field)
            for alias in values:
                if alias not in aliases:
                    aliases.append(alias)
        if aliases:
            return aliases, "+".join(used)
    _fail(where, "answer", f"no answer: expected one of {', '.join(GOLD_FIELDS)} or answer")


# ---------------------------------------------------------------------------- normalisers

def _pretrain_row(row: dict, where: str) -> dict:
    """SCP row -> {"kind", "doc", "questions", "answers", "where"} (a paraphrase has no questions)."""
    docs = _get(row, where, "docs")
    if not isinstance(docs, list) or len(docs) != 1:
        _fail(where, "docs", f"expected a list with exactly one passage, got {docs!r:.80}")
    doc = _nonempty_str(docs[0], where, "docs[0]")
    kind = row.get("data_type")
    if kind is None and isinstance(row.get("question"), list):
        kind = "qa"  # official rows without data_type are QA rows
    if kind == "qa":
        questions = _str_list(_get(row, where, "question"), where, "question")
        answers = _str_list(_get(row, where, "answers"), where, "answers")
        if len(questions) != len(answers):
            _fail(where, "answers", f"{len(answers)} answers for {len(questions)} questions")
    elif kind == "paraphrase":
        questions = []
        answers = _get(row, where, "answers")
        if not isinstance(answers, list) or len(answers) != 1:
            _fail(where, "answers", f"a paraphrase row needs exactly one paraphrase, got {answers!r:.80}")
        _nonempty_str(answers[0], where, "answers[0]")
    else:
        _fail(where, "data_type", f"expected 'qa' or 'paraphrase', got {kind!r}")
    return {"kind": kind, "doc": doc, "questions": questions, "answers": list(answers), "where": where}


def _instruct_row(row: dict, where: str) -> dict:
    """Instruction row -> {"question", "docs", "answer" (training target), "answers", "where"}."""
    question = _nonempty_str(_get(row, where, "question"), where, "question")
    docs = _str_list(_get(row, where, "docs"), where, "docs")
    answers, gold_field = _aliases(row, where)
    # The target is the teacher's answer when present (the official stage-2 target), else the gold.
    target = row.get("answer")
    target = answers[0] if target is None else _nonempty_str(target, where, "answer")
    return {"question": question, "docs": docs, "answer": target, "answers": answers,
            "gold_field": gold_field, "pos_index": _pos_index(row, where, len(docs)), "where": where}


def _e2e_row(row: dict, where: str) -> dict:
    """End-to-end row -> {"question", "docs", "answer", "answers", "pos_index", "where"}."""
    question = _nonempty_str(_get(row, where, "question"), where, "question")
    docs = _str_list(_get(row, where, "docs"), where, "docs")
    answers, gold_field = _aliases(row, where)
    # the training target: `answer`, as the official code reads it, else the first gold
    target = row.get("answer")
    target = answers[0] if target is None else _nonempty_str(target, where, "answer")
    return {"question": question, "docs": docs, "answer": target, "answers": answers,
            "gold_field": gold_field, "pos_index": _pos_index(row, where, len(docs)), "where": where}


def _pos_index(row: dict, where: str, n_docs: int) -> list[int]:
    """The indices of the positive docs (optional: [] when absent)."""
    pos_index = row.get("pos_index")
    pos_index = [] if pos_index is None else pos_index
    if not isinstance(pos_index, list):
        _fail(where, "pos_index", f"expected a list of document indices, got {pos_index!r:.80}")
    for i, p in enumerate(pos_index):
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < n_docs:
            _fail(where, f"pos_index[{i}]", f"expected an int index into the {n_docs} docs, got {p!r}")
    return list(pos_index)


_NORMALISERS = {"pretrain": _pretrain_row, "instruct": _instruct_row, "e2e": _e2e_row}


def load_rows(source, stage: str, split: str = "train") -> list[dict]:
    """Load and check every row of `source` for `stage` ("pretrain", "instruct" or "e2e").

    `source` is a local .jsonl path, or (only when no such path exists) a Hugging Face dataset id
    loaded with `datasets.load_dataset(source, split=split)`. Each returned row has `"where"`.
    """
    if stage not in _NORMALISERS:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    rows = [_NORMALISERS[stage](row, where) for where, row in _read_source(source, split)]
    if not rows:
        raise ValueError(f"{source}: no rows")
    return rows


# ---------------------------------------------------------------------------- targets and checks

def format_qa_target(questions: list[str], answers: list[str]) -> str:
    """The SCP target of a QA row: every pair as "Question: q\\nAnswer: a", one after another.

    >>> print(format_qa_target(["Who?", "When?"], ["Ada", "1843"]))
    Question: Who?
    Answer: Ada
    Question: When?
    Answer: 1843
    """
    if len(questions) != len(answers) or not questions:
        raise ValueError(f"need equal, non-zero numbers of questions and answers, "
                         f"got {len(questions)} and {len(answers)}")
    return "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in zip(questions, answers))


def oracle_k(row: dict, k: int) -> list[int]:
    """The k passages a row reads when given "its" passages: the positives, then the first other
    candidates until there are k, in candidate order (so the gold keeps its slot: a model cannot
    learn "the answer is in slot 1"). Without pos_index, the first k.

    >>> oracle_k({"docs": ["a", "b", "c", "d", "e"], "pos_index": [3]}, 3)
    [0, 1, 3]
    """
    pos = sorted(row.get("pos_index") or [])[:k]
    rest = [i for i in range(len(row["docs"])) if i not in pos][:k - len(pos)]
    return sorted(pos + rest)


def check_candidates(rows: list[dict], k: int) -> None:
    """Raise if any row has fewer than k candidate docs (top-k of N needs N >= k)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    for row in rows:
        if len(row["docs"]) < k:
            _fail(row["where"], "docs", f"{len(row['docs'])} candidate documents, fewer than k={k}")


def text_passages(source) -> list[str]:
    """Passages from a .txt file (one per non-empty line) or a .jsonl file (field "text", "doc",
    "passage", or the first of "docs"); used by the data-synthesis script.

    >>> # passages.txt: 'Paris is in France.\\n\\nRome is in Italy.\\n'  ->  two passages
    """
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".txt":
        passages = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix == ".jsonl":
        passages = []
        for line_no, row in read_jsonl(path):
            where = f"{path}:{line_no}"
            for field in ("text", "doc", "passage"):
                if row.get(field) is not None:
                    passages.append(_nonempty_str(row[field], where, field))
                    break
            else:
                if row.get("docs") is None:
                    _fail(where, "text", f"missing: expected one of text, doc, passage, docs "
                                         f"(row has fields {sorted(row)})")
                passages.append(_str_list(row["docs"], where, "docs")[0])
    else:
        raise ValueError(f"{path}: expected a .txt or .jsonl file, got {path.suffix or 'no suffix'!r}")
    if not passages:
        raise ValueError(f"{path}: no passages")
    return passages
