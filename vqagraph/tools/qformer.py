"""The Q-Former bridge (BLIP-2, InstructBLIP; docs/methods.md §2): image (+ question) → soft prompt.

Only the parts the encoder needs are read from a checkpoint: the vision model, the learned query tokens, the
Q-Former and `language_projection`. A BLIP-2 checkpoint also holds its LLM; that one is served by vLLM (or
the transformers backend) and is never loaded here, so a 2.7B-parameter checkpoint costs ~1B here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from safetensors import safe_open
from torch import nn

from vqagraph.errors import ModelMismatchError
from vqagraph.hub import checkpoint_files
from vqagraph.media import FeatureCache
from vqagraph.tools.image_encoder import PixelVision, Vision

PARTS = ("vision_model.", "query_tokens", "qformer.", "language_projection.")
KINDS = {"blip-2": "BLIP-2", "instructblip": "InstructBLIP"}


def _classes(model_type: str) -> tuple[Any, Any, Any]:
    """(config, vision model, Q-Former) classes for a checkpoint's `model_type`."""
    if model_type == "blip-2":
        from transformers import Blip2Config, Blip2QFormerModel, Blip2VisionModel

        return Blip2Config, Blip2VisionModel, Blip2QFormerModel
    if model_type == "instructblip":
        from transformers import InstructBlipConfig, InstructBlipQFormerModel, InstructBlipVisionModel

        return InstructBlipConfig, InstructBlipVisionModel, InstructBlipQFormerModel
    raise ModelMismatchError(
        f"model_type {model_type!r} is not a Q-Former checkpoint; the Q-Former route needs a BLIP-2 ('blip-2') "
        "or InstructBLIP ('instructblip') checkpoint"
    )


class QFormerBridge(nn.Module):
    """Vision model → Q-Former queries → `language_projection`: the soft prompt, with the same parameter names
    as `Blip2ForConditionalGeneration` / `InstructBlipForConditionalGeneration`, so their weights load as is."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        _, vision_cls, qformer_cls = _classes(config.model_type)
        self.config = config
        self.kind = config.model_type
        self.vision_model = vision_cls(config.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.qformer = qformer_cls(config.qformer_config)
        self.language_projection = nn.Linear(config.qformer_config.hidden_size, config.text_config.hidden_size)

    @property
    def conditioned(self) -> bool:
        """InstructBLIP's Q-Former reads the question; BLIP-2's does not."""
        return self.kind == "instructblip"

    @property
    def num_query_tokens(self) -> int:
        return int(self.config.num_query_tokens)

    @property
    def output_size(self) -> int:
        """The soft prompt's width: must equal the served LLM's hidden size."""
        return int(self.language_projection.out_features)

    @classmethod
    def from_pretrained(cls, source: str, revision: str | None = None, **_: Any) -> QFormerBridge:
        """Load the Q-Former parts of a BLIP-2 or InstructBLIP checkpoint (a local directory or a Hub id)."""
        what = "the Q-Former (vision model, query tokens, Q-Former, language_projection)"
        config_path, files = checkpoint_files(source, revision, PARTS, what)
        model_type = json.loads(config_path.read_text()).get("model_type", "")
        config_cls, _, _ = _classes(model_type)
        config = config_cls.from_pretrained(config_path.parent)
        bridge = cls(config)
        state: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if key.startswith(PARTS):
                        state[key] = handle.get_tensor(key)
        expected = bridge.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ModelMismatchError(
                f"{source} lacks {len(missing)} Q-Former weight(s) the Q-Former route needs, e.g. {missing[0]!r}: "
                "is it a full BLIP-2/InstructBLIP checkpoint?"
            )
        wrong = [k for k, v in expected.items() if state[k].shape != v.shape]
        if wrong:
            raise ModelMismatchError(f"{source}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the config "
                                     f"says {tuple(expected[wrong[0]].shape)}")
        bridge.load_state_dict(state, strict=False)
        return bridge.eval()

    def keep_qformer_fp32(self) -> QFormerBridge:
        """BLIP-2 keeps the queries and Q-Former in fp32 even when the rest runs in half precision."""
        self.query_tokens.data = self.query_tokens.data.float()
        self.qformer.float()
        return self

    @torch.no_grad()
    def soft_prompt(
        self,
        image_embeds: torch.Tensor,
        instruction_ids: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Projected query outputs (B, num_query_tokens, LLM hidden); InstructBLIP also reads the instruction."""
        dtype = self.query_tokens.dtype
        image_embeds = image_embeds.to(dtype)
        batch = image_embeds.shape[0]
        queries = self.query_tokens.expand(batch, -1, -1)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        if self.conditioned:
            if instruction_ids is None:
                raise ModelMismatchError("an InstructBLIP Q-Former needs the instruction's token ids")
            if instruction_mask is None:
                instruction_mask = torch.ones_like(instruction_ids)
            query_mask = torch.ones(queries.shape[:-1], dtype=torch.long, device=queries.device)
            out = self.qformer(
                input_ids=instruction_ids.to(queries.device),
                attention_mask=torch.cat([query_mask, instruction_mask.to(queries.device)], dim=1),
                query_embeds=queries,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask,
                return_dict=True,
            ).last_hidden_state[:, : queries.shape[1]]
        else:
            out = self.qformer(
                query_embeds=queries,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask,
                return_dict=True,
            ).last_hidden_state
        projection = self.language_projection.weight
        return self.language_projection(out.to(projection.dtype))


@dataclass
class QFormerEncoder:
    """Soft prompts for images, with each image encoded once and reused from the feature cache; BLIP-2's
    question-independent soft prompt is cached too, so a second question on an image skips the Q-Former."""

    bridge: QFormerBridge
    processor: Any
    features: FeatureCache
    name: str
    instruction_tokenizer: Any = None
    vision: Vision | None = None  # a frozen encoder + adapter (tools/image_encoder.py); None: the checkpoint's ViT

    def __post_init__(self) -> None:
        self.pixels_or_grid: Vision = self.vision or PixelVision(self.bridge.vision_model, self.processor)

    def __call__(self, ref: str, image: Image.Image, instruction: str) -> tuple[torch.Tensor, bool]:
        """(soft prompt (num_query_tokens, LLM hidden), whether the image was encoded now)."""
        prompt_key = (ref, "soft-prompt", self.name, instruction if self.bridge.conditioned else None)
        cached = self.features.get(prompt_key)
        if cached is not None:
            return cached, False
        feature_key = (ref, "qformer-vision", self.name)
        image_embeds = self.features.get(feature_key)
        encoded = image_embeds is None
        if image_embeds is None:
            image_embeds = self.pixels_or_grid(ref, image)
            self.features.put(feature_key, image_embeds)
        ids = mask = None
        if self.bridge.conditioned:
            if self.instruction_tokenizer is None:
                raise ModelMismatchError(f"{self.name}: an InstructBLIP checkpoint needs its qformer_tokenizer")
            tokens = self.instruction_tokenizer(instruction, return_tensors="pt")
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
        prompt = self.bridge.soft_prompt(image_embeds, ids, mask)[0]
        self.features.put(prompt_key, prompt)
        return prompt, encoded
