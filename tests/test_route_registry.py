"""A route is one unit: a fourth route declared here, in this file alone, answers through `ask --route`, `both`,
the server (and the page's route list) and a custom graph, with no other file touched (docs/architecture.md,
"How to add a route")."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langgraph.runtime import Runtime
from PIL import Image
from typing_extensions import TypedDict

from vqagraph.errors import ProfileError, QuestionError
from vqagraph.graphs import ROUTES, Route, VQAContext, VQAState, register
from vqagraph.graphs.nodes import node

PALETTE = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "white": (250, 250, 250),
           "black": (10, 10, 10)}


class MeanColourRecord(TypedDict, total=False):
    """What the toy route did: the image's mean colour and the palette name nearest to it."""

    rgb: list[int]
    colour: str


@node("mean_colour_answer", reads=("image_ref",), writes=("mean_colour.rgb", "mean_colour.colour", "route_answers"))
def mean_colour_answer(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """Answers any question with the name of the image's mean colour (no model, no LLM)."""
    image = runtime.context.tools.images.get(state["image_ref"]).convert("RGB")
    rgb = [round(float(v)) for v in np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)]
    colour = min(PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(PALETTE[name], rgb, strict=True)))
    answer = {"answer": colour, "raw_answer": colour, "token_ids": [], "token_logprobs": [math.log(0.5)],
              "mean_logprob": math.log(0.5)}
    return {"mean_colour": {"rgb": rgb, "colour": colour}, "route_answers": {"mean_colour": answer}}


MEAN_COLOUR = Route(
    name="mean_colour",
    title="mean-colour route",
    summary="a toy route: the name of the image's mean colour",
    record=MeanColourRecord,
    nodes=(mean_colour_answer,),
    settings=lambda _profile: None,
    answer_cap=lambda _profile: 1,
    describe=lambda record: f"mean colour: {record['colour']} {record['rgb']}",
)


@pytest.fixture
def toy_route() -> Iterator[Route]:
    register(MEAN_COLOUR)
    try:
        yield MEAN_COLOUR
    finally:
        ROUTES.unregister(MEAN_COLOUR.name)


@pytest.fixture
def red(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (96, 64), PALETTE["red"]).save(path)
    return path


def tiny_engine() -> Any:
    from vqagraph import Engine

    return Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"})


def test_the_registry_lists_the_built_in_routes_in_order() -> None:
    assert ROUTES.names() == ("img2llm", "bridge", "projection", "adapter")
    assert ROUTES.requested() == ("auto", "img2llm", "bridge", "projection", "adapter", "both")
    assert ROUTES.get("bridge").title == "Q-Former route"
    with pytest.raises(QuestionError, match="unknown route 'telepathy'"):
        ROUTES.get("telepathy")


def test_a_route_name_must_be_new_and_a_plain_word(toy_route: Route) -> None:
    import dataclasses

    for name in ("mean_colour", "both", "question", "Mean Colour"):
        with pytest.raises(ProfileError):
            register(dataclasses.replace(toy_route, name=name))
    with pytest.raises(ProfileError, match="cannot be removed"):
        ROUTES.unregister("img2llm")


def test_ask_route_answers_from_the_cli(toy_route: Route, red: Path, model_cache: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from vqagraph.agents.cli import main

    assert main(["ask", str(red), "What colour is the picture?", "--route", "mean_colour", "--profile", "tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer: red\n") and "route:  mean_colour (mean_colour: requested by the caller)" in out
    assert "mean colour: red [220, 30, 30]" in out  # the route's own trace line
    assert main(["ask", str(red), "What colour?", "--route", "mean_colour", "--profile", "tiny", "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)["trace"]
    assert trace["mean_colour"] == {"rgb": [220, 30, 30], "colour": "red"}  # its record, filed under its name


def test_both_runs_every_route_with_the_new_one(toy_route: Route, model_cache: Path) -> None:
    from vqagraph.request import AskRequest

    engine = tiny_engine()
    image = Image.new("RGB", (96, 64), PALETTE["blue"])
    answer = engine.answer(AskRequest(question="What colour is it?", image=image, route="both"))
    assert list(answer.trace.route_answers) == ["img2llm", "bridge", "mean_colour"]  # the registry's order
    assert answer.trace.route_answers["mean_colour"]["answer"] == "blue"
    assert answer.trace.model_dump()["mean_colour"]["colour"] == "blue"
    assert "mean_colour" in answer.trace.route_reason  # both names what it ran
    alone = engine.answer(AskRequest(question="What colour is it?", image=image, route="mean_colour"))
    assert alone.answer == "blue" and alone.route == "mean_colour"
    assert "mean_colour_answer" in alone.trace.timings and set(alone.trace.route_answers) == {"mean_colour"}


def test_the_server_answers_by_it_and_the_page_lists_it(toy_route: Route, serve_app: Any, model_cache: Path) -> None:
    import base64
    import io

    import httpx
    import openai

    from vqagraph.agents.openai_server import create_app

    app = create_app(tiny_engine(), api_key="k", store="memory")
    picture = io.BytesIO()
    Image.new("RGB", (96, 64), PALETTE["green"]).save(picture, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(picture.getvalue()).decode()
    with serve_app(app) as base:
        listed = httpx.get(base + "/v1/routes", timeout=30).json()
        assert [r["name"] for r in listed["routes"]] == ["img2llm", "bridge", "projection", "adapter", "mean_colour"]
        assert {r["name"]: r["available"] for r in listed["routes"]}["mean_colour"] is True
        assert listed["requested"][-2:] == ["mean_colour", "both"]
        client = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="vqagraph", messages=[{"role": "user", "content": [
                {"type": "text", "text": "What colour is it?"}, {"type": "image_url", "image_url": {"url": url}}]}],
            extra_body={"vqagraph": {"route": "mean_colour"}})
        assert reply.choices[0].message.content == "green"
        with pytest.raises(openai.BadRequestError):  # an unregistered route is still the caller's mistake
            client.chat.completions.create(
                model="vqagraph", messages=[{"role": "user", "content": [
                    {"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": url}}]}],
                extra_body={"vqagraph": {"route": "telepathy"}})


def test_a_custom_graph_uses_it_as_a_node(toy_route: Route, model_cache: Path) -> None:
    from vqagraph.graphs.library import NODES
    from vqagraph.graphs.spec import compile_spec

    entry = NODES["mean_colour"]
    assert entry.kind == "subgraph" and "mean_colour.colour" in entry.writes
    spec = {"name": "colour-vote", "nodes": {
        "colour": {"use": "mean_colour"}, "text": {"use": "img2llm"},
        "vote": {"use": "vote", "settings": {"routes": ["mean_colour", "img2llm"],
                                             "weights": {"mean_colour": 2.0}}}},
        "edges": ["START -> colour", "START -> text", {"from": ["colour", "text"], "to": "vote"}, "vote -> END"]}
    from vqagraph import Engine
    from vqagraph.request import AskRequest

    base = tiny_engine()
    engine = Engine(base.profile, graph=compile_spec(spec, "colour-vote.yaml").graph)
    image = Image.new("RGB", (96, 64), PALETTE["red"])
    answer = engine.answer(AskRequest(question="What colour is it?", image=image))
    assert answer.answer == "red" and answer.route == "mean_colour" and answer.trace.route_reason.startswith("vote")
    assert answer.trace.model_dump()["mean_colour"] == {"rgb": [220, 30, 30], "colour": "red"}
    assert {"colour", "colour/mean_colour_answer", "text/llm_answer", "vote"} <= set(answer.trace.path)
