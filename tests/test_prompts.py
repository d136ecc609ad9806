"""The Img2LLM prompt against a worked example written out by hand from docs/methods.md §1.6."""

from __future__ import annotations

import pytest

from vqagraph.errors import QuestionError
from vqagraph.tools.prompts import build_prompt, render_prompt, select_context_captions, select_exemplars
from vqagraph.tools.question_generator import Exemplar

CAPTIONS = ["a red circle on a white background", "a small red circle", "a circle"]
ANSWERS = ["circle", "red", "red circle", "yes"]  # most frequent first, `yes` last
WHERE = {"circle": [0, 1, 2], "red": [0, 1], "red circle": [0, 1], "background": [0]}
EXEMPLARS = [
    Exemplar(question="What shape is it?", answer="circle", source="neural"),
    Exemplar(question="What colour is the circle?", answer="red", source="neural"),
    Exemplar(question="What is shown?", answer="a red circle on a white background", source="neural"),
    Exemplar(question="Is there a circle?", answer="yes", source="neural"),
]

# Written by hand: header line; "Contexts:" + each caption followed by "."; one Question/Answer pair per
# exemplar whose answer has fewer than 5 words (the 7-word one is left out); then the user's question.
EXPECTED = (
    "Please reason the answer of the questions according to the given contexts.\n"
    "Contexts:a red circle on a white background. a small red circle. a circle.\n"
    "Question:What shape is it?\n"
    "Answer:circle\n"
    "Question:What colour is the circle?\n"
    "Answer:red\n"
    "Question:Is there a circle?\n"
    "Answer:yes\n"
    "Question:What colour is the shape?\n"
    "Answer:"
)


def words(text: str) -> int:
    return len(text.split())


def test_context_walk_starts_at_yes_and_goes_up_from_the_least_frequent() -> None:
    # yes -> not in any caption -> caption 0 (LAVIS's default); "red circle" -> 0 used, so 1;
    # "red" -> 0 and 1 used, nothing; "circle" -> 2.
    assert select_context_captions(ANSWERS, WHERE, len(CAPTIONS), limit=30) == [0, 1, 2]
    assert select_context_captions(ANSWERS, WHERE, len(CAPTIONS), limit=2) == [0, 1]
    assert select_context_captions([], WHERE, 3) == []


def test_exemplars_need_answers_under_five_words_and_are_capped() -> None:
    kept = select_exemplars(EXEMPLARS, limit=30)
    assert [e.answer for e in kept] == ["circle", "red", "yes"]
    assert [e.answer for e in select_exemplars(EXEMPLARS, limit=2)] == ["circle", "red"]


def test_unique_exemplar_questions_keep_the_first_answer() -> None:
    """The same question with two answers is a contradiction: with the setting on, the more frequent candidate's
    exemplar (earlier) stays and the later one goes, before the cap is applied."""
    same = [Exemplar(question="What is the colour of the circle?", answer="brown", source="neural"),
            Exemplar(question="What is the colour of the  circle?", answer="shape", source="neural"),
            Exemplar(question="How many shapes are there?", answer="one", source="neural")]
    assert [e.answer for e in select_exemplars(same)] == ["brown", "shape", "one"]  # the paper keeps both
    assert [e.answer for e in select_exemplars(same, unique_questions=True)] == ["brown", "one"]
    assert [e.answer for e in select_exemplars(same, limit=2, unique_questions=True)] == ["brown", "one"]


def test_worked_example() -> None:
    ids = select_context_captions(ANSWERS, WHERE, len(CAPTIONS))
    built = build_prompt("What colour is the shape?", [CAPTIONS[i] for i in ids], select_exemplars(EXEMPLARS),
                         words, max_tokens=1000)
    assert built.text == EXPECTED
    assert built.tokens == words(EXPECTED)
    assert (built.dropped_exemplars, built.dropped_captions) == (0, 0)


def test_trimming_drops_exemplars_from_the_end_then_captions() -> None:
    exemplars = select_exemplars(EXEMPLARS)
    full = words(render_prompt("What colour is the shape?", CAPTIONS, exemplars))
    one_less = words(render_prompt("What colour is the shape?", CAPTIONS, exemplars[:2]))
    built = build_prompt("What colour is the shape?", CAPTIONS, exemplars, words, max_tokens=one_less)
    assert full > one_less
    assert [e.answer for e in built.exemplars] == ["circle", "red"] and built.dropped_exemplars == 1
    no_exemplars = words(render_prompt("What colour is the shape?", CAPTIONS[:1], []))
    built = build_prompt("What colour is the shape?", CAPTIONS, exemplars, words, max_tokens=no_exemplars)
    assert built.exemplars == [] and built.context_captions == CAPTIONS[:1]
    assert built.dropped_captions == 2 and built.tokens <= no_exemplars


def test_question_that_cannot_fit_is_a_clear_error() -> None:
    with pytest.raises(QuestionError, match="over the LLM's budget of 5"):
        build_prompt("a very long question " * 10, CAPTIONS, EXEMPLARS, words, max_tokens=5)


def test_the_chat_format_holds_the_same_content_as_turns() -> None:
    """prompt_format 'chat': the header and contexts as the system turn, each exemplar as a user/assistant pair,
    then the question, in the LLM's own template (here SmolLM2-135M-Instruct's ChatML), ready for the answer."""
    from transformers import AutoTokenizer

    from vqagraph.config import ModelRef
    from vqagraph.hub import resolve
    from vqagraph.tools.prompts import chat_template_of

    tokenizer = AutoTokenizer.from_pretrained(resolve(ModelRef(id="builtin:smollm2-135m-instruct")))
    chat = chat_template_of(tokenizer)
    text = render_prompt("What colour is the shape?", CAPTIONS, select_exemplars(EXEMPLARS), chat=chat)
    assert text == (
        "<|im_start|>system\nPlease reason the answer of the questions according to the given contexts.\n"
        "Contexts:a red circle on a white background. a small red circle. a circle.<|im_end|>\n"
        "<|im_start|>user\nWhat shape is it?<|im_end|>\n<|im_start|>assistant\ncircle<|im_end|>\n"
        "<|im_start|>user\nWhat colour is the circle?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n"
        "<|im_start|>user\nIs there a circle?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"
        "<|im_start|>user\nWhat colour is the shape?<|im_end|>\n<|im_start|>assistant\n"
    )
    # Trimming to the budget drops exemplars first, as in the paper's format.
    built = build_prompt("What colour is the shape?", CAPTIONS, select_exemplars(EXEMPLARS),
                         lambda t: len(tokenizer(t).input_ids), max_tokens=len(tokenizer(text).input_ids) - 1,
                         chat=chat)
    assert built.dropped_exemplars == 1 and built.text.startswith("<|im_start|>system\n")


def test_the_chat_format_needs_a_chat_template() -> None:
    from types import SimpleNamespace

    from vqagraph.errors import ProfileError
    from vqagraph.tools.prompts import chat_template_of

    with pytest.raises(ProfileError, match="a base model has none"):
        chat_template_of(SimpleNamespace(chat_template=None), "a base model")
