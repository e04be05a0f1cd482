"""train.py on the tiny backbone: the pipeline runs, resume is exact, bad input fails clearly.
These check the plumbing, not quality (the tiny backbone is random)."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

import corpus
import data
import metrics
import runtime
import train
from clara import CLaRa, LoRALinear, load_backbone
from runtime import VectorCache

SMALL = ["--backbone", "tiny", "--batch-size", "2", "2", "2", "--limit", "12", "--eval-rows", "4",
         "--doc-max-len", "48", "--n-candidates", "6", "--top-k", "2", "--instruct-k", "2",
         "--log-every", "1", "--save-every", "2", "--peak-flops", "1e11"]


def test_smoke_run_trains_all_three_stages(tmp_path):
    train.main(SMALL + ["--out", str(tmp_path), "--steps", "2", "2", "2"])
    recs = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["stage"] for r in recs] == ["pretrain"] * 2 + ["instruct"] * 2 + ["e2e"] * 2
    for r in recs:
        assert r["loss"] == r["loss"] and r["loss"] > 0, f"bad loss in {r}"
        assert ("gap" in r) == (r["stage"] != "e2e"), "stages 1-2 log the own-vs-shuffled gap"
        assert ("eval_mrr" in r) == (r["stage"] == "e2e"), "stage 3 logs reranker MRR"
    for stage in ("pretrain", "instruct", "e2e"):
        assert (tmp_path / stage / "DONE").exists()
    model = CLaRa.load(tmp_path / "e2e")
    assert model.config.top_k == 2 and model.config.n_memory == 48 // 16


def test_resume_after_an_interruption_gives_the_same_weights(tmp_path):
    """With LoRA dropout on, so the resumed run must also restore the random generator to draw the
    masks the uninterrupted run drew."""
    args = SMALL + ["--stage", "pretrain", "--steps", "4", "0", "0", "--lora-dropout", "0.1"]
    train.main(args + ["--out", str(tmp_path / "straight")])
    # stopped at step 3, resumed from the checkpoint of step 2 (--save-every 2): step 3 runs twice
    with pytest.raises(SystemExit, match="stopped after step 3"):
        train.main(args + ["--out", str(tmp_path / "resumed"), "--stop-after", "3"])
    assert not (tmp_path / "resumed" / "pretrain" / "DONE").exists()
    train.main(args + ["--out", str(tmp_path / "resumed"), "--resume"])
    a = load_file(tmp_path / "straight" / "pretrain" / "adapters.safetensors")
    b = load_file(tmp_path / "resumed" / "pretrain" / "adapters.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), f"{name} differs after resume"
    logged = [[(r["stage"], r["step"]) for r in map(json.loads, open(tmp_path / run / "metrics.jsonl"))]
              for run in ("straight", "resumed")]
    assert logged[0] == logged[1], "the steps replayed after the checkpoint are logged twice"


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    args = SMALL + ["--stage", "pretrain", "--steps", "2", "0", "0", "--out", str(tmp_path)]
    train.main(args)
    with pytest.raises(SystemExit, match="compression_rate saved 16 now 8"):
        train.main(args + ["--resume", "--compression-rate", "8"])



def test_compressor_flag_reaches_the_checkpoint_and_stage_1_trains_without_the_mse_term(tmp_path, capsys):
    train.main(SMALL + ["--stage", "pretrain", "--steps", "2", "0", "0", "--out", str(tmp_path),
                        "--compressor", "mean-pool"])
    assert CLaRa.load(tmp_path / "pretrain").config.compressor == "mean-pool"
    assert "mean-pool compressor: the memory tokens are unused" in capsys.readouterr().out
    recs = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["mse"] for r in recs] == [0.0, 0.0], "mean-pool has nothing for the MSE term to align"
    start = CLaRa(*load_backbone("tiny"), train.clara_config(train.parse_args(SMALL))).memory_tokens
    mem = load_file(tmp_path / "pretrain" / "adapters.safetensors")["memory_tokens"]
    assert torch.equal(mem, start.detach()), "the unused memory tokens must keep their initial values"


def test_a_checkpoint_written_before_the_compressor_field_continues_as_memory_tokens(tmp_path):
    CLaRa(*load_backbone("tiny"), train.clara_config(train.parse_args(SMALL))).save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    del meta["config"]["compressor"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(meta))
    train.check_resume_config(train.parse_args(SMALL), tmp_path)  # no error: the default
    with pytest.raises(SystemExit, match="compressor saved 'memory-tokens' now 'mean-pool'"):
        train.check_resume_config(train.parse_args(SMALL + ["--compressor", "mean-pool"]), tmp_path)

def test_malformed_data_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = {"data_type": "qa", "question": ["Who?"], "answers": ["Varel"], "docs": ["Varel Oskin."]}
    bad.write_text(json.dumps(good) + "\n" + '{"data_type": "qa", "question": ["Who?"], "docs": ["x"]}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2.*answers"):
        train.main(SMALL + ["--stage", "pretrain", "--data", str(bad), "--out", str(tmp_path / "o")])


def test_too_few_candidates_for_n_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="fewer than k=40"):
        train.main(SMALL + ["--stage", "e2e", "--n-candidates", "40", "--out", str(tmp_path)])


def test_curriculum_grows_passage_prefixes_to_the_whole_passage():
    row = {"kind": "qa", "doc": "Varel was born in 1874. He made lutes! Did he play? He did.",
           "questions": ["Who?"], "answers": ["Varel"], "where": "x:1"}
    docs = [data.curriculum_rows([row], p)[0] for p in (0.1, 0.5, 1.0)]
    assert [d["doc"] for d in docs] == ["Varel was born in 1874.", "Varel was born in 1874. He made lutes!",
                                        row["doc"]]
    for d in docs:
        assert d["kind"] == "paraphrase" and d["answers"] == [d["doc"]], "target is the prefix itself"


def test_stage_3_warns_when_stage_2_ended_without_a_gap(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"stage": "instruct", "gap": 0.6}) + "\n" + json.dumps({"stage": "instruct", "gap": 0.001}) + "\n")
    metrics.warn_if_no_gap(str(path))
    assert "no measurable information" in capsys.readouterr().out
    path.write_text(json.dumps({"stage": "instruct", "gap": 0.3}) + "\n")
    metrics.warn_if_no_gap(str(path))
    assert capsys.readouterr().out == ""


def test_pretrain_kinds_picks_the_scp_rows_of_stage_1(tmp_path):
    args = train.parse_args(SMALL + ["--out", str(tmp_path), "--pretrain-kinds", "paraphrase"])
    rows, held = train.load_stage_rows(args, "pretrain", train.resolve_sources(args))
    assert rows and held and {r["kind"] for r in rows + held} == {"paraphrase"}
    args = train.parse_args(SMALL + ["--out", str(tmp_path), "--pretrain-kinds", "summary"])
    with pytest.raises(SystemExit, match="no rows of kinds"):
        train.load_stage_rows(args, "pretrain", train.resolve_sources(args))


def test_compressor_lr_mult_gives_theta_c_and_mem_their_own_learning_rate():
    from clara import CLaRaConfig, load_backbone
    model = CLaRa(*load_backbone("tiny"), CLaRaConfig(backbone="tiny"))
    groups = train.param_groups(model, train.trainable(model, train.TRAINS["pretrain"]), 1e-3, 5.0)
    fast, slow = groups
    assert fast["lr"] == 5e-3 and slow["lr"] == 1e-3
    assert any(p is model.memory_tokens for p in fast["params"])
    assert len(fast["params"]) == len(slow["params"]) + 1  # theta_c's A, B per layer + MEM vs theta_g's
    e2e = train.param_groups(model, train.trainable(model, train.TRAINS["e2e"]), 1e-3, 5.0)
    assert len(e2e) == 1 and e2e[0]["lr"] == 1e-3, "stage 3 trains no compressor parameter"


@pytest.mark.parametrize("mult", [["1"], ["1", "0", "1"]])
def test_compressor_lr_mult_per_stage_freezes_theta_c_in_stage_2_alone(tmp_path, mult):
    train.main(SMALL + ["--out", str(tmp_path), "--steps", "2", "2", "0", "--compressor-lr-mult", *mult])
    pre, ins = (load_file(tmp_path / s / "adapters.safetensors") for s in ("pretrain", "instruct"))
    moved = {kind: any(not torch.equal(pre[n], ins[n]) for n in pre if kind in n) for kind in ("compressor", "generator")}
    assert moved == {"compressor": mult == ["1"], "generator": True}, moved
    args = train.parse_args(SMALL + ["--compressor-lr-mult", *mult])  # lr 0: frozen, no gradient computed
    assert train.stage_trains("instruct", args) == (("generator",) if mult != ["1"] else ("compressor", "generator"))
    assert train.stage_trains("pretrain", args) == ("compressor", "generator", "memory")
    with pytest.raises(SystemExit):  # two values: neither one for all stages nor one per stage
        train.parse_args(SMALL + ["--compressor-lr-mult", "1", "0"])


def test_init_may_change_the_selection_settings_but_not_the_shapes(tmp_path):
    args = SMALL + ["--steps", "1", "1", "1"]
    train.main(args + ["--stage", "pretrain", "--out", str(tmp_path / "a")])
    init = ["--init", str(tmp_path / "a" / "pretrain")]
    train.main(args + ["--stage", "instruct", "--out", str(tmp_path / "b"), "--temperature", "1.0", "--gumbel"] + init)
    assert CLaRa.load(tmp_path / "b" / "instruct").config.temperature == 1.0
    with pytest.raises(SystemExit, match="compression_rate saved 16 now 8"):
        train.main(args + ["--stage", "instruct", "--out", str(tmp_path / "c"), "--compression-rate", "8"] + init)


def test_init_from_a_stage_3_checkpoint_keeps_its_trained_query_reasoner(tmp_path):
    model = CLaRa(*load_backbone("tiny"), train.clara_config(train.parse_args(SMALL)))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking theta_c and a different, trained theta_qr
        for layer in model.lora_layers:
            for name in ("compressor", "query_reasoner"):
                layer.lora_B[name].copy_(torch.randn(layer.lora_B[name].shape, generator=g) * 0.05)
    model.save(tmp_path / "stage3")
    args = SMALL + ["--stage", "e2e", "--steps", "0", "0", "1", "--lr", "0", "0", "0"]  # lr 0: no change
    train.main(args + ["--init", str(tmp_path / "stage3"), "--out", str(tmp_path / "again")])
    before, after = load_file(tmp_path / "stage3" / "adapters.safetensors"), \
        load_file(tmp_path / "again" / "e2e" / "adapters.safetensors")
    for name in (n for n in before if "query_reasoner" in n):
        assert torch.equal(before[name], after[name]), f"{name}: the trained theta_qr was overwritten"


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_generator_trains_the_query_reasoner_alone_in_stage_3(tmp_path, freeze):
    model = CLaRa(*load_backbone("tiny"), train.clara_config(train.parse_args(SMALL)))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained-looking adapters, so every adapter's gradient is non-zero
        for layer in model.lora_layers:
            for name in ("compressor", "generator"):
                layer.lora_B[name].copy_(torch.randn(layer.lora_B[name].shape, generator=g) * 0.05)
    model.save(tmp_path / "instruct")
    args = SMALL + ["--stage", "e2e", "--steps", "0", "0", "2", "--lr", "0", "0", "1e-2", "--qr-init", "scratch",
                    "--init", str(tmp_path / "instruct"), "--out", str(tmp_path / "run")]
    train.main(args + (["--freeze-generator"] if freeze else []))
    before, after = load_file(tmp_path / "instruct" / "adapters.safetensors"), \
        load_file(tmp_path / "run" / "e2e" / "adapters.safetensors")
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any("query_reasoner" in n for n in changed), "theta_qr did not move"
    assert not any("compressor" in n or n == "memory_tokens" for n in changed), "stage 3 froze theta_c and MEM"
    assert any("generator" in n for n in changed) is not freeze, \
        f"generator {'moved under' if freeze else 'did not move without'} --freeze-generator"


def test_held_out_rows_from_a_training_file_share_no_passage_with_training_rows(tmp_path):
    # 5 passages, 3 questions each, the other passages as distractors (as instruct rows are)
    passages = [f"Passage {i} about person {i}." for i in range(5)]
    rows = [{"question": f"Q{q} on {i}?", "docs": [passages[i], passages[(i + 1) % 5]], "answer": "a",
             "pos_index": [0]} for i in range(5) for q in range(3)]
    file = tmp_path / "e2e.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = train.parse_args(["--eval-rows", "4", "--n-candidates", "2", "--top-k", "1"])
    train_rows, held = train.load_stage_rows(args, "e2e", {"e2e": (str(file), None)})
    held_passages = {r["docs"][p] for r in held for p in r["pos_index"]}
    assert len(held) == 4 and held_passages
    for r in train_rows:
        assert not held_passages & set(r["docs"]), f"{r['where']} shows a held-out passage"
    assert len(train_rows) == 15 - 6 - 3  # 2 held-out passages x 3 rows; 3 rows show one as distractor


def test_eval_rows_2_gives_every_held_out_row_a_shuffled_control_donor(tmp_path):
    # seed 1 of the embedded corpus: its first 2 shuffled instruct held-out rows share a passage, so
    # stage 2's diagnostics found no donor and crashed; the rows picked now always have one
    args = train.parse_args(["--seed", "1", "--eval-rows", "2", "--out", str(tmp_path)])
    _, held = train.load_stage_rows(args, "instruct", train.resolve_sources(args))
    docs = [[r["docs"][i] for i in data.oracle_k(r, args.instruct_k)] for r in held]
    assert len(held) == 2 and metrics.shuffle_donors(docs, docs) == [1, 0]


def test_pick_held_out_keeps_the_first_rows_if_they_have_donors_else_picks_rows_that_do():
    row = lambda i, *docs: {"where": f"f.jsonl:{i}", "docs": list(docs)}
    kept = [row(1, "a", "b"), row(2, "b", "c"), row(3, "d", "e"), row(4, "f", "g")]
    assert data.pick_held_out(kept, "instruct", 3, "f.jsonl") == kept[:3]  # row 3 is everyone's donor
    rows = [row(1, "a", "b"), row(2, "b", "c"), row(3, "c", "d"), row(4, "e", "f")]  # 2 has no donor in 1-3
    assert [r["where"] for r in data.pick_held_out(rows, "instruct", 3, "f.jsonl")] == \
        ["f.jsonl:1", "f.jsonl:3", "f.jsonl:4"]
    with pytest.raises(SystemExit, match="f.jsonl:1 shares a passage with every other"):
        data.pick_held_out([row(1, "a", "b"), row(2, "b", "c"), row(3, "a", "c")], "instruct", 3, "f.jsonl")


def test_instruct_reads_text_trains_the_generator_alone_from_its_init(tmp_path, capsys):
    train.main(SMALL + ["--out", str(tmp_path / "run"), "--stage", "pretrain", "--steps", "1", "0", "0"])
    train.main(SMALL + ["--out", str(tmp_path / "text"), "--stage", "instruct", "--instruct-reads", "text",
                        "--init", str(tmp_path / "run" / "pretrain"), "--data", str(tmp_path / "run" / "data"),
                        "--steps", "0", "2", "0"])
    assert "trains generator;" in capsys.readouterr().out
    start, end = load_file(tmp_path / "run/pretrain/adapters.safetensors"), load_file(tmp_path / "text/instruct/adapters.safetensors")
    changed = {n for n in start if not torch.equal(start[n], end[n])}
    assert changed and all(n.endswith(".generator") for n in changed), sorted(changed)[:3]
    assert json.load(open(tmp_path / "text" / "args.json"))["instruct_reads"] == "text"  # eval.py checks it
    with pytest.raises(SystemExit):
        train.parse_args(["--instruct-reads", "text"])  # --stage all: stage 3 would read vectors


@pytest.mark.parametrize("n", ["1", "0", "-3"])
def test_eval_rows_below_two_is_refused(n, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--eval-rows", n])
    assert "--eval-rows must be at least 2" in capsys.readouterr().err


def test_budget_presets_set_the_steps_and_exclude_explicit_steps(capsys):
    assert train.parse_args([]).steps == [150, 40, 60]  # no flag: the 20-minute recipe
    assert train.parse_args(["--budget", "60"]).steps == list(train.BUDGETS[60])
    assert train.parse_args(["--steps", "1", "2", "3"]).steps == [1, 2, 3]
    longer = [train.parse_args(["--budget", str(b)]).steps for b in sorted(train.BUDGETS)]
    assert all(a < b for x, y in zip(longer, longer[1:]) for a, b in zip(x, y))  # every stage grows
    with pytest.raises(SystemExit):
        train.parse_args(["--budget", "60", "--steps", "1", "2", "3"])
    assert "--budget or --steps, not both" in capsys.readouterr().err


def test_vector_cache_is_built_under_the_training_autocast_and_kept_on_the_cpu(tmp_path, monkeypatch):
    built = []
    real = train.VectorCache

    def spy(*a, **kw):
        built.append(real(*a, **kw))
        return built[-1]
    monkeypatch.setattr(train, "VectorCache", spy)
    train.main(SMALL + ["--stage", "e2e", "--steps", "0", "0", "1", "--dtype", "bfloat16", "--out", str(tmp_path)])
    (cache,) = built
    assert cache.vectors.device.type == "cpu"
    model = CLaRa.load(tmp_path / "e2e").eval()
    docs = list(cache.index)[:3]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.compress(docs).float()
    fp32 = model.compress(docs).detach()
    torch.testing.assert_close(cache([docs])[0], bf16, rtol=0, atol=0)
    assert not torch.equal(bf16, fp32), "bf16 and fp32 compression agree exactly: the test proves nothing"


def test_a_bf16_backbone_keeps_adapters_and_memory_tokens_in_float32():
    model = CLaRa(*load_backbone("tiny", torch.bfloat16), train.clara_config(train.parse_args(SMALL)))
    assert model.backbone.get_input_embeddings().weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.trainable_state_dict().values()} == {torch.float32}
    params = train.trainable(model, train.TRAINS["instruct"])
    out = model.instruct_loss(["Who?"], [["Varel Oskin was a luthier.", "Mira Holt."]], ["Varel"])
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    grads = [p.grad for p in params if p.grad is not None]  # the last layer's theta_c is never run
    assert len(grads) >= len(params) // 2 and all(g.dtype == torch.float32 for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # (A gets none while B is still 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA generator exists only on a GPU")
def test_resume_saves_and_restores_the_cuda_generator(tmp_path):
    train.main(SMALL + ["--stage", "pretrain", "--steps", "2", "0", "0", "--out", str(tmp_path)])
    state = torch.load(tmp_path / "pretrain" / "trainer_state.pt", weights_only=True)
    assert "cuda_rng" in state


def stage_3_loss_and_grads(model, rows, args, cache):
    params = train.trainable(model, train.TRAINS["e2e"])
    model.zero_grad(set_to_none=True)
    out = train.stage_loss(model, "e2e", rows, args, cache)
    out["loss"].backward()
    return out["loss"].detach(), [None if p.grad is None else p.grad.clone() for p in params]


def test_no_relevance_label_reaches_the_stage_3_loss_or_its_gradients():
    args = train.parse_args(SMALL)
    model = CLaRa(*load_backbone("tiny"), train.clara_config(args))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero adapters, so every path carries a gradient
        for layer in model.lora_layers:
            for B in layer.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g) * 0.05)
    world = corpus.build_world(seed=0, n_train=8, n_heldout=4)
    rows = [dict(r, where=f"row {i}") for i, r in enumerate(corpus.e2e_rows(world, n_candidates=6)[:4])]
    permuted = [dict(r, pos_index=[(r["pos_index"][0] + 1 + i) % 6]) for i, r in enumerate(rows)]
    cache = VectorCache(model, rows, 6)
    loss, grads = stage_3_loss_and_grads(model, rows, args, cache)
    loss_p, grads_p = stage_3_loss_and_grads(model, permuted, args, cache)
    assert torch.equal(loss, loss_p), "pos_index changed the stage-3 loss"
    assert sum(g is not None for g in grads) > 0
    for a, b in zip(grads, grads_p):
        assert (a is None and b is None) or torch.equal(a, b), "pos_index changed a gradient"
    # the labelled reference does read them: the same check must see a difference there
    sup = train.parse_args(SMALL + ["--rank-loss", "supervised"])
    assert not torch.equal(stage_3_loss_and_grads(model, rows, sup, cache)[0],
                           stage_3_loss_and_grads(model, permuted, sup, cache)[0])


def test_supervised_rank_loss_is_low_when_the_positive_scores_highest():
    args = train.parse_args(SMALL)
    model = CLaRa(*load_backbone("tiny"), train.clara_config(args))
    docs = ["Varel Oskin was a luthier in Tessary.", "Mira Holt kept a cat.", "The guild met in spring."]
    rows = [{"question": docs[0], "docs": docs, "pos_index": [0], "where": "r1"}]  # the question is doc 0
    cands = model.compress(docs).detach().unsqueeze(0)  # (1, N, l, D); theta_qr = theta_c (both zero)
    logits = model.score(model.encode_query([docs[0]]), cands) / model.config.temperature  # (1, N)
    right = metrics.supervised_rank_loss(logits, [r["pos_index"] for r in rows], ["r1"])
    wrong = metrics.supervised_rank_loss(logits, [[2]], ["r1"])
    assert right.item() < 0.1 < wrong.item(), (right.item(), wrong.item())
    with pytest.raises(ValueError, match="r1: --rank-loss supervised needs pos_index"):
        metrics.supervised_rank_loss(logits, [[]], ["r1"])
    with pytest.raises(ValueError, match="r1: --rank-loss supervised needs pos_index"):  # as train.py calls it
        train.stage_loss(model, "e2e", [dict(rows[0], pos_index=[], answer="Varel")],
                         train.parse_args(SMALL + ["--rank-loss", "supervised", "--n-candidates", "3"]),
                         cache=lambda doc_lists: cands)


def test_stage_2_keeps_the_positive_and_grows_k():
    args = train.parse_args(["--instruct-k", "5", "--instruct-k-start", "1"])
    assert [train.instruct_k_at(args, s, 40) for s in (0, 8, 16, 39)] == [1, 2, 3, 5]
    rows = [{"question": "Q?", "docs": ["a", "b", "c", "d", "e"], "pos_index": [3], "answer": "x"},
            {"question": "R?", "docs": ["f", "g", "h", "i", "j"], "pos_index": [0], "answer": "y"}]
    seen = []

    class Spy:  # records the passages stage_loss hands to the instruct loss
        def instruct_loss(self, questions, docs, answers, donors=None, as_text=False):
            seen.append(docs)
    for k in (1, 3):
        train.stage_loss(Spy(), "instruct", rows, args, k=k)
    assert seen[0] == [["d"], ["f"]], "k = 1 must read the gold passage, not the first one"
    assert seen[1] == [["a", "b", "d"], ["f", "g", "h"]], "the gold keeps its slot among the others"


def test_flop_counter_counts_real_positions_and_backward():
    model = CLaRa(*load_backbone("tiny"), train.clara_config(train.parse_args(SMALL)))
    counter = runtime.FlopCounter(model)
    W = sum(m.base.weight.numel() for m in model.backbone.base_model.layers.modules()
            if isinstance(m, LoRALinear))
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # 7 real positions, 1 padding
    with torch.no_grad():
        model.backbone.base_model(input_ids=ids, attention_mask=mask)
    assert counter.take() == (7, 2 * W * 7), "forward only: 2 FLOPs per weight per real position"
    model.backbone.base_model(input_ids=ids, attention_mask=mask)
    assert counter.take() == (7, 4 * W * 7), "a pass that needs gradients counts the backward too"


def test_flop_counter_counts_the_lm_head_where_logits_are_computed():
    """The tied LM head (D x V) costs 2 D V FLOPs per position whose logits are computed: all
    positions of a full forward (padding too), the target positions alone in generator_loss."""
    model = CLaRa(*load_backbone("tiny"), train.clara_config(train.parse_args(SMALL)))
    head = model.backbone.get_output_embeddings()
    assert head.weight is model.backbone.get_input_embeddings().weight, "the tiny backbone ties its head"
    counter = runtime.FlopCounter(model)
    W = sum(m.base.weight.numel() for m in model.backbone.base_model.layers.modules()
            if isinstance(m, LoRALinear))
    per_logit = 2 * head.in_features * head.out_features  # 2 D V
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # 7 real positions, 1 padding
    with torch.no_grad():
        model.backbone(input_ids=ids, attention_mask=mask)
    assert counter.take() == (7, 2 * W * 7 + per_logit * 8), "blocks on 7 real positions, logits on all 8"
    targets = len(model.tokenizer("Varel" + model._chat["end"], add_special_tokens=False)["input_ids"])
    model.generator_loss(["Who?"], None, ["Varel"])
    P, flops = counter.take()
    assert flops == 4 * W * P + 2 * per_logit * targets, "generator_loss computes logits on its targets only"


def test_autocast_is_a_fresh_context_per_use_so_nesting_leaves_it_off():
    """One torch.autocast object entered inside itself (the old policy: pick_device handed out one
    object for every `with`) saves "on" as the state to restore, so bf16 stays on after the outer
    block; pick_device's autocast() makes a new context per use, which nests cleanly."""
    shared = torch.autocast("cpu", dtype=torch.bfloat16)
    try:
        with shared:
            with shared:
                pass
        assert torch.is_autocast_enabled("cpu"), "the hazard this policy avoids is gone from torch"
    finally:
        torch.set_autocast_enabled("cpu", False)
    device, autocast, _ = runtime.pick_device("bfloat16")
    with autocast():
        with autocast():
            assert torch.is_autocast_enabled(device.type)
        assert torch.is_autocast_enabled(device.type), "the inner block switched the outer one off"
    assert not torch.is_autocast_enabled(device.type), "bf16 autocast outlived its block"


def test_one_dtype_policy_float32_gives_float32_weights_and_auto_runs_as_trained():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # no GPU needed: a pure function
    assert runtime.backbone_dtype(cuda, "float32") == torch.float32, "--dtype float32 on CUDA got bf16 weights"
    assert runtime.backbone_dtype(cuda, "bfloat16") == torch.bfloat16
    assert runtime.backbone_dtype(cpu, "bfloat16") == torch.float32, "a CPU's autocast casts fp32 weights"
    assert runtime.pick_device("auto", "cpu", trained="bfloat16")[2] == "bfloat16", "auto: as trained"
    assert runtime.pick_device("float32", "cpu", trained="bfloat16")[2] == "float32", "--dtype overrides"


def test_the_shuffled_control_of_the_diagnostics_never_reads_a_rows_own_passage():
    """Rows 0 and 1 are about the same passage (as SCP rows often are): a roll by one would give
    row 1 row 0's vectors, i.e. its own passage; the logged control must take the next other one."""
    args = train.parse_args(SMALL)
    model = CLaRa(*load_backbone("tiny"), train.clara_config(args)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero adapters, so the vectors differ between passages
        for layer in model.lora_layers:
            for B in layer.lora_B.values():
                B.normal_(0, 0.2, generator=g)
    docs = ["Varel Oskin was a luthier.", "Varel Oskin was a luthier.", "Mira Holt kept a cat."]
    targets = ["Varel Oskin, luthier", "born in Tessary", "Mira Holt, painter"]
    rows = [{"doc": d, "kind": "paraphrase", "questions": [], "answers": [t]} for d, t in zip(docs, targets)]
    with torch.no_grad():
        shuffled = train.stage_loss(model, "pretrain", rows, args, shuffle=True)["ce"]
        M = model.compress(docs)  # (3, l, D)
        instr = [model.config.paraphrase_instruction] * 3
        torch.testing.assert_close(shuffled, model.generator_loss(instr, M[[2, 2, 0]].unsqueeze(1), targets))
        rolled = model.generator_loss(instr, M.roll(1, dims=0).unsqueeze(1), targets)
    assert shuffled.item() != rolled.item(), "the control still rolls the batch by one"


def test_a_stage_of_zero_steps_keeps_the_weights_it_started_from(tmp_path):
    """--steps 2 0 1 once crashed after stage 1 trained: DONE was written into a directory that
    only a save creates. The 0-step stage's checkpoint is the one it started from."""
    train.main(SMALL + ["--steps", "2", "0", "1", "--out", str(tmp_path)])
    for stage in ("pretrain", "instruct", "e2e"):
        assert (tmp_path / stage / "DONE").exists(), stage
    a, b = load_file(tmp_path / "pretrain" / "adapters.safetensors"), load_file(tmp_path / "instruct" / "adapters.safetensors")
    assert all(torch.equal(a[n], b[n]) for n in a), "a 0-step stage changed the weights"
