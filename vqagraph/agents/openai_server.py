"""`vqagraph serve`: an OpenAI-compatible chat-completions server in front of one `Engine`.

    POST /v1/chat/completions   the last user message's text is the question, its `image_url` part the image
    GET  /v1/models             the served profile (also answers to the model name `vqagraph`)
    GET  /health                no auth; for load balancers
    GET  /metrics               Prometheus: requests and latency by route and status, batch sizes, queue depth,
                                feature-cache hits and misses, LLM tokens in and out

Images come as data URLs; remote `http(s)` URLs only from hosts the operator allow-lists, and never from a
private, loopback, link-local or reserved address (checked after DNS resolution, and the connection is made to
the address that was checked). Threads: `vqagraph.thread` (extension field) or `user` names a conversation in
the thread store; without one, earlier user/assistant turns of the request about the same image are given to
the routes as history (a stateless client's multi-turn).

Concurrent requests run in worker threads side by side, and the engine gathers their model calls into batches
(the profile's `batching`: a batch waits at most `window_ms` for more calls). At most `max_pending` requests are
admitted at once; past that a request gets 429 with `Retry-After` at once, so a flood never hangs the server.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request  # at run time: FastAPI reads the endpoints' annotations

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
    new_id,
    usage_of,
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
from vqagraph.request import AskRequest

if TYPE_CHECKING:
    from fastapi import FastAPI
    from PIL import Image

    from vqagraph.answer import Answer
    from vqagraph.engine import Engine
    from vqagraph.tools.visual_prompt import Mark

log = logging.getLogger("vqagraph.serve")
T = TypeVar("T")

DEFAULT_MAX_BODY = 20 * 1024 * 1024
DEFAULT_MAX_DOWNLOAD = 20 * 1024 * 1024


def api_error(exc: VQAGraphError) -> APIError:
    """vqagraph's errors as HTTP statuses: the caller's fault is 4xx, the LLM's or the store's 5xx."""
    from vqagraph.engine.threads import ThreadStoreError

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
    if isinstance(exc, LLMError):
        return APIError(502, message, "api_error", code="llm_unavailable")
    if isinstance(exc, ThreadStoreError):
        return APIError(503, message, "api_error", code="thread_store_unavailable")
    if isinstance(exc, ModelNotAvailableError | ModelMismatchError):
        return APIError(503, message, "api_error", code="model_unavailable")
    return APIError(500, message, "api_error", code="internal_error")


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


class OpenAIServer:
    """The engine behind the HTTP API: request parsing, image intake, one engine call at a time."""

    def __init__(self, engine: Engine, *, api_key: str | None = None, allow_hosts: Sequence[str] = (),
                 store: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
                 max_download_bytes: int = DEFAULT_MAX_DOWNLOAD, max_image_pixels: int | None = None,
                 model_names: Sequence[str] | None = None, max_pending: int = 64) -> None:
        self.engine = engine
        self.api_key = api_key or None
        self.allow_hosts = tuple(allow_hosts)
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_download_bytes = max_download_bytes
        self.max_image_pixels = max_image_pixels or engine.profile.limits.max_image_pixels
        self.models = list(model_names or [engine.profile.name])
        self.max_pending = max_pending
        self.pending = 0  # requests admitted and not yet answered (read and written on the event loop only)
        # As many worker threads as questions that can share a batch; more requests wait for a thread.
        self.threads = anyio.CapacityLimiter(max(engine.profile.batching.max_batch, 1))
        self.metrics = ServerMetrics.for_engine(engine)
        self.created = int(time.time())

    # -- HTTP plumbing

    def check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.api_key.encode())
        if not ok:
            raise APIError(401, "Incorrect or missing API key: send `Authorization: Bearer KEY`",
                           code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        too_large = APIError(413, f"the request body is over the limit of {limit:,} bytes", code="request_too_large")
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise APIError(400, "invalid Content-Length")
            if int(length) > limit:
                raise too_large
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise too_large
        return bytes(body)

    def parse(self, body: bytes) -> ChatCompletionRequest:
        try:
            request = ChatCompletionRequest.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise APIError(400, f"invalid request: {where}: {first['msg']}", param=where or None) from exc
        if request.model not in self.models and request.model != "vqagraph":
            raise APIError(404, f"The model {request.model!r} does not exist; this server serves "
                           f"{', '.join(self.models)}", code="model_not_found", param="model")
        if request.n not in (None, 1):
            raise APIError(400, "only n=1 is supported", param="n")
        return request

    async def in_thread(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self.threads)

    def admit(self) -> Callable[[], None]:
        """Count the request in (or answer 429 at once when `max_pending` are in already); the returned function
        counts it out, once however often it is called."""
        if self.pending >= self.max_pending:
            self.metrics.rejected.inc()
            raise APIError(429, f"the server is busy ({self.pending} requests in progress); retry shortly",
                           "rate_limit_error", code="server_busy", headers={"Retry-After": "1"})
        self.pending += 1
        self.metrics.queue.set(self.pending)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.pending -= 1
                self.metrics.queue.set(self.pending)

        return release

    # -- requests into plans

    def load(self, url: str) -> Image.Image:
        from vqagraph.media import image_from_string, load_image

        data = image_from_string(url, None, fetch=lambda u: fetch_image(u, self.allow_hosts, self.max_download_bytes))
        return load_image(data, max_pixels=self.max_image_pixels)

    def plan(self, request: ChatCompletionRequest) -> Plan:
        """Question, image, marks, thread and history from the messages; every check that needs no model."""
        from vqagraph.engine import validate_marks, validate_question

        options = request.vqagraph
        try:
            thread = request.thread_id()
        except ValueError as exc:
            raise APIError(400, str(exc), param="user") from exc
        messages = [m for m in request.messages if m.role in ("user", "assistant")]
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is None:
            raise APIError(400, "no user message: the last user message holds the question", param="messages")
        question = validate_question(messages[last].text(), self.engine.profile.limits.max_question_chars)
        self.engine.check_route(options.route, options.router)
        marks = validate_marks(options.marks)
        # The image: the last user message that carries one (the question may be a follow-up about it).
        at = max((i for i, m in enumerate(messages[:last + 1]) if m.role == "user" and m.image_urls()), default=None)
        if at is not None and thread is not None and at != last:
            at = None  # a thread keeps its own current image; only an image sent with this question changes it
        if at is not None and len(messages[at].image_urls()) > 1:
            raise APIError(400, "one image per message: the question is about one picture", code="invalid_image",
                           param="messages")
        image = self.load(messages[at].image_urls()[0]) if at is not None else None
        if image is None and thread is None:
            raise ImageError("no image: put an image_url part in the user message (or continue a thread)")
        history = [] if thread is not None or at is None else self.fold(messages[at:last])
        return Plan(question, image, marks, options.route, options.router, thread, history)

    @staticmethod
    def fold(messages: Sequence[Message]) -> list[dict[str, str]]:
        """Earlier user/assistant turns (about the current image) as the routes' history."""
        history: list[dict[str, str]] = []
        pending: str | None = None
        for message in messages:
            if message.role == "user":
                pending = message.text()
            elif pending is not None and message.text():
                history.append({"question": pending, "answer": message.text()})
                pending = None
        return history

    # -- running the engine (in a worker thread)

    def check_thread_image(self, plan: Plan) -> None:
        if self.engine.conversation(plan.thread, store=self.store).image_ref is None:
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

    def answer(self, plan: Plan, on_token: Callable[[str], None] | None = None) -> Answer:
        """The engine's one entry point: a thread's turn, or the request's own earlier turns as history."""
        request = AskRequest(question=plan.question, image=plan.image, marks=list(plan.marks), route=plan.route,
                             router=plan.router, history=[] if plan.thread else list(plan.history),
                             thread=plan.thread, store=self.store)
        on_event = None if on_token is None else (lambda kind, value: on_token(value) if kind == "token" else None)
        return self.engine.answer(request, on_event)

    # -- endpoints

    async def chat(self, request: Request) -> Any:
        from starlette.background import BackgroundTask
        from starlette.responses import JSONResponse, StreamingResponse

        self.check_auth(request)
        release = self.admit()
        streaming = False  # once the stream is handed out, it counts the request out when it ends
        try:
            parsed = self.parse(await self.read_body(request))
            plan = await self.in_thread(lambda: self.plan(parsed))  # may download a remote image
            cid = new_id()
            if not parsed.stream:
                answer = await self.in_thread(lambda: self.answer(plan))
                body = completion(cid, parsed.model, answer.answer, self.count(answer), extension(answer, plan.thread))
                return JSONResponse(body)
            if plan.thread is not None and plan.image is None:
                await self.in_thread(lambda: self.check_thread_image(plan))  # a 400 now, not an error mid-stream
            streaming = True
        except BaseException as exc:
            self.metrics.failed(self.status_of(exc))
            raise
        finally:
            if not streaming:
                release()
        include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        events = self.sse(plan, cid, parsed.model, include_usage, release)
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

    async def sse(self, plan: Plan, cid: str, model: str, include_usage: bool,
                  release: Callable[[], None]) -> AsyncIterator[str]:
        """`chat.completion.chunk` events: the role, content deltas as the LLM writes, the end, `[DONE]`."""
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
                    answer = await self.in_thread(lambda: self.answer(plan, on_token))
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
                        yield event(chunk(cid, model, created, {}, "stop", vqagraph=extension(value, plan.thread)))
                        if include_usage:
                            yield event(chunk(cid, model, created, {}, usage=usage.model_dump()))
        yield "data: [DONE]\n\n"

    def models_list(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": self.created,
                                            "owned_by": "vqagraph"} for name in self.models]}


def create_app(engine: Engine, **settings: Any) -> FastAPI:
    """The FastAPI app serving `engine`; `settings` are `OpenAIServer`'s (api_key, allow_hosts, store, limits)."""
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
        raise APIError(404, f"The model {model!r} does not exist", code="model_not_found", param="model")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await server.chat(request)

    return app


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info",
          **settings: Any) -> None:
    """Run the server with uvicorn until interrupted; at INFO, one log line per answered request."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(engine, **settings), host=host, port=port, log_level=log_level)
