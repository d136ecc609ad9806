"""Conversation benchmark: a thread's second turn on the same image vs its first, as a latency ratio.

For each route (img2llm, bridge by default) and each of --repeats repetitions, a new thread is started on a
fresh image (random shapes, never seen before, so the first turn really encodes it) and asked two questions:

1. the first turn, with the image: every vision encoder runs on it;
2. a follow-up without an image, about the same one: the vision features come from the cache (the trace's
   `image_encoded` / `bridge_image_encoded` say whether they did), the follow-up is resolved into a standalone
   question, and the first turn is in the prompt as history.

Each turn's latency is the wall time of `Conversation.ask` (thread-store checkpoint included, SQLite by
default in a temp folder). Routes alternate within each repetition, so drift on a busy machine hits both alike;
every route is warmed up on a throwaway thread first, so model loading is in neither turn. Per-node medians
show where the second turn saves time. CPU used by other processes while timing is printed: on the shared
2-core machine, read the ratios only when it is small.

Run from the project root:

    .venv/bin/python benchmarks/bench_conversation.py [--profile FILE|NAME] [--repeats 5] [--routes img2llm,bridge]

Default profile: `tiny` with the tiny Llama (`builtin:tiny-llama`) and tiny-blip2 (its projection matches the
tiny Llama's hidden size), as the tests use. Torch runs with one thread unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from typing import Any

from PIL import Image, ImageDraw

QUESTIONS = ("What colour is the circle?", "And what shape is next to it?")


def fresh_image(seed: int) -> Image.Image:
    """A scene no earlier repetition drew: a circle and two other shapes, colours and places from `seed`."""
    rng = random.Random(seed)

    def colour() -> tuple[int, int, int]:
        return rng.randrange(256), rng.randrange(256), rng.randrange(256)

    image = Image.new("RGB", (320, 240), colour())
    draw = ImageDraw.Draw(image)
    x, y = rng.randrange(10, 150), rng.randrange(10, 110)
    draw.ellipse((x, y, x + rng.randrange(40, 100), y + rng.randrange(40, 100)), fill=colour())
    x, y = rng.randrange(160, 250), rng.randrange(10, 150)
    draw.rectangle((x, y, x + rng.randrange(30, 60), y + rng.randrange(30, 80)), fill=colour())
    x, y = rng.randrange(40, 260), rng.randrange(160, 200)
    draw.polygon([(x, y + 35), (x + 30, y - 10), (x + 60, y + 35)], fill=colour())
    return image


def other_cpu_seconds() -> float | None:
    """CPU seconds the machine has used so far, less this process's; None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    total = psutil.cpu_times()
    busy = sum(getattr(total, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
    own = psutil.Process().cpu_times()
    return float(busy - own.user - own.system)


def encoded(answer: Any, route: str) -> bool:
    """Did the route encode the image on this turn (rather than take its features from the cache)?"""
    from vqagraph.engine.conversation import vision_encoded

    if route == "img2llm":
        return bool(answer.trace.img2llm["image_encoded"])
    if route == "bridge":
        return bool(answer.trace.bridge["image_encoded"])
    return vision_encoded(answer)  # both: any route that ran


def run_thread(engine: Any, store: str, route: str, image: Image.Image) -> list[dict[str, Any]]:
    """A new thread on `image`: both turns' latency, whether each encoded the image, per-node timings."""
    conversation = engine.conversation(store=store)
    record: list[dict[str, Any]] = []
    for turn, question in enumerate(QUESTIONS):
        start = time.perf_counter()
        answer = conversation.ask(question, image=image if turn == 0 else None, route=route)
        record.append({"seconds": time.perf_counter() - start, "encoded": encoded(answer, route),
                        "route": answer.route, "timings": answer.trace.timings, "history": answer.trace.history_turns})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile", default=None,
                        help="built-in profile or profile file (default: tiny + builtin:tiny-llama + tiny-blip2)")
    parser.add_argument("--repeats", type=int, default=5, help="threads per route, each on a fresh image")
    parser.add_argument("--routes", default="img2llm,bridge", help="comma-separated: img2llm, bridge, both")
    parser.add_argument("--store", default=None, help="thread store URL (default: SQLite in a temp folder)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fresh images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="vqagraph-bench-conv-")
    os.environ.setdefault("VQAGRAPH_CACHE", os.path.join(tempfile.gettempdir(), "vqagraph-bench-cache"))
    os.environ.setdefault("VQAGRAPH_DATA", work)  # thread images never go to the user's data folder
    store = args.store or os.path.join(work, "threads.sqlite")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from vqagraph import Engine

    start = time.perf_counter()
    if args.profile is None:
        engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"})
    else:
        engine = Engine.from_profile(args.profile)
    for route in routes:  # warm-up: models loaded, first-call overheads paid, on a throwaway thread and image
        engine.check_route(route)
        run_thread(engine, store, route, fresh_image(-1 - routes.index(route)))
    setup = time.perf_counter() - start

    print("Conversation benchmark (vqagraph): second turn on the same image vs the first")
    print(f"  machine : {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"device {engine.tools.device}, load average {os.getloadavg()[0]:.2f} before")
    print(f"  profile : {engine.profile.name} (llm {engine.profile.llm.id}, qformer "
          f"{engine.profile.qformer.id if engine.profile.qformer else '-'}); repeats={args.repeats}; store {store}")
    print(f"  turns   : 1. {QUESTIONS[0]!r} with a fresh image; 2. {QUESTIONS[1]!r} without one")
    print(f"  setup (models loaded, one warm-up thread per route): {setup:.1f} s")

    records: dict[str, list[list[dict[str, Any]]]] = {route: [] for route in routes}
    before, timed = other_cpu_seconds(), time.perf_counter()
    for rep in range(args.repeats):
        for index, route in enumerate(routes):
            image = fresh_image(args.seed * 1000 + rep * len(routes) + index)
            records[route].append(run_thread(engine, store, route, image))
    timed = time.perf_counter() - timed
    after = other_cpu_seconds()

    print(f"\n  {'route':<8} {'rep':>3}  {'1st turn s':>10}  {'2nd turn s':>10}  {'2nd/1st':>7}  "
          f"{'encoded 1st':>11}  {'encoded 2nd':>11}")
    for route in routes:
        for rep, rec in enumerate(records[route]):
            first, second = rec[0], rec[1]
            print(f"  {route:<8} {rep:>3}  {first['seconds']:>10.4f}  {second['seconds']:>10.4f}  "
                  f"{second['seconds'] / first['seconds']:>7.3f}  {first['encoded']!s:>11}  {second['encoded']!s:>11}")

    print(f"\n  {'route':<8} {'median 1st s':>12}  {'median 2nd s':>12}  {'median ratio':>12}  "
          f"{'2nd turn encoded':>16}")
    for route in routes:
        recs = records[route]
        firsts = [r[0]["seconds"] for r in recs]
        seconds = [r[1]["seconds"] for r in recs]
        ratios = [b / a for a, b in zip(firsts, seconds, strict=True)]
        reencoded = sum(r[1]["encoded"] for r in recs)
        print(f"  {route:<8} {statistics.median(firsts):>12.4f}  {statistics.median(seconds):>12.4f}  "
              f"{statistics.median(ratios):>11.3f}x  {f'{reencoded}/{len(recs)} turns':>16}")

    print("\n  where the time went (median seconds per node, 1st -> 2nd turn; the largest five of the 1st turn):")
    for route in routes:
        recs = records[route]
        nodes = {n for r in recs for turn in (0, 1) for n in r[turn]["timings"]} - {"total", "intake"}
        medians = {n: [statistics.median(r[turn]["timings"].get(n, 0.0) for r in recs) for turn in (0, 1)]
                   for n in nodes}
        top = sorted(medians.items(), key=lambda item: -item[1][0])[:5]
        history = {r[1]["history"] for r in recs}
        print(f"  {route:<8} " + ", ".join(f"{n} {a:.3f} -> {b:.3f}" for n, (a, b) in top)
              + f"  (2nd turn history: {sorted(history)} turn(s))")

    if before is not None and after is not None:
        busy = (after - before) / timed
        print(f"\nother processes used {busy:.2f} of {os.cpu_count()} CPUs on average while timing ({timed:.0f} s)")
    print(f"total run: {time.perf_counter() - start:.1f} s")
    engine.close()


if __name__ == "__main__":
    main()
