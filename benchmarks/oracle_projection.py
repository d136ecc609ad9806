"""Where the projection route loses what it sees: its LM stage trained on perfect image tokens.

`vqagraph-lab --projection`'s own recipe (the same scenes, seed, warm start, batches, schedule and held-out
questions: docs/methods.md §7), with one change: each of the 49 image tokens is not the frozen encoder's pooled
grid cell but the truth about that cell, each object's colour, shape and size word one-hot (and `background`),
weighted by how much of the cell it covers. The held-out accuracy curve against the real run's (its
`training.json`, step by step) says how much of the gap to the targets is the vision (what the perfect tokens
gain) and how much is the LM stage itself (what even perfect tokens do not reach in the same steps through the
frozen SmolLM2-135M).

    python benchmarks/oracle_projection.py --out /tmp/oracle-projection [--budget-minutes 45] [--threads 1]
        [--llm builtin:qwen2.5-coder-0.5b-instruct] [--resume]

With `--llm` the same recipe runs against another frozen LLM (the projector's width follows its hidden size):
whether perfect tokens through a larger LLM rise above SmolLM2-135M's curve decides whether the Shapes-world
bridges are worth retraining against it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from vqagraph_lab import projection as P

from vqagraph.world.scene import COLOURS, SHAPES, SIZE_WORDS

WORDS = [*COLOURS, *SHAPES, *SIZE_WORDS, "background"]


def oracle_tokens(pictures: P.Pictures) -> torch.Tensor:
    """(N, cells, words): each cell's coverage-weighted mix of its objects' attribute one-hots and background."""
    index = {w: k for k, w in enumerate(WORDS)}
    n, _, slots = pictures.cover.shape
    attributes = torch.zeros(n, slots, len(WORDS))
    for j in range(n):
        for i, obj in enumerate(pictures.texts(j).scene.objects):
            for word in (obj.colour, obj.shape, obj.size_word):
                attributes[j, i, index[word]] = 1.0
        attributes[j, slots - 1, index["background"]] = 1.0
    return torch.einsum("nco,nod->ncd", pictures.cover, attributes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-minutes", type=float, default=45)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--real", type=Path, default=P.WEIGHTS_DIR / P.NAME / "training.json",
                        help="the real run's training.json to compare with")
    parser.add_argument("--llm", default=P.LLM, help="the frozen LLM (a builtin: id, a Hub id or a folder)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the run's last checkpoint under --out (the budget counts the time before)")
    args = parser.parse_args()

    real_make = P.make_pictures

    def make_oracle(*a: Any, **k: Any) -> P.Pictures:
        pictures = real_make(*a, **k)
        return dataclasses.replace(pictures, tokens=oracle_tokens(pictures))

    P.make_pictures = make_oracle  # the one change: the image tokens
    plan = dataclasses.replace(P.FULL, budget_s=60 * args.budget_minutes)
    notes = P.train_projection(args.out, threads=args.threads, plan=plan, llm=args.llm, resume=args.resume)
    real = json.loads(args.real.read_text())
    real_at = {h["step"]: h for h in real.get("continued_from", real)["heldout_accuracy"]}
    families = [k for k in notes["heldout_accuracy"][-1] if k != "step"]
    print("\nheld-out accuracy (150 questions of 60 unseen scenes), perfect image tokens vs the frozen encoder's:")
    print(f"{'step':>6}" + "".join(f"{f:>18}" for f in families))
    for h in notes["heldout_accuracy"]:
        other = real_at.get(h["step"])
        print(f"{h['step']:>6}" + "".join(
            f"{h[f]:>9.1f} vs {other[f]:>5.1f}" if other else f"{h[f]:>9.1f} vs     —" for f in families))


if __name__ == "__main__":
    main()
