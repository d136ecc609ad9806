"""One image through a BLIP ViT: the features GradCAM, region captioning, ITM filtering and the Q-Former read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image


def pixel_values(processor: Any, images: Sequence[Image.Image], model: torch.nn.Module) -> torch.Tensor:
    """The checkpoint's image processor on a batch of images, on `model`'s device and dtype."""
    param = next(model.parameters())
    return processor(images=list(images), return_tensors="pt")["pixel_values"].to(param.device, dtype=param.dtype)


@torch.no_grad()
def vision_features(vision_model: Any, processor: Any, images: Sequence[Image.Image]) -> torch.Tensor:
    """`last_hidden_state` (B, 1 + patches, dim) on the model's device and dtype, the images in one pass; callers
    cache it by image hash, so each image is encoded once per model."""
    return vision_model(pixel_values=pixel_values(processor, images, vision_model)).last_hidden_state
