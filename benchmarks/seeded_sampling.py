"""Seeded sampling on the two LLM backends: what a `seed` reproduces, and where the backends part.

The same Img2LLM prompt is sampled with `temperature`, `top_p` and a `seed`, for --seeds seeds, twice each, through
the transformers backend (in process) and through a vLLM server (`vqagraph llm serve`'s engine), and greedily once
on each. Printed:

1. each backend's repeatability: the same seed twice gives the same tokens (it must be all of them);
2. the backends against each other, seed by seed: the share of seeds whose tokens agree;
3. whether they sample the same distribution: the total variation distance between the two backends' first
   tokens over all seeds, beside the distance between two halves of one backend's seeds (sampling noise alone);
4. greedy: the two backends' tokens (equal, as bench_llm_backends.py measures on 16 prompts).

Why the tokens of one seed differ across backends (docs/serving.md): transformers draws with `torch.multinomial`
from torch's global generator seeded per request; vLLM's CPU sampler draws Gumbel noise per token from its own
SplitMix64 stream seeded from a per-request generator (its GPU sampler draws exponential noise instead), so the
same seed names different random numbers. Both sample the same distribution, which (3) checks.

Run from the project root (VQAGRAPH_CACHE defaults to /tmp/vqagraph-bench-cache, so conversions are reused):

    .venv/bin/python benchmarks/seeded_sampling.py [--model smollm2] [--seeds 100] [--temperature 1.0]
        [--top-p 0.9]

About 4 minutes on the 2-core machine with the defaults.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def tvd(a: Sequence[int], b: Sequence[int]) -> float:
    """Total variation distance between two samples' empirical distributions."""
    ca, cb = Counter(a), Counter(b)
    return 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in set(ca) | set(cb))


def main() -> None:
    from bench_llm_backends import MODELS, make_prompts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    args = parser.parse_args()
    run_start = time.perf_counter()

    os.environ.setdefault("VQAGRAPH_CACHE", "/tmp/vqagraph-bench-cache")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vqagraph.config import ModelRef
    from vqagraph.hub import resolve
    from vqagraph.tools.llm.base import GenerationParams
    from vqagraph.tools.llm.transformers_backend import TransformersLLM
    from vqagraph.tools.llm.vllm_client import VLLMClient
    from vqagraph.tools.llm.vllm_server import VLLMServer

    model_dir = resolve(ModelRef(id=MODELS[args.model]))
    prompt = make_prompts(4)[2]
    seeds = list(range(args.seeds))

    def sampled(seed: int) -> GenerationParams:
        return GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                seed=seed)

    greedy = GenerationParams(max_new_tokens=args.max_new_tokens)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hf = TransformersLLM(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer)
    runs: dict[str, list[list[list[int]]]] = {"transformers": [], "vLLM": []}
    for _ in range(2):
        runs["transformers"].append([hf.generate([prompt], sampled(s))[0].token_ids for s in seeds])
    hf_greedy = hf.generate([prompt], greedy)[0].token_ids
    with VLLMServer(model_dir, max_model_len=2048, served_name=args.model,
                    work_dir=Path(os.environ["VQAGRAPH_CACHE"]) / "vllm-bench",
                    extra_args=("--no-enable-prefix-caching",)) as server:
        import vllm

        client = VLLMClient(server.url, model_dir, model=args.model, timeout=300.0)
        for _ in range(2):
            runs["vLLM"].append([client.generate([prompt], sampled(s))[0].token_ids for s in seeds])
        vllm_greedy = client.generate([prompt], greedy)[0].token_ids
        client.close()

    print(f"model {args.model} ({MODELS[args.model]}); vLLM {vllm.__version__}; {len(seeds)} seeds, temperature "
          f"{args.temperature}, top_p {args.top_p}, {args.max_new_tokens} new tokens; prompt of "
          f"{hf.count_tokens(prompt)} tokens\n")
    for name, (first, second) in runs.items():
        same = sum(a == b for a, b in zip(first, second, strict=True))
        print(f"{name}: the same seed twice gives the same tokens for {same}/{len(seeds)} seeds")
    hf_run, vllm_run = runs["transformers"][0], runs["vLLM"][0]
    agree = sum(a == b for a, b in zip(hf_run, vllm_run, strict=True))
    print(f"transformers vs vLLM, seed by seed: {agree}/{len(seeds)} seeds give the same tokens")
    hf_first, vllm_first = [t[0] for t in hf_run], [t[0] for t in vllm_run]
    half = len(seeds) // 2
    print(f"first token, distinct values: transformers {len(set(hf_first))}, vLLM {len(set(vllm_first))}; "
          f"total variation distance transformers vs vLLM {tvd(hf_first, vllm_first):.3f}; sampling noise "
          f"(each backend's seed halves against each other): transformers {tvd(hf_first[:half], hf_first[half:]):.3f}, "
          f"vLLM {tvd(vllm_first[:half], vllm_first[half:]):.3f}")
    top = Counter(hf_first + vllm_first).most_common(5)
    print("most frequent first tokens (transformers / vLLM counts): " + ", ".join(
        f"{tokenizer.decode([t])!r} {hf_first.count(t)}/{vllm_first.count(t)}" for t, _ in top))
    verdict = "equal" if hf_greedy == vllm_greedy else "DIFFER"
    print(f"greedy: transformers {hf_greedy} vs vLLM {vllm_greedy}: {verdict}")
    print(f"\nwhole run {time.perf_counter() - run_start:.0f} s")


if __name__ == "__main__":
    main()
