"""The adapter route's encoder (LLaMA-Adapter, docs/methods.md §9): image (+ question) → the frozen Q-Former's
queries → each adapted layer's adaption prompts, the visual feature added.

The Q-Former is the checkpoint's own (a BLIP-2 or InstructBLIP checkpoint the adapter was trained on, in the same
folder), run by the Q-Former route's encoder, so an image is encoded once and its queries cached as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from vqagraph.models.llama_adapter import AdaptionPrompts, LlamaAdapter
from vqagraph.tools.qformer import QFormerEncoder


@dataclass
class AdapterEncoder:
    qformer: QFormerEncoder
    adapter: LlamaAdapter

    @property
    def name(self) -> str:
        return self.qformer.name

    @torch.no_grad()
    def __call__(self, ref: str, image: Image.Image, instruction: str) -> tuple[AdaptionPrompts, torch.Tensor, bool]:
        """(the prompts of every adapted layer, the visual feature (queries, width), whether the image was encoded
        now)."""
        visual, encoded = self.qformer(ref, image, instruction)
        return self.adapter.prompts(visual.unsqueeze(0)), visual, encoded
