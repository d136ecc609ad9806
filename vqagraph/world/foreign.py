"""Foreign scenes: the same kinds of objects drawn by deliberately different, plainer code.

Models trained on the generator's pictures might learn its quirks (anti-aliased edges, jittered colours, light
noisy backgrounds, its size ranges). This drawer shares none of them: flat `ImageDraw` primitives without
anti-aliasing, CSS named colours, plain backgrounds, fixed photo-like image sizes, no overlap. Only the Scene
model and the question generator are shared, so the questions ask the same things.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageColor, ImageDraw

from vqagraph.world.captions import scene_captions
from vqagraph.world.dataset import Example, scene_seed, write_examples
from vqagraph.world.questions import generate_questions
from vqagraph.world.scene import Background, Scene, WorldObject, size_word

IMAGE_SIZES = ((300, 200), (512, 384), (200, 300), (384, 512), (400, 400), (256, 192), (640, 480), (224, 224))
BACKGROUNDS = ("white", "white", "whitesmoke", "ivory", "lavender", "honeydew", "lightgray", "beige")
# The CSS colour each basic term is drawn in: pure, un-jittered, not the generator's palette.
CSS = {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow", "orange": "darkorange",
       "purple": "purple", "pink": "hotpink", "brown": "saddlebrown", "black": "black", "white": "white",
       "gray": "gray"}
SHAPES = ("circle", "ellipse", "square", "rectangle", "triangle", "star", "pentagon", "hexagon")
# The rotation in the Scene model's convention that matches how ImageDraw orients each shape (flat bottom).
ROTATION = {"hexagon": 30.0}


def _rgb(name: str) -> tuple[int, int, int]:
    r, g, b = ImageColor.getrgb(name)[:3]
    return r, g, b


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, tall: bool, fill: Any) -> None:
    """One shape, centred, of "radius" r; ellipses and rectangles are twice as long one way as the other."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape in ("ellipse", "rectangle"):
        rx, ry = (r / 2, r) if tall else (r, r / 2)
        (draw.ellipse if shape == "ellipse" else draw.rectangle)((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8), fill=fill)
    elif shape == "star":
        points = [(cx + (r if k % 2 == 0 else 0.4 * r) * math.cos(math.radians(-90 + 36 * k)),
                   cy + (r if k % 2 == 0 else 0.4 * r) * math.sin(math.radians(-90 + 36 * k))) for k in range(10)]
        draw.polygon(points, fill=fill)
    else:
        draw.regular_polygon((cx, cy, r), {"triangle": 3, "pentagon": 5, "hexagon": 6}[shape], fill=fill)


def foreign_example(seed: int, *, id: str | None = None) -> tuple[Scene, Image.Image, list[np.ndarray]]:
    """A foreign scene, its picture and each object's pixel mask (nothing overlaps, so masks are whole)."""
    rng = np.random.default_rng([seed, 97])
    width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    bg_rgb = _rgb(background)
    image = Image.new("RGB", (width, height), bg_rgb)
    draw = ImageDraw.Draw(image)
    objects: list[WorldObject] = []
    masks: list[np.ndarray] = []
    taken: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(40):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            r = float(rng.uniform(8, 0.2 * min(width, height)))
            cx, cy = float(rng.uniform(r + 1, width - r - 1)), float(rng.uniform(r + 1, height - r - 1))
            reach = (cx - r - 4, cy - r - 4, cx + r + 4, cy + r + 4)  # 4 px of clear space around each shape
            if any(a[0] < reach[2] and reach[0] < a[2] and a[1] < reach[3] and reach[1] < a[3] for a in taken):
                continue
            colours = [c for c in CSS if sum((a - b) ** 2 for a, b in zip(_rgb(CSS[c]), bg_rgb, strict=True)) > 80**2]
            colour = colours[int(rng.integers(len(colours)))]
            tall = bool(rng.random() < 0.5)
            alone = Image.new("L", (width, height), 0)
            _draw(ImageDraw.Draw(alone), shape, cx, cy, r, tall, 255)
            mask = np.asarray(alone) > 0
            bbox = alone.getbbox()
            if bbox is None:
                continue
            _draw(draw, shape, cx, cy, r, tall, _rgb(CSS[colour]))
            box = (bbox[0], bbox[1], bbox[2], bbox[3])
            objects.append(WorldObject.model_validate({
                "shape": shape, "colour": colour, "rgb": _rgb(CSS[colour]), "box": box,
                "size_word": size_word(box, width, height), "rotation": ROTATION.get(shape, 0.0)}))
            masks.append(mask)
            taken.append(reach)
            break
    scene = Scene(id=id or f"foreign-{seed}", width=width, height=height,
                  background=Background(kind="plain", colours=[bg_rgb]), objects=objects, seed=seed, source="foreign")
    return scene, image, masks


def foreign_examples(seed: int, n: int | None, *, per_family: int = 2) -> Iterator[Example]:
    """Foreign examples one by one, as iter_examples yields the generator's; questions from generate_questions."""
    index = 0
    while n is None or index < n:
        scene, image, masks = foreign_example(scene_seed(seed, index), id=f"f{index:06d}")
        questions = generate_questions(scene, np.random.default_rng([scene.seed, 1]), per_family=per_family,
                                       masks=masks, areas=[int(m.sum()) for m in masks])
        yield Example(scene, image, scene_captions(scene), questions)
        index += 1


def write_foreign_dataset(out_dir: str | Path, seed: int, n: int, *, per_family: int = 2) -> dict[str, Any]:
    """The foreign test set in write_dataset's layout (images/, scenes/, questions.jsonl, captions.jsonl)."""
    return write_examples(out_dir, foreign_examples(seed, n, per_family=per_family),
                          {"kind": "foreign", "seed": seed, "n": n, "per_family": per_family})
