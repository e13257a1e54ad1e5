"""Wall-clock readings for benches that may run on a GPU."""
from __future__ import annotations

import time

import torch


def now() -> float:
    """perf_counter after the GPU's queued work is done, so that work counts towards the part that queued it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()
