"""Question generation (docs/methods.md §1.5): the exact T5 input, one batched beam search, templates by POS."""

from __future__ import annotations

from vqagraph.tools.question_generator import TEMPLATE_QUESTIONS, QuestionGenerator, qg_input, template_question


def test_qg_input_format() -> None:
    assert qg_input("red", ["a red circle", "a small red circle."]) == (
        "answer: red  context: A red circle. A small red circle."
    )


def test_templates_by_part_of_speech() -> None:
    assert template_question("NOUN") == "What item is this in this picture?"
    assert template_question("VERB") == "What action is being done in this picture?"
    assert template_question("ADJ") == "How to describe one item in this picture?"
    assert template_question("CHUNK") == TEMPLATE_QUESTIONS["NOUN"]
    exemplars = QuestionGenerator().templates(["red", "circle", "yes"], {"red": "ADJ", "circle": "NOUN", "yes": "YES"})
    assert [e.question for e in exemplars] == [TEMPLATE_QUESTIONS["ADJ"], TEMPLATE_QUESTIONS["NOUN"],
                                               TEMPLATE_QUESTIONS["YES"]]
    assert all(e.source == "template" for e in exemplars)


def test_neural_generation_is_one_batched_beam_search(engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    generator = engine.tools.question_generator
    calls = []
    real = generator.model.generate

    def counting(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(generator.model, "generate", counting)
    answers = ["red", "circle", "yes"]
    exemplars = generator.neural(answers, ["a red circle", "a circle on white"])
    assert len(calls) == 1
    assert calls[0]["input_ids"].shape[0] == 3
    assert calls[0]["num_beams"] == 3 and calls[0]["max_length"] == 30
    assert [e.answer for e in exemplars] == answers
    assert all(e.question for e in exemplars)
    decoded = generator.tokenizer.decode(calls[0]["input_ids"][0], skip_special_tokens=True)
    assert decoded.startswith("answer: red  context: A red circle.")
