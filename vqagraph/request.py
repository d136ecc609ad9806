"""What a question may be, checked at the boundary before anything runs: the question text and the marks drawn
on the image. Every front end and the graph's own intake use these (one validation, one error per fault)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vqagraph.errors import MarkError, QuestionError
from vqagraph.tools.visual_prompt import Mark


def validate_marks(marks: Sequence[Mark | dict[str, Any]]) -> list[Mark]:
    """Marks as `Mark`s; a malformed one is a MarkError that names its index."""
    checked = []
    for index, mark in enumerate(marks):
        try:
            checked.append(mark if isinstance(mark, Mark) else Mark.create(**mark))
        except MarkError as exc:
            raise MarkError(f"mark {index}{str(exc).removeprefix('mark')}") from exc
    return checked


def validate_question(question: str, max_chars: int) -> str:
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("the question is empty")
    question = " ".join(question.split())
    if len(question) > max_chars:
        raise QuestionError(f"the question has {len(question)} characters, over the limit of {max_chars}")
    return question


class AskRequest(BaseModel):
    """One question as every front end hands it to the engine (`Engine.answer`): the CLI, the conversation, the
    OpenAI and MCP servers, the LangChain tool, the LangGraph app and the eval harness translate their inputs into
    this, and the engine's `Answer` into their outputs."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: str
    image: Any = Field(None, description="a path, bytes, a PIL image or a `sha256:` reference; None: the thread's")
    marks: list[Any] = Field(default_factory=list, description="visual prompts: `Mark`s or their dicts")
    route: str = "auto"
    router: str | None = Field(None, description="the router's policy for route auto (None: the profile's)")
    history: list[dict[str, str]] = Field(
        default_factory=list, description="earlier turns ({question, answer}) when the caller keeps them itself")
    thread: str | None = Field(None, description="a conversation thread: the engine keeps the turns")
    store: str | None = Field(None, description="the thread store (a SQLite path, a postgresql:// URL, memory)")
    owner: str = Field("", description="who asks, as an opaque string (servers: a hash of the API key): a thread "
                       "answers only the owner that started it")
