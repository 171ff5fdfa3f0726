"""The userspace L2 link's decision core (:class:`voicelab.net.l2link.L2Link`) on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.net import Channel, ChannelConfig
from voicelab.net.l2link import L2Link, is_ip_frame


def _ip(n: int, size: int = 200) -> bytes:
    """An Ethernet/IPv4 frame whose last bytes carry ``n``."""
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + b"\x45" + b"\0" * (size - 19) + n.to_bytes(4, "big")


ARP = b"\xff" * 6 + b"\x04" * 6 + b"\x08\x06" + b"\0" * 28
IPV6 = b"\x02" * 12 + b"\x86\xdd" + b"\x60" + b"\0" * 60
VLAN_IP = b"\x02" * 12 + b"\x81\x00\x00\x05\x08\x00" + b"\x45" + b"\0" * 40


def test_which_frames_are_ip():
    assert is_ip_frame(_ip(1)) and is_ip_frame(IPV6) and is_ip_frame(VLAN_IP)
    assert not is_ip_frame(ARP)


def test_delay_per_direction_and_arp_passes_at_once():
    link = L2Link(ChannelConfig(delay_ms=20), ChannelConfig(delay_ms=5), seed=1)
    link.receive("a", 10.000, _ip(1), tag="h1")
    link.receive("b", 10.001, _ip(2))
    link.receive("a", 10.002, ARP)
    assert link.next_deadline() == pytest.approx(10.002)  # the ARP frame, unimpaired
    assert link.due(10.0019) == []
    assert link.due(10.002) == [("b", ARP, None)]
    assert link.next_deadline() == pytest.approx(10.006)
    assert link.due(10.0059) == []
    assert link.due(10.006) == [("a", _ip(2), None)]  # b -> a through "down": 5 ms
    assert link.due(10.0199) == []
    assert link.due(10.020) == [("b", _ip(1), "h1")]  # a -> b through "up": 20 ms, the tag handed back
    assert link.next_deadline() is None and len(link) == 0
    assert link.stats["a"].to_dict() == {"ip_frames": 1, "other_frames": 1, "lost": [], "delivered": 2}
    with pytest.raises(ParameterError, match="port"):
        link.receive("c", 11.0, _ip(3))


def test_the_same_channel_model_as_the_vnet():
    """The fates are exactly those of voicelab.net.Channel with the seed split as the vnet splits it."""
    cfg = ChannelConfig(delay_ms=30, jitter_ms=8, loss_rate=0.15, burst_length=3, bandwidth_kbps=400,
                        queue_packets=5)
    link = L2Link(cfg, ChannelConfig(), seed=7)
    ref = Channel(cfg, seed=np.random.SeedSequence(7).spawn(2)[0])
    got, want = [], []
    for i in range(300):
        now = 0.004 * i
        link.receive("a", now, _ip(i, 300))
        want += [(t, i) for t in ref.transmit(now, len(_ip(i, 300)))]
    # drain on the fake clock, deadline by deadline
    while link.next_deadline() is not None:
        t = link.next_deadline()
        got += [(t, int.from_bytes(f[-4:], "big")) for _, f, _ in link.due(t)]
    assert got == sorted(want, key=lambda x: (x[0], x[1]))
    assert link.stats["a"].lost == [f.index for f in ref.fates if f.lost]
    assert 0 < len(link.stats["a"].lost) < 300


def test_loss_trace_counts_ip_frames_only():
    link = L2Link(ChannelConfig(loss_trace=(1, 3)), ChannelConfig(), seed=0)
    for i in range(5):
        link.receive("a", float(i), ARP)  # neighbour discovery does not shift the trace
        link.receive("a", float(i), _ip(i))
    out = [int.from_bytes(f[-4:], "big") for _, f, _ in link.due(10.0) if f != ARP]
    assert out == [0, 2, 4] and link.stats["a"].lost == [1, 3]


def test_seeded_drops_repeat_and_differ_by_seed():
    def lost(seed):
        link = L2Link(ChannelConfig(loss_rate=0.1), ChannelConfig(loss_rate=0.1), seed=seed)
        for i in range(500):
            link.receive("a", i * 0.02, _ip(i))
            link.receive("b", i * 0.02, _ip(i))
        return link.stats["a"].lost, link.stats["b"].lost

    assert lost(3) == lost(3)
    assert lost(3) != lost(4)
    up, down = lost(3)
    assert up != down  # the two directions draw from their own streams
    with pytest.raises(ParameterError, match="seed"):
        L2Link(ChannelConfig(), ChannelConfig(), seed=-1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.floats(0, 0.05), st.booleans()), max_size=60),
       st.floats(0, 30), st.floats(0, 10), st.booleans(), st.integers(0, 2**32))
def test_order_and_conservation(events, delay, jitter, reorder, seed):
    cfg = ChannelConfig(delay_ms=delay, jitter_ms=jitter, reorder=reorder, loss_rate=0.2)
    link = L2Link(cfg, cfg, seed=seed)
    now, sent, arps = 0.0, {"a": [], "b": []}, set()
    for i, (port, dt, arp) in enumerate(events):
        now += dt
        frame = ARP + i.to_bytes(4, "big") if arp else _ip(i)
        if arp:
            arps.add(i)
        link.receive(port, now, frame)
        sent[port].append(i)
    out: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
    while link.next_deadline() is not None:
        t = link.next_deadline()
        assert t >= 0
        for port, f, _ in link.due(t):
            out[port].append((t, int.from_bytes(f[-4:], "big")))
    for port, into in (("a", "b"), ("b", "a")):
        st_ = link.stats[port]
        got = [i for _, i in out[into]]
        assert len(got) == st_.ip_frames - len(st_.lost) + st_.other_frames  # every frame once, lost ones never
        assert set(got) <= set(sent[port])
        if not reorder:  # no IP frame overtakes another (ARP leaves at once: it may)
            ip = [i for i in got if i not in arps]
            assert ip == sorted(ip)


def test_forwarder_bad_arguments_are_one_line(capsys):
    from voicelab.net import l2forward

    assert l2forward.main(["--a", "vl-no-such0", "--b", "vl-no-such1"]) == 2  # no such device (or no CAP_NET_RAW)
    assert l2forward.main(["--a", "lo", "--b", "lo", "--up", '{"delay": 3}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("l2forward: cannot forward between vl-no-such0 and vl-no-such1")
    assert "unknown channel setting(s) 'delay'" in err[1]
