"""A route as one unit: what it is called, what it needs, its trace record and its subgraph, in one declaration.

Every route (the text route, the Q-Former bridge, the projection bridge, and any route an application adds)
is a `Route`; `graphs/registry.py` holds the registered ones, and everything that lists routes (the CLI, the
servers, the web page's selector, the router's cue map, custom graphs) reads the registry. docs/architecture.md
has the checklist for adding one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Annotated, Any, TypedDict, get_type_hints

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from vqagraph.answer import RouteAnswer
from vqagraph.config import Profile
from vqagraph.graphs.nodes import Node
from vqagraph.graphs.state import VQAContext, VQAState, merge_dicts

FirstNode = Callable[[VQAState, Runtime[VQAContext]], str]


@dataclass(frozen=True)
class Route:
    """One way a question reaches the frozen LLM.

    `name` is the route's one name everywhere: `ask --route`, the trace (`trace.<name>` is its record,
    `route_answers[<name>]` its answer), the state key its nodes write (`"<name>.field"`), the web page. Its nodes
    run in order (`first_node`, when given, picks where to start); the last one files `route_answers[<name>]`."""

    name: str
    title: str  # how the router's reasons and the CLI say it: "text route"
    summary: str  # one line for --help, the web page's selector and the custom-graph catalogue
    record: type  # its trace record: a TypedDict of checkpoint-safe values (answer.py has the built-in ones)
    nodes: tuple[Node, ...]
    settings: Callable[[Profile], Any]  # its block of the profile's settings
    answer_cap: Callable[[Profile], int]  # the most new tokens its answer may take
    available: Callable[[Profile], bool] = lambda _profile: True  # whether the profile has what it loads
    loads: tuple[str, ...] = ()  # the toolkit roles it loads (Toolkit attributes), for warm-up and docs
    missing: str = ""  # what the profile lacks when it is not available (the error says it)
    first_node: FirstNode | None = None
    optional_reads: tuple[str, ...] = ()  # what the subgraph reads when present (the catalogue says it)
    describe: Callable[[dict[str, Any]], str | None] = lambda _record: None  # a line for the CLI, from its record
    prompt_tokens: Callable[[dict[str, Any]], int] = lambda _record: 0  # what the LLM read, from its record (usage)

    def output_schema(self) -> type:
        """Only its record, its answer and its timings leave the subgraph, so routes run side by side (`both`)."""
        return TypedDict(  # type: ignore[operator, no-any-return]
            f"{self.name}_output", {self.name: self.record, "route_answers": dict[str, RouteAnswer],
                                    "timings": dict[str, float]}, total=False)

    def subgraph(self, state_schema: type = VQAState) -> Any:
        """The route's compiled subgraph: its nodes in a chain (entered at `first_node`'s choice when given)."""
        graph: StateGraph[Any, VQAContext, Any, Any] = StateGraph(state_schema, context_schema=VQAContext,
                                                                  output_schema=self.output_schema())
        names = [fn.NAME for fn in self.nodes]  # type: ignore[attr-defined]
        for name, fn in zip(names, self.nodes, strict=True):
            graph.add_node(name, fn)  # type: ignore[call-overload]
        if self.first_node is not None:
            graph.add_conditional_edges(START, self.first_node, names)
        else:
            graph.add_edge(START, names[0])
        for before, after in pairwise(names):
            graph.add_edge(before, after)
        graph.add_edge(names[-1], END)
        return graph.compile(name=self.name)


def state_schema(routes: tuple[Route, ...]) -> type:
    """The VQA state with a record channel for every route: the built-in routes' records are typed in `VQAState`;
    a route added later gets its channel here (merged like the others), so its nodes' writes have a place."""
    extra = {r.name: Annotated[r.record, merge_dicts] for r in routes if r.name not in VQAState.__annotations__}
    if not extra:
        return VQAState
    fields = {**get_type_hints(VQAState, include_extras=True), **extra}
    return TypedDict("VQAState", fields, total=False)  # type: ignore[operator, no-any-return]
