"""`vqagraph mcp`: the engine as Model Context Protocol tools over stdio, for desktop agents.

Tools:
- `ask_image(image, question, route="auto", marks=[], thread=None)`: the answer, the route that gave it and why;
  `image` is a local path or a `data:` URL; with `thread`, the question joins that conversation (the image may
  then be left out: the thread's current one);
- `render_marks(image, marks)`: the picture with the marks drawn, exactly as the routes would see it (PNG).

Marks may not name files (`mask_path`): the client may run elsewhere, so a mask is sent as a polygon or a box.
Every error, arguments that do not fit the schema included, comes back as a one-line tool error.

Run standalone with `python -m vqagraph.agents.mcp_server [--profile P]`. A desktop agent's configuration:

    {"mcpServers": {"vqagraph": {"command": "vqagraph", "args": ["mcp", "--profile", "tiny"]}}}
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import Image, MCPServer  # at run time: the SDK reads the tools' annotations
from pydantic import BaseModel, Field, ValidationError

from vqagraph.errors import ImageError, VQAGraphError, describe_validation_error
from vqagraph.graphs.registry import RequestedRoute
from vqagraph.media import image_from_string
from vqagraph.request import AskRequest, Generation, validate_marks

if TYPE_CHECKING:
    from vqagraph.engine import Engine

T = TypeVar("T")


class AskResult(BaseModel):
    """What `ask_image` returns (as structured content, and as its JSON text)."""

    answer: str
    route: str = Field(description="the route whose answer was kept: img2llm (text) or bridge (embedding)")
    route_reason: str
    question: str = Field(description="the question as the LLM read it (a mark's phrase in place of 'this')")
    image_ref: str
    thread: str | None = None
    meaningless: bool = Field(description="true when the profile's models are untrained placeholders")
    mark_notes: list[str] = Field(default_factory=list)


class _OneLineErrors(MCPServer):
    """The SDK reports arguments that do not fit a tool's schema in pydantic's many-line text; this says the first
    fault in one line (`question: Field required`), as the tools' own errors are."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError

        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            raise ToolError(f"Error executing tool {name}: invalid arguments: "
                            f"{describe_validation_error(cause)}") from cause


def build_server(engine: Engine, store: str | None = None) -> MCPServer:
    """An MCP server with `ask_image` and `render_marks` over `engine` (its models load on first use)."""
    from mcp.server.mcpserver.exceptions import ToolError

    async def run(fn: Callable[[Engine], T]) -> T:
        def call() -> T:  # in a worker thread; concurrent calls share the engine's batched model calls
            return fn(engine)

        try:
            return await anyio.to_thread.run_sync(call)
        except VQAGraphError as exc:
            raise ToolError(" ".join(str(exc).split())) from exc

    server: MCPServer = _OneLineErrors(
        "vqagraph",
        instructions="Answers questions about images with a frozen LLM (vqagraph). Give a local image path or a "
        "data: URL and a short question; the answer is a few words.",
    )

    @server.tool(description="Answer a short question about an image (a local path or a data: URL). Optional "
                 "marks (visual prompts: {shape, box|point|polygon, colour}) point at regions; a thread id makes "
                 "it a conversation turn (later turns may leave out the image).")
    async def ask_image(image: str | None, question: str,
                        route: RequestedRoute = "auto",
                        marks: list[dict[str, Any]] | None = None, thread: str | None = None,
                        temperature: float = 0.0, max_tokens: int | None = None,
                        seed: int | None = None) -> AskResult:
        def ask(engine: Engine) -> AskResult:
            checked = validate_marks(marks or [], allow_files=False)
            source = image_from_string(image, engine.tools.images) if image else None
            if source is None and not thread:
                raise ImageError("give an image (a local path or a data: URL), or a thread to continue")
            answer = engine.answer(AskRequest(question=question, image=source, marks=checked, route=route,
                                              thread=thread, store=store, generation=Generation.checked(
                                                  temperature=temperature, max_tokens=max_tokens, seed=seed)))
            return AskResult(answer=answer.answer, route=answer.route, route_reason=answer.trace.route_reason,
                             question=answer.question, image_ref=answer.image_ref, thread=thread,
                             meaningless=answer.meaningless,
                             mark_notes=(answer.trace.visual_prompt or {}).get("notes", []))

        return await run(ask)

    @server.tool(description="Draw visual-prompt marks on an image (a local path or a data: URL) and return the "
                 "picture exactly as the question-answering routes would see it.")
    async def render_marks(image: str, marks: list[dict[str, Any]]) -> Image:
        def render(engine: Engine) -> bytes:
            buffer = io.BytesIO()
            checked = validate_marks(marks, allow_files=False)
            engine.render(image_from_string(image, engine.tools.images), checked).save(buffer, format="PNG")
            return buffer.getvalue()

        return Image(data=await run(render), format="png")

    return server


def run_stdio(args: argparse.Namespace) -> int:
    """Serve over stdio until the client closes stdin. Models load on the first call (not before the handshake)."""
    import os

    from vqagraph.agents.options import open_engine

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    engine = open_engine(args)  # checks the profile now; models load lazily
    try:
        build_server(engine, store=args.store).run("stdio")
    finally:
        engine.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from vqagraph.agents.options import add_engine_options, run_command

    parser = argparse.ArgumentParser(prog="python -m vqagraph.agents.mcp_server", description=__doc__.split("\n")[0])
    args = add_engine_options(parser).parse_args(argv)
    return run_command(run_stdio, args, prog="vqagraph mcp")


if __name__ == "__main__":
    sys.exit(main())
