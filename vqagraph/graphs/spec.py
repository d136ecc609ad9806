"""Declarative graphs: a YAML or JSON spec, validated, compiled into a LangGraph graph over `VQAState`.

    name: look-twice
    nodes:                                   # name: {use: catalogue node | package.module:function,
      first: {use: bridge}                   #        or graph: other-spec.yaml; settings; max_visits; on_limit}
      peak: {use: gradcam}
      mark: {use: mark_gradcam_peak, settings: {radius: 1}}
      second: {use: bridge, settings: {answer_as: bridge_marked}}
      finish: {use: postprocess, settings: {prefer: [bridge_marked, bridge]}}
    edges:
      - START -> first                       # a chain of plain edges
      - from: first                          # a conditional edge: a condition's outcome picks the target(s)
        when: {use: confidence, settings: {route: bridge, below: -1.0}}
        cases: {low: peak, high: finish}     # a list of targets runs them in parallel
      - peak -> mark -> second -> finish -> END
      # {from: [a, b], to: c} waits for both a and b (a join); {from: a, to: [b, c]} fans out

A node in a loop must bound its visits (`max_visits: 2`); past the bound the flow goes to its `on_limit`
(default END). Every node appends its name to the state's `path` (`node/inner` for a subgraph's steps).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import itertools
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vqagraph.errors import VQAGraphError
from vqagraph.graphs import spec_validate
from vqagraph.graphs.composed_nodes import NoSettings, SubgraphSettings, subgraph_node
from vqagraph.graphs.library import BOOKKEEPING, CONDITIONS, INPUTS, NODES, ConditionEntry, NodeEntry
from vqagraph.graphs.spec_assemble import Branch, Built, assemble
from vqagraph.graphs.spec_validate import EdgeInfo, Issue, NodeInfo

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class GraphSpecError(VQAGraphError):
    """A graph spec is malformed or wired wrongly; the message names each spec location and the cause."""

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("; ".join(f"{source}: {where}: {cause}" for where, cause in issues))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class UseSpec(_Strict):
    use: str
    settings: dict[str, Any] = Field(default_factory=dict)


class NodeSpec(_Strict):
    use: str | None = Field(None, description="a catalogue node, or a dotted import path (package.module:function)")
    graph: str | None = Field(None, description="another spec file, relative to this one, as a subgraph")
    settings: dict[str, Any] = Field(default_factory=dict)
    max_visits: int | None = Field(None, ge=1, description="a bound for a node in a loop")
    on_limit: str = Field("END", description="where the flow goes instead of a visit past max_visits")
    description: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> NodeSpec:
        if (self.use is None) == (self.graph is None):
            raise ValueError("give exactly one of `use` (a node) or `graph` (a spec file)")
        return self


Targets = str | list[str]


class EdgeSpec(_Strict):
    source: Targets = Field(alias="from")
    to: Targets | None = None
    when: UseSpec | None = None
    cases: dict[str, Targets] = Field(default_factory=dict)
    default: Targets | None = None

    @field_validator("cases", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:  # YAML reads `true:`/`yes:` as booleans
        if isinstance(value, dict):
            return {(str(k).lower() if isinstance(k, bool) else k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> EdgeSpec:
        if self.when is None:
            if self.to is None or self.cases or self.default is not None:
                raise ValueError("a plain edge takes `to`; a conditional edge takes `when` with `cases`/`default`")
        elif self.to is not None or not (self.cases or self.default is not None) or isinstance(self.source, list):
            raise ValueError("a conditional edge takes one `from`, `when`, and `cases` and/or `default`, no `to`")
        return self


class GraphSpec(_Strict):
    name: str = "custom"
    description: str = ""
    nodes: dict[str, Any]
    edges: list[Any]


def _as_list(targets: Targets | None) -> list[str]:
    return [] if targets is None else [targets] if isinstance(targets, str) else list(targets)


def _pydantic_issues(exc: ValidationError, prefix: str) -> list[Issue]:
    return [(".".join([prefix, *(str(p) for p in e["loc"])]).strip("."), e["msg"].removeprefix("Value error, "))
            for e in exc.errors()]


def read_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GraphSpecError(str(path), [("file", f"cannot be read: {exc.strerror or exc}")]) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise GraphSpecError(str(path), [("file", f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                                                  + " ".join(str(exc).split()))]) from None
    if not isinstance(data, dict):
        raise GraphSpecError(str(path), [("file", "a graph spec is a mapping with `nodes` and `edges`")])
    return data


def _import(path: str, base: Path) -> Any:
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    sys.path.insert(0, str(base))  # a user's nodes may sit next to the spec file
    try:
        return getattr(importlib.import_module(module), attr)
    finally:
        sys.path.remove(str(base))


def _takes_runtime(fn: Any) -> bool:
    try:
        return len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        return True


def _user_node(path: str, fn: Any, where: str, settings: dict[str, Any], issues: list[Issue]) -> NodeEntry | None:
    if isinstance(fn, NodeEntry):
        return fn
    if not callable(fn) or not hasattr(fn, "READS") or not hasattr(fn, "WRITES"):
        issues.append((f"{where}.use", f"user node {path!r} declares no READS/WRITES: decorate it with "
                                       "vqagraph.graphs.nodes.node(name, reads=..., writes=...)"))
        return None
    if settings:
        issues.append((f"{where}.settings", f"user node {path!r} takes no settings (export a "
                                            "vqagraph.graphs.library.NodeEntry to take settings)"))
    call = fn if _takes_runtime(fn) else (lambda state, runtime: fn(state))
    return NodeEntry(path, lambda _s: call, tuple(fn.READS), tuple(fn.WRITES),
                     tuple(getattr(fn, "OPTIONAL_READS", ())), doc=fn.__doc__ or "")


def _unknown(kind: str, name: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return (f"unknown {kind} {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; built-in: {', '.join(known)}; or a dotted import path, package.module:function")


def _resolve(use: str, where: str, base: Path, issues: list[Issue], table: Mapping[str, Any], kind: str) -> Any:
    if use in table:
        return table[use]
    if "." not in use and ":" not in use:
        issues.append((f"{where}.use", _unknown(kind, use, table)))
        return None
    try:
        return _import(use, base)
    except (ImportError, AttributeError, ValueError) as exc:
        issues.append((f"{where}.use", f"cannot import {kind} {use!r}: {exc}"))
        return None


def _node(name: str, raw: Any, base: Path, stack: tuple[Path, ...], issues: list[Issue]) -> Built | None:
    where = f"nodes.{name}"
    try:
        spec = NodeSpec.model_validate(raw)
    except ValidationError as exc:
        issues += _pydantic_issues(exc, where)
        return None
    if spec.graph is not None:
        try:
            sub = compile_file(base / spec.graph, _stack=stack)
        except GraphSpecError as exc:
            issues.append((f"{where}.graph", str(exc)))
            return None
        writes = tuple(dict.fromkeys(k for b in sub.nodes.values() for k in b.entry.writes))
        reads = tuple(dict.fromkeys(k for b in sub.nodes.values() for k in b.entry.reads if k in INPUTS))
        entry = NodeEntry(spec.graph, lambda s: subgraph_node(sub.graph, name, s), reads, writes,
                          settings=SubgraphSettings, kind="subgraph")
    else:
        found = _resolve(spec.use or "", where, base, issues, NODES, "node")
        resolved = found if isinstance(found, NodeEntry) or found is None else _user_node(
            spec.use or "", found, where, spec.settings, issues)
        if resolved is None:
            return None
        entry = resolved
    try:
        return Built(entry, entry.settings.model_validate(spec.settings), spec)
    except ValidationError as exc:
        issues += _pydantic_issues(exc, f"{where}.settings")
        return None


def _condition(use: UseSpec, where: str, base: Path, issues: list[Issue]) -> tuple[Any, ConditionEntry | None]:
    found = _resolve(use.use, where, base, issues, CONDITIONS, "condition")
    if found is None:
        return None, None
    if not isinstance(found, ConditionEntry):
        if not callable(found):
            issues.append((f"{where}.use", f"{use.use!r} is not callable"))
            return None, None
        call = found if _takes_runtime(found) else (lambda state, runtime, fn=found: fn(state))
        found = ConditionEntry(use.use, lambda _s: call, tuple(getattr(found, "READS", ())),
                               getattr(found, "OUTCOMES", None))
    try:
        return found.make(found.settings.model_validate(use.settings)), found
    except ValidationError as exc:
        issues += _pydantic_issues(exc, f"{where}.settings")
        return None, None


def _edges(raw_edges: list[Any], base: Path, issues: list[Issue]) -> list[Branch]:
    branches: list[Branch] = []
    for index, raw in enumerate(raw_edges):
        where = f"edges[{index}]"
        if isinstance(raw, str):
            hops = [h.strip() for h in raw.split("->")]
            if len(hops) < 2 or not all(hops):
                issues.append((where, f"{raw!r}: a chain is 'a -> b -> c'"))
            branches += [Branch(where, [a], [b]) for a, b in itertools.pairwise(hops)]
            continue
        try:
            edge = EdgeSpec.model_validate(raw)
        except ValidationError as exc:
            issues += _pydantic_issues(exc, where)
            continue
        if edge.when is None:
            branches.append(Branch(where, _as_list(edge.source), _as_list(edge.to)))
            continue
        condition, entry = _condition(edge.when, f"{where}.when", base, issues)
        cases = {k: _as_list(v) for k, v in edge.cases.items()}
        default = _as_list(edge.default) if edge.default is not None else None
        targets = [t for ts in [*cases.values(), default or []] for t in ts]
        branches.append(Branch(where, _as_list(edge.source), targets, condition, entry, cases, default))
        if entry is not None and entry.outcomes is not None:
            for outcome in cases:
                if outcome not in entry.outcomes:
                    issues.append((f"{where}.cases.{outcome}", f"condition {entry.name!r} never answers "
                                                               f"{outcome!r}; it answers {', '.join(entry.outcomes)}"))
            uncovered = [o for o in entry.outcomes if o not in cases]
            if uncovered and default is None:
                issues.append((f"{where}.cases", f"no target for {', '.join(map(repr, uncovered))}: add them to "
                                                 "cases or give a default"))
    return branches


@dataclass
class Compiled:
    """A checked spec: the compiled graph, its resolved nodes and edges."""

    source: str
    spec: GraphSpec
    nodes: dict[str, Built]
    branches: list[Branch]
    graph: Any


def compile_spec(data: dict[str, Any], source: str = "<spec>", base: str | Path = ".",
                 _stack: tuple[Path, ...] = ()) -> Compiled:
    """Validate a spec (a mapping, as read from YAML/JSON) and compile it; a GraphSpecError lists every issue."""
    base = Path(base)
    try:
        spec = GraphSpec.model_validate(data)
    except ValidationError as exc:
        raise GraphSpecError(source, _pydantic_issues(exc, "")) from None
    issues: list[Issue] = []
    built: dict[str, Built] = {}
    for name, raw in spec.nodes.items():
        if not NAME.match(name) or name in ("START", "END"):
            issues.append((f"nodes.{name}", f"the node name {name!r} is reserved or not a plain name (letters, "
                                            "digits, _ and -, not START or END); rename the node"))
        elif (node := _node(name, raw, base, _stack, issues)) is not None:
            built[name] = node
    branches = _edges(spec.edges, base, issues)
    if issues or len(built) < len(spec.nodes):
        raise GraphSpecError(source, issues)
    _check_names(built, branches, issues)
    if not issues:
        infos = {n: NodeInfo(f"nodes.{n}", b.entry.reads, b.entry.writes, b.spec.max_visits, b.spec.on_limit)
                 for n, b in built.items()}
        edges = [EdgeInfo(b.where, b.sources, b.targets, b.condition_entry.reads if b.condition_entry else (),
                          b.condition_entry.name if b.condition_entry else "") for b in branches]
        writers: dict[str, list[str]] = {}
        for entry in NODES.values():
            for key in entry.writes:
                writers.setdefault(key, []).append(entry.name)
        issues += spec_validate.check_graph(infos, edges, [*INPUTS, *BOOKKEEPING], writers)
    if issues:
        raise GraphSpecError(source, issues)
    return Compiled(source, spec, built, branches, assemble(spec.name, built, branches))


def _check_names(built: dict[str, Built], branches: list[Branch], issues: list[Issue]) -> None:
    known = set(built)
    for branch in branches:
        for source in branch.sources:
            if source not in known and source != "START":
                issues.append((branch.where, f"no node named {source!r} to start from" + _close(source, known)))
        for target in branch.targets:
            if target not in known and target != "END":
                issues.append((branch.where, f"no node named {target!r} to go to" + _close(target, known)))
        if len(branch.sources) > 1 and any(built[t].spec.max_visits for t in branch.targets if t in built):
            issues.append((branch.where, "a join's target cannot have max_visits"))
    for name, node in built.items():
        if node.spec.on_limit not in known | {"END"}:
            issues.append((f"nodes.{name}.on_limit", f"no node named {node.spec.on_limit!r}"))


def _close(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def compile_file(path: str | Path, _stack: tuple[Path, ...] = ()) -> Compiled:
    path = Path(path).resolve()
    if path in _stack:
        chain = " → ".join(p.name for p in (*_stack, path))
        raise GraphSpecError(str(path), [("graph", f"spec files include each other: {chain}")])
    return compile_spec(read_spec(path), str(path), path.parent, (*_stack, path))


def load_graph(path: str | Path) -> Any:
    """The compiled graph of a spec file, for `Engine(profile, graph=...)` and `vqagraph ask --graph FILE`."""
    return compile_file(path).graph


__all__ = ["Compiled", "GraphSpec", "GraphSpecError", "NoSettings", "compile_file", "compile_spec", "load_graph"]
