"""Smoke test of benchmarks/bench_webrtc.py: the numbers are produced and physically possible.

Speed is measured by the benchmark, not asserted here: no check depends on how fast or how
loaded the machine is (no CPU, pacing or setup-time thresholds, and late packets are
allowed), only on what the numbers must be for the run to have measured anything: every
call connected at the callee, media flowed both ways, CPU and timing figures present and
consistent with each other.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from voicelab.errors import ParameterError

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_webrtc.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_webrtc", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_webrtc", mod)
    spec.loader.exec_module(mod)
    return mod


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _sane_quantiles(q: dict, keys=("p50", "p90", "max")) -> None:
    assert all(_finite(q[k]) and q[k] >= 0 for k in keys), q
    assert [q[k] for k in keys] == sorted(q[k] for k in keys), q


def _sane_cpu(bench, r: dict, n: int) -> None:
    cores = bench.os.cpu_count() or 1
    assert r["calls"] == n and r["established"] == n, r
    assert 0 < r["cpu_s_per_call_s"] <= cores + 0.05
    assert r["cpu_pct"] == pytest.approx(100 * r["cpu_s_per_call_s"] * n)
    assert 0 < r["callers_cpu_s_per_call_s"] <= cores + 0.05
    assert r["pair_cpu_s_per_call_s"] == pytest.approx(r["cpu_s_per_call_s"] + r["callers_cpu_s_per_call_s"])
    # per frame handled (played + sent), scaled to 100 frames/s: the same cost, per call-second
    assert r["frames_in_window"] > 0 and r["cpu_s_per_call_s_full_rate"] == pytest.approx(
        100 * r["cpu_s"] / r["frames_in_window"])
    _sane_quantiles(r["setup_ms"])
    _sane_quantiles(r["callers_setup_ms"])
    assert all(_finite(v) and v >= 0 for v in r["loop_lag_ms"].values()), r["loop_lag_ms"]


def test_two_lab_calls_produce_sane_numbers(bench):
    seconds = 2.0
    r = bench.measure(2, seconds=seconds)
    _sane_cpu(bench, r, 2)
    c = r["callers"]
    assert not c["failed"] and not r["agent_errors"], r
    # the window runs from the warm-up (a quarter of the call) to the end of the signal
    assert 0.5 * seconds < r["window_s"] <= seconds and 0.5 * seconds < c["window_s"] <= seconds
    # media flowed both ways: the agent's buffers got about one packet per 20 ms per call
    # of the window, and every caller got the echo back (aiortc's own counters)
    expected = 2 * r["window_s"] / 0.020
    assert 0.5 * 2 * expected <= r["frames_in_window"] <= 1.5 * 2 * expected  # one played + one sent per slot
    assert 0.5 * expected <= r["agent_jb"]["received"] + r["agent_jb"]["late"] <= 1.5 * expected, r["agent_jb"]
    assert 0.5 * expected <= c["jb"]["received"] + c["jb"]["late"] <= 1.5 * expected, c["jb"]
    assert all(p > 0.5 * seconds / 0.020 for p in c["packets_received"]), c["packets_received"]
    assert r["late_or_lost"] == r["agent_jb"]["late"] + r["agent_jb"]["lost"] + c["jb"]["late"] + c["jb"]["lost"]
    for p in (r["agent_pacing_ms"], c["pacing_ms"]):
        assert all(_finite(p[k]) and p[k] >= 0 for k in ("p50", "p99", "max")) and p["p50"] <= p["p99"] <= p["max"], p


def test_plain_aiortc_echo_baseline_produces_sane_numbers(bench):
    r = bench.measure(1, seconds=2.0, plain=True)
    _sane_cpu(bench, r, 1)
    c = r["callers"]
    assert c["plain"] and not c["failed"], c
    # aiortc's echo reached the caller (96 kbit/s Opus through MediaRelay)
    assert c["packets_received"][0] > 0.5 * 2.0 / 0.020, c["packets_received"]


@pytest.mark.parametrize("kwargs", [{"n_calls": 0}, {"n_calls": True}, {"n_calls": 1.5},
                                    {"n_calls": 1, "seconds": 0.1}, {"n_calls": 1, "seconds": "long"}])  # fmt: skip
def test_bad_parameters_are_refused(bench, kwargs):
    n = kwargs.pop("n_calls")
    with pytest.raises(ParameterError):
        bench.measure(n, **kwargs)
