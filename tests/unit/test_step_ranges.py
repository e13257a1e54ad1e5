"""Span edges in sigma: every float32 sigma lies in exactly one span, the one holding the timestep the
model computes for it. Here the "model" is a table and nearest-log-sigma rule written out in the test;
tests/integration/test_sigma_edges.py repeats this on the host's own tables and samplers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mrti.errors import MrtiError
from mrti.prompt_syntax import BucketIndex, DiffusionTime, Mode, ResolvedTag
from mrti.schedule import StateSpan, state_at, state_spans
from mrti.step_ranges import SigmaRange, TimestepEdges, progress_range, timestep_edges


def sd_table(zero_terminal: bool = False) -> torch.Tensor:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas_bar = np.cumprod(1 - betas)
    if zero_terminal:
        alphas_bar[-1] = 5e-8
    return torch.tensor(((1 - alphas_bar) / alphas_bar) ** 0.5, dtype=torch.float32)


def nearest_log(table: torch.Tensor, timesteps: torch.Tensor | None = None):
    """A table model's timestep: the nearest entry in log sigma, computed in float32."""
    log_table = table.log()

    def timestep_of(sigma: torch.Tensor) -> torch.Tensor:
        index = (sigma.log()[None, :] - log_table[:, None]).abs().argmin(dim=0)
        return index if timesteps is None else timesteps[index]
    return timestep_of


FULL = sd_table()
LCM_STEPS = torch.arange(19, 1000, 20)
MODELS = {
    "sd": (FULL, nearest_log(FULL)),
    "zsnr": (sd_table(True), nearest_log(sd_table(True))),
    "lcm": (FULL[LCM_STEPS], nearest_log(FULL[LCM_STEPS], LCM_STEPS)),
}


def tag(mode: Mode, resolution, n: int) -> ResolvedTag:
    return ResolvedTag("S", mode, resolution, n, "<S>")


def probes(table: torch.Tensor, edges: TimestepEdges) -> torch.Tensor:
    """Every table sigma, every edge and the float32 just below it, and log-midpoints of the table."""
    finite = torch.tensor([v for v in edges.lowest if 0 < v < float("inf")], dtype=torch.float32)
    below = torch.nextafter(finite, torch.zeros_like(finite))
    mids = (table.log()[1:] + table.log()[:-1]).mul(0.5).exp()
    return torch.cat([table, finite, below, mids, table[:1] / 2, table[-1:] * 2])


def active(bounds: SigmaRange, sigma: np.float32) -> bool:
    # The host's rule (comfy.samplers.get_area_and_mult), with the bound compared in sigma's float32.
    if bounds.upper is not None and sigma > np.float32(bounds.upper):
        return False
    if bounds.lower is not None and sigma < np.float32(bounds.lower):
        return False
    return True


@pytest.mark.parametrize("model", MODELS)
def test_each_edge_is_where_the_model_timestep_changes(model):
    table, timestep_of = MODELS[model]
    edges = timestep_edges(table, timestep_of)
    assert len(edges.lowest) == 1001
    assert list(edges.lowest) == sorted(edges.lowest)
    reached = sorted(set(timestep_of(table).tolist()))
    for t in range(1, 1000):
        a = edges.lowest[t]
        if t <= reached[0]:
            assert a == 0.0
            continue
        assert 0.0 < a < float("inf")
        at = torch.tensor([a], dtype=torch.float32)
        assert int(timestep_of(at)[0]) >= t
        assert int(timestep_of(torch.nextafter(at, torch.zeros(1)))[0]) < t


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n", [1, 2, 3, 6, 7, 10, 33, 100])
@pytest.mark.parametrize("mode,resolution", [(Mode.FULLY, BucketIndex(0)), (Mode.SEMI, DiffusionTime(0.45)),
                                             (Mode.FULLY, DiffusionTime(0.8))])
def test_every_sigma_is_in_exactly_one_span_the_right_one(model, n, mode, resolution):
    table, timestep_of = MODELS[model]
    edges = timestep_edges(table, timestep_of)
    the_tag = tag(mode, resolution, n)
    spans = [(span, edges.sigma_range(span)) for span in state_spans([the_tag])]
    spans = [(span, bounds) for span, bounds in spans if bounds is not None]
    sigmas = probes(table, edges)
    steps = timestep_of(sigmas).tolist()
    for sigma, t in zip(sigmas.numpy(), steps):
        hits = [span for span, bounds in spans if active(bounds, sigma)]
        assert len(hits) == 1, f"sigma {sigma!r} (t={t}) is in {len(hits)} spans"
        assert hits[0].t_min <= t <= hits[0].t_max
        assert hits[0].states == (state_at(the_tag, t),)


def test_spans_the_model_never_reaches_are_dropped():
    table, timestep_of = MODELS["lcm"]
    edges = timestep_edges(table, timestep_of)
    assert edges.sigma_range(StateSpan(0, 18, ())) is None  # LCM's lowest timestep is 19
    assert edges.sigma_range(StateSpan(20, 38, ())) is None
    assert edges.sigma_range(StateSpan(0, 19, ())) == SigmaRange(
        float(np.nextafter(np.float32(edges.lowest[20]), np.float32(0))), None)
    assert edges.sigma_range(StateSpan(500, 999, ())).upper is None


def test_the_default_table_puts_midpoint_500_in_the_upper_bucket():
    # The normal scheduler at 7 steps asks for t = 499.5; the model computes 500 there.
    table, timestep_of = MODELS["sd"]
    edges = timestep_edges(table, timestep_of)
    log = table.log()
    midpoint = ((log[499] + log[500]) / 2).exp()
    lower, upper = edges.sigma_range(StateSpan(0, 499, ())), edges.sigma_range(StateSpan(500, 999, ()))
    expected_upper = int(timestep_of(midpoint[None])[0]) == 500
    assert active(upper, midpoint.numpy()) == expected_upper
    assert active(lower, midpoint.numpy()) != expected_upper


@pytest.mark.parametrize("table,timestep_of,message", [
    (torch.tensor([]), lambda s: s, "empty"),
    (torch.tensor([0.0, 1.0]), lambda s: torch.zeros_like(s), "positive"),
    (torch.tensor([0.5, float("nan")]), lambda s: torch.zeros_like(s), "positive"),
    (torch.tensor([0.1, 1.0, 10.0]), lambda s: s.log(), "whole number"),
    (torch.tensor([0.1, 1.0, 10.0]), lambda s: torch.tensor([5, 3, 9])[: len(s)], "order"),
    (torch.tensor([0.1, 1.0, 10.0]), lambda s: (s * 1000).long(), "0 to 999"),
])
def test_tables_that_are_not_discrete_timesteps_are_refused(table, timestep_of, message):
    with pytest.raises(MrtiError, match=message):
        timestep_edges(table, timestep_of)


def test_progress_range_on_integer_timesteps():
    assert progress_range(StateSpan(500, 999, ())) == (0.0, pytest.approx(1 - 499.5 / 999))
    start, end = progress_range(StateSpan(0, 499, ()))
    assert end == 1.0 and start == pytest.approx(1 - 499.5 / 999) and start > 1 - 499.5 / 999
