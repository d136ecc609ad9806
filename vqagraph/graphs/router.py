"""The per-question router: which route answers, and why (the reason goes into the trace).

Policies (`RouterSettings.policy`, or per call):
- `rules`: question cues, each sent where the profile's `router.cue_routes` says (tuned on a validation
  split by benchmarks/choose_router.py; the `shapes` profile's map is measured). Knowledge cues ("why", "which
  fruit", "how many sides", "used for") are checked first: "How many sides does the blue shape have?" asks
  for knowledge although it starts like a count. The code's default map, before any measurement, sends
  knowledge and open questions to the text route and perception cues and marked regions to the bridge.
- `cascade`: the Q-Former route first; the text route when the bridge answer's mean token log-probability
  is under `cascade_threshold`.
- `both`: every route the profile has, concurrently (LangGraph `Send`); the answer with the highest mean
  log-probability wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel

from vqagraph.answer import RouteAnswer
from vqagraph.config import CueName, RouteName, RouterSettings
from vqagraph.graphs.registry import ROUTES
from vqagraph.tools.prompts import YES_NO_QUESTION

POLICIES = ("rules", "cascade", "both")
# The cascade (docs/methods.md): the Q-Former route answers first, the text route when it is unsure.
CASCADE_FIRST = "bridge"
CASCADE_FALLBACK = "img2llm"

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

PERCEPTION_CUES: tuple[tuple[str, CueName], ...] = (
    (r"\bcolou?rs?\b", "colour"),
    (r"\b(what|which) (kind of |type of )?shapes?\b|\bshape (is|of)\b", "shape"),
    (r"\b(how many|number of|count)\b", "count"),
    (r"\b(where|left|right|above|below|top|bottom|middle|center|centre|corner|next to|beside|behind|"
     r"in front of)\b", "position"),
    (r"\b(bigger|smaller|larger|biggest|smallest|largest|size)\b", "size"),
)



class RouteDecision(BaseModel):
    route: str  # a registered route, or "both"
    reason: str
    cascade: bool = False


def question_cue(question: str, marked: bool = False) -> tuple[CueName, str]:
    """The cue a question shows (a `RouterSettings.cue_routes` key) and why: knowledge cues first, then a mark,
    then perception cues, then yes/no; `open` when none fits."""
    text = question.lower()
    for pattern, why in KNOWLEDGE_CUES:
        if re.search(pattern, text):
            return "knowledge", f"knowledge/reasoning cue ({why})"
    if marked:
        return "marked", "the question is about a marked region"
    for pattern, family in PERCEPTION_CUES:
        if re.search(pattern, text):
            return family, f"perception cue ({family})"
    if YES_NO_QUESTION.match(text):
        return "yes/no", "yes/no question"
    return "open", "open question with no perception cue"


def rules_route(question: str, marked: bool = False, settings: RouterSettings | None = None,
                available: Sequence[RouteName] | None = None) -> RouteDecision:
    """The `rules` policy: the question's cue, sent where the profile's `cue_routes` says (measured defaults
    live in the profile, not here); a route the profile lacks falls back to the text route."""
    cue, why = question_cue(question, marked)
    route = (settings or RouterSettings()).cue_routes[cue]
    title = ROUTES.get(route).title
    if route not in (ROUTES.names() if available is None else available):
        return RouteDecision(route=CASCADE_FALLBACK, reason=f"rules: {why} → {title}, which the profile lacks → "
                             f"{ROUTES.get(CASCADE_FALLBACK).title}")
    return RouteDecision(route=route, reason=f"rules: {why} → {title}")


def choose_route(policy: str, question: str, marked: bool, settings: RouterSettings,
                 available: Sequence[RouteName] | None = None) -> RouteDecision:
    if policy == "rules":
        return rules_route(question, marked, settings, available)
    if policy == "cascade":
        return RouteDecision(
            route="bridge", cascade=True,
            reason="cascade: Q-Former route first, the text route if its mean log-prob "
            f"< {settings.cascade_threshold}",
        )
    if policy == "both":
        every = ROUTES.names() if available is None else available
        return RouteDecision(route="both", reason=f"both: run {', '.join(every)} and keep the most confident answer")
    raise ValueError(f"unknown router policy {policy!r}; choose one of {', '.join(POLICIES)}")


def cascade_falls_back(bridge: RouteAnswer, threshold: float) -> bool:
    return bridge["mean_logprob"] < threshold


def pick_answer(answers: dict[str, RouteAnswer]) -> tuple[str, str]:
    """With several routes' answers, keep the highest mean token log-probability; ties go to the text route, then
    to the routes in their fixed order."""
    rank: dict[str, int] = {r: -k for k, r in enumerate(ROUTES.names())}
    order = sorted(answers, key=lambda r: (answers[r]["mean_logprob"], rank.get(r, -99)), reverse=True)
    best = order[0]
    scores = ", ".join(f"{r} {answers[r]['mean_logprob']:.3f}" for r in sorted(answers))
    return best, f"kept {best} (mean log-prob: {scores})"
