"""The InstructBLIP variant: the question-conditioned Q-Former, tuned on the world's question families.

As InstructBLIP starts from BLIP-2, the conditioned bridge starts from the trained BLIP-2 bridge (vision
model, queries, Q-Former layers, projection); the instruction's word and position embeddings and the text
feed-forward path, which BLIP-2's Q-Former lacks, come from the world's ITM text encoder (the same word
vocabulary as the saved `qformer_tokenizer`). The instruction is the question itself
(`BridgeSettings.instruction_template`): its tokens join the queries in self-attention, and only the query
positions are projected. Tuned with the LM loss through the frozen LLM on `Question: q Answer: a`, with
`knowledge` questions never among them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vqagraph.prompt_templates import INSTRUCTBLIP_QFORMER_INSTRUCTION
from vqagraph_lab.qformer.data import BridgeData, qa_sample
from vqagraph_lab.qformer.stage1 import init_qformer_from_itm, new_bridge, query_outputs
from vqagraph_lab.qformer.stage2 import PROMPT, FrozenLM, soft_prompt
from vqagraph_lab.text_route.captioner import lr_at


def instructions(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The Q-Former's instruction for each (question, answer), as the route builds it (BridgeSettings'
    instruction_template's default)."""
    return [INSTRUCTBLIP_QFORMER_INSTRUCTION.format(question=q) for q, _ in pairs]


def instruct_from_blip2(blip2: Any, itm: dict[str, torch.Tensor]) -> Any:
    """An InstructBLIP bridge holding the BLIP-2 bridge's weights, the instruction path from the ITM encoder."""
    config = blip2.config
    bridge = new_bridge("instructblip", config.vision_config.to_dict(), config.qformer_config.to_dict(),
                        config.text_config.to_dict(), config.num_query_tokens)
    init_qformer_from_itm(bridge.qformer, itm)
    bridge.vision_model.load_state_dict(blip2.vision_model.state_dict())
    bridge.query_tokens.data.copy_(blip2.query_tokens.data)
    bridge.language_projection.load_state_dict(blip2.language_projection.state_dict())
    source = blip2.qformer.state_dict()
    state = {}
    for key in bridge.qformer.state_dict():
        mapped = "layernorm." + key.split(".")[-1] if key.startswith("embeddings.layernorm.") else key
        if mapped in source:
            state[key] = source[mapped]
    bridge.qformer.load_state_dict(state, strict=False)
    return bridge


def train_instruct(bridge: Any, lm: FrozenLM, tokenizer: Any, data: BridgeData, *, steps: int, batch: int,
                   lr: float, seed: int, report: Callable[[int, dict[str, float]], None] | None = None,
                   deadline: float | None = None, checkpoint: Callable[[int], None] | None = None,
                   every: int = 50) -> dict[str, list[float]]:
    """LM loss through the frozen LLM on the question families. `deadline` (time.time()) stops early;
    `checkpoint(step)` is called every `every` steps and at the end."""
    import time

    rng = np.random.default_rng([seed, 51])
    params = [bridge.query_tokens, *bridge.qformer.parameters(), *bridge.language_projection.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    bridge.train()
    bridge.vision_model.eval()
    history: dict[str, list[float]] = {"lm": []}
    warmup = max(1, steps // 12)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        which: list[int] = []
        pairs: list[tuple[str, str]] = []
        while len(which) < batch:
            j = int(rng.integers(len(data)))
            qa = qa_sample(data, j, rng)
            if qa is not None:
                which.append(j)
                pairs.append(qa)
        enc = tokenizer(instructions(pairs), return_tensors="pt", padding=True)
        soft = soft_prompt(bridge, data.features[which], enc["input_ids"], enc["attention_mask"])
        loss = lm.loss(soft, [lm.pieces(PROMPT.format(question=q), " " + a) for q, a in pairs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history["lm"].append(float(loss.detach()))
        if report is not None:
            report(step, {"lm": float(loss.detach())})
        if checkpoint is not None and (step + 1) % every == 0:
            bridge.eval()
            checkpoint(step + 1)
            bridge.train()
            bridge.vision_model.eval()
        if deadline is not None and time.time() > deadline:
            break
    bridge.eval()
    return history


def train_align(bridge: Any, lm: FrozenLM, tokenizer: Any, data: BridgeData, *, steps: int, batch: int, lr: float,
                seed: int, report: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """A cheap warm start before the LLM stage (no LLM forward): the question-conditioned query outputs learn to
    hold the answer, read by a linear answer classifier over the training answers (thrown away afterwards), so
    the LM-loss stage (`train_instruct`) mostly has to teach the projection how the frozen LLM says it."""
    rng = np.random.default_rng([seed, 53])
    answers: dict[str, int] = {}
    for j in range(len(data)):
        for q in data.texts(j).questions:
            answers.setdefault(q.answers[0], len(answers))
    hidden = bridge.qformer.config.hidden_size
    head = torch.nn.Linear(hidden * bridge.num_query_tokens, len(answers))
    params = [bridge.query_tokens, *bridge.qformer.parameters()]
    opt = torch.optim.AdamW([*params, *head.parameters()], lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    bridge.train()
    bridge.vision_model.eval()
    history: dict[str, list[float]] = {"answer": []}
    warmup = max(1, steps // 15)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        which: list[int] = []
        pairs: list[tuple[str, str]] = []
        while len(which) < batch:
            j = int(rng.integers(len(data)))
            qa = qa_sample(data, j, rng)
            if qa is not None and qa[1] in answers:
                which.append(j)
                pairs.append(qa)
        enc = tokenizer(instructions(pairs), return_tensors="pt", padding=True)
        out = query_outputs(bridge, data.features[which], enc["input_ids"], enc["attention_mask"])
        loss = torch.nn.functional.cross_entropy(head(out.flatten(1)), torch.tensor([answers[a] for _, a in pairs]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history["answer"].append(float(loss.detach()))
        if report is not None:
            report(step, {"answer": float(loss.detach())})
    bridge.eval()
    return history
