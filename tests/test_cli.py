"""`vqagraph ask` end to end in a subprocess: JSON output, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "vqagraph", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_ask_json(red_circle_path: Path) -> None:
    done = run("ask", str(red_circle_path), "What colour is the circle?", "--route", "img2llm", "--json",
               "--profile", "shapes")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    # `shapes`: trained models, so the answer is not flagged meaningless.
    assert answer["route"] == "img2llm" and answer["meaningless"] is False and answer["trace"]["profile"] == "shapes"
    assert answer["trace"]["img2llm"]["prompt"].endswith("Question:What colour is the circle?\nAnswer:")
    assert answer["image_ref"].startswith("sha256:")


def test_ask_text_says_the_answer_is_meaningless(red_circle_path: Path) -> None:
    done = run("ask", str(red_circle_path), "what is it?", "--profile", "tiny")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("answer: ")
    assert "meaningless" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("ask", "/no/such.png", "what?"), "image file not found: /no/such.png"),
    (("ask", "{image}", "   "), "the question is empty"),
    (("ask", "{image}", "what?", "--profile", "nope"), "unknown profile 'nope'"),
    (("ask", "{notimage}", "what?"), "not an image"),
])
def test_errors_are_one_line_and_exit_2(tmp_path: Path, red_circle_path: Path, args, message: str) -> None:  # type: ignore[no-untyped-def]
    notimage = tmp_path / "notes.png"
    notimage.write_text("hello")
    args = tuple(a.format(image=red_circle_path, notimage=notimage) for a in args)
    done = run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("vqagraph: error: ") and message in lines[0]


def test_bad_route_is_a_usage_error(red_circle_path: Path) -> None:
    done = run("ask", str(red_circle_path), "what?", "--route", "teleport")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_ask_thread_continues_in_another_process(red_circle_path: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "threads.sqlite")
    first = run("ask", str(red_circle_path), "What colour is the circle?", "--thread", "cli-t", "--store", store,
                "--route", "bridge", "--json", "--profile", "shapes")
    assert first.returncode == 0, first.stderr
    assert "thread: cli-t (turn 1)" in first.stderr
    second = run("ask", "Is it big?", "--thread", "cli-t", "--store", store, "--route", "bridge", "--json",
                 "--profile", "shapes")
    assert second.returncode == 0, second.stderr
    answer = json.loads(second.stdout)
    assert answer["trace"]["history_turns"] == 1 and answer["trace"]["standalone_question"] == "Is the circle big?"
    assert answer["trace"]["bridge"]["prompt"].startswith("Question: What colour is the circle? Answer:")
    assert answer["image_ref"] == json.loads(first.stdout)["image_ref"]  # the thread's image, from disk
    lonely = run("ask", "Is it big?")
    assert lonely.returncode == 2 and "--thread" in lonely.stderr
