"""Calls on the virtual network: SIP through NAT boxes (virtual time) and aiortc on the vnet.

Expected numbers are derived from the topology's link table (``DEFAULT_LINKS``), not
copied from a run.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.conftest import run_clean
from voicelab.errors import ParameterError
from voicelab.net import ChannelConfig
from voicelab.net.vclock import run_virtual
from voicelab.net.vnet import VirtualNetwork
from voicelab.net.vnet_iface import VirtualHostInterface
from voicelab.vnetcall import (
    ADDRESSES,
    DEFAULT_LINKS,
    build_topology,
    route_delay_ms,
    vnet_call,
    vnet_sip_call,
    vnet_webrtc_call,
)


def _d(name: str) -> float:
    return DEFAULT_LINKS[name]["delay_ms"]


# caller host link + home WAN + cloud WAN + agent host link, one way
DIRECT_MS = _d("caller") + _d("home") + _d("cloud") + _d("agent")


# ------------------------------------------------------------------ network pieces


def test_port_forward_reaches_the_inside_and_replies_leave_from_the_forwarded_port():
    net = VirtualNetwork(seed=1)
    net.add_router("cloud", nat="symmetric", subnet="10.0.0.0/24", wan_address="203.0.113.20")
    net.add_host("agent", "10.0.0.10", router="cloud")
    net.add_host("peer", "198.51.100.5")
    net.add_port_forward("cloud", "udp", 5060, ("10.0.0.10", 5060))
    net.bind("agent", ("10.0.0.10", 5060))
    net.bind("peer", ("198.51.100.5", 7000))
    # unsolicited inbound to the forwarded port passes even a symmetric NAT's filter
    net.send_datagram("peer", ("198.51.100.5", 7000), ("203.0.113.20", 5060), b"INVITE", now=0.0)
    ev = net.advance(1.0)
    assert [(e.host, e.dst) for e in ev] == [("agent", ("10.0.0.10", 5060))]
    # the reply leaves from the public forwarded address, whatever the destination
    net.send_datagram("agent", ("10.0.0.10", 5060), ("198.51.100.5", 7000), b"200", now=1.0)
    ev = net.advance(2.0)
    assert [(e.host, e.src) for e in ev] == [("peer", ("203.0.113.20", 5060))]
    # another inside port is still a symmetric NAT: unsolicited inbound is dropped
    net.send_datagram("peer", ("198.51.100.5", 7000), ("203.0.113.20", 5061), b"x", now=2.0)
    assert net.advance(3.0) == []
    assert net.trace[-1].reason == "no mapping"


@pytest.mark.parametrize("args, match", [
    (("nope", "udp", 5060, ("10.0.0.10", 5060)), "unknown router"),
    (("open", "udp", 5060, ("198.51.100.70", 5060)), "does not translate"),
    (("cloud", "sctp", 5060, ("10.0.0.10", 5060)), "protocol"),
    (("cloud", "udp", 0, ("10.0.0.10", 5060)), "external_port"),
    (("cloud", "udp", 5060, ("192.168.9.9", 5060)), "inside"),
])
def test_port_forward_bad_input(args, match):
    net = VirtualNetwork(seed=0)
    net.add_router("cloud", nat="full-cone", subnet="10.0.0.0/24", wan_address="203.0.113.20")
    net.add_router("open", nat="open", subnet="198.51.100.64/26", wan_address="198.51.100.10")
    with pytest.raises(ParameterError, match=match):
        net.add_port_forward(*args)


def test_port_forward_twice_is_refused():
    net = VirtualNetwork(seed=0)
    net.add_router("cloud", nat="full-cone", subnet="10.0.0.0/24", wan_address="203.0.113.20")
    net.add_port_forward("cloud", "udp", 5060, ("10.0.0.10", 5060))
    with pytest.raises(ParameterError, match="already"):
        net.add_port_forward("cloud", "udp", 5060, ("10.0.0.11", 5060))


def test_port_forward_from_a_yaml_description():
    net = VirtualNetwork.from_yaml("""
routers:
  cloud: {nat: symmetric, subnet: 10.0.0.0/24, wan_address: 203.0.113.20,
          forwards: [{proto: udp, port: 5060, to: [10.0.0.10, 5060]}]}
hosts:
  agent: {address: 10.0.0.10, router: cloud}
""")
    assert net.routers["cloud"].forwards == {("udp", 5060): ("10.0.0.10", 5060)}
    with pytest.raises(ParameterError, match="proto, port and to"):
        VirtualNetwork.from_dict({"routers": {"cloud": {"nat": "full-cone", "subnet": "10.0.0.0/24",
                                                        "wan_address": "203.0.113.20", "forwards": [{"port": 1}]}}})


def test_free_port_comes_from_the_hosts_table_and_is_reproducible():
    def ports(seed):
        net = VirtualNetwork(seed=seed)
        net.add_host("a", "203.0.113.1")
        iface = VirtualHostInterface(net, "a")
        p1 = iface.free_port("udp")
        net.bind("a", ("203.0.113.1", p1))
        p2 = iface.free_port("udp", "203.0.113.1")
        assert p2 != p1 and ("203.0.113.1", p2) not in net.hosts["a"].udp_bound
        assert 49152 <= p1 <= 65535 and 49152 <= p2 <= 65535
        return p1, p2, iface.free_port("tcp")

    assert ports(3) == ports(3)
    net = VirtualNetwork(seed=0)
    net.add_host("a", "203.0.113.1")
    with pytest.raises(ParameterError, match="kind"):
        VirtualHostInterface(net, "a").free_port("sctp")
    with pytest.raises(ParameterError, match="no address"):
        VirtualHostInterface(net, "a").free_port("udp", "203.0.113.9")


def test_route_delay_follows_the_link_table():
    net, _ = build_topology("symmetric", "full-cone")
    assert route_delay_ms(net, "caller", "agent") == pytest.approx(DIRECT_MS)
    assert route_delay_ms(net, "agent", "caller") == pytest.approx(DIRECT_MS)
    assert route_delay_ms(net, "caller", "sbc") == pytest.approx(_d("caller") + _d("home") + _d("sbc"))
    net2, _ = build_topology("open", "open", network={"home": {"delay_ms": 40.0}})
    assert route_delay_ms(net2, "caller", "agent") == pytest.approx(DIRECT_MS - _d("home") + 40.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"caller_nat": "cone"}, "unknown caller NAT preset"),
    ({"agent_nat": "double"}, "unknown agent NAT preset"),
    ({"method": "sip-ice"}, "unknown method"),
    ({"method": "webrtc-stun"}, "vnet_webrtc_call"),
    ({"network": {"wan": {"delay_ms": 1}}}, "unknown network element"),
    ({"seconds": 0.1}, "outside"),
    ({"uplink": 5}, "uplink"),
])
def test_bad_input_fails_before_anything_runs(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        run_virtual(vnet_sip_call(**kwargs))


def test_webrtc_refuses_a_virtual_clock_and_sip_methods():
    with pytest.raises(ParameterError, match="real time"):
        run_virtual(vnet_webrtc_call(seconds=1.0))
    with pytest.raises(ParameterError, match="vnet_sip_call"):
        run_clean(lambda: vnet_webrtc_call(method="sip"), timeout=5)


# ------------------------------------------------------------------ SIP calls


def test_sip_signalling_crosses_a_symmetric_nat_with_rport():
    r = run_virtual(vnet_sip_call(caller_nat="symmetric", agent_nat="symmetric", method="sip-comedia",
                                  seconds=1.0, quality=False))
    # the agent answered to the NAT's mapping (Via received/rport), not the private Via
    assert r["sip_via_rport"] is True
    assert r["caller_sip_seen_as"].startswith(ADDRESSES["home_wan"] + ":")
    # INVITE -> 200 -> ACK on lossless links: one round trip of the direct route
    assert r["setup_ms"] == pytest.approx(2 * DIRECT_MS)
    assert r["virtual_time"] is True


def test_plain_sip_from_behind_a_nat_is_one_way_and_the_trace_says_why():
    r = run_virtual(vnet_sip_call(caller_nat="port-restricted-cone", agent_nat="open", method="sip",
                                  seconds=1.0, quality=False))
    assert r["caller_to_agent"] is True and r["agent_to_caller"] is False
    # the agent sent its audio to the caller's private SDP address: nothing routes there
    assert r["agent_to_caller.packets_received"] == 0
    assert r["drops"].get("no route", 0) >= r["agent_to_caller.packets_sent"]
    assert r["path"] == "direct" and r["relay_bytes"] == 0 and r["added_delay_ms"] == 0


def test_media_relay_costs_its_detour_and_carries_the_bytes():
    r = run_virtual(vnet_sip_call(caller_nat="symmetric", agent_nat="symmetric", method="sip-relay",
                                  seconds=1.0, quality=False))
    assert r["caller_to_agent"] and r["agent_to_caller"] and r["path"] == "media-relay"
    detour = (_d("caller") + _d("home") + _d("sbc")) + (_d("sbc") + _d("cloud") + _d("agent"))
    assert r["added_delay_ms"] == pytest.approx(detour - DIRECT_MS)
    # every received RTP payload crossed the relay once (RTP header 12 + 160 B PCMU, plus RTCP)
    received = r["caller_to_agent.packets_received"] + r["agent_to_caller.packets_received"]
    assert r["relay_bytes"] >= received * 172


def test_quality_metrics_are_deterministic_and_the_delay_adds_up():
    imp = ChannelConfig(delay_ms=30.0, loss_rate=0.02)
    a, b = (run_virtual(vnet_sip_call(caller_nat="full-cone", agent_nat="open", method="sip-comedia", seconds=4.0,
                                      uplink=imp, downlink=imp, seed=5)) for _ in range(2))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # mouth to ear = route (30 ms access link instead of the base one) + 20 ms frame + 60 ms jitter buffer
    route = DIRECT_MS - _d("caller") + 30.0
    for d in ("caller_to_agent", "agent_to_caller"):
        assert a[f"{d}.mouth_to_ear_ms"] == pytest.approx(route + 20.0 + 60.0, abs=2.5)
        assert 0.0 < a[f"{d}.loss_rate"] < 0.1
        assert a[f"{d}.pesq_nb"] is not None


def test_sixty_second_call_in_virtual_time_is_fast_and_identical_twice():
    imp = ChannelConfig(delay_ms=20.0, jitter_ms=8.0, loss_rate=0.02)
    run_virtual(vnet_sip_call(seconds=1.0, quality=False))  # imports and caches outside the timing
    outs, walls, cpus = [], [], []
    for _ in range(2):
        w0, c0 = time.perf_counter(), time.process_time()
        r = run_virtual(vnet_sip_call(caller_nat="port-restricted-cone", agent_nat="open", method="sip-comedia",
                                      seconds=60.0, uplink=imp, downlink=imp, seed=3, quality=False))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        outs.append(json.dumps(r, sort_keys=True))
    assert outs[0] == outs[1]  # metrics and the packet trace's digest
    r = json.loads(outs[0])
    assert r["seconds"] == 60.0 and r["caller_to_agent"] and r["agent_to_caller"]
    assert r["caller_to_agent.packets_received"] > 2800  # 3000 frames, 2 % lost
    # < 10 % of the call's duration. On an otherwise idle machine wall time equals this
    # process's CPU time (about 3 s here); when other jobs share the cores, wall time also
    # counts their slices, so the CPU time is what is asserted (wall times in the message).
    assert min(cpus) < 0.10 * 60.0, (cpus, walls)


# ------------------------------------------------------------------ WebRTC on the vnet (real time)


def _webrtc(caller_nat, agent_nat, method, **kw):
    return run_clean(lambda: vnet_webrtc_call(caller_nat=caller_nat, agent_nat=agent_nat, method=method,
                                              seconds=1.0, quality=False, **kw), timeout=40)


def test_webrtc_restricted_cone_reaches_symmetric_through_a_peer_reflexive_pair():
    r = _webrtc("restricted-cone", "symmetric", "webrtc-stun")
    assert r["connected"] and r["caller_to_agent"] and r["agent_to_caller"]
    # the symmetric side is reached at a port its STUN binding never showed: peer-reflexive
    assert r["path"] == "prflx"
    assert r["relay_bytes"] == 0 and r["added_delay_ms"] == 0


def test_webrtc_port_restricted_to_symmetric_fails_with_stun_only():
    r = _webrtc("port-restricted-cone", "symmetric", "webrtc-stun", connect_timeout=4.0)
    assert not r["connected"] and not r["caller_to_agent"] and not r["agent_to_caller"]
    assert r["path"] is None and r["setup_ms"] is None
    assert r["drops"].get("filtered (address-and-port-dependent)", 0) > 0


def test_webrtc_turn_relays_symmetric_to_symmetric():
    r = _webrtc("symmetric", "symmetric", "webrtc-turn")
    assert r["connected"] and r["caller_to_agent"] and r["agent_to_caller"]
    assert r["path"] == "relay" and r["relay_bytes"] > 0
    detour = (_d("caller") + _d("home") + _d("servers")) + (_d("servers") + _d("cloud") + _d("agent"))
    assert r["added_delay_ms"] == pytest.approx(detour - DIRECT_MS)


def test_vnet_call_dispatches_relay_only():
    r = run_clean(lambda: vnet_call(method="webrtc-relay-only", caller_nat="open", agent_nat="open", seconds=1.0,
                                    quality=False), timeout=40)
    # both hosts are public, yet the policy forces the relay
    assert r["method"] == "webrtc-relay-only" and r["path"] == "relay" and r["caller_to_agent"]
    assert r["turn_allocations"] >= 2
