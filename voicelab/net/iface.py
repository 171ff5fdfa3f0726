"""The network interface seam: the one object through which live stacks open sockets.

Every asyncio adapter in voicelab (SIP transports, RTP sockets, the WebSocket signaling
server, ...) receives a :class:`NetworkInterface` and opens *all* its endpoints through
it. Nothing outside this module calls ``loop.create_datagram_endpoint``,
``loop.create_server`` or ``loop.create_connection`` itself. This is what lets the same
stacks run

- on real sockets bound to the loopback address (:class:`LoopbackInterface`, the
  ``loopback`` mode), and
- on the in-process virtual network (the ``vnet`` mode), whose hosts will be objects
  implementing this same interface: their ``create_*`` methods return in-memory
  transports, ``host_addresses`` answers the virtual host's addresses (private ones
  behind a NAT box) and ``time`` reads the (possibly virtual) clock.

The seam, precisely
-------------------
The methods mirror :class:`asyncio.AbstractEventLoop` so that code written against
the loop moves over by replacing ``loop`` with ``iface``:

``await iface.create_datagram_endpoint(protocol_factory, local_addr=None, remote_addr=None)``
    Returns ``(transport, protocol)``. The transport offers ``sendto(data, addr=None)``,
    ``close()``, ``is_closing()`` and ``get_extra_info("sockname" | "peername")``.
    ``protocol.connection_made(transport)`` is called before this returns and
    ``protocol.connection_lost(exc)`` after ``close()``; datagrams arrive through
    ``protocol.datagram_received(data, addr)``.
``await iface.create_server(protocol_factory, host, port, ssl=None)``
    Returns a server with ``close()``, ``await wait_closed()`` and ``sockets`` (each
    item answers ``getsockname()``; a virtual network hands socket-like stand-ins).
    Accepted connections get ``connection_made(transport)`` with a stream transport
    (``write``, ``close``, ``abort``, ``is_closing``, ``get_extra_info("peername" |
    "sockname" | "ssl_object")``). ``port=0`` picks a free port.
``await iface.create_connection(protocol_factory, host, port, ssl=None, local_addr=None, server_hostname=None)``
    Returns ``(transport, protocol)`` for an outgoing stream; raises :class:`OSError`
    (``ConnectionRefusedError``, :class:`ssl.SSLCertVerificationError`, ...) when it
    cannot be opened.
``iface.host_addresses()``
    The addresses this host may bind and advertise (what a SIP Contact or an ICE host
    candidate would carry).
``iface.time()``
    Seconds on the clock the stacks must use (the loop's clock here; a virtual clock
    in ``vnet``).
``iface.free_port(kind="udp", host=None)``
    A port that is free on this host now (an SDP offer names its RTP port before the
    socket is bound).

Third-party code that opens sockets itself is routed through the interface too:
aiohttp's server is started with ``iface.create_server(runner.server, ...)`` (the
web server object *is* a protocol factory) and its client gets a connector whose
connection step calls ``iface.create_connection``; see
:mod:`voicelab.sip.transport`.

This module and the transports built on it are I/O adapters: unlike the rest of
:mod:`voicelab.net` they import :mod:`asyncio` and :mod:`socket`.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import ipaddress
import socket
import ssl as _ssl
from typing import Any, Callable

from ..errors import ParameterError

__all__ = ["NetworkInterface", "LoopbackInterface", "free_port", "is_loopback_address"]

Addr = tuple[Any, ...]


class NetworkInterface(abc.ABC):
    """What a live stack needs from "the network": endpoints, addresses and a clock.

    Subclasses: :class:`LoopbackInterface` (real sockets on 127.0.0.1 / ::1); the
    virtual network's hosts (in-memory transports). See the module docstring for the
    exact contract of each method.
    """

    @abc.abstractmethod
    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: Addr | None = None,
        remote_addr: Addr | None = None,
        **options: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        """Open a UDP endpoint (like :meth:`asyncio.loop.create_datagram_endpoint`).

        Parameters
        ----------
        protocol_factory : callable
            Returns the :class:`asyncio.DatagramProtocol` to drive.
        local_addr : tuple (host, port), optional
            Where to bind; ``None`` binds the interface's first address, port 0.
        remote_addr : tuple (host, port), optional
            Connect the endpoint to this peer (``sendto(data)`` without an address).
        **options
            ``reuse_port=True``: set SO_REUSEPORT so several processes share the
            port (the kernel spreads datagrams over them by source address and port);
            only real-socket interfaces support it.

        Returns
        -------
        (transport, protocol)
        """

    @abc.abstractmethod
    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None,
        port: int,
        ssl: _ssl.SSLContext | None = None,
        **options: Any,
    ) -> Any:
        """Listen for stream connections (like :meth:`asyncio.loop.create_server`).

        Parameters
        ----------
        protocol_factory : callable
            Returns one :class:`asyncio.Protocol` per accepted connection.
        host : str or None
            Address to listen on; ``None`` means the interface's first address.
        port : int
            TCP port, 0 for any free one.
        ssl : ssl.SSLContext, optional
            Server-side TLS context.
        **options
            ``reuse_port=True``: SO_REUSEPORT, several processes accept on the port
            (the kernel spreads new connections over them).

        Returns
        -------
        server
            Has ``close()``, ``wait_closed()`` and ``sockets``.
        """

    @abc.abstractmethod
    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        ssl: _ssl.SSLContext | None = None,
        local_addr: Addr | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """Open an outgoing stream (like :meth:`asyncio.loop.create_connection`).

        Parameters
        ----------
        protocol_factory : callable
        host : str
            Peer address.
        port : int
            Peer port.
        ssl : ssl.SSLContext, optional
            Client-side TLS context.
        local_addr : tuple (host, port), optional
            Local address to bind before connecting.
        server_hostname : str, optional
            Name to check the server certificate against (default: ``host``).

        Returns
        -------
        (transport, protocol)

        Raises
        ------
        OSError
            The connection could not be opened (refused, TLS verification failed, ...).
        """

    @abc.abstractmethod
    def host_addresses(self) -> list[str]:
        """Addresses of this host that stacks may bind and advertise."""

    @abc.abstractmethod
    def time(self) -> float:
        """Now, in seconds, on the clock the stacks use (monotonic, arbitrary origin)."""

    def free_port(self, kind: str = "udp", host: str | None = None) -> int:
        """A port of this host that is free now (for an SDP offer made before binding).

        The default answers from the real kernel (:func:`free_port`); a virtual host
        answers from its own port table.
        """
        return free_port(kind=kind, host=host or self.host_addresses()[0])


# ---------------------------------------------------------------------------------------
# Real sockets, loopback only
# ---------------------------------------------------------------------------------------


def is_loopback_address(host: object) -> bool:
    """True for an IP literal in 127.0.0.0/8 or ``::1`` (names are never loopback here).

    Parameters
    ----------
    host : object
        Usually a str such as ``"127.0.0.1"``.
    """
    if not isinstance(host, str):
        return False
    return _is_loopback_text(host)


@functools.lru_cache(maxsize=1024)  # checked on every datagram sent: parse each address once
def _is_loopback_text(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class _GuardedDatagramTransport(asyncio.DatagramTransport):
    """A datagram transport that refuses to send to non-loopback addresses."""

    def __init__(self, inner: asyncio.DatagramTransport, check: Callable[[Any, str], Any]) -> None:
        super().__init__()
        self._inner = inner
        self._check = check

    def sendto(self, data: bytes, addr: Any = None) -> None:  # noqa: D102
        if addr is not None:
            addr = self._check(addr, "sendto address")
        self._inner.sendto(data, addr)

    def close(self) -> None:  # noqa: D102
        self._inner.close()

    def abort(self) -> None:  # noqa: D102
        self._inner.abort()

    def is_closing(self) -> bool:  # noqa: D102
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: D102
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:  # noqa: D102
        return self._inner.get_write_buffer_size()

    def pause_reading(self) -> None:  # noqa: D102 - the loop stops reading the socket (a media pacer reads it)
        self._inner.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:  # noqa: D102
        self._inner.resume_reading()  # type: ignore[attr-defined]

    def is_reading(self) -> bool:  # noqa: D102
        return self._inner.is_reading()  # type: ignore[attr-defined]

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:  # noqa: D102
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:  # noqa: D102
        return self._inner.get_protocol()


class _DatagramShim(asyncio.DatagramProtocol):
    """Hands the user protocol the guarded transport instead of the raw one."""

    def __init__(self, inner: asyncio.DatagramProtocol, check: Callable[[Any, str], Any]) -> None:
        self.inner = inner
        self._check = check
        self.guarded: _GuardedDatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guarded = _GuardedDatagramTransport(transport, self._check)  # type: ignore[arg-type]
        self.inner.connection_made(self.guarded)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inner.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class LoopbackInterface(NetworkInterface):
    """Real sockets on the running event loop, restricted to the loopback address.

    Every address given to it (bind, connect, ``sendto``) must be a loopback IP
    literal (127.0.0.0/8 or ``::1``) or ``"localhost"`` (taken as ``host``); anything
    else raises :class:`~voicelab.errors.ParameterError`, so a test or a lab run can
    never send packets to another machine. ``None`` / ``""`` as a bind address means
    ``host``, never "all interfaces".

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop, optional
        The loop to use; default: the running loop at each call (so the object may be
        built before :func:`asyncio.run`).
    host : str, optional
        The address to bind by default and to report from :meth:`host_addresses`:
        ``"127.0.0.1"`` (default) or ``"::1"``.

    Examples
    --------
    >>> iface = LoopbackInterface()
    >>> iface.host_addresses()
    ['127.0.0.1']
    >>> iface.check_address(("10.0.0.1", 5060))
    Traceback (most recent call last):
    ...
    voicelab.errors.ParameterError: address '10.0.0.1' is not a loopback address; ...
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, host: str = "127.0.0.1") -> None:
        if not is_loopback_address(host):
            raise ParameterError(f"LoopbackInterface host must be a loopback IP such as '127.0.0.1' or '::1', got {host!r}")
        self._loop = loop
        self.host = host

    # -- helpers ---------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop given at construction, else the running loop."""
        return self._loop if self._loop is not None else asyncio.get_running_loop()

    def _check_host(self, host: Any, what: str) -> str:
        if host is None or host == "" or host == "localhost":
            return self.host
        if not is_loopback_address(host):
            raise ParameterError(
                f"{what} {host!r} is not a loopback address; LoopbackInterface only uses "
                "127.0.0.0/8 and ::1 (use a vnet interface to model other addresses)"
            )
        return host

    def check_address(self, addr: Any, what: str = "address") -> tuple[Any, ...]:
        """Return ``addr`` with its host checked (``"localhost"`` / None -> :attr:`host`).

        Parameters
        ----------
        addr : tuple
            ``(host, port)`` or an IPv6 4-tuple.
        what : str, optional
            How to name the address in the error message.

        Raises
        ------
        ParameterError
            The host is not a loopback address or the port is not 0..65535.
        """
        if not isinstance(addr, (tuple, list)) or len(addr) < 2:
            raise ParameterError(f"{what} must be a (host, port) tuple, got {addr!r}")
        host = self._check_host(addr[0], what)
        port = addr[1]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ParameterError(f"{what} port must be an int in 0..65535, got {port!r}")
        return (host, port, *addr[2:])

    # -- NetworkInterface ------------------------------------------------------------
    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: Addr | None = None,
        remote_addr: Addr | None = None,
        reuse_port: bool = False,
    ) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
        """See :meth:`NetworkInterface.create_datagram_endpoint`; addresses are checked.

        The transport handed to ``connection_made`` and returned here refuses
        ``sendto`` to non-loopback addresses with :class:`ParameterError`.
        """
        local = self.check_address(local_addr if local_addr is not None else (self.host, 0), "local address")
        remote = self.check_address(remote_addr, "remote address") if remote_addr is not None else None
        def factory() -> _DatagramShim:
            return _DatagramShim(protocol_factory(), self.check_address)

        extra = {"reuse_port": True} if reuse_port else {}
        _, shim = await self.loop.create_datagram_endpoint(factory, local_addr=local, remote_addr=remote, **extra)
        assert shim.guarded is not None
        return shim.guarded, shim.inner

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str | None,
        port: int,
        ssl: _ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> asyncio.AbstractServer:
        """See :meth:`NetworkInterface.create_server`; ``host`` must be loopback."""
        h, p = self.check_address((host, port), "listen address")
        extra = {"reuse_port": True} if reuse_port else {}
        return await self.loop.create_server(protocol_factory, h, p, ssl=ssl, **extra)

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        host: str,
        port: int,
        ssl: _ssl.SSLContext | None = None,
        local_addr: Addr | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """See :meth:`NetworkInterface.create_connection`; both ends must be loopback.

        ``"localhost"`` connects to :attr:`host` and, with TLS, is still the name the
        certificate is checked against.
        """
        if ssl is not None and server_hostname is None and host == "localhost":
            server_hostname = "localhost"
        h, p = self.check_address((host, port), "remote address")
        local = self.check_address(local_addr, "local address") if local_addr is not None else None
        kwargs: dict[str, Any] = {}
        if ssl is not None:
            kwargs["server_hostname"] = server_hostname if server_hostname is not None else h
        return await self.loop.create_connection(protocol_factory, h, p, ssl=ssl, local_addr=local, **kwargs)

    def host_addresses(self) -> list[str]:
        """``[host]``: the one loopback address this interface uses."""
        return [self.host]

    def time(self) -> float:
        """The event loop's clock (seconds)."""
        return self.loop.time()

    def __repr__(self) -> str:
        return f"LoopbackInterface(host={self.host!r})"


def free_port(*, kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it back, close).

    For tests that must know a port before starting a server. Another process may take
    it in between; prefer listening on port 0 and reading the bound address back.

    Parameters
    ----------
    kind : {"tcp", "udp"}, optional
    host : str, optional
        A loopback address.

    Returns
    -------
    int
    """
    if kind not in ("tcp", "udp"):
        raise ParameterError(f"kind must be 'tcp' or 'udp', got {kind!r}")
    if not is_loopback_address(host):
        raise ParameterError(f"free_port only binds loopback addresses, got {host!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    stype = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, stype) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_connector(iface: NetworkInterface) -> Any:
    """An aiohttp client connector whose connections are opened by ``iface``.

    The one seam through which every aiohttp client of the lab (SIP over WebSocket,
    the signaling client, the media-streams client) reaches the network.
    """
    import aiohttp

    class _IfaceConnector(aiohttp.TCPConnector):
        async def _wrap_create_connection(  # type: ignore[override]
            self,
            *args: Any,
            addr_infos: list[Any],
            req: Any,
            timeout: Any,
            client_error: type[Exception] = aiohttp.ClientConnectorError,
            **kwargs: Any,
        ) -> Any:
            factory = args[0]
            host, port = addr_infos[0][4][:2]
            ssl_ctx = kwargs.get("ssl")
            try:
                return await iface.create_connection(
                    factory,
                    host,
                    port,
                    ssl=ssl_ctx if isinstance(ssl_ctx, _ssl.SSLContext) else None,
                    server_hostname=kwargs.get("server_hostname"),
                )
            except _ssl.SSLCertVerificationError as exc:
                raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
            except _ssl.SSLError as exc:
                raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
            except OSError as exc:
                raise client_error(req.connection_key, exc) from exc

    return _IfaceConnector(force_close=True)
