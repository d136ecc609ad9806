"""The graph that `langgraph dev` (and a LangGraph server) serves: `langgraph.json` points at `graph` here.

A chat graph over the VQA graph: each run takes a user message (its text is the question; an `image_url` part
with a data URL, or an `image` block, is the image) or the `image` / `question` fields, answers with an
`AIMessage`, and keeps the turns, so a thread of the server is a conversation: follow-ups without an image are
about the thread's current image and get the earlier turns on it as history.

The models cannot travel in a server run's context (it is JSON), so this module holds one `Engine`, built on
first use from the `VQAGRAPH_PROFILE` environment variable (unset: the default profile; `langgraph.json` sets
`tiny`); `set_engine()` replaces it (tests, or an application that embeds the graph). Each turn asks through
`Engine.answer`, the entry point of every front end (the same checks, the same errors); the VQA graph runs nested
as a subgraph of the turn, so its node events and the LLM's tokens (`stream_mode="custom"`) stream with the run's.
"""

from __future__ import annotations

import operator
import os
import threading
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from vqagraph.errors import ImageError
from vqagraph.media import image_from_string

if TYPE_CHECKING:
    from vqagraph.engine import Engine

_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The module's engine: `VQAGRAPH_PROFILE` (a built-in name or a profile file), built on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from vqagraph.engine import Engine

            _engine = Engine.from_profile(os.environ.get("VQAGRAPH_PROFILE") or None)
        return _engine


def set_engine(engine: Engine | None) -> None:
    """Answer with this engine from now on (None: build one from `VQAGRAPH_PROFILE` on next use)."""
    global _engine
    with _engine_lock:
        _engine = engine


class AppState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    # optional inputs of one run (cleared once used, so the next run does not repeat them)
    image: str | None  # a data: URL (the server's clients are remote: no file of this machine is read)
    question: str | None  # else the last user message's text
    route: str  # auto, a registered route (graphs/registry.py) or both
    router: str | None
    marks: list[dict[str, Any]]
    # the conversation
    image_ref: str  # the current image
    turns: Annotated[list[dict[str, Any]], operator.add]  # {question, asked, answer, image_ref, route}
    # the last answer
    answer: str
    trace: dict[str, Any]


def _message_parts(message: HumanMessage) -> tuple[str, str | None]:
    """A user message's text, and its image (a data URL or a path) when it carries one."""
    if isinstance(message.content, str):
        return message.content, None
    texts, image = [], None
    for part in message.content:
        if isinstance(part, str):
            texts.append(part)
        elif part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            image = url.get("url") if isinstance(url, dict) else url
        elif part.get("type") == "image":  # LangChain's standard block: base64 + mime_type, or a url
            if part.get("base64") or part.get("data"):
                image = f"data:{part.get('mime_type', 'image/png')};base64,{part.get('base64') or part.get('data')}"
            elif part.get("url"):
                image = str(part["url"])
    return " ".join(t for t in texts if t).strip(), image


def ask(state: AppState) -> dict[str, Any]:
    """One turn, through `Engine.answer` like every front end: the earlier turns on the image as history, the VQA
    graph nested as a subgraph of this run."""
    from vqagraph.engine.conversation import history_on
    from vqagraph.request import AskRequest, validate_marks

    engine = get_engine()
    last = next((m for m in reversed(state.get("messages", [])) if isinstance(m, HumanMessage)), None)
    text, part_image = _message_parts(last) if last is not None else ("", None)
    question = state.get("question") or text
    image = state.get("image") or part_image
    marks = validate_marks(state.get("marks") or [], allow_files=False)
    # A LangGraph server's clients are remote: images come as data: URLs only, never as files of this machine.
    ref = engine.add_image(image_from_string(image, None)) if image else state.get("image_ref")
    if not ref:
        raise ImageError("no image yet: put an image in the user message (image_url data URL) or set `image`")
    # Taken in here for its reference (the same picture sent again keeps its turns as history).
    request = AskRequest(question=question, image=engine.tools.images.get(ref), route=state.get("route") or "auto",
                         router=state.get("router") or None, marks=marks,
                         history=history_on(state.get("turns", []), ref))
    # Nested in this run; tokens go out as custom stream events (a no-op unless the caller streams "custom").
    # Runs of other threads may ask at the same time: the engine batches their model calls.
    answer = engine.answer(request, nested=True)
    turn = {"question": question, "asked": answer.question, "answer": answer.answer, "image_ref": ref,
            "route": answer.route}
    reply = AIMessage(content=answer.answer,
                      response_metadata={"vqagraph": {"route": answer.route, "route_reason": answer.trace.route_reason,
                                                      "image_ref": ref, "meaningless": answer.meaningless}})
    return {"messages": [reply], "answer": answer.answer, "trace": answer.trace.model_dump(mode="json"),
            "image_ref": ref, "turns": [turn], "image": None, "question": None, "marks": []}


def build_app(checkpointer: Any = None) -> Any:
    """The chat graph over the VQA graph (`checkpointer`: None under a LangGraph server, which brings its own)."""
    graph = StateGraph(AppState)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    return graph.compile(checkpointer=checkpointer, name="vqagraph")


graph = build_app()
