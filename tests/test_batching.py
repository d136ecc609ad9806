"""Many questions at once: the batcher, batched answers equal to answers one by one, the resumable batch command,
and the server that batches concurrent requests (429 past its bound, Prometheus metrics)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from vqagraph.answer import Answer
from vqagraph.errors import QuestionError, VQAGraphError
from vqagraph.request import AskRequest
from vqagraph.tools.batching import Batcher, InFlight
from vqagraph.tools.llm.base import GenerationParams

# --- the batcher ---------------------------------------------------------------------------------------------


def test_concurrent_calls_become_one_batch_and_each_caller_gets_its_own_result() -> None:
    seen: list[list[int]] = []
    in_flight = InFlight()
    batcher: Batcher[int, int] = Batcher(lambda xs: (seen.append(list(xs)), [x * 10 for x in xs])[1],
                                         window=5.0, in_flight=in_flight)
    results: dict[int, int] = {}
    entered = threading.Barrier(4)

    def ask(x: int) -> None:
        with in_flight:
            entered.wait()  # all four count as in flight before any asks: the batch waits for all of them
            results[x] = batcher(x)

    threads = [threading.Thread(target=ask, args=(x,)) for x in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}
    assert [sorted(b) for b in seen] == [[0, 1, 2, 3]]  # one batch, not four
    assert batcher.stats.window_ran_out == 0  # it went as soon as every question in flight was waiting


def test_keys_keep_batches_apart_and_a_bad_item_fails_only_itself() -> None:
    seen: list[list[str]] = []

    def run(xs: list[str]) -> list[str]:
        seen.append(list(xs))
        if "bad" in xs:
            raise ValueError("bad input")
        return [x.upper() for x in xs]

    batcher: Batcher[str, str] = Batcher(run, key=lambda x: x[0])
    assert batcher.map(["ab", "ac", "bd"]) == ["AB", "AC", "BD"]
    assert seen == [["ab", "ac"], ["bd"]]  # one batch per key
    seen.clear()
    with pytest.raises(ValueError, match="bad input"):
        batcher.map(["bad", "bat"])
    assert batcher.map(["bat"]) == ["BAT"]
    assert seen[:3] == [["bad", "bat"], ["bad"], ["bat"]]  # the failed batch, then each alone


def test_a_lone_call_does_not_wait_for_the_window() -> None:
    batcher: Batcher[int, int] = Batcher(lambda xs: xs, window=600.0, in_flight=InFlight())
    with batcher.in_flight:  # type: ignore[union-attr]
        assert batcher(7) == 7
    assert batcher.stats.window_ran_out == 0


def test_a_question_still_on_its_way_joins_the_batch() -> None:
    """In flight but not yet at the stage (reading its image): the batch waits for it, within the window."""
    seen: list[list[str]] = []
    in_flight = InFlight()
    batcher: Batcher[str, str] = Batcher(lambda xs: (seen.append(list(xs)), xs)[1], window=600.0,
                                         in_flight=in_flight)
    both_in = threading.Barrier(2)

    def ask(name: str, delay: float) -> None:
        with in_flight:
            both_in.wait()
            time.sleep(delay)  # its own work before the stage
            batcher(name)

    threads = [threading.Thread(target=ask, args=("fast", 0.0)), threading.Thread(target=ask, args=("slow", 0.3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [sorted(b) for b in seen] == [["fast", "slow"]]
    assert batcher.stats.window_ran_out == 0  # it went when the slow one came, not at the window's end


def test_a_question_waiting_at_another_stage_does_not_hold_a_batch() -> None:
    """The other question in flight is blocked in another stage's batch: nobody is on the way, so go now."""
    in_flight = InFlight()
    release = threading.Event()
    other: Batcher[int, int] = Batcher(lambda xs: (release.wait(120), xs)[1], window=600.0, in_flight=in_flight)
    here: Batcher[int, int] = Batcher(lambda xs: [x + 1 for x in xs], window=600.0, in_flight=in_flight)
    done: list[bool] = []

    def blocked() -> None:
        with in_flight:
            other(1)

    def asks() -> None:
        with in_flight:
            while in_flight.running > 1:  # until the other question waits inside its stage
                time.sleep(0.01)
            assert here(1) == 2
            done.append(not release.is_set())

    threads = [threading.Thread(target=blocked), threading.Thread(target=asks)]
    for t in threads:
        t.start()
    threads[1].join(60)
    release.set()
    threads[0].join(60)
    assert done == [True]  # answered while the other still waited in its stage (the old rule waited for it)
    assert here.stats.window_ran_out == 0


def test_a_question_counts_once_however_deep_its_thread_enters() -> None:
    in_flight = InFlight()
    with in_flight, in_flight:  # the engine's answer, then its graph run
        assert in_flight.count == 1
    assert in_flight.count == 0


# --- batched generation streams per row ------------------------------------------------------------------------

def test_a_batched_generate_streams_each_prompt_to_its_own_callback(engine: Any) -> None:
    llm = engine.tools.llm.llm  # the transformers backend itself, under the batching wrapper
    prompts = ["Question: What colour is the sky? Answer:", "Question: Name a fruit. Answer:"]
    pieces: list[list[str]] = [[], []]
    params = GenerationParams(max_new_tokens=6)
    batched = llm.generate(prompts, params, [pieces[0].append, pieces[1].append])
    alone = [llm.generate([p], params)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]  # left padding is masked
    assert ["".join(p).strip() for p in pieces] == [g.text.strip() for g in batched]


# --- answer_batch == answer, one by one -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes(model_cache: Path) -> Any:
    from vqagraph import Engine

    return Engine.from_profile("shapes")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    from vqagraph.eval.datasets import load_dataset
    from vqagraph.world import write_dataset

    out = tmp_path_factory.mktemp("scenes")
    write_dataset(out, 4242, 3, per_family=1)
    return load_dataset(out / "questions.jsonl")


def comparable(answer: Answer) -> dict[str, Any]:
    """The answer and its trace, less what may differ between runs: timings, whether features came from the
    cache, and log-probabilities below print precision (left padding changes sums in the last bits)."""
    data = answer.model_dump(mode="json")
    trace = data["trace"]
    trace.pop("timings")
    for name in ("img2llm", "bridge", "projection"):
        if trace.get(name):
            trace[name].pop("image_encoded", None)
    for result in trace["route_answers"].values():
        result["token_logprobs"] = [round(x, 3) for x in result["token_logprobs"]]
        result["mean_logprob"] = round(result["mean_logprob"], 3)
    trace["token_logprobs"] = [round(x, 3) for x in trace["token_logprobs"]]
    return data


def test_batched_answers_equal_answers_one_by_one(shapes: Any, scenes: list[Any], tmp_path: Path) -> None:
    """A mixed batch: every route, auto, marks, a thread's follow-up and a bad request."""
    from vqagraph import Engine

    marked = next(item for item in scenes if item.marks)
    requests = [AskRequest(question=item.question, image=item.image, route=route, marks=list(item.marks))
                for item, route in zip(scenes[:9], ["auto", "img2llm", "bridge", "projection"] * 3, strict=False)]
    requests.append(AskRequest(question=marked.question, image=marked.image, marks=list(marked.marks), route="auto"))
    requests.append(AskRequest(question="", image=scenes[0].image))  # empty: a QuestionError in its place
    store = str(tmp_path / "threads.sqlite")
    fresh = Engine.from_profile("shapes")  # answers one by one, its feature cache cold
    for engine, thread in ((shapes, "batch-thread"), (fresh, "alone-thread")):  # a first turn in each
        engine.conversation(thread, store=store).ask("What colour is the circle?", image=scenes[0].image,
                                                     route="bridge")
    follow = AskRequest(question="And what shape is it?", thread="batch-thread", store=store, route="bridge")
    alone: list[Answer | VQAGraphError] = []
    for request in requests:
        try:
            alone.append(fresh.answer(request))
        except VQAGraphError as exc:
            alone.append(exc)
    alone.append(fresh.answer(follow.model_copy(update={"thread": "alone-thread"})))

    batched = shapes.answer_batch([*requests, follow], batch_size=8)
    assert isinstance(batched[-2], QuestionError) and isinstance(alone[-2], QuestionError)
    pairs = [(a, b) for a, b in zip(alone, batched, strict=True) if isinstance(a, Answer)]
    assert len(pairs) == len(requests)  # all but the bad one, and the follow-up
    for one, many in pairs:
        assert isinstance(many, Answer)
        assert comparable(one) == comparable(many), one.question
    assert batched[-1].trace.history_turns == 1  # type: ignore[union-attr]
    routes = {a.route for a in batched if isinstance(a, Answer)}
    assert {"img2llm", "bridge", "projection"} <= routes
    # The stages really ran batched: some model call served several questions at once.
    assert max(shapes.tools.llm.embeds.stats.sizes) > 1 or max(shapes.tools.llm.texts.stats.sizes) > 1


def test_each_embedding_route_stage_runs_once_for_the_whole_batch(model_cache: Path, scenes: list[Any]) -> None:
    """N new images on each embedding route: one Q-Former pass (its images through the frozen CNN and the adapter
    together), one projector pass and one LLM call per route, however the questions' intake interleaves."""
    from vqagraph import Engine

    engine = Engine.from_profile("shapes", batching={"window_ms": 600_000})  # a batch waits for every question
    images = list(dict.fromkeys(item.image for item in scenes))
    assert len(images) > 1
    llm = engine.tools.llm.embeds
    for route in ("bridge", "projection"):
        requests = [AskRequest(question="What colour is the largest object?", image=image, route=route)
                    for image in images]
        stage = engine.tools.qformer if route == "bridge" else engine.tools.projector
        answers = engine.answer_batch(requests, batch_size=len(requests))
        assert all(isinstance(a, Answer) and a.route == route for a in answers)
        assert stage.batcher.stats.sizes == [len(images)]
        assert stage.batcher.stats.window_ran_out == llm.stats.window_ran_out == 0  # none waited for nothing
    encoder = engine.tools.image_encoder
    assert encoder is not None
    assert encoder.batcher.stats.sizes == [len(images)]  # once: the projection route found every grid cached
    assert llm.stats.sizes == [len(images), len(images)]  # one LLM call per route


# --- the batch command -------------------------------------------------------------------------------------------

def test_ask_batch_is_resumable_and_writes_a_submission(engine: Any, scenes: list[Any], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from vqagraph.agents import cli

    rows = [{"image": str(item.image), "question": item.question, "question_id": str(1000 + n)}
            for n, item in enumerate(scenes[:4])]  # no answers: questions to answer, not to score
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ["ask", "--batch", str(source), "--out", str(out), "--route", "bridge", "--batch-size", "4",
            "--profile", "tiny", "--submission", str(tmp_path / "sub.json")]
    assert cli.main(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["question_id"] for line in lines) == ["1000", "1001", "1002", "1003"]
    assert all(line["route_taken"] == "bridge" and line["accuracy"] is None and line["answer"] is not None
               for line in lines)
    # A run stopped mid-way: two answers kept, the third torn mid-write. The rerun asks only what is missing.
    out.write_text(json.dumps(lines[0]) + "\n" + json.dumps(lines[1]) + "\n" + json.dumps(lines[2])[:20])
    from vqagraph.engine import Engine

    asked: list[int] = []
    original = Engine.answer_batch

    def counting(self: Engine, requests: list[AskRequest], **kwargs: Any) -> Any:
        asked.append(len(requests))
        return original(self, requests, **kwargs)

    monkeypatch.setattr(Engine, "answer_batch", counting)
    assert cli.main(args) == 0
    assert asked == [2]
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["question_id"] for line in again) == ["1000", "1001", "1002", "1003"]
    submission = json.loads((tmp_path / "sub.json").read_text())
    assert [s["question_id"] for s in submission] == [1000, 1001, 1002, 1003]
    assert all(isinstance(s["answer"], str) for s in submission)


def test_ask_batch_errors_are_clear(tmp_path: Path) -> None:
    from vqagraph.agents import cli

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"image": "x.png", "question": "What?"}) + "\n")
    assert cli.main(["ask", "--batch", str(source), "--profile", "tiny"]) == 2  # no --out
    assert cli.main(["ask", "--batch", str(source), "--out", str(tmp_path / "o.jsonl"), "--profile", "tiny"]) == 2


# --- the server --------------------------------------------------------------------------------------------------

@pytest.fixture
def served(engine: Any, serve_app: Any) -> Iterator[tuple[str, Any]]:


    from vqagraph.agents.openai_server import create_app

    app = create_app(engine, store="memory", max_pending=2)
    with serve_app(app) as url:
        yield url, app.state.vqagraph


def body(image: Image.Image | None, question: str = "What colour is it?") -> dict[str, Any]:
    """A chat-completions request for the bridge route, with the image as a data URL when one is given."""
    import base64
    import io

    content: list[dict[str, Any]] = [{"type": "text", "text": question}]
    if image is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    return {"model": "vqagraph", "vqagraph": {"route": "bridge"}, "messages": [{"role": "user", "content": content}]}


def test_past_the_bound_a_request_gets_429_and_the_server_stays_up(served: tuple[str, Any]) -> None:
    url, server = served
    release = threading.Event()
    original = server.answer

    def held(plan: Any, on_token: Any = None) -> Any:
        release.wait(60)
        return original(plan, on_token)

    server.answer = held
    results: list[int] = []
    image = Image.new("RGB", (64, 48), "red")
    workers = [threading.Thread(target=lambda: results.append(
        httpx.post(f"{url}/v1/chat/completions", json=body(image), timeout=120).status_code)) for _ in range(2)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 30
    while server.pending < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    in_flight = server.engine.in_flight
    assert in_flight.count == 2  # admitted questions count in flight before they reach the engine
    busy = httpx.post(f"{url}/v1/chat/completions", json=body(image), timeout=30)
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "server_busy"
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # never a hang
    assert in_flight.count == 2  # the refused one never counted
    release.set()
    for worker in workers:
        worker.join(120)
    assert results == [200, 200]
    server.answer = original
    assert httpx.post(f"{url}/v1/chat/completions", json=body(image), timeout=120).status_code == 200
    bad = httpx.post(f"{url}/v1/chat/completions", json=body(None, question=""), timeout=30)
    assert bad.status_code == 400
    assert in_flight.count == 0 and in_flight.running == 0  # every request, answered or refused, counted out


def test_metrics_parse_and_count_requests(served: tuple[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    url, _server = served
    image = Image.new("RGB", (64, 48), "blue")
    assert httpx.post(f"{url}/v1/chat/completions", json=body(image), timeout=120).status_code == 200
    text = httpx.get(f"{url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    answers = {tuple(sorted(s.labels.items())): s.value for s in families["vqagraph_answers"].samples
               if s.name == "vqagraph_answers_total"}
    assert answers[(("route", "bridge"), ("status", "ok"))] >= 1
    assert any(s.value >= 1 for s in families["http_requests"].samples if s.name == "http_requests_total")
    assert "vqagraph_batch_size" in families and "vqagraph_feature_cache_hits" in families
    tokens = {s.labels["kind"]: s.value for s in families["vqagraph_llm_tokens"].samples
              if s.name == "vqagraph_llm_tokens_total"}
    assert tokens["prompt"] > 0 and tokens["completion"] > 0


# --- scale-out: two replicas, one Postgres thread store -----------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("VQAGRAPH_TEST_POSTGRES_URL") and not os.environ.get("CI"),
                    reason="set VQAGRAPH_TEST_POSTGRES_URL (.ci/run starts a Postgres server and sets it)")
def test_two_replicas_share_threads_answers_and_uploads(model_cache: Path, tmp_path: Path) -> None:
    """Two `vqagraph serve` processes behind a balancer, sharing only one Postgres store (each has its own data
    folder: no shared volume): a conversation whose turns alternate between them keeps every turn; an image
    uploaded to one is asked about on the other; an answer given by one is explained by the other, for its own
    API key only."""
    from vqagraph.tools.llm.vllm_server import free_port

    url = os.environ["VQAGRAPH_TEST_POSTGRES_URL"]
    keys = ["replica-key-1", "replica-key-2"]
    mine, theirs = ({"Authorization": f"Bearer {key}"} for key in keys)
    ports = [free_port(), free_port()]
    replicas = [subprocess.Popen([sys.executable, "-m", "vqagraph", "serve", "--profile", "tiny", "--port", str(port),
                                  "--store", url, "--log-level", "warning", "--api-key", keys[0], "--api-key", keys[1]],
                                 env={**os.environ, "VQAGRAPH_DATA": str(tmp_path / f"replica-{port}"),
                                      "VQAGRAPH_CACHE": str(model_cache)},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for port in ports]
    first, second = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        for port, replica in zip(ports, replicas, strict=True):
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert replica.poll() is None and time.monotonic() < deadline, replica.stderr.read()[-2000:]  # type: ignore[union-attr]
                time.sleep(0.3)
        thread = f"replicas-{os.getpid()}"
        image = Image.new("RGB", (64, 48), (200, 30, 30))
        questions = ["What colour is it?", "Is it big?", "And its shape?", "Where is it?"]
        seen = []
        for turn, question in enumerate(questions):
            request = body(image, question) if turn == 0 else body(None, question)  # the image with turn 1 only
            request["vqagraph"]["thread"] = thread
            response = httpx.post(f"http://127.0.0.1:{ports[turn % 2]}/v1/chat/completions", json=request,
                                  headers=mine, timeout=300)
            assert response.status_code == 200, response.text
            seen.append(response.json()["vqagraph"]["answer"]["trace"]["history_turns"])
        assert seen == [0, 1, 2, 3]  # each replica saw every earlier turn, whichever replica answered it

        # Uploaded once, to the first replica; asked about by reference on the second.
        picture = Image.new("RGB", (80, 60), (30, 90, 200))
        data_url = body(picture)["messages"][0]["content"][1]["image_url"]["url"]
        uploaded = httpx.post(f"{first}/v1/images", json={"image": data_url}, headers=mine, timeout=60)
        assert uploaded.status_code == 200, uploaded.text
        ref = uploaded.json()["id"]
        request = {"model": "vqagraph", "vqagraph": {"route": "img2llm"}, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What colour is it?"}, {"type": "image_url", "image_url": {"url": ref}}]}]}
        asked = httpx.post(f"{second}/v1/chat/completions", json=request, headers=mine, timeout=300)
        assert asked.status_code == 200, asked.text
        assert asked.json()["vqagraph"]["answer"]["image_ref"] == ref
        refused = httpx.post(f"{second}/v1/chat/completions", json=request, headers=theirs, timeout=300)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "image_not_found"

        # Answered by the second replica, explained by the first: the trace and the image come from the store.
        explain = f"{first}/v1/answers/{asked.json()['id']}/explain.png"
        explained = httpx.get(explain, headers=mine, timeout=120)
        assert explained.status_code == 200, explained.text
        with Image.open(io.BytesIO(explained.content)) as drawn:
            assert drawn.format == "PNG" and drawn.width >= picture.width
        assert httpx.get(explain, headers=theirs, timeout=120).status_code == 404  # another key: as if unknown
        on_disk = [path for port in ports for path in (tmp_path / f"replica-{port}").rglob("*.png")]
        assert not on_disk  # the images are in the store, not on either replica's disk
    finally:
        for replica in replicas:
            replica.terminate()
        for replica in replicas:
            try:
                replica.wait(30)
            except subprocess.TimeoutExpired:
                replica.kill()
                replica.wait(30)
