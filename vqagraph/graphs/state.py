"""The VQA graph's state: strings, numbers and content hashes only, so any checkpointer can store it."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from vqagraph.toolkit import Toolkit


def merge_dicts(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer for per-node records (timings), which several nodes write."""
    return {**(left or {}), **(right or {})}


class RouteAnswer(TypedDict):
    """One route's answer, kept per route so `both` and `cascade` can compare them."""

    answer: str
    raw_answer: str
    token_ids: list[int]
    token_logprobs: list[float]
    mean_logprob: float


class VQAState(TypedDict, total=False):
    # inputs
    image_ref: str  # `sha256:...` of the image in the toolkit's image store
    question: str
    route: str  # requested: auto | img2llm | bridge | projection | both
    router_policy: str  # for `auto`: rules | cascade | both (default: the profile's)
    marks: list[dict[str, Any]]  # visual prompts (Mark.model_dump), drawn onto the image by `render_marks`
    history: list[dict[str, str]]  # earlier turns of a conversation: {question, answer}, oldest first
    # follow-ups
    standalone_question: str  # the question with a back-reference resolved, for the vision tools and router
    # visual prompts
    original_image_ref: str  # the image before marks were drawn
    original_question: str
    mark_phrases: list[str]
    mark_boxes: list[list[int]]
    mark_notes: list[str]
    # router
    chosen_route: str  # img2llm | bridge | projection | both
    route_reason: str
    cascade: bool  # the bridge answers first; the text route runs when the bridge is unsure
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
    # embedding route (the soft prompt itself stays in the feature cache, keyed by image and checkpoint)
    query_tokens: int
    bridge_conditioned: bool  # InstructBLIP: the Q-Former read the question
    bridge_image_encoded: bool
    bridge_prompt: str  # the text after the soft prompt
    bridge_prompt_tokens: int
    # projection route (LLaVA): the soft prompt stays in the feature cache too
    projection_tokens: int  # image tokens placed in the prompt
    projection_image_encoded: bool
    projection_prompt: str  # the prompt text, with the image placeholder where the image tokens go
    projection_prompt_tokens: int  # text tokens around the image
    # each route's answer, by route name: {answer, raw_answer, token_logprobs, mean_logprob}
    route_answers: Annotated[dict[str, RouteAnswer], merge_dicts]
    # answer
    answered_by: str  # the route whose answer was kept
    raw_answer: str
    answer: str
    token_logprobs: list[float]
    timings: Annotated[dict[str, float], merge_dicts]
    # custom graphs (graphs/spec.py, graphs/composed_nodes.py)
    path: Annotated[list[str], operator.add]  # spec nodes in the order they ran; "node/inner" inside a subgraph
    votes: dict[str, str]  # `vote`: each voting route's answer
    look_twice: dict[str, Any]  # `mark_gradcam_peak`: the peak's box, the mark's phrase, the first attempt
    sub_questions: list[str]  # `decompose_question`
    decomposition: dict[str, str]  # how the question was split: source (llm | rules | whole), the LLM's text
    sub_answers: list[dict[str, Any]]  # `ask_subquestions`: {question, answer, answered_by, mean_logprob, path}


STATE_KEYS = frozenset(VQAState.__annotations__)  # what a trace may read from the final state by name


@dataclass
class VQAContext:
    """Run-time context (LangGraph `context_schema`): the loaded tools, which never enter state."""

    tools: Toolkit
    stream_tokens: bool = False  # LLM nodes emit {"token": text} stream events (stream_mode="custom")
