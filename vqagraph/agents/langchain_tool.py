"""`VisualQuestionTool`: the engine as a LangChain tool, for any agent that takes `BaseTool`s.

    from vqagraph import Engine
    from vqagraph.agents.langchain_tool import VisualQuestionTool

    tool = VisualQuestionTool(engine=Engine.from_profile("tiny"))
    agent = create_react_agent(chat_model, [tool])

The tool's content is the short answer (what the agent's LLM reads); its artifact is the whole `Answer` with its
trace (route, captions, exemplars, prompt, timings) as a dict, kept on the `ToolMessage` for the application but
never sent to the LLM. Errors the caller can fix (a missing image, an empty question, a bad mark, arguments that
do not fit the schema) come back as the tool's content, one line, so the agent can try again; they never print
`image_root`. With `image_root`, image paths and marks' `mask_path` must lie under it (relative ones are taken
from it); without it, they may be any local file, as for any local caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.v1 import ValidationError as ValidationErrorV1

from vqagraph.errors import ImageError, MarkError, VQAGraphError, describe_validation_error
from vqagraph.graphs.registry import RequestedRoute
from vqagraph.media import image_from_string, under_root
from vqagraph.request import AskRequest, Generation, validate_marks

if TYPE_CHECKING:
    from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun

    from vqagraph.engine import Engine
    from vqagraph.media import ImageInput


class MarkArg(BaseModel):
    """A visual prompt drawn on the image (ViP-LLaVA shapes); coordinates in pixels."""

    model_config = ConfigDict(extra="allow")

    shape: str = Field(description="rectangle, ellipse, arrow, point, triangle, scribble, contour, mask…")
    box: list[float] | None = Field(None, description="[x0, y0, x1, y1] for rectangle, ellipse, arrow, triangle…")
    point: list[float] | None = Field(None, description="[x, y] for point")
    polygon: list[list[float]] | None = Field(None, description="[[x, y], ...] for scribble, contour")
    colour: str = "red"


class VisualQuestionInput(BaseModel):
    """What the agent passes to the tool."""

    image: str | None = Field(
        None, description="the image: a local file path, a `sha256:` image reference from an earlier answer, or a "
        "data: URL; may be left out when continuing a thread (its current image is used)")
    question: str = Field(description="a short question about the image, e.g. 'What colour is the car?'")
    marks: list[MarkArg] | None = Field(None, description="optional visual prompts pointing at regions")
    thread: str | None = Field(None, description="optional conversation id: the question becomes a turn of it")
    route: RequestedRoute = Field(
        "auto", description="auto (the router decides), img2llm (text route), bridge (Q-Former route), "
        "projection (LLaVA projection route), adapter (LLaMA-Adapter route), a route the application registered, "
        "or both (every route the profile has)")
    temperature: float = Field(0.0, ge=0, le=2, description="0: the LLM answers greedily (default); above: sampling")
    max_tokens: int | None = Field(None, ge=1, description="cut the answer at this many tokens (default: the route's)")
    seed: int | None = Field(None, description="seeds sampling, so a sampled answer is reproducible")


def validation_message(exc: ValidationError | ValidationErrorV1) -> str:
    """The tool's content when the agent's arguments do not fit the schema: one line it can act on."""
    return f"invalid arguments: {describe_validation_error(exc)}"


class VisualQuestionTool(BaseTool):
    """Answers questions about images with a frozen LLM through vqagraph's graph."""

    name: str = "visual_question"
    description: str = (
        "Answer a short question about an image. Input: the image (a file path or an image reference), the question, "
        "optionally marks pointing at regions and a thread id for follow-up questions. Returns a short answer."
    )
    args_schema: type[BaseModel] = VisualQuestionInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True
    handle_validation_error: bool | str | Callable[[ValidationError | ValidationErrorV1], str] | None = (
        validation_message)

    engine: Any = Field(description="a vqagraph Engine")
    store: str | None = Field(None, description="thread store for `thread` (default: the SQLite file under the "
                              "data directory; `memory` for a throwaway one)")
    image_root: Path | None = Field(None, description="when set, image paths must lie under this folder")
    include_trace: bool = Field(True, description="put the full trace in the artifact")

    def _image(self, engine: Engine, image: str | None) -> ImageInput | None:
        if image is None or not image.strip():
            return None
        return image_from_string(image, engine.tools.images, root=self.image_root)

    def _marks(self, marks: list[Any] | None) -> list[Any]:
        """The marks checked; a `mask_path` confined to `image_root` like an image path."""
        given = [m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in marks or []]
        checked = validate_marks(given)
        for index, mark in enumerate(checked):
            if mark.mask_path is not None and self.image_root is not None:
                inside = under_root(mark.mask_path, self.image_root)
                if inside is None:
                    raise MarkError(f"mark {index}: the mask_path is outside the folder this tool may read")
                checked[index] = mark.model_copy(update={"mask_path": str(inside)})
        return checked

    def _redact(self, message: str) -> str:
        """The message without `image_root` (the agent's LLM, and whoever reads its transcript, need not know it)."""
        if self.image_root is None:
            return message
        folder = Path(self.image_root).expanduser()
        for spelling in sorted({str(folder), str(folder.resolve()), str(self.image_root)}, key=len, reverse=True):
            message = message.replace(spelling, "<image folder>")
        return message

    def _answer(self, image: str | None, question: str, marks: list[Any] | None, thread: str | None,
                route: str, generation: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        engine: Engine = self.engine
        try:
            checked = self._marks(marks)
            source = self._image(engine, image)
            if source is None and not thread:
                raise ImageError("give the image (a file path or an image reference)")
            answer = engine.answer(AskRequest(question=question, image=source, marks=checked, route=route,
                                              thread=thread, store=self.store,
                                              generation=Generation.checked(**generation)))
        except VQAGraphError as exc:
            raise ToolException(self._redact(" ".join(str(exc).split()))) from exc
        artifact = answer.model_dump(mode="json", exclude=None if self.include_trace else {"trace"})
        artifact["thread"] = thread
        return answer.answer, artifact

    def _run(self, question: str, image: str | None = None, marks: list[Any] | None = None,
             thread: str | None = None, route: str = "auto", temperature: float = 0.0,
             max_tokens: int | None = None, seed: int | None = None,
             run_manager: CallbackManagerForToolRun | None = None) -> tuple[str, dict[str, Any]]:
        generation = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        return self._answer(image, question, marks, thread, route, generation)

    async def _arun(self, question: str, image: str | None = None, marks: list[Any] | None = None,
                    thread: str | None = None, route: str = "auto", temperature: float = 0.0,
                    max_tokens: int | None = None, seed: int | None = None,
                    run_manager: AsyncCallbackManagerForToolRun | None = None) -> tuple[str, dict[str, Any]]:
        # The engine is synchronous (PyTorch): run it in a worker thread so the event loop stays free.
        generation = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        return await asyncio.to_thread(self._answer, image, question, marks, thread, route, generation)
