"""`python -m vqagraph.lab [--bridge | --projection] [--quick] [--out DIR] [--seed S] …`: what `vqagraph world train`
runs, in a process of its own, so that the runtime never imports the lab. The options are the command's own
(`vqagraph.world.cli.add_train_options`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vqagraph.world.cli import add_train_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vqagraph world train",
                                     description="train the shapes profile's models from a seed")
    add_train_options(parser)
    args = parser.parse_args(argv)
    if args.bridge and args.projection:
        parser.error("choose --bridge or --projection, one per run")
    if args.projection:
        from vqagraph.lab.projection import run_projection_train

        return run_projection_train(args)
    if args.bridge:
        from vqagraph.lab.qformer.cli import run_bridge_train

        if args.vision_dir is None and args.out and (Path(args.out) / "shapes-blip-captioner").is_dir():
            args.vision_dir = args.out
        return run_bridge_train(args)
    from vqagraph.lab.text_route.cli import run_train

    return run_train(args)


if __name__ == "__main__":
    sys.exit(main())
