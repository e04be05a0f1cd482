"""The runtime around the method, shared by train.py, eval.py and ask.py: where and in which dtype
the model runs, several processes under torchrun, FLOP counting, atomic file writes, reading
checkpoint directories (CLaRa.save writes them) and stage 3's cache of frozen-theta_c vectors.
Nothing here is part of CLaRa itself, and nothing here imports the method: CLaRa.save and CLaRa.load
call the checkpoint helpers below (write_checkpoint, read_checkpoint, copy_checked).
"""

import contextlib
import functools
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch


def atomic_write(path: str, write) -> None:
    """write(tmp_path), then rename: a reader never sees a half-written file."""
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


# --- checkpoint directories (CLaRa.save): what is in them, read without building a model ---------

CONFIG, TENSORS = "config.json", "adapters.safetensors"  # a checkpoint directory


def read_meta(directory: str) -> tuple[str, dict]:
    """The path of a checkpoint's config.json and what it holds: config, backbone, dtype."""
    path = os.path.join(directory, CONFIG)
    with open(path) as f:
        return path, json.load(f)


def config_differences(directory: str, config, names=None) -> list[str]:
    """The fields in `names` (default: all) where the checkpoint in `directory` differs from config,
    as "name saved X now Y"; fields added since it was written count as their defaults."""
    saved = {**asdict(type(config)()), **read_meta(directory)[1]["config"]}  # config: a clara.CLaRaConfig
    now = asdict(config)
    return [f"{n} saved {saved.get(n)!r} now {now[n]!r}" for n in (names or now) if saved.get(n) != now[n]]


def backbone_fingerprint(backbone) -> dict:
    """What must match for adapters to fit a backbone (saved in config.json, checked by CLaRa.load)."""
    return {k: getattr(backbone.config, k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")}


def trained_dtype(directory: str) -> str | None:
    """The compute dtype a checkpoint was trained in (CLaRa.save's dtype), or None if saved without one."""
    path, meta = read_meta(directory)
    dtype = meta.get("dtype")
    if dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"{path}: dtype {dtype!r}, expected 'float32' or 'bfloat16'")
    return dtype


def load_tensors(directory: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint directory (CLaRa.save), by name, for CLaRa.load_trainable."""
    from safetensors.torch import load_file  # tensors only: no pickle
    return load_file(os.path.join(directory, TENSORS))


def write_checkpoint(directory: str, tensors: dict[str, torch.Tensor], config, backbone,
                     dtype: str | None = None) -> None:
    """CLaRa.save: adapters.safetensors (the given tensors; no pickle), then config.json (the config
    dataclass, the backbone's fingerprint and, when given, the compute dtype training ran in,
    "float32" or "bfloat16": eval.py and ask.py run in it by default), each written atomically."""
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in tensors.items()}
    atomic_write(os.path.join(directory, TENSORS), lambda path: save_file(tensors, path))
    meta = {"config": asdict(config), "backbone": backbone_fingerprint(backbone)}
    meta = json.dumps({**meta, "dtype": dtype} if dtype else meta, indent=2)
    atomic_write(os.path.join(directory, CONFIG), lambda path: Path(path).write_text(meta))


def read_checkpoint(directory: str, config_class):
    """CLaRa.load: the saved config as a config_class, and the saved backbone fingerprint. A field
    config_class does not know (a checkpoint from another version) is refused, naming the file."""
    path, meta = read_meta(directory)
    unknown = set(meta["config"]) - set(asdict(config_class()))
    if unknown:
        raise ValueError(f"{path}: unknown config fields {sorted(unknown)}")
    return config_class(**meta["config"]), meta["backbone"]


@torch.no_grad()
def copy_checked(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy tensors into own by name, refusing any missing, extra or misshapen one (naming `where`)."""
    if set(tensors) != set(own):
        raise ValueError(f"{where}: tensors do not match this configuration: missing "
                         f"{sorted(set(own) - set(tensors))[:3]}, unexpected "
                         f"{sorted(set(tensors) - set(own))[:3]}")
    for name, value in tensors.items():
        if value.shape != own[name].shape:
            raise ValueError(f"{where}: {name} has shape {tuple(value.shape)}, "
                             f"this configuration needs {tuple(own[name].shape)}")
        own[name].copy_(value)


# --- device and dtype: decided once, here, with the reason printed -------------------------------

def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (x86 flags avx512_bf16 or amx_bf16; Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(dtype: str = "auto", device: str = "auto", file=None, trained: str | None = None):
    """Decide device and compute dtype once and print why (to `file`, default stdout).
    -> (torch.device, autocast, "float32" | "bfloat16"): autocast() gives a fresh context manager
    per use, `with autocast():`.

    dtype   "float32" or "bfloat16" force it (--dtype of train.py, eval.py, ask.py). "auto": as
            trained when `trained` names the checkpoint's dtype (eval.py, ask.py); else bf16
            autocast on a GPU and on CPUs with native bf16, float32 elsewhere (train.py).
    device  "auto": cuda, else mps, else cpu; or a name ("cpu", "cuda", "mps": eval.py and ask.py
            --device). An Apple GPU (mps) always runs float32, as tested."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(device)
    name = (f"cuda ({torch.cuda.get_device_name()})" if device.type == "cuda" else
            f"cpu ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type)
    if device.type == "mps":
        bf16, why = False, "Apple GPU: float32 kept, as tested"
    elif dtype != "auto":
        bf16, why = dtype == "bfloat16", f"--dtype {dtype}"
    elif trained is not None:
        bf16, why = trained == "bfloat16", f"as trained (the checkpoint records {trained}); --dtype to override"
    elif device.type == "cuda":
        bf16, why = True, "a GPU is available"
    else:
        bf16 = cpu_has_bf16()
        why = ("this CPU has native bf16 (avx512_bf16); --dtype float32 to opt out" if bf16
               else "no native bf16 on this CPU")
    print(f"device: {name}, {'bf16 autocast' if bf16 else 'float32'}: {why}", file=file)
    return device, autocast_factory(device, bf16), "bfloat16" if bf16 else "float32"


def autocast_factory(device, bf16: bool):
    """A zero-argument callable: each call makes a new context manager (bf16 autocast, or nothing
    for float32). Not one torch.autocast object shared by all: entering the same object again
    inside itself overwrites the state it saved on the first entry, so bf16 autocast stays on
    after the outer block exits (test_train.py shows it)."""
    if not bf16:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)


def backbone_dtype(device, dtype: str) -> torch.dtype:
    """The frozen backbone's weights for compute dtype `dtype` (pick_device's third value): bf16 on
    CUDA under bf16 autocast (which would re-cast fp32 weights at every op), float32 otherwise
    (a CPU's bf16 autocast casts them, as tested); adapters and memory tokens are float32 always
    (clara.LoRALinear)."""
    return torch.bfloat16 if device.type == "cuda" and dtype == "bfloat16" else torch.float32


def sync(device):
    """Wait for queued GPU work, so that a clock read measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


# --- several processes: torchrun -----------------------------------------------------------------
# `torchrun --standalone --nproc_per_node=N train.py ...` starts N copies of the script with RANK,
# LOCAL_RANK and WORLD_SIZE set, as nanoGPT's train.py expects (docs/multi_gpu.md). Without them
# every helper below does nothing and the script is the one-process script it always was.
dist = torch.distributed


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def setup_distributed():
    """Join torchrun's process group: nccl on CUDA (one GPU per process, cuda:LOCAL_RANK), gloo on CPU.
    Only rank 0 speaks: the others' prints and progress bars go nowhere (errors still show)."""
    if "RANK" not in os.environ:
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"rank {rank}: LOCAL_RANK {local_rank}, but this machine has "
                             f"{torch.cuda.device_count()} GPUs: start at most that many (--nproc_per_node)")
        torch.cuda.set_device(local_rank)  # pick_device's "cuda" is now this process's GPU
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    if rank > 0:
        from functools import partialmethod

        from tqdm import tqdm
        sys.stdout = open(os.devnull, "w")
        tqdm.__init__ = partialmethod(tqdm.__init__, disable=True)
    print(f"torchrun: {dist.get_world_size()} processes, backend {dist.get_backend()}; rank 0 logs and writes")


def teardown_distributed():
    if distributed():
        dist.destroy_process_group()


def is_main() -> bool:
    """Rank 0, or the only process: the one that logs, evaluates and writes files."""
    return not distributed() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if distributed() else 1


def barrier():
    """Wait for every process (e.g. until rank 0 has written what the others read)."""
    if distributed():
        dist.barrier()


def shard(items):
    """This process's contiguous share of a list or range: rank r of P takes items[r*n//P:(r+1)*n//P],
    so the shares in rank order make up the whole again."""
    n, r = len(items), dist.get_rank() if distributed() else 0
    return items[r * n // world_size():(r + 1) * n // world_size()]


def check_batch_split(batch_sizes: dict, grad_accum: int):
    """Refuse, before any work, a batch size ({stage: --batch-size} of the stages to run) that P
    processes x --grad-accum A cannot cut into P*A equal micro-batches (unequal ones would weigh
    the rows of a step unequally)."""
    n = world_size() * grad_accum
    for stage, bs in batch_sizes.items():
        if bs % n:
            raise SystemExit(f"--batch-size {bs} of stage {stage} does not split into {world_size()} "
                             f"process(es) x --grad-accum {grad_accum} equal micro-batches: "
                             f"give a multiple of {n}")


def micro_batches(batch, accum):
    """This process's micro-batches of one step's batch. Every process draws the same batch (the
    same seeded order); rank r of P takes its share and cuts it into A = --grad-accum pieces. So P
    processes x A cut the batch into the same P*A slices, in the same order, as one process with
    --grad-accum P*A, and take the same step (test_ddp.py): each slice's loss is a token mean and
    weighs 1/(P*A) in the gradient (1/A in train.run_stage, 1/P in all_reduce_grads). Weighing every
    answer token of the batch alike would need every process's token count first; equal slices are
    simpler. Exact without random noise in the forward (the defaults); with --lora-dropout or
    --gumbel every process draws the same noise for its own slice, where one process draws new
    noise per slice."""
    n = world_size() * accum
    if len(batch) % n:  # check_batch_split ran, so only a data set smaller than a batch gets here
        raise SystemExit(f"{len(batch)} training rows do not split into {world_size()} process(es) x "
                         f"--grad-accum {accum} equal micro-batches: use more rows (--limit) or fewer pieces")
    size = len(batch) // n
    mine = shard(batch)  # (batch / P rows)
    return [mine[j * size:(j + 1) * size] for j in range(accum)]


def all_reduce_grads(params):
    """Average the trainable parameters' gradients over processes, after backward: what DDP does.
    Not the DistributedDataParallel wrapper: a CLaRa step is no single module call (a stage's loss
    runs compressor, query reasoner and generator sub-forwards under a context manager that picks
    the adapter), and only the current stage's adapters get gradients, which DDP would have to be
    told (find_unused_parameters). The LoRA gradients are a few MB, so one all-reduce after backward
    costs little. Every process builds the same model from the same seed and checkpoint, so equal
    averaged gradients keep the adapters equal, as DDP's do."""
    if not distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]  # the same list in every process
    flat = torch.cat([g.flatten() for g in grads])  # one message, not one per tensor
    dist.all_reduce(flat)  # sum over processes
    flat /= world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def gather_chunks(chunks, device):
    """Every process's list of tensors, joined in rank order, in every process: stage 3's vector
    cache is compressed in shards and every process needs all of it. all_gather_object, because the
    shards may differ in size; sent through the CPU, so a tensor never arrives on another's GPU."""
    if not distributed():
        return chunks
    parts = [None] * world_size()
    dist.all_gather_object(parts, [c.cpu() for c in chunks])
    return [c.to(device) for part in parts for c in part]


# --- FLOPs: tokens/s and MFU of train.py's log line ----------------------------------------------

class FlopCounter:
    """Model FLOPs of the backbone passes, for the tokens/s and MFU of the log line (nanoGPT's
    estimate_mfu, adapted). A pass over P real positions through layers holding W matmul weights
    costs 2 W P FLOPs forward, and 2 W P more backward when it needs gradients (input gradients
    only: the backbone is frozen; LoRA's and attention's T^2 terms are left out, a few percent).
    W counts the nn.Linear weights inside the blocks (under CLaRa each is the frozen base of a
    clara.LoRALinear). The LM head (D x V; tied to the input embeddings in SmolLM2, about a fifth
    of its weights) costs 2 D V per position whose logits are computed, and as much again backward:
    every position of a full forward, only the target positions in CLaRa.generator_loss, one per
    row and new token in greedy decoding."""

    def __init__(self, model):
        self.positions, self.flops, self._weights = 0, 0.0, {}
        model.backbone.base_model.register_forward_pre_hook(self._count, with_kwargs=True)
        model.backbone.get_output_embeddings().register_forward_hook(self._count_head)

    def _count(self, base, args, kwargs):
        mask, x = kwargs.get("attention_mask"), kwargs.get("inputs_embeds", kwargs.get("input_ids"))
        P = int(mask.sum()) if mask is not None else x.shape[0] * x.shape[1]
        n = len(base.layers)  # fewer when the compressor stops at memory_layer
        if n not in self._weights:
            self._weights[n] = sum(m.weight.numel() for m in base.layers.modules() if isinstance(m, torch.nn.Linear))
        self.positions += P
        self.flops += (4 if torch.is_grad_enabled() else 2) * self._weights[n] * P

    def _count_head(self, head, args, logits):
        D, V = args[0].shape[-1], logits.shape[-1]  # hidden states (..., D) -> logits (..., V)
        self.flops += (4 if torch.is_grad_enabled() else 2) * D * V * (logits.numel() // V)

    def take(self):
        """-> (positions, FLOPs) since the last call."""
        out = (self.positions, self.flops)
        self.positions, self.flops = 0, 0.0
        return out


def measure_peak_flops(device, autocast, n=2048, reps=5) -> float:
    """The FLOP/s a square matmul reaches on this device in the training dtype (the best of reps):
    the denominator of MFU, measured because CPU peaks are rarely published (train.py --peak-flops
    gives a datasheet value instead). On a busy machine it is too low, and MFU too high."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    with torch.no_grad(), autocast():
        (a @ b).sum().item()  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            (a @ b).sum().item()  # .item() waits for the device
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


# --- stage 3: the frozen compressor's vectors, computed once ------------------------------------

class VectorCache:
    """Stage 3 freezes theta_c, so each distinct passage of rows (their first n docs) is compressed once,
    under the model's autocast (docs/design.md section 4); looked up by text: B lists of n passages ->
    (B, n, l, D), kept on the CPU and moved to the model's device per batch (10^5 questions x 20 candidates
    would not fit a GPU). map_batches(fn, batches): [fn(b) for b in batches], or train.py's torchrun shards."""

    def __init__(self, model, rows, n=None, batch_size=16, map_batches=None):
        passages = sorted({d for r in rows for d in r["docs"][:n]})
        self.index = {p: i for i, p in enumerate(passages)}
        self.device = model.device

        def compress(chunk):  # b passages -> (b, l, D) on the CPU
            try:
                return model.compress(chunk).float().cpu()
            except RuntimeError as err:  # e.g. out of memory: say which rows' passages
                where = [r["where"] for r in rows if set(chunk) & set(r["docs"])]
                raise RuntimeError(f"compressing candidates of {', '.join(where[:5])}"
                                   f"{' ...' if len(where) > 5 else ''}: {err}") from err

        batches = [passages[i:i + batch_size] for i in range(0, len(passages), batch_size)]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            chunks = map_batches(compress, batches) if map_batches else [compress(b) for b in batches]
        model.train(was_training)
        self.vectors = torch.cat(chunks)  # (U, l, D) for U distinct passages

    def __call__(self, doc_lists):
        idx = torch.tensor([[self.index[d] for d in docs] for docs in doc_lists])  # (B, n)
        return self.vectors[idx].to(self.device)  # (B, n, l, D)
