"""A `FrozenLLM` whose calls from concurrent questions run as one batched call (tools/batching.py).

Each prompt (or prompt-embedding sequence) waits at a batcher with the others in flight; prompts with the same
generation settings go to the backend together, each with its own token callback, so streaming still works per
question. Greedy answers equal those of the prompt alone (left padding is masked; tests/test_batching.py). On a
CPU only the prompt embeddings gather (config.CPU_STAGE_LIMITS says why); text prompts go one at a time.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

import torch

from vqagraph.errors import ProfileError
from vqagraph.models.llama_adapter import AdaptionPrompts
from vqagraph.tools.batching import Batcher, BatchPolicy
from vqagraph.tools.llm.base import FrozenLLM, Generation, GenerationParams, OnToken, OnTokens, row_callbacks

Call = tuple[Any, GenerationParams, OnToken]  # a prompt (text or embeddings), its settings, its token callback
AdaptedCall = tuple[torch.Tensor, GenerationParams, OnToken, AdaptionPrompts]  # and its adaption prompts


class BatchedLLM:
    """Wraps a backend that is not safe for concurrent use (transformers, the in-process vLLM engine)."""

    def __init__(self, llm: FrozenLLM, policy: BatchPolicy) -> None:
        self.llm = llm
        self.name = llm.name
        self.texts: Batcher[Call, Generation] = policy.batcher(
            lambda calls: llm.generate([c[0] for c in calls], calls[0][1], [c[2] for c in calls]), _same_settings,
            "llm")
        self.embeds: Batcher[Call, Generation] = policy.batcher(
            lambda calls: llm.generate_from_embeddings([c[0] for c in calls], calls[0][1], [c[2] for c in calls]),
            _same_settings, "llm_embeddings")
        self.adapted: Batcher[AdaptedCall, Generation] = policy.batcher(self._adapted_batch, _same_adapter,
                                                                        "llm_adapted")

    @property
    def context_length(self) -> int:
        return self.llm.context_length

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def count_tokens(self, text: str) -> int:
        return self.llm.count_tokens(text)

    def input_embeddings(self) -> torch.Tensor:
        return self.llm.input_embeddings()

    def generate(
        self, prompts: list[str], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        return self._each(self.texts, prompts, params, on_token)

    def generate_from_embeddings(
        self, embeds: list[torch.Tensor], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]:
        return self._each(self.embeds, embeds, params, on_token)

    def generate_adapted(
        self, embeds: list[torch.Tensor], adaption: list[AdaptionPrompts], params: GenerationParams | None = None,
        on_token: OnTokens = None,
    ) -> list[Generation]:
        """Prompt embeddings, each with its LLaMA-Adapter prompts; the transformers backend only
        (`TransformersLLM.generate_adapted`)."""
        if not hasattr(self.llm, "generate_adapted"):
            raise ProfileError(f"{type(self.llm).__name__} cannot run adaption prompts: the adapter route needs the "
                               "transformers backend")
        settings = params or GenerationParams()
        callbacks = [_in_this_context(call) for call in row_callbacks(on_token, len(embeds))]
        return self.adapted.map([(e, settings, call, prompts) for e, call, prompts in zip(embeds, callbacks, adaption,
                                                                                           strict=True)])

    def _adapted_batch(self, calls: list[AdaptedCall]) -> list[Generation]:
        return self.llm.generate_adapted(  # type: ignore[attr-defined, no-any-return]
            [c[0] for c in calls], [c[3] for c in calls], calls[0][1], [c[2] for c in calls])

    @staticmethod
    def _each(batcher: Batcher[Call, Generation], inputs: Sequence[Any], params: GenerationParams | None,
              on_token: OnTokens) -> list[Generation]:
        settings = params or GenerationParams()
        callbacks = [_in_this_context(call) for call in row_callbacks(on_token, len(inputs))]
        return batcher.map([(x, settings, call) for x, call in zip(inputs, callbacks, strict=True)])


def _in_this_context(call: OnToken) -> OnToken:
    """The callback, run in its caller's context wherever the batch runs: a LangGraph stream writer reads the
    run's config from a context variable, which the model thread does not have."""
    if call is None:
        return None
    context = contextvars.copy_context()
    return lambda text: context.run(call, text)


def _same_adapter(call: AdaptedCall) -> Any:
    """Calls share a batch when their settings share one and their prompts come from one adapter (its gates)."""
    return (_same_settings(call[:3]), id(call[3].gates))  # type: ignore[arg-type]


def _same_settings(call: Call) -> Any:
    """Greedy calls with equal settings share a batch; a sampled one runs alone, so its seed draws as it would."""
    params = call[1]
    return params.model_dump_json() if params.temperature == 0 else id(call)
