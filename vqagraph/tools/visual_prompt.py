"""ViP-LLaVA visual prompts (docs/methods.md §4): marks drawn on an image so a user can point at a region.

Each mark goes on its own transparent RGBA layer that is alpha-composited onto the picture, so only the mark's
pixels change: X̂ = α·P + (1−α)·X. Sizes scale with max(W, H) / 336, the input size ViP-LLaVA was trained at.
Random details (triangle corners, scribble control points, arrow angle, length and head) come from
`numpy.random.default_rng([seed, index])`, so the same call always gives the same bytes.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from vqagraph.errors import MarkError
from vqagraph.media import open_regular

# docs/methods.md §4: ViP-LLaVA's colour pool. Only these have names in a phrase; other RGB colours are "marked".
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "lime": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "fuchsia": (255, 0, 255), "aqua": (0, 255, 255), "orange": (255, 165, 0), "purple": (128, 0, 128),
    "gold": (255, 215, 0),
}
COLOUR_ALIASES = {"green": "lime"}
SHAPES: tuple[str, ...] = ("rectangle", "ellipse", "triangle", "point", "arrow", "scribble", "mask", "mask_contour")
SHAPE_ALIASES = {"box": "rectangle", "circle": "ellipse", "mask-contour": "mask_contour",
                 "mask contour": "mask_contour"}
# docs/methods.md §4: the phrase is "{word1} the {colour} {word2}".
PHRASE_WORDS = {
    "rectangle": ("within", "rectangle"), "ellipse": ("within", "ellipse"), "triangle": ("with", "triangle"),
    "point": ("at", "point"), "scribble": ("with", "scribble"), "mask_contour": ("with", "mask contour"),
    "mask": ("with", "mask"), "arrow": ("pointed to by", "arrow"),
}
# docs/methods.md §4: width (point: radius) at a 336-pixel image, the constant inside ViP's ranges; × max(W, H) / 336.
SIZE_AT_336 = {"rectangle": 3, "ellipse": 3, "triangle": 3, "arrow": 3, "scribble": 5, "mask_contour": 2,
               "point": 8, "mask": 1}
ELLIPSE_RATIO = 1.2  # ViP enlarges the box 1–1.5× about its centre
MAX_ANGLE = 150.0  # degrees; ViP rejects flatter triangles
ARROW_MAX_LENGTH = 50  # pixels at 336
# Limits on what a caller may ask to draw, so no mark costs more than the image itself (drawing cost grows with a
# width's square, and a scribble or mask contour pays it at every point of its stroke).
MAX_MARKS = 8  # marks on one image
MAX_POINTS = 1000  # points in a polygon or a path
MAX_WIDTH = 1024  # pixels: any width (a point's radius), checked before the image is known
WIDTH_DIVISOR = 8  # a width (a point's radius) is at most max(W, H) / 8 of the image it is drawn on (and 1 always)
COORD_FACTOR = 10  # coordinates lie within ±10 × max(W, H): far enough off the picture to be clipped, no further
MAX_MASK_BYTES = 64 * 2**20  # a mask image file
REGIONS: dict[str, tuple[str, ...]] = {
    "point": ("point", "box"), "mask": ("polygon", "mask_path", "box"), "mask_contour": ("polygon", "mask_path", "box"),
    "scribble": ("polygon", "mask_path", "box", "path"), "rectangle": ("box", "polygon"), "ellipse": ("box", "polygon"),
    "triangle": ("box", "polygon", "path"), "arrow": ("box", "polygon", "path"),
}
# A `path` is a stroke the user drew (the web page): drawn as given instead of ViP's random one in a region.
PATH_POINTS = {"arrow": (2, 2), "triangle": (3, 3), "scribble": (2, None)}  # (fewest, most) points
SYNTAX = (f"expected SHAPE:COORDS[:COLOUR], e.g. rectangle:20,30,120,90:red or point:0.5,0.5:#00ff00 (SHAPE one of "
          f"{', '.join(SHAPES)}; COORDS 4 numbers = box x0,y0,x1,y1, 2 = point, 6 or more = polygon x,y,x,y,..., all "
          "in [0, 1] = fractions of the image, or @PATH = a mask image; COLOUR a name or #rrggbb)")
Shape = Literal["rectangle", "ellipse", "triangle", "point", "arrow", "scribble", "mask", "mask_contour"]
Point = tuple[float, float]


class Mark(BaseModel):
    """One visual prompt: a shape, the region it points at (one of box, point, polygon, mask), and its look."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    shape: Shape
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in pixels, x1 and y1 exclusive
    point: tuple[float, float] | None = None
    polygon: list[tuple[float, float]] | None = None
    mask_path: str | None = None  # a mask image the size of the picture; non-zero = inside
    path: list[tuple[float, float]] | None = None  # an arrow's tail and tip, a triangle's corners, a scribble's stroke
    colour: str | tuple[int, int, int] = "red"
    width: int | None = None  # line width, a point's radius; None = ViP's constant scaled to the image
    alpha: int = 128  # 1..255; docs/methods.md §4: 128 at evaluation

    @field_validator("shape", mode="before")
    @classmethod
    def _shape_alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return SHAPE_ALIASES.get(value, value)
        return value

    @field_validator("polygon", "path", mode="before")
    @classmethod
    def _few_points(cls, value: Any) -> Any:
        """Counted before the points are parsed, so a million of them cost nothing."""
        if isinstance(value, list | tuple) and len(value) > MAX_POINTS:
            raise ValueError(f"{len(value)} points, over the limit of {MAX_POINTS}")
        return value

    @field_validator("colour", mode="before")
    @classmethod
    def _short_colour(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > 32:  # no colour's name is longer; keeps error messages short
            raise ValueError(f"a colour of {len(value)} characters is no name or #rrggbb")
        return value

    @field_validator("width")
    @classmethod
    def _not_too_wide(cls, value: int | None) -> int | None:
        if value is not None and value > MAX_WIDTH:
            raise ValueError(f"{value} is over the limit of {MAX_WIDTH} pixels")
        return value

    @model_validator(mode="after")
    def _one_region(self) -> Mark:
        allowed = REGIONS[self.shape]
        given = [k for k in ("box", "point", "polygon", "mask_path", "path") if getattr(self, k) is not None]
        for kind in given:
            if kind not in allowed:
                raise ValueError(f"a {self.shape} takes a {' or a '.join(allowed)}, not a {kind}")
        if len(given) > 1:
            raise ValueError(f"give one region, not both a {given[0]} and a {given[1]}")
        if not given and "mask_path" not in allowed:  # mask shapes may get their mask from render_marks(masks=...)
            raise ValueError(f"a {self.shape} needs a {' or a '.join(allowed)}")
        return self

    @classmethod
    def create(cls, **kwargs: Any) -> Mark:
        """Build a mark, raising MarkError (not pydantic's ValidationError) so callers see one error type."""
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"{p}: " for p in first["loc"][:1])
            raise MarkError(f"mark: {where}{first['msg'].removeprefix('Value error, ')}") from exc


class RenderedMark(BaseModel):
    """What was drawn for one mark: the phrase for the question, the region for GradCAM, and any clipping."""

    shape: str
    phrase: str
    box: tuple[int, int, int, int]  # the region clipped to the image, x1 and y1 exclusive
    clipped: bool = False
    note: str = ""
    width: int  # the line width (a point's radius) actually used
    anchor: tuple[float, float] | None = None  # the arrow's tip, the point's centre
    points: list[tuple[float, float]] = []  # triangle corners, scribble control points, arrow tail/head corners/tip


@dataclass
class Region:
    """A checked region: its box clipped to the image, and the polygon, mask or point it came from."""

    box: tuple[float, float, float, float]
    clipped: bool = False
    note: str = ""
    polygon: list[Point] | None = None
    mask: np.ndarray | None = None
    point: Point | None = None
    path: list[Point] | None = None


def resolve_colour(colour: str | tuple[int, int, int]) -> tuple[tuple[int, int, int], str | None]:
    """RGB and the name a phrase uses (None: "marked"), from a name, `#rrggbb` or an RGB tuple."""
    if isinstance(colour, str):
        name = colour.strip().lower()
        if re.fullmatch(r"#[0-9a-f]{6}", name):
            colour = (int(name[1:3], 16), int(name[3:5], 16), int(name[5:7], 16))
        elif name in COLOURS or name in COLOUR_ALIASES:
            return COLOURS[COLOUR_ALIASES.get(name, name)], name
        else:
            raise MarkError(f"unknown colour {colour!r}; use one of {', '.join([*COLOURS, *COLOUR_ALIASES])}, "
                            "#rrggbb or an (R, G, B) tuple")
    rgb = tuple(int(c) for c in colour)
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise MarkError(f"colour {colour!r} is not an RGB triple of 0..255")
    names = [n for n, value in COLOURS.items() if value == rgb]
    return (rgb[0], rgb[1], rgb[2]), (names[0] if names else None)


def mark_phrase(mark: Mark) -> str:
    """docs/methods.md §4: the words that replace "this" in the question, e.g. "within the red rectangle"."""
    word1, word2 = PHRASE_WORDS[mark.shape]
    name = resolve_colour(mark.colour)[1]
    return f"{word1} the {name} {word2}" if name else f"{word1} the marked {word2}"


def _fmt(values: tuple[float, ...] | list[float]) -> str:
    return "(" + ", ".join(str(int(v)) if float(v).is_integer() else f"{v:.1f}" for v in values) + ")"


def _read_mask_file(path: str, size: tuple[int, int], where: str) -> Image.Image:
    """A mask image from a file: only a regular file (a FIFO or a device would block or never end) of at most
    MAX_MASK_BYTES, its size checked against the picture's before a pixel is decoded."""
    shown = repr(path) if len(path) <= 200 else repr(path[:200]) + "…"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise MarkError(f"{where}: mask image {shown} is not a regular file")
        with open_regular(path) as file:  # still never waits, should the path have become a FIFO since
            length = os.fstat(file.fileno()).st_size
            if length > MAX_MASK_BYTES:
                raise MarkError(f"{where}: mask image {shown} has {length:,} bytes, over the limit of "
                                f"{MAX_MASK_BYTES:,}")
            data = file.read(MAX_MASK_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MarkError(f"{where}: mask image {shown} cannot be read ({reason})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(io.BytesIO(data)) as opened:
                if opened.size != size:
                    raise MarkError(f"{where}: the mask is {opened.size[0]}x{opened.size[1]} but must be the "
                                    f"image's size, {size[0]}x{size[1]}")
                return opened.convert("L")
    except Image.DecompressionBombError as exc:
        raise MarkError(f"{where}: mask image {shown} has far more pixels than the {size[0]}x{size[1]} "
                        "image") from exc
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise MarkError(f"{where}: mask image {shown} cannot be read (not an image Pillow can decode)") from exc


def _as_mask(value: Any, size: tuple[int, int], where: str) -> np.ndarray:
    if isinstance(value, str):
        value = _read_mask_file(value, size, where)
    array: np.ndarray = np.asarray(value.convert("L") if isinstance(value, Image.Image) else value)
    if array.ndim == 3:
        array = np.asarray(array.any(axis=-1))
    if array.ndim != 2 or array.shape != (size[1], size[0]):
        got = f"{array.shape[1]}x{array.shape[0]}" if array.ndim == 2 else f"of shape {array.shape}"
        raise MarkError(f"{where}: the mask is {got} but must be the image's size, {size[0]}x{size[1]}")
    if not array.any():
        raise MarkError(f"{where}: the mask is empty (no non-zero pixels)")
    return array != 0


def max_width(size: tuple[int, int]) -> int:
    """The widest line (a point's largest radius) a mark may ask for on an image of this size."""
    return max(1, max(size) // WIDTH_DIVISOR)


def _check_coordinates(mark: Mark, size: tuple[int, int], where: str) -> None:
    """Every coordinate finite and within ±COORD_FACTOR × max(W, H): drawing and clipping stay cheap and exact."""
    limit = COORD_FACTOR * max(size)
    for kind in ("box", "point", "polygon", "path"):
        value = getattr(mark, kind)
        if value is None:
            continue
        numbers = [v for pair in value for v in pair] if kind in ("polygon", "path") else list(value)
        for number in numbers:
            if not math.isfinite(number):
                raise MarkError(f"{where}: the {kind}'s coordinate {number} is not a finite number")
            if abs(number) > limit:
                raise MarkError(f"{where}: the {kind}'s coordinate {number:g} is beyond the limit of ±{limit} pixels "
                                f"({COORD_FACTOR} × the larger side of the {size[0]}x{size[1]} image)")


def check_mark(mark: Mark, size: tuple[int, int], *, index: int = 0, mask: Any = None) -> Region:
    """Everything a mark can get wrong against an image, as MarkError naming the mark; returns the clipped region."""
    width, height = size
    where = f"mark {index} ({mark.shape})"
    if not 1 <= mark.alpha <= 255:
        raise MarkError(f"{where}: alpha {mark.alpha} is outside 1..255")
    if mark.width is not None and mark.width < 1:
        raise MarkError(f"{where}: width {mark.width} must be at least 1")
    widest = max_width(size)
    if mark.width is not None and mark.width > widest:
        raise MarkError(f"{where}: {'radius' if mark.shape == 'point' else 'width'} {mark.width} is over the limit "
                        f"of {widest} pixels for the {width}x{height} image (max(W, H) / {WIDTH_DIVISOR})")
    _check_coordinates(mark, size, where)
    try:
        resolve_colour(mark.colour)
    except MarkError as exc:
        raise MarkError(f"{where}: {exc}") from None
    if mask is not None or mark.mask_path is not None:
        if "mask_path" not in REGIONS[mark.shape]:
            raise MarkError(f"{where}: a {mark.shape} takes a {' or a '.join(REGIONS[mark.shape])}, not a mask")
        if mask is not None and any(
                getattr(mark, k) is not None for k in ("box", "point", "polygon", "mask_path", "path")):
            raise MarkError(f"{where}: give either a mask or a region in the mark, not both")
        pixels = _as_mask(mask if mask is not None else mark.mask_path, size, where)
        ys, xs = np.nonzero(pixels)
        return Region((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), mask=pixels)
    if mark.point is not None:
        x, y = mark.point
        if not (math.isfinite(x) and math.isfinite(y) and 0 <= x < width and 0 <= y < height):
            raise MarkError(f"{where}: point {_fmt(mark.point)} lies outside the {width}x{height} image")
        return Region((x, y, x + 1, y + 1), point=(x, y))
    polygon = path = None
    if mark.path is not None:
        path = [(float(x), float(y)) for x, y in mark.path]
        fewest, most = PATH_POINTS[mark.shape]
        if len(path) < fewest or (most is not None and len(path) > most):
            count = f"{fewest}" if fewest == most else f"at least {fewest}"
            raise MarkError(f"{where}: a {mark.shape}'s path has {count} points, not {len(path)}")
        path_xs, path_ys = [x for x, _ in path], [y for _, y in path]
        # Half a pixel round the stroke: a straight horizontal arrow still has a region.
        box, kind = (min(path_xs) - 0.5, min(path_ys) - 0.5, max(path_xs) + 0.5, max(path_ys) + 0.5), "the path's box"
    elif mark.polygon is not None:
        polygon = [(float(x), float(y)) for x, y in mark.polygon]
        xs_, ys_ = np.array([p[0] for p in polygon]), np.array([p[1] for p in polygon])
        area = 0.5 * abs(float(np.dot(xs_, np.roll(ys_, 1)) - np.dot(ys_, np.roll(xs_, 1))))
        if len(polygon) < 3 or not np.isfinite(area) or area <= 0:
            raise MarkError(f"{where}: the polygon needs at least 3 points enclosing a non-zero area")
        box, kind = (float(xs_.min()), float(ys_.min()), float(xs_.max()), float(ys_.max())), "the polygon's box"
    elif mark.box is not None:
        box, kind = mark.box, "box"
        if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise MarkError(f"{where}: box {_fmt(box)} has zero or negative area; give x0, y0, x1, y1 with "
                            "x1 > x0 and y1 > y0")
    else:
        raise MarkError(f"{where}: no region; give a {' or a '.join(REGIONS[mark.shape])}, or pass the mask as "
                        f"render_marks(masks={{{index}: ...}})")
    inside = (max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(width)), min(box[3], float(height)))
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        raise MarkError(f"{where}: {kind} {_fmt(box)} lies entirely outside the {width}x{height} image")
    clipped = inside != tuple(box)
    note = (f"{where}: {kind} {_fmt(box)} was partly outside the {width}x{height} image and was clipped to "
            f"{_fmt(inside)}") if clipped else ""
    return Region(inside, clipped, note, polygon=polygon, path=path)


def _inside_polygon(xs: np.ndarray, ys: np.ndarray, polygon: list[Point]) -> np.ndarray:
    """Even-odd ray casting: which of the points lie inside the polygon."""
    inside = np.zeros(xs.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        crosses = (ay > ys) != (by > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < at)
    return inside


def _sample_inside(region: Region, rng: np.random.Generator, count: int) -> list[Point]:
    """Uniform points inside the region: a mask's pixels, a polygon (rejection in its box), or the box."""
    if region.mask is not None:
        rows, cols = np.nonzero(region.mask)
        pick, du, dv = rng.integers(len(cols), size=count), rng.random(count), rng.random(count)
        return [(float(cols[i] + u), float(rows[i] + v)) for i, u, v in zip(pick, du, dv, strict=True)]
    x0, y0, x1, y1 = region.box
    found: list[Point] = []
    for _ in range(100 if region.polygon else 1):
        xs, ys = rng.uniform(x0, x1, 64), rng.uniform(y0, y1, 64)
        keep = _inside_polygon(xs, ys, region.polygon) if region.polygon else np.ones(64, dtype=bool)
        found += [(float(x), float(y)) for x, y in zip(xs[keep], ys[keep], strict=True)]
        if len(found) >= count:
            return found[:count]
    corners = region.polygon or [(x0, y0)]  # a sliver ViP's 50 tries would miss: fall back to its corners
    return found + [corners[int(i)] for i in rng.integers(len(corners), size=count - len(found))]


def _max_angle(corners: list[Point]) -> float:
    """The largest angle of a triangle, in degrees: the one facing its longest side."""
    p = np.array(corners)
    a, b, c = sorted(np.linalg.norm(p - np.roll(p, 1, axis=0), axis=1), reverse=True)
    return math.degrees(math.acos(float(np.clip((b * b + c * c - a * a) / (2 * b * c + 1e-12), -1.0, 1.0))))


@dataclass
class _Pen:
    """What a drawer draws with: its layer, RGBA, width (a point's radius), random source and size scale."""

    layer: Image.Image
    rgba: tuple[int, int, int, int]
    width: int
    rng: np.random.Generator
    scale: float


Drawn = tuple[Point | None, list[Point]]  # the anchor (arrow tip, point centre) and the sampled points


def _edge_box(layer: Image.Image, box: tuple[float, ...]) -> tuple[int, int, int, int]:
    """A box to outline: pixels rounded, the far edges kept on the picture so a clipped side stays visible."""
    x0, y0, x1, y1 = (math.floor(v + 0.5) for v in box)
    return x0, y0, max(x0, min(x1, layer.width - 1)), max(y0, min(y1, layer.height - 1))


def _rectangle(pen: _Pen, region: Region) -> Drawn:
    ImageDraw.Draw(pen.layer).rectangle(_edge_box(pen.layer, region.box), outline=pen.rgba, width=pen.width)
    return None, []


def _ellipse(pen: _Pen, region: Region) -> Drawn:
    x0, y0, x1, y1 = region.box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * ELLIPSE_RATIO / 2, (y1 - y0) * ELLIPSE_RATIO / 2
    w, h = pen.layer.size
    box = (max(cx - rx, 0), max(cy - ry, 0), min(cx + rx, w - 1), min(cy + ry, h - 1))  # clipped to the image
    ImageDraw.Draw(pen.layer).ellipse(_edge_box(pen.layer, box), outline=pen.rgba, width=pen.width)
    return None, []


def _triangle(pen: _Pen, region: Region) -> Drawn:
    x0, y0, x1, y1 = region.box
    if region.path:  # the user's own corners
        corners = list(region.path)
        ImageDraw.Draw(pen.layer).line([*corners, corners[0]], fill=pen.rgba, width=pen.width, joint="curve")
        return None, corners
    for _ in range(500):
        xs, ys = pen.rng.uniform(x0, x1, 3), pen.rng.uniform(y0, y1, 3)
        corners = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        if _max_angle(corners) < MAX_ANGLE:
            break
    else:  # a right isosceles triangle in the corner always fits
        side = min(x1 - x0, y1 - y0)
        corners = [(x0, y0), (x0 + side, y0), (x0, y0 + side)]
    ImageDraw.Draw(pen.layer).line([*corners, corners[0]], fill=pen.rgba, width=pen.width, joint="curve")
    return None, corners


def _point(pen: _Pen, region: Region) -> Drawn:
    x0, y0, x1, y1 = region.box
    cx, cy = region.point or ((x0 + x1) / 2, (y0 + y1) / 2)
    ImageDraw.Draw(pen.layer).ellipse((cx - pen.width, cy - pen.width, cx + pen.width, cy + pen.width), fill=pen.rgba)
    return (cx, cy), []


def _arrow(pen: _Pen, region: Region) -> Drawn:
    """The tip at the region's centre; the tail out along a random angle, preferably off the region and on the
    picture; ViP's length ≤ 50·scale with a head 0.2–0.5 of it, the head a filled triangle (docs/methods.md §4)."""
    x0, y0, x1, y1 = region.box
    if region.path:  # the user's own stroke, tail to tip; the head as ViP draws it
        (tx, ty), tip = region.path[0], region.path[-1]
        length = max(math.hypot(tx - tip[0], ty - tip[1]), 1.0)
        dx, dy = (tx - tip[0]) / length, (ty - tip[1]) / length
        head = float(pen.rng.uniform(0.2, 0.5)) * min(length, ARROW_MAX_LENGTH * pen.scale)
    else:
        tip = ((x0 + x1) / 2, (y0 + y1) / 2)
        longest = max(ARROW_MAX_LENGTH * pen.scale, 2.0)
        length = float(pen.rng.uniform(min(max(0.8 * min(x1 - x0, y1 - y0), 0.5 * longest), longest), longest))
        head = float(pen.rng.uniform(0.2, 0.5)) * length
        angles = pen.rng.uniform(0, 2 * math.pi, 32)
        tails = [(tip[0] + length * math.cos(a), tip[1] + length * math.sin(a)) for a in angles]
        on_image = [0 <= x < pen.layer.width and 0 <= y < pen.layer.height for x, y in tails]
        off_region = [not (x0 <= x <= x1 and y0 <= y <= y1) for x, y in tails]
        ranked = [i for i in range(32) if on_image[i] and off_region[i]] + [i for i in range(32) if on_image[i]] + [0]
        dx, dy = math.cos(angles[ranked[0]]), math.sin(angles[ranked[0]])
    tail, base = (tip[0] + length * dx, tip[1] + length * dy), (tip[0] + head * dx, tip[1] + head * dy)
    half = head * math.tan(math.radians(30))  # a 60° head; ViP's fans out 120°
    left, right = (base[0] - half * dy, base[1] + half * dx), (base[0] + half * dy, base[1] - half * dx)
    draw = ImageDraw.Draw(pen.layer)
    draw.line([tail, base], fill=pen.rgba, width=pen.width)
    draw.polygon([tip, left, right], fill=pen.rgba)
    return tip, [tail, left, tip, right]


def _scribble(pen: _Pen, region: Region) -> Drawn:
    """A cubic Bézier whose 4 control points lie inside the region, as a polyline of ~1000·scale samples (or the
    user's own stroke, as drawn)."""
    if region.path:
        ImageDraw.Draw(pen.layer).line(list(region.path), fill=pen.rgba, width=pen.width, joint="curve")
        return None, list(region.path)
    controls = _sample_inside(region, pen.rng, 4)
    p = np.array(controls)
    t = np.linspace(0.0, 1.0, max(100, int(1000 * pen.scale)))[:, None]
    curve = (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2] + t**3 * p[3]
    line = [(float(x), float(y)) for x, y in curve]
    ImageDraw.Draw(pen.layer).line(line, fill=pen.rgba, width=pen.width, joint="curve")
    return None, controls


def _outline_polygon(region: Region, layer: Image.Image) -> list[Point]:
    if region.polygon:
        return region.polygon
    x0, y0, x1, y1 = _edge_box(layer, region.box)
    return [(x0, y0), (x0, y1), (x1, y1), (x1, y0)]


def _window_any(array: np.ndarray, length: int) -> np.ndarray:
    """out[i] = any(array[i : i + length]) along the first axis, in log2(length) passes: windows doubling in span,
    then two overlapping ones, so a wide mark costs a few passes over the image, not one per pixel of width."""
    span = 1
    while span * 2 <= length:
        array = array[:-span] | array[span:]  # now array[i] = any over span * 2 rows
        span *= 2
    return array[: len(array) - (length - span)] | array[length - span :]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation by `radius` pixels: a window of 2·radius + 1 along the rows, then along the columns."""
    if radius <= 0:
        return mask.copy()
    rows = _window_any(np.pad(mask, radius), 2 * radius + 1)  # (height, width + 2·radius)
    return np.ascontiguousarray(_window_any(rows.T, 2 * radius + 1).T)


def _paint(pen: _Pen, pixels: np.ndarray) -> None:
    pen.layer.paste(Image.new("RGBA", pen.layer.size, pen.rgba), mask=Image.fromarray(pixels.astype(np.uint8) * 255))


def _mask(pen: _Pen, region: Region) -> Drawn:
    if region.mask is not None:
        _paint(pen, region.mask)
    else:
        ImageDraw.Draw(pen.layer).polygon(_outline_polygon(region, pen.layer), fill=pen.rgba)
    return None, []


def _mask_contour(pen: _Pen, region: Region) -> Drawn:
    """ViP shifts the outline by up to ±width pixels: a band 2·width+1 wide along the region's border."""
    if region.mask is not None:
        border = region.mask & _dilate(~region.mask, 1)  # mask pixels next to outside
        _paint(pen, _dilate(border, pen.width))
    else:
        ring = _outline_polygon(region, pen.layer)
        ImageDraw.Draw(pen.layer).line([*ring, *ring[:2]], fill=pen.rgba, width=2 * pen.width + 1, joint="curve")
    return None, []


DRAWERS: dict[str, Callable[[_Pen, Region], Drawn]] = {
    "rectangle": _rectangle, "ellipse": _ellipse, "triangle": _triangle, "point": _point, "arrow": _arrow,
    "scribble": _scribble, "mask": _mask, "mask_contour": _mask_contour,
}


def render_marks(
    image: Image.Image, marks: list[Mark], *, seed: int = 0, max_marks: int = MAX_MARKS,
    masks: dict[int, Any] | None = None,
) -> tuple[Image.Image, list[RenderedMark]]:
    """Draw the marks in order onto a new RGB copy of the image; every mark is checked before any is drawn."""
    if len(marks) > max_marks:
        raise MarkError(f"{len(marks)} marks given; at most {max_marks} can be drawn on one image")
    masks = masks or {}
    for key in masks:
        if not isinstance(key, int) or not 0 <= key < len(marks):
            raise MarkError(f"a mask was given for mark {key!r}, but the marks are numbered 0..{len(marks) - 1}")
    regions = [check_mark(mark, image.size, index=i, mask=masks.get(i)) for i, mark in enumerate(marks)]
    scale = max(image.size) / 336  # docs/methods.md §4
    canvas = image.convert("RGBA")
    rendered = []
    for index, (mark, region) in enumerate(zip(marks, regions, strict=True)):
        rgb, _ = resolve_colour(mark.colour)
        width = mark.width or max(1, math.floor(SIZE_AT_336[mark.shape] * scale + 0.5))
        pen = _Pen(Image.new("RGBA", image.size, (0, 0, 0, 0)), (*rgb, mark.alpha), width,
                   np.random.default_rng([seed % 2**63, index]), scale)
        anchor, points = DRAWERS[mark.shape](pen, region)
        canvas = Image.alpha_composite(canvas, pen.layer)  # docs/methods.md §4: α·P + (1−α)·X where the layer is drawn
        box = region.box
        if region.point is not None:  # a point's region is its dot
            x, y = region.point
            box = (max(x - width, 0), max(y - width, 0), min(x + width + 1, image.width),
                   min(y + width + 1, image.height))
        rendered.append(RenderedMark(
            shape=mark.shape, phrase=mark_phrase(mark), clipped=region.clipped, note=region.note, width=width,
            box=(math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3])),
            anchor=anchor, points=points,
        ))
    return canvas.convert("RGB"), rendered


def parse_mark(spec: str, size: tuple[int, int]) -> Mark:
    """The CLI's `SHAPE:COORDS[:COLOUR]`; numbers all within [0, 1] are fractions of the image's width and height."""
    try:
        mark = _parse(spec, size)
        check_mark(mark, size)
    except MarkError as exc:
        reason = re.sub(r"^mark( 0 \(\w+\))?: ", "", str(exc))
        raise MarkError(f"mark {spec!r}: {reason}" + ("" if "SHAPE:COORDS" in reason else f"; {SYNTAX}")) from None
    return mark


def _parse(spec: str, size: tuple[int, int]) -> Mark:
    parts = spec.strip().split(":")
    if len(parts) not in (2, 3) or not parts[1].strip():
        raise MarkError(SYNTAX)
    shape = SHAPE_ALIASES.get(parts[0].strip().lower(), parts[0].strip().lower())
    if shape not in SHAPES:
        raise MarkError(f"unknown shape {parts[0]!r}")
    fields: dict[str, Any] = {"shape": shape}
    if len(parts) == 3:
        colour = parts[2].strip()
        fields["colour"] = resolve_colour(colour)[0] if colour.startswith("#") else colour
    coords = parts[1].strip()
    if coords.startswith("@"):
        return Mark.create(**fields, mask_path=coords[1:])
    try:
        numbers = [float(v) for v in coords.split(",")]
    except ValueError:
        raise MarkError(f"coordinates {coords!r} must be comma-separated numbers") from None
    if not all(math.isfinite(v) for v in numbers):
        raise MarkError(f"coordinates {coords!r} must be finite numbers")
    if all(0 <= v <= 1 for v in numbers):
        numbers = [v * size[i % 2] for i, v in enumerate(numbers)]
    pairs = [(numbers[i], numbers[i + 1]) for i in range(0, len(numbers) - 1, 2)]
    if len(numbers) == 2:
        return Mark.create(**fields, point=pairs[0])
    if len(numbers) == 4:
        return Mark.create(**fields, box=tuple(numbers))
    if len(numbers) >= 6 and len(numbers) % 2 == 0:
        return Mark.create(**fields, polygon=pairs)
    raise MarkError(f"{len(numbers)} coordinates; give 2 (point), 4 (box) or an even 6 or more (polygon)")
