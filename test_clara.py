"""Tests for clara.py: each test states one claim about the method's mechanics.

Offline, CPU, float32, on the "tiny" backbone (a seeded random 2-layer Llama with the SmolLM2
tokenizer). One test marked `slow` loads the real packaged SmolLM2-135M once.
"""

import copy
import doctest
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import clara
import runtime
from backbones import last_logits, past
from clara import CLaRa, CLaRaConfig, differentiable_topk, load_backbone

DOCS = ["Varel Oskin was born in Tessary in 1874 and worked as a luthier.",
        "Mira Holt is a painter from Quend; she joined the Holmvar Guild in 1921 and keeps a cat.",
        "The Holmvar Guild was founded in Tessary."]


def tiny_clara(**overrides) -> CLaRa:
    """A fresh CLaRa on a fresh tiny backbone (CLaRa wraps the backbone's linears in place)."""
    torch.manual_seed(0)
    settings = dict(backbone="tiny", doc_max_len=32, compression_rate=4, top_k=2, lora_dropout=0.0)
    cfg = CLaRaConfig(**{**settings, **overrides})
    return CLaRa(*load_backbone("tiny"), cfg)


def randomize_adapters(model: CLaRa, scale: float = 0.05):
    """Give every adapter non-zero B so adapters actually change outputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.lora_layers:
            for B in layer.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g) * scale)


# --- import and backbone ---------------------------------------------------------------------

def test_import_is_silent_and_loads_no_model_library():
    code = "import sys, clara; print(sorted(m for m in ('transformers', 'safetensors') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"import clara pulled in {out.stdout}"
    assert out.stderr == "", f"import clara printed to stderr: {out.stderr!r}"


def test_tiny_backbone_is_deterministic():
    a, _ = load_backbone("tiny")
    torch.manual_seed(123)  # the global RNG must not matter
    b, _ = load_backbone("tiny")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), f"tiny backbone differs between calls at {name}"


def test_unknown_backbone_error_says_what_to_install():
    with pytest.raises(RuntimeError, match="smollm2-135m"):
        load_backbone("no-such-local-dir-xyz")


# --- shapes and the memory-token count -------------------------------------------------------

def test_memory_token_count_and_shapes():
    model = tiny_clara()
    l, D = 32 // 4, model.backbone.config.hidden_size
    assert model.config.n_memory == l
    assert model.memory_tokens.shape == (l, D)
    assert len({tuple(v.tolist()) for v in model.memory_tokens}) == l, "memory tokens must be distinct"
    M = model.compress(DOCS)
    assert M.shape == (3, l, D)
    q = model.encode_query(["Where was Varel Oskin born?", "Who keeps a cat?"])
    assert q.shape == (2, l, D)
    s = model.score(q, M.unsqueeze(0).expand(2, -1, -1, -1))
    assert s.shape == (2, 3)
    ref = F.cosine_similarity(q[1].flatten(), M[2].flatten(), dim=0)
    torch.testing.assert_close(s[1, 2], ref, msg="score must be the cosine of flattened l*D vectors")


def test_compression_does_not_depend_on_batch_padding():
    model = tiny_clara()
    alone = model.compress([DOCS[2]])  # shortest doc, no padding
    batched = model.compress(DOCS)  # left-padded next to longer docs
    torch.testing.assert_close(batched[2], alone[0], atol=1e-5, rtol=1e-4,
                               msg="a padded document must compress exactly as it does alone")


def test_memory_vectors_are_rescaled_to_embedding_norm():
    model = tiny_clara(memory_norm="rescale")
    norms = model.compress(DOCS).norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, model.embed_norm.item()))
    raw = tiny_clara(memory_norm="none").compress(DOCS).norm(dim=-1)
    assert not torch.allclose(raw, norms), "memory_norm='none' must leave the norms as they are"


def test_standardize_maps_calibration_states_to_embedding_statistics():
    """memory_norm="standardize": on CALIBRATION_TEXT itself, every dimension of the mapped states
    has the mean and std of the input embeddings (the definition of the map)."""
    model = tiny_clara()
    assert model.config.memory_norm == "standardize"
    ids = model.tokenizer(clara.CALIBRATION_TEXT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        h = model.backbone.base_model(input_ids=ids, output_hidden_states=True).hidden_states[-2][0, 1:]
    mapped = h * model.memory_scale + model.memory_shift  # (T - 1, D)
    emb = model.backbone.get_input_embeddings().weight
    torch.testing.assert_close(mapped.mean(0), emb.mean(0), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(mapped.std(0), emb.std(0), atol=1e-4, rtol=1e-3)
    raw = tiny_clara(memory_norm="none")
    torch.testing.assert_close(model.compress(DOCS), raw.compress(DOCS) * model.memory_scale + model.memory_shift)
    with pytest.raises(ValueError, match="memory_norm"):
        clara.CLaRaConfig(memory_norm="whiten")


def test_mse_term_matches_its_definition():
    model = tiny_clara()
    _, mse = model.compress(DOCS[:2], with_mse=True)
    l = model.config.n_memory
    doc_means, mem_means = [], []
    for doc in DOCS[:2]:  # reference: each document alone, no padding, by hand
        ids = torch.tensor(model.tokenizer(doc, add_special_tokens=False)["input_ids"][:32])
        x = torch.cat([model.backbone.get_input_embeddings()(ids), model.memory_tokens])[None]
        with model.adapter("compressor"):
            h = model.backbone.base_model(inputs_embeds=x, output_hidden_states=True).hidden_states[-2][0]
        h = h * model.memory_scale + model.memory_shift  # the space the generator reads
        doc_means.append(h[:-l].mean(0))
        mem_means.append(h[-l:].mean(0))
    ref = ((torch.stack(doc_means) - torch.stack(mem_means)) ** 2).mean()
    torch.testing.assert_close(mse, ref, atol=1e-6, rtol=1e-4)



# --- the mean-pool compressor (CLaRaConfig.compressor = "mean-pool", arXiv 2510.20797) --------

def test_window_means_average_each_window_of_real_tokens_and_never_an_empty_one():
    states = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2)  # (n=2, T=7, D=2)
    states[1, :4] = 1e6  # row 1 is left-padded, as _encode pads: its padding must reach no mean
    mask = torch.tensor([[1] * 7, [0, 0, 0, 0, 1, 1, 1]])
    got = clara.window_means(states, mask, 3)  # (2, 3, 2)
    r0 = states[0]  # 7 real tokens, l = 3: floor(7j/3) -> windows 0..1, 2..3, 4..6
    torch.testing.assert_close(got[0], torch.stack([r0[0:2].mean(0), r0[2:4].mean(0), r0[4:7].mean(0)]))
    torch.testing.assert_close(got[1], states[1, 4:7])  # 3 real tokens, l = 3: one token each
    short = clara.window_means(states, mask, 5)[1]  # 3 real tokens < l = 5: token floor(3j/5) alone
    torch.testing.assert_close(short, states[1, [4, 4, 5, 5, 6]])
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(clara.window_means, globs={"torch": torch, "window_means": clara.window_means}):
        runner.run(test)
    assert runner.failures == 0, "window_means' docstring example is wrong"


def test_mean_pool_vectors_are_window_means_of_the_passage_alone_whatever_its_batch():
    model = tiny_clara(compressor="mean-pool")
    randomize_adapters(model)
    model.eval()
    l = model.config.n_memory
    ids = model._token_ids([DOCS[2]], 32, "docs")[0]  # the shortest passage, T >= l tokens
    T = len(ids)
    assert T >= l
    with model.adapter("compressor"):  # reference: the passage alone, no memory tokens appended
        h = model.backbone.base_model(inputs_embeds=model._embed_ids(ids)[None],
                                      output_hidden_states=True).hidden_states[-2][0]  # (T, D)
    ref = torch.stack([h[j * T // l:(j + 1) * T // l].mean(0) for j in range(l)])  # (l, D)
    alone = model.compress([DOCS[2]])[0]
    torch.testing.assert_close(alone, ref * model.memory_scale + model.memory_shift, atol=1e-5, rtol=1e-4)
    batched = model.compress(DOCS)  # left-padded beside longer passages
    torch.testing.assert_close(batched[2], alone, atol=1e-5, rtol=1e-4,
                               msg="padding leaked into a mean-pooled passage's vectors")
    q = model.encode_query(["Who?", "Where was Varel Oskin born, and in which year?"])  # "Who?" < l tokens
    assert q.shape == (2, l, h.shape[-1]) and torch.isfinite(q).all()


def test_mean_pool_trains_theta_c_and_leaves_the_memory_tokens_unused():
    model = tiny_clara(compressor="mean-pool")
    randomize_adapters(model)
    out = model.pretrain_loss(DOCS[:2], ["Question: Who?\nAnswer: Varel", "Mira paints."], ["qa", "paraphrase"])
    assert out["mse"].item() == 0.0, "mean-pool has no memory states to align: the MSE term is off"
    out["loss"].backward()
    grads = [layer.lora_B["compressor"].grad for layer in model.lora_layers]  # None past memory_layer
    grad = sum(float(g.abs().sum()) for g in grads if g is not None)
    assert grad > 0, "no gradient reached theta_c through the window means"
    assert model.memory_tokens.grad is None, "mean-pool must not read the memory tokens"


def test_mean_pool_pretraining_on_one_batch_lowers_the_loss():
    model = tiny_clara(compressor="mean-pool")
    opt = torch.optim.Adam(list(model.trainable_state_dict().values()), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model.pretrain_loss(DOCS[:2], ["Question: Who?\nAnswer: Varel", "Mira paints."],
                                  ["qa", "paraphrase"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0], f"loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_checkpoints_keep_the_compressor_and_older_ones_load_as_memory_tokens(tmp_path):
    assert "compressor" in clara.COMPRESSOR_FIELDS, "the choice changes the vectors (ask.py's index)"
    model = tiny_clara(compressor="mean-pool")
    randomize_adapters(model)
    model.save(tmp_path / "mean_pool")
    loaded = CLaRa.load(tmp_path / "mean_pool")
    assert loaded.config.compressor == "mean-pool"
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded.compress(DOCS), model.compress(DOCS), rtol=0, atol=0)
    old = tiny_clara()
    old.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["config"]["compressor"]  # as written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    reloaded = CLaRa.load(tmp_path / "old")
    assert reloaded.config.compressor == "memory-tokens"
    old.eval(), reloaded.eval()
    torch.testing.assert_close(reloaded.compress(DOCS), old.compress(DOCS), rtol=0, atol=0)
    with pytest.raises(ValueError, match="compressor must be"):
        CLaRaConfig(compressor="mean")

# --- the straight-through top-k --------------------------------------------------------------

def reference_soft_rows(scores, picks, tau):
    """Hand-built P: slot j is a softmax over the documents not picked by slots < j."""
    B, N = scores.shape
    rows = torch.zeros(B, picks.shape[1], N)
    for b in range(B):
        for j in range(picks.shape[1]):
            rest = [n for n in range(N) if n not in picks[b, :j].tolist()]
            e = torch.exp((scores[b, rest] - scores[b, rest].max()) / tau)
            rows[b, j, rest] = e / e.sum()
    return rows


def test_topk_forward_is_the_exact_hard_topk():
    scores = torch.randn(4, 7)
    W, idx = differentiable_topk(scores, k=3, temperature=0.5)
    assert torch.equal(idx, scores.topk(3, dim=-1).indices), "picks must be the top-3 in order"
    assert torch.equal(W, F.one_hot(idx, 7).float()), "forward weights must be exact one-hot rows"


def test_rerank_selects_exactly_the_picked_vectors_under_bf16_autocast():
    """The forward of the straight-through top-k promises exactly M[idx]; under CPU bf16 autocast
    an einsum would round M to bf16 on the way."""
    model = tiny_clara().eval()
    torch.manual_seed(3)
    M = torch.randn(2, 4, model.config.n_memory, model.memory_tokens.shape[1])  # (B, N, l, D) float32
    assert not torch.equal(M, M.bfloat16().float()), "M must hold values bf16 cannot represent"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        selected, idx, _ = model.rerank(["Who?", "Where?"], M, k=2)
    assert selected.dtype == torch.float32
    assert torch.equal(selected, M[torch.arange(2)[:, None], idx]), "selection rounded under autocast"


def test_topk_gradient_is_the_soft_rows_gradient():
    torch.manual_seed(0)
    scores = torch.randn(3, 6, requires_grad=True)
    G = torch.randn(3, 2, 6)  # an arbitrary upstream gradient
    W, idx = differentiable_topk(scores, k=2, temperature=0.7)
    (W * G).sum().backward()
    ref_scores = scores.detach().clone().requires_grad_(True)
    (reference_soft_rows(ref_scores, idx, 0.7) * G).sum().backward()
    assert scores.grad.abs().sum() > 0
    torch.testing.assert_close(scores.grad, ref_scores.grad, msg="backward must be the soft rows'")


def test_topk_masked_slots_put_zero_mass_on_picked_documents():
    scores = torch.tensor([[2.0, 1.99, 1.98, -3.0]])  # close scores: a weak mask would leak
    P, idx = differentiable_topk(scores, k=3, temperature=0.02, hard=False)
    for j in range(1, 3):
        assert P[0, j, idx[0, :j]].sum().item() == 0.0, f"slot {j} gives mass to a picked document"
    torch.testing.assert_close(P.sum(-1), torch.ones(1, 3))


def test_topk_gumbel_gives_distinct_valid_picks_and_explores():
    torch.manual_seed(0)
    scores = torch.zeros(200, 5)  # all ties: only the noise decides
    _, idx = differentiable_topk(scores, k=3, temperature=1.0, gumbel=True)
    assert all(len(set(r)) == 3 for r in idx.tolist()), "picks within a row must be distinct"
    assert len(set(idx[:, 0].tolist())) == 5, "Gumbel noise must vary the first pick"


def test_topk_rejects_k_larger_than_n():
    with pytest.raises(ValueError, match="k=4"):
        differentiable_topk(torch.randn(2, 3), k=4, temperature=0.02)


# --- LoRA adapters ---------------------------------------------------------------------------

def test_zero_init_adapters_leave_logits_unchanged():
    plain, _ = load_backbone("tiny")
    ids = torch.tensor([[5, 17, 300, 42, 7]])
    expected = plain(input_ids=ids).logits
    model = tiny_clara()
    for name in (None, *clara.ADAPTERS):
        with model.adapter(name):
            torch.testing.assert_close(model.backbone(input_ids=ids).logits, expected,
                                       msg=f"fresh adapter {name} changed the logits")


def test_a_step_on_one_adapter_leaves_the_others_unchanged():
    model = tiny_clara()
    randomize_adapters(model)
    ids = torch.tensor([[5, 17, 300, 42, 7]])

    def outputs():
        with torch.no_grad():
            res = {}
            for name in clara.ADAPTERS:
                with model.adapter(name):
                    res[name] = model.backbone(input_ids=ids).logits.clone()
            return res

    before = outputs()
    params = [layer.lora_B["compressor"] for layer in model.lora_layers] + \
             [layer.lora_A["compressor"] for layer in model.lora_layers]
    opt = torch.optim.SGD(params, lr=0.1)
    model.compress(DOCS).pow(2).sum().backward()
    opt.step()
    after = outputs()
    assert not torch.allclose(before["compressor"], after["compressor"]), "the step did nothing"
    for name in ("query_reasoner", "generator"):
        assert torch.equal(before[name], after[name]), f"a compressor step changed {name}"
    assert model.lora_layers[0].active is None, "the adapter context must restore 'none'"


# --- the generator ---------------------------------------------------------------------------

def test_generator_loss_equals_hf_labels_loss():
    """Our answer-only CE equals the HF model's `labels=` loss on the same tokens, prompt masked,
    with a batch of two prompts of different lengths and one document slot each (the slot holds
    token embeddings, so the same sequence can be written as plain token ids)."""
    model = tiny_clara(compression_rate=8)  # l = 4
    randomize_adapters(model)
    tok, chat, l = model.tokenizer, model._chat, model.config.n_memory
    questions, answers = ["Where was Varel Oskin born?", "When?"], ["Tessary", "In 1921, I think"]
    doc_ids = [[1000, 2000, 3000, 4000], [11, 22, 33, 44]]
    vecs = model.backbone.get_input_embeddings()(torch.tensor(doc_ids)).unsqueeze(1)  # (2, 1, l, D)
    ours = model.generator_loss(questions, vecs, answers)
    rows, labels = [], []
    for q, a, d in zip(questions, answers, doc_ids):
        prompt = chat["before_ids"] + d + chat["sep_ids"] + \
            tok(chat["middle"] + q + chat["after"], add_special_tokens=False)["input_ids"]
        target = tok(a + chat["end"], add_special_tokens=False)["input_ids"]
        rows.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    T = max(map(len, rows))
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (T - len(r)) for r in labels])
    mask = (lab != -100) | (torch.arange(T)[None] < torch.tensor([len(r) for r in rows])[:, None])
    with model.adapter("generator"):
        ref = model.backbone(input_ids=ids, attention_mask=mask.long(), labels=lab).loss
    assert l == 4 and vecs.shape[2] == l
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_generator_loss_reads_a_text_slot_as_the_passages_token_embeddings():
    """A text slot (the same-budget text-RAG reference) is the passage's first L tokens, embedded:
    its loss equals the loss with those embeddings given as a vector slot (which the test above ties
    to the HF labels= loss), row by row; and instruct_loss(as_text=True) is that loss, no MSE."""
    model = tiny_clara(doc_max_len=8)
    randomize_adapters(model)
    question, answer = "Where was Varel Oskin born?", "Tessary"
    passage = "Varel Oskin was born in Tessary in 1921 and later moved to the coast to paint."
    ids = model._token_ids([passage], 8, "docs")[0]
    vecs = model._embed_ids(ids)[None, None]  # (1, 1, 8, D): one slot of the 8 token embeddings
    text = model.generator_loss([question], [[passage]], [answer])
    assert len(ids) == 8 and torch.equal(text, model.generator_loss([question], vecs, [answer]))
    out = model.instruct_loss([question], [[passage]], [answer], as_text=True)
    assert torch.equal(out["loss"], text) and "mse" not in out


def test_prefill_computes_the_lm_head_at_the_last_position_only():
    """last_logits makes the prefill's LM head read one position (over all of them it adds about a
    quarter to a SmolLM2-135M prefill), with the logits the full head gives there; a model without
    the keyword gets {}."""
    model = tiny_clara()
    x = model.prompt_embeds("Where was Varel Oskin born?", [model.compress(DOCS[:1])[0]])[None]  # (1, T, D)
    with torch.no_grad():
        full = model.backbone(inputs_embeds=x).logits  # (1, T, V)
        last = model.backbone(inputs_embeds=x, **last_logits(model.backbone)).logits
    assert full.shape[1] > 1 and last.shape == (1, 1, full.shape[-1])
    torch.testing.assert_close(last[:, -1], full[:, -1])
    assert last_logits(nn.Linear(2, 2)) == {}


def test_greedy_generation_matches_step_by_step_argmax():
    """The KV-cached, left-padded batch decoder equals a plain argmax loop on each prompt alone."""
    model = tiny_clara()
    randomize_adapters(model, scale=0.5)
    questions = ["Where was Varel Oskin born?", "Who?"]
    M = model.compress(DOCS[:2]).detach().unsqueeze(1)  # (2, 1, l, D)
    batched = model.generate(questions, M, max_new_tokens=6)
    for b, q in enumerate(questions):
        x = model.prompt_embeds(q, [M[b, 0]]).unsqueeze(0)
        out = []
        with torch.no_grad(), model.adapter("generator"):
            for _ in range(6):
                nxt = model.backbone(inputs_embeds=x).logits[0, -1].argmax()
                if nxt.item() in model._chat["stop"]:
                    break
                out.append(nxt.item())
                x = torch.cat([x, model.backbone.get_input_embeddings()(nxt)[None, None]], 1)
        assert batched[b] == model.tokenizer.decode(out, skip_special_tokens=True).strip()


def test_kv_cache_is_handed_on_under_this_transformers_versions_name():
    """backbones.past passes the KV cache with the keyword this transformers takes (`cache` from
    5.24, whose `past_key_values` is deprecated): a cached step equals a full forward, unwarned."""
    model, _ = load_backbone("tiny")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model(input_ids=ids[:, :3], use_cache=True)
        step = model(input_ids=ids[:, 3:], use_cache=True, **past(model, out)).logits[0, -1]
        full = model(input_ids=ids).logits[0, -1]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
    assert not [w for w in caught if "past_key_values" in str(w.message)]


# --- stage losses ----------------------------------------------------------------------------

def test_e2e_gradients_reach_query_reasoner_and_generator_only():
    model = tiny_clara()
    randomize_adapters(model)
    model.init_query_reasoner()
    out = model.e2e_loss(["Where was Varel Oskin born?", "Who keeps a cat?"],
                         [DOCS, DOCS[::-1]], ["Tessary", "Mira Holt"])
    assert out["topk_idx"].shape == (2, 2)
    out["loss"].backward()

    def grad_norm(adapter):
        return sum(float(layer.lora_B[adapter].grad.abs().sum()) if layer.lora_B[adapter].grad
                   is not None else 0.0 for layer in model.lora_layers)

    assert grad_norm("query_reasoner") > 0, "no gradient reached the query reasoner through top-k"
    assert grad_norm("generator") > 0
    assert grad_norm("compressor") == 0, "the compressor is frozen in stage 3"
    assert model.memory_tokens.grad is None, "MEM embeddings belong to the frozen compressor"
    frozen = [n for n, p in model.backbone.named_parameters() if "lora_" not in n and p.grad is not None]
    assert not frozen, f"frozen backbone weights got gradients: {frozen[:3]}"


def test_e2e_accepts_precomputed_vectors_and_matches_passages():
    model = tiny_clara()
    randomize_adapters(model)
    model.eval()
    q, a = ["Where was Varel Oskin born?"], ["Tessary"]
    from_text = model.e2e_loss(q, [DOCS], a)
    cached = model.compress(DOCS).detach().unsqueeze(0)  # (1, N, l, D)
    from_vecs = model.e2e_loss(q, cached, a)
    torch.testing.assert_close(from_text["loss"], from_vecs["loss"])
    assert torch.equal(from_text["topk_idx"], from_vecs["topk_idx"])


@pytest.mark.parametrize("stage", ["pretrain", "instruct", "e2e"])
def test_overfitting_one_batch_drives_each_stage_loss_down(stage):
    model = tiny_clara()
    model.init_query_reasoner()
    params = [p for n, p in model.trainable_state_dict().items()]
    opt = torch.optim.Adam(params, lr=3e-3)
    batches = {
        "pretrain": lambda: model.pretrain_loss(DOCS[:2], ["Question: Who?\nAnswer: Varel", "Mira paints."],
                                                ["qa", "paraphrase"]),
        "instruct": lambda: model.instruct_loss(["Who?", "Where?"], [DOCS[:2], DOCS[1:]], ["Varel", "Quend"]),
        "e2e": lambda: model.e2e_loss(["Who?", "Where?"], [DOCS, DOCS], ["Varel", "Quend"]),
    }
    losses = []
    for _ in range(25):
        out = batches[stage]()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0], f"{stage} loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_information_crosses_the_compressor_when_overfitting_four_passages():
    """The whole path compress -> splice -> generate carries the passage: after overfitting four
    passages, the loss with each passage's own vectors is far below the loss with another's."""
    model = tiny_clara()
    docs = ["Varel Oskin plays the cello.", "Mira Holt keeps a cat.", "Tessary is a city.",
            "The guild met in 1921."]
    opt = torch.optim.Adam(list(model.trainable_state_dict().values()), lr=3e-3)
    for _ in range(30):
        out = model.pretrain_loss(docs, docs, ["paraphrase"] * 4)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        own = model.pretrain_loss(docs, docs, ["paraphrase"] * 4)["ce"].item()
        shuffled = model.pretrain_loss(docs, docs, ["paraphrase"] * 4, donors=[1, 2, 3, 0])["ce"].item()
    assert shuffled - own > 1.0, f"no own-vs-shuffled gap: own {own:.3f}, shuffled {shuffled:.3f}"


def test_donors_give_each_row_another_rows_vectors():
    """The shuffled control inside the losses: row b reads the vectors of row donors[b] (the donor
    rule itself is metrics.shuffle_donors, tested in test_metrics.py and through train.stage_loss)."""
    model = tiny_clara()
    randomize_adapters(model, scale=0.2)
    model.eval()
    args = (DOCS[:2], ["Varel Oskin, luthier", "Mira Holt, painter"], ["paraphrase"] * 2)
    own, shuffled = model.pretrain_loss(*args), model.pretrain_loss(*args, donors=[1, 0])
    M = model.compress(DOCS[:2]).detach()
    instr = [model.config.paraphrase_instruction] * 2
    ref = model.generator_loss(instr, M.flip(0).unsqueeze(1), args[1])  # B = 2: donors [1, 0] == flip
    torch.testing.assert_close(shuffled["ce"], ref)
    assert own["ce"] != shuffled["ce"]
    # instruct rows: row b reads all k passages' vectors of row donors[b]
    docs = [[DOCS[0], DOCS[2]], [DOCS[1], DOCS[0]], [DOCS[2], DOCS[1]]]
    qs, answers = ["Who plays?", "Who paints?", "Where?"], ["Varel", "Mira", "Tessary"]
    got = model.instruct_loss(qs, docs, answers, donors=[2, 0, 1])["ce"]
    M = model.compress([d for row in docs for d in row]).detach().view(3, 2, *M.shape[1:])  # (B, k, l, D)
    torch.testing.assert_close(got, model.generator_loss(qs, M[[2, 0, 1]], answers))


def test_vector_cache_names_the_rows_whose_passages_failed_to_compress():
    model = tiny_clara()
    rows = [{"docs": [DOCS[0], DOCS[1]], "where": "f.jsonl:3"}, {"docs": [DOCS[2]], "where": "f.jsonl:4"}]

    def out_of_memory(docs, with_mse=False):
        if DOCS[2] in docs:
            raise RuntimeError("out of memory")
        return torch.zeros(len(docs), model.config.n_memory, model.memory_tokens.shape[1])
    model.compress = out_of_memory
    with pytest.raises(RuntimeError, match=r"compressing candidates of f\.jsonl:4: out of memory"):
        runtime.VectorCache(model, rows, batch_size=1)
    cache = runtime.VectorCache(model, rows[:1], batch_size=1)
    assert cache([[DOCS[1], DOCS[0]]]).shape == (1, 2, model.config.n_memory, model.memory_tokens.shape[1])
    assert cache.vectors.device.type == "cpu"


def test_compressor_stops_at_memory_layer_and_matches_the_full_forward():
    model = tiny_clara(memory_layer=-2)
    randomize_adapters(model)
    model.eval()
    base, calls = model.backbone.base_model, []
    hooks = [layer.register_forward_hook(lambda *a: calls.append(1)) for layer in base.layers]
    M = model.compress(DOCS)  # (N, l, D)
    for h in hooks:
        h.remove()
    assert len(calls) == len(base.layers) - 1, f"ran {len(calls)} of {len(base.layers)} layers"
    assert len(base.layers) == 2 and not isinstance(base.norm, torch.nn.Identity), "layers not restored"
    # the same states as reading hidden_states[-2] of a full forward
    ids = model._token_ids(DOCS, model.config.doc_max_len, "docs")
    for i, x in enumerate(ids):
        emb = torch.cat([model._embed_ids(x), model.memory_tokens])[None]  # (1, L + l, D)
        with model.adapter("compressor"):
            hs = base(inputs_embeds=emb, output_hidden_states=True).hidden_states[-2]
        ref = (hs * model.memory_scale + model.memory_shift)[0, -model.config.n_memory:]
        torch.testing.assert_close(M[i], ref, rtol=1e-5, atol=1e-5)


# --- checkpoints -----------------------------------------------------------------------------

def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_clara()
    randomize_adapters(model)
    with torch.no_grad():
        model.memory_tokens.add_(0.01)
    model.save(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["adapters.safetensors", "config.json"]
    loaded = CLaRa.load(tmp_path / "ckpt")  # rebuilds the tiny backbone from config.backbone
    for name, p in model.trainable_state_dict().items():
        assert torch.equal(p, loaded.trainable_state_dict()[name]), f"{name} changed on reload"
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded.compress(DOCS), model.compress(DOCS), rtol=0, atol=0)
    args = (["Who?"], model.compress(DOCS[:2]).unsqueeze(0).detach(), ["Varel"])
    assert loaded.generator_loss(*args).item() == model.generator_loss(*args).item()


def test_load_rejects_a_checkpoint_from_another_configuration(tmp_path):
    tiny_clara().save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    meta["config"]["compression_rate"] = 8  # l = 4 instead of 8: memory tokens no longer fit
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="memory_tokens has shape"):
        CLaRa.load(tmp_path / "ckpt")
    meta["config"]["compression_rate"] = 4
    meta["backbone"]["hidden_size"] = 576
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="config.json: checkpoint was trained on backbone"):
        CLaRa.load(tmp_path / "ckpt")
    meta["backbone"]["hidden_size"] = 64
    meta["config"]["backbone"] = None  # written by hand: no backbone to rebuild
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="config.json: the checkpoint does not name its backbone"):
        CLaRa.load(tmp_path / "ckpt")
    meta["config"]["backbone"] = "tiny"
    meta["config"]["memory_tokens_per_doc"] = 8  # a field this version does not know
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config.json: unknown config fields \['memory_tokens_per_doc'\]"):
        CLaRa.load(tmp_path / "ckpt")


def test_checkpoint_names_the_backbone_it_was_built_on(tmp_path):
    model = CLaRa(*load_backbone("tiny"), CLaRaConfig(doc_max_len=32, compression_rate=4))
    assert model.config.backbone == "tiny"
    model.save(tmp_path / "ckpt")
    loaded = CLaRa.load(tmp_path / "ckpt")  # would rebuild SmolLM2 if the default name were saved
    assert loaded.config.backbone == "tiny"
    with pytest.raises(ValueError, match="loaded as 'tiny'"):
        CLaRa(*load_backbone("tiny"), CLaRaConfig(backbone="smollm2-135m", doc_max_len=32, compression_rate=4))


def test_a_backbone_is_wrapped_only_once():
    backbone, tokenizer = load_backbone("tiny")
    CLaRa(backbone, tokenizer, CLaRaConfig(doc_max_len=32, compression_rate=4))
    with pytest.raises(ValueError, match="already carries CLaRa's LoRA adapters"):
        CLaRa(backbone, tokenizer, CLaRaConfig(doc_max_len=32, compression_rate=4))


GEMMA_STYLE = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
               "supported') }}{% endif %}{% for m in messages %}<start_of_turn>"
               "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}"
               "<start_of_turn>model\n{% endif %}")
QWEN3_STYLE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}"
               "<think>\n\n</think>\n\n{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
               "not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


@pytest.mark.parametrize("template", [GEMMA_STYLE, QWEN3_STYLE], ids=["no-system-role", "thinking-switch"])
def test_chat_templates_without_system_role_or_with_thinking_build(template):
    backbone, tokenizer = load_backbone("tiny")
    tokenizer = copy.deepcopy(tokenizer)  # the tiny tokenizer is cached and shared
    tokenizer.chat_template = template
    model = CLaRa(backbone, tokenizer, CLaRaConfig(doc_max_len=32, compression_rate=4))
    prompt = tokenizer.decode(model._chat["before_ids"]) + model._chat["middle"] + model._chat["after"]
    assert model.config.system_prompt in prompt, "the system text was dropped"
    assert "<think>" not in prompt.replace("<think>\n\n</think>\n\n", ""), "a thinking block is open"
    loss = model.generator_loss(["Who?"], model.compress(DOCS[:2]).unsqueeze(0), ["Varel"])
    assert torch.isfinite(loss)


# --- bad input -------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    model = tiny_clara()
    with pytest.raises(ValueError, match=r"docs\[1\] is empty"):
        model.compress(["fine", "   "])
    with pytest.raises(ValueError, match="only N = 3 candidates"):
        model.rerank(["q"], [DOCS], k=4)
    with pytest.raises(ValueError, match="2 questions but documents for 1"):
        model.instruct_loss(["q1", "q2"], [DOCS[:2]], ["a", "b"])
    with pytest.raises(ValueError, match="2 questions but 1 targets"):
        model.instruct_loss(["q1", "q2"], [DOCS[:2], DOCS[:2]], ["a"])
    with pytest.raises(ValueError, match="same number"):
        model.instruct_loss(["q1", "q2"], [DOCS[:2], DOCS[:1]], ["a", "b"])
    with pytest.raises(ValueError, match=r"targets\[0\] is empty"):
        model.instruct_loss(["q1"], [DOCS[:2]], [""])
    with pytest.raises(TypeError, match="list of strings"):
        model.compress("a single string is not a list of documents")
    with pytest.raises(ValueError, match="score needs"):
        model.score(torch.zeros(2, 8, 64), torch.zeros(2, 3, 4, 64))


# --- the real packaged backbone --------------------------------------------------------------

@pytest.mark.slow
def test_real_smollm2_runs_every_stage_and_answers_closed_book():
    model = CLaRa(*load_backbone("smollm2-135m"), CLaRaConfig())
    model.eval()
    assert model.config.n_memory == 8 and model.memory_tokens.shape == (8, 576)
    with torch.no_grad():
        for out in (model.pretrain_loss(DOCS[:2], ["Question: Who?\nAnswer: Varel", "Mira."], ["qa", "paraphrase"]),
                    model.instruct_loss(["Who?"], [DOCS[:2]], ["Varel"]),
                    model.e2e_loss(["Who?"], [DOCS * 2], ["Varel"])):
            assert torch.isfinite(out["loss"]) and 0 < out["loss"].item() < 20
    # Why memory_norm="standardize" (README, "Why the generator ignored the vectors"): one
    # massive-activation dimension holds most of the raw states' squared norm; mapped, none does.
    with torch.no_grad():
        mapped = model.compress(DOCS)  # (N, l, D)
        model.config.memory_norm = "none"
        raw = model.compress(DOCS)
        model.config.memory_norm = "standardize"
    top_share = lambda v: (v.pow(2).amax(-1) / v.pow(2).sum(-1)).mean().item()
    assert top_share(raw) > 0.5 and top_share(mapped) < 0.1, (top_share(raw), top_share(mapped))
    model.config.system_prompt = "Answer briefly."
    answer = model.generate(["What is the capital of France?"], None, max_new_tokens=12)[0]
    assert "paris" in answer.lower(), f"the untuned backbone should know this: {answer!r}"


# --- inference at the backbone's speed: the adapter merged into the weights -----------------------

def _logits(model, ids):
    return model.backbone(input_ids=ids).logits


def test_merged_adapter_computes_what_the_unmerged_one_does():
    model = tiny_clara()
    randomize_adapters(model, scale=0.2)
    model.eval()
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        with model.adapter("generator", merge=False):
            unmerged = _logits(model, ids)
            assert all(layer.merged_weight is None for layer in model.lora_layers)
        with model.adapter("generator"):  # the default in eval mode without gradients: merged
            assert all(layer.merged_weight is not None for layer in model.lora_layers)
            merged = _logits(model, ids)
        with model.adapter(None):
            bare = _logits(model, ids)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert (merged - bare).abs().max() > 1e-2, "the adapter changes nothing: the test proves nothing"


def test_merged_weights_take_autocasts_dtype_and_give_the_same_outputs():
    """Under bf16 autocast the merged weights and the LM head are stored in bf16 (else a CPU casts each
    fp32 weight at every matmul of every token), and the outputs are those of fp32 weights that
    autocast casts; the head's tie to the input embeddings is back after the block."""
    model = tiny_clara()
    randomize_adapters(model, scale=0.2)
    model.eval()
    head, embed = model.backbone.get_output_embeddings(), model.backbone.get_input_embeddings()
    assert head.weight is embed.weight, "the tiny backbone ties its head, as SmolLM2 does"
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        with model.adapter("generator"):  # merged outside autocast: fp32 weights, cast at each matmul
            assert {layer.merged_weight.dtype for layer in model.lora_layers} == {torch.float32}
            with torch.autocast("cpu", dtype=torch.bfloat16):
                cast_each_time = _logits(model, ids)
        with torch.autocast("cpu", dtype=torch.bfloat16), model.adapter("generator"):
            assert {layer.merged_weight.dtype for layer in model.lora_layers} == {torch.bfloat16}
            assert head.weight.dtype == torch.bfloat16 and embed.weight.dtype == torch.float32
            stored_bf16 = _logits(model, ids)
        with model.adapter("generator"):
            fp32 = _logits(model, ids)
    assert head.weight is embed.weight and head.weight.dtype == torch.float32
    assert torch.equal(stored_bf16, cast_each_time)
    assert (stored_bf16.float() - fp32).abs().max() > 0, "bf16 rounding left no trace: autocast was off"


def test_merging_restores_weights_and_nests():
    model = tiny_clara()
    randomize_adapters(model, scale=0.2)
    model.eval()
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    ids = torch.tensor([[5, 17, 42, 7]])
    with torch.no_grad():
        with model.adapter(None):
            bare = _logits(model, ids)
        with model.adapter("generator"):
            outer = _logits(model, ids)
            with model.adapter(None):  # a bare forward inside a merged block must be bare
                torch.testing.assert_close(_logits(model, ids), bare, rtol=0, atol=0)
            torch.testing.assert_close(_logits(model, ids), outer, rtol=0, atol=0)
    assert all(layer.active is None and layer.merged_weight is None for layer in model.lora_layers)
    for n, p in model.backbone.named_parameters():
        assert torch.equal(p, before[n]), f"merging changed {n}"


def test_no_merge_while_recording_gradients():
    model = tiny_clara()
    randomize_adapters(model)
    model.eval()
    with pytest.raises(RuntimeError, match="while recording gradients"):
        with model.adapter("generator", merge=True):
            pass
    with model.adapter("generator"):  # the default with gradients on: unmerged, so B gets a gradient
        _logits(model, torch.tensor([[5, 17, 42]])).sum().backward()
    assert model.lora_layers[0].lora_B["generator"].grad.abs().sum() > 0
