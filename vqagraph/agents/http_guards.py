"""The HTTP server's guards below the API: which Host names it answers to, JSON-only bodies, CORS, a deadline
for request headers, and the listening socket (bound before the models load, so a taken port is one line).

They hold the browser-safety rules of `vqagraph serve`: the Host header must name this server (loopback names,
the bound host, `--trusted-host`), which defeats DNS rebinding; a POST must be `Content-Type: application/json`,
which a cross-site page cannot send without a CORS preflight; CORS is off unless origins are listed.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from vqagraph.agents.openai_protocol import APIError, error_body
from vqagraph.errors import VQAGraphError

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_BODY_TIMEOUT = 30.0  # seconds for the request headers, and again for the body, to arrive
MAX_HEADER_BYTES = 64 * 1024  # a request's line and headers together (h11's incomplete-event limit)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def host_name(header: str) -> str:
    """The host of a Host header or an allow-list entry, without port or IPv6 brackets, lower-case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") > 1:  # a bare IPv6 address (an allow-list entry)
        return header
    return header.partition(":")[0].rstrip(".")


def bound_host_names(host: str) -> list[str]:
    """The Host names a server bound to `host` answers to besides loopback: the address itself, or for a
    wildcard bind (0.0.0.0, ::) the machine's host name."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return [socket.gethostname()]
    except ValueError:
        pass
    return [host]


# ---------------------------------------------------------------------------------------------- middleware


async def send_error(send: Send, error: APIError) -> None:
    """An APIError as a whole response, from ASGI middleware (where FastAPI's handlers do not reach)."""
    body = json.dumps(error_body(error.message, error.type, error.code, error.param)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


HEADERS_TOO_LARGE = f"the request line and headers are over this server's limit of {MAX_HEADER_BYTES // 1024} KiB"


def headers_size(scope: Scope) -> int:
    """The request's head as sent, near enough: its path and query, each header's name and value."""
    return (len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ())))


class HostCheck:
    """Answer only requests whose Host header names this server: a page on another site that rebinds its DNS
    name to 127.0.0.1 sends its own name as Host, and gets 400. `/health` is exempt (it tells nothing)."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.any = "*" in hosts
        self.hosts = {host_name(h) for h in hosts if h != "*"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and headers_size(scope) > MAX_HEADER_BYTES:
            # h11 refuses an incomplete head over the limit (HeaderDeadline.send_400_response says so); a head that
            # arrived whole was parsed, and is refused here, with the same words.
            await send_error(send, APIError(431, HEADERS_TOO_LARGE, code="headers_too_large"))
            return
        if scope["type"] == "http" and not self.any and scope.get("path") != "/health":
            given = header(scope, b"host")
            if given is None or host_name(given) not in self.hosts:
                await send_error(send, APIError(400, "this server does not answer to that Host header (add the "
                                                "name with --trusted-host)", code="invalid_host"))
                return
        await self.app(scope, receive, send)


class JSONOnly:
    """A POST, PUT or PATCH must say `Content-Type: application/json` (415 otherwise). Browsers send a cross-site
    form or `text/plain` POST without asking; JSON needs a CORS preflight, which this server does not grant by
    default."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            media = (header(scope, b"content-type") or "").partition(";")[0].strip().lower()
            if media != "application/json":
                await send_error(send, APIError(415, "the request body must be JSON, sent with `Content-Type: "
                                                "application/json`", code="unsupported_media_type",
                                                headers={"Connection": "close"}))
                return
        await self.app(scope, receive, send)


def cors_middleware() -> type:
    """Starlette's CORS middleware, whose refused preflight answers in OpenAI's error format."""
    from starlette.datastructures import Headers
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import JSONResponse, Response

    class CORS(CORSMiddleware):
        def preflight_response(self, request_headers: Headers) -> Response:
            response = super().preflight_response(request_headers)
            if response.status_code == 200:
                return response
            text = bytes(response.body).decode()
            headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
            return JSONResponse(error_body(f"cross-origin request refused ({text.lower()})", "invalid_request_error",
                                           "cors_refused"), status_code=400, headers=headers)

    return CORS


# ---------------------------------------------------------------------------------------------- transport


class PortInUseError(VQAGraphError):
    """The address to listen on is taken (another server on the port) or cannot be had."""


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a PortInUseError that says so in one line (bound before the models
    load, so a taken port is known at once)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise PortInUseError(f"cannot listen on {host!r}: the address does not resolve") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is already in use (another server running?); choose "
                                 "another with --port") from exc
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive within `header_timeout`
    seconds (uvicorn bounds only the idle time between requests; a client sending a byte now and then would keep
    a connection forever)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        timer: asyncio.TimerHandle | None = None

        def arm(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
            waiting_for = self.cycle  # a new request replaces the cycle: then its headers came in time

            def late() -> None:
                if self.cycle is waiting_for and not self.transport.is_closing():
                    self.transport.close()

            self.timer = self.loop.call_later(header_timeout, late)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self.arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.timer is not None:
                self.timer.cancel()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            """What h11 cannot parse, answered in OpenAI's error format (uvicorn's own is a plain-text line):
            headers over the limit say the limit, with 431, as every other limit of this server says its own."""
            import h11

            pending = len(getattr(self.conn, "_receive_buffer", b""))  # h11 keeps what it could not parse yet
            if pending >= MAX_HEADER_BYTES:
                status, reason, message, code = 431, b"Request Header Fields Too Large", HEADERS_TOO_LARGE, \
                    "headers_too_large"
            else:
                status, reason, message, code = 400, b"Bad Request", "the request is not valid HTTP/1.1", "invalid_http"
            body = json.dumps(error_body(message, "invalid_request_error", code)).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return HeaderDeadline


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str = "info",
                   body_timeout: float = DEFAULT_BODY_TIMEOUT) -> Any:
    """uvicorn's settings for the app: h11 with a header deadline, a short keep-alive, small header limits."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=http_protocol(body_timeout),
                          timeout_keep_alive=5, h11_max_incomplete_event_size=MAX_HEADER_BYTES, server_header=False,
                          timeout_graceful_shutdown=10)
