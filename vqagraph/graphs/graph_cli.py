"""`vqagraph graph …`: check a graph spec, draw it (Mermaid; PNG with Graphviz), list the node catalogue.

Errors are `VQAGraphError`s, printed as one line with exit status 2, as everywhere in the CLI.
`python -m vqagraph.graphs.graph_cli check FILE` runs these commands on their own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vqagraph.errors import VQAGraphError
from vqagraph.graphs.spec import compile_file, load_graph

__all__ = ["GraphvizMissingError", "add_graph_commands", "load_graph", "main"]

PNG_HELP = ("--png needs Graphviz and pygraphviz (e.g. `apt install graphviz libgraphviz-dev` then "
            "`pip install pygraphviz`); paste the Mermaid text above into https://mermaid.live to see the graph")


class GraphvizMissingError(VQAGraphError):
    """A PNG of a graph was asked for, but pygraphviz (Graphviz) is not installed."""


def _check(args: argparse.Namespace) -> int:
    compiled = compile_file(args.file)
    spec = compiled.spec
    edges = sum(len(b.targets) * len(b.sources) for b in compiled.branches)
    print(f"ok: {spec.name} ({len(compiled.nodes)} nodes, {edges} edges) from {args.file}")
    for name, node in compiled.nodes.items():
        entry = node.entry
        bound = f", at most {node.spec.max_visits} visits then {node.spec.on_limit}" if node.spec.max_visits else ""
        print(f"  {name}: {entry.name}{bound}  reads {', '.join(entry.reads) or '-'} → writes "
              f"{', '.join(entry.writes) or '-'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    graph = load_graph(args.file)
    drawable: Any = graph.get_graph()
    print(drawable.draw_mermaid())
    if args.png:
        try:
            import pygraphviz  # noqa: F401
        except ImportError:
            raise GraphvizMissingError(PNG_HELP) from None
        drawable.draw_png(str(Path(args.png)))
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _nodes(_args: argparse.Namespace) -> int:
    from vqagraph.graphs.library import describe

    print(describe())
    return 0


def add_graph_commands(subparsers: Any) -> None:
    """Register `graph check FILE`, `graph show FILE [--png OUT]` and `graph nodes` on the CLI's subparsers."""
    graph = subparsers.add_parser("graph", help="custom graphs from YAML/JSON specs: check, draw, list the nodes")
    sub = graph.add_subparsers(dest="graph_command", required=True)
    check = sub.add_parser("check", help="validate a graph spec and compile it; errors name the spec location")
    check.add_argument("file", help="a YAML or JSON graph spec (see examples/graphs)")
    check.set_defaults(func=_check)
    show = sub.add_parser("show", help="print the graph as Mermaid text; --png draws it with Graphviz")
    show.add_argument("file")
    show.add_argument("--png", default=None, metavar="OUT.png", help="also write a PNG (needs pygraphviz)")
    show.set_defaults(func=_show)
    nodes = sub.add_parser("nodes", help="list every node and condition a spec can use, with its keys and settings")
    nodes.set_defaults(func=_nodes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vqagraph")
    add_graph_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["graph", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except VQAGraphError as exc:
        print(f"vqagraph: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
