"""CLaRa in one file: compress documents into memory vectors, rerank them, answer from them.

Implements "CLaRa: Bridging Retrieval and Generation with Continuous Latent Reasoning"
(He, Bai, Williamson, Pan, Jaitly, Zhang; arXiv 2511.18659, 2025). Official code: apple/ml-clara.

Study guide: paper component -> where it lives here
    memory tokens <MEM0..MEM{l-1}>   (Sec. 2.1)         CLaRa.memory_tokens (or none: window_means)
    compressor theta_c (doc -> l x D) (Sec. 2.1)        CLaRa.compress
    MSE alignment, lambda = 0.1      (Sec. 2.1, Eq. 2)  CLaRa._encode (with_mse=True)
    query reasoner theta_qr          (Sec. 3.1)         CLaRa.encode_query, init_query_reasoner
    cosine relevance s(q, M)         (Sec. 3.1)         CLaRa.score
    straight-through top-k           (Eq. 3.3-3.4, Alg. 1) differentiable_topk
    generator theta_g reading M      (Sec. 2.2, 3.2)    CLaRa.generator_loss, CLaRa.generate
    stages 1 SCP, 2 instruct, 3 e2e  (Sec. 2.1, 2.2, 3) CLaRa.pretrain_loss, .instruct_loss, .e2e_loss
    rerank N -> k -> answer          (Sec. 3)           CLaRa.answer
    stage-3 vector cache (theta_c frozen)               runtime.VectorCache
    three LoRA adapters on one frozen backbone          backbones.add_lora, CLaRa.adapter
    checkpoints: only what training changed            CLaRa.save, CLaRa.load (runtime.write_checkpoint)

Symbols (docs/design.md section 2): B questions, N candidates each, k selected, L document tokens
(doc_max_len), l = L // compression_rate memory tokens per document, D hidden size, tau the top-k's
temperature. Where this departs from the paper and the official code, and why: README "Differences".
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import (CALIBRATION_TEXT, LoRALinear, add_lora, chat_pieces, greedy_decode,  # load_backbone and
                       head_in, load_backbone, states_at_layer)  # LoRALinear: re-exported, `from clara import ...`
from runtime import backbone_fingerprint, copy_checked, load_tensors, read_checkpoint, write_checkpoint

ADAPTERS = ("compressor", "query_reasoner", "generator")  # theta_c, theta_qr, theta_g
MEMORY_NORMS = ("none", "rescale", "standardize")
# config fields that change a passage's memory vectors (with the backbone and theta_c's weights)
COMPRESSOR_FIELDS = ("backbone", "compressor", "doc_max_len", "compression_rate", "memory_layer",
                     "memory_norm", "lora_r", "lora_alpha")
QUERY_FIELDS = (*COMPRESSOR_FIELDS, "query_max_len")  # ... and the query reasoner's query vectors


# --- Configuration: every method hyperparameter, its paper symbol, and why its default -----------

@dataclass
class CLaRaConfig:
    backbone: str | None = None  # what load_backbone() builds for CLaRa.load; None: filled in by CLaRa
    doc_max_len: int = 128  # L: document tokens kept (truncated); the paper uses 256 with 7B models
    compression_rate: int = 16  # L / l (official: `compr_rate`); 16x is the paper's main setting
    query_max_len: int = 64  # question tokens kept by the query reasoner
    top_k: int = 5  # k documents picked of N candidates (paper: 5 of 20)
    temperature: float = 0.02  # tau of the top-k softmaxes (paper: 0.02)
    gumbel: bool = False  # Gumbel noise on s/tau while training: a teaching extension, paper has none
    lora_r: int = 16  # LoRA rank (paper: 16)
    lora_alpha: int = 32  # LoRA scale alpha / r = 2 (paper: 32)
    lora_dropout: float = 0.1  # (paper: 0.1)
    mse_weight: float = 0.1  # lambda of the MSE alignment term (paper: 0.1)
    memory_layer: int = -2  # index into HF hidden_states: -1 = post-norm final layer (paper);
    #                         -2 = residual stream before the last layer (docs/design.md section 8)
    memory_norm: str = "standardize"  # how memory states become generator inputs (MEMORY_NORMS): "none"
    #   raw (paper); "rescale": each vector to the input embeddings' mean norm (~3.2 vs ~45); "standardize":
    #   per dimension, the layer's mean and std on CALIBRATION_TEXT mapped to the input embeddings', which
    #   removes the massive-activation dimension that made the generator ignore the vectors as attention sinks
    compressor: str = "memory-tokens"  # the paper: l MEM tokens read the text; "mean-pool" (Feldman and
    #   Artzi 2025, arXiv 2510.20797): means of l windows of the text's own states (window_means), the MSE
    #   term zero (nothing to align); memory_tokens then stays (checkpoint shapes), unused and untrained
    memory_init_seed: int = 0  # MEM_i start as embeddings of l random vocabulary tokens
    system_prompt: str = "Answer the question as briefly as possible, using the documents."
    qa_instruction: str = "Write questions about the background and answer them."  # SCP qa target
    paraphrase_instruction: str = "Paraphrase the background."  # SCP paraphrase target
    doc_separator: str = "\n"  # text after each document slot (official: a learned <SEP> token)

    @property
    def n_memory(self) -> int:
        """l = L // compression_rate, e.g. 128 // 16 = 8 memory vectors per document."""
        return self.doc_max_len // self.compression_rate

    def __post_init__(self):
        if self.doc_max_len < 1 or self.compression_rate < 1 or self.n_memory < 1:
            raise ValueError(f"doc_max_len {self.doc_max_len} // compression_rate "
                             f"{self.compression_rate} must give at least one memory token")
        if self.memory_norm not in MEMORY_NORMS:
            raise ValueError(f"memory_norm must be one of {MEMORY_NORMS}, got {self.memory_norm!r}")
        if self.compressor not in ("memory-tokens", "mean-pool"):
            raise ValueError(f"compressor must be 'memory-tokens' or 'mean-pool', got {self.compressor!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


# --- Straight-through top-k (paper Eq. 3.3-3.4, Algorithm 1) -------------------------------------

def differentiable_topk(scores: torch.Tensor, k: int, temperature: float, gumbel: bool = False,
                        hard: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick k of N documents per row: weights (B, k, N) and indices (B, k). Slot j takes
    p_j = softmax((s + log mask_j) / tau), mask_j a true -inf on the documents of slots < j (exactly
    zero mass on them), and h_j = onehot(argmax p_j). hard=True: W = H + (P - P.detach()), forward
    the exact k-hot selection, backward the gradient of the soft rows P (straight-through, Eq. 3.4);
    hard=False: W = P. gumbel=True adds Gumbel(0, 1) noise to s / tau (exploration; the paper has none).

    >>> w, i = differentiable_topk(torch.tensor([[0.1, 0.9, 0.5]]), k=2, temperature=0.02)
    >>> i.tolist(), w.tolist()
    ([[1, 2]], [[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    """
    B, N = scores.shape
    if not 1 <= k <= N:
        raise ValueError(f"top-k needs 1 <= k <= N, got k={k} with scores of shape {tuple(scores.shape)}")
    logits = scores / temperature  # (B, N)
    if gumbel:
        u = torch.rand_like(logits).clamp(1e-10, 1 - 1e-10)
        logits = logits - torch.log(-torch.log(u))  # + Gumbel(0, 1) noise
    taken = torch.zeros(B, N, dtype=torch.bool, device=scores.device)
    soft, picks = [], []
    for _ in range(k):
        p = logits.masked_fill(taken, float("-inf")).softmax(dim=-1)  # (B, N), 0 on taken docs
        i = p.argmax(dim=-1)  # (B,)
        taken = taken | F.one_hot(i, N).bool()
        soft.append(p)
        picks.append(i)
    P = torch.stack(soft, dim=1)  # (B, k, N)
    indices = torch.stack(picks, dim=1)  # (B, k)
    if not hard:
        return P, indices
    H = F.one_hot(indices, N).to(P.dtype)  # (B, k, N) exact k-hot rows
    return H + (P - P.detach()), indices


def window_means(states: torch.Tensor, mask: torch.Tensor, l: int) -> torch.Tensor:
    """(n, T, D) states, (n, T) mask of real tokens -> (n, l, D): window j of a row of T_i real tokens
    averages its real tokens floor(j T_i / l) .. floor((j + 1) T_i / l) - 1, padding excluded; when
    T_i < l that range may be empty and window j takes token floor(j T_i / l) alone.
    >>> h, m = torch.tensor([[[9.], [1.], [3.], [5.], [7.]]]), torch.tensor([[0, 1, 1, 1, 1]])
    >>> window_means(h, m, 2).tolist(), window_means(h, m, 8)[0, :3, 0].tolist()  # 9.0 is padding
    ([[[2.0], [6.0]]], [1.0, 1.0, 3.0])
    """
    rank = (mask.cumsum(-1) - 1)[:, None]  # (n, 1, T): each real token's index in its row
    j, T_i = torch.arange(l, device=mask.device)[:, None], mask.sum(-1)[:, None, None]  # (l, 1), (n, 1, 1)
    start = j * T_i // l  # (n, l, 1)
    w = (rank >= start) & (rank < ((j + 1) * T_i // l).clamp(min=start + 1)) & mask.bool()[:, None]
    return (w.to(states.dtype) @ states) / w.sum(-1, keepdim=True)  # (n, l, T) @ (n, T, D) -> (n, l, D)


def select_picked(W: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """The picked vectors W M: (B, k, N) x (B, N, l, D) -> (B, k, l, D), in M's dtype. Exactly M[idx]
    forward (W's rows are one-hot) only in float32: bf16 autocast would round M, so it is off here;
    the backward still reaches W (the straight-through gradient)."""
    with torch.autocast(M.device.type, enabled=False):
        return torch.einsum("bkn,bnld->bkld", W.float(), M.float()).to(M.dtype)


# --- The model: compressor, query reasoner, scores, generator, stage losses ----------------------

class CLaRa(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer, config: CLaRaConfig | None = None):
        super().__init__()
        config = config if config is not None else CLaRaConfig()
        built_from = getattr(backbone, "clara_backbone", None) or getattr(backbone.config, "name_or_path", None)
        if config.backbone is None:  # record what the model is really built on, for CLaRa.load
            config = replace(config, backbone=built_from)
        elif built_from and config.backbone != built_from:
            raise ValueError(f"config.backbone is {config.backbone!r} but the backbone given was "
                             f"loaded as {built_from!r}; a checkpoint would name the wrong one")
        self.config = config
        self.backbone, self.tokenizer = backbone, tokenizer
        self.lora_layers = add_lora(backbone, config.lora_r, config.lora_alpha, config.lora_dropout,
                                    ADAPTERS)  # one frozen backbone, three adapters
        emb = backbone.get_input_embeddings().weight  # (V, D)
        g = torch.Generator().manual_seed(config.memory_init_seed)
        ids = torch.randint(0, emb.shape[0], (config.n_memory,), generator=g)
        self.memory_tokens = nn.Parameter(emb[ids.to(emb.device)].detach().float())  # (l, D), fp32, distinct
        self.register_buffer("embed_norm", emb.detach().norm(dim=-1).mean(), persistent=False)
        D = emb.shape[1]
        self.register_buffer("memory_scale", torch.ones(D, device=emb.device), persistent=False)
        self.register_buffer("memory_shift", torch.zeros(D, device=emb.device), persistent=False)
        self.calibrate_memory_norm()
        self._chat = chat_pieces(tokenizer, self.config.system_prompt, self.config.doc_separator)

    @torch.no_grad()
    def calibrate_memory_norm(self):
        """memory_norm="standardize": fix h -> h * memory_scale + memory_shift per dimension, so the
        states at memory_layer on CALIBRATION_TEXT (less the first token, the attention sink) get the input
        embeddings' mean and std. Not trained or saved: recomputed when a model is built (and to be
        called again after changing config.memory_layer)."""
        emb = self.backbone.get_input_embeddings().weight.detach().float()  # (V, D)
        ids = self.tokenizer(CALIBRATION_TEXT, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with self.adapter(None):
            h = states_at_layer(self.backbone, self.config.memory_layer, input_ids=ids.to(emb.device))
        h = h[0, 1:].float()  # (T - 1, D)
        scale = emb.std(0) / h.std(0).clamp(min=1e-6)  # (D,)
        self.memory_scale.copy_(scale)
        self.memory_shift.copy_(emb.mean(0) - h.mean(0) * scale)

    @property
    def device(self) -> torch.device:  # model code follows the device of its parameters
        return self.memory_tokens.device

    @contextmanager
    def adapter(self, name: str | None, merge: bool | None = None):
        """Run the enclosed sub-forward with adapter `name` (or none), restored after: no global state
        outlives the forward (and no gradient checkpointing re-runs one outside this block).
        merge: fold the adapter in for the block, W' = W + (alpha/r) B A: one matmul per linear instead
        of three, a dropout and two casts (most of a decoded token's time on a CPU). Default: merge in
        inference (no gradient, eval mode); never while recording gradients (the adapter is in the graph).
        Under autocast the merged weights (and the LM head, backbones.head_in) are stored in its dtype
        (bf16), the rounding autocast would apply at every matmul: the same outputs, and a CPU does not
        re-cast every weight for every token."""
        if name is not None and name not in ADAPTERS:
            raise ValueError(f"unknown adapter {name!r}; choose from {ADAPTERS}")
        if merge is None:
            merge = not torch.is_grad_enabled() and not self.training
        if merge and torch.is_grad_enabled():
            raise RuntimeError("adapter(merge=True) while recording gradients: merged weights are "
                               "constants, so no gradient would reach the adapter")
        previous = [(layer.active, layer.merged_weight) for layer in self.lora_layers]
        kind = self.device.type
        dtype = torch.get_autocast_dtype(kind) if merge and torch.is_autocast_enabled(kind) else None
        for layer in self.lora_layers:
            layer.active = name
            layer.merged_weight = layer.merge(name, dtype) if merge and name is not None else None
        try:
            with head_in(self.backbone, dtype):
                yield
        finally:
            for layer, (active, merged) in zip(self.lora_layers, previous):
                layer.active, layer.merged_weight = active, merged

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything training can change: the three adapters and the memory tokens."""
        return {n: p for n, p in self.named_parameters() if "lora_" in n or n == "memory_tokens"}

    # -- tokens ------------------------------------------------------------------------------

    def _token_ids(self, texts: list[str], max_len: int, what: str) -> list[list[int]]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"{what}[{i}] is empty or not a string: {t!r}")
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"][:max_len] for t in texts]

    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        x = torch.tensor(ids, dtype=torch.long, device=self.device)
        return self.backbone.get_input_embeddings()(x)  # (T,) -> (T, D)

    # -- compressor and query reasoner (Sec. 2.1, 3.1) ----------------------------------------

    def _encode(self, texts: list[str], max_len: int, adapter: str, what: str, with_mse: bool):
        """[text tokens (<= max_len)] + [MEM_0..MEM_{l-1}] -> states at the l memory positions, or with
        compressor="mean-pool" [text tokens] -> window_means of their states (questions too, so score
        compares like with like). Rows are left-padded: the memory tokens are the last l positions."""
        ids = self._token_ids(texts, max_len, what)
        n, l, T = len(ids), self.config.n_memory, max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        tok = torch.tensor([[pad] * (T - len(x)) + x for x in ids], device=self.device)  # (n, T), left-padded
        text_mask = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids], device=self.device)  # (n, T)
        inputs = self.backbone.get_input_embeddings()(tok)  # (n, T, D)
        mean_pool = self.config.compressor == "mean-pool"  # the text alone: MEM stay out of the graph
        if not mean_pool:
            mem = self.memory_tokens if adapter == "compressor" else self.memory_tokens.detach()
            mem = mem.unsqueeze(0).expand(n, l, -1)  # (l, D) -> (n, l, D); theta_qr reads, never trains, MEM
            inputs = torch.cat([inputs, mem.to(inputs.dtype)], dim=1)  # (n, T + l, D)
        mask = F.pad(text_mask, (0, inputs.shape[1] - T), value=1)  # (n, T [+ l])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: first real token at 0
        with self.adapter(adapter):
            h = states_at_layer(self.backbone, self.config.memory_layer, inputs_embeds=inputs,
                                attention_mask=mask, position_ids=positions)
        h = window_means(h, text_mask, l) if mean_pool else h  # (n, T, D) -> (n, l, D), then normalised
        if self.config.memory_norm == "standardize":  # per dimension, to the embeddings' statistics
            h = h * self.memory_scale + self.memory_shift
        elif self.config.memory_norm == "rescale":  # every state to the input embeddings' mean norm
            h = h * (self.embed_norm / h.norm(dim=-1, keepdim=True).clamp(min=1e-6))
        vecs = h if mean_pool else h[:, T:]  # (n, l, D): the window means or the memory positions
        mse = h.new_zeros(()) if with_mse and mean_pool else None  # mean-pool: nothing to align, off
        if with_mse and not mean_pool:  # Eq. 2: mean of the valid document states vs of the memory states
            m = text_mask.unsqueeze(-1).to(h.dtype)  # (n, T, 1), padding excluded
            doc_mean = (h[:, :T] * m).sum(1) / m.sum(1)  # (n, D)
            mse = F.mse_loss(vecs.mean(1), doc_mean)  # averaged over D, as F.mse_loss does
        return vecs, mse

    def compress(self, docs: list[str], with_mse: bool = False):
        """Documents -> memory vectors M (N, l, D) with the compressor theta_c (Sec. 2.1).
        With with_mse=True also return the MSE alignment term (a scalar)."""
        vecs, mse = self._encode(docs, self.config.doc_max_len, "compressor", "docs", with_mse)
        return (vecs, mse) if with_mse else vecs

    def encode_query(self, questions: list[str]) -> torch.Tensor:
        """Questions -> query vectors q (B, l, D): the same recipe with theta_qr (Sec. 3.1)."""
        return self._encode(questions, self.config.query_max_len, "query_reasoner", "questions", False)[0]

    @staticmethod
    def score(query_vecs: torch.Tensor, doc_vecs: torch.Tensor) -> torch.Tensor:
        """s = cos(flatten(q), flatten(M)): (B, l, D), (B, N, l, D) -> (B, N). Position-aligned."""
        if query_vecs.dim() != 3 or doc_vecs.dim() != 4 or doc_vecs.shape[0] != query_vecs.shape[0] \
                or doc_vecs.shape[2:] != query_vecs.shape[1:]:
            raise ValueError(f"score needs q (B, l, D) and M (B, N, l, D), got "
                             f"{tuple(query_vecs.shape)} and {tuple(doc_vecs.shape)}")
        q = query_vecs.flatten(1).unsqueeze(1)  # (B, 1, l*D)
        return F.cosine_similarity(q, doc_vecs.flatten(2), dim=-1)  # (B, N)

    @torch.no_grad()
    def init_query_reasoner(self):
        """theta_qr <- theta_c (paper Table 14: better than a random start)."""
        for layer in self.lora_layers:
            layer.lora_A["query_reasoner"].copy_(layer.lora_A["compressor"])
            layer.lora_B["query_reasoner"].copy_(layer.lora_B["compressor"])

    # -- generator (Sec. 2.2) ----------------------------------------------------------------

    def prompt_embeds(self, question: str, slots) -> torch.Tensor:
        """One generator prompt: chat header + k slots (l vectors or a passage's text, then the
        separator) + question + assistant header -> (T, D)."""
        parts = [self._embed_ids(self._chat["before_ids"])]
        for slot in slots:
            if isinstance(slot, str):  # text RAG: the passage itself (truncated to L tokens)
                slot = self._embed_ids(self._token_ids([slot], self.config.doc_max_len, "docs")[0])
            sep = self._embed_ids(self._chat["sep_ids"])
            parts += [slot.to(sep.dtype), sep]  # (l, D) vectors or (L', D) text, then the separator
        text = self._chat["middle"] + question + self._chat["after"]
        parts.append(self._embed_ids(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
        return torch.cat(parts, dim=0)  # (T, D)

    def _check_batch(self, questions, docs, targets=None):
        self._token_ids(questions, 10**9, "questions")  # type and emptiness checks
        if docs is not None and len(docs) != len(questions):
            raise ValueError(f"{len(questions)} questions but documents for {len(docs)}")
        if targets is not None:
            if len(targets) != len(questions):
                raise ValueError(f"{len(questions)} questions but {len(targets)} targets")
            self._token_ids(targets, 10**9, "targets")

    def generator_loss(self, questions: list[str], doc_vecs, targets: list[str]) -> torch.Tensor:
        """Next-token cross-entropy of theta_g on the target tokens only (prompt and padding are
        label -100), reading doc_vecs (B, k, l, D) spliced into the user turn, or B lists of k
        passages read as text; None = no documents."""
        self._check_batch(questions, doc_vecs, targets)
        rows, labels = [], []
        for b, (q, t) in enumerate(zip(questions, targets)):
            prompt = self.prompt_embeds(q, [] if doc_vecs is None else list(doc_vecs[b]))
            target = self.tokenizer(t + self._chat["end"], add_special_tokens=False)["input_ids"]
            rows.append(torch.cat([prompt, self._embed_ids(target)]))  # (T_b, D)
            labels.append([-100] * len(prompt) + target)
        T = max(len(r) for r in rows)
        x = torch.stack([F.pad(r, (0, 0, 0, T - len(r))) for r in rows])  # right-pad -> (B, T, D)
        y = torch.tensor([lab + [-100] * (T - len(lab)) for lab in labels], device=self.device)  # (B, T)
        mask = (torch.arange(T, device=self.device)[None] < torch.tensor(
            [len(r) for r in rows], device=self.device)[:, None]).long()  # (B, T)
        with self.adapter("generator"):
            h = self.backbone.base_model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        keep = y[:, 1:] != -100  # position t predicts token t + 1
        logits = self.backbone.get_output_embeddings()(h[:, :-1][keep])  # (n_target, V) only
        return F.cross_entropy(logits.float(), y[:, 1:][keep])

    @torch.no_grad()
    def generate(self, questions: list[str], docs=None, max_new_tokens: int = 32,
                 docs_as_text: bool = False, adapter: str | None = "generator") -> list[str]:
        """Greedy answers from the given documents in order: docs is a tensor (B, k, l, D), or a
        list of k passages per question (compressed first, or read as text if docs_as_text), or
        None (closed-book). adapter=None: the bare backbone (eval's untuned text-RAG reference)."""
        self._check_batch(questions, docs)
        if docs is not None and not torch.is_tensor(docs) and not docs_as_text:
            docs = self._compress_nested(docs)  # (B, k, l, D)
        prompts = [self.prompt_embeds(q, [] if docs is None else list(docs[b]))
                   for b, q in enumerate(questions)]  # [(T_b, D)], left-padded into one batch
        T = max(len(p) for p in prompts)
        x = torch.stack([F.pad(p, (0, 0, T - len(p), 0)) for p in prompts])  # (B, T, D)
        mask = torch.stack([F.pad(torch.ones(len(p), dtype=torch.long, device=self.device),
                                  (T - len(p), 0)) for p in prompts])  # (B, T)
        with self.adapter(adapter):
            rows = greedy_decode(self.backbone, x, mask, self._chat["stop"], max_new_tokens)
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]

    def _compress_nested(self, docs: list[list[str]], with_mse: bool = False):
        """B lists of n passages each -> (B, n, l, D), one compressor pass over all B * n."""
        n = len(docs[0]) if docs else 0
        for b, row in enumerate(docs):
            if isinstance(row, str) or len(row) != n or n == 0:
                raise ValueError(f"every question needs the same number (>0) of passages: row 0 has "
                                 f"{n}, row {b} has {1 if isinstance(row, str) else len(row)}")
        flat = [d for row in docs for d in row]  # B * n passages, compressed as CLaRa.compress does
        vecs, mse = self._encode(flat, self.config.doc_max_len, "compressor", "docs", with_mse)
        vecs = vecs.view(len(docs), n, *vecs.shape[1:])  # (B * n, l, D) -> (B, n, l, D)
        return (vecs, mse) if with_mse else vecs

    # -- the three training stages (Sec. 2.1, 2.2, 3) ----------------------------------------

    def pretrain_loss(self, docs: list[str], targets: list[str], kinds: list[str],
                      donors: list[int] | None = None) -> dict:
        """Stage 1 (SCP): one passage -> its target (kind "qa": all QA pairs as "Question: ..\\nAnswer: .."
        lines, the questions in the target, not the prompt; or a paraphrase); CE + lambda * MSE. donors: row
        b reads row donors[b]'s vectors (the shuffled control; the caller picks them, metrics.shuffle_donors)."""
        if len(kinds) != len(docs) or not set(kinds) <= {"qa", "paraphrase"}:
            raise ValueError(f"{len(docs)} docs, {len(kinds)} kinds {set(kinds)}: need one 'qa' or 'paraphrase' each")
        M, mse = self.compress(docs, with_mse=True)  # (B, l, D)
        M = M if donors is None else M[donors]  # a control, not the method: the caller picks the donors
        instructions = [self.config.qa_instruction if k == "qa" else self.config.paraphrase_instruction
                        for k in kinds]
        ce = self.generator_loss(instructions, M.unsqueeze(1), targets)  # one slot: (B, 1, l, D)
        return {"loss": ce + self.config.mse_weight * mse, "ce": ce.detach(), "mse": mse.detach()}

    def instruct_loss(self, questions: list[str], docs: list[list[str]], answers: list[str],
                      donors: list[int] | None = None, as_text: bool = False) -> dict:
        """Stage 2: question + k passages (compressed) -> answer; CE + lambda * MSE; donors as in
        pretrain_loss. as_text: the passages read as text, no compression and no MSE (the same-budget
        text-RAG reference, not the method: train.py --instruct-reads text)."""
        self._check_batch(questions, docs, answers)
        if as_text:
            ce = self.generator_loss(questions, docs if donors is None else [docs[d] for d in donors], answers)
            return {"loss": ce, "ce": ce.detach()}
        M, mse = self._compress_nested(docs, with_mse=True)  # (B, k, l, D)
        ce = self.generator_loss(questions, M if donors is None else M[donors], answers)
        return {"loss": ce + self.config.mse_weight * mse, "ce": ce.detach(), "mse": mse.detach()}

    def rerank(self, questions: list[str], candidates, k: int | None = None, hard: bool = True):
        """Score N candidates (passages, or vectors (B, N, l, D)) and pick k with the top-k.
        Candidate vectors come from the frozen compressor: no gradient reaches theta_c."""
        k = self.config.top_k if k is None else k
        self._check_batch(questions, candidates)
        with torch.no_grad():  # (B, N, l, D)
            M = candidates.detach() if torch.is_tensor(candidates) else self._compress_nested(candidates)
        if k > M.shape[1]:
            raise ValueError(f"top_k = {k} but only N = {M.shape[1]} candidates per question")
        s = self.score(self.encode_query(questions), M)  # (B, N)
        W, idx = differentiable_topk(s, k, self.config.temperature,
                                     gumbel=self.config.gumbel and self.training, hard=hard)
        return select_picked(W, M), idx, s  # (B, k, l, D): exactly M[idx] forward

    def e2e_loss(self, questions: list[str], candidates, answers: list[str]) -> dict:
        """Stage 3: the answer's CE is the only signal; through the straight-through top-k it trains
        the query reasoner (which documents help) and the generator. No relevance labels."""
        self._check_batch(questions, candidates, answers)
        selected, idx, s = self.rerank(questions, candidates)
        ce = self.generator_loss(questions, selected, answers)
        return {"loss": ce, "ce": ce.detach(), "topk_idx": idx, "scores": s.detach()}

    @torch.no_grad()
    def answer(self, questions: list[str], candidates, k: int | None = None,
               max_new_tokens: int = 32) -> tuple[list[str], torch.Tensor]:
        """Rerank N candidates -> pick k -> generate. Returns (answers, topk_idx (B, k))."""
        selected, idx, _ = self.rerank(questions, candidates, k)
        return self.generate(questions, selected, max_new_tokens), idx

    # -- checkpoints: only what training changed (as nanoGPT's from_pretrained) ---------------

    def save(self, directory: str, dtype: str | None = None):
        """Write adapters.safetensors (the 3 adapters and the memory tokens) and config.json (this
        config, the backbone's fingerprint, the compute dtype training ran in): runtime.write_checkpoint."""
        write_checkpoint(directory, self.trainable_state_dict(), self.config, self.backbone, dtype)

    @classmethod
    def load(cls, directory: str, backbone=None, backbone_dtype: torch.dtype = torch.float32) -> "CLaRa":
        """Rebuild from save(): backbone = (model, tokenizer), or None to load config.backbone in backbone_dtype.
        A checkpoint of another configuration or backbone is refused, naming the path and field."""
        config, fingerprint = read_checkpoint(directory, CLaRaConfig)
        if backbone is None and config.backbone is None:
            raise ValueError(f"{directory}/config.json: the checkpoint does not name its backbone; pass backbone=(model, tokenizer)")
        model, tokenizer = backbone if backbone is not None else load_backbone(config.backbone, backbone_dtype)
        if backbone_fingerprint(model) != fingerprint:
            raise ValueError(f"{directory}/config.json: checkpoint was trained on backbone {fingerprint}, "
                             f"but the given backbone is {backbone_fingerprint(model)}")
        clara = cls(model, tokenizer, config)
        clara.load_trainable(load_tensors(directory), directory)
        return clara

    def load_trainable(self, tensors: dict[str, torch.Tensor], where: str = "checkpoint"):
        """Copy saved adapters and memory tokens in, refusing any missing, extra or misshapen one."""
        copy_checked(self.trainable_state_dict(), tensors, where)
