"""The image encoder role: what turns an image into the patch tokens GradCAM, the captioner, the ITM filter and the
Q-Former read, as a `(1, 1 + patches, dim)` tensor whose index 0 is a CLS token (BLIP's ViT layout).

Two kinds, one interface (`Vision.__call__(ref, image)`, and `Vision.many` for a batch in one pass):
- `PixelVision`: a checkpoint's own ViT reads pixels (the Hub profiles: BLIP, BLIP-2 unchanged).
- `AdaptedVision`: a *frozen pretrained* CNN (EfficientNet-Lite, docs/methods.md §6.1)
  computes a feature grid once per image, shared by every model of the profile through the feature cache; each
  model reads it through its own small trained `GridAdapter` (BLIP-2 §3: only what sits on the frozen encoder
  is trained).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from vqagraph.errors import ModelMismatchError
from vqagraph.media import FeatureCache, letterbox
from vqagraph.tools.batching import Batcher, BatchPolicy
from vqagraph.tools.vision_features import vision_features

ADAPTER_FOLDER = "image_adapter"  # inside each Shapes-world model directory


class Vision(Protocol):
    @property
    def letterboxed(self) -> bool:
        """The grid covers the image centred on a square (media.letterbox), not the image stretched."""
        ...

    def __call__(self, ref: str | None, image: Image.Image) -> torch.Tensor: ...

    def many(self, refs: Sequence[str | None], images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Each image's tokens, the images encoded together (a batched stage's images)."""
        ...


# --- the frozen encoder -------------------------------------------------------------------------------------


class FrozenImageEncoder:
    """A frozen pretrained CNN's feature grid `(1, channels, rows, cols)` per image, computed once per image.

    With several stages, the finer grids are average-pooled to the coarsest one and the channels concatenated
    (stride 8 keeps colour of tiny objects, stride 16 shape: docs/methods.md §6.1)."""

    def __init__(self, model: Any, image_size: int, stages: Sequence[int], cache: FeatureCache, name: str,
                 letterbox: bool = True, policy: BatchPolicy | None = None, chunk: int | None = None) -> None:
        # channels-last: the depthwise convolutions of a mobile CNN run 1.4-1.5x faster on a CPU in that layout,
        # at every batch size (benchmarks/bench_batching.py --only encoder); values agree to ~4e-5.
        self.model = model.eval().to(memory_format=torch.channels_last)
        # At most `chunk` images per forward pass: on a CPU a CNN's activations for a large batch overflow the
        # caches, and 32 images at once ran slower than one by one (config.CPU_ENCODER_CHUNK, measured).
        self.chunk = chunk
        # Concurrent questions' new images go through the CNN together (tools/batching.py).
        self.batcher: Batcher[Image.Image, torch.Tensor] = (policy or BatchPolicy()).batcher(
            self.encode_images, stage="image_encoder")
        self.letterbox = letterbox
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.image_size = image_size
        self.stages = list(stages)
        self.cache = cache
        self.name = name

    @property
    def channels(self) -> int:
        return sum(int(self.model.stage_channels(s)) for s in self.stages)

    @property
    def grid(self) -> tuple[int, int]:
        stride = max(int(self.model.stage_stride(s)) for s in self.stages)
        side = -(-self.image_size // stride)
        return side, side

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        from vqagraph.models.efficientnet_lite import preprocess

        param = next(self.model.parameters())
        config = self.model.config
        if self.letterbox:
            images = [letterbox(image) for image in images]
        return preprocess(list(images), self.image_size, config.image_mean, config.image_std).to(param.device,
                                                                                              param.dtype)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(B, channels, rows, cols)` from preprocessed pixels (the trainers call this on whole batches)."""
        step = self.chunk or len(pixels)
        if len(pixels) > step:
            return torch.cat([self.encode_pixels(pixels[i : i + step]) for i in range(0, len(pixels), step)])
        maps = self.model.stage_features(pixels.contiguous(memory_format=torch.channels_last), self.stages)
        rows, cols = min((m.shape[-2:] for m in maps), key=lambda s: s[0])
        pooled = [m if m.shape[-2:] == (rows, cols) else F.adaptive_avg_pool2d(m, (rows, cols)) for m in maps]
        return torch.cat(pooled, dim=1).float()

    def __call__(self, ref: str | None, image: Image.Image) -> tuple[torch.Tensor, bool]:
        """(grid, whether it was computed now): a second question about the image (same `ref`, its content hash)
        reuses the first's grid; without a ref nothing is cached."""
        return self.grids([ref], [image])[0]

    def grids(self, refs: Sequence[str | None], images: Sequence[Image.Image]) -> list[tuple[torch.Tensor, bool]]:
        """`__call__` for many images: the ones not cached go through the CNN together."""
        keys = [("frozen-grid", self.name, self.image_size, tuple(self.stages), self.letterbox, ref) for ref in refs]
        found = {i: grid for i, (key, ref) in enumerate(zip(keys, refs, strict=True))
                 if ref is not None and (grid := self.cache.get(key)) is not None}
        missing = [i for i in range(len(images)) if i not in found]
        computed = dict(zip(missing, self.batcher.map([images[i] for i in missing]) if missing else [], strict=True))
        for i, grid in computed.items():
            if refs[i] is not None:
                self.cache.put(keys[i], grid)
        return [(found[i], False) if i in found else (computed[i], True) for i in range(len(images))]

    def encode_images(self, images: list[Image.Image]) -> list[torch.Tensor]:
        """Each image's grid `(1, channels, rows, cols)`, all in one forward pass."""
        grids = self.encode_pixels(self.pixels(images))
        return [grids[i : i + 1] for i in range(len(images))]


# --- the trained adapter -------------------------------------------------------------------------------------


class GridAdapterConfig(PretrainedConfig):
    model_type = "vqagraph_grid_adapter"

    def __init__(self, in_channels: int = 112, hidden_size: int = 128, grid: Sequence[int] = (14, 14),
                 num_layers: int = 1, num_heads: int = 2, layer_norm_eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_channels = in_channels
        self.hidden_size = hidden_size
        self.grid = list(grid)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.layer_norm_eps = layer_norm_eps


class GridAdapter(PreTrainedModel):
    """Frozen feature grid → BLIP-style tokens: per-cell LayerNorm and linear projection, learned positions, a CLS
    token, `num_layers` pre-norm transformer layers (context across cells: counts, relations), a final LayerNorm.
    Called like a BLIP vision model (`pixel_values=` the grid, `.last_hidden_state`), so trainers and tools that
    read a vision model read this."""

    config_class = GridAdapterConfig
    main_input_name = "pixel_values"
    base_model_prefix = "adapter"

    def __init__(self, config: GridAdapterConfig) -> None:
        super().__init__(config)
        rows, cols = config.grid
        dim = config.hidden_size
        self.input_norm = nn.LayerNorm(config.in_channels, eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.in_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + rows * cols, dim))
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, config.num_heads, 4 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True, layer_norm_eps=config.layer_norm_eps)
            for _ in range(config.num_layers)])
        self.output_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, GridAdapter):
            nn.init.normal_(module.position_embedding, std=0.02)
            nn.init.normal_(module.cls_token, std=0.02)

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> BaseModelOutput:
        batch, channels, rows, cols = pixel_values.shape
        if channels != self.config.in_channels or [rows, cols] != list(self.config.grid):
            raise ModelMismatchError(
                f"the image adapter expects a {self.config.in_channels}-channel {self.config.grid} grid from the "
                f"frozen encoder, got {channels} channels {rows}x{cols}: the profile's image_encoder settings "
                "(variant, image_size, stages) must be the ones the model was trained with")
        cells = pixel_values.to(self.projection.weight.dtype).flatten(2).transpose(1, 2)  # (B, rows*cols, C)
        tokens = self.projection(self.input_norm(cells))
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1) + self.position_embedding
        for layer in self.layers:
            tokens = layer(tokens)
        return BaseModelOutput(last_hidden_state=self.output_norm(tokens))


def load_adapter(model_dir: str | Path) -> GridAdapter:
    folder = Path(model_dir) / ADAPTER_FOLDER
    if not (folder / "config.json").exists():
        raise ModelMismatchError(
            f"{model_dir} has no {ADAPTER_FOLDER}/: the profile names a frozen image_encoder, so each vision model "
            "must carry the adapter it was trained with (`vqagraph-lab` writes it)")
    return GridAdapter.from_pretrained(folder).eval()


# --- the two kinds of vision -----------------------------------------------------------------------------------


@dataclass
class PixelVision:
    """A checkpoint's own vision model reading pixels (BLIP's ViT); features cached per image by the callers."""

    vision_model: Any
    processor: Any
    letterboxed: bool = False  # BLIP's processor resizes the image to its square input

    def __call__(self, ref: str | None, image: Image.Image) -> torch.Tensor:
        return self.many([ref], [image])[0]

    def many(self, refs: Sequence[str | None], images: Sequence[Image.Image]) -> list[torch.Tensor]:
        features = vision_features(self.vision_model, self.processor, images)
        return [features[i : i + 1] for i in range(len(images))]


@dataclass
class AdaptedVision:
    """The shared frozen encoder's grid through one model's trained adapter."""

    encoder: FrozenImageEncoder
    adapter: GridAdapter

    @property
    def letterboxed(self) -> bool:
        return self.encoder.letterbox

    def __call__(self, ref: str | None, image: Image.Image) -> torch.Tensor:
        return self.many([ref], [image])[0]

    def many(self, refs: Sequence[str | None], images: Sequence[Image.Image]) -> list[torch.Tensor]:
        grids = torch.cat([grid for grid, _ in self.encoder.grids(refs, images)])
        param = next(self.adapter.parameters())
        with torch.no_grad():
            tokens = self.adapter(pixel_values=grids.to(param.device, param.dtype)).last_hidden_state
        return [tokens[i : i + 1] for i in range(len(images))]
