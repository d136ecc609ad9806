"""The VQA graph's state: strings, numbers and content hashes only, so any checkpointer can store it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from vqagraph.toolkit import Toolkit


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer for per-node records (timings), which several nodes write."""
    return {**(left or {}), **(right or {})}


class VQAState(TypedDict, total=False):
    # inputs
    image_ref: str  # `sha256:...` of the image in the toolkit's image store
    question: str
    route: str  # requested: auto | img2llm
    marks: list[dict[str, Any]]  # visual prompts (Mark.model_dump), drawn onto the image by `render_marks`
    # visual prompts
    original_image_ref: str  # the image before marks were drawn
    original_question: str
    mark_phrases: list[str]
    mark_boxes: list[list[int]]
    mark_notes: list[str]
    # router
    chosen_route: str
    route_reason: str
    # text route
    captions: list[str]
    caption_scores: list[float]
    caption_stats: dict[str, int]
    gradcam: list[float]
    grid: list[int]
    patch_ids: list[list[int]]  # the patches each kept caption was written from
    image_encoded: bool
    candidates: list[str]
    answer_captions: dict[str, list[int]]
    exemplars: list[dict[str, str]]
    prompt: str
    prompt_stats: dict[str, int]
    # answer
    raw_answer: str
    answer: str
    token_logprobs: list[float]
    timings: Annotated[dict[str, float], merge_dicts]


@dataclass
class VQAContext:
    """Run-time context (LangGraph `context_schema`): the loaded tools, which never enter state."""

    tools: Toolkit
