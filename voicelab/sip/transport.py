"""Thin asyncio SIP transports: UDP, TCP, TLS and WebSocket (RFC 3261 18, RFC 7118).

These adapters only move bytes and cut them into messages; everything SIP means
(transactions, Via handling, choosing UDP or TCP by size, answering 400) lives in the
sans-IO layers above. Every socket is opened through a
:class:`~voicelab.net.iface.NetworkInterface` passed in, so the same transports run on
real loopback sockets (:class:`~voicelab.net.iface.LoopbackInterface`) or on the
in-process virtual network.

=============  ==========  ====================================================
class          Via token   framing
=============  ==========  ====================================================
UdpTransport   UDP         one datagram = one message (:func:`parse_message`)
TcpTransport   TCP         :class:`StreamParser` (Content-Length); a framing
                           error closes that connection only
TlsTransport   TLS         as TCP, inside TLS (``sips:`` URIs)
WsTransport    WS / WSS    one WebSocket message = one SIP message (RFC 7118),
                           subprotocol ``sip`` required both ways
=============  ==========  ====================================================

All transports share one shape: ``await t.listen(host, port)`` to accept traffic
(optional for clients), ``await t.send(data, addr)`` (connection-oriented transports
open a connection to ``addr`` on first use and reuse it; a response goes back over
the connection its request came in on because ``addr`` is that connection's peer),
``await t.close()``, and the callback ``on_message(message, addr, transport)`` for
every message received. Malformed input never raises out of a transport: it is
logged and counted in :attr:`SipTransport.stats`.

Stream keep-alives (RFC 5626 3.5.1): a ``CRLF CRLF`` ping received at a message
boundary is answered with a ``CRLF`` pong; :meth:`TcpTransport.ping` sends a ping and
waits for the pong (the caller decides how long, e.g. with :func:`asyncio.wait_for`).
A keep-alive is recognised when it starts a read at a message boundary, which is how
they arrive on an idle connection; CRLFs glued to the end of a message are skipped
silently by :class:`StreamParser`.

How aiohttp is kept on the network interface (WebSocket): the server side is
``iface.create_server(runner.server, ...)`` (aiohttp's low-level web server object is
an asyncio protocol factory, so no socket is created by aiohttp); the client side is
a :class:`aiohttp.TCPConnector` whose one connection step
(``TCPConnector._wrap_create_connection``, a private hook: re-check on aiohttp
upgrades, the WS tests fail loudly if it stops being called) calls
``iface.create_connection`` instead of opening a socket. No socket in this module
bypasses the interface.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import socket
import ssl as _ssl
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Union

from ..errors import LocalProtocolError, ParameterError, RemoteProtocolError
from ..net.iface import NetworkInterface, http_connector
from .shed import drain as _shed_drain
from .message import DEFAULT_LIMITS, Limits, Message, Request, Response, StreamParser, parse_message, validate

__all__ = [
    "ConnectionLimits",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_HEADER_TIMEOUT_S",
    "SipTransport",
    "UdpTransport",
    "TcpTransport",
    "TlsTransport",
    "WsTransport",
    "TransportStats",
    "transport_for",
    "TRANSPORT_KINDS",
    "MAX_DATAGRAM_BYTES",
]

log = logging.getLogger(__name__)

#: Largest UDP payload the transports send or accept (bytes).
MAX_DATAGRAM_BYTES = 65535
#: The WebSocket subprotocol of RFC 7118.
WS_SUBPROTOCOL = "sip"

Addr = tuple[str, int]
Payload = Union[Request, Response, bytes]
OnMessage = Callable[[Payload, Addr, "SipTransport"], Any]
OnConnectionLost = Callable[[Addr, "SipTransport", Union[BaseException, None]], Any]


@dataclass
class TransportStats:
    """Counters kept by every transport (all start at 0).

    Attributes
    ----------
    messages_received, messages_sent : int
        SIP messages delivered to ``on_message`` / handed to the network.
    bytes_received, bytes_sent : int
        Payload bytes (SIP text and keep-alives, no IP/UDP/TCP/TLS/WS overhead).
    malformed : int
        Datagrams, WebSocket messages or streams that could not be parsed or framed;
        they are dropped (a stream is closed).
    invalid : int
        Well-framed messages dropped by :func:`~voicelab.sip.message.validate`
        (only with ``validate=True``).
    oversized : int
        Incoming datagrams over the size limit, dropped.
    callback_errors : int
        Exceptions raised by ``on_message`` / ``on_connection_lost`` (logged).
    connections_opened, connections_closed : int
        Stream or WebSocket connections, both directions.
    pings_received, pongs_received, pings_sent : int
        RFC 5626 keep-alives (``CRLF CRLF`` / ``CRLF``).
    refused : int
        WebSocket upgrades refused (no ``sip`` subprotocol), and incoming connections
        refused because ``max_connections`` were open.
    idle_closed : int
        Connections closed after ``idle_timeout`` s with no byte received.
    header_timeouts : int
        Connections closed because a message stayed incomplete for ``header_timeout`` s.
    send_errors : int
        Sends that failed (connection could not be opened or was lost).
    network_errors : int
        Errors reported by the network (ICMP port unreachable on UDP, ...).
    """

    messages_received: int = 0
    messages_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    malformed: int = 0
    invalid: int = 0
    oversized: int = 0
    callback_errors: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    pings_received: int = 0
    pongs_received: int = 0
    pings_sent: int = 0
    refused: int = 0
    idle_closed: int = 0
    header_timeouts: int = 0
    send_errors: int = 0
    network_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for results tables)."""
        return asdict(self)


def _key(addr: Any) -> Addr:
    """(host, port) of an address tuple (IPv6 4-tuples lose flowinfo/scope)."""
    return (str(addr[0]), int(addr[1]))


def _check_addr(addr: Any) -> Addr:
    if (
        not isinstance(addr, (tuple, list))
        or len(addr) < 2
        or not isinstance(addr[0], str)
        or not isinstance(addr[1], int)
        or isinstance(addr[1], bool)
        or not 0 < addr[1] <= 65535
    ):
        raise ParameterError(f"addr must be a (host: str, port: int 1..65535) tuple, got {addr!r}")
    return (addr[0], addr[1])


#: Default cap on open connections per stream/WebSocket transport (both directions).
DEFAULT_MAX_CONNECTIONS = 512
#: Default seconds a connection may stay silent (no byte received) before it is closed.
DEFAULT_IDLE_TIMEOUT_S = 300.0
#: Default seconds a message may stay incomplete (headers or body half sent).
DEFAULT_HEADER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on the connections a stream or WebSocket transport keeps (defence against
    idle, half-sent and too many connections; RFC 5626 keep-alives count as traffic).

    Attributes
    ----------
    max_connections : int
        Open connections, both directions. An incoming connection over the cap is
        closed at once (counted in ``stats.refused``; a WebSocket upgrade gets HTTP 503);
        keep it below the process's descriptor limit (``ulimit -n``).
    idle_timeout : float
        Seconds without a received byte after which a connection is closed
        (``stats.idle_closed``). The peer reconnects for its next request (RFC 3261 18).
    header_timeout : float
        Seconds a message may stay incomplete on a TCP/TLS connection, or an accepted
        WebSocket connection may wait for its upgrade, before it is closed
        (``stats.header_timeouts``): a slow-loris sender holds no slot for ever.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S

    def __post_init__(self) -> None:
        m = self.max_connections
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ParameterError(f"max_connections must be an int >= 1, got {m!r}")
        for name in ("idle_timeout", "header_timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
                raise ParameterError(f"{name} must be a finite number of seconds > 0, got {v!r}")


class _RateLimitedLog:
    """One log line per condition per ``interval`` s (loop clock), with the count of the
    ones not written since; a flood of bad connections writes a line a minute, not MB/s."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warning(self, condition: str, msg: str, *args: Any) -> None:
        now = asyncio.get_running_loop().time()
        last = self._last.get(condition)
        if last is not None and now - last < self.interval:
            self._quiet[condition] = self._quiet.get(condition, 0) + 1
            return
        self._last[condition] = now
        quiet = self._quiet.pop(condition, 0)
        suffix = f" (and {quiet} more in the last {now - last:.0f} s)" if quiet and last is not None else ""
        log.warning(msg + suffix, *args)


class _AcceptErrorFilter(logging.Filter):
    """asyncio logs a full traceback for every failed accept() when the process is out of
    descriptors (EMFILE), several a second: keep one line per minute, without traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._last: float | None = None
        self._quiet = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        now = record.created  # a log record's own stamp; not protocol timing
        if self._last is not None and now - self._last < 60.0:
            self._quiet += 1
            return False
        self._last, quiet, self._quiet = now, self._quiet, 0
        exc = record.exc_info[1] if record.exc_info else None
        record.msg = "accept() failed: %s; out of file descriptors? (raise ulimit -n or lower max_connections)%s"
        record.args = (exc, f" ({quiet} more since the last line)" if quiet else "")
        record.exc_info = None
        record.exc_text = None
        return True


_accept_filter: _AcceptErrorFilter | None = None


def _quiet_accept_errors() -> None:
    """Install :class:`_AcceptErrorFilter` on the ``asyncio`` logger (once per process)."""
    global _accept_filter
    if _accept_filter is None:
        _accept_filter = _AcceptErrorFilter()
        logging.getLogger("asyncio").addFilter(_accept_filter)


class SipTransport(abc.ABC):
    """What every SIP transport offers; see the module docstring.

    Parameters
    ----------
    iface : NetworkInterface
        Opens every socket (:class:`~voicelab.net.iface.LoopbackInterface`, a vnet host).
    on_message : callable, optional
        ``on_message(message, addr, transport)``, called for each message received;
        ``message`` is a :class:`Request` / :class:`Response` (or its bytes with
        ``parse=False``), ``addr`` the peer's ``(host, port)`` to pass back to
        :meth:`send` for a reply. Runs inside the transport's protocol callback: keep
        it short (schedule work with :func:`asyncio.create_task` if needed).
        Exceptions are logged and counted, never propagated.
    on_connection_lost : callable, optional
        ``on_connection_lost(addr, transport, exc)`` when a connection closes (stream
        and WebSocket transports).
    limits : Limits, optional
        Message size limits (:data:`~voicelab.sip.message.DEFAULT_LIMITS`); also the
        largest message :meth:`send` accepts.
    parse : bool, optional
        Deliver parsed messages (default). With False, UDP delivers the raw datagram
        and stream transports the exact bytes of each framed message.
    validate : bool, optional
        Drop (and count as ``invalid``) messages failing
        :func:`~voicelab.sip.message.validate`. Default False: the layer above sees
        them and can answer 400 / 505 itself.
    connection_limits : ConnectionLimits, optional
        Connection cap, idle and header timeouts (stream and WebSocket transports;
        ignored by UDP). Default :class:`ConnectionLimits()`.
    """

    #: Short name used by :func:`transport_for`.
    kind: ClassVar[str] = ""
    #: The transport token in Via (RFC 3261 20.42, RFC 7118 7).
    via_token: ClassVar[str] = ""
    #: URI scheme that selects this transport (``sips`` for TLS / WSS).
    scheme: ClassVar[str] = "sip"
    #: Whether the transport is reliable (no retransmission of requests needed).
    reliable: ClassVar[bool] = True

    def __init__(
        self,
        iface: NetworkInterface,
        *,
        on_message: OnMessage | None = None,
        on_connection_lost: OnConnectionLost | None = None,
        limits: Limits = DEFAULT_LIMITS,
        parse: bool = True,
        validate: bool = False,
        connection_limits: ConnectionLimits | None = None,
        reuse_port: bool = False,
    ) -> None:
        if not isinstance(iface, NetworkInterface):
            raise ParameterError(
                f"iface must be a voicelab.net.iface.NetworkInterface (e.g. LoopbackInterface()), got {type(iface).__name__}"
            )
        if not isinstance(limits, Limits):
            raise ParameterError(f"limits must be a voicelab.sip.message.Limits, got {type(limits).__name__}")
        self.iface = iface
        self.on_message = on_message
        self.on_connection_lost = on_connection_lost
        self.limits = limits
        self.parse = bool(parse)
        self.validate = bool(validate)
        if connection_limits is not None and not isinstance(connection_limits, ConnectionLimits):
            raise ParameterError(
                f"connection_limits must be a voicelab.sip.transport.ConnectionLimits, got {type(connection_limits).__name__}"
            )
        self.connection_limits = connection_limits or ConnectionLimits()
        #: SO_REUSEPORT on the listening socket: several processes (``agent serve --workers``)
        #: share the port; the kernel picks one per source address and port (UDP) or connection.
        self.reuse_port = bool(reuse_port)
        self.stats = TransportStats()
        self._closed = False
        self._local_addr: Addr | None = None
        self._rlog = _RateLimitedLog()

    # -- public API ------------------------------------------------------------------
    @property
    def local_addr(self) -> Addr | None:
        """``(host, port)`` this transport listens on, None before :meth:`listen`."""
        return self._local_addr

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @abc.abstractmethod
    async def listen(self, host: str | None = None, port: int = 0) -> Addr:
        """Start accepting traffic on ``(host, port)``; return the bound address.

        Parameters
        ----------
        host : str, optional
            Default: the interface's first address.
        port : int, optional
            0 (default) picks a free port.
        """

    @abc.abstractmethod
    async def send(self, data: bytes | Message, addr: Addr) -> None:
        """Send one SIP message to ``addr``.

        Parameters
        ----------
        data : bytes or Request or Response
            One whole message.
        addr : tuple (host, port)
            The peer: an address received with ``on_message`` to reply, or where to
            open a new connection.

        Raises
        ------
        LocalProtocolError
            The message is larger than the limits, or the transport is closed.
        ParameterError
            Bad ``data`` or ``addr`` (or an address the interface refuses).
        OSError
            A connection could not be opened (refused, TLS verification failed, ...).
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the listener and every connection; wait until they are gone."""

    async def __aenter__(self) -> "SipTransport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.via_token} local={self._local_addr} closed={self._closed}>"

    # -- helpers for subclasses ------------------------------------------------------
    def _payload(self, data: bytes | Message, limit: int | None = None) -> bytes:
        if self._closed:
            raise LocalProtocolError(f"{type(self).__name__} is closed; open a new transport to send")
        if isinstance(data, Message):
            data = bytes(data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
        else:
            raise ParameterError(f"data must be bytes or a Request/Response, got {type(data).__name__}")
        limit = self.limits.max_message_bytes if limit is None else min(limit, self.limits.max_message_bytes)
        if len(data) > limit:
            raise LocalProtocolError(
                f"message of {len(data)} bytes is over the {limit}-byte limit of {self.via_token}; "
                "use a stream transport or raise Limits.max_message_bytes",
                status_code=513,
            )
        return data

    def _listen_options(self) -> dict[str, Any]:
        return {"reuse_port": True} if self.reuse_port else {}

    def _sent(self, n: int) -> None:
        self.stats.messages_sent += 1
        self.stats.bytes_sent += n

    def _deliver(self, msg: Request | Response, raw: bytes | None, addr: Addr) -> None:
        if self.validate:
            try:
                validate(msg)
            except RemoteProtocolError as exc:
                self.stats.invalid += 1
                log.warning("%s: dropped invalid message from %s: %s", self.via_token, addr, exc)
                return
        payload: Payload = msg if self.parse else (raw if raw is not None else bytes(msg))
        self.stats.messages_received += 1
        self._callback(self.on_message, payload, addr, self)

    def _callback(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a user callback must not kill the transport
            self.stats.callback_errors += 1
            log.exception("%s: callback %r raised", self.via_token, fn)

    def _parse_one(self, data: bytes, addr: Addr) -> None:
        """Parse one whole message (datagram or WebSocket message) and deliver it."""
        if not self.parse and not self.validate:
            self.stats.messages_received += 1
            self._callback(self.on_message, data, addr, self)
            return
        try:
            msg = parse_message(data, datagram=True, validate=False, limits=self.limits)
        except RemoteProtocolError as exc:
            self.stats.malformed += 1
            log.warning("%s: dropped malformed message (%d bytes) from %s: %s", self.via_token, len(data), addr, exc)
            return
        except Exception:  # noqa: BLE001 - the parser should only raise RemoteProtocolError
            self.stats.malformed += 1
            log.exception("%s: parser failed on %d bytes from %s", self.via_token, len(data), addr)
            return
        self._deliver(msg, data, addr)


# ---------------------------------------------------------------------------------------
# UDP
# ---------------------------------------------------------------------------------------


class _ConnectionCache:
    """One outgoing connection per peer for connection-oriented transports (TCP, TLS, WS):
    reused while usable, opened at most once at a time per peer (a lock per key)."""

    _conns: dict
    _locks: dict
    _closed: bool

    async def _connection(self, key: Addr) -> Any:
        conn = self._conns.get(key)
        if conn is not None and conn.usable:
            return conn
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and conn.usable:
                return conn
            if self._closed:
                raise LocalProtocolError(f"{type(self).__name__} is closed")
            conn = await self._open(key)  # type: ignore[attr-defined]
            self._conns[key] = conn
            return conn


#: Datagrams read in one readiness callback at most (the first from asyncio, the rest drained here).
UDP_BATCH = 32
#: Datagrams read in one readiness callback at most when the C accelerator drains the
#: socket for an overloaded agent (refusals cost ~1 us each there; at most UDP_BATCH of
#: them are delivered to Python).
UDP_BATCH_SHED = 256
#: Receive buffer asked for on a SIP UDP socket (bytes; the kernel caps it at
#: net.core.rmem_max). Linux's default (208 KiB) holds ~160 SIP datagrams: at 2,400
#: messages/s (800 calls/s) a 70 ms scheduling stall overflows it, and every datagram
#: dropped costs a caller's retransmission 500 ms later. 4 MiB holds about a second.
UDP_RCVBUF = 4 * 1024 * 1024


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "UdpTransport") -> None:
        self.owner = owner
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sock: socket.socket | None = None
        #: readiness callbacks that drained more than the one datagram asyncio read
        self.batches = 0
        self._c_drain = False  # the socket suits the C accelerator's drain (AF_INET)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ts = transport.get_extra_info("socket")
        if ts is not None and hasattr(ts, "fileno") and ts.fileno() >= 0:
            # a second handle on the same non-blocking socket, to drain what is queued in
            # one event-loop callback instead of one select() round per datagram
            self._sock = socket.socket(ts.family, ts.type, ts.proto, fileno=os.dup(ts.fileno()))
            self._c_drain = _shed_drain is not None and ts.family == socket.AF_INET
            try:
                if self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < UDP_RCVBUF:
                    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            except OSError:  # not allowed here: the default buffer still works
                pass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        owner = self.owner
        owner._on_datagram(data, _key(addr))
        sock = self._sock
        if sock is None or owner._closed:
            return
        if self._c_drain:
            hook = owner.shed_hook
            if hook is not None:
                return self._drain_shedding(sock, hook)
        for n in range(UDP_BATCH - 1):
            try:
                data, addr = sock.recvfrom(262144)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self.error_received(exc)
                break
            if n == 0:
                self.batches += 1
            owner._on_datagram(data, _key(addr))
            if owner._closed:
                break

    def _drain_shedding(self, sock: socket.socket, hook: tuple) -> None:
        """Drain with the C accelerator (:func:`voicelab.sip.shed.drain`): refusals and the
        ACKs of refusals handled in C by the batch, the rest delivered here in order; up
        to :data:`UDP_BATCH_SHED` datagrams, at most :data:`UDP_BATCH` of them delivered."""
        owner = self.owner
        decide, counted = hook
        stats = owner.stats
        fd = sock.fileno()
        limit = min(MAX_DATAGRAM_BYTES, owner.limits.max_message_bytes)
        delivered = 0
        for _ in range(UDP_BATCH_SHED // UDP_BATCH):
            try:
                others, got, consumed, acks, refused, sent, unsent = _shed_drain(fd, UDP_BATCH, limit, decide)
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                self.error_received(exc)
                return
            if not got:
                return
            self.batches += 1
            if consumed:
                stats.bytes_received += consumed
                stats.messages_received += acks + refused
                stats.messages_sent += refused
                stats.bytes_sent += sent
                counted(acks, refused)
            for resp, dest in unsent:  # the socket's buffer was full: asyncio queues them
                owner._transport.sendto(resp, dest)  # type: ignore[union-attr]
                stats.bytes_sent += len(resp)
            for data, addr in others:
                owner._on_datagram(data, addr)
                if owner._closed:
                    return
            delivered += len(others)
            if got < UDP_BATCH or delivered >= UDP_BATCH:
                return

    def error_received(self, exc: Exception) -> None:
        self.owner.stats.network_errors += 1
        log.info("UDP: network error on %s: %s", self.owner.local_addr, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if not self.lost.done():
            self.lost.set_result(None)


class UdpTransport(SipTransport):
    """SIP over UDP: one datagram carries one message (RFC 3261 18.1, 18.3).

    The socket is bound by :meth:`listen`, or on the first :meth:`send` (port 0).
    Replies to a request go to the source address it came from (``addr`` in
    ``on_message``). Datagrams holding only CRLFs (keep-alives some UAs send) are
    counted as pings and otherwise ignored. Incoming or outgoing datagrams over
    :data:`MAX_DATAGRAM_BYTES` (or ``limits.max_message_bytes``) are refused.

    Parameters
    ----------
    iface : NetworkInterface
    **options
        ``on_message``, ``limits``, ``parse``, ``validate``: see :class:`SipTransport`.
    """

    kind = "udp"
    via_token = "UDP"
    reliable = False
    #: (decide, counted) of an overloaded agent: with the C accelerator the socket is then
    #: drained by :func:`voicelab.sip.shed.drain` (refusals in C); None: plain reads.
    shed_hook: tuple | None = None

    def __init__(self, iface: NetworkInterface, **options: Any) -> None:
        super().__init__(iface, **options)
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _UdpProtocol | None = None
        self._bind_lock = asyncio.Lock()

    async def listen(self, host: str | None = None, port: int = 0) -> Addr:
        """Bind the UDP socket; see :meth:`SipTransport.listen`."""
        async with self._bind_lock:
            if self._transport is not None:
                raise ParameterError(f"UdpTransport already bound to {self._local_addr}; create another transport")
            return await self._bind(host, port)

    async def _bind(self, host: str | None, port: int) -> Addr:
        if self._closed:
            raise LocalProtocolError("UdpTransport is closed; open a new transport")
        host = host if host is not None else self.iface.host_addresses()[0]
        transport, protocol = await self.iface.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(host, port),
                                                                     **self._listen_options())
        self._transport, self._protocol = transport, protocol  # type: ignore[assignment]
        self._local_addr = _key(transport.get_extra_info("sockname"))
        return self._local_addr

    async def send(self, data: bytes | Message, addr: Addr) -> None:
        """Send one datagram (binding port 0 first if needed); see :meth:`SipTransport.send`."""
        payload = self._payload(data, MAX_DATAGRAM_BYTES)
        addr = _check_addr(addr)
        if self._transport is None:
            async with self._bind_lock:
                if self._transport is None:
                    await self._bind(None, 0)
        assert self._transport is not None
        self._transport.sendto(payload, addr)
        self._sent(len(payload))

    def send_now(self, data: bytes | Message, addr: Addr) -> bool:
        """Send one datagram at once if the socket is bound (no task); False if it is not.

        Same checks and errors as :meth:`send`; the fast path of
        :class:`voicelab.calls.AsyncUserAgent` (one task per datagram costs more than
        the send).
        """
        tr = self._transport
        if tr is None:
            return False
        if (type(data) is not bytes or self._closed or len(data) > MAX_DATAGRAM_BYTES
                or len(data) > self.limits.max_message_bytes):  # (the checks of _payload, bytes inline)
            data = self._payload(data, MAX_DATAGRAM_BYTES)
        tr.sendto(data, _check_addr(addr))
        stats = self.stats
        stats.messages_sent += 1
        stats.bytes_sent += len(data)
        return True

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        stats = self.stats
        n = len(data)
        stats.bytes_received += n
        if n > MAX_DATAGRAM_BYTES or n > self.limits.max_message_bytes:
            stats.oversized += 1
            log.warning("UDP: dropped %d-byte datagram from %s (over the limit)", n, addr)
            return
        if data[:1] in b"\r\n" and not data.strip(b"\r\n"):  # (strip copies: only when it may be a ping)
            stats.pings_received += 1
            return
        if self.parse or self.validate:
            return self._parse_one(data, addr)
        stats.messages_received += 1  # raw delivery (_parse_one's first case, one call less per datagram)
        fn = self.on_message
        if fn is not None:
            try:
                fn(data, addr, self)
            except Exception:  # noqa: BLE001 - a user callback must not kill the transport
                stats.callback_errors += 1
                log.exception("%s: callback %r raised", self.via_token, fn)

    async def close(self) -> None:
        """Close the socket; see :meth:`SipTransport.close`."""
        if self._closed:
            return
        self._closed = True
        if self._transport is not None and self._protocol is not None:
            self._transport.close()
            await self._protocol.lost


# ---------------------------------------------------------------------------------------
# TCP / TLS
# ---------------------------------------------------------------------------------------


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: framing and keep-alives; delivery goes to the owner."""

    def __init__(self, owner: "TcpTransport", incoming: bool = False) -> None:
        self.owner = owner
        self.incoming = incoming
        self.parser = StreamParser(validate=False, limits=owner.limits)
        self.last_rx = asyncio.get_running_loop().time()
        self.partial_since: float | None = None  # loop time the buffered partial message began
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.peer: Addr | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pong_waiters: list[asyncio.Future[None]] = []
        self._crlfs = 0  # CRLFs seen in the current run at a message boundary
        self._cr = False  # a lone CR ended the last read at a boundary

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = _key(transport.get_extra_info("peername"))
        self.owner._register(self)

    def data_received(self, data: bytes) -> None:
        self.owner.stats.bytes_received += len(data)
        self.last_rx = now = asyncio.get_running_loop().time()
        data = self._keepalives(data)
        if data:
            self.owner._feed(self, data)
        if not self.parser.buffered:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now
            if self.timer is not None:  # the header deadline comes before the idle one
                self.timer.cancel()
                self.arm()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for w in self.pong_waiters:
            if not w.done():
                w.set_exception(ConnectionResetError(f"connection to {self.peer} closed before the pong"))
        self.pong_waiters.clear()
        self.owner._unregister(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- helpers ---------------------------------------------------------------------
    def arm(self) -> None:
        """(Re)arm the one timer of this connection at its next deadline (loop clock)."""
        lim = self.owner.connection_limits
        due = self.last_rx + lim.idle_timeout
        if self.partial_since is not None:
            due = min(due, self.partial_since + lim.header_timeout)
        self.timer = asyncio.get_running_loop().call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if not self.usable:
            return
        now = asyncio.get_running_loop().time()
        lim = self.owner.connection_limits
        if self.partial_since is not None and now >= self.partial_since + lim.header_timeout:
            self.owner.stats.header_timeouts += 1
            self.owner._rlog.warning("header-timeout", "%s: closed a connection from %s: a message stayed incomplete "
                                     "for %g s (header_timeout)", self.owner.via_token, self.peer, lim.header_timeout)
            self.transport.abort()  # type: ignore[union-attr]
        elif now >= self.last_rx + lim.idle_timeout:
            self.owner.stats.idle_closed += 1
            self.owner._rlog.warning("idle", "%s: closed a connection with %s idle for %g s (idle_timeout)",
                                     self.owner.via_token, self.peer, lim.idle_timeout)
            self.transport.close()  # type: ignore[union-attr]
        else:
            self.arm()

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def _keepalives(self, data: bytes) -> bytes:
        """Strip and answer RFC 5626 keep-alives that start a read at a message boundary."""
        if self.parser.buffered:
            return data
        if self._cr:
            data = b"\r" + data
            self._cr = False
        i = 0
        while data.startswith(b"\r\n", i):
            i += 2
            self._crlfs += 1
            if self._crlfs == 2:  # CRLF CRLF: a ping; answer with a pong (one CRLF)
                self._crlfs = 0
                self.owner.stats.pings_received += 1
                if self.usable:
                    self.write(b"\r\n")
                    self.owner.stats.bytes_sent += 2
        rest = data[i:]
        if rest == b"\r":
            self._cr = True
            return b""
        if self._crlfs == 1:  # a single CRLF: a pong
            self._crlfs = 0
            self.owner.stats.pongs_received += 1
            for w in self.pong_waiters:
                if not w.done():
                    w.set_result(None)
            self.pong_waiters.clear()
        return rest


class TcpTransport(_ConnectionCache, SipTransport):
    """SIP over TCP (RFC 3261 18): a listener plus connections reused per peer address.

    Connections are kept in one table keyed by the peer's ``(host, port)``, whichever
    side opened them, so a reply to ``addr`` from ``on_message`` goes back over the
    connection the request came in on, and later sends to the same peer reuse an
    outgoing connection. Messages are framed with :class:`StreamParser`; a framing
    error (or a message over the limits) is counted as ``malformed`` and closes that
    connection only.

    Parameters
    ----------
    iface : NetworkInterface
    **options
        ``on_message``, ``on_connection_lost``, ``limits``, ``parse``, ``validate``:
        see :class:`SipTransport`.
    """

    kind = "tcp"
    via_token = "TCP"

    _server_ssl: _ssl.SSLContext | None = None
    _client_ssl: _ssl.SSLContext | None = None
    _server_hostname: str | None = None

    def __init__(self, iface: NetworkInterface, **options: Any) -> None:
        super().__init__(iface, **options)
        self._server: Any = None
        self._conns: dict[Addr, _StreamConnection] = {}
        self._all: set[_StreamConnection] = set()
        self._locks: dict[Addr, asyncio.Lock] = {}

    @property
    def connections(self) -> list[Addr]:
        """Peer addresses of the open connections."""
        return sorted({c.peer for c in self._all if c.peer is not None})

    async def listen(self, host: str | None = None, port: int = 0) -> Addr:
        """Start the listener; see :meth:`SipTransport.listen`."""
        if self._closed:
            raise LocalProtocolError(f"{type(self).__name__} is closed; open a new transport")
        if self._server is not None:
            raise ParameterError(f"{type(self).__name__} already listens on {self._local_addr}")
        host = host if host is not None else self.iface.host_addresses()[0]
        self._server = await self.iface.create_server(
            lambda: _StreamConnection(self, incoming=True), host, port, ssl=self._server_ssl, **self._listen_options()
        )
        _quiet_accept_errors()
        self._local_addr = _key(self._server.sockets[0].getsockname())
        return self._local_addr

    async def send(self, data: bytes | Message, addr: Addr) -> None:
        """Send over the connection to ``addr``, opening one if needed; see :meth:`SipTransport.send`."""
        payload = self._payload(data)
        conn = await self._connection(_check_addr(addr))
        conn.write(payload)
        self._sent(len(payload))

    async def ping(self, addr: Addr) -> None:
        """Send an RFC 5626 ``CRLF CRLF`` ping to ``addr`` and wait for the ``CRLF`` pong.

        Wrap in :func:`asyncio.wait_for` to bound the wait (RFC 5626 4.4.1 uses 10 s).

        Raises
        ------
        ConnectionResetError
            The connection closed before the pong arrived.
        """
        if self._closed:
            raise LocalProtocolError(f"{type(self).__name__} is closed")
        conn = await self._connection(_check_addr(addr))
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.pong_waiters.append(waiter)
        conn.write(b"\r\n\r\n")
        self.stats.pings_sent += 1
        self.stats.bytes_sent += 4
        await waiter

    async def close(self) -> None:
        """Close the listener and all connections; see :meth:`SipTransport.close`."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        conns = list(self._all)
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        if conns:
            # TLS close waits for the peer's close_notify; bound it, then abort.
            _, pending = await asyncio.wait([c.closed for c in conns], timeout=5.0)
            for c in conns:
                if c.closed in pending and c.transport is not None:
                    c.transport.abort()
            if pending:
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()

    # -- internals -------------------------------------------------------------------
    async def _open(self, key: Addr) -> _StreamConnection:
        try:
            _, proto = await self.iface.create_connection(
                lambda: _StreamConnection(self),
                key[0],
                key[1],
                ssl=self._client_ssl,
                server_hostname=self._server_hostname if self._client_ssl is not None else None,
            )
        except OSError:
            self.stats.send_errors += 1
            raise
        assert isinstance(proto, _StreamConnection)
        return proto  # also filed under ``key`` (e.g. "localhost") by _connection

    def _register(self, conn: _StreamConnection) -> None:
        assert conn.peer is not None and conn.transport is not None
        cap = self.connection_limits.max_connections
        if conn.incoming and len(self._all) >= cap:
            self.stats.refused += 1
            self._rlog.warning("cap", "%s: refused a connection from %s: %d connections open (max_connections)",
                               self.via_token, conn.peer, cap)
            conn.transport.abort()  # its connection_lost finds it unregistered
            return
        self._all.add(conn)
        self._conns[conn.peer] = conn
        self.stats.connections_opened += 1
        if self._closed:
            conn.transport.close()
            return
        conn.arm()

    def _unregister(self, conn: _StreamConnection, exc: BaseException | None) -> None:
        if conn not in self._all:
            return
        self._all.discard(conn)
        for k in [k for k, c in self._conns.items() if c is conn]:
            del self._conns[k]
            self._locks.pop(k, None)
        self.stats.connections_closed += 1
        if conn.peer is not None:
            self._callback(self.on_connection_lost, conn.peer, self, exc)

    def _feed(self, conn: _StreamConnection, data: bytes) -> None:
        assert conn.peer is not None
        try:
            msgs = conn.parser.feed(data)
            while msgs:
                for m in msgs:
                    self._deliver(m, None, conn.peer)
                msgs = conn.parser.feed(b"")  # raises an error held back behind messages
        except RemoteProtocolError as exc:
            self._framing_failed(conn, exc)
        except Exception as exc:  # noqa: BLE001 - the parser should only raise RemoteProtocolError
            log.exception("%s: parser failed on data from %s", self.via_token, conn.peer)
            self._framing_failed(conn, exc)

    def _framing_failed(self, conn: _StreamConnection, exc: BaseException) -> None:
        self.stats.malformed += 1
        self._rlog.warning("framing", "%s: closing connection with %s after a framing error: %s", self.via_token,
                           conn.peer, exc)
        if conn.transport is not None:
            conn.transport.close()


class TlsTransport(TcpTransport):
    """SIP over TLS (RFC 3261 26.2, ``sips:`` URIs): :class:`TcpTransport` inside TLS.

    Parameters
    ----------
    iface : NetworkInterface
    server_ssl : ssl.SSLContext, optional
        Needed for :meth:`listen` (see :func:`voicelab.tlsutil.server_ssl_context`).
    client_ssl : ssl.SSLContext, optional
        For outgoing connections (see :func:`voicelab.tlsutil.client_ssl_context`);
        default: verify against the system trust store.
    server_hostname : str, optional
        Name to check server certificates against (default: the host connected to).
    **options
        As for :class:`SipTransport`.
    """

    kind = "tls"
    via_token = "TLS"
    scheme = "sips"

    def __init__(
        self,
        iface: NetworkInterface,
        *,
        server_ssl: _ssl.SSLContext | None = None,
        client_ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(iface, **options)
        for name, ctx in (("server_ssl", server_ssl), ("client_ssl", client_ssl)):
            if ctx is not None and not isinstance(ctx, _ssl.SSLContext):
                raise ParameterError(f"{name} must be an ssl.SSLContext (see voicelab.tlsutil), got {type(ctx).__name__}")
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl if client_ssl is not None else _default_client_ssl()
        self._server_hostname = server_hostname

    async def listen(self, host: str | None = None, port: int = 0) -> Addr:
        """Start the TLS listener; needs ``server_ssl``."""
        if self._server_ssl is None:
            raise ParameterError("TlsTransport.listen needs server_ssl (voicelab.tlsutil.server_ssl_context)")
        return await super().listen(host, port)


def _default_client_ssl() -> _ssl.SSLContext:
    from ..tlsutil import client_ssl_context

    return client_ssl_context()


# ---------------------------------------------------------------------------------------
# WebSocket (RFC 7118)
# ---------------------------------------------------------------------------------------


class _WsConnection:
    """One WebSocket carrying SIP, server or client side."""

    def __init__(self, ws: Any, peer: Addr) -> None:
        self.ws = ws
        self.peer = peer
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def usable(self) -> bool:
        return not self.ws.closed


class _HttpGuard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one accepted connection of a :class:`WsTransport`:
    caps the connections still before their WebSocket upgrade, and closes one that has
    not been upgraded within ``header_timeout`` s (a half-sent or idle HTTP request);
    aiohttp itself has no header timeout. Everything else is passed through."""

    def __init__(self, owner: "WsTransport", inner: asyncio.Protocol) -> None:
        self.owner, self.inner = owner, inner
        self.transport: Any = None
        self.timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        owner = self.owner
        cap = owner.connection_limits.max_connections
        if len(owner._guards) >= cap:
            self.refused = True
            owner.stats.refused += 1
            owner._rlog.warning("cap-http", "%s: refused a connection from %s: %d connections waiting for their "
                                "WebSocket upgrade (max_connections)", owner.via_token,
                                transport.get_extra_info("peername"), cap)
            transport.abort()
            return
        owner._guards[transport] = self
        self.timer = asyncio.get_running_loop().call_later(owner.connection_limits.header_timeout, self._deadline)
        self.inner.connection_made(transport)

    def upgraded(self) -> None:
        """The WebSocket is up: from now on its idle timeout applies, not this one."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.owner._guards.pop(self.transport, None)

    def _deadline(self) -> None:
        self.timer = None
        owner = self.owner
        owner.stats.header_timeouts += 1
        owner._rlog.warning("header-timeout", "%s: closed a connection from %s: no WebSocket upgrade within %g s "
                            "(header_timeout)", owner.via_token, self.transport.get_extra_info("peername"),
                            owner.connection_limits.header_timeout)
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.owner._guards.pop(self.transport, None)
        self.inner.connection_lost(exc)


class WsTransport(_ConnectionCache, SipTransport):
    """SIP over WebSocket (RFC 7118) with aiohttp: one WebSocket message per SIP message.

    The server accepts upgrades on ``path`` only with the ``sip`` subprotocol (others
    get HTTP 400 and count as ``refused``); the client offers ``sip`` and drops the
    connection if the server does not select it. Messages are sent as text frames
    (binary when not UTF-8); both kinds are accepted. A malformed WebSocket message
    is dropped; the connection stays up (framing is the WebSocket's, not ours).

    Parameters
    ----------
    iface : NetworkInterface
    path : str, optional
        HTTP path of the WebSocket endpoint (default ``"/"``), both sides.
    secure : bool, optional
        WSS (``wss://``, Via token ``WSS``); implied by ``server_ssl`` / ``client_ssl``.
    server_ssl, client_ssl : ssl.SSLContext, optional
        As for :class:`TlsTransport`.
    **options
        As for :class:`SipTransport`.
    """

    kind = "ws"
    via_token = "WS"

    def __init__(
        self,
        iface: NetworkInterface,
        *,
        path: str = "/",
        secure: bool = False,
        server_ssl: _ssl.SSLContext | None = None,
        client_ssl: _ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        super().__init__(iface, **options)
        if not isinstance(path, str) or not path.startswith("/"):
            raise ParameterError(f"path must be an absolute HTTP path such as '/', got {path!r}")
        for name, ctx in (("server_ssl", server_ssl), ("client_ssl", client_ssl)):
            if ctx is not None and not isinstance(ctx, _ssl.SSLContext):
                raise ParameterError(f"{name} must be an ssl.SSLContext (see voicelab.tlsutil), got {type(ctx).__name__}")
        self.path = path
        self.secure = bool(secure or server_ssl is not None or client_ssl is not None)
        if self.secure:
            self.kind = "wss"  # type: ignore[misc]
            self.via_token = "WSS"  # type: ignore[misc]
            self.scheme = "sips"  # type: ignore[misc]
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._runner: Any = None
        self._server: Any = None
        self._session: Any = None
        self._conns: dict[Addr, _WsConnection] = {}
        self._all: set[_WsConnection] = set()
        self._locks: dict[Addr, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted_peers: OrderedDict[Addr, None] = OrderedDict()  # clients that connected to us (bounded)
        self._guards: dict[Any, _HttpGuard] = {}  # accepted connections not upgraded yet

    @property
    def connections(self) -> list[Addr]:
        """Peer addresses of the open WebSocket connections."""
        return sorted({c.peer for c in self._all})

    async def listen(self, host: str | None = None, port: int = 0) -> Addr:
        """Start the aiohttp server (through ``iface.create_server``); see :meth:`SipTransport.listen`."""
        from aiohttp import web

        if self._closed:
            raise LocalProtocolError("WsTransport is closed; open a new transport")
        if self._runner is not None:
            raise ParameterError(f"WsTransport already listens on {self._local_addr}")
        if self.secure and self._server_ssl is None:
            raise ParameterError("a secure WsTransport needs server_ssl to listen (voicelab.tlsutil.server_ssl_context)")
        app = web.Application()
        app.router.add_get(self.path, self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        self._runner = runner
        host = host if host is not None else self.iface.host_addresses()[0]
        # runner.server is aiohttp's protocol factory: the interface opens the socket.
        factory = runner.server
        self._server = await self.iface.create_server(lambda: _HttpGuard(self, factory()), host, port,
                                                      ssl=self._server_ssl, **self._listen_options())
        _quiet_accept_errors()
        self._local_addr = _key(self._server.sockets[0].getsockname())
        return self._local_addr

    async def send(self, data: bytes | Message, addr: Addr) -> None:
        """Send one WebSocket message, connecting to ``addr`` if needed.

        Raises
        ------
        RemoteProtocolError
            The server refused the upgrade or did not select the ``sip`` subprotocol.

        See :meth:`SipTransport.send` for the rest.
        """
        payload = self._payload(data)
        key = _check_addr(addr)
        conn = self._conns.get(key)
        if (conn is None or not conn.usable) and key in self._accepted_peers:
            # RFC 7118 5: a WebSocket client cannot be connected back to; its
            # connection is gone, so is the way to it
            self.stats.send_errors += 1
            raise LocalProtocolError(f"the WebSocket connection from {key[0]}:{key[1]} is closed; "
                                     "a WebSocket client cannot be connected back to (RFC 7118)", status_code=503)
        conn = await self._connection(key)
        try:
            text: str | None = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        try:
            if text is None:
                await conn.ws.send_bytes(payload)
            else:
                await conn.ws.send_str(text)
        except OSError:  # the connection went away under us (aiohttp's reset errors)
            self.stats.send_errors += 1
            raise
        self._sent(len(payload))

    async def close(self) -> None:
        """Close every WebSocket, the client session and the server; see :meth:`SipTransport.close`."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        conns = list(self._all)
        await asyncio.gather(*(c.ws.close() for c in conns), return_exceptions=True)
        if conns:
            await asyncio.wait([c.done for c in conns], timeout=5.0)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- server side -----------------------------------------------------------------
    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        ws = web.WebSocketResponse(protocols=(WS_SUBPROTOCOL,), max_msg_size=self.limits.max_message_bytes)
        ready = ws.can_prepare(request)
        if not ready.ok:
            return web.Response(status=400, text="expected a WebSocket upgrade (RFC 7118)\n")
        if ready.protocol != WS_SUBPROTOCOL:
            self.stats.refused += 1
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            log.warning("%s: refused a WebSocket without the 'sip' subprotocol (offered %r)", self.via_token, offered)
            return web.Response(status=400, text="SIP over WebSocket needs the 'sip' subprotocol (RFC 7118)\n")
        if self._closed:
            return web.Response(status=503, text="shutting down\n")
        cap = self.connection_limits.max_connections
        if len(self._all) >= cap:
            self.stats.refused += 1
            self._rlog.warning("cap", "%s: refused a WebSocket from %s: %d connections open (max_connections)",
                               self.via_token, request.remote, cap)
            return web.Response(status=503, text=f"too many connections ({cap}); try again later\n",
                                headers={"Retry-After": "30"})
        await ws.prepare(request)
        guard = self._guards.get(request.transport)
        if guard is not None:
            guard.upgraded()
        peer = _key(request.transport.get_extra_info("peername"))
        self._accepted_peers[peer] = None
        self._accepted_peers.move_to_end(peer)
        while len(self._accepted_peers) > 65536:
            self._accepted_peers.popitem(last=False)
        conn = _WsConnection(ws, peer)
        self._register(conn)
        try:
            await self._read(conn)
        finally:
            self._unregister(conn)
        return ws

    # -- client side -----------------------------------------------------------------
    async def _open(self, key: Addr) -> _WsConnection:
        import aiohttp
        from yarl import URL

        if self._session is None:
            self._session = aiohttp.ClientSession(connector=http_connector(self.iface))
        host, port = key
        url = URL.build(scheme="wss" if self.secure else "ws", host=host, port=port, path=self.path)
        kwargs: dict[str, Any] = {}
        if self.secure:
            kwargs["ssl"] = self._client_ssl if self._client_ssl is not None else _default_client_ssl()
        try:
            ws = await self._session.ws_connect(
                url, protocols=(WS_SUBPROTOCOL,), max_msg_size=self.limits.max_message_bytes, **kwargs
            )
        except aiohttp.WSServerHandshakeError as exc:
            self.stats.send_errors += 1
            raise RemoteProtocolError(
                f"WebSocket upgrade to {url} refused with HTTP {exc.status}: {exc.message}", status_code=exc.status or 400
            ) from None
        except aiohttp.ClientConnectorError as exc:
            self.stats.send_errors += 1
            raise exc.os_error from None
        if ws.protocol != WS_SUBPROTOCOL:
            self.stats.send_errors += 1
            await ws.close()
            raise RemoteProtocolError(
                f"WebSocket server at {url} did not select the 'sip' subprotocol (RFC 7118); got {ws.protocol!r}"
            )
        conn = _WsConnection(ws, key)
        self._register(conn)
        task = asyncio.get_running_loop().create_task(self._client_reader(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def _client_reader(self, conn: _WsConnection) -> None:
        try:
            await self._read(conn)
        finally:
            self._unregister(conn)

    # -- both sides ------------------------------------------------------------------
    async def _read(self, conn: _WsConnection) -> None:
        import aiohttp

        idle = self.connection_limits.idle_timeout
        while True:
            try:
                msg = await conn.ws.receive(timeout=idle)
            except asyncio.TimeoutError:
                self.stats.idle_closed += 1
                self._rlog.warning("idle", "%s: closed a WebSocket with %s idle for %g s (idle_timeout)",
                                   self.via_token, conn.peer, idle)
                await conn.ws.close()
                return
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = msg.data.encode("utf-8")
            elif msg.type == aiohttp.WSMsgType.BINARY:
                data = msg.data
            else:  # ERROR (e.g. message over max_msg_size): aiohttp closes the socket
                self.stats.malformed += 1
                self._rlog.warning("ws-error", "%s: WebSocket error from %s: %s", self.via_token, conn.peer, msg.data)
                if conn.ws.closed:
                    return
                continue
            self.stats.bytes_received += len(data)
            self._parse_one(data, conn.peer)

    def _register(self, conn: _WsConnection) -> None:
        self._all.add(conn)
        self._conns[conn.peer] = conn
        self.stats.connections_opened += 1

    def _unregister(self, conn: _WsConnection) -> None:
        if conn not in self._all:
            return
        self._all.discard(conn)
        for k in [k for k, c in self._conns.items() if c is conn]:
            del self._conns[k]
            self._locks.pop(k, None)
        self.stats.connections_closed += 1
        if not conn.done.done():
            conn.done.set_result(None)
        self._callback(self.on_connection_lost, conn.peer, self, conn.ws.exception())


# ---------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------

#: Names accepted by :func:`transport_for`.
TRANSPORT_KINDS = ("udp", "tcp", "tls", "ws", "wss")


def transport_for(kind: str, iface: NetworkInterface, **options: Any) -> SipTransport:
    """Build a transport by name.

    Parameters
    ----------
    kind : {"udp", "tcp", "tls", "ws", "wss"}
        Case-insensitive; the Via transport tokens work too.
    iface : NetworkInterface
    **options
        Passed to the class (``on_message``, ``limits``, ``server_ssl``, ...).

    Returns
    -------
    SipTransport

    Raises
    ------
    ParameterError
        Unknown kind.

    Examples
    --------
    >>> from voicelab.net.iface import LoopbackInterface
    >>> transport_for("TCP", LoopbackInterface()).via_token
    'TCP'
    """
    k = kind.lower() if isinstance(kind, str) else kind
    if k == "udp":
        return UdpTransport(iface, **options)
    if k == "tcp":
        return TcpTransport(iface, **options)
    if k == "tls":
        return TlsTransport(iface, **options)
    if k == "ws":
        return WsTransport(iface, **options)
    if k == "wss":
        return WsTransport(iface, secure=True, **options)
    raise ParameterError(f"unknown SIP transport {kind!r}; use one of {', '.join(TRANSPORT_KINDS)}")
