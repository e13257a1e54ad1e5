"""Which embedding each concept tag uses at each diffusion timestep (the table in docs/method.md).

Timesteps are the model's discrete steps, integers in ``range(1000)``; ``t = 999`` is pure noise.
Arithmetic on bucket edges is exact (integers and ``Fraction``), because a sampler step can land
exactly on an edge (e.g. ``t = 500``) and must then use exactly one state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from numbers import Real

import torch

from .errors import MrtiError
from .prompt_syntax import BucketIndex, DiffusionTime, Mode, ResolvedTag

NUM_TIMESTEPS = 1000


@dataclass(frozen=True)
class Embedding:
    index: int


@dataclass(frozen=True)
class Zero:
    pass


@dataclass(frozen=True)
class Blend:
    """``(1 - weight) * e_lower + weight * e_upper``."""

    lower: int
    upper: int
    weight: float


TokenState = Embedding | Zero | Blend


@dataclass(frozen=True)
class StateSpan:
    t_min: int
    t_max: int
    states: tuple[TokenState, ...]


def _check_num_scales(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MrtiError(f"number of scales must be a positive integer, got {n!r}")


def _exact(value: Real) -> Fraction:
    if isinstance(value, int):
        return Fraction(value)
    # repr gives back the decimal the user typed (e.g. 0.3), not the binary float nearest to it.
    number = float(value)
    if not math.isfinite(number):
        raise MrtiError(f"time {value!r} is not a finite number")
    return Fraction(repr(number))


def _bucket_exact(t: Fraction, n: int) -> int:
    return min(max(math.floor(t * n / NUM_TIMESTEPS), 0), n - 1)


def bucket_of(t: Real, n: int) -> int:
    """``floor(t * n / 1000)`` clipped to ``[0, n - 1]``."""
    _check_num_scales(n)
    if isinstance(t, int) and not isinstance(t, bool):
        return min(max((t * n) // NUM_TIMESTEPS, 0), n - 1)
    return _bucket_exact(_exact(t), n)


@lru_cache(maxsize=4096)
def _tau_timestep(tau: float) -> Fraction:
    return _exact(tau) * NUM_TIMESTEPS


@lru_cache(maxsize=4096)
def embedding_for_time(tau: float, n: int, interpolate: bool) -> TokenState:
    """``e(tau)``: the bucket holding ``tau``, or a blend of the two nearest bucket centres."""
    _check_num_scales(n)
    timestep = _tau_timestep(tau)
    if not interpolate:
        return Embedding(_bucket_exact(timestep, n))
    # Bucket i is centred on tau = (i + 0.5) / n, i.e. on position i in these units.
    position = timestep * n / NUM_TIMESTEPS - Fraction(1, 2)
    if position <= 0:
        return Embedding(0)
    if position >= n - 1:
        return Embedding(n - 1)
    lower = math.floor(position)
    weight = position - lower
    if weight == 0:
        return Embedding(lower)
    return Blend(lower, lower + 1, float(weight))


def _time_reached(t: Real, tau: float) -> bool:
    """``t / 1000 >= tau``, compared exactly."""
    threshold = _tau_timestep(tau)
    if isinstance(t, int):
        return t >= threshold
    return _exact(t) >= threshold


def state_at(tag: ResolvedTag, t: Real, interpolate: bool = False) -> TokenState:
    """The state of ``tag``'s token at timestep ``t``."""
    n = tag.num_scales
    bucket = bucket_of(t, n)
    resolution = tag.resolution
    if isinstance(resolution, BucketIndex):
        index = resolution.index
        if not 0 <= index < n:
            raise MrtiError(f"{tag.text}: bucket index {index} is outside 0 to {n - 1}")
        if tag.mode is Mode.FIXED:
            return Embedding(index)
        if bucket > index:
            return Embedding(bucket)
        return Embedding(index) if tag.mode is Mode.FULLY else Zero()
    if not isinstance(resolution, DiffusionTime):
        raise MrtiError(f"{tag.text}: unsupported resolution {resolution!r}")
    tau = resolution.tau
    if tag.mode is Mode.FIXED:
        return embedding_for_time(tau, n, interpolate)
    if _time_reached(t, tau):
        return Embedding(bucket)
    return embedding_for_time(tau, n, interpolate) if tag.mode is Mode.FULLY else Zero()


def state_spans(tags: Sequence[ResolvedTag], interpolate: bool = False) -> tuple[StateSpan, ...]:
    """Maximal runs of timesteps sharing one state tuple, from ``t = 999`` down to ``t = 0``."""
    spans: list[StateSpan] = []
    run_states: tuple[TokenState, ...] | None = None
    run_top = NUM_TIMESTEPS - 1
    for t in range(NUM_TIMESTEPS - 1, -1, -1):
        states = tuple(state_at(tag, t, interpolate) for tag in tags)
        if run_states is None:
            run_states = states
        elif states != run_states:
            spans.append(StateSpan(t + 1, run_top, run_states))
            run_states, run_top = states, t
    assert run_states is not None
    spans.append(StateSpan(0, run_top, run_states))
    return tuple(spans)


def distinct_states(spans: Iterable[StateSpan]) -> tuple[tuple[TokenState, ...], ...]:
    """The different state tuples among ``spans``, in first-seen order."""
    return tuple(dict.fromkeys(span.states for span in spans))


def materialize(state: TokenState, embeddings: torch.Tensor) -> torch.Tensor:
    """The ``[V, W]`` vectors for ``state`` taken from a concept's ``[N, V, W]`` embeddings."""
    n = embeddings.shape[0]
    if isinstance(state, Zero):
        return torch.zeros(embeddings.shape[1:], dtype=embeddings.dtype, device=embeddings.device)
    if isinstance(state, Embedding):
        if not 0 <= state.index < n:
            raise MrtiError(f"embedding index {state.index} is outside 0 to {n - 1}")
        return embeddings[state.index]
    if isinstance(state, Blend):
        if not (0 <= state.lower < n and 0 <= state.upper < n):
            raise MrtiError(f"blend of embeddings {state.lower} and {state.upper} is outside 0 to {n - 1}")
        return (1.0 - state.weight) * embeddings[state.lower] + state.weight * embeddings[state.upper]
    raise MrtiError(f"unknown token state {state!r}")
