"""What every trainer of the lab shares: where it writes by default, a progress bar per stage that logs the running
losses, the first and last tenth of a loss curve for training.json, and how many torch threads to use."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

LOG = logging.getLogger("vqagraph_lab")


def default_out() -> Path:
    """Where a trainer writes when no folder is named: the cache, never the installed package."""
    from vqagraph.hub import cache_root

    return cache_root() / "lab"


class Progress:
    """A tqdm bar per stage that also logs the running losses every tenth of the stage (every trainer uses it)."""

    def __init__(self, name: str, total: int, enabled: bool, position: int | None = None,
                 log: logging.Logger = LOG) -> None:
        from tqdm.auto import tqdm

        self.log = log
        self.name = name
        self.bar = tqdm(total=total, desc=name, disable=not enabled, dynamic_ncols=True, mininterval=1.0,
                        position=position)
        self.every = max(1, total // 10)
        self.sums: dict[str, float] = {}
        self.count = 0
        self.total = total

    def __call__(self, step: int, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.bar.update(1)
        if (step + 1) % self.every == 0 or step + 1 == self.total:
            mean = {k: round(v / self.count, 4) for k, v in self.sums.items()}
            self.bar.set_postfix(mean)
            self.log.info("%s step %d/%d %s", self.name, step + 1, self.total, mean)
            self.sums, self.count = {}, 0

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def curve(values: list[float]) -> dict[str, float]:
    k = max(1, len(values) // 10)
    return {"first": round(float(np.mean(values[:k])), 4), "last": round(float(np.mean(values[-k:])), 4),
            "steps": len(values)}


def default_threads() -> int:
    """Two torch threads only when OpenMP waits passively: with its default spinning, two threads on a
    2-core machine that other processes also use ran 10-20x slower than one (measured here)."""
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        return 1
    return max(1, min(2, os.cpu_count() or 1))
