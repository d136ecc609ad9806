"""The main VQA graph: draw marks, route the question, run the chosen route(s), keep one answer.

    START → render_marks → resolve_followup → router ─┬─ img2llm ───────────────────────────────┐
                                                      ├─ bridge ─┬─ (cascade, unsure) ─ img2llm ─┤
                                                      │          └───────────────────────────────┤
                                                      ├─ projection ────────────────────────────┤
                                                      └─ both: Send(each route the profile has) ─┴─ pick_answer
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from vqagraph.config import REQUESTED_ROUTES
from vqagraph.graphs import nodes
from vqagraph.graphs.bridge_route import build_bridge_route
from vqagraph.graphs.projection_route import build_projection_route
from vqagraph.graphs.router import cascade_falls_back, choose_route, pick_answer
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.graphs.text_route import build_text_route

ROUTES = REQUESTED_ROUTES


@nodes.node("router", reads=("route", "router_policy", "question", "standalone_question", "marks"),
            writes=("chosen_route", "route_reason", "cascade"))
def route_question(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    profile = runtime.context.tools.profile
    requested = state.get("route", "auto")
    if requested != "auto":
        return {"chosen_route": requested, "route_reason": f"{requested}: requested by the caller", "cascade": False}
    available = profile.routes()
    if available == ("img2llm",):
        return {"chosen_route": "img2llm", "cascade": False,
                "route_reason": "auto: the profile has no bridge checkpoint (no Q-Former, no projector), so only "
                                "the text route can answer"}
    policy = state.get("router_policy") or profile.router.policy
    if policy == "cascade" and "bridge" not in available:
        return {"chosen_route": "img2llm", "cascade": False,
                "route_reason": "auto: cascade starts with the Q-Former bridge, which the profile lacks → text route"}
    decision = choose_route(policy, nodes.vision_question(state), bool(state.get("marks")), profile.router,
                            available)
    return {"chosen_route": decision.route, "route_reason": decision.reason, "cascade": decision.cascade}


def _dispatch(state: VQAState, runtime: Runtime[VQAContext]) -> Any:
    if state["chosen_route"] == "both":  # every route the profile has, concurrently, in one superstep
        return [Send(route, state) for route in runtime.context.tools.profile.routes()]
    return state["chosen_route"]


def _after_bridge(state: VQAState, runtime: Runtime[VQAContext]) -> str:
    if state.get("cascade"):
        threshold = runtime.context.tools.profile.router.cascade_threshold
        if cascade_falls_back(state["route_answers"]["bridge"], threshold):
            return "img2llm"
    return "pick_answer"


@nodes.node("pick_answer", reads=("chosen_route", "cascade", "route_answers", "route_reason"),
            writes=("answer", "raw_answer", "token_logprobs", "answered_by", "route_reason"))
def pick(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    answers = state["route_answers"]
    reason = state["route_reason"]
    if state.get("cascade"):
        bridge = answers["bridge"]["mean_logprob"]
        if "img2llm" in answers:
            chosen, note = "img2llm", f"bridge unsure (mean log-prob {bridge:.3f}): the text route answered"
        else:
            chosen, note = "bridge", f"bridge sure enough (mean log-prob {bridge:.3f})"
    elif state["chosen_route"] == "both":
        chosen, note = pick_answer(answers)
    else:
        chosen, note = state["chosen_route"], ""
    kept = answers[chosen]
    return {
        "answer": kept["answer"],
        "raw_answer": kept["raw_answer"],
        "token_logprobs": kept["token_logprobs"],
        "answered_by": chosen,
        "route_reason": f"{reason}; {note}" if note else reason,
    }


def build_graph(checkpointer: Any = None) -> Any:
    graph = StateGraph(VQAState, context_schema=VQAContext)
    graph.add_node("render_marks", nodes.render_marks)
    graph.add_node("resolve_followup", nodes.resolve_followup)
    graph.add_node("router", route_question)
    graph.add_node("img2llm", build_text_route())
    graph.add_node("bridge", build_bridge_route())
    graph.add_node("projection", build_projection_route())
    graph.add_node("pick_answer", pick)
    graph.add_edge(START, "render_marks")
    graph.add_edge("render_marks", "resolve_followup")
    graph.add_edge("resolve_followup", "router")
    graph.add_conditional_edges("router", _dispatch, ["img2llm", "bridge", "projection"])
    graph.add_conditional_edges("bridge", _after_bridge, ["img2llm", "pick_answer"])
    graph.add_edge("img2llm", "pick_answer")
    graph.add_edge("projection", "pick_answer")
    graph.add_edge("pick_answer", END)
    return graph.compile(checkpointer=checkpointer, name="vqa")
