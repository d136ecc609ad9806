"""What a text-route question costs with each frozen LLM, side by side in one run.

The same generated questions go through `Engine.ask(route="img2llm")` once per arm, the arms taking turns question
by question (drift on a busy machine hits all alike). Each arm is an engine over the same profile with another LLM
or LLM setting; the vision models are loaded once and shared. Printed per arm: the median seconds per question,
the median of the LLM node alone (the trace's per-node timings), the answers' VQA accuracy over these questions
(a sanity check, not an evaluation: `vqagraph eval` is that), and the ratio to the first arm, today's default
(SmolLM2-135M, generating to the 10-token cap).

    python benchmarks/llm_cost.py /tmp/data/test [--n 20] [--profile shapes]
        [--arm "name=builtin:smollm2-135m-instruct"] ...   (default: the arms below)

An arm is NAME=LLM[,stop][,int8][,chat][,vllm]: `stop` ends generation at the first newline (the routes' default
now), `int8` quantises the LLM's linear layers (transformers backend), `chat` uses the LLM's chat template,
`vllm` runs the LLM on vLLM's in-process CPU engine instead of transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

SMOL, QWEN = "builtin:smollm2-135m-instruct", "builtin:qwen2.5-coder-0.5b-instruct"
# int8 is not among the defaults: it lost 9-17 points of Qwen-0.5B's ceiling (README, "The built-in LLMs").
DEFAULT_ARMS = [f"SmolLM2 today={SMOL}", f"SmolLM2 stop={SMOL},stop", f"Qwen-0.5B stop={QWEN},stop",
                f"Qwen-0.5B chat stop={QWEN},stop,chat"]


def arm_overrides(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, value = spec.partition("=")
    llm, *flags = value.split(",")
    overrides: dict[str, Any] = {"llm": llm, "img2llm": {"stop": ["\n"] if "stop" in flags else [],
                                                         "prompt_format": "chat" if "chat" in flags else "img2llm"}}
    if "int8" in flags:
        overrides["llm_backend"] = {"quantize": "int8-dynamic"}
    if "vllm" in flags:
        overrides["llm_backend"] = {"kind": "vllm-engine", "max_model_len": 2048}
    return name, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path, help="a folder written by `vqagraph world split`")
    parser.add_argument("--profile", default="shapes")
    parser.add_argument("--n", type=int, default=20, help="questions (the split's first N, knowledge excluded)")
    parser.add_argument("--arm", action="append", default=None, help="NAME=LLM[,stop][,int8][,chat][,vllm]")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from vqagraph import Engine
    from vqagraph.eval.metric import vqa_accuracy

    questions = [json.loads(line) for line in (args.split / "questions.jsonl").read_text().splitlines()
                 if line.strip()]
    questions = [q for q in questions if q["family"] != "knowledge"][: args.n]
    engines = {}
    for spec in args.arm or DEFAULT_ARMS:
        name, overrides = arm_overrides(spec)
        engines[name] = Engine.from_profile(args.profile, **overrides)
        engines[name].ask(str(args.split / questions[0]["image"]), questions[0]["question"], route="img2llm")  # warm

    total: dict[str, list[float]] = defaultdict(list)
    llm_node: dict[str, list[float]] = defaultdict(list)
    scores: dict[str, list[float]] = defaultdict(list)
    tokens: dict[str, list[int]] = defaultdict(list)
    for item in questions:
        image = str(args.split / item["image"])
        for name, engine in engines.items():
            start = time.perf_counter()
            answer = engine.ask(image, item["question"], route="img2llm")
            total[name].append(time.perf_counter() - start)
            llm_node[name].append(answer.trace.timings.get("llm_answer", float("nan")))
            scores[name].append(vqa_accuracy(answer.answer, item["answers"]))
            tokens[name].append(len(answer.trace.route_answers["img2llm"]["token_ids"]))

    base = statistics.median(total[next(iter(engines))])
    print(f"\n{len(questions)} questions of {args.split}, profile {args.profile}, text route; medians, side by side")
    print(f"{'arm':<28}{'s/question':>11}{'LLM node s':>11}{'new tokens':>11}{'accuracy':>9}{'vs first':>9}")
    for name in engines:
        med = statistics.median(total[name])
        print(f"{name:<28}{med:>11.2f}{statistics.median(llm_node[name]):>11.2f}"
              f"{statistics.mean(tokens[name]):>11.1f}{statistics.mean(scores[name]):>9.1f}{med / base:>8.2f}x")


if __name__ == "__main__":
    main()
