"""Questions with certain answers about a Scene, in eight families, each in several phrasings.

Every object a question names is named by the shortest description only it fits, so no question could be about
two objects; a question with no such description is not asked. Answers are lowercase and list every acceptable
form (digits and words, "gray" and "grey", position variants near a grid line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from vqagraph.tools.visual_prompt import Mark, mark_phrase
from vqagraph.world.captions import (
    PLURALS,
    centre,
    colour_answers,
    describe,
    number_answers,
    object_names,
    position_answers,
    unique_attrs,
)
from vqagraph.world.draw import object_areas, visible_masks
from vqagraph.world.scene import COLOURS, SHAPES, Scene, WorldObject

Family = Literal["colour", "shape", "count", "exists", "position", "size", "marked", "knowledge"]
FAMILIES: tuple[str, ...] = ("colour", "shape", "count", "exists", "position", "size", "marked", "knowledge")
SIDES = {"triangle": 3, "square": 4, "rectangle": 4, "pentagon": 5, "hexagon": 6, "star": 10}
# Only colours with clear fruit; every fruit listed is an acceptable answer.
FRUIT = {"red": ["apple", "strawberry", "cherry", "tomato", "raspberry"], "yellow": ["banana", "lemon"],
         "orange": ["orange", "tangerine", "mandarin", "apricot"], "green": ["lime", "apple", "pear", "kiwi", "grape"],
         "purple": ["grape", "plum", "blackberry"]}
MARK_SHAPES = ("rectangle", "ellipse", "point", "arrow", "triangle", "scribble")
MARK_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple")
BIGGER_RATIO = 2.0  # "bigger" is asked only when one area is at least twice the other


class WorldQuestion(BaseModel):
    """One question, its acceptable answers, its family, the marks the engine should draw, the objects it is about."""

    question: str
    answers: list[str]
    family: Family
    marks: list[dict[str, Any]] = []
    object_ids: list[int] = []


@dataclass
class _Ctx:
    scene: Scene
    rng: np.random.Generator
    masks: list[np.ndarray]
    areas: list[int]

    def pick(self, templates: Sequence[str]) -> str:
        return templates[int(self.rng.integers(len(templates)))]

    def q(self, family: str, templates: Sequence[str], answers: list[str], ids: list[int],
          **words: str) -> WorldQuestion:
        return WorldQuestion.model_validate({"question": self.pick(templates).format(**words), "answers": answers,
                                             "family": family, "object_ids": ids})

    def named(self, allowed: Sequence[str] = ("shape", "colour", "size"), noun: str = "shape") -> list[tuple[int, str]]:
        """(index, description) of every object some allowed description picks out alone."""
        found = []
        for i, obj in enumerate(self.scene.objects):
            attrs = unique_attrs(self.scene, i, allowed)
            if attrs is not None:
                found.append((i, describe(obj, attrs, noun)))
        return found


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


Groups = list[list[WorldQuestion]]  # a family's kinds of question, picked evenly so no kind crowds out another


def _colour(c: _Ctx) -> Groups:
    templates = ("What colour is the {d}?", "What color is the {d}?", "What is the colour of the {d}?",
                 "Which colour is the {d}?", "What colour does the {d} have?")
    return [[c.q("colour", templates, colour_answers(c.scene.objects[i].colour), [i], d=d)
             for i, d in c.named(("shape", "size"))]]


def _shape(c: _Ctx) -> Groups:
    out = []
    for i, d in c.named(("colour", "size"), noun="one"):
        obj = c.scene.objects[i]
        templates = ["What shape is the {d}?", "Which shape is the {d}?", "What shape does the {d} have?"]
        if d == f"{obj.colour} one":
            templates += ["Which shape is {colour}?", "What shape is {colour}?"]
        out.append(c.q("shape", templates, [obj.shape], [i], d=d, colour=obj.colour))
    return [out]


def _count(c: _Ctx) -> Groups:
    objects = c.scene.objects
    colours = sorted({o.colour for o in objects})
    shapes = sorted({o.shape for o in objects})
    absent_colour = str(c.rng.choice([k for k in COLOURS if k not in colours]))
    absent_shape = str(c.rng.choice([s for s in SHAPES if s not in shapes] or list(SHAPES)))
    total = [c.q("count", ("How many shapes are there?", "How many shapes are in the picture?",
                         "How many shapes can you see?", "How many shapes are in the image?"),
               number_answers(len(objects)), list(range(len(objects))))]
    kinds: list[list[tuple[str, list[int]]]] = [
        [(f"{colour} shapes", [i for i, o in enumerate(objects) if o.colour == colour])
         for colour in [*colours, absent_colour]],
        [(PLURALS[shape], [i for i, o in enumerate(objects) if o.shape == shape]) for shape in [*shapes, absent_shape]],
        [(f"{colour} {PLURALS[shape]}", [i for i, o in enumerate(objects) if (o.colour, o.shape) == (colour, shape)])
         for colour, shape in sorted({(o.colour, o.shape) for o in objects})],
    ]
    templates = ("How many {t} are there?", "How many {t} are in the picture?", "How many {t} can you see?")
    return [total] + [[c.q("count", templates, number_answers(len(ids)), ids, t=things) for things, ids in kind]
                      for kind in kinds]


def _exists(c: _Ctx) -> tuple[list[WorldQuestion], list[WorldQuestion]]:
    """Questions answered yes and questions answered no, kept apart so the two can be balanced."""
    objects = c.scene.objects
    colours, shapes = {o.colour for o in objects}, {o.shape for o in objects}
    combo = ("Is there {x}?", "Is there {x} in the picture?", "Can you see {x}?", "Is there {x} in the image?")
    yes: list[WorldQuestion] = []
    no: list[WorldQuestion] = []
    for colour in COLOURS:
        ids = [i for i, o in enumerate(objects) if o.colour == colour]
        target = yes if ids else no
        if ids or c.rng.random() < 0.3:
            target.append(c.q("exists", ("Are there any {k} shapes?", "Is there {x} shape?", "Can you see {x} shape?"),
                              ["yes" if ids else "no"], ids, k=colour, x=_a(colour)))
        for shape in SHAPES:
            if colour in colours or shape in shapes:
                ids = [i for i, o in enumerate(objects) if (o.colour, o.shape) == (colour, shape)]
                (yes if ids else no).append(c.q("exists", combo, ["yes" if ids else "no"], ids,
                                                x=_a(f"{colour} {shape}")))
    for shape in SHAPES:
        ids = [i for i, o in enumerate(objects) if o.shape == shape]
        (yes if ids else no).append(c.q("exists", combo, ["yes" if ids else "no"], ids, x=_a(shape)))
    return yes, no


RELATIONS = {
    "left": ("Is the {a} left of the {b}?", "Is the {a} to the left of the {b}?", "Is the {a} on the left of the {b}?"),
    "right": ("Is the {a} right of the {b}?", "Is the {a} to the right of the {b}?",
              "Is the {a} on the right of the {b}?"),
    "above": ("Is the {a} above the {b}?", "Is the {a} over the {b}?"),
    "below": ("Is the {a} below the {b}?", "Is the {a} under the {b}?"),
}
WHAT_RELATIONS = {
    "left": ("What is left of the {b}?", "What is to the left of the {b}?", "Which shape is left of the {b}?"),
    "right": ("What is right of the {b}?", "What is to the right of the {b}?", "Which shape is right of the {b}?"),
    "above": ("What is above the {b}?", "Which shape is above the {b}?"),
    "below": ("What is below the {b}?", "Which shape is below the {b}?"),
}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def holds(a: WorldObject, b: WorldObject, relation: str) -> bool:
    """Strictly: `a`'s box lies wholly on that side of `b`'s box (no overlap along that axis)."""
    return {"left": a.box[2] <= b.box[0], "right": a.box[0] >= b.box[2],
            "above": a.box[3] <= b.box[1], "below": a.box[1] >= b.box[3]}[relation]


def side_of(a: WorldObject, b: WorldObject, relation: str) -> bool:
    """Loosely: `a`'s centre is on that side of `b`'s centre (what a person might still call "left of")."""
    (ax, ay), (bx, by) = centre(a), centre(b)
    return {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[relation]


def _position(c: _Ctx) -> Groups:
    objects, named = c.scene.objects, c.named()
    relations: list[WorldQuestion] = []
    whats: list[WorldQuestion] = []
    where = [c.q("position", ("Where is the {d}?", "Where is the {d} in the image?",
                            "In which part of the picture is the {d}?"), position_answers(c.scene, i), [i], d=d)
           for i, d in named]
    for i, a in named:
        for j, b in named:
            if i == j:
                continue
            for relation, templates in RELATIONS.items():
                if holds(objects[i], objects[j], relation) or holds(objects[i], objects[j], OPPOSITE[relation]):
                    answer = "yes" if holds(objects[i], objects[j], relation) else "no"
                    relations.append(c.q("position", templates, [answer], [i, j], a=a, b=b))
    for j, b in named:
        for relation, templates in WHAT_RELATIONS.items():
            there = [i for i, o in enumerate(objects) if i != j and side_of(o, objects[j], relation)]
            if len(there) == 1 and holds(objects[there[0]], objects[j], relation):
                whats.append(c.q("position", templates, object_names(objects[there[0]]), [there[0], j], b=b))
    return [where, relations, whats]


def _size(c: _Ctx) -> Groups:
    objects, named = c.scene.objects, c.named(("shape", "colour"))  # a size word would give the answer away
    which: list[WorldQuestion] = []
    yes_no: list[WorldQuestion] = []
    words = [c.q("size", ("What size is the {d}?", "How big is the {d}?", "Is the {d} tiny, small, medium or large?"),
                 [objects[i].size_word], [i], d=d) for i, d in named]
    for i, a in named:
        for j, b in named:
            big, small = c.areas[i], c.areas[j]
            if i == j or big < BIGGER_RATIO * small:
                continue
            for target, other, text, word in ((i, j, a, "bigger"), (j, i, b, "smaller")):
                t, o = objects[target], objects[other]
                names = [text, *([t.shape] if t.shape != o.shape else []),
                         *([t.colour] if t.colour != o.colour else [])]
                names += [n for n in (f"{t.colour} {t.shape}", f"{t.size_word} {t.colour} {t.shape}") if n not in names]
                first, second = (a, b) if c.rng.random() < 0.5 else (b, a)
                templates = ((f"Which is {word}, the {{x}} or the {{y}}?", "Which is larger, the {x} or the {y}?")
                             if word == "bigger" else (f"Which is {word}, the {{x}} or the {{y}}?",))
                which.append(c.q("size", templates, names, [target, other], x=first, y=second))
            bigger = ("Is the {a} bigger than the {b}?", "Is the {a} larger than the {b}?")
            yes_no += [c.q("size", bigger, ["yes"], [i, j], a=a, b=b), c.q("size", bigger, ["no"], [j, i], a=b, b=a),
                       c.q("size", ("Is the {a} smaller than the {b}?",), ["yes"], [j, i], a=b, b=a),
                       c.q("size", ("Is the {a} smaller than the {b}?",), ["no"], [i, j], a=a, b=b)]
    return [words, which, yes_no]


def _mark_for(c: _Ctx, i: int, shape: str, colour: str) -> Mark | None:
    """A mark on object `i` that picks it out alone, or None if the region would take in too much of another."""
    scene, mask = c.scene, c.masks[i]
    ys, xs = np.nonzero(mask)
    if len(xs) < 20:
        return None
    if shape in ("point", "arrow"):  # the visible pixel nearest the visible part's centroid
        k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
        x, y = float(xs[k]) + 0.5, float(ys[k]) + 0.5
        if shape == "point":
            return Mark.create(shape="point", point=(x, y), colour=colour)
        return Mark.create(shape="arrow", box=(x - 1, y - 1, x + 1, y + 1), colour=colour)
    x0, y0, x1, y1 = scene.objects[i].box
    w, h = x1 - x0, y1 - y0
    if shape == "scribble":  # the middle of the box, where the shape is
        region = (x0 + 0.3 * w, y0 + 0.3 * h, x1 - 0.3 * w, y1 - 0.3 * h)
    else:
        pad = max(2.0, 0.1 * max(w, h))
        region = (max(0.0, x0 - pad), max(0.0, y0 - pad), min(float(scene.width), x1 + pad),
                  min(float(scene.height), y1 + pad))
    grow = 1.2 if shape == "ellipse" else 1.0  # the renderer enlarges an ellipse about its centre
    cx, cy, rx, ry = ((region[0] + region[2]) / 2, (region[1] + region[3]) / 2,
                      grow * (region[2] - region[0]) / 2, grow * (region[3] - region[1]) / 2)
    sl = (slice(max(0, int(cy - ry)), int(cy + ry) + 1), slice(max(0, int(cx - rx)), int(cx + rx) + 1))
    own = int(mask[sl].sum())
    if shape == "scribble" and own < 0.6 * mask[sl].size:
        return None
    if any(j != i and int(other[sl].sum()) > 0.15 * own for j, other in enumerate(c.masks)):
        return None
    return Mark.create(shape=shape, box=region, colour=colour)


def _marked(c: _Ctx) -> Groups:
    out = []
    for i, obj in enumerate(c.scene.objects):
        shape = str(c.rng.choice(list(MARK_SHAPES)))
        colour = str(c.rng.choice([k for k in MARK_COLOURS if k != obj.colour]))
        mark = _mark_for(c, i, shape, colour)
        if mark is None:
            continue
        phrase = mark_phrase(mark)
        if c.rng.random() < 0.5:
            q = c.q("marked", ("What colour is the shape {p}?", "What is the colour of the shape {p}?",
                               "What color is the shape {p}?"), colour_answers(obj.colour), [i], p=phrase)
        else:
            q = c.q("marked", ("What shape is {p}?", "What is the shape {p}?"), [obj.shape], [i], p=phrase)
        q.marks = [mark.model_dump(mode="json")]
        out.append(q)
    return [out]


def _knowledge(c: _Ctx) -> Groups:
    objects = c.scene.objects
    sides: list[WorldQuestion] = []
    fruit: list[WorldQuestion] = []
    for i, d in c.named():
        shape = objects[i].shape
        if shape == "star" and c.rng.random() < 0.5:
            sides.append(c.q("knowledge", ("How many points does the {d} have?",), number_answers(5), [i], d=d))
        elif shape in SIDES:
            templates = ("How many sides does the {d} have?", "How many edges does the {d} have?",
                         *(() if shape == "star" else ("How many corners does the {d} have?",)))
            sides.append(c.q("knowledge", templates, number_answers(SIDES[shape]), [i], d=d))
    for i, d in c.named(("shape", "size")):  # naming the colour would give the answer away
        names = FRUIT.get(objects[i].colour)
        if names:
            fruit.append(c.q("knowledge", ("Which fruit has the same colour as the {d}?",
                                           "Name a fruit with the same colour as the {d}.",
                                           "What fruit is the same color as the {d}?"), list(names), [i], d=d))
    return [sides, fruit]


BUILDERS: dict[str, Callable[[_Ctx], Groups]] = {
    "colour": _colour, "shape": _shape, "count": _count, "position": _position, "size": _size,
    "marked": _marked, "knowledge": _knowledge,
}


def _choose(rng: np.random.Generator, groups: Groups, k: int) -> list[WorldQuestion]:
    """Up to k questions: each a random one from a random group that still has some."""
    left = [list(g) for g in groups if g]
    picked: list[WorldQuestion] = []
    while left and len(picked) < k:
        group = left[int(rng.integers(len(left)))]
        picked.append(group.pop(int(rng.integers(len(group)))))
        left = [g for g in left if g]
    return picked


def generate_questions(
    scene: Scene,
    rng: np.random.Generator,
    *,
    per_family: int = 2,
    families: Sequence[str] = FAMILIES,
    masks: list[np.ndarray] | None = None,
    areas: list[int] | None = None,
) -> list[WorldQuestion]:
    """Up to `per_family` questions of each family, drawn with `rng`. `masks` (visible pixels) and `areas` (whole
    pixel counts) override what render_scene would draw: foreign scenes pass their own drawer's. Exists questions
    come half yes, half no."""
    c = _Ctx(scene, rng, masks if masks is not None else visible_masks(scene),
             areas if areas is not None else object_areas(scene))
    out: list[WorldQuestion] = []
    for family in families:
        if family == "exists":
            yes, no = _exists(c)
            half = per_family // 2 + int(per_family % 2 == 1 and rng.random() < 0.5)
            out += _choose(rng, [yes], half) + _choose(rng, [no], per_family - half)
        elif family in BUILDERS:
            out += _choose(rng, BUILDERS[family](c), per_family)
    return out
