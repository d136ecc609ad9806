"""Per-request decoding settings (`request.Generation`) reach every LLM call of every route, through the Python API,
a conversation's turn and the CLI: greedy by default, a seeded sampled answer reproducible, `max_tokens` cutting the
answer with `finish_reason` "length", `stop` strings ending it, each recorded in the trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from vqagraph import Engine
from vqagraph.errors import QuestionError
from vqagraph.request import Generation


def scene() -> Image.Image:
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    return image


@pytest.fixture(scope="module")
def engine(model_cache: Path) -> Engine:
    return Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"})


@pytest.mark.parametrize("route", ["img2llm", "bridge"])
def test_every_route_honours_the_settings(engine: Engine, route: str) -> None:
    image = scene()
    greedy = engine.ask(image, "What colour is it?", route=route).trace
    assert greedy.generation == {}
    ids = greedy.route_answers[route]["token_ids"]
    short = engine.ask(image, "What colour is it?", route=route, generation={"max_tokens": 1}).trace
    assert short.generation == {"max_tokens": 1}
    assert short.route_answers[route]["token_ids"] == ids[:1]
    assert short.route_answers[route]["finish_reason"] == ("length" if ids else "stop")
    settings = Generation(temperature=1.5, top_p=0.95, seed=7)
    once = engine.ask(image, "What colour is it?", route=route, generation=settings).trace
    again = engine.ask(image, "What colour is it?", route=route, generation=settings).trace
    assert once.route_answers[route] == again.route_answers[route]  # seeded: reproducible
    if route == "bridge":  # the quick route: several draws
        draws = {tuple(engine.ask(image, "What colour is it?", route=route, generation={"temperature": 1.5, "seed": s})
                       .trace.route_answers[route]["token_ids"]) for s in range(4)}
        assert len(draws | {tuple(ids)}) > 1  # sampling does sample


def test_both_routes_and_a_thread_turn_use_them(engine: Engine) -> None:
    both = engine.ask(scene(), "What colour is it?", route="both", generation={"max_tokens": 1})
    assert all(len(r["token_ids"]) <= 1 for r in both.trace.route_answers.values())
    conversation = engine.conversation("generation-1", store="memory")
    conversation.ask("What colour is it?", image=scene(), route="bridge")
    turn = conversation.ask("and its shape?", route="bridge", generation=Generation(max_tokens=1))
    assert turn.trace.generation == {"max_tokens": 1} and len(turn.trace.route_answers["bridge"]["token_ids"]) <= 1


def test_bad_settings_are_clear_errors(engine: Engine) -> None:
    for bad, words in (({"temperature": -1}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
                       ({"stop": [""]}, "stop"), ({"stop": ["a"] * 5}, "stop"), ({"beams": 2}, "beams")):
        with pytest.raises(QuestionError, match=words):
            engine.ask(scene(), "What colour is it?", route="bridge", generation=bad)


def test_the_cli_takes_them(model_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vqagraph.agents.cli import main

    picture = tmp_path / "circle.png"
    scene().save(picture)
    profile = tmp_path / "fast.toml"
    profile.write_text('extends = "tiny"\nllm = "builtin:tiny-llama"\nqformer = "builtin:tiny-blip2"\n')
    args = ["ask", str(picture), "What colour is it?", "--profile", str(profile), "--route", "bridge", "--json"]
    assert main([*args, "--temperature", "0.8", "--seed", "3", "--max-tokens", "2", "--stop", "zz"]) == 0
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert answer["trace"]["generation"] == {"temperature": 0.8, "seed": 3, "max_tokens": 2, "stop": ["zz"]}
    assert main([*args, "--max-tokens", "0"]) == 2
    assert "max_tokens" in capsys.readouterr().err
