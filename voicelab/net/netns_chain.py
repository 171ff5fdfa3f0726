"""A phone path's network on the ``netns`` backend: trunk -- carrier edge -- agent, in namespaces.

The SBC of a phone path is a pair of real daemons (Kamailio + rtpengine), so the path's
network cannot be the in-process vnet: it is built from Linux network namespaces, and the
lab's own caller and agent keep running in this process with their sockets opened *inside*
those namespaces (:class:`NetnsHostInterface`). The chain::

    trunk 198.51.100.2 --[carrier link]-- 198.51.100.1 edge 10.0.0.1 --[access link]-- 10.0.0.10 agent
      (the lab's caller as the      (Kamailio + rtpengine, the lab's     (the lab's agent)
       carrier's media gateway)      media relay, or a plain router)

- Every **link** is a namespace of its own (``wire-carrier``, ``wire-access``) with two
  ports, ``pa`` and ``pb``, one veth to each end. An ideal link joins them with a Linux
  bridge. An impaired link (``impairment="lab"``, the default) joins them with the lab's
  **userspace L2 link** instead: :mod:`voicelab.net.l2forward`, a child process in the link
  namespace that reads every frame from one port with an ``AF_PACKET`` socket and writes
  it to the other after the lab's own channel model (:class:`~voicelab.net.l2link.L2Link`:
  the :class:`~voicelab.net.channel.Channel` the in-process vnet and the simulator use)
  has decided whether and when it arrives. With ``impairment="netem"`` the bridge stays
  and ``tc netem`` sits on the bridge ports' egress, one per direction. Either way
  ``dumpcap`` captures both ports: a packet is seen entering the link (before any
  impairment) and leaving it (after), on the kernel's one clock. So each link's delay, and
  the edge's own residence time (leaving the carrier link -> entering the access link),
  are **measured** per RTP packet, not configured.
- The **edge** forwards between its two interfaces only when asked (``forward=True``: a
  plain router, for a path without an SBC or with a media relay that leaves SIP direct);
  with an SBC it does not forward, so the only way between trunk and agent is through the
  SBC's daemons, as at a real carrier edge. Kamailio and rtpengine listen on the edge's
  carrier-side address; the agent reaches it through its default route via 10.0.0.1.
- Namespaces are named ``vl-<pid>-c<n>-<node>`` (the :mod:`voicelab.net.netns` prefix, so
  :func:`~voicelab.net.netns.remove_stale_namespaces` cleans up after a killed run);
  :meth:`NetnsChain.close` stops the captures and deletes every namespace.

Why the lab's forwarder is the default: ``netem`` is a kernel module (``sch_netem``) some
machines lack (this kind of VM and the CI machine have no module directory), and it only
knows its own models; the lab's :class:`~voicelab.net.channel.ChannelConfig` also replays
loss traces, draws uniform and Pareto jitter, and with a seed drops the same packets on
every run, as the simulator does. ``impairment="netem"`` is there for kernels that have
it (refused with a one-line :class:`~voicelab.errors.ToolUnavailableError` otherwise).

This module is an I/O adapter: it runs ``ip``/``tc``/``dumpcap``, switches this thread's
network namespace with ``setns(2)`` for the moment a socket is created, and reads the
event loop's clock.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import json
import select
import sys

import numpy as np

from ..errors import ParameterError, ToolUnavailableError
from .channel import ChannelConfig
from .iface import NetworkInterface
from .netns import NAMESPACE_PREFIX, netns_unavailable_reason
from .vnet import LinkConfig

__all__ = ["NetnsChain", "NetnsHostInterface", "netem_args", "netem_unavailable_reason", "CHAIN_ADDRESSES",
           "CHAIN_LINKS", "IMPAIRMENTS", "read_pcapng"]

#: Where everything sits on the chain (see the module docstring).
CHAIN_ADDRESSES = {"trunk": "198.51.100.2", "edge": "198.51.100.1", "edge_inside": "10.0.0.1", "agent": "10.0.0.10"}
#: The two links, trunk side first.
CHAIN_LINKS = ("carrier", "access")
#: How an impaired link is impaired: the lab's userspace L2 link, or the kernel's netem.
IMPAIRMENTS = ("lab", "netem")

_CLONE_NEWNET = 0x40000000
_counter = 0


# ---------------------------------------------------------------------------------------
# Sockets inside a namespace, from this process
# ---------------------------------------------------------------------------------------

def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def socket_in_namespace(namespace: str, family: int, kind: int) -> socket.socket:
    """A socket created inside network namespace ``namespace`` (``/var/run/netns/NAME``).

    The calling thread enters the namespace with ``setns(2)`` only while the socket is
    created; a socket belongs to the namespace it was made in for its whole life.
    """
    libc = _libc()
    with open(f"/var/run/netns/{namespace}", "rb") as target, open("/proc/thread-self/ns/net", "rb") as here:
        if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise ToolUnavailableError(f"cannot enter network namespace {namespace}: {os.strerror(err)}")
        try:
            return socket.socket(family, kind)
        finally:
            if libc.setns(here.fileno(), _CLONE_NEWNET) != 0:  # pragma: no cover - the kernel gave it to us
                raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")


class NetnsHostInterface(NetworkInterface):
    """The :class:`~voicelab.net.iface.NetworkInterface` of a host of a :class:`NetnsChain`.

    Real sockets on the running event loop, created inside the host's namespace (so they
    bind its address and use its routes, links and impairments). UDP and TCP.

    Parameters
    ----------
    namespace : str
        The namespace name.
    address : str
        The host's address (what stacks bind and advertise).
    """

    def __init__(self, namespace: str, address: str) -> None:
        self.namespace = namespace
        self.address = address

    def _sock(self, kind: int) -> socket.socket:
        return socket_in_namespace(self.namespace, socket.AF_INET, kind)

    def _local(self, addr: Any) -> tuple[str, int]:
        if addr is None:
            return (self.address, 0)
        host = addr[0] if addr[0] not in (None, "") else self.address
        return (host, int(addr[1]))

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], asyncio.DatagramProtocol],
                                       local_addr: Any = None, remote_addr: Any = None, reuse_port: bool = False,
                                       **_: Any) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        s = self._sock(socket.SOCK_DGRAM)
        try:
            if reuse_port:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(self._local(local_addr))
            if remote_addr is not None:
                s.connect(tuple(remote_addr[:2]))
            s.setblocking(False)
            return await asyncio.get_running_loop().create_datagram_endpoint(protocol_factory, sock=s)
        except BaseException:
            s.close()
            raise

    async def create_server(self, protocol_factory: Callable[[], asyncio.Protocol], host: str | None, port: int,
                            ssl: Any = None, reuse_port: bool = False, **_: Any) -> Any:
        s = self._sock(socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(self._local((host, port)))
            s.listen(128)
            s.setblocking(False)
            return await asyncio.get_running_loop().create_server(protocol_factory, sock=s, ssl=ssl)
        except BaseException:
            s.close()
            raise

    async def create_connection(self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int,
                                ssl: Any = None, local_addr: Any = None,
                                server_hostname: str | None = None) -> tuple[asyncio.Transport, asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        s = self._sock(socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            s.bind(self._local(local_addr))
            await loop.sock_connect(s, (host, int(port)))
            kw = {"server_hostname": server_hostname or host} if ssl is not None else {}
            return await loop.create_connection(protocol_factory, sock=s, ssl=ssl, **kw)
        except BaseException:
            s.close()
            raise

    def host_addresses(self) -> list[str]:
        return [self.address]

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def free_port(self, kind: str = "udp", host: str | None = None) -> int:
        if kind not in ("tcp", "udp"):
            raise ParameterError(f"kind must be 'tcp' or 'udp', got {kind!r}")
        s = self._sock(socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        try:
            s.bind((host or self.address, 0))
            return int(s.getsockname()[1])
        finally:
            s.close()

    def __repr__(self) -> str:
        return f"NetnsHostInterface({self.namespace!r}, {self.address!r})"


# ---------------------------------------------------------------------------------------
# Impairment: netem
# ---------------------------------------------------------------------------------------

def netem_args(cfg: ChannelConfig) -> list[str] | None:
    """The ``tc qdisc add ... netem`` arguments for one direction of a link, or None when ideal.

    Parameters
    ----------
    cfg : ChannelConfig
        ``delay_ms``, ``jitter_ms`` (normal distribution), ``loss_rate`` (independent, or
        Gilbert-Elliott with ``burst_length`` via netem's ``loss gemodel``), ``bandwidth_kbps``
        (netem ``rate``) and ``duplicate_rate`` are expressed; anything else is refused.

    Notes
    -----
    netem's internal queue releases packets in time order, so jitter reorders them; with the
    lab's default ``reorder=False`` :class:`NetnsChain` adds a ``pfifo`` child to the netem
    qdisc (netem's documented way to keep the order).

    Raises
    ------
    ParameterError
        A setting netem cannot express (a loss trace, a jitter distribution other than normal).
    """
    cfg = LinkConfig.coerce(cfg).up
    if cfg == ChannelConfig():
        return None
    if cfg.loss_trace is not None:
        raise ParameterError("netem cannot replay a loss trace: use delay_ms, jitter_ms, loss_rate, burst_length, bandwidth_kbps")
    if cfg.jitter_distribution not in ("normal",):
        raise ParameterError(f"the namespace links use netem's normal jitter distribution, got {cfg.jitter_distribution!r}")
    args = ["netem", "limit", str(int(cfg.queue_packets or 1000))]
    if cfg.delay_ms or cfg.jitter_ms:
        args += ["delay", f"{cfg.delay_ms:g}ms"]
        if cfg.jitter_ms:
            args += [f"{cfg.jitter_ms:g}ms", "distribution", "normal"]
    if cfg.loss_rate:
        if cfg.burst_length:
            # Gilbert-Elliott: p = P(good -> bad), r = P(bad -> good) = 1 / burst; loss in bad = 100 %
            r = 1.0 / float(cfg.burst_length)
            p = cfg.loss_rate * r / max(1e-12, 1.0 - cfg.loss_rate)
            args += ["loss", "gemodel", f"{100 * p:.6g}%", f"{100 * r:.6g}%", "100%", "0%"]
        else:
            args += ["loss", "random", f"{100 * cfg.loss_rate:.6g}%"]
    if cfg.duplicate_rate:
        args += ["duplicate", f"{100 * cfg.duplicate_rate:.6g}%"]
    if cfg.bandwidth_kbps:
        args += ["rate", f"{cfg.bandwidth_kbps:g}kbit"]
    return args


_netem_reason: list[str | None] = []


def netem_unavailable_reason() -> str | None:
    """Why ``tc ... netem`` cannot run here (a one-line reason), or None when it can."""
    if _netem_reason:
        return _netem_reason[0]
    reason = netns_unavailable_reason()
    if reason is None and shutil.which("tc") is None:
        reason = "tc not installed (Debian package iproute2)"
    if reason is None:
        name = f"{NAMESPACE_PREFIX}{os.getpid()}-netem-check"
        try:
            subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=20, check=True)
            r = subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                                "delay", "1ms"], capture_output=True, timeout=20)
            if r.returncode != 0:
                reason = ("the netem qdisc is not available in this kernel (module sch_netem: "
                          f"{r.stderr.decode(errors='replace').strip()[:120] or 'refused'})")
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"cannot try netem: {exc}"
        finally:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
    _netem_reason.append(reason)
    return reason


# ---------------------------------------------------------------------------------------
# Captures: a small pcapng reader (dumpcap writes pcapng for several interfaces)
# ---------------------------------------------------------------------------------------

def read_pcapng(path: str | os.PathLike) -> list[tuple[int, float, bytes]]:
    """``(interface id, time in s, link-layer frame)`` for every packet of a pcapng file.

    Reads the blocks dumpcap writes (Section Header, Interface Description with its
    ``if_tsresol``, Enhanced Packet); other blocks are skipped.
    """
    data = Path(path).read_bytes()
    out: list[tuple[int, float, bytes]] = []
    resol: list[float] = []
    i, endian = 0, "<"
    while i + 12 <= len(data):
        btype = struct.unpack(endian + "I", data[i:i + 4])[0]
        if btype == 0x0A0D0D0A:
            endian = "<" if data[i + 8:i + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            resol = []
        blen = struct.unpack(endian + "I", data[i + 4:i + 8])[0]
        if blen < 12 or i + blen > len(data):
            break
        body = data[i + 8:i + blen - 4]
        if btype == 1:  # Interface Description: options after 8 bytes
            res = 1e-6
            j = 8
            while j + 4 <= len(body):
                code, olen = struct.unpack(endian + "HH", body[j:j + 4])
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    v = body[j + 4]
                    res = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
                j += 4 + olen + (-olen % 4)
            resol.append(res)
        elif btype == 6:  # Enhanced Packet
            ifid, hi, lo, caplen = struct.unpack(endian + "IIII", body[:16])
            ts = ((hi << 32) | lo) * (resol[ifid] if ifid < len(resol) else 1e-6)
            out.append((ifid, ts, body[20:20 + caplen]))
        i += blen
    return out


def _udp_of(frame: bytes) -> tuple[str, int, str, int, bytes] | None:
    """(src ip, src port, dst ip, dst port, payload) of an Ethernet/IPv4/UDP frame."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    u = 14 + ihl
    sport, dport, ulen = struct.unpack("!HHH", frame[u:u + 6])
    return (socket.inet_ntoa(frame[26:30]), sport, socket.inet_ntoa(frame[30:34]), dport, frame[u + 8:u + ulen])


# ---------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------

class NetnsChain:
    """trunk -- carrier link -- edge -- access link -- agent, in network namespaces.

    Parameters
    ----------
    links : dict, optional
        ``{"carrier": cfg, "access": cfg}``, each a :class:`~voicelab.net.ChannelConfig`
        (or dict) applied in **both** directions of that link, or ``{"up": cfg, "down": cfg}``
        (``up``: towards the agent).
    impairment : {"lab", "netem"}
        What impairs a non-ideal link: the lab's userspace L2 link
        (:mod:`voicelab.net.l2forward`, any ChannelConfig, seeded) or ``tc netem`` on a
        bridge (the kernel's ``sch_netem``; no loss traces, normal jitter only).
    ideal_links : {"bridge", "forwarder"}
        What joins an ideal link's ports: a Linux bridge, or the lab's forwarder with an
        ideal channel (to measure the forwarder itself).
    seed : int
        Seed of the lab's link models (split per link and direction): the same seed drops
        the same packets.
    forward : bool
        The edge routes between its sides (no SBC in the path, or a media relay only).
    capture : bool
        Capture both ports of each link with ``dumpcap`` (Debian ``wireshark-common`` /
        ``tshark``) to measure per-hop delays.

    Raises
    ------
    ToolUnavailableError
        No namespaces here (not root, no ``ip``), ``impairment="netem"`` without netem, a
        forwarder that does not start, or no ``dumpcap`` with ``capture=True``. Nothing is
        left behind.
    ParameterError
        Unknown link names or settings.
    """

    def __init__(self, *, links: Mapping[str, Any] | None = None, forward: bool = False, capture: bool = True,
                 impairment: str = "lab", ideal_links: str = "bridge", seed: int = 0) -> None:
        unknown = sorted(set(links or {}) - set(CHAIN_LINKS))
        if unknown:
            raise ParameterError(f"unknown link(s) {unknown}: the path's links are {', '.join(CHAIN_LINKS)}")
        if impairment not in IMPAIRMENTS:
            raise ParameterError(f"impairment must be one of {', '.join(IMPAIRMENTS)}, got {impairment!r}")
        if ideal_links not in ("bridge", "forwarder"):
            raise ParameterError(f"ideal_links must be 'bridge' or 'forwarder', got {ideal_links!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")
        self.links: dict[str, dict[str, ChannelConfig]] = {}
        for name in CHAIN_LINKS:
            lc = LinkConfig.coerce((links or {}).get(name))
            self.links[name] = {"up": lc.up, "down": lc.down}
        self.impairment = impairment
        self.seed = int(seed)
        ideal = {name: all(c == ChannelConfig() for c in dd.values()) for name, dd in self.links.items()}
        #: the links joined by the lab's forwarder (the others by a bridge)
        self.forwarded = tuple(name for name in CHAIN_LINKS
                               if (impairment == "lab" and not ideal[name]) or (ideal[name] and ideal_links == "forwarder"))
        self.netem = {(name, d): netem_args(cfg) if impairment == "netem" else None
                      for name, dd in self.links.items() for d, cfg in dd.items()}
        self._forwarders: dict[str, subprocess.Popen] = {}
        #: per forwarded link, the forwarder's counters once it stopped (see voicelab.net.l2forward)
        self.forwarder_stats: dict[str, dict[str, Any]] = {}
        self.forward = bool(forward)
        self.capture = bool(capture)
        self.namespaces: dict[str, str] = {}
        self._created: list[str] = []
        self._captures: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.commands: list[list[str]] = []

    # --- building ---------------------------------------------------------------------
    def _cmd(self, argv: list[str], *, input: bytes | None = None) -> None:
        self.commands.append(list(argv))
        r = subprocess.run(argv, input=input, capture_output=True, timeout=20)
        if r.returncode != 0:
            raise ToolUnavailableError(f"command {' '.join(argv)!r} failed: "
                                       f"{r.stderr.decode(errors='replace').strip()[:200] or 'no message'}")

    def _batch(self, node: str, lines: list[str]) -> None:
        self._cmd(["ip", "-n", self.namespaces[node], "-batch", "-"], input=("\n".join(lines) + "\n").encode())

    def start(self) -> "NetnsChain":
        """Build the namespaces, links, addresses, routes and impairments (the lab's forwarders or netem)."""
        global _counter
        reason = netns_unavailable_reason()
        if reason is not None:
            raise ToolUnavailableError(f"the path's vnet needs network namespaces: {reason}")
        if self.impairment == "netem" and any(self.netem.values()):
            reason = netem_unavailable_reason()
            if reason is not None:
                raise ToolUnavailableError(f"impairment='netem' needs netem: {reason}; use impairment='lab'")
        if self.capture and shutil.which("dumpcap") is None:
            raise ToolUnavailableError("dumpcap not installed (Debian package wireshark-common, with tshark)")
        tag = f"{NAMESPACE_PREFIX}{os.getpid()}-c{_counter}"
        _counter += 1
        try:
            for node in ("trunk", "wire-carrier", "edge", "wire-access", "agent"):
                ns = f"{tag}-{node}"
                self._cmd(["ip", "netns", "add", ns])
                self._created.append(ns)
                self.namespaces[node] = ns
                # the chain is IPv4: no router solicitations or DAD frames on its links
                self._cmd(["ip", "netns", "exec", ns, "sh", "-ec", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                           "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"])
            A = CHAIN_ADDRESSES
            for wire, (left, lif), (right, rif) in (("wire-carrier", ("trunk", "eth0"), ("edge", "ext0")),
                                                   ("wire-access", ("edge", "int0"), ("agent", "eth0"))):
                wns = self.namespaces[wire]
                self._batch(left, ["link set lo up", f"link add {lif} type veth peer name pa netns {wns}"])
                self._batch(right, ["link set lo up", f"link add {rif} type veth peer name pb netns {wns}"])
                if wire.removeprefix("wire-") in self.forwarded:  # the lab's forwarder joins pa and pb
                    self._batch(wire, ["link set lo up", "link set pa promisc on", "link set pb promisc on",
                                       "link set pa up", "link set pb up"])
                else:
                    self._batch(wire, ["link set lo up", "link add br0 type bridge", "link set br0 up",
                                       "link set pa master br0", "link set pb master br0", "link set pa up",
                                       "link set pb up"])
            self._batch("trunk", ["link set eth0 up", f"addr add {A['trunk']}/24 dev eth0",
                                  f"route add default via {A['edge']} dev eth0"])
            self._batch("edge", ["link set ext0 up", f"addr add {A['edge']}/24 dev ext0", "link set int0 up",
                                 f"addr add {A['edge_inside']}/24 dev int0"])
            self._batch("agent", ["link set eth0 up", f"addr add {A['agent']}/24 dev eth0",
                                  f"route add default via {A['edge_inside']} dev eth0"])
            self._cmd(["ip", "netns", "exec", self.namespaces["edge"], "sh", "-ec",
                       f"echo {int(self.forward)} > /proc/sys/net/ipv4/ip_forward"])
            # netem on the bridge ports' egress: "pb" of the carrier wire sends towards the edge (up),
            # "pa" towards the trunk (down); on the access wire "pb" towards the agent (up), "pa" towards the edge
            for link, wire in (("carrier", "wire-carrier"), ("access", "wire-access")):
                for direction, port in (("up", "pb"), ("down", "pa")):
                    args = self.netem[(link, direction)]
                    if args:
                        tc = ["ip", "netns", "exec", self.namespaces[wire], "tc", "qdisc", "add", "dev", port]
                        self._cmd([*tc, "root", "handle", "1:", *args])
                        cfg = self.links[link][direction]
                        if cfg.jitter_ms and not cfg.reorder:
                            # netem's own queue sends in time order, so jitter reorders; a plain FIFO
                            # child keeps the order (the lab's reorder=False: a packet never overtakes)
                            self._cmd([*tc, "parent", "1:1", "pfifo", "limit", str(int(cfg.queue_packets or 1000))])
            self._start_forwarders()
            self._tmp = tempfile.TemporaryDirectory(prefix="voicelab-chain-")
        except BaseException:
            self.close_sync()
            raise
        return self

    def _start_forwarders(self) -> None:
        """One :mod:`voicelab.net.l2forward` per forwarded link; returns once each says ``ready``."""
        import voicelab

        root = str(Path(voicelab.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
        seeds = dict(zip(CHAIN_LINKS, np.random.SeedSequence(self.seed).spawn(len(CHAIN_LINKS))))
        for link in self.forwarded:
            seed = int(seeds[link].generate_state(1)[0])
            argv = [*self.prefix(f"wire-{link}"), sys.executable, "-m", "voicelab.net.l2forward", "--a", "pa", "--b", "pb",
                    "--up", json.dumps(self.links[link]["up"].to_dict()),
                    "--down", json.dumps(self.links[link]["down"].to_dict()), "--seed", str(seed)]
            self.commands.append(argv)
            self._forwarders[link] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                      stderr=subprocess.PIPE, env=env, start_new_session=True)
        for link, proc in self._forwarders.items():
            ready, _, _ = select.select([proc.stdout], [], [], 20.0)
            line = proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
            if line.strip() != b"ready":
                self._stop_forwarders()
                raise ToolUnavailableError(f"the lab's link forwarder on the {link} link did not start: "
                                           f"{self._forwarder_error(link, proc) or 'no ready within 20 s'}")

    def _forwarder_error(self, link: str, proc: subprocess.Popen) -> str:
        err = proc.stderr.read().decode(errors="replace").strip() if proc.poll() is not None else ""  # type: ignore[union-attr]
        lines = [ln for ln in err.splitlines() if ln.strip()]
        return lines[-1][:200] if lines else ""

    def check_forwarders(self) -> None:
        """Raise if a link forwarder died (one line: which link, its last words).

        Raises
        ------
        ToolUnavailableError
            A forwarder exited while the chain is up.
        """
        for link, proc in self._forwarders.items():
            if proc.poll() is not None:
                raise ToolUnavailableError(f"the lab's link forwarder on the {link} link died (exit {proc.returncode}): "
                                           f"{self._forwarder_error(link, proc) or 'no message'}")

    def _stop_forwarders(self) -> None:
        """SIGTERM each forwarder and keep the counters it prints (:attr:`forwarder_stats`)."""
        while self._forwarders:
            link, proc = self._forwarders.popitem()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            for line in reversed(out.decode(errors="replace").splitlines()):
                if line.startswith("{"):
                    self.forwarder_stats[link] = json.loads(line)
                    break

    def describe(self, link: str, direction: str) -> str:
        """What carries one direction of a link, for a hop table (e.g. ``"veths + the lab's link: delay 20 ms"``)."""
        cfg = self.links[link][direction]
        if link in self.forwarded:
            d = {k: v for k, v in cfg.to_dict().items() if v != getattr(ChannelConfig(), k)}
            return ("veths + the lab's userspace link (voicelab.net.l2forward: "
                    + (", ".join(f"{k}={v}" for k, v in d.items()) or "ideal") + f", seed {self.seed})")
        args = self.netem[(link, direction)]
        return "veth + bridge" + (f" + netem {' '.join(args)}" if args else "")

    async def start_captures(self) -> None:
        """Start ``dumpcap`` on both ports of each link; returns once both capture."""
        if not self.capture:
            return
        assert self._tmp is not None
        try:
            for wire in ("wire-carrier", "wire-access"):
                path = Path(self._tmp.name) / f"{wire}.pcapng"
                proc = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", self.namespaces[wire], "dumpcap", "-q", "-i", "pa", "-i", "pb",
                    "-f", "udp", "-s", "128", "-w", str(path), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
                self._captures[wire] = (proc, path)
            for wire, (proc, path) in self._captures.items():  # dumpcap says so on stderr once it captures
                seen = b""
                while seen.count(b"Capturing on") < 1:
                    line = await asyncio.wait_for(proc.stderr.readline(), 15.0)  # type: ignore[union-attr]
                    if not line:
                        raise ToolUnavailableError(f"dumpcap did not start in {wire}: {seen.decode(errors='replace')[-300:]}")
                    seen += line
        except asyncio.TimeoutError:
            await self.stop_captures()
            raise ToolUnavailableError("dumpcap did not report capturing within 15 s") from None
        except BaseException:
            await self.stop_captures()
            raise

    async def stop_captures(self) -> dict[str, list[tuple[int, float, bytes]]]:
        """Stop ``dumpcap`` (SIGINT: it writes its file) and read what it captured, per link wire."""
        out: dict[str, list[tuple[int, float, bytes]]] = {}
        while self._captures:
            wire, (proc, path) = self._captures.popitem()
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
                try:
                    await asyncio.wait_for(proc.wait(), 10.0)
                except asyncio.TimeoutError:
                    os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            out[wire] = read_pcapng(path) if path.exists() else []
        self.check_forwarders()  # a link that stopped forwarding mid-run makes its captures meaningless
        return out

    def close_sync(self) -> None:
        """Stop the forwarders, delete every namespace (and with them the veths, bridges and qdiscs); idempotent."""
        for proc, _ in self._captures.values():
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._captures.clear()
        self._stop_forwarders()
        while self._created:
            subprocess.run(["ip", "netns", "del", self._created.pop()], capture_output=True, timeout=20)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def close(self) -> None:
        """Stop the captures, then :meth:`close_sync`."""
        if self._captures:
            await self.stop_captures()
        self.close_sync()

    async def __aenter__(self) -> "NetnsChain":
        return self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # --- using it ---------------------------------------------------------------------
    def iface(self, host: str) -> NetnsHostInterface:
        """The network interface of ``"trunk"``, ``"edge"`` or ``"agent"``."""
        if host not in ("trunk", "edge", "agent"):
            raise ParameterError(f"hosts of the chain are trunk, edge and agent, got {host!r}")
        return NetnsHostInterface(self.namespaces[host], CHAIN_ADDRESSES[host])

    def prefix(self, host: str) -> tuple[str, ...]:
        """The command prefix that runs a program inside ``host``'s namespace."""
        return ("ip", "netns", "exec", self.namespaces[host])


def rtp_hop_delays(captures: Mapping[str, list[tuple[int, float, bytes]]]) -> dict[str, dict[str, list[float]]]:
    """Per-packet delays (ms) of each hop, each direction, from the two links' captures.

    A packet is an RTP packet (version 2) keyed by (SSRC, sequence number); rtpengine, the
    lab's relay and a router forward RTP headers unchanged. On each link's wire, ``pa`` is
    the trunk-side (or edge-side) port and ``pb`` the far one (interface ids 0 and 1).

    Returns
    -------
    dict
        ``{"up": {...}, "down": {...}}`` (up: trunk -> agent), each with lists of
        ``carrier``, ``edge`` and ``access`` delays in ms (one per packet seen at both ends
        of that hop).
    """
    seen: dict[tuple[str, int, str], dict[tuple[int, int], float]] = {}
    for wire, pkts in captures.items():
        link = "carrier" if wire == "wire-carrier" else "access"
        for ifid, t, frame in pkts:
            u = _udp_of(frame)
            if u is None or len(u[4]) < 12 or u[4][0] >> 6 != 2 or 72 <= (u[4][1] & 0x7F) <= 95:
                continue  # not RTP (RTCP payload types 200..204 appear as 72..76 with the marker bit stripped)
            ssrc = struct.unpack("!I", u[4][8:12])[0]
            seq = struct.unpack("!H", u[4][2:4])[0]
            # which way: towards the agent's side or the trunk's side of the link
            up = u[2] != CHAIN_ADDRESSES["trunk"] if link == "carrier" else u[2] == CHAIN_ADDRESSES["agent"]
            seen.setdefault((link, ifid, "up" if up else "down"), {}).setdefault((ssrc, seq), t)
    out: dict[str, dict[str, list[float]]] = {"up": {}, "down": {}}

    def diff(a: dict, b: dict) -> list[float]:
        return [1000.0 * (b[k] - a[k]) for k in a if k in b]

    # a link: entering at one port, leaving at the other (pa=0 trunk/edge side, pb=1 edge/agent side)
    for link in CHAIN_LINKS:
        out["up"][link] = diff(seen.get((link, 0, "up"), {}), seen.get((link, 1, "up"), {}))
        out["down"][link] = diff(seen.get((link, 1, "down"), {}), seen.get((link, 0, "down"), {}))
    # the edge: leaving the carrier link towards it -> entering the access link from it (and back)
    out["up"]["edge"] = diff(seen.get(("carrier", 1, "up"), {}), seen.get(("access", 0, "up"), {}))
    out["down"]["edge"] = diff(seen.get(("access", 0, "down"), {}), seen.get(("carrier", 1, "down"), {}))
    return out
