"""A BLIP checkpoint as the text route's two BLIP tools hold it: the image-text matcher (gradcam.py) and the
captioner (region_captioner.py) load, place and encode images the same way, so they share this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vqagraph.tools.image_encoder import PixelVision, Vision


@dataclass
class BlipModel:
    """A BLIP model with its tokenizer and image processor, and what encodes images for it."""

    model: Any
    tokenizer: Any
    processor: Any
    vision: Vision | None = None  # a frozen encoder + adapter (tools/image_encoder.py); None: the model's own ViT

    def __post_init__(self) -> None:
        self.pixels_or_grid: Vision = self.vision or PixelVision(self.model.vision_model, self.processor)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_image(self, image: Image.Image, ref: str | None = None) -> torch.Tensor:
        """(1, 1 + N, dim); `ref` (the image's content hash) lets a frozen encoder share its grid across models."""
        return self.pixels_or_grid(ref, image)
