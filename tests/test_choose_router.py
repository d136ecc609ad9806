"""benchmarks/choose_router.py scores router policies from per-question answers: one `both` run, or single-route
runs over the same questions merged question by question."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def choose_router() -> Any:
    spec = importlib.util.spec_from_file_location("choose_router", ROOT / "benchmarks" / "choose_router.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(question: str, family: str, truth: str, route: str, answer: str, logprob: float) -> dict[str, Any]:
    accuracy = 100.0 if answer == truth else 0.0
    return {"question_id": "1", "image": "images/000001.png", "question": question, "family": family,
            "route": route, "route_taken": route, "answer": answer, "answers": [truth], "accuracy": accuracy,
            "route_answers": {route: {"answer": answer, "mean_logprob": logprob, "accuracy": accuracy}}}


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_single_route_runs_merge_into_both_routes_per_question(choose_router: Any, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = write(tmp_path / "img2llm.jsonl", [
        record("What colour is the circle?", "colour", "red", "img2llm", "red", -0.6),
        record("How many shapes are there?", "count", "3", "img2llm", "2", -0.9),
        record("What shape is blue?", "shape", "star", "img2llm", "star", -0.4)])  # no bridge answer: skipped
    bridge = write(tmp_path / "bridge.jsonl", [
        record("How many shapes are there?", "count", "3", "bridge", "3", -0.1),
        record("What colour is the circle?", "colour", "red", "bridge", "blue", -0.1)])
    records, routes = choose_router.load([text, bridge])
    assert len(records) == 2 and routes == ["img2llm", "bridge"]
    by_family = {r["family"]: r["route_answers"] for r in records}
    assert by_family["colour"]["img2llm"]["answer"] == "red" and by_family["colour"]["bridge"]["answer"] == "blue"
    assert by_family["count"]["bridge"]["accuracy"] == 100.0 and by_family["count"]["img2llm"]["accuracy"] == 0.0
    assert "1 records without every route's answer" in capsys.readouterr().out
    # Each route right once: alone 50 each; `both` and every cascade trust the confident wrong colour; only the
    # tuned rules (and the oracle) take both answers right.
    assert choose_router.main([str(text), str(bridge)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("img2llm ", "bridge "))}
    assert float(rows["img2llm"][1]) == 50.0 and float(rows["bridge"][1]) == 50.0
    assert "best policy here: rules (tuned cues) (100.0)" in out


def test_three_routes_are_chosen_among(choose_router: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the projection route's answers too, each cue goes to the best of three, `both` keeps the surest of
    three, and the tuned map can name the projection route."""
    questions = [("What colour is the circle?", "colour", "red"), ("How many shapes are there?", "count", "3"),
                 ("What shape is blue?", "shape", "star")]
    answers = {  # (answer, mean log-prob) per route, per question
        "img2llm": [("red", -0.2), ("2", -0.9), ("disk", -0.8)],
        "bridge": [("blue", -0.5), ("3", -0.3), ("disk", -0.7)],
        "projection": [("blue", -0.1), ("2", -0.2), ("star", -0.6)],
    }
    files = [write(tmp_path / f"{route}.jsonl", [record(q, f, t, route, *answers[route][k])
                                                 for k, (q, f, t) in enumerate(questions)]) for route in answers]
    records, routes = choose_router.load(files)
    assert routes == ["img2llm", "bridge", "projection"] and len(records) == 3
    tuned = choose_router.tune_cues(records, routes)
    assert (tuned["colour"], tuned["count"], tuned["shape"]) == ("img2llm", "bridge", "projection")
    table = choose_router.policies(records, routes, None)
    assert [table["both"](r) for r in records] == ["projection", "projection", "projection"]
    assert choose_router.main([str(f) for f in files]) == 0
    out = capsys.readouterr().out
    assert "routes: img2llm, bridge, projection" in out and "best policy here: rules (tuned cues) (100.0)" in out
    assert '"shape": "projection"' in out
