"""Tests for ask.py: the whole-corpus index, its resume and checks, and the `ask` command.

Offline, CPU, float32, on the "tiny" backbone. Each test states one claim.
"""
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import ask
import corpus
import data
import metrics
from ask import Index
from clara import CLaRa, CLaRaConfig, load_backbone

L = 32  # doc_max_len of the tiny model: the world's ~90-token passages become ~3 chunks each


def tiny_model(seed: int = 1) -> CLaRa:
    """A tiny CLaRa with random non-zero adapters (so theta_c really changes the vectors) and
    theta_qr = a copy of theta_c, as stage 3 starts (paper Table 14). Seeded whole: add_lora draws
    the A matrices from the global generator, and an unseeded one made the tests' picks vary by run."""
    torch.manual_seed(seed)
    model = CLaRa(*load_backbone("tiny"), CLaRaConfig(backbone="tiny", doc_max_len=L, compression_rate=4,
                                                      top_k=3, lora_dropout=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.lora_layers:
            for B in layer.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g) * 0.05)
    model.init_query_reasoner()
    return model.eval()


PASSAGES = corpus.build_world(seed=0, n_train=20, n_heldout=0).passages("train")  # 20 x ~90 tokens


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(model, index directory): 20 passages -> about 60 chunks in shards of 8."""
    model = tiny_model()
    out = str(tmp_path_factory.mktemp("index") / "idx")
    Index.build(model, PASSAGES, out, shard_size=8, batch_size=3)
    return model, out


# --- the claim that matters: a question finds its passage in the whole index -------------------

def test_question_repeating_a_passage_finds_it_first(built):
    model, out = built
    index = Index.open(out)
    assert len(index) > 3 * len(PASSAGES) // 2 and index.n_shards > 5, "want many chunks in many shards"
    targets = [0, 7, len(index) // 2, len(index) - 1]  # first shard, middle, the last (short) shard
    questions = [index.passages[i]["text"] for i in targets]
    scores, ids = ask.search(model, index, questions, n=5)  # (4, 5) each
    for b, i in enumerate(targets):
        assert index.passages[ids[b, 0]]["text"] == questions[b], f"question {b} did not find passage {i}"
        assert scores[b, 0] > 0.999, f"cosine of a question with its own text is {scores[b, 0]:.4f}"
        assert scores[b, 1] < 0.99, "the runner-up must be clearly worse, or the test proves nothing"
    # the stored float16 vectors score as CLaRa.score does on freshly compressed float32 ones
    fresh = model.score(model.encode_query(questions[:1]), model.compress([index.passages[i]["text"]
                                                                            for i in ids[0].tolist()])[None])
    torch.testing.assert_close(scores[0], fresh[0], atol=1e-3, rtol=0)


def test_ask_gives_the_generator_the_picked_passages_vectors(built, monkeypatch):
    model, out = built
    index = Index.open(out)
    question = index.passages[11]["text"]
    read, generate = {}, model.generate

    def spy(questions, docs, max_new_tokens):  # what the generator is given: (1, k, l, D)
        read["docs"] = docs
        return generate(questions, docs, max_new_tokens)
    monkeypatch.setattr(model, "generate", spy)
    a = ask.ask(model, index, question, k=3, n=10, max_new_tokens=4)
    assert isinstance(a.answer, str)
    picked = [p["id"] for p in a.passages]
    scores, ids = ask.search(model, index, [question], n=10)
    assert picked[0] == 11 and picked == ids[0, :3].tolist(), "the top-k forward is the exact top k"
    torch.testing.assert_close(read["docs"], index.vectors(torch.tensor([picked])), rtol=0, atol=0,
                               msg="the generator must read the stored vectors of the picked passages")


def test_long_passages_are_cut_into_chunks_of_at_most_L_tokens(built):
    model, out = built
    index = Index.open(out)
    for i, passage in enumerate(PASSAGES):
        chunks = [p for p in index.passages if p["source"] == f"passages[{i}]"]
        assert len(chunks) >= 2 and [c["chunk"] for c in chunks] == list(range(1, len(chunks) + 1))
        assert " ".join(c["text"] for c in chunks).split() == passage.split(), "chunks must cover the text"
        for c in chunks:
            assert len(model.tokenizer(c["text"], add_special_tokens=False)["input_ids"]) <= L


# --- resume, and what is refused ---------------------------------------------------------------

def test_interrupted_index_resumes_to_the_same_shards(built, tmp_path):
    model, out = built
    resumed = str(tmp_path / "resumed")
    with pytest.raises(SystemExit, match="stopped after 2 shards"):
        Index.build(model, PASSAGES, resumed, shard_size=8, batch_size=3, stop_after=2)
    with pytest.raises(ValueError, match="unfinished index"):
        Index.open(resumed)
    first = os.stat(os.path.join(resumed, "shard-00000.safetensors")).st_mtime_ns
    with open(os.path.join(resumed, "shard-00002.safetensors.tmp"), "wb") as f:
        f.write(b"half a shard")  # what a kill during the third shard's write leaves
    Index.build(model, PASSAGES, resumed, shard_size=8, batch_size=3)
    assert os.stat(os.path.join(resumed, "shard-00000.safetensors")).st_mtime_ns == first, \
        "a finished shard must be kept, not recomputed"
    shards = lambda d: sorted(f for f in os.listdir(d) if f.startswith("shard-") and f.endswith(".safetensors"))
    names = shards(out)
    assert names == shards(resumed)
    for name in names + ["passages.jsonl", "bm25.json", "index.json"]:
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(resumed, name), "rb") as b:
            assert a.read() == b.read(), f"{name} differs after resume"


def test_index_of_another_checkpoint_is_refused(built):
    _, out = built
    other = tiny_model(seed=2)  # same config and backbone, other theta_c
    with pytest.raises(ValueError, match=r"idx[/\\]index\.json: built with another checkpoint.*compressor"):
        ask.search(other, Index.open(out), ["Who keeps a cat?"])
    with pytest.raises(ValueError, match=r"index\.json: built with another checkpoint"):
        Index.build(other, PASSAGES, out, shard_size=8, batch_size=3)


def test_truncated_or_foreign_shard_is_refused(built, tmp_path):
    _, out = built
    broken = str(tmp_path / "broken")
    shutil.copytree(out, broken)
    path = os.path.join(broken, "shard-00003.safetensors")
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match=r"shard-00003\.safetensors: corrupt or truncated"):
        Index.open(broken)
    foreign = str(tmp_path / "foreign")  # a whole shard of the same shape, from another index
    Index.build(tiny_model(seed=2), PASSAGES[:3], foreign, shard_size=8, batch_size=3)
    shutil.copy(os.path.join(foreign, "shard-00000.safetensors"), path)
    with pytest.raises(ValueError, match=r"shard-00003\.safetensors: belongs to another index"):
        Index.open(broken)


def test_edited_passages_file_is_refused(built, tmp_path):
    _, out = built
    edited = str(tmp_path / "edited")
    shutil.copytree(out, edited)
    path = os.path.join(edited, "passages.jsonl")
    lines = open(path).read().splitlines()
    lines[0], lines[1] = lines[1], lines[0]  # same passages, wrong order: every id would be off
    open(path, "w").write("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"passages\.jsonl: changed since"):
        Index.open(edited)


def test_passage_holding_unicode_line_separators_survives_the_index(built, tmp_path):
    model, _ = built
    odd = ["A line\u2028separator.", "A paragraph\u2029separator.", "A next\x85line.", "Plain."]
    out = str(tmp_path / "odd")
    Index.build(model, odd, out, shard_size=8)
    index = Index.open(out)  # str.splitlines() would cut passages.jsonl inside these three
    assert [p["text"] for p in index.passages] == odd
    assert ask.ask(model, index, odd[2], k=1, max_new_tokens=2).passages[0]["text"] == odd[2]


# --- bad input names the file and line ---------------------------------------------------------

@pytest.mark.parametrize("name, content, match", [
    ("a.jsonl", '{"text": "Fine."}\n{"text": "  "}\n', r"a\.jsonl:2: field 'text'"),
    ("a.jsonl", '{"text": "Fine."}\n\n{"text": "broken\n', r"a\.jsonl:3: not valid JSON"),
    ("a.jsonl", '{"text": "Fine."}\n{"title": "no text"}\n', r"a\.jsonl:2: field 'text': missing"),
    ("a.jsonl", '{"docs": ["Fine.", ""]}\n', r"a\.jsonl:1: field 'docs\[1\]'"),
    ("a.txt", "", r"a\.txt: no passages"),
    ("a.md", "Some text.\n", r"a\.md: expected a \.txt or \.jsonl"),
])
def test_bad_input_names_file_line_and_field(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        data.read_passages(path)


def test_txt_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(ValueError, match=r"a\.txt:3: not UTF-8"):
        data.read_passages(path)


def test_txt_rules_lines_and_paragraphs(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Paris is in France.\nIt is big.\n\n\nRome is in Italy.\n")
    assert data.read_passages(path) == [("Paris is in France.", f"{path}:1"), ("It is big.", f"{path}:2"),
                                       ("Rome is in Italy.", f"{path}:5")]
    assert data.read_passages(path, paragraphs=True) == [("Paris is in France. It is big.", f"{path}:1"),
                                                        ("Rome is in Italy.", f"{path}:5")]


def test_empty_passage_given_to_build_is_refused(built, tmp_path):
    model, _ = built
    with pytest.raises(ValueError, match=r"passages\[1\]: empty passage"):
        Index.build(model, ["Fine.", " "], str(tmp_path / "x"))


# --- FAISS (optional) ----------------------------------------------------------------------------

def test_faiss_flat_equals_the_exact_search(built, tmp_path):
    pytest.importorskip("faiss")
    model, out = built
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    index = Index.open(copy)
    q = model.encode_query(["Who keeps a parrot?", index.passages[5]["text"], "In which city?"])  # (3, l, D)
    exact_s, exact_i = ask.search_vectors(index, q, n=10)
    faiss_s, faiss_i = ask.search_vectors(index, q, n=10, faiss="flat")
    assert torch.equal(exact_i, faiss_i), f"FAISS flat ranks {faiss_i.tolist()}, exact {exact_i.tolist()}"
    torch.testing.assert_close(faiss_s, exact_s, atol=1e-5, rtol=0)
    again = ask.search_vectors(Index.open(copy), q, n=10, faiss="flat")  # read back from faiss-flat.index
    assert torch.equal(again[1], exact_i)


def test_asking_for_faiss_without_it_names_the_package(built, monkeypatch):
    _, out = built
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    index = Index.open(out)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        ask.search_vectors(index, torch.zeros(1, index.l, index.D), faiss="hnsw")


# --- the command line and the module -------------------------------------------------------------

def test_cli_index_then_query_from_arguments_and_stdin(built, tmp_path, capsys, monkeypatch):
    model, _ = built
    model.save(str(tmp_path / "ckpt"))
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["Short one.", "Mira Holt keeps a cat.",
                                                                     "The guild met in Tessary."]))
    ask.main(["index", "--ckpt", str(tmp_path / "ckpt"), "--docs", str(docs), "--out", str(tmp_path / "idx")])
    answers = ask.main(["query", "--index", str(tmp_path / "idx"), "-k", "2", "--max-new-tokens", "3",
                        "Mira Holt keeps a cat."])
    assert answers[0].passages[0]["source"] == f"{docs}:2"
    assert f"1. 1.0000  {docs}:2  Mira Holt keeps a cat." in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("Short one.\n\nThe guild met in Tessary.\n"))
    answers = ask.main(["query", "--index", str(tmp_path / "idx"), "-k", "1", "--max-new-tokens", "3"])
    assert [a.passages[0]["source"] for a in answers] == [f"{docs}:1", f"{docs}:3"]


def test_import_is_silent_and_loads_nothing_heavy():
    code = ("import sys, ask; "
            "print(sorted(m for m in ('transformers', 'safetensors', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"import ask pulled in {out.stdout}"
    assert out.stderr == ""


# --- a small index, and BM25 first ---------------------------------------------------------------

def test_index_smaller_than_k_is_read_whole_and_says_so(built, tmp_path, capsys):
    model, _ = built
    model.save(str(tmp_path / "ckpt"))
    notes = tmp_path / "notes.txt"
    notes.write_text("Mira Holt keeps a cat.\nThe guild met in Tessary.\n")  # 2 passages, top_k = 3
    ask.main(["index", "--ckpt", str(tmp_path / "ckpt"), "--docs", str(notes), "--out", str(tmp_path / "idx")])
    answers = ask.main(["query", "--index", str(tmp_path / "idx"), "--max-new-tokens", "2", "Who keeps a cat?"])
    assert sorted(p["source"] for p in answers[0].passages) == [f"{notes}:1", f"{notes}:2"]
    assert "note: the index holds 2 passages, fewer than k = 3" in capsys.readouterr().out


def test_bm25_first_picks_only_among_bm25s_top_n(built):
    model, out = built
    index = Index.open(out)
    question = "Who was born in " + index.passages[0]["text"].split(" born in ")[-1][:20]
    _, top = ask.bm25_search(index, [question], n=6)  # (1, 6)
    default = ask.ask(model, index, question, k=3, n=20, max_new_tokens=2)
    assert {p["id"] for p in default.passages} - set(top[0].tolist()), \
        "the query reasoner alone must pick outside BM25's top 6 here, or the test proves nothing"
    first = ask.ask(model, index, question, k=3, n=6, max_new_tokens=2, first_stage="bm25")
    assert {p["id"] for p in first.passages} <= set(top[0].tolist())
    scores = ask.score_candidates(model, index, [question], top)  # the query reasoner picked the best 3
    assert [p["id"] for p in first.passages] == top[0, scores[0].topk(3).indices].tolist()


def test_bm25_first_over_every_passage_equals_the_default_route(built):
    model, out = built
    index = Index.open(out)
    for question in ["Who keeps a parrot?", index.passages[9]["text"]]:
        default = ask.ask(model, index, question, k=3, n=len(index), max_new_tokens=3)
        first = ask.ask(model, index, question, k=3, n=len(index), max_new_tokens=3, first_stage="bm25")
        assert [p["id"] for p in first.passages] == [p["id"] for p in default.passages]
        assert first.answer == default.answer
        torch.testing.assert_close([p["score"] for p in first.passages], [p["score"] for p in default.passages],
                                   atol=1e-5, rtol=0)


def test_stored_bm25_scores_as_bm25_fitted_fresh(built):
    _, out = built
    index = Index.open(out)
    fresh = metrics.BM25([p["text"] for p in index.passages])
    for question in ["Who keeps a parrot in Tessary?", index.passages[4]["text"], "nothing matches zzz"]:
        assert index.bm25().scores(question) == fresh.scores(question)


def test_missing_or_corrupt_bm25_file_is_named(built, tmp_path):
    model, out = built
    broken = str(tmp_path / "broken")
    shutil.copytree(out, broken)
    path = os.path.join(broken, "bm25.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[:len(text) // 2])
    with pytest.raises(ValueError, match=r"broken[/\\]bm25\.json: corrupt"):
        Index.open(broken)
    os.remove(path)
    with pytest.raises(ValueError, match=r"broken[/\\]bm25\.json: missing.*ask\.py index"):
        Index.open(broken)
    Index.build(model, PASSAGES, broken, shard_size=8, batch_size=3)  # what the error advises
    assert Index.open(broken).bm25().scores("a cat") == Index.open(out).bm25().scores("a cat")


def test_index_and_exact_search_under_bf16_autocast(built, tmp_path):
    """--dtype bfloat16 (what --dtype auto picks on a CPU with native bf16): the index is written
    (the float16 shard is assembled outside autocast, which refuses float16) and the exact search
    scores in float32 under any autocast, equal to the scores outside it."""
    model, out = built
    model.save(str(tmp_path / "ckpt"))
    docs = tmp_path / "docs.txt"
    docs.write_text("Short one.\nMira Holt keeps a cat.\nThe guild met in Tessary.\n")
    index = ask.main(["index", "--ckpt", str(tmp_path / "ckpt"), "--docs", str(docs), "--out",
                      str(tmp_path / "idx"), "--dtype", "bfloat16"])
    assert index.load_shard(0).dtype == torch.float16 and len(index) == 3
    full = Index.open(out)
    q = model.encode_query(["Who keeps a parrot?", full.passages[5]["text"]])  # (2, l, D)
    plain = ask.search_vectors(full, q, n=10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = ask.search_vectors(full, q, n=10)
    assert under[0].dtype == torch.float32 and torch.equal(under[0], plain[0]) and torch.equal(under[1], plain[1])


def test_cli_query_with_bm25_first(built, tmp_path):
    model, _ = built
    model.save(str(tmp_path / "ckpt"))
    docs = tmp_path / "docs.txt"
    docs.write_text("Short one.\nMira Holt keeps a cat.\nThe guild met in Tessary.\n")
    ask.main(["index", "--ckpt", str(tmp_path / "ckpt"), "--docs", str(docs), "--out", str(tmp_path / "idx")])
    answers = ask.main(["query", "--index", str(tmp_path / "idx"), "--first-stage", "bm25", "-n", "1",
                        "-k", "1", "--max-new-tokens", "2", "Where did the guild meet?"])
    assert answers[0].passages[0]["source"] == f"{docs}:3", "BM25's only candidate: the one sharing words"
