"""`vqagraph world …`: write a Shapes-world dataset or a held-out split, or render one scene JSON (generated or
hand-written). Training the `shapes` profile's models is the lab's command, `vqagraph-lab` (lab/README.md).

`add_world_commands` registers the commands on the main CLI's subparsers; each handler takes the parsed
namespace and returns an exit code, and raises VQAGraphError subclasses that the main CLI prints as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _generate(args: argparse.Namespace) -> int:
    if args.n < 0:
        from vqagraph.world.scene import SceneError

        raise SceneError(f"--n must be at least 0, not {args.n}")
    if args.foreign:
        from vqagraph.world.foreign import write_foreign_dataset

        summary = write_foreign_dataset(args.out, args.seed, args.n, per_family=args.per_family)
    else:
        from vqagraph.world.dataset import write_dataset

        summary = write_dataset(args.out, args.seed, args.n, per_family=args.per_family)
    families = ", ".join(f"{k} {v}" for k, v in sorted(summary["families"].items()))
    print(f"{summary['scenes']} {summary['kind']} scenes, {summary['questions']} questions ({families}) in {args.out}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from vqagraph.world.draw import render_scene
    from vqagraph.world.scene import SceneError, load_scene

    scene = load_scene(Path(args.scene))
    try:
        render_scene(scene).save(args.out, format="PNG")
    except (OSError, ValueError) as exc:
        raise SceneError(f"cannot write {args.out!r} ({exc})") from exc
    print(args.out)
    return 0


def add_world_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register `world generate` and `world render` on an argparse subparsers object; returns the `world` parser."""
    world = subparsers.add_parser("world", help="the generated Shapes world: datasets and scene pictures")
    world_sub = world.add_subparsers(dest="world_command", required=True)

    generate = world_sub.add_parser("generate", help="write scenes, pictures, questions and captions to a folder")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--n", type=int, default=100, help="number of scenes")
    generate.add_argument("-o", "--out", required=True, help="output folder")
    generate.add_argument("--foreign", action="store_true",
                          help="draw with the independent plain drawer (a test of generalisation)")
    generate.add_argument("--per-family", type=int, default=2, help="questions per family per scene, at most")
    generate.set_defaults(func=_generate)

    render = world_sub.add_parser("render", help="draw a scene JSON (generated or hand-written) as a PNG")
    render.add_argument("scene", help="scene JSON: objects with shape, colour (name or [r, g, b]) and box")
    render.add_argument("-o", "--out", required=True, help="output PNG")
    render.set_defaults(func=_render)

    split = world_sub.add_parser(
        "split", help="write a held-out split (fixed seed, never trained on): validation, test, single-large, "
        "foreign, knowledge or paraphrase (the test split's questions reworded by hand)")
    split.add_argument("name", help="validation | test | single-large | foreign | knowledge | paraphrase")
    split.add_argument("-o", "--out", required=True, help="output folder")
    split.add_argument("--questions", type=int, default=300, help="questions in the split (default 300)")
    split.add_argument("--per-scene", type=int, default=4, help="questions per scene, at most (default 4)")
    split.set_defaults(func=_split)

    return world


def _split(args: argparse.Namespace) -> int:
    from vqagraph.world.splits import write_split

    summary = write_split(args.name, args.out, args.questions, args.per_scene)
    print(f"{args.out}: {summary['questions']} questions over {summary['scenes']} scenes {summary['families']}")
    return 0
