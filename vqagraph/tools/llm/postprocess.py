"""Turn an LLM completion into a short answer (docs/methods.md §1.7)."""

from __future__ import annotations

import re

_FILLER = re.compile(r"^(?:the answer is|answer is|answer:|it is|it's|this is)\s+", re.IGNORECASE)


def postprocess_answer(text: str) -> str:
    """Cut at the first "." or newline, lower-case, strip filler words and stray punctuation."""
    text = text.lstrip()
    cut = re.split(r"[.\n]", text, maxsplit=1)[0]
    answer = cut.strip().lower()
    previous = None
    while previous != answer:
        previous = answer
        answer = _FILLER.sub("", answer).strip()
    return answer.strip(" \t\"'`,;:!?")
