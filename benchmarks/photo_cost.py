"""What a question about a real photograph costs (issue 33's target: at most 2x a text-route question on a Shapes
scene), measured side by side in one run.

Two engines, loaded and warmed up first (one question each, not timed): the `shapes` profile's text route on
Shapes-world questions (generated scenes, a seed no training uses) and the photo profile (`auto`, default: the
default profile) on the photo dev set's questions. The questions alternate, one at a time (no batching), so drift on
a busy machine hits both alike. Each question's cost is the wall time of `Engine.ask`; per-node medians show
where the photo's time goes (tags, OCR, the LLM). CPU used by other processes while timing is printed: on the
shared 2-core machine, read the ratio only when it is small.

Run from the project root, after `python benchmarks/photos/fetch.py --out data/photos`:

    .venv/bin/python benchmarks/photo_cost.py --photos data/photos [--questions 12] [--photo-profile NAME|FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench_llm_backends import other_cpu_seconds  # benchmarks/ is on the path when run as a script

from vqagraph.config import DEFAULT_PROFILE
from vqagraph.engine import Engine
from vqagraph.world import write_dataset

SEED = 7_100_001  # Shapes scenes no training run uses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, required=True, help="the photo dev set (benchmarks/photos/fetch.py)")
    parser.add_argument("--questions", type=int, default=12, help="questions of each kind (default 12)")
    parser.add_argument("--photo-profile", default=DEFAULT_PROFILE)
    parser.add_argument("--shapes-profile", default="shapes")
    args = parser.parse_args()

    photo_items = [json.loads(line) for line in (args.photos / "questions.jsonl").read_text().splitlines()]
    # Every family in turn, so the sample is not all object questions.
    by_family: dict[str, list[dict[str, str]]] = defaultdict(list)
    for item in photo_items:
        by_family[item["family"]].append(item)
    photo_items = [q for group in zip(*by_family.values(), strict=False) for q in group]
    photo_items += [q for group in by_family.values() for q in group if q not in photo_items]
    photo_items = photo_items[: args.questions + 1]
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp), SEED, args.questions + 1, per_family=1)
        shapes_items = [json.loads(line) for line in (Path(tmp) / "questions.jsonl").read_text().splitlines()]
        shapes_items = [q for q in shapes_items if not q.get("marks")][: args.questions + 1]
        shapes, photos = Engine.from_profile(args.shapes_profile), Engine.from_profile(args.photo_profile)
        # Warm-up: models loaded, first-call costs paid, not timed.
        shapes.ask(Path(tmp) / shapes_items[0]["image"], shapes_items[0]["question"], route="img2llm")
        photos.ask(args.photos / photo_items[0]["image"], photo_items[0]["question"])
        seconds: dict[str, list[float]] = {"shapes": [], "photos": []}
        nodes: dict[str, list[float]] = defaultdict(list)
        before, start = other_cpu_seconds(), time.perf_counter()
        for shape_q, photo_q in zip(shapes_items[1:], photo_items[1:], strict=False):
            t = time.perf_counter()
            shapes.ask(Path(tmp) / shape_q["image"], shape_q["question"], route="img2llm")
            seconds["shapes"].append(time.perf_counter() - t)
            t = time.perf_counter()
            answer = photos.ask(args.photos / photo_q["image"], photo_q["question"])
            seconds["photos"].append(time.perf_counter() - t)
            for node, took in answer.trace.timings.items():
                nodes[node].append(took)
        wall = time.perf_counter() - start
        elsewhere = other_cpu_seconds() - before
    shapes_median, photos_median = statistics.median(seconds["shapes"]), statistics.median(seconds["photos"])
    print(f"questions: {len(seconds['shapes'])} of each, alternating, one at a time; torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"shapes ({args.shapes_profile}), text route, Shapes scenes: median {shapes_median:.2f} s")
    print(f"photos ({args.photo_profile}), auto, the photo dev set:   median {photos_median:.2f} s")
    print(f"ratio photo / Shapes text route: {photos_median / shapes_median:.2f} (target <= 2)")
    print("photo question, median per node (s): " + ", ".join(
        f"{node} {statistics.median(values):.2f}" for node, values in sorted(nodes.items(), key=lambda kv: -max(kv[1]))
        if node != "total"))
    print(f"CPU used by other processes while timing: {max(0.0, elsewhere):.1f} s over {wall:.1f} s of wall time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
