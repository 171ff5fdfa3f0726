"""RFC 3550 receiver statistics (voicelab.metrics.rtpstats), driven by hand, no clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.metrics import ReceiverStats, ReportBlock

PTIME = 0.020
SPP = 160  # samples per 20 ms packet at 8 kHz


def feed(stats: ReceiverStats, seqs, *, start_seq=0, epoch=0.0, transit=0.05):
    """Send packet indices ``seqs`` (in the given arrival order), constant transit."""
    for i in seqs:
        stats.update((start_seq + i) % 65536, (i * SPP) % 2**32, epoch + i * PTIME + transit)


def test_no_loss():
    s = ReceiverStats(8000)
    feed(s, range(100))
    # RFC 3550 A.1: the first packet of the probation is not counted.
    assert s.valid
    assert s.received == 99 and s.expected == 99
    assert s.cumulative_lost == 0 and s.loss_rate == 0.0
    assert s.jitter == pytest.approx(0.0, abs=1e-6)
    r = s.report(now=3.0)
    assert isinstance(r, ReportBlock)
    assert (r.fraction_lost, r.cumulative_lost, r.extended_highest_sequence) == (0, 0, 99)
    assert r.time == 3.0


def test_losses_counted_and_fraction_per_interval():
    s = ReceiverStats(8000)
    lost = {10, 11, 50}
    feed(s, [i for i in range(100) if i not in lost])
    assert s.expected == 99
    assert s.cumulative_lost == 3
    assert s.received == 96
    assert s.loss_rate == pytest.approx(3 / 99)
    r = s.report()
    assert r.fraction_lost == (3 << 8) // 99
    assert r.fraction == pytest.approx(r.fraction_lost / 256)
    # Next interval without loss: fraction 0, cumulative unchanged.
    feed(s, range(100, 150))
    r2 = s.report()
    assert r2.fraction_lost == 0 and r2.cumulative_lost == 3
    assert r2.expected_interval == 50 and r2.received_interval == 50
    # An empty interval reports nothing lost.
    r3 = s.report()
    assert r3.fraction_lost == 0 and r3.expected_interval == 0


def test_all_lost_in_interval_clamps_to_255():
    s = ReceiverStats(8000)
    feed(s, range(10))
    s.report()
    feed(s, [60])  # 50 expected, 1 received
    r = s.report()
    assert r.fraction_lost == (49 << 8) // 50
    assert 0 <= r.fraction_lost <= 255


def test_reordering_is_not_loss():
    s = ReceiverStats(8000)
    order = list(range(5))
    for i in range(5, 100, 2):
        order += [i + 1, i]  # every pair swapped
    feed(s, [i for i in order if i < 100])
    assert s.cumulative_lost == 0
    assert s.reordered > 0
    assert s.duplicates == 0
    assert s.report().fraction_lost == 0


def test_duplicates_make_cumulative_lost_negative():
    s = ReceiverStats(8000)
    order = []
    for i in range(100):
        order.append(i)
        if i % 10 == 5:
            order.append(i)  # duplicate right after
    feed(s, order)
    assert s.duplicates == 10
    assert s.cumulative_lost == -10  # RFC 3550: duplicates count as received
    assert s.loss_rate < 0
    assert s.report().fraction_lost == 0


def test_sequence_wraparound_over_70000_packets():
    s = ReceiverStats(8000)
    start = 65000
    lost = {535, 536, 40000}  # 535, 536 are seq 65535 and 0: across the first wrap
    feed(s, [i for i in range(70000) if i not in lost], start_seq=start)
    assert s.extended_highest_sequence == start + 69999
    assert s.extended_highest_sequence >> 16 == 2  # 65000 + 69999 wraps twice
    assert s.expected == 69999
    assert s.cumulative_lost == 3
    assert s.report().extended_highest_sequence == start + 69999


def test_late_packet_from_before_the_wrap_is_reorder_not_jump():
    s = ReceiverStats(8000)
    # Index 4 is seq 65534; it arrives after seq 0 and 1 of the next cycle.
    feed(s, [0, 1, 2, 3, 5, 6, 7, 4, 8, 9], start_seq=65530)
    assert s.extended_highest_sequence == 65536 + 3
    assert s.cumulative_lost == 0
    assert s.reordered == 1 and s.duplicates == 0


def test_stray_jump_ignored_then_resync_on_two_sequential():
    s = ReceiverStats(8000)
    feed(s, range(50))
    before = (s.received, s.expected)
    s.update(20000, 0, 10.0)  # a single far-away packet: not counted (bad_seq)
    assert (s.received, s.expected) == before
    feed(s, range(50, 60))
    assert s.cumulative_lost == 0
    # Now the source really restarts at 30000: two sequential packets resync it.
    s.update(30000, 0, 20.0)
    s.update(30001, 160, 20.02)
    assert s.extended_highest_sequence == 30001
    assert s.expected == 1 and s.received == 1
    s.update(30002, 320, 20.04)
    assert s.expected == 2 and s.cumulative_lost == 0


def test_probation_restarts_on_gap():
    s = ReceiverStats(8000)
    s.update(5, 0, 0.0)
    s.update(7, 320, 0.04)  # not sequential: probation starts again from 7
    assert not s.valid and s.received == 0 and s.expected == 0
    s.update(8, 480, 0.06)
    assert s.valid and s.received == 1 and s.expected == 1


def test_constant_transit_has_zero_jitter_any_epoch():
    s = ReceiverStats(48000)
    for i in range(200):
        s.update(i, (4_294_000_000 + i * 960) % 2**32, 1.7e9 + i * PTIME)  # ts wraps
    assert s.jitter == pytest.approx(0.0, abs=1e-2)
    assert s.jitter_ms == pytest.approx(0.0, abs=1e-3)


def test_alternating_transit_converges_to_analytic_value():
    clock = 8000
    d = 0.005  # transit alternates +-5 ms around its mean: |D| = 2 d every packet
    s = ReceiverStats(clock)
    jit = []
    for i in range(400):
        transit = 0.05 + (d if i % 2 else -d)
        s.update(i, i * SPP, i * PTIME + transit)
        jit.append(s.jitter)
    big_d = 2 * d * clock
    # Packet 0 is in probation, packet 1 starts the jitter state; from packet 2 on
    # J_k = |D| (1 - (15/16)^k) after k updates.
    for k in (1, 5, 20):
        assert jit[1 + k] == pytest.approx(big_d * (1 - (15 / 16) ** k), rel=1e-9)
    assert s.jitter == pytest.approx(big_d, rel=1e-9)
    assert s.jitter_ms == pytest.approx(2 * d * 1000, rel=1e-9)
    assert s.report().jitter == int(s.jitter)


@pytest.mark.parametrize(
    "args",
    [(70000, 0, 0.0), (-1, 0, 0.0), (1, 2**32, 0.0), (1, -5, 0.0), (1, 0, float("nan")),
     (1.5, 0, 0.0), (1, 0, "soon"), (True, 0, 0.0)],
)
def test_out_of_range_fields_are_parameter_errors(args):
    with pytest.raises(ParameterError):
        ReceiverStats(8000).update(*args)


@pytest.mark.parametrize("rate", [0, -8000, 8000.0, None, True])
def test_bad_clock_rate(rate):
    with pytest.raises(ParameterError):
        ReceiverStats(rate)


packets = st.lists(
    st.one_of(
        st.tuples(
            st.integers(0, 65535),
            st.integers(0, 2**32 - 1),
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        ),
        st.just("report"),
    ),
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(packets)
def test_arbitrary_input_never_raises_and_keeps_invariants(events):
    s = ReceiverStats(8000)
    for ev in events:
        if ev == "report":
            r = s.report()
            assert 0 <= r.fraction_lost <= 255
            assert -0x800000 <= r.cumulative_lost <= 0x7FFFFF
            assert r.jitter >= 0
        else:
            s.update(*ev)
        assert s.received >= 0
        assert s.expected >= 0
        assert s.jitter >= 0 and math.isfinite(s.jitter)
        assert s.duplicates >= 0
    r = s.report()
    assert 0 <= r.fraction_lost <= 255


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=3, max_size=300))
def test_nearby_sequence_numbers_keep_counts_consistent(seqs):
    s = ReceiverStats(8000)
    for n, seq in enumerate(seqs):
        s.update(seq, seq * SPP, n * PTIME)
    if s.valid:
        # Every counted packet is either new in range or a duplicate / late arrival.
        assert s.received <= len(seqs)
        assert s.cumulative_lost == s.expected - s.received
