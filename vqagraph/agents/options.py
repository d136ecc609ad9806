"""The command-line options every front end shares, declared once: the profile, the thread store and the LLM
server, and the one way they become an `Engine`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from vqagraph.errors import VQAGraphError

STORE_HELP = "thread store: a SQLite path (default: under the data directory, VQAGRAPH_DATA), postgresql://…, memory"


def add_engine_options(parser: argparse.ArgumentParser, store: bool = True) -> argparse.ArgumentParser:
    """`--profile`, `--llm-url` and (with `store`) `--store`."""
    parser.add_argument("--profile", default=None, help="built-in profile name or a TOML/YAML profile file")
    parser.add_argument("--llm-url", default=None, help="answer with an already running vLLM server at this URL")
    if store:
        parser.add_argument("--store", default=None, metavar="URL", help=STORE_HELP)
    return parser


def engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Profile overrides from the options: `--llm-url` points the LLM backend at a running vLLM server."""
    if getattr(args, "llm_url", None):
        return {"llm_backend": {"kind": "vllm-server", "url": args.llm_url}}
    return {}


def open_engine(args: argparse.Namespace) -> Any:
    """The `Engine` the options describe (models load lazily, on the first question)."""
    from vqagraph.engine import Engine

    return Engine.from_profile(getattr(args, "profile", None), **engine_overrides(args))


def quiet_libraries() -> None:
    """transformers' progress bars and warnings off for the command line; tokenizers without fork warnings."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                prog: str = "vqagraph") -> int:
    """Run a command the way every entry point does: a vqagraph error is one line and exit 2, an interrupt 130,
    a closed pipe (`vqagraph ask … --json | head`) a quiet 0."""
    try:
        return int(command(args))
    except VQAGraphError as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, even quoting a library
        return 2
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
