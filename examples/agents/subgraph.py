"""vqagraph's VQA graph as a subgraph of your own LangGraph graph.

Your graph shares state keys with the VQA graph (`image_ref`, `question`, `route` in; `answer`, `answered_by`,
`route_reason` out) and declares the same run-time context, `VQAContext`, which carries the loaded models; the
compiled VQA graph is then one node of it. Here: take a photo in, ask the VQA graph, write a report.

    .venv/bin/python examples/agents/subgraph.py photo.png "What colour is the car?" [--profile tiny]
"""

from __future__ import annotations

import argparse
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from vqagraph import Engine, build_graph, load_image
from vqagraph.graphs import VQAContext


class InspectionState(TypedDict, total=False):
    photo: str  # yours: where the picture is
    question: str  # shared with the VQA graph
    route: str  # shared: auto | img2llm | bridge | both
    image_ref: str  # shared: the VQA graph reads the image by its content reference
    answer: str  # shared: the VQA graph writes these three
    answered_by: str
    route_reason: str
    report: str  # yours


def intake(state: InspectionState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """Put the picture in the engine's image store; state keeps only its reference (checkpoint-safe)."""
    tools = runtime.context.tools
    picture = load_image(state["photo"], max_pixels=tools.profile.limits.max_image_pixels)
    return {"image_ref": tools.images.add(picture)}


def report(state: InspectionState) -> dict[str, Any]:
    return {"report": f"{state['photo']}: {state['question']} -> {state['answer']!r} "
                      f"[{state['route_reason']}]"}


def build_inspection_graph() -> Any:
    graph = StateGraph(InspectionState, context_schema=VQAContext)
    graph.add_node("intake", intake)
    graph.add_node("vqa", build_graph())  # the compiled VQA graph, as a node
    graph.add_node("report", report)
    graph.add_edge(START, "intake")
    graph.add_edge("intake", "vqa")
    graph.add_edge("vqa", "report")
    graph.add_edge("report", END)
    return graph.compile()


def run(engine: Engine, photo: str, question: str, route: str = "auto") -> dict[str, Any]:
    graph = build_inspection_graph()
    return graph.invoke({"photo": str(photo), "question": question, "route": route},  # type: ignore[no-any-return]
                        context=VQAContext(tools=engine.tools))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photo")
    parser.add_argument("question")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--route", default="auto", choices=["auto", "img2llm", "bridge", "both"])
    args = parser.parse_args()
    engine = Engine.from_profile(args.profile)
    print(run(engine, args.photo, args.question, args.route)["report"])


if __name__ == "__main__":
    main()
