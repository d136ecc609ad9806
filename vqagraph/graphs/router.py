"""The per-question router: which route answers, and why (the reason goes into the trace).

Policies (`RouterSettings.policy`, or per call):
- `rules`: question cues. Knowledge and reasoning cues ("why", "which fruit", "how many sides", "used for")
  go to the text route, whose captions and exemplars leave room for what the LLM knows; perception cues
  (colour, shape, count, position, yes/no) and questions about a marked region go to the embedding route,
  which hands the LLM the image itself. Knowledge cues are checked first: "How many sides does the blue
  shape have?" asks for knowledge although it starts like a count.
- `cascade`: the embedding route first; the text route when the bridge answer's mean token log-probability
  is under `cascade_threshold`.
- `both`: both routes, concurrently (LangGraph `Send`); the answer with the higher mean log-probability wins.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from vqagraph.config import RouterSettings
from vqagraph.graphs.state import RouteAnswer

Route = Literal["img2llm", "bridge", "both"]
POLICIES = ("rules", "cascade", "both")

KNOWLEDGE_CUES: tuple[tuple[str, str], ...] = (
    (r"\bwhy\b", "asks why"),
    (r"\bhow many (sides|legs|wheels|corners|edges|vertices)\b", "counts something the image does not show"),
    (r"\b(sides|corners|vertices) does\b", "asks a property the image does not show"),
    (r"\bwhich (fruit|animal|vegetable|food|country|city|sport|season|planet|flower|drink)\b",
     "asks for a thing from the world"),
    (r"\bsame colou?r as (an?|the) (fruit|animal|vegetable|flower|sky|sun|grass|sea)\b",
     "compares with the world"),
    (r"\b(used for|made of|made from|known for|famous for|invented|purpose|meaning)\b", "asks about the world"),
    (r"\bwhat (kind|type|sort|brand|breed|species) of\b", "asks for a category"),
    (r"\b(could|would|should|might)\b", "asks to reason"),
    (r"\bwho (is|was|made|built|wrote|painted)\b", "asks who"),
)

PERCEPTION_CUES: tuple[tuple[str, str], ...] = (
    (r"\bcolou?rs?\b", "colour"),
    (r"\b(what|which) (kind of |type of )?shapes?\b|\bshape (is|of)\b", "shape"),
    (r"\b(how many|number of|count)\b", "count"),
    (r"\b(where|left|right|above|below|top|bottom|middle|center|centre|corner|next to|beside|behind|"
     r"in front of)\b", "position"),
    (r"\b(bigger|smaller|larger|biggest|smallest|largest|size)\b", "size"),
)

YES_NO = re.compile(r"^(is|are|was|were|does|do|did|can|could|has|have|will)\b", re.IGNORECASE)


class RouteDecision(BaseModel):
    route: Route
    reason: str
    cascade: bool = False


def rules_route(question: str, marked: bool = False) -> RouteDecision:
    """The `rules` policy: knowledge cues → text route; marks and perception cues → embedding route."""
    text = question.lower()
    for pattern, why in KNOWLEDGE_CUES:
        if re.search(pattern, text):
            return RouteDecision(route="img2llm", reason=f"rules: knowledge/reasoning cue ({why}) → text route")
    if marked:
        return RouteDecision(route="bridge", reason="rules: the question is about a marked region → embedding route")
    for pattern, family in PERCEPTION_CUES:
        if re.search(pattern, text):
            return RouteDecision(route="bridge", reason=f"rules: perception cue ({family}) → embedding route")
    if YES_NO.match(text):
        return RouteDecision(route="bridge", reason="rules: yes/no question → embedding route")
    return RouteDecision(route="img2llm", reason="rules: open question with no perception cue → text route")


def choose_route(policy: str, question: str, marked: bool, settings: RouterSettings) -> RouteDecision:
    if policy == "rules":
        return rules_route(question, marked)
    if policy == "cascade":
        return RouteDecision(
            route="bridge", cascade=True,
            reason="cascade: embedding route first, the text route if its mean log-prob "
            f"< {settings.cascade_threshold}",
        )
    if policy == "both":
        return RouteDecision(route="both", reason="both: run both routes and keep the more confident answer")
    raise ValueError(f"unknown router policy {policy!r}; choose one of {', '.join(POLICIES)}")


def cascade_falls_back(bridge: RouteAnswer, threshold: float) -> bool:
    return bridge["mean_logprob"] < threshold


def pick_answer(answers: dict[str, RouteAnswer]) -> tuple[str, str]:
    """With several routes' answers, keep the highest mean token log-probability; ties go to the text route."""
    order = sorted(answers, key=lambda r: (answers[r]["mean_logprob"], r == "img2llm"), reverse=True)
    best = order[0]
    scores = ", ".join(f"{r} {answers[r]['mean_logprob']:.3f}" for r in sorted(answers))
    return best, f"kept {best} (mean log-prob: {scores})"
