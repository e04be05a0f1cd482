"""What the memory vectors of 8 held-out corpus passages look like under each memory_norm, with no
training: SmolLM2-135M's residual stream has one massive-activation dimension that dominates the raw
states, and memory_norm="standardize" removes it (docs/design.md section 8). Prints, per choice,
the mean vector norm, the largest dimension's share of the squared norm, and the mean cosine
between passages.

    python experiments/massive_dims.py                    # the figures of docs/design.md section 8
    python experiments/massive_dims.py --backbone tiny    # a quick check of the script
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clara  # noqa: E402
import corpus  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="smollm2-135m")
    args = p.parse_args(argv)
    docs = [r["docs"][0] for r in corpus.pretrain_rows(corpus.build_world(0), "heldout")
            if r["data_type"] == "paraphrase"][:8]
    model = clara.CLaRa(*clara.load_backbone(args.backbone), clara.CLaRaConfig(backbone=args.backbone)).eval()
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


if __name__ == "__main__":
    main()
