"""The OpenAI chat-completions wire format that `vqagraph serve` speaks: requests, responses, errors, and the
intake of `image_url` parts (data URLs; allow-listed remote URLs, fetched only from public addresses).

Fields are type-checked as OpenAI checks them (`stream: "yes"` or `temperature: "hot"` is a 400), and every
request parameter is either honoured or refused with a 400 that names it; none is silently ignored:

- read: `model`, `messages`, `stream`, `stream_options.include_usage` (only with `stream: true`), `user` (the
  thread id when `vqagraph.thread` is absent), `n` (1 only), and vqagraph's own knobs in the extension field
  `vqagraph` (the openai client sends it with `extra_body={"vqagraph": {...}}`);
- decoding, per request, as vLLM honours them (`request.Generation`, every LLM call of every route):
  `temperature` (0 greedy, the default), `top_p`, `seed` (a seeded sampled answer is reproducible), `max_tokens`
  or `max_completion_tokens` (any value ≥ 1: the answer is cut there, `finish_reason` `length`; a route's own cap
  still applies), `stop` (a string or up to 4);
- honoured when they ask for what the engine does anyway, refused otherwise: `frequency_penalty` and
  `presence_penalty` 0, `logprobs` false, `response_format` `{"type": "text"}`, `modalities` `["text"]`, `store`
  false, `stream_options` `{"include_usage": bool}`;
- refused whatever their value (null counts as absent): `tools`, `tool_choice`, `parallel_tool_calls`,
  `functions`, `function_call`, `top_logprobs`, `logit_bias`, `audio`, `prediction`, `metadata`, `service_tier`,
  `reasoning_effort`, `verbosity`, `web_search_options`, and any field OpenAI does not define.

In messages: `system` and `developer` messages are accepted and not given to the LLM (each route's prompt is
fixed by its method); `tool` and `function` messages, assistant `tool_calls` and content parts other than `text`
and `image_url` are refused; an `image_url`'s `detail` is accepted and has no effect (the image goes in at the
model's own resolution).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from vqagraph.graphs.registry import ROUTES, RequestedRoute, route_record
from vqagraph.request import MAX_STOP, Generation
from vqagraph.tools.llm.postprocess import postprocess_answer

if TYPE_CHECKING:
    from vqagraph.answer import Answer

log = logging.getLogger("vqagraph.serve")

THREAD_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
PARAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # a field name echoed in an error as it is; else not echoed
MAX_MESSAGES = 1000  # messages in one request (a chat a client resends whole)


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StrictStr
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    """One part of a message's content: `text`, or `image_url` (a data URL, or an allow-listed http(s) URL)."""

    model_config = ConfigDict(extra="allow")

    type: StrictStr
    text: StrictStr | None = None
    image_url: ImageURL | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None

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

    def refusal(self) -> str | None:
        """Why this message cannot be answered here (tool traffic, parts that are neither text nor an image)."""
        if self.role in ("tool", "function"):
            return f"{self.role} messages are not supported: this server has no tool calling"
        extra = self.model_extra or {}
        for name in ("tool_calls", "function_call"):
            if extra.get(name):
                return f"assistant `{name}` are not supported: this server has no tool calling"
        if isinstance(self.content, list):
            for part in self.content:
                if part.type not in ("text", "image_url"):
                    return f"content parts of type {part.type[:40]!r} are not supported (only text and image_url)"
                if part.type == "image_url" and part.image_url is None:
                    return "an image_url part needs `image_url: {\"url\": ...}`"
        return None


class VQAOptions(BaseModel):
    """The `vqagraph` extension field of a request."""

    model_config = ConfigDict(extra="forbid")

    thread: StrictStr | None = Field(None, description="a conversation thread id: continued if it exists, else created")
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
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False


# Parameters accepted only at these values (what the engine does anyway); None is always "not given".
DEFAULT_ONLY: dict[str, tuple[Any, str]] = {
    "logprobs": (False, "log-probabilities are not returned"),
    "response_format": ({"type": "text"}, "answers are plain text"),
    "modalities": (["text"], "answers are text"),
    "store": (False, "completions are not stored"),
}
# Parameters refused whatever their value (other than null), with the reason the client sees.
REFUSED: dict[str, str] = {
    "tools": "this server has no tool calling", "tool_choice": "this server has no tool calling",
    "parallel_tool_calls": "this server has no tool calling", "functions": "this server has no tool calling",
    "function_call": "this server has no tool calling", "top_logprobs": "log-probabilities are not returned",
    "logit_bias": "the LLM's logits cannot be biased per request",
    "audio": "answers are text", "prediction": "predicted outputs are not supported",
    "metadata": "completions are not stored", "service_tier": "there are no service tiers",
    "reasoning_effort": "the frozen LLM does not reason", "verbosity": "the answer's length is the route's",
    "web_search_options": "there is no web search",
}


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # kept to name them in the 400 (`refusal`), never used

    model: StrictStr
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = None
    user: StrictStr | None = Field(None, description="names the conversation thread when `vqagraph.thread` does not")
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    temperature: StrictFloat | StrictInt | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(None, gt=0, le=1)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    frequency_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    presence_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    vqagraph: VQAOptions = Field(default_factory=VQAOptions)

    def thread_id(self) -> str | None:
        thread = self.vqagraph.thread or self.user
        if thread is not None and not THREAD_ID.match(thread):
            raise ValueError("`user`, used as the thread id, must be 1-128 characters of letters, digits and _ . : @ -")
        return thread

    def generation(self) -> Generation:
        """The request's decoding settings, as the engine takes them (checked by `refusal` first)."""
        cap = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return Generation(temperature=float(self.temperature if self.temperature is not None else 0.0),
                          top_p=float(self.top_p if self.top_p is not None else 1.0), seed=self.seed,
                          max_tokens=cap, stop=stop)

    def refusal(self) -> APIError | None:
        """The 400 for the first parameter this server cannot honour (None when all can be): what the engine does
        anyway is accepted, anything else is named."""
        def refuse(param: str, message: str) -> APIError:
            return APIError(400, message, code="unsupported_parameter", param=param)

        if self.stream_options is not None and not self.stream:
            return refuse("stream_options", "stream_options is only allowed when stream is true")
        if self.n not in (None, 1):
            return refuse("n", "only n=1 is supported (one answer per question)")
        for name in ("max_tokens", "max_completion_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                return refuse(name, f"{name} must be at least 1")
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            return refuse("stop", f"stop takes up to {MAX_STOP} non-empty strings")
        for name, default, why in (("frequency_penalty", 0.0, "no penalties are applied"),
                                   ("presence_penalty", 0.0, "no penalties are applied")):
            value = getattr(self, name)
            if value is not None and value != default:
                return refuse(name, f"{name} {value:g} is not supported: only {default:g} ({why})")
        extra = {k: v for k, v in (self.model_extra or {}).items() if v is not None}
        for name, value in extra.items():
            if name in DEFAULT_ONLY:
                default, why = DEFAULT_ONLY[name]
                if value != default:
                    return refuse(name, f"{name} is only accepted as {json.dumps(default)} ({why})")
            elif name in REFUSED:
                return refuse(name, f"{name} is not supported: {REFUSED[name]}")
            else:
                if not PARAM_NAME.match(name):
                    return APIError(400, "unknown parameter (a field whose name is not shown: odd characters)",
                                    code="unsupported_parameter")
                return refuse(name, f"unknown parameter: {name}")
        for index, message in enumerate(self.messages):
            reason = message.refusal()
            if reason is not None:
                return refuse(f"messages.{index}", f"messages[{index}]: {reason}")
        return None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def finish_reason(answer: Answer) -> str:
    """`length` when the kept answer's generation ran into a token cap (the request's `max_tokens` or the route's),
    else `stop`, as vLLM reports it; an answer no route wrote (a custom graph's join) stopped."""
    kept = answer.trace.route_answers.get(answer.route)
    return str(kept.get("finish_reason", "stop")) if kept else "stop"


def completion(cid: str, model: str, content: str, usage: Usage, extension: dict[str, Any],
               finish: str = "stop") -> dict[str, Any]:
    """A `chat.completion` object."""
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish,
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


UNION_TAGS = re.compile(r"^(str|int|float|bool|list|dict|none|function-.*|.*\[.*\].*)$")


def validation_error(exc: ValidationError) -> APIError:
    """pydantic's complaint as one 400 line: the most specific error (the deepest location), its path in the
    request without pydantic's union tags, and no input echoed."""
    errors = exc.errors(include_url=False, include_input=False)
    first = max(errors, key=lambda e: len(e["loc"]))
    if first["type"] == "json_invalid":
        return APIError(400, "the request body is not valid JSON", code="invalid_json")
    parts = [str(p) for p in first["loc"] if isinstance(p, int) or not UNION_TAGS.match(str(p))]
    where = ".".join(parts)
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return APIError(400, f"invalid request: {where}: {message}" if where else f"invalid request: {message}",
                    param=where or None)


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
    except (OSError, UnicodeError, ValueError) as exc:
        raise APIError(400, f"image URL host {host[:100]!r} does not resolve", code="invalid_image_url",
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


def bad_url(message: str) -> APIError:
    return APIError(400, message, code="invalid_image_url", param="messages")


def check_remote_url(url: str, allow_hosts: Sequence[str]) -> urllib.parse.SplitResult:
    """The URL's parts, when its scheme is http(s) and its host is allow-listed; else a 400."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        _ = parts.port  # a bad port raises here, not later
    except ValueError as exc:  # "http://[::1", a port that is not a number…
        raise bad_url("image_url is not a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise bad_url("image_url must be a data: URL, or an http(s) URL from an allow-listed host")
    if not allow_hosts:
        raise APIError(400, "remote image URLs are disabled on this server; send the image as a data: URL",
                       code="image_url_forbidden", param="messages")
    if not host or any(c.isspace() or ord(c) < 32 for c in url):
        raise bad_url("image_url is not a valid URL")
    if host not in {h.lower().rstrip(".") for h in allow_hosts}:
        raise APIError(400, f"image URL host {host[:100]!r} is not allow-listed on this server",
                       code="image_url_forbidden", param="messages")
    if parts.username or parts.password:
        raise bad_url("image URLs with credentials are refused")
    return parts


def fetch_image(url: str, allow_hosts: Sequence[str], max_bytes: int, timeout: float = 10.0,
                deadline: float = 30.0) -> bytes:
    """Download an allow-listed image: no redirects, at most `max_bytes`, connected to the checked address, each
    step within `timeout` seconds and the whole download within `deadline` (a server that drips bytes is cut off)."""
    import httpcore

    end = time.monotonic() + deadline
    parts = check_remote_url(url, allow_hosts)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_public(host, port)

    class PinnedBackend(httpcore.SyncBackend):
        """Connect to the address that was checked (no second DNS lookup to rebind); TLS still checks `host`."""

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> httpcore.NetworkStream:
            return super().connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                       socket_options=socket_options)

    step = max(min(timeout, end - time.monotonic()), 0.01)
    timeouts = {"connect": step, "read": step, "write": step, "pool": step}
    too_large = APIError(413, f"the remote image is over the download limit of {max_bytes:,} bytes",
                         code="image_too_large", param="messages")
    try:
        with httpcore.ConnectionPool(network_backend=PinnedBackend(), retries=0) as pool, \
                pool.stream("GET", url, headers={"Accept": "image/*"}, extensions={"timeout": timeouts}) as response:
            if response.status != 200:
                raise bad_url(f"image URL answered HTTP {response.status} (redirects are not followed)")
            length = dict((k.lower(), v) for k, v in response.headers).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise too_large
            data = bytearray()
            for piece in response.iter_stream():
                data += piece
                if len(data) > max_bytes:
                    raise too_large
                if time.monotonic() > end:
                    raise bad_url(f"image URL took longer than {deadline:g} s to download")
    except httpcore.TimeoutException as exc:
        raise bad_url(f"image URL timed out after {step:g} s") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise bad_url(f"image URL could not be fetched ({type(exc).__name__})") from exc
    except (ValueError, UnicodeError) as exc:  # a URL urllib took and httpcore does not
        raise bad_url("image_url is not a valid URL") from exc
    return bytes(data)


# ---------------------------------------------------------------------------------------------- responses


def usage_of(answer: Answer) -> Usage:
    """Tokens the LLM read and wrote, summed over the routes that ran."""
    trace = answer.trace
    prompt = completion_tokens = 0
    for result in trace.route_answers.values():
        completion_tokens += len(result["token_ids"])
    for route in ROUTES:
        record = route_record(trace, route.name)
        if record:
            prompt += route.prompt_tokens(record)
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
