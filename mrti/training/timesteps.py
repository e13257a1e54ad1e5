"""Which diffusion timestep each training example uses, and the running estimate of g(t).

g(t) is the conditional-gradient paper's equation 4: the expected norm of the gradient, with respect to the
condition, of the *unsquared* norm of the model's prediction error at timestep t (docs/method.md, "Which
timesteps to train on", says how the loop gets it from the backward pass it makes anyway). The trainer
records it for every strategy; the adaptive strategy also samples from it (equation 5).

The running estimate
--------------------
Per band of ``BAND_WIDTH`` timesteps, the plain mean of the first ``1 / EMA_RATE`` measurements, then an
exponential average that forgets old ones: g(t) changes as the vectors train, and a band's first
measurements are the noisiest. Bands never measured count at the mean of the measured ones, so a run
starts uniform and no band is starved before it was seen.

Adaptive sampling and its floor
-------------------------------
``p(t) = (1 - floor) * g(t)^k / sum(g^k) + floor * 1 / (N * |bucket(t)|)``

a mixture of the g(t)-proportional distribution the paper samples from (k = 1; a larger k, the run's
``g_power``, follows g(t) more sharply) and a "bucket-uniform" one that picks one of the N buckets
uniformly and then a timestep uniformly inside it. The second part alone gives every bucket probability
``floor / N``, so every one of the N embeddings keeps receiving examples however small its g(t) is. With
one embedding (N = 1, the paper's setting) every example trains it, so there is nothing to protect and
the floor is not applied: the draw is exactly equation 5 (k = 1).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..errors import MrtiError
from ..schedule import NUM_TIMESTEPS, bucket_of

BAND_WIDTH = 20
NUM_BANDS = NUM_TIMESTEPS // BAND_WIDTH
# Weight of a new measurement in a band's running estimate once it has 1 / EMA_RATE of them: g(t) drifts
# as the vectors train, so old measurements are forgotten, over about ten visits to the band.
EMA_RATE = 0.1
# What the estimates measure; checkpoints from before g(t) followed equation 4 have no such mark.
MEASURE = "eq4"


def band_of(t: int) -> int:
    return min(max(int(t), 0), NUM_TIMESTEPS - 1) // BAND_WIDTH


class GradientBands:
    """Per band of ``BAND_WIDTH`` timesteps: a running mean of the measured gradient norms."""

    def __init__(self, rate: float = EMA_RATE) -> None:
        self.rate = rate
        self.estimate = [0.0] * NUM_BANDS
        self.count = [0] * NUM_BANDS

    def observe(self, t: int, value: float) -> None:
        if not math.isfinite(value):
            return
        band = band_of(t)
        self.count[band] += 1
        weight = max(1.0 / self.count[band], self.rate)
        self.estimate[band] += weight * (float(value) - self.estimate[band])

    def estimates(self) -> list[float | None]:
        """The estimate per band, ``None`` where nothing was measured."""
        return [est if n else None for est, n in zip(self.estimate, self.count)]

    def filled(self) -> list[float]:
        """Estimates with unmeasured bands set to the mean of the measured ones (1.0 if none is)."""
        measured = [est for est, n in zip(self.estimate, self.count) if n]
        fill = sum(measured) / len(measured) if measured else 1.0
        return [est if n else fill for est, n in zip(self.estimate, self.count)]

    def state_dict(self) -> dict:
        return {"rate": self.rate, "estimate": list(self.estimate), "count": list(self.count), "measure": MEASURE}

    def load_state_dict(self, state: dict) -> None:
        estimate, count = state.get("estimate"), state.get("count")
        if not (isinstance(estimate, list) and isinstance(count, list)
                and len(estimate) == NUM_BANDS and len(count) == NUM_BANDS):
            raise MrtiError(f"gradient statistics must hold {NUM_BANDS} bands")
        self.rate = float(state.get("rate", EMA_RATE))
        self.estimate = [float(v) for v in estimate]
        self.count = [int(v) for v in count]


def measures_eq4(state: dict) -> bool:
    """Whether saved band statistics (``GradientBands.state_dict``) measure g(t) as equation 4 defines it."""
    return state.get("measure") == MEASURE


def adaptive_probabilities(bands: list[float], num_scales: int, floor: float, power: float = 1.0) -> torch.Tensor:
    """``p(t)`` over the 1000 timesteps (float64), as described in the module docstring, with g(t) raised to
    ``power`` (1: equation 5; larger values sharpen the draw towards the bands of largest g)."""
    if num_scales == 1:
        floor = 0.0
    per_band = torch.tensor(bands, dtype=torch.float64).clamp_min(0.0) ** power
    g = per_band.repeat_interleave(BAND_WIDTH)
    total = float(g.sum())
    proportional = g / total if total > 0 else torch.full_like(g, 1.0 / NUM_TIMESTEPS)
    return (1.0 - floor) * proportional + floor * _bucket_uniform(num_scales)


@lru_cache(maxsize=64)
def _bucket_uniform(num_scales: int) -> torch.Tensor:
    """Pick one of the N buckets uniformly, then a timestep uniformly inside it."""
    buckets = torch.tensor([bucket_of(t, num_scales) for t in range(NUM_TIMESTEPS)])
    sizes = torch.bincount(buckets, minlength=num_scales).to(torch.float64)
    return 1.0 / (num_scales * sizes[buckets])


class TimestepSampler:
    """Draws one integer timestep per call from the run's generator."""

    kind = "uniform"

    def sample(self, generator: torch.Generator) -> int:
        return int(torch.randint(0, NUM_TIMESTEPS, (1,), generator=generator))


class IntervalSampler(TimestepSampler):
    kind = "interval"

    def __init__(self, t_min: int, t_max: int) -> None:
        if not 0 <= t_min <= t_max < NUM_TIMESTEPS:
            raise MrtiError(f"timestep interval [{t_min}, {t_max}] must lie within [0, {NUM_TIMESTEPS - 1}]")
        self.t_min, self.t_max = t_min, t_max

    def sample(self, generator: torch.Generator) -> int:
        return int(torch.randint(self.t_min, self.t_max + 1, (1,), generator=generator))


class AdaptiveSampler(TimestepSampler):
    kind = "adaptive"

    def __init__(self, bands: GradientBands, num_scales: int, floor: float, power: float = 1.0) -> None:
        self.bands, self.num_scales, self.floor, self.power = bands, num_scales, floor, power

    def probabilities(self) -> torch.Tensor:
        return adaptive_probabilities(self.bands.filled(), self.num_scales, self.floor, self.power)

    def sample(self, generator: torch.Generator) -> int:
        cdf = torch.cumsum(self.probabilities(), 0)
        u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
        return min(int(torch.searchsorted(cdf, u, right=True)), NUM_TIMESTEPS - 1)


def unreachable_buckets(kind: str, num_scales: int, t_min: int = 0, t_max: int = NUM_TIMESTEPS - 1) -> tuple[int, ...]:
    """Buckets that ``kind`` sampling never draws a timestep from: their embeddings never train.

    Only interval sampling has such buckets; uniform reaches all, and adaptive keeps giving every bucket
    examples (through its floor, or through the mean that unmeasured bands count at).
    """
    if kind != "interval":
        return ()
    reached = {bucket_of(t_min, num_scales), bucket_of(t_max, num_scales)}
    reached.update(range(min(reached), max(reached) + 1))
    return tuple(b for b in range(num_scales) if b not in reached)


def index_ranges(indices) -> str:
    """``0-2, 5, 7-9`` for the sorted integers ``indices``."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def coverage_warning(kind: str, num_scales: int, t_min: int, t_max: int, init_word: str) -> str | None:
    """What to tell the user before a run whose sampling leaves some embeddings untrained, or None."""
    missing = unreachable_buckets(kind, num_scales, t_min, t_max)
    if not missing:
        return None
    reached = [b for b in range(num_scales) if b not in missing]
    return (f"{kind} sampling over t {t_min}..{t_max} reaches only scale(s) {index_ranges(reached)} of "
            f"{num_scales}: scale(s) {index_ranges(missing)} get no training examples and stay at the init "
            f"word {init_word!r}. Widen t_min..t_max, or use uniform or adaptive sampling, to train them all.")


def make_sampler(kind: str, bands: GradientBands, num_scales: int, t_min: int = 0,
                 t_max: int = NUM_TIMESTEPS - 1, floor: float = 0.25, power: float = 1.0) -> TimestepSampler:
    if kind == "uniform":
        return TimestepSampler()
    if kind == "interval":
        return IntervalSampler(t_min, t_max)
    if kind == "adaptive":
        return AdaptiveSampler(bands, num_scales, floor, power)
    raise MrtiError(f"timestep_sampling {kind!r} is not one of uniform, interval, adaptive")
