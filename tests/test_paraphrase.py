"""The `paraphrase` split: fixed, reworded beyond the generator's phrasings, answers and marks carried, and out of
the trainers' reach."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vqagraph.world.dataset import scene_seed
from vqagraph.world.paraphrase import candidates, generator_phrasing, paraphrases
from vqagraph.world.questions import WorldQuestion, generate_questions
from vqagraph.world.scene import generate_scene
from vqagraph.world.splits import VISION_FAMILIES, split_examples, write_split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generated() -> list[WorldQuestion]:
    """Many of the generator's questions: 200 scenes, every family, up to 6 questions each."""
    out: list[WorldQuestion] = []
    for i in range(200):
        scene = generate_scene(scene_seed(777, i), id=f"{i:06d}")
        out += generate_questions(scene, np.random.default_rng([scene.seed, 1]), per_family=6)
    return out


@pytest.fixture(scope="module")
def pairs() -> list[tuple[WorldQuestion, WorldQuestion]]:
    """(test-split question, its paraphrase) for the first 84 test questions, matched scene by scene."""
    source = {e.scene.seed: e.questions for e in split_examples("test", 84)}
    reworded = list(split_examples("paraphrase", 84))
    assert [e.scene.seed for e in reworded] == list(source)  # the test split's scenes, in order
    out = []
    for example in reworded:
        assert len(example.questions) == len(source[example.scene.seed])  # every one of these has a rewrite
        out += list(zip(source[example.scene.seed], example.questions, strict=True))
    return out


def test_the_generators_grammar_covers_what_it_generates(generated: list[WorldQuestion]) -> None:
    assert {q.family for q in generated} >= set(VISION_FAMILIES)
    assert [q.question for q in generated if not generator_phrasing(q.question)] == []
    # every vision question of the generator has rewrites, and none is a phrasing the generator could produce
    texts = {q.question.lower() for q in generated}
    for q in generated:
        if q.family == "knowledge":
            continue
        options = candidates(q)
        assert options, q.question
        assert paraphrases(q) == options, q.question  # the grammar check never has to drop a rewrite
        assert not any(o.lower() in texts or generator_phrasing(o) for o in options), q.question


def test_the_split_is_fixed(pairs: list[tuple[WorldQuestion, WorldQuestion]]) -> None:
    again = [q.question for e in split_examples("paraphrase", 84) for q in e.questions]
    assert again == [new.question for _, new in pairs]


def test_paraphrases_keep_answers_and_marks_and_leave_the_generators_wording(
        pairs: list[tuple[WorldQuestion, WorldQuestion]], generated: list[WorldQuestion]) -> None:
    texts = {q.question.lower() for q in generated}
    assert {new.family for _, new in pairs} == set(VISION_FAMILIES)
    assert len({new.question for _, new in pairs}) > len(pairs) // 2  # not one wording for all
    for old, new in pairs:
        assert new.question != old.question and not generator_phrasing(new.question)
        assert new.question.lower() not in texts
        assert (new.answers, new.family, new.marks, new.object_ids) == (old.answers, old.family, old.marks,
                                                                       old.object_ids)
        if re.search(r"\bcolou?r\b", old.question):  # spelt the other way
            assert re.search(r"\bcolour\b" if "color" in old.question else r"\bcolor\b", new.question)
        if old.family == "marked":  # the mark's phrase kept word for word, so the engine reads which mark is meant
            phrase = re.search(r"(?:within|with|at|pointed to by) the \w+ \w+", old.question)
            assert old.marks and phrase is not None and phrase.group(0) in new.question


def test_write_split_paraphrase(tmp_path: Path) -> None:
    summary = write_split("paraphrase", tmp_path, 12)
    rows = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    assert summary["questions"] == len(rows) == 12 and summary["seed"] == 2_000_002
    assert all({"image", "question", "answers", "family", "marks", "scene", "object_ids"} <= set(row) for row in rows)
    assert all((tmp_path / row["image"]).is_file() and (tmp_path / row["scene"]).is_file() for row in rows)
    assert not any(generator_phrasing(row["question"]) for row in rows)


def test_no_trainer_reaches_the_paraphrases() -> None:
    """The rewordings live in paraphrase.py alone: nothing the trainers or the generator read imports it."""
    reach = re.compile(r"paraphrase_examples|world\.paraphrase|import paraphrase|[\"']paraphrase[\"']")
    sources = [*(ROOT / "lab" / "vqagraph_lab").rglob("*.py"),
               *(ROOT / "vqagraph" / "world" / name for name in ("questions.py", "dataset.py", "scene.py",
                                                                 "captions.py", "__init__.py"))]
    assert len(sources) > 15 and all(p.is_file() for p in sources)
    assert [str(p) for p in sources if reach.search(p.read_text(encoding="utf-8"))] == []
