"""The project's exception types: every failure a user can cause has one, with a message that says what to do."""

from __future__ import annotations


class VQAGraphError(Exception):
    """Base of every error vqagraph raises on purpose; the CLI prints these as one line and exits 2."""


class ImageError(VQAGraphError):
    """An image could not be taken in: unreadable, truncated, not an image, empty."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the configured limit (a guard against decompression bombs)."""


class QuestionError(VQAGraphError):
    """A question is empty, or longer than the configured limit."""


class ProfileError(VQAGraphError):
    """A profile name is unknown, or a profile file is malformed."""


class ModelNotAvailableError(VQAGraphError):
    """Weights for a model cannot be found locally and the Hub cannot be reached."""


class ModelMismatchError(VQAGraphError):
    """Two models that must work together do not fit (patch grids, hidden sizes)."""


class LLMError(VQAGraphError):
    """The frozen LLM failed to answer: server down, timed out, or rejected the request."""


class MarkError(VQAGraphError):
    """A visual-prompt mark is malformed: outside the image, degenerate, an unknown colour, a mask of the wrong
    size, or too many marks."""


def describe_validation_error(exc: Exception, limit: int = 300) -> str:
    """A pydantic ValidationError as one short line (`where: what`, and how many more faults), for front ends that
    hand input errors back to a caller who fixes them: pydantic's own text spans lines and quotes the input."""
    errors = exc.errors() if callable(getattr(exc, "errors", None)) else []  # type: ignore[attr-defined]
    if not errors:
        return " ".join(str(exc).split())[:limit]
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    what = " ".join(str(first.get("msg", "invalid")).removeprefix("Value error, ").split())
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{where}: {what}{more}" if where else f"{what}{more}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
