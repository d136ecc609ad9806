"""`vqagraph ask --batch IN --out OUT.jsonl`: a file of questions answered in batches, resumably.

IN is any format `vqagraph eval` reads (the JSONL with `answers` optional, a VQAv2 questions file with or without
its annotations, A-OKVQA). Questions go through `Engine.answer_batch`, so their model calls are batched. OUT gets
one line per answer as each finishes (the eval's answer record: route taken, reason, seconds; scored when the
question has reference answers), flushed at once; a rerun skips the questions OUT already holds, so a stopped run
loses nothing but the questions in flight. `--submission` writes the VQAv2/EvalAI file `[{question_id, answer}]`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from vqagraph.errors import VQAGraphError

if TYPE_CHECKING:
    from vqagraph.answer import Answer
    from vqagraph.engine import Engine
    from vqagraph.eval.datasets import EvalItem


def done_ids(out: Path) -> set[tuple[str, str]]:
    """(question_id, route) of every answer already in `out`; a torn last line (a killed run) is dropped."""
    if not out.is_file():
        return set()
    done = set()
    lines = out.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            done.add((str(row["question_id"]), str(row["route"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            if number == len(lines):
                continue  # the run was stopped mid-write: that question is asked again
            raise VQAGraphError(f"{out}:{number}: not an answer line; move the file or choose another --out") from None
    return done


def _record(item: EvalItem, route: str, result: Answer | VQAGraphError) -> dict[str, Any]:
    from vqagraph.eval.harness import record_for

    row = record_for(item, route, result).model_dump(mode="json")
    if not item.answers:
        row["accuracy"] = None  # nothing to score against
    return row


def run_batch(engine: Engine, items: list[EvalItem], route: str, out: Path, batch_size: int,
              progress: bool = True) -> tuple[int, int]:
    """Answer the items OUT does not hold yet, appending each answer as it finishes. Returns (answered now,
    skipped as already done)."""
    from vqagraph.eval.harness import request_for

    done = done_ids(out)
    todo = [item for item in items if (item.question_id, route) not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    data = out.read_bytes() if out.is_file() else b""
    if data and not data.endswith(b"\n"):  # drop a torn last line before appending
        out.write_bytes(data[: data.rfind(b"\n") + 1])
    bar = tqdm(total=len(todo), desc="answers", unit="q", file=sys.stderr, disable=not progress)
    with out.open("a", encoding="utf-8") as handle:
        def finish(index: int, result: Answer | VQAGraphError) -> None:
            handle.write(json.dumps(_record(todo[index], route, result)) + "\n")
            handle.flush()
            bar.update(1)

        try:
            engine.answer_batch([request_for(item, route) for item in todo], batch_size=batch_size, on_done=finish)
        finally:
            bar.close()
    return len(todo), len(items) - len(todo)


def write_submission(out: Path, items: list[EvalItem], submission: Path) -> int:
    """VQAv2/EvalAI's results file: `[{"question_id": int, "answer": str}]` in the input's order."""
    answers: dict[str, str] = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            answers[str(row["question_id"])] = row.get("answer") or ""
    rows = [{"question_id": int(item.question_id) if item.question_id.isdigit() else item.question_id,
             "answer": answers.get(item.question_id, "")} for item in items]
    submission.parent.mkdir(parents=True, exist_ok=True)
    submission.write_text(json.dumps(rows), encoding="utf-8")
    return len(rows)
