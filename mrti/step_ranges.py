"""Turning state spans into the sampling-progress ranges that ComfyUI conditioning is scheduled by.

A conditioning entry with `start_percent`/`end_percent` is active at a step whose sigma lies between
`percent_to_sigma(start)` and `percent_to_sigma(end)`, inclusive at both ends. For the SD family's discrete
model sampling, progress `p` maps to the fractional timestep `(1 - p) * 999` and a step's own timestep
is the integer whose log-sigma lies nearest to the step's. So the boundary between integer timesteps
`T - 1` and `T` is exactly the fractional timestep `T - 0.5`: a span ending at `T` must reach down to
there, whatever the model's sigmas are.

A scheduler can ask for a step exactly on such a midpoint (the `normal` scheduler does at `t = 499.5`
for any odd number of steps). Both neighbouring entries would be active there and the host would average
two states, so the lower span starts a hair below the midpoint: ties go to the upper span, the one the
floor rule of docs/method.md gives for the SD schedules' rounding at `t = 500`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schedule import NUM_TIMESTEPS, StateSpan

_LAST = NUM_TIMESTEPS - 1  # the host maps progress onto timesteps 999 … 0


@dataclass(frozen=True)
class ProgressRange:
    start_percent: float
    end_percent: float


def _percent_at(timestep: float) -> float:
    return min(max(1.0 - timestep / _LAST, 0.0), 1.0)


def progress_range(span: StateSpan) -> ProgressRange:
    """The `start_percent`/`end_percent` that make a conditioning entry active exactly on `span`."""
    if span.t_max >= _LAST:
        start = 0.0
    else:
        # The float32 just below the midpoint: the host evaluates sigma at float32 timesteps.
        start = _percent_at(float(np.nextafter(np.float32(span.t_max + 0.5), np.float32(0))))
    end = 1.0 if span.t_min <= 0 else _percent_at(span.t_min - 0.5)
    return ProgressRange(start, end)
