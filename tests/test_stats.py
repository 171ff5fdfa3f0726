"""voicelab.experiments.stats: t intervals, bootstrap, paired tests, verdict, summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from voicelab.errors import ParameterError
from voicelab.experiments.stats import (
    SUMMARY_COLUMNS,
    bootstrap_ci,
    mean_ci,
    paired_difference,
    summarize,
    verdict,
)


def test_mean_ci_textbook_sample():
    # x = 2,4,4,4,5,5,7,9: mean 5, s = 2.1381 (ddof 1), t(0.975, 7) = 2.3646 (tables)
    ci = mean_ci([2, 4, 4, 4, 5, 5, 7, 9])
    half = 2.3646 * 2.13809 / math.sqrt(8)
    assert ci.estimate == 5.0
    assert ci.n == 8 and ci.method == "student-t"
    assert ci.low == pytest.approx(5 - half, abs=1e-3)
    assert ci.high == pytest.approx(5 + half, abs=1e-3)
    lo, hi = sst.t.interval(0.95, 7, loc=5.0, scale=sst.sem([2, 4, 4, 4, 5, 5, 7, 9]))
    assert (ci.low, ci.high) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_ci_small_n_uses_t_not_z():
    # n = 3: the t quantile 4.303 (2 dof), never 1.96
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.half_width == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert ci.half_width > 1.96 / math.sqrt(3) * 2


def test_mean_ci_n1_has_no_interval_and_says_why():
    ci = mean_ci([3.5])
    assert ci.estimate == 3.5 and ci.interval is None
    assert "n = 1" in ci.reason


def test_mean_ci_ignores_nan_and_checks_level():
    assert mean_ci([1.0, np.nan, 3.0]).n == 2
    assert mean_ci([]).interval is None
    with pytest.raises(ParameterError):
        mean_ci([1, 2], level=95)


def test_mean_ci_level_widens():
    x = [1.0, 2.5, 2.0, 4.0, 3.1]
    assert mean_ci(x, 0.99).half_width > mean_ci(x, 0.95).half_width > mean_ci(x, 0.8).half_width


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=40))
def test_mean_ci_contains_the_mean(x):
    ci = mean_ci(x)
    m = float(np.mean(x))
    assert ci.low <= m + 1e-9 * (1 + abs(m)) and m - 1e-9 * (1 + abs(m)) <= ci.high


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=10).filter(lambda v: np.std(v) > 1e-3))
def test_mean_ci_shrinks_with_n(x):
    # the same values repeated k times: same mean and (nearly) the same s, more n -> narrower
    w = [mean_ci(np.tile(x, k)).half_width for k in (1, 2, 4, 8)]
    assert all(b < a for a, b in zip(w, w[1:]))


def test_bootstrap_median_deterministic_and_sensible():
    rng = np.random.default_rng(3)
    x = rng.lognormal(3.0, 0.5, size=40)
    a = bootstrap_ci(x, np.median, seed=7)
    b = bootstrap_ci(x, np.median, seed=7)
    c = bootstrap_ci(x, np.median, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.estimate == pytest.approx(np.median(x))
    assert a.low <= a.estimate <= a.high
    assert a.method == "bca"


def test_bootstrap_percentile_matches_scipy():
    rng = np.random.default_rng(5)
    x = rng.normal(100, 15, size=30)
    ours = bootstrap_ci(x, q=90, seed=1, method="percentile", n_boot=999)
    ref = sst.bootstrap((x,), lambda s, axis=-1: np.percentile(s, 90, axis=axis), n_resamples=999,
                        method="percentile", random_state=np.random.default_rng(1), vectorized=True)
    assert ours.estimate == pytest.approx(np.percentile(x, 90))
    assert (ours.low, ours.high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert bootstrap_ci(x, "p90", seed=1, method="percentile", n_boot=999).interval == ours.interval


def test_bootstrap_edge_cases():
    assert bootstrap_ci([2.0]).interval is None
    few = bootstrap_ci([1.0, 2.0, 3.0])
    assert few.interval is None and "n >= 5" in few.reason and few.estimate == 2.0
    assert bootstrap_ci([2.0, 2.0, 2.0]).interval == (2.0, 2.0)
    with pytest.raises(ParameterError):
        bootstrap_ci([1, 2, 3], "trimmed")
    with pytest.raises(ParameterError):
        bootstrap_ci([1, 2, 3], n_boot=5)


def test_paired_difference_against_scipy():
    rng = np.random.default_rng(11)
    base = rng.normal(150, 30, size=20)  # large between-trial spread
    a = base + 12 + rng.normal(0, 4, size=20)
    b = base
    d = paired_difference(a, b)
    assert d.n == 20
    assert d.mean == pytest.approx(np.mean(a - b))
    lo, hi = sst.t.interval(0.95, 19, loc=np.mean(a - b), scale=sst.sem(a - b))
    assert (d.low, d.high) == pytest.approx((lo, hi))
    assert d.p_t == pytest.approx(sst.ttest_rel(a, b).pvalue)
    assert d.p_wilcoxon == pytest.approx(sst.wilcoxon(a - b).pvalue)
    assert d.p_t < 0.01
    # unpaired, the same data would not show it this clearly
    assert sst.ttest_ind(a, b).pvalue > d.p_t


def test_paired_difference_drops_incomplete_pairs_and_checks_length():
    d = paired_difference([1.0, 2.0, np.nan, 4.0], [0.5, 1.0, 1.0, 3.0])
    assert d.n == 3 and d.dropped == 1
    with pytest.raises(ParameterError):
        paired_difference([1, 2], [1, 2, 3])


def test_verdict_lines():
    rng = np.random.default_rng(2)
    b = rng.normal(100, 20, size=20)
    a = b + 12 + rng.normal(0, 3, size=20)
    line = verdict(a, b, names=("WebRTC", "SIP"), unit="ms")
    assert line.startswith("WebRTC exceeds SIP by ")
    assert " ms [" in line and "p < 0.001" in line and line.endswith("n = 20 paired trials")
    line = verdict(b, a, names=("SIP", "WebRTC"), unit="ms")
    assert line.startswith("SIP is below WebRTC by ")
    d = paired_difference(a, b)
    assert f"[{d.low:.1f}, {d.high:.1f}]" in verdict(a, b) and f"[{d.low:.1f}, {d.high:.1f}]" in line
    c = b + rng.normal(0, 3, size=20)
    line = verdict(c, b, unit="ms")
    assert line.startswith("no difference detected between A and B: ")
    assert "p = " in line
    assert verdict([1.0], [2.0]).startswith("no comparison")


def test_summarize_table():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "transport": ["sip"] * 10 + ["webrtc"] * 10,
        "delay_ms": np.r_[rng.normal(50, 5, 10), rng.normal(80, 5, 10)],
        "pesq": np.r_[rng.normal(4, 0.1, 10), [np.nan] * 9 + [3.0]],
    })
    s = summarize(df, by=["transport"], metrics=["delay_ms", "pesq"])
    assert list(s.columns) == ["transport", *SUMMARY_COLUMNS]
    assert len(s) == 4
    row = s[(s.transport == "sip") & (s.metric == "delay_ms")].iloc[0]
    ci = mean_ci(df.delay_ms[:10])
    assert row["n"] == 10 and row["mean"] == pytest.approx(ci.estimate)
    assert (row.ci_low, row.ci_high) == pytest.approx(ci.interval)
    assert row["median_ci_low"] <= row["median"] <= row["median_ci_high"]
    one = s[(s.transport == "webrtc") & (s.metric == "pesq")].iloc[0]
    assert one.n == 1 and math.isnan(one.ci_low)
    with pytest.raises(ParameterError):
        summarize(df, by=["codec"])


def test_trials_needed_inverts_the_t_interval():
    from voicelab.experiments.stats import t_halfwidth, trials_needed

    n = trials_needed(0.2, 0.1)
    assert t_halfwidth(0.2, n) <= 0.1 < t_halfwidth(0.2, n - 1)
    assert trials_needed(0.0, 0.1) == 2
    with pytest.raises(ParameterError):
        trials_needed(0.2, 0)
