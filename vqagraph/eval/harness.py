"""Run an `Engine` over an evaluation set: every question through every requested route, scored, in order.

Design points, and why:

* Routes are plain strings passed to `Engine.ask`; the list of valid ones is the registry's (`graphs.registry.ROUTES`),
  read when the run starts, so a new route needs no change here and a typo fails before any question is asked.
* One question's failure (an unreadable image, a mark outside it, the LLM server timing out) is part of the
  result, not the end of the run: it scores 0 and its record carries the error. Only `VQAGraphError`s are
  caught; anything else is a bug and should stop the run loudly.
* Questions go through `Engine.answer_batch`, `batch_size` at a time: each runs the graph in its own thread and
  the engine gathers their model calls into batched ones (the LLM, GradCAM, the question generator), so a larger
  batch answers more questions per second and the same answers (batched calls equal calls alone; the first
  question runs alone so the models load once). Records are put back in (question, route) order and the answers
  file is written in that order as it fills, so the output does not depend on scheduling.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from vqagraph.errors import QuestionError, VQAGraphError
from vqagraph.eval.datasets import EvalItem
from vqagraph.eval.metric import vqa_accuracy
from vqagraph.eval.report import AnswerRecord, EvalReport, RouteRecord
from vqagraph.graphs.registry import ROUTES
from vqagraph.request import AskRequest

if TYPE_CHECKING:
    from vqagraph.answer import Answer
    from vqagraph.engine import Engine


def known_routes() -> tuple[str, ...]:
    """The routes a caller may ask for (graphs/registry.py)."""
    return ROUTES.requested()


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


def request_for(item: EvalItem, route: str) -> AskRequest:
    """The engine request that asks `item` through `route`."""
    return AskRequest(question=item.question, image=item.image, route=route, marks=list(item.marks))


def record_for(item: EvalItem, route: str, result: Answer | VQAGraphError) -> AnswerRecord:
    """One scored record; an error (an unreadable image, a mark outside it, the LLM server down) scores 0."""
    base = {"question_id": item.question_id, "image": str(item.image), "question": item.question,
            "family": item.family, "route": route, "answers": item.answers}
    if isinstance(result, VQAGraphError):
        return AnswerRecord(**base, accuracy=0.0, seconds=0.0, error=f"{type(result).__name__}: {result}")
    routes = {name: RouteRecord(answer=r["answer"], mean_logprob=r["mean_logprob"],
                                accuracy=score_answer(r["answer"], item))
              for name, r in result.trace.route_answers.items()}
    return AnswerRecord(**base, route_taken=result.route, reason=result.trace.route_reason, answer=result.answer,
                        accuracy=score_answer(result.answer, item), seconds=result.trace.timings.get("total", 0.0),
                        route_answers=routes)


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
    batch_size: int = 1,
    progress: bool = True,
    answers_out: Path | None = None,
) -> EvalReport:
    """Answer every item through every route and aggregate the VQA accuracy per route and family.

    Work goes item by item, all routes of an item together, so the routes of one image reuse its cached
    vision features. `answers_out` gets one JSONL record per (item, route), in that order.
    """
    checked = check_routes(routes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    units = [(item, route) for item in items for route in checked]
    records: list[AnswerRecord | None] = [None] * len(units)
    writer = _OrderedWriter(Path(answers_out) if answers_out is not None else None)
    bar = tqdm(total=len(units), desc="eval", unit="answer", file=sys.stderr, disable=not progress, leave=False)
    scored: list[float] = []

    def finish(index: int, result: Answer | VQAGraphError) -> None:
        record = record_for(*units[index], result)
        records[index] = record
        writer.offer(index, record)
        scored.append(record.accuracy)
        bar.update(1)
        bar.set_postfix(accuracy=f"{sum(scored) / len(scored):.1f}", refresh=False)

    requests = [request_for(item, route) for item, route in units]
    try:
        if units:  # alone first: the models load once, before the batch's threads share the toolkit
            finish(0, engine.answer_batch(requests[:1])[0])
        engine.answer_batch(requests[1:], batch_size=batch_size, on_done=lambda i, result: finish(i + 1, result))
    finally:
        writer.close()
        bar.close()
    done = [record for record in records if record is not None]
    return EvalReport.from_records(done, checked)
