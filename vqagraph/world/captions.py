"""Words for a Scene: descriptions of objects, 3×3 grid positions, whole-image and region captions.

The vocabulary is small and regular on purpose — tiny captioners are trained on it — and the question generator
shares these helpers, so a caption and a question always name the same thing the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vqagraph.world.scene import Scene, WorldObject

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PLURALS = {"circle": "circles", "ellipse": "ellipses", "square": "squares", "rectangle": "rectangles",
           "triangle": "triangles", "star": "stars", "pentagon": "pentagons", "hexagon": "hexagons"}
# Shortest first: the question generator refers to an object by the first of these that only it fits.
DESCRIPTIONS: tuple[tuple[str, ...], ...] = (
    ("shape",), ("colour",), ("colour", "shape"), ("size", "shape"), ("size", "colour"), ("size", "colour", "shape"))
ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "center", "right")
GRID_MARGIN = 0.04  # a centre this close (as a fraction of the side) to a grid line is in either cell
POSITION_VARIANTS: dict[str, tuple[str, ...]] = {
    "top left": ("top left", "upper left", "top-left"), "top right": ("top right", "upper right", "top-right"),
    "bottom left": ("bottom left", "lower left", "bottom-left"),
    "bottom right": ("bottom right", "lower right", "bottom-right"),
    "top": ("top", "top center", "top middle"), "bottom": ("bottom", "bottom center", "bottom middle"),
    "left": ("left", "center left", "middle left"), "right": ("right", "center right", "middle right"),
    "center": ("center", "middle", "centre"),
}
POSITION_PHRASES = {"top left": "at the top left", "top right": "at the top right", "bottom left": "at the bottom left",
                    "bottom right": "at the bottom right", "top": "at the top", "bottom": "at the bottom",
                    "left": "on the left", "right": "on the right", "center": "in the center"}


def number_answers(n: int) -> list[str]:
    """A count as a digit and a word ("3", "three"), plus "none" for zero."""
    words = [str(n)] + ([NUMBER_WORDS[n]] if n < len(NUMBER_WORDS) else [])
    return words + (["none"] if n == 0 else [])


def colour_answers(colour: str) -> list[str]:
    """A colour name and its spelling variant ("gray", "grey")."""
    return [colour, "grey"] if colour == "gray" else [colour]


def describe(obj: WorldObject, attrs: Sequence[str], noun: str = "shape") -> str:
    """Words for an object from the chosen attributes, e.g. ("size", "colour", "shape") → "small red circle";
    without "shape" the noun stands in: "red shape"."""
    words: list[str] = [obj.size_word] if "size" in attrs else []
    words += [obj.colour] if "colour" in attrs else []
    words.append(obj.shape if "shape" in attrs else noun)
    return " ".join(words)


def fits(obj: WorldObject, reference: WorldObject, attrs: Sequence[str]) -> bool:
    """Whether `obj` fits the description of `reference` by these attributes."""
    return all(getattr(obj, {"size": "size_word"}.get(a, a)) == getattr(reference, {"size": "size_word"}.get(a, a))
               for a in attrs)


def unique_attrs(scene: Scene, index: int,
                 allowed: Sequence[str] = ("shape", "colour", "size")) -> tuple[str, ...] | None:
    """The shortest attribute set, drawn from `allowed`, that only object `index` fits; None if none does."""
    reference = scene.objects[index]
    for attrs in DESCRIPTIONS:
        if set(attrs) <= set(allowed) and sum(fits(o, reference, attrs) for o in scene.objects) == 1:
            return attrs
    return None


def object_names(obj: WorldObject) -> list[str]:
    """Every fair answer to "what is …?" about the object: colour + shape first, then shape, then all three."""
    names = [f"{obj.colour} {obj.shape}", obj.shape, f"{obj.size_word} {obj.colour} {obj.shape}"]
    return names + ([f"grey {obj.shape}"] if obj.colour == "gray" else [])


def centre(obj: WorldObject) -> tuple[float, float]:
    x0, y0, x1, y1 = obj.box
    return (x0 + x1) / 2, (y0 + y1) / 2


def _cells(value: float, side: int) -> list[int]:
    """Grid cells (0, 1, 2) a coordinate belongs to: the one it is in, plus a neighbour when it is near a line."""
    t = value / side
    cell = min(2, int(t * 3))
    near = [c for c in (cell - 1, cell + 1) if 0 <= c <= 2 and abs(t - max(cell, c) / 3) < GRID_MARGIN]
    return [cell, *near]


def _cell_name(row: int, column: int) -> str:
    if row == 1:
        return "center" if column == 1 else COLUMNS[column]
    return ROWS[row] if column == 1 else f"{ROWS[row]} {COLUMNS[column]}"


def grid_position(scene: Scene, index: int) -> str:
    """Where the object's box centre lies on a 3×3 grid: "top left", "top", …, "center", …, "bottom right"."""
    x, y = centre(scene.objects[index])
    return _cell_name(_cells(y, scene.height)[0], _cells(x, scene.width)[0])


def position_answers(scene: Scene, index: int) -> list[str]:
    """Every acceptable position answer: the cell's words and its variants, and a neighbour cell's near a line."""
    x, y = centre(scene.objects[index])
    answers: list[str] = []
    for row in _cells(y, scene.height):
        for column in _cells(x, scene.width):
            answers += [v for v in POSITION_VARIANTS[_cell_name(row, column)] if v not in answers]
    return answers


def left_to_right(scene: Scene) -> list[int]:
    """Object indices in reading order by box centre, left to right (then top to bottom)."""
    return sorted(range(len(scene.objects)), key=lambda i: (centre(scene.objects[i])[0], centre(scene.objects[i])[1]))


def _listing(scene: Scene, *, sizes: bool = False) -> list[str]:
    """Groups of equal objects in reading order: ["two red circles", "a blue square"]."""
    groups: dict[tuple[str, ...], int] = {}
    for i in left_to_right(scene):
        obj = scene.objects[i]
        key: tuple[str, ...] = (obj.size_word, obj.colour, obj.shape) if sizes else (obj.colour, obj.shape)
        groups[key] = groups.get(key, 0) + 1
    parts = []
    for key, count in groups.items():
        noun = " ".join([*key[:-1], PLURALS[key[-1]] if count > 1 else key[-1]])
        parts.append(f"{NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else count} {noun}" if count > 1
                     else f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}")
    return parts


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_captions(scene: Scene) -> list[str]:
    """Several whole-image captions, e.g. "three shapes: a red circle, a blue square and a green star"."""
    n = len(scene.objects)
    count = f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} shape{'s' if n != 1 else ''}"
    things, sized = _join(_listing(scene)), _join(_listing(scene, sizes=True))
    background = {"plain": "a plain", "gradient": "a gradient", "noisy": "a noisy"}[scene.background.kind]
    return [
        f"{count}: {things}",
        f"a picture of {things}",
        f"{sized} on {background} background",
        f"an image with {count}",
        "; ".join(f"{describe(scene.objects[i], ('colour', 'shape'))} {POSITION_PHRASES[grid_position(scene, i)]}"
                  for i in left_to_right(scene)),
    ]


def region_caption(scene: Scene, index: int, rng: np.random.Generator | None = None) -> str:
    """A caption for one object, "a small red circle at the top left"; with `rng`, one of several phrasings."""
    obj = scene.objects[index]
    full = describe(obj, ("size", "colour", "shape"))
    where = POSITION_PHRASES[grid_position(scene, index)]
    article = "an" if full[0] in "aeiou" else "a"
    if rng is None:
        return f"{article} {full} {where}"
    short = describe(obj, ("colour", "shape"))
    short_article = "an" if short[0] in "aeiou" else "a"
    options = [
        f"{article} {full} {where}",
        f"{article} {full}",
        f"{short_article} {short}",
        f"{short_article} {short} {where}",
        f"{article} {full} {where} of the image",
        f"{short_article} {short} on a {scene.background.kind} background",
    ]
    return options[int(rng.integers(len(options)))]
