"""Training the Shapes-world models of the text route (BLIP captioner, BLIP ITM, T5 question generator).

`train_all(out_dir, seed, quick)` reproduces them from a seed; `add_train_command(world_subparsers)` registers
`vqagraph world train [--quick] [--out DIR] [--seed S]`. Nothing here runs at import time.
"""

from vqagraph.lab.text_route.cli import FULL, NAMES, QUICK, WEIGHTS_DIR, Plan, add_train_command, run_train, train_all

__all__ = ["FULL", "NAMES", "QUICK", "WEIGHTS_DIR", "Plan", "add_train_command", "run_train", "train_all"]
