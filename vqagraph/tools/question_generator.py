"""Synthetic question-answer exemplars from answer candidates (Img2LLM, docs/methods.md §1.5).

Neural: a T5 question generator reads `"answer: {a}  context: {captions}."` and writes a question whose
answer is `a`, for all candidates in one batched beam search. Template: one fixed question per part of
speech (the branch LAVIS never reaches because of its `if "question_type" == "rule"` bug).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel

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


def qg_context(captions: list[str]) -> str:
    """Captions capitalised, each ending with "." (the template's own final "." closes the last one)."""
    parts = [c.strip().rstrip(".") for c in captions if c.strip()]
    return ". ".join(p[:1].upper() + p[1:] for p in parts)


def qg_input(answer: str, captions: list[str]) -> str:
    """§1.5 input format, two spaces before `context:`."""
    return f"answer: {answer}  context: {qg_context(captions)}."


def template_question(pos: str) -> str:
    pos = "NOUN" if pos in {"CHUNK", "ENT", "PROPN"} else pos
    return TEMPLATE_QUESTIONS.get(pos, TEMPLATE_QUESTIONS["NOUN"])


@dataclass
class QuestionGenerator:
    """Neural generation with a seq2seq model (T5), or template questions when `model` is None."""

    model: Any | None = None
    tokenizer: Any | None = None
    num_beams: int = 3  # §1.5
    max_length: int = 30  # §1.5
    max_input_tokens: int = 512

    def templates(self, answers: list[str], pos: dict[str, str]) -> list[Exemplar]:
        return [Exemplar(question=template_question(pos.get(a, "NOUN")), answer=a, source="template") for a in answers]

    @torch.no_grad()
    def neural(self, answers: list[str], captions: list[str]) -> list[Exemplar]:
        if self.model is None or self.tokenizer is None:
            raise ValueError("neural question generation needs a model and tokenizer")
        if not answers:
            return []
        device = next(self.model.parameters()).device
        inputs = self.tokenizer(
            [qg_input(a, captions) for a in answers],
            return_tensors="pt",
            padding="longest",
            truncation=True,
            max_length=self.max_input_tokens,
        ).to(device)
        out = self.model.generate(
            **inputs, num_beams=self.num_beams, max_length=self.max_length, do_sample=False, early_stopping=True
        )
        questions = [" ".join(q.split()) for q in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return [
            Exemplar(question=q or template_question("NOUN"), answer=a, source="neural" if q else "template")
            for q, a in zip(questions, answers, strict=True)
        ]
