"""The Img2LLM text route as a subgraph: region captions → exemplars → prompt → frozen LLM."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from vqagraph.graphs import nodes
from vqagraph.graphs.state import VQAContext, VQAState


class TextRouteOutput(TypedDict, total=False):
    """Only these keys leave the subgraph, so it can run beside the embedding route (`both`) without clashes."""

    captions: list[str]
    caption_scores: list[float]
    caption_stats: dict[str, int]
    gradcam: list[float]
    grid: list[int]
    patch_ids: list[list[int]]
    image_encoded: bool
    candidates: list[str]
    answer_captions: dict[str, list[int]]
    exemplars: list[dict[str, str]]
    prompt: str
    prompt_stats: dict[str, int]
    route_answers: dict[str, Any]
    timings: dict[str, float]


def build_text_route() -> Any:
    graph = StateGraph(VQAState, context_schema=VQAContext, output_schema=TextRouteOutput)
    graph.add_node("region_captions", nodes.region_captions)
    graph.add_node("question_generation", nodes.question_generation)
    graph.add_node("img2llm_prompt", nodes.img2llm_prompt)
    graph.add_node("llm_answer", nodes.llm_answer)
    graph.add_edge(START, "region_captions")
    graph.add_edge("region_captions", "question_generation")
    graph.add_edge("question_generation", "img2llm_prompt")
    graph.add_edge("img2llm_prompt", "llm_answer")
    graph.add_edge("llm_answer", END)
    return graph.compile(name="img2llm")
