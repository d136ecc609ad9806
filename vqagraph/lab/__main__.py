"""`python -m vqagraph.lab [--bridge | --projection] [--quick] [--out DIR] [--seed S] …`: what `vqagraph world train`
runs, in a process of its own, so that the runtime never imports the lab. The options are the command's own
(`vqagraph.world.cli.add_train_options`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from vqagraph.world.cli import add_train_options


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the trainer the options name; return what it prints (timings, losses, held-out numbers, models)."""
    if args.projection:
        from vqagraph.lab.projection import FULL, QUICK, train_projection

        plan = QUICK if args.quick else FULL
        changes = {"lm_steps": args.lm_steps, "lm_lr": args.lm_lr,
                   "budget_s": None if args.budget_minutes is None else 60 * args.budget_minutes}
        plan = replace(plan, **{k: v for k, v in changes.items() if v is not None})
        notes = train_projection(args.out, seed=args.seed, quick=args.quick, threads=args.threads, resume=args.resume,
                                 plan=plan, continue_from=args.continue_from)
        return {k: notes[k] for k in ("timings_s", "losses", "heldout_accuracy", "model")}
    if args.bridge:
        from vqagraph.lab.qformer import train_bridge

        vision_dir = args.vision_dir
        if vision_dir is None and args.out and (Path(args.out) / "shapes-blip-captioner").is_dir():
            vision_dir = args.out  # the text route's models trained into the same folder
        summary = train_bridge(args.out, seed=args.seed, quick=args.quick, vision_dir=vision_dir, llm=args.llm,
                               threads=args.threads, num_query_tokens=args.queries, resume=args.resume)
        return {k: summary[k] for k in ("timings_s", "losses", "probe", "models")}
    from vqagraph.lab.text_route import train_all

    summary = train_all(args.out, seed=args.seed, quick=args.quick, threads=args.threads, workers=args.workers,
                        resume=args.resume)
    return {k: summary[k] for k in ("timings_s", "losses", "models")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vqagraph world train",
                                     description="train the shapes profile's models from a seed")
    add_train_options(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.bridge and args.projection:
        parser.error("choose --bridge or --projection, one per run")
    projection_only = [f for f, v in (("--continue-from", args.continue_from), ("--lm-steps", args.lm_steps),
                                      ("--lm-lr", args.lm_lr), ("--budget-minutes", args.budget_minutes))
                       if v is not None]
    if projection_only and not args.projection:
        parser.error(f"{', '.join(projection_only)} only go with --projection")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and args.threads is None:
        # OpenMP reads its wait policy when torch loads, and spinning threads are 10-20x slower on a busy 2-core
        # CPU (lab/progress.py `default_threads`): run again in a fresh process that waits passively.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        return subprocess.call([sys.executable, "-m", "vqagraph.lab", *argv], env=env)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(json.dumps(train(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
