"""BLIP image-text matching: image encoding, question GradCAM over patches, and ITM match probabilities.

GradCAM follows LAVIS `compute_gradcam` (docs/methods.md §1.1): the cross-attention probabilities of one
text-encoder layer, times the positive part of their gradient w.r.t. the ITM *match* logit, averaged over
heads and then over the question's real tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from vqagraph.errors import ModelMismatchError
from vqagraph.tools.blip_model import BlipModel


def patch_grid(num_patches: int) -> tuple[int, int]:
    """BLIP's ViT sees a square image, so the patch grid is square."""
    side = round(num_patches**0.5)
    if side * side != num_patches:
        raise ModelMismatchError(f"vision encoder has {num_patches} patches, which is not a square grid")
    return side, side


def compute_gradcam(
    model: Any, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int
) -> torch.Tensor:
    """One GradCAM map per question: `(batch, num_patches)`, non-negative, not normalised.

    `model` is a `BlipForImageTextRetrieval`; `image_embeds` its vision output `(batch, 1 + num_patches, dim)`.
    """
    layers = model.text_encoder.encoder.layer
    if not 0 <= layer < len(layers):
        raise ModelMismatchError(f"GradCAM layer {layer} does not exist: the ITM text encoder has {len(layers)} layers")
    if layer == len(layers) - 1:
        raise ModelMismatchError(
            f"GradCAM layer {layer} is the ITM text encoder's last layer: only its [CLS] position reaches the ITM"
            " head, so the question tokens' gradients are zero there; choose an earlier layer"
        )
    captured: dict[str, torch.Tensor] = {}

    def keep_probs(_module: Any, _inputs: Any, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        captured["probs"] = output[1]  # (batch, heads, text_tokens, 1 + num_patches)

    handle = layers[layer].crossattention.self.register_forward_hook(keep_probs)
    try:
        with torch.enable_grad():
            image_embeds = image_embeds.detach()
            image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
            out = model.text_encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_atts,
            )
            itm_logits = model.itm_head(out.last_hidden_state[:, 0, :])
            probs = captured["probs"]
            # §1.1: backpropagate itm_logits[:, 1].sum(); autograd.grad leaves parameter .grad untouched.
            (grads,) = torch.autograd.grad(itm_logits[:, 1].sum(), probs)
    finally:
        handle.remove()

    batch, heads, tokens, keys = probs.shape
    height, width = patch_grid(keys - 1)
    cam = probs.detach()[..., 1:].reshape(batch, heads, tokens, height, width)  # drop the image CLS
    grad = grads[..., 1:].clamp(min=0).reshape(batch, heads, tokens, height, width)
    mask = attention_mask.view(batch, 1, tokens, 1, 1).to(cam.dtype)
    gradcam = (cam * grad * mask).mean(dim=1)  # mean over heads: (batch, tokens, H, W)
    # Average over the question's real tokens: positions 1 .. length-2 (not [CLS]/[ENC] nor [SEP]), as LAVIS.
    lengths = attention_mask.sum(dim=-1)
    maps = []
    for i in range(batch):
        real = int(lengths[i]) - 2
        span = gradcam[i, 1 : 1 + real] if real > 0 else gradcam[i, :1]
        maps.append(span.sum(dim=0) / max(real, 1))
    return torch.stack(maps).reshape(batch, height * width).float()


def normalise_gradcam(gradcam: torch.Tensor, floor: float) -> torch.Tensor:
    """Probabilities over patches with a floor, so multinomial sampling never meets an all-zero map."""
    gradcam = gradcam.clamp(min=0)
    total = gradcam.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(gradcam, 1.0 / gradcam.shape[-1])
    probs = torch.where(total > 0, gradcam / total.clamp(min=1e-30), uniform)
    probs = probs + floor
    return probs / probs.sum(dim=-1, keepdim=True)


class BlipMatcher(BlipModel):
    """A BLIP ITM model with its tokenizer and image processor: encodes, explains (GradCAM) and scores."""

    def gradcam(self, image_embeds: torch.Tensor, questions: list[str], layer: int) -> torch.Tensor:
        """GradCAM of each question over its image's patches (`image_embeds[i]`), in one pass: `(batch,
        num_patches)`."""
        texts = [q.strip().rstrip("?").strip() for q in questions]  # §1.1: strip "?"
        tokens = self.tokenizer(texts, return_tensors="pt", padding="longest", truncation=True).to(self.device)
        return compute_gradcam(self.model, image_embeds, tokens.input_ids, tokens.attention_mask, layer)

    @torch.no_grad()
    def match_probability(self, image_embeds: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """P(match) per (image_embeds[i], texts[i]); one batched text-encoder pass."""
        tokens = self.tokenizer(texts, return_tensors="pt", padding="longest", truncation=True).to(self.device)
        atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = self.model.text_encoder(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=atts,
        )
        logits = self.model.itm_head(out.last_hidden_state[:, 0, :])
        return logits.float().softmax(dim=-1)[:, 1]
