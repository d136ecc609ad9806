"""What a streamed run of a graph says, in one place: the engine and the conversation thread both decode
LangGraph's stream items with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

EventKind = Literal["node", "token"]
OnEvent = Callable[[EventKind, str], None]


def stream_event(mode: str, chunk: Any) -> list[tuple[EventKind, str]]:
    """What one LangGraph stream item (`stream_mode=["updates", "custom"]`) says: nodes that finished and tokens
    the LLM wrote (graphs/nodes.py `token_writer`)."""
    if mode == "custom" and isinstance(chunk, dict) and "token" in chunk:
        return [("token", chunk["token"])]
    if mode == "updates" and isinstance(chunk, dict):
        return [("node", name) for name in chunk]
    return []
