"""`vqagraph serve` (OpenAI-compatible HTTP server) and `vqagraph mcp` (MCP over stdio)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import Any

from vqagraph.agents.options import add_engine_options, open_engine, run_command
from vqagraph.errors import VQAGraphError


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from vqagraph.agents.openai_server import serve

    if args.max_body_mb <= 0:
        raise VQAGraphError("--max-body-mb must be positive")
    if args.max_pending < 1:
        raise VQAGraphError("--max-pending must be at least 1")
    api_key = args.api_key or os.environ.get("VQAGRAPH_API_KEY") or None
    if not _loopback(args.host) and api_key is None:
        print(f"vqagraph serve: warning: listening on {args.host} without an API key; anyone who reaches this "
              "port can use it (set --api-key or VQAGRAPH_API_KEY)", file=sys.stderr)
    engine = open_engine(args)
    print(f"vqagraph serve: profile {engine.profile.name!r} at http://{args.host}:{args.port}/v1 "
          f"(model {engine.profile.name!r}; API key {'required' if api_key else 'off'}; remote images from "
          f"{', '.join(args.allow_host) or 'no host'})", file=sys.stderr, flush=True)
    try:
        serve(engine, host=args.host, port=args.port, api_key=api_key, allow_hosts=args.allow_host,
              store=args.store, max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pending=args.max_pending,
              log_level=args.log_level)
    finally:
        engine.close()
    return 0


def _mcp(args: argparse.Namespace) -> int:
    from vqagraph.agents.mcp_server import run_stdio

    return run_stdio(args)


def add_serve_commands(subparsers: Any) -> None:
    """Register `serve` and `mcp` on the main CLI's subparsers."""
    serve = subparsers.add_parser(
        "serve", help="an OpenAI-compatible chat-completions server (images as image_url parts)",
        description="Serve /v1/chat/completions and /v1/models for the profile. Loopback by default.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help="require `Authorization: Bearer KEY` (default: $VQAGRAPH_API_KEY; none: no auth)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                       help="fetch http(s) image URLs from this host (repeatable); private, loopback and link-local "
                       "addresses are refused even when listed. Default: data: URLs only")
    serve.add_argument("--max-body-mb", type=float, default=20.0, metavar="N",
                       help="largest request body in MiB (default 20); larger requests get 413")
    serve.add_argument("--max-pending", type=int, default=64, metavar="N",
                       help="requests in progress at once (default 64); more get 429 with Retry-After. How many "
                       "share a batch and how long a batch waits: the profile's `batching`")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="server log level (default info: one line per answered request)")
    add_engine_options(serve)
    serve.set_defaults(func=_serve)

    mcp = subparsers.add_parser("mcp", help="a Model Context Protocol server over stdio (ask_image, render_marks)",
                                description="For desktop agents: tools ask_image and render_marks over stdio.")
    add_engine_options(mcp).set_defaults(func=_mcp)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vqagraph.agents.serve_cli serve|mcp ...`: the two commands on their own."""
    parser = argparse.ArgumentParser(prog="vqagraph", description=__doc__)
    add_serve_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
