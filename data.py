"""Readers for the official CLaRa JSONL formats (docs/design.md section 5), with loud, precise errors.

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
import math
import re
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


def read_source(source, split: str = "train") -> list[tuple[str, dict]]:
    """(where, row) pairs from a local JSONL file, or else from a Hugging Face dataset id (or a
    local dataset directory that `datasets.load_dataset` reads)."""
    path = Path(source)
    if path.is_file():
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

def fail(where: str, field: str, problem: str):
    """Raise the error every reader gives: ValueError("path:17: field 'docs': problem")."""
    raise ValueError(f"{where}: field {field!r}: {problem}")


def _get(row: dict, where: str, field: str):
    """row[field], or a clear error naming the missing field and the fields the row has."""
    if row.get(field) is None:
        fail(where, field, f"missing (row has fields {sorted(k for k, v in row.items() if v is not None)})")
    return row[field]


def nonempty_str(value, where: str, field: str) -> str:
    """`value` if it is a string with something in it, else an error naming where and field."""
    if not isinstance(value, str) or not value.strip():
        fail(where, field, f"expected a non-empty string, got {value!r:.80}")
    return value


def str_list(value, where: str, field: str) -> list[str]:
    """A non-empty list of non-empty strings; the error names the bad item's index."""
    if not isinstance(value, list) or not value:
        fail(where, field, f"expected a non-empty list of strings, got {value!r:.80}")
    for i, item in enumerate(value):
        nonempty_str(item, where, f"{field}[{i}]")
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
            values = [nonempty_str(value, where, field)] if isinstance(value, str) else str_list(value, where, field)
            for alias in values:
                if alias not in aliases:
                    aliases.append(alias)
        if aliases:
            return aliases, "+".join(used)
    fail(where, "answer", f"no answer: expected one of {', '.join(GOLD_FIELDS)} or answer")


# ---------------------------------------------------------------------------- normalisers

def _pretrain_row(row: dict, where: str) -> dict:
    """SCP row -> {"kind", "doc", "questions", "answers", "where"} (a paraphrase has no questions)."""
    docs = _get(row, where, "docs")
    if not isinstance(docs, list) or len(docs) != 1:
        fail(where, "docs", f"expected a list with exactly one passage, got {docs!r:.80}")
    doc = nonempty_str(docs[0], where, "docs[0]")
    kind = row.get("data_type")
    if kind is None and isinstance(row.get("question"), list):
        kind = "qa"  # official rows without data_type are QA rows
    if kind == "qa":
        questions = str_list(_get(row, where, "question"), where, "question")
        answers = str_list(_get(row, where, "answers"), where, "answers")
        if len(questions) != len(answers):
            fail(where, "answers", f"{len(answers)} answers for {len(questions)} questions")
    elif kind == "paraphrase":
        questions = []
        answers = _get(row, where, "answers")
        if not isinstance(answers, list) or len(answers) != 1:
            fail(where, "answers", f"a paraphrase row needs exactly one paraphrase, got {answers!r:.80}")
        nonempty_str(answers[0], where, "answers[0]")
    else:
        fail(where, "data_type", f"expected 'qa' or 'paraphrase', got {kind!r}")
    return {"kind": kind, "doc": doc, "questions": questions, "answers": list(answers), "where": where}


def _instruct_row(row: dict, where: str) -> dict:
    """Instruction row -> {"question", "docs", "answer" (training target), "answers", "where"}."""
    question = nonempty_str(_get(row, where, "question"), where, "question")
    docs = str_list(_get(row, where, "docs"), where, "docs")
    answers, gold_field = _aliases(row, where)
    # The target is the teacher's answer when present (the official stage-2 target), else the gold.
    target = row.get("answer")
    target = answers[0] if target is None else nonempty_str(target, where, "answer")
    return {"question": question, "docs": docs, "answer": target, "answers": answers,
            "gold_field": gold_field, "pos_index": _pos_index(row, where, len(docs)), "where": where}


def _e2e_row(row: dict, where: str) -> dict:
    """End-to-end row -> {"question", "docs", "answer", "answers", "pos_index", "where"}."""
    question = nonempty_str(_get(row, where, "question"), where, "question")
    docs = str_list(_get(row, where, "docs"), where, "docs")
    answers, gold_field = _aliases(row, where)
    # the training target: `answer`, as the official code reads it, else the first gold
    target = row.get("answer")
    target = answers[0] if target is None else nonempty_str(target, where, "answer")
    return {"question": question, "docs": docs, "answer": target, "answers": answers,
            "gold_field": gold_field, "pos_index": _pos_index(row, where, len(docs)), "where": where}


def _pos_index(row: dict, where: str, n_docs: int) -> list[int]:
    """The indices of the positive docs (optional: [] when absent)."""
    pos_index = row.get("pos_index")
    pos_index = [] if pos_index is None else pos_index
    if not isinstance(pos_index, list):
        fail(where, "pos_index", f"expected a list of document indices, got {pos_index!r:.80}")
    for i, p in enumerate(pos_index):
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < n_docs:
            fail(where, f"pos_index[{i}]", f"expected an int index into the {n_docs} docs, got {p!r}")
    return list(pos_index)


_NORMALISERS = {"pretrain": _pretrain_row, "instruct": _instruct_row, "e2e": _e2e_row}


def load_rows(source, stage: str, split: str = "train") -> list[dict]:
    """Load and check every row of `source` for `stage` ("pretrain", "instruct" or "e2e").

    `source` is a local .jsonl path, or (only when no such path exists) a Hugging Face dataset id
    loaded with `datasets.load_dataset(source, split=split)`. Each returned row has `"where"`.
    """
    if stage not in _NORMALISERS:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    rows = [_NORMALISERS[stage](row, where) for where, row in read_source(source, split)]
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
            fail(row["where"], "docs", f"{len(row['docs'])} candidate documents, fewer than k={k}")


# ---------------------------------------------------------------------------- plain passages

PASSAGE_FIELDS = ("doc", "passage")  # a row's passage, after the text field; "docs": each entry is one


def read_passages(source, paragraphs: bool = False, split: str = "train",
                  text_field: str = "text") -> list[tuple[str, str]]:
    """(text, where) pairs: the passages of `source`, each named by where it came from. Used by
    ask.py (the passages it indexes) and scp.py (the passages it writes questions about). Nothing
    is skipped silently; bad input names the file, line and field.

    .txt    one passage per non-empty line; with paragraphs=True, blank-line separated
            paragraphs, each one's lines joined by spaces (named by its first line)
    .jsonl  per row: a `text_field` ("text"), "doc" or "passage" string, or a "docs" list (each
            entry a passage, as in the official CLaRa files: "file.jsonl:3 docs[1]")
    else    a Hugging Face dataset id (or a local dataset directory), split `split`, rows as in .jsonl

    >>> # notes.txt: 'Paris is in France.\\n\\nRome is in Italy.\\n'
    >>> # read_passages("notes.txt") -> [('Paris is in France.', 'notes.txt:1'),
    >>> #                                ('Rome is in Italy.', 'notes.txt:3')]
    """
    path = Path(source)
    if path.suffix == ".txt" or (path.is_file() and path.suffix != ".jsonl"):
        out = _txt_passages(path, paragraphs)
    else:
        rows = read_source(source, split)  # JSON errors name file:line
        if rows and not path.is_file():  # a dataset: say which column is missing, once
            columns = sorted(rows[0][1])
            if not {text_field, *PASSAGE_FIELDS, "docs"} & set(columns):
                raise ValueError(f"{source}[{split}]: no column {text_field!r} (has {columns}); "
                                 f"pass --text-field")
        out = [p for where, row in rows for p in _labelled_passages(row, where, text_field)]
    if not out:
        raise ValueError(f"{source}: no passages")
    return out


def _labelled_passages(row: dict, where: str, text_field: str) -> list[tuple[str, str]]:
    """read_passages: one .jsonl or dataset row -> its passages as (text, label) pairs, the label
    "file.jsonl:3", or "file.jsonl:3 docs[1]" for each entry of a docs list."""
    for field in (text_field, *PASSAGE_FIELDS):
        if row.get(field) is not None:
            return [(nonempty_str(row[field], where, field), where)]
    if row.get("docs") is None:
        fail(where, text_field, f"missing: expected one of {', '.join((text_field, *PASSAGE_FIELDS))}, "
                                f"docs (row has fields {sorted(k for k, v in row.items() if v is not None)})")
    return [(d, f"{where} docs[{i}]") for i, d in enumerate(str_list(row["docs"], where, "docs"))]


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


# ---------------------------------------------------------------------------- a training run's rows

DATA_FILES = {"pretrain": ("pretrain.jsonl", "pretrain_heldout.jsonl"),  # a data directory's files:
              "instruct": ("instruct.jsonl", "instruct_heldout.jsonl"),  # (training, development part)
              "e2e": ("e2e_train.jsonl", "e2e_heldout.jsonl")}


def stage_sources(items: list[str], stage: str = "all") -> dict:
    """train.py's --data -> {stage: (training source, held-out source or None)}: a directory with
    DATA_FILES, STAGE=SOURCE pairs, or one source for a single stage."""
    if len(items) == 1 and "=" not in items[0] and not Path(items[0]).is_dir():
        if stage == "all":
            raise SystemExit("--stage all needs a directory or STAGE=SOURCE pairs in --data")
        return {stage: (items[0], None)}
    sources = {}
    for item in items:
        if Path(item).is_dir():
            for name, (train_file, eval_file) in DATA_FILES.items():
                held = Path(item) / eval_file
                sources[name] = (str(Path(item) / train_file), str(held) if held.exists() else None)
        elif "=" in item:
            name, source = item.split("=", 1)
            if name not in STAGES:
                raise SystemExit(f"--data {item}: unknown stage {name!r}; choose from {STAGES}")
            sources[name] = (source, None)
        else:
            raise SystemExit(f"--data {item}: give a directory or STAGE=SOURCE pairs")
    return sources


def row_passages(row: dict, stage: str) -> list[str]:
    """The passages a row is about: its passage (pretrain), its positives, else all its docs."""
    if stage == "pretrain":
        return [row["doc"]]
    return [row["docs"][i] for i in row["pos_index"]] if row.get("pos_index") else row["docs"]


def shown_passages(row: dict, stage: str) -> list[str]:
    """Every passage a row puts before the generator: its passage (pretrain), else all its docs."""
    return [row["doc"]] if stage == "pretrain" else row["docs"]


def split_by_passage(rows: list[dict], stage: str, n_eval: int, where: str):
    """Held-out rows for a source with no held-out file: the rows about the last distinct passages
    of the file, until there are n_eval of them. A training row that shows one of those passages
    anywhere (even as a distractor) is dropped, so no held-out passage is ever trained on.
    -> (training rows, held-out rows, number of dropped rows)."""
    held_passages, held = set(), []
    for row in reversed(rows):
        if len(held) >= n_eval:
            break
        held_passages.update(row_passages(row, stage))
        held = [r for r in rows if held_passages & set(row_passages(r, stage))]
    train = [r for r in rows if not held_passages & set(shown_passages(r, stage))]
    if len(held) < n_eval or not train:
        raise SystemExit(f"{where}: {len(rows)} rows cannot give {n_eval} held-out rows about passages "
                         f"that no training row shows ({len(train)} training rows would be left)")
    return train, held, len(rows) - len(train) - len(held)


def pick_held_out(held: list[dict], stage: str, n: int, where: str) -> list[dict]:
    """n of the (already shuffled) held-out rows for the logged diagnostics, each with a
    shuffled-control donor among them (a row showing none of its passages, metrics.shuffle_donors):
    the first n when they have; else, first the rows that share no passage with a row already
    picked, then the rest in order. Refuses, naming the file, when a row would have no donor."""
    def lacking(rows):  # rows that share a passage with every other row
        sets = [set(shown_passages(r, stage)) for r in rows]
        return [r for r, s in zip(rows, sets) if all(s & o for o in sets if o is not s)]

    picked = held[:n]
    if lacking(picked):
        picked, seen = [], set()
        for row in held:
            if len(picked) < n and not seen & set(shown_passages(row, stage)):
                picked.append(row)
                seen.update(shown_passages(row, stage))
        picked += [r for r in held if not any(r is p for p in picked)][:n - len(picked)]
    if lacking(picked):
        raise SystemExit(f"{where}: held-out row {lacking(picked)[0]['where']} shares a passage with "
                         f"every other held-out row, so its shuffled control has no donor; use more "
                         f"--eval-rows or held-out rows about other passages")
    return picked


def pretrain_inputs(rows: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """Stage-1 rows -> (passages, targets, kinds) for CLaRa.pretrain_loss."""
    targets = [format_qa_target(r["questions"], r["answers"]) if r["kind"] == "qa" else r["answers"][0]
               for r in rows]
    return [r["doc"] for r in rows], targets, [r["kind"] for r in rows]


def curriculum_rows(rows: list[dict], progress: float) -> list[dict]:
    """Easy-to-hard warm-up of stage 1 (a deviation from the paper, off by default): each passage is
    cut to its first sentences, the more the further `progress` (0..1] goes, and the target is that
    text itself (a paraphrase row). Short inputs in l vectors are easy to compress, so the generator
    learns to read the vectors before the real SCP targets (docs/design.md section 8)."""
    out = []
    for r in rows:
        sentences = re.split(r"(?<=[.!?])\s+", r["doc"].strip())
        text = " ".join(sentences[:max(1, math.ceil(progress * len(sentences)))])
        out.append({**r, "kind": "paraphrase", "doc": text, "questions": [], "answers": [text]})
    return out
