"""The virtual network (voicelab.net.vnet) and its asyncio adapter (voicelab.net.vnet_iface).

Sans-IO parts are driven with explicit ``now`` values; the adapter tests run the lab's
SIP transports on a normal asyncio loop (real time, link delays of a few ms) with
run_clean's task and file-descriptor leak check. No sleeps.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import errno
import heapq
import itertools
import struct
import subprocess
import uuid

import pytest

from voicelab.errors import ParameterError
from voicelab.net.channel import ChannelConfig
from voicelab.net.vnet import (
    DatagramDelivered,
    StreamAccepted,
    StreamConnected,
    StreamDataReceived,
    StreamEnded,
    StreamRefused,
    VirtualNetwork,
    is_public_address,
)
from voicelab.net.vnet_iface import VirtualHostInterface
from voicelab.sip.message import Request
from voicelab.sip.transaction import build_response
from voicelab.sip.transport import TcpTransport, TlsTransport, UdpTransport
from voicelab.tlsutil import client_ssl_context, generate_test_pki, server_ssl_context

from .conftest import need_tool, run_clean

PRESET_NAMES = ["open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"]
# REFERENCE-FACTS.md: with STUN only, these pairs need a relay; every other pair connects.
STUN_FAILS = {
    ("port-restricted-cone", "symmetric"),
    ("symmetric", "port-restricted-cone"),
    ("symmetric", "symmetric"),
}

HOME_YAML = """
seed: 3
routers:
  home:
    nat: port-restricted-cone
    subnet: 192.168.1.0/24
    wan_address: 198.51.100.10
    link: {delay_ms: 10}
  cloud:
    nat: {preset: full-cone, hairpinning: false}
    subnet: 10.0.0.0/24
    wan_address: 198.51.100.20
    link: {up: {delay_ms: 3}, down: {delay_ms: 4}}
hosts:
  caller: {address: 192.168.1.10, router: home, link: {delay_ms: 2}}
  agent: {address: 10.0.0.5, router: cloud}
  stun: {address: 203.0.113.10, link: {delay_ms: 1}}
"""


class Sim:
    """Drives a VirtualNetwork plus application timers in time order (a tiny event loop)."""

    def __init__(self, net: VirtualNetwork, on_event) -> None:
        self.net = net
        self.on_event = on_event
        self.timers: list = []
        self._n = itertools.count()
        self.now = 0.0

    def at(self, t: float, fn) -> None:
        heapq.heappush(self.timers, (t, next(self._n), fn))

    def run(self, until: float) -> None:
        while True:
            cands = [t for t in (self.net.next_deadline(), self.timers[0][0] if self.timers else None) if t is not None]
            if not cands or min(cands) > until:
                break
            t = min(cands)
            self.now = t
            if self.timers and self.timers[0][0] == t:
                heapq.heappop(self.timers)[2]()
            else:
                for ev in self.net.advance(t):
                    self.on_event(ev)
        self.now = until
        self.net.advance(until)


# ---------------------------------------------------------------------------------------
# topology
# ---------------------------------------------------------------------------------------


def test_topology_from_yaml_and_dict_agree():
    a = VirtualNetwork.from_yaml(HOME_YAML)
    import yaml

    b = VirtualNetwork.from_dict(yaml.safe_load(HOME_YAML))
    assert a.describe() == b.describe()
    assert sorted(a.hosts) == ["agent", "caller", "stun"]
    assert a.routers["home"].nat.config.classic_name == "port-restricted-cone"
    assert a.routers["cloud"].nat.config.hairpinning is False
    assert a.hosts["caller"].link.up.delay_ms == 2.0
    assert a.routers["cloud"].link.down.delay_ms == 4.0
    assert a.routers["home"].lan_address == "192.168.1.1"
    assert "NAT port-restricted-cone home wan 198.51.100.10" in a.describe()


def test_address_classes():
    for public in ("192.0.2.1", "198.51.100.7", "203.0.113.200", "8.8.8.8"):
        assert is_public_address(public)
    for private in ("10.1.2.3", "192.168.0.1", "172.20.0.1", "100.64.0.1", "127.0.0.1", "169.254.1.1", "224.0.0.1"):
        assert not is_public_address(private)


@pytest.mark.parametrize(
    "description, match",
    [
        ({"routers": {"r": {"nat": "cone", "subnet": "10.0.0.0/24", "wan_address": "198.51.100.1"}}}, "unknown NAT preset"),
        ({"routers": {"r": {"nat": "symmetric", "subnet": "10.0.0.0/24", "wan_address": "10.9.9.9"}}}, "private address on the public internet"),
        ({"routers": {"r": {"subnet": "10.0.0.0/24", "wan_address": "198.51.100.1"}}}, "cannot route the private subnet"),
        ({"routers": {"r": {"nat": "symmetric", "subnet": "10.0.0.0/24", "wan_address": "198.51.100.1", "parent": "nowhere"}}}, "unreachable"),
        ({"routers": {"r1": {"nat": "symmetric", "subnet": "10.0.0.0/24", "wan_address": "10.1.0.2", "parent": "r2"},
                      "r2": {"nat": "symmetric", "subnet": "10.1.0.0/24", "wan_address": "10.0.0.2", "parent": "r1"}}}, "cycle"),
        ({"routers": {"a": {"subnet": "203.0.113.0/25", "wan_address": "198.51.100.1"},
                      "b": {"subnet": "203.0.113.64/26", "wan_address": "198.51.100.2"}}}, "overlaps"),
        ({"routers": {"outer": {"nat": "full-cone", "subnet": "10.0.0.0/16", "wan_address": "198.51.100.1"},
                      "inner": {"nat": "full-cone", "subnet": "10.0.1.0/24", "wan_address": "10.0.0.9", "parent": "outer"}}}, "overlaps"),
        ({"routers": {"r": {"nat": "full-cone", "subnet": "10.0.0.0/24", "wan_address": "198.51.100.1"}},
          "hosts": {"h": {"address": "10.0.1.5", "router": "r"}}}, "not in 'r'"),
        ({"hosts": {"h": {"address": "192.168.1.5"}}}, "private address on the public internet"),
        ({"hosts": {"h": {"address": "203.0.113.5"}, "g": {"address": "203.0.113.5"}}}, "already used"),
        ({"hosts": {"h": {"address": "203.0.113.5", "colour": "red"}}}, "unknown key"),
        ({"links": {}}, "unknown network key"),
    ],
)
def test_bad_topologies_fail_before_anything_runs(description, match):
    with pytest.raises(ParameterError, match=match):
        VirtualNetwork.from_dict(description)


def test_two_homes_may_share_a_private_subnet_and_names_are_unique():
    net = VirtualNetwork()
    for i, wan in enumerate(("198.51.100.1", "198.51.100.2")):
        net.add_router(f"home{i}", nat="full-cone", subnet="192.168.1.0/24", wan_address=wan)
        net.add_host(f"h{i}", "192.168.1.10", router=f"home{i}")
    with pytest.raises(ParameterError, match="already used"):
        net.add_host("h0", "203.0.113.1")
    with pytest.raises(ParameterError, match="unknown router"):
        net.add_host("x", "203.0.113.1", router="home9")


# ---------------------------------------------------------------------------------------
# UDP through a NAT: translation, trace, pcap
# ---------------------------------------------------------------------------------------


def stun_like(net: VirtualNetwork, client: str, client_addr, until: float = 5.0):
    """Send one datagram to the public 'stun' host and reflect its source back."""
    seen = {}

    def on_event(ev):
        if ev.host == "stun":
            seen["reflexive"] = ev.src
            net.send_datagram("stun", ev.dst, ev.src, f"{ev.src[0]}:{ev.src[1]}".encode(), sim.now)
        else:
            seen["reply"] = ev

    sim = Sim(net, on_event)
    sim.at(0.0, lambda: net.send_datagram(client, client_addr, ("203.0.113.10", 3478), b"who am i", 0.0))
    sim.run(until)
    return seen


def test_udp_through_a_nat_is_translated_traced_and_written_to_pcap(tmp_path):
    net = VirtualNetwork.from_yaml(HOME_YAML)
    caller = ("192.168.1.10", 5000)
    net.bind("caller", caller)
    net.bind("stun", ("203.0.113.10", 3478))
    seen = stun_like(net, "caller", caller)
    assert seen["reflexive"] == ("198.51.100.10", 5000)  # port preserved by the cone NAT
    reply = seen["reply"]
    assert isinstance(reply, DatagramDelivered) and reply.dst == caller and reply.src == ("203.0.113.10", 3478)
    # delays: 2 ms caller link + 10 ms WAN + 1 ms stun link, each way
    assert reply.time == pytest.approx(2 * 0.013)

    hops = [(r.hop, r.action) for r in net.trace if r.packet_id == 0]
    assert hops == [
        ("caller->home", "link"),
        ("nat home", "nat"),
        ("home->internet", "link"),
        ("internet->stun", "link"),
        ("host stun", "deliver"),
    ]
    nat_rec = next(r for r in net.trace if r.action == "nat" and r.packet_id == 0)
    assert (nat_rec.src, nat_rec.out_src) == (caller, ("198.51.100.10", 5000))

    path = net.trace_to_pcap(tmp_path / "nat.pcap")
    data = path.read_bytes()
    links = [r for r in net.trace if r.action == "link"]
    records, pos = [], 24
    while pos < len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[pos : pos + 16])
        pkt = data[pos + 16 : pos + 16 + incl]
        src = (".".join(map(str, pkt[12:16])), struct.unpack("!H", pkt[20:22])[0])
        records.append((sec + usec / 1e6, src))
        pos += 16 + incl
    assert len(records) == len(links) == 6
    assert [s for _, s in records] == [r.src for r in links]  # addresses as on each link
    wan_only = net.trace_to_pcap(tmp_path / "wan.pcap", hops=["home->internet"])
    assert wan_only.stat().st_size == 24 + 16 + 20 + 8 + len(b"who am i")
    with pytest.raises(ParameterError, match="no link named"):
        net.trace_to_pcap(tmp_path / "x.pcap", hops=["nowhere"])


def test_unsolicited_inbound_is_dropped_with_a_reason():
    net = VirtualNetwork.from_yaml(HOME_YAML)
    net.bind("caller", ("192.168.1.10", 5000))
    net.bind("stun", ("203.0.113.10", 3478))
    stun_like(net, "caller", ("192.168.1.10", 5000))
    # another port of the same public host: port-restricted filtering drops it
    net.send_datagram("stun", ("203.0.113.10", 4000), ("198.51.100.10", 5000), b"x", now=5.0)
    net.send_datagram("stun", ("203.0.113.10", 4000), ("198.51.100.10", 6000), b"x", now=5.0)
    assert net.advance(6.0) == []
    reasons = [r.reason for r in net.trace if r.dropped]
    assert reasons[-2:] == ["filtered (address-and-port-dependent)", "no mapping"]


def test_same_seed_same_trace_and_loss_is_seeded():
    def run(seed):
        net = VirtualNetwork(seed=seed)
        net.add_host("a", "203.0.113.1", link=ChannelConfig(delay_ms=5, jitter_ms=3, loss_rate=0.3))
        net.add_host("b", "203.0.113.2")
        net.bind("b", ("203.0.113.2", 9))
        for i in range(200):
            net.send_datagram("a", ("203.0.113.1", 1), ("203.0.113.2", 9), bytes([i]), now=i * 0.02)
        got = net.advance(10.0)
        return [(e.time, e.payload) for e in got], [r.as_row() for r in net.trace]

    d1, t1 = run(4)
    d2, t2 = run(4)
    d3, _ = run(5)
    assert d1 == d2 and t1 == t2
    assert d1 != d3
    assert 0.15 < 1 - len(d1) / 200 < 0.45  # 30 % loss on the link
    assert [p for _, p in d1] == sorted(p for _, p in d1)  # no reordering by default


def test_double_nat_and_hairpin():
    net = VirtualNetwork(seed=1)
    net.add_router("cgn", nat="port-restricted-cone", subnet="100.64.0.0/24", wan_address="198.51.100.1")
    net.add_router("home", nat="full-cone", subnet="192.168.1.0/24", wan_address="100.64.0.10", parent="cgn")
    net.add_host("phone", "192.168.1.10", router="home")
    net.add_host("tv", "192.168.1.11", router="home")
    net.add_host("stun", "203.0.113.10")
    for h, a in (("phone", ("192.168.1.10", 5000)), ("tv", ("192.168.1.11", 7000)), ("stun", ("203.0.113.10", 3478))):
        net.bind(h, a)
    seen = stun_like(net, "phone", ("192.168.1.10", 5000))
    assert seen["reflexive"][0] == "198.51.100.1"  # the outer NAT's address
    assert seen["reply"].host == "phone"
    assert [r.hop for r in net.trace if r.action == "nat" and r.packet_id == 0] == ["nat home", "nat cgn"]
    # hairpin inside the home NAT: tv reaches phone at its home-NAT mapping
    home_ext = next(r.out_src for r in net.trace if r.hop == "nat home" and r.packet_id == 0)
    net.send_datagram("tv", ("192.168.1.11", 7000), home_ext, b"hairpin", now=6.0)
    got = net.advance(7.0)
    assert [(e.host, e.payload) for e in got] == [("phone", b"hairpin")]
    assert got[0].src[0] == "100.64.0.10"  # RFC 4787 REQ-9: the external source


# ---------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------


def test_stream_crosses_a_nat_reliably_despite_loss():
    net = VirtualNetwork(seed=2)
    lossy = ChannelConfig(delay_ms=20, loss_rate=0.2)
    net.add_router("home", nat="symmetric", subnet="192.168.1.0/24", wan_address="198.51.100.10", link=lossy)
    net.add_host("caller", "192.168.1.10", router="home")
    net.add_host("server", "203.0.113.10")
    listen = net.listen("server", ("203.0.113.10", 5060))
    payload = bytes(range(256)) * 100  # 25.6 kB -> 18 segments each way
    got = {"caller": bytearray(), "server": bytearray()}
    ended = []
    conns = {}

    def on_event(ev):
        if isinstance(ev, StreamAccepted):
            conns["server"] = ev.conn
            assert ev.remote[0] == "198.51.100.10"
            net.stream_send(ev.conn, payload[::-1], sim.now)
        elif isinstance(ev, StreamConnected):
            net.stream_send(ev.conn, payload, sim.now)
            net.stream_close(ev.conn, sim.now)
        elif isinstance(ev, StreamDataReceived):
            got[ev.host] += ev.data
        elif isinstance(ev, StreamEnded):
            ended.append(ev.host)
            net.stream_close(ev.conn, sim.now)

    sim = Sim(net, on_event)
    sim.at(0.0, lambda: conns.setdefault("caller", net.connect("caller", listen, 0.0)))
    sim.run(120.0)
    assert bytes(got["server"]) == payload
    assert bytes(got["caller"]) == payload[::-1]
    assert sorted(ended) == ["caller", "server"]
    retrans = [r for r in net.trace if r.action == "link" and r.attempt > 0]
    assert retrans  # losses became retransmissions
    assert not any(r.dropped for r in net.trace if r.proto == "tcp" and r.action == "link")


@pytest.mark.parametrize("target, reason", [("nat", "filtered"), ("no-listener", "no listener")])
def test_connect_refused(target, reason):
    net = VirtualNetwork(seed=1)
    net.add_router("home", nat="full-cone", subnet="192.168.1.0/24", wan_address="198.51.100.10", link={"delay_ms": 5})
    net.add_host("caller", "192.168.1.10", router="home")
    net.add_host("server", "203.0.113.10")
    dst = ("198.51.100.10", 5060) if target == "nat" else ("203.0.113.10", 5060)
    src_host = "server" if target == "nat" else "caller"
    conn = net.connect(src_host, dst, 0.0)
    events = net.advance(5.0)
    assert [type(e) for e in events] == [StreamRefused]
    assert events[0].conn == conn and events[0].reason == "refused"
    drop = next(r for r in net.trace if r.dropped and r.flags == "S")
    assert drop.reason.startswith("no mapping" if target == "nat" else reason)


def test_connect_into_the_void_times_out():
    net = VirtualNetwork(seed=1, connect_timeout_s=3.0)
    net.add_host("a", "203.0.113.1")
    net.connect("a", ("192.0.2.99", 80), 0.0)
    events = net.advance(10.0)
    assert [(type(e), e.time, e.reason) for e in events] == [(StreamRefused, 3.0, "timed out")]
    assert any(r.reason == "no route" for r in net.trace)


# ---------------------------------------------------------------------------------------
# UDP hole punching, as ICE does it, for every pair of presets
# ---------------------------------------------------------------------------------------


def build_pair(pa: str, pb: str, seed: int) -> VirtualNetwork:
    net = VirtualNetwork(seed=seed)
    net.add_host("stun", "203.0.113.10", link={"delay_ms": 5})
    sides = (
        ("a", pa, "198.51.100.10", "192.168.1.0/24", "192.168.1.10", "198.51.100.64/26", "198.51.100.70"),
        ("b", pb, "198.51.100.20", "10.0.0.0/24", "10.0.0.10", "198.51.100.128/26", "198.51.100.130"),
    )
    for side, preset, wan, subnet, inside, open_subnet, open_addr in sides:
        r = f"r-{side}"
        if preset == "open":  # a plain router: the host has a public address
            net.add_router(r, nat="open", subnet=open_subnet, wan_address=wan, link={"delay_ms": 15})
            net.add_host(side, open_addr, router=r, link={"delay_ms": 1})
        else:
            net.add_router(r, nat=preset, subnet=subnet, wan_address=wan, link={"delay_ms": 15})
            net.add_host(side, inside, router=r, link={"delay_ms": 1})
    return net


def hole_punch(pa: str, pb: str, seed: int = 0) -> dict:
    """Both peers learn their server-reflexive address from 'stun', then send checks to
    each other's srflx at the same moment; a check is answered to its source address and
    triggers a check back to it (peer-reflexive), as ICE does."""
    net = build_pair(pa, pb, seed)
    port = 5000
    local = {s: (net.hosts[s].address, port) for s in ("a", "b")}
    for s in ("a", "b"):
        net.bind(s, local[s])
    net.bind("stun", ("203.0.113.10", 3478))
    srflx: dict = {}
    targets: dict = {"a": [], "b": []}
    success: dict = {}

    def send(side, dst, data):
        net.send_datagram(side, local[side], dst, data, sim.now)

    def on_event(ev):
        if ev.host == "stun":
            net.send_datagram("stun", ev.dst, ev.src, b"srflx %s %d" % (ev.src[0].encode(), ev.src[1]), sim.now)
            return
        kind = ev.payload.split()[0]
        if kind == b"srflx":
            _, ip, p = ev.payload.split()
            srflx[ev.host] = (ip.decode(), int(p))
        elif kind == b"ping":
            send(ev.host, ev.src, b"pong")
            if ev.src not in targets[ev.host]:  # triggered check to a peer-reflexive address
                targets[ev.host].append(ev.src)
                send(ev.host, ev.src, b"ping")
        elif kind == b"pong":
            success.setdefault(ev.host, ev.src)

    sim = Sim(net, on_event)
    for s in ("a", "b"):
        sim.at(0.0, lambda s=s: send(s, ("203.0.113.10", 3478), b"binding"))

    def start_checks():
        for s, other in (("a", "b"), ("b", "a")):
            targets[s].append(srflx[other])
        for k in range(5):  # a check and four retransmissions, 100 ms apart
            sim.at(sim.now + 0.1 * k, lambda: [send(s, t, b"ping") for s in ("a", "b") for t in list(targets[s])])

    sim.at(0.5, start_checks)
    sim.run(3.0)
    return {
        "connected": "a" in success and "b" in success,
        "srflx": srflx,
        "a_reached_b_at": success.get("a"),
        "b_reached_a_at": success.get("b"),
    }


def test_hole_punching_matrix_matches_the_reference():
    matrix = {}
    for pa in PRESET_NAMES:
        for pb in PRESET_NAMES:
            r = hole_punch(pa, pb)
            matrix[(pa, pb)] = r["connected"]
            if r["connected"] and "symmetric" in (pa, pb) and pa != pb:
                # the symmetric side is reached at a peer-reflexive address, not its srflx
                sym, other_at = ("a", r["b_reached_a_at"]) if pa == "symmetric" else ("b", r["a_reached_b_at"])
                assert other_at != r["srflx"][sym], (pa, pb)
    failing = {pair for pair, ok in matrix.items() if not ok}
    assert failing == STUN_FAILS, f"got {sorted(failing)}"


def test_hole_punching_outcome_does_not_depend_on_the_seed():
    for seed in (1, 2):
        assert not hole_punch("port-restricted-cone", "symmetric", seed)["connected"]
        assert hole_punch("restricted-cone", "symmetric", seed)["connected"]


# ---------------------------------------------------------------------------------------
# The asyncio adapter
# ---------------------------------------------------------------------------------------


def options(host: str) -> Request:
    return Request(
        "OPTIONS",
        f"sip:agent@{host}",
        [
            ("Via", f"SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK{uuid.uuid4().hex[:10]}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:caller@192.168.1.10>;tag=a1"),
            ("To", f"<sip:agent@{host}>"),
            ("Call-ID", uuid.uuid4().hex),
            ("CSeq", "1 OPTIONS"),
            ("Content-Length", "0"),
        ],
    )


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def __call__(self, msg, addr, transport) -> None:
        self.queue.put_nowait((msg, addr))

    async def get(self):
        return await asyncio.wait_for(self.queue.get(), 5.0)


def sip_net() -> VirtualNetwork:
    net = VirtualNetwork(seed=1)
    net.add_router("home", nat="port-restricted-cone", subnet="192.168.1.0/24", wan_address="198.51.100.10",
                   link={"delay_ms": 5})
    net.add_host("caller", "192.168.1.10", router="home", link={"delay_ms": 1})
    net.add_host("agent", "203.0.113.5", link={"delay_ms": 2})
    return net


def test_sip_udp_transport_across_a_nat_on_asyncio():
    async def main():
        net = sip_net()
        loop = asyncio.get_running_loop()
        c_in, a_in = Inbox(), Inbox()
        caller = UdpTransport(VirtualHostInterface(net, "caller"), on_message=c_in)
        agent = UdpTransport(VirtualHostInterface(net, "agent"), on_message=a_in)
        a_addr = await agent.listen(port=5060)
        c_addr = await caller.listen(port=5060)
        assert (a_addr, c_addr) == (("203.0.113.5", 5060), ("192.168.1.10", 5060))
        t0 = loop.time()
        await caller.send(options("203.0.113.5"), a_addr)
        msg, src = await a_in.get()
        assert msg.method == "OPTIONS"
        assert src == ("198.51.100.10", 5060)  # the NAT's public address (port preserved)
        await agent.send(build_response(msg, 200, "OK", to_tag="b1"), src)  # reply to the source (rport)
        resp, rsrc = await c_in.get()
        assert resp.status_code == 200 and rsrc == a_addr
        assert loop.time() - t0 >= 2 * 0.008 - 1e-6  # the links' delays were applied
        # the agent's second socket is not allowed through the port-restricted NAT
        other = UdpTransport(VirtualHostInterface(net, "agent"))
        await other.send(options("x"), src)
        while net.next_deadline() is not None:  # let it travel (no sleep: wait on the network)
            await asyncio.sleep(0)
        assert [r.reason for r in net.trace if r.dropped][-1] == "filtered (address-and-port-dependent)"
        assert c_in.queue.empty()
        for t in (caller, agent, other):
            await t.close()

    run_clean(main, timeout=10)


def test_sip_tcp_transport_across_a_nat_and_a_refused_connect():
    async def main():
        net = sip_net()
        a_in, c_in = Inbox(), Inbox()
        agent = TcpTransport(VirtualHostInterface(net, "agent"), on_message=a_in)
        caller = TcpTransport(VirtualHostInterface(net, "caller"), on_message=c_in)
        a_addr = await agent.listen(port=5060)
        await caller.send(options("203.0.113.5"), a_addr)
        msg, src = await a_in.get()
        assert src[0] == "198.51.100.10"
        await agent.send(build_response(msg, 200, "OK", to_tag="b1"), src)  # back over the same connection
        resp, _ = await c_in.get()
        assert resp.status_code == 200
        # the agent cannot open a connection to the caller's NAT: refused
        with pytest.raises(ConnectionRefusedError):
            await VirtualHostInterface(net, "agent").create_connection(asyncio.Protocol, "198.51.100.10", 5060)
        await caller.close()
        await agent.close()

    run_clean(main, timeout=10)


def test_adapter_contract_details():
    var = contextvars.ContextVar("who", default="nobody")

    class Proto(asyncio.DatagramProtocol):
        def __init__(self):
            self.made = self.lost = False
            self.got = asyncio.get_running_loop().create_future()
            self.closed = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            self.made = True

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result((data, addr, var.get()))

        def connection_lost(self, exc):
            self.closed.set_result(exc)

    async def main():
        net = VirtualNetwork(seed=0)
        net.add_host("a", "203.0.113.1")
        net.add_host("b", "203.0.113.2")
        ia, ib = VirtualHostInterface(net, "a"), VirtualHostInterface(net, "b")
        assert ia.host_addresses() == ["203.0.113.1"]
        before = asyncio.get_running_loop().time()
        assert before <= ia.time() <= asyncio.get_running_loop().time()
        var.set("receiver")
        tb, pb = await ib.create_datagram_endpoint(Proto, local_addr=("203.0.113.2", 4000))
        var.set("sender")
        assert pb.made  # before create_datagram_endpoint returned
        ta, pa = await ia.create_datagram_endpoint(Proto, remote_addr=("b", 4000))  # host names resolve
        assert ta.get_extra_info("peername") == ("203.0.113.2", 4000)
        assert ta.get_extra_info("socket") is None
        ta.sendto(b"hello")
        data, addr, who = await asyncio.wait_for(pb.got, 5)
        assert (data, addr, who) == (b"hello", ta.get_extra_info("sockname"), "receiver")
        with pytest.raises(OSError) as e1:
            await ib.create_datagram_endpoint(Proto, local_addr=("203.0.113.2", 4000))
        assert e1.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as e2:
            await ib.create_datagram_endpoint(Proto, local_addr=("203.0.113.9", 0))
        assert e2.value.errno == errno.EADDRNOTAVAIL
        tb.close()
        assert not pb.closed.done()  # connection_lost comes after close(), not inside it
        assert await asyncio.wait_for(pb.closed, 5) is None
        ta.close()
        await pa.closed
        with pytest.raises(ParameterError):
            VirtualHostInterface(net, "nobody")

    run_clean(main, timeout=10)


def test_sip_tls_transport_on_the_vnet(tmp_path):
    pki = generate_test_pki(tmp_path, hostnames=("agent",), ip_addresses=("203.0.113.5",))

    async def main():
        net = sip_net()
        a_in, c_in = Inbox(), Inbox()
        agent = TlsTransport(VirtualHostInterface(net, "agent"), on_message=a_in,
                             server_ssl=server_ssl_context(pki.cert, pki.key))
        caller = TlsTransport(VirtualHostInterface(net, "caller"), on_message=c_in,
                              client_ssl=client_ssl_context(ca_file=pki.ca_cert))
        a_addr = await agent.listen(port=5061)
        await caller.send(options("203.0.113.5"), a_addr)
        msg, src = await a_in.get()
        assert msg.method == "OPTIONS" and src[0] == "198.51.100.10"
        await agent.send(build_response(msg, 200, "OK", to_tag="b1"), src)
        resp, _ = await c_in.get()
        assert resp.status_code == 200
        # the bytes on the wire are TLS records, not SIP text
        wire = b"".join(r.payload for r in net.trace if r.action == "link" and r.proto == "tcp")
        assert b"OPTIONS" not in wire and len(wire) > 1000
        # a client that does not trust the CA fails the handshake
        with pytest.raises(ssl.SSLError):
            await VirtualHostInterface(net, "caller").create_connection(
                asyncio.Protocol, "203.0.113.5", 5061, ssl=client_ssl_context(), server_hostname="agent")
        await caller.close()
        await agent.close()

    run_clean(main, timeout=15)


def test_stream_protocol_callbacks_eof_and_close():
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data.upper())
            self.transport.close()

    class Client(asyncio.Protocol):
        def __init__(self):
            loop = asyncio.get_running_loop()
            self.data, self.eof, self.lost = bytearray(), False, loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.data += data

        def eof_received(self):
            self.eof = True  # returning None: the transport closes itself

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        net = sip_net()
        server = await VirtualHostInterface(net, "agent").create_server(Echo, None, 0)
        addr = server.sockets[0].getsockname()
        tr, client = await VirtualHostInterface(net, "caller").create_connection(Client, *addr)
        assert tr.get_extra_info("peername") == addr
        assert tr.get_extra_info("sockname")[0] == "192.168.1.10"
        tr.write(b"hello")
        assert await asyncio.wait_for(client.lost, 5) is None
        assert (bytes(client.data), client.eof) == (b"HELLO", True)
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):  # nobody listens any more
            await VirtualHostInterface(net, "caller").create_connection(Client, *addr)

    run_clean(main, timeout=10)


class ShiftedClockLoop(asyncio.SelectorEventLoop):
    """A loop whose clock is 1000 s ahead of the monotonic clock: the network must follow it."""

    def time(self) -> float:
        return super().time() + 1000.0


def test_adapter_runs_on_the_loops_clock():
    async def main():
        net = sip_net()
        inbox = Inbox()
        agent = UdpTransport(VirtualHostInterface(net, "agent"), on_message=inbox)
        caller = UdpTransport(VirtualHostInterface(net, "caller"))
        await agent.send(b"ping", ("203.0.113.5", 9))  # binds; to a closed port: dropped
        await caller.send(options("203.0.113.5"), agent.local_addr)
        await inbox.get()
        await agent.close()
        await caller.close()
        return net

    with asyncio.Runner(loop_factory=ShiftedClockLoop) as runner:
        net = runner.run(main())
    times = [r.time for r in net.trace]
    assert times and min(times) > 1000.0
    assert [r.reason for r in net.trace if r.dropped] == ["port unreachable"]


def test_tshark_reads_the_pcap_cleanly(tmp_path):
    tshark = need_tool("tshark", "tshark")
    net = VirtualNetwork.from_yaml(HOME_YAML)
    net.bind("caller", ("192.168.1.10", 5000))
    net.bind("stun", ("203.0.113.10", 3478))
    stun_like(net, "caller", ("192.168.1.10", 5000))
    listen = net.listen("stun", ("203.0.113.10", 80))

    def on_event(ev):
        if isinstance(ev, StreamConnected):
            net.stream_send(ev.conn, b"x" * 3000, sim.now)
            net.stream_close(ev.conn, sim.now)
        elif isinstance(ev, StreamEnded):
            net.stream_close(ev.conn, sim.now)

    sim = Sim(net, on_event)
    sim.at(6.0, lambda: net.connect("caller", listen, 6.0))
    sim.run(10.0)
    path = net.trace_to_pcap(tmp_path / "all.pcap")
    run = lambda *opts: subprocess.run([tshark, "-r", str(path), *opts], capture_output=True, text=True, timeout=60).stdout
    protos = run("-T", "fields", "-e", "frame.protocols").split()
    assert len(protos) == sum(1 for r in net.trace if r.action == "link")
    assert {p.split(":")[2] for p in protos} == {"udp", "tcp"}
    # one capture point (the home NAT's WAN link, both ways): a clean TCP/UDP capture
    path = net.trace_to_pcap(tmp_path / "wan.pcap", hops=["home->internet", "internet->home"])
    assert run("-Y", "_ws.malformed || ip.checksum.status == 2 || udp.checksum.status == 2 || tcp.checksum.status == 2",
               "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE") == ""
    assert len(run("-Y", "tcp").splitlines()) == sum(
        1 for r in net.trace if r.action == "link" and r.proto == "tcp" and r.hop in ("home->internet", "internet->home"))


def test_virtual_clock_loop_gives_identical_runs():
    vclock = pytest.importorskip("voicelab.net.vclock")

    class Recorder(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = []

        def datagram_received(self, data, addr):
            self.got.append((asyncio.get_running_loop().time(), data, addr))

    async def main():
        net = VirtualNetwork(seed=9)
        net.add_router("home", nat="symmetric", subnet="192.168.1.0/24", wan_address="198.51.100.10",
                       link=ChannelConfig(delay_ms=30, jitter_ms=8, loss_rate=0.05))
        net.add_host("caller", "192.168.1.10", router="home")
        net.add_host("agent", "203.0.113.5")
        ta, pa = await VirtualHostInterface(net, "agent").create_datagram_endpoint(Recorder, local_addr=("agent", 4000))
        tc, pc = await VirtualHostInterface(net, "caller").create_datagram_endpoint(Recorder)
        for i in range(500):  # 10 s of 20 ms packets each way (symmetric RTP back to the source)
            tc.sendto(i.to_bytes(2, "big"), ("203.0.113.5", 4000))
            if pa.got:
                ta.sendto(i.to_bytes(2, "big"), pa.got[0][2])
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        ta.close()
        tc.close()
        return pa.got, pc.got, net.trace_rows()

    first = vclock.run_virtual(main())
    second = vclock.run_virtual(main())
    assert first == second
    to_agent, to_caller, _ = first
    assert 400 < len(to_agent) < 500 and 400 < len(to_caller) < 500  # 5 % loss each way
    assert to_agent[0][0] == pytest.approx(0.030, abs=0.03)  # virtual time starts at 0
