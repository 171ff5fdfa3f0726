"""Smoke test of benchmarks/bench_concurrent_calls.py: the numbers are produced and sane.

Speed is measured by the benchmark, not asserted here: no check depends on how fast or
how loaded the machine is (no pacing or CPU thresholds), only on what the numbers must
be for the run to have measured anything (two calls set up, media flowing both ways,
CPU and pacing figures present and physically possible).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from voicelab.errors import ParameterError

from .conftest import need, need_tool

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_concurrent_calls.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_concurrent_calls", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_concurrent_calls", mod)
    spec.loader.exec_module(mod)
    return mod


def _sane_pacing(p: dict) -> None:
    assert set(p) == {"p50", "p99", "max"}
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in p.values()), p
    assert p["p50"] <= p["p99"] <= p["max"]


def test_two_concurrent_calls_produce_sane_numbers(bench):
    seconds = 2.0
    r = bench.measure_agent(2, seconds=seconds, mode="echo")
    assert r["calls"] == 2 and r["established"] == 2 and r["agent_streams"] == 2, r
    assert r["callers"]["ended"] == 2 and not r["callers"]["failed"] and not r["agent_errors"], r
    # the window runs from the warm-up (0.5 s for a 2 s call) to the end of the speech
    assert 0.5 * seconds < r["window_s"] <= seconds
    # every agent stream sent about one packet per 20 ms of the window (echo: on its playout clock)
    expected = 2 * r["window_s"] / 0.020
    assert 0.5 * expected <= r["frames_in_window"] <= 1.5 * expected, (r["frames_in_window"], expected)
    _sane_pacing(r["pacing_ms"])
    _sane_pacing(r["pacing_whole_call_ms"])
    _sane_pacing(r["callers"]["pacing_ms"])
    # CPU of one process over the window: more than nothing, at most every core
    assert 0 < r["cpu_pct"] <= 100 * (bench.os.cpu_count() or 1) + 5
    assert r["cpu_pct_per_call"] == pytest.approx(r["cpu_pct"] / 2)
    # per frame handled (sent + played) and the same at 100 frames/s as % of a core
    assert r["cpu_us_per_frame"] > 0
    assert r["cpu_pct_per_call_full_rate"] == pytest.approx(r["cpu_us_per_frame"] / 100)
    assert 0.5 * expected <= r["slots_played_in_window"] <= 1.5 * expected
    # media flowed both ways: the agent heard the callers and the callers heard the echo
    assert r["agent_jb"]["received"] >= 0.5 * 2 * seconds / 0.020, r["agent_jb"]
    assert r["callers"]["jb"]["received"] > 0 and r["callers"]["streams_hearing_peer"] == 2, r["callers"]
    assert 0.0 <= r["agent_lost_rate"] <= 1.0 and 0.0 <= r["callers_lost_rate"] <= 1.0
    # one media pacer ran every agent stream: it woke, and each wake-up served >= 1 job
    assert r["pacer_wakeups_per_s"] > 0 and r["pacer_jobs_per_wakeup"] >= 1.0, r
    assert r["pacer_tick_ms"] == pytest.approx(1.0) and r["loadavg_1m_start"] >= 0


def test_timer_floor_measures_every_tick(bench):
    fl = bench.measure_timer_floor(seconds=0.5)
    for key in ("at_slot_ms", "early_0.5ms_ms"):
        _sane_pacing(fl[key])
    # the bare loop's own CPU: > 0 (it woke 25 times) and far below a busy core
    assert 0 < fl["cpu_us_per_wakeup"] < 20_000 and fl["cpu_pct"] == pytest.approx(fl["cpu_us_per_wakeup"] / 200)


@pytest.mark.parametrize("kwargs", [{"n_calls": 0}, {"n_calls": True}, {"n_calls": 2, "seconds": 0.1},
                                    {"n_calls": 2, "mode": "record"}])  # fmt: skip
def test_bad_parameters_are_refused(bench, kwargs):
    n = kwargs.pop("n_calls")
    with pytest.raises(ParameterError):
        bench.measure_agent(n, **kwargs)


@pytest.mark.slow
def test_baresip_baseline_is_measured(bench):
    need_tool("baresip", "baresip-core")
    need(bench._baresip_module_dir() is not None, "baresip modules aufile/aubridge/g711 not found")
    b = bench.measure_baresip(seconds=2.0)
    assert b is not None and b["callers"]["established"] == 1 and b["callers"]["ended"] == 1, b
    assert b["callers"]["jb"]["received"] > 0  # baresip's audio reached the caller
    assert 0 < b["cpu_pct_per_call"] <= 100 * (bench.os.cpu_count() or 1) + 5
