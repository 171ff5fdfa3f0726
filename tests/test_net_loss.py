"""Loss models: statistics against theory, determinism, parameter checks, traces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voicelab.errors import ParameterError
from voicelab.net import BernoulliLoss, GilbertElliottLoss, NoLoss, TraceLoss

N = 100_000


def _run(model, n, seed):
    rng = np.random.default_rng(seed)
    return np.fromiter((model.lost(rng, i) for i in range(n)), dtype=bool, count=n)


def _bursts(mask):
    """Lengths of the runs of True in a boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return ends - starts


# --- Bernoulli -------------------------------------------------------------------


@pytest.mark.parametrize("loss_rate", [0.01, 0.1, 0.3])
def test_bernoulli_rate_within_4_sigma(loss_rate):
    lost = _run(BernoulliLoss(loss_rate), N, seed=11)
    sigma = math.sqrt(loss_rate * (1 - loss_rate) / N)
    assert abs(lost.mean() - loss_rate) < 4 * sigma


def test_bernoulli_losses_are_independent():
    # P(loss | previous lost) must equal the loss rate for a memoryless model.
    p = 0.2
    lost = _run(BernoulliLoss(p), N, seed=3)
    after_loss = lost[1:][lost[:-1]]
    sigma = math.sqrt(p * (1 - p) / len(after_loss))
    assert abs(after_loss.mean() - p) < 4 * sigma


def test_bernoulli_zero_loss_never_loses_and_draws_nothing():
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    model = BernoulliLoss(0.0)
    assert not any(model.lost(rng, i) for i in range(1000))
    assert rng.bit_generator.state == before


def test_no_loss():
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert not any(NoLoss().lost(rng, i) for i in range(100))
    assert NoLoss().expected_loss_rate == 0.0
    assert rng.bit_generator.state == before


# --- Gilbert-Elliott -----------------------------------------------------------


@pytest.mark.parametrize(("loss_rate", "burst"), [(0.05, 2.0), (0.1, 3.0), (0.2, 1.5)])
def test_gilbert_elliott_rate_and_burst_length(loss_rate, burst):
    model = GilbertElliottLoss(loss_rate, burst)
    lost = _run(model, N, seed=7)
    # Loss <=> bad state, a two-state Markov chain with second eigenvalue lam = 1 - p - r.
    lam = 1.0 - model.p - model.r
    var = loss_rate * (1 - loss_rate) / N * (1 + lam) / (1 - lam)
    assert abs(lost.mean() - loss_rate) < 4 * math.sqrt(var)
    bursts = _bursts(lost)
    assert abs(bursts.mean() - burst) / burst < 0.05
    assert model.expected_loss_rate == pytest.approx(loss_rate)
    assert model.mean_burst_length == pytest.approx(burst)


def test_gilbert_elliott_is_burstier_than_bernoulli():
    ge = _run(GilbertElliottLoss(0.1, 4.0), N, seed=1)
    be = _run(BernoulliLoss(0.1), N, seed=1)
    p_ge = ge[1:][ge[:-1]].mean()  # P(loss | previous lost)
    p_be = be[1:][be[:-1]].mean()
    assert p_ge > 0.6  # theory: 1 - 1/4 = 0.75
    assert p_be < 0.2


def test_gilbert_elliott_burst_of_one_gives_isolated_losses():
    lost = _run(GilbertElliottLoss(0.2, 1.0), 20_000, seed=2)
    assert lost.any()
    assert not np.any(lost[1:] & lost[:-1])


def test_gilbert_elliott_libwebrtc_parameters():
    model = GilbertElliottLoss(0.1, 2.5)
    assert model.r == pytest.approx(1 / 2.5)  # stay in burst = 1 - 1/2.5
    assert model.p == pytest.approx(0.1 / 0.9 / 2.5)
    assert (model.k, model.h) == (1.0, 0.0)


def test_gilbert_elliott_general_form_matches_its_stationary_loss():
    p, r, k, h = 0.02, 0.25, 0.99, 0.3
    model = GilbertElliottLoss.from_params(p, r, k, h)
    pi_bad = p / (p + r)
    expected = (1 - pi_bad) * (1 - k) + pi_bad * (1 - h)
    assert model.expected_loss_rate == pytest.approx(expected)
    lost = _run(model, N, seed=9)
    # Standard error from 100 batch means (the process is correlated).
    batch = lost.reshape(100, -1).mean(axis=1)
    se = batch.std(ddof=1) / math.sqrt(len(batch))
    assert abs(lost.mean() - expected) < 4 * se


def test_gilbert_elliott_general_form_simple_gilbert_equals_libwebrtc_form():
    a = GilbertElliottLoss(0.1, 3.0)
    b = GilbertElliottLoss.from_params(a.p, a.r)
    assert np.array_equal(_run(a, 5000, seed=4), _run(b, 5000, seed=4))


def test_gilbert_elliott_reset_replays_identically():
    model = GilbertElliottLoss(0.3, 5.0)
    first = _run(model, 3000, seed=8)
    model.reset()
    assert not model.in_bad_state
    assert np.array_equal(first, _run(model, 3000, seed=8))


@pytest.mark.parametrize(
    ("loss_rate", "burst", "minimum"),
    [(0.6, 1.2, "1.5"), (0.1, 0.5, "1"), (0.75, 2.0, "3")],
)
def test_gilbert_elliott_rejects_too_short_bursts_naming_the_minimum(loss_rate, burst, minimum):
    with pytest.raises(ParameterError, match=rf"minimum is {minimum}\b"):
        GilbertElliottLoss(loss_rate, burst)


def test_gilbert_elliott_accepts_the_minimum_itself():
    model = GilbertElliottLoss(0.6, 1.5)
    assert model.p == pytest.approx(1.0)


@pytest.mark.parametrize("args", [(1.2, 0.1), (0.1, 0.0), (-0.1, 0.5), (0.1, 0.5, 1.5), (0.1, 0.5, 1.0, -1)])
def test_gilbert_elliott_general_form_parameter_errors(args):
    with pytest.raises(ParameterError):
        GilbertElliottLoss.from_params(*args)


# --- parameter checks ------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.5, 1.0, -0.01, float("nan"), float("inf")])
def test_loss_rate_outside_range_names_the_value(bad):
    with pytest.raises(ParameterError, match="outside 0..1") as info:
        BernoulliLoss(bad)
    assert f"{bad:g}" in str(info.value)
    with pytest.raises(ParameterError):
        GilbertElliottLoss(bad, 2.0)


def test_loss_rate_must_be_a_number():
    with pytest.raises(ParameterError):
        BernoulliLoss("lots")


# --- determinism -------------------------------------------------------------------


def test_same_seed_same_losses_different_seed_different():
    model = GilbertElliottLoss(0.1, 2.0)
    a = _run(model, 5000, seed=1)
    model.reset()
    b = _run(model, 5000, seed=1)
    model.reset()
    c = _run(model, 5000, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# --- traces ------------------------------------------------------------------------


def test_trace_replays_exact_indices():
    trace = TraceLoss([3, 0, 7, 7])
    rng = np.random.default_rng(0)
    lost = [i for i in range(10) if trace.lost(rng, i)]
    assert lost == [0, 3, 7]
    assert trace.expected_loss_rate == pytest.approx(3 / 8)
    assert TraceLoss([1], length=10).expected_loss_rate == pytest.approx(0.1)
    assert TraceLoss([]).expected_loss_rate == 0.0


@pytest.mark.parametrize("bad", [[-1], [1.5], ["2"], [True]])
def test_trace_rejects_bad_entries(bad):
    with pytest.raises(ParameterError):
        TraceLoss(bad)


def test_trace_length_must_cover_losses():
    with pytest.raises(ParameterError, match="does not cover"):
        TraceLoss([5], length=5)


def test_trace_from_file(tmp_path):
    path = tmp_path / "trace.txt"
    path.write_text("# lost packets of a recorded call\n2\n\n5   # a burst\n6\n")
    trace = TraceLoss.from_file(path)
    assert trace.lost_indices == frozenset({2, 5, 6})


def test_trace_from_file_bad_line_names_the_line(tmp_path):
    path = tmp_path / "trace.txt"
    path.write_text("1\n2\nthree\n")
    with pytest.raises(ParameterError, match="line 3"):
        TraceLoss.from_file(path)


def test_trace_from_missing_file(tmp_path):
    with pytest.raises(ParameterError, match="cannot read"):
        TraceLoss.from_file(tmp_path / "nope.txt")
