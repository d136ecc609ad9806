"""The T5 question generator: `"answer: {a}  context: {captions}."` → a question whose answer is `a`.

Inputs are built as the engine builds them (tools/question_generator.qg_input, docs/methods.md §1.5): the context
is the captions the region captioner would keep for some question (mostly its objects' region captions, some
other objects' and whole-scene captions; a caption that is a substring of one already kept is dropped), the
answer one of the question's acceptable answers that the context contains (or "yes", which the engine always
adds). Targets are the world's own questions of the training families (never `knowledge`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqagraph.tools.question_generator import qg_input
from vqagraph_lab.text_route import data as D
from vqagraph_lab.text_route.captioner import lr_at, strip_prompt


def _contains(context: str, answer: str) -> bool:
    return re.search(rf"(?<![a-z]){re.escape(answer.lower())}(?![a-z])", context.lower()) is not None


_HOW_MANY = re.compile(r"^how many (.+?) (?:are|can|is)\b", re.IGNORECASE)


def context_for(example: D.Example, focus: Sequence[int], rng: np.random.Generator, question: str = "") -> list[str]:
    """Captions as the region captioner would keep them for a question about `focus`: the focus objects'
    region captions, for a group its group captions, for every object whole-scene captions; plus a few others."""
    from vqagraph_lab.text_route.captioner import group_captions

    texts = example.texts
    n = len(texts.region)
    focus = [i for i in focus if 0 <= i < n] or ([int(rng.integers(n))] if n else [])
    pool: list[str] = []

    def some(options: Sequence[str], low: int, high: int) -> None:
        for _ in range(int(rng.integers(low, high + 1))):
            if options:
                pool.append(options[int(rng.integers(len(options)))])

    scenes = [strip_prompt(c) for c in texts.captions]
    if len(focus) > 1 and len(focus) == n:
        some(scenes, 1, 3)
        some([c for r in texts.region for c in r], 0, 2)
    else:
        match = _HOW_MANY.match(question)
        if len(focus) > 1 and match:
            some(group_captions(example.scene, focus, match.group(1)), 1, 2)
        some([c for i in focus for c in texts.region[i]], 1 if len(focus) == 1 else 0, 4)
        some([c for k in range(n) if k not in focus for c in texts.region[k]], 0, 2)
        some(scenes, 0, 1)
    rng.shuffle(pool)
    kept: list[str] = []
    for caption in pool:
        if not any(caption in other for other in kept):  # §1.3: not a substring of a caption already kept
            kept.append(caption)
    return kept


def qg_pair(example: D.Example, rng: np.random.Generator, tries: int = 6) -> tuple[str, str, str] | None:
    """(answer, T5 input, target question), or None when no question of this scene fits."""
    questions = example.texts.questions
    for _ in range(tries):
        if not questions:
            return None
        q = questions[int(rng.integers(len(questions)))]
        captions = context_for(example, q.object_ids, rng, q.question)
        if not captions:
            continue
        joined = " ".join(captions)
        answers = [a for a in q.answers if a == "yes" or (a not in ("no", "none") and _contains(joined, a))]
        if not answers:
            continue
        answer = answers[int(rng.integers(len(answers)))]
        return answer, qg_input(answer, captions), q.question
    return None


def train_qg(model: Any, tokenizer: Any, corpus: D.Corpus | D.TextCorpus, *, steps: int, batch: int, lr: float,
             seed: int, report: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    rng = np.random.default_rng([seed, 41])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    history: dict[str, list[float]] = {"qg": []}
    warmup = max(1, steps // 20)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        pairs: list[tuple[str, str, str]] = []
        while len(pairs) < batch:
            pair = qg_pair(corpus.example(int(rng.integers(len(corpus)))), rng)
            if pair is not None:
                pairs.append(pair)
        enc = tokenizer([p[1] for p in pairs], return_tensors="pt", padding="longest", truncation=True,
                        max_length=384)
        labels = tokenizer([p[2] for p in pairs], return_tensors="pt", padding="longest", truncation=True,
                           max_length=48).input_ids
        labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
        loss = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history["qg"].append(float(loss.detach()))
        if report is not None:
            report(step, {"qg": float(loss.detach())})
    model.eval()
    return history


def train_in_process(texts: list[Any], directory: str, ids: dict[str, int], steps: int, batch: int, lr: float,
                     seed: int, threads: int, progress: bool) -> dict[str, Any]:
    """Build, train and save the question generator into `directory` (which holds its tokenizer): the body of
    the worker process that trains it beside the BLIP stages."""
    import time

    from transformers import AutoTokenizer

    from vqagraph_lab.progress import Progress
    from vqagraph_lab.text_route import models as M

    torch.set_num_threads(threads)
    start = time.perf_counter()
    cpu_start = time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(seed + 2)
    model = M.new_t5(ids)
    bar = Progress("question generator", steps, progress, position=1)
    history = train_qg(model, tokenizer, D.TextCorpus(texts), steps=steps, batch=batch, lr=lr, seed=seed, report=bar)
    bar.close()
    M.save_model(model, Path(directory))
    return {"history": history, "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(time.process_time() - cpu_start, 1)}
