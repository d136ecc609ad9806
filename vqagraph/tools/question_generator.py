"""Synthetic question-answer exemplars from answer candidates (Img2LLM, docs/methods.md §1.5).

Neural: a T5 question generator reads `"answer: {a}  context: {captions}."` and writes a question whose
answer is `a`, for all candidates in one batched beam search. Template: one fixed question per part of
speech (the branch LAVIS never reaches because of its `if "question_type" == "rule"` bug).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel

from vqagraph.prompt_templates import IMG2LLM_QG_INPUT
from vqagraph.tools.batching import Batcher, BatchPolicy

# §1.5 templates (the first of each LAVIS list); NUM, ADV and YES are this project's additions.
TEMPLATE_QUESTIONS = {
    "NOUN": "What item is this in this picture?",
    "VERB": "What action is being done in this picture?",
    "ADJ": "How to describe one item in this picture?",
    "NUM": "How many items are in this picture?",
    "ADV": "How is the action being done in this picture?",
    "YES": "Is there anything in this picture?",
}


class Exemplar(BaseModel):
    question: str
    answer: str
    source: Literal["neural", "template"]


Job = tuple[list[str], list[str]]  # one question's answer candidates and the captions they came from


def qg_context(captions: list[str]) -> str:
    """Captions capitalised, each ending with "." (the template's own final "." closes the last one)."""
    parts = [c.strip().rstrip(".") for c in captions if c.strip()]
    return ". ".join(p[:1].upper() + p[1:] for p in parts)


def qg_input(answer: str, captions: list[str]) -> str:
    """§1.5 input format (IMG2LLM_QG_INPUT), two spaces before `context:`."""
    return IMG2LLM_QG_INPUT.format(answer=answer, context=qg_context(captions))


def template_question(pos: str) -> str:
    pos = "NOUN" if pos in {"CHUNK", "ENT", "PROPN"} else pos
    return TEMPLATE_QUESTIONS.get(pos, TEMPLATE_QUESTIONS["NOUN"])


@dataclass
class QuestionGenerator:
    """Neural generation with a seq2seq model (T5), or template questions when `model` is None."""

    model: Any | None = None
    tokenizer: Any | None = None
    policy: BatchPolicy = field(default_factory=BatchPolicy)  # how concurrent questions share a beam search
    num_beams: int = 3  # §1.5
    max_length: int = 30  # §1.5
    max_input_tokens: int = 512

    def templates(self, answers: list[str], pos: dict[str, str]) -> list[Exemplar]:
        return [Exemplar(question=template_question(pos.get(a, "NOUN")), answer=a, source="template") for a in answers]

    def __post_init__(self) -> None:
        self.batcher: Batcher[Job, list[Exemplar]] = self.policy.batcher(self.neural_many, stage="question_generator")

    def neural(self, answers: list[str], captions: list[str]) -> list[Exemplar]:
        """One question per answer candidate; concurrent questions' candidates share one beam search."""
        return self.batcher((answers, captions))

    @torch.no_grad()
    def neural_many(self, jobs: list[Job]) -> list[list[Exemplar]]:
        """Every job's candidates in one batched beam search (§1.5), split back per job."""
        if self.model is None or self.tokenizer is None:
            raise ValueError("neural question generation needs a model and tokenizer")
        texts = [qg_input(a, captions) for answers, captions in jobs for a in answers]
        if not texts:
            return [[] for _ in jobs]
        device = next(self.model.parameters()).device
        inputs = self.tokenizer(
            texts, return_tensors="pt", padding="longest", truncation=True, max_length=self.max_input_tokens,
        ).to(device)
        out = self.model.generate(
            **inputs, num_beams=self.num_beams, max_length=self.max_length, do_sample=False, early_stopping=True
        )
        questions = iter(" ".join(q.split()) for q in self.tokenizer.batch_decode(out, skip_special_tokens=True))
        return [[Exemplar(question=q or template_question("NOUN"), answer=a, source="neural" if q else "template")
                 for a, q in zip(answers, questions, strict=False)] for answers, _ in jobs]
