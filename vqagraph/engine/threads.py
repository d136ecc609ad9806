"""Where conversation threads live: a LangGraph checkpointer chosen by URL.

- nothing / a file path / `sqlite:///path`: SQLite (embedded; the default file is under the user's data
  directory, `VQAGRAPH_DATA` overrides it), in WAL mode so several processes can write different threads;
- `postgresql://…`: `PostgresSaver` (`pip install 'vqagraph[postgres]'`);
- `memory`: `InMemorySaver`, for tests and throwaway sessions.
Images never go into checkpoints: they are written, content-addressed, next to the SQLite file (a Postgres store
keeps them in a table of its own, so every replica that shares the store reads them).

Beside the checkpoints, the same database keeps a small catalogue of threads (`vqagraph_threads`: title, owner,
turn count, times), so a thread list, a rename or a delete never scans checkpoints; the recent answers by id (what
an explain picture is rebuilt from, by any replica) and the images each owner uploaded. A thread's owner is an opaque
string (the servers use a hash of the API key that started it); a thread is answered and listed only for it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir
from pydantic import BaseModel

from vqagraph.answer import Answer
from vqagraph.errors import VQAGraphError
from vqagraph.media import FolderShelf, ImageShelf

log = logging.getLogger("vqagraph.threads")


class ThreadStoreError(VQAGraphError):
    """The thread store cannot be opened or written: a corrupt or locked database, an unreachable server."""


class ThreadAccessError(VQAGraphError):
    """A thread does not exist for this caller: unknown, or started by another owner (the two look the same, so
    an id cannot be probed)."""


TITLE_CHARS = 80  # a thread's title: its first question, cut to this many characters, until renamed

CATALOGUE = """CREATE TABLE IF NOT EXISTS vqagraph_threads (
    thread_id TEXT PRIMARY KEY, title TEXT NOT NULL, owner TEXT NOT NULL, created TEXT NOT NULL,
    updated TEXT NOT NULL, turns INTEGER NOT NULL)"""
# Recent answers by id, each with its owner: an explain picture is rebuilt from one by whichever process asks.
ANSWERS = """CREATE TABLE IF NOT EXISTS vqagraph_answers (
    answer_id TEXT PRIMARY KEY, owner TEXT NOT NULL, created TEXT NOT NULL, answer TEXT NOT NULL)"""
ANSWERS_BY_AGE = "CREATE INDEX IF NOT EXISTS vqagraph_answers_created ON vqagraph_answers (created)"
# Which owner uploaded which image (POST /v1/images): a reference answers only the key that uploaded it.
UPLOADS = """CREATE TABLE IF NOT EXISTS vqagraph_uploads (
    owner TEXT NOT NULL, image_ref TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (owner, image_ref))"""
# A Postgres store's images (PNG bytes by reference): replicas on other machines share no folder.
IMAGES = """CREATE TABLE IF NOT EXISTS vqagraph_images (
    image_ref TEXT PRIMARY KEY, png BYTEA NOT NULL, created TEXT NOT NULL)"""
MAX_ANSWERS = 1_000  # answers kept per store for explain pictures (a text-route trace is tens of KB); the oldest go


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class ThreadInfo(BaseModel):
    """A thread as the thread list shows it."""

    thread_id: str
    title: str
    created: str
    updated: str
    turns: int


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
        self.images: ImageShelf
        if images is not None:
            self.images = FolderShelf(images)
        elif self.kind == "sqlite":
            self.images = FolderShelf(Path(self._sqlite_path(self.url)).parent / "images")
        elif self.kind == "postgres":
            self.images = DatabaseShelf(self)
        else:
            self.images = FolderShelf(data_root() / "images")
        self.max_answers = MAX_ANSWERS
        self._catalogue_lock = threading.Lock()
        self._memory_catalogue: sqlite3.Connection | None = None
        with self.guard():
            for table in (CATALOGUE, ANSWERS, ANSWERS_BY_AGE, UPLOADS, *([IMAGES] if self.kind == "postgres" else [])):
                self._sql(table)

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

    # -- the thread catalogue

    def _sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the catalogue (the checkpointer's own database; SQL with `?` placeholders)."""
        if self.kind == "postgres":
            with self.saver.lock, self.saver.conn.cursor() as cur:
                cur.execute(query.replace("?", "%s"), params)
                rows = cur.fetchall() if cur.description else []
            return [tuple(r.values()) if isinstance(r, dict) else tuple(r) for r in rows]
        if self.kind == "memory":
            if self._memory_catalogue is None:
                self._memory_catalogue = sqlite3.connect(":memory:", check_same_thread=False)
                self._stack.callback(self._memory_catalogue.close)
            conn, lock = self._memory_catalogue, self._catalogue_lock
        else:
            conn, lock = self.saver.conn, self.saver.lock
        with lock, conn:
            return conn.execute(query, params).fetchall()

    def _has_checkpoints(self, thread_id: str) -> bool:
        return self.saver.get_tuple({"configurable": {"thread_id": thread_id}}) is not None

    def check_owner(self, thread_id: str, owner: str) -> None:
        """Refuse a thread started by another owner. A thread the catalogue does not know is new (or older than
        the catalogue, and then open to callers without an owner only)."""
        with self.guard():
            rows = self._sql("SELECT owner FROM vqagraph_threads WHERE thread_id = ?", (thread_id,))
            if rows and rows[0][0] == owner:
                return
            if not rows and (owner == "" or not self._has_checkpoints(thread_id)):
                return
        raise ThreadAccessError(f"no thread {thread_id!r} here")

    def record_turn(self, thread_id: str, owner: str, question: str) -> None:
        """Count a finished turn in the catalogue (the first one names the thread after its question)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        title = question if len(question) <= TITLE_CHARS else question[:TITLE_CHARS - 1] + "…"
        with self.guard():
            self._sql("INSERT INTO vqagraph_threads (thread_id, title, owner, created, updated, turns) "
                      "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (thread_id) DO UPDATE SET updated = excluded.updated, "
                      "turns = vqagraph_threads.turns + 1", (thread_id, title, owner, now, now))

    def threads(self, owner: str, limit: int = 200) -> list[ThreadInfo]:
        """The owner's threads, the most recently used first."""
        with self.guard():
            rows = self._sql("SELECT thread_id, title, created, updated, turns FROM vqagraph_threads WHERE owner = ? "
                             "ORDER BY updated DESC, thread_id LIMIT ?", (owner, limit))
        return [ThreadInfo(thread_id=r[0], title=r[1], created=r[2], updated=r[3], turns=r[4]) for r in rows]

    def thread(self, thread_id: str, owner: str) -> ThreadInfo:
        """One of the owner's threads (ThreadAccessError when it is not one)."""
        with self.guard():
            rows = self._sql("SELECT thread_id, title, created, updated, turns FROM vqagraph_threads "
                             "WHERE thread_id = ? AND owner = ?", (thread_id, owner))
        if not rows:
            raise ThreadAccessError(f"no thread {thread_id!r} here")
        r = rows[0]
        return ThreadInfo(thread_id=r[0], title=r[1], created=r[2], updated=r[3], turns=r[4])

    def rename(self, thread_id: str, owner: str, title: str) -> ThreadInfo:
        title = " ".join(title.split())[:TITLE_CHARS]
        if not title:
            raise VQAGraphError("a thread's title cannot be empty")
        self.thread(thread_id, owner)
        with self.guard():
            self._sql("UPDATE vqagraph_threads SET title = ? WHERE thread_id = ?", (title, thread_id))
        return self.thread(thread_id, owner)

    def delete(self, thread_id: str, owner: str) -> None:
        """Forget a thread: its checkpoints and its catalogue entry (its images stay: others may share them)."""
        self.thread(thread_id, owner)
        with self.guard():
            self.saver.delete_thread(thread_id)
            self._sql("DELETE FROM vqagraph_threads WHERE thread_id = ?", (thread_id,))

    # -- recent answers and uploads, shared by every process on this store

    def keep_answer(self, answer_id: str, owner: str, answer: Answer) -> None:
        """Keep an answer (its trace) by id for its owner, so any replica can rebuild its explain picture; the
        oldest beyond `max_answers` go."""
        with self.guard():
            self._sql("INSERT INTO vqagraph_answers (answer_id, owner, created, answer) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (answer_id) DO NOTHING", (answer_id, owner, timestamp(), answer.model_dump_json()))
            self._sql("DELETE FROM vqagraph_answers WHERE created < (SELECT created FROM vqagraph_answers "
                      "ORDER BY created DESC LIMIT 1 OFFSET ?)", (self.max_answers - 1,))

    def kept_answer(self, answer_id: str, owner: str) -> Answer:
        """A kept answer of this owner's (ThreadAccessError when unknown, gone, or another owner's: alike)."""
        with self.guard():
            rows = self._sql("SELECT answer FROM vqagraph_answers WHERE answer_id = ? AND owner = ?",
                             (answer_id, owner))
        if not rows:
            raise ThreadAccessError(f"no answer {answer_id!r} here")
        return Answer.model_validate_json(rows[0][0])

    def record_upload(self, owner: str, ref: str) -> None:
        """Note that `owner` uploaded the image `ref` (its pixels go to `images`)."""
        with self.guard():
            self._sql("INSERT INTO vqagraph_uploads (owner, image_ref, created) VALUES (?, ?, ?) "
                      "ON CONFLICT (owner, image_ref) DO UPDATE SET created = excluded.created",
                      (owner, ref, timestamp()))

    def uploaded(self, owner: str, ref: str) -> bool:
        with self.guard():
            return bool(self._sql("SELECT 1 FROM vqagraph_uploads WHERE owner = ? AND image_ref = ?", (owner, ref)))

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Database failures during a turn (locked, corrupt, connection lost) become a `ThreadStoreError`; its
        message names no path or server (clients may read it), the log has the details."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            log.error("thread database %s: %s", self.url, exc)
            raise ThreadStoreError("the thread database is unavailable (held locked too long by another process?)") \
                from exc
        except sqlite3.DatabaseError as exc:
            log.error("thread database %s: %s", self.url, exc)
            raise ThreadStoreError("the thread database is damaged") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                log.error("Postgres thread store: %s", exc)
                raise ThreadStoreError("the Postgres thread store failed (connection lost?)") from exc
            raise

    def close(self) -> None:
        self._stack.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


class DatabaseShelf:
    """A Postgres thread store's images, in its `vqagraph_images` table: every replica on the store reads them."""

    def __init__(self, store: ThreadStore) -> None:
        self.store = store

    def has(self, ref: str) -> bool:
        with self.store.guard():
            return bool(self.store._sql("SELECT 1 FROM vqagraph_images WHERE image_ref = ?", (ref,)))

    def read(self, ref: str) -> bytes | None:
        with self.store.guard():
            rows = self.store._sql("SELECT png FROM vqagraph_images WHERE image_ref = ?", (ref,))
        return bytes(rows[0][0]) if rows else None

    def write(self, ref: str, png: bytes) -> None:
        with self.store.guard():
            self.store._sql("INSERT INTO vqagraph_images (image_ref, png, created) VALUES (?, ?, ?) "
                            "ON CONFLICT (image_ref) DO NOTHING", (ref, png, timestamp()))
