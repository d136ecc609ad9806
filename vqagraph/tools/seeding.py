"""Seeded sampling that stays reproducible when routes run in threads (route `both`).

`generate(do_sample=True)` draws only from torch's global generator, and `fork_rng` restores that generator
when it exits: two threads inside `fork_rng` rewind each other's draws. One lock per process serialises
the seeded blocks, so a question answers the same way alone or beside another route.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded (when `seed` is given) and restored afterwards."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield
