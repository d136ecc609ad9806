"""The Img2LLM text route as a subgraph: region captions → exemplars → prompt → frozen LLM."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from vqagraph.answer import RouteAnswer, TextRouteRecord
from vqagraph.graphs import nodes
from vqagraph.graphs.state import VQAContext, VQAState


class TextRouteOutput(TypedDict, total=False):
    """Only these keys leave the subgraph, so it can run beside the Q-Former route (`both`) without clashes."""

    img2llm: TextRouteRecord
    route_answers: dict[str, RouteAnswer]
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
