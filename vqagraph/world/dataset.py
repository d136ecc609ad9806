"""Shapes-world datasets: an in-memory stream for trainers and a directory layout for the evaluation harness.

Scene `i` of a dataset with seed `s` has its own seed, `scene_seed(s, i)`, so any one example can be rebuilt
without generating the ones before it, and a dataset of 100 scenes is the first 100 of one of 1000.

Layout written by `write_dataset`::

    DIR/images/ID.png   DIR/scenes/ID.json   DIR/questions.jsonl   DIR/captions.jsonl   DIR/manifest.json

`questions.jsonl` has one question per line: {"image": "images/ID.png", "question", "answers", "family",
"marks", "scene": "scenes/ID.json", "object_ids"}; paths are relative to the file. `captions.jsonl` has one
line per image: {"image", "scene", "captions": [...], "regions": [{"object_id", "box", "caption"}]}.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from vqagraph.world.captions import region_caption, scene_captions
from vqagraph.world.draw import png_bytes, render_scene
from vqagraph.world.questions import WorldQuestion, generate_questions
from vqagraph.world.scene import Scene, SceneError, generate_scene


class Example(NamedTuple):
    """One scene with its picture, whole-image captions and questions."""

    scene: Scene
    image: Image.Image
    captions: list[str]
    questions: list[WorldQuestion]


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene `index` in the dataset with this seed."""
    return int(np.random.default_rng([seed % 2**63, index]).integers(2**31))


def iter_examples(seed: int, n: int | None = None, *, per_family: int = 2, **options: Any) -> Iterator[Example]:
    """Generated examples one by one (forever when n is None); `options` go to generate_scene."""
    index = 0
    while n is None or index < n:
        scene = generate_scene(scene_seed(seed, index), id=f"{index:06d}", **options)
        questions = generate_questions(scene, np.random.default_rng([scene.seed, 1]), per_family=per_family)
        yield Example(scene, render_scene(scene), scene_captions(scene), questions)
        index += 1


def write_examples(out_dir: str | Path, examples: Iterable[Example], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write examples in the dataset layout; returns the manifest with counts (also written as manifest.json)."""
    root = Path(out_dir)
    try:
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "scenes").mkdir(exist_ok=True)
    except OSError as exc:
        raise SceneError(f"cannot create the dataset folder {str(root)!r} ({exc.strerror or exc})") from exc
    families: Counter[str] = Counter()
    scenes = 0
    try:
        with (root / "questions.jsonl").open("w", encoding="utf-8") as qfile, \
                (root / "captions.jsonl").open("w", encoding="utf-8") as cfile:
            for example in examples:
                scene = example.scene
                image, scene_path = f"images/{scene.id}.png", f"scenes/{scene.id}.json"
                (root / image).write_bytes(png_bytes(example.image))
                (root / scene_path).write_text(scene.model_dump_json(indent=1) + "\n", encoding="utf-8")
                for q in example.questions:
                    qfile.write(json.dumps({"image": image, "question": q.question, "answers": q.answers,
                                            "family": q.family, "marks": q.marks, "scene": scene_path,
                                            "object_ids": q.object_ids}) + "\n")
                    families[q.family] += 1
                regions = [{"object_id": i, "box": list(obj.box), "caption": region_caption(scene, i)}
                           for i, obj in enumerate(scene.objects)]
                cfile.write(json.dumps({"image": image, "scene": scene_path, "captions": example.captions,
                                        "regions": regions}) + "\n")
                scenes += 1
    except OSError as exc:
        raise SceneError(f"cannot write the dataset under {str(root)!r} ({exc.strerror or exc})") from exc
    summary = {**manifest, "scenes": scenes, "questions": sum(families.values()), "families": dict(families)}
    (root / "manifest.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def write_dataset(out_dir: str | Path, seed: int, n_scenes: int, *, per_family: int = 2,
                  **options: Any) -> dict[str, Any]:
    """Generate `n_scenes` scenes from `seed` and write them, their questions and captions under `out_dir`."""
    if n_scenes < 0:
        raise SceneError(f"the number of scenes must be at least 0, not {n_scenes}")
    examples = iter_examples(seed, n_scenes, per_family=per_family, **options)
    return write_examples(out_dir, examples, {"kind": "world", "seed": seed, "n": n_scenes,
                                              "per_family": per_family, "options": options})
