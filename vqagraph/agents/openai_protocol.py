"""The OpenAI chat-completions wire format that `vqagraph serve` speaks: requests, responses, errors, and the
intake of `image_url` parts (data URLs; allow-listed remote URLs, fetched only from public addresses).

Only what a visual question needs is read; OpenAI fields that do not apply to a frozen LLM answering briefly
(temperature, tools, logprobs…) are accepted and ignored, so unmodified clients work. vqagraph's own knobs
travel in the extension field `vqagraph` (the openai client sends it with `extra_body={"vqagraph": {...}}`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vqagraph.config import RequestedRoute
from vqagraph.tools.llm.postprocess import postprocess_answer

if TYPE_CHECKING:
    from vqagraph.answer import Answer

log = logging.getLogger("vqagraph.serve")

THREAD_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    """One part of a message's content: `text`, or `image_url` (a data URL, or an allow-listed http(s) URL)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text parts joined by spaces (images left out)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return " ".join(part.text or "" for part in self.content if part.type == "text").strip()

    def image_urls(self) -> list[str]:
        if not isinstance(self.content, list):
            return []
        return [part.image_url.url for part in self.content if part.type == "image_url" and part.image_url]


class VQAOptions(BaseModel):
    """The `vqagraph` extension field of a request."""

    model_config = ConfigDict(extra="forbid")

    thread: str | None = Field(None, description="a conversation thread id: continued if it exists, else created")
    route: RequestedRoute = "auto"
    router: Literal["rules", "cascade", "both"] | None = None
    marks: list[dict[str, Any]] = Field(default_factory=list, description="visual prompts (Mark fields), pixels")

    @field_validator("thread")
    @classmethod
    def _thread_id(cls, value: str | None) -> str | None:
        if value is not None and not THREAD_ID.match(value):
            raise ValueError("a thread id is 1-128 characters of letters, digits and _ . : @ -")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = Field(None, description="names the conversation thread when `vqagraph.thread` does not")
    vqagraph: VQAOptions = Field(default_factory=VQAOptions)

    def thread_id(self) -> str | None:
        thread = self.vqagraph.thread or self.user
        if thread is not None and not THREAD_ID.match(thread):
            raise ValueError("`user`, used as the thread id, must be 1-128 characters of letters, digits and _ . : @ -")
        return thread


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion(cid: str, model: str, content: str, usage: Usage, extension: dict[str, Any]) -> dict[str, Any]:
    """A `chat.completion` object."""
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": usage.model_dump(), "vqagraph": extension,
    }


def chunk(cid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
          **extra: Any) -> dict[str, Any]:
    """A `chat.completion.chunk` object; `usage` (the last chunk, when asked for) has no choices."""
    choices = [] if "usage" in extra and not delta and finish_reason is None else \
        [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices,
            **extra}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class APIError(Exception):
    """An error answered in OpenAI's format with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------------- remote images


def forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address may not be fetched from (None when it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for name in ("loopback", "private", "link_local", "reserved", "multicast", "unspecified"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    if not address.is_global:
        return "not globally routable"
    return None


def resolve_public(host: str, port: int) -> str:
    """Resolve `host`; every address it resolves to must be public. Returns the one to connect to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise APIError(400, f"image URL host {host!r} does not resolve", code="invalid_image_url",
                       param="messages") from exc
    addresses = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(raw)
        why = forbidden_address(address)
        if why:
            raise APIError(400, f"image URL host {host!r} resolves to a {why} address; refused",
                           code="image_url_forbidden", param="messages")
        addresses.append(raw)
    if not addresses:
        raise APIError(400, f"image URL host {host!r} does not resolve", code="invalid_image_url", param="messages")
    return addresses[0]


def check_remote_url(url: str, allow_hosts: Sequence[str]) -> urllib.parse.SplitResult:
    """The URL's parts, when its scheme is http(s) and its host is allow-listed; else a 400."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise APIError(400, "image_url must be a data: URL, or an http(s) URL from an allow-listed host",
                       code="invalid_image_url", param="messages")
    host = (parts.hostname or "").lower().rstrip(".")
    if not allow_hosts:
        raise APIError(400, "remote image URLs are disabled on this server; send the image as a data: URL",
                       code="image_url_forbidden", param="messages")
    if host not in {h.lower().rstrip(".") for h in allow_hosts}:
        raise APIError(400, f"image URL host {host!r} is not allow-listed on this server",
                       code="image_url_forbidden", param="messages")
    if parts.username or parts.password:
        raise APIError(400, "image URLs with credentials are refused", code="invalid_image_url", param="messages")
    return parts


def fetch_image(url: str, allow_hosts: Sequence[str], max_bytes: int, timeout: float = 10.0) -> bytes:
    """Download an allow-listed image: no redirects, at most `max_bytes`, connected to the checked address."""
    import httpcore

    parts = check_remote_url(url, allow_hosts)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise APIError(400, "image URL has an invalid port", code="invalid_image_url", param="messages") from exc
    address = resolve_public(host, port)

    class PinnedBackend(httpcore.SyncBackend):
        """Connect to the address that was checked (no second DNS lookup to rebind); TLS still checks `host`."""

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> httpcore.NetworkStream:
            return super().connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                       socket_options=socket_options)

    timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    try:
        with httpcore.ConnectionPool(network_backend=PinnedBackend(), retries=0) as pool, \
                pool.stream("GET", url, headers={"Accept": "image/*"}, extensions={"timeout": timeouts}) as response:
            if response.status != 200:
                raise APIError(400, f"image URL answered HTTP {response.status} (redirects are not followed)",
                               code="invalid_image_url", param="messages")
            length = dict((k.lower(), v) for k, v in response.headers).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise APIError(413, f"the remote image is over the download limit of {max_bytes:,} bytes",
                               code="image_too_large", param="messages")
            data = bytearray()
            for piece in response.iter_stream():
                data += piece
                if len(data) > max_bytes:
                    raise APIError(413, f"the remote image is over the download limit of {max_bytes:,} bytes",
                                   code="image_too_large", param="messages")
    except httpcore.TimeoutException as exc:
        raise APIError(400, f"image URL timed out after {timeout:g} s", code="invalid_image_url",
                       param="messages") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise APIError(400, f"image URL could not be fetched ({type(exc).__name__})", code="invalid_image_url",
                       param="messages") from exc
    return bytes(data)


# ---------------------------------------------------------------------------------------------- responses


def usage_of(answer: Answer) -> Usage:
    """Tokens the LLM read and wrote, summed over the routes that ran."""
    trace = answer.trace
    prompt = completion_tokens = 0
    for result in trace.route_answers.values():
        completion_tokens += len(result["token_ids"])
    if trace.img2llm:
        prompt += int(trace.img2llm.get("prompt_stats", {}).get("tokens", 0))
    if trace.bridge:
        prompt += trace.bridge.get("prompt_tokens", 0) + trace.bridge.get("query_tokens", 0)
    if trace.projection:
        prompt += trace.projection.get("prompt_tokens", 0) + trace.projection.get("image_tokens", 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion_tokens, total_tokens=prompt + completion_tokens)


def extension(answer: Answer, thread: str | None) -> dict[str, Any]:
    """The `vqagraph` field of a response: the thread and the whole answer with its trace."""
    return {"thread": thread, "answer": answer.model_dump(mode="json")}


class AnswerStream:
    """The LLM's tokens as content deltas whose concatenation is exactly the final (post-processed) answer.

    Post-processing (cut at the first "." or newline, lower-case, strip a leading "the answer is"…, strip
    trailing punctuation) keeps what it has produced as a prefix when more text arrives, except while the text
    could still grow into a filler phrase; that part is held back. With several LLM streams in one answer
    (route `both`, the cascade, a custom graph) the kept one is unknown until the end: nothing is sent live."""

    FILLERS = ("the answer is", "answer is", "answer:", "it is", "it's", "this is")

    def __init__(self, live: bool) -> None:
        self.live = live
        self.raw = ""
        self.sent = ""

    def _settled(self) -> str:
        text = self.raw.lstrip()
        cut = re.split(r"[.\n]", text, maxsplit=1)
        if len(cut) == 1:  # not cut yet: hold back while the text could still become a filler to strip
            rest = text.strip().lower()
            while True:
                stripped = next((rest[len(f):].lstrip() for f in self.FILLERS
                                 if rest.startswith(f) and rest[len(f):len(f) + 1].isspace()), None)
                if stripped is None:
                    break
                rest = stripped
            if any(f.startswith(rest) for f in self.FILLERS):
                return ""
        return postprocess_answer(text)

    def token(self, text: str) -> str:
        if not self.live:
            return ""
        self.raw += text
        settled = self._settled()
        if settled.startswith(self.sent) and len(settled) > len(self.sent):
            delta, self.sent = settled[len(self.sent):], settled
            return delta
        return ""

    def finish(self, answer: str) -> str:
        if not answer.startswith(self.sent):  # cannot happen for one stream; the final chunk carries the answer
            log.warning("streamed text %r is not a prefix of the answer %r", self.sent, answer)
            return ""
        delta, self.sent = answer[len(self.sent):], answer
        return delta
