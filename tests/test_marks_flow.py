"""Visual prompts through the text route: the routes see the marked image, "this" becomes the mark's phrase,
patches are sampled inside a single mark, and the CLI draws marks and explain pictures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vqagraph import MarkError
from vqagraph.tools.referring import refer_to_mark
from vqagraph.tools.region_captioner import region_patches, restrict_to_region

RECT = "within the red rectangle"


@pytest.mark.parametrize(("question", "expected"), [
    ("What is this?", "What is the object within the red rectangle?"),
    ("What colour is this shape?", "What colour is the shape within the red rectangle?"),
    ("What is here?", "What is within the red rectangle?"),
    ("How many circles are there?", "How many circles are there?"),  # existential "there" is not a place
    ("What is the object within the red rectangle?", "What is the object within the red rectangle?"),
])
def test_this_and_here_become_the_phrase(question: str, expected: str) -> None:
    assert refer_to_mark(question, [RECT])[0] == expected


def test_several_marks_leave_the_question_alone() -> None:
    assert refer_to_mark("What is this?", [RECT, "at the blue point"]) == ("What is this?", False)


def test_region_patches_cover_the_box() -> None:
    # 200x100 image on a 4x4 grid: a cell is 50x25 pixels.
    inside = region_patches((4, 4), (200, 100), (60, 30, 140, 70)).reshape(4, 4)
    assert inside.nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    probs = torch.full((16,), 1 / 16)
    restricted = restrict_to_region(probs, (4, 4), (200, 100), (60, 30, 140, 70))
    assert torch.allclose(restricted.sum(), torch.tensor(1.0))
    assert (restricted.reshape(4, 4)[inside] == 0.25).all() and (restricted.reshape(4, 4)[~inside] == 0).all()


def test_marked_question_through_the_route(engine, red_circle) -> None:  # type: ignore[no-untyped-def]
    mark = {"shape": "rectangle", "box": (15, 15, 95, 95), "colour": "red"}
    answer = engine.ask(red_circle, "What is this?", marks=[mark], route="img2llm")
    trace = answer.trace
    assert answer.question == "What is the object within the red rectangle?"
    assert trace.visual_prompt["original_question"] == "What is this?"
    assert trace.visual_prompt["phrases"] == [RECT]
    assert trace.seen_image_ref != answer.image_ref  # the routes saw the marked picture
    assert trace.img2llm["prompt"].endswith("Question:What is the object within the red rectangle?\nAnswer:")
    seen = engine.tools.images.get(trace.seen_image_ref)
    assert seen.tobytes() == engine.render(red_circle, [mark]).tobytes()
    inside = region_patches(tuple(trace.img2llm["grid"]), red_circle.size, (15, 15, 95, 95))
    assert trace.img2llm["patch_ids"] and all(bool(inside[i]) for ids in trace.img2llm["patch_ids"] for i in ids)


def test_partly_outside_mark_is_clipped_and_said(engine, red_circle) -> None:  # type: ignore[no-untyped-def]
    answer = engine.ask(red_circle, "What is this?", marks=[{"shape": "rectangle", "box": (-20, 10, 80, 90)}])
    assert answer.trace.visual_prompt["notes"] and "clipped" in answer.trace.visual_prompt["notes"][0]


def test_bad_mark_is_a_mark_error(engine, red_circle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MarkError):
        engine.ask(red_circle, "What is this?", marks=[{"shape": "hexagram", "box": (1, 1, 5, 5)}])
    with pytest.raises(MarkError):
        engine.ask(red_circle, "What is this?", marks=[{"shape": "rectangle", "box": (500, 500, 600, 600)}])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "vqagraph", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_cli_render_and_explain(red_circle_path: Path, tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "marked.png"
    done = run("render", str(red_circle_path), "--mark", "rectangle:0.1,0.1,0.5,0.6:blue", "-o", str(out))
    assert done.returncode == 0, done.stderr
    marked = Image.open(out).convert("RGB")
    assert marked.size == (200, 150) and marked.tobytes() != Image.open(red_circle_path).convert("RGB").tobytes()
    explain = tmp_path / "explain.png"
    done = run("ask", str(red_circle_path), "What is this?", "--mark", "rectangle:20,20,90,90:red",
               "--explain", str(explain), "--route", "img2llm", "--profile", "shapes")
    assert done.returncode == 0, done.stderr
    assert "asked:  What is the object within the red rectangle?" in done.stdout
    picture = Image.open(explain)
    assert picture.width > 2 * 336 and picture.height >= 336
    done = run("render", str(red_circle_path), "--mark", "rectangle:1,2", "-o", str(out))
    assert done.returncode == 2 and done.stderr.startswith("vqagraph: error: ")
