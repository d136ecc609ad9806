"""What a question may be, checked at the boundary before anything runs: the question text and the marks drawn
on the image. Every front end and the graph's own intake use these (one validation, one error per fault)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vqagraph.errors import MarkError, QuestionError
from vqagraph.tools.visual_prompt import MAX_MARKS, Mark

# C0 and C1 control characters other than the whitespace a question may wrap on (tab, newlines, form feed).
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
SURROGATE = re.compile(r"[\ud800-\udfff]")


def validate_marks(marks: Sequence[Mark | dict[str, Any]], *, allow_files: bool = True) -> list[Mark]:
    """Marks as `Mark`s; a malformed one is a MarkError that names its index. At most MAX_MARKS, counted before
    any is parsed. `allow_files=False` (callers on another machine: the HTTP and MCP servers) refuses `mask_path`,
    a file on this machine that only a local caller may name."""
    if isinstance(marks, str | bytes) or not isinstance(marks, Sequence):
        raise MarkError(f"marks must be a list of marks, not {type(marks).__name__}")
    if len(marks) > MAX_MARKS:
        raise MarkError(f"{len(marks)} marks given; at most {MAX_MARKS} can be drawn on one image")
    checked = []
    for index, mark in enumerate(marks):
        try:
            checked.append(_mark(mark))
        except MarkError as exc:
            raise MarkError(f"mark {index}{str(exc).removeprefix('mark')}") from exc
        if not allow_files and checked[-1].mask_path is not None:
            raise MarkError(f"mark {index}: mask_path is not accepted here (it names a file on the server); send "
                            "the region as a polygon or a box instead")
    return checked


def _mark(value: Any) -> Mark:
    if isinstance(value, Mark):
        return value
    if not isinstance(value, dict):
        raise MarkError(f"mark: expected an object with a shape and a region, not {type(value).__name__}")
    if not all(isinstance(key, str) for key in value):
        raise MarkError("mark: its field names must be strings")
    return Mark.create(**value)


def validate_question(question: Any, max_chars: int) -> str:
    """The question as the models read it, whitespace tidied; text that is not a question (not a string, not
    valid UTF-8, control characters, empty, over `max_chars`) is a QuestionError that says which."""
    if question is None:
        raise QuestionError("the question is empty")
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, not {type(question).__name__}")
    bad = SURROGATE.search(question)
    if bad:  # surrogateescape (argv, file names) turns each undecodable byte into U+DC80..U+DCFF
        code = ord(bad.group())
        what = (f"undecodable byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF
                else f"lone surrogate U+{code:04X}")
        raise QuestionError(f"the question is not valid UTF-8 text ({what} at character {bad.start() + 1})")
    bad = CONTROL.search(question)
    if bad:
        raise QuestionError(f"the question has a control character (U+{ord(bad.group()):04X}) at character "
                            f"{bad.start() + 1}; send plain text")
    if not question.strip():
        raise QuestionError("the question is empty")
    question = " ".join(question.split())
    if len(question) > max_chars:
        raise QuestionError(f"the question has {len(question)} characters, over the limit of {max_chars}")
    return question


MAX_STOP = 4  # stop strings per request, as OpenAI allows


class Generation(BaseModel):
    """How the frozen LLM decodes this question's answer, as vLLM's sampling parameters: greedy by default. Every
    LLM call of every route honours it; the trace records it (`trace.generation`)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy; above: sampling at this temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the smallest set of tokens this likely")
    seed: int | None = Field(None, description="seeds sampling, so a sampled answer is reproducible")
    max_tokens: int | None = Field(None, ge=1, description="the answer is cut at this many tokens (finish reason "
                                   "`length`); a route's own cap still applies (None: the route's cap)")
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP,
                            description="the answer ends before the first of these (besides the route's own)")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("a stop string cannot be empty")
        return value

    @classmethod
    def checked(cls, **settings: Any) -> Generation:
        """From a caller's values (a tool's arguments, the CLI's flags); an invalid one is a QuestionError that
        names the setting, so every front end reports it the same way."""
        try:
            return cls(**settings)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise QuestionError(f"generation setting {where}: {first['msg']}") from exc

    def given(self) -> dict[str, Any]:
        """What differs from greedy defaults (the trace's record; empty for a plain request)."""
        return self.model_dump(exclude_defaults=True)


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
    generation: Generation = Field(default_factory=Generation, description="how the LLM decodes (greedy default)")
    owner: str = Field("", description="who asks, as an opaque string (servers: a hash of the API key): a thread "
                       "answers only the owner that started it")
