"""General nodes for graphs users compose (graphs/library.py lists every node; graphs/spec.py wires them).

Each node here is made by a factory, `make_<name>(settings) -> node`: the settings are a pydantic model (a
spec's `settings:` block is checked against it) and the node is a plain `(state, runtime) -> update` function
that declares READS and WRITES, like the built-in nodes of graphs/nodes.py. Conditions (what a conditional
edge asks of the state) are made the same way and return an outcome string.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from vqagraph.answer import RouteAnswer
from vqagraph.errors import VQAGraphError
from vqagraph.graphs.nodes import Node, generation_params, node, route_answer
from vqagraph.graphs.registry import RequestedRoute
from vqagraph.graphs.router import pick_answer
from vqagraph.graphs.state import VQAContext, VQAState
from vqagraph.tools.llm.base import GenerationParams
from vqagraph.tools.llm.postprocess import postprocess_answer

Condition = Callable[[VQAState, Runtime[VQAContext]], str]


class GraphRunError(VQAGraphError):
    """A composed graph reached a node whose inputs are missing at run time (e.g. no route answered yet)."""


class Settings(BaseModel):
    """Base of every node's settings: unknown fields are errors, so a typo in a spec never passes silently."""

    model_config = ConfigDict(extra="forbid")


class NoSettings(Settings):
    """This node takes no settings."""


def _question(state: VQAState) -> str:
    """What the vision tools read: a follow-up made standalone, else the question."""
    return state.get("standalone_question") or state["question"]


# --- subgraphs -------------------------------------------------------------------------------------------------

def run_subgraph(graph: Any, inputs: dict[str, Any], context: VQAContext) -> tuple[dict[str, Any], list[str]]:
    """Run a compiled graph to its end; its final state and the nodes it ran, in order ("a/b" for nested)."""
    final: dict[str, Any] = {}
    steps: list[str] = []
    for mode, chunk in graph.stream(inputs, context=context, stream_mode=["updates", "values"]):
        if mode == "values":
            final = chunk
        else:
            steps.extend(name for name in chunk if not name.startswith("__"))
    return final, list(final.get("path") or steps)


class SubgraphSettings(Settings):
    answer_as: str | None = Field(
        None, description="file the subgraph's answer under this name in route_answers, beside earlier ones")


def subgraph_node(graph: Any, name: str, settings: SubgraphSettings) -> Node:
    """A compiled graph as a node: it sees the state, and only what it changed comes back (so subgraphs run
    side by side without clashing); `path` lists the subgraph's own steps."""

    def run(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        hidden = ("path", "route_answers") if settings.answer_as else ("path",)
        inputs = {k: v for k, v in state.items() if k not in hidden}
        final, steps = run_subgraph(graph, inputs, runtime.context)
        update = {k: v for k, v in final.items() if k != "path" and state.get(k) != v}  # type: ignore[misc]
        if settings.answer_as:
            # The subgraph started with no route answers: what it filed is its own, renamed.
            filed = update.pop("route_answers", None) or {}
            which = final.get("answered_by") if final.get("answered_by") in filed else next(reversed(filed), None)
            if which is not None:
                update["route_answers"] = {settings.answer_as: filed[which]}
            if "answered_by" in update:
                update["answered_by"] = settings.answer_as
        update["path"] = steps
        return update

    run.__name__ = name
    return run


# --- intake, GradCAM, a mark on its peak ---------------------------------------------------------------------

class IntakeSettings(Settings):
    max_question_chars: int | None = Field(None, ge=1, description="default: the profile's limit")


def make_intake(settings: IntakeSettings) -> Node:
    @node("intake", reads=("image_ref", "question"), writes=("image_ref", "question"))
    def intake(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        """`image_ref` may be an image path (taken in, checked, stored) or a stored reference; the question is
        checked (not empty, within the limit) and its whitespace tidied."""
        from vqagraph.media import load_image
        from vqagraph.request import validate_question

        tools = runtime.context.tools
        limits = tools.profile.limits
        ref = state.get("image_ref") or ""
        if ref.startswith("sha256:"):
            tools.images.get(ref)  # an ImageError when the store does not hold it
        else:
            ref = tools.images.add(load_image(ref, max_pixels=limits.max_image_pixels))
        most = settings.max_question_chars or limits.max_question_chars
        question = validate_question(state.get("question", ""), most)
        return {"image_ref": str(ref), "question": question}

    return intake


@node("gradcam", reads=("image_ref", "question", "standalone_question"), writes=("img2llm.gradcam", "img2llm.grid"))
def gradcam(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
    """The question's GradCAM over the image's patches (ITM model), alone: no captions."""
    from vqagraph.tools.gradcam import patch_grid

    tools = runtime.context.tools
    image = tools.images.get(state["image_ref"])
    probs, _embeds, _fresh = tools.region_captioner.gradcam(state["image_ref"], image, _question(state))
    return {"img2llm": {"gradcam": [round(v, 6) for v in probs.tolist()], "grid": list(patch_grid(probs.shape[0]))}}


def peak_box(cam: list[float], grid: list[int], size: tuple[int, int], radius: int) -> tuple[tuple[int, int],
                                                                                            tuple[int, int, int, int]]:
    """The GradCAM peak's cell (row, col) and the pixel box of the cells within `radius` of it; a cell covers
    W/cols by H/rows pixels of the original image (BLIP resizes the whole image to its square input)."""
    rows, cols = grid
    if len(cam) != rows * cols or not cam:
        raise GraphRunError(f"mark_gradcam_peak: gradcam has {len(cam)} values but the grid is {rows}x{cols}")
    peak = max(range(len(cam)), key=cam.__getitem__)  # the first of equal maxima
    row, col = divmod(peak, cols)
    r0, r1 = max(0, row - radius), min(rows - 1, row + radius)
    c0, c1 = max(0, col - radius), min(cols - 1, col + radius)
    width, height = size
    box = (math.floor(c0 * width / cols), math.floor(r0 * height / rows),
           min(width, math.ceil((c1 + 1) * width / cols)), min(height, math.ceil((r1 + 1) * height / rows)))
    return (row, col), box


def refer_with_phrase(question: str, phrase: str) -> str:
    """"this"/"here" become the mark's phrase; a question without them gets the phrase before its "?"."""
    from vqagraph.tools.referring import refer_to_mark

    rewritten, changed = refer_to_mark(question, [phrase])
    if changed or phrase.lower() in question.lower():
        return rewritten
    return f"{question.rstrip().rstrip('?').rstrip()} {phrase}?"


class PeakMarkSettings(Settings):
    radius: int = Field(1, ge=0, le=8, description="grid cells around the peak inside the mark (0: the peak alone)")
    shape: Literal["rectangle", "ellipse"] = "rectangle"
    colour: str = "red"
    route: str = Field("bridge", description="the route whose answer is recorded as the first attempt")
    rewrite: bool = Field(True, description="name the mark in the question (its phrase replaces 'this', or is added)")


def make_mark_gradcam_peak(settings: PeakMarkSettings) -> Node:
    @node("mark_gradcam_peak", reads=("image_ref", "question", "img2llm.gradcam", "img2llm.grid", "route_answers"),
          writes=("image_ref", "question", "visual_prompt.original_image_ref", "visual_prompt.original_question",
                  "visual_prompt.phrases", "visual_prompt.boxes", "look_twice"))
    def mark_gradcam_peak(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        """Draw a mark around the GradCAM peak and point the question at it, to ask a second time."""
        from vqagraph.tools.visual_prompt import Mark, render_marks

        tools = runtime.context.tools
        image = tools.images.get(state["image_ref"])
        cell, box = peak_box(state["img2llm"]["gradcam"], state["img2llm"]["grid"], image.size, settings.radius)
        mark = Mark.create(shape=settings.shape, box=box, colour=settings.colour)
        drawn, (rendered,) = render_marks(image, [mark], seed=tools.profile.img2llm.seed)
        question = state["question"]
        asked = refer_with_phrase(question, rendered.phrase) if settings.rewrite else question
        first = (state.get("route_answers") or {}).get(settings.route)
        drawn_before = state.get("visual_prompt", {})
        return {
            "image_ref": tools.images.add(drawn),
            "question": asked,
            "visual_prompt": {
                "original_image_ref": drawn_before.get("original_image_ref") or state["image_ref"],
                "original_question": drawn_before.get("original_question") or question,
                "phrases": [*drawn_before.get("phrases", []), rendered.phrase],
                "boxes": [*drawn_before.get("boxes", []), list(rendered.box)],
            },
            "look_twice": {
                "peak_cell": list(cell), "box": list(rendered.box), "phrase": rendered.phrase, "question": asked,
                "first_route": settings.route, "first_answer": first["answer"] if first else "",
                "first_mean_logprob": first["mean_logprob"] if first else None,
            },
        }

    return mark_gradcam_peak


# --- one answer from several -----------------------------------------------------------------------------------

def _answers(state: VQAState, who: str) -> dict[str, RouteAnswer]:
    answers = state.get("route_answers") or {}
    if not answers:
        raise GraphRunError(f"{who}: no route has answered yet (route_answers is empty); put a route before it")
    return answers


def _kept(state: VQAState, answers: dict[str, RouteAnswer], chosen: str, note: str, answer: str) -> dict[str, Any]:
    reason = state.get("route_reason")
    return {
        "answer": answer,
        "raw_answer": answers[chosen]["raw_answer"],
        "token_logprobs": answers[chosen]["token_logprobs"],
        "answered_by": chosen,
        "route_reason": f"{reason}; {note}" if reason else note,
    }


class PostprocessSettings(Settings):
    prefer: list[str] = Field(default_factory=list, description="routes by preference: the first that answered "
                              "is kept; with none listed or none answered, the most confident (mean log-prob)")
    max_words: int | None = Field(None, ge=1, description="cut the answer to this many words")


def make_postprocess(settings: PostprocessSettings) -> Node:
    @node("postprocess", reads=("route_answers", "route_reason"),
          writes=("answer", "raw_answer", "token_logprobs", "answered_by", "route_reason"))
    def postprocess(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        """Keep one route's answer and post-process it (docs/methods.md §1.7: cut, lower-case, strip filler)."""
        answers = _answers(state, "postprocess")
        chosen = next((r for r in settings.prefer if r in answers), None)
        if chosen is not None:
            note = f"postprocess: kept {chosen} (first answered of {', '.join(settings.prefer)})"
        else:
            chosen, picked = pick_answer(answers)
            note = f"postprocess: {picked}"
        answer = postprocess_answer(answers[chosen]["raw_answer"])
        if settings.max_words:
            answer = " ".join(answer.split()[: settings.max_words])
        return _kept(state, answers, chosen, note, answer)

    return postprocess


class VoteSettings(Settings):
    routes: list[str] = Field(default_factory=list, description="the voters; empty: every route that answered")
    weights: dict[str, float] = Field(default_factory=dict, description="a route's vote weight (default 1)")


def tally(answers: dict[str, RouteAnswer], routes: list[str], weights: dict[str, float]) -> tuple[str, str]:
    """The route whose answer won the (weighted) vote; ties go to the higher mean log-prob. And the note."""
    voters = [r for r in (routes or sorted(answers)) if r in answers]
    if not voters:
        raise GraphRunError(f"vote: none of the voters {routes} answered (route_answers has {sorted(answers)})")
    score: dict[str, float] = {}
    for route in voters:
        score[answers[route]["answer"]] = score.get(answers[route]["answer"], 0.0) + weights.get(route, 1.0)
    top = max(score.values())
    tied = [a for a, s in score.items() if s == top]
    best = max((r for r in voters if answers[r]["answer"] in tied), key=lambda r: answers[r]["mean_logprob"])
    won = answers[best]["answer"]
    note = f"vote: {won!r} has {top:g} of {sum(score.values()):g} votes"
    return best, note + (f" (a {len(tied)}-way tie, broken by mean log-prob)" if len(tied) > 1 else "")


def make_vote(settings: VoteSettings) -> Node:
    @node("vote", reads=("route_answers", "route_reason"),
          writes=("answer", "raw_answer", "token_logprobs", "answered_by", "route_reason", "votes"))
    def vote(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        """The routes vote with their answers; the most votes win, then the most confident route."""
        answers = _answers(state, "vote")
        chosen, note = tally(answers, settings.routes, settings.weights)
        voters = [r for r in (settings.routes or sorted(answers)) if r in answers]
        return {**_kept(state, answers, chosen, note, answers[chosen]["answer"]),
                "votes": {r: answers[r]["answer"] for r in voters}}

    return vote


# --- decompose a compound question -----------------------------------------------------------------------------

QUESTION_WORDS = (r"what|which|who|whom|whose|where|when|why|how|is|are|was|were|does|do|did|can|could|has|have|"
                  r"will|would|should")
_STARTS_QUESTION = re.compile(rf"^({QUESTION_WORDS})\b", re.IGNORECASE)
_JOIN = re.compile(rf"\s*(?:,\s*and|,|;|\band|\balso)\s+(?=(?:{QUESTION_WORDS})\b)", re.IGNORECASE)
_STOP = {"the", "a", "an", "is", "are", "of", "in", "on", "there", "this", "that", "and", "to", "it", "its"}
DECOMPOSE_PROMPT = (
    "Split the question into simple questions, one per line.\n"
    "Question: What colour is the car and where is the dog?\n"
    "What colour is the car?\nWhere is the dog?\n\n"
    "Question: {question}\n"
)


def split_question(question: str) -> list[str]:
    """Rules: split at "?" and at "and"/","/";" followed by a question word; each part a question again."""
    parts: list[str] = []
    for chunk in re.split(r"\?+", question):
        parts.extend(p.strip(" ,;") for p in _JOIN.split(chunk.strip(" ,;")) if p.strip(" ,;"))
    return [p[0].upper() + p[1:] + "?" for p in parts]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP}


def llm_sub_questions(text: str, question: str, max_parts: int) -> list[str]:
    """The LLM's sub-questions when usable: questions made of the question's own words; else []."""
    vocabulary = _words(question)
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip(" -*\t0123456789.)")
        if line.endswith("?") and _STARTS_QUESTION.match(line) and _words(line) <= vocabulary and line not in found:
            found.append(line)
    return found if 1 <= len(found) <= max_parts else []


class DecomposeSettings(Settings):
    max_parts: int = Field(4, ge=1, le=8, description="at most this many sub-questions")
    use_llm: bool = Field(True, description="ask the LLM to split first; the rules split when its output is unusable")
    max_new_tokens: int = Field(48, ge=8, le=256)


def make_decompose_question(settings: DecomposeSettings) -> Node:
    @node("decompose_question", reads=("question",), writes=("sub_questions", "decomposition"))
    def decompose_question(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        """A compound question → simple sub-questions (the LLM, greedy; rules when its output is unusable)."""
        question = state["question"]
        text, parts = "", []
        if settings.use_llm:
            params = GenerationParams(max_new_tokens=settings.max_new_tokens, min_new_tokens=1)  # one line a part
            (generation,) = runtime.context.tools.llm.generate([DECOMPOSE_PROMPT.format(question=question)], params)
            text = generation.text
            parts = llm_sub_questions(text, question, settings.max_parts)
        source = "llm"
        if not parts:
            parts = split_question(question)[: settings.max_parts] or [question]
            source = "rules" if len(parts) > 1 else "whole"
        return {"sub_questions": parts, "decomposition": {"source": source, "llm_output": text}}

    return decompose_question


@lru_cache(maxsize=1)
def _vqa_graph() -> Any:
    from vqagraph.graphs.vqa import build_graph

    return build_graph()


class SubquestionSettings(Settings):
    route: RequestedRoute = "auto"
    router_policy: Literal["", "rules", "cascade", "both"] = Field("", description="empty: the profile's")


def make_ask_subquestions(settings: SubquestionSettings) -> Node:
    @node("ask_subquestions", reads=("image_ref", "sub_questions"), writes=("sub_answers", "route_answers"))
    def ask_subquestions(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        """Each sub-question through the whole VQA graph (as a subgraph, same tools), on the same image; each
        answer is also filed in route_answers as q1, q2, …"""
        answers: list[dict[str, Any]] = []
        filed: dict[str, RouteAnswer] = {}
        for index, question in enumerate(state["sub_questions"], 1):
            inputs = {"image_ref": state["image_ref"], "question": question, "route": settings.route,
                      "router_policy": settings.router_policy, "marks": []}
            final, steps = run_subgraph(_vqa_graph(), inputs, runtime.context)
            kept = final["route_answers"][final["answered_by"]]
            filed[f"q{index}"] = kept
            answers.append({"question": question, "answer": final["answer"], "answered_by": final["answered_by"],
                            "mean_logprob": kept["mean_logprob"], "route_reason": final["route_reason"],
                            "path": steps})
        return {"sub_answers": answers, "route_answers": filed}

    return ask_subquestions


COMPOSE_PROMPT = "Question: {question}\n{facts}\nAnswer the question in one short sentence:"


class ComposeSettings(Settings):
    joiner: str = Field("; ", description="between the sub-answers")
    use_llm: bool = Field(False, description="let the LLM write the answer from the sub-answers (else: join them)")
    max_new_tokens: int = Field(24, ge=1, le=256)


def make_compose_answer(settings: ComposeSettings) -> Node:
    @node("compose_answer", reads=("question", "sub_answers"),
          writes=("answer", "raw_answer", "token_logprobs", "answered_by", "route_reason"))
    def compose_answer(state: VQAState, runtime: Runtime[VQAContext]) -> dict[str, Any]:
        """One answer from the sub-answers: joined in order, or written by the LLM from them."""
        subs = state["sub_answers"]
        joined = settings.joiner.join(s["answer"] or "unknown" for s in subs)
        how = "joined"
        answer, raw, logprobs = joined, joined, []
        if settings.use_llm and subs:
            facts = "\n".join(f"{s['question']} {s['answer']}" for s in subs)
            # The answer is its first line (route_answer cuts there): generation ends there too. It is the answer, so
            # the request's decoding settings apply (the decomposition above is the graph's own step: greedy).
            params = generation_params(state, settings.max_new_tokens, ["\n"])
            (generation,) = runtime.context.tools.llm.generate(
                [COMPOSE_PROMPT.format(question=state["question"], facts=facts)], params)
            written = route_answer(generation)
            if written["answer"]:
                answer, raw, logprobs, how = written["answer"], written["raw_answer"], written["token_logprobs"], "llm"
        source = state.get("decomposition", {}).get("source", "")
        return {"answer": answer, "raw_answer": raw, "token_logprobs": logprobs, "answered_by": "compose",
                "route_reason": f"decompose: {len(subs)} sub-question(s) ({source or 'given'}), answers {how}"}

    return compose_answer


# --- conditions (for conditional edges) ------------------------------------------------------------------------

def chosen_route(state: VQAState, runtime: Runtime[VQAContext]) -> str:
    """The router's outcome: img2llm, bridge, projection or both."""
    return state["chosen_route"]


def has_marks(state: VQAState, runtime: Runtime[VQAContext]) -> str:
    """true when the caller drew marks on the image (YAML's `yes:`/`no:` keys arrive as true/false too)."""
    return "true" if state.get("marks") else "false"


class ConfidenceSettings(Settings):
    route: str = Field("bridge", description="the route_answers entry to judge")
    below: float | None = Field(None, description="low when its mean log-prob is below this; default: the "
                                "profile's router.cascade_threshold")


def make_confidence(settings: ConfidenceSettings) -> Condition:
    def confidence(state: VQAState, runtime: Runtime[VQAContext]) -> str:
        answer = (state.get("route_answers") or {}).get(settings.route)
        if answer is None:
            raise GraphRunError(f"confidence: route {settings.route!r} has not answered "
                                f"(route_answers has {sorted(state.get('route_answers') or {})})")
        below = settings.below if settings.below is not None else runtime.context.tools.profile.router.cascade_threshold
        return "low" if answer["mean_logprob"] < below else "high"

    return confidence


class StateValueSettings(Settings):
    key: str = Field(description="the state key whose value (as text) is the outcome; a record's field as "
                     "'record.field' (e.g. 'img2llm.prompt')")


def make_state_value(settings: StateValueSettings) -> Condition:
    def state_value(state: VQAState, runtime: Runtime[VQAContext]) -> str:
        record, _, field = settings.key.partition(".")
        value = state.get(record, "")  # type: ignore[misc]
        if field:
            value = value.get(field, "") if isinstance(value, dict) else ""
        return str(value)

    return state_value
