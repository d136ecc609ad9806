"""Where conversation threads live: a LangGraph checkpointer chosen by URL.

- nothing / a file path / `sqlite:///path`: SQLite (embedded; the default file is under the user's data
  directory, `VQAGRAPH_DATA` overrides it), in WAL mode so several processes can write different threads;
- `postgresql://…`: `PostgresSaver` (`pip install 'vqagraph[postgres]'`);
- `memory`: `InMemorySaver`, for tests and throwaway sessions.
Images never go into checkpoints: they are written, content-addressed, next to the SQLite file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from vqagraph.errors import VQAGraphError


class ThreadStoreError(VQAGraphError):
    """The thread store cannot be opened or written: a corrupt or locked database, an unreachable server."""


def data_root() -> Path:
    """vqagraph's data directory (threads, their images); `VQAGRAPH_DATA` overrides it."""
    return Path(os.environ.get("VQAGRAPH_DATA") or user_data_dir("vqagraph"))


def default_store_url() -> str:
    return str(data_root() / "threads.sqlite")


class ThreadStore(AbstractContextManager["ThreadStore"]):
    """An open checkpointer plus the folder for its images; close it (or use `with`) to release the database."""

    def __init__(self, url: str | None = None, images: str | Path | None = None, timeout: float = 30.0) -> None:
        self.url = url or default_store_url()
        self.timeout = timeout
        self._stack = ExitStack()
        self.kind, self.saver = self._open(self.url)
        if images is not None:
            self.images = Path(images)
        elif self.kind == "sqlite":
            self.images = Path(self._sqlite_path(self.url)).parent / "images"
        else:
            self.images = data_root() / "images"

    @staticmethod
    def _sqlite_path(url: str) -> str:
        return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url

    def _open(self, url: str) -> tuple[str, Any]:
        if url == "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            return "memory", InMemorySaver()
        if url.startswith(("postgres://", "postgresql://")):
            return "postgres", self._open_postgres(url)
        return "sqlite", self._open_sqlite(Path(self._sqlite_path(url)).expanduser())

    def _open_sqlite(self, path: Path) -> Any:
        from langgraph.checkpoint.sqlite import SqliteSaver

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, timeout=self.timeout)
            self._stack.callback(conn.close)
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the one writer; other processes wait
            saver = SqliteSaver(conn)
            saver.setup()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ThreadStoreError(f"cannot use the thread database {path}: {exc} (a corrupt or locked file? "
                                   "move it away or pass another --store)") from exc
        except OSError as exc:
            raise ThreadStoreError(f"cannot create the thread database {path}: {exc}") from exc
        return saver

    def _open_postgres(self, url: str) -> Any:
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
        except ImportError as exc:
            raise ThreadStoreError("a Postgres thread store needs `pip install 'vqagraph[postgres]'`") from exc
        import psycopg

        try:
            saver = self._stack.enter_context(PostgresSaver.from_conn_string(url))
            saver.setup()
        except psycopg.Error as exc:
            self.close()
            raise ThreadStoreError(f"cannot use the Postgres thread store: {str(exc).strip().splitlines()[0]}") \
                from exc
        return saver

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Database failures during a turn (locked, corrupt, connection lost) become a `ThreadStoreError`."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise ThreadStoreError(f"the thread database {self.url} is unavailable: {exc} (another process holding "
                                   "it locked too long?)") from exc
        except sqlite3.DatabaseError as exc:
            raise ThreadStoreError(f"the thread database {self.url} is damaged: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                raise ThreadStoreError(f"the Postgres thread store failed: {str(exc).strip()[:200]}") from exc
            raise

    def close(self) -> None:
        self._stack.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
