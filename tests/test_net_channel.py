"""Channel model, its config, the delay model and the presets (fake clock, no sleeps)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voicelab.errors import ParameterError
from voicelab.net import (
    PRESETS,
    Channel,
    ChannelConfig,
    DelayModel,
    describe_presets,
    preset,
)

FRAME = 0.020


def _send(channel, n, *, size=200, spacing=FRAME):
    return [channel.transmit(i * spacing, size) for i in range(n)]


def _lost_indices(channel):
    return [f.index for f in channel.fates if f.lost]


# --- basics ----------------------------------------------------------------------


def test_perfect_channel_delivers_after_the_fixed_delay():
    ch = Channel(ChannelConfig(delay_ms=35.0), seed=0)
    out = _send(ch, 50)
    assert all(len(a) == 1 for a in out)
    assert [a[0] for a in out] == pytest.approx([i * FRAME + 0.035 for i in range(50)])
    s = ch.stats
    assert (s.sent, s.delivered, s.lost_by_model, s.dropped_by_queue, s.duplicated) == (50, 50, 0, 0, 0)


def test_fates_record_every_packet():
    ch = Channel(ChannelConfig(delay_ms=10, loss_rate=0.3), seed=4)
    out = _send(ch, 200, size=123)
    assert len(ch.fates) == 200
    for i, (fate, arrivals) in enumerate(zip(ch.fates, out)):
        assert fate.index == i
        assert fate.send_time == pytest.approx(i * FRAME)
        assert fate.size == 123
        assert fate.lost == (arrivals == [])
        assert fate.reason == ("loss" if fate.lost else None)
        assert list(fate.arrivals) == arrivals
    s = ch.stats
    assert s.sent == s.delivered + s.lost_by_model + s.dropped_by_queue
    assert s.loss_rate == pytest.approx(len(_lost_indices(ch)) / 200)


def test_same_seed_identical_fates_different_seed_different():
    cfg = ChannelConfig(delay_ms=30, jitter_ms=10, loss_rate=0.05, burst_length=2, duplicate_rate=0.02)
    a, b, c = (Channel(cfg, seed=s) for s in (42, 42, 43))
    for ch in (a, b, c):
        _send(ch, 2000)
    assert a.fates == b.fates
    assert a.fates != c.fates
    assert _lost_indices(a) != _lost_indices(c)


def test_seed_may_be_a_generator():
    cfg = ChannelConfig(jitter_ms=5, loss_rate=0.1)
    a = Channel(cfg, seed=np.random.default_rng(9))
    b = Channel(cfg, seed=np.random.default_rng(9))
    _send(a, 500)
    _send(b, 500)
    assert a.fates == b.fates


def test_changing_jitter_does_not_change_which_packets_are_lost():
    base = ChannelConfig(delay_ms=40, loss_rate=0.05, burst_length=2.0)
    losses = []
    for cfg in (base, base.with_(jitter_ms=30.0), base.with_(jitter_ms=30.0, jitter_distribution="pareto", reorder=True)):
        ch = Channel(cfg, seed=123)
        _send(ch, 5000)
        losses.append(_lost_indices(ch))
    assert len(losses[0]) > 100
    assert losses[0] == losses[1] == losses[2]


def test_changing_loss_does_not_change_delays():
    base = ChannelConfig(delay_ms=40, jitter_ms=20, reorder=True)
    a = Channel(base, seed=5)
    b = Channel(base.with_(loss_rate=0.2), seed=5)
    out_a, out_b = _send(a, 1000), _send(b, 1000)
    both = [(x, y) for x, y in zip(out_a, out_b) if y]
    assert len(both) > 700
    assert all(x == y for x, y in both)


def test_bandwidth_does_not_change_model_losses():
    base = ChannelConfig(loss_rate=0.1)
    a = Channel(base, seed=77)
    b = Channel(base.with_(bandwidth_kbps=80.0, queue_packets=2), seed=77)
    _send(a, 1000, size=1000)
    _send(b, 1000, size=1000)
    model_a = {f.index for f in a.fates if f.reason == "loss"}
    model_b = {f.index for f in b.fates if f.reason == "loss"}
    queue_b = {f.index for f in b.fates if f.reason == "queue"}
    assert queue_b  # the small queue overflowed
    assert model_b == model_a - queue_b


def test_loss_rate_through_the_channel():
    p, n = 0.05, 20_000
    ch = Channel(ChannelConfig(loss_rate=p), seed=2)
    _send(ch, n)
    assert abs(ch.stats.loss_rate - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert ch.expected_loss_rate == p


# --- ordering --------------------------------------------------------------------


def test_no_reordering_keeps_arrivals_in_sending_order():
    ch = Channel(ChannelConfig(delay_ms=50, jitter_ms=40, reorder=False), seed=1)
    arrivals = [a[0] for a in _send(ch, 3000)]
    assert np.all(np.diff(arrivals) >= 0)
    # ... and a packet is never earlier than its own delay draw allows: at least send time.
    assert all(t >= i * FRAME for i, t in enumerate(arrivals))


def test_reordering_happens_when_allowed_with_large_jitter():
    ch = Channel(ChannelConfig(delay_ms=50, jitter_ms=40, reorder=True), seed=1)
    arrivals = np.array([a[0] for a in _send(ch, 3000)])
    inversions = int(np.sum(np.diff(arrivals) < 0))
    assert inversions > 100


def test_fifo_is_the_running_maximum_of_the_reordering_draws():
    cfg = ChannelConfig(delay_ms=50, jitter_ms=40, reorder=True)
    free = np.array([a[0] for a in _send(Channel(cfg, seed=6), 1000)])
    fifo = np.array([a[0] for a in _send(Channel(cfg.with_(reorder=False), seed=6), 1000)])
    assert np.allclose(fifo, np.maximum.accumulate(free))


# --- bandwidth and queue -----------------------------------------------------------


def test_serialization_delay_1000_bytes_at_80_kbps_is_100_ms():
    ch = Channel(ChannelConfig(bandwidth_kbps=80.0), seed=0)
    # Packets spaced 200 ms apart never wait: each takes exactly 100 ms on the link.
    out = _send(ch, 5, size=1000, spacing=0.2)
    assert [a[0] - 0.2 * i for i, a in enumerate(out)] == pytest.approx([0.1] * 5)


def test_queue_builds_without_limit():
    ch = Channel(ChannelConfig(bandwidth_kbps=80.0, delay_ms=10.0), seed=0)
    out = _send(ch, 20, size=1000, spacing=FRAME)
    # The link sends one 1000-byte packet per 100 ms: packet i leaves at 0.1 * (i + 1).
    assert [a[0] for a in out] == pytest.approx([0.1 * (i + 1) + 0.010 for i in range(20)])
    assert ch.queue_length == 20 - 1 - int(19 * FRAME / 0.1)  # not yet started at t = 0.38 s
    assert ch.stats.dropped_by_queue == 0


def test_drop_tail_queue():
    limit = 3
    ch = Channel(ChannelConfig(bandwidth_kbps=80.0, queue_packets=limit), seed=0)
    out = _send(ch, 500, size=1000, spacing=FRAME)
    # Hand-computed start: packets 0..3 fit (one on the link + 3 waiting), 4 is dropped.
    assert [a[0] if a else None for a in out[:5]] == pytest.approx([0.1, 0.2, 0.3, 0.4, None])
    delivered = [a[0] for a in out if a]
    # The link runs flat out: deliveries are exactly one transmission time apart ...
    assert np.allclose(np.diff(delivered), 0.1)
    # ... so over 10 s of sending it carries about 100 packets, the rest are dropped.
    assert ch.stats.delivered == pytest.approx(500 * FRAME / 0.1, abs=limit + 1)
    assert ch.stats.dropped_by_queue == 500 - ch.stats.delivered
    # Queueing delay never exceeds the limit's worth of transmissions (+ the one on the link).
    waits = [a[0] - i * FRAME for i, a in enumerate(out) if a]
    assert max(waits) <= (limit + 1) * 0.1 + 1e-9
    assert all(f.reason == "queue" for f in ch.fates if f.lost)


def test_zero_length_queue_drops_whenever_the_link_is_busy():
    ch = Channel(ChannelConfig(bandwidth_kbps=80.0, queue_packets=0), seed=0)
    out = _send(ch, 10, size=1000, spacing=0.05)
    assert [bool(a) for a in out] == [i % 2 == 0 for i in range(10)]


# --- duplication --------------------------------------------------------------------


def test_duplication_rate_within_sampling_error():
    p, n = 0.1, 20_000
    ch = Channel(ChannelConfig(delay_ms=20, jitter_ms=5, duplicate_rate=p), seed=3)
    out = _send(ch, n)
    dups = sum(len(a) == 2 for a in out)
    assert abs(dups / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert ch.stats.duplicated == dups
    assert all(a == sorted(a) for a in out)


def test_duplicates_of_lost_packets_do_not_arrive():
    ch = Channel(ChannelConfig(loss_rate=0.5, duplicate_rate=0.5), seed=3)
    out = _send(ch, 2000)
    assert all(a == [] for a, f in zip(out, ch.fates) if f.reason == "loss")
    assert ch.stats.duplicated > 0


# --- traces --------------------------------------------------------------------------


def test_loss_trace_replay():
    ch = Channel(ChannelConfig(delay_ms=5, loss_trace=(1, 4, 5)), seed=0)
    _send(ch, 8)
    assert _lost_indices(ch) == [1, 4, 5]
    assert ch.expected_loss_rate == pytest.approx(3 / 6)


# --- config ---------------------------------------------------------------------------


def test_config_round_trip_and_with():
    cfg = ChannelConfig(
        delay_ms=40, jitter_ms=30, jitter_distribution="pareto", loss_rate=0.03,
        burst_length=3, bandwidth_kbps=1000, queue_packets=50, duplicate_rate=0.01,
    )
    assert ChannelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.with_(loss_rate=0.1).loss_rate == 0.1
    assert cfg.with_(loss_rate=0.1).delay_ms == 40.0
    traced = ChannelConfig(loss_trace=[5, 1])
    assert traced.loss_trace == (1, 5)
    assert traced.to_dict()["loss_trace"] == [1, 5]
    assert ChannelConfig.from_dict(traced.to_dict()) == traced
    with pytest.raises(Exception):
        cfg.delay_ms = 3  # frozen


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"loss_rate": 1.5}, "1.5"),
        ({"loss_rate": -0.2}, "-0.2"),
        ({"loss_rate": 0.6, "burst_length": 1.2}, "1.5"),
        ({"loss_rate": 0.1, "burst_length": 0.5}, "0.5"),
        ({"delay_ms": -5}, "-5"),
        ({"jitter_ms": -1.5}, "-1.5"),
        ({"jitter_distribution": "gamma"}, "gamma"),
        ({"bandwidth_kbps": 0}, "0"),
        ({"queue_packets": -1}, "-1"),
        ({"queue_packets": 2.5}, "2.5"),
        ({"duplicate_rate": 2.0}, "2"),
        ({"reorder": "yes"}, "yes"),
        ({"loss_trace": (1, 2), "loss_rate": 0.1}, "not both"),
        ({"loss_trace": (-3,)}, "-3"),
    ],
)
def test_config_parameter_errors_name_the_value(kwargs, needle):
    with pytest.raises(ParameterError) as info:
        ChannelConfig(**kwargs)
    assert needle in str(info.value)


def test_config_unknown_names():
    with pytest.raises(ParameterError, match="valid names are"):
        ChannelConfig.from_dict({"loss": 0.1})
    with pytest.raises(ParameterError, match="valid names are"):
        ChannelConfig().with_(jiter_ms=3)


def test_channel_argument_errors():
    with pytest.raises(ParameterError):
        Channel({"delay_ms": 3})
    with pytest.raises(ParameterError):
        Channel(ChannelConfig(), seed=-1)
    with pytest.raises(ParameterError):
        Channel(ChannelConfig(), seed="abc")
    ch = Channel(ChannelConfig(), seed=0)
    ch.transmit(1.0, 100)
    with pytest.raises(ParameterError, match="backwards"):
        ch.transmit(0.5, 100)
    with pytest.raises(ParameterError):
        ch.transmit(2.0, -1)
    with pytest.raises(ParameterError):
        ch.transmit(float("nan"), 10)


# --- delay model -------------------------------------------------------------------------


def _samples(model, n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([model.sample_ms(rng) for _ in range(n)])


def test_normal_delay_mean_and_spread():
    x = _samples(DelayModel(100.0, 10.0))
    assert abs(x.mean() - 100.0) < 4 * 10.0 / math.sqrt(len(x))
    assert x.std() == pytest.approx(10.0, rel=0.05)


def test_normal_delay_is_clipped_at_zero():
    x = _samples(DelayModel(0.0, 10.0))
    assert x.min() == 0.0
    assert np.mean(x == 0.0) == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / len(x)))


def test_uniform_delay_bounds():
    x = _samples(DelayModel(50.0, 20.0, "uniform"))
    assert x.min() >= 30.0 and x.max() <= 70.0
    assert x.min() < 31.0 and x.max() > 69.0


def test_pareto_jitter_is_positive_with_the_requested_mean():
    jitter, shape = 30.0, 3.0
    x = _samples(DelayModel(40.0, jitter, "pareto", pareto_shape=shape)) - 40.0
    assert x.min() >= 0.0
    # Lomax(shape a, scale jitter*(a-1)): std = jitter * sqrt(a / (a - 2)).
    se = jitter * math.sqrt(shape / (shape - 2)) / math.sqrt(len(x))
    assert abs(x.mean() - jitter) < 4 * se
    assert np.percentile(x, 99.9) > 5 * jitter  # heavy tail


def test_zero_jitter_draws_nothing():
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    assert DelayModel(12.5).sample_ms(rng) == 12.5
    assert rng.bit_generator.state == before


@pytest.mark.parametrize(
    "kwargs",
    [{"delay_ms": -1}, {"jitter_ms": -2}, {"distribution": "cauchy"}, {"pareto_shape": 1.0}, {"delay_ms": "x"}],
)
def test_delay_parameter_errors(kwargs):
    with pytest.raises(ParameterError):
        DelayModel(**kwargs)


# --- presets ---------------------------------------------------------------------------


def test_presets_exist_with_documented_values():
    assert set(PRESETS) == {"perfect", "lan", "wifi", "lte", "3g", "satellite", "congested"}
    assert preset("perfect") == ChannelConfig()
    assert preset("3g").bandwidth_kbps == 384.0
    assert preset("satellite").delay_ms >= 270.0
    assert preset("congested").jitter_distribution == "pareto"
    assert preset("congested").queue_packets == 50
    assert preset("LTE") == preset("lte")


def test_unknown_preset_lists_the_names():
    with pytest.raises(ParameterError) as info:
        preset("5g")
    for name in PRESETS:
        assert name in str(info.value)


def test_describe_presets_table():
    rows = describe_presets()
    assert [r["name"] for r in rows] == list(PRESETS)
    for row in rows:
        assert row["source"] and row["description"]
        assert row["delay_ms"] == PRESETS[row["name"]].delay_ms
        assert row["expected_loss_rate"] == pytest.approx(PRESETS[row["name"]].loss_rate)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs(name):
    ch = Channel(preset(name), seed=1)
    out = _send(ch, 500)
    assert ch.stats.sent == 500
    assert sum(bool(a) for a in out) == ch.stats.delivered
