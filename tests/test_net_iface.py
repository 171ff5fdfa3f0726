"""The network-interface seam: LoopbackInterface opens real sockets on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import socket

import pytest

from .conftest import run_clean

from voicelab.errors import ParameterError
from voicelab.net.iface import LoopbackInterface, NetworkInterface, free_port, is_loopback_address

TIMEOUT = 5.0


def run(fn) -> None:
    """Run ``fn()`` in a fresh loop; fail on tasks or file descriptors left behind."""
    run_clean(fn, timeout=TIMEOUT)


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.queue.put_nowait((data, addr))

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data) -> None:
        self.transport.write(data.upper())


class Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.got = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data) -> None:
        if not self.got.done():
            self.got.set_result(data)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def test_is_loopback_address():
    assert is_loopback_address("127.0.0.1")
    assert is_loopback_address("127.1.2.3")
    assert is_loopback_address("::1")
    for host in ("10.0.0.1", "192.0.2.1", "0.0.0.0", "::", "localhost", "example.com", None, 5):
        assert not is_loopback_address(host)


def test_loopback_interface_is_a_network_interface():
    iface = LoopbackInterface()
    assert isinstance(iface, NetworkInterface)
    assert iface.host_addresses() == ["127.0.0.1"]
    assert LoopbackInterface(host="::1").host_addresses() == ["::1"]
    with pytest.raises(ParameterError, match="loopback"):
        LoopbackInterface(host="10.0.0.1")


@pytest.mark.parametrize("bad", ["10.0.0.1", "192.0.2.1", "0.0.0.0", "example.com"])
def test_refuses_non_loopback_addresses(bad):
    iface = LoopbackInterface()

    async def body() -> None:
        with pytest.raises(ParameterError, match="not a loopback address"):
            await iface.create_connection(Reader, bad, 5060)
        with pytest.raises(ParameterError, match="not a loopback address"):
            await iface.create_server(Echo, bad, 0)
        with pytest.raises(ParameterError, match="not a loopback address"):
            await iface.create_datagram_endpoint(Collector, local_addr=(bad, 0))
        with pytest.raises(ParameterError, match="not a loopback address"):
            await iface.create_datagram_endpoint(Collector, remote_addr=(bad, 5060))
        with pytest.raises(ParameterError, match="not a loopback address"):
            await iface.create_connection(Reader, "127.0.0.1", 5060, local_addr=(bad, 0))

    run(body)


def test_bad_port_is_a_parameter_error():
    iface = LoopbackInterface()

    async def body() -> None:
        with pytest.raises(ParameterError, match="0..65535"):
            await iface.create_server(Echo, "127.0.0.1", 70000)
        with pytest.raises(ParameterError, match=r"\(host, port\)"):
            await iface.create_datagram_endpoint(Collector, local_addr="127.0.0.1")

    run(body)


def test_udp_exchange_and_guarded_sendto():
    iface = LoopbackInterface()

    async def body() -> None:
        ta, a = await iface.create_datagram_endpoint(Collector)
        tb, b = await iface.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        # the protocol sees the same guarded transport the caller got
        assert a.transport is ta and b.transport is tb
        addr_a, addr_b = ta.get_extra_info("sockname"), tb.get_extra_info("sockname")
        assert addr_a[0] == "127.0.0.1" and addr_a[1] > 0
        ta.sendto(b"hello", addr_b)
        data, src = await b.queue.get()
        assert data == b"hello" and src == addr_a
        tb.sendto(b"back", src)
        assert (await a.queue.get()) == (b"back", addr_b)
        for bad in ("10.0.0.1", "192.0.2.1"):
            with pytest.raises(ParameterError, match="loopback"):
                ta.sendto(b"x", (bad, 5060))
        ta.close()
        tb.close()
        await a.lost
        await b.lost

    run(body)


def test_udp_connected_endpoint():
    iface = LoopbackInterface()

    async def body() -> None:
        ts, s = await iface.create_datagram_endpoint(Collector)
        tc, c = await iface.create_datagram_endpoint(Collector, remote_addr=ts.get_extra_info("sockname"))
        tc.sendto(b"ping")
        data, src = await s.queue.get()
        assert data == b"ping" and src == tc.get_extra_info("sockname")
        tc.close()
        ts.close()
        await c.lost
        await s.lost

    run(body)


def test_tcp_server_and_connection():
    iface = LoopbackInterface()

    async def body() -> None:
        server = await iface.create_server(Echo, None, 0)  # None -> the interface's address
        host, port = server.sockets[0].getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        transport, reader = await iface.create_connection(Reader, "localhost", port)
        assert transport.get_extra_info("peername")[:2] == ("127.0.0.1", port)
        transport.write(b"sip")
        assert await reader.got == b"SIP"
        transport.close()
        await reader.lost
        server.close()
        await server.wait_closed()

    run(body)


def test_time_is_the_loop_clock():
    iface = LoopbackInterface()

    async def body() -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        t = iface.time()
        assert t0 <= t <= loop.time()

    run(body)


def test_free_port_can_be_bound():
    for kind, stype in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
        port = free_port(kind=kind)
        assert 0 < port < 65536
        with socket.socket(socket.AF_INET, stype) as s:
            s.bind(("127.0.0.1", port))
    with pytest.raises(ParameterError):
        free_port(kind="sctp")
    with pytest.raises(ParameterError):
        free_port(host="192.0.2.1")


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback (::1) on this machine")
def test_ipv6_loopback_interface():
    iface = LoopbackInterface(host="::1")

    async def body() -> None:
        ts, s = await iface.create_datagram_endpoint(Collector)
        tc, c = await iface.create_datagram_endpoint(Collector)
        assert ts.get_extra_info("sockname")[0] == "::1"
        tc.sendto(b"v6", ts.get_extra_info("sockname")[:2])
        data, _ = await s.queue.get()
        assert data == b"v6"
        with pytest.raises(ParameterError):
            tc.sendto(b"x", ("2001:db8::1", 5060))
        tc.close()
        ts.close()
        await c.lost
        await s.lost

    run(body)
