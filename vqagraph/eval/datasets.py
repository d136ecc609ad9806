"""Evaluation data: one `EvalItem` per question, read from the project's JSONL or the official VQA releases.

All readers resolve and check every image before anything runs, so a wrong `--images` folder fails in a second
with the missing file's name instead of after an hour of answering. Formats:

* **JSONL** (the generated Shapes world, hand-made sets): one object a line, `{"image": path relative to the
  JSONL file, "question", "answers": [...], "family"?, "marks"?: [Mark, ...], "question_id"?}`.
* **VQAv2 / OK-VQA**: the questions JSON (`{"questions": [...]}`) plus the annotations JSON
  (`{"annotations": [...]}`); family = the annotation's `answer_type` (yes/no, number, other). Images are
  COCO files, `COCO_val2014_000000000042.jpg` (2014 names) or `000000000042.jpg` (2017 names).
* **A-OKVQA**: a JSON list of `{"question_id", "image_id", "question", "direct_answers", ...}`; family "aokvqa";
  images named `{image_id:012d}.jpg` (COCO 2017).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from vqagraph.errors import MarkError, VQAGraphError


class DatasetError(VQAGraphError):
    """An evaluation file is missing, malformed, of an unknown format, or names an image that is not there."""


class EvalItem(BaseModel):
    """One question to evaluate: the image file, the question, its reference answers and its family."""

    image: Path
    question: str
    answers: list[str]  # empty only when read with `scored=False` (questions to answer, not to score)
    family: str = "all"
    marks: list[dict[str, Any]] = Field(default_factory=list)
    question_id: str


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{what} {path} is not valid JSON: {exc}") from None


def _require_image(path: Path, source: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"image not found: {path} (named by {source})")
    return path


def _check_marks(marks: Any, base: Path, where: str) -> list[dict[str, Any]]:
    """Marks validated now (a bad one names its line) and mask paths made absolute, relative to the data file."""
    from vqagraph.tools.visual_prompt import Mark

    if not isinstance(marks, list):
        raise DatasetError(f"{where}: 'marks' must be a list of marks")
    checked = []
    for index, mark in enumerate(marks):
        if not isinstance(mark, dict):
            raise DatasetError(f"{where}: mark {index} must be an object")
        mark = dict(mark)
        if isinstance(mark.get("mask_path"), str):
            mark["mask_path"] = str(base / mark["mask_path"])
        try:
            Mark.create(**mark)
        except MarkError as exc:
            raise DatasetError(f"{where}: mark {index}: {str(exc).removeprefix('mark: ')}") from None
        checked.append(mark)
    return checked


def read_jsonl(path: Path, scored: bool = True) -> list[EvalItem]:
    """The project's own format; images and mask paths are relative to the JSONL file's folder. `scored=False`:
    `answers` may be left out (questions to answer, e.g. `vqagraph ask --batch`)."""
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}")
    base = path.parent
    items: list[EvalItem] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected an object with image, question and answers")
        missing = [key for key in ("image", "question", "answers")[: 3 if scored else 2] if key not in row]
        if missing:
            raise DatasetError(f"{where}: missing {', '.join(missing)}")
        answers = row.get("answers", [])
        if not isinstance(answers, list) or (scored and not answers) or not all(isinstance(a, str) for a in answers):
            raise DatasetError(f"{where}: 'answers' must be a non-empty list of strings")
        if not isinstance(row["question"], str) or not isinstance(row["image"], str):
            raise DatasetError(f"{where}: 'image' and 'question' must be strings")
        question_id = str(row.get("question_id", number))
        if question_id in seen:
            raise DatasetError(f"{where}: question_id {question_id!r} appears twice")
        seen.add(question_id)
        items.append(EvalItem(
            image=_require_image(base / row["image"], where),
            question=row["question"],
            answers=answers,
            family=str(row.get("family") or "all"),
            marks=_check_marks(row.get("marks", []), base, where),
            question_id=question_id,
        ))
    if not items:
        raise DatasetError(f"{path} holds no questions")
    return items


_COCO_NAME = re.compile(r"^(?:COCO_[A-Za-z]+\d*_)?(\d{12})\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def coco_images(folder: Path) -> dict[int, Path]:
    """Image id -> file for a COCO image folder, listed once (tens of thousands of files, so no per-id globbing).

    Takes both the 2014 names (`COCO_val2014_000000000042.jpg`) and the 2017 ones (`000000000042.jpg`).
    """
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder} (give the COCO image folder with --images)")
    found: dict[int, Path] = {}
    for entry in sorted(folder.iterdir()):
        match = _COCO_NAME.match(entry.name)
        if match:
            found.setdefault(int(match.group(1)), entry)
    return found


def _coco_image(index: dict[int, Path], folder: Path, image_id: Any, source: str) -> Path:
    try:
        key = int(image_id)
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: image_id {image_id!r} is not a number") from None
    if key not in index:
        raise DatasetError(f"image not found: {folder / f'{key:012d}.jpg'} or COCO_*_{key:012d}.jpg in {folder} "
                           f"(named by {source})")
    return index[key]


def read_vqa(questions_path: Path, annotations_path: Path | None, images: Path) -> list[EvalItem]:
    """VQAv2 or OK-VQA: questions and annotations joined on question_id; family = answer_type. Without
    annotations (a test-dev split, to answer for a submission), the items have no answers."""
    questions = _read_json(questions_path, "questions file")
    annotations = _read_json(annotations_path, "annotations file") if annotations_path else {"annotations": []}
    if not isinstance(questions, dict) or not isinstance(questions.get("questions"), list):
        raise DatasetError(f"{questions_path} is not a VQA questions file (no 'questions' list)")
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise DatasetError(f"{annotations_path} is not a VQA annotations file (no 'annotations' list)")
    try:
        by_id = {str(a["question_id"]): a for a in annotations["annotations"]}
    except (KeyError, TypeError):
        raise DatasetError(f"{annotations_path}: every annotation needs a question_id") from None
    index = coco_images(images)
    items = []
    for number, question in enumerate(questions["questions"]):
        source = f"{questions_path.name} question {number}"
        try:
            question_id = str(question["question_id"])
            text, image_id = question["question"], question["image_id"]
        except (KeyError, TypeError):
            raise DatasetError(f"{source}: needs question_id, question and image_id") from None
        note = by_id.get(question_id)
        if note is None and annotations_path is None:
            items.append(EvalItem(image=_coco_image(index, images, image_id, source), question=text, answers=[],
                                  question_id=question_id))
            continue
        if note is None:
            raise DatasetError(f"{source}: question_id {question_id} has no annotation in {annotations_path}")
        try:
            answers = [str(a["answer"]) for a in note["answers"]]
        except (KeyError, TypeError):
            raise DatasetError(f"{annotations_path}: question_id {question_id}: answers must be "
                               "[{\"answer\": ...}, ...]") from None
        items.append(EvalItem(image=_coco_image(index, images, image_id, source), question=text, answers=answers,
                              family=str(note.get("answer_type") or "all"), question_id=question_id))
    if not items:
        raise DatasetError(f"{questions_path} holds no questions")
    return items


def read_aokvqa(path: Path, images: Path) -> list[EvalItem]:
    """A-OKVQA's own JSON; its ten `direct_answers` are scored with the VQA metric, family "aokvqa"."""
    rows = _read_json(path, "dataset")
    if not isinstance(rows, list) or not rows:
        raise DatasetError(f"{path} is not an A-OKVQA file (expected a non-empty list of questions)")
    index = coco_images(images)
    items = []
    for number, row in enumerate(rows):
        source = f"{path.name} entry {number}"
        if not isinstance(row, dict) or not all(k in row for k in ("question_id", "image_id", "question")):
            raise DatasetError(f"{source}: needs question_id, image_id and question")
        answers = row.get("direct_answers")
        if not isinstance(answers, list) or not answers:
            raise DatasetError(f"{source}: no direct_answers (the A-OKVQA test split has none; use train or val)")
        items.append(EvalItem(image=_coco_image(index, images, row["image_id"], source), question=row["question"],
                              answers=[str(a) for a in answers], family="aokvqa",
                              question_id=str(row["question_id"])))
    return items


def detect_format(path: Path) -> str:
    """`jsonl`, `vqa-questions`, `vqa-annotations` or `aokvqa`, from the content, not only the file name."""
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}")
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):
        return "aokvqa"
    if head.startswith(b"{"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "jsonl"  # several objects, one a line, under another name; read_jsonl names a bad line
        if isinstance(data, dict) and "questions" in data:
            return "vqa-questions"
        if isinstance(data, dict) and "annotations" in data:
            return "vqa-annotations"
        if isinstance(data, dict) and "question" in data:
            return "jsonl"  # a JSONL file with one line
    raise DatasetError(f"cannot tell the format of {path}: expected a JSONL file (one question object a line), "
                       "a VQAv2/OK-VQA questions or annotations JSON, or an A-OKVQA JSON list")


def load_dataset(path: str | Path, images: str | Path | None = None,
                 annotations: str | Path | None = None, scored: bool = True) -> list[EvalItem]:
    """Read any supported format. `images` is the image folder for the VQA formats (default: the data file's
    folder); `annotations` pairs a VQAv2/OK-VQA questions file with its annotations (either may come first).
    `scored=False`: questions without reference answers are fine (a JSONL without `answers`, a VQAv2 questions
    file alone)."""
    path = Path(path)
    kind = detect_format(path)
    folder = Path(images) if images is not None else path.parent
    if kind == "jsonl":
        return read_jsonl(path, scored)
    if kind == "aokvqa":
        return read_aokvqa(path, folder)
    if kind == "vqa-questions" and annotations is None and not scored:
        return read_vqa(path, None, folder)
    if annotations is None:
        needed = "--annotations FILE (the annotations JSON)" if kind == "vqa-questions" else "its questions JSON"
        raise DatasetError(f"{path} is a VQAv2/OK-VQA {kind.removeprefix('vqa-')} file; it needs {needed}")
    other = Path(annotations)
    if kind == "vqa-annotations":
        path, other = other, path
    return read_vqa(path, other, folder)
