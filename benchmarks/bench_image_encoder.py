"""Frozen image encoder micro-benchmark: what a second question about the same image saves through the feature cache.

Measured side by side in one run (median wall time over --repeats, the variants run alternately so drift on a
busy machine hits all alike; read the ratios, not the absolute times):

1. encode: `encoder.encode_pixels(encoder.pixels([image]))`, the `shapes` profile's frozen EfficientNet-Lite
   (vqagraph/tools/image_encoder.py) on one rendered Shapes-world scene: preprocessing + forward.
2. first request: `encoder(ref, image)` for a reference not yet cached: computes the grid and caches it.
3. second request: `encoder(ref, image)` again with the same reference: a feature-cache hit.

Only the encoder is loaded (`Toolkit(load_profile("shapes")).image_encoder`), not the question pipeline.

Run from the project root:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_image_encoder.py [--repeats 20] [--seed 1000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per variant (median reported)")
    parser.add_argument("--seed", type=int, default=10**6, help="the Shapes-world scene encoded")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from vqagraph.config import load_profile
    from vqagraph.media import image_ref
    from vqagraph.toolkit import Toolkit
    from vqagraph.world import generate_scene, render_scene

    encoder = Toolkit(load_profile("shapes")).image_encoder
    assert encoder is not None, "the shapes profile names a frozen image_encoder"
    image = render_scene(generate_scene(args.seed))
    ref = image_ref(image)
    encoder.encode_pixels(encoder.pixels([image]))  # warm-up

    times: dict[str, list[float]] = {"encode": [], "first request (miss)": [], "second request (hit)": []}
    for i in range(args.repeats):
        key = f"{ref}#{i}"  # a fresh reference each repeat, so the first request always misses
        times["encode"].append(timed(lambda: encoder.encode_pixels(encoder.pixels([image]))))
        times["first request (miss)"].append(timed(partial(encoder, key, image)))
        times["second request (hit)"].append(timed(partial(encoder, key, image)))
        assert not encoder(key, image)[1], "the second request must hit the cache"
    medians = {name: statistics.median(values) for name, values in times.items()}

    print(f"\nFrozen image encoder: {encoder.name} at {encoder.image_size}px, stages {encoder.stages}, grid "
          f"{encoder.grid}; scene seed {args.seed} ({image.width}x{image.height}); {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads; median of {args.repeats}")
    print(f"  {'variant':<22}  {'median ms':>10}  {'encode / variant':>16}")
    for name, seconds in medians.items():
        print(f"  {name:<22}  {1000 * seconds:>10.3f}  {medians['encode'] / seconds:>15.1f}x")


if __name__ == "__main__":
    main()
