"""Choose the router's default by measurement: every policy scored on the answers of one `both` run.

A `--routes both` eval records, per question, each route's answer, its mean token log-probability and its VQA
accuracy (`vqagraph eval DATA --routes both --answers OUT.jsonl`). Each router policy only decides which of
those answers to keep, so all of them are scored here from one run, without asking again. The routes are those
every record has (two or three: img2llm, bridge, projection):

- `img2llm`, `bridge`, `projection`: one route always;
- `rules`: the question's cue (graphs/router.py `question_cue`) → a route; `rules (tuned)` sends each cue to
  the route that scored best on this split for it (so tune on a validation split, and score the tuned map on
  the test split with `--cue-routes`);
- `cascade@t`: the bridge, unless its mean log-prob is below t (then the text route);
- `both`: the answer with the highest mean log-prob (ties to the routes' fixed order), as graphs/router.py picks.

    python benchmarks/choose_router.py validation-both.jsonl                    # tune: prints the best policy
    python benchmarks/choose_router.py test-both.jsonl --cue-routes tuned.json  # score a tuned map elsewhere
    python benchmarks/choose_router.py test-both.jsonl --profile shapes --plot routes.png  # a profile's map, drawn
    python benchmarks/choose_router.py test-img2llm.jsonl test-bridge.jsonl --profile shapes   # single-route runs
    python benchmarks/choose_router.py val-img2llm.jsonl val-bridge.jsonl --routes img2llm,bridge   # two of three
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vqagraph.config import DEFAULT_CUE_ROUTES, load_profile
from vqagraph.eval.report import AnswerRecord, EvalReport
from vqagraph.graphs.registry import ROUTES
from vqagraph.graphs.router import question_cue

ANSWERING_ROUTES = ROUTES.names()

Record = dict[str, Any]
Policy = Callable[[Record], str]


def load(paths: list[Path], routes: list[str] | None = None) -> tuple[list[Record], list[str]]:
    """Records with every route's answer, and the routes (`routes`, or every route all records have). Several
    files are merged question by question (same image, question and truth), so separate single-route runs over
    one split score every policy as one `both` run does."""
    merged: dict[tuple[str, str, str, str], Record] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            key = (record["image"], record["question"], record["family"], json.dumps(record["answers"]))
            answers = record.get("route_answers", {})
            if key in merged:
                merged[key]["route_answers"].update(answers)
            else:
                merged[key] = {**record, "route_answers": dict(answers)}
    records = list(merged.values())
    if routes is None:
        counts = {route: sum(route in r["route_answers"] for r in records) for route in ANSWERING_ROUTES}
        routes = [route for route in ANSWERING_ROUTES if counts[route] and counts[route] >= len(records) / 2]
    usable = [r for r in records if set(routes) <= set(r["route_answers"])]
    if len(usable) < len(records):
        print(f"note: {len(records) - len(usable)} records without every route's answer (single-route runs or failed "
              "asks) are skipped")
    return usable, routes


def cue(record: Record) -> str:
    return question_cue(record["question"], bool(record.get("marks")) or record["family"] == "marked")[0]


def score(records: list[Record], policy: Policy) -> tuple[float, dict[str, float]]:
    by_family: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_family[r["family"]].append(r["route_answers"][policy(r)]["accuracy"])
    every = [a for values in by_family.values() for a in values]
    return sum(every) / len(every), {f: sum(v) / len(v) for f, v in sorted(by_family.items())}


def tune_cues(records: list[Record], routes: list[str], min_gain_se: float = 0.0) -> dict[str, str]:
    """Per cue, the route with the highest mean accuracy on these records (the default, if it is one of `routes`,
    where the best tie; else the first of them).

    With `min_gain_se` > 0, every cue but `knowledge` starts at the best single route overall, and moves to another
    route only where that route's gain on the cue's questions exceeds `min_gain_se` standard errors of the paired
    per-question difference: a cue rests on a few dozen questions, and smaller gains do not carry over to other
    questions (measured: the text route's `size` answers, 40.5 on validation, 14.0 on test)."""
    by_cue: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_cue[cue(r)].append(r)
    tuned: dict[str, str] = {name: (route if route in routes else routes[0])
                             for name, route in DEFAULT_CUE_ROUTES.items()}
    overall = {route: sum(r["route_answers"][route]["accuracy"] for r in records) for route in routes}
    leader = max(routes, key=lambda route: overall[route])
    for name, mine in by_cue.items():
        totals = {route: sum(r["route_answers"][route]["accuracy"] for r in mine) for route in routes}
        if min_gain_se <= 0:
            best = max(totals.values())
            if totals[tuned[name]] < best:
                tuned[name] = next(route for route in routes if totals[route] == best)
            continue
        base = tuned[name] if name == "knowledge" else leader  # knowledge stays where the default sends it
        tuned[name] = base
        for route in sorted(routes, key=lambda route: -totals[route]):
            diffs = [r["route_answers"][route]["accuracy"] - r["route_answers"][base]["accuracy"] for r in mine]
            mean = sum(diffs) / len(diffs)
            spread = (sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)) ** 0.5
            if route != base and mean > 0 and mean > min_gain_se * spread / len(diffs) ** 0.5:
                tuned[name] = route
                break
    return tuned


def policies(records: list[Record], routes: list[str], cue_routes: dict[str, str] | None,
             min_gain_se: float = 0.0) -> dict[str, Policy]:
    tuned = cue_routes or tune_cues(records, routes, min_gain_se)
    order: dict[str, int] = {route: k for k, route in enumerate(ANSWERING_ROUTES)}

    def both(r: Record) -> str:  # graphs/router.py pick_answer: highest mean log-prob, ties in the routes' order
        a = r["route_answers"]
        return min(routes, key=lambda route: (-a[route]["mean_logprob"], order[route]))

    def cascade(t: float) -> Policy:
        return lambda r: "img2llm" if r["route_answers"]["bridge"]["mean_logprob"] < t else "bridge"

    def default_cue(r: Record) -> str:
        route = DEFAULT_CUE_ROUTES[cue(r)]  # type: ignore[index]
        return route if route in routes else "img2llm"

    out: dict[str, Policy] = {route: (lambda r, route=route: route) for route in routes}  # type: ignore[misc]
    out.update({"both": both, "rules (default cues)": default_cue,
                "rules (tuned cues)" if cue_routes is None else "rules (given cues)": lambda r: tuned[cue(r)]})
    if {"img2llm", "bridge"} <= set(routes):
        for t in (-0.05, -0.1, -0.2, -0.3, -0.5, -0.75, -1.0, -1.5, -2.0, -3.0):
            out[f"cascade@{t}"] = cascade(t)
    out["oracle (upper bound)"] = lambda r: max(routes, key=lambda route: r["route_answers"][route]["accuracy"])
    return out


def chart(records: list[Record], shown: dict[str, Policy]) -> EvalReport:
    """The eval report each policy would have produced, built from the records' per-route answers."""
    rows = []
    for name, policy in shown.items():
        for r in records:
            route = policy(r)
            picked = r["route_answers"][route]
            rows.append(AnswerRecord(question_id=r["question_id"], image=r["image"], question=r["question"],
                                     family=r["family"], route=name, route_taken=route, answer=picked["answer"],
                                     answers=r["answers"], accuracy=picked["accuracy"], seconds=0.0))
    return EvalReport.from_records(rows, list(shown))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("answers", type=Path, nargs="+", help="the --answers JSONL of a `vqagraph eval --routes both` "
                        "run, or of single-route runs over the same questions (merged per question)")
    given_map = parser.add_mutually_exclusive_group()
    given_map.add_argument("--cue-routes", type=Path, help="a JSON cue → route map to score instead of tuning one")
    given_map.add_argument("--profile", help="score this profile's `router.cue_routes` instead of tuning one")
    parser.add_argument("--write-cues", type=Path, help="write the tuned cue → route map here (JSON)")
    parser.add_argument("--exclude", default="knowledge", help="families left out of `overall` (comma-separated)")
    parser.add_argument("--plot", type=Path, help="draw each route, both and the rules policy (as `auto`) per "
                        "family, as `vqagraph eval --plot` draws routes")
    parser.add_argument("--min-gain-se", type=float, default=0.0,
                        help="tuning: move a cue off the best single route only for a gain above this many standard "
                        "errors of the paired difference (0: the best route per cue, however small its lead)")
    parser.add_argument("--routes", default=None, help="the routes to choose among (comma-separated; default: every "
                        "route the records have)")
    args = parser.parse_args(argv)
    records, routes = load(args.answers, args.routes.split(",") if args.routes else None)
    excluded = {f for f in args.exclude.split(",") if f}
    scored = [r for r in records if r["family"] not in excluded]
    given = json.loads(args.cue_routes.read_text()) if args.cue_routes else None
    if args.profile:  # argparse keeps --profile and --cue-routes apart
        given = dict(load_profile(args.profile).router.cue_routes)
    if given is not None:  # a map may name a route these records lack: that cue goes to the text route
        given = {name: (route if route in routes else "img2llm") for name, route in given.items()}
    table = policies(records, routes, given, args.min_gain_se)
    families = sorted({r["family"] for r in records})
    print(f"{len(scored)} questions ({len(records)} with {', '.join(sorted(excluded)) or 'nothing'} kept apart); "
          f"routes: {', '.join(routes)}")
    print(f"{'policy':24} {'overall':>8} " + " ".join(f"{f[:9]:>9}" for f in families))
    results: dict[str, float] = {}
    for name, policy in table.items():
        overall, _ = score(scored, policy)
        _, per_family = score(records, policy)
        results[name] = overall
        print(f"{name:24} {overall:8.1f} " + " ".join(f"{per_family.get(f, float('nan')):9.1f}" for f in families))
    choosable = {k: v for k, v in results.items() if not k.startswith("oracle") and k not in routes}
    best = max(choosable, key=lambda k: choosable[k])
    print(f"best policy here: {best} ({choosable[best]:.1f})")
    if args.plot:
        rules = "rules (tuned cues)" if given is None else "rules (given cues)"
        shown = {**{route: table[route] for route in routes}, "both": table["both"], "auto": table[rules]}
        title = f"VQA accuracy by family, {len(scored)} questions (every route answered each)"
        chart(scored, shown).plot(args.plot, title=title)
        print(f"chart: {args.plot}")
    if given is None:
        tuned = tune_cues(records, routes, args.min_gain_se)
        print("tuned cue routes:", json.dumps(tuned))
        if args.write_cues:
            args.write_cues.write_text(json.dumps(tuned, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
