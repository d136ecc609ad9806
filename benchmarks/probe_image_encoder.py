"""Linear probe of the frozen image encoder: how well do its features name a Shapes-world object's shape and colour?

For each configuration (EfficientNet-Lite variant, input size, stages), the script renders `--scenes` generated
scenes (seeds in [10**6, 2*10**6), disjoint from the small seeds tests and training use), computes each image's
feature grid exactly as the runtime does (`FrozenImageEncoder`, vqagraph/tools/image_encoder.py: finer stages
average-pooled to the coarsest grid), and averages each object's features over its visible mask (the mask
box-resized to the grid, each cell weighted by the fraction of it the object covers; objects that cover no cell
are skipped). Objects are split 75/25 by scene; a multinomial logistic regression (standardised features, L2,
full-batch LBFGS) is fitted per attribute and its test accuracy reported per size word and overall, with the
encoder's milliseconds per image at batch 1 (preprocessing + forward, median) measured in the same run.

Run from the project root:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/probe_image_encoder.py [--scenes 400] [--seed 0] \
        [--configs lite0@224:4 lite0@224:2,4 lite0@320:4 lite2@260:4 lite2@320:4]

A configuration is `VARIANT@SIZE:STAGES`, e.g. `lite0@224:2,4`. Torch runs on one thread (`--threads`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from vqagraph.world import SIZE_WORDS, Scene, generate_scene, render_scene, visible_masks

DEFAULT_CONFIGS = ["lite0@224:4", "lite0@224:2,4", "lite0@320:4", "lite2@260:4", "lite2@320:4"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_config(text: str) -> tuple[str, int, list[int]]:
    variant, rest = text.split("@")
    size, stages = rest.split(":")
    return f"efficientnet-{variant.removeprefix('efficientnet-')}", int(size), [int(s) for s in stages.split(",")]


def make_encoder(variant: str, size: int, stages: list[int]) -> Any:
    from vqagraph.hub import cache_root
    from vqagraph.media import FeatureCache
    from vqagraph.models.efficientnet_lite import EfficientNetLiteModel, ensure_efficientnet_lite
    from vqagraph.tools.image_encoder import FrozenImageEncoder

    model = EfficientNetLiteModel.from_pretrained(ensure_efficientnet_lite(variant, cache_root()))
    return FrozenImageEncoder(model, size, stages, FeatureCache(), variant)


def coverage(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The fraction of each grid cell the mask covers (box resampling = exact area average)."""
    image = Image.fromarray(mask.astype(np.float32), "F")
    return np.asarray(image.resize((cols, rows), Image.Resampling.BOX), dtype=np.float32)


def object_features(encoder: Any, scenes: list[Scene], images: list[Image.Image], masks: list[list[np.ndarray]],
                    batch: int = 16) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One mask-weighted feature vector per object with any coverage; plus its (scene index, object index)."""
    feats: list[np.ndarray] = []
    keys: list[tuple[int, int]] = []
    for start in range(0, len(images), batch):
        grids = encoder.encode_pixels(encoder.pixels(images[start:start + batch])).numpy()
        for offset, grid in enumerate(grids):
            i = start + offset
            rows, cols = grid.shape[-2:]
            for j, mask in enumerate(masks[i]):
                weights = coverage(mask, rows, cols)
                if weights.sum() > 0:
                    feats.append((grid * weights).sum(axis=(1, 2)) / weights.sum())
                    keys.append((i, j))
        log(f"    {min(start + batch, len(images))}/{len(images)} images")
    return np.stack(feats), keys


def seconds_per_image(encoder: Any, images: list[Image.Image], n: int = 20) -> float:
    """Median seconds of one request's encoding (preprocessing + forward, batch 1) over `n` images."""
    encoder.encode_pixels(encoder.pixels(images[:1]))  # warm-up
    times = []
    for image in images[:n]:
        start = time.perf_counter()
        encoder.encode_pixels(encoder.pixels([image]))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_probe(x: np.ndarray, y: np.ndarray, classes: int, weight_decay: float = 1e-3) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features, full-batch LBFGS with an L2 penalty."""
    torch.manual_seed(0)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    probe = torch.nn.Linear(x.shape[1], classes)
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(inputs), targets) + weight_decay * probe.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return probe


def probe_accuracy(feats: np.ndarray, labels: list[str], sizes: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """Test accuracy per size word and overall ("all"); NaN for a size word with no test object."""
    names = sorted(set(labels))
    y = np.array([names.index(label) for label in labels])
    mean, std = feats[train].mean(axis=0), feats[train].std(axis=0) + 1e-6
    x = ((feats - mean) / std).astype(np.float32)
    probe = fit_probe(x[train], y[train], len(names))
    with torch.no_grad():
        correct = probe(torch.from_numpy(x[~train])).argmax(dim=1).numpy() == y[~train]
    test_sizes = sizes[~train]
    result = {word: float(correct[test_sizes == word].mean()) if (test_sizes == word).any() else float("nan")
              for word in SIZE_WORDS}
    result["all"] = float(correct.mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=400, help="generated scenes (about 3.5 objects each)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the scene seeds and the train/test split")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="VARIANT@SIZE:STAGES, e.g. lite0@224:4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    rng = np.random.default_rng(args.seed)
    seeds = rng.choice(10**6, size=args.scenes, replace=False) + 10**6
    log(f"rendering {args.scenes} scenes")
    scenes = [generate_scene(int(seed)) for seed in seeds]
    images = [render_scene(scene) for scene in scenes]
    masks = [visible_masks(scene) for scene in scenes]
    train_scenes = rng.permutation(args.scenes) < round(0.75 * args.scenes)

    order = [*SIZE_WORDS[::-1], "all"]  # large .. tiny, then all
    rows: list[str] = []
    counts: dict[str, int] = {}
    for text in args.configs:
        variant, size, stages = parse_config(text)
        log(f"{text}: {variant} at {size}px, stages {stages}")
        encoder = make_encoder(variant, size, stages)
        feats, keys = object_features(encoder, scenes, images, masks)
        train = np.array([train_scenes[i] for i, _ in keys])
        objects = [scenes[i].objects[j] for i, j in keys]
        sizes = np.array([obj.size_word for obj in objects])
        shape = probe_accuracy(feats, [obj.shape for obj in objects], sizes, train)
        colour = probe_accuracy(feats, [obj.colour for obj in objects], sizes, train)
        ms = 1000 * seconds_per_image(encoder, images)
        cells = " | ".join(f"{100 * acc[w]:.1f}" for acc in (shape, colour) for w in order)
        grid = "x".join(str(side) for side in encoder.grid)
        rows.append(f"| {text} | {encoder.channels} | {grid} | {cells} | {ms:.1f} |")
        counts = {w: int((sizes[~train] == w).sum()) for w in order[:-1]} | {"all": int((~train).sum())}
        log(f"  shape {shape['all']:.3f} colour {colour['all']:.3f}, {ms:.1f} ms/image")

    header = " | ".join([f"shape {w}" for w in order] + [f"colour {w}" for w in order])
    print(f"\nLinear probe, test accuracy % ({args.scenes} scenes, seed {args.seed}, {torch.get_num_threads()} torch "
          f"threads); ms/image: batch 1, preprocessing + forward, median of 20\n")
    print(f"| config | channels | grid | {header} | ms/image |")
    print("|" + "---|" * (len(order) * 2 + 4))
    print("\n".join(rows))
    print("\ntest objects per size word: " + ", ".join(f"{w} {n}" for w, n in counts.items()))


if __name__ == "__main__":
    main()
