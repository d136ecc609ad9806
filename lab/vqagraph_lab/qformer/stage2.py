"""Stage 2 (generative): the language-modelling loss through the **frozen** LLM, soft prompt before BOS.

`[projected queries ; embed(BOS + text)]` exactly as the Q-Former route builds it (tools/bridge_prompt.py); the
LLM is in eval mode with no parameter gradients, so only the Q-Former, the queries and `language_projection`
learn. Texts are the picture's captions, as BLIP-2 pre-trains, and questions in the route's own prompt,
`Question: {q} Answer: {a}` with the loss on the answer (and the end-of-turn token that stops generation) only,
as BLIP-2 is tuned for VQA. Logits are computed only where there is a target: SmolLM2's 49k-word head on
every position would cost a tenth of the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqagraph.prompt_templates import BLIP2_OPT_VQA
from vqagraph.tools.bridge_prompt import bridge_token_ids
from vqagraph_lab.qformer.data import BridgeData, caption_sample, qa_sample
from vqagraph_lab.qformer.stage1 import query_outputs
from vqagraph_lab.text_route.captioner import lr_at

PROMPT = BLIP2_OPT_VQA  # BridgeSettings.prompt_template's default (docs/methods.md §2)


@dataclass
class FrozenLM:
    """The frozen LLM (eval mode, no gradients to its weights) and how texts become its targets."""

    model: Any
    tokenizer: Any

    @classmethod
    def load(cls, source: str) -> FrozenLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, AutoTokenizer.from_pretrained(source))

    @property
    def table(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    @property
    def hidden_size(self) -> int:
        return int(self.table.shape[1])

    def pieces(self, prompt: str, target: str) -> tuple[list[int], list[int]]:
        """(BOS + prompt ids, as the route sends them; target ids + end of turn)."""
        ids = bridge_token_ids(self.tokenizer, prompt, add_bos=True)
        tail = list(self.tokenizer(target, add_special_tokens=False)["input_ids"])
        eos = self.tokenizer.eos_token_id
        return ids, tail + ([eos] if eos is not None else [])

    def loss(self, soft: torch.Tensor, items: Sequence[tuple[list[int], list[int]]], buckets: int = 2) -> torch.Tensor:
        """Mean cross-entropy of the targets after `[soft prompt ; prompt]`; the batch runs in `buckets`
        right-padded chunks of alike length, so short questions are not padded to a long caption."""
        order = sorted(range(len(items)), key=lambda k: len(items[k][0]) + len(items[k][1]))
        size = -(-len(order) // max(1, buckets))
        total = soft.new_zeros(())
        count = 0
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            value, n = self._chunk_loss(soft[chunk], [items[k] for k in chunk])
            total, count = total + value, count + n
        return total / max(count, 1)

    def _chunk_loss(self, soft: torch.Tensor, items: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, int]:
        batch, queries, _ = soft.shape
        lengths = [len(p) + len(t) for p, t in items]
        width = queries + max(lengths)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((batch, max(lengths)), pad, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, width), -100, dtype=torch.long)
        for b, (p, t) in enumerate(items):
            seq = p + t
            ids[b, : len(seq)] = torch.tensor(seq)
            mask[b, : queries + len(seq)] = 1
            labels[b, queries + len(p) : queries + len(seq)] = torch.tensor(t)
        text = self.table[ids]
        embeds = torch.cat([soft.to(text.dtype), text], dim=1)
        hidden = self.model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        # position i predicts token i + 1
        target = labels[:, 1:]
        where = target != -100
        logits = self.model.lm_head(hidden[:, :-1][where])
        return F.cross_entropy(logits, target[where], reduction="sum"), int(where.sum())


def soft_prompt(bridge: Any, image_embeds: torch.Tensor, ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    return bridge.language_projection(query_outputs(bridge, image_embeds, ids, mask))


def match_projection_scale(bridge: Any, lm: FrozenLM) -> None:
    """Start the soft prompt at the scale of the LLM's own token embeddings (LayerNorm'd queries are ~1 each)."""
    std = float(lm.table.std())
    fan_in = bridge.language_projection.in_features
    torch.nn.init.normal_(bridge.language_projection.weight, std=std / fan_in**0.5)
    torch.nn.init.zeros_(bridge.language_projection.bias)


def stage2_item(lm: FrozenLM, data: BridgeData, j: int, rng: np.random.Generator, caption_share: float,
                ) -> tuple[str, list[int], list[int]]:
    """(kind, prompt ids, target ids) for picture j."""
    qa = None if rng.random() < caption_share else qa_sample(data, j, rng)
    if qa is None:
        return "caption", *lm.pieces("", caption_sample(data, j, rng, short=True))
    question, answer = qa
    return "qa", *lm.pieces(PROMPT.format(question=question), " " + answer)


def train_stage2(bridge: Any, lm: FrozenLM, data: BridgeData, *, steps: int, batch: int, lr: float, seed: int,
                 caption_share: float = 0.25, report: Callable[[int, dict[str, float]], None] | None = None,
                 ) -> dict[str, list[float]]:
    rng = np.random.default_rng([seed, 41])
    params = [bridge.query_tokens, *bridge.qformer.parameters(), *bridge.language_projection.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    bridge.train()
    bridge.vision_model.eval()
    history: dict[str, list[float]] = {"lm": []}
    warmup = max(1, steps // 12)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        which = [int(j) for j in rng.integers(0, len(data), size=batch)]
        items = [stage2_item(lm, data, j, rng, caption_share) for j in which]
        soft = soft_prompt(bridge, data.features[which])
        loss = lm.loss(soft, [(p, t) for _, p, t in items])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history["lm"].append(float(loss.detach()))
        if report is not None:
            report(step, {"lm": float(loss.detach())})
    bridge.eval()
    return history


@torch.no_grad()
def probe_loss(bridge: Any, lm: FrozenLM, data: BridgeData, items: Sequence[tuple[int, str, str]],
               tokenizer: Any = None) -> float:
    """The LM loss on fixed (picture, question, answer) items: the same number before and after training."""
    which = [j for j, _, _ in items]
    pieces = [lm.pieces(PROMPT.format(question=q), " " + a) for _, q, a in items]
    ids = mask = None
    if bridge.conditioned:
        enc = tokenizer([q for _, q, _ in items], return_tensors="pt", padding=True)
        ids, mask = enc["input_ids"], enc["attention_mask"]
    was = bridge.training
    bridge.eval()
    loss = float(lm.loss(soft_prompt(bridge, data.features[which], ids, mask), pieces))
    bridge.train(was)
    return loss


def probe_items(data: BridgeData, n: int, seed: int) -> list[tuple[int, str, str]]:
    rng = np.random.default_rng([seed, 43])
    out: list[tuple[int, str, str]] = []
    while len(out) < n:
        j = int(rng.integers(len(data)))
        qa = qa_sample(data, j, rng)
        if qa is not None:
            out.append((j, *qa))
    return out
