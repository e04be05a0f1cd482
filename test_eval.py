"""Tests for eval.py: a smoke run on a tiny checkpoint, and loud errors that name the row.

Offline, CPU, float32 (pinned with --dtype where the outcome depends on it: a CPU with native bf16
would otherwise evaluate under bf16 autocast), on the "tiny" backbone (random weights: the numbers mean nothing, the
claims are that every setting and baseline runs on the same questions and gives finite metrics).
"""
import argparse
import json
import math
import os
import re

import pytest
import torch

import corpus
import data
import eval as clara_eval
from clara import CLaRa, CLaRaConfig, load_backbone
from runtime import VectorCache


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A D = 64 model gains nothing from threads; on a shared 2-core machine, OpenMP threads
    waiting on each other made this file 30x slower (45 s vs 1.3 s for the smoke run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as train.py leaves it: instruct/ and e2e/ checkpoints, held-out e2e rows."""
    tmp = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = CLaRa(*load_backbone("tiny"), CLaRaConfig(backbone="tiny", doc_max_len=32,
                                                      compression_rate=4, top_k=2))
    model.save(tmp / "instruct")
    with torch.no_grad():  # stage 3 changes theta_qr, so "before" and "after" rerank differently;
        for layer in model.lora_layers:  # a trained theta_g answers otherwise than the bare backbone
            layer.lora_B["query_reasoner"].normal_(0, 0.05)
            layer.lora_B["generator"].normal_(0, 0.05)
    model.save(tmp / "e2e")
    reference = tmp.parent / (tmp.name + "_text")  # where eval.py looks for the text reference
    with torch.no_grad():  # its own theta_g (the same-budget text run trains theta_g alone)
        for layer in model.lora_layers:
            layer.lora_B["generator"].normal_(0, 0.05)
    model.save(reference / "instruct")
    (reference / "args.json").write_text(json.dumps({"instruct_reads": "text"}))
    world = corpus.build_world(seed=0, n_train=8, n_heldout=8)
    rows = corpus.e2e_rows(world, "heldout", n_candidates=5)
    with open(tmp / "e2e.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return tmp


def test_smoke_every_setting_and_baseline_gives_finite_numbers(run_dir, capsys):
    out = run_dir / "results.json"
    clara_eval.main(["--ckpt", str(run_dir / "e2e"), "--data", str(run_dir / "e2e.jsonl"), "--limit", "6",
                     "--batch-size", "4", "--max-new-tokens", "4", "--latency-questions", "2",
                     "--device", "cpu", "--dtype", "float32", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["questions"] == 6 and res["k"] == 2, "k must default to the checkpoint's top_k"
    for name in ("closed-book", "text-rag", "text-rag-untuned", "compressed", "compressed-shuffled", "end-to-end",
                 "end-to-end-shuffled", "end-to-end-before"):
        assert name in res["settings"], f"setting {name} missing from the results"
        for m in ("em", "f1", "cem"):
            v = res["settings"][name][m]
            assert math.isfinite(v) and 0 <= v <= 1, f"{name} {m} = {v}"
    assert set(res["intervals"]) == {"compressed - shuffled", "end-to-end - shuffled", "shuffled - closed-book",
                                     "compressed - closed-book",
                                     "end-to-end: after - before stage-3 picks",
                                     "compressed - text RAG (same budget)", "compressed - text RAG (untuned)",
                                     "MRR: after - before stage 3", "MRR: after stage 3 - BM25"}
    for name, by_metric in res["intervals"].items():
        for m, v in by_metric.items():
            assert v["lo"] <= v["diff"] <= v["hi"] and v["questions"] == 6, f"{name} {m}: {v}"
    for name, a, b in clara_eval.COMPARISONS:  # each interval is about a - b, in that order (F1: EM is
        for m in ("em", "f1"):                 # often 0 everywhere on the random tiny model)
            gap = res["intervals"][name][m]["diff"]
            assert gap == pytest.approx(res["settings"][a][m] - res["settings"][b][m]), f"{name} {m}"
    for name in ("bm25", "before", "after"):
        r = res["reranking"][name]
        assert "skipped" not in r, f"reranking {name} was skipped: {r}"
        for m in ("mrr", "recall@1", "recall@3", "recall@5"):
            assert math.isfinite(r[m]) and 0 <= r[m] <= 1, f"reranking {name} {m} = {r[m]}"
        assert r["recall@1"] <= r["recall@3"] <= r["recall@5"], f"{name}: recall must grow with k"
    assert res["reranking"]["before"]["checkpoint"].endswith("instruct"), "before = the sibling instruct/"
    assert len(res["predictions"]) == res["questions"], "one prediction record per question"
    assert all(len(p["passages"]) == 2 and len(p["end_to_end_picks"]) == 2 for p in res["predictions"])
    # the before-stage-3 setting reads the before reranker's picks (theta_qr differs in the fixture)
    assert any(p["end_to_end_picks"] != p["end_to_end_before_picks"] for p in res["predictions"]), \
        "the before-stage-3 picks equal the after picks on every question: the setting reads the wrong reranker"
    preds = res["predictions"]
    for i, p in enumerate(preds):  # the end-to-end control reads another question's picks, never own facts
        d = preds[p["end_to_end_donor"]]
        assert p["end_to_end_donor"] != i and d["question"] != p["question"]
    e = res["efficiency"]
    assert e["compressed"]["prompt_positions"] < e["text-rag"]["prompt_positions"], \
        "8 memory vectors per passage must take fewer positions than the passage's tokens"
    for name in ("compressed", "text-rag"):
        assert e[name]["prefill_ms"] > 0 and e[name]["ms_per_token"] > 0, e[name]
    assert e["prefill_speedup"] > 0 and e["per_token_speedup"] > 0 and res["compression"]["passages_per_s"] > 0
    t = res["seconds"]  # where the time went: every answer setting and phase, inside the total
    assert set(t) == {*res["settings"], "loading", "compression", "query scores", "efficiency", "total"}
    assert all(v > 0 for v in t.values()) and sum(v for n, v in t.items() if n != "total") <= t["total"]
    table = capsys.readouterr().out
    for label in ("closed-book", "text RAG", "shuffled control", "compressed - shuffled", "BM25", "before e2e",
                  "passages/s", "max over all gold aliases of field gold_answer", "95% intervals", "prefill",
                  "min in all; loading"):
        assert label in table, f"stdout table lacks {label!r}"
    for name in res["intervals"]:  # the longest label (40 characters) once ran into its first cell
        assert re.search(rf"^  {re.escape(name)} +[A-Z]+ ", table, flags=re.M), f"{name!r} runs into its cell"


def test_text_references_read_through_their_own_generators(run_dir):
    """text-rag reads with the text run's theta_g, text-rag-untuned with no adapter, compressed with
    the checkpoint's theta_g: each equals generation by that model on the same passages as text."""
    res = clara_eval.main(["--ckpt", str(run_dir / "e2e"), "--data", str(run_dir / "e2e.jsonl"), "--limit", "4",
                           "--batch-size", "4", "--max-new-tokens", "6", "--device", "cpu",
                           "--dtype", "float32", "--settings", "text-rag"])  # as the generate() calls below
    rows = data.load_rows(str(run_dir / "e2e.jsonl"), "e2e")[:4]
    questions = [r["question"] for r in rows]
    passages = [[r["docs"][i] for i in data.oracle_k(r, 2)] for r in rows]
    got = {name: [p[name]["prediction"] for p in res["predictions"]]
           for name in ("text-rag", "text-rag-untuned")}
    reference = CLaRa.load(str(run_dir) + "_text/instruct").eval()
    assert got["text-rag"] == reference.generate(questions, passages, 6, docs_as_text=True)
    assert got["text-rag-untuned"] == reference.generate(questions, passages, 6, docs_as_text=True, adapter=None)
    own = CLaRa.load(str(run_dir / "e2e")).eval().generate(questions, passages, 6, docs_as_text=True)
    assert own != got["text-rag"] and own != got["text-rag-untuned"], \
        "the fixture's three generators must answer differently for the test to mean anything"
    assert res["text_reference"].endswith("_text/instruct")


def test_text_reference_from_a_run_that_read_vectors_is_refused(run_dir, tmp_path):
    fake = tmp_path / "vectors"
    CLaRa.load(str(run_dir / "e2e")).save(fake / "instruct")
    (fake / "args.json").write_text(json.dumps({"instruct_reads": "vectors"}))
    with pytest.raises(SystemExit, match="did not train with --instruct-reads text"):
        clara_eval.main(["--ckpt", str(run_dir / "e2e"), "--data", str(run_dir / "e2e.jsonl"), "--limit", "2",
                         "--settings", "text-rag", "--text-reference", str(fake / "instruct")])


def test_default_data_is_the_test_part_written_into_a_run_made_before_it(tmp_path, capsys):
    run = tmp_path / "run"
    paths = corpus.write_corpus(run / "data", seed=3)
    (run / "args.json").write_text(json.dumps({"seed": 3}))
    test_part = open(paths["e2e_test"]).read()
    os.remove(paths["e2e_test"])  # a run directory from before the test part existed
    assert clara_eval.default_data(str(run)) == str(run / "data" / "e2e_test.jsonl")
    assert "writing the embedded corpus there (seed 3)" in capsys.readouterr().out
    assert open(paths["e2e_test"]).read() == test_part, "the run's own seed gives its own test part"
    assert clara_eval.default_data(str(run), "dev") == str(run / "data" / "e2e_heldout.jsonl")


def test_oracle_passages_are_positives_then_first_others_in_candidate_order():
    row = {"docs": ["a", "b", "c", "d", "e"], "pos_index": [3]}
    assert data.oracle_k(row, 3) == [0, 1, 3]
    assert data.oracle_k(dict(row, pos_index=[4, 0]), 2) == [0, 4]


def test_shuffled_control_never_reads_the_questions_own_positive():
    rows = [{"docs": ["p0", "x"], "pos_index": [0], "where": "f:1"},
            {"docs": ["p0", "y"], "pos_index": [0], "where": "f:2"},  # same gold passage as row 0
            {"docs": ["p2", "z"], "pos_index": [0], "where": "f:3"}]
    passages = [r["docs"] for r in rows]
    assert clara_eval.donors(rows, passages) == [2, 2, 0]


def test_row_with_fewer_than_k_candidates_names_file_and_line(run_dir, tmp_path):
    lines = (run_dir / "e2e.jsonl").read_text().splitlines()[:3]
    bad = json.loads(lines[1])
    bad["docs"], bad["pos_index"] = bad["docs"][:1], [0]
    lines[1] = json.dumps(bad)
    path = tmp_path / "short.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"short\.jsonl:2: field 'docs': 1 candidate"):
        clara_eval.main(["--ckpt", str(run_dir / "e2e"), "--data", str(path), "--device", "cpu"])


def test_failed_batch_names_its_rows_instead_of_scoring_empty_answers():
    rows = [{"where": "f.jsonl:7"}, {"where": "f.jsonl:9"}]

    def out_of_memory(idx):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="f.jsonl:7, f.jsonl:9: RuntimeError: CUDA out of memory"):
        clara_eval.batched(rows, 8, out_of_memory)


@pytest.mark.parametrize("qr_init", ["compressor", "scratch"])
def test_before_stage_3_starts_theta_qr_as_the_run_did(tmp_path, qr_init):
    """The "before" reranker is where the run's stage 3 started: theta_qr <- theta_c by default,
    the instruct checkpoint's zero-init theta_qr after train.py --qr-init scratch."""
    torch.manual_seed(0)
    model = CLaRa(*load_backbone("tiny"), CLaRaConfig(backbone="tiny", doc_max_len=32, compression_rate=4, top_k=2))
    with torch.no_grad():  # a trained-looking theta_c, so the two starts rank differently
        for layer in model.lora_layers:
            layer.lora_B["compressor"].normal_(0, 0.05)
    model.save(tmp_path / "instruct")
    model.eval()  # as eval.py runs it: no LoRA dropout
    rows = corpus.e2e_rows(corpus.build_world(seed=0, n_train=8, n_heldout=8), "heldout", n_candidates=5)[:4]
    cache = VectorCache(model, rows, batch_size=4)
    with torch.no_grad():  # as eval.py scores (no gradient: adapters merged into the weights)
        expected = {"scratch": clara_eval.query_scores(model, rows, cache, 4)}
        model.init_query_reasoner()
        expected["compressor"] = clara_eval.query_scores(model, rows, cache, 4)
    assert expected["scratch"] != expected["compressor"], "the test needs two starts that rank differently"
    (tmp_path / "args.json").write_text(json.dumps({"qr_init": qr_init}))
    args = argparse.Namespace(before=None, ckpt=str(tmp_path / "e2e"), batch_size=4)
    with torch.no_grad():
        scores, where = clara_eval.before_scores(model, rows, cache, args)
    assert scores == expected[qr_init]
    assert ("scratch" in where) == (qr_init == "scratch"), where


def test_each_shuffled_control_reads_the_passages_its_recorded_donors_name():
    """compressed-shuffled must read passages[compressed_donor[i]], not the end-to-end donors (a
    free variable rebound by the end-to-end branch once made it do so)."""
    rows = [{"question": "q0", "docs": ["a", "x"], "pos_index": [0], "where": "f:1"},
            {"question": "q1", "docs": ["b", "a"], "pos_index": [0], "where": "f:2"},
            {"question": "q2", "docs": ["c", "z"], "pos_index": [0], "where": "f:3"}]
    passages = [["a"], ["b"], ["c"]]
    picks = {"end-to-end": [[1], [1], [1]]}  # picked: x, a, z

    class Echo:  # generates the passages it was given, so a prediction names what it read
        def generate(self, questions, docs, max_new_tokens, docs_as_text=False, adapter="generator"):
            return ["|".join(d) for d in docs]
    args = argparse.Namespace(max_new_tokens=1, settings=["compressed", "end-to-end"], batch_size=8)
    preds, donor_of = clara_eval.answer_settings(Echo(), rows, passages, lambda lists: lists, picks, args)
    assert donor_of["compressed"] != donor_of["end-to-end"], "the test needs two different donor lists"
    picked = [["x"], ["a"], ["z"]]
    for i in range(3):
        assert preds["compressed-shuffled"][i] == "|".join(passages[donor_of["compressed"][i]])
        assert preds["end-to-end-shuffled"][i] == "|".join(picked[donor_of["end-to-end"][i]])


def test_an_instruct_checkpoint_written_before_the_compressor_field_counts_as_memory_tokens(tmp_path):
    model = CLaRa(*load_backbone("tiny"), CLaRaConfig(backbone="tiny", doc_max_len=32, compression_rate=4, top_k=2))
    model.save(tmp_path / "instruct")
    meta = json.loads((tmp_path / "instruct" / "config.json").read_text())
    del meta["config"]["compressor"]  # as written before the field existed
    (tmp_path / "instruct" / "config.json").write_text(json.dumps(meta))
    model.eval()
    rows = corpus.e2e_rows(corpus.build_world(seed=0, n_train=8, n_heldout=8), "heldout", n_candidates=5)[:2]
    cache = VectorCache(model, rows, batch_size=4)
    args = argparse.Namespace(before=None, ckpt=str(tmp_path / "e2e"), batch_size=4)
    with torch.no_grad():
        scores, _ = clara_eval.before_scores(model, rows, cache, args)  # no "configuration differs"
    assert scores is not None
    model.config.compressor = "mean-pool"
    with pytest.raises(SystemExit, match="compressor saved 'memory-tokens' now 'mean-pool'"):
        clara_eval.before_scores(model, rows, cache, args)


def test_eval_runs_in_the_dtype_training_recorded_and_leaves_autocast_off(tmp_path, capsys):
    """train.py --dtype bfloat16 records the dtype in every checkpoint; eval.py without --dtype runs
    as trained, says why, and bf16 autocast does not outlive evaluate()."""
    import train
    from test_train import SMALL
    train.main(SMALL + ["--steps", "0", "0", "1", "--dtype", "bfloat16", "--out", str(tmp_path)])
    for stage in ("pretrain", "instruct", "e2e"):
        assert json.loads((tmp_path / stage / "config.json").read_text())["dtype"] == "bfloat16", stage
    capsys.readouterr()
    res = clara_eval.evaluate(clara_eval.parse_args(
        ["--ckpt", str(tmp_path / "e2e"), "--limit", "4", "--batch-size", "4", "--max-new-tokens", "2",
         "--settings", "compressed", "end-to-end", "--device", "cpu"]))
    assert res["dtype"] == "bfloat16"
    assert "bf16 autocast: as trained (the checkpoint records bfloat16)" in capsys.readouterr().out
    assert not torch.is_autocast_enabled("cpu"), "bf16 autocast outlived evaluate()"
