"""The router: each policy on questions whose route is known, and `both` really running the routes at once."""

from __future__ import annotations

import threading

import pytest
from PIL import Image
from pydantic import ValidationError

from vqagraph import Engine
from vqagraph.config import BUILTIN_PROFILES, RouterSettings, load_profile
from vqagraph.graphs.router import choose_route, pick_answer, question_cue, rules_route


@pytest.mark.parametrize(("question", "route"), [
    ("What colour is the circle?", "bridge"),
    ("What color are the shapes?", "bridge"),
    ("What shape is at the top left?", "bridge"),
    ("How many red shapes are there?", "bridge"),
    ("Where is the blue square?", "bridge"),
    ("Is the triangle left of the star?", "bridge"),
    ("Which is bigger, the star or the circle?", "bridge"),
    ("Are there any hexagons?", "bridge"),
    ("How many sides does the blue shape have?", "img2llm"),
    ("Which fruit has the same colour as the circle?", "img2llm"),
    ("Why is the man holding an umbrella?", "img2llm"),
    ("What is this object used for?", "img2llm"),
    ("What kind of dog is this?", "img2llm"),
    ("What is in the picture?", "img2llm"),
])
def test_rules_policy(question: str, route: str) -> None:
    decision = rules_route(question)
    assert decision.route == route and decision.reason.startswith("rules: ")


def test_rules_send_marked_regions_to_the_bridge_unless_knowledge_is_asked() -> None:
    assert rules_route("What is within the red rectangle?", marked=True).route == "bridge"
    assert rules_route("What is the object within the red rectangle used for?", marked=True).route == "img2llm"


def test_policies_and_the_pick() -> None:
    settings = RouterSettings(cascade_threshold=-0.5)
    assert choose_route("cascade", "What is it?", False, settings).cascade
    assert choose_route("both", "What is it?", False, settings).route == "both"
    with pytest.raises(ValueError, match="unknown router policy"):
        choose_route("dice", "What is it?", False, settings)
    answers = {"img2llm": {"answer": "red", "raw_answer": " red", "token_ids": [1], "token_logprobs": [-0.2],
                           "mean_logprob": -0.2},
               "bridge": {"answer": "blue", "raw_answer": " blue", "token_ids": [2], "token_logprobs": [-0.9],
                          "mean_logprob": -0.9}}
    assert pick_answer(answers)[0] == "img2llm"  # type: ignore[arg-type]
    answers["bridge"]["mean_logprob"] = -0.1
    best, why = pick_answer(answers)  # type: ignore[arg-type]
    assert best == "bridge" and "bridge -0.100" in why


@pytest.fixture(scope="module")
def image() -> Image.Image:
    picture = Image.new("RGB", (160, 120), "white")
    picture.paste((200, 30, 30), (20, 20, 80, 80))
    return picture


def test_auto_uses_the_profile_policy_and_the_per_call_override(engine, image) -> None:  # type: ignore[no-untyped-def]
    colour = engine.ask(image, "What colour is the square?")
    assert colour.route == "bridge" and colour.trace.router_policy == "rules"
    assert list(colour.trace.route_answers) == ["bridge"] and colour.trace.bridge is not None
    assert colour.trace.img2llm is None and colour.trace.projection is None  # routes that did not run: no record
    knowledge = engine.ask(image, "Which fruit has the same colour as the square?")
    assert knowledge.route == "img2llm" and list(knowledge.trace.route_answers) == ["img2llm"]
    both = engine.ask(image, "What colour is the square?", router="both")
    assert set(both.trace.route_answers) == {"img2llm", "bridge"} and both.trace.router_policy == "both"


def test_cascade_falls_back_only_when_the_bridge_is_unsure(image) -> None:  # type: ignore[no-untyped-def]
    def engine_with(threshold: float) -> Engine:
        return Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"},
                                   router={"policy": "cascade", "cascade_threshold": threshold})

    sure = engine_with(-1e9).ask(image, "What is it?")
    assert sure.route == "bridge" and list(sure.trace.route_answers) == ["bridge"]
    assert "bridge sure enough" in sure.trace.route_reason
    unsure = engine_with(1.0).ask(image, "What is it?")  # log-probs are never above 0: always falls back
    assert unsure.route == "img2llm" and list(unsure.trace.route_answers) == ["bridge", "img2llm"]
    assert "bridge unsure" in unsure.trace.route_reason
    assert unsure.answer == unsure.trace.route_answers["img2llm"]["answer"]


def test_both_runs_the_routes_concurrently_and_keeps_the_surer(engine, image, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    alone = {route: engine.ask(image, "What is it?", route=route).answer for route in ("img2llm", "bridge")}
    # Each route's LLM call waits at a barrier for the other's: run one after the other, it would time out.
    meet = threading.Barrier(2, timeout=60)
    llm = engine.tools.llm
    text_call, embeds_call = llm.generate, llm.generate_from_embeddings

    def generate(*args, **kwargs):  # type: ignore[no-untyped-def]
        meet.wait()
        return text_call(*args, **kwargs)

    def generate_from_embeddings(*args, **kwargs):  # type: ignore[no-untyped-def]
        meet.wait()
        return embeds_call(*args, **kwargs)

    monkeypatch.setattr(llm, "generate", generate)
    monkeypatch.setattr(llm, "generate_from_embeddings", generate_from_embeddings)
    answer = engine.ask(image, "What is it?", route="both")
    results = answer.trace.route_answers
    assert set(results) == {"img2llm", "bridge"}
    assert {route: r["answer"] for route, r in results.items()} == alone  # concurrency changes no answer
    best = max(results, key=lambda r: results[r]["mean_logprob"])
    assert answer.route == best and answer.answer == results[best]["answer"]
    assert f"kept {best}" in answer.trace.route_reason


def test_rules_follow_the_profiles_cue_routes_and_name_the_cue() -> None:
    # The mapping is data: a profile (tuned on a validation split) decides where each cue goes.
    default = RouterSettings()
    assert rules_route("What colour is the circle?", settings=default).route == "bridge"
    tuned = RouterSettings(cue_routes={"colour": "img2llm"})
    decision = choose_route("rules", "What colour is the circle?", False, tuned)
    assert decision.route == "img2llm" and "perception cue (colour)" in decision.reason
    assert tuned.cue_routes["shape"] == default.cue_routes["shape"]  # cues not named keep their defaults
    assert question_cue("How many sides does the blue shape have?") == (
        "knowledge", "knowledge/reasoning cue (counts something the image does not show)")
    assert question_cue("What is in the box?", marked=True)[0] == "marked"
    from vqagraph.config import load_profile
    from vqagraph.errors import ProfileError
    from vqagraph.graphs.registry import ROUTES

    typo = load_profile("tiny").model_copy(update={"router": RouterSettings(cue_routes={"colour": "telepathy"})})
    with pytest.raises(ProfileError, match=r"router\.cue_routes names 'telepathy', not a route"):
        ROUTES.check_profile(typo)  # the engine checks it when built: routes are the registry's
    with pytest.raises(ValidationError):
        RouterSettings(cue_routes={"smell": "bridge"})  # type: ignore[dict-item]


def test_the_shapes_profile_carries_the_measured_router_default() -> None:
    # What benchmarks/choose_router.py chose on the validation split lives in the profile, and the router
    # follows it: every cue the measured map moves away from the code's default is routed as the profile says,
    # and the trace's reason names that cue.
    samples = {"colour": "What colour is the circle?", "shape": "What shape is the red one?",
               "count": "How many circles are there?", "position": "Where is the circle?",
               "size": "Which is bigger, the circle or the square?", "yes/no": "Is there a circle?"}
    settings = load_profile("shapes").router
    assert settings.policy == BUILTIN_PROFILES["shapes"]["router"]["policy"] == "rules"
    assert settings.cue_routes == {**RouterSettings().cue_routes, **BUILTIN_PROFILES["shapes"]["router"]["cue_routes"]}
    moved = [cue for cue in samples if settings.cue_routes[cue] != RouterSettings().cue_routes[cue]]
    assert moved, "the measured cue map is the code's default: nothing was tuned"
    for cue in moved:
        decision = choose_route(settings.policy, samples[cue], False, settings)
        assert decision.route == settings.cue_routes[cue] and cue in decision.reason
