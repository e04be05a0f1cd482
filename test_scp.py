"""Tests for scp.py: the parser on hand-written model outputs, the pipeline with a stub model
(a random model cannot write parseable QA), and the real generation code on the tiny backbone."""
import json

import pytest

import clara
import data
import scp
from data import format_qa_target, load_rows

PASSAGES = ["The Eiffel Tower was built in 1889 by the company of Gustave Eiffel in Paris.",
            "Ada Lovelace wrote the first program in 1843 for the Analytical Engine."]
PARAPHRASE = "In 1889 the firm of Gustave Eiffel built the Eiffel Tower, in Paris."


# ---------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, pairs, dropped", [
    ("Question: Who?\nAnswer: Ada\nQuestion: When?\nAnswer: 1843", [("Who?", "Ada"), ("When?", "1843")], 0),
    ("1. Question: Who?\n   Answer: Ada\n2) Question: When?\n   Answer: 1843",
     [("Who?", "Ada"), ("When?", "1843")], 0),
    ("Q1: Who?\nA1: Ada\n\nQ2:   When?  \nA2:  1843 ", [("Who?", "Ada"), ("When?", "1843")], 0),
    ("- Q: Who?\n- A: Ada", [("Who?", "Ada")], 0),
    ("Q1: Who? A1: Ada\nQuestion: When? Answer: 1843", [("Who?", "Ada"), ("When?", "1843")], 0),
    ("Question: Is plan A: the tower?\nAnswer: yes", [("Is plan A: the tower?", "yes")], 0),
    ("**Question 1:** Who?\n**Answer:** Ada", [("Who?", "Ada")], 0),
    ('Question: Who?\nAnswer: "Ada"', [("Who?", "Ada")], 0),
    ("Question: Who wrote\nthe first program?\nAnswer: Ada", [("Who wrote the first program?", "Ada")], 0),
    # answer on a later line; chatter after a blank line is not part of it
    ("Question: Who?\n\nAnswer:\n\nAda Lovelace\n\nI hope this helps!", [("Who?", "Ada Lovelace")], 0),
    # a missing trailing answer (generation cut off) is dropped and counted
    ("Question: Who?\nAnswer: Ada\nQuestion: When was the", [("Who?", "Ada")], 1),
    # SmolLM2-135M's habit: one question, the answer repeated; the extra answers have no question
    ("Question: Who?\nAnswer: Ada\nAnswer: Ada\nAnswer: Ada", [("Who?", "Ada")], 2),
    ("Answer: Ada", [], 1),
    ("I'm ready to help. What's your next question?", [], 0),
    ("", [], 0),
])
def test_parse_qa_tolerates_model_output(text, pairs, dropped):
    assert scp.parse_qa(text) == (pairs, dropped), f"parse_qa({text!r})"


@pytest.mark.parametrize("text, verdict", [
    ("Yes.", True), ("yes, it is", True), (" **Yes**", True), ("No.", False), ("no, the text does", False),
    ("The rewritten text", None), ("", None), ("Yesterday", None)])
def test_parse_verdict_reads_the_first_word(text, verdict):
    assert scp.parse_verdict(text) is verdict


def test_clean_paraphrase_strips_preamble_and_rejects_stubs():
    assert scp.clean_paraphrase("Here is the rewritten text:\n\nThe tower dates from 1889, in Paris.") == \
        "The tower dates from 1889, in Paris."
    assert scp.clean_paraphrase("Sure!") is None
    loop = "The film was a success, with a review from Raajje.mv, and a review from Raajje.mv. " * 4
    assert scp.looping(loop) and scp.clean_paraphrase(loop) is None, "a looping generation is malformed"
    assert not scp.looping(PASSAGES[0] + " " + PASSAGES[1])
    assert scp.clean_paraphrase("  \n ") is None


# ------------------------------------------------------------------------ quality measures

def test_answer_support_is_the_share_of_answer_tokens_in_the_passage():
    passage = PASSAGES[0]
    assert scp.answer_support("Gustave Eiffel", passage) == 1.0
    assert scp.answer_support("The year 1889.", passage) == 0.5  # "the" dropped; "year" absent
    assert scp.answer_support("Barack Obama", passage) == 0.0
    assert scp.answer_support("...", passage) == 0.0  # nothing left after normalising


def test_key_terms_and_term_retention():
    assert scp.key_terms(PASSAGES[0]) == {"Eiffel", "Tower", "1889", "Gustave", "Paris"}  # not "The"
    assert scp.term_retention("Gustave Eiffel's firm built the Tower in 1889 in Paris.", PASSAGES[0]) == 1.0
    assert scp.term_retention("A tower was built in Paris.", PASSAGES[0]) == pytest.approx(1 / 5)
    assert scp.term_retention("anything", "no names here.") == 1.0


def test_quality_report_figures():
    doc = [PASSAGES[0]]
    rows = [{"data_type": "qa", "question": ["When?", "Who?"], "answers": ["1889", "Barack Obama"], "docs": doc},
            {"data_type": "paraphrase", "question": "", "answers": ["Built in 1889 in Paris."], "docs": doc}]
    report = scp.quality_report(rows)
    assert report["qa_support"] == [1.0, 0.0] and report["answers_fully_in_passage"] == 0.5
    assert report["paraphrase_retention"] == [pytest.approx(2 / 5)]


# --------------------------------------------------------------------- pipeline, stub model

class StubModel:
    """Answers each prompt kind with canned text; records every prompt; says "no" to `bad` answers."""

    def __init__(self, bad=("Berlin",), qa_text=None):
        self.bad, self.qa_text, self.calls = bad, qa_text, []

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        return [self.reply(p) for p in prompts]

    def reply(self, prompt):
        if "Is the answer correct" in prompt:
            return "No." if any(f"Answer: {b}" in prompt for b in self.bad) else "Yes, it is."
        if "Does the rewritten text" in prompt:
            return "Yes."
        if "Rewrite the text" in prompt:
            return "Here is the rewritten text:\n" + PARAPHRASE
        if "already written" in prompt:
            return "Question: Who built it?\nAnswer: Gustave Eiffel's company"
        if self.qa_text is not None:
            return self.qa_text
        if "two or more" in prompt:
            return "Question: Where is the tower built in 1889?\nAnswer: Paris\nQuestion: Where?\nAnswer: Berlin"
        return ("1. Question: When was it built?\nAnswer: 1889\n"
                "2. Question: When was it built?\nAnswer: 1889\nQuestion: Who")  # a duplicate; cut off


def test_synthesize_writes_official_rows_that_load_rows_reads(tmp_path):
    rows, stats = scp.synthesize(PASSAGES[:1], StubModel(), rounds=1)
    qa, para = rows
    assert qa["data_type"] == "qa" and qa["docs"] == PASSAGES[:1]
    assert qa["question"] == ["When was it built?", "Where is the tower built in 1889?", "Who built it?"]
    assert qa["answers"] == ["1889", "Paris", "Gustave Eiffel's company"]  # "Berlin" judged unsupported
    assert para == {"data_type": "paraphrase", "question": "", "answers": [PARAPHRASE], "docs": PASSAGES[:1]}
    path = tmp_path / "pretrain.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_rows(path, "pretrain")
    assert [r["kind"] for r in loaded] == ["qa", "paraphrase"]
    target = format_qa_target(loaded[0]["questions"], loaded[0]["answers"])
    assert target.startswith("Question: When was it built?\nAnswer: 1889\nQuestion: Where")
    assert stats == {**stats, "passages": 1, "qa_parsed": 5, "qa_incomplete": 1, "qa_duplicate": 1,
                     "qa_judged": 4, "qa_rejected": 1, "qa_kept": 3, "paraphrase_kept": 1, "extra_round_prompts": 1}


def test_extra_rounds_name_uncovered_terms_and_are_bounded():
    stub = StubModel()
    scp.synthesize(PASSAGES, stub, rounds=3, batch_size=4)
    more = [p for batch in stub.calls for p in batch if "already written" in p]
    ada = [p for p in more if "Ada Lovelace" in p]
    eiffel = [p for p in more if "Eiffel Tower" in p]
    # the stub never covers "Tower" or Ada's terms, so both passages are asked in all 3 rounds, no more
    assert len(ada) == len(eiffel) == 3, "bounded by rounds"
    assert "such as 1843, Analytical, Engine, Lovelace." in ada[0]
    assert "such as Eiffel, Gustave, Tower." in eiffel[0]
    assert "such as Tower." in eiffel[1] and "Who built it?" in eiffel[1], "round 2 sees round 1's pair"
    assert all(len(batch) <= 4 for batch in stub.calls), "batch_size respected"
    _, stats = scp.synthesize(["It was built in 1889."], StubModel(), rounds=3)
    assert stats["extra_round_prompts"] == 0, "nothing uncovered: no extra round"
    stub = StubModel()
    scp.synthesize(PASSAGES, stub, rounds=0)
    assert not any("already written" in p for batch in stub.calls for p in batch), "rounds=0: no extra round"


def test_no_verify_keeps_every_parsed_pair_and_never_asks_the_judge():
    stub = StubModel()
    rows, stats = scp.synthesize(PASSAGES[:1], stub, rounds=0, verify=False)
    assert rows[0]["answers"] == ["1889", "Paris", "Berlin"]
    assert stats["qa_judged"] == 0 and not any("Reply with yes or no" in p for b in stub.calls for p in b)


def test_malformed_generations_are_dropped_and_counted_not_fatal():
    stub = StubModel(qa_text="Question: What is the answer to the question: What is the answer to the")
    rows, stats = scp.synthesize(PASSAGES, stub, rounds=0)
    assert [r["data_type"] for r in rows] == ["paraphrase", "paraphrase"]  # no QA row without pairs
    assert stats["qa_parsed"] == 0 and stats["qa_incomplete"] == 4 and stats["qa_kept"] == 0
    rows, stats = scp.synthesize(PASSAGES, lambda prompts: ["" for _ in prompts], rounds=1)
    assert rows == [] and stats["paraphrase_malformed"] == 2 and stats["verdicts_unclear"] == 0


def test_a_generate_fn_that_loses_outputs_fails_loudly():
    with pytest.raises(ValueError, match="returned 1 outputs for 2 prompts"):
        scp.synthesize(PASSAGES, lambda prompts: ["Question: Q?\nAnswer: A"], batch_size=2)


def test_read_passages_from_file_and_from_a_datasets_dir(tmp_path):
    texts = lambda source, **kw: [text for text, _ in data.read_passages(source, **kw)]  # what scp.main reads
    (tmp_path / "p.txt").write_text("Paris is in France.\n\nRome is in Italy.\n")
    assert texts(str(tmp_path / "p.txt")) == ["Paris is in France.", "Rome is in Italy."]
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.csv").write_text("body,id\nParis is in France.,1\nRome is in Italy.,2\n")
    assert texts(str(tmp_path / "ds"), text_field="body") == ["Paris is in France.", "Rome is in Italy."]
    with pytest.raises(ValueError, match="no column 'text'"):
        texts(str(tmp_path / "ds"))


# ---------------------------------------------------------------------- the tiny backbone

@pytest.fixture(scope="module")
def tiny():
    return clara.load_backbone("tiny")


def test_batched_left_padded_generation_equals_one_at_a_time(tiny):
    generate = scp.make_generate_fn(*tiny, max_new_tokens=6)
    prompts = ["Hi", "Write a long question about the Eiffel Tower in Paris, please."]  # lengths differ: padding
    batched = generate(prompts)
    assert batched == [generate([p])[0] for p in prompts], "left padding changed greedy outputs"
    assert all(isinstance(text, str) for text in batched)


def test_cli_runs_offline_on_the_tiny_backbone(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in PASSAGES))
    out = tmp_path / "pretrain.jsonl"
    rows, stats = scp.main(["--input", str(tmp_path / "p.jsonl"), "--out", str(out), "--backbone", "tiny",
                            "--max-new-tokens", "4", "--rounds", "0", "--limit", "1"])
    assert out.exists() and len(out.read_text().splitlines()) == len(rows)
    assert stats["passages"] == 1
    assert "scp summary | passages in 1" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- real text split

def test_real_text_split_caps_pairs_per_stage1_row_and_keeps_every_pair(tmp_path):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments", "real_text.py")
    spec = importlib.util.spec_from_file_location("real_text", path)
    real_text = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_text)
    qa = [[(f"q{p}.{i}?", f"a{p}.{i}") for i in range(n)] for p, n in enumerate([7, 2, 3])]
    src = tmp_path / "scp.jsonl"
    src.write_text("".join(json.dumps({"data_type": "qa", "question": [q for q, _ in pairs],
                                       "answers": [a for _, a in pairs], "docs": [f"Passage {p} text."]}) + "\n"
                           for p, pairs in enumerate(qa)))
    real_text.main(["--input", str(src), "--out", str(tmp_path / "capped"), "--n-train", "2", "--max-pairs", "3"])
    rows = [json.loads(line) for line in open(tmp_path / "capped" / "pretrain.jsonl")]
    assert [len(r["question"]) for r in rows] == [3, 3, 1, 2]  # 7 pairs -> 3 + 3 + 1; passage 2 evaluates
    assert [(q, a) for r in rows for q, a in zip(r["question"], r["answers"])] == qa[0] + qa[1]
    assert [r["docs"] for r in rows] == [["Passage 0 text."]] * 3 + [["Passage 1 text."]]
    evals = [json.loads(line) for line in open(tmp_path / "capped" / "eval.jsonl")]
    assert evals == [{"question": "q2.0?", "docs": ["Passage 2 text."], "answer": "a2.0", "pos_index": [0]}]
    real_text.main(["--input", str(src), "--out", str(tmp_path / "whole"), "--n-train", "2", "--max-pairs", "0"])
    assert [len(json.loads(line)["question"]) for line in open(tmp_path / "whole" / "pretrain.jsonl")] == [7, 2]
