"""Run an `Engine` over an evaluation set: every question through every requested route, scored, in order.

Design points, and why:

* Routes are plain strings passed to `Engine.ask`; the list of valid ones is the graph's (`graphs.vqa.ROUTES`),
  read when the run starts, so a new route needs no change here and a typo fails before any question is asked.
* One question's failure (an unreadable image, a mark outside it, the LLM server timing out) is part of the
  result, not the end of the run: it scores 0 and its record carries the error. Only `VQAGraphError`s are
  caught; anything else is a bug and should stop the run loudly.
* `workers > 1` shares one Engine between threads: worth it when the LLM is a vLLM server (requests overlap,
  the server batches them) and torch releases the GIL in the vision models. The first question runs alone, so
  the toolkit's models load once instead of once per thread. Records are put back in (question, route) order
  and the answers file is written in that order as it fills, so the output does not depend on scheduling.
* Asks hold the engine's one lock (`engine.lock`, which every front end shares): GradCAM captures attention
  through a forward hook on a module all threads share, and seeded sampling (captions, LLM) seeds torch's
  process-wide generator, so asks run one at a time. Workers then only overlap the scoring and the writing:
  slower than batching, never wrong. Sequential answers do not depend on the order of questions (verified: a cached
  image gives the same answer), so the numbers are the same for any `workers`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tqdm import tqdm

from vqagraph.config import REQUESTED_ROUTES
from vqagraph.errors import QuestionError, VQAGraphError
from vqagraph.eval.datasets import EvalItem
from vqagraph.eval.metric import vqa_accuracy
from vqagraph.eval.report import AnswerRecord, EvalReport, RouteRecord

if TYPE_CHECKING:
    from vqagraph.engine import Engine


def known_routes() -> tuple[str, ...]:
    """The routes a caller may ask for (config.REQUESTED_ROUTES)."""
    return tuple(REQUESTED_ROUTES)


def check_routes(routes: Iterable[str]) -> list[str]:
    """The requested routes, de-duplicated in order; an unknown one is a QuestionError naming the valid ones."""
    wanted = list(dict.fromkeys(route.strip() for route in routes if route.strip()))
    if not wanted:
        raise QuestionError("no route to evaluate; give --routes, e.g. --routes auto")
    valid = known_routes()
    unknown = [route for route in wanted if route not in valid]
    if unknown:
        raise QuestionError(f"unknown route{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                            f"this engine knows {', '.join(valid)}")
    return wanted


def score_answer(answer: str, item: EvalItem) -> float:
    """The VQA accuracy of `answer` for `item`, in [0, 100], rounded so records read cleanly."""
    return round(vqa_accuracy(answer, item.answers), 4)


def answer_one(engine: Engine, item: EvalItem, route: str,
               guard: AbstractContextManager[object] | None = None) -> AnswerRecord:
    """Ask one question through one route and score it; a VQAGraphError becomes a 0-scored record.

    `guard` (a lock) is held around the ask when the engine cannot take concurrent asks; the time spent
    waiting for it is not counted in `seconds`, which is the engine's own total."""
    base = {"question_id": item.question_id, "image": str(item.image), "question": item.question,
            "family": item.family, "route": route, "answers": item.answers}
    with guard or nullcontext():
        return _ask_and_score(engine, item, route, base)


def _ask_and_score(engine: Engine, item: EvalItem, route: str, base: dict[str, Any]) -> AnswerRecord:
    start = time.perf_counter()
    try:
        answer = engine.ask(item.image, item.question, route=route, marks=item.marks)
    except VQAGraphError as exc:
        return AnswerRecord(**base, accuracy=0.0, seconds=round(time.perf_counter() - start, 4),
                            error=f"{type(exc).__name__}: {exc}")
    seconds = answer.trace.timings.get("total", round(time.perf_counter() - start, 4))
    routes = {name: RouteRecord(answer=r["answer"], mean_logprob=r["mean_logprob"],
                                accuracy=score_answer(r["answer"], item))
              for name, r in answer.trace.route_answers.items()}
    return AnswerRecord(**base, route_taken=answer.route, reason=answer.trace.route_reason, answer=answer.answer,
                        accuracy=score_answer(answer.answer, item), seconds=seconds, route_answers=routes)


class _OrderedWriter:
    """Writes records to a JSONL file in their run order, each as soon as all records before it are in."""

    def __init__(self, path: Path | None) -> None:
        self.handle: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = path.open("w", encoding="utf-8")
        self.pending: dict[int, AnswerRecord] = {}
        self.next = 0

    def offer(self, index: int, record: AnswerRecord) -> None:
        if self.handle is None:
            return
        self.pending[index] = record
        while self.next in self.pending:
            self.handle.write(self.pending.pop(self.next).model_dump_json() + "\n")
            self.next += 1
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def evaluate(
    engine: Engine,
    items: Sequence[EvalItem],
    routes: Sequence[str] = ("auto",),
    workers: int = 1,
    progress: bool = True,
    answers_out: Path | None = None,
) -> EvalReport:
    """Answer every item through every route and aggregate the VQA accuracy per route and family.

    Work goes item by item, all routes of an item together, so the routes of one image reuse its cached
    vision features. `answers_out` gets one JSONL record per (item, route), in that order.
    """
    checked = check_routes(routes)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    units = [(item, route) for item in items for route in checked]
    records: list[AnswerRecord | None] = [None] * len(units)
    writer = _OrderedWriter(Path(answers_out) if answers_out is not None else None)
    bar = tqdm(total=len(units), desc="eval", unit="answer", file=sys.stderr, disable=not progress, leave=False)
    scored: list[float] = []

    def finish(index: int, record: AnswerRecord) -> None:
        records[index] = record
        writer.offer(index, record)
        scored.append(record.accuracy)
        bar.update(1)
        bar.set_postfix(accuracy=f"{sum(scored) / len(scored):.1f}", refresh=False)

    try:
        if units:  # alone first: the models load once, before threads share the toolkit
            finish(0, answer_one(engine, *units[0]))
        if workers == 1 or len(units) < 3:
            for index in range(1, len(units)):
                finish(index, answer_one(engine, *units[index]))
        else:
            guard = engine.lock  # the engine's one lock: its models are not safe for concurrent use
            _run_pool(engine, units, workers, finish, guard)
    finally:
        writer.close()
        bar.close()
    done = [record for record in records if record is not None]
    return EvalReport.from_records(done, checked)


def _run_pool(engine: Engine, units: list[tuple[EvalItem, str]], workers: int,
              finish: Callable[[int, AnswerRecord], None], guard: AbstractContextManager[object] | None) -> None:
    """Units 1.. on a thread pool; a crash (or Ctrl-C) cancels what has not started and re-raises."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vqagraph-eval")
    try:
        futures: dict[Future[AnswerRecord], int] = {
            pool.submit(answer_one, engine, *units[index], guard): index for index in range(1, len(units))}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
