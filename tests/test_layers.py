"""The house's shape: layers that only point down, the lab apart, no import circles, one lock per thread."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grimp
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """`.importlinter`'s layers and the forbidden lab, as CI runs them (`lint-imports`)."""
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_no_import_circles() -> None:
    """No two modules import each other, directly or around a loop, counting imports inside functions and those
    made only for type checking: a circle there still ties two modules' designs together."""
    graph = grimp.build_graph("vqagraph", include_external_packages=False, exclude_type_checking_imports=False,
                              cache_dir=None)
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(imported, module):
                circles.append((module, imported))
    assert circles == []


def test_one_lock_per_thread_shared_by_front_ends(model_cache: Path) -> None:
    """Questions run concurrently (the toolkit batches their model calls), but the turns of one conversation thread
    never interleave: every front end takes the engine's one lock for that thread."""
    from vqagraph import Engine

    engine = Engine.from_profile("tiny")
    lock = engine.thread_lock("t1")
    assert engine.thread_lock("t1") is lock and engine.thread_lock("t2") is not lock
    image = Image.new("RGB", (64, 48), "red")
    chat = engine.conversation("t1", store="memory")
    chat.ask("What colour is it?", image=image, route="bridge")
    asked = threading.Event()
    lock.acquire()  # held here, the thread's lock keeps a second front end's turn waiting
    try:
        from vqagraph.request import AskRequest

        worker = threading.Thread(target=lambda: (engine.answer(AskRequest(question="And now?", thread="t1",
                                                                           store="memory", route="bridge")),
                                                  asked.set()))
        worker.start()
        assert not asked.wait(1.0)
        other = engine.answer(AskRequest(question="What is it?", image=image, route="bridge"))  # not a thread: free
        assert other.answer is not None
    finally:
        lock.release()
    worker.join(60)
    assert asked.is_set() and len(chat.history()) == 2

