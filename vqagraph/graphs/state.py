"""The VQA graph's state: strings, numbers and content hashes only, so any checkpointer can store it."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from vqagraph.answer import (
    AdapterRecord,
    BridgeRecord,
    ProjectionRecord,
    RouteAnswer,
    TextRouteRecord,
    VisualPromptRecord,
)
from vqagraph.toolkit import Toolkit


def merge_dicts(left: Any, right: Any) -> Any:
    """Reducer for records several nodes write a part of (a route's record, timings)."""
    return {**(left or {}), **(right or {})}


class VQAState(TypedDict, total=False):
    """By concern: the inputs, the marks drawn, the routing decision, one record per route that ran (written a
    few fields at a time by the route's nodes, merged), the routes' answers and the one kept."""

    # inputs
    image_ref: str  # `sha256:...` of the image in the toolkit's image store
    question: str
    route: str  # requested: auto, a registered route (graphs/registry.py) or both
    router_policy: str  # for `auto`: rules | cascade | both (default: the profile's)
    marks: list[dict[str, Any]]  # visual prompts (Mark.model_dump), drawn onto the image by `render_marks`
    history: list[dict[str, str]]  # earlier turns of a conversation: {question, answer}, oldest first
    generation: dict[str, Any]  # the request's decoding settings beyond greedy (request.Generation.given())
    # follow-ups
    standalone_question: str  # the question with a back-reference resolved, for the vision tools and router
    # visual prompts: render_marks draws them and rewrites image_ref and question; what it did is kept here
    visual_prompt: Annotated[VisualPromptRecord, merge_dicts]
    # the routing decision
    chosen_route: str  # a registered route, or both
    route_reason: str
    cascade: bool  # the bridge answers first; the text route runs when the bridge is unsure
    # one record per route, present only when the route ran (the soft prompts themselves stay in the feature cache);
    # the built-in routes' are typed here, a route registered later gets its channel when the graph is built
    # (graphs/routes.py `state_schema`)
    img2llm: Annotated[TextRouteRecord, merge_dicts]
    bridge: Annotated[BridgeRecord, merge_dicts]
    projection: Annotated[ProjectionRecord, merge_dicts]
    adapter: Annotated[AdapterRecord, merge_dicts]
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
