"""The house's shape: layers that only point down, the lab apart, no import circles, one lock per engine."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """`.importlinter`'s layers and the forbidden lab, as CI runs them (`lint-imports`)."""
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_no_import_circles() -> None:
    """No two modules import each other, directly or around a loop (imports for type checking aside)."""
    graph = grimp.build_graph("vqagraph", include_external_packages=False, exclude_type_checking_imports=True,
                              cache_dir=None)
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(imported, module):
                circles.append((module, imported))
    assert circles == []


def test_one_lock_per_engine_shared_by_front_ends(model_cache: Path) -> None:
    """Every front end serialises on the engine's own lock: two of them in one process never ask at once."""
    from vqagraph import Engine
    from vqagraph.agents.langchain_tool import VisualQuestionTool
    from vqagraph.agents.mcp_server import build_server
    from vqagraph.agents.openai_server import create_app

    engine = Engine.from_profile("tiny")
    server = create_app(engine).state.vqagraph
    assert isinstance(engine.lock, type(threading.RLock()))
    assert server.lock is engine.lock
    build_server(engine)  # the MCP server's tools take the same lock (checked by holding it below)
    tool = VisualQuestionTool(engine=engine)
    # Held here, the engine's lock keeps the LangChain tool from asking: a second front end waits on it.
    asked = threading.Event()
    engine.lock.acquire()
    try:
        worker = threading.Thread(target=lambda: (tool.invoke({"question": "What is it?", "image": None}),
                                                  asked.set()))
        worker.start()
        assert not asked.wait(1.0)
    finally:
        engine.lock.release()
    worker.join(60)
    assert asked.is_set()
