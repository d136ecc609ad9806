"""Shared fixtures: a private model cache (tiny models built once per test session) and small images."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tiny built-in models go to a per-session cache, never to the user's."""
    # VQAGRAPH_TEST_CACHE lets CI share the converted SmolLM2 between the demo and the tests.
    shared = os.environ.get("VQAGRAPH_TEST_CACHE")
    root = Path(shared) if shared else tmp_path_factory.mktemp("vqagraph-cache")
    old = os.environ.get("VQAGRAPH_CACHE")
    os.environ["VQAGRAPH_CACHE"] = str(root)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Conversation threads and their images never go to the user's data directory from a test.
    os.environ["VQAGRAPH_DATA"] = str(tmp_path_factory.mktemp("vqagraph-data"))
    torch.manual_seed(0)
    yield root
    if old is None:
        os.environ.pop("VQAGRAPH_CACHE", None)
    else:
        os.environ["VQAGRAPH_CACHE"] = old


@pytest.fixture(scope="session")
def engine(model_cache: Path):  # type: ignore[no-untyped-def]
    from vqagraph import Engine

    # The tiny Llama instead of SmolLM2 keeps graph tests fast; SmolLM2 has its own tests (test_vllm.py).
    # tiny-blip2 projects to 64 dimensions, the tiny Llama's hidden size.
    return Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"})


@pytest.fixture
def red_circle() -> Image.Image:
    image = Image.new("RGB", (200, 150), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    return image


@pytest.fixture
def red_circle_path(tmp_path: Path, red_circle: Image.Image) -> Path:
    path = tmp_path / "red.png"
    red_circle.save(path)
    return path


@contextmanager
def served(app: Any, body_timeout: float | None = None) -> Iterator[str]:
    """The app on a free loopback port, run by uvicorn in a thread with `vqagraph serve`'s settings; yields its
    base URL and stops it on exit."""
    import uvicorn

    from vqagraph.agents.http_guards import DEFAULT_BODY_TIMEOUT, listen, uvicorn_config

    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, "warning", body_timeout or DEFAULT_BODY_TIMEOUT))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def serve_app() -> Any:
    """`served`, for the tests' server fixtures."""
    return served
