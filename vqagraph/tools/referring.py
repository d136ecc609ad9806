"""Rewrite "this"/"here" in a question into a mark's phrase, so every route reads which region is meant.

ViP-LLaVA's questions name the mark ("What is the object within the red rectangle?"); users type "What is
this?". With exactly one mark, the deictic words are replaced by its phrase; with several, the user must
name the mark, and the question is left alone.
"""

from __future__ import annotations

import re

_NOUN_AFTER = r"(object|thing|item|shape|one|part|region|area|person|animal)"
_THIS_NOUN = re.compile(rf"\b(this|that)\s+{_NOUN_AFTER}\b", re.IGNORECASE)
_HERE = re.compile(r"\b(over here|right here|over there|right there|here)\b", re.IGNORECASE)
_THIS = re.compile(r"\b(this|that|it)\b(?!\s*(is|was)\b\s*$)", re.IGNORECASE)


def refer_to_mark(question: str, phrases: list[str]) -> tuple[str, bool]:
    """The question with its deictic reference replaced by the one mark's phrase, and whether it changed."""
    if len(phrases) != 1:
        return question, False
    phrase = phrases[0]
    if phrase.lower() in question.lower():
        return question, False
    rewritten, count = _THIS_NOUN.subn(lambda m: f"the {m.group(2)} {phrase}", question, count=1)
    if not count:
        rewritten, count = _HERE.subn(phrase, question, count=1)
    if not count:
        rewritten, count = _THIS.subn(f"the object {phrase}", question, count=1)
    return rewritten, bool(count)
