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


def api_keys(given: Sequence[str]) -> list[str]:
    """The keys from `--api-key` (repeatable), else from `VQAGRAPH_API_KEY` (comma-separated); each is a
    different owner of threads."""
    raw = list(given) or [os.environ.get("VQAGRAPH_API_KEY", "")]
    keys = [k.strip() for item in raw for k in item.split(",")]
    return [k for k in dict.fromkeys(keys) if k]


def _serve(args: argparse.Namespace) -> int:
    from vqagraph.agents.http_guards import LOOPBACK_HOSTS, bound_host_names, listen
    from vqagraph.agents.openai_server import serve

    if args.max_body_mb <= 0:
        raise VQAGraphError("--max-body-mb must be positive")
    if args.max_pending < 1:
        raise VQAGraphError("--max-pending must be at least 1")
    for flag in ("request_timeout", "body_timeout", "fetch_timeout"):
        if getattr(args, flag) <= 0:
            raise VQAGraphError(f"--{flag.replace('_', '-')} must be positive")
    for origin in args.cors_origin:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise VQAGraphError(f"--cors-origin {origin!r}: give an origin such as https://app.example.com")
    keys = api_keys(args.api_key)
    if not _loopback(args.host) and not keys:
        print(f"vqagraph serve: warning: listening on {args.host} without an API key; anyone who reaches this "
              "port can use it (set --api-key or VQAGRAPH_API_KEY)", file=sys.stderr)
    sock = listen(args.host, args.port)  # a taken port is an error now, before the models load
    try:
        engine = open_engine(args)
    except BaseException:
        sock.close()
        raise
    hosts = [*LOOPBACK_HOSTS, *bound_host_names(args.host), *args.trusted_host]
    print(f"vqagraph serve: profile {engine.profile.name!r} at http://{args.host}:{args.port}/v1 "
          f"(model {engine.profile.name!r}; API key {'required' if keys else 'off'}"
          f"{f', {len(keys)} keys' if len(keys) > 1 else ''}; remote images from "
          f"{', '.join(args.allow_host) or 'no host'}; Host header {', '.join(dict.fromkeys(hosts))}; "
          f"CORS {', '.join(args.cors_origin) or 'off'})",
          file=sys.stderr, flush=True)
    page = getattr(args, "page_url", None)
    if page is not None:
        print(f"vqagraph ui: open {page} in a web browser (Ctrl-C stops the server)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(page)
    try:
        serve(engine, host=args.host, port=args.port, sock=sock, api_keys=keys, allow_hosts=args.allow_host,
              store=args.store, max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pending=args.max_pending,
              log_level=args.log_level, request_timeout=args.request_timeout, body_timeout=args.body_timeout,
              fetch_timeout=args.fetch_timeout, trusted_hosts=args.trusted_host, cors_origins=args.cors_origin)
    finally:
        engine.close()
    return 0


def _ui(args: argparse.Namespace) -> int:
    """`serve`, saying where the page is (and opening it with --open)."""
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else host}:{args.port}/"
    args.page_url = url
    return _serve(args)


def _mcp(args: argparse.Namespace) -> int:
    from vqagraph.agents.mcp_server import run_stdio

    return run_stdio(args)


def add_server_options(parser: argparse.ArgumentParser, port: int) -> argparse.ArgumentParser:
    """The options `serve` and `ui` share: where to listen, keys, limits, deadlines, browser rules, the engine."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=port, help=f"port to listen on (default {port})")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                       help="require `Authorization: Bearer KEY` (repeatable: each key is its own user, whose threads "
                       "the others cannot read; default: $VQAGRAPH_API_KEY, comma-separated; none: no auth)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                       help="fetch http(s) image URLs from this host (repeatable); private, loopback and link-local "
                       "addresses are refused even when listed. Default: data: URLs only")
    parser.add_argument("--max-body-mb", type=float, default=20.0, metavar="N",
                       help="largest request body in MiB (default 20); larger requests get 413")
    parser.add_argument("--max-pending", type=int, default=64, metavar="N",
                       help="requests in progress at once (default 64); more get 429 with Retry-After. How many "
                       "share a batch and how long a batch waits: the profile's `batching`")
    parser.add_argument("--request-timeout", type=float, default=120.0, metavar="S",
                       help="answer each request within S seconds (default 120), else 504 (a stream: an error event)")
    parser.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                       help="request headers, then the body, must each arrive within S seconds (default 30; a slow "
                       "body gets 408)")
    parser.add_argument("--fetch-timeout", type=float, default=30.0, metavar="S",
                       help="a remote image must download within S seconds in all (default 30)")
    parser.add_argument("--trusted-host", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host header is NAME (repeatable; '*': any). Default: "
                       "localhost, 127.0.0.1, ::1 and the --host address (for 0.0.0.0: this machine's name); "
                       "other Host headers get 400, which stops DNS-rebinding pages")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let browser pages from ORIGIN (e.g. https://app.example.com) call the API (repeatable; "
                       "'*': any). Default: no cross-origin access")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="server log level (default info: one line per answered request)")
    return add_engine_options(parser)


def add_serve_commands(subparsers: Any) -> None:
    """Register `serve`, `ui` and `mcp` on the main CLI's subparsers."""
    serve = subparsers.add_parser(
        "serve", help="an OpenAI-compatible chat-completions server (images as image_url parts) and the web page",
        description="Serve /v1/chat/completions and /v1/models for the profile, and the web page at /. Loopback by "
        "default.")
    add_server_options(serve, port=8080).set_defaults(func=_serve)

    ui = subparsers.add_parser(
        "ui", help="the web page: draw marks on an image, ask, watch the route and the answer stream in",
        description="Start the server on loopback and print the web page's URL (the same page `serve` has at /).")
    add_server_options(ui, port=7860)
    ui.add_argument("--open", action="store_true", help="open the page in the default web browser")
    ui.set_defaults(func=_ui)

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
