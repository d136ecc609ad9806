"""`vqagraph serve`: an OpenAI-compatible chat-completions server in front of one `Engine`.

    POST /v1/chat/completions   the last user message's text is the question, its `image_url` part the image
    GET  /v1/models             the served profile (also answers to the model name `vqagraph`)
    GET  /health                no auth, no Host check; for load balancers
    GET  /metrics               Prometheus: requests and latency by route and status, batch sizes, queue depth,
                                feature-cache hits and misses, LLM tokens in and out, time-outs

Images come as data URLs; remote `http(s)` URLs only from hosts the operator allow-lists, and never from a
private, loopback, link-local or reserved address (checked after DNS resolution, and the connection is made to
the address that was checked). Threads: `vqagraph.thread` (extension field) or `user` names a conversation in
the thread store; without one, earlier user/assistant turns of the request about the same image are given to
the routes as history (a stateless client's multi-turn). With API keys on, a thread answers only the key that
started it (each key is its own owner).

Concurrent requests run in worker threads side by side, and the engine gathers their model calls into batches
(the profile's `batching`: a batch waits for the admitted questions still on their way to it, at most
`window_ms`; each question counts in flight from its admission, `Slot`). At most `max_pending` requests are
admitted at once; past that a request gets 429 with `Retry-After` at once, so a flood never hangs the server.

Deadlines, so that no request can hold the others up:
- request headers and then the body must each arrive within `body_timeout` seconds (slow headers: the
  connection is closed; a slow body: 408);
- a request is answered within `request_timeout` seconds, or gets 504 `timeout` (a stream: an error event,
  then `[DONE]`). A model call cannot be interrupted, so the worker thread finishes its work; the request keeps
  its place among `max_pending` until that work really ends. Timed-out requests therefore cannot pile up more
  work than `max_pending` allows: the 504 frees the client, not the capacity;
- a remote image download has a per-step timeout and an overall `fetch_timeout`.

Browser safety: the Host header must name this server (loopback names, the bound host, `trusted_hosts`), which
defeats DNS rebinding; a POST must be `Content-Type: application/json`, which a cross-site page cannot send
without a CORS preflight; CORS is off unless `cors_origins` lists origins.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request  # at run time: FastAPI reads the endpoints' annotations

from vqagraph.agents.http_guards import (
    DEFAULT_BODY_TIMEOUT,
    LOOPBACK_HOSTS,
    ASGIApp,
    HostCheck,
    JSONOnly,
    Receive,
    Scope,
    Send,
    bound_host_names,
    cors_middleware,
    listen,
    send_error,
    uvicorn_config,
)
from vqagraph.agents.metrics import ServerMetrics
from vqagraph.agents.openai_protocol import (
    AnswerStream,
    APIError,
    ChatCompletionRequest,
    Message,
    Usage,
    chunk,
    completion,
    error_body,
    extension,
    fetch_image,
    finish_reason,
    new_id,
    usage_of,
    validation_error,
)
from vqagraph.errors import (
    ImageError,
    ImageTooLargeError,
    LLMError,
    MarkError,
    ModelMismatchError,
    ModelNotAvailableError,
    ProfileError,
    QuestionError,
    VQAGraphError,
)
from vqagraph.request import AskRequest, Generation

if TYPE_CHECKING:
    from fastapi import FastAPI
    from PIL import Image

    from vqagraph.answer import Answer
    from vqagraph.engine import Engine
    from vqagraph.engine.threads import ThreadStore
    from vqagraph.tools.visual_prompt import Mark

log = logging.getLogger("vqagraph.serve")
T = TypeVar("T")

DEFAULT_MAX_BODY = 20 * 1024 * 1024
DEFAULT_MAX_DOWNLOAD = 20 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT = 120.0  # seconds from the request's arrival to its answer (or a stream's end)
DEFAULT_FETCH_TIMEOUT = 30.0  # seconds for a whole remote image download
LLM_DOWN = "the LLM server is unavailable"



def api_error(exc: VQAGraphError) -> APIError:
    """vqagraph's errors as HTTP statuses: the caller's fault is 4xx, the LLM's or the store's 5xx. A server-side
    failure's message may name a backend URL or a path: the client gets a fixed line, the log the details."""
    from vqagraph.engine.threads import ThreadAccessError, ThreadStoreError

    message = str(exc)
    if isinstance(exc, ImageTooLargeError):
        return APIError(413, message, code="image_too_large", param="messages")
    if isinstance(exc, ImageError):
        return APIError(400, message, code="invalid_image", param="messages")
    if isinstance(exc, QuestionError):
        return APIError(400, message, code="invalid_question", param="messages")
    if isinstance(exc, MarkError):
        return APIError(400, message, code="invalid_mark", param="vqagraph.marks")
    if isinstance(exc, ProfileError):
        return APIError(400, message, code="unsupported_route", param="vqagraph.route")
    if isinstance(exc, ThreadAccessError):
        return APIError(404, message, code="thread_not_found", param="vqagraph.thread")
    if isinstance(exc, LLMError):
        log.warning("LLM failure: %s", message)
        return APIError(502, LLM_DOWN, "api_error", code="llm_unavailable")
    if isinstance(exc, ThreadStoreError):
        return APIError(503, message, "api_error", code="thread_store_unavailable")
    if isinstance(exc, ModelNotAvailableError | ModelMismatchError):
        log.warning("model unavailable: %s", message)
        return APIError(503, "a model this server needs is unavailable", "api_error", code="model_unavailable")
    log.error("unexpected vqagraph error: %s", message)
    return APIError(500, "internal error", "api_error", code="internal_error")


def timeout_error(seconds: float) -> APIError:
    return APIError(504, f"the request took longer than the server's limit of {seconds:g} s", "api_error",
                    code="timeout")


# ---------------------------------------------------------------------------------------------- middleware


class Deadline:
    """Every request is answered within the server's `request_timeout`: past it, a request whose response has not
    started gets 504 (its worker thread finishes on its own, holding its admission until then). A stream that has
    started keeps its own clock (`OpenAIServer.sse`), read from `scope["state"]["deadline"]`."""

    def __init__(self, app: ASGIApp, server: OpenAIServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seconds = self.server.request_timeout
        if scope["type"] != "http" or seconds is None:
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + seconds
        scope.setdefault("state", {})["deadline"] = deadline
        started = False

        with anyio.CancelScope(deadline=deadline) as clock:
            async def guarded(message: MutableMapping[str, Any]) -> None:
                nonlocal started
                if not started:
                    if clock.cancel_called:
                        return  # too late: the 504 goes out instead
                    if message["type"] == "http.response.start":
                        started = True
                        clock.deadline = math.inf  # a started response (a stream) keeps its own clock
                await send(message)

            await self.app(scope, receive, guarded)
        if clock.cancel_called and not started:
            self.server.metrics.timed_out.inc()
            log.warning("%s %s timed out after %g s", scope.get("method"), scope.get("path"), seconds)
            await send_error(send, timeout_error(seconds))


# ---------------------------------------------------------------------------------------------- requests


@dataclass
class Plan:
    """A request taken apart and checked, before any model runs."""

    question: str
    image: Image.Image | None
    marks: list[Mark]
    route: str
    router: str | None
    thread: str | None
    history: list[dict[str, str]] = field(default_factory=list)
    owner: str = ""  # who asks (OpenAIServer.owner): a thread answers only its owner
    generation: Generation = field(default_factory=Generation)  # the request's decoding settings


class ImageUpload(BaseModel):
    """`POST /v1/images`: the picture, once."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(description="a data: URL (or an allow-listed http(s) URL)")


class Slot:
    """A request's place among `max_pending`: held by the request itself and by each worker thread running for it,
    and given back when the last of them lets go (a timed-out request's thread still counts while it works).
    A question's slot also counts it among the engine's questions in flight, from admission on: concurrent
    requests' batches wait for one still being read or decoded instead of going without it."""

    def __init__(self, server: OpenAIServer, question: bool = False) -> None:
        self.server = server
        self.refs = 1
        self.answered = False
        self.question = question
        if question:
            server.engine.in_flight.arrive()

    def working(self) -> contextlib.AbstractContextManager[None]:
        """Around a worker thread's part: a question is counted already (the engine must not count it again)."""
        return self.server.engine.in_flight.counted() if self.question else contextlib.nullcontext()

    def hold(self) -> None:
        with self.server.lock:
            self.refs += 1

    def drop(self) -> None:
        with self.server.lock:
            self.refs -= 1
            ended = self.refs == 0
            if ended:
                self.server.pending -= 1
                self.server.metrics.queue.set(self.server.pending)
        if ended and self.question:
            self.server.engine.in_flight.leave()

    def __call__(self) -> None:
        """The request's own part, let go once however often this is called."""
        with self.server.lock:
            if self.answered:
                return
            self.answered = True
        self.drop()


class OpenAIServer:
    """The engine behind the HTTP API: request parsing, image intake, admission, deadlines, auth."""

    def __init__(self, engine: Engine, *, api_key: str | None = None, api_keys: Sequence[str] = (),
                 allow_hosts: Sequence[str] = (), store: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
                 max_download_bytes: int = DEFAULT_MAX_DOWNLOAD, max_image_pixels: int | None = None,
                 model_names: Sequence[str] | None = None, max_pending: int = 64,
                 request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT, body_timeout: float = DEFAULT_BODY_TIMEOUT,
                 fetch_timeout: float = DEFAULT_FETCH_TIMEOUT, trusted_hosts: Sequence[str] = (),
                 cors_origins: Sequence[str] = ()) -> None:
        self.engine = engine
        keys = [k for k in ([api_key] if api_key else []) + list(api_keys) if k]
        self.api_keys = tuple(dict.fromkeys(keys))  # each key is its own thread owner
        self.api_key = self.api_keys[0] if self.api_keys else None
        self.allow_hosts = tuple(allow_hosts)
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_download_bytes = max_download_bytes
        self.max_image_pixels = max_image_pixels or engine.profile.limits.max_image_pixels
        self.models = list(model_names or [engine.profile.name])
        self.max_pending = max_pending
        self.request_timeout = request_timeout
        self.body_timeout = body_timeout
        self.fetch_timeout = fetch_timeout
        self.trusted_hosts = (*LOOPBACK_HOSTS, *trusted_hosts)
        self.cors_origins = tuple(cors_origins)
        self.lock = threading.Lock()  # `pending`: worker threads give their places back when their work ends
        self.pending = 0  # requests admitted whose answer or work has not ended
        # As many worker threads as questions that can share a batch; more requests wait for a thread.
        self.threads = anyio.CapacityLimiter(max(engine.profile.batching.max_batch, 1))
        self.metrics = ServerMetrics.for_engine(engine)
        self.created = int(time.time())

    # -- HTTP plumbing

    def owner(self, request: Request) -> str:
        """Who asks, for the thread store: a hash of the API key the request carries ("" when keys are off), so
        a thread answers only the key that started it. Call after `check_auth`."""
        if self.api_key is None:
            return ""
        given = request.headers.get("authorization", "").partition(" ")[2].strip()
        return hashlib.sha256(given.encode()).hexdigest()[:32]

    def check_auth(self, request: Request) -> None:
        """401 unless the request carries one of the keys (each compared in constant time); nothing when keys
        are off."""
        if self.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        candidate = given.strip().encode()
        matches = [hmac.compare_digest(candidate, key.encode()) for key in self.api_keys]
        if scheme.lower() != "bearer" or not any(matches):
            raise APIError(401, "Incorrect or missing API key: send `Authorization: Bearer KEY`",
                           code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        """The body, at most `max_body_bytes` (413) and arrived within `body_timeout` seconds (408)."""
        limit = self.max_body_bytes
        close = {"Connection": "close"}  # the rest of the body is not read: the connection cannot be reused
        too_large = APIError(413, f"the request body is over the limit of {limit:,} bytes", code="request_too_large",
                             headers=close)
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise APIError(400, "invalid Content-Length", headers=close)
            if int(length) > limit:
                raise too_large
        body = bytearray()
        with anyio.move_on_after(self.body_timeout) as scope:
            async for piece in request.stream():
                body += piece
                if len(body) > limit:
                    raise too_large
        if scope.cancelled_caught:
            raise APIError(408, f"the request body did not arrive within {self.body_timeout:g} s",
                           code="request_timeout", headers=close)
        return bytes(body)

    def parse(self, body: bytes) -> ChatCompletionRequest:
        """The request, type-checked; a parameter the engine cannot honour is a 400 that names it."""
        try:
            request = ChatCompletionRequest.model_validate_json(body)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        if request.model not in self.models and request.model != "vqagraph":
            shown = request.model[:100]
            raise APIError(404, f"The model {shown!r} does not exist; this server serves "
                           f"{', '.join(self.models)}", code="model_not_found", param="model")
        refusal = request.refusal()
        if refusal is not None:
            raise refusal
        return request

    async def in_thread(self, fn: Callable[[], T], *, slot: Slot | None = None) -> T:
        """Run `fn` in a worker thread. The caller may stop waiting (a deadline): the thread then finishes on its
        own, and keeps the request's place among `max_pending` (`slot`; without one, its own, or 429) until it
        does."""
        if slot is None:
            slot = self.admit()
        else:
            slot.hold()
        state = ["waiting"]  # -> running (the thread gives the place back) or abandoned (the caller does)

        def work() -> T:
            with self.lock:
                if state[0] == "abandoned":
                    raise RuntimeError("abandoned before it started")  # nobody waits for this result
                state[0] = "running"
            try:
                with slot.working():
                    return fn()
            finally:
                slot.drop()

        try:
            return await anyio.to_thread.run_sync(work, limiter=self.threads, abandon_on_cancel=True)
        except BaseException:
            with self.lock:
                never_ran = state[0] == "waiting"
                if never_ran:
                    state[0] = "abandoned"
            if never_ran:
                slot.drop()
            raise

    def admit(self, question: bool = False) -> Slot:
        """Count the request in (or answer 429 at once when `max_pending` are in already); calling the returned
        slot counts the request's own part out, once however often it is called. `question`: also among the
        engine's questions in flight."""
        with self.lock:
            if self.pending >= self.max_pending:
                busy = self.pending
            else:
                busy = -1
                self.pending += 1
                self.metrics.queue.set(self.pending)
        if busy >= 0:
            self.metrics.rejected.inc()
            raise APIError(429, f"the server is busy ({busy} requests in progress); retry shortly",
                           "rate_limit_error", code="server_busy", headers={"Retry-After": "1"})
        return Slot(self, question)

    @property
    def thread_store(self) -> ThreadStore:
        """The store this server keeps threads, recent answers and uploads in: behind a balancer, every replica
        on the same store (Postgres) answers for any of them."""
        return self.engine.thread_store(self.store)

    def remember(self, cid: str, owner: str, answer: Answer) -> None:
        """Keep an answer by completion id for its owner's explain picture, with the image it was asked about,
        where every replica on the store finds both. Nothing of the answer is lost when the store fails: the
        explain picture of that answer is then a 404."""
        from vqagraph.engine.threads import ThreadStoreError

        try:
            store = self.thread_store
            if answer.trace.img2llm:  # only the text route has an explain picture
                self.engine.tools.images.copy_to(answer.trace.seen_image_ref, store.images)
            store.keep_answer(cid, owner, answer)
        except (ThreadStoreError, ImageError) as exc:
            log.warning("answer %s not kept for its explain picture: %s", cid, exc)

    def recalled(self, cid: str, owner: str) -> Answer:
        """A recent answer of this owner's, from whichever replica gave it (404 when it is unknown, gone, or
        another owner's)."""
        from vqagraph.engine.threads import ThreadAccessError

        try:
            return self.thread_store.kept_answer(cid, owner)
        except ThreadAccessError:
            raise APIError(404, "no such recent answer here", code="not_found") from None

    # -- requests into plans

    def load(self, url: str, owner: str) -> Image.Image:
        """An image a request names: a data: URL, an allow-listed URL, or a `sha256:` reference this owner
        uploaded (`POST /v1/images`), so a client sends its picture once and then only the reference."""
        from vqagraph.media import IMAGE_REF, image_from_string, load_image

        if url.strip().lower().startswith("sha256:"):
            ref = url.strip()
            try:
                if IMAGE_REF.match(ref) is not None and self.thread_store.uploaded(owner, ref):
                    return self.engine.tools.images.get(ref)  # memory, else the store every replica reads
            except ImageError:
                pass
            raise APIError(404, "no image with that reference was uploaded by this API key: upload it with "
                           "POST /v1/images", code="image_not_found", param="messages")

        def fetch(u: str) -> bytes:
            return fetch_image(u, self.allow_hosts, self.max_download_bytes, deadline=self.fetch_timeout)

        data = image_from_string(url, None, fetch=fetch)
        return load_image(data, max_pixels=self.max_image_pixels)

    def upload(self, url: str, owner: str) -> dict[str, Any]:
        """Take an image in once (a data: URL or an allow-listed URL) and give its owner a `sha256:` reference."""
        if url.strip().lower().startswith("sha256:"):
            raise APIError(400, "upload the image itself (a data: URL), not a reference", code="invalid_image",
                           param="image")
        image = self.load(url, owner)
        store = self.thread_store
        ref = self.engine.add_image(image, store.images)  # where every replica on the store reads it
        store.record_upload(owner, ref)
        return {"id": ref, "object": "image", "width": image.width, "height": image.height}

    def plan(self, request: ChatCompletionRequest, owner: str = "") -> Plan:
        """Question, image, marks, thread and history from the messages; every check that needs no model."""
        from vqagraph.engine import validate_question

        options = request.vqagraph
        try:
            thread = request.thread_id()
        except ValueError as exc:
            raise APIError(400, str(exc), param="user") from exc
        messages = [m for m in request.messages if m.role in ("user", "assistant")]
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is None:
            raise APIError(400, "no user message: the last user message holds the question", param="messages")
        limit = self.engine.profile.limits.max_question_chars
        question = validate_question(messages[last].text(), limit)
        self.engine.check_route(options.route, options.router)
        marks = self.marks(options.marks)
        # The image: the last user message that carries one (the question may be a follow-up about it).
        at = max((i for i, m in enumerate(messages[:last + 1]) if m.role == "user" and m.image_urls()), default=None)
        if at is not None and thread is not None and at != last:
            at = None  # a thread keeps its own current image; only an image sent with this question changes it
        if at is not None and len(messages[at].image_urls()) > 1:
            raise APIError(400, "one image per message: the question is about one picture", code="invalid_image",
                           param="messages")
        history = [] if thread is not None or at is None else self.fold(messages[at:last], limit)
        image = self.load(messages[at].image_urls()[0], owner) if at is not None else None
        if image is None and thread is None:
            raise ImageError("no image: put an image_url part in the user message (or continue a thread)")
        return Plan(question, image, marks, options.route, options.router, thread, history, owner=owner,
                    generation=request.generation())

    @staticmethod
    def marks(marks: Sequence[dict[str, Any]]) -> list[Mark]:
        """The request's marks, checked; a mask file is refused before anything is opened (a remote client names
        no file on this machine)."""
        from vqagraph.engine import validate_marks

        return validate_marks(marks, allow_files=False)

    @staticmethod
    def fold(messages: Sequence[Message], max_chars: int) -> list[dict[str, str]]:
        """Earlier user/assistant turns (about the current image) as the routes' history, each text held to the
        question's rules (they reach the LLM's prompt too)."""
        from vqagraph.engine import validate_question

        def checked(text: str) -> str:
            try:
                return validate_question(text, max_chars)
            except QuestionError as exc:
                raise QuestionError(f"an earlier message: {exc}") from exc

        history: list[dict[str, str]] = []
        pending: str | None = None
        for message in messages:
            if message.role == "user":
                pending = message.text()
            elif pending is not None and message.text():
                if pending.strip():
                    history.append({"question": checked(pending), "answer": checked(message.text())})
                pending = None
        return history

    # -- running the engine (in a worker thread)

    def check_thread_image(self, plan: Plan) -> None:
        assert plan.thread is not None
        conversation = self.engine.conversation(plan.thread, store=self.store)
        conversation.store.check_owner(plan.thread, plan.owner)
        if conversation.image_ref is None:
            raise ImageError(f"thread {plan.thread!r} has no image yet: send one with this question")

    def live(self, plan: Plan) -> bool:
        """Can the answer's tokens be streamed as they come (exactly one LLM stream in the answer)?"""
        from langgraph.graph.state import CompiledStateGraph

        graph = self.engine.graph
        if not isinstance(graph, CompiledStateGraph) or graph.get_name() != "vqa":
            return False  # a custom graph may vote, decompose, retry…
        if plan.route == "both":
            return False
        return plan.route != "auto" or (plan.router or self.engine.profile.router.policy) == "rules"

    def answer(self, plan: Plan, cid: str, on_token: Callable[[str], None] | None = None) -> Answer:
        """The engine's one entry point: a thread's turn, or the request's own earlier turns as history; the answer
        is kept by its completion id `cid` (`remember`)."""
        request = AskRequest(question=plan.question, image=plan.image, marks=list(plan.marks), route=plan.route,
                             router=plan.router, history=[] if plan.thread else list(plan.history),
                             thread=plan.thread, store=self.store, owner=plan.owner, generation=plan.generation)
        on_event = None if on_token is None else (lambda kind, value: on_token(value) if kind == "token" else None)
        answer = self.engine.answer(request, on_event)
        self.remember(cid, plan.owner, answer)
        return answer

    # -- endpoints

    async def chat(self, request: Request) -> Any:
        from starlette.background import BackgroundTask
        from starlette.responses import JSONResponse, StreamingResponse

        self.check_auth(request)
        parsed = self.parse(await self.read_body(request))  # before admission: a slow body holds no place
        release = self.admit(question=True)
        streaming = False  # once the stream is handed out, it counts the request out when it ends
        try:
            owner = self.owner(request)
            plan = await self.in_thread(lambda: self.plan(parsed, owner), slot=release)  # may download an image
            cid = new_id()
            if not parsed.stream:
                answer = await self.in_thread(lambda: self.answer(plan, cid), slot=release)
                body = completion(cid, parsed.model, answer.answer, self.count(answer), extension(answer, plan.thread),
                                  finish_reason(answer))
                return JSONResponse(body)
            if plan.thread is not None and plan.image is None:
                await self.in_thread(lambda: self.check_thread_image(plan), slot=release)  # a 400 now, not mid-stream
            streaming = True
        except BaseException as exc:
            if not isinstance(exc, anyio.get_cancelled_exc_class()):  # a deadline: counted by `Deadline`
                self.metrics.failed(self.status_of(exc))
            raise
        finally:
            if not streaming:
                release()
        include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        deadline = request.scope.get("state", {}).get("deadline")
        events = self.sse(plan, cid, parsed.model, include_usage, release, deadline)
        # The stream releases its place when it ends; the background task when it never started (client gone).
        return StreamingResponse(events, media_type="text/event-stream", background=BackgroundTask(release),
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @staticmethod
    def status_of(exc: BaseException) -> int:
        if isinstance(exc, APIError):
            return exc.status
        return api_error(exc).status if isinstance(exc, VQAGraphError) else 500

    def count(self, answer: Answer) -> Usage:
        """The answer's token usage, counted into the metrics, with one log line per answered request."""
        usage = usage_of(answer)
        self.metrics.answered(answer, usage.prompt_tokens, usage.completion_tokens)
        log.info("answered route=%s seconds=%.3f prompt_tokens=%d completion_tokens=%d thread=%s", answer.route,
                 answer.trace.timings.get("total", 0.0), usage.prompt_tokens, usage.completion_tokens,
                 "yes" if answer.trace.history_turns else "no")
        return usage

    async def sse(self, plan: Plan, cid: str, model: str, include_usage: bool, release: Slot,
                  deadline: float | None = None) -> AsyncIterator[str]:
        """`chat.completion.chunk` events: the role, content deltas as the LLM writes, the end, `[DONE]`. Past
        `deadline` (anyio's clock) the stream ends with a `timeout` error event and `[DONE]`."""
        created = int(time.time())
        shaper = AnswerStream(self.live(plan))
        send, receive = anyio.create_memory_object_stream[tuple[str, Any]](max_buffer_size=1024)
        loop = anyio.lowlevel.current_token()  # tokens arrive on the engine's model thread, not a worker of ours

        def on_token(text: str) -> None:
            delta = shaper.token(text)
            if delta:
                # The client may be gone: the answer still completes (a thread records its turn).
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
                    anyio.from_thread.run_sync(send.send_nowait, ("delta", delta), token=loop)

        async def work() -> None:
            async with send:
                try:
                    answer = await self.in_thread(lambda: self.answer(plan, cid, on_token), slot=release)
                    await send.send(("answer", answer))
                except VQAGraphError as exc:
                    self.metrics.failed(self.status_of(exc))
                    await send.send(("error", api_error(exc)))
                except Exception:
                    log.exception("chat completion failed")
                    self.metrics.failed(500)
                    await send.send(("error", APIError(500, "internal error", "api_error", code="internal_error")))
                finally:
                    release()

        def event(data: dict[str, Any]) -> str:
            return f"data: {json.dumps(data)}\n\n"

        yield event(chunk(cid, model, created, {"role": "assistant", "content": ""}))
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as clock:
            async with anyio.create_task_group() as group:
                group.start_soon(work)
                async with receive:
                    async for kind, value in receive:
                        if kind == "delta":
                            yield event(chunk(cid, model, created, {"content": value}))
                        elif kind == "error":
                            yield event(error_body(value.message, value.type, value.code, value.param))
                        else:
                            usage = self.count(value)
                            rest = shaper.finish(value.answer)
                            if rest:
                                yield event(chunk(cid, model, created, {"content": rest}))
                            yield event(chunk(cid, model, created, {}, finish_reason(value),
                                              vqagraph=extension(value, plan.thread)))
                            if include_usage:
                                yield event(chunk(cid, model, created, {}, usage=usage.model_dump()))
        if clock.cancelled_caught:
            self.metrics.timed_out.inc()
            error = timeout_error(self.request_timeout or 0.0)
            log.warning("a stream timed out after %g s", self.request_timeout or 0.0)
            yield event(error_body(error.message, error.type, error.code, error.param))
        yield "data: [DONE]\n\n"

    def models_list(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": self.created,
                                            "owned_by": "vqagraph"} for name in self.models]}


def create_app(engine: Engine, *, web_page: bool = True, **settings: Any) -> FastAPI:
    """The FastAPI app serving `engine` (and the web page, unless `web_page` is False); `settings` are
    `OpenAIServer`'s (api_key(s), allow_hosts, store, limits, deadlines, trusted_hosts, cors_origins)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    server = OpenAIServer(engine, **settings)
    app = FastAPI(title="vqagraph", description="OpenAI-compatible visual question answering with frozen LLMs",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.vqagraph = server

    def reply(error: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer", **error.headers} if error.status == 401 else error.headers
        return JSONResponse(error_body(error.message, error.type, error.code, error.param), status_code=error.status,
                            headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return reply(exc)

    @app.exception_handler(VQAGraphError)
    async def _vqa_error(_request: Request, exc: VQAGraphError) -> JSONResponse:
        return reply(api_error(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return reply(APIError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(APIError(400, f"invalid request: {exc.errors()[0].get('msg', '')}"))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return reply(APIError(500, "internal error", "api_error", code="internal_error"))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator(registry=server.metrics.registry, excluded_handlers=["/metrics", "/health"]).instrument(
        app).expose(app, include_in_schema=False)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.check_auth(request)
        return server.models_list()

    @app.get("/v1/models/{model}")
    async def model(model: str, request: Request) -> dict[str, Any]:
        server.check_auth(request)
        for entry in server.models_list()["data"]:
            if entry["id"] == model:
                return entry  # type: ignore[no-any-return]
        raise APIError(404, f"The model {model[:100]!r} does not exist", code="model_not_found", param="model")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await server.chat(request)

    @app.post("/v1/images")
    async def upload_image(request: Request) -> Any:
        """{"image": data URL} -> {"id": "sha256:…"}: send a picture once, then name it in `image_url.url` (and
        `/v1/render`) by its reference; references are per API key."""
        server.check_auth(request)
        try:
            given = ImageUpload.model_validate_json(await server.read_body(request))
        except ValidationError as exc:
            raise validation_error(exc) from exc
        owner = server.owner(request)
        return await server.in_thread(lambda: server.upload(given.image, owner))

    if web_page:
        from vqagraph.agents.web import add_web_page

        add_web_page(app, server)  # the web page at / and its thread and explain endpoints
    # Outermost last: the Host check, then CORS (when configured), the JSON rule, the deadline.
    app.add_middleware(Deadline, server=server)
    app.add_middleware(JSONOnly)
    if server.cors_origins:
        app.add_middleware(cast(Any, cors_middleware()), allow_origins=list(server.cors_origins),
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(HostCheck, hosts=server.trusted_hosts)
    return app


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info",
          sock: socket.socket | None = None, **settings: Any) -> None:
    """Run the server with uvicorn until interrupted; at INFO, one log line per answered request. `sock`: an
    already listening socket (`listen`), else one is bound here. The bound host joins the Host allow-list."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings["trusted_hosts"] = [*settings.get("trusted_hosts", ()), *bound_host_names(host)]
    sock = sock or listen(host, port)
    app = create_app(engine, **settings)
    config = uvicorn_config(app, host, port, log_level, settings.get("body_timeout", DEFAULT_BODY_TIMEOUT))
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
