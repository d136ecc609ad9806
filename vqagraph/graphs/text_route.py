"""The Img2LLM text route (docs/methods.md §1): region captions → exemplars → prompt → frozen LLM."""

from __future__ import annotations

from typing import Any

from vqagraph.answer import TextRouteRecord
from vqagraph.graphs import nodes
from vqagraph.graphs.routes import Route


def _describe(record: dict[str, Any]) -> str | None:
    stats = record.get("caption_stats")
    if not stats:
        return None
    return (f"captions: {stats.get('kept', 0)} kept of {stats.get('generated', 0)} generated "
            f"in {stats.get('rounds', 0)} round(s)")


TEXT_ROUTE = Route(
    name="img2llm",
    title="text route",
    summary="text route (Img2LLM): question-guided captions and synthetic QA exemplars in a text prompt",
    record=TextRouteRecord,
    nodes=(nodes.region_captions, nodes.question_generation, nodes.img2llm_prompt, nodes.llm_answer),
    settings=lambda profile: profile.img2llm,
    answer_cap=lambda profile: profile.img2llm.answer_max_new_tokens,
    loads=("region_captioner", "question_generator", "extractor", "llm"),
    optional_reads=("visual_prompt.boxes", "standalone_question", "history"),
    describe=_describe,
    prompt_tokens=lambda record: int(record.get("prompt_stats", {}).get("tokens", 0)),
)
