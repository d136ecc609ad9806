"""`vqagraph world …`: write a Shapes-world dataset, render one scene JSON (generated or hand-written), or
train the `shapes` profile's models.

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

    train = world_sub.add_parser(
        "train", help="train the shapes profile's models from a seed: the text route's, with --bridge the Q-Formers, "
        "with --projection the LLaVA projector")
    add_train_options(train)
    train.set_defaults(func=_train, train_parser=train)
    return world


def _split(args: argparse.Namespace) -> int:
    from vqagraph.world.splits import write_split

    summary = write_split(args.name, args.out, args.questions, args.per_scene)
    print(f"{args.out}: {summary['questions']} questions over {summary['scenes']} scenes {summary['families']}")
    return 0


def add_train_options(train: argparse.ArgumentParser) -> None:
    """The options of `vqagraph world train`, declared once: here for the command, and read again by
    `python -m vqagraph.lab`, which the command runs."""
    train.add_argument("--bridge", action="store_true",
                       help="train the BLIP-2 and InstructBLIP bridges into the frozen LLM (needs the text route's "
                       "trained vision model, see --vision-dir)")
    train.add_argument("--projection", action="store_true",
                       help="train the projection bridge (LLaVA's projector) into the frozen LLM")
    train.add_argument("--quick", action="store_true", help="a tiny run (under a minute) that shows the losses drop")
    train.add_argument("--out", default=None, help="where the model folders go (default: the package's weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: up to 2)")
    train.add_argument("--workers", type=int, default=None, help="processes rendering scenes (default: up to 2)")
    train.add_argument("--resume", action="store_true",
                       help="continue a stopped run from its last checkpoint (same --out, --seed)")
    train.add_argument("--vision-dir", default=None,
                       help="--bridge: the folder holding shapes-blip-captioner/ and shapes-blip-itm/ (default: "
                       "--out when it has them, else the package's weights)")
    train.add_argument("--llm", default="builtin:smollm2-135m-instruct", help="--bridge: the frozen LLM")
    train.add_argument("--queries", type=int, default=None, help="--bridge: learned query tokens (default 8)")
    train.add_argument("--continue-from", default=None,
                       help="--projection: start the LM stage from this trained projector's folder (no warm start)")
    train.add_argument("--lm-steps", type=int, default=None, help="--projection: LM-stage steps (default: the plan's)")
    train.add_argument("--lm-lr", type=float, default=None, help="--projection: LM-stage peak learning rate")
    train.add_argument("--budget-minutes", type=float, default=None,
                       help="--projection: the run stops its LM stage at this deadline (default: the plan's 90)")


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The options of `args` that differ from `parser`'s defaults, as a command line again."""
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        argv += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
    return argv


def _train(args: argparse.Namespace) -> int:
    """The trainers live in `vqagraph.lab`, above the runtime, which never imports them: the command runs them in
    a process of their own, with OpenMP waiting passively (two torch threads are then fast on a busy 2-core CPU)."""
    import os
    import subprocess
    import sys

    if args.bridge and args.projection:
        args.train_parser.error("choose --bridge or --projection, one per run")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    argv = command_line(args.train_parser, args)
    return subprocess.call([sys.executable, "-m", "vqagraph.lab", *argv], env=env)
