"""Multi-turn visual conversations: a thread of turns, persisted by a LangGraph checkpointer.

The thread graph has one node, `turn`, which runs the VQA graph for the new question with the earlier turns
on the current image as history (both routes put them in their prompts). The thread's state is light:
turns of strings and image references; the images themselves are written to a content-addressed folder,
so another process can continue the thread. A later turn on the same image reuses its vision features.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from vqagraph.answer import Answer
from vqagraph.errors import ImageError
from vqagraph.graphs.events import OnEvent, stream_event
from vqagraph.graphs.registry import ROUTES, route_record
from vqagraph.request import AskRequest, Generation, validate_marks, validate_question

if TYPE_CHECKING:
    import threading

    from vqagraph.config import Profile
    from vqagraph.engine.threads import ThreadStore
    from vqagraph.media import ImageInput, ImageShelf
    from vqagraph.tools.visual_prompt import Mark


class TurnEngine(Protocol):
    """What a conversation uses of the engine that opens it (engine/core.py's `Engine`), named here so that this
    module, which the engine imports, does not import the engine back."""

    @property
    def profile(self) -> Profile: ...

    def check_route(self, route: str, router: str | None = None) -> None: ...

    def add_image(self, image: ImageInput, shelf: ImageShelf | None = None) -> str: ...

    def thread_lock(self, thread_id: str) -> threading.Lock: ...

    def graph_inputs(self, ref: str, question: str, route: str = "auto", marks: Sequence[Mark] = (),
                     router: str | None = None, history: Sequence[dict[str, str]] = (),
                     generation: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def run(self, inputs: dict[str, Any], start: float, intake: float, on_event: OnEvent | None = None, *,
            nested: bool = False, stream_tokens: bool = False) -> Answer: ...


class Turn(BaseModel):
    """One question and its answer, as the thread keeps it (checkpoint-safe: strings, numbers, references)."""

    index: int
    question: str = Field(description="as the user asked it")
    asked: str = Field(description="as the LLM read it (a mark's phrase in place of 'this')")
    standalone: str = Field(description="as the vision tools read it (a follow-up's pronoun resolved)")
    image_ref: str
    marks: list[dict[str, Any]] = Field(default_factory=list)
    route: str
    route_reason: str
    answer: str
    history_turns: int = Field(0, description="earlier turns the route was given")
    vision_encoded: bool = Field(description="False when every vision feature came from the cache")
    seconds: float
    at: str


class ThreadState(TypedDict, total=False):
    image_ref: str  # the current image: later turns without an image are about this one
    turns: Annotated[list[dict[str, Any]], operator.add]


@dataclass
class TurnContext:
    """Per-call context of the thread graph (never checkpointed): the engine and the new turn's request."""

    engine: TurnEngine
    request: dict[str, Any]
    result: dict[str, Any] = field(default_factory=dict)
    stream_tokens: bool = False


def history_on(turns: Sequence[dict[str, Any]], image_ref: str) -> list[dict[str, str]]:
    """The turns since the conversation moved to `image_ref`, oldest first: what the routes are given."""
    recent: list[dict[str, str]] = []
    for turn in reversed(turns):
        if turn["image_ref"] != image_ref:
            break
        recent.append({"question": turn["asked"], "answer": turn["answer"]})
    return recent[::-1]


def vision_encoded(answer: Answer) -> bool:
    """Did any route that ran encode the image (rather than reuse cached features)?"""
    trace = answer.trace
    return any(record.get("image_encoded", False) for record in (route_record(trace, r.name) for r in ROUTES)
               if record)


def answer_turn(state: ThreadState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """Run the VQA graph for the new question, with the earlier turns on the same image as history."""
    engine, request = runtime.context.engine, runtime.context.request
    start = time.perf_counter()
    ref = request["image_ref"] or state.get("image_ref")
    if not ref:
        raise ImageError("this conversation has no image yet: give one with the first question (/image PATH)")
    history = history_on(state.get("turns", []), ref)
    inputs = engine.graph_inputs(ref, request["question"], request["route"],
                                 validate_marks(request["marks"]), request["router"], history,
                                 request.get("generation"))
    # Nested: the VQA graph runs as a subgraph of this run, so its node and token events stream with the thread's.
    answer = engine.run(inputs, start, request["intake"], nested=True, stream_tokens=runtime.context.stream_tokens)
    runtime.context.result["answer"] = answer
    turn = Turn(
        index=len(state.get("turns", [])), question=request["question"], asked=answer.question,
        standalone=answer.trace.standalone_question or answer.question, image_ref=ref, marks=inputs["marks"],
        route=answer.route, route_reason=answer.trace.route_reason, answer=answer.answer,
        history_turns=len(history), vision_encoded=vision_encoded(answer),
        seconds=round(time.perf_counter() - start, 4), at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return {"image_ref": ref, "turns": [turn.model_dump()]}


def build_thread_graph(checkpointer: Any) -> Any:
    graph = StateGraph(ThreadState, context_schema=TurnContext)
    graph.add_node("turn", answer_turn)
    graph.add_edge(START, "turn")
    graph.add_edge("turn", END)
    return graph.compile(checkpointer=checkpointer, name="conversation")


StreamEvent = tuple[Literal["node", "token", "answer"], Any]


class Conversation:
    """A thread of questions about images; `ask` adds a turn, `history` lists them, `stream` shows progress."""

    def __init__(self, engine: TurnEngine, store: ThreadStore, thread_id: str | None = None) -> None:
        self.engine = engine
        self.store = store
        self.thread_id = thread_id or uuid.uuid4().hex[:12]
        self.graph = build_thread_graph(store.saver)
        self._config: RunnableConfig = {"configurable": {"thread_id": self.thread_id}}

    def _request(self, request: AskRequest) -> TurnContext:
        """The engine's checks (the same as `Engine.answer`'s), and the image taken in when one is given."""
        start = time.perf_counter()
        self.store.check_owner(self.thread_id, request.owner)
        question = validate_question(request.question, self.engine.profile.limits.max_question_chars)
        self.engine.check_route(request.route, request.router)
        checked = validate_marks(request.marks)
        ref = self.engine.add_image(request.image, self.store.images) if request.image is not None else None
        turn = {"question": question, "image_ref": ref, "marks": [m.model_dump(mode="json") for m in checked],
                "route": request.route, "router": request.router, "generation": request.generation.given(),
                "intake": time.perf_counter() - start}
        return TurnContext(engine=self.engine, request=turn)

    def _events(self, request: AskRequest, stream: bool) -> Iterator[StreamEvent]:
        context = self._request(request)
        context.stream_tokens = stream
        with self.engine.thread_lock(self.thread_id), self.store.guard():
            if not stream:
                self.graph.invoke({}, self._config, context=context)
            else:
                for _namespace, mode, chunk in self.graph.stream({}, self._config, context=context,
                                                                 stream_mode=["updates", "custom"], subgraphs=True):
                    yield from stream_event(mode, chunk)
            self.store.record_turn(self.thread_id, request.owner, context.request["question"])
        yield "answer", context.result["answer"]

    def answer(self, request: AskRequest, on_event: OnEvent | None = None) -> Answer:
        """A new turn (`Engine.answer` with `request.thread` comes here); without `request.image`, the question is
        about the thread's current image."""
        final: Answer | None = None
        for kind, value in self._events(request, stream=on_event is not None):
            if kind == "answer":
                final = value
            elif on_event is not None:
                on_event(kind, value)
        assert final is not None
        return final

    def ask(
        self,
        question: str,
        image: ImageInput | None = None,
        marks: Sequence[Mark | dict[str, Any]] | None = None,
        route: str = "auto",
        router: str | None = None,
        generation: Generation | None = None,
    ) -> Answer:
        """Answer a new turn; without `image`, the question is about the thread's current image."""
        return self.answer(AskRequest(question=question, image=image, marks=list(marks or []), route=route,
                                      router=router, generation=generation or Generation()))

    def stream(
        self,
        question: str,
        image: ImageInput | None = None,
        marks: Sequence[Mark | dict[str, Any]] | None = None,
        route: str = "auto",
        router: str | None = None,
    ) -> Iterator[StreamEvent]:
        """Like `ask`, yielding ("node", name) as each node finishes, ("token", text) as the LLM writes, and
        finally ("answer", Answer)."""
        request = AskRequest(question=question, image=image, marks=list(marks or []), route=route, router=router)
        yield from self._events(request, stream=True)

    def _values(self) -> dict[str, Any]:
        with self.store.guard():
            return dict(self.graph.get_state(self._config).values)

    def history(self) -> list[Turn]:
        return [Turn.model_validate(t) for t in self._values().get("turns", [])]

    @property
    def image_ref(self) -> str | None:
        return self._values().get("image_ref")
