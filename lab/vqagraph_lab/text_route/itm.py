"""The BLIP ITM model: match / no match, on whole pictures and on sampled patches, with GradCAM that points.

Its vision encoder is the captioner's (copied, frozen), so both see the same patches and the features are
computed once. The text encoder learns:

- whole picture (CLS + every patch, what GradCAM reads): region and scene captions against hard negatives made
  by changing one thing in the scene (an object's colour, shape, size word or place; an object removed or
  duplicated, which changes the counts) and re-captioning it with the world's own functions; and questions,
  which match when what they presuppose is there (`object_ids` not empty: "What colour is the star?" with a
  star), so that GradCAM on a question is meaningful;
- sampled patches (what the caption filter reads, no CLS): a region caption against its own object's patches
  (match) and against another object's or a changed caption (no match); scene captions against spread samples;
- where to look: the cross-attention of layer `GRADCAM_LAYER`, averaged over heads and the text's own tokens as
  GradCAM averages it, is pulled towards the objects the text is about (their cells plus a ring around them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqagraph_lab.text_route import data as D
from vqagraph_lab.text_route.captioner import gather, groups, lr_at, strip_prompt


def question_text(question: str) -> str:
    return question.strip().rstrip("?").strip()  # BlipMatcher.gradcam strips "?" (docs/methods.md §1.1)


def full_pair(corpus: D.Corpus, rows: Sequence[int], j: int, rng: np.random.Generator
              ) -> tuple[str, int, np.ndarray | None]:
    """(text, label, attention target or None) for the whole picture of `corpus.example(rows[j])`."""
    example = corpus.example(rows[j])
    texts = example.texts
    n = len(example.scene.objects)
    r = rng.random()
    if r < 0.4 and texts.questions:
        if rng.random() < 0.3:
            other = corpus.example(rows[int(rng.integers(len(rows)))])
            if other.texts.questions:
                q = other.texts.questions[int(rng.integers(len(other.texts.questions)))]
                label = D.question_matches(q.question, example.scene)
                if label is not None:
                    return question_text(q.question), int(label), None
        q = texts.questions[int(rng.integers(len(texts.questions)))]
        target = D.attention_target(example, q.object_ids) if q.object_ids else None
        return question_text(q.question), int(bool(q.object_ids)), target
    if r < 0.72 and n:
        i = int(rng.integers(n))
        if rng.random() < 0.5:
            variants = texts.region[i]
            return variants[int(rng.integers(len(variants)))], 1, D.attention_target(example, [i])
        if rng.random() < 0.8:
            negative = D.region_negative(texts, i, rng)
            if negative is not None:
                return negative, 0, None
        other_texts = corpus.example(rows[int(rng.integers(len(rows)))]).texts
        if other_texts.region:
            k = int(rng.integers(len(other_texts.region)))
            text = other_texts.region[k][int(rng.integers(len(other_texts.region[k])))]
            return text, int(text in texts.all_region), None
    if rng.random() < 0.5:
        negative = D.scene_negative(texts, rng)
        if negative is not None:
            return strip_prompt(negative), 0, None
    caption = texts.captions[int(rng.integers(len(texts.captions)))]
    return strip_prompt(caption), 1, D.attention_target(example, list(range(n)))


def subset_pair(example: D.Example, rng: np.random.Generator) -> tuple[np.ndarray, str, int]:
    """(patch ids, text, label) for K' sampled patches, as the engine's caption filter scores them."""
    texts = example.texts
    n = len(example.scene.objects)
    r = rng.random()
    if r < 0.6 and n:
        i = int(rng.integers(n))
        ids = D.sample_patches(D.focus_weights(example.coverage[i], rng), rng)
        u = rng.random()
        if u < 0.5:
            variants = texts.region[i]
            return ids, variants[int(rng.integers(len(variants)))], 1
        if u < 0.75 and n > 1:
            others = [k for k in range(n) if k != i]
            k = others[int(rng.integers(len(others)))]
            wrong = [t for t in texts.region[k] if t not in texts.region[i]]
            if wrong:
                return ids, wrong[int(rng.integers(len(wrong)))], 0
        negative = D.region_negative(texts, i, rng)
        if negative is not None:
            return ids, negative, 0
        variants = texts.region[i]
        return ids, variants[int(rng.integers(len(variants)))], 1
    found = groups(example)
    if r < 0.7 and found:
        members, captions = found[int(rng.integers(len(found)))]
        cov = example.coverage[members]
        cov = cov / np.maximum(cov.sum(axis=1, keepdims=True), 1e-6)
        ids = D.sample_patches(D.focus_weights(cov.sum(axis=0), rng), rng)
        return ids, captions[int(rng.integers(len(captions)))], 1
    ids = D.sample_patches(D.scene_weights(example, rng), rng)
    if rng.random() < 0.5:
        negative = D.scene_negative(texts, rng)
        if negative is not None:
            return ids, strip_prompt(negative), 0
    return ids, strip_prompt(texts.captions[int(rng.integers(len(texts.captions)))]), 1


class CrossAttention:
    """Keeps the cross-attention probabilities of one text-encoder layer (with their graph)."""

    def __init__(self, model: Any, layer: int) -> None:
        self.probs: torch.Tensor | None = None
        module = model.text_encoder.encoder.layer[layer].crossattention.self
        self.handle = module.register_forward_hook(self._keep)

    def _keep(self, _module: Any, _inputs: Any, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.probs = output[1]

    def close(self) -> None:
        self.handle.remove()


def itm_logits(model: Any, tokenizer: Any, embeds: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, Any]:
    tokens = tokenizer(list(texts), return_tensors="pt", padding="longest", truncation=True, max_length=64)
    atts = torch.ones(embeds.shape[:-1], dtype=torch.long)
    out = model.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                             encoder_hidden_states=embeds, encoder_attention_mask=atts)
    return model.itm_head(out.last_hidden_state[:, 0, :]), tokens


def attention_loss(probs: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the target map and the attention over patches, averaged over heads and the text's
    real tokens (positions 1 .. length-2, as GradCAM averages them)."""
    lengths = attention_mask.sum(dim=-1)
    positions = torch.arange(attention_mask.shape[1])[None, :]
    real = ((positions >= 1) & (positions <= (lengths[:, None] - 2))).float()
    real = torch.where(real.sum(-1, keepdim=True) > 0, real, (positions == 0).float())
    mean = probs.mean(dim=1)  # (B, T, keys)
    attn = (mean * real[..., None]).sum(1) / real.sum(-1, keepdim=True)  # (B, keys)
    return -(targets * torch.log(attn[:, 1:] + 1e-6)).sum(-1).mean()


def train_itm(model: Any, tokenizer: Any, corpus: D.Corpus, rows: Sequence[int], features: torch.Tensor, *,
              layer: int, steps: int, batch: int, lr: float, seed: int, attention_weight: float = 0.5,
              report: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Train the text encoder and ITM head on cached features (the vision encoder stays frozen)."""
    rng = np.random.default_rng([seed, 31])
    params = list(model.text_encoder.parameters()) + list(model.itm_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    hook = CrossAttention(model, layer)
    model.text_encoder.train()
    history: dict[str, list[float]] = {"itm": [], "attention": [], "itm_patches": []}
    warmup = max(1, steps // 20)
    try:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup)
            # whole pictures
            which = [int(j) for j in rng.integers(0, len(rows), size=batch)]
            pairs = [full_pair(corpus, rows, j, rng) for j in which]
            logits, tokens = itm_logits(model, tokenizer, features[which], [p[0] for p in pairs])
            labels = torch.tensor([p[1] for p in pairs])
            full = F.cross_entropy(logits, labels)
            have = [k for k, p in enumerate(pairs) if p[2] is not None]
            attn = torch.zeros(())
            if have and hook.probs is not None:
                targets = torch.from_numpy(np.stack([pairs[k][2] for k in have]))  # type: ignore[misc]
                attn = attention_loss(hook.probs[have], tokens.attention_mask[have], targets)
            # sampled patches
            which = [int(j) for j in rng.integers(0, len(rows), size=batch)]
            subs = [subset_pair(corpus.example(rows[j]), rng) for j in which]
            patches = gather(features, which, [s[0] for s in subs])
            sub_logits, _ = itm_logits(model, tokenizer, patches, [s[1] for s in subs])
            sub = F.cross_entropy(sub_logits, torch.tensor([s[2] for s in subs]))
            loss = full + sub + attention_weight * attn
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            history["itm"].append(float(full.detach()))
            history["itm_patches"].append(float(sub.detach()))
            history["attention"].append(float(attn.detach()))
            if report is not None:
                report(step, {"itm": float(full.detach()), "patches": float(sub.detach()),
                              "attention": float(attn.detach())})
    finally:
        hook.close()
    model.eval()
    return history
