"""`vqagraph eval`: dataset readers, the report (JSON, table, chart), the harness, and the command's checks."""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from vqagraph.answer import Answer, Trace
from vqagraph.errors import QuestionError, VQAGraphError
from vqagraph.eval.cli import add_eval_command, select
from vqagraph.eval.datasets import DatasetError, EvalItem, detect_format, load_dataset
from vqagraph.eval.harness import check_routes, evaluate, known_routes, score_answer
from vqagraph.eval.report import AnswerRecord, EvalReport
from vqagraph.request import AskRequest

COLOURS = ("red", "blue", "green", "yellow")


def picture(path: Path, colour: str, shape: str = "ellipse") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (96, 64), "white")
    getattr(ImageDraw.Draw(image), shape)((20, 10, 70, 55), fill=colour)
    image.save(path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def shapes_jsonl(tmp_path: Path) -> Path:
    for colour in COLOURS[:3]:
        picture(tmp_path / "images" / f"{colour}.png", colour)
    return write_jsonl(tmp_path / "set.jsonl", [
        {"image": "images/red.png", "question": "What colour is the circle?", "answers": ["red"], "family": "colour"},
        {"image": "images/blue.png", "question": "What shape is it?", "answers": ["circle", "ellipse"],
         "family": "shape", "marks": [{"shape": "rectangle", "box": [10, 5, 80, 60], "colour": "red"}]},
        {"image": "images/green.png", "question": "Is it green?", "answers": ["yes"], "question_id": "q-green"},
    ])


# --- readers -----------------------------------------------------------------------------------------------------


def test_jsonl_reader(shapes_jsonl: Path) -> None:
    items = load_dataset(shapes_jsonl)
    assert [i.question_id for i in items] == ["1", "2", "q-green"]  # line numbers unless given
    assert [i.family for i in items] == ["colour", "shape", "all"]
    assert items[0].image == shapes_jsonl.parent / "images" / "red.png" and items[0].image.is_file()
    assert items[1].answers == ["circle", "ellipse"]
    assert items[1].marks == [{"shape": "rectangle", "box": [10, 5, 80, 60], "colour": "red"}]
    assert items[0].marks == []


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "set.jsonl:2: not valid JSON"),
    ('{"image": "a.png", "question": "q?"}', "set.jsonl:2: missing answers"),
    ('{"image": "a.png", "question": "q?", "answers": "red"}', "'answers' must be a non-empty list"),
    ('{"image": "nope.png", "question": "q?", "answers": ["red"]}', "image not found: "),
    ('{"image": "a.png", "question": "q?", "answers": ["r"], "marks": [{"shape": "star", "box": [1, 1, 5, 5]}]}',
     "set.jsonl:2: mark 0"),
    ('{"image": "a.png", "question": "q?", "answers": ["r"], "question_id": "1"}', "question_id '1' appears twice"),
    ("[1, 2]", "expected an object"),
])
def test_jsonl_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    picture(tmp_path / "a.png", "red")
    path = tmp_path / "set.jsonl"
    path.write_text('{"image": "a.png", "question": "q?", "answers": ["red"]}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_dataset(path)


def test_missing_image_error_names_the_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "set.jsonl", [{"image": "pics/gone.png", "question": "q?", "answers": ["a"]}])
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(tmp_path / "pics" / "gone.png") in str(info.value) and "set.jsonl:1" in str(info.value)
    assert isinstance(info.value, VQAGraphError)


def vqa_files(tmp_path: Path, name_2014: bool = True) -> tuple[Path, Path, Path]:
    images = tmp_path / "val2014"
    for image_id, colour in ((42, "red"), (7, "blue")):
        name = f"COCO_val2014_{image_id:012d}.jpg" if name_2014 else f"{image_id:012d}.jpg"
        picture(images / name, colour)
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps({"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "What colour is it?", "question_id": 420},
        {"image_id": 7, "question": "How many circles?", "question_id": 70},
        {"image_id": 42, "question": "Is it round?", "question_id": 421},
    ]}))
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({"annotations": [
        {"question_id": qid, "image_id": iid, "question_type": "what", "answer_type": kind,
         "answers": [{"answer": a, "answer_id": n + 1, "answer_confidence": "yes"} for n, a in enumerate(answers)]}
        for qid, iid, kind, answers in ((420, 42, "other", ["red"] * 9 + ["orange"]),
                                        (70, 7, "number", ["1"] * 10), (421, 42, "yes/no", ["yes"] * 10))]}))
    return questions, annotations, images


@pytest.mark.parametrize("name_2014", [True, False])
def test_vqav2_reader(tmp_path: Path, name_2014: bool) -> None:
    questions, annotations, images = vqa_files(tmp_path, name_2014)
    items = load_dataset(questions, images=images, annotations=annotations)
    assert [i.question_id for i in items] == ["420", "70", "421"]
    assert [i.family for i in items] == ["other", "number", "yes/no"]
    assert len(items[0].answers) == 10 and items[0].answers[-1] == "orange"
    assert items[0].image.name == ("COCO_val2014_000000000042.jpg" if name_2014 else "000000000042.jpg")
    # either file may come first
    assert load_dataset(annotations, images=images, annotations=questions) == items


def test_vqav2_errors(tmp_path: Path) -> None:
    questions, annotations, images = vqa_files(tmp_path)
    with pytest.raises(DatasetError, match="needs --annotations"):
        load_dataset(questions, images=images)
    with pytest.raises(DatasetError, match="image folder not found"):
        load_dataset(questions, images=tmp_path / "nowhere", annotations=annotations)
    (images / "COCO_val2014_000000000007.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image not found: .*000000000007\.jpg"):
        load_dataset(questions, images=images, annotations=annotations)
    annotations.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError, match="question_id 420 has no annotation"):
        load_dataset(questions, images=images, annotations=annotations)


def test_aokvqa_reader(tmp_path: Path) -> None:
    images = tmp_path / "val2017"
    picture(images / "000000000042.jpg", "red")
    data = tmp_path / "aokvqa_v1p0_val.json"
    row = {"split": "val", "image_id": 42, "question_id": "22MexNkBPpdZGX6sxbxVBH", "question": "What is it for?",
           "choices": ["eating", "sleeping", "riding", "reading"], "correct_choice_idx": 0,
           "direct_answers": ["eating"] * 6 + ["food"] * 4, "difficult_direct_answer": False, "rationales": ["x"]}
    data.write_text(json.dumps([row]))
    (item,) = load_dataset(data, images=images)
    assert item.family == "aokvqa" and item.question_id == "22MexNkBPpdZGX6sxbxVBH" and len(item.answers) == 10
    assert item.image == images / "000000000042.jpg"
    del row["direct_answers"]
    data.write_text(json.dumps([row]))
    with pytest.raises(DatasetError, match="no direct_answers"):
        load_dataset(data, images=images)


def test_format_detection(tmp_path: Path, shapes_jsonl: Path) -> None:
    questions, annotations, _ = vqa_files(tmp_path)
    assert detect_format(shapes_jsonl) == "jsonl"
    assert detect_format(questions) == "vqa-questions" and detect_format(annotations) == "vqa-annotations"
    renamed = tmp_path / "set.json"  # JSONL content under a .json name still reads as JSONL
    renamed.write_text(shapes_jsonl.read_text())
    assert detect_format(renamed) == "jsonl"
    listing = tmp_path / "a.json"
    listing.write_text("[]")
    assert detect_format(listing) == "aokvqa"
    for text in ('{"foo": 1}', "hello", ""):
        odd = tmp_path / "odd.json"
        odd.write_text(text)
        with pytest.raises(DatasetError, match="cannot tell the format"):
            detect_format(odd)
    with pytest.raises(DatasetError, match="dataset not found"):
        load_dataset(tmp_path / "absent.jsonl")


# --- report ------------------------------------------------------------------------------------------------------


def record(route: str, family: str, accuracy: float, qid: str = "q", error: str | None = None) -> AnswerRecord:
    return AnswerRecord(question_id=qid, image="x.png", question="q?", family=family, route=route,
                        route_taken=None if error else route, answers=["a"], accuracy=accuracy, seconds=0.5,
                        error=error)


@pytest.fixture
def report() -> EvalReport:
    records = [record("img2llm", "colour", 100), record("bridge", "colour", 0),
               record("img2llm", "colour", 0), record("bridge", "colour", 60),
               record("img2llm", "shape", 0), record("bridge", "shape", 100, error=None),
               record("img2llm", "count", 30), record("bridge", "count", 0, error="LLMError: timed out")]
    return EvalReport.from_records(records, ["img2llm", "bridge"])


def test_report_json_shape(report: EvalReport) -> None:
    document = json.loads(report.to_json())
    assert document["routes"] == {
        "img2llm": {"overall": 32.5, "n": 4, "families": {"colour": {"accuracy": 50.0, "n": 2},
                                                          "shape": {"accuracy": 0.0, "n": 1},
                                                          "count": {"accuracy": 30.0, "n": 1}}},
        "bridge": {"overall": 40.0, "n": 4, "families": {"colour": {"accuracy": 30.0, "n": 2},
                                                         "shape": {"accuracy": 100.0, "n": 1},
                                                         "count": {"accuracy": 0.0, "n": 1}}},
    }
    assert set(document) == {"routes", "seconds_per_question", "errors"}
    assert document["errors"] == {"img2llm": 0, "bridge": 1}
    assert document["seconds_per_question"] == {"img2llm": 0.5, "bridge": 0.5}
    assert report.to_dict() == document


def test_report_rounds_to_two_decimals() -> None:
    thirds = EvalReport.from_records([record("auto", "all", 100), record("auto", "all", 0),
                                      record("auto", "all", 0)])
    assert thirds.routes["auto"].overall == 33.33


def test_report_table(report: EvalReport) -> None:
    lines = report.table().splitlines()
    assert lines[0].split() == ["family", "img2llm", "bridge"]
    assert [line.split()[0] for line in lines[1:]] == ["colour", "shape", "count", "overall"]
    assert "50.0 (n=2)" in lines[1] and "30.0 (n=2)" in lines[1]
    assert lines[-1].split("  ")[0] == "overall" and "32.5 (n=4)" in lines[-1] and "40.0 (n=4)" in lines[-1]
    assert lines[1].index("50.0") == lines[0].index("img2llm")  # columns line up


def test_report_plot_writes_a_png(report: EvalReport, tmp_path: Path) -> None:
    path = report.plot(tmp_path / "sub" / "chart.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 400 and image.height >= 300
        colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 16) or []}
    assert (0, 114, 178) in colours and (230, 159, 0) in colours  # one bar colour per route


# --- harness -----------------------------------------------------------------------------------------------------


def test_score_answer_uses_the_vqa_metric() -> None:
    item = EvalItem(image=Path("x.png"), question="q?", answers=["2"] * 2 + ["3"] * 8, question_id="1")
    assert score_answer("two", item) == 60.0
    assert score_answer("Three.", item) == 100.0
    listed = item.model_copy(update={"answers": ["red", "crimson"]})
    assert score_answer("The red", listed) == 100.0 and score_answer("blue", listed) == 0.0


def test_check_routes() -> None:
    assert "img2llm" in known_routes() and "auto" in known_routes()
    assert check_routes(["img2llm", " auto", "img2llm", ""]) == ["img2llm", "auto"]
    with pytest.raises(QuestionError, match=r"unknown route 'teleport'; this engine knows auto, img2llm"):
        check_routes(["auto", "teleport"])
    with pytest.raises(QuestionError, match="no route"):
        check_routes([])


class SlowEngine:
    """A stand-in that answers out of order on purpose: later questions finish first."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self._counting = threading.Lock()

    def answer_batch(self, requests: list[AskRequest], *, batch_size: int | None = None,
                     on_done: Any = None) -> list[Answer | VQAGraphError]:
        """As the engine's: up to `batch_size` at once, each result in its place, errors in place of answers."""
        def one(index: int) -> Answer | VQAGraphError:
            request = requests[index]
            try:
                result: Answer | VQAGraphError = self.ask(request.image, request.question, request.route)
            except VQAGraphError as exc:
                result = exc
            if on_done is not None:
                on_done(index, result)
            return result

        with ThreadPoolExecutor(max_workers=batch_size or 1) as pool:
            return list(pool.map(one, range(len(requests))))

    def ask(self, image: Path, question: str, route: str = "auto", marks: Any = None) -> Answer:
        with self._counting:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(random.Random(question + route).uniform(0.0, 0.03))
        with self._counting:
            self.active -= 1
        if question.startswith("fail"):
            raise QuestionError("refused")
        trace = Trace(profile="fake", route=route, route_reason="stub", timings={"total": 0.01})
        return Answer(answer=question.split()[-1], question=question, image_ref="sha256:0", route=route, trace=trace)


def test_records_keep_run_order_under_threads(tmp_path: Path) -> None:
    items = [EvalItem(image=Path("x.png"), question=f"{'fail' if n == 5 else 'say'} w{n}", answers=[f"w{n}"],
                      family=("even", "odd")[n % 2], question_id=str(n)) for n in range(12)]
    engine = SlowEngine()
    out = tmp_path / "answers.jsonl"
    report = evaluate(engine, items, routes=("img2llm", "auto"), batch_size=4, progress=False,  # type: ignore[arg-type]
                      answers_out=out)
    assert engine.most > 1  # questions of a batch run side by side and finish out of order
    expected = [(str(n), route) for n in range(12) for route in ("img2llm", "auto")]
    assert [(r.question_id, r.route) for r in report.records] == expected
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["question_id"], r["route"]) for r in lines] == expected
    assert report.routes["img2llm"].overall == round(100 * 11 / 12, 2)
    failed = [r for r in report.records if r.error]
    assert [(r.question_id, r.accuracy, r.route_taken) for r in failed] == [("5", 0.0, None), ("5", 0.0, None)]
    assert failed[0].error == "QuestionError: refused"
    assert report.errors == {"img2llm": 1, "auto": 1}


def test_unknown_route_fails_before_any_question() -> None:
    engine = SlowEngine()
    item = EvalItem(image=Path("x.png"), question="say a", answers=["a"], question_id="1")
    engine.ask = None  # type: ignore[assignment,method-assign]  # never reached
    with pytest.raises(QuestionError, match="unknown route 'bridgee'"):
        evaluate(engine, [item], routes=("bridgee",), progress=False)  # type: ignore[arg-type]


def test_end_to_end_with_the_engine(engine: Any, tmp_path: Path) -> None:
    """The real graph on four questions: structure, order, error records, and the same answers batched or not."""
    for colour in COLOURS[:2]:
        picture(tmp_path / f"{colour}.png", colour)
    (tmp_path / "broken.png").write_text("not a picture")
    path = write_jsonl(tmp_path / "set.jsonl", [
        {"image": "red.png", "question": "What colour is the circle?", "answers": ["red"], "family": "colour"},
        {"image": "blue.png", "question": "What is this?", "answers": ["circle"], "family": "shape",
         "marks": [{"shape": "point", "point": [500, 500]}]},  # outside the 96x64 image: a MarkError
        {"image": "broken.png", "question": "What colour?", "answers": ["red"], "family": "colour"},
        {"image": "blue.png", "question": "What shape is it?", "answers": ["circle"], "family": "shape"},
    ])
    items = load_dataset(path)
    one = evaluate(engine, items, routes=("img2llm",), batch_size=1, progress=False, answers_out=tmp_path / "1.jsonl")
    two = evaluate(engine, items, routes=("img2llm",), batch_size=4, progress=False, answers_out=tmp_path / "2.jsonl")

    records = one.records
    assert [r.question_id for r in records] == ["1", "2", "3", "4"]
    assert records[1].error is not None and records[1].error.startswith("MarkError")
    assert records[2].error is not None and records[2].error.startswith("ImageError")
    for good in (records[0], records[3]):
        assert good.error is None and good.route_taken == "img2llm" and good.reason and good.seconds > 0
        assert 0.0 <= good.accuracy <= 100.0
    assert one.routes["img2llm"].n == 4 and set(one.routes["img2llm"].families) == {"colour", "shape"}
    assert one.errors == {"img2llm": 2}

    def without_time(report: EvalReport) -> list[dict[str, Any]]:
        return [r.model_dump(exclude={"seconds"}) for r in report.records]

    assert without_time(one) == without_time(two)
    assert one.routes == two.routes
    lines = [json.loads(line) for line in (tmp_path / "1.jsonl").read_text().splitlines()]
    assert [line["question_id"] for line in lines] == ["1", "2", "3", "4"]
    assert set(lines[0]) == {"question_id", "image", "question", "family", "route", "route_taken", "reason",
                             "answer", "answers", "accuracy", "seconds", "error", "route_answers"}
    assert set(records[0].route_answers) == {"img2llm"}
    assert records[0].route_answers["img2llm"].answer == records[0].answer


def test_a_both_run_records_each_routes_answer_scored(engine: Any, tmp_path: Path) -> None:
    """What benchmarks/choose_router.py reads: under `both`, every route's answer, confidence and score."""
    picture(tmp_path / "red.png", "red")
    items = load_dataset(write_jsonl(tmp_path / "set.jsonl", [
        {"image": "red.png", "question": "What colour is the circle?", "answers": ["red"], "family": "colour"}]))
    both = evaluate(engine, items, routes=("both",), progress=False).records[0]
    alone = {route: evaluate(engine, items, routes=(route,), progress=False).records[0]
             for route in ("img2llm", "bridge")}
    assert set(both.route_answers) == {"img2llm", "bridge"}
    for route, record in alone.items():
        kept = both.route_answers[route]
        assert kept.answer == record.answer and kept.accuracy == record.accuracy
        # Same tokens; the log-prob may differ in the last digits (two routes share the CPU's threads at once).
        assert kept.mean_logprob == pytest.approx(record.route_answers[route].mean_logprob, abs=1e-2)
        assert kept.mean_logprob <= 0.0
    assert both.answer == both.route_answers[both.route_taken or ""].answer


# --- command -----------------------------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vqagraph")
    add_eval_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["eval", *argv])


def test_command_options(shapes_jsonl: Path) -> None:
    args = parse(str(shapes_jsonl), "--routes", "img2llm,auto", "--json", "--limit", "2", "--batch-size", "3",
                 "--families", "colour,shape", "--plot", "out.png", "--answers", "a.jsonl")
    assert (args.routes, args.json, args.limit, args.batch_size, args.families) == (
        "img2llm,auto", True, 2, 3, "colour,shape")
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parse(str(shapes_jsonl), "--batch-size", "0")


def test_command_checks_before_building_the_engine(shapes_jsonl: Path) -> None:
    cases: list[tuple[tuple[str, ...], type[Exception], str]] = [
        (("--routes", "img2llm,warp"), QuestionError, "unknown route 'warp'"),
        (("--families", "colour,size"), DatasetError, "no questions of family size; the data has: colour, shape, all"),
    ]
    for argv, error, message in cases:  # both fail in milliseconds: no engine is built
        args = parse(str(shapes_jsonl), *argv)
        with pytest.raises(error, match=message):
            args.func(args)


def test_select_families_then_limit(shapes_jsonl: Path) -> None:
    items = load_dataset(shapes_jsonl)
    assert [i.question_id for i in select(items, ["shape", "all"], None)] == ["2", "q-green"]
    assert [i.question_id for i in select(items, [], 2)] == ["1", "2"]
    assert [i.question_id for i in select(items, ["colour", "all"], 1)] == ["1"]
