"""The graph checks behind graph specs (graphs/spec.py), on plain names: reachability, dead ends, loops without
a bound, keys read that no upstream node writes, and a graph that never writes an answer.

Every check returns issues, `(where, cause)`: `where` is the spec location (`nodes.look`, `edges[2]`), `cause`
says what is wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Issue = tuple[str, str]
START, END = "START", "END"


@dataclass
class NodeInfo:
    where: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    max_visits: int | None = None
    on_limit: str = END


@dataclass
class EdgeInfo:
    where: str
    sources: list[str]
    targets: list[str]  # every target it can lead to (all cases and the default of a conditional edge)
    reads: tuple[str, ...] = ()  # what its condition reads
    condition: str = ""
    hops: dict[tuple[str, str], str] = field(default_factory=dict)


def successors(nodes: dict[str, NodeInfo], edges: list[EdgeInfo]) -> dict[str, set[str]]:
    """Where the flow can go from each node; a bounded node's `on_limit` counts as a way out of its callers."""
    succ: dict[str, set[str]] = {name: set() for name in [START, *nodes]}
    for edge in edges:
        for source in edge.sources:
            succ[source].update(edge.targets)
    for targets in succ.values():
        targets.update([nodes[t].on_limit for t in list(targets) if t in nodes and nodes[t].max_visits])
    return succ


def _closure(start: Iterable[str], step: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        for nxt in step.get(name, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def find_loop(succ: dict[str, set[str]], bounded: set[str]) -> list[str] | None:
    """A cycle that passes through no bounded node, as [a, b, ..., a]; None when every loop is bounded."""
    graph = {n: sorted(t for t in ts if t not in bounded and t in succ) for n, ts in succ.items() if n not in bounded}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for nxt in graph.get(name, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def check_graph(nodes: dict[str, NodeInfo], edges: list[EdgeInfo], given: Iterable[str],
                writers: dict[str, list[str]]) -> list[Issue]:
    """Every check on a graph whose edges name only existing nodes. `given`: the input keys; `writers`: for
    hints, which catalogue nodes write a key."""
    issues: list[Issue] = []
    succ = successors(nodes, edges)
    reachable = _closure([START], succ)
    for name, info in nodes.items():
        if name not in reachable:
            issues.append((info.where, "unreachable: no edge from START leads to it"))
        elif not succ[name]:
            issues.append((info.where, "has no outgoing edge: add an edge to END or to another node"))
    bounded = {n for n, info in nodes.items() if info.max_visits}
    loop = find_loop(succ, bounded)
    if loop:
        hop = next((e.hops.get((loop[-2], loop[-1])) or e.where for e in edges
                    if loop[-2] in e.sources and loop[-1] in e.targets), "edges")
        issues.append((hop, f"the loop {' → '.join(loop)} has no bound: give one of its nodes max_visits (and "
                            "on_limit: where the flow goes once the visits are spent)"))
    pred: dict[str, set[str]] = {}
    for source, targets in succ.items():
        for target in targets:
            pred.setdefault(target, set()).add(source)
    given = set(given)
    for name, info in nodes.items():
        if name in reachable:
            upstream = (_closure([name], pred) - {name, START}) & reachable
            issues += _missing(info.where, "reads", info.reads, upstream, nodes, given, writers)
    for edge in edges:
        if edge.reads:
            upstream = (_closure(edge.sources, pred) | set(edge.sources)) - {START}
            issues += _missing(f"{edge.where}.when", f"condition {edge.condition!r} reads", edge.reads, upstream,
                               nodes, given, writers)
    if not any("answer" in info.writes for info in nodes.values()):
        issues.append(("nodes", "no node writes 'answer': end the graph with postprocess, vote, compose_answer or "
                                "pick_answer (or a subgraph such as vqa)"))
    return issues


def _missing(where: str, what: str, reads: Iterable[str], upstream: set[str], nodes: dict[str, NodeInfo],
             given: set[str], writers: dict[str, list[str]]) -> list[Issue]:
    available = given | {k for n in upstream for k in nodes[n].writes}
    issues = []
    for key in reads:
        if key not in available:
            hint = f"; nodes that write it: {', '.join(writers[key])}" if writers.get(key) else ""
            issues.append((where, f"{what} {key!r}, which no upstream node writes (upstream: "
                                  f"{', '.join(sorted(upstream)) or 'none'}; given: {', '.join(sorted(given))}){hint}"))
    return issues
