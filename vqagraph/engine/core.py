"""`Engine`: a profile's tools plus the compiled VQA graph, behind one entry point for a question (`answer`).

Every front end hands `answer` an `AskRequest`: it validates the question, the route and the marks, takes the
image in, brings the history (its own, or the thread's; a thread's turns keep their order under its lock), runs the
graph (streaming tokens and node events when asked) and returns the `Answer`. Questions may come from many threads
at once: the toolkit batches their model calls (tools/batching.py); `answer_batch` answers a list that way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from vqagraph.answer import Answer, Trace
from vqagraph.config import Profile, load_profile
from vqagraph.errors import ImageError, QuestionError, VQAGraphError
from vqagraph.graphs.events import OnEvent, stream_event
from vqagraph.graphs.registry import ROUTES
from vqagraph.graphs.router import POLICIES
from vqagraph.graphs.state import STATE_KEYS, VQAContext
from vqagraph.graphs.vqa import build_graph
from vqagraph.media import ImageInput, ImageShelf, load_image
from vqagraph.request import AskRequest, Generation, validate_marks, validate_question
from vqagraph.toolkit import Toolkit

if TYPE_CHECKING:
    from vqagraph.engine.conversation import Conversation
    from vqagraph.engine.threads import ThreadStore
    from vqagraph.tools.batching import InFlight
    from vqagraph.tools.visual_prompt import Mark


class Engine:
    """Answers questions about images with a frozen LLM, through the VQA graph."""

    def __init__(self, profile: Profile, graph: Any = None) -> None:
        ROUTES.check_profile(profile)
        self.profile = profile
        self.tools = Toolkit(profile)
        # Any compiled graph over VQAState with VQAContext works: the built-in one or a user's own.
        self.graph = graph if graph is not None else build_graph()
        # The same graph for conversation turns, run inside the thread graph: it never writes checkpoints of
        # its own (the thread keeps the turns), but its node events stream with the thread's.
        self.turn_graph = self.graph.copy(update={"checkpointer": False}) if graph is not None \
            else build_graph(checkpointer=False)
        self._stores: dict[str, ThreadStore] = {}
        # Questions run concurrently (front ends, `answer_batch`): the toolkit's batchers gather their model calls
        # and serialise each model (tools/batching.py). What must not interleave is two turns of one
        # conversation thread, which would both read the same history: one lock per thread id.
        self._thread_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def thread_lock(self, thread_id: str) -> threading.Lock:
        """The lock that keeps the turns of one conversation thread in order (every front end shares it)."""
        with self._locks_lock:
            return self._thread_locks.setdefault(thread_id, threading.Lock())

    @classmethod
    def from_profile(
        cls, name_or_path: str | Path | Profile | None = None, *, graph: Any = None, **overrides: Any
    ) -> Engine:
        """A built-in profile name (`tiny`, `blip-opt`), a TOML/YAML profile file, or a `Profile`."""
        return cls(load_profile(name_or_path, **overrides), graph=graph)

    @property
    def in_flight(self) -> InFlight:
        """The questions running on this engine, which its batches wait for. A front end that takes a question in
        before `answer` (a server reading and decoding its image) counts it from then on: `arrive()`, `leave()`,
        and its threads work inside `counted()`."""
        return self.tools.in_flight

    @property
    def letterboxed(self) -> bool:
        """Whether the vision models see each image centred on a square (what explain pictures must show)."""
        encoder = self.profile.image_encoder
        return encoder is not None and encoder.resize == "letterbox"

    def add_image(self, image: ImageInput, shelf: ImageShelf | None = None) -> str:
        """Take an image in (validated) and return its content reference; `shelf`: also write it there (a thread
        store's images), so another process or replica continuing the thread finds it."""
        return self.tools.images.add(load_image(image, max_pixels=self.profile.limits.max_image_pixels), shelf)

    def render(self, image: ImageInput, marks: Sequence[Mark | dict[str, Any]]) -> Image.Image:
        """The image exactly as the routes will see it with these marks drawn on it."""
        from vqagraph.tools.visual_prompt import render_marks

        picture = load_image(image, max_pixels=self.profile.limits.max_image_pixels)
        drawn, _ = render_marks(picture, validate_marks(marks), seed=self.profile.img2llm.seed)
        return drawn

    def explain(self, answer: Answer) -> Image.Image | None:
        """The explain picture of a text-route answer (GradCAM, sampled patches, kept captions; a photo's tags and
        text boxes); None when the text route did not run."""
        from vqagraph.tools.explain_picture import explain_picture

        trace = answer.trace
        work = trace.img2llm
        if not work or not (work.get("gradcam") or work.get("tags") or work.get("text_lines")):
            return None
        tags = [(f"{t['name']} {t['probability']:.2f}", t["box"]) for t in work.get("tags", [])]
        tags += [(f"{o['label']} {o['score']:.2f}", o["box"]) for o in work.get("objects", [])]
        texts = [(f'"{line["text"]}"', line["box"]) for line in work.get("text_lines", [])]
        # A photo's boxes are in its own pixels: it is shown as it is, not letterboxed.
        return explain_picture(self.tools.images.get(trace.seen_image_ref), work.get("gradcam", []),
                               work.get("grid", []), work.get("patch_ids", []), work.get("captions", []),
                               answer.question, answer.answer, notes=(trace.visual_prompt or {}).get("notes", []),
                               letterboxed=self.letterboxed and not (tags or texts), tag_boxes=tags,
                               text_boxes=texts)

    def conversation(self, thread_id: str | None = None, store: str | None = None) -> Conversation:
        """A multi-turn thread (new, or continued by id) persisted in `store`: a SQLite path (default: under
        the user's data directory), a `postgresql://` URL, or `memory`."""
        from vqagraph.engine.conversation import Conversation

        return Conversation(self, self.thread_store(store), thread_id)

    def thread_store(self, store: str | None = None) -> ThreadStore:
        """The open thread store for `store` (opened once per engine): its threads, their catalogue and images."""
        from vqagraph.engine.threads import ThreadStore, default_store_url

        key = store or default_store_url()
        if key not in self._stores:
            self._stores[key] = ThreadStore(key)
        opened = self._stores[key]
        self.tools.images.attach(opened.images)  # images of its threads go to disk there, content-addressed
        return opened

    def close(self) -> None:
        """Release the thread stores this engine opened."""
        for opened in self._stores.values():
            opened.close()
        self._stores.clear()

    def check_route(self, route: str, router: str | None = None) -> None:
        """Reject an unknown route or policy, or a bridge the profile has no checkpoint for, before anything runs."""
        ROUTES.check_request(route, self.profile)
        if router is not None and router not in POLICIES:
            raise QuestionError(f"unknown router policy {router!r}; choose one of {', '.join(POLICIES)}")

    def answer(self, request: AskRequest, on_event: OnEvent | None = None, *, nested: bool = False) -> Answer:
        """The one entry point for a question. With `request.thread` the turn joins that conversation (its image
        and earlier turns come from the thread store); otherwise `request.image` is required and
        `request.history` holds the earlier turns the caller kept. `on_event(kind, value)` receives ("token",
        text) as the LLM writes and ("node", name) as each node finishes.
        `nested`: called from a node of another LangGraph run (the LangGraph app), whose config makes the VQA graph
        its subgraph: node events and the LLM's tokens (custom events) stream with that run's, not to `on_event`."""
        with self.in_flight:  # from intake on: the batchers wait for a question still reading its image
            return self._answer(request, on_event, nested)

    def _answer(self, request: AskRequest, on_event: OnEvent | None, nested: bool) -> Answer:
        if request.thread is not None:
            if nested:  # a thread's turn runs in the thread's own graph, under its store's checkpointer
                raise ValueError("a question of a conversation thread cannot run nested in another graph")
            conversation = self.conversation(request.thread, store=request.store)
            return conversation.answer(request, on_event)
        start = time.perf_counter()
        question = validate_question(request.question, self.profile.limits.max_question_chars)
        self.check_route(request.route, request.router)
        marks = validate_marks(request.marks)
        if request.image is None:
            raise ImageError("no image: give one (or a thread whose image the question is about)")
        ref = self.add_image(request.image)
        inputs = self.graph_inputs(ref, question, request.route, marks, request.router, request.history,
                                   request.generation.given())
        return self.run(inputs, start, time.perf_counter() - start, on_event, nested=nested, stream_tokens=nested)

    def answer_batch(self, requests: Sequence[AskRequest], *, batch_size: int | None = None,
                     on_done: Callable[[int, Answer | VQAGraphError], None] | None = None,
                     ) -> list[Answer | VQAGraphError]:
        """Answer many questions, up to `batch_size` (default: the profile's `batching.max_batch`) at a time: each
        runs the graph in a thread of its own and every model stage they share runs as one batched call (the
        image encoder, the Q-Former, the projector, GradCAM, the question generator, the LLM). Answers equal
        those of `answer` one by one; a bad request gets its error in its place and the others go on.
        `on_done(index, result)` as each finishes (in completion order)."""
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        results: list[Answer | VQAGraphError | None] = [None] * len(requests)
        if not requests:
            return []

        def one(index: int) -> Answer | VQAGraphError:
            try:
                with self.in_flight.counted():
                    return self.answer(requests[index])
            except VQAGraphError as exc:
                return exc
            finally:
                self.in_flight.leave()

        workers = max(1, min(batch_size or self.profile.batching.max_batch, len(requests)))
        waiting = iter(range(len(requests)))
        running: dict[Future[Answer | VQAGraphError], int] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vqagraph-batch") as pool:

            def start_next() -> None:
                index = next(waiting, None)
                if index is not None:
                    # Counted from its submission: a batch waits for a question whose thread has not started yet
                    # (a thread that started late split batches); one per worker, so no batch waits for the queue.
                    self.in_flight.arrive()
                    running[pool.submit(one, index)] = index

            for _ in range(workers):
                start_next()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    results[index] = future.result()
                    start_next()
                    if on_done is not None:
                        on_done(index, results[index])  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def run(self, inputs: dict[str, Any], start: float, intake: float, on_event: OnEvent | None = None, *,
            nested: bool = False, stream_tokens: bool = False) -> Answer:
        """Run the graph on checked inputs and read the `Answer` from its final state.
        `nested`: inside another LangGraph run (a conversation's turn, the LangGraph app), whose config makes
        this graph its subgraph, so node and token events (with `stream_tokens`) stream with the outer run's."""
        with self.tools.in_flight:  # the batchers wait for questions in flight, no longer
            state = self._invoke(inputs, on_event, nested, stream_tokens)
        return self.answer_from(state, inputs, start, intake)

    def _invoke(self, inputs: dict[str, Any], on_event: OnEvent | None, nested: bool,
                stream_tokens: bool) -> dict[str, Any]:
        context = VQAContext(tools=self.tools, stream_tokens=stream_tokens or on_event is not None)
        if nested:
            from langgraph.config import get_config

            state = self.turn_graph.invoke(inputs, config=get_config(), context=context)
        elif on_event is None:
            state = self.graph.invoke(inputs, context=context)
        else:
            state = {}
            for namespace, mode, chunk in self.graph.stream(inputs, context=context, subgraphs=True,
                                                            stream_mode=["values", "updates", "custom"]):
                if mode == "values" and not namespace:
                    state = chunk
                for kind, value in stream_event(mode, chunk):
                    on_event(kind, value)
        return state

    def ask(
        self,
        image: ImageInput,
        question: str,
        route: str = "auto",
        marks: Sequence[Mark | dict[str, Any]] | None = None,
        router: str | None = None,
        generation: Generation | dict[str, Any] | None = None,
    ) -> Answer:
        """Answer `question` about `image`; `marks` (visual prompts) are drawn on it first.

        `route`: auto (the router's `policy` decides; `router` overrides the profile's), a registered route
        (img2llm, bridge, projection, adapter, …), or both (every route the profile has). `generation`: how the LLM
        decodes (`request.Generation`: temperature, top_p, seed, max_tokens, stop; greedy by default)."""
        return self.answer(AskRequest(question=question, image=image, route=route, marks=list(marks or []),
                                      router=router, generation=_generation(generation)))

    def graph_inputs(
        self,
        ref: str,
        question: str,
        route: str = "auto",
        marks: Sequence[Mark] = (),
        router: str | None = None,
        history: Sequence[dict[str, str]] = (),
        generation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The VQA graph's input state for an image already taken in (all values checkpoint-safe); `generation`:
        the request's decoding settings that differ from greedy (`request.Generation.given()`)."""
        return {"image_ref": ref, "question": question, "route": route, "router_policy": router or "",
                "marks": [m.model_dump(mode="json") for m in marks], "history": list(history),
                "generation": dict(generation or {})}

    def answer_from(self, state: dict[str, Any], inputs: dict[str, Any], start: float, intake: float) -> Answer:
        """The `Answer` and its trace, read from the graph's final state."""
        ref, question, route = inputs["image_ref"], inputs["question"], inputs["route"]
        router = inputs.get("router_policy") or None
        timings = {"intake": round(intake, 4), **state.get("timings", {})}
        timings["total"] = round(time.perf_counter() - start, 4)
        # The trace carries the state's records and answers as they are (a route that did not run has none);
        # the rest are the run's own facts.
        # (A record's channel reads as {} before any node writes it: that is no record.)
        records = ROUTES.records()
        shared = {name: state[name] for name in (*Trace.model_fields, *records)
                  if name in state and (name in STATE_KEYS or name in records) and (state[name] or name not in records)}
        trace = Trace(**{
            **shared,
            "profile": self.profile.name,
            "route": state.get("answered_by") or state.get("chosen_route", ""),
            "requested_route": route,
            "router_policy": (router or self.profile.router.policy) if route == "auto" else "",
            "timings": timings,
            "seen_image_ref": state.get("image_ref", ref),
            "route_reason": state.get("route_reason", ""),
            "history_turns": len(inputs.get("history") or []),
        })
        return Answer(
            answer=state.get("answer", ""),
            question=state.get("question", question),
            image_ref=ref,
            route=trace.route,
            meaningless=self.profile.meaningless,
            trace=trace,
        )


def _generation(value: Generation | dict[str, Any] | None) -> Generation:
    """A caller's decoding settings as the request takes them (a dict is checked: a bad value is a QuestionError)."""
    if isinstance(value, Generation):
        return value
    return Generation.checked(**(value or {}))
