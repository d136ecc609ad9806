"""The Q-Former route (BLIP-2) as a subgraph: Q-Former soft prompt → prompt text → frozen LLM."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from vqagraph.answer import BridgeRecord, RouteAnswer
from vqagraph.graphs import bridge_nodes
from vqagraph.graphs.state import VQAContext, VQAState


class BridgeRouteOutput(TypedDict, total=False):
    """Only these keys leave the subgraph, so it can run beside the text route (`both`) without clashes."""

    bridge: BridgeRecord
    route_answers: dict[str, RouteAnswer]
    timings: dict[str, float]


def _first_node(state: VQAState, runtime: Runtime[VQAContext]) -> str:
    """A BLIP-2 served whole and sent the image runs its own Q-Former: nothing to encode here."""
    return "bridge_prompt" if runtime.context.tools.profile.bridge.send == "image" else "qformer_encode"


def build_bridge_route() -> Any:
    graph = StateGraph(VQAState, context_schema=VQAContext, output_schema=BridgeRouteOutput)
    graph.add_node("qformer_encode", bridge_nodes.qformer_encode)
    graph.add_node("bridge_prompt", bridge_nodes.bridge_prompt)
    graph.add_node("bridge_answer", bridge_nodes.bridge_answer)
    graph.add_conditional_edges(START, _first_node, ["qformer_encode", "bridge_prompt"])
    graph.add_edge("qformer_encode", "bridge_prompt")
    graph.add_edge("bridge_prompt", "bridge_answer")
    graph.add_edge("bridge_answer", END)
    return graph.compile(name="bridge")
