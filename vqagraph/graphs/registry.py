"""The routes that exist: the one place that lists them.

The built-in routes are registered here in their fixed order (the order `both` runs them in and breaks ties by);
an application adds its own with `register(Route(...))` before it builds an engine. Everything that lists routes
reads this registry: the main graph (graphs/vqa.py), the router's cue map check, the engine's route check, the
CLI's choices and trace lines, the servers (`GET /v1/routes`), the web page's selector and the custom-graph
catalogue (graphs/library.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator

from vqagraph.answer import VisualPromptRecord
from vqagraph.config import Profile
from vqagraph.errors import ProfileError, QuestionError
from vqagraph.graphs.adapter_route import ADAPTER_ROUTE
from vqagraph.graphs.bridge_route import BRIDGE_ROUTE
from vqagraph.graphs.projection_route import PROJECTION_ROUTE
from vqagraph.graphs.routes import Route, state_schema
from vqagraph.graphs.state import VQAState
from vqagraph.graphs.text_route import TEXT_ROUTE

CHOICES = ("auto", "both")  # what a caller may ask for besides a route: the router decides, or every route runs
_BUILT_IN_RECORDS = ("img2llm", "bridge", "projection", "adapter")  # VQAState's typed record channels


class RouteRegistry:
    """The registered routes, in order."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._routes: dict[str, Route] = {}
        for route in routes:
            self.register(route)

    def register(self, route: Route) -> Route:
        """Add a route: its name must be new, a plain word, and not a state key the graph already uses."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", route.name):
            raise ProfileError(f"a route's name is a lowercase word (letters, digits, _), not {route.name!r}")
        taken = set(CHOICES) | (set(VQAState.__annotations__) - set(_BUILT_IN_RECORDS))
        if route.name in self._routes or route.name in taken:
            raise ProfileError(f"route name {route.name!r} is taken")
        if not route.nodes:
            raise ProfileError(f"route {route.name!r} has no nodes")
        self._routes[route.name] = route
        return route

    def unregister(self, name: str) -> None:
        """Remove a route added with `register` (an application's or a test's; the built-in routes stay)."""
        if name in _BUILT_IN_RECORDS:
            raise ProfileError(f"the built-in route {name!r} cannot be removed")
        self._routes.pop(name, None)

    def __iter__(self) -> Iterator[Route]:
        return iter(tuple(self._routes.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def names(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def requested(self) -> tuple[str, ...]:
        """What a caller may ask for: `auto`, each route, `both`."""
        return ("auto", *self._routes, "both")

    def get(self, name: str) -> Route:
        if name not in self._routes:
            raise QuestionError(f"unknown route {name!r}; choose one of {', '.join(self.requested())}")
        return self._routes[name]

    def available(self, profile: Profile) -> tuple[str, ...]:
        """The routes this profile can answer by (each has what it loads)."""
        return tuple(r.name for r in self if r.available(profile))

    def check_request(self, route: str, profile: Profile) -> None:
        """An unknown route is the caller's mistake; a route the profile cannot run is the profile's."""
        if route in CHOICES:
            return
        found = self.get(route)
        if not found.available(profile):
            raise ProfileError(f"route {route!r} needs the {found.title}, but profile {profile.name!r} has "
                               f"{found.missing or 'not what it loads'}")

    def check_profile(self, profile: Profile) -> None:
        """The router's cue map names registered routes only (a typo there would fail every question it sends)."""
        unknown = sorted({r for r in profile.router.cue_routes.values() if r not in self._routes})
        if unknown:
            raise ProfileError(f"profile {profile.name!r}: router.cue_routes names {', '.join(map(repr, unknown))}, "
                               f"not a route; the routes are {', '.join(self._routes)}")

    def records(self) -> dict[str, type]:
        """The nested records of the state, by key: nodes declare their fields as "record.field"."""
        return {"visual_prompt": VisualPromptRecord, **{r.name: r.record for r in self}}

    def state_schema(self) -> type:
        """The VQA state with every registered route's record channel."""
        return state_schema(tuple(self))


ROUTES = RouteRegistry((TEXT_ROUTE, BRIDGE_ROUTE, PROJECTION_ROUTE, ADAPTER_ROUTE))
register = ROUTES.register


def _requested_route(value: str) -> str:
    if value not in ROUTES.requested():
        raise ValueError(f"unknown route {value!r}; choose one of {', '.join(ROUTES.requested())}")
    return value


# A route a caller asks for, checked against the registry when a request is validated (front ends' models).
RequestedRoute = Annotated[str, AfterValidator(_requested_route)]


def route_record(trace: Any, name: str) -> dict[str, Any] | None:
    """A route's record in a trace: a typed field for the built-in routes, an extra field for an added one."""
    return getattr(trace, name, None) or (trace.model_extra or {}).get(name)


def route_lines(trace: Any) -> list[str]:
    """Each route record's line for the CLI (the route's own `describe`), in the registry's order."""
    lines = []
    for route in ROUTES:
        record = route_record(trace, route.name)
        line = route.describe(record) if record else None
        if line:
            lines.append(line)
    return lines
