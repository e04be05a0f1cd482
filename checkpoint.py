"""CLaRa checkpoints: only what training changed, loaded exactly.

A checkpoint directory holds config.json (the CLaRaConfig and the backbone's fingerprint) and
adapters.safetensors (the three LoRA adapters and the memory tokens). Tensors are read with
safetensors (no pickle); a checkpoint from another configuration or backbone is refused with the
path and the field at fault. clara.CLaRa.save / load / load_trainable call these.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields

import torch

CONFIG, TENSORS = "config.json", "adapters.safetensors"


def fingerprint(backbone) -> dict:
    """What must match for adapters to fit a backbone."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
    return {k: getattr(backbone.config, k) for k in keys}


def save(model, directory: str):
    """Write config.json and adapters.safetensors atomically (renamed last: never half-written)."""
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    meta = {"config": asdict(model.config), "backbone": fingerprint(model.backbone)}
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.trainable_state_dict().items()}
    save_file(tensors, os.path.join(directory, TENSORS + ".tmp"))
    with open(os.path.join(directory, CONFIG + ".tmp"), "w") as f:
        json.dump(meta, f, indent=2)
    for name in (TENSORS, CONFIG):
        os.replace(os.path.join(directory, name + ".tmp"), os.path.join(directory, name))


def load_tensors(directory: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # tensors only: no pickle
    return load_file(os.path.join(directory, TENSORS))


def load(cls, directory: str, backbone=None):
    """Rebuild a `cls` (CLaRa) from save(): backbone = (model, tokenizer) or None to load the one
    the config names."""
    from clara import CLaRaConfig, load_backbone
    path = os.path.join(directory, CONFIG)
    with open(path) as f:
        meta = json.load(f)
    unknown = set(meta["config"]) - {f.name for f in fields(CLaRaConfig)}
    if unknown:
        raise ValueError(f"{path}: unknown config fields {sorted(unknown)}")
    config = CLaRaConfig(**meta["config"])
    if backbone is None and config.backbone is None:
        raise ValueError(f"{path}: the checkpoint does not name its backbone; pass backbone=(model, tokenizer)")
    model, tokenizer = backbone if backbone is not None else load_backbone(config.backbone)
    if fingerprint(model) != meta["backbone"]:
        raise ValueError(f"{path}: checkpoint was trained on backbone {meta['backbone']}, "
                         f"but the given backbone is {fingerprint(model)}")
    clara = cls(model, tokenizer, config)
    load_trainable(clara, load_tensors(directory), directory)
    return clara


@torch.no_grad()
def load_trainable(model, tensors: dict[str, torch.Tensor], where: str = "checkpoint"):
    """Copy saved adapters and memory tokens in, refusing any missing, extra or misshapen one."""
    own = model.trainable_state_dict()
    if set(tensors) != set(own):
        raise ValueError(f"{where}: tensors do not match this configuration: missing "
                         f"{sorted(set(own) - set(tensors))[:3]}, unexpected "
                         f"{sorted(set(tensors) - set(own))[:3]}")
    for name, value in tensors.items():
        if value.shape != own[name].shape:
            raise ValueError(f"{where}: {name} has shape {tuple(value.shape)}, "
                             f"this configuration needs {tuple(own[name].shape)}")
        own[name].copy_(value)
