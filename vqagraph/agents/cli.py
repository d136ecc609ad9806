"""`vqagraph` command line. Errors print one line and exit with status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
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
