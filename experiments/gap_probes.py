"""The probes behind the notes on the own-vs-shuffled gap (docs/design.md section 8), kept so their
figures can be re-run. Each prints held-out or training losses with own and shuffled vectors.

    python experiments/gap_probes.py massive-dims           # the memory vectors under each memory_norm
    python experiments/gap_probes.py init-layers            # gap at initialisation, per memory layer
    python experiments/gap_probes.py overfit                # 8 fixed sentences: does the path carry them?
    python experiments/gap_probes.py frozen-generator       # stage 1 with the generator frozen (60 steps)
    python experiments/gap_probes.py codeword --position bare --steps 30     # the code word is the passage
    python experiments/gap_probes.py codeword --steps 40                     # one code word of 20, random place
    python experiments/gap_probes.py codeword --position end --steps 40      # ... just before the MEM tokens
    python experiments/gap_probes.py single-qa --batch-size 8 --steps 40   # stage-2 format, only the gold passage
    python experiments/gap_probes.py overfit --backbone tiny --steps 10   # a quick check of the script

Add --memory-norm rescale for the figures measured before the standardize fix (README, "Why the generator
ignored the vectors"). Other probes of the notes are train.py flags: `--curriculum 60`, `--memory-layer 8`,
`--pretrain-kinds paraphrase --steps 150 20 40` (README, the probe table).
"""
import argparse
import os
import random
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clara  # noqa: E402
import corpus  # noqa: E402
import metrics  # noqa: E402
import train  # noqa: E402


def gap(model, docs, targets):
    """(own, shuffled) paraphrase-target CE of a batch, in eval mode."""
    model.eval()
    with torch.no_grad():
        own = model.pretrain_loss(docs, targets, ["paraphrase"] * len(docs))["ce"].item()
        donors = metrics.shuffle_donors([[d] for d in docs], [[d] for d in docs])
        shuffled = model.pretrain_loss(docs, targets, ["paraphrase"] * len(docs), donors=donors)["ce"].item()
    model.train()
    return own, shuffled


def init_layers(args):
    """No training: which memory_layer lets the untuned generator read a passage?"""
    rows = [r for r in corpus.pretrain_rows(corpus.build_world(0), "heldout") if r["data_type"] == "paraphrase"][:8]
    docs, targets = [r["docs"][0] for r in rows], [r["answers"][0] for r in rows]
    model = clara.CLaRa(*clara.load_backbone(args.backbone), clara.CLaRaConfig(backbone=args.backbone))
    for layer in args.layers:
        for norm in clara.MEMORY_NORMS:
            model.config.memory_layer, model.config.memory_norm = layer, norm
            model.calibrate_memory_norm()
            own, sh = [sum(x) / 2 for x in zip(gap(model, docs[:4], targets[:4]), gap(model, docs[4:], targets[4:]))]
            print(f"layer {layer:3d} {norm:11s}: own {own:.3f} shuffled {sh:.3f} gap {sh - own:+.3f}")


def massive_dims(args):
    """No training: what the memory vectors of 8 held-out corpus passages look like under each
    memory_norm. One massive-activation dimension dominates the raw residual stream (README, "Why
    the generator ignored the vectors")."""
    docs = [r["docs"][0] for r in corpus.pretrain_rows(corpus.build_world(0), "heldout")
            if r["data_type"] == "paraphrase"][:8]
    model = clara.CLaRa(*clara.load_backbone(args.backbone), clara.CLaRaConfig(backbone=args.backbone))
    model.eval()
    for norm in clara.MEMORY_NORMS:
        model.config.memory_norm = norm
        with torch.no_grad():
            M = model.compress(docs)  # (8, l, D)
        energy = M.pow(2).mean((0, 1))  # (D,) mean squared value per dimension
        top = int(energy.argmax())
        flat = torch.nn.functional.normalize(M.flatten(1), dim=-1)
        cos = (flat @ flat.T)[~torch.eye(len(docs), dtype=torch.bool)].mean()
        print(f"{norm:11s}: vector norm {M.norm(dim=-1).mean():7.2f} | largest dimension {top} holds "
              f"{energy[top] / energy.sum():.0%} of the squared norm | cosine between passages {cos:.3f}")


def overfit(args):
    """8 fixed first sentences, target = the sentence: the memorising route (lr 1e-3, batch 4)."""
    torch.manual_seed(0)
    rows = corpus.pretrain_rows(corpus.build_world(0), "train")[0:24:3]
    docs = [r["docs"][0].split(". ")[0] + "." for r in rows]
    model = clara.CLaRa(*clara.load_backbone(args.backbone),
                        clara.CLaRaConfig(backbone=args.backbone, lora_dropout=0.0, memory_norm=args.memory_norm))
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
    train.main(["--stage", "pretrain", "--backbone", args.backbone, "--out", out, "--memory-norm", args.memory_norm,
                "--steps", str(args.steps), "1", "1", "--log-every", "10"])


WORDS = ("apple river candle mirror tiger violet anchor bishop copper dragon falcon garden harbor island "
         "jacket lantern marble needle orange pepper").split()


def _instruct_probe(args, train_rows, held_rows):
    """Train theta_c, theta_g and MEM on (question, [docs], answer) rows, --batch-size, lr 1e-3 (x
    --compressor-lr-mult for theta_c and MEM); print the held-out own/shuffled answer loss."""
    torch.manual_seed(0)
    rng = random.Random(0)
    model = clara.CLaRa(*clara.load_backbone(args.backbone),
                        clara.CLaRaConfig(backbone=args.backbone, lora_dropout=0.0, memory_norm=args.memory_norm))
    params = train.trainable(model, "pretrain")
    opt = torch.optim.AdamW(train.param_groups(model, params, 1e-3, args.compressor_lr_mult), weight_decay=0.0)
    cols = lambda rows: ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    for step in range(args.steps):
        loss = model.instruct_loss(*cols(rng.sample(train_rows, args.batch_size)))["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 10 == 0:
            model.eval()
            with torch.no_grad():
                batches = [cols(held_rows[i:i + 8]) for i in range(0, len(held_rows), 8)]
                own = sum(model.instruct_loss(*b)["ce"].item() for b in batches) / len(batches)
                sh = sum(model.instruct_loss(*b, donors=metrics.shuffle_donors(b[1], b[1]))["ce"].item()
                         for b in batches) / len(batches)
            model.train()
            print(f"step {step + 1:3d}: held-out own {own:.3f} shuffled {sh:.3f} gap {sh - own:+.3f}", flush=True)


def codeword(args):
    """docs/design.md section 8's toy inside real corpus passages: "The code word is X" (X one of 20)
    inserted at a random sentence boundary or at the end, or as the whole passage ("bare");
    question "What is the code word?"."""
    def make(rows, rng):
        out = []
        for r in rows:
            sentences, word = r["docs"][0].split(". "), rng.choice(WORDS)
            i = len(sentences) if args.position == "end" else rng.randrange(len(sentences))
            sentences.insert(i, f"The code word is {word}")
            doc = f"The code word is {word}." if args.position == "bare" else ". ".join(sentences)
            out.append(("What is the code word?", [doc], word))
        return out
    world = corpus.build_world(0)
    rows = {s: [r for r in corpus.pretrain_rows(world, s) if r["data_type"] == "paraphrase"] for s in ("train", "heldout")}
    _instruct_probe(args, make(rows["train"], random.Random(0)), make(rows["heldout"], random.Random(1))[:32])


def single_qa(args):
    """Stage-2 rows of the corpus with only the gold passage (k = 1): the code-word task with real facts."""
    world = corpus.build_world(0)
    pick = lambda rows: [(r["question"], [r["docs"][r["pos_index"][0]]], r["answer"]) for r in rows]
    _instruct_probe(args, pick(corpus.instruct_rows(world, "train")), pick(corpus.instruct_rows(world, "heldout"))[:32])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probe", choices=("init-layers", "massive-dims", "overfit", "frozen-generator", "codeword",
                                     "single-qa"))
    p.add_argument("--position", choices=("random", "end", "bare"), default="random",
                   help="codeword: where X goes (bare: the sentence is the whole passage)")
    p.add_argument("--compressor-lr-mult", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=4, help="codeword, single-qa")
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--memory-norm", choices=clara.MEMORY_NORMS, default="standardize",
                   help="all but init-layers (which tries each); 'rescale' was the default before the standardize fix")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--layers", type=int, nargs="+", default=[-1, -2, -4, -8, -16, 8, 4, 2, 1],
                   help="init-layers: the memory_layer values to try")
    a = p.parse_args()
    {"init-layers": init_layers, "massive-dims": massive_dims, "overfit": overfit, "frozen-generator": frozen_generator,
     "codeword": codeword, "single-qa": single_qa}[a.probe](a)
