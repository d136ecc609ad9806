"""The `paraphrase` split: the test split's questions reworded by hand in ways questions.py never words them, to
measure whether a model answers the question rather than recognising the generator's templates.

Only this module holds the rewordings and only `split_examples("paraphrase")` reaches it; the trainers draw their
questions from questions.py. Each question is parsed by the grammar of the generator's own phrasings
(`GENERATOR_PATTERNS`, one anchored pattern per template over the world's vocabulary) and rewritten by one of its
kind's templates, chosen with a seed; a rewrite that the generator's grammar accepts is never used, answers and
marks are kept, and a question no rule parses is left out of the split rather than passed through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from vqagraph.tools.visual_prompt import PHRASE_WORDS
from vqagraph.world.captions import PLURALS
from vqagraph.world.dataset import Example
from vqagraph.world.questions import WorldQuestion
from vqagraph.world.scene import COLOURS, SHAPES, SIZE_WORDS

PARAPHRASE_SEED = 6_000_006


def _any(words: Iterable[str]) -> str:
    return "(?:" + "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True)) + ")"


_SIZE, _COLOUR = _any(SIZE_WORDS), _any(COLOURS)
# An object as the generator names it: "star", "red shape", "small red one", "large blue circle".
_DESC = rf"(?:{_SIZE} )?(?:{_COLOUR} )?{_any([*SHAPES, 'shape', 'one'])}"
_THINGS = rf"(?:{_COLOUR} )?{_any([*PLURALS.values(), 'shapes'])}"  # what a count counts: "red circles"
_A_THING = rf"an? (?:{_COLOUR} )?{_any([*SHAPES, 'shape'])}"  # what exists asks for: "a red circle"
_MARK = (rf"{_any(w for w, _ in PHRASE_WORDS.values())} the (?:{_COLOUR}|marked) "
         rf"{_any(n for _, n in PHRASE_WORDS.values())}")  # "within the red rectangle"
_REL = r"left of|to the left of|on the left of|right of|to the right of|on the right of|above|over|below|under"
_WHAT_REL = r"left of|to the left of|right of|to the right of|above|below"
_COUNTED = r"(?:are there|are in the picture|are in the image|can you see)"
_SP = r"colou?r"  # both spellings: a rewrite that only respells is still the generator's phrasing


@dataclass(frozen=True)
class _Rule:
    """One generator phrasing: its family, the kind of question it asks (which picks the rewrites), its pattern."""

    family: str
    kind: str
    pattern: re.Pattern[str]


def _rule(family: str, kind: str, pattern: str) -> _Rule:
    return _Rule(family, kind, re.compile(pattern, re.IGNORECASE))


# Every phrasing of questions.py, family by family, in the order they are tried (a total count before a count).
RULES: tuple[_Rule, ...] = (
    _rule("colour", "colour", rf"What (?P<sp>{_SP}) is the (?P<d>{_DESC})\?"),
    _rule("colour", "colour", rf"What is the (?P<sp>{_SP}) of the (?P<d>{_DESC})\?"),
    _rule("colour", "colour", rf"Which (?P<sp>{_SP}) is the (?P<d>{_DESC})\?"),
    _rule("colour", "colour", rf"What (?P<sp>{_SP}) does the (?P<d>{_DESC}) have\?"),
    _rule("shape", "shape", rf"(?:What|Which) shape is the (?P<d>{_DESC})\?"),
    _rule("shape", "shape", rf"What shape does the (?P<d>{_DESC}) have\?"),
    _rule("shape", "shape", rf"(?:What|Which) shape is (?P<colour>{_COLOUR})\?"),
    _rule("count", "count_all", rf"How many shapes {_COUNTED}\?"),
    _rule("count", "count", rf"How many (?P<t>{_THINGS}) {_COUNTED}\?"),
    _rule("exists", "exists", rf"Is there (?P<n>{_A_THING})(?: in the picture| in the image)?\?"),
    _rule("exists", "exists", rf"Can you see (?P<n>{_A_THING})\?"),
    _rule("exists", "exists", rf"Are there any (?P<k>{_COLOUR}) shapes\?"),
    _rule("position", "where", rf"Where is the (?P<d>{_DESC})(?: in the image)?\?"),
    _rule("position", "where", rf"In which part of the picture is the (?P<d>{_DESC})\?"),
    _rule("position", "relation", rf"Is the (?P<a>{_DESC}) (?P<rel>{_REL}) the (?P<b>{_DESC})\?"),
    _rule("position", "what", rf"(?:What is|Which shape is) (?P<rel>{_WHAT_REL}) the (?P<b>{_DESC})\?"),
    _rule("size", "size", rf"(?:What size is|How big is) the (?P<d>{_DESC})\?"),
    _rule("size", "size", rf"Is the (?P<d>{_DESC}) tiny, small, medium or large\?"),
    _rule("size", "which", rf"Which is (?P<w>bigger|larger|smaller), the (?P<x>{_DESC}) or the (?P<y>{_DESC})\?"),
    _rule("size", "than", rf"Is the (?P<a>{_DESC}) (?P<w>bigger|larger|smaller) than the (?P<b>{_DESC})\?"),
    _rule("marked", "marked_colour", rf"What (?P<sp>{_SP}) is the shape (?P<p>{_MARK})\?"),
    _rule("marked", "marked_colour", rf"What is the (?P<sp>{_SP}) of the shape (?P<p>{_MARK})\?"),
    _rule("marked", "marked_shape", rf"(?:What shape is|What is the shape) (?P<p>{_MARK})\?"),
    # Not rewritten (the split holds no knowledge questions), only kept out of every rewrite.
    _rule("knowledge", "knowledge", rf"How many (?:points|sides|edges|corners) does the {_DESC} have\?"),
    _rule("knowledge", "knowledge", rf"(?:Which fruit has|What fruit is) the same {_SP} as the {_DESC}\?"),
    _rule("knowledge", "knowledge", rf"Name a fruit with the same {_SP} as the {_DESC}\."),
)
GENERATOR_PATTERNS: tuple[re.Pattern[str], ...] = tuple(rule.pattern for rule in RULES)

# The rewrites of each kind; {c} is "colour" spelt the other way from the original.
REWRITES: dict[str, tuple[str, ...]] = {
    "colour": ("Tell me the {c} of the {d}.", "The {d} is which {c}?", "Which {c} has the {d} got?",
               "Name the {c} of the {d}.", "What is the {d}'s {c}?", "In what {c} is the {d} drawn?"),
    "shape": ("Name the shape of the {d}.", "Tell me the shape of the {d}.", "The {d} is which shape?",
              "What kind of shape is the {d}?", "Which shape has the {d} got?", "What is the shape of the {d}?",
              "Which of the shapes is {traits}?"),
    "count_all": ("Count the shapes.", "What number of shapes are in the image?", "Tell me how many shapes there are.",
                  "How many shapes does the picture show?", "How many objects are in the picture?"),
    "count": ("Count the {t}.", "What number of {t} are in the image?", "Tell me how many {t} there are.",
              "How many {t} does the picture show?", "How many of the shapes are {t_pred}?"),
    "exists": ("Does the picture contain {n}?", "Do you spot any {plural}?", "Are any of the shapes {n_pred}?",
               "Does {n} appear in the image?", "Is at least one {bare} shown?", "Can {n} be seen in the picture?"),
    "where": ("In which part of the picture is the {d} located?", "Where in the image can the {d} be found?",
              "Whereabouts is the {d}?", "Tell me where the {d} is.", "The {d} is where in the image?",
              "Where does the {d} sit in the picture?"),
    "relation": ("Does the {a} lie {rel_to} the {b}?", "Does the {b} lie {opposite_to} the {a}?",
                 "Is the {a} {rel_more} than the {b}?", "Compared with the {b}, is the {a} {rel_side}?",
                 "Is the {a} positioned {rel_to} the {b}?"),
    "what": ("What lies {rel_to} the {b}?", "Name the shape {rel_to} the {b}.", "What can be seen {rel_to} the {b}?",
             "Which object sits {rel_to} the {b}?", "{Rel_to} the {b}, what is there?"),
    "size": ("How large is the {d}?", "What is the size of the {d}?", "Tell me the size of the {d}.",
             "Would you call the {d} tiny, small, medium or large?", "The {d} is what size?"),
    "which": ("Which of the {x} and the {y} is {cmp}?", "Of the {x} and the {y}, which one is {cmp}?",
              "Which takes up {more} space, the {x} or the {y}?", "Between the {x} and the {y}, which is {cmp}?"),
    "than": ("Does the {a} look {cmp} than the {b}?", "Compared with the {b}, is the {a} {cmp}?",
             "Does the {a} take up {more} space than the {b}?", "Would you say the {a} is {cmp} than the {b}?"),
    "marked_colour": ("Tell me the {c} of the shape {p}.", "The shape {p} is which {c}?",
                      "Which {c} has the shape {p} got?", "Name the {c} of the shape {p}.",
                      "In what {c} is the shape {p} drawn?"),
    "marked_shape": ("Name the shape {p}.", "Identify the shape {p}.", "What kind of shape is the one {p}?",
                     "What is the shape {p} called?", "Tell me what the shape {p} is."),
}

# A relation as the rewrites word it: (the preposition, the comparative, the side compared with another).
_RELATIONS = {"left": ("to the left of", "further left", "more to the left"),
              "right": ("to the right of", "further right", "more to the right"),
              "above": ("above", "higher up", "higher"), "below": ("below", "lower down", "lower")}
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
# Rewrites use the other word ("bigger" for "larger"), and "space" for area: "bigger" compares areas.
_COMPARE = {"bigger": ("larger", "more"), "larger": ("bigger", "more"), "smaller": ("smaller", "less")}


def generator_phrasing(question: str) -> bool:
    """Whether questions.py could word a question this way (for some scene): any of its phrasings' grammar fits."""
    text = " ".join(question.split())
    return any(pattern.fullmatch(text) for pattern in GENERATOR_PATTERNS)


def _article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _plural(noun: str) -> str:
    *words, last = noun.split()
    return " ".join([*words, "shapes" if last == "shape" else PLURALS[last]])


def _slots(groups: dict[str, str]) -> dict[str, str]:
    """The slots the rewrites fill, from a rule's groups (lowercased, since they are the world's words)."""
    g = {k: v.lower() for k, v in groups.items() if v is not None}
    slots = dict(g)
    if "sp" in g:
        slots["c"] = "colour" if g["sp"] == "color" else "color"
    if "colour" in g:  # "Which shape is red?" asks about the red one
        slots["d"] = f"{g['colour']} one"
    if "d" in slots:
        *traits, _ = slots["d"].split()
        slots["traits"] = " and ".join(traits) if traits else "that one"
    if "t" in g:  # "red shapes" → "How many of the shapes are red?"; "red circles" → "… are red circles?"
        *words, last = g["t"].split()
        slots["t_pred"] = " ".join(words) if last == "shapes" and words else g["t"]
    if "k" in g:
        g["n"] = _article(f"{g['k']} shape")
    if "n" in g:
        bare = g["n"].split(" ", 1)[1]
        *words, last = bare.split()
        slots.update(n=_article(bare), bare=bare, plural=_plural(bare),
                     n_pred=" ".join(words) if last == "shape" and words else _plural(bare))
    if "rel" in g:
        relation = {"over": "above", "under": "below"}.get(g["rel"], g["rel"].removesuffix(" of").split()[-1])
        rel_to, rel_more, rel_side = _RELATIONS[relation]
        slots.update(rel_to=rel_to, Rel_to=rel_to[0].upper() + rel_to[1:], rel_more=rel_more, rel_side=rel_side,
                     opposite_to=_RELATIONS[_OPPOSITE[relation]][0])
    if "w" in g:
        slots["cmp"], slots["more"] = _COMPARE[g["w"]]
    return slots


def candidates(question: WorldQuestion) -> list[str]:
    """Every rewrite of the question's kind, before the check against the generator's phrasings; [] when no rule
    of its family parses it."""
    text = " ".join(question.question.split())
    for rule in RULES:
        if rule.family != question.family or rule.kind not in REWRITES:
            continue
        match = rule.pattern.fullmatch(text)
        if match:
            slots = _slots(match.groupdict())
            return [template.format(**slots) for template in REWRITES[rule.kind]]
    return []


def paraphrases(question: WorldQuestion) -> list[str]:
    """The rewrites that may stand for the question: none the generator could word, none equal to the original."""
    return [text for text in candidates(question)
            if not generator_phrasing(text) and text.lower() != question.question.lower()]


def paraphrase(question: WorldQuestion, rng: np.random.Generator) -> WorldQuestion | None:
    """The question reworded by one of its rewrites drawn with `rng` (answers, family, marks and objects kept), or
    None when it has none."""
    options = paraphrases(question)
    if not options:
        return None
    return question.model_copy(update={"question": options[int(rng.integers(len(options)))]})


def paraphrase_examples(examples: Iterable[Example]) -> Iterator[Example]:
    """The examples with every question reworded (seeded by scene and position) and the rest dropped; a scene left
    with no question is dropped."""
    for example in examples:
        kept = []
        for k, question in enumerate(example.questions):
            reworded = paraphrase(question, np.random.default_rng([PARAPHRASE_SEED, example.scene.seed, k]))
            if reworded is not None:
                kept.append(reworded)
        if kept:
            yield example._replace(questions=kept)
