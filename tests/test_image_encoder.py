"""The image encoder role: the frozen EfficientNet-Lite grid is computed once per image and shared by every vision
model of the `shapes` profile, each reading it through its own trained adapter; Hub-style profiles keep their ViT."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vqagraph.config import load_profile
from vqagraph.errors import ModelMismatchError, ProfileError
from vqagraph.media import FeatureCache
from vqagraph.toolkit import Toolkit
from vqagraph.tools.image_encoder import FrozenImageEncoder, GridAdapter, GridAdapterConfig, load_adapter


def _scene_image(seed: int = 3) -> Any:
    from vqagraph.world import generate_scene, render_scene

    return render_scene(generate_scene(seed))


class CountingEncoder:
    """Counts the frozen network's forward passes."""

    def __init__(self, encoder: FrozenImageEncoder) -> None:
        self.calls = 0
        self.inner = encoder.encode_pixels

        def counted(pixels: torch.Tensor) -> torch.Tensor:
            self.calls += pixels.shape[0]
            return self.inner(pixels)

        encoder.encode_pixels = counted  # type: ignore[method-assign]


def test_shapes_profile_names_a_frozen_encoder_and_others_do_not() -> None:
    shapes = load_profile("shapes")
    assert shapes.image_encoder is not None and shapes.image_encoder.model.id == "builtin:efficientnet-lite0"
    assert load_profile("blip-opt").image_encoder is None and load_profile("tiny").image_encoder is None
    with pytest.raises(ProfileError):
        load_profile("shapes", image_encoder={"image_size": 0})


def test_one_image_is_encoded_once_for_every_model_and_question() -> None:
    tools = Toolkit(load_profile("shapes", img2llm={"num_captions": 2, "max_caption_rounds": 1}))
    encoder = tools.image_encoder
    assert encoder is not None
    counter = CountingEncoder(encoder)
    image = _scene_image()
    first = tools.region_captioner("ref-a", image, "What colour is the circle?")
    assert first.image_encoded and counter.calls == 1  # the ITM model and the captioner share one grid
    prompt, _ = tools.qformer("ref-a", image, "What shape is it?")
    assert counter.calls == 1 and prompt.shape[-1] == 576  # the Q-Former reads the same grid
    second = tools.region_captioner("ref-a", image, "Is there a square?")
    assert not second.image_encoded and counter.calls == 1  # a second question: no encoder run at all
    tools.region_captioner("ref-b", _scene_image(4), "Is there a square?")
    assert counter.calls == 2


def test_frozen_encoder_has_no_trainable_parameter() -> None:
    tools = Toolkit(load_profile("shapes"))
    encoder = tools.image_encoder
    assert encoder is not None
    assert all(not p.requires_grad for p in encoder.model.parameters())
    grid, fresh = encoder("ref", _scene_image())
    assert fresh and grid.shape == (1, encoder.channels, *encoder.grid) == (1, 112, 14, 14)


def test_two_stages_are_pooled_to_one_grid() -> None:
    from vqagraph import hub
    from vqagraph.config import ModelRef
    from vqagraph.models.efficientnet_lite import EfficientNetLiteModel

    model = hub.load(EfficientNetLiteModel, ModelRef(id="builtin:efficientnet-lite0"), "image_encoder",
                     device=torch.device("cpu"))
    encoder = FrozenImageEncoder(model, 224, [2, 4], FeatureCache(4), "lite0")
    grid, _ = encoder(None, _scene_image())
    assert encoder.channels == 40 + 112 and grid.shape == (1, 152, 14, 14)


def test_adapter_refuses_a_grid_it_was_not_trained_on() -> None:
    adapter = GridAdapter(GridAdapterConfig(in_channels=112, hidden_size=128, grid=(14, 14)))
    assert adapter(pixel_values=torch.zeros(2, 112, 14, 14)).last_hidden_state.shape == (2, 197, 128)
    with pytest.raises(ModelMismatchError, match="image_encoder settings"):
        adapter(pixel_values=torch.zeros(1, 112, 20, 20))


def test_a_model_without_its_adapter_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(ModelMismatchError, match="image_adapter"):
        load_adapter(tmp_path)


def test_letterbox_keeps_proportions_and_maps_boxes() -> None:
    from PIL import Image

    from vqagraph.media import LETTERBOX_FILL, letterbox, letterbox_box
    from vqagraph.tools.region_captioner import region_patches

    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    square = letterbox(wide)
    assert square.size == (200, 200)
    assert square.getpixel((100, 10)) == LETTERBOX_FILL and square.getpixel((100, 100)) == (255, 0, 0)
    assert letterbox_box((200, 100), (0, 0, 200, 100)) == ((200, 200), (0, 50, 200, 150))
    # the top half of a wide picture lies in the letterboxed square's middle rows, not its top half
    inside = region_patches((4, 4), (200, 100), (0, 0, 200, 50), letterboxed=True).reshape(4, 4)
    assert inside[1].all() and not inside[0].any() and not inside[2:].any()
    assert region_patches((4, 4), (200, 100), (0, 0, 200, 50)).reshape(4, 4)[:2].all()  # stretched: rows 0-1


def test_encoder_letterboxes_what_it_sees() -> None:
    from PIL import Image

    from vqagraph import hub
    from vqagraph.config import ModelRef
    from vqagraph.models.efficientnet_lite import EfficientNetLiteModel

    model = hub.load(EfficientNetLiteModel, ModelRef(id="builtin:efficientnet-lite0"), "image_encoder",
                     device=torch.device("cpu"))
    wide = Image.new("RGB", (448, 224), (200, 30, 30))
    boxed = FrozenImageEncoder(model, 224, [4], FeatureCache(2), "lite0", letterbox=True).pixels([wide])
    stretched = FrozenImageEncoder(model, 224, [4], FeatureCache(2), "lite0", letterbox=False).pixels([wide])
    grey = (127 - 127) / 128
    assert torch.allclose(boxed[0, :, 0, 0], torch.full((3,), grey)) and boxed[0, 0, 112, 112] > 0.5
    assert stretched[0, 0, 0, 0] > 0.5  # no border: the picture fills the input
