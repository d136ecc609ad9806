"""The Img2LLM prompt (docs/methods.md §1.6), assembled inside the LLM's token budget from the named templates of
`vqagraph.prompt_templates` (IMG2LLM_HEADER, IMG2LLM_CONTEXTS, IMG2LLM_EXEMPLAR, IMG2LLM_QUESTION):

    Please reason the answer of the questions according to the given contexts.
    Contexts:{caption}. {caption}. ...
    Question:{synthetic question}
    Answer:{synthetic answer}
    ...
    Question:{user question}
    Answer:

Unlike the LAVIS port, the synthetic QA exemplars are kept: the paper's gain comes from them.

An instruction-tuned LLM may instead read the same content in its own chat template (`prompt_format = "chat"`):
the header and the contexts as the system turn, each exemplar and earlier turn as a user/assistant pair, then the
question (docs/methods.md §1.6).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from vqagraph.errors import ProfileError, QuestionError
from vqagraph.prompt_templates import IMG2LLM_CONTEXTS, IMG2LLM_EXEMPLAR, IMG2LLM_HEADER, IMG2LLM_QUESTION
from vqagraph.tools.question_generator import Exemplar

# A question answered yes or no (the router's cue, a photo question's kind, a calibrated answer): by its first word.
YES_NO_QUESTION = re.compile(r"^\s*(is|are|was|were|does|do|did|can|could|has|have|will)\b", re.IGNORECASE)
# A question about text in a photo (docs/methods.md §8): it reads the text read, and is answered with it.
TEXT_CUE = re.compile(r"\b(read|reads|say|says|written|write|words?|text|title|brand|names?|signs?|labels?|"
                      r"letters?|numbers?|logo|spell)\b", re.IGNORECASE)

# Renders chat messages ({role, content}) as the LLM's own template, ending where the assistant's answer starts.
ChatTemplate = Callable[[list[dict[str, str]]], str]


def chat_template_of(tokenizer: Any, model: str = "the LLM") -> ChatTemplate:
    """The tokenizer's chat template as a `ChatTemplate`; a clear error when the LLM has none (a base model)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ProfileError(f"img2llm.prompt_format 'chat' needs an LLM with a chat template; {model} has none "
                           "(use prompt_format 'img2llm')")

    def render(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    return render


class Img2LLMPrompt(BaseModel):
    text: str
    context_captions: list[str]
    exemplars: list[Exemplar]
    tokens: int
    dropped_exemplars: int
    dropped_captions: int
    history_turns: int = 0
    dropped_turns: int = 0


def select_context_captions(
    answers: Sequence[str], answer_to_captions: dict[str, list[int]], num_captions: int, limit: int = 30
) -> list[int]:
    """§1.6: walk the answers from the least frequent upward (`yes` first), one unused caption per answer.

    As LAVIS's `create_context_prompt`, the walk wraps around the answer list `limit` times and an answer
    found in no caption points at caption 0.
    """
    if not answers or num_captions == 0:
        return []
    chosen: list[int] = []
    for idx in range(limit):
        answer = answers[(len(answers) - 1 - idx) % len(answers)]
        for cap_id in answer_to_captions.get(answer.lower(), [0]):
            if cap_id not in chosen and cap_id < num_captions:
                chosen.append(cap_id)
                break
    return chosen


def select_exemplars(exemplars: Sequence[Exemplar], limit: int = 30, max_answer_words: int = 4,
                     unique_questions: bool = False) -> list[Exemplar]:
    """§1.6: one pair per candidate whose answer has fewer than 5 words, up to `limit`. With `unique_questions`,
    a question already asked by an earlier (more frequent) candidate's exemplar is skipped: one question with
    two answers in the context is a contradiction a small LLM resolves by copying the later one."""
    kept: list[Exemplar] = []
    seen: set[str] = set()
    for e in exemplars:
        key = " ".join(e.question.lower().split())
        if len(e.answer.split()) > max_answer_words or (unique_questions and key in seen):
            continue
        seen.add(key)
        kept.append(e)
    return kept[:limit]


def render_prompt(
    question: str,
    captions: Sequence[str],
    exemplars: Sequence[Exemplar],
    history: Sequence[tuple[str, str]] = (),
    chat: ChatTemplate | None = None,
) -> str:
    """§1.6's format; a conversation's earlier turns follow the synthetic exemplars as real QA pairs. With `chat`,
    the same content as chat turns in the LLM's own template."""
    contexts = " ".join(f"{c.strip().rstrip('.')}." for c in captions)
    if chat is not None:
        messages = [{"role": "system", "content": IMG2LLM_HEADER + IMG2LLM_CONTEXTS.format(contexts=contexts)}]
        for q, a in [*((e.question, e.answer) for e in exemplars), *history]:
            messages += [{"role": "user", "content": q.strip()}, {"role": "assistant", "content": a.strip()}]
        return chat([*messages, {"role": "user", "content": question.strip()}])
    pairs = "".join(IMG2LLM_EXEMPLAR.format(question=e.question, answer=e.answer) for e in exemplars)
    turns = "".join(IMG2LLM_EXEMPLAR.format(question=q.strip(), answer=a.strip()) for q, a in history)
    return (IMG2LLM_HEADER + IMG2LLM_CONTEXTS.format(contexts=contexts) + "\n" + pairs + turns
            + IMG2LLM_QUESTION.format(question=question.strip()))


def build_prompt(
    question: str,
    captions: Sequence[str],
    exemplars: Sequence[Exemplar],
    count_tokens: Callable[[str], int],
    max_tokens: int,
    history: Sequence[tuple[str, str]] = (),
    chat: ChatTemplate | None = None,
) -> Img2LLMPrompt:
    """Drop exemplars, then the oldest earlier turns, then captions, from the end until it fits `max_tokens`."""
    caps, exs, turns = list(captions), list(exemplars), list(history)
    text = render_prompt(question, caps, exs, turns, chat)
    tokens = count_tokens(text)
    while tokens > max_tokens and (exs or turns or caps):
        if exs:
            exs.pop()
        elif turns:
            turns.pop(0)
        else:
            caps.pop()
        text = render_prompt(question, caps, exs, turns, chat)
        tokens = count_tokens(text)
    if tokens > max_tokens:
        raise QuestionError(
            f"the question alone needs {tokens} prompt tokens, over the LLM's budget of {max_tokens}: shorten it"
        )
    return Img2LLMPrompt(
        text=text,
        context_captions=caps,
        exemplars=exs,
        tokens=tokens,
        dropped_exemplars=len(exemplars) - len(exs),
        dropped_captions=len(captions) - len(caps),
        history_turns=len(turns),
        dropped_turns=len(history) - len(turns),
    )
