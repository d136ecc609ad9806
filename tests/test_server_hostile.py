"""`vqagraph serve` against hostile input: each case gets its status and one line in OpenAI's error body (no
traceback, no server path), and afterwards the server still answers `/health` and a valid question. A real
uvicorn on loopback (tiny untrained models), since Host headers, slow bodies and deadlines need a socket."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from vqagraph.agents.http_guards import listen
from vqagraph.agents.openai_server import create_app
from vqagraph.errors import LLMError

KEY, OTHER_KEY = "sk-hostile-0123456789", "sk-hostile-other-9876543210"
MAX_BODY = 256 * 1024
BODY_TIMEOUT = 2.0  # seconds for headers, and for the body, to arrive (short, so the slow-client cases are quick)
FAST = 10.0  # every refusal must come back within this many seconds
BRIDGE = {"route": "bridge"}

OPENED: list[str] = []  # files opened while `RECORDING` is set (an audit hook: whatever code opens them)
RECORDING = threading.Event()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if RECORDING.is_set() and event == "open" and args and isinstance(args[0], str | bytes):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def picture() -> str:
    import io

    image = Image.new("RGB", (96, 72), "white")
    image.paste((255, 0, 0), (20, 20, 60, 50))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE = picture()


def user(text: str, url: str | None = IMAGE) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if url is not None:
        content.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": "user", "content": content}


def question(**extra: Any) -> dict[str, Any]:
    """A valid request, with `extra` fields merged in (None removes a field)."""
    body: dict[str, Any] = {"model": "vqagraph", "messages": [user("What colour is the box?")], "vqagraph": BRIDGE}
    for name, value in extra.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


class Live:
    """The running server: its URL, its `OpenAIServer`, and a client that speaks to it."""

    def __init__(self, url: str, server: Any) -> None:
        self.url = url
        self.server = server
        self.http = httpx.Client(base_url=url, timeout=60)

    def post(self, body: Any, *, key: str | None = KEY, headers: dict[str, str] | None = None,
             path: str = "/v1/chat/completions") -> httpx.Response:
        sent = {"Content-Type": "application/json"}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        sent.update(headers or {})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(path, content=content, headers=sent)


@pytest.fixture(scope="module")
def live(engine: Any, serve_app: Any) -> Iterator[Live]:
    app = create_app(engine, web_page=False, api_keys=[KEY, OTHER_KEY], store="memory", max_body_bytes=MAX_BODY,
                     allow_hosts=["localhost", "10.1.2.3"], body_timeout=BODY_TIMEOUT, max_pending=8)
    with serve_app(app, BODY_TIMEOUT) as url:
        yield Live(url, app.state.vqagraph)


def assert_error(response: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    """The status, OpenAI's error body with a one-line message, and nothing of the server's insides."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text and "site-packages" not in response.text
    assert str(Path(__file__).parents[1]) not in response.text  # no path of this checkout
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "\n" not in error["message"] and len(error["message"]) < 400
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error  # type: ignore[no-any-return]


def assert_still_serving(live: Live) -> None:
    assert live.http.get("/health").json() == {"status": "ok"}
    answer = live.post(question())
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] is not None
    assert live.server.pending == 0


# ---------------------------------------------------------------------------------------------- the corpus


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "mask.fifo"
    os.mkfifo(path)
    return str(path)


def _mark(**fields: Any) -> dict[str, Any]:
    return question(vqagraph={**BRIDGE, "marks": [{"shape": "rectangle", "box": [10, 10, 50, 40], **fields}]})


def _mask(path: str) -> dict[str, Any]:
    return question(vqagraph={**BRIDGE, "marks": [{"shape": "mask", "mask_path": path}]})


def _chunked(live: Live, size: int) -> httpx.Response:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "vqagraph", "messages": [], "pad": "'
        for _ in range(size // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    return live.http.post("/v1/chat/completions", content=pieces(),
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge picture (a decompression bomb to any decoder)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


Case = tuple[str, Callable[[Live, Path], httpx.Response], int, str | None, str | None]
CASES: list[Case] = [
    ("mark width 1e9", lambda lv, _: lv.post(_mark(width=1e9)), 400, "invalid_mark", None),
    ("mask_path /etc/passwd", lambda lv, _: lv.post(_mask("/etc/passwd")), 400, "invalid_mark", "vqagraph.marks"),
    ("mask_path a FIFO", lambda lv, tmp: lv.post(_mask(_fifo(tmp))), 400, "invalid_mark", None),
    ("NUL in the question", lambda lv, _: lv.post(question(messages=[user("What\x00 is it?")])), 400,
     "invalid_question", None),
    ("escape in the question", lambda lv, _: lv.post(question(messages=[user("What \x1b[2J is it?")])), 400,
     "invalid_question", None),
    ("invalid JSON", lambda lv, _: lv.post(b'{"model": "vqagraph", "messages": ['), 400, "invalid_json", None),
    ("invalid UTF-8", lambda lv, _: lv.post(b'{"model": "vqagraph\xff\xfe", "messages": []}'), 400, "invalid_json",
     None),
    ("JSON that is not an object", lambda lv, _: lv.post(b"[1, 2, 3]"), 400, None, None),
    ("text/plain body", lambda lv, _: lv.post(question(), headers={"Content-Type": "text/plain"}), 415,
     "unsupported_media_type", None),
    ("form body", lambda lv, _: lv.post(b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
     "unsupported_media_type", None),
    ("rebinding Host header", lambda lv, _: lv.post(question(), headers={"Host": "attacker.example:8080"}), 400,
     "invalid_host", None),
    ("CORS preflight, foreign origin", lambda lv, _: lv.http.options(
        "/v1/chat/completions", headers={"Origin": "https://attacker.example",
                                         "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization, content-type"}),
     405, None, None),
    ('temperature "hot"', lambda lv, _: lv.post(question(temperature="hot")), 400, None, "temperature"),
    ("temperature 3", lambda lv, _: lv.post(question(temperature=3.0)), 400, None, "temperature"),
    ("top_p 0", lambda lv, _: lv.post(question(top_p=0.0)), 400, None, "top_p"),
    ("stop with five strings", lambda lv, _: lv.post(question(stop=list("abcde"))), 400, "unsupported_parameter",
     "stop"),
    ('stream "yes"', lambda lv, _: lv.post(question(stream="yes")), 400, None, "stream"),
    ("stream_options without stream", lambda lv, _: lv.post(question(stream_options={"include_usage": True})), 400,
     "unsupported_parameter", "stream_options"),
    ("tools", lambda lv, _: lv.post(question(tools=[{"type": "function", "function": {"name": "f"}}])), 400,
     "unsupported_parameter", "tools"),
    ("response_format json", lambda lv, _: lv.post(question(response_format={"type": "json_object"})), 400,
     "unsupported_parameter", "response_format"),
    ("logprobs", lambda lv, _: lv.post(question(logprobs=True)), 400, "unsupported_parameter", "logprobs"),
    ("seed 1.5", lambda lv, _: lv.post(question(seed=1.5)), 400, None, "seed"),
    ("unknown field", lambda lv, _: lv.post(question(frobnicate=1)), 400, "unsupported_parameter", "frobnicate"),
    ("max_tokens -1", lambda lv, _: lv.post(question(max_tokens=-1)), 400, "unsupported_parameter", "max_tokens"),
    ("max_tokens 1.5", lambda lv, _: lv.post(question(max_tokens=1.5)), 400, None, "max_tokens"),
    ("n 2", lambda lv, _: lv.post(question(n=2)), 400, "unsupported_parameter", "n"),
    ("a tool message", lambda lv, _: lv.post(question(messages=[user("What is it?"), {
        "role": "tool", "content": "42", "tool_call_id": "x"}])), 400, "unsupported_parameter", "messages.1"),
    ("an audio part", lambda lv, _: lv.post(question(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is it?"}, {"type": "input_audio", "input_audio": {"data": ""}}]}])), 400,
     "unsupported_parameter", "messages.0"),
    ("huge body (Content-Length)", lambda lv, _: lv.post(b"{" + b" " * (MAX_BODY + 10) + b"}"), 413,
     "request_too_large", None),
    ("huge body (chunked)", lambda lv, _: _chunked(lv, MAX_BODY + 10), 413, "request_too_large", None),
    ("too many messages", lambda lv, _: lv.post(question(messages=[user("hi", None)] * 1001)), 400, None,
     "messages"),
    ("pixel bomb", lambda lv, _: lv.post(question(messages=[user("What is it?", "data:image/png;base64,"
                                                                 + base64.b64encode(_png_claiming(10**5, 10**5))
                                                                 .decode())])), 413, "image_too_large", None),
    ("data URL that is not an image", lambda lv, _: lv.post(question(messages=[user(
        "What is it?", "data:image/png;base64," + base64.b64encode(b"hello, not a png").decode())])), 400,
     "invalid_image", None),
    ("image_url http://[::1", lambda lv, _: lv.post(question(messages=[user("What is it?", "http://[::1")])), 400,
     "invalid_image_url", None),
    ("image_url with a bad port", lambda lv, _: lv.post(question(messages=[user("What?", "http://localhost:99999/")])),
     400, "invalid_image_url", None),
    ("image_url not allow-listed", lambda lv, _: lv.post(question(messages=[user(
        "What is it?", "http://attacker.example/a.png")])), 400, "image_url_forbidden", None),
    ("image_url on loopback", lambda lv, _: lv.post(question(messages=[user(
        "What is it?", "http://localhost:1/a.png")])), 400, "image_url_forbidden", None),
    ("image_url on a private address", lambda lv, _: lv.post(question(messages=[user(
        "What is it?", "http://10.1.2.3/a.png")])), 400, "image_url_forbidden", None),
    ("file: image_url", lambda lv, _: lv.post(question(messages=[user("What is it?", "file:///etc/passwd")])), 400,
     "invalid_image_url", None),
    ("missing key", lambda lv, _: lv.post(question(), key=None), 401, "invalid_api_key", None),
    ("wrong key", lambda lv, _: lv.post(question(), key="sk-wrong"), 401, "invalid_api_key", None),
    ("thread id too long", lambda lv, _: lv.post(question(vqagraph={**BRIDGE, "thread": "t" * 200})), 400, None,
     "vqagraph.thread"),
    ("thread id with odd characters", lambda lv, _: lv.post(question(vqagraph={**BRIDGE, "thread": "../../etc"})),
     400, None, "vqagraph.thread"),
    ("user (thread) with odd characters", lambda lv, _: lv.post(question(user="a b\x00c")), 400, None, "user"),
    ("unknown model, long name", lambda lv, _: lv.post(question(model="m" * 5000)), 404, "model_not_found", "model"),
    ("headers over the limit", lambda lv, _: lv.post(question(), headers={"X-Padding": "a" * 70_000}), 431,
     "headers_too_large", None),
]


@pytest.mark.parametrize(("name", "send", "status", "code", "param"), CASES, ids=[c[0] for c in CASES])
def test_hostile_request_is_refused_and_the_server_carries_on(live: Live, tmp_path: Path, name: str,
                                                              send: Callable[[Live, Path], httpx.Response],
                                                              status: int, code: str | None,
                                                              param: str | None) -> None:
    OPENED.clear()
    RECORDING.set()
    try:
        start = time.monotonic()
        response = send(live, tmp_path)
        took = time.monotonic() - start
    finally:
        RECORDING.clear()
    error = assert_error(response, status, code, param)
    if name in ("pixel bomb", "headers over the limit"):  # the server's own limits, quoted
        assert ("over the limit of 40,000,000" if name == "pixel bomb" else "64 KiB") in error["message"], error
    assert took < FAST, f"{name}: {took:.1f} s"
    assert not [p for p in OPENED if p == "/etc/passwd" or p.startswith(str(tmp_path))], OPENED
    if name.startswith("CORS"):
        assert not any(h.lower().startswith("access-control-") for h in response.headers)
    assert_still_serving(live)


def test_another_keys_thread_is_not_found(live: Live) -> None:
    first = live.post(question(vqagraph={**BRIDGE, "thread": "hostile-owned"}))
    assert first.status_code == 200, first.text
    follow = question(messages=[user("and its shape?", None)], vqagraph={**BRIDGE, "thread": "hostile-owned"})
    for stream in (False, True):
        assert_error(live.post({**follow, "stream": stream}, key=OTHER_KEY), 404, "thread_not_found")
    again = live.post(follow)  # the owner still has it
    assert again.status_code == 200 and again.json()["vqagraph"]["answer"]["trace"]["history_turns"] == 1
    assert_still_serving(live)


def test_another_keys_image_reference_is_not_found(live: Live) -> None:
    """An uploaded image's reference answers only the key that uploaded it."""
    uploaded = live.post({"image": IMAGE}, path="/v1/images")
    assert uploaded.status_code == 200, uploaded.text
    ref = uploaded.json()["id"]
    asked = question(messages=[user("What colour is the box?", ref)])
    assert live.post(asked).status_code == 200
    assert_error(live.post(asked, key=OTHER_KEY), 404, "image_not_found")
    assert_error(live.post({"image": IMAGE, "extra": 1}, path="/v1/images"), 400)
    assert_error(live.post({"image": IMAGE}, key=None, path="/v1/images"), 401)
    assert_still_serving(live)


def test_llm_failure_names_no_backend(live: Live, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise LLMError("the vLLM server at http://10.0.0.5:8000/v1 refused the connection")

    with monkeypatch.context() as patch:
        patch.setattr(engine.tools.llm, "generate_from_embeddings", down)
        error = assert_error(live.post(question()), 502, "llm_unavailable")
        assert error["message"] == "the LLM server is unavailable"
        streamed = live.post(question(stream=True))
        assert streamed.status_code == 200 and "10.0.0.5" not in streamed.text
        assert "the LLM server is unavailable" in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
    assert_still_serving(live)


# ---------------------------------------------------------------------------------------------- slow clients


def raw_request(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head)
    return sock


def trickle_until_answered(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Send a byte every 0.2 s until the server answers or closes; what it said, and when it started to."""
    start = time.monotonic()
    received, first = b"", None
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            if first is None:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
            continue
        except OSError:
            break
        if not piece:
            break
        received += piece
        first = first or time.monotonic()
    return received, (first or time.monotonic()) - start


def port_of(live: Live) -> int:
    return int(live.url.rsplit(":", 1)[1])


def test_trickling_body_gets_408_within_the_deadline(live: Live) -> None:
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{").encode()
    with raw_request(port_of(live), head) as sock:
        answer, took = trickle_until_answered(sock, BODY_TIMEOUT + 8)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT - 0.5 < took < BODY_TIMEOUT + 5
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout" and "\n" not in body["error"]["message"]
    assert_still_serving(live)


def test_trickling_headers_are_cut_off(live: Live) -> None:
    with raw_request(port_of(live), b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") as sock:
        answer, took = trickle_until_answered(sock, BODY_TIMEOUT + 8)
    assert answer == b"" and took < BODY_TIMEOUT + 5  # the connection was closed, nothing answered
    assert_still_serving(live)


def test_an_endless_header_gets_the_limit_in_openai_format(live: Live) -> None:
    """A head still incomplete past the limit is refused by the HTTP parser itself: still OpenAI's error body,
    naming the limit (uvicorn's own answer is a plain-text line)."""
    with raw_request(port_of(live), b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000) as sock:
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    error = json.loads(body)["error"]
    assert error["code"] == "headers_too_large" and "64 KiB" in error["message"]
    assert_still_serving(live)


# ---------------------------------------------------------------------------------------------- deadlines


@pytest.fixture
def slow_engine(live: Live, engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Each answer takes 2.5 s (or until the event is set), and the server's request deadline is 1 s."""
    release = threading.Event()
    real = engine.answer

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(2.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "answer", slow)
    monkeypatch.setattr(live.server, "request_timeout", 1.0)
    yield release
    release.set()


def wait_until(condition: Callable[[], bool], limit: float = 15.0) -> None:
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def test_over_deadline_request_gets_504_and_keeps_its_place_until_the_work_ends(
        live: Live, slow_engine: threading.Event) -> None:
    start = time.monotonic()
    assert_error(live.post(question()), 504, "timeout")
    assert time.monotonic() - start < 2.4  # answered at the deadline, not when the work ended
    # The engine call cannot be interrupted: its thread still runs and still counts against max_pending.
    assert live.server.pending == 1
    wait_until(lambda: live.server.pending == 0)


def test_over_deadline_stream_ends_with_an_error_event(live: Live, slow_engine: threading.Event) -> None:
    streamed = live.post(question(stream=True))
    assert streamed.status_code == 200
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "timeout" and "\n" not in error["message"]
    wait_until(lambda: live.server.pending == 0)


def test_health_answers_while_requests_are_in_flight(live: Live, slow_engine: threading.Event) -> None:
    live.server.request_timeout = 30.0
    results: list[int] = []
    workers = [threading.Thread(target=lambda: results.append(live.post(question()).status_code)) for _ in range(3)]
    for worker in workers:
        worker.start()
    wait_until(lambda: live.server.pending == 3)
    start = time.monotonic()
    for _ in range(5):
        assert live.http.get("/health").status_code == 200
    assert time.monotonic() - start < 2.0
    slow_engine.set()
    for worker in workers:
        worker.join(timeout=60)
    assert results == [200, 200, 200]


def test_timed_out_work_cannot_exceed_max_pending(live: Live, slow_engine: threading.Event) -> None:
    """Clients that give up at the deadline do not free capacity the work still uses: past `max_pending`, 429."""
    assert live.server.threads.total_tokens >= live.server.max_pending  # every request gets a thread at once
    codes: list[int] = []
    workers = [threading.Thread(target=lambda: codes.append(live.post(question()).status_code))
               for _ in range(live.server.max_pending)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert sorted(set(codes)) == [504]
    assert live.server.pending == live.server.max_pending  # all of that work still runs
    assert_error(live.post(question()), 429, "server_busy")
    assert live.http.get("/health").status_code == 200
    slow_engine.set()
    wait_until(lambda: live.server.pending == 0, 60)


# ---------------------------------------------------------------------------------------------- CORS, ports


def test_cors_only_for_configured_origins(engine: Any) -> None:
    from starlette.testclient import TestClient

    app = create_app(engine, web_page=False, cors_origins=["https://app.example"], trusted_hosts=["testserver"])
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with TestClient(app) as client:
        allowed = client.options("/v1/chat/completions", headers={"Origin": "https://app.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = client.options("/v1/chat/completions", headers={"Origin": "https://attacker.example", **preflight})
        assert_error(refused, 400, "cors_refused")
        assert "access-control-allow-origin" not in refused.headers


def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with listen("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "vqagraph.agents.serve_cli", "serve", "--port", str(port),
                              "--profile", "tiny"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "VQAGRAPH_DATA": str(tmp_path)})
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in run.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8080", "LOCALHOST.", "[::1]:8080", "[::1]"])
def test_loopback_host_headers_are_answered(live: Live, host: str) -> None:
    assert live.post(question(), headers={"Host": host}).status_code == 200


def test_health_needs_no_host_check(live: Live) -> None:
    """A load balancer may probe by IP address; /health says nothing a rebinding page could use."""
    assert live.http.get("/health", headers={"Host": "10.0.0.9:8080"}).status_code == 200
    assert_error(live.http.get("/v1/models", headers={"Host": "10.0.0.9:8080", "Authorization": f"Bearer {KEY}"}),
                 400, "invalid_host")
