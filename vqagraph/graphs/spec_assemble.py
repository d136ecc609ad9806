"""Graph specs, the last step: resolved nodes and edges → a compiled LangGraph graph over `VQAState`.

Every node is wrapped so it appends its name to the state's `path` (`node/inner` for a subgraph's own steps);
a bounded node's visits are counted there, and an edge into a node whose visits are spent goes to the node's
`on_limit` instead (labelled `... (limit)` in a drawn graph).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel

from vqagraph.graphs.composed_nodes import GraphRunError
from vqagraph.graphs.library import ConditionEntry, NodeEntry
from vqagraph.graphs.nodes import Node
from vqagraph.graphs.registry import ROUTES
from vqagraph.graphs.state import VQAContext, VQAState

Bounds = dict[str, tuple[int, str]]  # node → (max_visits, on_limit)


@dataclass
class Built:
    """A resolved node: its catalogue entry (or an equivalent for user nodes and spec files) and settings."""

    entry: NodeEntry
    settings: BaseModel
    spec: Any  # the NodeSpec


@dataclass
class Branch:
    """A normalised edge: plain (`targets`), a join (several sources), or conditional (`condition`)."""

    where: str
    sources: list[str]
    targets: list[str]
    condition: Any = None
    condition_entry: ConditionEntry | None = None
    cases: dict[str, list[str]] | None = None
    default: list[str] | None = None


def _wrap(name: str, fn: Node) -> Node:
    def run(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        update = dict(fn(state, runtime) or {})
        inner = update.pop("path", [])  # a subgraph's own steps
        update["path"] = [name, *(f"{name}/{step}" for step in inner)]
        return update

    run.__name__ = name
    return run


LIMIT = " (limit)"  # the label of the way to `on_limit`, in a drawn graph


def assemble(name: str, built: dict[str, Built], branches: list[Branch]) -> Any:
    """The compiled graph; its recursion limit leaves room for every bounded node's visits."""
    graph: StateGraph[Any, VQAContext, Any, Any] = StateGraph(ROUTES.state_schema(), context_schema=VQAContext)
    for node_name, node in built.items():
        graph.add_node(node_name, _wrap(node_name, node.entry.make(node.settings)))  # type: ignore[call-overload,arg-type]
    bounds: Bounds = {n: (b.spec.max_visits, b.spec.on_limit) for n, b in built.items() if b.spec.max_visits}
    for index, branch in enumerate(branches):
        sources = [_lg(s) for s in branch.sources]
        if branch.condition is not None:
            graph.add_conditional_edges(sources[0], _decide(index, branch, bounds), _path_map(_keys(branch), bounds))
        elif len(sources) > 1:
            graph.add_edge(sources, _lg(branch.targets[0]))
        else:
            for target in branch.targets:
                if target in bounds:
                    graph.add_conditional_edges(sources[0], _guard(target, bounds),
                                                _path_map([(target, target)], bounds))
                else:
                    graph.add_edge(sources[0], _lg(target))
    limit = max(25, 4 * sum(b.spec.max_visits or 1 for b in built.values()) + 10)
    return graph.compile(name=name).with_config(recursion_limit=limit)


def _lg(name: str) -> str:
    return {"START": START, "END": END}.get(name, name)


def _spent(target: str, state: VQAState, bounds: Bounds) -> bool:
    """A bounded node visited `max_visits` times already: the flow goes to its `on_limit` instead."""
    return target in bounds and (state.get("path") or []).count(target) >= bounds[target][0]


def _path_map(keys: list[tuple[str, str]], bounds: Bounds) -> dict[Hashable, str]:
    out: dict[Hashable, str] = {}
    for key, target in keys:
        out[key] = _lg(target)
        if target in bounds:
            out[key + LIMIT] = _lg(bounds[target][1])
    return out


def _guard(target: str, bounds: Bounds) -> Any:
    def guard(state: VQAState) -> str:
        return target + LIMIT if _spent(target, state, bounds) else target

    guard.__name__ = f"to_{target}"
    return guard


def _keys(branch: Branch) -> list[tuple[str, str]]:
    """(label, target) for every way out of a conditional edge: its outcome, or outcome[i] for fan-outs."""
    cases = dict(branch.cases or {})
    if branch.default is not None:
        cases["default"] = branch.default
    return [(outcome if len(ts) == 1 else f"{outcome}[{i}]", t)
            for outcome, ts in cases.items() for i, t in enumerate(ts)]


def _decide(index: int, branch: Branch, bounds: Bounds) -> Any:
    keys = _keys(branch)

    def decide(state: VQAState, runtime: Runtime[VQAContext]) -> list[str]:
        outcome = branch.condition(state, runtime)
        outcome = str(outcome).lower() if isinstance(outcome, bool) else str(outcome)
        chosen = outcome if outcome in (branch.cases or {}) else "default" if branch.default is not None else None
        if chosen is None:
            raise GraphRunError(f"{branch.where}: the condition answered {outcome!r}, which has no case and the "
                                "edge has no default")
        return [key + LIMIT if _spent(target, state, bounds) else key
                for key, target in keys if key == chosen or key.startswith(f"{chosen}[")]

    condition = branch.condition_entry.name if branch.condition_entry else ""
    decide.__name__ = re.sub(r"\W", "_", f"edge{index}_{condition}")
    return decide
