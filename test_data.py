"""Tests for data.py: each official format normalises as documented, each bad row names file, line, field."""
import json
from pathlib import Path

import pytest

from data import check_candidates, format_qa_target, load_rows, read_jsonl, read_passages

SCP_SAMPLE = Path(__file__).parent.parent / "shared" / "data" / "scp_sample_800.jsonl"

QA = {"data_type": "qa", "question": ["Who?", "When?"], "answers": ["Ada", "1843"], "docs": ["Ada wrote notes in 1843."]}
PARA = {"data_type": "paraphrase", "question": "", "answers": ["In 1843 Ada wrote notes."], "docs": ["Ada wrote notes in 1843."]}
INSTRUCT = {"question": "Who wrote notes?", "docs": ["p1", "p2"], "answer": "It was Ada Lovelace.", "gold_answer": "Ada"}
E2E = {"question": "Who wrote notes?", "docs": ["p0", "p1", "p2"], "answer": "Ada", "pos_index": [1]}


def write_jsonl(path: Path, rows) -> Path:
    """Write rows (dicts, or raw strings written as-is) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def assert_error(path, stage, rows, line, field):
    """Loading `rows` fails with a message naming the file name, line number and field."""
    file = write_jsonl(path / f"{stage}.jsonl", rows)
    with pytest.raises(ValueError) as err:
        load_rows(file, stage)
    msg = str(err.value)
    assert f"{stage}.jsonl:{line}:" in msg, f"file and line missing from: {msg}"
    assert field in msg, f"field {field!r} missing from: {msg}"
    return msg


# ---------------------------------------------------------------------------- read_jsonl

def test_read_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    file = write_jsonl(tmp_path / "x.jsonl", [{"a": 1}, "", "   ", {"a": 2}])
    assert read_jsonl(file) == [(1, {"a": 1}), (4, {"a": 2})]


def test_read_jsonl_bad_json_names_file_and_line(tmp_path):
    file = write_jsonl(tmp_path / "x.jsonl", [{"a": 1}, '{"a": 2'])
    with pytest.raises(ValueError, match=r"x\.jsonl:2: not valid JSON"):
        read_jsonl(file)


def test_read_jsonl_rejects_non_object_rows(tmp_path):
    file = write_jsonl(tmp_path / "x.jsonl", ["[1, 2]"])
    with pytest.raises(ValueError, match=r"x\.jsonl:1: expected a JSON object"):
        read_jsonl(file)


def test_missing_local_file_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_rows(tmp_path / "nope.jsonl", "pretrain")


def test_unknown_stage(tmp_path):
    with pytest.raises(ValueError, match="stage must be one of"):
        load_rows(write_jsonl(tmp_path / "x.jsonl", [QA]), "sft")


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        load_rows(write_jsonl(tmp_path / "x.jsonl", []), "pretrain")


# ---------------------------------------------------------------------------- hub fallback (no network)

def test_hub_failure_says_hub_may_be_unreachable(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(RuntimeError, match="hub may be unreachable.*local JSONL"):
        load_rows("apple/CLaRa_multi_stage", "e2e")


def test_hub_rows_are_normalised_with_row_numbers(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return [dict(E2E, gold_answer=None)]  # datasets fills missing columns with None

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_rows("some/dataset", "e2e", split="test")
    assert calls == [("some/dataset", "test")]
    assert rows[0]["where"] == "some/dataset[test]:1"
    assert rows[0]["answers"] == ["Ada"]


# ---------------------------------------------------------------------------- pretrain

def test_pretrain_normalises_qa_and_paraphrase(tmp_path):
    file = write_jsonl(tmp_path / "p.jsonl", [QA, PARA])
    qa, para = load_rows(file, "pretrain")
    assert qa == {"kind": "qa", "doc": "Ada wrote notes in 1843.", "questions": ["Who?", "When?"],
                  "answers": ["Ada", "1843"], "where": f"{file}:1"}
    assert para == {"kind": "paraphrase", "doc": "Ada wrote notes in 1843.", "questions": [],
                    "answers": ["In 1843 Ada wrote notes."], "where": f"{file}:2"}


def test_pretrain_missing_data_type_with_list_questions_is_qa(tmp_path):
    row = {k: v for k, v in QA.items() if k != "data_type"}
    (out,) = load_rows(write_jsonl(tmp_path / "p.jsonl", [row]), "pretrain")
    assert out["kind"] == "qa"


@pytest.mark.parametrize("bad, field", [
    ({"docs": []}, "docs"),
    ({"docs": ["a", "b"]}, "docs"),
    ({"docs": [""]}, "docs"),
    ({"docs": "a passage"}, "docs"),
    ({"answers": ["Ada"]}, "answers"),               # 1 answer for 2 questions
    ({"answers": ["Ada", ""]}, "answers[1]"),
    ({"question": []}, "question"),
    ({"data_type": "summary"}, "data_type"),
])
def test_pretrain_qa_errors(tmp_path, bad, field):
    assert_error(tmp_path, "pretrain", [QA, dict(QA, **bad)], line=2, field=field)


def test_pretrain_missing_field(tmp_path):
    row = {k: v for k, v in QA.items() if k != "answers"}
    msg = assert_error(tmp_path, "pretrain", [row], line=1, field="'answers'")
    assert "missing" in msg


@pytest.mark.parametrize("bad, field", [
    ({"answers": []}, "answers"),
    ({"answers": ["one", "two"]}, "answers"),
    ({"answers": ["  "]}, "answers[0]"),
])
def test_pretrain_paraphrase_errors(tmp_path, bad, field):
    assert_error(tmp_path, "pretrain", [dict(PARA, **bad)], line=1, field=field)


def test_format_qa_target():
    assert format_qa_target(["Who?", "When?"], ["Ada", "1843"]) == \
        "Question: Who?\nAnswer: Ada\nQuestion: When?\nAnswer: 1843"
    with pytest.raises(ValueError, match="equal"):
        format_qa_target(["Who?"], [])


# ---------------------------------------------------------------------------- instruct

def test_instruct_target_is_answer_then_gold(tmp_path):
    no_teacher = {k: v for k, v in INSTRUCT.items() if k != "answer"}
    file = write_jsonl(tmp_path / "i.jsonl", [INSTRUCT, no_teacher])
    with_teacher, gold_only = load_rows(file, "instruct")
    # the teacher's long answer is the training target, never a gold to score against
    assert with_teacher == {"question": "Who wrote notes?", "docs": ["p1", "p2"], "answer": "It was Ada Lovelace.",
                            "answers": ["Ada"], "gold_field": "gold_answer", "pos_index": [], "where": f"{file}:1"}
    assert gold_only["answer"] == "Ada" and gold_only["answers"] == ["Ada"]


@pytest.mark.parametrize("bad, field", [
    ({"docs": []}, "docs"),
    ({"docs": ["p1", ""]}, "docs[1]"),
    ({"question": ""}, "question"),
    ({"answer": None, "gold_answer": None}, "answer"),
    ({"gold_answer": 3}, "gold_answer"),
])
def test_instruct_errors(tmp_path, bad, field):
    assert_error(tmp_path, "instruct", [INSTRUCT, INSTRUCT, dict(INSTRUCT, **bad)], line=3, field=field)


# ---------------------------------------------------------------------------- e2e

def test_e2e_normalises(tmp_path):
    file = write_jsonl(tmp_path / "e.jsonl", [E2E])
    (row,) = load_rows(file, "e2e")
    assert row == {"question": "Who wrote notes?", "docs": ["p0", "p1", "p2"], "answer": "Ada",
                   "answers": ["Ada"], "gold_field": "answer", "pos_index": [1], "where": f"{file}:1"}


def test_e2e_aliases_order_and_dedup(tmp_path):
    row = {"question": "q", "docs": ["p"], "golden_answers": ["Paris", "City of Light", "paris"],
           "gold_answer": "Paris", "answer": "Paris, France"}
    (out,) = load_rows(write_jsonl(tmp_path / "e.jsonl", [row]), "e2e")
    assert out["answers"] == ["Paris", "City of Light", "paris"]  # golds only; exact duplicates dropped
    assert out["gold_field"] == "gold_answer+golden_answers"
    assert out["answer"] == "Paris, France"  # the training target
    assert out["pos_index"] == []


def test_e2e_golden_answers_alone(tmp_path):
    row = {"question": "q", "docs": ["p"], "golden_answers": ["Paris", "Paris"]}
    (out,) = load_rows(write_jsonl(tmp_path / "e.jsonl", [row]), "e2e")
    assert out["answer"] == "Paris" and out["answers"] == ["Paris"]


@pytest.mark.parametrize("bad, field", [
    ({"answer": None}, "answer"),                 # no alias at all
    ({"answer": ""}, "answer"),
    ({"golden_answers": []}, "golden_answers"),
    ({"pos_index": [3]}, "pos_index[0]"),         # out of range for 3 docs
    ({"pos_index": [0, -1]}, "pos_index[1]"),
    ({"pos_index": ["1"]}, "pos_index[0]"),
    ({"pos_index": [True]}, "pos_index[0]"),
    ({"pos_index": 1}, "pos_index"),
    ({"docs": []}, "docs"),
])
def test_e2e_errors(tmp_path, bad, field):
    assert_error(tmp_path, "e2e", [dict(E2E, **bad)], line=1, field=field)


def test_check_candidates_names_the_row(tmp_path):
    file = write_jsonl(tmp_path / "e.jsonl", [E2E, dict(E2E, docs=["p0"], pos_index=[0])])
    rows = load_rows(file, "e2e")
    check_candidates(rows, 1)  # every row has at least one candidate
    with pytest.raises(ValueError, match=r"e\.jsonl:2: field 'docs': 1 candidate documents, fewer than k=2"):
        check_candidates(rows, 2)


# ---------------------------------------------------------------------------- read_passages

def test_read_passages_txt_and_jsonl(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("Paris is in France.\n\n  \nRome is in Italy.\n", encoding="utf-8")
    assert read_passages(txt) == [("Paris is in France.", f"{txt}:1"), ("Rome is in Italy.", f"{txt}:4")]
    rows = [{"text": "a"}, {"doc": "b"}, {"passage": "c"}, {"docs": ["d", "e"]}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert read_passages(path) == [("a", f"{path}:1"), ("b", f"{path}:2"), ("c", f"{path}:3"),
                                   ("d", f"{path}:4 docs[0]"), ("e", f"{path}:4 docs[1]")]


def test_read_passages_errors(tmp_path):
    with pytest.raises(ValueError, match=r"p\.jsonl:2: field 'text': missing"):
        read_passages(write_jsonl(tmp_path / "p.jsonl", [{"text": "a"}, {"title": "b"}]))
    with pytest.raises(ValueError, match=r"q\.jsonl:1: field 'doc'"):
        read_passages(write_jsonl(tmp_path / "q.jsonl", [{"doc": ""}]))
    with pytest.raises(ValueError, match="expected a .txt or .jsonl"):
        (tmp_path / "p.csv").write_text("a\n")
        read_passages(tmp_path / "p.csv")
    with pytest.raises(ValueError, match="no passages"):
        (tmp_path / "empty.txt").write_text("\n\n")
        read_passages(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_passages(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------- the real SCP sample

@pytest.mark.skipif(not SCP_SAMPLE.exists(), reason=f"{SCP_SAMPLE} not present")
def test_scp_sample_loads_as_pretrain():
    rows = load_rows(SCP_SAMPLE, "pretrain")
    assert len(rows) == 800
    assert all(r["kind"] == "qa" and len(r["questions"]) == len(r["answers"]) >= 1 for r in rows)
    assert rows[0]["where"].endswith("scp_sample_800.jsonl:1")
