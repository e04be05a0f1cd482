"""Tests for metrics.py: hand-computed answer and retrieval scores, and a hand-computed BM25 score."""
import math
import random

import pytest

import metrics

from metrics import (BM25, bm25_scores, cover_em, exact_match, f1_score, normalize_answer, rank_from_scores,
                     ranking_metrics, recall_at_k, reciprocal_rank, shuffle_donors, summarize)


# ---------------------------------------------------------------------------- answers

def test_normalize_answer():
    assert normalize_answer("  The Quick, Brown fox!  ") == "quick brown fox"
    assert normalize_answer("theatre an-apple") == "theatre anapple"  # only whole-word articles go


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match("The Beatles!", ["beatles"]) == 1.0
    assert exact_match("Beatles band", ["The Beatles"]) == 0.0
    assert exact_match("", ["Beatles"]) == 0.0  # an empty prediction is valid, and wrong


def test_f1_hand_computed():
    # [cat, sat] vs [cat, sat, down]: precision 1, recall 2/3 -> F1 0.8
    assert f1_score("the cat sat", ["cat sat down"]) == pytest.approx(0.8, abs=1e-12)
    assert f1_score("dog", ["cat"]) == 0.0
    # repeated tokens count by multiplicity: [a.., cat, cat] vs [cat]: common 1, P 1/2, R 1 -> 2/3
    assert f1_score("cat cat", ["cat"]) == pytest.approx(2 / 3, abs=1e-12)


def test_cover_em_needs_every_gold_token():
    assert cover_em("It was John Lennon in 1980.", ["john lennon"]) == 1.0
    assert cover_em("Lennon, John", ["John Lennon"]) == 1.0  # order does not matter
    assert cover_em("John", ["John Lennon"]) == 0.0


def test_first_only_differs_from_max_over_aliases():
    golds = ["Paul McCartney", "John Lennon"]
    assert exact_match("John Lennon", golds) == 1.0
    assert exact_match("John Lennon", golds, first_only=True) == 0.0
    assert cover_em("John Lennon", golds, first_only=True) == 0.0
    assert f1_score("John Lennon", golds) == 1.0
    assert f1_score("John Lennon", golds, first_only=True) == 0.0


@pytest.mark.parametrize("metric", [exact_match, f1_score, cover_em])
def test_bad_golds_are_errors(metric):
    with pytest.raises(ValueError, match="no gold answer"):
        metric("x", [])
    with pytest.raises(ValueError, match="non-empty strings"):
        metric("x", ["ok", ""])
    with pytest.raises(TypeError, match="list of strings"):
        metric("x", "a bare string")


# ---------------------------------------------------------------------------- retrieval

def test_recall_and_reciprocal_rank_on_a_hand_ranking():
    ranking = [4, 2, 0, 3, 1]  # positives 0 and 1 sit at ranks 3 and 5
    positives = [0, 1]
    assert [recall_at_k(ranking, positives, k) for k in (1, 3, 5)] == [0.0, 0.5, 1.0]
    assert reciprocal_rank(ranking, positives) == pytest.approx(1 / 3)
    assert reciprocal_rank([4, 2], positives) == 0.0


def test_retrieval_needs_positives():
    with pytest.raises(ValueError, match="no positive"):
        recall_at_k([0, 1], [], 1)
    with pytest.raises(ValueError, match="no positive"):
        reciprocal_rank([0, 1], [])


def test_rank_from_scores_breaks_ties_by_lower_index():
    assert rank_from_scores([0.5, 0.9, 0.5, -1.0, 0.9]) == [1, 4, 0, 2, 3]
    with pytest.raises(ValueError, match="NaN"):
        rank_from_scores([0.1, float("nan")])


def test_summarize():
    assert summarize([1.0, 0.0, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no values"):
        summarize([])


# ---------------------------------------------------------------------------- BM25

def test_bm25_matches_hand_computed_scores():
    docs = ["The cat sat.", "the dog barked loudly"]  # lengths 3 and 4, avgdl 3.5
    k1, b, avgdl = 1.5, 0.75, 3.5
    idf_cat = math.log(1 + (2 - 1 + 0.5) / (1 + 0.5))  # in 1 of 2 docs: ln 2
    idf_the = math.log(1 + (2 - 2 + 0.5) / (2 + 0.5))  # in both: ln 1.2, small but positive

    def term(idf, tf, length):
        return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))

    expected = [term(idf_the, 1, 3) + term(idf_cat, 1, 3), term(idf_the, 1, 4)]
    got = bm25_scores("The cat?", docs)
    assert got == pytest.approx(expected, abs=1e-6)
    assert BM25(docs).scores("The cat?") == got


def test_bm25_ranks_the_passage_with_rare_query_words_first():
    docs = ["The city is large and the city is old.",
            "The city of Ulaanbaatar is the capital of Mongolia.",
            "A large city is a city that is large."]
    scores = bm25_scores("What is the capital of Mongolia?", docs)
    assert rank_from_scores(scores)[0] == 1, scores
    assert bm25_scores("zebra", docs) == [0.0, 0.0, 0.0]


def test_bm25_needs_documents():
    with pytest.raises(ValueError, match="at least one document"):
        BM25([])


def test_paired_bootstrap_interval_holds_the_difference_and_shrinks_with_questions():
    same = metrics.paired_bootstrap([0.5] * 40, [0.25] * 40)
    assert same["diff"] == same["lo"] == same["hi"] == 0.25, "a constant difference has no spread"
    a, b = [1, 0] * 50, [0] * 100  # half the questions gained a point
    r = metrics.paired_bootstrap(a, b)
    assert r["diff"] == 0.5 and 0.35 < r["lo"] < 0.5 < r["hi"] < 0.65, r
    big = metrics.paired_bootstrap(a * 4, b * 4)
    assert big["hi"] - big["lo"] < 0.7 * (r["hi"] - r["lo"]), "4x the questions must narrow the interval"
    with pytest.raises(ValueError, match="paired values"):
        metrics.paired_bootstrap([1, 0], [1])


def test_paired_bootstrap_resamples_questions_for_both_settings_at_once():
    """b varies from question to question and a = b plus a gain on 6 of 100 questions: resampling
    the same questions for both cancels b's spread, so the paired interval excludes 0, where an
    unpaired one (a and b resampled apart) is over three times as wide and holds 0."""
    b = [1, 0] * 50
    a = list(b)
    for i in range(1, 12, 2):  # six questions b got wrong, a right
        a[i] = 1
    paired = metrics.paired_bootstrap(a, b)
    rng = random.Random(0)
    mean = lambda xs: sum(xs[rng.randrange(100)] for _ in range(100)) / 100
    unpaired = sorted(mean(a) - mean(b) for _ in range(2000))
    lo, hi = unpaired[50], unpaired[1949]
    assert lo < 0 < hi, "the unpaired interval should hold 0 here: the test proves nothing"
    assert 0 < paired["lo"] and paired["diff"] == pytest.approx(0.06), paired
    assert paired["hi"] - paired["lo"] < (hi - lo) / 3, "not paired: as wide as resampling a and b apart"


def test_ranking_metrics_hand_computed_over_the_questions_with_positives():
    scores = [[0.1, 0.9, 0.5, 0.0],   # ranking [1, 2, 0, 3]: positives {2, 3} at ranks 2 and 4
              [0.8, 0.1, 0.2, 0.3],   # ranking [0, 3, 2, 1]: positive {0} at rank 1
              [0.5, 0.5, 0.5, 0.5]]   # no positives: left out
    m = ranking_metrics(scores, [[2, 3], [0], []], recall_at=(1, 3), hit_at=(1, 2))
    assert m["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["recall@1"] == pytest.approx((0 + 1) / 2) and m["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["hit@1"] == pytest.approx(0.5) and m["hit@2"] == pytest.approx(1.0)
    assert m["questions"] == 2 and m["per_question_rr"] == [0.5, 1.0]
    assert list(m) == ["mrr", "recall@1", "recall@3", "hit@1", "hit@2", "questions", "without_positives",
                       "per_question_rr"]
    assert m["questions"] == 2 and m["without_positives"] == 1, "the row without positives is counted, not hidden"
    assert ranking_metrics(scores[2:], [[]]) == {"skipped": "no row has pos_index"}


def test_shuffle_donors_skip_rows_that_share_a_passage():
    # rows 0 and 1 are about the same passage (as SCP rows and instruct rows often are): a roll by
    # one gives row 1 row 0's passage; the donor rule must not
    assert shuffle_donors([["a"], ["a"], ["b"]], [["a"], ["a"], ["b"]]) == [2, 2, 0]
    # instruct rows: a donor must share none of the row's k passages
    rows = [["a", "c"], ["c", "b"], ["b", "a"], ["x", "y"]]
    assert shuffle_donors(rows, rows) == [3, 3, 3, 0]
    with pytest.raises(ValueError, match="row 0: every other row holds"):
        shuffle_donors(rows[:3], rows[:3])
    with pytest.raises(ValueError, match="f.jsonl:7: every other row holds"):
        shuffle_donors(rows[:3], rows[:3], names=["f.jsonl:7", "f.jsonl:8", "f.jsonl:9"])
