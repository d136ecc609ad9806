"""Captions for real photographs from the frozen encoder's ImageNet head and a colour table (docs/methods.md §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from vqagraph.tools.image_tags import (
    COLOUR_SHADES,
    ImageTagger,
    PhotoReading,
    Tag,
    answer_check,
    band_captions,
    main_colours,
    named_phrases,
    photo_captions,
    question_kind,
    region_boxes,
    srgb_to_lab,
    tag_caption,
    whole_photo_captions,
)
from vqagraph.tools.ocr import TextLine


def test_each_colour_term_is_its_own_nearest_name() -> None:
    for name, shades in COLOUR_SHADES.items():
        for rgb in shades:
            assert main_colours(Image.new("RGB", (40, 30), rgb)) == [name], (name, rgb)
    assert np.allclose(srgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=0.05)  # D65 white
    assert np.allclose(srgb_to_lab(np.array([0, 0, 0])), [0, 0, 0], atol=1e-6)


def test_colours_under_a_mask_and_of_the_bands() -> None:
    picture = Image.new("RGB", (200, 200), (40, 150, 50))  # green all round
    ImageDraw.Draw(picture).rectangle((50, 50, 150, 150), fill=(240, 210, 30))  # a yellow middle
    inside = np.zeros((4, 4), dtype=bool)
    inside[1:3, 1:3] = True  # the middle cells of a 4x4 grid over the picture
    assert main_colours(picture, mask=inside) == ["yellow"]
    assert main_colours(picture, mask=~inside) == ["green"]
    reading = PhotoReading(tags=[], band_colours={"top": ["blue"], "middle": ["yellow", "green"], "bottom": []},
                           dark=True)
    assert band_captions(reading) == ["the top of the picture is blue", "the middle of the picture is yellow and "
                                      "green"]
    assert whole_photo_captions(reading) == ["the picture is dark"]
    # what the whole photo is reaches every question; the bands only a question about colour
    assert photo_captions(reading, "What is this?")[0] == ["the picture is dark"]
    assert photo_captions(reading, "What colour is the sky?")[0][0] == "the top of the picture is blue"


def test_the_question_orders_the_captions() -> None:
    cat = Tag("cat", "Egyptian cat", 285, 0.7, "whole", (0, 0, 10, 10), ("gray", "white"))
    lemon = Tag("lemon", "lemon", 951, 0.2, "top left", (0, 0, 5, 5), ("yellow",))
    reading = PhotoReading(tags=[cat, lemon], band_colours={"top": ["blue"]})
    text = [('the text reads "HOTEL"', 0.9)]
    captions, scores = photo_captions(reading, "What colour is the lemon?", text)
    assert captions[:2] == ["a photo of a lemon in the top left", "the lemon is yellow"] and scores[:2] == [0.2, 0.2]
    assert "the cat is gray and white" in captions and "the top of the picture is blue" in captions
    captions, _ = photo_captions(reading, "What word is on the sign?", text)
    assert captions == ['the text reads "HOTEL"']  # text read: the text alone, no tag's word to answer with
    captions, _ = photo_captions(reading, "What word is on the sign?", [])
    assert captions == ["a photo of a cat", "a photo of a lemon in the top left"]  # none read: the tags, no colours
    captions, _ = photo_captions(reading, "What colour is the sky?", text)
    assert captions[0] == "the top of the picture is blue"  # no tag names the sky: the bands first
    captions, _ = photo_captions(reading, "What animal is this?", [])
    assert captions == ["a photo of a cat", "a photo of a lemon in the top left"]  # kinds name the cat; no colours
    assert named_phrases("What animal is this?") == ["animal"] and named_phrases("Is it a street sign?")[0] == \
        "street sign"
    assert named_phrases("What colour are the flowers?") == ["flower"] and named_phrases("What is it?") == []
    assert [question_kind(q) for q in ("What does it say?", "Is there a cat?", "What colour is it?", "What is it?")] \
        == ["text", "yes/no", "colour", "object"]
    # a question that mentions a sign or text but asks its colour, or how many, is not about what the text says
    assert [question_kind(q) for q in ("What colour is the sign?", "How many lines of text are on the sign?")] == \
        ["colour", "object"]
    captions, _ = photo_captions(reading, "What colour is the sign?", text)
    assert captions[0] == "the top of the picture is blue" and captions[-1] == 'the text reads "HOTEL"'
    assert answer_check("What colour is the sign?", ["text"], [TextLine("HOTEL", 0.9, (0, 0, 9, 9))]) is None
    assert answer_check("How many words are on the sign?", ["text"], [TextLine("HOTEL", 0.9, (0, 0, 9, 9))]) is None
    assert answer_check("What does the sign say?", ["text"], [TextLine("HOTEL", 0.9, (0, 0, 9, 9))]) == "text"


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
    tags = tagger(picture).tags
    assert tags == tagger(picture).tags  # deterministic
    assert len({t.name for t in tags}) == len(tags) and 1 <= len(tags) <= 12
    assert [t.probability for t in tags] == sorted((t.probability for t in tags), reverse=True)
    for t in tags:
        assert t.name == tagger.classes[t.index].basic and t.label == tagger.classes[t.index].names[0]
        assert t.region in dict(region_boxes(picture.size)) and 0 < t.probability <= 1 and not t.asked
        x0, y0, x1, y1 = t.box
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120 and t.colours


def test_a_yes_no_question_reads_the_class_it_names(tagger: ImageTagger) -> None:
    strict = ImageTagger(tagger.model, min_probability=0.9, top_k=1, question_min_probability=0.0)
    picture = Image.new("RGB", (160, 120), (240, 210, 30))
    assert not any(t.name == "lemon" for t in strict(picture).tags)
    asked = [t for t in strict(picture, "Is there a lemon in the picture?").tags if t.name == "lemon"]
    assert len(asked) == 1 and asked[0].asked and asked[0].label == "lemon"
    assert not any(t.asked for t in strict(picture, "What fruit is this?").tags)  # open questions add nothing


def test_a_photo_without_chroma_is_black_and_white(tagger: ImageTagger) -> None:
    from vqagraph.tools.image_tags import answer_check, asks_black_and_white, checked_answer

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 255, (120, 160, 1), dtype=np.uint8).repeat(3, axis=2)
    grey[:, :, 0] = np.clip(grey[:, :, 0].astype(int) + 2, 0, 255)  # a scan's faint cast is still grey
    assert tagger(Image.fromarray(grey)).black_and_white
    assert tagger(Image.fromarray(grey).convert("L")).black_and_white
    dull = Image.new("RGB", (160, 120), (128, 128, 128))
    ImageDraw.Draw(dull).rectangle((0, 0, 40, 30), fill=(150, 120, 110))  # a brownish tenth: a colour photo
    assert not tagger(dull).black_and_white
    assert "the picture is black and white" in photo_captions(tagger(Image.fromarray(grey)), "What is this?")[0]

    for question in ("Is this a black and white photo?", "Is this picture black and white?", "is the image grayscale",
                     "Was this photo taken in black & white?"):
        assert asks_black_and_white(question) is True, question
    for question in ("Is the photo in colour?", "Is this a color photograph?", "Is this picture colored?"):
        assert asks_black_and_white(question) is False, question
    for question in ("Is the car black and white?", "Is it black and white?", "Is this photo old?", "What colour?"):
        assert asks_black_and_white(question) is None, question  # about a thing, or not about the photo's colour
    checks = ["text", "existence", "black-and-white"]
    assert answer_check("Is this a black and white photo?", checks, []) == "black-and-white"
    assert answer_check("Is this a black and white photo?", ["existence"], []) is None
    assert checked_answer("black-and-white", "Is this a black and white photo?", "no", [], [], black_and_white=True) \
        == ("yes", "the picture is black and white")
    assert checked_answer("black-and-white", "Is the photo in colour?", "no", [], [], black_and_white=True) is None
    assert checked_answer("black-and-white", "Is the photo in colour?", "no", [], [], black_and_white=False)[0] == "yes"


def test_the_class_activation_maps_sum_to_the_logits(tagger: ImageTagger) -> None:
    import torch

    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, maps = tagger.model.class_activation_maps(pixels)
        assert maps.shape == (2, 1000, 7, 7) and torch.allclose(logits, tagger.model(pixels), atol=1e-4)


def test_the_photos_profile_answers_from_tags_and_colours(model_cache: Path) -> None:
    from vqagraph import Engine
    from vqagraph.request import AskRequest

    engine = Engine.from_profile("photos", llm={"id": "builtin:smollm2-135m-instruct"})  # a small chat LLM
    picture = Image.new("RGB", (160, 120), (245, 135, 20))
    answer: Any = engine.answer(AskRequest(question="What colour is it?", image=picture))
    record = answer.trace.img2llm
    assert answer.route == "img2llm" and "no bridge" in answer.trace.route_reason
    assert record["captions"][0] == "the top of the picture is orange" and record["band_colours"]["middle"] == \
        ["orange"]
    tag_captions = [c for c in record["captions"] if c.startswith("a photo of ")]
    assert len(tag_captions) == len(record["tags"]) and all(t["colours"] == ["orange"] for t in record["tags"])
    assert "the middle of the picture is orange" in record["prompt"]
    assert record["text_lines"] == [] and not any("text reads" in c for c in record["captions"])  # none invented


def test_a_yes_no_answer_is_calibrated_against_the_content_free_prompt(model_cache: Path) -> None:
    from vqagraph import Engine
    from vqagraph.request import AskRequest
    from vqagraph.tools.llm.base import Generation
    from vqagraph.tools.llm.calibration import answer_token_ids, calibrate_yes_no

    engine = Engine.from_profile("photos", llm={"id": "builtin:smollm2-135m-instruct"},
                                 img2llm={"yes_no_calibration": True})
    tokenizer = engine.tools.llm.tokenizer
    ids = answer_token_ids(tokenizer)
    assert ids["yes"] and ids["no"] and not ids["yes"] & ids["no"]
    yes, no = min(ids["yes"]), min(ids["no"])

    def first(p_yes: float, p_no: float) -> Generation:
        return Generation(text="no", token_ids=[no], logprobs=[-0.5], finish_reason="stop",
                          first_top_logprobs={yes: float(np.log(p_yes)), no: float(np.log(p_no)), 7: -0.1})

    # The LLM leans to "no" (36 : 64) with no context at all; with the photo's it says 40 : 60: that is a "yes".
    decided = calibrate_yes_no(tokenizer, first(0.2, 0.3), first(0.18, 0.32))
    assert decided is not None and decided.answer == "yes" and decided.p_yes == 0.4 and decided.p_yes_content_free \
        == 0.36 and 0.5 < decided.calibrated_p_yes < 0.6
    assert calibrate_yes_no(tokenizer, first(0.1, 0.3), first(0.18, 0.32)).answer == "no"  # type: ignore[union-attr]
    assert calibrate_yes_no(tokenizer, Generation(text="a", token_ids=[7], logprobs=[-0.1], finish_reason="stop",
                                                  first_top_logprobs={7: -0.1}), first(0.2, 0.3)) is None

    picture = Image.new("RGB", (160, 120), (245, 135, 20))
    answer: Any = engine.answer(AskRequest(question="Is it orange?", image=picture))
    record, mine = answer.trace.img2llm, answer.trace.route_answers["img2llm"]
    calibration = mine["calibration"]
    assert answer.answer == calibration["answer"] == ("yes" if calibration["calibrated_p_yes"] > 0.5 else "no")
    assert 0 < calibration["p_yes"] < 1 and 0 < calibration["p_yes_content_free"] < 1
    assert "Contexts:N/A" in record["content_free_prompt"] and record["captions"][0] in record["prompt"]
    assert not any(caption in record["content_free_prompt"] for caption in record["captions"])
    assert record["content_free_prompt"].endswith(record["prompt"][record["prompt"].rindex("Is it orange?"):])
    sampled: Any = engine.answer(AskRequest(question="Is it orange?", image=picture,
                                            generation={"temperature": 0.7, "seed": 1}))
    assert "calibration" not in sampled.trace.route_answers["img2llm"]  # a sampled answer is the LLM's own draw
    other: Any = engine.answer(AskRequest(question="What colour is it?", image=picture))
    assert not other.trace.img2llm["content_free_prompt"] and "calibration" not in other.trace.route_answers["img2llm"]


def test_the_answer_to_a_question_about_text_is_text_that_was_read(model_cache: Path) -> None:
    from vqagraph import Engine
    from vqagraph.request import AskRequest

    engine = Engine.from_profile("photos", llm={"id": "builtin:smollm2-135m-instruct"})
    sign = Image.new("RGB", (520, 260), "white")
    draw = ImageDraw.Draw(sign)
    draw.text((20, 20), "HOTEL", font=ImageFont.load_default(size=96), fill="black")  # the tallest line
    draw.text((20, 180), "OPEN 24", font=ImageFont.load_default(size=40), fill="black")
    answer: Any = engine.answer(AskRequest(question="What word is on the sign?", image=sign))
    record, mine = answer.trace.img2llm, answer.trace.route_answers["img2llm"]
    read = [line["text"].lower() for line in record["text_lines"]]
    assert read == ["hotel", "open 24"] and record["captions"] == ['the text reads "HOTEL"', 'the text reads "OPEN 24"']
    # SmolLM2 answers 'the sign is "the sign' (greedy): read nowhere, so the tallest line answers instead
    assert answer.answer == "hotel" and mine["checked"]["by"] == "text"
    assert mine["checked"]["why"] == 'the text reads "HOTEL"'
    assert not any(mine["checked"]["llm_answer"] in line for line in read)
    key = (answer.trace.seen_image_ref, "text-lines", 0.6)
    lines = engine.tools.features.get(key)  # read once, kept for the next question about the same image
    assert [line.text.lower() for line in lines] == read
    engine.tools.features.put(key, [TextLine("MOTEL", 0.9, (20, 20, 300, 116))])
    again: Any = engine.answer(AskRequest(question="What word is on the sign?", image=sign))
    assert again.trace.img2llm["text_lines"] == [{"text": "MOTEL", "score": 0.9, "box": [20, 20, 300, 116]}]
    engine.tools.features.put(key, lines)
    events = list(engine.conversation(store="memory").stream("What word is on the sign?", image=sign))
    assert "".join(value for kind, value in events if kind == "token") == "hotel"  # streamed once, as decided
    quoted: Any = engine.answer(AskRequest(question="What is written on the sign?", image=sign))
    # SmolLM2 answers 'the sign reads "hotel"': the line read is under half of it, so the line itself answers
    said = quoted.trace.route_answers["img2llm"]
    assert quoted.answer == "hotel" and said["checked"]["llm_answer"].startswith("the sign reads")
    asked: Any = engine.answer(AskRequest(question="Does the sign say hotel?", image=sign))
    assert "checked" not in asked.trace.route_answers["img2llm"]  # a yes/no question keeps its yes or no
    giraffe: Any = engine.answer(AskRequest(question="Is there a giraffe in the picture?", image=sign))
    assert giraffe.answer == "no" and not any(t["name"] == "giraffe" for t in giraffe.trace.img2llm["tags"])
    assert giraffe.trace.route_answers["img2llm"].get("checked", {"by": "existence"})["by"] == "existence"
    grey: Any = engine.answer(AskRequest(question="Is this a black and white photo?", image=sign))
    assert grey.answer == "yes" and grey.trace.img2llm["black_and_white"]
    assert grey.trace.route_answers["img2llm"].get("checked", {"by": "black-and-white"})["by"] == "black-and-white"
    plain = Engine.from_profile("photos", llm={"id": "builtin:smollm2-135m-instruct"},
                                img2llm={"answer_checks": []})
    own: Any = plain.answer(AskRequest(question="What word is on the sign?", image=sign))
    assert "checked" not in own.trace.route_answers["img2llm"]
    assert own.answer == mine["checked"]["llm_answer"]  # the LLM's own answer


def test_an_existence_question_is_answered_by_the_tags() -> None:
    from vqagraph.tools.image_tags import answer_check, checked_answer, existence_phrase

    assert existence_phrase("Is there a lemon in the picture?") == "lemon"
    assert existence_phrase("Are there any cats?") == "cat" and existence_phrase("Is this a golden retriever?") == \
        "golden retriever"
    for other in ("Is there a pen on the table?", "Is there a blue candy?", "Is the dog's mouth open?", "Is it night?",
                  "What is this?"):
        assert existence_phrase(other) is None, other
    lemon = Tag("lemon", "lemon", 951, 0.79, "middle", (0, 0, 5, 5))
    cat = Tag("cat", "tabby", 281, 0.6, "whole", (0, 0, 10, 10))
    assert answer_check("Is there a lemon?", ["text", "existence"], []) == "existence"
    assert answer_check("Is there a lemon?", ["text"], []) is None and answer_check("What fruit?", ["existence"], []) \
        is None
    assert checked_answer("existence", "Is there a lemon?", "no", [cat, lemon], []) == \
        ("yes", "seen: a photo of a lemon in the middle")
    assert checked_answer("existence", "Is there a lemon?", "yes", [cat, lemon], []) is None  # the LLM agreed
    assert checked_answer("existence", "Is this a dog?", "yes", [cat], []) == ("no", "nothing seen is a dog")
    assert existence_phrase("Are there any animals?") is None  # a kind: many classes, and no tag is no evidence


def test_detections_become_captions_the_question_reads_first() -> None:
    from vqagraph.models.centernet import Detection
    from vqagraph.tools.image_tags import group_detections, names_objects, object_captions

    picture = Image.new("RGB", (200, 100), (40, 150, 50))  # grass
    ImageDraw.Draw(picture).ellipse((150, 50, 190, 90), fill=(240, 210, 30))  # a yellow ball
    found = [Detection("person", 0.3, (10, 10, 40, 90)), Detection("sports ball", 0.7, (150, 50, 190, 90)),
             Detection("person", 0.6, (50, 10, 80, 90)), Detection("bird", 0.25, (0, 0, 20, 20))]
    ball, people, bird = group_detections(found, picture)  # surest first
    assert (ball.noun, people.noun, bird.noun) == ("ball", "person", "bird") and people.scores == (0.6, 0.3)
    assert ball.colours == ("yellow",)  # inside the ball's box, its corners (grass) left out
    assert object_captions(people) == ["a photo of two people"] and object_captions(people, min_score=0.5) == \
        ["a photo of a person"]
    assert object_captions(ball, colour=True) == ["a photo of a ball", "the ball is yellow"]
    assert names_objects("How many men are there?", people) and names_objects("What colour are the balls?", ball)
    assert not names_objects("What colour is the ballroom?", ball)
    cat = Tag("cat", "tabby", 281, 0.6, "whole", (0, 0, 10, 10), ("gray",))
    reading = PhotoReading(tags=[cat])
    captions, scores = photo_captions(reading, "How many people are there?", [], objects=[people, ball, bird])
    # asked: every detection (two people); not asked: only from 0.5 (the ball, not the bird)
    assert captions == ["a photo of two people", "a photo of a cat", "a photo of a ball"] and scores[0] == 0.6
    captions, _ = photo_captions(reading, "What colour is the ball?", [], objects=[people, ball, bird])
    assert captions[:2] == ["a photo of a ball", "the ball is yellow"]


def test_an_existence_question_reads_the_detections_too() -> None:
    from vqagraph.models.centernet import Detection
    from vqagraph.tools.image_tags import checked_answer, existence_phrase, group_detections

    detectable = {"person", "ball", "giraffe"}
    assert existence_phrase("Is there a person in the picture?", detectable) == "person"
    assert existence_phrase("Are there people?", detectable) == "people"
    assert existence_phrase("Is there a person?") is None  # no detector: ImageNet has no class for a person
    people = group_detections([Detection("person", 0.3, (0, 0, 5, 5))])
    assert checked_answer("existence", "Are there any people?", "no", [], [], people, detectable) == \
        ("yes", "seen: a photo of a person")
    assert checked_answer("existence", "Is there a giraffe?", "yes", [], [], people, detectable) == \
        ("no", "nothing seen is a giraffe")


def test_the_photos_profile_with_the_object_detector(model_cache: Path) -> None:
    from vqagraph import Engine
    from vqagraph.request import AskRequest

    engine = Engine.from_profile("photos", llm={"id": "builtin:smollm2-135m-instruct"},
                                 img2llm={"object_detector": "builtin:centernet-coco"})
    photo = Image.open(Path(__file__).parents[1] / "vqagraph/data/demo/fosters-sign.jpg")
    answer: Any = engine.answer(AskRequest(question="How many people are there?", image=photo))
    record = answer.trace.img2llm
    people = [o for o in record["objects"] if o["label"] == "person"]
    assert people and all(o["score"] >= 0.2 for o in record["objects"])
    count = ["a person", "two people", "three people", "four people", "five people", "six people"][len(people) - 1]
    assert record["captions"][0] == f"a photo of {count}"  # the question names people: their count first
    assert engine.explain(answer) is not None
    plain: Any = Engine.from_profile("photos", llm={"id": "builtin:smollm2-135m-instruct"}).answer(
        AskRequest(question="How many people are there?", image=photo))
    assert plain.trace.img2llm["objects"] == []  # the photos profile runs without it (docs/methods.md §8)
