"""The probes behind the notes on the own-vs-shuffled gap (DESIGN.md section 8), kept so their
figures can be re-run. Each prints held-out or training losses with own and shuffled vectors.

    python experiments/gap_probes.py init-layers            # gap at initialisation, per memory layer
    python experiments/gap_probes.py overfit                # 8 fixed sentences: does the path carry them?
    python experiments/gap_probes.py frozen-generator       # stage 1 with the generator frozen (60 steps)
    python experiments/gap_probes.py overfit --backbone tiny --steps 10   # a quick check of the script

Other probes of the notes are train.py flags: `--curriculum 60`, `--memory-layer 8`.
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clara  # noqa: E402
import corpus  # noqa: E402
import train  # noqa: E402


def gap(model, docs, targets):
    """(own, shuffled) paraphrase-target CE of a batch, in eval mode."""
    model.eval()
    with torch.no_grad():
        own = model.pretrain_loss(docs, targets, ["paraphrase"] * len(docs))["ce"].item()
        shuffled = model.pretrain_loss(docs, targets, ["paraphrase"] * len(docs), shuffle=True)["ce"].item()
    model.train()
    return own, shuffled


def init_layers(args):
    """No training: which memory_layer lets the untuned generator read a passage?"""
    rows = [r for r in corpus.pretrain_rows(corpus.build_world(0), "heldout") if r["data_type"] == "paraphrase"][:8]
    docs, targets = [r["docs"][0] for r in rows], [r["answers"][0] for r in rows]
    model = clara.CLaRa(*clara.load_backbone(args.backbone), clara.CLaRaConfig(backbone=args.backbone))
    for layer in args.layers:
        for rescale in (True, False):
            model.config.memory_layer, model.config.rescale_memory = layer, rescale
            own, sh = [sum(x) / 2 for x in zip(gap(model, docs[:4], targets[:4]), gap(model, docs[4:], targets[4:]))]
            print(f"layer {layer:3d} rescale {rescale}: own {own:.3f} shuffled {sh:.3f} gap {sh - own:+.3f}")


def overfit(args):
    """8 fixed first sentences, target = the sentence: the memorising route (lr 1e-3, batch 4)."""
    torch.manual_seed(0)
    rows = corpus.pretrain_rows(corpus.build_world(0), "train")[0:24:3]
    docs = [r["docs"][0].split(". ")[0] + "." for r in rows]
    model = clara.CLaRa(*clara.load_backbone(args.backbone),
                        clara.CLaRaConfig(backbone=args.backbone, lora_dropout=0.0))
    opt = torch.optim.Adam(list(model.trainable_state_dict().values()), lr=1e-3)
    for step in range(args.steps):
        batch = docs[(step % 2) * 4:(step % 2) * 4 + 4]
        loss = model.pretrain_loss(batch, batch, ["paraphrase"] * 4)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 10 == 0:
            own, sh = gap(model, docs[:4], docs[:4])
            print(f"step {step + 1:3d}: own {own:.3f} shuffled {sh:.3f} gap {sh - own:+.3f}", flush=True)


def frozen_generator(args):
    """Stage 1 training only the compressor and MEM embeddings; the default run's held-out gap."""
    train.TRAINS["pretrain"] = ("compressor", "memory")
    out = tempfile.mkdtemp(prefix="frozen_generator_")
    train.main(["--stage", "pretrain", "--backbone", args.backbone, "--out", out,
                "--steps", str(args.steps), "1", "1", "--log-every", "10"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", choices=("init-layers", "overfit", "frozen-generator"))
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--layers", type=int, nargs="+", default=[-1, -2, -4, -8, -16, 8, 4, 2, 1],
                   help="init-layers: the memory_layer values to try")
    a = p.parse_args()
    {"init-layers": init_layers, "overfit": overfit, "frozen-generator": frozen_generator}[a.probe](a)
