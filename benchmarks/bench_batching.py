"""Many questions at once: batched vs one by one, side by side in one run (shapes profile, SmolLM2-135M).

0. The frozen image encoder alone: seconds for N images by images per forward pass (the CPU's chunk size).
1. Each route, N questions on N different images: `Engine.answer_batch` vs `Engine.answer` one by one, each arm
   on a fresh engine (cold feature cache, models loaded and warmed on another image first). Answers compared.
   With --text-route-llm-waits, an experiment: the text route again with its LLM stage waiting for every
   question of the batch (the runtime's batches wait only for questions still running, and on a CPU the text
   route's earlier stages hand questions over one at a time), with transformers and with the in-process vLLM
   engine (no padding): what gathering its LLM prompts could give at most.
2. The server: C concurrent clients vs the same C requests one after another (p50/p95 latency), transformers
   backend; with --vllm also a vLLM server as the LLM backend (its start-up kept out of the table).
3. Where a warm question's time goes, per route: seconds inside the batched model stages (LLM, GradCAM +
   captions, question generation) and the encoders, against the graph, state, intake and post-processing rest.

    .venv/bin/python benchmarks/bench_batching.py [--n 32] [--clients 16] [--vllm] [--text-route-llm-waits]

Ratios are what matters: both arms run on the same machine, one after the other, in one process.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("VQAGRAPH_CACHE", "/tmp/vqagraph-bench-cache")


def questions(n: int, seed: int = 91_000_001) -> list[Any]:
    """One question for each of n generated scenes (n different images), families mixed."""
    from vqagraph.eval.datasets import load_dataset
    from vqagraph.world import write_dataset

    out = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    write_dataset(out, seed, n, per_family=1)
    items, seen = [], set()
    for item in load_dataset(out / "questions.jsonl"):
        if item.image not in seen and not item.marks and item.family != "knowledge":
            seen.add(item.image)
            items.append(item)
    return items[:n]


def engine(profile: str, **overrides: Any) -> Any:
    from vqagraph.engine import Engine
    from vqagraph.eval.harness import request_for
    from vqagraph.graphs.registry import ROUTES

    built = Engine.from_profile(profile, **overrides)
    warm = questions(1, seed=91_500_001)[0]
    for route in ROUTES.available(built.profile):
        built.answer(request_for(warm, route))  # load and warm every model on another image
    return built


def wait_for_every_question(built: Any) -> None:
    """The experiment of --text-route-llm-waits, not a runtime mode: the text LLM batcher goes only when every
    question in flight waits at it (its window is set to ten minutes)."""
    texts = built.tools.llm.texts
    texts._everyone_here = lambda: len(texts._pending) >= built.in_flight.count


def arm_routes(profile: str, n: int, routes: tuple[str, ...] = ("bridge", "projection", "img2llm"),
               label: str = "transformers", llm_waits: bool = False, **overrides: Any) -> None:
    from vqagraph.eval.harness import request_for

    items = questions(n)
    print(f"\n1. {len(items)} questions on {len(items)} images, per route: one by one vs answer_batch "
          f"(batch {len(items)}), LLM backend: {label}")
    print(f"{'route':<12}{'one by one s':>14}{'batched s':>12}{'ratio':>8}{'equal answers':>16}"
          f"{'LLM stage s':>20}{'LLM ratio':>11}   batch sizes (LLM)")

    def llm_seconds(llm: Any) -> float:
        return float(llm.texts.stats.seconds + llm.embeds.stats.seconds)

    for route in routes:
        requests = [request_for(item, route) for item in items]
        alone_engine = engine(profile, **overrides)
        sized = hasattr(alone_engine.tools.llm, "texts")  # a vLLM server is not wrapped: it batches what arrives
        llm_before = llm_seconds(alone_engine.tools.llm) if sized else 0.0
        start = time.perf_counter()
        alone = [alone_engine.answer(r) for r in requests]
        alone_s = time.perf_counter() - start
        alone_llm = llm_seconds(alone_engine.tools.llm) - llm_before if sized else float("nan")
        batch_engine = engine(profile, **overrides)
        if llm_waits:
            wait_for_every_question(batch_engine)
        llm = batch_engine.tools.llm
        before = (len(llm.texts.stats.sizes), len(llm.embeds.stats.sizes)) if sized else (0, 0)
        llm_before = llm_seconds(llm) if sized else 0.0
        start = time.perf_counter()
        batched = batch_engine.answer_batch(requests, batch_size=len(requests))
        batch_s = time.perf_counter() - start
        batch_llm = llm_seconds(llm) - llm_before if sized else float("nan")
        equal = sum(a.answer == b.answer for a, b in zip(alone, batched, strict=True))  # type: ignore[union-attr]
        sizes = (llm.texts.stats.sizes[before[0]:] + llm.embeds.stats.sizes[before[1]:]) if sized \
            else "(vLLM batches)"
        late = llm.texts.stats.window_ran_out + llm.embeds.stats.window_ran_out if sized else 0
        sizes = f"{sizes}" + (f" ({late} went at the window's end)" if late else "")
        # The LLM stage's own ratio bounds the route's: on a CPU its prefill is compute-bound, batched or not.
        print(f"{route:<12}{alone_s:>14.1f}{batch_s:>12.1f}{alone_s / batch_s:>7.2f}x{equal:>10}/{len(requests)}"
              f"{alone_llm:>11.1f} → {batch_llm:<5.1f}{alone_llm / batch_llm:>9.2f}x   {sizes}")


def arm_encoder(profile: str, n: int) -> None:
    """The frozen CNN alone on n new images, at each chunk size (images per forward pass): where its batches
    stop paying on this machine (config.CPU_ENCODER_CHUNK)."""
    from PIL import Image

    built = engine(profile)
    encoder = built.tools.image_encoder
    if encoder is None:
        print("\n0. the profile has no frozen image encoder")
        return
    pixels = encoder.pixels([Image.open(item.image) for item in questions(n)])
    chunk = encoder.chunk
    print(f"\n0. the frozen image encoder on {n} images: seconds by images per forward pass")
    try:
        encoder.chunk = None
        encoder.encode_pixels(pixels[:4])  # warm
        for size in (1, 2, 4, 8, 16, 32):
            start = time.perf_counter()
            for i in range(0, n, size):
                encoder.encode_pixels(pixels[i : i + size])
            print(f"  {size:>3} per pass: {time.perf_counter() - start:.3f} s")
    finally:
        encoder.chunk = chunk


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def serve(engine_: Any, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    from vqagraph.agents.openai_server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(engine_, max_pending=256), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def arm_server(profile: str, clients: int, label: str, **overrides: Any) -> None:
    import httpx

    from vqagraph.tools.llm.vllm_server import free_port

    items = questions(clients, seed=92_000_001)
    built = engine(profile, **overrides)
    port = free_port()
    server, thread = serve(built, port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"

    def body(item: Any) -> dict[str, Any]:
        content = [{"type": "text", "text": item.question},
                   {"type": "image_url", "image_url": {"url": data_url(item.image)}}]
        return {"model": "vqagraph", "vqagraph": {"route": "bridge"},
                "messages": [{"role": "user", "content": content}]}

    def one(payload: bytes) -> float:
        start = time.perf_counter()
        response = httpx.post(url, content=payload, headers={"Content-Type": "application/json"}, timeout=600)
        response.raise_for_status()
        return time.perf_counter() - start

    def payloads(batch: list[Any]) -> list[bytes]:  # made before the clock starts: the clients share our GIL
        return [json.dumps(body(item)).encode() for item in batch]

    try:
        one(payloads(items[:1])[0])  # warm the server path
        sent = payloads(items)
        start = time.perf_counter()
        sequential = [one(payload) for payload in sent]
        sequential_s = time.perf_counter() - start
        # New images for the concurrent arm too: a cached image would flatter it.
        fresh = payloads(questions(clients, seed=93_000_001))
        stage, llm = built.tools.qformer.batcher.stats.sizes, getattr(built.tools.llm, "embeds", None)
        marks = len(stage), len(llm.stats.sizes) if llm is not None else 0
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            concurrent = list(pool.map(one, fresh))
        concurrent_s = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(30)

    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]

    sizes = llm.stats.sizes[marks[1]:] if llm is not None else "(vLLM batches)"
    print(f"{label:<28}{sequential_s:>10.1f}{concurrent_s:>12.1f}{sequential_s / concurrent_s:>7.2f}x"
          f"{statistics.median(sequential):>9.2f}{p95(sequential):>8.2f}{statistics.median(concurrent):>9.2f}"
          f"{p95(concurrent):>8.2f}   concurrent batches: Q-Former {stage[marks[0]:]}, LLM {sizes}")


def arm_accounting(profile: str) -> None:
    """Seconds inside the model stages of one warm question per route, against the rest."""
    from vqagraph.eval.harness import request_for

    built = engine(profile)
    tools = built.tools
    items = iter(questions(3, seed=94_000_001))
    timed: dict[str, float] = {}

    def clock(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timed[name] = timed.get(name, 0.0) + time.perf_counter() - start

        return run

    llm = tools.llm.llm
    llm.generate = clock("LLM", llm.generate)
    llm.generate_from_embeddings = clock("LLM", llm.generate_from_embeddings)
    captioner = tools.region_captioner
    captioner.batcher.run_batch = clock("GradCAM + captions + ITM", captioner.batcher.run_batch)
    qg = tools.question_generator
    qg.batcher.run_batch = clock("question generator", qg.batcher.run_batch)
    qformer, projector = tools.qformer, tools.projector
    qformer.pixels_or_grid.many = clock("vision (Q-Former's)", qformer.pixels_or_grid.many)  # type: ignore[method-assign]
    qformer.bridge.soft_prompt = clock("Q-Former", qformer.bridge.soft_prompt)
    projector.patch_features = clock("vision (projector's)", projector.patch_features)
    projector.bridge.project = clock("projector", projector.bridge.project)
    print("\n3. one warm question per route (a new image): seconds in the model stages vs the rest")
    for route in ("bridge", "projection", "img2llm"):
        timed.clear()
        answer = built.answer(request_for(next(items), route))  # warm models, a new image: nothing cached
        total = answer.trace.timings["total"]
        inside = sum(timed.values())
        stages = ", ".join(f"{k} {v:.3f}" for k, v in timed.items())
        rest = {k: v for k, v in answer.trace.timings.items() if k in ("intake", "render_marks", "resolve_followup",
                                                                      "router", "pick_answer")}
        print(f"  {route:<11} total {total:.3f} s, in models {inside:.3f} s ({100 * inside / total:.0f}%): {stages}; "
              f"the rest {total - inside:.3f} s (intake, marks, router, pick: {sum(rest.values()):.3f} s; graph, "
              f"state, prompts and post-processing the remainder)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="shapes")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--vllm", action="store_true", help="also the server with a vLLM server as the LLM")
    parser.add_argument("--text-route-llm-waits", action="store_true",
                        help="also the text route with its LLM stage waiting for every question (an experiment), "
                        "with transformers and with the in-process vLLM engine")
    parser.add_argument("--only", choices=["encoder", "routes", "server", "accounting"], default=None)
    args = parser.parse_args()
    if args.only in (None, "encoder"):
        arm_encoder(args.profile, args.n)
    if args.only in (None, "routes"):
        arm_routes(args.profile, args.n)
        if args.text_route_llm_waits:
            from vqagraph.config import CPU_STAGE_LIMITS

            waits = {"stage_max_batch": {**CPU_STAGE_LIMITS, "llm": args.n}, "window_ms": 600_000}
            arm_routes(args.profile, args.n, ("img2llm",), "transformers, the LLM waiting for every question",
                       llm_waits=True, batching=waits)
            arm_routes(args.profile, args.n, ("img2llm",), "vLLM engine, the LLM waiting for every question",
                       llm_waits=True, llm_backend={"kind": "vllm-engine"}, batching=waits)
    if args.only in (None, "server"):
        print(f"\n2. the server, {args.clients} requests (bridge route): one after another vs {args.clients} "
              "concurrent clients")
        print(f"{'LLM backend':<28}{'seq s':>10}{'concurrent s':>12}{'ratio':>8}{'seq p50':>9}{'p95':>8}"
              f"{'conc p50':>9}{'p95':>8}")
        arm_server(args.profile, args.clients, "transformers (batched)")
        if args.vllm:
            from vqagraph import hub
            from vqagraph.config import load_profile
            from vqagraph.tools.llm.vllm_server import VLLMServer

            model_dir = hub.resolve(load_profile(args.profile).llm)
            start = time.perf_counter()
            with VLLMServer(model_dir, max_model_len=2048,
                            work_dir=Path(os.environ["VQAGRAPH_CACHE"]) / "vllm-bench") as vllm:
                print(f"  (vLLM server started in {time.perf_counter() - start:.0f} s)")
                arm_server(args.profile, args.clients, "vLLM server", llm_backend={"kind": "vllm-server",
                                                                                  "url": vllm.url})
    if args.only in (None, "accounting"):
        arm_accounting(args.profile)


if __name__ == "__main__":
    import signal
    import sys

    # SIGTERM unwinds like Ctrl-C, so the vLLM servers started here stop their process groups on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
