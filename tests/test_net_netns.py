"""Real-kernel cross-check: the vnet NAT model against Linux namespaces + iptables NAT.

The experiments are written once against a tiny driver interface (``bind``, ``send``,
``at``, ``run``) and run twice: on :class:`voicelab.net.vnet.VirtualNetwork` in virtual
time, and on :class:`voicelab.net.netns.NetnsNetwork` with real sockets in namespaces
(real time, waits bounded by select timeouts, no sleeps). Each cell the kernel can
express must give the same outcome on both.

The kernel tests need Linux, root, ``ip`` (Debian ``iproute2``) and ``iptables``
(Debian ``iptables``); without them they skip (this backend is optional). The checks
that refuse bad input before anything runs need none of that.
"""

from __future__ import annotations

import heapq
import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from voicelab.errors import ParameterError, ToolUnavailableError
from voicelab.net import netns
from voicelab.net.netns import KERNEL_PRESETS, NetnsNetwork, kernel_nat_rule, netns_unavailable_reason, wait_any
from voicelab.net.vnet import VirtualNetwork

# REFERENCE-FACTS.md: with STUN only, these pairs need a relay; every other pair connects.
STUN_FAILS = {
    ("port-restricted-cone", "symmetric"),
    ("symmetric", "port-restricted-cone"),
    ("symmetric", "symmetric"),
}
STUN = ("203.0.113.10", 3478)
AGENT = ("203.0.113.5", 4000)


@pytest.fixture(scope="module")
def kernel():
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"netns backend unavailable: {reason}")


def our_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    mine = f"{netns.NAMESPACE_PREFIX}{os.getpid()}-"
    return [line.split()[0] for line in out.splitlines() if line.startswith(mine)]


# ---------------------------------------------------------------------------------------
# Topologies (vnet descriptions; the netns backend builds the same ones)
# ---------------------------------------------------------------------------------------


def pair_topology(pa: str, pb: str) -> dict:
    """Two peers behind their own router (NAT or plain) and a reflector on the internet;
    the same addresses and links as ``build_pair`` in test_net_vnet.py."""
    routers, hosts = {}, {"stun": {"address": STUN[0], "link": {"delay_ms": 5}}}
    sides = (
        ("a", pa, "198.51.100.10", "192.168.1.0/24", "192.168.1.10", "198.51.100.64/26", "198.51.100.70"),
        ("b", pb, "198.51.100.20", "10.0.0.0/24", "10.0.0.10", "198.51.100.128/26", "198.51.100.130"),
    )
    for side, preset, wan, subnet, inside, open_subnet, open_addr in sides:
        public = preset == "open"  # a plain router: the host has a public address
        routers[f"r-{side}"] = {"nat": preset, "subnet": open_subnet if public else subnet, "wan_address": wan,
                                "link": {"delay_ms": 15}}
        hosts[side] = {"address": open_addr if public else inside, "router": f"r-{side}", "link": {"delay_ms": 1}}
    return {"routers": routers, "hosts": hosts}


def sip_topology(preset: str) -> dict:
    """A caller behind a home router, an agent on the internet."""
    public = preset == "open"
    return {
        "routers": {"home": {"nat": preset, "subnet": "198.51.100.64/26" if public else "192.168.1.0/24",
                             "wan_address": "198.51.100.10", "link": {"delay_ms": 10}}},
        "hosts": {"caller": {"address": "198.51.100.70" if public else "192.168.1.10", "router": "home"},
                  "agent": {"address": AGENT[0], "link": {"delay_ms": 2}}},
    }


# ---------------------------------------------------------------------------------------
# Two drivers with one interface: bind(host, port) -> socket, send(sock, dst, payload),
# at(t, fn), run(until, on_receive, done); ``now`` is seconds since the run started.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VSock:
    host: str
    local: tuple


class VnetDriver:
    """The experiment on the vnet model, in virtual time."""

    def __init__(self, topology: dict, seed: int = 0) -> None:
        self.net = VirtualNetwork.from_dict(topology, seed=seed)
        self.socks: dict = {}
        self.timers: list = []
        self._n = itertools.count()
        self.now = 0.0

    def bind(self, host: str, port: int) -> VSock:
        local = self.net.bind(host, (self.net.hosts[host].address, port))
        s = self.socks[(host, local)] = VSock(host, local)
        return s

    def send(self, sock: VSock, dst, payload: bytes) -> None:
        self.net.send_datagram(sock.host, sock.local, dst, payload, self.now)

    def at(self, t: float, fn) -> None:
        heapq.heappush(self.timers, (t, next(self._n), fn))

    def run(self, until: float, on_receive, done=lambda: False) -> None:
        while not done():
            cands = [t for t in (self.net.next_deadline(), self.timers[0][0] if self.timers else None) if t is not None]
            if not cands or min(cands) > until:
                break
            self.now = min(cands)
            if self.timers and self.timers[0][0] == self.now:
                heapq.heappop(self.timers)[2]()
            else:
                for ev in self.net.advance(self.now):
                    on_receive(self.socks[(ev.host, ev.dst)], ev.src, ev.payload)


class KernelDriver:
    """The same experiment with UDP probes in namespaces, in real time."""

    def __init__(self, net: NetnsNetwork) -> None:
        self.net = net
        self.probes: list = []
        self.timers: list = []
        self._n = itertools.count()
        self.now = 0.0

    def bind(self, host: str, port: int):
        p = self.net.udp_probe(host, port)
        self.probes.append(p)
        return p

    def send(self, sock, dst, payload: bytes) -> None:
        sock.send(dst, payload)

    def at(self, t: float, fn) -> None:
        heapq.heappush(self.timers, (t, next(self._n), fn))

    def run(self, until: float, on_receive, done=lambda: False) -> None:
        t0 = time.monotonic()
        while not done():
            now = time.monotonic() - t0
            if self.timers and self.timers[0][0] <= now:
                t, _, fn = heapq.heappop(self.timers)
                self.now = t
                fn()
                continue
            if now >= until:
                break
            nxt = min(self.timers[0][0] if self.timers else until, until)
            for probe, d in wait_any(self.probes, timeout=max(0.0, nxt - now)):
                self.now = d.time - t0
                on_receive(probe, d.src, d.payload)


# ---------------------------------------------------------------------------------------
# The experiments
# ---------------------------------------------------------------------------------------


def hole_punch(run) -> dict:
    """test_net_vnet.py's experiment (checks start at 0.3 s, not 0.5 s, and the run stops
    at 1 s or once both sides got a pong): both peers learn their server-reflexive address from
    the reflector, then send checks to each other's srflx at the same moment (a check and
    four retransmissions, 100 ms apart); a check is answered to its source and triggers a
    check back to it (peer-reflexive), as ICE does."""
    port = 5000
    sock = {s: run.bind(s, port) for s in ("a", "b")}
    stun = run.bind("stun", STUN[1])
    srflx: dict = {}
    targets: dict = {"a": [], "b": []}
    success: dict = {}

    def on_receive(s, src, payload):
        if s is stun:
            run.send(stun, src, b"srflx %s %d" % (src[0].encode(), src[1]))
            return
        side = s.host
        kind = payload.split()[0]
        if kind == b"srflx":
            _, ip, p = payload.split()
            srflx[side] = (ip.decode(), int(p))
        elif kind == b"ping":
            run.send(s, src, b"pong")
            if src not in targets[side]:
                targets[side].append(src)
                run.send(s, src, b"ping")
        elif kind == b"pong":
            success.setdefault(side, src)

    for s in ("a", "b"):
        run.at(0.0, lambda s=s: run.send(sock[s], STUN, b"binding"))

    def start_checks():
        assert set(srflx) == {"a", "b"}, f"reflector did not answer both peers: {srflx}"
        for s, other in (("a", "b"), ("b", "a")):
            targets[s].append(srflx[other])
        for k in range(5):
            run.at(run.now + 0.1 * k, lambda: [run.send(sock[s], t, b"ping") for s in ("a", "b") for t in list(targets[s])])

    run.at(0.3, start_checks)
    run.run(1.0, on_receive, done=lambda: len(success) == 2)
    other = {"a": "b", "b": "a"}
    return {
        "connected": len(success) == 2,
        "port_preserved": {s: srflx[s][1] == port for s in srflx},
        # reached the peer at its srflx (True) or at a peer-reflexive address (False)
        "at_srflx": {s: success[s] == srflx[other[s]] for s in success},
    }


def plain_sip_media(run, sdp_addr) -> dict:
    """Plain SIP behind a NAT: the caller sends media to the agent; the agent answers both
    to the address the caller's SDP names (its own, private, address) and to the source it
    saw the media come from (symmetric RTP, 'comedia' latching)."""
    caller = run.bind("caller", sdp_addr[1])
    agent = run.bind("agent", AGENT[1])
    seen: dict = {}
    heard: dict = {"sdp": False, "latched": False}

    def on_receive(s, src, payload):
        if s is agent:
            seen.setdefault("src", src)
        elif payload in (b"to-sdp", b"to-latched"):
            heard[payload[3:].decode()] = True

    def answer():
        run.send(agent, sdp_addr, b"to-sdp")
        if "src" in seen:
            run.send(agent, seen["src"], b"to-latched")

    for k in range(3):  # 20 ms media packets, then the agent's answers
        run.at(0.02 * k, lambda: run.send(caller, AGENT, b"rtp"))
        run.at(0.2 + 0.02 * k, answer)
    run.run(0.6, on_receive)
    return {
        "agent_heard_caller": "src" in seen,
        "source_is_sdp_address": seen.get("src") == tuple(sdp_addr),
        "caller_heard_reply_to_sdp": heard["sdp"],
        "caller_heard_reply_to_source": heard["latched"],
    }


# ---------------------------------------------------------------------------------------
# Refused before anything runs (no root needed)
# ---------------------------------------------------------------------------------------


def test_kernel_expressible_presets():
    assert kernel_nat_rule("open") is None
    assert kernel_nat_rule("port-restricted-cone") == "MASQUERADE"
    assert kernel_nat_rule("symmetric") == "MASQUERADE --random-fully"
    assert set(KERNEL_PRESETS) == {"open", "port-restricted-cone", "symmetric"}


@pytest.mark.parametrize(
    "nat, match",
    [
        ("full-cone", "cannot express NAT 'full-cone'"),
        ("restricted-cone", "cannot express NAT 'restricted-cone'"),
        ({"preset": "port-restricted-cone", "mapping": "address-dependent"}, "address-dependent mapping"),
        ({"preset": "port-restricted-cone", "port_preservation": False}, "port_preservation=True"),
        ({"preset": "symmetric", "port_preservation": True}, "port_preservation=False"),
        ("cone", "unknown NAT preset"),
    ],
)
def test_inexpressible_nat_is_refused_before_anything_is_built(nat, match):
    topo = {"routers": {"home": {"nat": nat, "subnet": "192.168.1.0/24", "wan_address": "198.51.100.10"}},
            "hosts": {"caller": {"address": "192.168.1.10", "router": "home"}}}
    with pytest.raises(ParameterError, match=match):
        NetnsNetwork(topo)


def test_impaired_links_and_bad_topologies_are_refused():
    with pytest.raises(ParameterError, match="ignore_links=True"):
        NetnsNetwork(pair_topology("open", "symmetric"))
    net = NetnsNetwork(pair_topology("open", "symmetric"), ignore_links=True)  # accepted, not built
    with pytest.raises(ParameterError, match="not running"):
        net.namespace("a")
    with pytest.raises(ParameterError, match="private address on the public internet"):
        NetnsNetwork({"hosts": {"h": {"address": "192.168.1.5"}}})
    with pytest.raises(ParameterError, match="topology must be"):
        NetnsNetwork(42)


# ---------------------------------------------------------------------------------------
# Lifetime: nothing left behind
# ---------------------------------------------------------------------------------------


def test_everything_is_deleted_after_an_error_inside_the_block(kernel):
    before = our_namespaces()
    with pytest.raises(RuntimeError, match="boom"):
        with NetnsNetwork(sip_topology("symmetric"), ignore_links=True) as net:
            probe = net.udp_probe("caller", 4000)
            made = set(net.namespaces.values())
            assert made <= set(our_namespaces()) and len(made) == 4  # internet, home, caller, agent
            # inside, a host sees only its own address
            shown = net.run_python("caller", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                                   "s.bind(('192.168.1.10', 0)); print('bound')")
            assert shown.stdout.strip() == b"bound"
            assert net.run_python("agent", "import socket; socket.socket(socket.AF_INET, "
                                  "socket.SOCK_DGRAM).bind(('192.168.1.10', 0))").returncode != 0
            raise RuntimeError("boom")
    assert probe._proc.poll() is not None
    assert our_namespaces() == before
    assert net.cleanup_errors == []


def test_a_failure_while_building_leaves_nothing(kernel, monkeypatch):
    real = netns._run

    def failing(argv, **kw):
        if "iptables-restore" in argv:
            return subprocess.CompletedProcess(argv, 1, b"", b"injected failure")
        return real(argv, **kw)

    netns._cached_reason()  # the availability check runs unpatched
    before = our_namespaces()
    monkeypatch.setattr(netns, "_run", failing)
    net = NetnsNetwork(sip_topology("port-restricted-cone"), ignore_links=True)
    with pytest.raises(ToolUnavailableError, match="iptables-restore' failed: injected failure"):
        net.start()
    monkeypatch.setattr(netns, "_run", real)
    assert len(net.commands) > 5 and our_namespaces() == before  # it had built a good part


def test_a_network_left_open_is_deleted_when_the_interpreter_exits(kernel):
    code = ("import os; from voicelab.net.netns import NetnsNetwork; "
            "net = NetnsNetwork({'hosts': {'a': {'address': '192.0.2.1'}}}).start(); "
            "print(os.getpid(), *sorted(net.namespaces.values()))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    pid, *made = child.stdout.split()
    assert len(made) == 2 and all(m.startswith(f"{netns.NAMESPACE_PREFIX}{pid}-") for m in made)  # internet + a
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert not any(m in listing for m in made)


def test_stale_namespaces_of_dead_processes_are_removed(kernel):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{netns.NAMESPACE_PREFIX}{dead.pid}-0-stale"
    live = f"{netns.NAMESPACE_PREFIX}{os.getpid()}-999-live"
    for name in (stale, live):
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        removed = netns.remove_stale_namespaces()
        assert stale in removed and live not in removed
        assert live in our_namespaces() and stale not in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


# ---------------------------------------------------------------------------------------
# The cross-check
# ---------------------------------------------------------------------------------------


def test_hole_punching_matrix_kernel_matches_vnet(kernel):
    kernel_m, vnet_m = {}, {}
    for pa in KERNEL_PRESETS:
        for pb in KERNEL_PRESETS:
            topo = pair_topology(pa, pb)
            vnet_m[(pa, pb)] = hole_punch(VnetDriver(topo))
            with NetnsNetwork(topo, ignore_links=True) as net:
                kernel_m[(pa, pb)] = hole_punch(KernelDriver(net))
    for cell in vnet_m:
        assert kernel_m[cell] == vnet_m[cell], f"{cell}: kernel {kernel_m[cell]} vs vnet {vnet_m[cell]}"
    failing = {cell for cell, r in kernel_m.items() if not r["connected"]}
    assert failing == STUN_FAILS
    # mapping behaviour: MASQUERADE keeps the port, --random-fully does not
    assert kernel_m[("port-restricted-cone", "open")]["port_preserved"]["a"] is True
    assert kernel_m[("symmetric", "open")]["port_preserved"]["a"] is False
    assert kernel_m[("symmetric", "open")]["at_srflx"]["b"] is False  # the symmetric side is reached at prflx


@pytest.mark.parametrize("preset", KERNEL_PRESETS)
def test_plain_sip_one_way_audio_kernel_matches_vnet(kernel, preset):
    topo = sip_topology(preset)
    sdp_addr = (topo["hosts"]["caller"]["address"], 4000)
    expected = plain_sip_media(VnetDriver(topo), sdp_addr)
    with NetnsNetwork(topo, ignore_links=True) as net:
        got = plain_sip_media(KernelDriver(net), sdp_addr)
    assert got == expected
    assert got["agent_heard_caller"] and got["caller_heard_reply_to_source"]
    # behind a NAT, media sent to the private address in the SDP never arrives
    assert got["caller_heard_reply_to_sdp"] is (preset == "open")


def test_double_nat_and_a_routed_public_subnet_kernel_matches_vnet(kernel):
    # a symmetric home NAT behind a carrier-grade port-restricted NAT; the peer sits in a
    # public subnet behind a plain router (routed, not translated); ideal links
    topo = {
        "routers": {
            "cgn": {"nat": "port-restricted-cone", "subnet": "100.64.0.0/24", "wan_address": "198.51.100.1"},
            "home": {"nat": "symmetric", "subnet": "192.168.1.0/24", "wan_address": "100.64.0.10", "parent": "cgn"},
            "dc": {"subnet": "203.0.113.128/25", "wan_address": "198.51.100.2"},
        },
        "hosts": {"a": {"address": "192.168.1.10", "router": "home"}, "stun": {"address": STUN[0]},
                  "b": {"address": "203.0.113.130", "router": "dc"}},
    }
    expected = hole_punch(VnetDriver(topo))
    with NetnsNetwork(topo) as net:
        got = hole_punch(KernelDriver(net))
        assert net.exec("stun", ["ip", "route"]).stdout.decode().count("via 198.51.100.2") == 1
    assert got == expected
    assert got["connected"] and got["port_preserved"]["a"] is False  # the inner NAT randomises the port


def test_kernel_presets_table_agrees_with_the_model(kernel):
    """Chapter 6's cross-check cell, now a package function (voicelab.viz.nat)."""
    from voicelab.viz.nat import kernel_presets_table

    table = kernel_presets_table()
    assert list(table["preset"]) == list(netns.KERNEL_PRESETS)
    assert table["agree"].all(), table.to_dict("records")
    sym = table.set_index("preset").loc["symmetric"]
    assert not sym["kernel_same_mapping"] and not sym["kernel_B_reaches_A_address"]
    assert our_namespaces() == []


def test_kernel_presets_table_refuses_presets_the_kernel_cannot_express():
    from voicelab.errors import ParameterError
    from voicelab.viz.nat import kernel_presets_table

    with pytest.raises(ParameterError, match="full-cone"):
        kernel_presets_table(["full-cone"])
