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
from vqagraph.tools.batching import Batcher, BatchPolicy
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


Job = tuple[str, Image.Image, str]  # (image ref, image, instruction): one question's soft prompt to compute


@dataclass
class QFormerEncoder:
    """Soft prompts for images, with each image encoded once and reused from the feature cache; BLIP-2's
    question-independent soft prompt is cached too, so a second question on an image skips the Q-Former.
    Concurrent questions' prompts are computed together: their images through the vision side in one pass, then
    one Q-Former pass (tools/batching.py)."""

    bridge: QFormerBridge
    processor: Any
    features: FeatureCache
    name: str
    instruction_tokenizer: Any = None
    vision: Vision | None = None  # a frozen encoder + adapter (tools/image_encoder.py); None: the checkpoint's ViT
    policy: BatchPolicy | None = None

    def __post_init__(self) -> None:
        self.pixels_or_grid: Vision = self.vision or PixelVision(self.bridge.vision_model, self.processor)
        self.batcher: Batcher[Job, tuple[torch.Tensor, bool]] = (self.policy or BatchPolicy()).batcher(
            self.soft_prompts, stage="qformer")

    def _prompt_key(self, ref: str, instruction: str) -> tuple[Any, ...]:
        return (ref, "soft-prompt", self.name, instruction if self.bridge.conditioned else None)

    def __call__(self, ref: str, image: Image.Image, instruction: str) -> tuple[torch.Tensor, bool]:
        """(soft prompt (num_query_tokens, LLM hidden), whether the image was encoded now)."""
        cached = self.features.get(self._prompt_key(ref, instruction))
        if cached is not None:
            return cached, False
        return self.batcher((ref, image, instruction))

    def soft_prompts(self, jobs: list[Job]) -> list[tuple[torch.Tensor, bool]]:
        """Each job's (soft prompt, whether its image was encoded now), in one vision pass and one Q-Former pass."""
        tokens: dict[str, torch.Tensor] = {}  # each image's vision tokens: cached, or encoded now (once per image)
        first_of: dict[str, int] = {}  # the job that encodes a new image
        for i, (ref, _, _) in enumerate(jobs):
            if ref not in tokens and ref not in first_of:
                cached = self.features.get((ref, "qformer-vision", self.name))
                if cached is None:
                    first_of[ref] = i
                else:
                    tokens[ref] = cached
        if first_of:
            encoded = self.pixels_or_grid.many(list(first_of), [jobs[i][1] for i in first_of.values()])
            for ref, new in zip(first_of, encoded, strict=True):
                self.features.put((ref, "qformer-vision", self.name), new)
                tokens[ref] = new
        ids = mask = None
        if self.bridge.conditioned:
            ids, mask = self._instructions([instruction for _, _, instruction in jobs])
        prompts = self.bridge.soft_prompt(torch.cat([tokens[ref] for ref, _, _ in jobs]), ids, mask)
        for (ref, _, instruction), prompt in zip(jobs, prompts, strict=True):
            self.features.put(self._prompt_key(ref, instruction), prompt)
        encoders = set(first_of.values())
        return [(prompt, i in encoders) for i, prompt in enumerate(prompts)]

    def _instructions(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """InstructBLIP's instruction token ids, right-padded and masked (padding by hand: the tokenizer's padding
        switch is shared state)."""
        if self.instruction_tokenizer is None:
            raise ModelMismatchError(f"{self.name}: an InstructBLIP checkpoint needs its qformer_tokenizer")
        rows = [self.instruction_tokenizer(text)["input_ids"] for text in instructions]
        longest = max(len(row) for row in rows)
        pad = self.instruction_tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask
