"""Captions for real photographs from the frozen encoder's ImageNet head and a colour table (docs/methods.md §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vqagraph.tools.image_tags import (
    COLOUR_SHADES,
    ImageTagger,
    Tag,
    colour_captions,
    main_colours,
    region_boxes,
    srgb_to_lab,
    tag_caption,
)


def test_each_colour_term_is_its_own_nearest_name() -> None:
    for name, shades in COLOUR_SHADES.items():
        for rgb in shades:
            assert main_colours(Image.new("RGB", (40, 30), rgb)) == [name], (name, rgb)
    assert np.allclose(srgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=0.05)  # D65 white
    assert np.allclose(srgb_to_lab(np.array([0, 0, 0])), [0, 0, 0], atol=1e-6)


def test_colours_of_the_middle_come_first() -> None:
    picture = Image.new("RGB", (200, 200), (40, 150, 50))  # green all round
    ImageDraw.Draw(picture).rectangle((50, 50, 150, 150), fill=(240, 210, 30))  # a yellow middle
    assert colour_captions(picture) == ["the main colour is yellow", "the colours of the whole picture are green "
                                        "and yellow"]
    assert colour_captions(Image.new("RGB", (64, 64), (30, 70, 200))) == ["the main colour is blue"]


def test_regions_cover_the_photo_and_captions_read_naturally() -> None:
    boxes = dict(region_boxes((300, 150)))
    assert boxes["whole"] == (0, 0, 300, 150) and boxes["middle"] == (50, 25, 250, 125)
    assert boxes["bottom right"] == (100, 50, 300, 150) and len(boxes) == 6
    cat = Tag("cat", "Egyptian cat", 285, 0.77, "whole", (0, 0, 300, 150))
    assert tag_caption(cat) == "a photo of a cat"
    assert tag_caption(cat, own_name=True) == "a photo of a cat (Egyptian cat)"
    orange = Tag("orange", "orange", 950, 0.5, "top left", (0, 0, 200, 100))
    assert tag_caption(orange) == "a photo of an orange in the top left"


@pytest.fixture(scope="module")
def tagger(model_cache: Path) -> ImageTagger:
    from vqagraph.hub import cache_root
    from vqagraph.models.efficientnet_lite import EfficientNetLiteModel, ensure_efficientnet_lite

    model = EfficientNetLiteModel.from_pretrained(ensure_efficientnet_lite("efficientnet-lite0", cache_root()))
    return ImageTagger(model, min_probability=0.0, top_k=2)


def test_tags_are_named_once_at_their_best_region(tagger: ImageTagger) -> None:
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    tags = tagger(picture)
    assert tags == tagger(picture)  # deterministic
    assert len({t.name for t in tags}) == len(tags) and 1 <= len(tags) <= 12
    assert [t.probability for t in tags] == sorted((t.probability for t in tags), reverse=True)
    for t in tags:
        assert t.name == tagger.classes[t.index].basic and t.label == tagger.classes[t.index].names[0]
        assert t.region in dict(region_boxes(picture.size)) and 0 < t.probability <= 1


def test_the_photos_profile_answers_from_tags_and_colours(model_cache: Path) -> None:
    from vqagraph import Engine
    from vqagraph.request import AskRequest

    engine = Engine.from_profile("photos", llm={"id": "builtin:smollm2-135m-instruct"})  # a small chat LLM
    picture = Image.new("RGB", (160, 120), (245, 135, 20))
    answer: Any = engine.answer(AskRequest(question="What colour is it?", image=picture))
    record = answer.trace.img2llm
    assert answer.route == "img2llm" and "no bridge" in answer.trace.route_reason
    assert "the main colour is orange" in record["captions"]
    assert all(c.startswith("a photo of ") for c in record["captions"][:len(record["tags"])])
    assert record["caption_scores"][:len(record["tags"])] == [t["probability"] for t in record["tags"]]
    assert "the main colour is orange" in record["prompt"]
    assert record["text_lines"] == [] and not any("text reads" in c for c in record["captions"])  # none invented
