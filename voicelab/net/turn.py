"""A TURN server (RFC 5766, UDP relaying over UDP) that runs on any network interface.

Why our own: coturn is the reference server and the lab drives it in ``loopback`` mode
(:mod:`voicelab.net.coturn`), but it only runs on real sockets. The virtual network
needs a TURN server whose relay ports live on a virtual host, and tests need one they
can drive on a fake clock. No maintained Python TURN server exists; aioice has the STUN
message codec and a TURN *client*, which this module reuses for the wire format
(:mod:`aioice.stun`: messages, MESSAGE-INTEGRITY, FINGERPRINT) and which the tests run
against it.

Two layers:

- :class:`TurnServerCore`, sans-IO. Driven by ``handle_client(data, src, now)`` (a
  datagram that reached the listening address), ``handle_peer(relayed_address, data,
  peer, now)`` (a datagram that reached a relayed transport address) and
  ``handle_timer(now)``. Each returns :class:`Datagram` s to send, each saying whether
  it leaves from the listening address (``via=None``) or from a relayed address. It
  opens no sockets: when an Allocate is accepted it queues a :class:`RelayRequested`
  event; the adapter opens the relay endpoint and answers with
  :meth:`~TurnServerCore.relay_ready` (or :meth:`~TurnServerCore.relay_failed`).
  :class:`AllocationReleased` tells it when to close one.
- :class:`TurnServer`, the asyncio adapter: a listening UDP endpoint and one relay
  endpoint per allocation, all opened through a
  :class:`~voicelab.net.iface.NetworkInterface` (so the relay ports are whatever the
  interface hands out: real loopback ports today, virtual-host ports on the vnet).

What is implemented (RFC 5766 section numbers)
----------------------------------------------
- Long-term credentials (RFC 5389 10.2): a request without MESSAGE-INTEGRITY gets 401
  with REALM and NONCE; missing USERNAME/REALM/NONCE 400; a stale or forged nonce 438
  with a fresh one; unknown user or wrong MESSAGE-INTEGRITY 401. Nonces are stateless
  (HMAC of client address and expiry under a secret drawn from the seeded generator).
  Responses to authenticated requests, errors included, carry MESSAGE-INTEGRITY; every
  message sent carries FINGERPRINT.
- Allocate (6.2): UDP relaying only (REQUESTED-TRANSPORT other than UDP: 442, missing:
  400); a retransmitted Allocate gets the same success response again, a new one on a
  5-tuple that already has an allocation 437; per-user quota 486; capacity 508;
  lifetime = max(default, min(requested, maximum)).
- Refresh (7.2) including LIFETIME 0 (deletes the allocation); 437 without allocation.
- CreatePermission (9.2) with one or more XOR-PEER-ADDRESS; permissions by IP address
  (port ignored), 300 s, refreshed by CreatePermission or ChannelBind.
- Send and Data indications (10); ChannelBind (11.2, numbers 0x4000-0x7FFE, 600 s,
  refresh, 400 for a channel or peer already bound otherwise, a channel or peer stays
  reserved 300 s after its binding expires) and ChannelData in both directions (11.4-11.6).
- Permission checks in both directions; data without permission is dropped and counted.
- Allocation and permission expiry on ``now``; a request with a different USERNAME
  than the allocation's gets 441; 443 when the peer's address family differs from the
  relayed address's (RFC 6156); 403 for peers refused by ``peer_filter``; 420 with
  UNKNOWN-ATTRIBUTES for unknown comprehension-required attributes (e.g. DONT-FRAGMENT,
  EVEN-PORT, RESERVATION-TOKEN, which are not supported).
- Binding requests to the TURN port are answered as by :mod:`voicelab.net.stun`.
- Statistics per allocation (:class:`AllocationStats`: bytes and packets relayed in each
  direction, drops), kept after the allocation is gone.

Not implemented: TCP/TLS/DTLS to the server, TCP relaying (RFC 6062), EVEN-PORT and
RESERVATION-TOKEN, DONT-FRAGMENT, ALTERNATE-SERVER, bandwidth limits, the
short-term-credential and OAuth mechanisms.

Differences from coturn 4.6.1 seen on the same call flow
--------------------------------------------------------
(``tests/test_net_stun_turn.py`` checks what both do alike: 401/438 challenges, 400,
437, 443, channel rules, permission checks both ways, Data indication vs ChannelData.)

- Allocate asking for TCP over a UDP connection: coturn 400 (the RFC 6062 rule; it
  supports TCP allocations over TCP), here 442 (RFC 5766; no RFC 6062).
- CreatePermission without an allocation: coturn 400, here 437 as RFC 5766 says.
- coturn checks "this 5-tuple already has an allocation" (437) before the nonce and
  sends that 437 without MESSAGE-INTEGRITY; here authentication comes first and the
  437 is signed. (aioice's client discards unsigned errors to signed requests, so on
  coturn it retransmits until it times out instead of seeing 437.)
- Refresh with LIFETIME 0: coturn keeps relaying and accepts Refresh for up to about a
  second (a Refresh then revives the allocation); afterwards the old nonce gets 438
  (its nonces belong to the allocation). Here the allocation ends at once and the next
  request gets 437.
- Binding responses: coturn adds MAPPED-ADDRESS and RESPONSE-ORIGIN (RFC 5780), Data
  indications carry SOFTWARE; here only XOR-MAPPED-ADDRESS, and no SOFTWARE in
  indications.
- coturn refuses loopback and private peers unless ``--allow-loopback-peers`` (etc.);
  here every peer is allowed unless ``peer_filter`` says otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
from aioice import stun

from ..errors import ParameterError
from .stun import (
    SOFTWARE,
    StunServerCore,
    UdpEndpointProtocol,
    error_response,
    finalize,
    raw_attributes,
    try_parse,
    unknown_attributes_error,
    unknown_required,
)

__all__ = [
    "TurnServerCore",
    "TurnServer",
    "Datagram",
    "RelayRequested",
    "AllocationReleased",
    "AllocationStats",
    "TurnStats",
    "long_term_key",
    "UDP_TRANSPORT",
]

Addr = tuple[Any, ...]

#: REQUESTED-TRANSPORT value for UDP as aioice encodes it (protocol 17 in the top byte).
UDP_TRANSPORT = 17 << 24

_XOR_PEER_ADDRESS = 0x0012
_CHANNEL_MIN = 0x4000
_CHANNEL_MAX = 0x7FFE
#: RFC 5766 fixed lifetimes (seconds).
PERMISSION_LIFETIME_S = 300.0
CHANNEL_LIFETIME_S = 600.0
#: After a channel binding expires, neither its number nor its peer may be rebound
#: to something else for this long (RFC 5766 section 11).
CHANNEL_COOLDOWN_S = 300.0


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """The long-term credential key MD5(username ":" realm ":" password) (RFC 5389 15.4)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode("utf8")).digest()


class Datagram(NamedTuple):
    """A datagram the core wants sent.

    Attributes
    ----------
    data : bytes
        UDP payload.
    addr : tuple
        Destination ``(host, port)``.
    via : tuple or None
        Source: None for the server's listening address, else the relayed transport
        address (of an allocation) it must leave from.
    """

    data: bytes
    addr: Addr
    via: Addr | None


@dataclass(frozen=True)
class RelayRequested:
    """An Allocate was accepted: open a relay endpoint, then call ``relay_ready``.

    Attributes
    ----------
    client : tuple
        The client's transport address (the allocation's key).
    family : int
        4 or 6: the address family the relayed address must have.
    """

    client: Addr
    family: int


@dataclass(frozen=True)
class AllocationReleased:
    """An allocation ended: close its relay endpoint.

    Attributes
    ----------
    client : tuple
        The client's transport address.
    relayed_address : tuple or None
        The relay endpoint to close (None if it was never opened).
    reason : str
        ``"deleted"`` (Refresh with LIFETIME 0), ``"expired"``, ``"abandoned"`` (the
        relay endpoint arrived after the allocation was gone) or ``"failed"``.
    """

    client: Addr
    relayed_address: Addr | None
    reason: str


@dataclass
class AllocationStats:
    """What went through one allocation.

    Attributes
    ----------
    client : tuple
        Client transport address.
    username : str
    relayed_address : tuple or None
    created_at, closed_at : float or None
        Seconds on the core's clock.
    bytes_to_peers, packets_to_peers : int
        Application payload bytes (UDP payload, no TURN framing) relayed client -> peers.
    bytes_from_peers, packets_from_peers : int
        Payload bytes relayed peers -> client.
    dropped_no_permission : int
        Datagrams dropped in either direction for lack of a permission.
    channel_data_packets, indication_packets : int
        How client<->server data travelled (ChannelData vs Send/Data indications).
    """

    client: Addr
    username: str
    relayed_address: Addr | None = None
    created_at: float | None = None
    closed_at: float | None = None
    bytes_to_peers: int = 0
    packets_to_peers: int = 0
    bytes_from_peers: int = 0
    packets_from_peers: int = 0
    dropped_no_permission: int = 0
    channel_data_packets: int = 0
    indication_packets: int = 0


@dataclass
class TurnStats:
    """Server-wide counters.

    Attributes
    ----------
    requests : int
        STUN/TURN requests handled (any outcome).
    errors : dict
        Error responses sent, by code.
    ignored : int
        Datagrams dropped as not STUN/ChannelData, or not valid where they arrived.
    allocations : list of AllocationStats
        One per allocation ever made, in creation order (closed ones stay).
    """

    requests: int = 0
    errors: dict = field(default_factory=dict)
    ignored: int = 0
    allocations: list = field(default_factory=list)


@dataclass
class _Channel:
    number: int
    peer: Addr
    expires: float


@dataclass
class _Allocation:
    client: Addr
    username: str
    key: bytes
    transaction_id: bytes
    lifetime: float
    stats: AllocationStats
    relayed: Addr | None = None
    expires: float = float("inf")
    success: bytes | None = None
    permissions: dict = field(default_factory=dict)  # peer IP -> expiry
    channels: dict = field(default_factory=dict)  # number -> _Channel
    peer_channel: dict = field(default_factory=dict)  # (ip, port) -> number


def _family(host: Any) -> int | None:
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).version
    except ValueError:
        return None


class _Reject(Exception):
    """Internal: answer the request with this error (never escapes the core)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TurnServerCore:
    """Sans-IO TURN server for UDP relaying with long-term credentials.

    Parameters
    ----------
    realm : str
        The REALM of the long-term credentials.
    users : mapping of str to str
        Username -> password.
    seed : int or numpy.random.Generator, optional
        Source of the nonce secret (default: fresh OS entropy).
    default_lifetime : float, optional
        Allocation lifetime in seconds when the client asks for less (RFC: 600).
    max_lifetime : float, optional
        Longest allocation lifetime granted, seconds (coturn's default: 3600).
    nonce_lifetime : float, optional
        Seconds a NONCE stays valid; older ones get 438 (Stale Nonce).
    max_allocations : int, optional
        Allocations the server holds at once; more get 508 (Insufficient Capacity).
    user_quota : int, optional
        Allocations one username may hold; more get 486 (Allocation Quota Reached).
    peer_filter : callable, optional
        ``peer_filter((host, port)) -> bool``; False refuses the peer with 403. Default:
        every peer allowed (coturn refuses loopback and private peers unless configured).

    Examples
    --------
    >>> core = TurnServerCore(realm="voicelab", users={"u": "p"}, seed=1)
    >>> req = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
    >>> req.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
    >>> [reply] = core.handle_client(bytes(req), ("192.0.2.1", 5000), now=0.0)
    >>> stun.parse_message(reply.data).error_code
    401
    """

    def __init__(
        self,
        *,
        realm: str,
        users: Mapping[str, str],
        seed: int | np.random.Generator | None = None,
        default_lifetime: float = 600.0,
        max_lifetime: float = 3600.0,
        nonce_lifetime: float = 3600.0,
        max_allocations: int = 1000,
        user_quota: int = 100,
        peer_filter: Callable[[Addr], bool] | None = None,
    ) -> None:
        if not isinstance(realm, str) or not realm:
            raise ParameterError(f"realm must be a non-empty string, got {realm!r}")
        if not isinstance(users, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
            raise ParameterError("users must map username strings to password strings, e.g. {'test': 'test'}")
        for name, value in (("default_lifetime", default_lifetime), ("max_lifetime", max_lifetime), ("nonce_lifetime", nonce_lifetime)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ParameterError(f"{name} must be a positive number of seconds, got {value!r}")
        for name, value in (("max_allocations", max_allocations), ("user_quota", user_quota)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ParameterError(f"{name} must be a positive int, got {value!r}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.realm = realm
        self._keys = {u: long_term_key(u, realm, p) for u, p in users.items()}
        self._secret = rng.bytes(16)
        self.default_lifetime = float(default_lifetime)
        self.max_lifetime = float(max_lifetime)
        self.nonce_lifetime = float(nonce_lifetime)
        self.max_allocations = max_allocations
        self.user_quota = user_quota
        self.peer_filter = peer_filter
        self.stats = TurnStats()
        self._stun = StunServerCore()
        self._by_client: dict[Addr, _Allocation] = {}
        self._by_relay: dict[Addr, _Allocation] = {}
        self._events: list[Any] = []

    # -- public driving API -----------------------------------------------------------
    def handle_client(self, data: bytes, src: Addr, now: float) -> list[Datagram]:
        """Handle a datagram that arrived at the listening address from ``src``.

        Parameters
        ----------
        data : bytes
            UDP payload: a STUN message or a ChannelData message.
        src : tuple
            The client's ``(host, port)``.
        now : float
            Seconds on the server's clock.

        Returns
        -------
        list of Datagram
        """
        src = (src[0], src[1])
        out = self.handle_timer(now)
        if len(data) >= 4 and data[0] & 0xC0 == 0x40:
            return out + self._channel_data(data, src, now)
        msg = try_parse(data)
        if msg is None:
            self.stats.ignored += 1
            return out
        if msg.message_method == stun.Method.BINDING:
            replies = self._stun.respond(data, src, msg)
            if replies is None:
                self.stats.ignored += 1
                return out
            return out + [Datagram(d, a, None) for d, a in replies]
        if msg.message_class == stun.Class.INDICATION and msg.message_method == stun.Method.SEND:
            return out + self._send_indication(data, msg, src, now)
        if msg.message_class != stun.Class.REQUEST:
            self.stats.ignored += 1
            return out
        self.stats.requests += 1
        return out + self._request(data, msg, src, now)

    def handle_peer(self, relayed_address: Addr, data: bytes, peer: Addr, now: float) -> list[Datagram]:
        """Handle a datagram from ``peer`` that arrived at a relayed transport address.

        Returns a ChannelData message (if a channel is bound to the peer) or a Data
        indication for the client, or nothing when the peer has no permission.
        """
        out = self.handle_timer(now)
        alloc = self._by_relay.get(tuple(relayed_address[:2]))
        if alloc is None:
            self.stats.ignored += 1
            return out
        peer = (peer[0], peer[1])
        if not self._permitted(alloc, peer[0], now):
            alloc.stats.dropped_no_permission += 1
            return out
        alloc.stats.bytes_from_peers += len(data)
        alloc.stats.packets_from_peers += 1
        number = alloc.peer_channel.get(peer)
        ch = alloc.channels.get(number) if number is not None else None
        if ch is not None and now < ch.expires:
            alloc.stats.channel_data_packets += 1
            return out + [Datagram(struct.pack("!HH", number, len(data)) + data, alloc.client, None)]
        ind = stun.Message(stun.Method.DATA, stun.Class.INDICATION)
        ind.attributes["XOR-PEER-ADDRESS"] = peer
        ind.attributes["DATA"] = data
        alloc.stats.indication_packets += 1
        return out + [Datagram(finalize(ind), alloc.client, None)]

    def handle_timer(self, now: float) -> list[Datagram]:
        """Expire allocations whose lifetime is over (queues :class:`AllocationReleased`).

        Permissions and channel bindings are checked against ``now`` where they are used.
        Returns an empty list (kept for symmetry with the other handlers).
        """
        for client, alloc in list(self._by_client.items()):
            if alloc.relayed is not None and alloc.expires <= now:
                self._release(alloc, now, "expired")
        return []

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (earliest allocation expiry), or None."""
        deadlines = [a.expires for a in self._by_client.values() if a.relayed is not None]
        return min(deadlines) if deadlines else None

    def next_event(self) -> RelayRequested | AllocationReleased | None:
        """Pop the oldest pending event, None when there is none."""
        return self._events.pop(0) if self._events else None

    def relay_ready(self, client: Addr, relayed_address: Addr, now: float) -> list[Datagram]:
        """The relay endpoint for ``client``'s pending allocation is open at ``relayed_address``.

        Returns the Allocate success response. If the allocation is gone meanwhile, an
        :class:`AllocationReleased` (reason ``"abandoned"``) asks to close the endpoint.
        """
        client = (client[0], client[1])
        relayed_address = (relayed_address[0], relayed_address[1])
        alloc = self._by_client.get(client)
        if alloc is None or alloc.relayed is not None:
            self._events.append(AllocationReleased(client, relayed_address, "abandoned"))
            return []
        alloc.relayed = relayed_address
        alloc.expires = now + alloc.lifetime
        alloc.stats.relayed_address = relayed_address
        alloc.stats.created_at = now
        self._by_relay[relayed_address] = alloc
        resp = stun.Message(stun.Method.ALLOCATE, stun.Class.RESPONSE, transaction_id=alloc.transaction_id)
        resp.attributes["XOR-RELAYED-ADDRESS"] = relayed_address
        resp.attributes["LIFETIME"] = math.ceil(alloc.lifetime)
        resp.attributes["XOR-MAPPED-ADDRESS"] = client
        resp.attributes["SOFTWARE"] = SOFTWARE
        alloc.success = finalize(resp, key=alloc.key)
        return [Datagram(alloc.success, client, None)]

    def relay_failed(self, client: Addr, now: float) -> list[Datagram]:
        """No relay endpoint could be opened for ``client``: answer 508 and forget it."""
        client = (client[0], client[1])
        alloc = self._by_client.get(client)
        if alloc is None or alloc.relayed is not None:
            return []
        del self._by_client[client]
        alloc.stats.closed_at = now
        req = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, transaction_id=alloc.transaction_id)
        return [self._error(req, client, 508, "Insufficient Capacity", alloc.key)]

    def allocation(self, client: Addr) -> AllocationStats | None:
        """Stats of ``client``'s current allocation, None if it has none."""
        alloc = self._by_client.get((client[0], client[1]))
        return alloc.stats if alloc is not None else None

    def release_all(self, now: float) -> None:
        """Drop every allocation (server shutdown); queues their release events."""
        for alloc in list(self._by_client.values()):
            self._release(alloc, now, "server-closed")

    # -- nonces -------------------------------------------------------------------------
    def _nonce(self, client: Addr, now: float) -> bytes:
        expiry_ms = int((now + self.nonce_lifetime) * 1000)
        mac = hmac.new(self._secret, f"{client[0]}|{client[1]}|{expiry_ms}".encode(), "sha1").hexdigest()[:24]
        return f"{expiry_ms:x}.{mac}".encode()

    def _nonce_valid(self, nonce: Any, client: Addr, now: float) -> bool:
        try:
            text = bytes(nonce).decode("ascii")
            head, mac = text.split(".", 1)
            expiry_ms = int(head, 16)
        except (ValueError, TypeError):
            return False
        good = hmac.new(self._secret, f"{client[0]}|{client[1]}|{expiry_ms}".encode(), "sha1").hexdigest()[:24]
        return hmac.compare_digest(mac, good) and now * 1000 < expiry_ms

    # -- requests -------------------------------------------------------------------------
    def _error(self, req: stun.Message, to: Addr, code: int, reason: str, key: bytes | None, **attributes: Any) -> Datagram:
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1
        return Datagram(error_response(req, code, reason, key=key, attributes=attributes), to, None)

    def _challenge(self, req: stun.Message, src: Addr, code: int, reason: str, now: float) -> Datagram:
        attrs = {"REALM": self.realm, "NONCE": self._nonce(src, now)}
        return self._error(req, src, code, reason, None, **attrs)

    def _authenticate(self, data: bytes, msg: stun.Message, src: Addr, now: float) -> tuple[str, bytes] | Datagram:
        a = msg.attributes
        if "MESSAGE-INTEGRITY" not in a:
            return self._challenge(msg, src, 401, "Unauthorized", now)
        if not all(k in a for k in ("USERNAME", "REALM", "NONCE")):
            return self._error(msg, src, 400, "Bad Request", None)
        if not self._nonce_valid(a["NONCE"], src, now):
            return self._challenge(msg, src, 438, "Stale Nonce", now)
        key = self._keys.get(a["USERNAME"])
        if key is None or a["REALM"] != self.realm or not msg.check_message_integrity(key):
            return self._challenge(msg, src, 401, "Unauthorized", now)
        return a["USERNAME"], key

    def _request(self, data: bytes, msg: stun.Message, src: Addr, now: float) -> list[Datagram]:
        method = msg.message_method
        if method not in (stun.Method.ALLOCATE, stun.Method.REFRESH, stun.Method.CREATE_PERMISSION, stun.Method.CHANNEL_BIND):
            return [self._error(msg, src, 400, "Bad Request", None)]
        auth = self._authenticate(data, msg, src, now)
        if isinstance(auth, Datagram):
            return [auth]
        username, key = auth
        unknown = unknown_required(data)
        if unknown:
            self.stats.errors[420] = self.stats.errors.get(420, 0) + 1
            return [Datagram(unknown_attributes_error(msg, unknown, key=key), src, None)]
        try:
            if method == stun.Method.ALLOCATE:
                return self._allocate(msg, src, username, key, now)
            alloc = self._by_client.get(src)
            if alloc is None or alloc.relayed is None:
                raise _Reject(437, "Allocation Mismatch")
            if alloc.username != username:
                raise _Reject(441, "Wrong Credentials")
            if method == stun.Method.REFRESH:
                return self._refresh(msg, alloc, now)
            if method == stun.Method.CREATE_PERMISSION:
                return self._create_permission(data, msg, alloc, now)
            return self._channel_bind(msg, alloc, now)
        except _Reject as r:
            return [self._error(msg, src, r.code, r.reason, key)]

    def _lifetime(self, msg: stun.Message) -> float:
        requested = msg.attributes.get("LIFETIME")
        if requested is None:
            return self.default_lifetime
        return max(self.default_lifetime, min(float(requested), self.max_lifetime))

    def _allocate(self, msg: stun.Message, src: Addr, username: str, key: bytes, now: float) -> list[Datagram]:
        alloc = self._by_client.get(src)
        if alloc is not None:
            if alloc.transaction_id == msg.transaction_id:
                # A retransmission: same answer again (or none yet while the relay opens).
                return [Datagram(alloc.success, src, None)] if alloc.success is not None else []
            raise _Reject(437, "Allocation Mismatch")
        transport = msg.attributes.get("REQUESTED-TRANSPORT")
        if transport is None:
            raise _Reject(400, "Bad Request: REQUESTED-TRANSPORT missing")
        if transport >> 24 != 17:
            raise _Reject(442, "Unsupported Transport Protocol")
        if sum(1 for a in self._by_client.values() if a.username == username) >= self.user_quota:
            raise _Reject(486, "Allocation Quota Reached")
        if len(self._by_client) >= self.max_allocations:
            raise _Reject(508, "Insufficient Capacity")
        family = _family(src[0]) or 4
        stats = AllocationStats(client=src, username=username)
        self.stats.allocations.append(stats)
        self._by_client[src] = _Allocation(
            client=src, username=username, key=key, transaction_id=msg.transaction_id,
            lifetime=self._lifetime(msg), stats=stats,
        )
        self._events.append(RelayRequested(src, family))
        return []

    def _success(self, msg: stun.Message, alloc: _Allocation, **attributes: Any) -> list[Datagram]:
        resp = stun.Message(msg.message_method, stun.Class.RESPONSE, transaction_id=msg.transaction_id)
        resp.attributes.update(attributes)
        resp.attributes["SOFTWARE"] = SOFTWARE
        return [Datagram(finalize(resp, key=alloc.key), alloc.client, None)]

    def _refresh(self, msg: stun.Message, alloc: _Allocation, now: float) -> list[Datagram]:
        if msg.attributes.get("LIFETIME") == 0:
            out = self._success(msg, alloc, LIFETIME=0)
            self._release(alloc, now, "deleted")
            return out
        lifetime = self._lifetime(msg)
        alloc.expires = now + lifetime
        return self._success(msg, alloc, LIFETIME=math.ceil(lifetime))

    def _check_peer(self, alloc: _Allocation, peer: Addr) -> None:
        assert alloc.relayed is not None
        if _family(peer[0]) != _family(alloc.relayed[0]):
            raise _Reject(443, "Peer Address Family Mismatch")
        if self.peer_filter is not None and not self.peer_filter(peer):
            raise _Reject(403, "Forbidden")

    def _create_permission(self, data: bytes, msg: stun.Message, alloc: _Allocation, now: float) -> list[Datagram]:
        peers = []
        for t, v in raw_attributes(data) or []:
            if t == _XOR_PEER_ADDRESS:
                try:
                    peers.append(stun.unpack_xor_address(v, msg.transaction_id))
                except (ValueError, struct.error):
                    raise _Reject(400, "Bad Request: malformed XOR-PEER-ADDRESS") from None
        if not peers:
            raise _Reject(400, "Bad Request: XOR-PEER-ADDRESS missing")
        for peer in peers:
            self._check_peer(alloc, peer)
        for peer in peers:
            alloc.permissions[peer[0]] = now + PERMISSION_LIFETIME_S
        return self._success(msg, alloc)

    def _channel_bind(self, msg: stun.Message, alloc: _Allocation, now: float) -> list[Datagram]:
        number = msg.attributes.get("CHANNEL-NUMBER")
        peer = msg.attributes.get("XOR-PEER-ADDRESS")
        if number is None or peer is None:
            raise _Reject(400, "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS are required")
        if not _CHANNEL_MIN <= number <= _CHANNEL_MAX:
            raise _Reject(400, "Bad Request: channel number out of range")
        peer = (peer[0], peer[1])
        self._check_peer(alloc, peer)
        ch = alloc.channels.get(number)
        if ch is not None and ch.expires + CHANNEL_COOLDOWN_S <= now:
            self._unbind(alloc, ch)
            ch = None
        if ch is not None and ch.peer != peer:
            raise _Reject(400, "Bad Request: channel bound to another peer")
        other = alloc.peer_channel.get(peer)
        if other is not None and other != number:
            och = alloc.channels[other]
            if och.expires + CHANNEL_COOLDOWN_S <= now:
                self._unbind(alloc, och)
            else:
                raise _Reject(400, "Bad Request: peer bound to another channel")
        alloc.channels[number] = _Channel(number, peer, now + CHANNEL_LIFETIME_S)
        alloc.peer_channel[peer] = number
        alloc.permissions[peer[0]] = now + PERMISSION_LIFETIME_S
        return self._success(msg, alloc)

    @staticmethod
    def _unbind(alloc: _Allocation, ch: _Channel) -> None:
        alloc.channels.pop(ch.number, None)
        if alloc.peer_channel.get(ch.peer) == ch.number:
            del alloc.peer_channel[ch.peer]

    # -- data -----------------------------------------------------------------------------
    @staticmethod
    def _permitted(alloc: _Allocation, host: Any, now: float) -> bool:
        expiry = alloc.permissions.get(host)
        if expiry is None:
            return False
        if expiry <= now:
            del alloc.permissions[host]
            return False
        return True

    def _live(self, src: Addr) -> _Allocation | None:
        alloc = self._by_client.get(src)
        return alloc if alloc is not None and alloc.relayed is not None else None

    def _send_indication(self, data: bytes, msg: stun.Message, src: Addr, now: float) -> list[Datagram]:
        alloc = self._live(src)
        peer = msg.attributes.get("XOR-PEER-ADDRESS")
        payload = msg.attributes.get("DATA")
        if alloc is None or peer is None or payload is None or unknown_required(data):
            self.stats.ignored += 1
            return []
        return self._to_peer(alloc, payload, (peer[0], peer[1]), now, channel=False)

    def _channel_data(self, data: bytes, src: Addr, now: float) -> list[Datagram]:
        number, length = struct.unpack("!HH", data[:4])
        alloc = self._live(src)
        ch = alloc.channels.get(number) if alloc is not None else None
        if ch is None or len(data) < 4 + length or now >= ch.expires:
            self.stats.ignored += 1
            return []
        return self._to_peer(alloc, data[4 : 4 + length], ch.peer, now, channel=True)

    def _to_peer(self, alloc: _Allocation, payload: bytes, peer: Addr, now: float, *, channel: bool) -> list[Datagram]:
        if not self._permitted(alloc, peer[0], now):
            alloc.stats.dropped_no_permission += 1
            return []
        alloc.stats.bytes_to_peers += len(payload)
        alloc.stats.packets_to_peers += 1
        if channel:
            alloc.stats.channel_data_packets += 1
        else:
            alloc.stats.indication_packets += 1
        return [Datagram(payload, peer, alloc.relayed)]

    def _release(self, alloc: _Allocation, now: float, reason: str) -> None:
        self._by_client.pop(alloc.client, None)
        if alloc.relayed is not None:
            self._by_relay.pop(alloc.relayed, None)
        alloc.stats.closed_at = now
        self._events.append(AllocationReleased(alloc.client, alloc.relayed, reason))


class TurnServer:
    """A TURN server on a network interface: UDP listener + one relay endpoint per allocation.

    Parameters
    ----------
    iface : NetworkInterface
        Where all endpoints are opened (loopback sockets, a virtual host, ...).
    realm : str, optional
    users : mapping of str to str, optional
        Username -> password (default ``{"test": "test"}``, like the coturn recipe).
    relay_host : str, optional
        Address relay endpoints bind (default: the listening host).
    **core_options
        Passed to :class:`TurnServerCore` (``seed``, ``default_lifetime``,
        ``max_lifetime``, ``nonce_lifetime``, ``max_allocations``, ``user_quota``,
        ``peer_filter``).

    Examples
    --------
    ::

        async with TurnServer(LoopbackInterface()) as turn:
            await turn.start("127.0.0.1")
            transport, proto = await aioice.turn.create_turn_endpoint(
                MyProtocol, turn.address, "test", "test")
    """

    def __init__(self, iface, *, realm: str = "voicelab", users: Mapping[str, str] | None = None,
                 relay_host: str | None = None, **core_options: Any) -> None:
        self.iface = iface
        self.core = TurnServerCore(realm=realm, users=dict(users) if users is not None else {"test": "test"}, **core_options)
        self.relay_host = relay_host
        self._listener = None
        self._listener_proto: UdpEndpointProtocol | None = None
        self._relays: dict[Addr, tuple[Any, UdpEndpointProtocol]] = {}
        self._opening: set = set()
        self._timer = None
        self._closed = False

    @property
    def address(self) -> Addr:
        """Listening ``(host, port)``; valid after :meth:`start`."""
        if self._listener is None:
            raise ParameterError("TurnServer.address is only known after 'await start()'")
        return tuple(self._listener.get_extra_info("sockname")[:2])

    @property
    def stats(self) -> TurnStats:
        """Server and per-allocation counters (see :class:`TurnStats`)."""
        return self.core.stats

    async def start(self, host: str, port: int = 0) -> None:
        """Listen on UDP ``(host, port)`` (port 0: any free one, see :attr:`address`)."""
        import asyncio

        if self._listener is not None:
            raise ParameterError("TurnServer.start() was already called")
        if self.relay_host is None:
            self.relay_host = host
        proto = UdpEndpointProtocol(self._on_client, asyncio.get_running_loop().create_future())
        self._listener, self._listener_proto = await self.iface.create_datagram_endpoint(
            lambda: proto, local_addr=(host, port)
        )

    # -- driving the core -------------------------------------------------------------------
    def _on_client(self, data: bytes, addr: Addr) -> None:
        self._process(self.core.handle_client(data, addr, self.iface.time()))

    def _on_peer(self, relayed: Addr, data: bytes, addr: Addr) -> None:
        self._process(self.core.handle_peer(relayed, data, addr, self.iface.time()))

    def _on_timer(self) -> None:
        self._timer = None
        self._process(self.core.handle_timer(self.iface.time()))

    def _process(self, datagrams: list[Datagram]) -> None:
        import asyncio

        for d in datagrams:
            if d.via is None:
                transport = self._listener
            else:
                entry = self._relays.get(d.via)
                transport = entry[0] if entry is not None else None
            if transport is not None and not transport.is_closing():
                transport.sendto(d.data, d.addr)
        while (ev := self.core.next_event()) is not None:
            if isinstance(ev, RelayRequested):
                task = asyncio.get_running_loop().create_task(self._open_relay(ev))
                self._opening.add(task)
                task.add_done_callback(self._opening.discard)
            elif isinstance(ev, AllocationReleased) and ev.relayed_address is not None:
                entry = self._relays.pop(ev.relayed_address, None)
                if entry is not None:
                    entry[0].close()
        self._arm()

    def _arm(self) -> None:
        import asyncio

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.core.get_timer()
        if deadline is not None and not self._closed:
            delay = max(0.0, deadline - self.iface.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    async def _open_relay(self, ev: RelayRequested) -> None:
        import asyncio

        holder: dict[str, Addr] = {}
        proto = UdpEndpointProtocol(
            lambda data, addr: self._on_peer(holder["addr"], data, addr),
            asyncio.get_running_loop().create_future(),
        )
        try:
            transport, _ = await self.iface.create_datagram_endpoint(lambda: proto, local_addr=(self.relay_host, 0))
        except (OSError, ParameterError):
            self._process(self.core.relay_failed(ev.client, self.iface.time()))
            return
        addr = tuple(transport.get_extra_info("sockname")[:2])
        holder["addr"] = addr
        if self._closed:
            transport.close()
            await proto.closed
            return
        self._relays[addr] = (transport, proto)
        self._process(self.core.relay_ready(ev.client, addr, self.iface.time()))

    async def close(self) -> None:
        """Release every allocation and close all endpoints (idempotent)."""
        import asyncio

        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._opening:
            await asyncio.gather(*list(self._opening), return_exceptions=True)
        waits = []
        for transport, proto in self._relays.values():
            transport.close()
            waits.append(proto.closed)
        self._relays.clear()
        if self._listener is not None:
            self._listener.close()
            waits.append(self._listener_proto.closed)
        if self._listener is not None:
            self.core.release_all(self.iface.time())
            while self.core.next_event() is not None:
                pass
        await asyncio.gather(*waits)

    async def __aenter__(self) -> "TurnServer":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
