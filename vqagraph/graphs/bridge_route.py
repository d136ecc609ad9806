"""The Q-Former route (BLIP-2, InstructBLIP; docs/methods.md §2): Q-Former soft prompt → prompt text → frozen LLM."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from vqagraph.answer import BridgeRecord
from vqagraph.graphs import bridge_nodes
from vqagraph.graphs.routes import Route
from vqagraph.graphs.state import VQAContext, VQAState


def _first_node(state: VQAState, runtime: Runtime[VQAContext]) -> str:
    """A BLIP-2 served whole and sent the image runs its own Q-Former: nothing to encode here."""
    return "bridge_prompt" if runtime.context.tools.profile.bridge.send == "image" else "qformer_encode"


def _describe(record: dict[str, Any]) -> str | None:
    if not record.get("query_tokens"):
        return None
    return f"bridge: {record['query_tokens']} query tokens + {record.get('prompt', '')!r}"


BRIDGE_ROUTE = Route(
    name="bridge",
    title="Q-Former route",
    summary="Q-Former route (BLIP-2 / InstructBLIP): query tokens as a soft prompt before the question",
    record=BridgeRecord,
    nodes=(bridge_nodes.qformer_encode, bridge_nodes.bridge_prompt, bridge_nodes.bridge_answer),
    settings=lambda profile: profile.bridge,
    answer_cap=lambda profile: profile.bridge.max_new_tokens,
    available=lambda profile: profile.qformer is not None or profile.bridge.send == "image",  # a BLIP-2 served
    # whole by vLLM runs its own Q-Former
    loads=("qformer", "llm"),
    missing="no `qformer` checkpoint (BLIP-2 or InstructBLIP)",
    first_node=_first_node,
    optional_reads=("standalone_question", "history"),
    describe=_describe,
    prompt_tokens=lambda record: record.get("prompt_tokens", 0) + record.get("query_tokens", 0),
)
