"""Training the Shapes world's Q-Former bridges into SmolLM2-135M (BLIP-2 and InstructBLIP; docs/methods.md §2).

`train_bridge(out_dir, seed, quick)` reproduces both checkpoints from a seed (`vqagraph-lab --bridge`).
Nothing here runs at import time.
"""

from vqagraph_lab.qformer.train import FULL, NAMES, QUICK, BridgePlan, train_bridge

__all__ = ["FULL", "NAMES", "QUICK", "BridgePlan", "train_bridge"]
