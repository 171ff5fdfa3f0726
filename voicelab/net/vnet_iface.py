"""asyncio adapter: a :class:`~voicelab.net.iface.NetworkInterface` per virtual host.

Stacks written against the network interface (SIP transports, RTP sockets, a STUN or
TURN server, ...) run on the sans-IO :class:`~voicelab.net.vnet.VirtualNetwork` by
getting a :class:`VirtualHostInterface` instead of a
:class:`~voicelab.net.iface.LoopbackInterface`::

    net = VirtualNetwork.from_yaml("topology.yaml", seed=1)
    caller = VirtualHostInterface(net, "caller")
    agent = VirtualHostInterface(net, "agent")
    t = UdpTransport(caller)              # voicelab.sip.transport: unchanged

How it is driven
----------------
All interfaces of one network on one event loop share one driver. Sending only queues
the packet in the model (at ``loop.time()``); the driver keeps a single
``loop.call_at`` timer armed at the model's :meth:`~VirtualNetwork.next_deadline` and,
when it fires, calls :meth:`~VirtualNetwork.advance` and hands each event to its
endpoint, in the model's order (so a link that keeps order delivers in order even when
the loop would run same-time timers in any order). Only ``loop.time()``,
``loop.call_at`` and ``loop.call_soon`` are used: on a normal loop the network runs in
real time, on a virtual-clock loop in virtual time.

Each endpoint remembers the :mod:`contextvars` context it was created in (a copy); its
protocol callbacks (``datagram_received``, ``data_received``, ``connection_made`` of an
accepted connection, ``connection_lost``) run in it.

Endpoints
---------
- ``create_datagram_endpoint``: ``connection_made`` before it returns,
  ``connection_lost(None)`` soon after ``close()``; with ``remote_addr`` datagrams from
  other sources are dropped, as on a connected socket. ``get_extra_info("socket")`` is
  None.
- ``create_server`` / ``create_connection``: stream transports with ``write``,
  ``write_eof``, ``close``, ``abort``, ``pause_reading`` / ``resume_reading``. A refused
  connect raises :class:`ConnectionRefusedError`, an unanswered one
  :class:`TimeoutError` after the network's ``connect_timeout_s``. TLS (``ssl=``) is
  asyncio's own :class:`asyncio.sslproto.SSLProtocol` layered on the virtual stream, as
  the loop does on a socket; a failed handshake raises the :class:`ssl.SSLError`.
- Addresses are IPv4 literals or the names of the network's hosts (a tiny DNS);
  binding an address the host does not have raises ``OSError(EADDRNOTAVAIL)``, a port
  in use ``OSError(EADDRINUSE)``, as real sockets do.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import ipaddress
import socket
import ssl as _ssl
from asyncio import sslproto
import weakref
from typing import Any, Callable

from ..errors import ParameterError
from .iface import NetworkInterface
from .vnet import (
    DatagramDelivered,
    NetworkEvent,
    StreamAccepted,
    StreamConnected,
    StreamDataReceived,
    StreamEnded,
    StreamRefused,
    StreamReset,
    VirtualNetwork,
)

__all__ = ["VirtualHostInterface"]

Addr = tuple[str, int]

_DRIVERS: "weakref.WeakKeyDictionary[VirtualNetwork, _Driver]" = weakref.WeakKeyDictionary()


def _driver_for(net: VirtualNetwork, loop: asyncio.AbstractEventLoop) -> "_Driver":
    d = _DRIVERS.get(net)
    if d is not None and d.loop is loop:
        return d
    if d is not None and not d.loop.is_closed() and d.busy():
        raise ParameterError(
            "this VirtualNetwork already carries endpoints on another event loop; "
            "close them first (one network runs on one loop at a time)"
        )
    d = _Driver(net, loop)
    _DRIVERS[net] = d
    return d


class _Driver:
    """One per (network, loop): the single timer and the endpoint tables."""

    def __init__(self, net: VirtualNetwork, loop: asyncio.AbstractEventLoop) -> None:
        self.net = net
        self.loop = loop
        self.udp: dict[tuple[str, Addr], _DatagramTransport] = {}
        self.listeners: dict[tuple[str, Addr], _Server] = {}
        self.conns: dict[int, _StreamTransport] = {}
        self.connecting: dict[int, asyncio.Future[NetworkEvent]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def busy(self) -> bool:
        return bool(self.udp or self.listeners or self.conns or self.connecting)

    def now(self) -> float:
        return max(self.loop.time(), self.net.now)

    def kick(self) -> None:
        deadline = self.net.next_deadline()
        if deadline is None:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            return
        if self._handle is not None:
            if self._when <= deadline:
                return
            self._handle.cancel()
        self._when = deadline
        self._handle = self.loop.call_at(deadline, self._fire, context=contextvars.Context())

    def _fire(self) -> None:
        self._handle = None
        for ev in self.net.advance(self.now()):
            try:
                self._dispatch(ev)
            except Exception as exc:  # noqa: BLE001 - a protocol bug must not stop the network
                self.loop.call_exception_handler(
                    {"message": f"vnet: delivering {type(ev).__name__} failed", "exception": exc}
                )
        self.kick()

    def _dispatch(self, ev: NetworkEvent) -> None:
        if isinstance(ev, DatagramDelivered):
            ep = self.udp.get((ev.host, ev.dst))
            if ep is not None:
                ep._deliver(ev.payload, ev.src)
        elif isinstance(ev, StreamAccepted):
            server = self.listeners.get((ev.host, ev.listener))
            if server is None:
                self.net.stream_abort(ev.conn, self.now())
            else:
                server._accept(ev)
        elif isinstance(ev, (StreamConnected, StreamRefused)) and ev.conn in self.connecting:
            fut = self.connecting.pop(ev.conn)
            if isinstance(ev, StreamConnected):
                self.conns[ev.conn] = _StreamTransport(self, ev.conn, ev.local, ev.remote, None)
            if not fut.done():
                fut.set_result(ev)
            elif isinstance(ev, StreamConnected):  # the connect was cancelled meanwhile
                self.conns.pop(ev.conn)._abort_quietly()
        else:
            tr = self.conns.get(getattr(ev, "conn", -1))
            if tr is None:
                return
            if isinstance(ev, StreamDataReceived):
                tr._incoming(("data", ev.data))
            elif isinstance(ev, StreamEnded):
                tr._incoming(("eof", None))
            elif isinstance(ev, StreamReset):
                tr._incoming(("reset", ev.reason))


# ---------------------------------------------------------------------------------------
# Datagrams
# ---------------------------------------------------------------------------------------


class _DatagramTransport(asyncio.DatagramTransport):
    def __init__(self, driver: _Driver, host: str, local: Addr, remote: Addr | None,
                 protocol: asyncio.DatagramProtocol, ctx: contextvars.Context) -> None:
        super().__init__()
        self._driver = driver
        self._host = host
        self._local = local
        self._remote = remote
        self._protocol = protocol
        self._ctx = ctx
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:  # noqa: D102
        if self._closing:
            return
        if addr is None:
            if self._remote is None:
                raise ParameterError("sendto() without an address needs an endpoint opened with remote_addr")
            dst = self._remote
        else:
            dst = _resolve_addr(self._driver.net, addr, "sendto address")
            if self._remote is not None and dst != self._remote:
                raise ParameterError(f"this endpoint is connected to {self._remote}; cannot send to {dst}")
        if len(data) > 65507:
            exc = OSError(errno.EMSGSIZE, f"message of {len(data)} bytes too long for UDP")
            self._driver.loop.call_soon(self._ctx.run, self._protocol.error_received, exc)
            return
        self._driver.net.send_datagram(self._host, self._local, dst, bytes(data), self._driver.now())
        self._driver.kick()

    def _deliver(self, data: bytes, src: Addr) -> None:
        if self._closing or (self._remote is not None and src != self._remote):
            return
        self._ctx.run(self._protocol.datagram_received, data, src)

    def close(self) -> None:  # noqa: D102
        if self._closing:
            return
        self._closing = True
        d = self._driver
        if d.udp.get((self._host, self._local)) is self:
            del d.udp[(self._host, self._local)]
        d.net.unbind(self._host, self._local)
        d.loop.call_soon(self._ctx.run, self._protocol.connection_lost, None)

    def abort(self) -> None:  # noqa: D102
        self.close()

    def is_closing(self) -> bool:  # noqa: D102
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: D102
        if name == "sockname":
            return self._local
        if name == "peername":
            return self._remote if self._remote is not None else default
        if name == "socket":
            return None
        return default

    def get_write_buffer_size(self) -> int:  # noqa: D102
        return 0

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:  # noqa: D102
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:  # noqa: D102
        return self._protocol

    def __repr__(self) -> str:
        return f"<vnet UDP {self._host} {self._local[0]}:{self._local[1]}{' closed' if self._closing else ''}>"


# ---------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------


def _feed(protocol: Any, data: bytes) -> None:
    """data_received, or the get_buffer/buffer_updated dance of a BufferedProtocol."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = protocol.get_buffer(len(view))
            n = min(len(buf), len(view))
            if n == 0:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        protocol.data_received(data)


class _StreamTransport(asyncio.Transport):
    _start_tls_compatible = True

    def __init__(self, driver: _Driver, conn: int, local: Addr, remote: Addr, ctx: contextvars.Context | None) -> None:
        super().__init__()
        self._driver = driver
        self._conn = conn
        self._local = local
        self._remote = remote
        self._ctx = ctx or contextvars.copy_context()
        self._protocol: Any = None
        self._paused = False
        self._pending: list[tuple[str, Any]] = []
        self._closing = False
        self._eof_written = False
        self._lost_called = False
        self._tls: Any = None

    # -- wiring --
    def _attach(self, protocol: Any, ctx: contextvars.Context | None = None) -> None:
        if ctx is not None:
            self._ctx = ctx
        self._protocol = protocol

    def _incoming(self, item: tuple[str, Any]) -> None:
        self._pending.append(item)
        self._flush()

    def _flush(self) -> None:
        while self._pending and not self._paused and self._protocol is not None and not self._lost_called:
            kind, value = self._pending.pop(0)
            if kind == "data":
                if not self._closing:
                    self._ctx.run(_feed, self._protocol, value)
            elif kind == "eof":
                if self._closing:
                    continue
                keep = self._ctx.run(self._protocol.eof_received)
                if not keep:
                    self.close()
            else:  # reset
                self._closing = True
                self._driver.conns.pop(self._conn, None)
                self._lost(ConnectionResetError(errno.ECONNRESET, f"connection reset ({value})"))

    def _lost(self, exc: BaseException | None, *, soon: bool = False) -> None:
        if self._lost_called:
            return
        self._lost_called = True
        if self._protocol is None:
            return
        if soon:
            self._driver.loop.call_soon(self._ctx.run, self._protocol.connection_lost, exc)
        else:
            self._ctx.run(self._protocol.connection_lost, exc)

    def _abort_quietly(self) -> None:
        self._closing = True
        self._driver.net.stream_abort(self._conn, self._driver.now())
        self._driver.kick()

    # -- asyncio.Transport --
    def write(self, data: Any) -> None:  # noqa: D102
        if self._closing or self._eof_written:
            return
        data = bytes(data)
        if not data:
            return
        self._driver.net.stream_send(self._conn, data, self._driver.now())
        self._driver.kick()

    def write_eof(self) -> None:  # noqa: D102
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        self._driver.net.stream_close(self._conn, self._driver.now())
        self._driver.kick()

    def can_write_eof(self) -> bool:  # noqa: D102
        return True

    def close(self) -> None:  # noqa: D102
        if self._closing:
            return
        self._closing = True
        self._driver.conns.pop(self._conn, None)
        if not self._eof_written:
            self._eof_written = True
            self._driver.net.stream_close(self._conn, self._driver.now())
            self._driver.kick()
        self._lost(None, soon=True)

    def abort(self) -> None:  # noqa: D102
        if self._closing and self._lost_called:
            return
        self._closing = True
        self._driver.conns.pop(self._conn, None)
        self._driver.net.stream_abort(self._conn, self._driver.now())
        self._driver.kick()
        self._lost(None, soon=True)

    def _force_close(self, exc: BaseException | None) -> None:
        """What asyncio's TLS layer calls on a fatal error: reset, report ``exc``."""
        if self._lost_called:
            return
        self._closing = True
        self._driver.conns.pop(self._conn, None)
        self._driver.net.stream_abort(self._conn, self._driver.now())
        self._driver.kick()
        self._lost(exc, soon=True)

    def is_closing(self) -> bool:  # noqa: D102
        return self._closing

    def pause_reading(self) -> None:  # noqa: D102
        self._paused = True

    def resume_reading(self) -> None:  # noqa: D102
        self._paused = False
        self._flush()

    def is_reading(self) -> bool:  # noqa: D102
        return not self._paused and not self._closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:  # noqa: D102
        pass

    def get_write_buffer_size(self) -> int:  # noqa: D102
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:  # noqa: D102
        return (0, 0)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:  # noqa: D102
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:  # noqa: D102
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: D102
        if name == "peername":
            return self._remote
        if name == "sockname":
            return self._local
        if name in ("socket", "ssl_object", "sslcontext", "peercert", "cipher", "compression"):
            return None
        return default

    def __repr__(self) -> str:
        return f"<vnet TCP #{self._conn} {self._local} -> {self._remote}{' closing' if self._closing else ''}>"


class _SockName:
    """What ``server.sockets`` items answer (only what callers read)."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM

    def __init__(self, addr: Addr) -> None:
        self._addr = addr

    def getsockname(self) -> Addr:
        return self._addr

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        return f"<vnet listening socket {self._addr[0]}:{self._addr[1]}>"


class _Server(asyncio.AbstractServer):
    def __init__(self, driver: _Driver, host: str, local: Addr, factory: Callable[[], Any],
                 ssl: _ssl.SSLContext | None, ctx: contextvars.Context) -> None:
        self._driver = driver
        self._host = host
        self._local = local
        self._factory = factory
        self._ssl = ssl
        self._ctx = ctx
        self._serving = True
        self.sockets = [_SockName(local)]

    def _accept(self, ev: StreamAccepted) -> None:
        ctx = self._ctx.copy()
        tr = _StreamTransport(self._driver, ev.conn, ev.local, ev.remote, ctx)
        self._driver.conns[ev.conn] = tr
        protocol = ctx.run(self._factory)
        if self._ssl is None:
            tr._attach(protocol)
            ctx.run(protocol.connection_made, tr)
            tr._flush()
            return
        _, waiter = _start_tls(self._driver.loop, tr, protocol, ctx, self._ssl, server_side=True)
        # a failed handshake closes the connection; nobody awaits the waiter here
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())

    def close(self) -> None:  # noqa: D102
        if not self._serving:
            return
        self._serving = False
        if self._driver.listeners.get((self._host, self._local)) is self:
            del self._driver.listeners[(self._host, self._local)]
        self._driver.net.unlisten(self._host, self._local)

    async def wait_closed(self) -> None:  # noqa: D102
        return None

    def is_serving(self) -> bool:  # noqa: D102
        return self._serving

    def get_loop(self) -> asyncio.AbstractEventLoop:  # noqa: D102
        return self._driver.loop

    async def start_serving(self) -> None:  # noqa: D102
        return None

    async def serve_forever(self) -> None:  # noqa: D102
        await self._driver.loop.create_future()

    def __repr__(self) -> str:
        return f"<vnet server {self._host} {self._local[0]}:{self._local[1]}>"


def _start_tls(
    loop: asyncio.AbstractEventLoop,
    tr: "_StreamTransport",
    app_protocol: Any,
    ctx: contextvars.Context,
    sslcontext: _ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
) -> tuple[Any, asyncio.Future[None]]:
    """Put asyncio's own TLS protocol between ``tr`` and ``app_protocol``.

    This is what ``loop.create_connection(ssl=...)`` / ``loop.create_server(ssl=...)`` do
    on a socket (:class:`asyncio.sslproto.SSLProtocol` with ``call_connection_made``):
    the application's ``connection_made`` runs when the handshake completes, before any
    application data, and the returned waiter resolves then (or fails with the TLS error).
    """
    if not isinstance(sslcontext, _ssl.SSLContext):
        raise ParameterError(f"ssl must be an ssl.SSLContext, got {type(sslcontext).__name__}")
    waiter: asyncio.Future[None] = loop.create_future()
    ssl_protocol = sslproto.SSLProtocol(
        loop, app_protocol, sslcontext, waiter, server_side, server_hostname, call_connection_made=True
    )
    tr._tls = ssl_protocol
    tr._attach(ssl_protocol, ctx)
    ctx.run(ssl_protocol.connection_made, tr)
    tr._flush()
    return ssl_protocol, waiter


def _protocol_transport(protocol: Any, tr: "_StreamTransport") -> Any:
    """The transport an application protocol writes to: the TLS one when TLS is on."""
    tls = getattr(tr, "_tls", None)
    return tls._app_transport if tls is not None else tr


def _resolve_host(net: VirtualNetwork, host: Any, what: str) -> str:
    if isinstance(host, str):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            ip = net.resolve(host)
            if ip is not None:
                return ip
    raise socket.gaierror(socket.EAI_NONAME, f"{what} {host!r} is neither an IPv4 address nor a host of this virtual network")


def _resolve_addr(net: VirtualNetwork, addr: Any, what: str) -> Addr:
    if (
        not isinstance(addr, (tuple, list))
        or len(addr) < 2
        or isinstance(addr[1], bool)
        or not isinstance(addr[1], int)
        or not 0 <= addr[1] <= 65535
    ):
        raise ParameterError(f"{what} must be a (host, port 0..65535) tuple, got {addr!r}")
    return (_resolve_host(net, addr[0], what), addr[1])


# ---------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------


class VirtualHostInterface(NetworkInterface):
    """The network interface of one host of a :class:`~voicelab.net.vnet.VirtualNetwork`.

    Parameters
    ----------
    network : VirtualNetwork
    host_name : str
        A host of ``network``.
    loop : asyncio.AbstractEventLoop, optional
        Default: the running loop at each call (so the object may be built before
        :func:`asyncio.run`). Any loop works; a virtual-clock loop makes the network
        run in virtual time.

    Raises
    ------
    ParameterError
        ``network`` is not a VirtualNetwork or has no such host.

    Examples
    --------
    >>> net = VirtualNetwork(seed=0)
    >>> _ = net.add_host("agent", "203.0.113.5")
    >>> VirtualHostInterface(net, "agent").host_addresses()
    ['203.0.113.5']
    """

    def __init__(self, network: VirtualNetwork, host_name: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not isinstance(network, VirtualNetwork):
            raise ParameterError(f"network must be a voicelab.net.vnet.VirtualNetwork, got {type(network).__name__}")
        network.host(host_name)  # raises ParameterError for an unknown host
        self.network = network
        self.host_name = host_name
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop given at construction, else the running loop."""
        return self._loop if self._loop is not None else asyncio.get_running_loop()

    def _driver(self) -> _Driver:
        return _driver_for(self.network, self.loop)

    def _bind_addr(self, addr: Any, proto: str) -> Addr:
        h = self.network.host(self.host_name)
        if addr is None:
            addr = (h.address, 0)
        if not isinstance(addr, (tuple, list)) or len(addr) < 2:
            raise ParameterError(f"local address must be a (host, port) tuple, got {addr!r}")
        ip = h.address if addr[0] in (None, "", "0.0.0.0") else _resolve_host(self.network, addr[0], "local address")
        port = addr[1]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ParameterError(f"local port must be an int in 0..65535, got {port!r}")
        if ip != h.address:
            raise OSError(errno.EADDRNOTAVAIL, f"virtual host {self.host_name!r} has no address {ip} (it has {h.address})")
        taken = (ip, port) in (h.udp_bound if proto == "udp" else h.listeners)
        if port and taken:
            raise OSError(errno.EADDRINUSE, f"{proto.upper()} {ip}:{port} is already in use on virtual host {self.host_name!r}")
        return (ip, port)

    # -- NetworkInterface --------------------------------------------------------------
    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: Any = None,
        remote_addr: Any = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        """See :meth:`NetworkInterface.create_datagram_endpoint` (``sock=`` is not supported)."""
        if kwargs.get("sock") is not None:
            raise ParameterError("a virtual host cannot adopt a real socket (sock=...)")
        d = self._driver()
        remote = _resolve_addr(self.network, remote_addr, "remote address") if remote_addr is not None else None
        local = self.network.bind(self.host_name, self._bind_addr(local_addr, "udp"))
        protocol = protocol_factory()
        ctx = contextvars.copy_context()
        tr = _DatagramTransport(d, self.host_name, local, remote, protocol, ctx)
        d.udp[(self.host_name, local)] = tr
        ctx.run(protocol.connection_made, tr)
        return tr, protocol

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None = None,
        port: int = 0,
        ssl: _ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> asyncio.AbstractServer:
        """See :meth:`NetworkInterface.create_server` (TLS as in the module docstring)."""
        d = self._driver()
        local = self.network.listen(self.host_name, self._bind_addr((host, port), "tcp"))
        server = _Server(d, self.host_name, local, protocol_factory, ssl, contextvars.copy_context())
        d.listeners[(self.host_name, local)] = server
        return server

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        ssl: _ssl.SSLContext | None = None,
        local_addr: Any = None,
        server_hostname: str | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """See :meth:`NetworkInterface.create_connection`.

        Raises
        ------
        ConnectionRefusedError
            A RST came back (no listener, or a NAT filtered the SYN).
        TimeoutError
            No answer within the network's ``connect_timeout_s``.
        """
        d = self._driver()
        dst = _resolve_addr(self.network, (host, port), "remote address")
        local = self._bind_addr(local_addr, "tcp") if local_addr is not None else None
        ctx = contextvars.copy_context()
        conn = self.network.connect(self.host_name, dst, d.now(), local_addr=local)
        fut: asyncio.Future[NetworkEvent] = d.loop.create_future()
        d.connecting[conn] = fut
        d.kick()
        try:
            ev = await fut
        except BaseException:  # cancelled while connecting: do not leave the connection behind
            d.connecting.pop(conn, None)
            if fut.done() and not fut.cancelled() and isinstance(fut.result(), StreamConnected):
                tr0 = d.conns.pop(conn, None)
                if tr0 is not None:
                    tr0._abort_quietly()
            else:
                self.network.stream_abort(conn, d.now())
                d.kick()
            raise
        if isinstance(ev, StreamRefused):
            if ev.reason == "timed out":
                raise TimeoutError(errno.ETIMEDOUT, f"connect to {dst[0]}:{dst[1]} timed out on the virtual network")
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"connect to {dst[0]}:{dst[1]} refused on the virtual network")
        tr = d.conns[conn]
        protocol = protocol_factory()
        tr._ctx = ctx
        if ssl is None:
            tr._attach(protocol)
            ctx.run(protocol.connection_made, tr)
            tr._flush()
            return tr, protocol
        if server_hostname is None:
            server_hostname = host
        _, waiter = _start_tls(d.loop, tr, protocol, ctx, ssl, server_side=False, server_hostname=server_hostname)
        try:
            await waiter  # connection_made(ssl transport) was called when the handshake finished
        except BaseException:
            tr.abort()
            raise
        return _protocol_transport(protocol, tr), protocol

    def host_addresses(self) -> list[str]:
        """The virtual host's addresses (private ones behind a NAT)."""
        return self.network.host_addresses(self.host_name)

    def time(self) -> float:
        """The event loop's clock, seconds (virtual time on a virtual-clock loop)."""
        return self.loop.time()

    def free_port(self, kind: str = "udp", host: str | None = None) -> int:
        """A port of this virtual host that is free now (from the network's port table).

        Ports are handed out from the host's seeded ephemeral counter (49152..65535), so
        a scenario gets the same ports on every run. The port is not reserved: bind it
        before asking again.

        Parameters
        ----------
        kind : {"udp", "tcp"}
        host : str, optional
            One of :meth:`host_addresses` (default: the first).

        Raises
        ------
        ParameterError
            Unknown ``kind``, an address this host does not have, or no port left.
        """
        if kind not in ("udp", "tcp"):
            raise ParameterError(f"free_port kind must be 'udp' or 'tcp', got {kind!r}")
        h = self.network.host(self.host_name)
        if host not in (None, "", "0.0.0.0", h.address):
            raise ParameterError(f"virtual host {self.host_name!r} has no address {host!r} (it has {h.address})")
        port = h._ephemeral(kind)
        if port is None:
            raise ParameterError(f"virtual host {self.host_name!r} has no free {kind} port left")
        return port

    def __repr__(self) -> str:
        return f"VirtualHostInterface({self.host_name!r}, {self.host_addresses()[0]})"
