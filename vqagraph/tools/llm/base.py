"""`FrozenLLM`: what both routes need from a served LLM, whatever serves it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, Field

OnToken = Callable[[str], None] | None  # called with each new piece of text as the LLM writes it (batch of 1)
OnTokens = OnToken | Sequence[OnToken]  # one callback for a batch of one, or one per prompt of a batch


def row_callbacks(on_token: OnTokens, rows: int) -> list[OnToken]:
    """One callback (or None) per prompt: a single callback streams only a batch of one."""
    if on_token is None or callable(on_token):
        return [on_token] if rows == 1 else [None] * rows
    callbacks = list(on_token)
    if len(callbacks) != rows:
        raise ValueError(f"{len(callbacks)} token callbacks for {rows} prompts")
    return callbacks


class GenerationParams(BaseModel):
    """Greedy by default (temperature 0), 1-10 new tokens as Img2LLM answers (docs/methods.md §1.7)."""

    max_new_tokens: int = Field(10, ge=1)
    min_new_tokens: int = Field(1, ge=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: list[str] = Field(
        default_factory=list, description="end the completion before the first of these strings, as vLLM's `stop`: "
        "decoding past the answer costs time and its tokens must not count in the answer's confidence")
    top_logprobs: int = Field(
        0, ge=0, le=20, description="return the first new token's most likely tokens, this many, with their "
        "log-probabilities (OpenAI's and vLLM's `logprobs: k`): a yes/no answer's calibration weighs them")


class Generation(BaseModel):
    """One completion; every backend returns exactly this."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]
    first_top_logprobs: dict[int, float] = Field(
        default_factory=dict, description="with `top_logprobs` k: the first new token's k most likely token ids")

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else float("-inf")


def cut_at_stop(
    decode: Callable[[list[int]], str], ids: list[int], logprobs: list[float], stop: Sequence[str]
) -> tuple[str, list[int], list[float], bool]:
    """The text before the first stop string and the tokens wholly before the one that completes it: every backend
    cuts here (vLLM ends generation at that token), so an answer's confidence is over the answer's tokens alone."""
    if stop:
        for end in range(1, len(ids) + 1):
            text = decode(ids[:end])
            hits = [text.find(s) for s in stop if s and s in text]
            if hits:
                return text[: min(hits)], ids[: end - 1], logprobs[: end - 1], True
    return decode(ids), ids, logprobs, False


@runtime_checkable
class FrozenLLM(Protocol):
    """A frozen decoder LLM: text or prompt embeddings in, completions with log-probabilities out."""

    name: str

    @property
    def context_length(self) -> int: ...

    @property
    def tokenizer(self) -> Any: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(
        self, prompts: list[str], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]: ...

    def generate_from_embeddings(
        self, embeds: list[torch.Tensor], params: GenerationParams | None = None, on_token: OnTokens = None
    ) -> list[Generation]: ...

    def input_embeddings(self) -> torch.Tensor: ...
