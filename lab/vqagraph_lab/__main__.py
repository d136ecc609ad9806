"""`vqagraph-lab [--bridge | --projection | --adapter] [--quick] [--out DIR] [--seed S] …` (or `python -m
vqagraph_lab`): train the `shapes` profile's models from a seed, into a folder the user names (default: the cache's
`lab/` folder; the shipped weights change only with `--out vqagraph/weights`)."""

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

from vqagraph_lab.progress import default_out


def add_train_options(train: argparse.ArgumentParser) -> None:
    """The trainers' options: the text route's models by default, the Q-Formers with --bridge, the projector with
    --projection, LLaMA-Adapter with --adapter."""
    train.add_argument("--bridge", action="store_true",
                       help="train the BLIP-2 and InstructBLIP bridges into the frozen LLM (needs the text route's "
                       "trained vision model, see --vision-dir)")
    train.add_argument("--projection", action="store_true",
                       help="train the projection bridge (LLaVA's projector) into the frozen LLM")
    train.add_argument("--adapter", action="store_true",
                       help="train LLaMA-Adapter's gated adaption prompts inside the frozen LLM, on a trained "
                       "Q-Former's visual feature (see --qformer)")
    train.add_argument("--qformer", default=None,
                       help="--adapter: the frozen Q-Former checkpoint whose queries are the visual feature "
                       "(default builtin:shapes-blip2; builtin:shapes-instructblip for question-conditioned ones)")
    train.add_argument("--layers", type=int, default=None, help="--adapter: adapted layers L, from the top")
    train.add_argument("--prompt-len", type=int, default=None, help="--adapter: adaption prompts K per layer")
    train.add_argument("--steps", type=int, default=None, help="--adapter: training steps (default: the plan's)")
    train.add_argument("--lr", type=float, default=None, help="--adapter: peak learning rate (default: the plan's)")
    train.add_argument("--into", choices=("adapter", "input"), default=None,
                       help="--adapter: where the queries enter the LLM: the adaption prompts (default), or the "
                       "input (the survey's 2×2 input cell on the same plan: the Q-Former's language projection "
                       "trained on, written as shapes-qformer-input/)")
    train.add_argument("--quick", action="store_true", help="a tiny run (under a minute) that shows the losses drop")
    train.add_argument("--out", default=None,
                       help=f"where the model folders go (default: {default_out()}; the shipped models are "
                       "vqagraph/weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: up to 2)")
    train.add_argument("--workers", type=int, default=None, help="processes rendering scenes (default: up to 2)")
    train.add_argument("--resume", action="store_true",
                       help="continue a stopped run from its last checkpoint (same --out, --seed)")
    train.add_argument("--vision-dir", default=None,
                       help="--bridge: the folder holding shapes-blip-captioner/ and shapes-blip-itm/ (default: "
                       "--out when it has them, else the shipped weights)")
    train.add_argument("--llm", default="builtin:smollm2-135m-instruct", help="--bridge: the frozen LLM")
    train.add_argument("--queries", type=int, default=None, help="--bridge: learned query tokens (default 8)")
    train.add_argument("--continue-from", default=None,
                       help="--projection: start the LM stage from this trained projector's folder (no warm start)")
    train.add_argument("--lm-steps", type=int, default=None, help="--projection: LM-stage steps (default: the plan's)")
    train.add_argument("--lm-lr", type=float, default=None, help="--projection: LM-stage peak learning rate")
    train.add_argument("--budget-minutes", type=float, default=None,
                       help="--projection, --adapter: the run stops training at this deadline (default: the "
                       "plan's 90)")


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the trainer the options name; return what it prints (timings, losses, held-out numbers, models)."""
    if args.projection:
        from vqagraph_lab.projection import FULL, QUICK, train_projection

        plan = QUICK if args.quick else FULL
        changes = {"lm_steps": args.lm_steps, "lm_lr": args.lm_lr,
                   "budget_s": None if args.budget_minutes is None else 60 * args.budget_minutes}
        plan = replace(plan, **{k: v for k, v in changes.items() if v is not None})
        notes = train_projection(args.out, seed=args.seed, quick=args.quick, threads=args.threads, resume=args.resume,
                                 plan=plan, continue_from=args.continue_from)
        return {k: notes[k] for k in ("timings_s", "losses", "heldout_accuracy", "model")}
    if args.adapter:
        from vqagraph_lab.adapter import FULL as ADAPTER_FULL
        from vqagraph_lab.adapter import QFORMER, train_adapter
        from vqagraph_lab.adapter import QUICK as ADAPTER_QUICK

        adapter_plan = ADAPTER_QUICK if args.quick else ADAPTER_FULL
        changes = {"adapter_layers": args.layers, "adapter_len": args.prompt_len, "steps": args.steps, "lr": args.lr,
                   "budget_s": None if args.budget_minutes is None else 60 * args.budget_minutes}
        adapter_plan = replace(adapter_plan, **{k: v for k, v in changes.items() if v is not None})
        notes = train_adapter(args.out, seed=args.seed, quick=args.quick, llm=args.llm,
                              qformer=args.qformer or QFORMER, threads=args.threads, workers=args.workers,
                              plan=adapter_plan, resume=args.resume, into=args.into or "adapter")
        return {k: notes[k] for k in ("timings_s", "losses", "heldout_accuracy", "gates", "model")}
    if args.bridge:
        from vqagraph_lab.qformer import train_bridge

        vision_dir = args.vision_dir
        if vision_dir is None and args.out and (Path(args.out) / "shapes-blip-captioner").is_dir():
            vision_dir = args.out  # the text route's models trained into the same folder
        summary = train_bridge(args.out, seed=args.seed, quick=args.quick, vision_dir=vision_dir, llm=args.llm,
                               threads=args.threads, num_query_tokens=args.queries, resume=args.resume)
        return {k: summary[k] for k in ("timings_s", "losses", "probe", "models")}
    from vqagraph_lab.text_route import train_all

    summary = train_all(args.out, seed=args.seed, quick=args.quick, threads=args.threads, workers=args.workers,
                        resume=args.resume)
    return {k: summary[k] for k in ("timings_s", "losses", "models")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vqagraph-lab",
                                     description="train the shapes profile's models from a seed")
    add_train_options(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if sum((args.bridge, args.projection, args.adapter)) > 1:
        parser.error("choose one of --bridge, --projection, --adapter per run")
    projection_only = [f for f, v in (("--continue-from", args.continue_from), ("--lm-steps", args.lm_steps),
                                      ("--lm-lr", args.lm_lr)) if v is not None]
    if projection_only and not args.projection:
        parser.error(f"{', '.join(projection_only)} only go with --projection")
    adapter_only = [f for f, v in (("--qformer", args.qformer), ("--layers", args.layers),
                                   ("--prompt-len", args.prompt_len), ("--steps", args.steps), ("--lr", args.lr),
                                   ("--into", args.into)) if v is not None]
    if adapter_only and not args.adapter:
        parser.error(f"{', '.join(adapter_only)} only go with --adapter")
    if args.budget_minutes is not None and not (args.projection or args.adapter):
        parser.error("--budget-minutes only goes with --projection or --adapter")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and args.threads is None:
        # OpenMP reads its wait policy when torch loads, and spinning threads are 10-20x slower on a busy 2-core
        # CPU (lab/progress.py `default_threads`): run again in a fresh process that waits passively.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        return subprocess.call([sys.executable, "-m", "vqagraph_lab", *argv], env=env)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(json.dumps(train(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
