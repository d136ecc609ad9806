"""The main VQA graph: route the question, run the chosen route, return the answer with its trace."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from vqagraph.graphs import nodes
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.graphs.text_route import build_text_route

ROUTES = ("auto", "img2llm")


def route_question(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """Only the text route exists so far, so `auto` resolves to it and says why."""
    requested = state.get("route", "auto")
    if requested == "img2llm":
        return {"chosen_route": "img2llm", "route_reason": "requested by the caller"}
    return {"chosen_route": "img2llm", "route_reason": "auto: the text route is the only route available"}


def build_graph(checkpointer: Any = None) -> Any:
    graph = StateGraph(VQAState, context_schema=VQAContext)
    graph.add_node("render_marks", nodes.render_marks)
    graph.add_node("router", route_question)
    graph.add_node("img2llm", build_text_route())
    graph.add_edge(START, "render_marks")
    graph.add_edge("render_marks", "router")
    graph.add_conditional_edges("router", lambda s: s["chosen_route"], {"img2llm": "img2llm"})
    graph.add_edge("img2llm", END)
    return graph.compile(checkpointer=checkpointer, name="vqa")
