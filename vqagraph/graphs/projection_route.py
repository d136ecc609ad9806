"""The LLaVA projection route (docs/methods.md §7): projector soft prompt → prompt text → frozen LLM."""

from __future__ import annotations

from typing import Any

from vqagraph.answer import ProjectionRecord
from vqagraph.graphs import projection_nodes
from vqagraph.graphs.routes import Route


def _describe(record: dict[str, Any]) -> str | None:
    if not record.get("image_tokens"):
        return None
    return f"projection: {record['image_tokens']} image tokens in {record.get('prompt', '')!r}"


PROJECTION_ROUTE = Route(
    name="projection",
    title="projection route",
    summary="projection route (LLaVA): the projected image tokens placed in the prompt",
    record=ProjectionRecord,
    nodes=(projection_nodes.projection_encode, projection_nodes.projection_prompt,
           projection_nodes.projection_answer),
    settings=lambda profile: profile.projection,
    answer_cap=lambda profile: profile.projection.max_new_tokens,
    available=lambda profile: profile.projector is not None,
    loads=("projector", "llm"),
    missing="no `projector` checkpoint (LLaVA)",
    optional_reads=("history",),
    describe=_describe,
    prompt_tokens=lambda record: record.get("prompt_tokens", 0) + record.get("image_tokens", 0),
)
