"""Follow-up questions made standalone: "and what is left of it?" → "what is left of the circle?".

GradCAM reads the question's words to find the region: a pronoun points nowhere. Before the vision tools see
a follow-up, its pronoun is replaced by the last thing an earlier turn named (rules, no model: the offline
LLM is too small to rewrite reliably). The LLM still receives the question as asked, with the earlier turns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_LEADING = re.compile(r"^\s*(and|so|then|also|but|ok|okay)\b[\s,]*", re.IGNORECASE)
_POSSESSIVE = re.compile(r"\b(its|their)\b", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(it|them|they|that one|this one|the same one)\b", re.IGNORECASE)
# "the big red circle", "a blue square": up to three words after the article, the last one a noun-like word.
_NOUN_PHRASE = re.compile(r"\b(the|a|an)\s+((?:[a-z-]+\s+){0,2}[a-z-]+)", re.IGNORECASE)
_NOT_THINGS = {"picture", "image", "photo", "scene", "left", "right", "top", "bottom", "middle", "center",
               "centre", "same", "most", "other", "one", "answer", "colour", "color", "shape", "size", "number"}


def last_referent(questions: Sequence[str]) -> str | None:
    """The last noun phrase an earlier question named, as "the …" ("Is there a red square?" → "the red square")."""
    for question in reversed(questions):
        found = [m for m in _NOUN_PHRASE.finditer(question) if m.group(2).split()[-1].lower() not in _NOT_THINGS]
        if found:
            return f"the {found[-1].group(2).lower()}"
    return None


def standalone_question(question: str, earlier_questions: Sequence[str]) -> tuple[str, str | None]:
    """(the question with a back-reference resolved, the referent used or None when nothing changed)."""
    if not earlier_questions or not (_PRONOUN.search(question) or _POSSESSIVE.search(question)):
        return question, None
    referent = last_referent(earlier_questions)
    if referent is None:
        return question, None
    text = _LEADING.sub("", question)
    text = _POSSESSIVE.sub(f"{referent}'s", text, count=1)
    text = _PRONOUN.sub(referent, text, count=1)
    text = text[:1].upper() + text[1:]
    return text, referent
