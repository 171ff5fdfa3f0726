"""A STUN server (RFC 5389 Binding) that the lab starts in-process.

Why our own: the lab needs a STUN server that runs on any
:class:`~voicelab.net.iface.NetworkInterface` (loopback sockets today, the virtual
network with NAT boxes later) and that tests can drive without sockets. coturn answers
STUN too, but only on real sockets; aioice has STUN *messages* and a client, no server.
So the wire format is aioice's (:mod:`aioice.stun`: :class:`~aioice.stun.Message`,
:func:`~aioice.stun.parse_message`, its FINGERPRINT and MESSAGE-INTEGRITY helpers) and
only the server logic lives here.

Two layers, as everywhere in voicelab:

- :class:`StunServerCore`, sans-IO: ``handle(data, addr, now)`` returns the datagrams to
  send back. Garbage is counted and ignored; it never raises on input.
- :class:`StunServer`, a thin asyncio adapter that opens one UDP endpoint through the
  network interface.

What the core does (RFC 5389 sections 7.3 and 10):

- Binding request -> Binding success response with XOR-MAPPED-ADDRESS (the source address
  the request came from, as this server saw it), SOFTWARE and FINGERPRINT.
- A request carrying an unknown comprehension-required attribute (type < 0x8000) gets a
  420 (Unknown Attribute) error listing them in UNKNOWN-ATTRIBUTES.
- Binding indications (keep-alives) are counted and not answered.
- Anything else (not STUN, no magic cookie, a bad FINGERPRINT, a response, another
  method) is counted as ``ignored`` and dropped.

The helpers :func:`finalize`, :func:`raw_attributes` and :func:`try_parse` are shared
with :mod:`voicelab.net.turn`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from aioice import stun

from ..errors import ParameterError

__all__ = [
    "StunServerCore",
    "StunServer",
    "StunStats",
    "SOFTWARE",
    "finalize",
    "raw_attributes",
    "try_parse",
    "binding_request",
    "UdpEndpointProtocol",
]

#: SOFTWARE attribute our servers put in their responses.
SOFTWARE = "voicelab"

Addr = tuple[Any, ...]

_UNKNOWN_ATTRIBUTES = 0x000A
_MESSAGE_INTEGRITY = 0x0008
_FINGERPRINT = 0x8028


def raw_attributes(data: bytes) -> list[tuple[int, bytes]] | None:
    """Every attribute of a STUN message as ``(type, value)``, in wire order.

    Unlike :func:`aioice.stun.parse_message`, repeated attributes are all kept and
    unknown types are listed, as RFC 5389 section 15 needs. Attributes after
    MESSAGE-INTEGRITY other than FINGERPRINT are left out (they are not authenticated).

    Parameters
    ----------
    data : bytes
        A whole STUN message (20-byte header + attributes).

    Returns
    -------
    list of (int, bytes) or None
        None when the attribute area is truncated or overruns the message.
    """
    out: list[tuple[int, bytes]] = []
    pos = stun.HEADER_LENGTH
    seen_integrity = False
    while pos < len(data):
        if pos + 4 > len(data):
            return None
        attr_type, attr_len = struct.unpack("!HH", data[pos : pos + 4])
        end = pos + 4 + attr_len
        if end > len(data):
            return None
        if not seen_integrity or attr_type == _FINGERPRINT:
            out.append((attr_type, data[pos + 4 : end]))
        if attr_type == _MESSAGE_INTEGRITY:
            seen_integrity = True
        pos = end + stun.padding_length(attr_len)
    return out


def try_parse(data: bytes) -> stun.Message | None:
    """Parse a STUN message with aioice, or return None for anything that is not one.

    Requires the RFC 5389 magic cookie and a length field that matches the datagram;
    a present FINGERPRINT must be correct (aioice checks it). Never raises.

    Parameters
    ----------
    data : bytes
        One UDP payload.
    """
    if len(data) < stun.HEADER_LENGTH or data[0] & 0xC0:
        return None
    if struct.unpack("!I", data[4:8])[0] != stun.COOKIE:
        return None
    try:
        return stun.parse_message(data)
    except Exception:  # noqa: BLE001 - aioice raises ValueError, struct.error, ... on junk
        return None


def unknown_required(data: bytes) -> list[int] | None:
    """Comprehension-required attribute types (< 0x8000) that aioice cannot decode.

    Returns None for a malformed attribute area.
    """
    attrs = raw_attributes(data)
    if attrs is None:
        return None
    unknown: list[int] = []
    for t, _ in attrs:
        if t < 0x8000 and t not in stun.ATTRIBUTES_BY_TYPE and t not in unknown:
            unknown.append(t)
    return unknown


def finalize(message: stun.Message, *, key: bytes | None = None, extra: list[tuple[int, bytes]] = ()) -> bytes:
    """Encode ``message`` with optional raw attributes, MESSAGE-INTEGRITY and FINGERPRINT.

    aioice's attribute table has no UNKNOWN-ATTRIBUTES; ``extra`` appends such raw
    attributes after aioice's own encoding, before the integrity and fingerprint
    attributes that aioice's helpers compute.

    Parameters
    ----------
    message : aioice.stun.Message
        Without MESSAGE-INTEGRITY / FINGERPRINT.
    key : bytes, optional
        HMAC-SHA1 key (long-term: MD5(username:realm:password)); adds MESSAGE-INTEGRITY.
    extra : list of (int, bytes), optional
        Raw attributes to append.

    Returns
    -------
    bytes
        The datagram.
    """
    data = bytes(message)
    for t, v in extra:
        data += struct.pack("!HH", t, len(v)) + v + bytes(stun.padding_length(len(v)))
    data = stun.set_body_length(data, len(data) - stun.HEADER_LENGTH)
    if key is not None:
        mac = stun.message_integrity(data, key)
        data += struct.pack("!HH", _MESSAGE_INTEGRITY, len(mac)) + mac
        data = stun.set_body_length(data, len(data) - stun.HEADER_LENGTH)
    fp = stun.message_fingerprint(data)
    data += struct.pack("!HHI", _FINGERPRINT, 4, fp)
    return stun.set_body_length(data, len(data) - stun.HEADER_LENGTH)


def error_response(
    request: stun.Message,
    code: int,
    reason: str,
    *,
    key: bytes | None = None,
    attributes: dict[str, Any] | None = None,
    extra: list[tuple[int, bytes]] = (),
) -> bytes:
    """An error response to ``request`` (ERROR-CODE, SOFTWARE, [attributes], FINGERPRINT)."""
    msg = stun.Message(request.message_method, stun.Class.ERROR, transaction_id=request.transaction_id)
    msg.attributes["ERROR-CODE"] = (code, reason)
    msg.attributes["SOFTWARE"] = SOFTWARE
    for k, v in (attributes or {}).items():
        msg.attributes[k] = v
    return finalize(msg, key=key, extra=extra)


def unknown_attributes_error(request: stun.Message, unknown: list[int], *, key: bytes | None = None) -> bytes:
    """420 (Unknown Attribute) listing ``unknown`` in UNKNOWN-ATTRIBUTES."""
    value = b"".join(struct.pack("!H", t) for t in unknown)
    return error_response(request, 420, "Unknown Attribute", key=key, extra=[(_UNKNOWN_ATTRIBUTES, value)])


def binding_success(request: stun.Message, addr: Addr) -> bytes:
    """Binding success response: XOR-MAPPED-ADDRESS = ``addr``, SOFTWARE, FINGERPRINT."""
    msg = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id)
    msg.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
    msg.attributes["SOFTWARE"] = SOFTWARE
    return finalize(msg)


def binding_request(*, transaction_id: bytes | None = None) -> bytes:
    """A plain Binding request with FINGERPRINT (for probes and tests).

    Parameters
    ----------
    transaction_id : bytes, optional
        12 bytes; default: aioice's random one.
    """
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=transaction_id)
    return finalize(msg)


@dataclass
class StunStats:
    """Counters of a :class:`StunServerCore`.

    Attributes
    ----------
    requests : int
        Binding requests answered with a success response.
    errors : int
        Requests answered with an error (420).
    indications : int
        Binding indications (keep-alives) received.
    ignored : int
        Datagrams dropped: not STUN, bad FINGERPRINT, responses, other methods.
    """

    requests: int = 0
    errors: int = 0
    indications: int = 0
    ignored: int = 0


class StunServerCore:
    """Sans-IO STUN Binding server.

    Examples
    --------
    >>> core = StunServerCore()
    >>> [(reply, to)] = core.handle(binding_request(), ("192.0.2.7", 4000), now=0.0)
    >>> try_parse(reply).attributes["XOR-MAPPED-ADDRESS"]
    ('192.0.2.7', 4000)
    >>> core.handle(b"junk", ("192.0.2.7", 4000), now=0.0), core.stats.ignored
    ([], 1)
    """

    def __init__(self) -> None:
        self.stats = StunStats()
        #: ``now`` of the last datagram handled (seconds), None before the first.
        self.last_seen: float | None = None

    def handle(self, data: bytes, addr: Addr, now: float) -> list[tuple[bytes, Addr]]:
        """Handle one datagram received from ``addr``.

        Parameters
        ----------
        data : bytes
            The UDP payload.
        addr : tuple
            Source ``(host, port)`` as this server sees it.
        now : float
            Seconds on the caller's clock.

        Returns
        -------
        list of (bytes, tuple)
            Datagrams to send and where to (empty for garbage and indications).
        """
        self.last_seen = now
        out = self.respond(data, addr)
        if out is None:
            self.stats.ignored += 1
            return []
        return out

    def respond(self, data: bytes, addr: Addr, message: stun.Message | None = None) -> list[tuple[bytes, Addr]] | None:
        """Answer a Binding message; None if ``data`` is not one (caller counts it).

        Used by :class:`~voicelab.net.turn.TurnServerCore` so a TURN server answers
        Binding requests too. ``message`` may be given when already parsed.
        """
        msg = message if message is not None else try_parse(data)
        if msg is None or msg.message_method != stun.Method.BINDING:
            return None
        if msg.message_class == stun.Class.INDICATION:
            self.stats.indications += 1
            return []
        if msg.message_class != stun.Class.REQUEST:
            return None
        unknown = unknown_required(data)
        if unknown is None:
            return None
        if unknown:
            self.stats.errors += 1
            return [(unknown_attributes_error(msg, unknown), addr)]
        try:
            reply = binding_success(msg, addr)
        except Exception:  # noqa: BLE001 - an address aioice cannot pack (not IPv4/IPv6)
            return None
        self.stats.requests += 1
        return [(reply, addr)]


class UdpEndpointProtocol:
    """Datagram protocol handing datagrams to a callback (asyncio adapter glue).

    Parameters
    ----------
    on_datagram : callable
        ``on_datagram(data, addr)`` for each datagram received.
    closed : asyncio.Future, optional
        Resolved by ``connection_lost`` (lets ``close()`` wait for the socket to go).
    """

    def __init__(self, on_datagram, closed=None) -> None:
        self.on_datagram = on_datagram
        self.transport = None
        self.closed = closed

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable, ...): nothing to do for a UDP server."""

    def pause_writing(self) -> None:
        """Flow control is not used for UDP."""

    def resume_writing(self) -> None:
        """Flow control is not used for UDP."""

    def connection_lost(self, exc) -> None:
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)


class StunServer:
    """A STUN server on one UDP endpoint opened through a network interface.

    Parameters
    ----------
    iface : NetworkInterface
        Where to open the socket (:class:`~voicelab.net.iface.LoopbackInterface`, a
        virtual host, ...).

    Examples
    --------
    ::

        server = StunServer(LoopbackInterface())
        await server.start("127.0.0.1")      # port 0: any free port
        print(server.address)                # ('127.0.0.1', 40123)
        await server.close()
    """

    def __init__(self, iface) -> None:
        self.iface = iface
        self.core = StunServerCore()
        self._transport = None
        self._protocol: UdpEndpointProtocol | None = None

    @property
    def address(self) -> Addr:
        """The bound ``(host, port)``; valid after :meth:`start`."""
        if self._transport is None:
            raise ParameterError("StunServer.address is only known after 'await start()'")
        return tuple(self._transport.get_extra_info("sockname")[:2])

    @property
    def stats(self) -> StunStats:
        """The core's counters."""
        return self.core.stats

    async def start(self, host: str, port: int = 0) -> None:
        """Bind ``(host, port)`` and start answering.

        Parameters
        ----------
        host : str
            Address to listen on (loopback for :class:`LoopbackInterface`).
        port : int, optional
            UDP port; 0 picks a free one (read :attr:`address`).
        """
        import asyncio

        if self._transport is not None:
            raise ParameterError("StunServer.start() was already called")

        def on_datagram(data: bytes, addr) -> None:
            for reply, to in self.core.handle(data, addr, self.iface.time()):
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.sendto(reply, to)

        proto = UdpEndpointProtocol(on_datagram, asyncio.get_running_loop().create_future())
        self._transport, self._protocol = await self.iface.create_datagram_endpoint(
            lambda: proto, local_addr=(host, port)
        )

    async def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._transport is None:
            return
        transport, proto = self._transport, self._protocol
        self._transport = None
        transport.close()
        if proto is not None and proto.closed is not None:
            await proto.closed

    async def __aenter__(self) -> "StunServer":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
