"""Multi-turn conversations: history reaches the LLM through both routes, features are reused, threads persist
across processes (SQLite, Postgres), and a broken store is a clear error."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from vqagraph import Engine
from vqagraph.engine.threads import ThreadAccessError, ThreadStore, ThreadStoreError
from vqagraph.request import AskRequest

PROFILE = {"llm": {"id": "builtin:tiny-llama"}, "qformer": {"id": "builtin:tiny-blip2"}}


def scene(colour: str, marker: int) -> Image.Image:
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=colour)
    image.putpixel((159, 119), (marker, marker, marker))  # a picture no other test uses
    return image


@pytest.fixture
def engine(model_cache: Path, tmp_path: Path) -> Engine:  # type: ignore[override]
    built = Engine.from_profile("tiny", **PROFILE)  # type: ignore[arg-type]
    yield built  # type: ignore[misc]
    built.close()


def test_text_route_prompt_carries_earlier_turns(engine: Engine, tmp_path: Path) -> None:
    chat = engine.conversation(store=str(tmp_path / "threads.sqlite"))
    sent: list[str] = []
    real = engine.tools.llm.generate
    engine.tools.llm.generate = lambda prompts, *a, **k: sent.extend(prompts) or real(prompts, *a, **k)  # type: ignore[method-assign]
    first = chat.ask("What colour is the circle?", image=scene("red", 1), route="img2llm")
    second = chat.ask("and what is left of it?", route="img2llm")
    earlier = f"Question:What colour is the circle?\nAnswer:{first.answer}\nQuestion:and what is left of it?\nAnswer:"
    assert sent[-1] == second.trace.img2llm["prompt"] and earlier in sent[-1]
    assert second.trace.img2llm["prompt_stats"]["history_turns"] == 1
    # GradCAM read a standalone question; the LLM the question as asked, after the earlier turn.
    assert second.trace.standalone_question == "What is left of the circle?"
    # the second turn reused the features
    assert first.trace.img2llm["image_encoded"] and not second.trace.img2llm["image_encoded"]
    turns = chat.history()
    assert [t.question for t in turns] == ["What colour is the circle?", "and what is left of it?"]
    assert turns[0].vision_encoded and not turns[1].vision_encoded and turns[1].history_turns == 1


def test_bridge_embeds_earlier_turns_as_blip2_does(engine: Engine) -> None:
    chat = engine.conversation(store="memory")
    shapes: list[int] = []
    real = engine.tools.llm.generate_from_embeddings

    def spy(embeds, *args, **kwargs):  # type: ignore[no-untyped-def]
        shapes.extend(e.shape[0] for e in embeds)
        return real(embeds, *args, **kwargs)

    engine.tools.llm.generate_from_embeddings = spy  # type: ignore[method-assign]
    first = chat.ask("What colour is the circle?", image=scene("blue", 2), route="bridge")
    second = chat.ask("Is it big?", route="bridge")
    assert second.trace.bridge["prompt"] == (f"Question: What colour is the circle? Answer: {first.answer}. "
                                          "Question: Is it big? Answer:")
    # what was embedded: the queries, then exactly that text's tokens
    assert shapes[-1] == second.trace.bridge["query_tokens"] + second.trace.bridge["prompt_tokens"]
    assert first.trace.bridge["image_encoded"] and not second.trace.bridge["image_encoded"]
    assert second.trace.standalone_question == "Is the circle big?"


def test_a_new_image_starts_a_new_history(engine: Engine) -> None:
    chat = engine.conversation(store="memory")
    chat.ask("What colour is the circle?", image=scene("red", 3), route="bridge")
    moved = chat.ask("What colour is the circle?", image=scene("green", 4), route="bridge")
    again = chat.ask("Is it small?", route="bridge")
    assert moved.trace.history_turns == 0 and again.trace.history_turns == 1
    assert chat.image_ref == moved.image_ref != chat.history()[0].image_ref


def test_stream_yields_nodes_tokens_then_the_answer(engine: Engine) -> None:
    chat = engine.conversation(store="memory")
    events = list(chat.stream("What colour is the circle?", image=scene("red", 5), route="bridge"))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "answer" and "token" in kinds
    nodes = [value for kind, value in events if kind == "node"]
    assert {"qformer_encode", "bridge_answer", "pick_answer", "turn"} <= set(nodes)
    answer = events[-1][1]
    assert "".join(value for kind, value in events if kind == "token").strip() == answer.trace.raw_answer.strip()


CONTINUE = textwrap.dedent("""
    import json, sys
    from vqagraph import Engine
    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, qformer={"id": "builtin:tiny-blip2"})
    chat = engine.conversation(sys.argv[1], store=sys.argv[2])
    for question in sys.argv[3:]:
        chat.ask(question, route="bridge")
    print(json.dumps([t.question for t in chat.history()]))
    engine.close()
""")


def run_turns(thread: str, store: str, *questions: str) -> subprocess.Popen[str]:
    env = dict(os.environ)  # the same VQAGRAPH_DATA (conftest): a Postgres thread's images are found there
    return subprocess.Popen([sys.executable, "-c", CONTINUE, thread, store, *questions], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_another_process_continues_the_thread_and_two_write_at_once(engine: Engine, tmp_path: Path) -> None:
    store = str(tmp_path / "threads.sqlite")
    for thread in ("t-a", "t-b"):
        engine.conversation(thread, store=store).ask("What colour is the circle?", image=scene("red", 6),
                                                     route="bridge")
    engine.close()
    # Two processes write two threads of the same file at the same time; neither loses a turn.
    procs = [run_turns(t, store, "Is it big?", "Where is it?") for t in ("t-a", "t-b")]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == ["What colour is the circle?", "Is it big?", "Where is it?"]
    reopened = Engine.from_profile("tiny", **PROFILE)  # type: ignore[arg-type]
    for thread in ("t-a", "t-b"):
        assert len(reopened.conversation(thread, store=store).history()) == 3
    reopened.close()


def test_corrupt_and_locked_databases_are_clear_errors(engine: Engine, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ThreadStoreError, match="corrupt or locked"):
        ThreadStore(str(corrupt))
    path = tmp_path / "locked.sqlite"
    store = ThreadStore(str(path), timeout=0.2)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        from vqagraph.engine.conversation import Conversation

        chat = Conversation(engine, store, "locked")
        with pytest.raises(ThreadStoreError, match="unavailable") as raised:
            chat.ask("What colour is the circle?", image=scene("red", 7), route="bridge")
        assert str(path) not in str(raised.value)  # a client may read it: the path goes to the log only
    finally:
        holder.rollback()
        holder.close()
        store.close()


def test_a_thread_without_an_image_says_so(engine: Engine) -> None:
    from vqagraph.errors import ImageError

    with pytest.raises(ImageError, match="no image yet"):
        engine.conversation(store="memory").ask("What is it?")


@pytest.mark.skipif(not os.environ.get("VQAGRAPH_TEST_POSTGRES_URL") and not os.environ.get("CI"),
                    reason="set VQAGRAPH_TEST_POSTGRES_URL (.ci/run starts a Postgres server and sets it; under CI "
                    "a missing URL fails instead)")
def test_postgres_thread_continued_by_another_process(engine: Engine, tmp_path: Path) -> None:
    url = os.environ["VQAGRAPH_TEST_POSTGRES_URL"]
    thread = f"pg-{os.getpid()}"
    engine.conversation(thread, store=url).ask("What colour is the circle?", image=scene("red", 8), route="bridge")
    engine.close()
    proc = run_turns(thread, url, "Is it big?")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == ["What colour is the circle?", "Is it big?"]


def test_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(ThreadStoreError, match="cannot use the Postgres thread store"):
        ThreadStore("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")


def stores(tmp_path: Path) -> list[str]:
    urls = ["memory", str(tmp_path / "catalogue.sqlite")]
    if os.environ.get("VQAGRAPH_TEST_POSTGRES_URL"):
        urls.append(os.environ["VQAGRAPH_TEST_POSTGRES_URL"])
    return urls


def test_thread_catalogue_lists_renames_deletes_and_keeps_owners_apart(engine: Engine, tmp_path: Path) -> None:
    """The thread list the web page shows: titled by the first question, most recent first, one owner's only."""
    for url in stores(tmp_path):
        suffix = f"{os.getpid()}-{len(url)}"
        first, second = f"cat-a-{suffix}", f"cat-b-{suffix}"
        engine.conversation(first, store=url).answer(AskRequest(
            question="What colour is the circle?", image=scene("red", 9), route="bridge", owner="alice"))
        engine.conversation(first, store=url).answer(AskRequest(question="Is it big?", route="bridge", owner="alice"))
        engine.conversation(second, store=url).answer(AskRequest(
            question="What shape is it?", image=scene("blue", 10), route="bridge", owner="bob"))
        store = engine.thread_store(url)
        mine = [t for t in store.threads("alice") if t.thread_id.endswith(suffix)]
        assert [(t.thread_id, t.title, t.turns) for t in mine] == [(first, "What colour is the circle?", 2)]
        assert second not in [t.thread_id for t in store.threads("alice")]
        # Another owner can neither continue, read, rename nor delete it; the error does not say it exists.
        with pytest.raises(ThreadAccessError, match="no thread"):
            engine.conversation(first, store=url).answer(AskRequest(question="and?", route="bridge", owner="bob"))
        with pytest.raises(ThreadAccessError):
            store.thread(first, "bob")
        with pytest.raises(ThreadAccessError):
            store.rename(first, "bob", "x")
        with pytest.raises(ThreadAccessError):
            store.delete(first, "bob")
        assert store.rename(first, "alice", "  Red   circle ").title == "Red circle"
        store.delete(first, "alice")
        assert first not in [t.thread_id for t in store.threads("alice")]
        assert engine.conversation(first, store=url).history() == []  # its checkpoints are gone too


def test_kept_answers_and_uploads_belong_to_their_owner_and_the_oldest_go(engine: Engine, tmp_path: Path) -> None:
    """What any replica on a store reads back: an answer kept by id (its explain picture's trace) for its owner
    only, at most `max_answers` of them; who uploaded which image; and, for Postgres, the image itself."""
    answer = engine.answer(AskRequest(question="What colour is the circle?", image=scene("red", 11), route="bridge"))
    for url in stores(tmp_path):
        store = ThreadStore(url, images=None if url.startswith("postgres") else tmp_path / "images")
        try:
            prefix = f"kept-{os.getpid()}-{len(url)}"
            alice = f"alice-{prefix}"  # a Postgres store outlives the test run
            store.keep_answer(f"{prefix}-0", alice, answer)
            assert store.kept_answer(f"{prefix}-0", alice) == answer  # the whole trace, as it was
            with pytest.raises(ThreadAccessError):
                store.kept_answer(f"{prefix}-0", "bob")
            with pytest.raises(ThreadAccessError):
                store.kept_answer(f"{prefix}-unknown", alice)
            store.max_answers = 2
            for n in (1, 2):
                store.keep_answer(f"{prefix}-{n}", alice, answer)
            with pytest.raises(ThreadAccessError):
                store.kept_answer(f"{prefix}-0", alice)  # the oldest went
            assert store.kept_answer(f"{prefix}-2", alice).answer == answer.answer

            ref = answer.image_ref
            assert not store.uploaded(alice, ref)
            store.record_upload(alice, ref)
            store.record_upload(alice, ref)  # again: still one
            assert store.uploaded(alice, ref) and not store.uploaded("bob", ref)

            picture = engine.tools.images.get(ref)
            png = io.BytesIO()
            picture.save(png, format="PNG")
            store.images.write(ref, png.getvalue())
            store.images.write(ref, png.getvalue())  # written once
            assert store.images.has(ref) and store.images.read(ref) == png.getvalue()
            assert store.images.read("sha256:" + "0" * 64) is None
        finally:
            store.close()
