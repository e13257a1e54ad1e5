"""Where on a model's sigma axis each state span is active (docs/method.md, "Time and buckets").

The host activates a conditioning entry at a model call whose sigma `s` satisfies
`timestep_end <= s <= timestep_start` (both optional). The method asks that the state used at a call be
the one for the timestep the model itself computes from `s`. So the span edges must be placed in sigma,
at exactly the float32 values where the model's own `timestep(sigma)` changes, which differ from table to
table (zero-terminal SNR, LCM's distilled table) and lie between table entries, where a scheduler may well
ask for a step (the `normal` scheduler reaches t = 499.5 at odd step counts).

`timestep_edges` finds those values by bisection over float32 bit patterns, calling the model's own
timestep function, so the host's float32 rounding decides every tie. Adjacent spans then meet at one
edge value `a`: the upper span is active from `a` up, the lower one up to the float32 just below `a`.
The host's samplers carry sigma as float32 and compare it with these bounds in float32, so every sigma
lies in exactly one span.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import MrtiError
from .schedule import NUM_TIMESTEPS, StateSpan

_LAST = NUM_TIMESTEPS - 1


@dataclass(frozen=True)
class SigmaRange:
    """A conditioning entry's `timestep_start` (upper) and `timestep_end` (lower); None is unbounded."""

    upper: float | None
    lower: float | None


@dataclass(frozen=True)
class TimestepEdges:
    """`lowest[T]` (T = 0 ... 1000): the smallest sigma the model maps to a timestep of T or more.

    0.0 where every sigma maps that high (T at or below the table's lowest timestep), infinity where no
    sigma does (above its highest)."""

    lowest: tuple[float, ...]

    def sigma_range(self, span: StateSpan) -> SigmaRange | None:
        """The sigmas whose model timestep lies in `span`, or None if the model never computes one there."""
        lower = None if span.t_min <= 0 else self.lowest[span.t_min]
        upper = None
        if span.t_max < _LAST:
            edge = self.lowest[span.t_max + 1]
            if edge <= 0.0:
                return None
            upper = float(np.nextafter(np.float32(edge), np.float32(0)))
        if lower is not None and (math.isinf(lower) or (upper is not None and lower > upper)):
            return None
        return SigmaRange(upper, lower)


def _float_bits(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)


def _bits_float(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int32).view(torch.float32)


def timestep_edges(table: torch.Tensor, timestep_of: Callable[[torch.Tensor], torch.Tensor]) -> TimestepEdges:
    """The edges of a model whose sigma table is `table` and whose `timestep(sigma)` is `timestep_of`.

    `timestep_of` must map sigma to an integer timestep in 0 ... 999, non-decreasing in sigma (true of every
    discrete table: it picks the table entry nearest in log sigma)."""
    sigmas = table.detach().to("cpu", torch.float32).flatten().sort().values
    if sigmas.numel() == 0 or not bool(torch.isfinite(sigmas).all()) or float(sigmas[0]) <= 0.0:
        raise MrtiError("the model's sigma table is empty or holds a value that is not a positive number")

    def steps_of(values: torch.Tensor) -> torch.Tensor:
        out = timestep_of(values).detach().to("cpu")
        if out.is_floating_point():
            if not bool((out == out.round()).all()):
                raise MrtiError("the model's timestep is not a whole number, so its buckets are undefined")
            out = out.round()
        return out.to(torch.int64)

    steps = steps_of(sigmas)
    if int(steps.min()) < 0 or int(steps.max()) > _LAST or bool((steps[1:] < steps[:-1]).any()):
        raise MrtiError("the model's timesteps do not run from 0 to 999 in the order of its sigmas")
    change = torch.nonzero(steps[1:] > steps[:-1]).flatten()
    # Invariant: timestep(low) < wanted <= timestep(high); positive floats order like their bit patterns.
    low, high = _float_bits(sigmas[change]), _float_bits(sigmas[change + 1])
    wanted = steps[change + 1]
    while bool((high - low > 1).any()):
        middle = (low + high) // 2
        reached = steps_of(_bits_float(middle)) >= wanted
        high = torch.where(reached, middle, high)
        low = torch.where(reached, low, middle)
    first = _bits_float(high).tolist()

    lowest, step_list, wanted_list = [], steps.tolist(), wanted.tolist()
    k = 0
    for t in range(NUM_TIMESTEPS + 1):
        if t <= step_list[0]:
            lowest.append(0.0)
        elif t > step_list[-1]:
            lowest.append(math.inf)
        else:
            while wanted_list[k] < t:
                k += 1
            lowest.append(first[k])
    return TimestepEdges(tuple(lowest))


def progress_range(span: StateSpan) -> tuple[float, float]:
    """`start_percent`/`end_percent` for `span` on the standard SD table, integer timesteps only.

    Used only where the host recomputes sigma bounds from percents anyway (a CLIP with scheduled hooks);
    a step between two integer timesteps may then get the neighbouring span's state."""
    def percent(timestep: float) -> float:
        return min(max(1.0 - timestep / _LAST, 0.0), 1.0)

    start = 0.0 if span.t_max >= _LAST else percent(float(np.nextafter(np.float32(span.t_max + 0.5),
                                                                        np.float32(0))))
    end = 1.0 if span.t_min <= 0 else percent(span.t_min - 0.5)
    return start, end
