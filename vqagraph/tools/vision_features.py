"""One image through a BLIP ViT: the features GradCAM, region captioning, ITM filtering and the Q-Former read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image


@torch.no_grad()
def vision_features(vision_model: Any, processor: Any, images: Sequence[Image.Image]) -> torch.Tensor:
    """`last_hidden_state` (B, 1 + patches, dim) on the model's device and dtype, the images in one pass; callers
    cache it by image hash, so each image is encoded once per model."""
    param = next(vision_model.parameters())
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"].to(param.device, dtype=param.dtype)
    return vision_model(pixel_values=pixels).last_hidden_state
