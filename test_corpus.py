"""Tests of corpus.py: the fictional world and its rows. Offline, about a second on one CPU core."""
import json

import pytest

from corpus import SIMPLE_QUESTIONS, build_world, e2e_rows, instruct_rows, pretrain_rows, write_corpus


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)  # the default size: 320 train, 80 held-out people


@pytest.fixture(scope="module")
def rows(world):
    """All row kinds of both splits, made once for the module."""
    return {
        "pretrain": pretrain_rows(world, "train"),
        "instruct": instruct_rows(world, "train"),
        "e2e_train": e2e_rows(world, "train"),
        "instruct_heldout": instruct_rows(world, "heldout"),
        "e2e_heldout": e2e_rows(world, "heldout"),
    }


def test_same_seed_gives_identical_rows(rows):
    again = build_world(seed=0)
    assert pretrain_rows(again) == rows["pretrain"], "pretrain rows differ between two builds with seed 0"
    assert instruct_rows(again) == rows["instruct"], "instruct rows differ between two builds with seed 0"
    assert e2e_rows(again, "heldout") == rows["e2e_heldout"], "e2e rows differ between two builds with seed 0"


def test_different_seed_gives_different_world(world):
    other = build_world(seed=1)
    assert other.passages("train") != world.passages("train"), "seeds 0 and 1 gave the same passages"
    shared = {e.name for e in other.people} & {e.name for e in world.people}
    assert len(shared) < 40, f"seeds 0 and 1 share {len(shared)} of 400 names"


def test_names_are_distinct_and_pick_out_one_passage(world):
    names = [e.name for e in world.people]
    assert len(set(names)) == len(names), "two people share a full name"
    passages = world.passages("train") + world.passages("heldout")
    for e in world.people:
        hits = sum(e.name in p for p in passages)
        assert hits == 1, f"full name {e.name!r} occurs in {hits} passages, want exactly 1"


def test_split_sizes(world):
    assert len(world.entities("train")) == 320 and len(world.entities("heldout")) == 80, "default split is not 320/80"
    small = build_world(seed=0, n_train=10, n_heldout=5)
    assert (len(small.entities("train")), len(small.entities("heldout"))) == (10, 5), "n_train/n_heldout ignored"


def test_no_heldout_passage_or_question_in_training_rows(world, rows):
    training = rows["pretrain"] + rows["instruct"] + rows["e2e_train"]
    training_docs = {d for r in training for d in r["docs"]}
    training_text = json.dumps([[r["question"], r.get("answers"), r.get("answer")] for r in training])
    for e in world.entities("heldout"):
        assert e.passage not in training_docs, f"held-out passage of {e.name!r} is a doc of a training row"
        assert e.name not in training_text, f"held-out person {e.name!r} appears in a training question or answer"
    heldout_docs = {d for r in rows["instruct_heldout"] + rows["e2e_heldout"] for d in r["docs"]}
    assert heldout_docs == set(world.passages("heldout")), "held-out rows use passages outside the held-out split"
    training_questions = {r["question"] for r in rows["instruct"] + rows["e2e_train"]}
    for r in rows["instruct_heldout"] + rows["e2e_heldout"]:
        assert r["question"] not in training_questions, f"held-out question {r['question']!r} was trained on"


def test_passage_lengths_in_range(world):
    for e in world.people:
        n = len(e.passage.split())
        assert 45 <= n <= 90, f"passage of {e.name!r} has {n} words, want 45-90"


def test_simple_qa_covers_every_fact_and_answers_occur_in_passage(rows):
    simple = [r for r in rows["pretrain"] if r["data_type"] == "qa" and r["qa_kind"] == "simple"]
    assert len(simple) == 320, f"want one simple QA row per train passage, got {len(simple)}"
    for r in simple:
        assert len(r["question"]) == len(r["answers"]) == len(SIMPLE_QUESTIONS), "one question per fact"
        for q, a in zip(r["question"], r["answers"]):
            assert a in r["docs"][0], f"answer {a!r} to {q!r} is not in its passage"


def test_complex_qa_answers_are_short_and_checkable(world):
    e = world.entities("train")[0]
    row = [r for r in pretrain_rows(world) if r.get("qa_kind") == "complex" and r["docs"] == [e.passage]][0]
    assert str(e.join_year - e.birth_year) in row["answers"], "the age-at-joining answer is not join_year - birth_year"
    assert all(len(a.split()) <= 4 for a in row["answers"]), f"complex answers are not short: {row['answers']}"
    assert all(e.name not in q for q in row["question"][1:]), "complex questions after the first should not need the name"


def test_paraphrase_restates_every_fact_differently(world, rows):
    paraphrases = [r for r in rows["pretrain"] if r["data_type"] == "paraphrase"]
    for e, r in zip(world.entities("train"), paraphrases):
        assert r["docs"] == [e.passage] and r["question"] == "", "paraphrase row has the wrong doc or question"
        assert r["answers"][0] != e.passage, f"paraphrase of {e.name!r} equals the passage"
        for fact in SIMPLE_QUESTIONS:
            assert e.answer(fact) in r["answers"][0], f"paraphrase of {e.name!r} drops fact {fact}"


@pytest.mark.parametrize("kind", ["instruct", "e2e_train", "instruct_heldout", "e2e_heldout"])
def test_pos_index_points_at_the_only_passage_naming_the_person(world, rows, kind):
    names = {e.passage: e.name for e in world.people}
    for r in rows[kind]:
        (i,) = r["pos_index"]
        gold = r["docs"][i]
        assert r["answer"] in gold, f"{kind}: answer {r['answer']!r} not in docs[pos_index]"
        assert names[gold] in r["question"], f"{kind}: question {r['question']!r} does not name the gold person"
        others = [d for j, d in enumerate(r["docs"]) if j != i and names[gold] in d]
        assert not others, f"{kind}: a distractor also names {names[gold]!r}"


def test_gold_position_is_spread(rows):
    positions = {r["pos_index"][0] for r in rows["e2e_train"]}
    assert positions == set(range(20)), f"gold positions used: {sorted(positions)}, want all 0..19"


@pytest.mark.parametrize("kind,n", [("instruct", 5), ("e2e_train", 20), ("e2e_heldout", 20)])
def test_rows_have_exactly_n_distinct_candidates(rows, kind, n):
    assert len(rows[kind]) == {"instruct": 320, "e2e_train": 320, "e2e_heldout": 80}[kind] * len(SIMPLE_QUESTIONS)
    for r in rows[kind]:
        assert len(r["docs"]) == n and len(set(r["docs"])) == n, f"{kind}: want {n} distinct docs, got {len(set(r['docs']))}"


def test_e2e_distractors_are_similar_people(world, rows):
    """With 320 people, 19 distractors can all share a city, trade or society with the gold."""
    by_passage = {e.passage: e for e in world.people}
    for r in rows["e2e_train"][:200]:
        gold = by_passage[r["docs"][r["pos_index"][0]]]
        for e in (by_passage[d] for d in r["docs"]):
            shared = (e.birth_city == gold.birth_city or e.occupation == gold.occupation
                      or e.organisation == gold.organisation)
            assert shared, f"distractor {e.name!r} shares no city, trade or society with {gold.name!r}"


def test_too_many_candidates_raises(world):
    with pytest.raises(ValueError, match="only 80 passages"):
        e2e_rows(world, "heldout", n_candidates=81)


def test_rows_match_official_field_names_and_types(rows):
    for r in rows["pretrain"]:
        assert r["data_type"] in ("qa", "paraphrase") and isinstance(r["docs"], list) and len(r["docs"]) == 1
        assert isinstance(r["answers"], list) and all(isinstance(a, str) for a in r["answers"])
        if r["data_type"] == "qa":
            assert r["qa_kind"] in ("simple", "complex") and isinstance(r["question"], list), f"bad qa row {r}"
        else:
            assert r["question"] == "" and len(r["answers"]) == 1, f"bad paraphrase row {r}"
    for r in rows["instruct"] + rows["e2e_train"]:
        assert set(r) == {"question", "docs", "answer", "gold_answer", "pos_index"}, f"fields {sorted(r)}"
        assert isinstance(r["question"], str) and isinstance(r["answer"], str) and r["answer"] == r["gold_answer"]
        assert isinstance(r["pos_index"], list) and all(isinstance(i, int) for i in r["pos_index"])


def test_write_corpus_round_trips(tmp_path):
    paths = write_corpus(str(tmp_path), seed=3, n_train=12, n_heldout=6, k=3, n_candidates=6)
    want = {"pretrain": 36, "pretrain_heldout": 18, "instruct": 84, "instruct_heldout": 42,
            "e2e_train": 84, "e2e_heldout": 42}
    assert set(paths) == set(want), f"files written: {sorted(paths)}"
    world = build_world(3, 12, 6)
    for name, n in want.items():
        lines = open(paths[name], encoding="utf-8").read().splitlines()
        assert len(lines) == n, f"{name}.jsonl has {len(lines)} rows, want {n}"
    first = json.loads(open(paths["e2e_heldout"], encoding="utf-8").readline())
    assert first == e2e_rows(world, "heldout", n_candidates=6, seed=3)[0], "e2e_heldout.jsonl does not round-trip"
