"""`vqagraph serve`: the official `openai` client against a server started on loopback (tiny untrained models:
the answers are noise, so the tests check the protocol, the limits and the errors, not what is said)."""

from __future__ import annotations

import base64
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from vqagraph.agents import openai_protocol  # noqa: E402
from vqagraph.agents.openai_protocol import AnswerStream  # noqa: E402
from vqagraph.agents.openai_server import create_app  # noqa: E402
from vqagraph.errors import LLMError  # noqa: E402
from vqagraph.tools.llm.postprocess import postprocess_answer  # noqa: E402
from vqagraph.tools.llm.vllm_server import free_port  # noqa: E402

KEY = "sk-test-0123456789"
MAX_PIXELS = 600 * 600
MAX_BODY = 512 * 1024
BRIDGE = {"route": "bridge"}  # the embedding route: the quicker one on a CPU


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


def scene(marker: int = 0) -> Image.Image:
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    image.putpixel((159, 119), (marker, marker, marker))
    return image


def user(text: str, image: Image.Image | str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image is not None:
        url = image if isinstance(image, str) else data_url(image)
        content.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": "user", "content": content}


@pytest.fixture(scope="module")
def base_url(engine: Any, serve_app: Any) -> Iterator[str]:
    app = create_app(engine, api_key=KEY, allow_hosts=["localhost"], store="memory", max_body_bytes=MAX_BODY,
                     max_image_pixels=MAX_PIXELS)
    with serve_app(app) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def client(base_url: str) -> Any:
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture
def image_host() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that serves a PNG and records every request it gets."""
    hits: list[str] = []
    body = png(scene(7))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def extension(response: Any) -> dict[str, Any]:
    return response.model_extra["vqagraph"]  # type: ignore[no-any-return]


def test_models_and_one_question(client: Any, engine: Any) -> None:
    assert engine.profile.name in [m.id for m in client.models.list().data]
    response = client.chat.completions.create(
        model=engine.profile.name, messages=[user("What colour is the circle?", scene(1))],
        extra_body={"vqagraph": BRIDGE})
    answer = extension(response)["answer"]
    assert response.object == "chat.completion"
    # as vLLM says it: "length" when the route's 10-token cap ended the answer (the tiny LLM rarely stops early)
    assert response.choices[0].finish_reason == answer["trace"]["route_answers"]["bridge"]["finish_reason"]
    assert response.choices[0].message.content == answer["answer"] and answer["route"] == "bridge"
    trace = answer["trace"]
    assert response.usage.prompt_tokens == trace["bridge"]["query_tokens"] + trace["bridge"]["prompt_tokens"] > 0
    assert response.usage.completion_tokens == len(trace["route_answers"]["bridge"]["token_ids"]) > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert extension(response)["thread"] is None


def test_streamed_answer_is_the_answer(client: Any, engine: Any) -> None:
    messages = [user("What colour is the circle?", scene(2))]
    stream = client.chat.completions.create(model="vqagraph", messages=messages, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"vqagraph": BRIDGE})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason in ("stop", "length"))
    answer = final.model_extra["vqagraph"]["answer"]
    assert text == answer["answer"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    # Greedy decoding: the same request without streaming says the same.
    plain = client.chat.completions.create(model="vqagraph", messages=messages, extra_body={"vqagraph": BRIDGE})
    assert plain.choices[0].message.content == text


def test_two_turn_thread(client: Any, engine: Any) -> None:
    first = client.chat.completions.create(model="vqagraph", messages=[user("What colour is the circle?", scene(3))],
                                           user="openai-thread-1", extra_body={"vqagraph": BRIDGE})
    second = client.chat.completions.create(model="vqagraph", messages=[user("and what shape is it?")],
                                            extra_body={"vqagraph": {"thread": "openai-thread-1", **BRIDGE}})
    assert extension(first)["thread"] == extension(second)["thread"] == "openai-thread-1"
    assert extension(second)["answer"]["image_ref"] == extension(first)["answer"]["image_ref"]
    assert extension(second)["answer"]["trace"]["history_turns"] == 1
    turns = engine.conversation("openai-thread-1", store="memory").history()
    assert [t.question for t in turns] == ["What colour is the circle?", "and what shape is it?"]
    assert turns[0].answer == first.choices[0].message.content


def test_real_clients_at_their_defaults(base_url: str, engine: Any) -> None:
    """The async openai client and LangChain's ChatOpenAI (temperature 0.7, max_tokens 64: what users set as a
    matter of course) ask about an image and continue a thread; every response parses as `openai.types`."""
    import asyncio

    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    async def ask_async() -> tuple[Any, list[Any]]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)
        first = await client.chat.completions.create(
            model="vqagraph", messages=[user("What colour is the circle?", scene(21))], temperature=0.7, top_p=0.9,
            max_tokens=64, user="async-thread", extra_body={"vqagraph": BRIDGE})
        stream = await client.chat.completions.create(
            model="vqagraph", messages=[user("and its shape?")], temperature=0.7, max_tokens=64, stream=True,
            user="async-thread", extra_body={"vqagraph": BRIDGE})
        return first, [c async for c in stream]

    first, chunks = asyncio.run(ask_async())
    ChatCompletion.model_validate(first.model_dump())
    assert all(ChatCompletionChunk.model_validate(c.model_dump()) for c in chunks)
    assert extension(first)["answer"]["trace"]["generation"] == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64}
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert last.model_extra["vqagraph"]["answer"]["trace"]["history_turns"] == 1

    chat = ChatOpenAI(base_url=base_url, api_key=KEY, model="vqagraph", temperature=0.7, max_tokens=64,
                      max_retries=0, timeout=120, extra_body={"vqagraph": {**BRIDGE, "thread": "langchain-thread"}})
    picture = HumanMessage(content=[{"type": "text", "text": "What colour is the circle?"},
                                    {"type": "image_url", "image_url": {"url": data_url(scene(22))}}])
    reply = chat.invoke([picture])
    follow = chat.invoke([HumanMessage("and what shape is it?")])
    assert isinstance(reply.content, str) and isinstance(follow.content, str)
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    turns = engine.conversation("langchain-thread", store="memory").history()
    assert [t.question for t in turns] == ["What colour is the circle?", "and what shape is it?"]
    assert turns[0].answer == reply.content


def test_an_image_is_uploaded_once_and_named_by_reference(client: Any, base_url: str) -> None:
    """POST /v1/images takes the picture once; questions (and their thread's turns) then send only `sha256:…`."""
    headers = {"Authorization": f"Bearer {KEY}"}
    uploaded = httpx.post(base_url + "/images", json={"image": data_url(scene(31))}, headers=headers, timeout=60)
    assert uploaded.status_code == 200, uploaded.text
    ref = uploaded.json()["id"]
    assert ref.startswith("sha256:") and uploaded.json()["width"] == 160
    by_ref = client.chat.completions.create(model="vqagraph", messages=[user("What colour is the circle?", ref)],
                                            extra_body={"vqagraph": BRIDGE})
    by_url = client.chat.completions.create(model="vqagraph", messages=[user("What colour is the circle?", scene(31))],
                                            extra_body={"vqagraph": BRIDGE})
    assert extension(by_ref)["answer"]["image_ref"] == ref == extension(by_url)["answer"]["image_ref"]
    assert by_ref.choices[0].message.content == by_url.choices[0].message.content
    rendered = httpx.post(base_url + "/render", json={"image": ref, "marks": []}, headers=headers, timeout=60)
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
    with pytest.raises(openai.NotFoundError) as caught:  # a reference nobody uploaded here
        client.chat.completions.create(model="vqagraph", messages=[user("What is it?", "sha256:" + "0" * 64)],
                                       extra_body={"vqagraph": BRIDGE})
    assert caught.value.body["code"] == "image_not_found"  # type: ignore[index]
    refused = httpx.post(base_url + "/images", json={"image": ref}, headers=headers, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "image"


def test_stateless_client_sends_the_history(client: Any) -> None:
    messages = [user("What colour is the circle?", scene(4)), {"role": "assistant", "content": "red"},
                user("and what shape is it?")]
    response = client.chat.completions.create(model="vqagraph", messages=messages, extra_body={"vqagraph": BRIDGE})
    trace = extension(response)["answer"]["trace"]
    assert trace["history_turns"] == 1 and "Answer: red" in trace["bridge"]["prompt"]


def test_wrong_or_missing_api_key_is_401(base_url: str) -> None:
    wrong = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="vqagraph", messages=[user("What is it?", scene(5))])
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    missing = httpx.post(f"{base_url}/chat/completions", json={"model": "vqagraph", "messages": []})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"


def test_oversized_image_and_body_are_413(client: Any) -> None:
    big = Image.new("RGB", (700, 700), "white")  # 490,000 pixels > 360,000; a few kB as a PNG
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="vqagraph", messages=[user("What is it?", big)])
    assert caught.value.status_code == 413 and caught.value.body["code"] == "image_too_large"  # type: ignore[index]
    noise = Image.frombytes("RGB", (400, 400), random.Random(0).randbytes(400 * 400 * 3))  # ~480 kB, + base64
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="vqagraph", messages=[user("What is it?", noise)])
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"  # type: ignore[index]


def test_remote_url_not_allow_listed_is_refused_unfetched(client: Any, image_host: tuple[str, list[str]]) -> None:
    port, hits = image_host
    for url in (f"http://127.0.0.1:{port}/a.png",  # not allow-listed
                f"http://localhost:{port}/b.png",  # allow-listed, but a loopback address
                f"ftp://localhost:{port}/c.png"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="vqagraph", messages=[user("What is it?", url)])
        assert caught.value.body["code"] in ("image_url_forbidden", "invalid_image_url")  # type: ignore[index]
    assert hits == []


def test_allow_listed_public_host_is_fetched(client: Any, image_host: tuple[str, list[str]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    port, hits = image_host
    monkeypatch.setattr(openai_protocol, "forbidden_address", lambda address: None)  # pretend loopback is public
    response = client.chat.completions.create(model="vqagraph", messages=[user("What is it?", f"http://localhost:{port}/d.png")],
                                              extra_body={"vqagraph": BRIDGE})
    assert hits == ["/d.png"] and response.choices[0].message.content is not None


def test_errors_in_openai_format(client: Any, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[user("What is it?", scene(6))])
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    cases = [([user("   ", scene(6))], {}, "invalid_question"),
             ([user("What is it?")], {}, "invalid_image"),
             ([user("What is it?", "data:image/png;base64,not-base64!")], {}, "invalid_image"),
             ([{"role": "user", "content": [*user("Which?", scene(6))["content"],
                                            *user("", scene(8))["content"][1:]]}], {}, "invalid_image"),
             ([user("What is it?", scene(6))], {"vqagraph": {"marks": [{"shape": "rectangle"}]}}, "invalid_mark"),
             ([user("What is it?", scene(6))], {"vqagraph": {"route": "sideways"}}, None)]
    for messages, extra, code in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="vqagraph", messages=messages, extra_body=extra)
        assert set(caught.value.body) >= {"message", "type", "param", "code"}  # type: ignore[arg-type]
        assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
        if code:
            assert caught.value.body["code"] == code  # type: ignore[index]

    def down(*args: Any, **kwargs: Any) -> Any:
        raise LLMError("the vLLM server at http://127.0.0.1:1 is down")

    monkeypatch.setattr(engine.tools.llm, "generate_from_embeddings", down)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="vqagraph", messages=[user("What is it?", scene(6))],
                                       extra_body={"vqagraph": BRIDGE})
    # The client learns the LLM is down, not where it runs (the log has the whole message).
    assert caught.value.status_code == 502 and "the LLM server is unavailable" in caught.value.message
    assert "127.0.0.1:1" not in caught.value.message
    with pytest.raises(openai.APIError, match="the LLM server is unavailable"):  # mid-stream: an event, then the end
        list(client.chat.completions.create(model="vqagraph", messages=[user("What is it?", scene(6))], stream=True,
                                            extra_body={"vqagraph": BRIDGE}))


@pytest.mark.parametrize("raw", ["Red. The circle", " the answer is a red circle", "it is blue\nmore", "It's",
                                 "answer: 3 sides?!", "blue, green, red", "this is it is two", "Yes", "  ", "thé cat."])
def test_answer_stream_deltas_add_up_to_the_answer(raw: str) -> None:
    rng = random.Random(raw)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(0, 5)))) if len(raw) > 1 else []
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        stream = AnswerStream(live=True)
        sent = "".join(stream.token(piece) for piece in pieces)
        final = postprocess_answer(raw)
        assert sent + stream.finish(final) == final


def test_serve_command_starts_on_loopback_with_a_key(model_cache: Path, tmp_path: Path) -> None:
    """`vqagraph serve` as a process: the key from the environment, the profile's model listed, Ctrl-C stops it."""
    port = free_port()
    env = {**os.environ, "VQAGRAPH_API_KEY": KEY, "VQAGRAPH_CACHE": str(model_cache), "HF_HUB_OFFLINE": "1",
           "VQAGRAPH_DATA": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "vqagraph.agents.serve_cli", "serve", "--port", str(port),
                                "--profile", "tiny", "--store", "memory", "--max-body-mb", "1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "vqagraph serve did not come up"
                time.sleep(0.2)
        models = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0).models.list()
        assert [m.id for m in models.data] == ["tiny"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
        big = httpx.post(f"{url}/v1/chat/completions", content=b"x" * (1024 * 1024 + 1),
                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate(timeout=10)[0]
    assert "127.0.0.1" in output and "API key required" in output


def test_sampling_parameters_are_honoured(client: Any) -> None:
    """What real clients send by default or by habit (LlamaIndex's temperature 0.1, chat front ends' top_p and
    max_tokens, a seed, a stop) is honoured per request, as vLLM honours it, and recorded in the trace."""
    asked = {"model": "vqagraph", "messages": [user("What colour is the circle?", scene(9))],
             "extra_body": {"vqagraph": BRIDGE}}
    greedy = client.chat.completions.create(**asked, max_tokens=256, max_completion_tokens=64, temperature=0, top_p=1,
                                            frequency_penalty=0, presence_penalty=0, logprobs=False,
                                            response_format={"type": "text"}, n=1)
    plain = extension(greedy)["answer"]["trace"]
    assert plain["generation"] == {"max_tokens": 64}  # only what differs from greedy is recorded
    greedy_ids = plain["route_answers"]["bridge"]["token_ids"]

    def sampled(seed: int, **more: Any) -> dict[str, Any]:
        reply = client.chat.completions.create(**asked, temperature=1.5, top_p=0.9, seed=seed, **more)
        return extension(reply)["answer"]["trace"]  # type: ignore[no-any-return]

    first = sampled(1)
    assert first["generation"] == {"temperature": 1.5, "top_p": 0.9, "seed": 1}
    assert sampled(1)["route_answers"] == first["route_answers"]  # a seeded request is reproducible
    draws = {tuple(sampled(seed)["route_answers"]["bridge"]["token_ids"]) for seed in (1, 2, 3, 4)}
    assert len(draws | {tuple(greedy_ids)}) > 1  # and it samples: not every seed gives the greedy tokens

    short = client.chat.completions.create(**asked, max_tokens=1)
    ids = extension(short)["answer"]["trace"]["route_answers"]["bridge"]["token_ids"]
    assert ids == greedy_ids[:1] and short.choices[0].finish_reason == "length"  # cut there, and said so
    raw = plain["route_answers"]["bridge"]["raw_answer"]
    assert raw  # the greedy answer's first character, as a stop string: the answer ends before it
    stopped = extension(client.chat.completions.create(**asked, stop=raw[0]))["answer"]["trace"]
    assert stopped["generation"] == {"stop": [raw[0]]}
    assert stopped["route_answers"]["bridge"]["raw_answer"] == ""
    assert stopped["route_answers"]["bridge"]["finish_reason"] == "stop"
    for bad, param in (({"n": 2}, "n"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
                       ({"max_tokens": 0}, "max_tokens")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**asked, **bad)
        assert caught.value.body["param"] == param  # type: ignore[index]


def test_api_keys_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from vqagraph.agents.serve_cli import api_keys

    monkeypatch.setenv("VQAGRAPH_API_KEY", "sk-a, sk-b,,sk-a")
    assert api_keys([]) == ["sk-a", "sk-b"]
    assert api_keys(["sk-c", "sk-d"]) == ["sk-c", "sk-d"]  # flags win over the environment
    monkeypatch.delenv("VQAGRAPH_API_KEY")
    assert api_keys([]) == []
