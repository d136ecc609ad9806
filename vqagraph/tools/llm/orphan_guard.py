"""`python -I orphan_guard.py --parent PID [--grace S] -- COMMAND…`: runs COMMAND in the guard's
own process group and ends that whole group when process PID dies, however it died.

A vLLM server is a process group (its API server, EngineCore, workers). Its starter stops it with `stop()`, and a
watcher ends the group when the API server dies on its own; but when the starter itself is killed (SIGKILL, the
OOM killer) nothing of it runs any more, and the group would live on, holding the port and the memory. Linux's
`PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process, and reaches only the
direct child; so the guard, the group's leader, polls its parent instead: when it is no longer PID, the guard
sends the group SIGTERM, then SIGKILL after `--grace` seconds. When COMMAND exits, the guard exits as it did
(killed by the same signal, or with the same status), so the starter sees COMMAND's fate. It imports the standard
library only: `tools/llm/vllm_server.py` runs it as a script, in isolated mode.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.5


def _end_group(grace: float, child: subprocess.Popen[bytes]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the guard stays to finish the job; COMMAND was started before
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)  # what is left, the guard included


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orphan_guard", description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=int, required=True, help="the process whose death ends the group")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS…]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    if os.getppid() != args.parent:  # the starter died before the guard ran: start nothing
        return 1
    child = subprocess.Popen(command)  # in the guard's group: the starter made the guard a session leader
    while child.poll() is None:
        if os.getppid() != args.parent:
            _end_group(args.grace, child)
        time.sleep(POLL_SECONDS)
    if child.returncode < 0:  # killed by a signal: so is the guard, for the starter to read
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            signal.signal(-child.returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -child.returncode)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
