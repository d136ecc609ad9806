"""GradCAM against an independent autograd computation, its shape against the patch grid, and its sampling."""

from __future__ import annotations

import pytest
import torch

from vqagraph.errors import ModelMismatchError
from vqagraph.tools.gradcam import compute_gradcam, normalise_gradcam, patch_grid


def _reference_gradcam(model, image_embeds, input_ids, attention_mask, layer):  # type: ignore[no-untyped-def]
    """docs/methods.md §1.1 written out with explicit loops, from transformers' own `output_attentions` record."""
    image_embeds = image_embeds.detach()
    atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
    out = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                             encoder_attention_mask=atts, output_attentions=True)
    probs = out.cross_attentions[layer]  # (batch, heads, tokens, 1 + patches)
    logit = model.itm_head(out.last_hidden_state[:, 0, :])[:, 1].sum()
    (grad,) = torch.autograd.grad(logit, probs)
    batch, heads, _tokens, keys = probs.shape
    maps = torch.zeros(batch, keys - 1)
    for b in range(batch):
        length = int(attention_mask[b].sum())
        real_tokens = range(1, length - 1)
        for t in real_tokens:
            for p in range(1, keys):
                value = sum(float(probs[b, h, t, p].detach()) * max(float(grad[b, h, t, p]), 0.0) for h in range(heads))
                maps[b, p - 1] += value / heads
        maps[b] /= max(len(real_tokens), 1)
    return maps


@pytest.fixture(scope="module")
def matcher(engine):  # type: ignore[no-untyped-def]
    return engine.tools.matcher


def test_gradcam_matches_independent_autograd(matcher, red_circle) -> None:  # type: ignore[no-untyped-def]
    embeds = matcher.encode_image(red_circle)
    tokens = matcher.tokenizer(["what colour is the circle", "is there a red shape on the left"],
                               return_tensors="pt", padding="longest")
    ours = compute_gradcam(matcher.model, embeds.expand(2, -1, -1), tokens.input_ids, tokens.attention_mask, 1)
    expected = _reference_gradcam(matcher.model, embeds.expand(2, -1, -1), tokens.input_ids,
                                  tokens.attention_mask, 1)
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-9)
    assert float(ours.sum()) > 0  # a real map, not all zeros
    # Padding must not leak: the shorter question's map equals its map computed alone.
    alone = matcher.tokenizer(["what colour is the circle"], return_tensors="pt")
    single = compute_gradcam(matcher.model, embeds, alone.input_ids, alone.attention_mask, 1)
    assert torch.allclose(single[0], ours[0], rtol=1e-4, atol=1e-9)


def test_gradcam_shape_is_the_patch_grid(matcher, red_circle) -> None:  # type: ignore[no-untyped-def]
    embeds = matcher.encode_image(red_circle)
    cam = matcher.gradcam(embeds, ["What colour is the circle?"], layer=1)[0]
    config = matcher.model.config.vision_config
    side = config.image_size // config.patch_size
    assert cam.shape == (side * side,)
    assert patch_grid(side * side) == (side, side)
    assert (cam >= 0).all()


def test_gradcam_leaves_parameter_gradients_alone(matcher, red_circle) -> None:  # type: ignore[no-untyped-def]
    embeds = matcher.encode_image(red_circle)
    matcher.gradcam(embeds, ["what is it"], layer=1)
    assert all(p.grad is None for p in matcher.model.parameters())


def test_gradcam_layer_out_of_range_is_a_clear_error(matcher, red_circle) -> None:  # type: ignore[no-untyped-def]
    embeds = matcher.encode_image(red_circle)
    with pytest.raises(ModelMismatchError, match="GradCAM layer 9 does not exist"):
        matcher.gradcam(embeds, ["what is it"], layer=9)
    last = matcher.model.config.text_config.num_hidden_layers - 1
    with pytest.raises(ModelMismatchError, match="last layer"):
        matcher.gradcam(embeds, ["what is it"], layer=last)


def test_normalised_map_is_a_distribution_with_a_floor() -> None:
    zeros = torch.zeros(1, 16)
    probs = normalise_gradcam(zeros, floor=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(1))
    assert torch.allclose(probs, torch.full((1, 16), 1 / 16))
    peaked = torch.zeros(1, 16)
    peaked[0, 3] = 5.0
    probs = normalise_gradcam(peaked, floor=1e-3)
    assert (probs > 0).all() and int(probs.argmax()) == 3
    # Sampling K' without replacement never fails, even with more patches asked than have mass.
    ids = torch.multinomial(probs, 10, replacement=False, generator=torch.Generator().manual_seed(0))
    assert len(set(ids[0].tolist())) == 10


def test_non_square_grid_is_rejected() -> None:
    with pytest.raises(ModelMismatchError, match="not a square grid"):
        patch_grid(12)
