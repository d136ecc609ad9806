"""The `shapes` profile's ablations, each a side-by-side table on the same held-out questions.

1. region captions (GradCAM-sampled patches, Img2LLM §1.2) vs whole-image captions (`patch_selection = "all"`),
   on questions whose objects are tiny or small;
2. the Img2LLM prompt with vs without the synthetic QA exemplars (`max_exemplars = 0`);
3. the Q-Former with vs without question conditioning (InstructBLIP vs BLIP-2 bridge, same training data);
4. 8 vs 32 query tokens (two bridges trained with the same plan; pass `--queries-32 DIR`).

    vqagraph world split test -o data/test
    python benchmarks/bench_ablations.py data/test/questions.jsonl --limit 150

Accuracies are VQA accuracy (%) from the eval harness; `s/q` is the engine's time per question.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vqagraph.config import load_profile
from vqagraph.engine import Engine
from vqagraph.eval.datasets import EvalItem, load_dataset
from vqagraph.eval.harness import evaluate
from vqagraph.eval.report import EvalReport

SMALL = ("tiny", "small")


def small_object_items(path: Path, items: Sequence[EvalItem]) -> list[EvalItem]:
    """Items whose every referenced object is tiny or small (the world's questions name their objects)."""
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for item, line in zip(items, raw, strict=True):
        ids = line.get("object_ids") or []
        if not ids or not line.get("scene"):
            continue
        scene = json.loads((path.parent / line["scene"]).read_text())
        if all(scene["objects"][i]["size_word"] in SMALL for i in ids):
            keep.append(item)
    return keep


def run(name: str, items: Sequence[EvalItem], route: str, overrides: dict[str, Any]) -> EvalReport:
    engine = Engine(load_profile("shapes", **overrides))
    try:
        report = evaluate(engine, items, routes=[route], progress=True)
    finally:
        engine.close()
    print(f"  {name}: {report.routes[route].overall:.1f}% over {report.routes[route].n} questions, "
          f"{report.seconds_per_question.get(route, 0.0):.2f} s/q", flush=True)
    return report


def table(title: str, items: Sequence[EvalItem], route: str, variants: dict[str, dict[str, Any]]) -> None:
    print(f"\n## {title} ({len(items)} questions, route {route})", flush=True)
    reports = {name: run(name, items, route, overrides) for name, overrides in variants.items()}
    families = list(dict.fromkeys(f for r in reports.values() for f in r.routes[route].families))
    print(f"{'variant':36} {'overall':>8} {'s/q':>6} " + " ".join(f"{f[:9]:>9}" for f in families))
    for name, report in reports.items():
        score = report.routes[route]
        cells = " ".join(f"{score.families[f].accuracy:9.1f}" if f in score.families else f"{'-':>9}"
                         for f in families)
        print(f"{name:36} {score.overall:8.1f} {report.seconds_per_question.get(route, 0.0):6.2f} {cells}")
    names = list(reports)
    if len(names) == 2:
        a, b = (reports[n].routes[route].overall for n in names)
        print(f"difference ({names[0]} - {names[1]}): {a - b:+.1f} points")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a split's questions.jsonl (`vqagraph world split test -o DIR`)")
    parser.add_argument("--limit", type=int, default=150, help="questions per table (default 150)")
    parser.add_argument("--only", default="1,2,3,4", help="which ablations to run, e.g. 1,3")
    parser.add_argument("--queries-32", type=Path, default=None,
                        help="an InstructBLIP bridge trained with 32 query tokens (same plan as the shipped 8)")
    args = parser.parse_args(argv)
    only = {int(x) for x in args.only.split(",")}
    items = [i for i in load_dataset(args.data) if i.family != "knowledge"]
    head = items[: args.limit]
    if 1 in only:
        small = small_object_items(args.data, load_dataset(args.data))[: args.limit]
        table("1. region vs whole-image captions, questions about tiny/small objects", small, "img2llm",
              {"region captions (gradcam)": {}, "whole-image captions (all)": {"img2llm": {"patch_selection": "all"}}})
    if 2 in only:
        table("2. Img2LLM prompt with vs without synthetic QA exemplars", head, "img2llm",
              {f"with exemplars ({load_profile('shapes').img2llm.max_exemplars})": {},
               "without exemplars": {"img2llm": {"max_exemplars": 0}}})
    if 3 in only:
        table("3. Q-Former with vs without question conditioning", head, "bridge",
              {"InstructBLIP (conditioned)": {"qformer": "builtin:shapes-instructblip"},
               "BLIP-2 (not conditioned)": {"qformer": "builtin:shapes-blip2"}})
    if 4 in only:
        if args.queries_32 is None:
            print("\n## 4. 8 vs 32 query tokens: needs --queries-32 DIR (a bridge trained with "
                  "`num_query_tokens=32`); not run")
        else:
            table("4. 8 vs 32 query tokens", head, "bridge",
                  {"8 queries (shipped)": {"qformer": "builtin:shapes-instructblip"},
                   "32 queries": {"qformer": str(args.queries_32)}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
