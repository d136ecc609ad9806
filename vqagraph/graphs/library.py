"""The node catalogue: every node and condition a graph spec (graphs/spec.py) or a user's own `StateGraph` can use.

Each entry says what its node reads (`reads`: an upstream node or the graph's inputs must write these;
`optional`: read when present), what it writes, its settings (a pydantic model: unknown fields and wrong types
are errors) and what it does. `entry.build(**settings)` returns the node, a `(state, runtime) -> update`
function ready for your own graph:

    from langgraph.graph import END, START, StateGraph
    from vqagraph.graphs import VQAContext, VQAState
    from vqagraph.graphs.library import NODES

    graph = StateGraph(VQAState, context_schema=VQAContext)
    graph.add_node("bridge", NODES["bridge"].build())
    graph.add_node("finish", NODES["postprocess"].build(max_words=3))
    graph.add_edge(START, "bridge"); graph.add_edge("bridge", "finish"); graph.add_edge("finish", END)
    engine = Engine.from_profile("tiny", graph=graph.compile())

Conditions (`CONDITIONS`) are what a conditional edge asks: `build(**settings)` returns `(state, runtime) ->
outcome`, and `outcomes` lists what it can answer (None: any text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from vqagraph.graphs import bridge_nodes, composed_nodes, nodes, projection_nodes
from vqagraph.graphs import vqa as vqa_graph
from vqagraph.graphs.composed_nodes import Condition, NoSettings, Settings, SubgraphSettings, subgraph_node
from vqagraph.graphs.nodes import Node
from vqagraph.graphs.registry import ROUTES
from vqagraph.graphs.routes import Route

# What `Engine.ask` puts into every graph's input state, and what every node may write (bookkeeping).
INPUTS = ("image_ref", "question", "route", "router_policy", "marks", "history")
BOOKKEEPING = ("path", "timings")


@dataclass(frozen=True)
class NodeEntry:
    name: str
    make: Callable[[Any], Node]  # validated settings → the node
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    optional: tuple[str, ...] = ()
    settings: type[Settings] = NoSettings
    doc: str = ""
    kind: Literal["node", "subgraph"] = "node"

    def build(self, **settings: Any) -> Node:
        """The node with these settings (a pydantic ValidationError when they do not fit `self.settings`)."""
        return self.make(self.settings.model_validate(settings))


@dataclass(frozen=True)
class ConditionEntry:
    name: str
    make: Callable[[Any], Condition]
    reads: tuple[str, ...]
    outcomes: tuple[str, ...] | None  # None: any text (e.g. a state value)
    settings: type[Settings] = NoSettings
    doc: str = ""

    def build(self, **settings: Any) -> Condition:
        return self.make(self.settings.model_validate(settings))


def _doc(fn: Any) -> str:
    return " ".join((fn.__doc__ or "").split())


def _fixed(fn: Any, reads: tuple[str, ...], doc: str = "") -> NodeEntry:
    """A built-in node without settings: required reads as given, its other READS optional."""
    return NodeEntry(fn.NAME, lambda _settings: fn, reads, tuple(fn.WRITES),
                     tuple(k for k in fn.READS if k not in reads), doc=doc or _doc(fn))


def _made(factory: Callable[[Any], Node], settings: type[Settings], reads: tuple[str, ...]) -> NodeEntry:
    """A node made from settings; its READS/WRITES are read off the node built with the default settings."""
    fn: Any = factory(settings())
    return NodeEntry(fn.NAME, factory, reads, tuple(fn.WRITES), tuple(k for k in fn.READS if k not in reads),
                     settings, _doc(fn))


def _fields(keys: Iterable[str]) -> list[str]:
    """State keys as nodes declare them: a nested record (graphs/registry.py `records`) as its "record.field"s."""
    records = ROUTES.records()
    return [name for k in keys for name in ([f"{k}.{f}" for f in records[k].__annotations__] if k in records else [k])]


def _route(route: Route) -> NodeEntry:
    """A registered route as one subgraph node."""
    writes = tuple(_fields(k for k in route.output_schema().__annotations__ if k not in BOOKKEEPING))
    chain = " → ".join(fn.NAME for fn in route.nodes)  # type: ignore[attr-defined]
    return NodeEntry(route.name, lambda s: subgraph_node(route.subgraph(ROUTES.state_schema()), route.name, s),
                     ("image_ref", "question"), writes, route.optional_reads, SubgraphSettings,
                     f"The whole {route.title} as a subgraph: {chain}; files route_answers.{route.name}.", "subgraph")


_VQA_PARTS = (nodes.render_marks, nodes.resolve_followup, vqa_graph.route_question, vqa_graph.pick)


def _vqa() -> NodeEntry:
    writes = tuple(dict.fromkeys([k for fn in _VQA_PARTS for k in fn.WRITES]
                                 + [k for route in ROUTES for k in _route(route).writes]))
    return NodeEntry("vqa", lambda s: subgraph_node(vqa_graph.build_graph(), "vqa", s), ("image_ref", "question"),
                     writes, ("route", "router_policy", "marks", "history"), SubgraphSettings,
                     "The whole built-in VQA graph (marks, router, the chosen route(s), pick_answer) as a subgraph.",
                     "subgraph")


_ENTRIES = [
    _made(composed_nodes.make_intake, composed_nodes.IntakeSettings, ("image_ref", "question")),
    _fixed(nodes.render_marks, ("image_ref", "question")),
    _fixed(nodes.resolve_followup, ("question",)),
    _fixed(vqa_graph.route_question, ("question",),
           "The router: img2llm, bridge, projection or both for this question, and why (the profile's policy, or "
           "`router_policy`, for route auto). Branch on it with the condition `chosen_route`."),
    _fixed(composed_nodes.gradcam, ("image_ref", "question")),
    _fixed(nodes.region_captions, ("image_ref", "question"),
           "Text route: GradCAM-guided patch sampling, batched BLIP captions, ITM filter (Img2LLM §1.1-1.3)."),
    _fixed(nodes.question_generation, ("img2llm.captions",),
           "Text route: answer candidates from the captions, one synthetic question each (Img2LLM §1.4-1.5)."),
    _fixed(nodes.img2llm_prompt, ("question", "img2llm.captions", "img2llm.candidates", "img2llm.answer_captions",
                                  "img2llm.exemplars"),
           "Text route: the Img2LLM prompt (captions + QA exemplars + question) within the LLM's context."),
    _fixed(nodes.llm_answer, ("img2llm.prompt",),
           "Text route: the frozen LLM answers the prompt (greedy); files route_answers.img2llm."),
    _fixed(bridge_nodes.qformer_encode, ("image_ref", "question"),
           "Embedding route: the Q-Former's soft prompt for the image, checked against the LLM's width."),
    _fixed(bridge_nodes.bridge_prompt, ("question",), "Embedding route: the text after the soft prompt."),
    _fixed(bridge_nodes.bridge_answer, ("image_ref", "question", "bridge.prompt")),
    _fixed(projection_nodes.projection_encode, ("image_ref",),
           "Projection route: the projector's image tokens for the image, checked against the LLM's width."),
    _fixed(projection_nodes.projection_prompt, ("question",),
           "Projection route: LLaVA's prompt, with the image placeholder where the image tokens go."),
    _fixed(projection_nodes.projection_answer, ("image_ref", "projection.prompt")),
    _fixed(vqa_graph.pick, ("chosen_route", "route_answers", "route_reason"),
           "The main graph's last step: keep the chosen route's answer (cascade and both: the surer one)."),
    _made(composed_nodes.make_mark_gradcam_peak, composed_nodes.PeakMarkSettings,
          ("image_ref", "question", "img2llm.gradcam", "img2llm.grid")),
    _made(composed_nodes.make_postprocess, composed_nodes.PostprocessSettings, ("route_answers",)),
    _made(composed_nodes.make_vote, composed_nodes.VoteSettings, ("route_answers",)),
    _made(composed_nodes.make_decompose_question, composed_nodes.DecomposeSettings, ("question",)),
    _made(composed_nodes.make_ask_subquestions, composed_nodes.SubquestionSettings, ("image_ref", "sub_questions")),
    _made(composed_nodes.make_compose_answer, composed_nodes.ComposeSettings, ("question", "sub_answers")),
]


class _Catalogue(Mapping[str, NodeEntry]):
    """The fixed nodes, then each registered route as a subgraph node, then the whole VQA graph: built again only
    when the registry's routes change, so a route registered after import is in the catalogue too."""

    def __init__(self) -> None:
        self._built: tuple[tuple[Route, ...], dict[str, NodeEntry]] | None = None

    def _entries(self) -> dict[str, NodeEntry]:
        routes = tuple(ROUTES)
        if self._built is None or self._built[0] != routes:
            self._built = (routes, {e.name: e for e in [*_ENTRIES, *(_route(r) for r in routes), _vqa()]})
        return self._built[1]

    def __getitem__(self, name: str) -> NodeEntry:
        return self._entries()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


NODES: Mapping[str, NodeEntry] = _Catalogue()


CONDITIONS: dict[str, ConditionEntry] = {
    "chosen_route": ConditionEntry("chosen_route", lambda _s: composed_nodes.chosen_route, ("chosen_route",),
                                   None, doc=_doc(composed_nodes.chosen_route) + " (a registered route's name, or "
                                   "both)"),
    "confidence": ConditionEntry(
        "confidence", composed_nodes.make_confidence, ("route_answers",), ("low", "high"),
        composed_nodes.ConfidenceSettings, "low when a route's answer has a mean token log-prob below `below`"),
    "has_marks": ConditionEntry("has_marks", lambda _s: composed_nodes.has_marks, ("marks",), ("true", "false"),
                                doc=_doc(composed_nodes.has_marks)),
    "state_value": ConditionEntry("state_value", composed_nodes.make_state_value, (), None,
                                  composed_nodes.StateValueSettings, "the value of the state key `key`, as text"),
}


def describe() -> str:
    """The catalogue as text: one block per node and condition (`vqagraph graph nodes`)."""
    lines = []
    for entry in NODES.values():
        fields = ", ".join(f"{k}: {_type(f.annotation)} = {f.get_default(call_default_factory=True)!r}"
                           if not f.is_required() else k for k, f in entry.settings.model_fields.items())
        lines += [f"{entry.name}{' (subgraph)' if entry.kind == 'subgraph' else ''}: {entry.doc}",
                  f"    reads: {', '.join(entry.reads) or '-'}"
                  + (f"   optional: {', '.join(entry.optional)}" if entry.optional else ""),
                  f"    writes: {', '.join(entry.writes)}"]
        if fields:
            lines.append(f"    settings: {fields}")
    for cond in CONDITIONS.values():
        outcomes = ", ".join(cond.outcomes) if cond.outcomes else "any text"
        lines.append(f"condition {cond.name}: {cond.doc}   outcomes: {outcomes}")
    return "\n".join(lines)


def _type(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
