"""Shared fixtures: a private model cache (tiny models built once per test session) and small images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
