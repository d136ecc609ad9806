"""`vqagraph eval`: VQA accuracy of a profile on a dataset, per route and question family.

Registered by `vqagraph.agents.cli` through `add_eval_command`. Everything that can be checked without models
(the data file, every image it names, the routes, the families) is checked before the engine is built, so a
mistake costs a second, not a model load. `--json` keeps stdout to the JSON document alone (the progress bar
and notes go to stderr), so the output can be piped straight into another tool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vqagraph.eval.datasets import DatasetError, EvalItem


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def add_eval_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `eval` on the `vqagraph` sub-command parsers; `func` returns the exit status."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "eval", help="VQA accuracy on a dataset, per route and question family",
        description="Answer every question of DATA through each route and score it with the VQA accuracy. "
                    "DATA is a JSONL file (image paths relative to it), a VQAv2/OK-VQA questions JSON (with "
                    "--annotations and --images) or an A-OKVQA JSON (with --images).")
    parser.add_argument("data", help="JSONL file, VQAv2/OK-VQA questions JSON, or A-OKVQA JSON")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="COCO image folder for the VQAv2/OK-VQA/A-OKVQA formats (default: DATA's folder)")
    parser.add_argument("--annotations", default=None, metavar="FILE",
                        help="the VQAv2/OK-VQA annotations JSON that goes with a questions JSON")
    parser.add_argument("--routes", default="auto", metavar="R1,R2",
                        help="comma-separated routes to compare, e.g. img2llm,bridge,auto (default: auto)")
    parser.add_argument("--profile", default=None, help="built-in profile name or a TOML/YAML profile file")
    parser.add_argument("--llm-url", default=None, help="answer with an already running vLLM server at this URL")
    parser.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    parser.add_argument("--plot", default=None, metavar="OUT.png", help="draw the table as a grouped bar chart")
    parser.add_argument("--limit", type=_positive, default=None, metavar="N", help="evaluate the first N questions")
    parser.add_argument("--batch-size", type=_positive, default=16, metavar="N",
                        help="questions in flight at once; the engine batches their model calls (default 16; the "
                        "answers are the same for any N)")
    parser.add_argument("--answers", default=None, metavar="OUT.jsonl",
                        help="write every answer with its score, route and reason, for error analysis")
    parser.add_argument("--families", default=None, metavar="F1,F2",
                        help="only these question families, e.g. colour,shape")
    parser.set_defaults(func=run_eval)
    return parser


def select(items: list[EvalItem], families: list[str], limit: int | None) -> list[EvalItem]:
    """Keep the named families (each must exist in the data), then the first `limit` questions."""
    if families:
        present = list(dict.fromkeys(item.family for item in items))
        missing = [name for name in families if name not in present]
        if missing:
            raise DatasetError(f"no questions of famil{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}; "
                               f"the data has: {', '.join(present)}")
        items = [item for item in items if item.family in families]
    return items[:limit] if limit is not None else items


def run_eval(args: argparse.Namespace) -> int:
    from vqagraph.engine import Engine
    from vqagraph.eval.datasets import load_dataset
    from vqagraph.eval.harness import check_routes, evaluate

    items = select(load_dataset(args.data, images=args.images, annotations=args.annotations),
                   _names(args.families), args.limit)
    routes = check_routes(_names(args.routes))
    overrides: dict[str, Any] = {}
    if args.llm_url:
        overrides["llm_backend"] = {"kind": "vllm-server", "url": args.llm_url}
    engine = Engine.from_profile(args.profile, **overrides)
    answers = Path(args.answers) if args.answers else None
    report = evaluate(engine, items, routes=routes, batch_size=args.batch_size, progress=True, answers_out=answers)
    if args.plot:
        report.plot(args.plot)

    failed = [record for record in report.records if record.error]
    if failed:
        print(f"vqagraph: warning: {len(failed)} of {len(report.records)} answers failed and scored 0; first: "
              f"question {failed[0].question_id} ({failed[0].route}): {failed[0].error}", file=sys.stderr)
    if engine.profile.meaningless:
        print(f"vqagraph: note: profile {engine.profile.name!r} uses untrained placeholder models; "
              "these accuracies are noise", file=sys.stderr)
    if args.json:
        print(report.to_json())
        return 0
    print(f"profile: {engine.profile.name}   questions: {len(items)}   routes: {', '.join(routes)}")
    print()
    print(report.table())
    print()
    timing = ", ".join(f"{route} {seconds:.2f}" for route, seconds in report.seconds_per_question.items())
    print(f"seconds per question (median): {timing}")
    if args.answers:
        print(f"answers: {args.answers}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0
