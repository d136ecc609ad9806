"""What the vLLM backends share: the served model's tokenizer and embedding table, read from its local
directory, and one way to turn generated token ids into a `Generation`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vqagraph.tools.llm.base import Generation, cut_at_stop
from vqagraph.tools.llm.embedding_table import read_embedding_table


class LocalCheckpoint:
    """Mixin: subclasses set `model_dir`, `_tokenizer` and `_eos` (the ids that end a completion)."""

    model_dir: Path
    _tokenizer: Any
    _eos: set[int]
    _table: torch.Tensor | None = None

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text).input_ids)

    def input_embeddings(self) -> torch.Tensor:
        if self._table is None:
            self._table = read_embedding_table(self.model_dir)
        return self._table

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    def completion(self, ids: list[int], logprobs: list[float], finish_reason: str | None,
                   stop: Sequence[str] = (), first_top_logprobs: dict[int, float] | None = None) -> Generation:
        """Drop a trailing EOS (the transformers backend never reports it), cut at a stop string as the
        transformers backend does (vLLM returns the token that completed it), and decode the rest."""
        if ids and ids[-1] in self._eos:
            ids, logprobs = ids[:-1], logprobs[: len(ids) - 1]
        text, ids, logprobs, stopped = cut_at_stop(self._decode, ids, logprobs, stop)
        finish = "stop" if finish_reason == "stop" or stopped else "length"
        return Generation(text=text, token_ids=ids, logprobs=logprobs, finish_reason=finish,
                          first_top_logprobs=first_top_logprobs or {})
