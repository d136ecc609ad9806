"""vqagraph inside agent applications: the LangChain tool in a real LangGraph agent (sync and async), the
LangGraph-server app that `langgraph.json` points at, and the VQA graph as a subgraph (the example)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import create_react_agent
from PIL import Image, ImageDraw
from pydantic import Field

from vqagraph.agents.langchain_tool import VisualQuestionTool

ROOT = Path(__file__).resolve().parents[1]
# create_react_agent is LangGraph 1.x's prebuilt agent (its successor, langchain's create_agent, is not installed).
pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")


class ScriptedChatModel(BaseChatModel):
    """A chat model that calls the tool once with fixed arguments, then quotes the tool's result."""

    tool_args: dict[str, Any]
    seen: list[list[str]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        assert [getattr(t, "name", None) for t in tools] == ["visual_question"]
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.seen.append([type(m).__name__ for m in messages])
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            call = {"name": "visual_question", "args": self.tool_args, "id": "call_1", "type": "tool_call"}
            message = AIMessage(content="", tool_calls=[call])
        else:
            message = AIMessage(content=f"The image tool says: {results[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=message)])


def scene(marker: int) -> Image.Image:
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    image.putpixel((159, 119), (marker, marker, marker))
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "circle.png"
    scene(11).save(path)
    return path


def load_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as LangGraph's loader does: type hints resolve in the module
    spec.loader.exec_module(module)
    return module


def check_agent_result(result: dict[str, Any], question: str) -> None:
    messages = result["messages"]
    tool_message = next(m for m in messages if isinstance(m, ToolMessage))
    assert tool_message.status == "success" and tool_message.name == "visual_question"
    artifact = tool_message.artifact  # the whole Answer, never shown to the LLM
    assert artifact["answer"] == tool_message.content and artifact["trace"]["route"] == "bridge"
    assert artifact["question"] == question and artifact["trace"]["visual_prompt"] is None  # no marks drawn
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls
    assert messages[-1].content == f"The image tool says: {artifact['answer']}"


def test_react_agent_calls_the_tool_and_reports_its_answer(engine: Any, picture: Path) -> None:
    question = "What colour is the circle?"
    model = ScriptedChatModel(tool_args={"image": str(picture), "question": question, "route": "bridge"})
    agent = create_react_agent(model, [VisualQuestionTool(engine=engine)])
    result = agent.invoke({"messages": [HumanMessage(f"Look at {picture}: {question}")]})
    check_agent_result(result, question)
    assert model.seen == [["HumanMessage"], ["HumanMessage", "AIMessage", "ToolMessage"]]


def test_async_agent_and_tool(engine: Any, picture: Path) -> None:
    question = "What shape is it?"
    tool = VisualQuestionTool(engine=engine)
    agent = create_react_agent(ScriptedChatModel(tool_args={"image": str(picture), "question": question,
                                                            "route": "bridge"}), [tool])
    result = asyncio.run(agent.ainvoke({"messages": [HumanMessage(question)]}))
    check_agent_result(result, question)
    # The tool alone, called with a tool call: a ToolMessage whose artifact is the answer with its trace.
    call = {"name": tool.name, "args": {"image": str(picture), "question": question, "route": "bridge"},
            "id": "call_9", "type": "tool_call"}
    message = asyncio.run(tool.ainvoke(call))
    assert isinstance(message, ToolMessage) and message.tool_call_id == "call_9"
    assert message.content == message.artifact["answer"] and "trace" in message.artifact


def test_tool_thread_and_errors(engine: Any, picture: Path, tmp_path: Path) -> None:
    tool = VisualQuestionTool(engine=engine, store="memory", image_root=tmp_path)
    first = tool.invoke({"name": tool.name, "id": "1", "type": "tool_call",
                         "args": {"image": str(picture), "question": "What colour is it?", "thread": "lc-1",
                                  "route": "bridge"}})
    second = tool.invoke({"name": tool.name, "id": "2", "type": "tool_call",
                          "args": {"question": "and what shape?", "thread": "lc-1", "route": "bridge"}})
    assert second.artifact["thread"] == "lc-1" and second.artifact["trace"]["history_turns"] == 1
    assert second.artifact["image_ref"] == first.artifact["image_ref"]
    # A reference from an earlier answer works as the image; marks are drawn.
    marked = tool.invoke({"name": tool.name, "id": "3", "type": "tool_call",
                          "args": {"image": first.artifact["image_ref"], "question": "What is in the box?",
                                   "route": "bridge",
                                   "marks": [{"shape": "rectangle", "box": [10, 10, 100, 100]}]}})
    assert marked.artifact["trace"]["visual_prompt"]["phrases"]
    # The agent may set how the LLM decodes: a short, sampled, seeded answer, recorded in the trace.
    sampled = tool.invoke({"name": tool.name, "id": "4", "type": "tool_call",
                           "args": {"image": str(picture), "question": "What colour is it?", "route": "bridge",
                                    "temperature": 0.7, "max_tokens": 2, "seed": 5}})
    assert sampled.artifact["trace"]["generation"] == {"temperature": 0.7, "max_tokens": 2, "seed": 5}
    assert len(sampled.artifact["trace"]["route_answers"]["bridge"]["token_ids"]) <= 2
    # Errors the agent can fix come back as the tool's content, not as an exception.
    for args, words in [({"image": str(tmp_path / "missing.png"), "question": "What?"}, "not found"),
                        ({"image": str(picture), "question": " "}, "empty"),
                        ({"question": "What?"}, "give the image"),
                        ({"image": "/etc/hostname", "question": "What?"}, "outside the folder"),
                        ({"image": str(picture), "question": "What?", "temperature": 9}, "temperature")]:
        message = tool.invoke({"name": tool.name, "id": "e", "type": "tool_call", "args": args})
        assert message.status == "error" and words in message.content, message.content


def test_langgraph_json_app_is_a_conversation(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, attribute = config["graphs"]["vqagraph"].partition(":")
    module = load_file(ROOT / path, "vqagraph_langgraph_app")  # as `langgraph dev` loads it
    assert getattr(module, attribute).get_name() == "vqagraph"
    from vqagraph.agents import langgraph_app

    langgraph_app.set_engine(engine)
    try:
        app = langgraph_app.build_app(InMemorySaver())
        thread = {"configurable": {"thread_id": "studio-1"}}
        url = "data:image/png;base64," + base64.b64encode(png(scene(12))).decode()
        first = app.invoke({"messages": [HumanMessage(content=[{"type": "text", "text": "What colour is it?"},
                                                               {"type": "image_url", "image_url": {"url": url}}])],
                            "route": "bridge"}, thread)
        second = app.invoke({"messages": [HumanMessage("and what shape is it?")]}, thread)
        assert [type(m).__name__ for m in second["messages"]] == ["HumanMessage", "AIMessage"] * 2
        assert second["messages"][-1].content == second["answer"] and second["trace"]["history_turns"] == 1
        assert second["image_ref"] == first["image_ref"] and len(second["turns"]) == 2
        # The VQA graph runs as a subgraph of the turn: its nodes and the LLM's tokens stream with the run.
        events = list(app.stream({"messages": [HumanMessage("is it round?")]}, thread,
                                 stream_mode=["updates", "custom"], subgraphs=True))
        assert any(namespace and mode == "updates" for namespace, mode, _chunk in events)
        tokens = "".join(chunk["token"] for _namespace, mode, chunk in events if mode == "custom")
        assert tokens.strip() and events[-1][2]["ask"]["answer"] in tokens.lower()
        # Its clients are remote: no file of this machine is read, as an image or as a mask.
        from vqagraph.errors import ImageError, MarkError

        with pytest.raises(ImageError, match="data: URL"):
            app.invoke({"question": "What is it?", "image": "/etc/hostname"}, {"configurable": {"thread_id": "s-2"}})
        with pytest.raises(MarkError, match="mask_path is not accepted"):
            app.invoke({"question": "What is this?", "marks": [{"shape": "mask", "mask_path": "/etc/hostname"}]},
                       thread)
    finally:
        langgraph_app.set_engine(None)


def test_langgraph_app_asks_through_the_engine(engine: Any) -> None:
    """The app's turn is `Engine.answer`'s: the same answer for the same image and question, and the same refusal
    of a question that is empty or over the profile's `max_question_chars`."""
    from vqagraph.agents import langgraph_app
    from vqagraph.errors import QuestionError
    from vqagraph.request import AskRequest

    picture = scene(13)
    url = "data:image/png;base64," + base64.b64encode(png(picture)).decode()

    def message(text: str) -> HumanMessage:
        return HumanMessage(content=[{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}])

    langgraph_app.set_engine(engine)
    try:
        app = langgraph_app.build_app(InMemorySaver())
        thread = {"configurable": {"thread_id": "studio-engine"}}
        question = "What colour is the circle?"
        turn = app.invoke({"messages": [message(question)], "route": "bridge"}, thread)
        direct = engine.answer(AskRequest(question=question, image=picture, route="bridge"))
        assert turn["answer"] == direct.answer and turn["messages"][-1].content == direct.answer
        assert turn["image_ref"] == direct.image_ref and turn["trace"]["route"] == direct.route == "bridge"
        limit = engine.profile.limits.max_question_chars
        for text, words in [("why " * limit, f"over the limit of {limit}"), ("   ", "the question is empty")]:
            with pytest.raises(QuestionError, match=words) as refused:
                app.invoke({"messages": [message(text)], "route": "bridge"}, thread)
            with pytest.raises(QuestionError) as refused_directly:
                engine.answer(AskRequest(question=text, image=picture, route="bridge"))
            assert str(refused.value) == str(refused_directly.value)
        assert len(app.get_state(thread).values["turns"]) == 1  # a refused question is no turn
    finally:
        langgraph_app.set_engine(None)


def test_subgraph_example(engine: Any, picture: Path) -> None:
    example = load_file(ROOT / "examples" / "agents" / "subgraph.py", "vqagraph_subgraph_example")
    result = example.run(engine, str(picture), "What colour is the circle?", route="bridge")
    assert result["answered_by"] == "bridge" and result["image_ref"].startswith("sha256:")
    assert result["report"].startswith(f"{picture}: What colour is the circle? -> {result['answer']!r}")
