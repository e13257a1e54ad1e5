"""Timestep samplers and the running g(t) estimate."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from mrti.errors import MrtiError
from mrti.schedule import bucket_of
from mrti.training.timesteps import (
    BAND_WIDTH,
    NUM_BANDS,
    AdaptiveSampler,
    GradientBands,
    IntervalSampler,
    TimestepSampler,
    adaptive_probabilities,
    band_of,
    coverage_warning,
    index_ranges,
    make_sampler,
    measures_eq4,
    unreachable_buckets,
)


def test_bands_keep_a_running_mean_per_band():
    bands = GradientBands(rate=0.5)
    assert bands.estimates() == [None] * NUM_BANDS
    assert bands.filled() == [1.0] * NUM_BANDS
    bands.observe(0, 4.0)
    bands.observe(19, 2.0)  # same band: 4 + 0.5 * (2 - 4)
    bands.observe(999, 10.0)
    bands.observe(500, float("nan"))  # ignored
    est = bands.estimates()
    assert est[0] == 3.0 and est[-1] == 10.0 and est[band_of(500)] is None
    assert bands.count[0] == 2 and sum(bands.count) == 3
    assert bands.filled()[band_of(500)] == pytest.approx(6.5)  # mean of the measured bands
    copy = GradientBands()
    copy.load_state_dict(bands.state_dict())
    assert measures_eq4(bands.state_dict()) and not measures_eq4({"estimate": [], "count": []})
    assert copy.estimates() == est and copy.count == bands.count and copy.rate == 0.5
    with pytest.raises(MrtiError, match="bands"):
        copy.load_state_dict({"estimate": [1.0], "count": [1]})


def test_a_band_averages_its_first_measurements_then_forgets_old_ones():
    bands = GradientBands(rate=0.1)
    for value in (1.0, 2.0, 6.0):  # the first ten measurements of a band: their plain mean
        bands.observe(100, value)
    assert bands.estimate[band_of(100)] == pytest.approx(3.0)
    for _ in range(7):
        bands.observe(100, 3.0)
    assert bands.estimate[band_of(100)] == pytest.approx(3.0) and bands.count[band_of(100)] == 10
    bands.observe(100, 13.0)  # from then on, each new one weighs 0.1
    assert bands.estimate[band_of(100)] == pytest.approx(4.0)


@pytest.mark.parametrize("num_scales", [3, 7, 10, 64])
@pytest.mark.parametrize("floor", [0.0, 0.1, 0.25, 1.0])
def test_adaptive_probabilities_keep_the_floor_in_every_bucket(num_scales, floor):
    g = [0.0] * NUM_BANDS
    g[20] = 5.0  # all gradient mass in one band (t 400-419)
    p = adaptive_probabilities(g, num_scales, floor)
    assert p.shape == (1000,) and float(p.sum()) == pytest.approx(1.0)
    mass = torch.zeros(num_scales, dtype=torch.float64)
    for t in range(1000):
        mass[bucket_of(t, num_scales)] += p[t]
    assert float(mass.min()) >= floor / num_scales - 1e-12
    assert float(p[400:420].sum()) >= 1 - floor - 1e-12


def test_one_embedding_draws_exactly_in_proportion_to_g():
    """Equation 5 at N = 1: the floor protects buckets, and there is only one, so it is not applied."""
    g = [float(b % 7 + 1) for b in range(NUM_BANDS)]
    p = adaptive_probabilities(g, 1, 0.25)
    expected = torch.tensor(g, dtype=torch.float64).repeat_interleave(BAND_WIDTH)
    assert torch.allclose(p, expected / expected.sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("power", [2.0, 0.5])
def test_a_power_of_g_draws_in_proportion_to_that_power(power):
    g = [float(b % 7 + 1) for b in range(NUM_BANDS)]
    p = adaptive_probabilities(g, 1, 0.0, power)
    expected = torch.tensor(g, dtype=torch.float64).repeat_interleave(BAND_WIDTH) ** power
    assert torch.allclose(p, expected / expected.sum(), rtol=1e-12, atol=0)
    # the largest band's share against the smallest's moves away from equation 5's 7 : 1 as the power says
    assert float(p[BAND_WIDTH * 6] / p[0]) == pytest.approx(7.0 ** power)
    assert torch.equal(adaptive_probabilities(g, 1, 0.0, 1.0), adaptive_probabilities(g, 1, 0.0))


# The 0.999 quantile of the chi-square distribution with 49 degrees of freedom (50 bands, 1 constraint).
CHI2_49_999 = 85.35


@pytest.mark.parametrize("num_scales, floor", [(1, 0.25), (10, 0.25)])
def test_draws_follow_the_recorded_distribution(num_scales, floor):
    """Pearson's chi-square of 20,000 draws per band against p(t) summed per band, with a fixed seed: the
    test fails if the sampler departs from its distribution, and a correct one fails at one seed in 1000."""
    bands = GradientBands()
    for t in range(0, 1000, BAND_WIDTH):
        bands.observe(t, true_g(t) + (t % 140) / 100)
    sampler = AdaptiveSampler(bands, num_scales, floor)
    per_band = sampler.probabilities().reshape(NUM_BANDS, BAND_WIDTH).sum(1)
    gen = torch.Generator().manual_seed(11)
    draws = 20_000
    counts = torch.bincount(torch.tensor([band_of(sampler.sample(gen)) for _ in range(draws)]), minlength=NUM_BANDS)
    expected = per_band * draws
    chi2 = float(((counts.double() - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_49_999
    # and the test has power: the same draws against uniform are far off
    flat = torch.full((NUM_BANDS,), draws / NUM_BANDS, dtype=torch.float64)
    assert float(((counts.double() - flat) ** 2 / flat).sum()) > 10 * CHI2_49_999


def test_adaptive_probabilities_follow_g():
    g = [float(b + 1) for b in range(NUM_BANDS)]
    p = adaptive_probabilities(g, 10, 0.0)
    assert float(p[999] / p[0]) == pytest.approx(50.0)
    assert torch.all(p[BAND_WIDTH:] >= p[:-BAND_WIDTH])
    flat = adaptive_probabilities([0.0] * NUM_BANDS, 10, 0.0)
    assert torch.allclose(flat, torch.full((1000,), 1e-3, dtype=torch.float64))


def true_g(t: int) -> float:
    """A made-up g(t): large around t = 400, small elsewhere (the paper's SD curve, roughly)."""
    return 0.05 + (4.0 if 300 <= t < 500 else 0.0)


def test_adaptive_sampling_goes_where_g_is_large_and_still_visits_every_bucket():
    bands = GradientBands()
    sampler = AdaptiveSampler(bands, num_scales=10, floor=0.25)
    gen = torch.Generator().manual_seed(3)
    seen = Counter()
    for _ in range(4000):
        t = sampler.sample(gen)
        seen[bucket_of(t, 10)] += 1
        bands.observe(t, true_g(t))
    assert set(seen) == set(range(10))
    # floor 0.25 over 10 buckets: at least 2.5 % each, i.e. about 100 of 4000
    assert min(seen.values()) > 60
    assert seen[3] + seen[4] > 0.6 * 4000  # buckets 3 and 4 hold t 300-499
    uniform = Counter(bucket_of(TimestepSampler().sample(gen), 10) for _ in range(4000))
    assert seen[3] + seen[4] > 2.5 * (uniform[3] + uniform[4])


def test_uniform_and_interval_samplers():
    gen = torch.Generator().manual_seed(0)
    uniform = [TimestepSampler().sample(gen) for _ in range(3000)]
    assert min(uniform) < 10 and max(uniform) > 990
    interval = [IntervalSampler(350, 450).sample(gen) for _ in range(500)]
    assert min(interval) == 350 and max(interval) == 450
    single = {IntervalSampler(400, 400).sample(gen) for _ in range(20)}
    assert single == {400}
    with pytest.raises(MrtiError, match="interval"):
        IntervalSampler(500, 400)
    assert make_sampler("interval", GradientBands(), 10, 1, 2).kind == "interval"
    with pytest.raises(MrtiError, match="timestep_sampling"):
        make_sampler("random", GradientBands(), 10)


def test_samplers_are_reproducible_from_the_generator_state():
    bands = GradientBands()
    for t in range(0, 1000, 7):
        bands.observe(t, true_g(t))
    sampler = AdaptiveSampler(bands, 10, 0.25)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    first = [sampler.sample(gen) for _ in range(50)]
    gen.set_state(state)
    assert [sampler.sample(gen) for _ in range(50)] == first


@pytest.mark.parametrize("t_min, t_max, n, missing", [
    (350, 450, 10, (0, 1, 2, 5, 6, 7, 8, 9)),  # the conditional-gradient paper's interval: 2 of 10 train
    (0, 999, 10, ()),
    (100, 100, 10, tuple(b for b in range(10) if b != 1)),
    (350, 450, 1, ()),
    (0, 166, 6, (1, 2, 3, 4, 5)),  # 166 * 6 // 1000 = 0: the edge at 166.67 is not reached
    (0, 167, 6, (2, 3, 4, 5)),
])
def test_unreachable_buckets_are_exactly_those_interval_sampling_never_draws(t_min, t_max, n, missing):
    assert unreachable_buckets("interval", n, t_min, t_max) == missing
    gen, sampler = torch.Generator().manual_seed(0), IntervalSampler(t_min, t_max)
    drawn = {bucket_of(sampler.sample(gen), n) for _ in range(5000)}
    assert drawn == set(range(n)) - set(missing)
    assert unreachable_buckets("uniform", n, t_min, t_max) == ()
    assert unreachable_buckets("adaptive", n, t_min, t_max) == ()


def test_coverage_warning_names_the_untrained_scales_and_the_init_word():
    text = coverage_warning("interval", 10, 350, 450, "shape")
    assert "scale(s) 3-4 of 10" in text and "scale(s) 0-2, 5-9" in text and "'shape'" in text
    assert coverage_warning("interval", 10, 0, 999, "shape") is None
    assert coverage_warning("uniform", 10, 350, 450, "shape") is None
    assert index_ranges([7, 0, 1, 2, 5, 9, 8]) == "0-2, 5, 7-9"
