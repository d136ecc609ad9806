"""A LangGraph agent that calls vqagraph as a LangChain tool.

The agent's chat model here is a scripted stand-in (it asks the tool once, then reports what the tool said),
so the example runs offline; put any tool-calling chat model in its place, e.g.
`ChatOpenAI(model="gpt-4o-mini")` from langchain-openai, or `init_chat_model("...")` from langchain.

    .venv/bin/python examples/agents/langchain_agent.py photo.png "What colour is the car?" [--profile tiny]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from vqagraph import Engine
from vqagraph.agents.langchain_tool import VisualQuestionTool


class ScriptedChatModel(BaseChatModel):
    """Calls `visual_question` once with the given image and question, then answers with the tool's result."""

    image: str
    question: str
    route: str = "auto"

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            call = {"name": "visual_question", "id": "call_1", "type": "tool_call",
                    "args": {"image": self.image, "question": self.question, "route": self.route}}
            message = AIMessage(content="", tool_calls=[call])
        else:
            message = AIMessage(content=f"The image tool says: {results[-1].content}")
        return ChatResult(generations=[ChatGeneration(message=message)])


def build_agent(engine: Engine, image: str, question: str, route: str = "auto") -> Any:
    tool = VisualQuestionTool(engine=engine)
    model = ScriptedChatModel(image=image, question=question, route=route)
    try:
        from langchain.agents import create_agent  # langchain >= 1.0

        return create_agent(model, [tool])
    except ImportError:  # LangGraph's own prebuilt agent (deprecated in favour of the above, still there in 1.x)
        import warnings

        from langgraph.prebuilt import create_react_agent

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return create_react_agent(model, [tool])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image")
    parser.add_argument("question")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--route", default="auto", choices=["auto", "img2llm", "bridge", "both"])
    args = parser.parse_args()
    agent = build_agent(Engine.from_profile(args.profile), args.image, args.question, args.route)
    result = agent.invoke({"messages": [HumanMessage(f"Look at {args.image}: {args.question}")]})
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    print(result["messages"][-1].content)
    print(f"route: {tool_message.artifact['route']} ({tool_message.artifact['trace']['route_reason']})")


if __name__ == "__main__":
    main()
