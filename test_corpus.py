"""Tests of corpus.py: the fictional world and its rows. Offline, a few seconds on one CPU core."""
import dataclasses
import hashlib
import itertools
import json
import re

import pytest

from corpus import (PLAYERS, SIMPLE_QUESTIONS, TRADE_NOUNS, TRADE_VERBS, World, bm25_mrr, bm25_report,
                    build_world, e2e_rows, instruct_rows, pretrain_rows, write_corpus)

# Row kinds named as write_corpus names their files; "*_heldout" are the dev part.
RETRIEVAL_KINDS = ["instruct", "e2e_train", "instruct_heldout", "e2e_heldout", "e2e_test"]
SPLIT_OF = {"pretrain": "train", "instruct": "train", "e2e_train": "train", "pretrain_heldout": "dev",
            "instruct_heldout": "dev", "e2e_heldout": "dev", "pretrain_test": "test", "e2e_test": "test"}


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)  # the default size: 320 train, 40 dev, 40 test people


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    """The files of the default corpus (seed 0), as write_corpus writes them: {name: path}."""
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), seed=0)


@pytest.fixture(scope="module")
def rows(corpus_files):
    """All row kinds of the three parts, read back from the default corpus's files."""
    return {name: [json.loads(line) for line in open(path, encoding="utf-8")] for name, path in corpus_files.items()}


@pytest.fixture(scope="module")
def name_rows(world):
    """The retrieval row kinds with name questions (questions="name")."""
    return {"instruct": instruct_rows(world, "train", questions="name"),
            "e2e_train": e2e_rows(world, "train", questions="name"),
            "instruct_heldout": instruct_rows(world, "dev", questions="name"),
            "e2e_heldout": e2e_rows(world, "dev", questions="name"),
            "e2e_test": e2e_rows(world, "test", questions="name")}


@pytest.fixture(scope="module")
def by_passage(world):
    return {e.passage: e for e in world.people}


def test_same_seed_gives_identical_rows(rows):
    again = build_world(seed=0)
    assert pretrain_rows(again) == rows["pretrain"], "pretrain rows differ between two builds with seed 0"
    assert instruct_rows(again) == rows["instruct"], "instruct rows differ between two builds with seed 0"
    assert e2e_rows(again, "dev") == rows["e2e_heldout"], "e2e_heldout.jsonl is not e2e_rows(world, 'dev')"
    assert e2e_rows(again, "test") == rows["e2e_test"], "e2e_test.jsonl is not e2e_rows(world, 'test')"


# sha256 of the training files of write_corpus(DIR, seed=0) as the code wrote them before the held-out
# people were split into dev and test. Why frozen: a checkpoint trained before the split must stay
# valid for the new test part, which holds only if training read exactly these bytes (and so never
# saw a test passage). A change to the world, the rows or the random streams of the train people
# shows here; if one is meant, checkpoints trained before it must be retrained before any figure
# on the test part is quoted from them.
TRAINING_SHA256 = {
    "pretrain": "39166dc76f9a9582039d2133fd52405df0baca1f0e04d973a11cb6ec8d191db4",
    "instruct": "0714b22e46e37e2d09851256d196b770335592a2a24d72a4965426a7d27a8592",
    "e2e_train": "8a828cb6432c91856a5174a2d8410d11e224e522f9cb0a3cc65ab66c3853b07d",
}


@pytest.mark.parametrize("name", sorted(TRAINING_SHA256))
def test_training_files_are_the_bytes_written_before_the_test_split(corpus_files, name):
    with open(corpus_files[name], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == TRAINING_SHA256[name], \
        f"{name}.jsonl (seed 0) changed: sha256 {digest}, want {TRAINING_SHA256[name]} (see the comment above)"


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
    sizes = [len(world.entities(s)) for s in ("train", "dev", "test", "heldout")]
    assert sizes == [320, 40, 40, 80], f"default train/dev/test/heldout sizes {sizes}, want 320/40/40/80"
    assert world.entities("heldout") == world.entities("dev") + world.entities("test"), "heldout is not dev + test"
    assert world.entities("dev") == world.people[320:360], "dev is not the first half of the held-out people"
    small = build_world(seed=0, n_train=10, n_heldout=5)
    sizes = [len(small.entities(s)) for s in ("train", "dev", "test")]
    assert sizes == [10, 3, 2], f"n_train=10, n_heldout=5 gave train/dev/test {sizes}, want 10/3/2"


def _row_passages(r) -> set[str]:
    """Every passage a row shows: its docs (gold and distractors) and, for a paraphrase row, the paraphrase."""
    return set(r["docs"]) | (set(r["answers"]) if r.get("data_type") == "paraphrase" else set())


def _row_questions(r) -> set[str]:
    """The question of a retrieval row. Pretraining rows give none: their complex questions are
    templates that people with the same facts share ("Which instrument did the ferry pilot born in
    Kaldermere play?" is in train and dev), asked beside the one passage that answers them."""
    return set() if "data_type" in r else {r["question"]}


def test_train_dev_and_test_files_share_no_passage_person_or_question(world, rows):
    """The three parts of the written corpus are apart: no passage (gold, distractor, or pretraining
    doc and paraphrase), no person's name and no retrieval question of one part is in the rows of
    another."""
    parts = {split: [r for name, rs in rows.items() if SPLIT_OF[name] == split for r in rs]
             for split in ("train", "dev", "test")}
    for split, part_rows in parts.items():
        docs = {d for r in part_rows for d in r["docs"]}
        assert docs == set(world.passages(split)), f"{split} rows use passages outside the {split} part"
    for a, b in itertools.permutations(parts, 2):
        passages_b = {p for r in parts[b] for p in _row_passages(r)}
        questions_b = {q for r in parts[b] for q in _row_questions(r)}
        text_b = json.dumps([[r["question"], r.get("answers"), r.get("answer"), r["docs"]] for r in parts[b]])
        for r in parts[a]:
            shared = _row_passages(r) & passages_b
            assert not shared, f"a {a} row shows a passage that a {b} row shows: {sorted(shared)[0]!r}"
            shared = _row_questions(r) & questions_b
            assert not shared, f"a {a} question is also a {b} question: {sorted(shared)[0]!r}"
        for e in world.entities(a):
            assert e.name not in text_b, f"{a} person {e.name!r} appears in a {b} row"


def test_e2e_test_has_200_questions_about_test_people_among_test_people(world, rows, by_passage):
    """eval.py reads the first 200 rows of e2e_test.jsonl: there are that many, and each asks about a
    test person with only test people as candidates (every test person is asked about)."""
    test = rows["e2e_test"]
    assert len(test) >= 200, f"e2e_test.jsonl has {len(test)} rows, want at least 200"
    golds = set()
    for n, r in enumerate(test):
        splits = {by_passage[d].split for d in r["docs"]}
        assert splits == {"test"}, f"e2e_test row {n} ({r['question']!r}) has candidates from {sorted(splits)}"
        golds.add(by_passage[r["docs"][r["pos_index"][0]]].name)
    assert golds == {e.name for e in world.entities("test")}, "not every test person is asked about"


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


@pytest.mark.parametrize("kind", RETRIEVAL_KINDS)
def test_name_questions_point_at_the_only_passage_naming_the_person(world, name_rows, kind):
    names = {e.passage: e.name for e in world.people}
    for r in name_rows[kind]:
        assert r["question_kind"] == "name" and r["described_by"] == ["name"], f"{kind}: not a name row: {r}"
        (i,) = r["pos_index"]
        gold = r["docs"][i]
        assert r["answer"] in gold, f"{kind}: answer {r['answer']!r} not in docs[pos_index]"
        assert names[gold] in r["question"], f"{kind}: question {r['question']!r} does not name the gold person"
        others = [d for j, d in enumerate(r["docs"]) if j != i and names[gold] in d]
        assert not others, f"{kind}: a distractor also names {names[gold]!r}"


def test_gold_position_is_spread(rows):
    positions = {r["pos_index"][0] for r in rows["e2e_train"]}
    assert positions == set(range(20)), f"gold positions used: {sorted(positions)}, want all 0..19"


@pytest.mark.parametrize("kind,n", [("instruct", 5), ("e2e_train", 20), ("e2e_heldout", 20), ("e2e_test", 20)])
def test_rows_have_exactly_n_distinct_candidates(rows, kind, n):
    n_people = {"instruct": 320, "e2e_train": 320, "e2e_heldout": 40, "e2e_test": 40}[kind]
    assert len(rows[kind]) == n_people * len(SIMPLE_QUESTIONS), f"{kind}: {len(rows[kind])} rows"
    for r in rows[kind]:
        assert len(r["docs"]) == n and len(set(r["docs"])) == n, f"{kind}: want {n} distinct docs, got {len(set(r['docs']))}"


def test_name_e2e_distractors_are_similar_people(name_rows, by_passage):
    """With 320 people, 19 distractors can all share a city, trade or society with the gold."""
    for r in name_rows["e2e_train"][:200]:
        gold = by_passage[r["docs"][r["pos_index"][0]]]
        for e in (by_passage[d] for d in r["docs"]):
            shared = (e.birth_city == gold.birth_city or e.occupation == gold.occupation
                      or e.organisation == gold.organisation)
            assert shared, f"distractor {e.name!r} shares no city, trade or society with {gold.name!r}"


# ---------------------------------------------------------------- description questions
def _forms(e, fact) -> list[str]:
    """The ways a question may state a fact of e: the value, or for a trade or an instrument the
    other words corpus.py uses for it ("maker of clocks", "made clocks", "cellist")."""
    value = str(getattr(e, fact))
    if fact == "occupation":
        return [value, TRADE_NOUNS[value], TRADE_VERBS[value]]
    if fact == "instrument":
        return [value, PLAYERS[value]]
    return [value]


def _states(question: str, e, fact) -> bool:
    return any(re.search(rf"\b{re.escape(form)}\b", question) for form in _forms(e, fact))


ALL_FACTS = ["birth_year", "birth_city", "occupation", "organisation", "join_year", "instrument", "pet_kind",
             "pet_name"]


@pytest.mark.parametrize("kind", RETRIEVAL_KINDS)
def test_description_fits_exactly_one_candidate_the_gold(rows, by_passage, kind):
    """Re-derive from the people behind the candidates which ones fit the description: only the gold."""
    for n, r in enumerate(rows[kind]):
        where = f"{kind} row {n} ({r['question']!r})"
        gold = by_passage[r["docs"][r["pos_index"][0]]]
        facts = r["described_by"]
        assert r["question_kind"] == "description" and 2 <= len(facts) <= 3, f"{where}: described_by {facts}"
        fitting = [i for i, d in enumerate(r["docs"])
                   if all(getattr(by_passage[d], f) == getattr(gold, f) for f in facts)]
        assert fitting == r["pos_index"], f"{where}: candidates {fitting} fit the description by {facts}, want the gold"


@pytest.mark.parametrize("kind", RETRIEVAL_KINDS)
def test_description_question_states_its_facts_and_nothing_else(rows, by_passage, kind):
    """The text says what described_by says: each described fact of the gold, no other fact (so not
    the answer), and neither the name nor the surname."""
    for n, r in enumerate(rows[kind]):
        where = f"{kind} row {n} ({r['question']!r})"
        gold = by_passage[r["docs"][r["pos_index"][0]]]
        assert gold.name not in r["question"] and gold.surname not in r["question"], f"{where}: names the person"
        for fact in ALL_FACTS:
            described = fact in r["described_by"]
            problem = "missing" if described else "stated but not in described_by"
            assert _states(r["question"], gold, fact) == described, f"{where}: {fact} {getattr(gold, fact)!r} {problem}"
        assert r["answer"] not in r["question"], f"{where}: the question gives its answer away"


def test_descriptions_are_unique_in_the_whole_world(world, rows, by_passage):
    """The docstring's promise for the default corpus: each description fits one person of all three
    parts, not only one candidate (the fallbacks are for tiny worlds)."""
    for kind in RETRIEVAL_KINDS:
        for n, r in enumerate(rows[kind]):
            gold = by_passage[r["docs"][r["pos_index"][0]]]
            fit = [e.name for e in world.people
                   if all(getattr(e, f) == getattr(gold, f) for f in r["described_by"])]
            assert fit == [gold.name], f"{kind} row {n} ({r['question']!r}) fits {fit}"


def _twin(e, name: str, split: str):
    """Someone with all of e's facts under another name: no description can tell them apart."""
    first, surname = name.split()
    passage = e.passage.replace(e.name, name).replace(e.surname, surname)
    return dataclasses.replace(e, name=name, surname=surname, split=split, passage=passage)


def test_without_a_unique_description_the_candidates_still_have_one_fit():
    """The fallbacks: a test person with a twin in the train part is described uniquely in the
    part only; one with a twin in the test part is described uniquely among the candidates
    only, because the twin is never a candidate of theirs."""
    base = build_world(seed=0, n_train=10, n_heldout=20)
    h0, h1 = base.entities("test")[:2]
    twin0, twin1 = _twin(h0, "Quom Trainward", "train"), _twin(h1, "Quel Heldward", "test")
    world = World(seed=0, people=base.people + [twin0, twin1])
    by_passage = {e.passage: e for e in world.people}
    seen = set()
    for n, r in enumerate(e2e_rows(world, "test", n_candidates=6)):
        gold = by_passage[r["docs"][r["pos_index"][0]]]
        fits = [i for i, d in enumerate(r["docs"])
                if all(getattr(by_passage[d], f) == getattr(gold, f) for f in r["described_by"])]
        assert fits == r["pos_index"], f"row {n} ({r['question']!r}): candidates {fits} fit"
        if gold is h0:
            assert twin0.passage not in r["docs"], "a train passage among test candidates"
            seen.add("h0")
        if gold in (h1, twin1):
            assert {h1.passage, twin1.passage} - set(r["docs"]), f"row {n}: both twins are candidates"
            seen.add("h1")
    assert seen == {"h0", "h1"}, f"rows about the twinned people: {seen}"


def test_descriptions_mix_sizes_and_facts(rows):
    """Two or three facts, and not always a year (a year is nearly unique alone, and a rare word)."""
    described = [r["described_by"] for r in rows["e2e_test"]]
    sizes = {len(f) for f in described}
    without_year = sum("birth_year" not in f and "join_year" not in f for f in described) / len(described)
    assert sizes == {2, 3}, f"description sizes {sizes}"
    assert 0.2 < without_year < 0.8, f"{without_year:.0%} of test descriptions use no year"
    used = {f for fs in described for f in fs}
    assert used == set(ALL_FACTS) - {"pet_name"}, f"facts used in descriptions: {sorted(used)}"


@pytest.mark.parametrize("kind", RETRIEVAL_KINDS)
def test_distractors_share_as_much_of_the_description_as_the_split_allows(world, rows, by_passage, kind):
    """Greedy choice: nobody left out of the candidates shares more described facts than a chosen
    distractor, and nobody who fits the whole description is a distractor."""
    split = SPLIT_OF[kind]
    for n, r in enumerate(rows[kind][:300]):
        gold = by_passage[r["docs"][r["pos_index"][0]]]
        facts = r["described_by"]

        def shared(e):
            return sum(getattr(e, f) == getattr(gold, f) for f in facts)
        chosen = [by_passage[d] for d in r["docs"] if by_passage[d] is not gold]
        left = [e for e in world.entities(split) if e not in chosen and e is not gold and shared(e) < len(facts)]
        worst_chosen = min(shared(e) for e in chosen)
        best_left = max((shared(e) for e in left), default=0)
        assert worst_chosen >= best_left, \
            f"{kind} row {n}: a candidate shares {worst_chosen} of {facts}, someone left out {best_left}"


def test_distractors_mostly_share_part_of_the_description(rows, by_passage):
    """In the train split (320 people) there are always people who share part of it."""
    shares = [any(getattr(by_passage[d], f) == getattr(gold, f) for f in r["described_by"])
              for r in rows["e2e_train"] for gold in [by_passage[r["docs"][r["pos_index"][0]]]]
              for d in r["docs"] if by_passage[d] is not gold]
    share = sum(shares) / len(shares)
    assert share > 0.99, f"only {share:.1%} of distractors share a described fact"


def test_description_questions_do_not_say_a_thing_twice(rows):
    """The frame is chosen to avoid "In what year was the clockmaker born in Zelfort born?"."""
    for r in rows["e2e_train"] + rows["e2e_heldout"] + rows["e2e_test"]:
        q = r["question"].lower()
        for phrase in ("born", "member", "for a living", "come", "join"):
            assert len(re.findall(rf"\b{phrase}\b", q)) <= 1, f"{phrase!r} twice in {r['question']!r}"


def test_bm25_mrr_on_test_descriptions_is_between_chance_and_the_name_ceiling(world, rows, name_rows):
    """The lexical baseline must neither solve the test description questions (MRR below 0.95
    over 20 candidates drawn from 40 test people; name questions: about 1.0) nor be at chance (a
    random order gives 0.18): the descriptions carry the facts, and the ranking is left to learn.
    The same numbers as `python corpus.py --out DIR --report`."""
    description, name = bm25_mrr(rows["e2e_test"]), bm25_mrr(name_rows["e2e_test"])
    report = bm25_report(world)
    print(f"BM25 MRR on e2e_test: description {description:.3f}, name {name:.3f}, random {report['random']:.3f}")
    assert report == {"description": description, "name": name, "random": pytest.approx(0.18, abs=0.001)}
    dev = bm25_report(world, split="dev")["description"]
    assert dev == bm25_mrr(rows["e2e_heldout"]), f"dev report {dev:.3f} is not BM25 MRR on e2e_heldout"
    assert 2 * report["random"] < description < 0.95, f"BM25 MRR on test description questions: {description:.3f}"
    assert name > 0.99, f"BM25 MRR on test name questions is {name:.3f}, want about 1"


def test_question_kinds_name_and_both(world, rows, name_rows):
    both = e2e_rows(world, "dev", questions="both")
    assert len(both) == 2 * len(rows["e2e_heldout"]), f"questions='both' gave {len(both)} rows"
    by_kind = {k: [r for r in both if r["question_kind"] == k] for k in ("description", "name")}
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(by_kind["name"], key=key) == sorted(name_rows["e2e_heldout"], key=key), "'both' changed the name rows"
    assert sorted(by_kind["description"], key=key) == sorted(rows["e2e_heldout"], key=key), \
        "'both' changed the description rows"
    assert [r["question_kind"] for r in both[:40]].count("name") not in (0, 40), "'both' rows are not mixed"
    with pytest.raises(ValueError, match="questions must be one of"):
        instruct_rows(world, "dev", questions="names")
    with pytest.raises(ValueError, match="split must be one of"):
        world.entities("validation")


def test_too_many_candidates_raises(world):
    with pytest.raises(ValueError, match="only 40 passages"):
        e2e_rows(world, "test", n_candidates=41)


def test_rows_match_official_field_names_and_types(rows):
    for r in rows["pretrain"]:
        assert r["data_type"] in ("qa", "paraphrase") and isinstance(r["docs"], list) and len(r["docs"]) == 1
        assert isinstance(r["answers"], list) and all(isinstance(a, str) for a in r["answers"])
        if r["data_type"] == "qa":
            assert r["qa_kind"] in ("simple", "complex") and isinstance(r["question"], list), f"bad qa row {r}"
        else:
            assert r["question"] == "" and len(r["answers"]) == 1, f"bad paraphrase row {r}"
    for r in rows["instruct"] + rows["e2e_train"]:
        assert set(r) == {"question", "docs", "answer", "gold_answer", "pos_index", "question_kind",
                          "described_by"}, f"fields {sorted(r)}"
        assert isinstance(r["question"], str) and isinstance(r["answer"], str) and r["answer"] == r["gold_answer"]
        assert isinstance(r["pos_index"], list) and all(isinstance(i, int) for i in r["pos_index"])


def test_write_corpus_round_trips(tmp_path):
    paths = write_corpus(str(tmp_path), seed=3, n_train=12, n_heldout=12, k=3, n_candidates=6)
    want = {"pretrain": 36, "pretrain_heldout": 18, "pretrain_test": 18, "instruct": 84, "instruct_heldout": 42,
            "e2e_train": 84, "e2e_heldout": 42, "e2e_test": 42}
    assert set(paths) == set(want), f"files written: {sorted(paths)}"
    world = build_world(3, 12, 12)
    for name, n in want.items():
        lines = open(paths[name], encoding="utf-8").read().splitlines()
        assert len(lines) == n, f"{name}.jsonl has {len(lines)} rows, want {n}"
    for name, split in (("e2e_heldout", "dev"), ("e2e_test", "test")):
        first = json.loads(open(paths[name], encoding="utf-8").readline())
        assert first == e2e_rows(world, split, n_candidates=6, seed=3)[0], f"{name}.jsonl does not round-trip"
    both = write_corpus(str(tmp_path / "both"), seed=3, n_train=12, n_heldout=12, k=3, n_candidates=6,
                        questions="both")
    kinds = [json.loads(line)["question_kind"] for line in open(both["instruct_heldout"], encoding="utf-8")]
    assert sorted(set(kinds)) == ["description", "name"] and len(kinds) == 2 * want["instruct_heldout"], \
        f"questions='both' wrote {len(kinds)} instruct_heldout rows of kinds {sorted(set(kinds))}"
