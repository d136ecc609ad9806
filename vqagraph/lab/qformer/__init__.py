"""Training the Shapes world's Q-Former bridges into SmolLM2-135M (BLIP-2 and InstructBLIP; docs/methods.md §2).

`train_bridge(out_dir, seed, quick)` reproduces both checkpoints from a seed; `add_bridge_train_options(parser)`
adds the options `vqagraph world train --bridge` takes. Nothing here runs at import time.
"""

from vqagraph.lab.qformer.cli import (
    FULL,
    NAMES,
    QUICK,
    BridgePlan,
    add_bridge_train_options,
    run_bridge_train,
    train_bridge,
)

__all__ = ["FULL", "NAMES", "QUICK", "BridgePlan", "add_bridge_train_options", "run_bridge_train", "train_bridge"]
