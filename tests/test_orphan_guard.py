"""The orphan guard (tools/llm/orphan_guard.py) that leads a vLLM server's process group: the group ends when its
starter dies by SIGKILL, grandchildren and a child that ignores SIGTERM included, and the guard exits as its
command did. tests/test_lifecycle.py kills a real `vqagraph llm serve` the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vqagraph.tools.llm.vllm_server import group_members, start_guarded

# A command with a grandchild, that ignores SIGTERM (a wedged server): only the SIGKILL after the grace ends it.
STUBBORN = ("import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen(['sleep', '300']); time.sleep(300)")
STARTER = """
import subprocess, sys, time
from vqagraph.tools.llm.vllm_server import start_guarded
guard = start_guarded([sys.executable, "-c", sys.argv[1]], stdout=subprocess.DEVNULL, env=None, grace=1.0)
print(guard.pid, flush=True)
time.sleep(300)
"""
ROOT = Path(__file__).resolve().parents[1]


def _wait(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_the_group_ends_when_its_starter_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    starter = subprocess.Popen([sys.executable, "-c", STARTER, STUBBORN], stdout=subprocess.PIPE, text=True, env=env)
    pgid = 0
    try:
        assert starter.stdout is not None
        pgid = int(starter.stdout.readline())
        assert os.getpgid(pgid) == pgid  # the guard leads a group of its own
        assert _wait(lambda: len(group_members(pgid)) >= 3, 30)  # the guard, the command, its grandchild
        starter.kill()  # no handler of the starter runs
        starter.wait(10)
        assert _wait(lambda: not group_members(pgid), 15), group_members(pgid)
    finally:
        if starter.poll() is None:
            starter.kill()
        if pgid and group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_the_guard_exits_as_its_command_did() -> None:
    killed = start_guarded([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                           stdout=subprocess.DEVNULL, env=dict(os.environ))
    assert killed.wait(30) == -signal.SIGKILL  # so its starter can say "killed by SIGKILL"
    failed = start_guarded([sys.executable, "-c", "raise SystemExit(3)"], stdout=subprocess.DEVNULL,
                           env=dict(os.environ))
    assert failed.wait(30) == 3
