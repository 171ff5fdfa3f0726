"""Jitter buffers driven by a fake clock: ordering, loss, lateness, DTX, wrap, adaptation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voicelab.errors import ParameterError
from voicelab.net import DelayModel
from voicelab.rtp import (
    AdaptiveJitterBuffer,
    FixedJitterBuffer,
    Packetizer,
    Playout,
    RtpPacket,
)

FRAME_MS = 20.0
F = FRAME_MS / 1000.0
CLOCK = 8000
INC = 160


def fixed(delay_ms=60.0, **kw):
    return FixedJitterBuffer(frame_ms=FRAME_MS, clock_rate=CLOCK, timestamp_increment=INC, delay_ms=delay_ms, **kw)


def adaptive(**kw):
    return AdaptiveJitterBuffer(frame_ms=FRAME_MS, clock_rate=CLOCK, timestamp_increment=INC, **kw)


def packets(n, *, seq0=1000, ts0=50_000, skips=None):
    """n packets whose payload is the frame number (4 bytes); skips: {i: frames_skipped}."""
    pk = Packetizer(payload_type=0, clock_rate=CLOCK, timestamp_increment=INC, ssrc=1,
                    initial_sequence=seq0, initial_timestamp=ts0)
    skips = skips or {}
    return [pk.packetize(i.to_bytes(4, "big"), frames_skipped=skips.get(i, 0)) for i in range(n)]


def frame_no(payload):
    return int.from_bytes(payload, "big")


def drive(jb, arrivals, *, slots, ahead=False):
    """Play ``slots`` slots; arrivals = [(time, packet)]. Interleaved push/pop unless ahead."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    if ahead:
        for t, p in arrivals:
            jb.push(p, t)
    else:
        jb.push(arrivals[0][1], arrivals[0][0])
    start = jb.start_time()
    out, ptr = [], (len(arrivals) if ahead else 1)
    for k in range(slots):
        now = start + k * F
        while ptr < len(arrivals) and arrivals[ptr][0] <= now:
            jb.push(arrivals[ptr][1], arrivals[ptr][0])
            ptr += 1
        out.append(jb.pop(now))
    return out


def played(out):
    return [frame_no(p.payload) for p in out if p.kind in ("frame", "skip")]


# --- fixed buffer --------------------------------------------------------------------


def test_fixed_perfect_network_plays_everything_with_the_configured_delay():
    pkts = packets(100)
    arrivals = [(0.5 + i * F + 0.030, p) for i, p in enumerate(pkts)]
    jb = fixed(60.0)
    out = drive(jb, arrivals, slots=100)
    assert jb.start_time() == pytest.approx(0.53 + 0.06)
    assert [p.kind for p in out] == ["frame"] * 100
    assert played(out) == list(range(100))
    assert all(p.delay_ms == pytest.approx(60.0) for p in out)
    assert [p.sequence_number for p in out] == [(1000 + i) & 0xFFFF for i in range(100)]
    s = jb.stats
    assert (s.received, s.played, s.late, s.lost, s.dtx, s.duplicates) == (100, 100, 0, 0, 0, 0)
    assert s.playout_delay_ms == pytest.approx(60.0)
    assert s.target_delay_ms == 60.0
    assert s.late_loss_rate == 0.0


def test_pushing_ahead_equals_pushing_on_arrival():
    rng = np.random.default_rng(4)
    model = DelayModel(40.0, 15.0)
    pkts = packets(400)
    arrivals = [(i * F + model.sample_ms(rng) / 1000, p) for i, p in enumerate(pkts)]
    for make in (lambda: fixed(40.0), adaptive):
        a, b = make(), make()
        out_a = drive(a, arrivals, slots=450)
        out_b = drive(b, arrivals, slots=450, ahead=True)
        assert out_a == out_b
        assert a.stats == b.stats


def test_reordered_pair_is_played_in_order():
    pkts = packets(6)
    times = [i * F for i in range(6)]
    times[2], times[3] = times[3] - 0.001, times[2] + 0.001  # 3 overtakes 2
    jb = fixed(40.0)
    out = drive(jb, list(zip(times, pkts)), slots=6)
    assert played(out) == [0, 1, 2, 3, 4, 5]
    assert jb.stats.lost == 0 and jb.stats.late == 0


def test_late_packet_is_counted_late_and_its_slot_lost():
    pkts = packets(8)
    times = [i * F for i in range(8)]
    times[3] += 0.100  # 100 ms late against a 40 ms buffer
    jb = fixed(40.0)
    out = drive(jb, list(zip(times, pkts)), slots=8)
    assert out[3].kind == "lost"
    assert out[3].sequence_number == pkts[3].sequence_number  # known: packet 4 is buffered
    assert out[3].next_payload == pkts[4].payload
    assert not out[3].dtx
    assert played(out) == [0, 1, 2, 4, 5, 6, 7]
    s = jb.stats
    assert (s.late, s.lost, s.received) == (1, 1, 7)
    assert s.late_loss_rate == pytest.approx(1 / 8)


def test_packet_arriving_exactly_at_its_slot_is_in_time():
    pkts = packets(3)
    jb = fixed(40.0)
    times = [0.0, F, 2 * F]
    times[2] = 0.040 + 2 * F  # exactly its slot time
    out = drive(jb, list(zip(times, pkts)), slots=3)
    assert [p.kind for p in out] == ["frame"] * 3
    assert out[2].delay_ms == pytest.approx(0.0)


def test_lost_slot_reports_next_payload_for_fec():
    pkts = packets(6)
    arrivals = [(i * F, p) for i, p in enumerate(pkts) if i != 2]
    out = drive(fixed(60.0), arrivals, slots=6)
    assert out[2].kind == "lost"
    assert out[2].next_payload == pkts[3].payload
    assert out[2].sequence_number == pkts[2].sequence_number
    assert out[2].timestamp == pkts[2].timestamp


def test_lost_slot_without_next_packet_yet():
    pkts = packets(6)
    arrivals = [(i * F, p) for i, p in enumerate(pkts) if i != 2]
    jb = fixed(0.0)  # nothing buffered ahead: packet 3 arrives only at its own slot
    out = drive(jb, arrivals, slots=6)
    assert out[2].kind == "lost"
    assert out[2].next_payload is None
    assert out[2].sequence_number is None  # not known yet
    assert jb.stats.lost == 1 and jb.stats.dtx == 0  # settled when packet 3 played


def test_burst_loss_counts_every_missing_packet():
    pkts = packets(20)
    gone = {5, 6, 7, 12}
    arrivals = [(i * F, p) for i, p in enumerate(pkts) if i not in gone]
    for delay in (0.0, 100.0):
        jb = fixed(delay)
        out = drive(jb, arrivals, slots=20)
        assert [k for k, p in enumerate(out) if p.kind == "lost"] == sorted(gone)
        assert jb.stats.lost == len(gone)
        assert jb.stats.concealed == len(gone)


def test_duplicates_are_ignored_and_counted():
    pkts = packets(5)
    arrivals = [(i * F, p) for i, p in enumerate(pkts)] + [(0.015, pkts[1]), (0.05, pkts[2])]
    jb = fixed(40.0)
    out = drive(jb, arrivals, slots=5)
    assert played(out) == [0, 1, 2, 3, 4]
    assert jb.stats.duplicates == 2
    assert jb.stats.received == 5


def test_packet_before_the_first_arrival_is_late():
    pkts = packets(4)
    arrivals = [(0.0, pkts[1]), (0.005, pkts[0]), (F, pkts[2]), (2 * F, pkts[3])]
    jb = fixed(40.0)
    out = drive(jb, arrivals, slots=3)
    assert played(out) == [1, 2, 3]
    assert jb.stats.late == 1


def test_empty_before_start_and_after_the_end():
    pkts = packets(3)
    jb = fixed(40.0, end_timeout_ms=100.0)
    assert jb.start_time() is None
    assert jb.pop(0.0).kind == "empty"
    for i, p in enumerate(pkts):
        jb.push(p, 1.0 + i * F)
    assert jb.pop(1.0).kind == "empty"  # before start_time = 1.04
    start = jb.start_time()
    kinds = [jb.pop(start + k * F).kind for k in range(12)]
    # 3 frames, then lost while the end is uncertain, then empty after 100 ms of silence.
    assert kinds[:3] == ["frame"] * 3
    assert set(kinds[3:]) == {"lost", "empty"}
    first_empty = kinds.index("empty")
    assert all(k == "empty" for k in kinds[first_empty:])
    last_arrival = 1.0 + 2 * F
    assert (start + first_empty * F - last_arrival) * 1000 > 100.0
    assert (start + (first_empty - 1) * F - last_arrival) * 1000 <= 100.0 + 1e-6
    assert jb.stats.lost == 0  # the tail is never counted as lost


# --- DTX --------------------------------------------------------------------------------


@pytest.mark.parametrize("delay_ms", [0.0, 200.0])
def test_dtx_gap_is_not_loss(delay_ms):
    # Frames 10..17 are not sent (DTX); packet 10 carries frames_skipped=8.
    pkts = packets(20, skips={10: 8})
    arrivals = [(p.timestamp - 50_000) / CLOCK + 0.03 for p in pkts]
    jb = fixed(delay_ms)
    out = drive(jb, list(zip(arrivals, pkts)), slots=28)
    kinds = [p.kind for p in out]
    assert kinds[:10] == ["frame"] * 10 and kinds[18:] == ["frame"] * 10
    assert kinds[10:18] == ["lost"] * 8
    assert [p.sequence_number for p in out[10:18]] == [None] * 8
    if delay_ms >= 200.0:  # next packet already buffered: known to be DTX at once
        assert all(p.dtx for p in out[10:18])
    s = jb.stats
    assert (s.lost, s.dtx, s.played) == (0, 8, 20)


def test_loss_inside_a_dtx_gap_is_counted_once():
    pkts = packets(20, skips={10: 4})
    arrivals = [((p.timestamp - 50_000) / CLOCK, p) for i, p in enumerate(pkts) if i != 10]
    jb = fixed(0.0)
    drive(jb, arrivals, slots=24)
    s = jb.stats
    assert s.lost == 1 and s.dtx == 4


# --- wrap-around ------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: fixed(60.0), adaptive], ids=["fixed", "adaptive"])
def test_sequence_and_timestamp_wrap(make):
    pkts = packets(300, seq0=65_400, ts0=2**32 - 100 * INC)
    assert {p.sequence_number for p in pkts} >= {65_535, 0}
    rng = np.random.default_rng(0)
    model = DelayModel(30.0, 5.0)
    arrivals = [(i * F + model.sample_ms(rng) / 1000, p) for i, p in enumerate(pkts)]
    jb = make()
    out = drive(jb, arrivals, slots=320)
    seq = played(out)
    assert seq == sorted(seq)
    assert len(seq) + jb.stats.lost + jb.stats.accelerated >= 295
    assert jb.stats.duplicates == 0


# --- adaptive ---------------------------------------------------------------------------


def _jitter_episode(jb, *, n=3000, rough=(600, 1800), sigma=40.0, seed=1):
    """Delay 50 ms, normal jitter sigma during `rough`, none elsewhere. Returns targets."""
    rng = np.random.default_rng(seed)
    calm, noisy = DelayModel(50.0), DelayModel(50.0, sigma)
    pkts = packets(n)
    arrivals = []
    for i, p in enumerate(pkts):
        model = noisy if rough[0] <= i < rough[1] else calm
        arrivals.append((i * F + model.sample_ms(rng) / 1000, p))
    for t, p in arrivals:
        jb.push(p, t)
    start = jb.start_time()
    targets = []
    outs = []
    for k in range(n):
        outs.append(jb.pop(start + k * F))
        targets.append(jb.stats.target_delay_ms)
    return np.array(targets), outs


def test_adaptive_target_grows_under_jitter_and_shrinks_back():
    sigma = 40.0
    jb = adaptive()
    targets, outs = _jitter_episode(jb, sigma=sigma)
    before = targets[400:580]  # jittery packets may arrive before slot 600 is played
    during = targets[900:1800]
    after = targets[2400:]
    assert before.max() <= jb.min_delay_ms + FRAME_MS
    assert np.median(during) > 2 * sigma  # roughly the 95th percentile spread + a frame
    assert during.max() <= jb.max_delay_ms
    assert after.max() <= jb.min_delay_ms + FRAME_MS
    # The buffer really followed: delays of played frames rose, then came back down.
    delay = np.array([p.delay_ms if p.kind in ("frame", "skip") else np.nan for p in outs])
    assert np.nanmean(delay[1200:1800]) > 2 * np.nanmean(delay[400:600])
    assert np.nanmean(delay[2400:]) < np.nanmean(delay[1200:1800]) / 2
    s = jb.stats
    assert s.expanded > 0 and s.accelerated > 0


def test_adaptive_beats_a_fixed_20_ms_buffer_under_jitter():
    a, f = adaptive(), fixed(20.0)
    _jitter_episode(a)
    _jitter_episode(f)
    assert f.stats.late_loss_rate > 0.05
    assert a.stats.late_loss_rate < f.stats.late_loss_rate / 3


def test_adaptive_percentile_trades_late_loss_for_delay():
    # Steady jitter: at most about (100 - percentile) % of packets miss their slot, and a
    # higher percentile buys fewer late packets with more delay.
    stats = {}
    for pct in (80.0, 99.0):
        jb = adaptive(percentile=pct)
        _jitter_episode(jb, n=3000, rough=(0, 3000), sigma=20.0, seed=3)
        stats[pct] = jb.stats
    assert stats[80.0].late_loss_rate < 0.2 + 0.03
    assert stats[99.0].late_loss_rate < 0.01 + 0.01
    assert stats[80.0].late_loss_rate > stats[99.0].late_loss_rate
    assert stats[80.0].playout_delay_ms < stats[99.0].playout_delay_ms
    assert stats[80.0].target_delay_ms < stats[99.0].target_delay_ms


def test_adaptive_perfect_network_plays_everything():
    pkts = packets(500)
    jb = adaptive()
    out = drive(jb, [(i * F + 0.05, p) for i, p in enumerate(pkts)], slots=500)
    assert played(out) == list(range(500))
    s = jb.stats
    assert (s.late, s.lost, s.expanded, s.accelerated) == (0, 0, 0, 0)
    assert s.playout_delay_ms == pytest.approx(jb.initial_delay_ms)


def test_adaptive_perfect_network_shrinks_to_its_target_without_loss():
    pkts = packets(500)
    jb = adaptive(initial_delay_ms=100.0)
    out = drive(jb, [(i * F + 0.05, p) for i, p in enumerate(pkts)], slots=500)
    s = jb.stats
    assert (s.late, s.lost, s.expanded) == (0, 0, 0)
    assert s.accelerated > 0
    assert s.played == len(played(out))
    seq = played(out)
    assert len(seq) + s.accelerated == seq[-1] + 1
    final_delay = out[-1].delay_ms
    assert s.target_delay_ms - FRAME_MS <= final_delay <= s.target_delay_ms + FRAME_MS


def test_skip_semantics_every_frame_accounted_once():
    jb = adaptive()
    targets, outs = _jitter_episode(jb, n=2500, rough=(300, 900), sigma=60.0, seed=7)
    skips = [p for p in outs if p.kind == "skip"]
    assert skips  # the buffer shrank after the jitter
    seqs = [frame_no(p.payload) for p in outs if p.kind in ("frame", "skip")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Each skip discarded exactly the frame before the one it plays.
    for k, p in enumerate(outs):
        if p.kind == "skip":
            prev = next(q for q in reversed(outs[:k]) if q.kind in ("frame", "skip"))
            assert frame_no(p.payload) - frame_no(prev.payload) >= 2
    s = jb.stats
    last = seqs[-1]
    assert s.played + s.accelerated + s.lost == last + 1
    assert s.concealed == sum(p.kind in ("lost", "expand") for p in outs)
    assert s.expanded == sum(p.kind == "expand" for p in outs)
    assert s.accelerated == len(skips)


def test_expand_does_not_consume_a_frame():
    jb = adaptive(initial_delay_ms=20.0, min_delay_ms=20.0)
    pkts = packets(200)
    # A 30-ms delay step at packet 100: the buffer must grow; no frame may be skipped.
    arrivals = [(i * F + (0.01 if i < 100 else 0.2), p) for i, p in enumerate(pkts)]
    out = drive(jb, arrivals, slots=260)
    assert played(out) == sorted(played(out))
    assert all(p.sequence_number is None and p.payload is None for p in out if p.kind == "expand")


# --- parameter errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_ms": 30.0},  # does not match 160 / 8000
        {"frame_ms": 0.0},
        {"clock_rate": 0},
        {"timestamp_increment": 1.5},
    ],
)
def test_buffer_parameter_errors(kwargs):
    base = {"frame_ms": FRAME_MS, "clock_rate": CLOCK, "timestamp_increment": INC}
    base.update(kwargs)
    with pytest.raises(ParameterError):
        FixedJitterBuffer(**base)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_delay_ms": 100, "max_delay_ms": 50}, {"percentile": 0}, {"percentile": 101},
     {"window_packets": 1}, {"initial_delay_ms": -1}],
)
def test_adaptive_parameter_errors(kwargs):
    with pytest.raises(ParameterError):
        adaptive(**kwargs)


def test_fixed_delay_must_be_non_negative():
    with pytest.raises(ParameterError):
        fixed(-5.0)


def test_initial_delay_is_clamped_into_the_bounds():
    assert adaptive(min_delay_ms=0, max_delay_ms=20).initial_delay_ms == 20.0


def test_push_and_pop_argument_errors():
    jb = fixed()
    with pytest.raises(ParameterError):
        jb.push(b"\x80" * 12, 0.0)
    with pytest.raises(ParameterError):
        jb.push(RtpPacket(), float("inf"))
    jb.pop(1.0)
    with pytest.raises(ParameterError, match="backwards"):
        jb.pop(0.5)


def test_playout_is_a_frozen_record():
    p = Playout("empty")
    with pytest.raises(Exception):
        p.kind = "frame"
    assert math.isnan(fixed().stats.playout_delay_ms)


# --- self-sizing ("auto") ---------------------------------------------------------------


def auto(**kw):
    from voicelab.rtp.jitterbuffer import parse_jitter_buffer

    kind, params = parse_jitter_buffer("auto")
    assert kind == "adaptive"
    params.update(kw)
    return adaptive(**params)


def test_auto_spec_parses_and_has_one_spelling():
    from voicelab.rtp.jitterbuffer import AUTO_JITTER_BUFFER, canonical_jitter_buffer, parse_jitter_buffer

    kind, params = parse_jitter_buffer("AUTO")
    assert (kind, params) == ("adaptive", AUTO_JITTER_BUFFER)
    assert params["headroom_ms"] < FRAME_MS and params["min_delay_ms"] == 0
    assert canonical_jitter_buffer(" Auto ") == "auto"
    assert canonical_jitter_buffer("auto:0:200.0") == "auto:0:200"
    assert parse_jitter_buffer("auto:10:200")[1]["min_delay_ms"] == 10.0
    assert canonical_jitter_buffer("adaptive") == "adaptive"  # the classic one is unchanged
    for bad in ("auto:5", "auto:50:10", "auto:x:y"):
        with pytest.raises(ParameterError):
            parse_jitter_buffer(bad)
    with pytest.raises(ParameterError):
        adaptive(headroom_ms=-1.0)


@pytest.mark.parametrize("spread_ms", [0.0, 2.0])
def test_auto_sits_a_few_ms_deep_on_a_clean_path(spread_ms):
    from voicelab.rtp.jitterbuffer import AUTO_JITTER_BUFFER

    # Transit 50 ms plus up to `spread_ms` of uniform jitter: the self-sizing buffer
    # buffers about its headroom + the spread, far below the classic adaptive buffer
    # (>= one frame) and the fixed 60 ms one, and plays every frame.
    rng = np.random.default_rng(7)
    pkts = packets(500)
    arrivals = [(i * F + 0.05 + rng.uniform(0, spread_ms) / 1000, p) for i, p in enumerate(pkts)]
    results = {}
    for name, jb in (("auto", auto()), ("adaptive", adaptive()), ("fixed", fixed(60.0))):
        out = drive(jb, arrivals, slots=500, ahead=True)
        results[name] = jb.stats
        if name == "auto":
            assert played(out) == list(range(500))
    a = results["auto"]
    assert (a.late, a.lost, a.accelerated) == (0, 0, 0)
    # it stays where it started (the target, headroom + spread, is below the start delay)
    assert a.playout_delay_ms <= AUTO_JITTER_BUFFER["initial_delay_ms"] + spread_ms
    assert a.target_delay_ms <= AUTO_JITTER_BUFFER["headroom_ms"] + spread_ms + 1e-6
    assert a.playout_delay_ms < results["adaptive"].playout_delay_ms - 10.0
    assert a.playout_delay_ms < results["fixed"].playout_delay_ms - 40.0


def test_auto_grows_with_jitter_keeps_late_loss_bounded_and_shrinks_back():
    sigma = 40.0
    jb = auto()
    targets, outs = _jitter_episode(jb, sigma=sigma)
    before, during, after = targets[300:580], targets[900:1800], targets[2400:]
    assert before.max() <= 3.0 + 1e-6
    assert np.median(during) > 2 * sigma  # ~ the 98th percentile of the spread
    assert after.max() <= 3.0 + 1e-6
    delay = np.array([p.delay_ms if p.kind in ("frame", "skip") else np.nan for p in outs])
    assert np.nanmean(delay[1200:1800]) > 3 * np.nanmean(delay[300:580])
    # back within the band [target, target + 1.5 frames] (frame-sized steps, hysteresis)
    assert np.nanmean(delay[2400:]) <= after.max() + 1.5 * FRAME_MS
    assert np.nanmean(delay[2400:]) < np.nanmean(delay[1200:1800]) / 2
    s = jb.stats
    assert s.expanded > 0 and s.accelerated > 0
    assert s.late_loss_rate < 0.03
    # a fixed buffer as deep as the auto one on the clean path would lose far more
    f = fixed(float(np.nanmean(delay[300:580])))
    _jitter_episode(f, sigma=sigma)
    assert f.stats.late_loss_rate > 5 * s.late_loss_rate


def test_auto_with_10_ms_frames():
    jb = AdaptiveJitterBuffer(frame_ms=10.0, clock_rate=48000, timestamp_increment=480,
                              **__import__("voicelab.rtp.jitterbuffer", fromlist=["x"]).AUTO_JITTER_BUFFER)
    pk = Packetizer(payload_type=111, clock_rate=48000, timestamp_increment=480, ssrc=1)
    for i in range(300):
        jb.push(pk.packetize(i.to_bytes(4, "big")), i * 0.01 + 0.03)
    start = jb.start_time()
    out = [jb.pop(start + k * 0.01) for k in range(300)]
    assert played(out) == list(range(300))
    assert jb.stats.playout_delay_ms == pytest.approx(jb.initial_delay_ms)


def test_drop_buffered_empties_the_queue_without_counting_loss():
    # a media-streams platform's 'clear': 10 frames arrive at once (an agent sending at
    # twice real time), 3 are played, the rest dropped; the next talkspurt, its timestamp
    # placed by the clock (slot 5, before the dropped ones' slots), plays on time
    def pkt(seq, slot, b):
        return RtpPacket(payload_type=0, sequence_number=1000 + seq, timestamp=5000 + slot * INC, payload=bytes([b]))

    jb = fixed(40.0)
    for i in range(10):
        jb.push(pkt(i, i, i), arrival_time=1.0)
    start = jb.start_time()
    assert [jb.pop(start + k * F).kind for k in range(3)] == ["frame"] * 3
    assert jb.drop_buffered(start + 3 * F) == 7
    assert jb.buffered_packets == 0
    assert jb.pop(start + 3 * F).kind == "lost"  # nothing left to play
    jb.push(pkt(10, 5, 99), arrival_time=start + 3.5 * F)
    kinds = [jb.pop(start + k * F) for k in range(4, 6)]
    assert [p.kind for p in kinds] == ["lost", "frame"] and kinds[1].payload == bytes([99])
    st = jb.stats
    assert st.lost == 0 and st.played == 4 and st.late == 0
    assert jb.drop_buffered(start + 6 * F) == 0
