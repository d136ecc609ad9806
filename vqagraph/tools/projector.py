"""The projection bridge (LLaVA, LLaVA-1.5; docs/methods.md §7): every patch feature of a frozen image encoder,
mapped into the LLM's embedding space by `multi_modal_projector`, placed where the prompt puts `<image>`.

Only the vision tower and `multi_modal_projector` of a LLaVA-family checkpoint are read (either key layout:
transformers 5's `model.vision_tower.*` or the Hub's older `vision_tower.*`); the LLM is served separately and
never loaded here, as the Q-Former route does for BLIP-2. With the profile's frozen `image_encoder` (the Shapes
world), the encoder's grid is the patch features and the checkpoint holds the projector alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from torch import nn

from vqagraph.errors import ModelMismatchError
from vqagraph.hub import checkpoint_files
from vqagraph.media import FeatureCache
from vqagraph.tools.batching import Batcher, BatchPolicy
from vqagraph.tools.image_encoder import FrozenImageEncoder
from vqagraph.tools.vision_features import pixel_values

VISION = "vision_tower."
PROJECTOR = "multi_modal_projector."
PREFIXES = ("model.", "")  # transformers 5 nests both under `model.`; older Hub checkpoints do not


def _parts(with_vision: bool) -> tuple[str, ...]:
    names = (VISION, PROJECTOR) if with_vision else (PROJECTOR,)
    return tuple(p + n for p in PREFIXES for n in names)


class ProjectionBridge(nn.Module):
    """`vision_tower` (optional) → feature layer → `multi_modal_projector`, named as in
    `LlavaForConditionalGeneration`, so a LLaVA checkpoint's weights load as they are."""

    def __init__(self, config: Any, with_vision_tower: bool = True) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        self.config = config
        self.vision_tower = AutoModel.from_config(config.vision_config) if with_vision_tower else None
        self.multi_modal_projector = LlavaMultiModalProjector(config)

    @property
    def input_size(self) -> int:
        """The width of one patch feature the projector reads (vision hidden × feature layers)."""
        return int(self.multi_modal_projector.linear_1.in_features)

    @property
    def output_size(self) -> int:
        """The soft prompt's width: must equal the served LLM's hidden size."""
        return int(self.multi_modal_projector.linear_2.out_features)

    @property
    def image_seq_length(self) -> int:
        """Image tokens per image (LLaVA-1.5: 576); a frozen encoder's grid is pooled to this many cells."""
        return int(getattr(self.config, "image_seq_length", 0) or 0)

    @classmethod
    def from_pretrained(cls, source: str, revision: str | None = None, vision_tower: bool = True,
                        **_: Any) -> ProjectionBridge:
        """Load the projector (and, unless a frozen encoder replaces it, the vision tower) of a LLaVA checkpoint."""
        from transformers import LlavaConfig

        parts = _parts(vision_tower)
        config_path, files = checkpoint_files(source, revision, parts, "the projection bridge")
        model_type = json.loads(config_path.read_text()).get("model_type", "")
        if model_type != "llava":
            raise ModelMismatchError(f"model_type {model_type!r} is not a LLaVA checkpoint; the projection route "
                                     "needs a LLaVA-family checkpoint ('llava')")
        bridge = cls(LlavaConfig.from_pretrained(config_path.parent), with_vision_tower=vision_tower)
        state: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if key.startswith(parts):
                        state[key.removeprefix("model.")] = handle.get_tensor(key)
        expected = bridge.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            what = "vision tower and projector" if vision_tower else "projector"
            raise ModelMismatchError(f"{source} lacks {len(missing)} {what} weight(s) the projection route needs, "
                                     f"e.g. {missing[0]!r}")
        wrong = [k for k, v in expected.items() if state[k].shape != v.shape]
        if wrong:
            raise ModelMismatchError(f"{source}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the config "
                                     f"says {tuple(expected[wrong[0]].shape)}")
        bridge.load_state_dict({k: state[k] for k in expected})
        return bridge.eval()

    @torch.no_grad()
    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """LLaVA's `get_image_features` before the projector: the feature layer(s), CLS dropped by `default`."""
        if self.vision_tower is None:
            raise ModelMismatchError("this projection bridge was loaded without its vision tower")
        layers = self.config.vision_feature_layer
        out = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        picked = [out.hidden_states[layer] for layer in ([layers] if isinstance(layers, int) else layers)]
        if self.config.vision_feature_select_strategy == "default":
            picked = [h[:, 1:] for h in picked]
        return torch.cat(picked, dim=-1)

    @torch.no_grad()
    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(B, patches, input_size) → (B, patches, LLM hidden)."""
        weight = self.multi_modal_projector.linear_1.weight
        return self.multi_modal_projector(features.to(weight.device, weight.dtype))


def grid_tokens(grid: torch.Tensor, cells: int) -> torch.Tensor:
    """A frozen encoder's grid `(B, C, rows, cols)` as `(B, cells, C)` patch features in raster order, average-
    pooled to a √cells × √cells grid first when it is finer (LLaVA itself keeps every patch: `cells` = all)."""
    side = round(cells**0.5) if cells else grid.shape[-1]
    if cells and side * side != cells:
        raise ModelMismatchError(f"image_seq_length {cells} is not a square grid of the frozen encoder's cells")
    if tuple(grid.shape[-2:]) != (side, side):
        grid = F.adaptive_avg_pool2d(grid, (side, side))
    return grid.flatten(2).transpose(1, 2)


@dataclass
class ProjectionEncoder:
    """Soft prompts for images, each image encoded once (feature cache); the prompt itself is cached too, since a
    projection bridge never reads the question. Concurrent questions' new images are encoded and projected
    together, in one pass each (tools/batching.py)."""

    bridge: ProjectionBridge
    processor: Any  # the checkpoint's image processor (None with a frozen encoder)
    features: FeatureCache
    name: str
    encoder: FrozenImageEncoder | None = None
    policy: BatchPolicy | None = None

    def __post_init__(self) -> None:
        self.batcher: Batcher[tuple[str, Image.Image], tuple[torch.Tensor, bool]] = (
            self.policy or BatchPolicy()).batcher(self.soft_prompts, stage="projector")

    @property
    def letterboxed(self) -> bool:
        return self.encoder is not None and self.encoder.letterbox

    def patch_features(self, refs: Sequence[str | None], images: Sequence[Image.Image]
                       ) -> tuple[torch.Tensor, list[bool]]:
        """(patch features (B, patches, input_size), whether each image was encoded now), in one pass."""
        if self.encoder is not None:
            grids = self.encoder.grids(refs, images)
            return (grid_tokens(torch.cat([grid for grid, _ in grids]), self.bridge.image_seq_length),
                    [encoded for _, encoded in grids])
        return self.bridge.patch_features(pixel_values(self.processor, images, self.bridge)), [True] * len(images)

    def __call__(self, ref: str, image: Image.Image) -> tuple[torch.Tensor, bool]:
        """(soft prompt (image tokens, LLM hidden), whether the image was encoded now)."""
        cached = self.features.get((ref, "projection-soft-prompt", self.name))
        if cached is not None:
            return cached, False
        return self.batcher((ref, image))

    def soft_prompts(self, jobs: list[tuple[str, Image.Image]]) -> list[tuple[torch.Tensor, bool]]:
        """Each image's (soft prompt, encoded now): the images through the encoder together, one projector pass."""
        features, encoded = self.patch_features([ref for ref, _ in jobs], [image for _, image in jobs])
        if features.shape[-1] != self.bridge.input_size:
            raise ModelMismatchError(
                f"the projector of {self.name!r} reads {self.bridge.input_size}-wide patch features, the image "
                f"encoder gives {features.shape[-1]}: use the encoder settings it was trained with")
        prompts = self.bridge.project(features)
        for (ref, _), prompt in zip(jobs, prompts, strict=True):
            self.features.put((ref, "projection-soft-prompt", self.name), prompt)
        return list(zip(prompts, encoded, strict=True))
