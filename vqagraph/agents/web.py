"""The web page (`vqagraph ui`, and `/` of `vqagraph serve`): draw marks on an image, ask, watch the answer.

The page is three static files served from this package (no CDN: it works on a machine with no network). It asks
through `/v1/chat/completions` like every other client (streamed, with the `vqagraph` extension for marks, route
and thread), so it reaches the engine by the one entry point. This module adds what the page needs beside that:

    GET    /                              the page (public: it holds no data; every call it makes carries the key)
    GET    /static/{file}                 its script and style
    GET    /v1/marks                      the renderer's shapes and colours
    POST   /v1/render                     {image, marks} -> PNG: the image exactly as the routes will see it
    (and, on the API itself: POST /v1/images {image} -> {id: "sha256:…"}, the picture sent once)
    GET    /v1/threads                    the caller's threads, most recent first
    GET    /v1/threads/{id}               one thread: title, turns
    PATCH  /v1/threads/{id}               {title}: rename
    DELETE /v1/threads/{id}               forget it
    GET    /v1/threads/{id}/image         the thread's current image (PNG)
    GET    /v1/answers/{id}/explain.png   the explain picture of a recent text-route answer (by completion id)

Threads are the server's thread store's; with keys on, each key sees only the threads it started.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request  # at run time: FastAPI reads the endpoints' annotations

from vqagraph.agents.openai_protocol import THREAD_ID, APIError, validation_error
from vqagraph.media import png_bytes

if TYPE_CHECKING:
    from fastapi import FastAPI
    from PIL import Image
    from starlette.responses import Response

    from vqagraph.answer import Answer
    from vqagraph.engine import Engine
    from vqagraph.engine.conversation import Conversation

T = TypeVar("T")

ASSETS = ("index.html", "app.js", "style.css")
# The page loads nothing from elsewhere; pictures it shows are data: or blob: URLs it made itself.
CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


class PageServer(Protocol):
    """What the page's endpoints use of the server they join (agents/openai_server.py's `OpenAIServer`), named
    here so that this module, which the server imports, does not import the server back."""

    @property
    def engine(self) -> Engine: ...

    @property
    def store(self) -> str | None: ...

    def check_auth(self, request: Request) -> None: ...

    def owner(self, request: Request) -> str: ...

    async def read_body(self, request: Request) -> bytes: ...

    async def in_thread(self, fn: Callable[[], T]) -> T: ...

    def load(self, url: str, owner: str) -> Image.Image: ...

    def recalled(self, cid: str, owner: str) -> Answer: ...


class RenderRequest(BaseModel):
    """The page's picture and its marks, to draw as the routes will see them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(description="the page's picture: its `sha256:` reference from POST /v1/images, or a data: URL")
    marks: list[dict[str, Any]] = Field(default_factory=list)


class RenameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field(max_length=1000)


def asset(name: str) -> bytes:
    return files("vqagraph.agents").joinpath("web_page", name).read_bytes()


def add_web_page(app: FastAPI, server: PageServer) -> None:
    """Register the page and its endpoints on the server's app."""
    from starlette.responses import Response as PlainResponse

    types = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
             "css": "text/css; charset=utf-8"}

    def static(name: str) -> Response:
        headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return PlainResponse(asset(name), media_type=types[name.rsplit(".", 1)[1]], headers=headers)

    def thread_id(value: str) -> str:
        if not THREAD_ID.match(value):
            raise APIError(404, "no such thread here", code="thread_not_found")
        return value

    def conversation(thread: str) -> Conversation:
        return server.engine.conversation(thread, store=server.store)

    async def body_as(request: Request, model: type[BaseModel]) -> Any:
        raw = await server.read_body(request)
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise validation_error(exc) from exc

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return static("index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return PlainResponse(status_code=204)

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in ASSETS:
            raise APIError(404, "not found", code="not_found")
        return static(name)

    @app.get("/v1/marks")
    async def vocabulary() -> dict[str, Any]:
        """The renderer's shapes and colours, so the page draws with the same ones (public: no data in it)."""
        from vqagraph.tools.visual_prompt import COLOURS, SHAPES

        return {"shapes": list(SHAPES), "colours": COLOURS}

    @app.get("/v1/routes")
    async def routes() -> dict[str, Any]:
        """The registered routes and which of them the served profile has, so the page offers exactly those
        (public: no data in it)."""
        from vqagraph.graphs.registry import ROUTES

        available = ROUTES.available(server.engine.profile)
        return {"routes": [{"name": r.name, "title": r.title, "summary": r.summary, "available": r.name in available}
                           for r in ROUTES], "requested": list(ROUTES.requested())}

    @app.post("/v1/render")
    async def render(request: Request) -> Response:
        server.check_auth(request)
        given: RenderRequest = await body_as(request, RenderRequest)
        owner = server.owner(request)

        def draw() -> bytes:
            from vqagraph.request import validate_marks

            marks = validate_marks(given.marks, allow_files=False)
            return png_bytes(server.engine.render(server.load(given.image, owner), marks))

        return PlainResponse(await server.in_thread(draw), media_type="image/png")

    @app.get("/v1/threads")
    async def threads(request: Request) -> dict[str, Any]:
        server.check_auth(request)
        owner = server.owner(request)

        def listed() -> list[dict[str, Any]]:
            return [t.model_dump() for t in server.engine.thread_store(server.store).threads(owner)]

        return {"object": "list", "data": await server.in_thread(listed)}

    @app.get("/v1/threads/{thread}")
    async def thread(thread: str, request: Request) -> dict[str, Any]:
        server.check_auth(request)
        owner, thread = server.owner(request), thread_id(thread)

        def read() -> dict[str, Any]:
            talk = conversation(thread)
            info = talk.store.thread(thread, owner)
            turns = [{"question": t.question, "answer": t.answer, "route": t.route, "route_reason": t.route_reason,
                      "marks": t.marks, "image_ref": t.image_ref, "at": t.at} for t in talk.history()]
            return {**info.model_dump(), "image_ref": talk.image_ref, "turns": turns}

        return await server.in_thread(read)

    @app.patch("/v1/threads/{thread}")
    async def rename(thread: str, request: Request) -> dict[str, Any]:
        server.check_auth(request)
        owner, thread = server.owner(request), thread_id(thread)
        given: RenameRequest = await body_as(request, RenameRequest)
        store = server.engine.thread_store(server.store)
        return (await server.in_thread(lambda: store.rename(thread, owner, given.title))).model_dump()

    @app.delete("/v1/threads/{thread}")
    async def delete(thread: str, request: Request) -> dict[str, Any]:
        server.check_auth(request)
        owner, thread = server.owner(request), thread_id(thread)
        await server.in_thread(lambda: server.engine.thread_store(server.store).delete(thread, owner))
        return {"id": thread, "object": "thread", "deleted": True}

    @app.get("/v1/threads/{thread}/image")
    async def thread_image(thread: str, request: Request) -> Response:
        server.check_auth(request)
        owner, thread = server.owner(request), thread_id(thread)

        def picture() -> bytes:
            talk = conversation(thread)
            talk.store.thread(thread, owner)
            ref = talk.image_ref
            if ref is None:
                raise APIError(404, "this thread has no image yet", code="not_found")
            return png_bytes(server.engine.tools.images.get(ref))

        return PlainResponse(await server.in_thread(picture), media_type="image/png")

    @app.get("/v1/answers/{answer_id}/explain.png")
    async def explain(answer_id: str, request: Request) -> Response:
        server.check_auth(request)
        answer = server.recalled(answer_id, server.owner(request))
        picture = await server.in_thread(lambda: server.engine.explain(answer))
        if picture is None:
            raise APIError(404, "no explain picture: the text route did not run for this answer", code="no_explain")
        return PlainResponse(await server.in_thread(lambda: png_bytes(picture)), media_type="image/png")
