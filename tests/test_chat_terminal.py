"""`vqagraph chat`: the session loop in-process, then the real command in a terminal (tmux), continued from a
second process through the thread store."""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

PROMPT = "vqagraph> "
ROUTE_LINE = re.compile(r"^  route: (\w+) \((.*)\) · ", re.M)


def scripted(lines: Iterable[str], out: io.StringIO) -> Callable[[str], str]:
    """An `input` stand-in: the next scripted line (echoed after the prompt, as a terminal shows it), then EOF."""
    pending = iter(lines)

    def read(prompt: str) -> str:
        try:
            line = next(pending)
        except StopIteration:
            raise EOFError from None
        out.write(f"{prompt}{line}\n")
        return line

    return read


def test_session_commands_and_errors_keep_it_alive(engine, tmp_path: Path, red_circle_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vqagraph.agents.chat import ChatSession

    monkeypatch.setenv("VQAGRAPH_DATA", str(tmp_path / "data"))
    conversation = engine.conversation(store="memory")
    out = io.StringIO()
    session = ChatSession(engine, conversation, out=out, color=False)
    lines = [
        "what colour is it?",                     # no image yet: a message, the session goes on
        "/mark rectangle:10,20,120,90:red",       # no image to size the mark against
        f"/image {red_circle_path}",
        "/mark rectangle:10,20,120,90:red",
        "/mark",
        "what is this?",
        "/route sideways",
        "/route bridge",
        "/image /does/not/exist.png",             # an ImageError: one line, the current image stays
        "x" * 5000,                               # a QuestionError during a turn: one line, nothing lost
        "what colour is the circle?",
        "and its shape?",
        "/history",
        "/thread",
        "/bogus",
        "",
    ]
    assert session.run(scripted(lines, out)) == 0
    text = out.getvalue()
    assert f"thread {conversation.thread_id} (new)" in text
    assert text.count("no image yet") >= 2
    assert "mark 0 for the next question: rectangle:10,20,120,90:red" in text
    assert "asked: " in text  # the mark's phrase replaced "this"
    assert "unknown route 'sideways'" in text
    assert "error: image file not found: /does/not/exist.png" in text
    assert re.search(r"error: the question has 5000 characters", text)
    assert "unknown command /bogus" in text
    routes = ROUTE_LINE.findall(text)
    assert len(routes) == 3
    assert [r for r, _ in routes[1:]] == ["bridge", "bridge"]
    assert text.count("uses untrained placeholder models") == 1  # the note comes once per session
    turns = conversation.history()
    assert [t.question for t in turns] == ["what is this?", "what colour is the circle?", "and its shape?"]
    assert len(turns[0].marks) == 1 and not turns[1].marks  # marks are for one question only
    assert turns[2].vision_encoded is False  # the second bridge turn on the same image reused its features
    assert "#2 [bridge] and its shape? -> " in text and "(vision reused, " in text
    assert f"vqagraph chat --thread {conversation.thread_id}" in text
    assert f"vqagraph ask --thread {conversation.thread_id}" in text
    assert text.rstrip().splitlines()[-1].startswith("bye; continue this thread with: ")


# ---- the real command in a terminal -----------------------------------------------------------------------------


def _wired() -> tuple[bool, bool]:
    """Is `chat` on the main CLI yet, and does `ask` take `--thread`?"""
    from vqagraph.agents.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    ask_thread = any("--thread" in action.option_strings for action in sub.choices["ask"]._actions)
    return "chat" in sub.choices, ask_thread


class Pane:
    """One tmux session on a private socket, running one command; read back with capture-pane."""

    def __init__(self, socket: Path, command: str) -> None:
        self.socket, self.name = socket, f"chat-{uuid.uuid4().hex[:8]}"
        self.sent = 0
        # Keep the pane after the command ends, with its exit status, so the end of the session can be read.
        shell = f"{command}; echo \"[exited $?]\"; sleep 600"
        self.tmux("new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", shell)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", self.name)

    def wait(self, ready: Callable[[str], bool], what: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if ready(text):
                return text
            if "[exited " in text or time.monotonic() > deadline:
                pytest.fail(f"waiting for {what}: {'the command ended' if '[exited ' in text else 'timed out'};"
                            f" the pane shows:\n{text}")
            time.sleep(0.5)

    def settle(self, timeout: float = 120.0) -> str:
        """Wait until every line sent has been handled: a fresh prompt follows the last one."""
        return self.wait(lambda t: t.count(PROMPT) > self.sent, f"prompt #{self.sent + 1}", timeout)

    def send(self, line: str, timeout: float = 120.0) -> str:
        """Type a line at the next prompt and wait for the one after it; the pane's text then."""
        self.settle(timeout)
        self.tmux("send-keys", "-t", self.name, "-l", line)
        self.tmux("send-keys", "-t", self.name, "Enter")
        self.sent += 1
        return self.settle(timeout)


def _routes(text: str) -> list[tuple[str, str]]:
    return ROUTE_LINE.findall(text)


def _last_route_line(text: str) -> str:
    return [line for line in text.splitlines() if line.startswith("  route: ")][-1]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed: the terminal test drives a real "
                    "terminal through it (apt-get install tmux)")
def test_chat_in_a_terminal_then_continued_by_another_process(model_cache: Path, tmp_path: Path) -> None:
    profile = tmp_path / "chat-tiny.toml"
    # The tiny Llama keeps it fast; tiny-blip2 projects to its hidden size (64).
    profile.write_text('extends = "tiny"\nllm = "builtin:tiny-llama"\nqformer = "builtin:tiny-blip2"\n')
    red, blue = tmp_path / "red.png", tmp_path / "blue square.png"
    image = Image.new("RGB", (200, 150), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    image.save(red)
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).rectangle((30, 30, 110, 90), fill=(0, 0, 255))
    image.save(blue)

    chat_wired, ask_thread = _wired()
    environ = {"VQAGRAPH_CACHE": str(model_cache), "VQAGRAPH_DATA": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
               "LANG": "C.UTF-8", "NO_COLOR": "1"}
    chat = [sys.executable, "-m", "vqagraph", "chat"] if chat_wired else [sys.executable, "-m", "vqagraph.agents.chat"]

    def command(*args: str) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in environ.items())
        return f"cd {shlex.quote(str(tmp_path))} && env {env} {shlex.join([*chat, *args])}"

    socket = tmp_path / "tmux.sock"
    try:
        first = Pane(socket, command(str(red), "--profile", str(profile)))
        text = first.settle(timeout=240)  # models load lazily: the prompt comes first
        found = re.search(r"thread ([0-9a-f]{12}) \(new\)", text)
        assert found, text
        thread = found.group(1)
        assert f"image {red} (200x150): the first question is about it" in text

        text = first.send("what colour is the circle?", timeout=240)  # the first answer builds or loads the models
        assert len(_routes(text)) == 1
        assert "· router" in text  # node progress, streamed before the tokens
        assert "uses untrained placeholder models" in text

        text = first.send("/history")
        assert re.search(r"#0 \[\w+\] what colour is the circle\? -> .* \(vision encoded, ", text), text

        text = first.send(f"/image {blue}")
        assert f"image {blue} (160x120): the next question is about it" in text
        text = first.send("/route bridge")
        text = first.send("what shape is it?")
        routes = _routes(text)
        assert len(routes) == 2 and routes[-1] == ("bridge", "bridge: requested by the caller"), routes
        text = first.send("and what colour is it?")
        assert len(_routes(text)) == 3
        assert _last_route_line(text).endswith("vision reused · 1 earlier turn(s)"), text

        text = first.send("/mark rectangle:30,30,110,90:green")
        assert "mark 0 for the next question" in text
        text = first.send("what is this?")
        assert len(_routes(text)) == 4 and "asked: " in text

        text = first.send("/history")
        history = text[text.rindex(f"{PROMPT}/history"):]
        assert len(re.findall(r"^  #\d \[", history, re.M)) == 4, history
        assert "#2 [bridge] and what colour is it? -> " in history and "(vision reused, " in history
        assert "(vision encoded, 1 mark(s), " in history

        text = first.send("/thread")
        assert f"thread {thread}: 4 turn(s)" in text
        assert f"vqagraph chat --thread {thread}" in text and f"vqagraph ask --thread {thread}" in text

        first.tmux("send-keys", "-t", first.name, "-l", "/quit")
        first.tmux("send-keys", "-t", first.name, "Enter")
        text = first.wait(lambda t: "[exited " in t, "the end of the session")
        assert "[exited 0]" in text and f"bye; continue this thread with: vqagraph chat --thread {thread}" in text

        # Another process continues the thread: `ask --thread` once the main CLI has it, then a second chat.
        expected = 4
        if ask_thread:
            done = subprocess.run([sys.executable, "-m", "vqagraph", "ask", "--thread", thread, "--profile",
                                   str(profile), "is it big?"], capture_output=True, text=True, timeout=300,
                                  cwd=tmp_path, env={**os.environ, **environ})
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("answer: ") and f"thread: {thread} (turn 5)" in done.stderr
            expected = 5
        second = Pane(socket, command("--thread", thread, "--profile", str(profile)))
        text = second.settle(timeout=240)
        assert f"thread {thread}: {expected} turn(s)" in text  # nothing about images given: the thread has one
        text = second.send("/history")
        assert len(re.findall(r"^  #\d \[", text, re.M)) == expected
        assert "#0 [" in text and "what colour is the circle?" in text
        assert not ask_thread or ("#4 [" in text and "is it big?" in text)
        text = second.send("how big is it?", timeout=240)  # about the thread's image, from the store's folder
        assert len(_routes(text)) == 1
        # A new process: the image is read back from the store's folder and encoded; the turns on it are history.
        assert _last_route_line(text).endswith(f"vision encoded · {expected - 1} earlier turn(s)"), text
        text = second.send("/thread")
        assert f"thread {thread}: {expected + 1} turn(s)" in text
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True, timeout=30)
