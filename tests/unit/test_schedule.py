from __future__ import annotations

from decimal import Decimal

import pytest
import torch

from mrti.errors import MrtiError
from mrti.prompt_syntax import BucketIndex, DiffusionTime, Mode, ResolvedTag, parse_prompt, resolve_tags
from mrti.schedule import (
    NUM_TIMESTEPS,
    Blend,
    Embedding,
    Zero,
    bucket_of,
    distinct_states,
    embedding_for_time,
    materialize,
    state_at,
    state_spans,
)

E = Embedding
ALL_T = range(NUM_TIMESTEPS)


def resolved(mode: Mode, resolution, n: int) -> ResolvedTag:
    return ResolvedTag("S", mode, resolution, n, f"<S {mode.value} {resolution}>")


# ---- an independent, deliberately naive reading of docs/method.md ---------------------------------

def naive_bucket(t: int, n: int) -> int:
    # The i with i*1000 <= t*n < (i+1)*1000, clipped.
    for i in range(n):
        if i * 1000 <= t * n < (i + 1) * 1000:
            return i
    return n - 1


def naive_state_integer(mode: Mode, i: int, t: int, n: int):
    b = naive_bucket(t, n)
    if mode is Mode.FIXED:
        return E(i)
    if mode is Mode.FULLY:
        return E(i) if b <= i else E(b)
    return Zero() if b <= i else E(b)


def naive_state_decimal(mode: Mode, tau: str, t: int, n: int):
    tau_d = Decimal(tau)
    e_tau = E(min(int(tau_d * n), n - 1))
    own = E(naive_bucket(t, n))
    reached = Decimal(t) / 1000 >= tau_d
    if mode is Mode.FIXED:
        return e_tau
    if mode is Mode.FULLY:
        return own if reached else e_tau
    return own if reached else Zero()


@pytest.mark.parametrize("n", [1, 3, 10])
@pytest.mark.parametrize("mode", list(Mode))
def test_integer_index_matches_table_at_every_timestep(n, mode):
    for i in sorted({0, n // 2, n - 1}):
        tag = resolved(mode, BucketIndex(i), n)
        for t in ALL_T:
            assert state_at(tag, t) == naive_state_integer(mode, i, t, n), (mode, n, i, t)


@pytest.mark.parametrize("n", [1, 3, 10, 100])
@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("tau", ["0.0", "0.25", "0.29", "0.3", "0.5", "0.57", "0.8", "0.999", "1.0"])
def test_decimal_time_matches_definition_at_every_timestep(n, mode, tau):
    tag = resolved(mode, DiffusionTime(float(tau)), n)
    for t in ALL_T:
        assert state_at(tag, t) == naive_state_decimal(mode, tau, t, n), (mode, n, tau, t)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 1000])
def test_bucket_of_matches_naive(n):
    assert [bucket_of(t, n) for t in ALL_T] == [naive_bucket(t, n) for t in ALL_T]


def test_bucket_edges_by_hand():
    assert bucket_of(499, 10) == 4
    assert bucket_of(500, 10) == 5
    assert bucket_of(999, 10) == 9
    assert bucket_of(0, 10) == 0
    assert bucket_of(333, 3) == 0
    assert bucket_of(334, 3) == 1
    assert bucket_of(666, 3) == 1
    assert bucket_of(667, 3) == 2
    assert bucket_of(1000, 10) == 9 and bucket_of(5000, 10) == 9 and bucket_of(-5, 10) == 0
    assert bucket_of(500.0, 10) == 5 and bucket_of(499.999, 10) == 4 and bucket_of(999.9, 10) == 9
    with pytest.raises(MrtiError):
        bucket_of(10, 0)


def test_modes_by_hand_n10():
    fully3 = resolved(Mode.FULLY, BucketIndex(3), 10)
    semi3 = resolved(Mode.SEMI, BucketIndex(3), 10)
    fixed3 = resolved(Mode.FIXED, BucketIndex(3), 10)
    assert state_at(fully3, 399) == E(3) and state_at(fully3, 400) == E(4) and state_at(fully3, 0) == E(3)
    assert state_at(fully3, 999) == E(9)
    assert state_at(semi3, 399) == Zero() and state_at(semi3, 400) == E(4) and state_at(semi3, 999) == E(9)
    assert {state_at(fixed3, t) for t in ALL_T} == {E(3)}
    assert {state_at(resolved(Mode.SEMI, BucketIndex(9), 10), t) for t in ALL_T} == {Zero()}
    fully0 = resolved(Mode.FULLY, BucketIndex(0), 10)
    assert [state_at(fully0, t) for t in (0, 99, 100, 499, 500, 999)] == [E(0), E(0), E(1), E(4), E(5), E(9)]


def test_decimal_modes_by_hand():
    semi = resolved(Mode.SEMI, DiffusionTime(0.8), 10)
    assert state_at(semi, 799) == Zero() and state_at(semi, 0) == Zero()
    assert state_at(semi, 800) == E(8) and state_at(semi, 950) == E(9)
    fixed = resolved(Mode.FIXED, DiffusionTime(0.5), 10)
    assert {state_at(fixed, t) for t in ALL_T} == {E(5)}
    fully = resolved(Mode.FULLY, DiffusionTime(0.25), 10)
    assert state_at(fully, 249) == E(2) and state_at(fully, 0) == E(2)
    assert state_at(fully, 250) == E(2) and state_at(fully, 300) == E(3) and state_at(fully, 999) == E(9)
    # 0.25 is bucket 2's centre, so interpolation leaves it a single embedding.
    assert state_at(fully, 100, interpolate=True) == E(2)
    between = resolved(Mode.FULLY, DiffusionTime(0.3), 10)
    assert state_at(between, 299) == E(3)
    assert state_at(between, 299, interpolate=True) == Blend(2, 3, 0.5)
    assert state_at(between, 300, interpolate=True) == E(3)
    coarse = resolved(Mode.FULLY, DiffusionTime(0.25), 4)
    assert state_at(coarse, 100) == E(1)
    assert state_at(coarse, 100, interpolate=True) == Blend(0, 1, 0.5)
    assert state_at(coarse, 250, interpolate=True) == E(1)


def test_decimal_time_uses_the_written_decimal():
    # In binary floating point 0.29 * 100 is 28.999999999999996; the bucket of 0.29 with N = 100 is 29.
    assert embedding_for_time(0.29, 100, False) == E(29)
    assert embedding_for_time(0.57, 100, False) == E(57)
    assert state_at(resolved(Mode.FIXED, DiffusionTime(0.29), 100), 0) == E(29)
    assert state_at(resolved(Mode.FULLY, DiffusionTime(0.29), 100), 289) == E(29)
    assert state_at(resolved(Mode.SEMI, DiffusionTime(0.3), 10), 300) == E(3)
    assert state_at(resolved(Mode.SEMI, DiffusionTime(0.7), 10), 700) == E(7)
    assert state_at(resolved(Mode.SEMI, DiffusionTime(0.7), 10), 699) == Zero()
    assert state_at(resolved(Mode.SEMI, DiffusionTime(0.8), 10), 799.5) == Zero()
    assert state_at(resolved(Mode.SEMI, DiffusionTime(0.8), 10), 800.0) == E(8)


@pytest.mark.parametrize(
    ("tau", "n", "expected"),
    [
        (0.5, 10, E(5)),
        (1.0, 10, E(9)),
        (0.0, 10, E(0)),
        (0.7, 10, E(7)),
        (0.3, 10, E(3)),
        (0.8, 3, E(2)),
        (0.5, 1, E(0)),
    ],
)
def test_embedding_for_time_without_interpolation(tau, n, expected):
    assert embedding_for_time(tau, n, False) == expected


@pytest.mark.parametrize(
    ("tau", "n", "expected"),
    [
        (0.05, 10, E(0)),
        (0.0, 10, E(0)),
        (0.02, 10, E(0)),
        (0.95, 10, E(9)),
        (1.0, 10, E(9)),
        (0.55, 10, E(5)),
        (0.6, 10, Blend(5, 6, 0.5)),
        (0.2, 10, Blend(1, 2, 0.5)),
        (0.27, 10, Blend(2, 3, 0.2)),
        (0.5, 3, E(1)),
        (0.25, 3, Blend(0, 1, 0.25)),
        (0.5, 1, E(0)),
    ],
)
def test_embedding_for_time_with_interpolation(tau, n, expected):
    state = embedding_for_time(tau, n, True)
    if isinstance(expected, Blend):
        assert isinstance(state, Blend) and (state.lower, state.upper) == (expected.lower, expected.upper)
        assert state.weight == pytest.approx(expected.weight, abs=1e-12)
    else:
        assert state == expected


def test_interpolation_is_continuous_and_monotone():
    weights = []
    for k in range(1001):
        state = embedding_for_time(k / 1000, 10, True)
        position = state.index if isinstance(state, Embedding) else state.lower + state.weight
        weights.append(position)
    assert weights == sorted(weights)
    assert max(b - a for a, b in zip(weights, weights[1:])) <= 0.0100001


def brute_force_states(tags, interpolate=False):
    return [tuple(state_at(tag, t, interpolate) for tag in tags) for t in ALL_T]


@pytest.mark.parametrize(
    ("prompt", "interpolate"),
    [
        ("<a[3]> and <b(0.8)>", False),
        ("<a(2)> <b|0.5|>", False),
        ("<a[0.33]> <b(5)> <a|2|>", True),
        ("<b>", False),
        ("no tags at all", False),
    ],
)
def test_state_spans_partition(prompt, interpolate):
    tags = resolve_tags(parse_prompt(prompt), {"a": 10, "b": 7}, Mode.FULLY, BucketIndex(0))
    spans = state_spans(tags, interpolate)
    assert spans[0].t_max == 999 and spans[-1].t_min == 0
    for upper, lower in zip(spans, spans[1:]):
        assert lower.t_max == upper.t_min - 1
        assert lower.states != upper.states
    covered = [t for span in spans for t in range(span.t_min, span.t_max + 1)]
    assert sorted(covered) == list(ALL_T) and len(covered) == NUM_TIMESTEPS
    truth = brute_force_states(tags, interpolate)
    for span in spans:
        assert span.t_min <= span.t_max
        assert all(truth[t] == span.states for t in range(span.t_min, span.t_max + 1))
    distinct = distinct_states(spans)
    assert len(distinct) == len(set(truth))
    assert len(distinct) == len(set(distinct))
    assert distinct[0] == truth[999]


def test_state_spans_two_modes_by_hand():
    tags = resolve_tags(parse_prompt("<a[3]> <a(6)>"), {"a": 10}, Mode.FULLY, BucketIndex(0))
    spans = state_spans(tags)
    assert [(s.t_min, s.t_max) for s in spans] == [
        (900, 999), (800, 899), (700, 799), (600, 699), (500, 599), (400, 499), (0, 399)
    ]
    assert spans[0].states == (E(9), E(9))
    assert spans[3].states == (E(6), Zero())
    assert spans[-1].states == (E(3), Zero())


def test_distinct_states_keeps_first_seen_order():
    tags = resolve_tags(parse_prompt("<a(0.5)>"), {"a": 4}, Mode.SEMI, BucketIndex(0))
    spans = state_spans(tags)
    doubled = spans + spans
    assert distinct_states(doubled) == tuple(span.states for span in spans)


def test_materialize():
    embeddings = torch.arange(3 * 2 * 4, dtype=torch.float16).reshape(3, 2, 4)
    assert torch.equal(materialize(E(1), embeddings), embeddings[1])
    zero = materialize(Zero(), embeddings)
    assert zero.shape == (2, 4) and zero.dtype == torch.float16 and not zero.any()
    blend = materialize(Blend(0, 2, 0.25), embeddings.float())
    assert torch.allclose(blend, 0.75 * embeddings[0].float() + 0.25 * embeddings[2].float())
    with pytest.raises(MrtiError):
        materialize(E(3), embeddings)
    with pytest.raises(MrtiError):
        materialize(Blend(2, 3, 0.5), embeddings)


def test_resolved_tag_accepts_mode_strings():
    tag = ResolvedTag("S", "semi", BucketIndex(3), 10, "<S>")
    assert tag.mode is Mode.SEMI and state_at(tag, 399) == Zero()
    with pytest.raises(ValueError):
        ResolvedTag("S", "sideways", BucketIndex(3), 10, "<S>")
    with pytest.raises(MrtiError):
        ResolvedTag("S", Mode.SEMI, BucketIndex(3), 0, "<S>")
