"""Text-route micro-benchmarks: what batching the captions and encoding the image once save.

Two comparisons, measured side by side in one run (median wall time over --repeats; the two variants of
each comparison are run alternately, so drift on a busy machine hits both alike):

1. Caption generation: M captions from one batched `BlipCaptioner.caption(patch_embeds[M, K, D])` call vs
   M calls with one row each. patch_embeds: the image encoded once, K patches per row sampled from the
   question's GradCAM map, as `RegionCaptioner` does.
2. ITM filtering: `BlipMatcher.match_probability` with the image encoded once and all M captions scored in
   one batched call vs the image re-encoded for every caption, each caption scored alone.

(The graph-overhead comparison that stood third here compared unequal work: its "direct tool calls" arm took
another route than `Engine.ask` and gave another answer. Where a question's time goes, inside the models or in
the graph, state and post-processing, is now measured per node by benchmarks/bench_batching.py, arm 3.)

Run from the project root:

    .venv/bin/python benchmarks/bench_text_route.py [--profile tiny] [--repeats 3] [--captions 16] [--seed 0]

Torch runs with one thread by default here (`--threads 0` keeps torch's own default): on the 2-core machine,
any other busy process made 2-thread kernels stall, up to 10-50x slower and with batched/per-row ratios
that flipped from run to run, and the tiny models are no faster on two threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image, ImageDraw


def make_image() -> Image.Image:
    image = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 120, 120), fill=(220, 30, 30))
    draw.rectangle((170, 60, 290, 180), fill=(30, 60, 220))
    draw.polygon([(60, 220), (110, 140), (160, 220)], fill=(40, 170, 60))
    return image


def alternate(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[float, float, Any, Any]:
    """Median seconds of `a` and of `b`, run alternately; plus the last result of each."""
    times: tuple[list[float], list[float]] = ([], [])
    results: list[Any] = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((a, b)):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1]), results[0], results[1]


def table(title: str, fast_name: str, fast: float, slow_name: str, slow: float, note: str = "") -> None:
    width = max(len(fast_name), len(slow_name), 34)
    print(f"\n{title}")
    print(f"  {'variant':<{width}}  {'median s':>10}")
    print(f"  {fast_name:<{width}}  {fast:>10.4f}")
    print(f"  {slow_name:<{width}}  {slow:>10.4f}")
    print(f"  {'ratio (second / first)':<{width}}  {slow / fast:>9.2f}x")
    if note:
        print(f"  {note}")


def sampled_patches(embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows of `embeds` (1, 1 + N, D) gathered at `ids` (M, K): (M, K, D), as RegionCaptioner gathers."""
    gather = ids.to(embeds.device)[..., None].expand(-1, -1, embeds.shape[-1])
    return torch.gather(embeds.expand(ids.shape[0], -1, -1), 1, gather)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", help="built-in profile name or profile file")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    parser.add_argument("--captions", type=int, default=16, help="M: captions per batch")
    parser.add_argument("--seed", type=int, default=0, help="seeds patch sampling and caption sampling")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if not os.environ.get("VQAGRAPH_CACHE"):
        os.environ["VQAGRAPH_CACHE"] = tempfile.mkdtemp(prefix="vqagraph-bench-")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from vqagraph import Engine

    start = time.perf_counter()
    engine = Engine.from_profile(args.profile)
    tools, s = engine.tools, engine.profile.img2llm
    image = make_image()
    question = "What color is the circle?"
    ref = engine.add_image(image)
    matcher, captioner = tools.matcher, tools.captioner

    # Patch ids as RegionCaptioner samples them: K per row from the question's GradCAM map, +1 skips CLS.
    probs, _, _ = tools.region_captioner.gradcam(ref, image, question)
    m, k = args.captions, min(s.num_patches, probs.shape[0])
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.multinomial(probs.cpu().expand(m, -1), k, replacement=False, generator=generator)
    ids = (ids + 1).sort(dim=1).values
    cap_patches = sampled_patches(captioner.encode_image(image), ids)
    setup = time.perf_counter() - start

    print("Text-route benchmark (vqagraph)")
    print(f"  machine : {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch threads,"
          f" device {tools.device}")
    print(f"  profile : {engine.profile.name}; M={m} captions, K={k} patches of {probs.shape[0]},"
          f" D={cap_patches.shape[-1]}; repeats={args.repeats}, seed={args.seed}")
    print(f"  setup (models loaded, GradCAM): {setup:.2f} s")

    # 1. Caption generation: one batched generate vs M single-row generates.
    def caption_batched() -> list[str]:
        return captioner.caption(cap_patches, s, seed=args.seed)

    def caption_rows() -> list[str]:
        return [captioner.caption(cap_patches[i : i + 1], s, seed=args.seed + i)[0] for i in range(m)]

    caption_batched(), caption_rows()  # warm-up
    fast, slow, texts, _ = alternate(caption_batched, caption_rows, args.repeats)
    table(f"1. Caption generation ({m} captions, K={k})", f"batched: 1 call x {m} rows", fast,
          f"per-row: {m} calls x 1 row", slow)

    # 2. ITM filtering: encode once + one batched call vs re-encode + score per caption.
    texts = [t or "." for t in texts]

    def itm_once() -> torch.Tensor:
        return matcher.match_probability(sampled_patches(matcher.encode_image(image), ids), texts)

    def itm_each() -> torch.Tensor:
        scores = [matcher.match_probability(sampled_patches(matcher.encode_image(image), ids[i : i + 1]), [text])
                  for i, text in enumerate(texts)]
        return torch.cat(scores)

    itm_once(), itm_each()  # warm-up
    fast, slow, p_once, p_each = alternate(itm_once, itm_each, args.repeats)
    table(f"2. ITM filtering ({m} captions)", "encode once, 1 batched call", fast,
          f"encode + score per caption ({m}x)", slow,
          f"max |P(match) difference| between the two: {(p_once - p_each).abs().max().item():.2e}")

    print(f"\ntotal run: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
