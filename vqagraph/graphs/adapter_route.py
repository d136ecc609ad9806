"""The adapter route (LLaMA-Adapter, docs/methods.md §9): the Q-Former's queries added to gated adaption prompts
inside the frozen LLM's top layers; the text carries no image tokens. Transformers backend only."""

from __future__ import annotations

from typing import Any

from vqagraph.answer import AdapterRecord
from vqagraph.config import Profile
from vqagraph.graphs import adapter_nodes
from vqagraph.graphs.routes import Route


def _describe(record: dict[str, Any]) -> str | None:
    if not record.get("adapter_layers"):
        return None
    gates = record.get("gates") or [0.0]
    return (f"adapter: {record.get('query_tokens', 0)} queries into {record['adapter_layers']} layers x "
            f"{record.get('adapter_len', 0)} prompts (gates {min(gates):.2f}-{max(gates):.2f}) + "
            f"{record.get('prompt', '')!r}")


def _available(profile: Profile) -> bool:
    """A checkpoint, and an LLM run in-process: vLLM cannot run the gated prompts, so the router never picks the
    route there."""
    backend = profile.llm_backend
    return profile.llama_adapter is not None and backend.kind == "transformers" and not backend.url


ADAPTER_ROUTE = Route(
    name="adapter",
    title="adapter route",
    summary="adapter route (LLaMA-Adapter): the queries in gated adaption prompts inside the LLM's top layers",
    record=AdapterRecord,
    nodes=(adapter_nodes.adapter_encode, adapter_nodes.adapter_prompt, adapter_nodes.adapter_answer),
    settings=lambda profile: profile.adapter,
    answer_cap=lambda profile: profile.adapter.max_new_tokens,
    available=_available,
    loads=("llama_adapter", "llm"),
    missing="no `llama_adapter` checkpoint, or an LLM not run in-process by transformers (vLLM cannot run the "
    "adapter's gated prompts)",
    optional_reads=("standalone_question", "history"),
    describe=_describe,
    prompt_tokens=lambda record: record.get("prompt_tokens", 0),
)
