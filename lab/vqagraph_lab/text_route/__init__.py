"""Training the Shapes-world models of the text route (BLIP captioner, BLIP ITM, T5 question generator).

`train_all(out_dir, seed, quick)` reproduces them from a seed (`vqagraph-lab`). Nothing here runs at import
time.
"""

from vqagraph_lab.text_route.train import FULL, NAMES, QUICK, WEIGHTS_DIR, Plan, train_all

__all__ = ["FULL", "NAMES", "QUICK", "WEIGHTS_DIR", "Plan", "train_all"]
