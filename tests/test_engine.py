"""The whole text route through the LangGraph graph: trace, reuse, serialisable state, input errors."""

from __future__ import annotations

import sqlite3

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from vqagraph import Answer, Engine, QuestionError, build_graph
from vqagraph.graphs.state import VQAContext


def test_ask_runs_the_whole_text_route(engine, red_circle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sent: list[str] = []
    real = engine.tools.llm.generate

    def spy(prompts, params=None, on_token=None):  # type: ignore[no-untyped-def]
        sent.extend(prompts)
        return real(prompts, params, on_token=on_token)

    monkeypatch.setattr(engine.tools.llm, "generate", spy)
    answer = engine.ask(red_circle, "  What colour is   the circle? ", route="img2llm")
    assert isinstance(answer, Answer)
    assert answer.question == "What colour is the circle?"
    assert answer.route == "img2llm" and answer.meaningless
    trace = answer.trace
    work = trace.img2llm
    assert work is not None and trace.bridge is None and trace.projection is None  # only the text route ran
    assert sent == [work["prompt"]]  # the trace's prompt is exactly what the LLM received
    assert work["prompt"].startswith("Please reason the answer of the questions according to the given contexts.\n")
    assert work["prompt"].endswith("Question:What colour is the circle?\nAnswer:")
    assert work["captions"] and work["caption_stats"]["kept"] == len(work["captions"])
    assert work["candidates"][-1] == "yes"
    assert work["exemplars"] and all(e["answer"] in work["candidates"] for e in work["exemplars"])
    for node in ("intake", "region_captions", "question_generation", "img2llm_prompt", "llm_answer", "total"):
        assert trace.timings[node] >= 0
    assert answer.answer == answer.answer.lower() and "\n" not in answer.answer
    assert len(work["gradcam"]) == work["grid"][0] * work["grid"][1]


def test_second_question_on_the_same_image_reuses_its_features(engine, red_circle) -> None:  # type: ignore[no-untyped-def]
    image = red_circle.copy()
    image.putpixel((199, 149), (1, 2, 3))  # a picture no other test uses
    first = engine.ask(image, "what is it?", route="img2llm")
    second = engine.ask(image, "is it red?", route="img2llm")
    assert first.trace.img2llm["image_encoded"] and not second.trace.img2llm["image_encoded"]
    assert first.image_ref == second.image_ref


def test_same_question_same_answer(engine, red_circle) -> None:  # type: ignore[no-untyped-def]
    a, b = engine.ask(red_circle, "what is it?"), engine.ask(red_circle, "what is it?")
    first, second = a.trace.img2llm, b.trace.img2llm
    assert a.answer == b.answer and first["captions"] == second["captions"] and first["prompt"] == second["prompt"]


def test_state_is_checkpointable_with_sqlite(engine, red_circle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    saver = SqliteSaver(sqlite3.connect(tmp_path / "threads.db", check_same_thread=False))
    graph = build_graph(checkpointer=saver)
    ref = engine.add_image(red_circle)
    config = {"configurable": {"thread_id": "t1"}}
    out = graph.invoke({"image_ref": ref, "question": "what is it?", "route": "auto"}, config,
                       context=VQAContext(tools=engine.tools))
    stored = graph.get_state(config).values
    assert stored["answer"] == out["answer"] and stored["image_ref"] == ref
    assert stored["img2llm"]["prompt"] == out["img2llm"]["prompt"]  # the route's record survives the checkpoint


def test_stream_reports_each_node(engine, red_circle) -> None:  # type: ignore[no-untyped-def]
    ref = engine.add_image(red_circle)
    seen = []
    for _namespace, update in engine.graph.stream({"image_ref": ref, "question": "what?", "route": "img2llm"},
                                                 context=VQAContext(tools=engine.tools), stream_mode="updates",
                                                 subgraphs=True):
        seen.extend(update)
    expected = ["render_marks", "resolve_followup", "router", "region_captions", "question_generation",
                "img2llm_prompt", "llm_answer", "pick_answer"]
    assert [n for n in seen if n != "img2llm"] == expected


@pytest.mark.parametrize(("question", "message"), [
    ("", "the question is empty"),
    ("   \n ", "the question is empty"),
    ("x" * 1001, "over the limit of 1000"),
])
def test_bad_questions(engine, red_circle, question: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QuestionError, match=message):
        engine.ask(red_circle, question)


def test_unknown_route(engine, red_circle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QuestionError, match="unknown route 'teleport'"):
        engine.ask(red_circle, "what?", route="teleport")
    with pytest.raises(QuestionError, match="unknown router policy 'coin'"):
        engine.ask(red_circle, "what?", router="coin")


def test_template_questions_setting(red_circle) -> None:  # type: ignore[no-untyped-def]
    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"}, img2llm={"question_generation": "template"})
    answer = engine.ask(red_circle, "what is it?")
    exemplars = answer.trace.img2llm["exemplars"]
    assert exemplars and all(e["source"] == "template" for e in exemplars)


def test_no_caption_passing_the_filter_still_answers(red_circle) -> None:  # type: ignore[no-untyped-def]
    engine = Engine.from_profile("tiny", llm={"id": "builtin:tiny-llama"},
                                 img2llm={"itm_threshold": 1.0, "max_caption_rounds": 1})
    answer = engine.ask(red_circle, "what is it?")
    assert answer.trace.img2llm["captions"] == [] and answer.trace.img2llm["caption_stats"]["rejected_itm"] == 8
    assert "Contexts:\n" in answer.trace.img2llm["prompt"] and answer.trace.img2llm["candidates"] == ["yes"]
