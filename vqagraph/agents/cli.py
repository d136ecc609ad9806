"""`vqagraph` command line. Errors print one line and exit with status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from vqagraph.errors import VQAGraphError


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _ask(args: argparse.Namespace) -> int:
    from vqagraph.engine import Engine

    engine = Engine.from_profile(args.profile)
    answer = engine.ask(args.image, args.question, route=args.route)
    if args.json:
        print(answer.model_dump_json(indent=2))
        return 0
    print(f"answer: {answer.answer}")
    print(f"route:  {answer.route} ({answer.trace.route_reason})")
    stats = answer.trace.caption_stats
    if stats:
        print(f"captions: {stats.get('kept', 0)} kept of {stats.get('generated', 0)} generated "
              f"in {stats.get('rounds', 0)} round(s)")
    if answer.meaningless:
        print(f"note: profile {engine.profile.name!r} uses untrained placeholder models; this answer is meaningless")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Draw two small scenes, ask questions about them through the graph, print answers and traces."""
    import tempfile
    import time
    from pathlib import Path

    from PIL import Image, ImageDraw

    from vqagraph.engine import Engine

    out = Path(args.out or tempfile.mkdtemp(prefix="vqagraph-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    scenes: dict[str, list[tuple[str, tuple[int, ...], str]]] = {
        "red-circle.png": [("ellipse", (30, 40, 110, 120), "red")],
        "blue-square-yellow-triangle.png": [("rectangle", (20, 30, 90, 100), "blue"),
                                            ("polygon", (150, 110, 210, 110, 180, 50), "yellow")],
    }
    for name, shapes in scenes.items():
        image = Image.new("RGB", (240, 160), "white")
        draw = ImageDraw.Draw(image)
        for kind, coords, colour in shapes:
            getattr(draw, kind)(coords, fill=colour)
        image.save(out / name)
    questions = [
        ("red-circle.png", "What colour is the circle?", "red"),
        ("red-circle.png", "What shape is in the picture?", "circle"),
        ("blue-square-yellow-triangle.png", "What colour is the triangle?", "yellow"),
    ]
    start = time.perf_counter()
    engine = Engine.from_profile(args.profile)
    print(f"profile: {engine.profile.name} - {engine.profile.description}")
    print(f"images:  {out}")
    for image_name, question, truth in questions:
        answer = engine.ask(out / image_name, question)
        stats = answer.trace.caption_stats
        print(f"\n{image_name}: {question}")
        print(f"  route:    {answer.route} ({answer.trace.route_reason})")
        print(f"  captions: {stats.get('kept', 0)} kept of {stats.get('generated', 0)}; "
              f"first: {answer.trace.captions[:1]}")
        print(f"  answer:   {answer.answer!r}   truth: {truth!r}   ({answer.trace.timings['total']:.2f} s)")
    if engine.profile.meaningless:
        print(f"\nnote: profile {engine.profile.name!r} uses untrained placeholder models built from configs;"
              " its captions and answers are noise. They show the pipeline runs, not that it sees.")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _profiles(_args: argparse.Namespace) -> int:
    from vqagraph.config import BUILTIN_PROFILES, DEFAULT_PROFILE

    for name, data in BUILTIN_PROFILES.items():
        mark = " (default)" if name == DEFAULT_PROFILE else ""
        print(f"{name}{mark}: {data.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqagraph", description="Frozen LLMs answer questions about images.")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer one question about one image")
    ask.add_argument("image", help="path to the image")
    ask.add_argument("question")
    ask.add_argument("--profile", default=None, help="built-in profile name or a TOML/YAML profile file")
    ask.add_argument("--route", default="auto", choices=["auto", "img2llm"])
    ask.add_argument("--json", action="store_true", help="print the answer with its full trace as JSON")
    ask.set_defaults(func=_ask)

    demo = sub.add_parser("demo", help="the offline demo: draw scenes, ask questions, print answers and traces")
    demo.add_argument("--profile", default=None)
    demo.add_argument("--out", default=None, help="folder for the demo images (default: a new temp folder)")
    demo.set_defaults(func=_demo)

    profiles = sub.add_parser("profiles", help="list the built-in profiles")
    profiles.set_defaults(func=_profiles)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.func(args))
    except VQAGraphError as exc:
        print(f"vqagraph: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vqagraph ask ... --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("vqagraph: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
