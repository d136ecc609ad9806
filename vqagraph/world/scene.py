"""The Shapes world's ground truth: objects, backgrounds and scenes, their geometry, and the seeded generator.

Everything a picture shows is a pure function of its `Scene`, so a scene's JSON is the whole truth about its image:
`render_scene` (draw.py) and the question generator read nothing else. Geometry lives here because the generator
needs it to keep overlaps bounded and colours readable against the background.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from vqagraph.errors import VQAGraphError

ShapeName = Literal["circle", "ellipse", "square", "rectangle", "triangle", "star", "pentagon", "hexagon"]
ColourName = Literal["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray"]
SizeWord = Literal["tiny", "small", "medium", "large"]
RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

SHAPES: tuple[str, ...] = ("circle", "ellipse", "square", "rectangle", "triangle", "star", "pentagon", "hexagon")
# The eleven basic colour terms, each far from the others so a name is never a judgement call.
COLOURS: dict[str, RGB] = {
    "red": (215, 30, 30), "green": (35, 155, 50), "blue": (35, 75, 215), "yellow": (245, 215, 35),
    "orange": (245, 135, 20), "purple": (130, 45, 170), "pink": (245, 135, 195), "brown": (125, 75, 30),
    "black": (20, 20, 20), "white": (250, 250, 250), "gray": (128, 128, 128),
}
COLOUR_ALIASES = {"grey": "gray", "violet": "purple"}
SHAPE_ALIASES = {"oval": "ellipse", "round": "circle"}
SIZE_WORDS: tuple[str, ...] = ("tiny", "small", "medium", "large")
# Size = the box's longer side / the image's shorter side. Generated sizes keep gaps between the words' ranges
# so a size word is never borderline; hand-written boxes are named by the thresholds.
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "tiny": (0.045, 0.08), "small": (0.11, 0.17), "medium": (0.21, 0.29), "large": (0.34, 0.45)}
SIZE_THRESHOLDS = ((0.095, "tiny"), (0.19, "small"), (0.315, "medium"))
ROTATABLE = ("square", "triangle", "star", "pentagon", "hexagon")  # regular shapes: turning keeps their name
JITTER = 10  # ± per channel around the colour's base RGB
MIN_CONTRAST = 90.0  # RGB distance between an object's colour and the background under it
SUPERSAMPLE = 4  # coverage is computed on a 4×4 grid per pixel: anti-aliased edges


class SceneError(VQAGraphError):
    """A scene is malformed: unknown shape or colour, a box outside the image or empty, unreadable JSON."""


def size_word(box: Box, width: int, height: int) -> str:
    """The word for a box's size relative to the image (its longer side over the image's shorter side)."""
    fraction = max(box[2] - box[0], box[3] - box[1]) / min(width, height)
    return next((word for limit, word in SIZE_THRESHOLDS if fraction < limit), "large")


def nearest_colour(rgb: RGB) -> str:
    """The basic colour name closest to an RGB triple (hand-written scenes may give RGB only)."""
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], rgb, strict=True)))


class WorldObject(BaseModel):
    """One shape: what it is, how it looks, and where (box x0, y0, x1, y1 in pixels, x1 and y1 exclusive)."""

    model_config = ConfigDict(extra="forbid")

    shape: ShapeName
    colour: ColourName
    rgb: RGB
    box: Box
    size_word: SizeWord
    rotation: float = 0.0  # degrees, counter-clockwise on screen; only regular shapes turn

    @field_validator("rgb")
    @classmethod
    def _rgb_range(cls, value: RGB) -> RGB:
        if not all(0 <= c <= 255 for c in value):
            raise ValueError(f"rgb {list(value)} must be three integers in 0..255")
        return value


class Background(BaseModel):
    """Plain (one colour), gradient (two colours along `angle` degrees) or noisy (one colour + Gaussian noise)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["plain", "gradient", "noisy"] = "plain"
    colours: list[RGB] = [(255, 255, 255)]
    angle: float = 0.0
    noise: float = 0.0  # standard deviation per channel, noisy only (0 there means 10)

    @model_validator(mode="after")
    def _enough_colours(self) -> Background:
        need = 2 if self.kind == "gradient" else 1
        if len(self.colours) < need:
            raise ValueError(f"a {self.kind} background needs {need} colour(s)")
        return self


def _normalise_object(raw: Any, width: int, height: int) -> Any:
    """Hand-written objects: shape and colour aliases, colour as a name or [r, g, b], size word from the box."""
    if not isinstance(raw, dict):
        return raw
    obj = dict(raw)
    if isinstance(obj.get("shape"), str):
        shape = obj["shape"].strip().lower()
        obj["shape"] = SHAPE_ALIASES.get(shape, shape)
        if obj["shape"] not in SHAPES:
            raise ValueError(f"unknown shape {raw['shape']!r}; use one of {', '.join(SHAPES)}")
    colour = obj.get("colour", obj.pop("color", None))
    if isinstance(colour, str):
        name = COLOUR_ALIASES.get(colour.strip().lower(), colour.strip().lower())
        if name not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; use one of {', '.join(COLOURS)} or [r, g, b]")
        obj["colour"] = name
        obj.setdefault("rgb", COLOURS[name])
    elif isinstance(colour, list | tuple) and len(colour) == 3 and all(isinstance(c, int) for c in colour):
        obj.setdefault("rgb", tuple(colour))
        obj["colour"] = nearest_colour((colour[0], colour[1], colour[2]))
    elif colour is not None:
        raise ValueError(f"colour {colour!r} must be a colour name or [r, g, b]")
    box = obj.get("box")
    if isinstance(box, list | tuple) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
        obj["box"] = tuple(round(v) for v in box)
        x0, y0, x1, y1 = obj["box"]
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box {list(box)} is empty; give x0, y0, x1, y1 with x1 > x0 and y1 > y0")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ValueError(f"box {list(box)} lies outside the {width}x{height} image")
        obj.setdefault("size_word", size_word(obj["box"], width, height))
    return obj


class Scene(BaseModel):
    """A whole picture's truth. Objects are drawn in order, later ones over earlier ones."""

    model_config = ConfigDict(extra="forbid")

    id: str = "scene"
    width: int = 256
    height: int = 256
    background: Background = Background()
    objects: list[WorldObject]
    seed: int = 0  # the background's noise and nothing else; the generator's own seed for generated scenes
    source: Literal["world", "foreign", "hand"] = "world"

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        width, height = data.get("width", 256), data.get("height", 256)
        if not (isinstance(width, int) and isinstance(height, int) and 1 <= width <= 8192 and 1 <= height <= 8192):
            raise ValueError(f"width and height must be integers in 1..8192, not {width!r} and {height!r}")
        objects = data.get("objects")
        if isinstance(objects, list):
            data = {**data, "objects": [_normalise_object(o, width, height) for o in objects]}
        return data


def load_scene(source: str | Path | dict[str, Any]) -> Scene:
    """A scene from a JSON file, JSON text or a dict, hand-written or generated; SceneError says what is wrong."""
    data: Any = source
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
        try:
            data = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise SceneError(f"scene file {str(source)!r} cannot be read ({exc.strerror or exc})") from exc
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SceneError(f"scene JSON is malformed: {exc}") from exc
    if not isinstance(data, dict):
        raise SceneError("a scene must be a JSON object with an 'objects' list")
    data.setdefault("source", "hand")
    try:
        return Scene.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SceneError(f"scene: {where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from exc


# --- geometry -----------------------------------------------------------------------------------------------


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices of the shape around the origin, y down, pointing up where it has a point."""
    if shape in ("circle", "ellipse"):
        angles = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape in ("square", "rectangle"):
        return np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])
    if shape == "star":
        angles = np.radians(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    sides = {"triangle": 3, "pentagon": 5, "hexagon": 6}[shape]
    angles = np.radians(-90 + 360 / sides * np.arange(sides))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _turned(shape: str, rotation: float) -> np.ndarray:
    points = _unit_polygon(shape)
    if shape not in ROTATABLE or rotation == 0:
        return points
    a = math.radians(-rotation)  # counter-clockwise on screen, where y points down
    return points @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])


def turned_aspect(shape: str, rotation: float) -> float:
    """Width over height of the turned shape's bounding box: a generated box has this aspect, so nothing stretches."""
    points = _turned(shape, rotation)
    span = points.max(axis=0) - points.min(axis=0)
    return float(span[0] / span[1])


def object_polygon(obj: WorldObject) -> np.ndarray:
    """The outline in pixel coordinates: the (turned) unit shape stretched to fill the box exactly."""
    points = _turned(obj.shape, obj.rotation)
    low, high = points.min(axis=0), points.max(axis=0)
    x0, y0, x1, y1 = obj.box
    return np.asarray((points - low) / (high - low) * np.array([x1 - x0, y1 - y0]) + np.array([x0, y0]))


def object_coverage(obj: WorldObject) -> np.ndarray:
    """The fraction of each pixel of the box that the shape covers (float32, box-sized), from 4×4 supersampling."""
    x0, y0, x1, y1 = obj.box
    k = SUPERSAMPLE
    layer = Image.new("L", ((x1 - x0) * k, (y1 - y0) * k), 0)
    points = (object_polygon(obj) - np.array([x0, y0])) * k - 0.5  # continuous → sub-pixel centres
    ImageDraw.Draw(layer).polygon([(float(x), float(y)) for x, y in points], fill=255)
    sub = np.asarray(layer, dtype=np.float32) / 255.0
    return np.asarray(sub.reshape(y1 - y0, k, x1 - x0, k).mean(axis=(1, 3)), dtype=np.float32)


def full_mask(obj: WorldObject, width: int, height: int) -> np.ndarray:
    """Pixels the shape covers at least half of, before anything else is drawn over it (bool, image-sized)."""
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = obj.box
    mask[y0:y1, x0:x1] = object_coverage(obj) >= 0.5
    return mask


def background_pixels(scene: Scene) -> np.ndarray:
    """The background as float32 H×W×3; noise comes from `default_rng([scene.seed, 7])`, so it is repeatable."""
    bg, h, w = scene.background, scene.height, scene.width
    first = np.array(bg.colours[0], dtype=np.float32)
    if bg.kind == "gradient":
        a = math.radians(bg.angle)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xs - w / 2) * math.cos(a) + (ys - h / 2) * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        second = np.array(bg.colours[1], dtype=np.float32)
        return np.asarray(first + t[..., None] * (second - first), dtype=np.float32)
    pixels = np.broadcast_to(first, (h, w, 3)).astype(np.float32)
    if bg.kind == "noisy":
        rng, sigma = np.random.default_rng([scene.seed % 2**63, 7]), bg.noise or 10.0
        grain = rng.normal(0, sigma, (h, w, 1)) + rng.normal(0, sigma / 3, (h, w, 3))
        pixels = np.clip(pixels + grain, 0, 255).astype(np.float32)
    return pixels


# --- generation ---------------------------------------------------------------------------------------------


def _light_colour(rng: np.random.Generator) -> RGB:
    level = rng.uniform(185, 255)
    r, g, b = (int(np.clip(level + rng.uniform(-25, 25), 0, 255)) for _ in range(3))
    return r, g, b


def _background(rng: np.random.Generator, kinds: tuple[str, ...]) -> Background:
    kind = str(rng.choice(list(kinds)))
    if kind == "plain":
        colour = (255, 255, 255) if rng.random() < 0.3 else _light_colour(rng)
        return Background(kind="plain", colours=[colour])
    if kind == "gradient":
        return Background(kind="gradient", colours=[_light_colour(rng), _light_colour(rng)],
                          angle=float(round(rng.uniform(0, 360), 1)))
    return Background(kind="noisy", colours=[_light_colour(rng)], noise=float(round(rng.uniform(5, 14), 1)))


def _image_size(rng: np.random.Generator, sides: tuple[int, int]) -> tuple[int, int]:
    lo, hi = sides
    if rng.random() < 0.4:
        side = int(rng.integers(lo, hi + 1))
        return side, side
    while True:
        width, height = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        if max(width, height) <= 2 * min(width, height):
            return width, height


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _near(a: Box, b: Box, gap: int) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _jitter(rng: np.random.Generator, base: RGB) -> RGB:
    r, g, b = (int(np.clip(c + rng.integers(-JITTER, JITTER + 1), 0, 255)) for c in base)
    return r, g, b


def _propose(rng: np.random.Generator, width: int, height: int, shapes: tuple[str, ...]) -> tuple[str, Box, float, str]:
    """A shape, its box, rotation and size word, with the box's aspect matching the turned shape."""
    shape = str(rng.choice(list(shapes)))
    word = str(rng.choice(list(SIZE_WORDS)))
    side = max(7.0, rng.uniform(*SIZE_RANGES[word]) * min(width, height))
    rotation = 0.0
    if shape in ROTATABLE:
        rotation = float(round(rng.uniform(-15, 15) if shape == "square" else rng.uniform(0, 360), 1))
    aspect = turned_aspect(shape, rotation)
    if shape in ("ellipse", "rectangle"):
        aspect = rng.uniform(1.5, 2.3) if shape == "ellipse" else rng.uniform(1.6, 2.6)
        aspect = aspect if rng.random() < 0.5 else 1 / aspect
    bw, bh = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    bw, bh = max(3, round(bw)), max(3, round(bh))
    x0, y0 = int(rng.integers(0, width - bw + 1)), int(rng.integers(0, height - bh + 1))
    return shape, (x0, y0, x0 + bw, y0 + bh), rotation, word


def generate_scene(
    rng_or_seed: np.random.Generator | int,
    *,
    id: str | None = None,
    n_objects: int | tuple[int, int] = (1, 6),
    size: tuple[int, int] | None = None,
    sides: tuple[int, int] = (128, 640),
    shapes: tuple[str, ...] = SHAPES,
    colours: tuple[str, ...] = tuple(COLOURS),
    backgrounds: tuple[str, ...] = ("plain", "gradient", "noisy"),
    max_iou: float = 0.1,
    min_visible: float = 0.75,
) -> Scene:
    """A random scene, the same for the same seed. A Generator passed in gives up one integer: the scene's seed.

    Objects never overlap by more than `max_iou` (boxes), each keeps `min_visible` of its pixels, touching
    objects differ in colour, and every colour stands `MIN_CONTRAST` away from the background under it.
    """
    seed = int(rng_or_seed.integers(2**31)) if isinstance(rng_or_seed, np.random.Generator) else int(rng_or_seed)
    unknown = [s for s in shapes if s not in SHAPES] + [c for c in colours if c not in COLOURS]
    if unknown or not shapes or not colours:
        raise SceneError(f"unknown or no shapes/colours: {unknown}; use {', '.join(SHAPES)} / {', '.join(COLOURS)}")
    lo, hi = (n_objects, n_objects) if isinstance(n_objects, int) else n_objects
    if not 1 <= lo <= hi <= 20 or not set(backgrounds) <= {"plain", "gradient", "noisy"} or not backgrounds:
        raise SceneError(f"n_objects {n_objects!r} must be 1..20 (or a range in it) and backgrounds some of plain, "
                         f"gradient, noisy, not {backgrounds!r}")
    rng = np.random.default_rng(seed)
    width, height = size or _image_size(rng, sides)
    if min(width, height) < 32:
        raise SceneError(f"image size {width}x{height} is too small; both sides must be at least 32 pixels")
    background = _background(rng, backgrounds)
    target = int(rng.integers(lo, hi + 1))
    scene = Scene(id=id or f"scene-{seed}", width=width, height=height, background=background, objects=[],
                  seed=seed, source="world")
    pixels = background_pixels(scene)
    sizes: list[int] = []  # each placed object's full pixel count
    visible: list[np.ndarray] = []  # what is left of each placed object under the ones placed after it
    for _ in range(target):
        for _attempt in range(60):
            shape, box, rotation, word = _propose(rng, width, height, shapes)
            if any(_iou(box, o.box) > max_iou for o in scene.objects):
                continue
            fields = {"shape": shape, "box": box, "size_word": word, "rotation": rotation}
            probe = WorldObject.model_validate({**fields, "colour": "red", "rgb": (0, 0, 0)})
            mask = full_mask(probe, width, height)
            if not mask.any() or any(int((v & ~mask).sum()) < min_visible * n
                                     for v, n in zip(visible, sizes, strict=True)):
                continue
            under = pixels[mask].mean(axis=0)
            taken = {o.colour for o in scene.objects if _near(box, o.box, 2)}
            options = [c for c in colours if c not in taken]
            rng.shuffle(options)
            picked = next(((c, rgb) for c in options for rgb in [_jitter(rng, COLOURS[c])]
                           if float(np.linalg.norm(np.array(rgb) - under)) >= MIN_CONTRAST), None)
            if picked is None:
                continue
            scene.objects.append(WorldObject.model_validate({**fields, "colour": picked[0], "rgb": picked[1]}))
            visible = [v & ~mask for v in visible] + [mask]
            sizes.append(int(mask.sum()))
            break
    if not scene.objects:  # 60 tries always place one object on an empty canvas unless the colours all fail
        raise SceneError(f"no object could be placed (seed {seed}); allow more colours or shapes")
    return scene
