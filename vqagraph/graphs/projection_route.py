"""The LLaVA projection route as a subgraph: projector soft prompt → prompt text → frozen LLM."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from vqagraph.answer import ProjectionRecord, RouteAnswer
from vqagraph.graphs import projection_nodes
from vqagraph.graphs.state import VQAContext, VQAState


class ProjectionRouteOutput(TypedDict, total=False):
    """Only these keys leave the subgraph, so it can run beside the other routes (`both`) without clashes."""

    projection: ProjectionRecord
    route_answers: dict[str, RouteAnswer]
    timings: dict[str, float]


def build_projection_route() -> Any:
    graph = StateGraph(VQAState, context_schema=VQAContext, output_schema=ProjectionRouteOutput)
    graph.add_node("projection_encode", projection_nodes.projection_encode)
    graph.add_node("projection_prompt", projection_nodes.projection_prompt)
    graph.add_node("projection_answer", projection_nodes.projection_answer)
    graph.add_edge(START, "projection_encode")
    graph.add_edge("projection_encode", "projection_prompt")
    graph.add_edge("projection_prompt", "projection_answer")
    graph.add_edge("projection_answer", END)
    return graph.compile(name="projection")
