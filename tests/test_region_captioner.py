"""Region captions: one batched generate per round, the image encoded once, the ITM filter and its round cap."""

from __future__ import annotations

from typing import Any

import pytest

from vqagraph.config import Img2LLMSettings
from vqagraph.media import FeatureCache, image_ref
from vqagraph.tools.region_captioner import RegionCaptioner


class Counter:
    """Wraps a callable and counts calls, passing everything through to the real one."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


@pytest.fixture
def parts(engine):  # type: ignore[no-untyped-def]
    return engine.tools.matcher, engine.tools.captioner


def make(parts, **settings: Any) -> RegionCaptioner:  # type: ignore[no-untyped-def]
    matcher, captioner = parts
    return RegionCaptioner(matcher, captioner, Img2LLMSettings(gradcam_layer=1, **settings), FeatureCache())


def test_one_batched_generate_per_round_and_one_encoding_per_model(parts, red_circle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    matcher, captioner = parts
    generate = Counter(captioner.model.text_decoder.generate)
    monkeypatch.setattr(captioner.model.text_decoder, "generate", generate)
    itm_encode = Counter(matcher.encode_image)
    cap_encode = Counter(captioner.encode_image)
    match = Counter(matcher.match_probability)
    monkeypatch.setattr(matcher, "encode_image", itm_encode)
    monkeypatch.setattr(captioner, "encode_image", cap_encode)
    monkeypatch.setattr(matcher, "match_probability", match)
    region = make(parts, num_captions=6, max_caption_rounds=1, itm_threshold=0.0)
    ref = image_ref(red_circle)
    result = region(ref, red_circle, "what colour is the circle?")
    assert len(generate.calls) == 1
    assert generate.calls[0][1]["input_ids"].shape[0] == 6  # all six captions in that one call
    assert generate.calls[0][1]["encoder_hidden_states"].shape[:2] == (6, 20)  # K'=20 patches each
    assert len(match.calls) == 1  # the ITM filter scores the whole round in one pass
    assert len(itm_encode.calls) == 1 and len(cap_encode.calls) == 1
    assert result.image_encoded
    assert result.generated == 6 and result.rounds == 1
    assert len(result.captions) + result.rejected_itm + result.rejected_duplicate == 6
    assert all(len(ids) == 20 and ids == sorted(ids) and len(set(ids)) == 20 for ids in result.patch_ids)
    grid = result.grid
    assert len(result.gradcam) == grid[0] * grid[1] and abs(sum(result.gradcam) - 1) < 1e-3
    # A second question on the same image reuses both encodings.
    again = region(ref, red_circle, "is there a square?")
    assert len(itm_encode.calls) == 1 and len(cap_encode.calls) == 1
    assert not again.image_encoded


def test_rounds_are_capped_and_rejections_counted(parts, red_circle) -> None:  # type: ignore[no-untyped-def]
    region = make(parts, num_captions=4, max_caption_rounds=3, itm_threshold=1.0)  # nothing can pass
    result = region(image_ref(red_circle), red_circle, "what is it?")
    assert result.captions == []
    assert result.rounds == 3 and result.generated == 12 and result.rejected_itm == 12


def test_substrings_of_kept_captions_are_rejected(parts, red_circle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _matcher, captioner = parts
    monkeypatch.setattr(captioner, "caption", lambda embeds, settings, seed: [
        "a red circle on grass", "red circle", "a red circle on grass", "a blue square"][: embeds.shape[0]])
    region = make(parts, num_captions=4, max_caption_rounds=1, itm_threshold=0.0)
    result = region(image_ref(red_circle), red_circle, "what is it?")
    assert result.captions == ["a red circle on grass", "a blue square"]
    assert result.rejected_duplicate == 2


def test_same_seed_same_captions(parts, red_circle) -> None:  # type: ignore[no-untyped-def]
    first = make(parts, num_captions=5, max_caption_rounds=1, itm_threshold=0.0, seed=7)
    second = make(parts, num_captions=5, max_caption_rounds=1, itm_threshold=0.0, seed=7)
    ref = image_ref(red_circle)
    a, b = first(ref, red_circle, "what is it?"), second(ref, red_circle, "what is it?")
    assert a.captions == b.captions and a.patch_ids == b.patch_ids
    other = make(parts, num_captions=5, max_caption_rounds=1, itm_threshold=0.0, seed=8)(ref, red_circle, "what is it?")
    assert other.patch_ids != a.patch_ids


def test_all_patches_ablation_captions_the_whole_image(parts, red_circle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _matcher, captioner = parts
    seen = Counter(captioner.caption)
    monkeypatch.setattr(captioner, "caption", seen)
    region = make(parts, num_captions=3, max_caption_rounds=1, itm_threshold=0.0, patch_selection="all")
    result = region(image_ref(red_circle), red_circle, "what is it?")
    patches = seen.calls[0][0][0]  # (captions, CLS + every patch, dim)
    assert patches.shape[1] == result.grid[0] * result.grid[1] + 1
    assert all(len(ids) == result.grid[0] * result.grid[1] for ids in result.patch_ids)
