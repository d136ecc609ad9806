"""The held-out splits every quality number in the README comes from, each from a fixed seed no training run draws.

Training scenes take their seeds from `default_rng([train_seed, 1])` streams (lab/vqagraph_lab/text_route); these
splits take theirs from `scene_seed(SPLIT_SEED, index)`, so no scene is shared. `validation` tunes (the router's
cues and thresholds), `test` only measures. Each split keeps exactly `questions` questions, taken round-robin
over scenes so that many scenes contribute, with `knowledge` kept apart (it measures the LLM, not the vision).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vqagraph.world.dataset import Example, iter_examples, write_examples
from vqagraph.world.foreign import foreign_examples
from vqagraph.world.questions import WorldQuestion, generate_questions
from vqagraph.world.scene import SceneError

SPLIT_SEEDS = {"validation": 1_000_001, "test": 2_000_002, "single-large": 3_000_003, "foreign": 4_000_004,
               "knowledge": 5_000_005}
# Splits made from another's scenes: `paraphrase` rewords the test split's questions (vqagraph/world/paraphrase.py,
# reached only from here) and keeps those it can reword, so it may hold fewer than `questions`.
DERIVED_SPLITS = {"paraphrase": "test"}
VISION_FAMILIES = ("colour", "shape", "count", "exists", "position", "size", "marked")


def _capped(examples: Iterator[Example], questions: int, per_scene: int) -> Iterator[Example]:
    """Examples with at most `per_scene` questions each, until `questions` questions in all."""
    left = questions
    for example in examples:
        if left <= 0:
            return
        keep = example.questions[: min(per_scene, left)]
        if keep:
            left -= len(keep)
            yield example._replace(questions=keep)


def _mixed(examples: Iterator[Example], families: tuple[str, ...]) -> Iterator[Example]:
    """Questions of `families` only, interleaved by family, starting one family further at each scene, so that
    capping a scene's questions still leaves every family its share. Within a family the order is shuffled
    (seeded by the scene): the generator lists `exists`' yes questions before its no questions, and taking
    the first of each family made every held-out `exists` question a "yes"."""
    for index, example in enumerate(examples):
        turn = index % len(families)
        order = families[turn:] + families[:turn]
        rng = np.random.default_rng([example.scene.seed, 2])
        by_family = [[q for q in example.questions if q.family == f] for f in order]
        for group in by_family:
            rng.shuffle(group)
        mixed: list[WorldQuestion] = []
        while any(by_family):
            for group in by_family:
                if group:
                    mixed.append(group.pop(0))
        yield example._replace(questions=mixed)


def _single_large(seed: int) -> Iterator[Example]:
    """Scenes of one large object, asked its colour and its shape."""
    for example in iter_examples(seed, None, n_objects=1):
        if example.scene.objects[0].size_word != "large":
            continue
        rng = np.random.default_rng([example.scene.seed, 1])
        questions = generate_questions(example.scene, rng, per_family=1, families=("colour", "shape"))
        yield example._replace(questions=questions)


def split_examples(name: str, questions: int = 300, per_scene: int = 4) -> Iterator[Example]:
    """The examples of split `name` (see SPLIT_SEEDS), exactly `questions` questions when the world allows."""
    if name in DERIVED_SPLITS:
        from vqagraph.world.paraphrase import paraphrase_examples

        return paraphrase_examples(split_examples(DERIVED_SPLITS[name], questions, per_scene))
    if name not in SPLIT_SEEDS:
        raise SceneError(f"unknown split {name!r}; splits: {', '.join([*SPLIT_SEEDS, *DERIVED_SPLITS])}")
    seed = SPLIT_SEEDS[name]
    if name == "single-large":
        return _capped(_single_large(seed), questions, 2)
    if name == "knowledge":
        return _capped(_mixed(iter_examples(seed, None), ("knowledge",)), questions, per_scene)
    source = foreign_examples(seed, None) if name == "foreign" else iter_examples(seed, None)
    return _capped(_mixed(source, VISION_FAMILIES), questions, per_scene)


def write_split(name: str, out_dir: str | Path, questions: int = 300, per_scene: int = 4) -> dict[str, Any]:
    """Write split `name` in the dataset layout (questions.jsonl is what `vqagraph eval` reads)."""
    return write_examples(out_dir, split_examples(name, questions, per_scene),
                          {"kind": "split", "split": name, "seed": SPLIT_SEEDS[DERIVED_SPLITS.get(name, name)],
                           "questions": questions, "per_scene": per_scene})
