"""The main VQA graph: draw marks, route the question, run the chosen route(s), keep one answer.

    START → render_marks → resolve_followup → router ─┬─ img2llm ───────────────────────────────┐
                                                      ├─ bridge ─┬─ (cascade, unsure) ─ img2llm ─┤
                                                      │          └───────────────────────────────┤
                                                      ├─ projection ────────────────────────────┤
                                                      ├─ (every other registered route) ────────┤
                                                      └─ both: Send(each route the profile has) ─┴─ pick_answer

The routes are the registry's (graphs/registry.py), read when the graph is built.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from vqagraph.graphs import nodes
from vqagraph.graphs.registry import ROUTES
from vqagraph.graphs.router import CASCADE_FALLBACK, CASCADE_FIRST, cascade_falls_back, choose_route, pick_answer
from vqagraph.graphs.state import VQAContext, VQAState


@nodes.node("router", reads=("route", "router_policy", "question", "standalone_question", "marks"),
            writes=("chosen_route", "route_reason", "cascade"))
def route_question(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    profile = runtime.context.tools.profile
    requested = state.get("route", "auto")
    if requested != "auto":
        return {"chosen_route": requested, "route_reason": f"{requested}: requested by the caller", "cascade": False}
    available = ROUTES.available(profile)
    if available == ("img2llm",):
        return {"chosen_route": "img2llm", "cascade": False,
                "route_reason": "auto: the profile has no bridge checkpoint (no Q-Former, no projector), so only "
                                "the text route can answer"}
    policy = state.get("router_policy") or profile.router.policy
    if policy == "cascade" and CASCADE_FIRST not in available:
        return {"chosen_route": "img2llm", "cascade": False,
                "route_reason": "auto: cascade starts with the Q-Former bridge, which the profile lacks → text route"}
    decision = choose_route(policy, nodes.vision_question(state), bool(state.get("marks")), profile.router,
                            available)
    return {"chosen_route": decision.route, "route_reason": decision.reason, "cascade": decision.cascade}


def _dispatch(state: VQAState, runtime: Runtime[VQAContext]) -> Any:
    if state["chosen_route"] == "both":  # every route the profile has, concurrently, in one superstep
        return [Send(route, state) for route in ROUTES.available(runtime.context.tools.profile)]
    return state["chosen_route"]


def _after_cascade_first(state: VQAState, runtime: Runtime[VQAContext]) -> str:
    if state.get("cascade"):
        threshold = runtime.context.tools.profile.router.cascade_threshold
        if cascade_falls_back(state["route_answers"][CASCADE_FIRST], threshold):
            return CASCADE_FALLBACK
    return "pick_answer"


@nodes.node("pick_answer", reads=("chosen_route", "cascade", "route_answers", "route_reason"),
            writes=("answer", "raw_answer", "token_logprobs", "answered_by", "route_reason"))
def pick(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    answers = state["route_answers"]
    reason = state["route_reason"]
    if state.get("cascade"):
        first = answers[CASCADE_FIRST]["mean_logprob"]
        if CASCADE_FALLBACK in answers:
            chosen, note = CASCADE_FALLBACK, f"bridge unsure (mean log-prob {first:.3f}): the text route answered"
        else:
            chosen, note = CASCADE_FIRST, f"bridge sure enough (mean log-prob {first:.3f})"
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
    schema = ROUTES.state_schema()
    graph: StateGraph[Any, VQAContext, Any, Any] = StateGraph(schema, context_schema=VQAContext)
    graph.add_node("render_marks", nodes.render_marks)
    graph.add_node("resolve_followup", nodes.resolve_followup)
    graph.add_node("router", route_question)
    names = ROUTES.names()
    for route in ROUTES:
        graph.add_node(route.name, route.subgraph(schema))
    graph.add_node("pick_answer", pick)
    graph.add_edge(START, "render_marks")
    graph.add_edge("render_marks", "resolve_followup")
    graph.add_edge("resolve_followup", "router")
    graph.add_conditional_edges("router", _dispatch, list(names))
    for name in names:
        if name == CASCADE_FIRST:  # the cascade's first route hands an unsure answer on to its fallback
            graph.add_conditional_edges(name, _after_cascade_first, [CASCADE_FALLBACK, "pick_answer"])
        else:
            graph.add_edge(name, "pick_answer")
    graph.add_edge("pick_answer", END)
    return graph.compile(checkpointer=checkpointer, name="vqa")
