"""The Shapes world: determinism, ground truth against pixels, unambiguous questions, scenes by hand, CLI, foreign."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqagraph.errors import VQAGraphError
from vqagraph.tools.visual_prompt import Mark, mark_phrase
from vqagraph.world import (
    COLOURS,
    FAMILIES,
    SHAPES,
    Scene,
    SceneError,
    generate_questions,
    generate_scene,
    iter_examples,
    load_scene,
    object_mask,
    region_caption,
    render_scene,
    scene_captions,
    write_dataset,
    write_foreign_dataset,
)
from vqagraph.world.captions import PLURALS, centre
from vqagraph.world.cli import add_world_commands
from vqagraph.world.draw import png_bytes
from vqagraph.world.foreign import IMAGE_SIZES, foreign_examples
from vqagraph.world.questions import WorldQuestion
from vqagraph.world.scene import MIN_CONTRAST, background_pixels, full_mask, nearest_colour

SIZES = "tiny|small|medium|large"
COLOUR_RE = "|".join(COLOURS)
SHAPE_RE = "|".join(SHAPES)
REFERENCE = re.compile(rf"\bthe (?:({SIZES}) )?(?:({COLOUR_RE}) )?({SHAPE_RE}|shape|one)\b")
PLURAL_TO_SHAPE = {v: k for k, v in PLURALS.items()}


@pytest.fixture(scope="module")
def examples() -> list[tuple[Scene, list[WorldQuestion]]]:
    return [(ex.scene, ex.questions) for ex in iter_examples(11, 50)]


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix, iy = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def test_same_seed_same_scene_bytes_and_questions() -> None:
    first, second = generate_scene(123), generate_scene(123)
    assert first.model_dump_json() == second.model_dump_json()
    assert png_bytes(render_scene(first)) == png_bytes(render_scene(second))
    qs = [generate_questions(first, np.random.default_rng(4)) for _ in range(2)]
    assert [q.model_dump() for q in qs[0]] == [q.model_dump() for q in qs[1]]
    assert generate_scene(124).model_dump_json() != first.model_dump_json()
    # a Generator gives up one seed; the scene records it and regenerates from it alone
    from_rng = generate_scene(np.random.default_rng(9))
    assert generate_scene(from_rng.seed, id=from_rng.id) == from_rng
    # the JSON is the whole truth: it round-trips and renders the same pixels
    back = Scene.model_validate_json(first.model_dump_json())
    assert back == first and png_bytes(render_scene(back)) == png_bytes(render_scene(first))


def test_scenes_follow_the_rules() -> None:
    kinds: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    square = oblong = 0
    for seed in range(30):
        scene = generate_scene(seed)
        assert 1 <= len(scene.objects) <= 6 and 128 <= scene.width <= 640 and 128 <= scene.height <= 640
        square += scene.width == scene.height
        oblong += scene.width != scene.height
        kinds[scene.background.kind] += 1
        pixels = np.asarray(render_scene(scene)).astype(int)
        assert pixels.shape == (scene.height, scene.width, 3)
        background = background_pixels(scene)
        for i, obj in enumerate(scene.objects):
            sizes[obj.size_word] += 1
            assert nearest_colour(obj.rgb) == obj.colour
            whole, mask = full_mask(obj, scene.width, scene.height), object_mask(scene, i)
            assert mask.sum() >= 0.75 * whole.sum() > 0, "every object keeps most of its pixels"
            x0, y0, x1, y1 = obj.box
            ys, xs = np.nonzero(mask)
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1, "the box holds the mask"
            distance = np.abs(pixels[mask] - np.array(obj.rgb)).max(axis=1)
            assert np.median(distance) == 0 and (distance == 0).mean() >= 0.6, "the mask shows the object's colour"
            assert np.linalg.norm(background[whole].mean(axis=0) - np.array(obj.rgb)) >= MIN_CONTRAST
            for other in scene.objects[:i]:
                assert _iou(obj.box, other.box) <= 0.1
    assert set(kinds) == {"plain", "gradient", "noisy"} and set(sizes) == {"tiny", "small", "medium", "large"}
    assert square and oblong


def test_generator_options() -> None:
    scene = generate_scene(3, n_objects=1, size=(300, 200), backgrounds=("noisy",), shapes=("star",), colours=("red",))
    assert (scene.width, scene.height, scene.background.kind) == (300, 200, "noisy")
    assert [(o.shape, o.colour) for o in scene.objects] == [("star", "red")]
    many = generate_scene(4, n_objects=6, sides=(400, 400))
    assert many.width == many.height == 400 and len(many.objects) >= 5
    with pytest.raises(SceneError, match="unknown"):
        generate_scene(1, shapes=("blob",))
    with pytest.raises(SceneError, match="n_objects"):
        generate_scene(1, n_objects=0)


def _referents(scene: Scene, size: str | None, colour: str | None, noun: str) -> list[int]:
    return [i for i, o in enumerate(scene.objects)
            if (size is None or o.size_word == size) and (colour is None or o.colour == colour)
            and (noun in ("shape", "one") or o.shape == noun)]


def _check(scene: Scene, q: WorldQuestion) -> None:
    """Re-derive the question's referents and answer from the ground truth alone."""
    text = q.question
    for mark in q.marks:
        phrase = mark_phrase(Mark(**mark))
        assert phrase in text
        text = text.replace(f"the shape {phrase}", "MARK").replace(phrase, "MARK")
    found = []
    for size, colour, noun in REFERENCE.findall(text):
        ids = _referents(scene, size or None, colour or None, noun)
        assert len(ids) == 1, f"{q.question!r} could be about objects {ids}"
        assert ids[0] in q.object_ids
        found.append(ids[0])
    objects = scene.objects
    if q.family == "colour":
        assert q.answers[0] == objects[found[0]].colour
    if q.family == "shape":
        if not found:
            colour = re.fullmatch(r"(?:Which|What) shape is (\w+)\?", text).group(1)  # type: ignore[union-attr]
            found = _referents(scene, None, colour, "shape")
            assert len(found) == 1
        assert q.answers == [objects[found[0]].shape]
    if q.family == "marked":
        assert len(q.marks) == 1 and q.marks[0]["shape"] in {"rectangle", "ellipse", "point", "arrow", "triangle",
                                                               "scribble"}
        assert q.answers[0] in (objects[q.object_ids[0]].colour, objects[q.object_ids[0]].shape)
    if q.family == "count":
        match = re.fullmatch(rf"How many (?:({COLOUR_RE}) )?(\w+) (?:are there|are in the picture|can you see|"
                             r"are in the image)\?", text)
        assert match, text
        noun = PLURAL_TO_SHAPE.get(match.group(2), "shape")
        assert q.answers[0] == str(len(_referents(scene, None, match.group(1), noun)))
    if q.family == "exists":
        match = re.search(rf"(?:an? |any )(?:({COLOUR_RE}) )?({SHAPE_RE}|shapes?)\b", text)
        assert match, text
        noun = match.group(2) if match.group(2) in SHAPES else "shape"
        assert q.answers == ["yes" if _referents(scene, None, match.group(1), noun) else "no"]
    what = re.fullmatch(r"(?:What is|Which shape is) (?:to the )?(left of|right of|above|below) the .*\?", text)
    if what:
        side = what.group(1).split()[0]
        (bx, by) = centre(objects[found[0]])
        there = [i for i, o in enumerate(objects) if i != found[0] and {
            "left": centre(o)[0] < bx, "right": centre(o)[0] > bx, "above": centre(o)[1] < by,
            "below": centre(o)[1] > by}[side]]
        assert there == [q.object_ids[0]]
        assert q.answers[0] == f"{objects[there[0]].colour} {objects[there[0]].shape}"
    which = re.fullmatch(r"Which is (bigger|larger|smaller), the .* or the .*\?", text)
    compare = re.fullmatch(r"Is the .* (bigger|larger|smaller) than the .*\?", text)
    if which or compare:
        a, b = (full_mask(objects[i], scene.width, scene.height).sum() for i in found)
        assert max(a, b) >= 1.9 * min(a, b), "sizes compared only when clearly different"
        smaller = (which or compare).group(1) == "smaller"  # type: ignore[union-attr]
        if which:
            target = found[0] if (a < b) == smaller else found[1]
            assert q.object_ids[0] == target and q.answers[0] in text
        else:
            assert q.answers == ["yes" if (a < b) == smaller else "no"]
    relation = re.fullmatch(r"Is the .* (left|right|above|below|over|under|on the left|on the right|to the left|"
                            r"to the right) (?:of )?the .*\?", text)
    if relation:
        side = {"over": "above", "under": "below"}.get(relation.group(1).split()[-1], relation.group(1).split()[-1])
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = (objects[i].box for i in found)
        holds = {"left": ax1 <= bx0, "right": ax0 >= bx1, "above": ay1 <= by0, "below": ay0 >= by1}[side]
        opposite = {"left": ax0 >= bx1, "right": ax1 <= bx0, "above": ay0 >= by1, "below": ay1 <= by0}[side]
        assert holds != opposite and q.answers == ["yes" if holds else "no"]
    assert q.answers and all(a == a.lower() for a in q.answers)


def test_questions_are_unambiguous_and_true(examples: list[tuple[Scene, list[WorldQuestion]]]) -> None:
    for scene, questions in examples:
        for q in questions:
            _check(scene, q)


def test_every_family_appears_and_yes_no_balance(examples: list[tuple[Scene, list[WorldQuestion]]]) -> None:
    families = Counter(q.family for _, qs in examples for q in qs)
    assert set(families) == set(FAMILIES) and min(families.values()) >= 20
    exists = Counter(q.answers[0] for _, qs in examples for q in qs if q.family == "exists")
    assert exists["yes"] == exists["no"]
    relations = Counter(q.answers[0] for _, qs in examples for q in qs if q.answers[0] in ("yes", "no")
                        and q.family in ("position", "size"))
    assert relations["yes"] and relations["no"]
    counts = [q for _, qs in examples for q in qs if q.family == "count"]
    assert all(q.answers[1] in ("zero", "one", "two", "three", "four", "five", "six") for q in counts)
    gray = [q for _, qs in examples for q in qs if q.family == "colour" and q.answers[0] == "gray"]
    assert all("grey" in q.answers for q in gray)


def test_captions() -> None:
    scene = load_scene({"width": 300, "height": 300, "objects": [
        {"shape": "circle", "colour": "red", "box": [10, 10, 50, 50]},
        {"shape": "square", "colour": "blue", "box": [130, 130, 200, 200]},
        {"shape": "star", "colour": "green", "box": [240, 250, 290, 295]}]})
    captions = scene_captions(scene)
    assert captions[0] == "three shapes: a red circle, a blue square and a green star"
    assert "a picture of a red circle, a blue square and a green star" in captions
    assert region_caption(scene, 0) == "a small red circle at the top left"
    assert region_caption(scene, 1) == "a medium blue square in the center"
    assert region_caption(scene, 2) == "a small green star at the bottom right"
    rng = np.random.default_rng(0)
    phrasings = {region_caption(scene, 0, rng) for _ in range(40)}
    assert len(phrasings) >= 3 and all("red circle" in p for p in phrasings)


def test_hand_written_scene_renders(tmp_path: Path) -> None:
    path = tmp_path / "scene.json"
    path.write_text(json.dumps({"width": 200, "height": 100, "objects": [
        {"shape": "circle", "colour": "red", "box": [10, 10, 50, 50]},
        {"shape": "Square", "color": [0, 0, 250], "box": [100, 20, 160, 80]}]}))
    scene = load_scene(path)
    assert scene.source == "hand" and scene.background.kind == "plain"
    assert [o.colour for o in scene.objects] == ["red", "blue"] and scene.objects[1].rgb == (0, 0, 250)
    image = render_scene(scene)
    assert image.size == (200, 100) and image.mode == "RGB"
    assert image.getpixel((30, 30)) == COLOURS["red"] and image.getpixel((130, 50)) == (0, 0, 250)
    assert image.getpixel((5, 5)) == (255, 255, 255) and image.getpixel((12, 12)) == (255, 255, 255)
    questions = generate_questions(scene, np.random.default_rng(0))
    colour = {(q.object_ids[0], q.answers[0]) for q in questions if q.family == "colour"}
    assert colour == {(0, "red"), (1, "blue")}
    assert all("the circle" in q.question or "the square" in q.question for q in questions if q.family == "colour")


@pytest.mark.parametrize(("objects", "words"), [
    ([{"shape": "blob", "colour": "red", "box": [0, 0, 10, 10]}], "unknown shape 'blob'"),
    ([{"shape": "circle", "colour": "mauve", "box": [0, 0, 10, 10]}], "unknown colour 'mauve'"),
    ([{"shape": "circle", "colour": "red", "box": [0, 0, 300, 10]}], "outside the 256x256 image"),
    ([{"shape": "circle", "colour": "red", "box": [20, 10, 20, 30]}], "is empty"),
    ([{"shape": "circle", "colour": "red"}], "box"),
])
def test_invalid_hand_written_scenes(objects: list[dict[str, object]], words: str) -> None:
    with pytest.raises(SceneError, match=re.escape(words)) as caught:
        load_scene({"objects": objects})
    assert isinstance(caught.value, VQAGraphError) and "\n" not in str(caught.value)


def test_unreadable_scene_files(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="cannot be read"):
        load_scene(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SceneError, match="malformed"):
        load_scene(tmp_path / "bad.json")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqagraph")
    add_world_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_generate_and_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["world", "generate", "--seed", "3", "--n", "3", "-o", str(tmp_path / "ds")])
    assert args.func(args) == 0
    assert "3 world scenes" in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "ds" / "questions.jsonl").read_text().splitlines()]
    assert lines and all(set(line) == {"image", "question", "answers", "family", "marks", "scene", "object_ids"}
                         for line in lines)
    for line in lines:
        assert (tmp_path / "ds" / line["image"]).is_file() and (tmp_path / "ds" / line["scene"]).is_file()
    first = lines[0]
    scene = load_scene(tmp_path / "ds" / first["scene"])
    assert scene.source == "world" and scene.id == "000000"
    out = tmp_path / "again.png"
    args = _parser().parse_args(["world", "render", str(tmp_path / "ds" / first["scene"]), "-o", str(out)])
    assert args.func(args) == 0
    assert Image.open(out).tobytes() == Image.open(tmp_path / "ds" / first["image"]).tobytes()
    again = write_dataset(tmp_path / "ds2", 3, 3)
    assert (tmp_path / "ds2" / "questions.jsonl").read_bytes() == (tmp_path / "ds" / "questions.jsonl").read_bytes()
    assert again["scenes"] == 3
    args = _parser().parse_args(["world", "render", str(tmp_path / "nope.json"), "-o", str(out)])
    with pytest.raises(SceneError):
        args.func(args)


def test_foreign_dataset_writes(tmp_path: Path) -> None:
    args = _parser().parse_args(["world", "generate", "--seed", "1", "--n", "4", "--foreign", "-o", str(tmp_path)])
    assert args.func(args) == 0
    lines = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    assert {line["image"] for line in lines} <= {f"images/f{i:06d}.png" for i in range(4)}
    assert json.loads((tmp_path / "manifest.json").read_text())["kind"] == "foreign"
    families: Counter[str] = Counter()
    for example in foreign_examples(1, 12):
        scene, pixels = example.scene, np.asarray(example.image)
        assert scene.source == "foreign" and (scene.width, scene.height) in IMAGE_SIZES
        colours = {colour for _, colour in example.image.getcolors(maxcolors=1 << 16) or []}
        assert colours == {scene.background.colours[0], *(o.rgb for o in scene.objects)}, "flat, no anti-aliasing"
        for obj in scene.objects:
            ys, xs = np.nonzero((pixels == np.array(obj.rgb)).all(axis=-1))
            if sum(o.rgb == obj.rgb for o in scene.objects) == 1:
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == obj.box, "the box is tight"
        for q in example.questions:
            _check(scene, q)
            families[q.family] += 1
    assert set(families) == set(FAMILIES)
    summary = write_foreign_dataset(tmp_path / "again", 1, 4)
    assert (tmp_path / "again" / "questions.jsonl").read_bytes() == (tmp_path / "questions.jsonl").read_bytes()
    assert summary["scenes"] == 4


def test_held_out_splits_are_fixed_exact_and_apart(tmp_path: Path) -> None:
    from vqagraph.world.splits import SPLIT_SEEDS, VISION_FAMILIES, split_examples, write_split

    first = [(e.scene.seed, [q.question for q in e.questions]) for e in split_examples("validation", 40)]
    again = [(e.scene.seed, [q.question for q in e.questions]) for e in split_examples("validation", 40)]
    assert first == again and sum(len(qs) for _, qs in first) == 40
    test = {e.scene.seed for e in split_examples("test", 40)}
    assert test.isdisjoint(seed for seed, _ in first)
    families = {q.family for e in split_examples("test", 40) for q in e.questions}
    assert families == set(VISION_FAMILIES)  # every family gets its share, knowledge is kept apart
    single = list(split_examples("single-large", 10))
    assert all(len(e.scene.objects) == 1 and e.scene.objects[0].size_word == "large" for e in single)
    assert {q.family for e in single for q in e.questions} == {"colour", "shape"}
    assert {q.family for e in split_examples("knowledge", 6) for q in e.questions} == {"knowledge"}
    assert len(set(SPLIT_SEEDS.values())) == len(SPLIT_SEEDS)
    summary = write_split("foreign", tmp_path / "foreign", 12)
    assert summary["questions"] == 12 and (tmp_path / "foreign" / "questions.jsonl").read_text().count("\n") == 12
    with pytest.raises(SceneError, match="unknown split"):
        list(split_examples("training", 3))


def test_held_out_exists_questions_are_answered_yes_and_no() -> None:
    """A split that takes each family's first question would ask only yes-questions of `exists` (the generator
    lists them first): a route that always says "yes" would score 100 there."""
    from collections import Counter

    from vqagraph.world.splits import split_examples

    for split in ("validation", "test", "foreign"):
        answers = Counter(q.answers[0] for e in split_examples(split, 140) for q in e.questions if q.family == "exists")
        assert sum(answers.values()) >= 15
        assert min(answers["yes"], answers["no"]) >= 0.25 * sum(answers.values()), (split, answers)
