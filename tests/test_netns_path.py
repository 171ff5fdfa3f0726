"""Phone paths on the vnet: the live trunk leg on a namespace chain (trunk -- carrier edge -- agent).

The chain is built from Linux network namespaces (:mod:`voicelab.net.netns_chain`): the
lab's caller (as the carrier's media gateway) and agent keep running in this process with
their sockets inside their namespaces, the edge is a router, the lab's media relay, or a
real Kamailio + rtpengine started inside the edge namespace, and ``dumpcap`` captures both
links so each hop is measured per RTP packet. Unit tests of the pieces (netem arguments,
the pcapng reader, the per-hop matcher) need nothing; the live ones need root (skipped
otherwise, as the other netns tests) and the Debian packages (skip locally, fail in CI).
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess

import pytest

from tests.conftest import need_tool
from voicelab.errors import ParameterError, ToolUnavailableError
from voicelab.net import ChannelConfig
from voicelab.net import netns_chain as nc
from voicelab.net.netns import NAMESPACE_PREFIX, netns_unavailable_reason

A = nc.CHAIN_ADDRESSES


def test_netem_arguments():
    assert nc.netem_args(ChannelConfig()) is None
    assert nc.netem_args(ChannelConfig(delay_ms=20)) == ["netem", "limit", "1000", "delay", "20ms"]
    assert nc.netem_args({"delay_ms": 30, "jitter_ms": 5, "loss_rate": 0.02}) == [
        "netem", "limit", "1000", "delay", "30ms", "5ms", "distribution", "normal", "loss", "random", "2%"]
    ge = nc.netem_args(ChannelConfig(loss_rate=0.1, burst_length=4))
    i = ge.index("gemodel")
    p, r = float(ge[i + 1].rstrip("%")) / 100, float(ge[i + 2].rstrip("%")) / 100
    assert r == pytest.approx(0.25) and p / (p + r) == pytest.approx(0.1)  # stationary loss = the rate asked for
    assert nc.netem_args(ChannelConfig(bandwidth_kbps=64))[-2:] == ["rate", "64kbit"]
    with pytest.raises(ParameterError, match="loss trace"):
        nc.netem_args(ChannelConfig(loss_trace=(0, 1, 0)))


def test_chain_refuses_unknown_links_and_missing_netem(monkeypatch):
    with pytest.raises(ParameterError, match="carrier, access"):
        nc.NetnsChain(links={"backbone": {"delay_ms": 5}})
    with pytest.raises(ParameterError, match="impairment must be one of lab, netem"):
        nc.NetnsChain(impairment="tc")
    with pytest.raises(ParameterError, match="ideal_links"):
        nc.NetnsChain(ideal_links="hub")
    with pytest.raises(ParameterError, match="seed"):
        nc.NetnsChain(seed=-1)
    with pytest.raises(ParameterError, match="loss trace"):  # netem cannot, the lab's link can
        nc.NetnsChain(links={"carrier": {"loss_trace": [3]}}, impairment="netem")
    assert nc.NetnsChain(links={"carrier": {"loss_trace": [3]}}).forwarded == ("carrier",)
    monkeypatch.setattr(nc, "netns_unavailable_reason", lambda: None)
    monkeypatch.setattr(nc, "netem_unavailable_reason", lambda: "the netem qdisc is not available in this kernel (module sch_netem)")
    with pytest.raises(ToolUnavailableError) as ei:
        nc.NetnsChain(links={"carrier": {"delay_ms": 20}}, impairment="netem").start()
    assert "sch_netem" in str(ei.value) and "\n" not in str(ei.value)


def test_which_links_the_forwarder_joins_and_how_they_are_described():
    c = nc.NetnsChain(links={"access": {"up": {"delay_ms": 5}}})
    assert c.forwarded == ("access",) and c.netem[("access", "up")] is None
    assert c.describe("carrier", "up") == "veth + bridge"
    assert "l2forward: delay_ms=5.0" in c.describe("access", "up") and "ideal" in c.describe("access", "down")
    assert nc.NetnsChain(ideal_links="forwarder").forwarded == nc.CHAIN_LINKS
    n = nc.NetnsChain(links={"carrier": {"delay_ms": 20}}, impairment="netem")
    assert n.forwarded == () and n.describe("carrier", "up").startswith("veth + bridge + netem")


def _pcapng(packets):
    """A pcapng file: two interfaces (us and ns resolution), Enhanced Packet blocks."""
    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = block(0x0A0D0D0A, b"\x4d\x3c\x2b\x1a" + struct.pack("<HHq", 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 128))  # default resolution: microseconds
    out += block(1, struct.pack("<HHI", 1, 0, 128) + struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0))  # ns
    for ifid, t, frame in packets:
        ticks = int(round(t * (1e6 if ifid == 0 else 1e9)))
        out += block(6, struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    return out


def _frame(src, dst, ssrc, seq):
    from voicelab.net.pcap import udp_ipv4_packet

    rtp = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + b"\xff" * 160
    return b"\0" * 12 + b"\x08\x00" + udp_ipv4_packet((src, 4000), (dst, 4002), rtp)


def test_pcapng_reader_and_hop_matching(tmp_path):
    # up: trunk -> edge (carrier wire: in at pa=0, out at pb=1), edge -> agent (access wire: in 0, out 1);
    # down: agent -> edge (access: in 1, out 0), edge -> trunk (carrier: in 1, out 0)
    carrier, access = [], []
    for seq in range(5):
        t = 100.0 + 0.02 * seq
        carrier += [(0, t, _frame(A["trunk"], A["edge"], 1, seq)), (1, t + 0.010, _frame(A["trunk"], A["edge"], 1, seq))]
        access += [(0, t + 0.0105, _frame(A["edge"], A["agent"], 1, seq)), (1, t + 0.0135, _frame(A["edge"], A["agent"], 1, seq))]
        access += [(1, t, _frame(A["agent"], A["edge"], 2, seq)), (0, t + 0.004, _frame(A["agent"], A["edge"], 2, seq))]
        carrier += [(1, t + 0.0042, _frame(A["edge"], A["trunk"], 2, seq)), (0, t + 0.0252, _frame(A["edge"], A["trunk"], 2, seq))]
    (tmp_path / "c.pcapng").write_bytes(_pcapng(carrier))
    (tmp_path / "a.pcapng").write_bytes(_pcapng(access))
    read = nc.read_pcapng(tmp_path / "c.pcapng")
    assert len(read) == 20 and read[1][0] == 1 and read[1][1] == pytest.approx(100.010, abs=1e-9)
    per = nc.rtp_hop_delays({"wire-carrier": read, "wire-access": nc.read_pcapng(tmp_path / "a.pcapng")})
    for d, want in (("up", {"carrier": 10.0, "edge": 0.5, "access": 3.0}),
                    ("down", {"access": 4.0, "edge": 0.2, "carrier": 21.0})):
        for hop, ms in want.items():
            assert len(per[d][hop]) == 5 and per[d][hop] == pytest.approx([ms] * 5, abs=1e-3), (d, hop)


# ------------------------------------------------------------------ live, on the kernel
@pytest.fixture(scope="module")
def kernel():
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"netns backend unavailable: {reason}")
    need_tool("dumpcap", "wireshark-common")


def _ours() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"{NAMESPACE_PREFIX}{os.getpid()}-c")]


def _check_hops(r, edge_words):
    assert r["net"] == "vnet"
    for key in ("hops", "hops_agent_to_phone"):
        hops = r[key]
        live = [h for h in hops if h["how"].startswith("measured (capture)")]
        assert [h["kind"] for h in live] == ["network", "sbc", "network"], hops
        assert edge_words in live[1]["hop"]
        for h in live:  # ideal veths through a bridge: tens of microseconds; the edge's userspace relay < 5 ms
            assert 0.0 < h["delay_ms"] < 5.0, h
            assert int(h["source"].split("median of ")[1].split()[0]) >= 80  # ~100 packets each matched
        # the endpoints' part (20 ms packets + the 60 ms buffer) closes the live leg's measured total
        assert 78.0 <= hops[-1]["delay_ms"] <= 95.0, hops[-1]
    total = r["pstn_ms"] + sum(h["delay_ms"] for h in r["hops"] if h["how"] != "modelled" and "sim" not in h["how"])
    assert r["phone_to_agent_ms"] == pytest.approx(total, abs=1e-6)
    assert r["trunk_pesq_nb"] > 4.0
    assert not _ours()  # every namespace of the chain is gone


@pytest.mark.slow
def test_mobile_path_through_real_sbc_on_the_namespace_chain(kernel, natural_env):
    need_tool("kamailio", "kamailio")
    need_tool("rtpengine", "rtpengine-daemon")
    from tests.conftest import run_clean
    from voicelab.hybrid import path_call_async

    r = run_clean(lambda: path_call_async("pstn-national-mobile+trunk+sbc", seconds=2.0, seed=1, net="vnet"), timeout=90)
    _check_hops(r, "rtpengine")
    assert r["sbc"] == "kamailio+rtpengine"
    assert r["live"]["route_set"] == {"ACK": True, "BYE": True}
    legs = r["sbc_media_legs"]
    assert len(legs) == 2 and {leg["peer"].rsplit(":", 1)[0] for leg in legs} == {A["trunk"], A["agent"]}
    assert all(leg["packets"] >= 90 and leg["local"].startswith(A["edge"] + ":") for leg in legs)


@pytest.mark.slow
def test_landline_path_through_the_lab_relay_on_the_namespace_chain(kernel, natural_env):
    from tests.conftest import run_clean
    from voicelab.hybrid import path_call_async

    # no task, socket or pipe left behind (sockets made inside namespaces, dumpcap's pipes)
    r = run_clean(lambda: path_call_async("pstn-local-landline+trunk+relay", seconds=2.0, seed=1, net="vnet"), timeout=60)
    _check_hops(r, "media relay")
    assert r["live"]["relay_bytes"] > 2 * 90 * 172


def test_path_net_errors():
    from voicelab.hybrid import path_call

    with pytest.raises(ParameterError, match="net must be one of"):
        path_call("pstn-local-landline+trunk", net="internet")
    with pytest.raises(ParameterError, match="need net='vnet'"):
        path_call("pstn-local-landline+trunk", links={"carrier": {"delay_ms": 5}})
    with pytest.raises(ParameterError, match="carrier, access"):
        path_call("pstn-local-landline+trunk", net="vnet", links={"core": {"delay_ms": 5}})
    with pytest.raises(ParameterError, match="browser path runs on loopback"):
        path_call("browser+gateway+sip", net="vnet")


def test_cli_path_impairment_needs_the_vnet():
    import sys

    from tests.conftest import REPO

    p = subprocess.run([sys.executable, "-m", "voicelab", "call", "--path", "pstn-local-landline+trunk", "--delay", "20"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert p.returncode == 2 and "carrier link of --net vnet" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.slow
def test_lab_link_delay_on_the_carrier_link_is_measured(kernel, natural_env):
    """20 ms on the carrier link, 5 ms on the access link's way up: the lab's forwarder, measured by the captures."""
    from voicelab.hybrid import path_call

    r = path_call("pstn-local-landline+trunk", seconds=2.0, seed=1, net="vnet",
                  links={"carrier": {"delay_ms": 20.0}, "access": {"up": {"delay_ms": 5.0}}})
    up = {h["hop"]: h for h in r["hops"]}
    down = {h["hop"]: h["delay_ms"] for h in r["hops_agent_to_phone"]}
    assert up["carrier link trunk -> edge"]["delay_ms"] == pytest.approx(20.0, abs=1.0)
    assert up["access link edge -> agent"]["delay_ms"] == pytest.approx(5.0, abs=1.0)
    assert down["carrier link edge -> trunk"] == pytest.approx(20.0, abs=1.0)
    assert down["access link agent -> edge"] < 1.0
    assert "l2forward: delay_ms=20.0" in up["carrier link trunk -> edge"]["source"]
    # the endpoints' part does not change: the network delay shows up in the network hops
    assert 78.0 <= r["hops"][-1]["delay_ms"] <= 95.0


# ------------------------------------------------------- the chain alone, UDP probes
WARM = 25  # packets sent first, 10 ms apart: dumpcap says "Capturing on" a little before it does


def _probe(chain, n, gap_s=0.002):
    """Send ``n`` RTP-shaped packets trunk -> agent over a started chain; the captures and what arrived.

    ``WARM`` packets to another port go first (their IP frames are the link's ordinals 0 .. WARM - 1).
    """
    import socket

    async def go():
        await chain.start_captures()
        rx = nc.socket_in_namespace(chain.namespaces["agent"], socket.AF_INET, socket.SOCK_DGRAM)
        tx = nc.socket_in_namespace(chain.namespaces["trunk"], socket.AF_INET, socket.SOCK_DGRAM)
        with rx, tx:
            rx.bind((A["agent"], 4002))
            rx.setblocking(False)
            tx.bind((A["trunk"], 4000))
            loop = asyncio.get_running_loop()
            got = []

            def on_rx():
                while True:
                    try:
                        got.append(struct.unpack("!H", rx.recv(2048)[2:4])[0])
                    except BlockingIOError:
                        return

            loop.add_reader(rx.fileno(), on_rx)
            for _ in range(WARM):
                tx.sendto(b"warm", (A["agent"], 4003))
                await asyncio.sleep(0.01)
            t0 = loop.time()
            for seq in range(n):  # paced on the loop clock (a live link test: real time is the point)
                await asyncio.sleep(max(0.0, t0 + seq * gap_s - loop.time()))
                tx.sendto(struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 7) + b"\xff" * 160, (A["agent"], 4002))
            await asyncio.sleep(0.2)
            loop.remove_reader(rx.fileno())
            on_rx()
        return await chain.stop_captures(), got

    try:
        return asyncio.run(go())
    finally:
        chain.close_sync()


def _seqs(pkts, ifid):
    return {struct.unpack("!H", u[4][2:4])[0] for i, _, f in pkts if i == ifid and (u := nc._udp_of(f)) and u[3] == 4002}


def test_lab_link_loss_is_measured_and_reproducible(kernel):
    n, p = 500, 0.10
    runs = []
    for seed in (5, 5, 6):
        chain = nc.NetnsChain(links={"carrier": {"up": {"loss_rate": p}}}, forward=True, seed=seed).start()
        caps, got = _probe(chain, n)
        entered, left = _seqs(caps["wire-carrier"], 0), _seqs(caps["wire-carrier"], 1)
        assert entered == set(range(n))  # every packet seen entering the link
        lost = sorted(entered - left)
        assert sorted(set(range(n)) - set(got)) == lost  # what the agent missed is what the link dropped
        # the forwarder's own record: the ordinals of the IP frames it dropped (IPv4 only on the chain)
        fwd = chain.forwarder_stats["carrier"]["up"]
        assert [i - WARM for i in fwd["lost"] if i >= WARM] == lost
        assert fwd["ip_frames"] == WARM + n
        runs.append(lost)
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(len(runs[0]) - n * p) < 4 * sd, len(runs[0])  # binomial, 4 sigma
    assert runs[0] == runs[1]  # seeded: the same packets dropped twice
    assert runs[0] != runs[2]


def test_lab_link_forwarder_death_is_one_line(kernel):
    chain = nc.NetnsChain(links={"access": {"delay_ms": 1}}, forward=True).start()
    try:
        os.kill(chain._forwarders["access"].pid, 9)
        chain._forwarders["access"].wait(10)
        with pytest.raises(ToolUnavailableError) as ei:
            chain.check_forwarders()
        assert "forwarder on the access link died" in str(ei.value) and "\n" not in str(ei.value)
    finally:
        chain.close_sync()
    assert not _ours()


def test_netem_delay_on_the_carrier_link(kernel):
    """Where the kernel has netem (not this kind of VM): ``impairment="netem"``, 20 ms measured as such."""
    reason = nc.netem_unavailable_reason()
    if reason is not None:
        pytest.skip(f"{reason} (a kernel module, not a Debian package)")
    import statistics

    chain = nc.NetnsChain(links={"carrier": {"delay_ms": 20.0}}, forward=True, impairment="netem").start()
    caps, got = _probe(chain, 100, 0.01)
    assert statistics.median(nc.rtp_hop_delays(caps)["up"]["carrier"]) == pytest.approx(20.0, abs=1.0)
