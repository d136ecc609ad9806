"""Contextual calibration of a yes/no answer (Zhao et al., "Calibrate Before Use", ICML 2021; docs/methods.md §8).

A small LLM leans to one answer whatever the context says: on the photo dev set Qwen2.5-Coder-0.5B answered "no"
to all nine yes/no questions, "Is there a lemon in the picture?" beside "a photo of a lemon" included. The paper
measures that lean with a content-free input ("N/A") in the same prompt and divides it out: p(yes) and p(no) are
read off the first new token (every spelling: yes, Yes, YES, with or without a leading space), renormalised over
the two answers, and each is divided by its content-free value before the larger is taken.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from vqagraph.tools.llm.base import Generation

CONTENT_FREE = "N/A"  # the paper's content-free input
SPELLINGS = {"yes": ("yes", "Yes", "YES"), "no": ("no", "No", "NO")}


class YesNoCalibration(BaseModel):
    """The two readings and the decision (probabilities renormalised over yes and no)."""

    p_yes: float  # in the prompt as asked
    p_yes_content_free: float  # in the same prompt with the contexts replaced by "N/A": the LLM's own lean
    calibrated_p_yes: float
    answer: str  # "yes" or "no"


def answer_token_ids(tokenizer: Any) -> dict[str, set[int]]:
    """Every single-token spelling of yes and of no in this tokenizer, with and without a leading space."""
    ids: dict[str, set[int]] = {}
    for answer, spellings in SPELLINGS.items():
        ids[answer] = set()
        for word in spellings:
            for text in (word, " " + word):
                tokens = tokenizer.encode(text, add_special_tokens=False)
                if len(tokens) == 1:
                    ids[answer].add(int(tokens[0]))
    return ids


def p_yes(generation: Generation, ids: dict[str, set[int]]) -> float | None:
    """p(yes) / (p(yes) + p(no)) among the first token's returned alternatives; None when neither is among them."""
    mass = {a: sum(math.exp(lp) for t, lp in generation.first_top_logprobs.items() if t in ids[a]) for a in ids}
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else None


def calibrate_yes_no(tokenizer: Any, asked: Generation, content_free: Generation) -> YesNoCalibration | None:
    """The calibrated answer, or None when the LLM put no weight on yes or no (then its own answer stands)."""
    ids = answer_token_ids(tokenizer)
    p, p0 = p_yes(asked, ids), p_yes(content_free, ids)
    if p is None or p0 is None:
        return None
    p0 = min(max(p0, 1e-6), 1 - 1e-6)
    yes, no = p / p0, (1 - p) / (1 - p0)
    calibrated = yes / (yes + no)
    return YesNoCalibration(p_yes=round(p, 5), p_yes_content_free=round(p0, 5), calibrated_p_yes=round(calibrated, 5),
                            answer="yes" if calibrated > 0.5 else "no")
