"""An in-process virtual network: hosts, routers that may be NATs, impaired links.

Sans-IO: nothing here reads a clock or opens a socket. The caller injects packets with
``now`` (seconds) and asks for what happens next::

    net = VirtualNetwork(seed=1)
    net.add_router("home", nat="port-restricted-cone", subnet="192.168.1.0/24",
                   wan_address="198.51.100.10", link=ChannelConfig(delay_ms=10))
    net.add_host("caller", "192.168.1.10", router="home")
    net.add_host("stun", "203.0.113.10")                  # on the public internet
    net.bind("stun", ("203.0.113.10", 3478))
    net.send_datagram("caller", ("192.168.1.10", 5000), ("203.0.113.10", 3478), b"hi", now=0.0)
    net.next_deadline()        # 0.0: the packet is waiting to leave
    net.advance(1.0)           # [DatagramDelivered(time=0.01, host='stun', src=('198.51.100.10', 5000), ...)]

The :mod:`voicelab.net.vnet_iface` adapter puts asyncio stacks on it (one
:class:`~voicelab.net.iface.NetworkInterface` per host).

Topology
--------
A tree of *segments* (layer-2 switches with no delay). The root segment is
``"internet"`` (every address that no router claims). Each router sits on its parent
segment with a WAN address and owns an inside segment (its ``subnet``, gateway address
``lan_address``). A router with a NAT (:class:`~voicelab.net.nat.Nat`) translates what
crosses it; a router without one (or with the ``open`` preset) routes its subnet as is,
so that subnet must be publicly routable where it is attached. Routers may nest: a NAT
behind a NAT (a home router behind a carrier-grade NAT) is two routers. A NAT router
may forward ports statically (:meth:`VirtualNetwork.add_port_forward`, or ``forwards``
in a description): a server behind a cloud NAT stays reachable on its forwarded port.

Each host hangs off one segment through a link, and each router off its parent segment
through its WAN link; a link is two :class:`~voicelab.net.channel.Channel` objects, one
per direction (``up`` towards the segment, ``down`` away from it), with the foundation's
delay, jitter, loss, bandwidth and queue models. A packet from a host behind a NAT to a
public host crosses: host uplink -> NAT -> router WAN uplink -> internet -> public
host's downlink.

Addressing rules (checked when the topology is built, with a :class:`ParameterError`
saying what to change): addresses are IPv4; a host's address lies in its segment's
subnet; hosts and WAN addresses on the internet, and subnets of plain routers on it,
are public (not 10/8, 172.16/12, 192.168/16, 100.64/10, loopback, link-local or
multicast; the documentation ranges 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24
count as public here); within one address realm (a NAT's inside, or the internet, with
plain routers) subnets do not overlap and addresses are unique; a NAT's inside subnet
does not overlap the realms outside it. Two NATs may use the same private subnet.

Transport
---------
- **UDP** datagrams: delivered when a socket is bound (:meth:`VirtualNetwork.bind`) at
  the destination, else dropped (``"port unreachable"``).
- **Streams** (TCP-like, RFC 5382 at the NAT): connect / accept / data / close / reset.
  A SYN creates the NAT mapping; an inbound SYN that a NAT filters, or one reaching a
  host with no listener, is answered with a RST (the connect is refused). Data is
  reliable and in order; there is no congestion control. A segment lost on a link is
  sent again on that link after a retransmission timeout (1 s for SYN, 0.2 s for other
  segments, doubling, at most 15 times; then both ends are reset), so loss on a stream
  link shows up as delay, as with TCP. Segments carry at most 1460 payload bytes.

Time and order
--------------
Everything happens through one event queue ordered by ``(time, insertion order)``:
:meth:`VirtualNetwork.send` and friends only queue a packet at ``now``;
:meth:`VirtualNetwork.advance` processes every event up to ``now`` and returns the
events that reached hosts (:class:`DatagramDelivered`, :class:`StreamConnected`, ...),
in time order. Links built without ``reorder`` keep packets in order. Same topology,
same seed and same inputs give the same trace.

Tracing
-------
Every step of every packet is one :class:`TraceRecord` in :attr:`VirtualNetwork.trace`:
each link it enters (with its arrival time, or the loss reason), each NAT translation
(addresses before and after), each delivery and each drop with its reason.
:meth:`VirtualNetwork.trace_to_pcap` writes the link records as IPv4/UDP and IPv4/TCP
packets (one capture point per link, or only the links named).

Why our own: Pion's ``vnet`` (Go) and libwebrtc's network emulation (C++) are the
models this follows; neither runs inside a Python process under the lab's own clock.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import itertools
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np

from ..errors import ParameterError
from .channel import Channel, ChannelConfig
from .nat import Nat, NatConfig, NatMapping
from .pcap import PcapWriter, udp_ipv4_packet

__all__ = [
    "VirtualNetwork",
    "Packet",
    "TraceRecord",
    "DatagramDelivered",
    "StreamAccepted",
    "StreamConnected",
    "StreamRefused",
    "StreamDataReceived",
    "StreamEnded",
    "StreamReset",
    "NetworkEvent",
    "Host",
    "Router",
    "LinkConfig",
    "is_public_address",
    "INTERNET",
    "MSS_BYTES",
]

Addr = tuple[str, int]

#: Name of the root segment.
INTERNET = "internet"
#: Largest stream segment payload, bytes.
MSS_BYTES = 1460
_IP_HEADER = 20
_UDP_HEADER = 8
_TCP_HEADER = 20
_MAX_UDP_PAYLOAD = 65507
_TTL = 64
_RTO_SYN_S = 1.0
_RTO_S = 0.2
_RTO_MAX_S = 60.0
_MAX_RETRANSMISSIONS = 15
_EPHEMERAL = (49152, 65535)

_PRIVATE_NETS = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",
    )
]


def is_public_address(address: str | ipaddress.IPv4Address | ipaddress.IPv4Network) -> bool:
    """True when an address (or a whole subnet) may sit on the virtual internet.

    Private (10/8, 172.16/12, 192.168/16), shared (100.64/10), loopback, link-local,
    "this network" and multicast/reserved space are not; everything else, including
    the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), is.
    """
    if isinstance(address, ipaddress.IPv4Network):
        return not any(address.overlaps(n) for n in _PRIVATE_NETS)
    a = ipaddress.IPv4Address(address)
    return not any(a in n for n in _PRIVATE_NETS)


# ---------------------------------------------------------------------------------------
# Packets, events, trace
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """One IP packet in flight.

    Parameters
    ----------
    proto : {"udp", "tcp"}
    src, dst : (str, int)
        IPv4 address and port, as currently written in the packet (NATs rewrite them).
    payload : bytes
    flags : str
        TCP flags as letters (``"S"`` SYN, ``"A"`` ACK, ``"F"`` FIN, ``"R"`` RST); ``""``
        for UDP.
    seq : int
        TCP: index of this segment in its direction (SYN is 0).
    byte_seq, ack : int
        TCP: byte sequence and acknowledgement numbers, for the pcap only.
    conn : int or None
        TCP: the sender's connection id (model bookkeeping, not on the wire).
    ttl : int
        Hops left; a packet looping between routers is dropped at 0.
    packet_id : int
        Assigned by the network when the packet is sent (follows it through NATs).
    """

    proto: str
    src: Addr
    dst: Addr
    payload: bytes = b""
    flags: str = ""
    seq: int = 0
    byte_seq: int = 0
    ack: int = 0
    conn: int | None = None
    ttl: int = _TTL
    packet_id: int = -1

    @property
    def size_bytes(self) -> int:
        """Size on the wire: IPv4 header + UDP or TCP header + payload, bytes."""
        return _IP_HEADER + (_TCP_HEADER if self.proto == "tcp" else _UDP_HEADER) + len(self.payload)


@dataclass(frozen=True)
class TraceRecord:
    """One step of one packet.

    Attributes
    ----------
    time : float
        When the step happened (seconds): entering a link, crossing a NAT, arriving.
    packet_id : int
        Which packet (stable across hops and translations).
    hop : str
        ``"A->B"`` for a link (``A``, ``B`` host, router or segment names), ``"nat NAME"``
        for a translation, ``"host NAME"`` for a delivery, ``"segment NAME"`` or
        ``"router NAME"`` for a routing drop.
    action : {"link", "nat", "deliver", "drop"}
    proto : {"udp", "tcp"}
    src, dst : (str, int)
        Addresses before the step.
    out_src, out_dst : (str, int)
        Addresses after it (differ only for a NAT translation).
    size_bytes : int
        Size on the wire.
    flags : str
        TCP flags (``""`` for UDP).
    arrival : float or None
        For a link: when the packet reaches the far end (None when lost).
    dropped : bool
        The packet went no further at this step (a lost stream segment is sent again:
        see ``attempt``).
    reason : str or None
        Why it was dropped or lost: ``"loss"``, ``"queue"``, ``"no mapping"``,
        ``"filtered (...)"``, ``"port unreachable"``, ``"no listener"``, ``"no route"``, ...
    attempt : int
        Transmission attempt on this link (0 first; > 0 for stream retransmissions).
    payload : bytes
        The packet's payload (not shown in ``repr``).
    """

    time: float
    packet_id: int
    hop: str
    action: str
    proto: str
    src: Addr
    dst: Addr
    out_src: Addr
    out_dst: Addr
    size_bytes: int
    flags: str = ""
    arrival: float | None = None
    dropped: bool = False
    reason: str | None = None
    attempt: int = 0
    payload: bytes = field(default=b"", repr=False)
    seq: int = field(default=0, repr=False)
    byte_seq: int = field(default=0, repr=False)
    ack: int = field(default=0, repr=False)

    def as_row(self) -> dict[str, Any]:
        """A flat dict (addresses as ``"ip:port"``, no payload), e.g. for a DataFrame."""
        return {
            "time": self.time,
            "packet_id": self.packet_id,
            "hop": self.hop,
            "action": self.action,
            "proto": self.proto,
            "src": f"{self.src[0]}:{self.src[1]}",
            "dst": f"{self.dst[0]}:{self.dst[1]}",
            "out_src": f"{self.out_src[0]}:{self.out_src[1]}",
            "out_dst": f"{self.out_dst[0]}:{self.out_dst[1]}",
            "size_bytes": self.size_bytes,
            "flags": self.flags,
            "arrival": self.arrival,
            "dropped": self.dropped,
            "reason": self.reason,
            "attempt": self.attempt,
        }


@dataclass(frozen=True)
class DatagramDelivered:
    """A UDP datagram reached a bound socket.

    Attributes: ``time`` (s), ``host`` (name), ``src`` (sender as seen here, after
    NATs), ``dst`` (the bound address), ``payload``.
    """

    time: float
    host: str
    src: Addr
    dst: Addr
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class StreamAccepted:
    """A listener accepted a connection: ``conn`` is the new (server-side) connection id.

    Attributes: ``time``, ``host``, ``conn``, ``local`` (the listening address),
    ``remote`` (the client as seen here), ``listener`` (the listening address).
    """

    time: float
    host: str
    conn: int
    local: Addr
    remote: Addr
    listener: Addr


@dataclass(frozen=True)
class StreamConnected:
    """An outgoing connection (:meth:`VirtualNetwork.connect`) was accepted by the peer."""

    time: float
    host: str
    conn: int
    local: Addr
    remote: Addr


@dataclass(frozen=True)
class StreamRefused:
    """An outgoing connection failed: ``reason`` is ``"refused"`` (a RST came back,
    after a NAT filter or with no listener) or ``"timed out"``."""

    time: float
    host: str
    conn: int
    reason: str


@dataclass(frozen=True)
class StreamDataReceived:
    """Bytes arrived on a connection, in order."""

    time: float
    host: str
    conn: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class StreamEnded:
    """The peer closed its side (FIN); no more data will arrive on ``conn``."""

    time: float
    host: str
    conn: int


@dataclass(frozen=True)
class StreamReset:
    """The connection was reset (a RST arrived, or retransmissions gave up)."""

    time: float
    host: str
    conn: int
    reason: str


NetworkEvent = Union[
    DatagramDelivered, StreamAccepted, StreamConnected, StreamRefused, StreamDataReceived, StreamEnded, StreamReset
]


# ---------------------------------------------------------------------------------------
# Topology objects
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkConfig:
    """The two directions of a link: ``up`` (towards the segment) and ``down``."""

    up: ChannelConfig = ChannelConfig()
    down: ChannelConfig = ChannelConfig()

    @classmethod
    def coerce(cls, value: Any) -> "LinkConfig":
        """From None (ideal), a :class:`ChannelConfig` (both ways), ``(up, down)``, or a dict.

        A dict is either channel settings for both directions (``{"delay_ms": 10}``) or
        ``{"up": {...}, "down": {...}}``.
        """
        if value is None:
            return cls()
        if isinstance(value, LinkConfig):
            return value
        if isinstance(value, ChannelConfig):
            return cls(value, value)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(_channel_config(value[0]), _channel_config(value[1]))
        if isinstance(value, Mapping):
            if set(value) <= {"up", "down"} and value:
                return cls(_channel_config(value.get("up")), _channel_config(value.get("down")))
            cfg = ChannelConfig.from_dict(value)
            return cls(cfg, cfg)
        raise ParameterError(
            "link must be None, a ChannelConfig, an (up, down) pair or a dict of channel settings, "
            f"got {type(value).__name__}"
        )


def _channel_config(value: Any) -> ChannelConfig:
    if value is None:
        return ChannelConfig()
    if isinstance(value, ChannelConfig):
        return value
    if isinstance(value, Mapping):
        return ChannelConfig.from_dict(value)
    raise ParameterError(f"a link direction must be a ChannelConfig or a dict of channel settings, got {type(value).__name__}")


class _Link:
    def __init__(self, name: str, seg_name: str, config: LinkConfig, seed: np.random.SeedSequence) -> None:
        s_up, s_down = seed.spawn(2)
        self.config = config
        self.up = Channel(config.up, seed=s_up)
        self.down = Channel(config.down, seed=s_down)
        self.up_name = f"{name}->{seg_name}"
        self.down_name = f"{seg_name}->{name}"


class _Segment:
    def __init__(self, name: str, subnet: ipaddress.IPv4Network | None, owner: "Router | None") -> None:
        self.name = name
        self.subnet = subnet
        self.owner = owner
        self.nodes: dict[str, Host | Router] = {}  # address -> host or child router (WAN side)
        self.children: list[Router] = []
        # address realm bookkeeping (kept on the realm's root segment)
        self.realm_root: _Segment = self
        self.realm_subnets: list[ipaddress.IPv4Network] = []
        self.realm_addresses: set[str] = set()

    def routes(self) -> list[tuple[ipaddress.IPv4Network, Router]]:
        out: list[tuple[ipaddress.IPv4Network, Router]] = []
        for child in self.children:
            if not child.translating:
                for net in child.routed_subnets():
                    out.append((net, child))
        out.sort(key=lambda r: -r[0].prefixlen)
        return out


class Host:
    """A host on the virtual network (read-only view; build with :meth:`VirtualNetwork.add_host`).

    Attributes
    ----------
    name : str
    address : str
        Its IPv4 address.
    segment : str
        The segment it is attached to (``"internet"`` or a router's name).
    link : LinkConfig
    """

    def __init__(self, name: str, address: str, segment: _Segment, link: _Link, rng: np.random.Generator) -> None:
        self.name = name
        self.address = address
        self._segment = segment
        self._link = link
        self.udp_bound: set[Addr] = set()
        self.listeners: set[Addr] = set()
        self.conns: dict[tuple[Addr, Addr], _Conn] = {}
        self._next_port = {"udp": int(rng.integers(_EPHEMERAL[0], 60000)), "tcp": int(rng.integers(_EPHEMERAL[0], 60000))}

    @property
    def segment(self) -> str:
        return self._segment.name

    @property
    def link(self) -> LinkConfig:
        return self._link.config

    def _port_free(self, proto: str, port: int) -> bool:
        if proto == "udp":
            return (self.address, port) not in self.udp_bound
        return (self.address, port) not in self.listeners and not any(k[0][1] == port for k in self.conns)

    def _ephemeral(self, proto: str) -> int | None:
        lo, hi = _EPHEMERAL
        span = hi - lo + 1
        start = self._next_port[proto]
        for i in range(span):
            p = lo + (start - lo + i) % span
            if self._port_free(proto, p):
                self._next_port[proto] = lo + (p - lo + 1) % span
                return p
        return None

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address!r}, segment={self.segment!r})"


class Router:
    """A router, NAT or not (read-only view; build with :meth:`VirtualNetwork.add_router`).

    Attributes
    ----------
    name : str
    subnet : ipaddress.IPv4Network
        Its inside segment.
    lan_address : str
        Its address on the inside segment (the gateway).
    wan_address : str
        Its address on the parent segment (the NAT's public address).
    parent : str
        Parent segment name.
    nat : Nat or None
        The NAT (None for a plain router; also None for the ``open`` preset).
    link : LinkConfig
        Its WAN link.
    """

    def __init__(
        self,
        name: str,
        subnet: ipaddress.IPv4Network,
        lan_address: str,
        wan_address: str,
        parent: _Segment,
        nat: Nat | None,
        link: _Link,
    ) -> None:
        self.name = name
        self.subnet = subnet
        self.lan_address = lan_address
        self.wan_address = wan_address
        self._parent = parent
        self.nat = nat
        self._link = link
        self._inside = _Segment(name, subnet, self)
        #: static port forwards: (proto, external port) -> internal (ip, port)
        self.forwards: dict[tuple[str, int], Addr] = {}
        self._forwarded_from: dict[tuple[str, Addr], int] = {}  # (proto, internal) -> external port

    @property
    def translating(self) -> bool:
        return self.nat is not None

    @property
    def parent(self) -> str:
        return self._parent.name

    @property
    def link(self) -> LinkConfig:
        return self._link.config

    def routed_subnets(self) -> list[ipaddress.IPv4Network]:
        """Subnets reachable through this router from its parent (none for a NAT)."""
        if self.translating:
            return []
        out = [self.subnet]
        for c in self._inside.children:
            out += c.routed_subnets()
        return out

    def __repr__(self) -> str:
        kind = "plain" if self.nat is None else (self.nat.config.classic_name or "nat")
        return f"Router({self.name!r}, {kind}, subnet={str(self.subnet)!r}, wan={self.wan_address!r})"


@dataclass
class _Conn:
    id: int
    host: Host
    local: Addr
    remote: Addr
    state: str  # "syn-sent" | "established"
    peer: int | None = None
    out_seq: int = 1
    out_bytes: int = 0
    in_next: int = 0
    in_bytes: int = 0
    in_buf: dict[int, Packet] = field(default_factory=dict)
    local_fin: bool = False
    remote_fin: bool = False


@functools.lru_cache(maxsize=4096)
def _parse_ip(value: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value)


def _ip(value: Any, what: str) -> str:
    try:
        a = _parse_ip(value)
    except (ValueError, TypeError):
        raise ParameterError(f"{what} must be an IPv4 address such as '192.0.2.10', got {value!r}") from None
    return value if str(a) == value else str(a)


def _evolve(p: Packet, **changes: Any) -> Packet:
    """``dataclasses.replace`` for the hot path (no re-validation, several times faster)."""
    q = Packet.__new__(Packet)
    q.__dict__.update(p.__dict__)
    q.__dict__.update(changes)
    return q


def _addr(value: Any, what: str) -> Addr:
    if (
        not isinstance(value, (tuple, list))
        or len(value) < 2
        or isinstance(value[1], bool)
        or not isinstance(value[1], (int, np.integer))
        or not 0 <= value[1] <= 65535
    ):
        raise ParameterError(f"{what} must be an (IPv4 address, port 0..65535) tuple, got {value!r}")
    return (_ip(value[0], what), int(value[1]))


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value) or "->" in value:
        raise ParameterError(f"{what} must be a non-empty name without spaces or '->', got {value!r}")
    return value


def _time(now: Any) -> float:
    try:
        t = float(now)
    except (TypeError, ValueError):
        raise ParameterError(f"now must be a time in seconds, got {now!r}") from None
    if not math.isfinite(t):
        raise ParameterError(f"now must be a finite time in seconds, got {now!r}")
    return t


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------


class VirtualNetwork:
    """Hosts, routers (NAT or not) and impaired links, driven by ``now`` (sans-IO).

    Parameters
    ----------
    seed : int, optional
        Root of all randomness (link loss/jitter, NAT ports, ephemeral ports). Each
        link, NAT and host derives its own stream from the seed and its *name*, so
        adding a host does not change what happens on other links.
    connect_timeout_s : float, optional
        A stream connect with no answer fails after this many seconds (default 20).
    trace : bool, optional
        Keep :attr:`trace` (default True; turn off for very long runs).

    Attributes
    ----------
    trace : list of TraceRecord
        Every step of every packet, in processing order.

    Examples
    --------
    >>> net = VirtualNetwork(seed=0)
    >>> _ = net.add_host("a", "192.0.2.1")
    >>> _ = net.add_host("b", "192.0.2.2", link={"delay_ms": 20})
    >>> _ = net.bind("b", ("192.0.2.2", 9))
    >>> _ = net.send_datagram("a", ("192.0.2.1", 1000), ("192.0.2.2", 9), b"x", now=0.0)
    >>> [round(e.time, 3) for e in net.advance(1.0)]
    [0.02]
    """

    def __init__(self, *, seed: int = 0, connect_timeout_s: float = 20.0, trace: bool = True) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        try:
            self.connect_timeout_s = float(connect_timeout_s)
        except (TypeError, ValueError):
            raise ParameterError(f"connect_timeout_s must be a number of seconds, got {connect_timeout_s!r}") from None
        if not math.isfinite(self.connect_timeout_s) or self.connect_timeout_s <= 0:
            raise ParameterError(f"connect_timeout_s must be above 0 s, got {connect_timeout_s!r}")
        self._trace_on = bool(trace)
        self.trace: list[TraceRecord] = []
        self._internet = _Segment(INTERNET, None, None)
        self._segments: dict[str, _Segment] = {INTERNET: self._internet}
        self._hosts: dict[str, Host] = {}
        self._routers: dict[str, Router] = {}
        self._queue: list[tuple[float, int, str, tuple]] = []
        self._order = itertools.count()
        self._packet_ids = itertools.count()
        self._conn_ids = itertools.count(1)
        self._conns: dict[int, _Conn] = {}
        self._outbox: list[NetworkEvent] = []
        self._now = -math.inf

    # --- building -------------------------------------------------------------------
    def _seed_for(self, kind: str, name: str) -> np.random.SeedSequence:
        return np.random.SeedSequence([self.seed, zlib.crc32(f"{kind}:{name}".encode())])

    def _check_new_name(self, name: str) -> None:
        if name in self._hosts or name in self._routers or name == INTERNET:
            raise ParameterError(f"name {name!r} is already used in this network; give each host and router its own name")

    def _segment(self, name: Any) -> _Segment:
        if name not in self._segments:
            known = ", ".join(repr(s) for s in self._segments)
            raise ParameterError(f"unknown router {name!r}: attach to one of {known} (add the router first)")
        return self._segments[name]

    def _claim_address(self, seg: _Segment, address: str, what: str) -> None:
        a = ipaddress.IPv4Address(address)
        if seg.subnet is not None:
            if a not in seg.subnet:
                raise ParameterError(f"{what} {address} is not in {seg.name!r}'s subnet {seg.subnet}: pick an address inside it")
            if a in (seg.subnet.network_address, seg.subnet.broadcast_address) and seg.subnet.prefixlen < 31:
                raise ParameterError(f"{what} {address} is the network or broadcast address of {seg.subnet}: pick a host address")
        realm = seg.realm_root
        if realm is self._internet and not is_public_address(address):
            raise ParameterError(
                f"{what} {address} is a private address on the public internet, so nothing could reach it: "
                "put it behind a NAT router or use a public address (e.g. 203.0.113.0/24)"
            )
        if address in realm.realm_addresses:
            raise ParameterError(f"{what} {address} is already used in the address realm of {realm.name!r}: addresses must be unique")
        if seg.subnet is None:
            for net in realm.realm_subnets:
                if a in net:
                    raise ParameterError(f"{what} {address} lies in the routed subnet {net}: attach it to that router instead")
        realm.realm_addresses.add(address)

    def add_router(
        self,
        name: str,
        *,
        subnet: str,
        wan_address: str,
        nat: NatConfig | str | Mapping[str, Any] | None = None,
        parent: str = INTERNET,
        link: Any = None,
        lan_address: str | None = None,
    ) -> Router:
        """Add a router between ``parent`` and a new inside segment named ``name``.

        Parameters
        ----------
        name : str
            Unique name; also the name of its inside segment (attach hosts with
            ``router=name``).
        subnet : str
            Inside subnet, e.g. ``"192.168.1.0/24"``.
        wan_address : str
            Its address on the parent segment: the NAT's public address.
        nat : NatConfig, str, dict or None
            NAT behaviour: a preset name (``"full-cone"``, ``"symmetric"``, ...), a
            :class:`~voicelab.net.nat.NatConfig` or its dict; None or ``"open"`` for a
            plain router (then ``subnet`` must be routable where it is attached).
        parent : str, optional
            Segment it is attached to: ``"internet"`` (default) or another router's
            name (a NAT behind a NAT).
        link : None, ChannelConfig, (up, down) or dict, optional
            Its WAN link (see :class:`LinkConfig`); None is an ideal link.
        lan_address : str, optional
            Gateway address on the inside (default: the subnet's first host address).

        Returns
        -------
        Router

        Raises
        ------
        ParameterError
            Unknown parent or NAT preset, bad or overlapping subnet, address outside its
            subnet, private address on the internet, name already used.
        """
        name = _name(name, "router name")
        self._check_new_name(name)
        parent_seg = self._segment(parent)
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
        except (ValueError, TypeError) as exc:
            raise ParameterError(f"router {name!r}: subnet must be an IPv4 network such as '192.168.1.0/24', got {subnet!r} ({exc})") from None
        if net.num_addresses < 4:
            raise ParameterError(f"router {name!r}: subnet {net} is too small; use a /30 or larger")
        nat_cfg = None if nat is None else NatConfig.coerce(nat)
        translating = nat_cfg is not None and nat_cfg.translate
        wan = _ip(wan_address, f"router {name!r} wan_address")
        lan = _ip(lan_address, f"router {name!r} lan_address") if lan_address is not None else str(next(net.hosts()))
        if ipaddress.IPv4Address(lan) not in net:
            raise ParameterError(f"router {name!r}: lan_address {lan} is not in its subnet {net}")
        realm = parent_seg.realm_root
        # overlap checks
        if translating:
            seg: _Segment | None = parent_seg
            while seg is not None:
                r = seg.realm_root
                for other in r.realm_subnets:
                    if other.overlaps(net):
                        raise ParameterError(
                            f"router {name!r}: inside subnet {net} overlaps {other} outside it, so hosts inside could not "
                            "reach those addresses: pick another subnet"
                        )
                if any(ipaddress.IPv4Address(a) in net for a in r.realm_addresses):
                    raise ParameterError(f"router {name!r}: inside subnet {net} contains addresses used outside it: pick another subnet")
                seg = r.owner._parent if r.owner is not None else None
        else:
            if realm is self._internet and not is_public_address(net):
                raise ParameterError(
                    f"router {name!r}: a plain (non-NAT) router on the internet cannot route the private subnet {net}: "
                    "give it a NAT (nat='full-cone', ...) or a public subnet"
                )
            for other in realm.realm_subnets:
                if other.overlaps(net):
                    raise ParameterError(f"router {name!r}: subnet {net} overlaps {other} in the same address realm: pick another subnet")
            if any(ipaddress.IPv4Address(a) in net for a in realm.realm_addresses):
                raise ParameterError(f"router {name!r}: subnet {net} contains addresses already in use: pick another subnet")
        link_cfg = LinkConfig.coerce(link)
        self._claim_address(parent_seg, wan, f"router {name!r} wan_address")
        nat_obj = Nat(nat_cfg, wan, seed=self._seed_for("nat", name), name=name) if translating else None
        router = Router(name, net, lan, wan, parent_seg, nat_obj, _Link(name, parent_seg.name, link_cfg, self._seed_for("link", name)))
        inside = router._inside
        if translating:
            inside.realm_root = inside
            inside.realm_subnets = [net]
        else:
            inside.realm_root = realm
            realm.realm_subnets.append(net)
        inside.realm_root.realm_addresses.add(lan)
        parent_seg.nodes[wan] = router
        parent_seg.children.append(router)
        self._segments[name] = inside
        self._routers[name] = router
        return router

    def add_host(self, name: str, address: str, *, router: str = INTERNET, link: Any = None) -> Host:
        """Add a host on the segment of ``router`` (default: the public internet).

        Parameters
        ----------
        name : str
            Unique name.
        address : str
            Its IPv4 address (inside the router's subnet; public on the internet).
        router : str, optional
            ``"internet"`` (default) or a router's name.
        link : None, ChannelConfig, (up, down) or dict, optional
            Its access link (see :class:`LinkConfig`); None is an ideal link.

        Returns
        -------
        Host

        Raises
        ------
        ParameterError
            Unknown router, address outside the subnet or already used, private address
            on the internet, name already used.
        """
        name = _name(name, "host name")
        self._check_new_name(name)
        seg = self._segment(router)
        address = _ip(address, f"host {name!r} address")
        link_cfg = LinkConfig.coerce(link)
        self._claim_address(seg, address, f"host {name!r} address")
        host = Host(name, address, seg, _Link(name, seg.name, link_cfg, self._seed_for("link", name)),
                    np.random.default_rng(self._seed_for("host", name)))
        seg.nodes[address] = host
        self._hosts[name] = host
        return host

    def add_port_forward(self, router: str, proto: str, external_port: int, internal: Addr) -> None:
        """Forward ``external_port`` of a NAT router's public address to an inside endpoint.

        A static mapping, as a cloud provider's 1:1 NAT or a home router's "port
        forwarding" page makes: packets to ``(wan_address, external_port)`` reach
        ``internal`` from any source (no filtering), and packets that ``internal`` sends
        leave with that public address and port (so replies to a forwarded request come
        from the address the requester sent to, as conntrack does). Other endpoints are
        translated by the NAT as usual; the NAT never hands the forwarded port to them.

        Parameters
        ----------
        router : str
            A NAT router (a plain router needs no forward).
        proto : {"udp", "tcp"}
        external_port : int
            1..65535, not already forwarded or mapped.
        internal : (str, int)
            An address of the router's inside subnet and a port.

        Raises
        ------
        ParameterError
            Unknown or non-NAT router, bad protocol or port, address outside the
            router's subnet, port already forwarded or in use by a mapping.
        """
        r = self._routers.get(router)
        if r is None:
            raise ParameterError(f"unknown router {router!r}: routers are {', '.join(map(repr, self._routers)) or 'none yet'}")
        if r.nat is None:
            raise ParameterError(f"router {router!r} does not translate (no NAT): its inside is reachable without a forward")
        if proto not in ("udp", "tcp"):
            raise ParameterError(f"port forward protocol must be 'udp' or 'tcp', got {proto!r}")
        if isinstance(external_port, bool) or not isinstance(external_port, (int, np.integer)) or not 1 <= external_port <= 65535:
            raise ParameterError(f"external_port must be an int in 1..65535, got {external_port!r}")
        ip, port = _addr(internal, "forwarded internal address")
        if port == 0 or _parse_ip(ip) not in r.subnet:
            raise ParameterError(f"forwarded address {ip}:{port} must be inside {router!r}'s subnet {r.subnet} with a port > 0")
        key = (proto, int(external_port))
        if key in r.forwards or key in r.nat._by_port:
            raise ParameterError(f"{proto.upper()} port {external_port} of router {router!r} is already forwarded or mapped")
        r.forwards[key] = (ip, port)
        r._forwarded_from[(proto, (ip, port))] = int(external_port)
        # keep the NAT from allocating this port to a dynamic mapping
        r.nat._by_port[key] = NatMapping(proto, (ip, port), (r.wan_address, int(external_port)), ("forward",) + key,
                                         -math.inf, math.inf)

    @classmethod
    def from_dict(cls, description: Mapping[str, Any], *, seed: int | None = None) -> "VirtualNetwork":
        """Build a network from a plain description (what :meth:`from_yaml` reads).

        Parameters
        ----------
        description : dict
            ``{"seed": int (optional), "routers": {name: {...}}, "hosts": {name: {...}}}``.
            A router entry has the keyword arguments of :meth:`add_router` (``subnet``,
            ``wan_address``, ``nat``, ``parent``, ``link``, ``lan_address``) and
            optionally ``forwards``: ``[{"proto": "udp", "port": 5060, "to": [ip, port]}]``
            (see :meth:`add_port_forward`); a host
            entry has ``address`` and optionally ``router`` and ``link``. Routers may be
            listed in any order (parents are added first).
        seed : int, optional
            Overrides the description's seed.

        Raises
        ------
        ParameterError
            Unknown keys, unknown parents, cycles, and every check of
            :meth:`add_router` / :meth:`add_host`.

        Examples
        --------
        >>> net = VirtualNetwork.from_dict({
        ...     "routers": {"home": {"nat": "symmetric", "subnet": "192.168.1.0/24",
        ...                          "wan_address": "198.51.100.10"}},
        ...     "hosts": {"caller": {"address": "192.168.1.10", "router": "home"},
        ...               "stun": {"address": "203.0.113.10"}}})
        >>> sorted(net.hosts)
        ['caller', 'stun']
        """
        if not isinstance(description, Mapping):
            raise ParameterError(f"network description must be a mapping, got {type(description).__name__}")
        unknown = set(description) - {"seed", "routers", "hosts", "connect_timeout_s"}
        if unknown:
            raise ParameterError(f"unknown network key(s) {sorted(unknown)}: valid keys are seed, routers, hosts, connect_timeout_s")
        kwargs: dict[str, Any] = {"seed": seed if seed is not None else description.get("seed", 0)}
        if "connect_timeout_s" in description:
            kwargs["connect_timeout_s"] = description["connect_timeout_s"]
        net = cls(**kwargs)
        routers = description.get("routers") or {}
        hosts = description.get("hosts") or {}
        for what, table in (("routers", routers), ("hosts", hosts)):
            if not isinstance(table, Mapping):
                raise ParameterError(f"network {what} must be a mapping of name -> settings, got {type(table).__name__}")
        r_keys = {"subnet", "wan_address", "nat", "parent", "link", "lan_address", "forwards"}
        pending = dict(routers)
        while pending:
            progressed = False
            for rname, spec in list(pending.items()):
                if not isinstance(spec, Mapping):
                    raise ParameterError(f"router {rname!r}: settings must be a mapping, got {type(spec).__name__}")
                bad = set(spec) - r_keys
                if bad:
                    raise ParameterError(f"router {rname!r}: unknown key(s) {sorted(bad)}; valid keys are {sorted(r_keys)}")
                parent = spec.get("parent", INTERNET)
                if parent in pending and parent != rname:
                    continue
                if parent not in net._segments:
                    raise ParameterError(
                        f"router {rname!r}: parent {parent!r} is not a router of this network, so it would be unreachable"
                    )
                missing = {"subnet", "wan_address"} - set(spec)
                if missing:
                    raise ParameterError(f"router {rname!r}: missing {sorted(missing)}")
                spec = dict(spec)
                forwards = spec.pop("forwards", None) or []
                net.add_router(rname, **spec)
                if not isinstance(forwards, (list, tuple)):
                    raise ParameterError(f"router {rname!r}: forwards must be a list of {{proto, port, to: [ip, port]}}")
                for fw in forwards:
                    if not isinstance(fw, Mapping) or set(fw) != {"proto", "port", "to"}:
                        raise ParameterError(f"router {rname!r}: each forward needs exactly proto, port and to, got {fw!r}")
                    net.add_port_forward(rname, fw["proto"], fw["port"], tuple(fw["to"]) if isinstance(fw["to"], list) else fw["to"])
                del pending[rname]
                progressed = True
            if not progressed:
                raise ParameterError(f"routers {sorted(pending)} are parents of each other (a cycle): the topology must be a tree")
        h_keys = {"address", "router", "link"}
        for hname, spec in hosts.items():
            if not isinstance(spec, Mapping):
                raise ParameterError(f"host {hname!r}: settings must be a mapping, got {type(spec).__name__}")
            bad = set(spec) - h_keys
            if bad:
                raise ParameterError(f"host {hname!r}: unknown key(s) {sorted(bad)}; valid keys are {sorted(h_keys)}")
            if "address" not in spec:
                raise ParameterError(f"host {hname!r}: missing 'address'")
            net.add_host(hname, spec["address"], router=spec.get("router", INTERNET), link=spec.get("link"))
        return net

    @classmethod
    def from_yaml(cls, source: str | Path, *, seed: int | None = None) -> "VirtualNetwork":
        """Build a network from YAML text or a ``.yaml``/``.yml`` file (see :meth:`from_dict`).

        Examples
        --------
        >>> net = VirtualNetwork.from_yaml('''
        ... routers:
        ...   home: {nat: full-cone, subnet: 192.168.1.0/24, wan_address: 198.51.100.10}
        ... hosts:
        ...   caller: {address: 192.168.1.10, router: home, link: {delay_ms: 5}}
        ... ''')
        >>> net.hosts["caller"].link.up.delay_ms
        5.0
        """
        import yaml

        text: str
        if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml"))):
            try:
                text = Path(source).read_text()
            except OSError as exc:
                raise ParameterError(f"cannot read network description {str(source)!r}: {exc.strerror}") from None
        elif isinstance(source, str):
            text = source
        else:
            raise ParameterError(f"source must be YAML text or a path, got {type(source).__name__}")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ParameterError(f"network description is not valid YAML: {str(exc).splitlines()[0]}") from None
        return cls.from_dict(data or {}, seed=seed)

    # --- read-only views --------------------------------------------------------------
    @property
    def hosts(self) -> dict[str, Host]:
        """Host name -> :class:`Host` (a copy)."""
        return dict(self._hosts)

    @property
    def routers(self) -> dict[str, Router]:
        """Router name -> :class:`Router` (a copy)."""
        return dict(self._routers)

    @property
    def now(self) -> float:
        """The latest ``now`` given to :meth:`advance` (``-inf`` before the first)."""
        return self._now

    def host(self, name: str) -> Host:
        """The host called ``name`` (:class:`ParameterError` if there is none)."""
        try:
            return self._hosts[name]
        except (KeyError, TypeError):
            raise ParameterError(f"unknown host {name!r}: hosts are {', '.join(map(repr, self._hosts)) or 'none yet'}") from None

    def host_addresses(self, name: str) -> list[str]:
        """The addresses of host ``name`` (one today)."""
        return [self.host(name).address]

    def resolve(self, name: str) -> str | None:
        """A host name's address (a tiny DNS for the virtual network), or None."""
        h = self._hosts.get(name)
        return h.address if h is not None else None

    def describe(self) -> str:
        """The topology as indented text (one line per router and host)."""
        lines = [INTERNET]

        def walk(seg: _Segment, depth: int) -> None:
            pad = "  " * depth
            for node in sorted(seg.nodes.values(), key=lambda n: n.name):
                if isinstance(node, Host):
                    lines.append(f"{pad}host {node.name} {node.address}")
                else:
                    kind = "plain router" if node.nat is None else f"NAT {node.nat.config.classic_name or 'custom'}"
                    lines.append(f"{pad}{kind} {node.name} wan {node.wan_address} inside {node.subnet}")
                    walk(node._inside, depth + 1)

        walk(self._internet, 1)
        return "\n".join(lines)

    # --- sockets --------------------------------------------------------------------------
    def _local(self, host: Host, addr: Any, proto: str) -> Addr:
        if addr is None:
            addr = (host.address, 0)
        elif isinstance(addr, (tuple, list)) and len(addr) >= 2 and addr[0] in (None, "", "0.0.0.0"):
            addr = (host.address, addr[1])
        ip, port = _addr(addr, f"host {host.name!r} local address")
        if ip != host.address:
            raise ParameterError(f"host {host.name!r} has no address {ip} (its address is {host.address})")
        if port == 0:
            p = host._ephemeral(proto)
            if p is None:
                raise ParameterError(f"host {host.name!r} has no free {proto} port left")
            port = p
        return (ip, port)

    def bind(self, host: str, addr: Any = None) -> Addr:
        """Open a UDP socket on ``host`` at ``addr`` (port 0 or None: a free port).

        Returns
        -------
        (str, int)
            The bound address.

        Raises
        ------
        ParameterError
            Unknown host, an address the host does not have, or the port is taken.
        """
        h = self.host(host)
        local = self._local(h, addr, "udp")
        if local in h.udp_bound:
            raise ParameterError(f"UDP {local[0]}:{local[1]} is already bound on host {host!r}")
        h.udp_bound.add(local)
        return local

    def unbind(self, host: str, addr: Addr) -> None:
        """Close the UDP socket at ``addr`` on ``host`` (no error if it is not bound)."""
        self.host(host).udp_bound.discard(tuple(addr))  # type: ignore[arg-type]

    def listen(self, host: str, addr: Any = None) -> Addr:
        """Listen for streams on ``host`` at ``addr`` (port 0 or None: a free port).

        Raises
        ------
        ParameterError
            Unknown host, an address the host does not have, or the port is taken.
        """
        h = self.host(host)
        local = self._local(h, addr, "tcp")
        if local in h.listeners:
            raise ParameterError(f"TCP {local[0]}:{local[1]} is already listening on host {host!r}")
        h.listeners.add(local)
        return local

    def unlisten(self, host: str, addr: Addr) -> None:
        """Stop listening at ``addr`` (open connections stay)."""
        self.host(host).listeners.discard(tuple(addr))  # type: ignore[arg-type]

    # --- sending --------------------------------------------------------------------------
    def _check_now(self, now: Any) -> float:
        t = _time(now)
        if t < self._now - 1e-9:
            raise ParameterError(f"time went backwards: now={t!r} s after advance({self._now!r}); pass nondecreasing times")
        return max(t, self._now)

    def _push(self, t: float, kind: str, *args: Any) -> None:
        heapq.heappush(self._queue, (t, next(self._order), kind, args))

    def send(self, host: str, packet: Packet, now: float) -> int:
        """Queue a UDP packet leaving ``host`` at ``now``; return its packet id.

        Parameters
        ----------
        host : str
        packet : Packet
            ``proto="udp"``; ``src`` must be the host's address (any port).
        now : float
            Seconds, not earlier than the last :meth:`advance`.

        Raises
        ------
        ParameterError
            Unknown host, wrong source address, non-UDP packet (use :meth:`connect` and
            :meth:`stream_send` for streams), payload over 65507 bytes, time going back.
        """
        if not isinstance(packet, Packet) or packet.proto != "udp":
            raise ParameterError("send() takes a Packet with proto='udp'; use connect()/stream_send() for streams")
        return self.send_datagram(host, packet.src, packet.dst, packet.payload, now)

    def send_datagram(self, host: str, src: Addr, dst: Addr, payload: bytes, now: float) -> int:
        """Queue a UDP datagram from ``src`` on ``host`` to ``dst`` at ``now``; return its packet id.

        See :meth:`send` for the errors.
        """
        h = self.host(host)
        src = _addr(src, "source")
        dst = _addr(dst, "destination")
        if src[0] != h.address:
            raise ParameterError(f"host {host!r} cannot send from {src[0]} (its address is {h.address})")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ParameterError(f"payload must be bytes, got {type(payload).__name__}")
        payload = bytes(payload)
        if len(payload) > _MAX_UDP_PAYLOAD:
            raise ParameterError(f"a UDP payload of {len(payload)} bytes does not fit in IPv4 (max {_MAX_UDP_PAYLOAD})")
        t = self._check_now(now)
        pid = next(self._packet_ids)
        self._push(t, "send", h, Packet("udp", src, dst, payload, packet_id=pid))
        return pid

    def connect(self, host: str, dst: Addr, now: float, *, local_addr: Any = None) -> int:
        """Open a stream from ``host`` to ``dst``; return the connection id.

        The outcome arrives later from :meth:`advance`: :class:`StreamConnected`, or
        :class:`StreamRefused` (a RST came back, or ``connect_timeout_s`` passed).

        Raises
        ------
        ParameterError
            Unknown host, a bad address, no free port, time going back.
        """
        h = self.host(host)
        dst = _addr(dst, "destination")
        t = self._check_now(now)
        local = self._local(h, local_addr, "tcp")
        if (local, dst) in h.conns:
            raise ParameterError(f"host {host!r} already has a connection {local} -> {dst}")
        conn = _Conn(next(self._conn_ids), h, local, dst, "syn-sent")
        h.conns[(local, dst)] = conn
        self._conns[conn.id] = conn
        self._segment_out(conn, "S", b"", t, seq=0)
        self._push(t + self.connect_timeout_s, "timeout", conn.id)
        return conn.id

    def connection(self, conn: int) -> dict[str, Any]:
        """What is known about connection ``conn``: host, local, remote, state."""
        c = self._conn(conn)
        return {"host": c.host.name, "local": c.local, "remote": c.remote, "state": c.state,
                "local_fin": c.local_fin, "remote_fin": c.remote_fin}

    def _conn(self, conn: Any) -> _Conn:
        c = self._conns.get(conn)
        if c is None:
            raise ParameterError(f"unknown or closed connection {conn!r}")
        return c

    def stream_send(self, conn: int, data: bytes, now: float) -> None:
        """Queue ``data`` on an established connection (cut into segments of :data:`MSS_BYTES`).

        Raises
        ------
        ParameterError
            Unknown connection, not yet connected, already closed by us, time going back.
        """
        c = self._conn(conn)
        if c.state != "established":
            raise ParameterError(f"connection {conn} is not connected yet: wait for StreamConnected")
        if c.local_fin:
            raise ParameterError(f"connection {conn} was closed on this side: no more data can be sent")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ParameterError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        t = self._check_now(now)
        for i in range(0, len(data), MSS_BYTES):
            self._segment_out(c, "PA", data[i : i + MSS_BYTES], t)

    def stream_close(self, conn: int, now: float) -> None:
        """Close our side of ``conn`` (FIN after the data already queued).

        No error if it is already closed or gone.
        """
        c = self._conns.get(conn)
        t = self._check_now(now)
        if c is None or c.local_fin:
            return
        if c.state != "established":
            self.stream_abort(conn, now)
            return
        c.local_fin = True
        self._segment_out(c, "FA", b"", t)
        if c.remote_fin:
            self._forget(c)

    def stream_abort(self, conn: int, now: float) -> None:
        """Reset ``conn`` (RST) and forget it at once. No error if it is already gone."""
        c = self._conns.get(conn)
        t = self._check_now(now)
        if c is None:
            return
        self._forget(c)
        pid = next(self._packet_ids)
        self._push(t, "send", c.host, Packet("tcp", c.local, c.remote, flags="R", byte_seq=c.out_bytes, packet_id=pid))

    def _segment_out(self, c: _Conn, flags: str, data: bytes, t: float, *, seq: int | None = None) -> None:
        if seq is None:
            seq = c.out_seq
            c.out_seq += 1
        ack = c.in_bytes if "A" in flags else 0
        pkt = Packet("tcp", c.local, c.remote, data, flags=flags, seq=seq, byte_seq=c.out_bytes, ack=ack,
                     conn=c.id, packet_id=next(self._packet_ids))
        c.out_bytes += len(data) + (1 if ("S" in flags or "F" in flags) else 0)
        self._push(t, "send", c.host, pkt)

    def _forget(self, c: _Conn) -> None:
        self._conns.pop(c.id, None)
        if c.host.conns.get((c.local, c.remote)) is c:
            del c.host.conns[(c.local, c.remote)]

    # --- running --------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When :meth:`advance` next has something to do (seconds), or None if idle."""
        if self._outbox:
            return self._outbox[0].time
        return self._queue[0][0] if self._queue else None

    def advance(self, now: float) -> list[NetworkEvent]:
        """Process everything due up to ``now``; return the events that reached hosts.

        Parameters
        ----------
        now : float
            Seconds, nondecreasing across calls.

        Returns
        -------
        list of NetworkEvent
            In time order; each event carries its own ``time`` (<= ``now``).
        """
        t_now = self._check_now(now)
        self._now = t_now
        while self._queue and self._queue[0][0] <= t_now:
            t, _, kind, args = heapq.heappop(self._queue)
            getattr(self, f"_ev_{kind}")(t, *args)
        out, self._outbox = self._outbox, []
        return out

    def run(self, until: float) -> list[NetworkEvent]:
        """:meth:`advance` to ``until`` (for scripts and tests that need no replies)."""
        return self.advance(until)

    # --- event handlers -----------------------------------------------------------------
    def _record(self, t: float, p: Packet, hop: str, action: str, *, out: Packet | None = None,
                arrival: float | None = None, reason: str | None = None, attempt: int = 0, dropped: bool = False) -> None:
        if not self._trace_on:
            return
        o = out if out is not None else p
        # the frozen dataclass's __init__ sets each field through object.__setattr__:
        # filling __dict__ directly is several times faster on this hot path
        rec = TraceRecord.__new__(TraceRecord)
        rec.__dict__.update(
            time=t, packet_id=p.packet_id, hop=hop, action=action, proto=p.proto, src=p.src, dst=p.dst,
            out_src=o.src, out_dst=o.dst, size_bytes=p.size_bytes, flags=p.flags, arrival=arrival,
            dropped=dropped or reason is not None and action != "link", reason=reason, attempt=attempt,
            payload=p.payload, seq=p.seq, byte_seq=p.byte_seq, ack=p.ack,
        )
        self.trace.append(rec)

    def _drop(self, t: float, p: Packet, hop: str, reason: str) -> None:
        self._record(t, p, hop, "drop", reason=reason, dropped=True)

    def _transmit(self, t: float, channel: Channel, hop: str, p: Packet, target: tuple, attempt: int = 0) -> None:
        arrivals = channel.transmit(t, p.size_bytes)
        if not arrivals:
            reason = channel.fates[-1].reason or "loss"
            final = p.proto != "tcp" or attempt >= _MAX_RETRANSMISSIONS
            self._record(t, p, hop, "link", reason=reason, attempt=attempt, dropped=final)
            if p.proto == "tcp":
                if attempt < _MAX_RETRANSMISSIONS:
                    rto = min((_RTO_SYN_S if "S" in p.flags else _RTO_S) * 2**attempt, _RTO_MAX_S)
                    self._push(t + rto, "retransmit", channel, hop, p, target, attempt + 1)
                else:
                    self._give_up(t, p)
            return
        self._record(t, p, hop, "link", arrival=arrivals[0], attempt=attempt)
        if p.proto == "tcp":
            arrivals = arrivals[:1]  # a duplicated segment would be discarded by the receiver
        for a in arrivals:
            self._push(a, *target, p)

    def _ev_retransmit(self, t: float, channel: Channel, hop: str, p: Packet, target: tuple, attempt: int) -> None:
        self._transmit(t, channel, hop, p, target, attempt)

    def _give_up(self, t: float, p: Packet) -> None:
        c = self._conns.get(p.conn) if p.conn is not None else None
        for conn in (c, self._conns.get(c.peer) if c is not None and c.peer is not None else None):
            if conn is None:
                continue
            self._forget(conn)
            if conn.state == "syn-sent":
                self._outbox.append(StreamRefused(t, conn.host.name, conn.id, "timed out"))
            else:
                self._outbox.append(StreamReset(t, conn.host.name, conn.id, "retransmission limit"))

    def _ev_send(self, t: float, h: Host, p: Packet) -> None:
        if p.dst[0] == h.address:  # to itself: no link crossed
            self._push(t, "host", h, p)
            return
        self._transmit(t, h._link.up, h._link.up_name, p, ("segment", h._segment))

    def _ev_timeout(self, t: float, conn_id: int) -> None:
        c = self._conns.get(conn_id)
        if c is not None and c.state == "syn-sent":
            self._forget(c)
            self._outbox.append(StreamRefused(t, c.host.name, c.id, "timed out"))

    def _ev_segment(self, t: float, seg: _Segment, p: Packet) -> None:
        ip = p.dst[0]
        node = seg.nodes.get(ip)
        if isinstance(node, Host):
            self._transmit(t, node._link.down, node._link.down_name, p, ("host", node))
            return
        if isinstance(node, Router):
            self._transmit(t, node._link.down, node._link.down_name, p, ("wan", node))
            return
        if seg.owner is not None and ip == seg.owner.lan_address:
            self._drop(t, p, f"router {seg.owner.name}", "no socket on router")
            return
        a = _parse_ip(ip)
        for net, child in seg.routes():
            if a in net:
                self._transmit(t, child._link.down, child._link.down_name, p, ("wan", child))
                return
        if seg.subnet is not None and a in seg.subnet:
            self._drop(t, p, f"segment {seg.name}", "no host")
            return
        if seg.owner is None:
            self._drop(t, p, f"segment {seg.name}", "no route")
            return
        self._router_out(t, seg.owner, p)

    def _router_out(self, t: float, r: Router, p: Packet) -> None:
        if p.ttl <= 1:
            self._drop(t, p, f"router {r.name}", "ttl exceeded")
            return
        p = _evolve(p, ttl=p.ttl - 1)
        ext = r._forwarded_from.get((p.proto, p.src)) if r.forwards else None
        if ext is not None and p.dst[0] != r.wan_address:
            q = _evolve(p, src=(r.wan_address, ext))
            self._record(t, p, f"nat {r.name}", "nat", out=q)
            p = q
        elif r.nat is not None:
            v = r.nat.outbound(p.proto, p.src, p.dst, t)
            q = _evolve(p, src=v.src, dst=v.dst)
            self._record(t, p, f"nat {r.name}", "nat", out=q, reason=v.reason)
            if v.dropped:
                return
            if v.hairpin:
                self._ev_segment(t, r._inside, q)
                return
            p = q
        self._transmit(t, r._link.up, r._link.up_name, p, ("segment", r._parent))

    def _ev_wan(self, t: float, r: Router, p: Packet) -> None:
        if p.ttl <= 1:
            self._drop(t, p, f"router {r.name}", "ttl exceeded")
            return
        p = _evolve(p, ttl=p.ttl - 1)
        if r.nat is None:
            if p.dst[0] == r.wan_address:
                self._drop(t, p, f"router {r.name}", "no socket on router")
                return
            a = _parse_ip(p.dst[0])
            if not any(a in n for n in r.routed_subnets()):
                self._drop(t, p, f"router {r.name}", "no route")
                return
            self._ev_segment(t, r._inside, p)
            return
        fwd = r.forwards.get((p.proto, p.dst[1])) if r.forwards and p.dst[0] == r.wan_address else None
        if fwd is not None:
            q = _evolve(p, dst=fwd)
            self._record(t, p, f"nat {r.name}", "nat", out=q)
            self._ev_segment(t, r._inside, q)
            return
        v = r.nat.inbound(p.proto, p.src, p.dst, t)
        q = _evolve(p, src=v.src, dst=v.dst)
        self._record(t, p, f"nat {r.name}", "nat", out=q, reason=v.reason)
        if v.dropped:
            if p.proto == "tcp" and p.flags == "S":
                # The connect is refused: the NAT answers the filtered SYN with a RST.
                rst = Packet("tcp", p.dst, p.src, flags="RA", ack=p.byte_seq + 1, packet_id=next(self._packet_ids))
                self._transmit(t, r._link.up, r._link.up_name, rst, ("segment", r._parent))
            return
        self._ev_segment(t, r._inside, q)

    def _ev_host(self, t: float, h: Host, p: Packet) -> None:
        hop = f"host {h.name}"
        if p.proto == "udp":
            if p.dst in h.udp_bound:
                self._record(t, p, hop, "deliver")
                self._outbox.append(DatagramDelivered(t, h.name, p.src, p.dst, p.payload))
            else:
                self._drop(t, p, hop, "port unreachable")
            return
        self._tcp_in(t, h, p, hop)

    def _reply_rst(self, t: float, h: Host, p: Packet) -> None:
        rst = Packet("tcp", p.dst, p.src, flags="RA", ack=p.byte_seq + max(1, len(p.payload)), packet_id=next(self._packet_ids))
        self._push(t, "send", h, rst)

    def _tcp_in(self, t: float, h: Host, p: Packet, hop: str) -> None:
        c = h.conns.get((p.dst, p.src))
        if "R" in p.flags:
            if c is None:
                self._drop(t, p, hop, "no connection")
                return
            self._record(t, p, hop, "deliver")
            self._forget(c)
            if c.state == "syn-sent":
                self._outbox.append(StreamRefused(t, h.name, c.id, "refused"))
            else:
                self._outbox.append(StreamReset(t, h.name, c.id, "reset by peer"))
            return
        if c is None:
            if p.flags == "S":
                if p.dst in h.listeners:
                    c = _Conn(next(self._conn_ids), h, p.dst, p.src, "established", peer=p.conn, in_next=1, in_bytes=1)
                    h.conns[(p.dst, p.src)] = c
                    self._conns[c.id] = c
                    self._record(t, p, hop, "deliver")
                    self._segment_out(c, "SA", b"", t, seq=0)
                    self._outbox.append(StreamAccepted(t, h.name, c.id, p.dst, p.src, p.dst))
                else:
                    self._drop(t, p, hop, "no listener")
                    self._reply_rst(t, h, p)
                return
            self._drop(t, p, hop, "no connection")
            self._reply_rst(t, h, p)
            return
        if p.seq < c.in_next or p.seq in c.in_buf:
            self._drop(t, p, hop, "duplicate")
            return
        self._record(t, p, hop, "deliver")
        c.in_buf[p.seq] = p
        while c.in_next in c.in_buf:
            q = c.in_buf.pop(c.in_next)
            c.in_next += 1
            c.in_bytes += len(q.payload) + (1 if ("S" in q.flags or "F" in q.flags) else 0)
            if "S" in q.flags:
                if c.state == "syn-sent":
                    c.state = "established"
                    c.peer = q.conn
                    self._outbox.append(StreamConnected(t, h.name, c.id, c.local, c.remote))
            elif "F" in q.flags:
                c.remote_fin = True
                self._outbox.append(StreamEnded(t, h.name, c.id))
                if c.local_fin:
                    self._forget(c)
                    return
            elif q.payload:
                self._outbox.append(StreamDataReceived(t, h.name, c.id, q.payload))

    # --- output ---------------------------------------------------------------------------
    def trace_to_pcap(self, path: str | Path, *, hops: Iterable[str] | None = None) -> Path:
        """Write the packets seen on links as a pcap file (IPv4 UDP and TCP).

        One record per link a packet entered (lost ones included: a capture at the
        sender sees them), with the addresses as written on that link, at the time it
        entered. A packet crossing three links appears three times, like a capture on
        every interface (Wireshark then marks the repeats as TCP retransmissions); pass
        ``hops`` (e.g. ``["home->internet", "internet->home"]``) to capture at one point.

        Parameters
        ----------
        path : str or Path
        hops : iterable of str, optional
            Link names (``TraceRecord.hop``) to keep.

        Returns
        -------
        Path
        """
        keep = None if hops is None else set(hops)
        if keep is not None:
            links = {r.hop for r in self.trace if r.action == "link"}
            unknown = keep - links
            if unknown and links:
                raise ParameterError(f"no link named {sorted(unknown)} in the trace; links are {sorted(links)}")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("wb") as fh:
            w = PcapWriter(fh)
            ident = 0
            for r in self.trace:
                if r.action != "link" or r.reason == "queue" or (keep is not None and r.hop not in keep):
                    continue
                ident = (ident + 1) & 0xFFFF
                if r.proto == "udp":
                    pkt = udp_ipv4_packet(r.src, r.dst, r.payload, ident=ident)
                else:
                    pkt = tcp_ipv4_packet(r.src, r.dst, r.payload, flags=r.flags, seq=r.byte_seq, ack=r.ack, ident=ident)
                w.write_packet(max(r.time, 0.0), pkt)
        return p

    def trace_rows(self) -> list[dict[str, Any]]:
        """:attr:`trace` as flat dicts (``pandas.DataFrame(net.trace_rows())``)."""
        return [r.as_row() for r in self.trace]

    def __repr__(self) -> str:
        return f"VirtualNetwork(seed={self.seed}, hosts={len(self._hosts)}, routers={len(self._routers)})"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


_TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def tcp_ipv4_packet(src: Addr, dst: Addr, payload: bytes, *, flags: str, seq: int, ack: int, ident: int = 0, ttl: int = 64) -> bytes:
    """An IPv4/TCP segment with valid checksums (for pcap output).

    Parameters
    ----------
    src, dst : (IPv4 address, port)
    payload : bytes
    flags : str
        Letters among ``S A F R P``.
    seq, ack : int
        Byte sequence and acknowledgement numbers (taken modulo 2**32).
    """
    s_ip, d_ip = ipaddress.IPv4Address(src[0]).packed, ipaddress.IPv4Address(dst[0]).packed
    bits = 0
    for ch in flags:
        bits |= _TCP_FLAG_BITS.get(ch, 0)
    head = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF if "A" in flags else 0,
                       5 << 4, bits, 65535, 0, 0)
    pseudo = s_ip + d_ip + struct.pack("!BBH", 0, 6, len(head) + len(payload))
    csum = _checksum(pseudo + head + payload)
    tcp = head[:16] + struct.pack("!H", csum) + head[18:] + payload
    total = 20 + len(tcp)
    ip_head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, 6, 0, s_ip, d_ip)
    ip_head = ip_head[:10] + struct.pack("!H", _checksum(ip_head)) + ip_head[12:]
    return ip_head + tcp
