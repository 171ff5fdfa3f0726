"""SIP transports over real loopback sockets: UDP, TCP, TLS, WS, WSS.

Every test runs its own event loop with asyncio.run and checks that no task and no
file descriptor is left behind. No sleeps: waits are on futures/queues, with
asyncio.wait_for as a safety net only.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid

import pytest

from .conftest import run_clean

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from voicelab.errors import LocalProtocolError, ParameterError, RemoteProtocolError  # noqa: E402
from voicelab.net.iface import LoopbackInterface  # noqa: E402
from voicelab.sip.message import Limits, Request, Response, parse_message  # noqa: E402
from voicelab.tlsutil import client_ssl_context, generate_test_pki, server_ssl_context  # noqa: E402
from voicelab.sip.transaction import build_response  # noqa: E402
from voicelab.sip.transport import (  # noqa: E402
    TRANSPORT_KINDS,
    TcpTransport,
    TlsTransport,
    UdpTransport,
    WsTransport,
    _StreamConnection,
    transport_for,
)

TIMEOUT = 8.0


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def run(fn) -> None:
    """Run ``fn()`` in a fresh loop; fail on tasks or file descriptors left behind."""
    run_clean(fn, timeout=TIMEOUT)


class CountingInterface(LoopbackInterface):
    """LoopbackInterface that records which of its methods were used (proves the seam)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def create_datagram_endpoint(self, *a, **k):
        self.calls.append("datagram")
        return await super().create_datagram_endpoint(*a, **k)

    async def create_server(self, *a, **k):
        self.calls.append("server")
        return await super().create_server(*a, **k)

    async def create_connection(self, *a, **k):
        self.calls.append("connection")
        return await super().create_connection(*a, **k)


def options(token: str = "UDP", cseq: int = 1, call_id: str | None = None) -> Request:
    call_id = call_id or uuid.uuid4().hex
    return Request(
        "OPTIONS",
        "sip:bob@127.0.0.1",
        [
            ("Via", f"SIP/2.0/{token} 127.0.0.1:5060;branch=z9hG4bK{uuid.uuid4().hex[:10]}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@127.0.0.1>;tag=a1"),
            ("To", "<sip:bob@127.0.0.1>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} OPTIONS"),
            ("Content-Length", "0"),
        ],
    )


def invite(size: int, token: str = "TCP") -> bytes:
    """A valid INVITE of exactly ``size`` bytes (SDP body padded with attribute lines)."""
    head = (
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{token} 127.0.0.1:5060;branch=z9hG4bKinv1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: big-invite\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5060>\r\n"
        "Content-Type: application/sdp\r\nContent-Length: {n:05d}\r\n\r\n"
    )
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    body_len = size - len(head.format(n=0))
    pad = body_len - len(sdp) - len("a=x:\r\n")
    sdp += "a=x:" + "p" * pad + "\r\n"
    data = (head.format(n=len(sdp)) + sdp).encode()
    assert len(data) == size
    return data


class Inbox:
    """on_message target: a queue of (message, addr, transport)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def __call__(self, msg, addr, transport) -> None:
        self.queue.put_nowait((msg, addr, transport))

    async def get(self):
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)


class RawClient(asyncio.Protocol):
    """A bare TCP client for writing arbitrary bytes."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.more = asyncio.Event()
        self.lost = loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data) -> None:
        self.data += data
        self.more.set()

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return generate_test_pki(tmp_path_factory.mktemp("pki"))


def make_pair(kind: str, pki, iface, server_inbox, client_inbox, **options):
    """(server, client) transports of one kind, TLS ones with the generated CA."""
    server_opts = dict(on_message=server_inbox, **options)
    client_opts = dict(on_message=client_inbox, **options)
    if kind in ("tls", "wss"):
        server_opts["server_ssl"] = server_ssl_context(pki.cert, pki.key)
        client_opts["client_ssl"] = client_ssl_context(ca_file=pki.ca_cert)
    return transport_for(kind, iface, **server_opts), transport_for(kind, iface, **client_opts)


# ---------------------------------------------------------------------------------------
# every transport: OPTIONS -> 200
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TRANSPORT_KINDS)
def test_options_and_200_exchange(kind, pki):
    iface = CountingInterface()

    async def body() -> None:
        s_in, c_in = Inbox(), Inbox()
        server, client = make_pair(kind, pki, iface, s_in, c_in)
        assert server.via_token == kind.upper()
        assert server.scheme == ("sips" if kind in ("tls", "wss") else "sip")
        server_addr = await server.listen()
        assert server_addr[0] == "127.0.0.1" and server_addr[1] > 0
        req = options(server.via_token)
        await client.send(req, server_addr)

        got, addr, t = await s_in.get()
        assert t is server
        assert isinstance(got, Request) and got == req
        if kind == "udp":  # the source address is kept
            assert addr == client.local_addr
        await server.send(build_response(got, 200, "OK", to_tag="b1"), addr)

        resp, raddr, t = await c_in.get()
        assert t is client and raddr == server_addr
        assert isinstance(resp, Response) and resp.status_code == 200
        assert resp.call_id == req.call_id and resp.cseq.method == "OPTIONS"
        assert resp.via[0].branch == req.via[0].branch

        # a second request to the same peer reuses the connection
        await client.send(options(server.via_token, cseq=2), server_addr)
        again, addr2, _ = await s_in.get()
        assert again.cseq.number == 2 and addr2 == addr
        if kind != "udp":
            assert client.stats.connections_opened == 1 == server.stats.connections_opened
            assert client.connections == [server_addr]
        assert server.stats.messages_received == 2 and server.stats.messages_sent == 1
        assert client.stats.messages_sent == 2 and client.stats.messages_received == 1
        assert server.stats.malformed == 0 == client.stats.malformed
        await client.close()
        await server.close()
        if kind != "udp":
            assert client.stats.connections_closed == 1 == server.stats.connections_closed
        # every socket came from the interface
        assert set(iface.calls) == ({"datagram"} if kind == "udp" else {"server", "connection"})

    run(body)


def test_parse_false_delivers_exact_bytes():
    iface = LoopbackInterface()

    async def body() -> None:
        for kind in ("udp", "tcp", "ws"):
            s_in = Inbox()
            server = transport_for(kind, iface, on_message=s_in, parse=False)
            client = transport_for(kind, iface)
            addr = await server.listen()
            raw = bytes(options(server.via_token))
            await client.send(raw, addr)
            got, _, _ = await s_in.get()
            assert got == raw
            await client.close()
            await server.close()

    run(body)


# ---------------------------------------------------------------------------------------
# UDP
# ---------------------------------------------------------------------------------------


def test_udp_refuses_oversized_datagrams():
    iface = LoopbackInterface()

    async def body() -> None:
        t = UdpTransport(iface, limits=Limits(max_message_bytes=200_000))
        with pytest.raises(LocalProtocolError, match="65535"):
            await t.send(b"x" * 65536, ("127.0.0.1", 5060))
        small = UdpTransport(iface, limits=Limits(max_message_bytes=1000))
        with pytest.raises(LocalProtocolError, match="1000"):
            await small.send(b"x" * 1001, ("127.0.0.1", 5060))
        assert t.local_addr is None and t.stats.messages_sent == 0  # nothing was bound or sent
        await t.close()
        await small.close()

    run(body)


def test_udp_malformed_and_keepalive_datagrams_are_counted_not_fatal():
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        server = UdpTransport(iface, on_message=s_in)
        addr = await server.listen()
        raw = UdpTransport(iface, parse=False)
        await raw.send(b"NOT SIP AT ALL\r\n\r\n", addr)
        await raw.send(b"\xff\xfe\x00garbage", addr)
        await raw.send(b"\r\n\r\n", addr)
        await raw.send(options(), addr)
        got, _, _ = await s_in.get()  # loopback UDP keeps order: the others came first
        assert isinstance(got, Request)
        assert server.stats.malformed == 2
        assert server.stats.pings_received == 1
        assert server.stats.messages_received == 1
        await raw.close()
        await server.close()

    run(body)


def test_udp_refuses_non_loopback_destination():
    iface = LoopbackInterface()

    async def body() -> None:
        t = UdpTransport(iface)
        for bad in ("10.0.0.1", "192.0.2.1"):
            with pytest.raises(ParameterError, match="loopback"):
                await t.send(options(), (bad, 5060))
        await t.close()

    run(body)


def test_validate_option_drops_invalid_messages():
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        server = UdpTransport(iface, on_message=s_in, validate=True)
        addr = await server.listen()
        client = UdpTransport(iface)
        bad = bytes(options()).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")  # parses, but 400
        await client.send(bad, addr)
        await client.send(options(cseq=7), addr)
        got, _, _ = await s_in.get()
        assert got.cseq.number == 7
        assert server.stats.invalid == 1 and server.stats.malformed == 0
        await client.close()
        await server.close()

    run(body)


def test_callback_errors_are_counted_and_transport_survives():
    iface = LoopbackInterface()

    async def body() -> None:
        seen: list = []
        done = asyncio.get_running_loop().create_future()

        def on_message(msg, addr, transport):
            seen.append(msg)
            if len(seen) == 1:
                raise RuntimeError("boom")
            done.set_result(None)

        server = UdpTransport(iface, on_message=on_message)
        addr = await server.listen()
        client = UdpTransport(iface)
        await client.send(options(cseq=1), addr)
        await client.send(options(cseq=2), addr)
        await done
        assert server.stats.callback_errors == 1 and len(seen) == 2
        await client.close()
        await server.close()

    run(body)


# ---------------------------------------------------------------------------------------
# TCP framing
# ---------------------------------------------------------------------------------------


def test_tcp_invite_in_chunks_arrives_whole(monkeypatch):
    iface = LoopbackInterface()
    arrivals: list[int] = []
    state: dict = {}
    original = _StreamConnection.data_received

    def observing(self, data):
        arrivals.append(len(data))
        original(self, data)
        state["event"].set()

    monkeypatch.setattr(_StreamConnection, "data_received", observing)

    async def body() -> None:
        state["event"] = asyncio.Event()
        s_in = Inbox()
        server = TcpTransport(iface, on_message=s_in)
        addr = await server.listen()
        data = invite(2000)
        transport, raw = await iface.create_connection(RawClient, *addr)
        cuts = [0, 1, 17, 300, 301, 999, 1500, 1996, 2000]
        for a, b in zip(cuts, cuts[1:]):
            assert s_in.queue.empty()  # nothing delivered before the last byte
            state["event"].clear()
            transport.write(data[a:b])
            await asyncio.wait_for(state["event"].wait(), TIMEOUT)  # this chunk was read
        got, _, _ = await s_in.get()
        assert isinstance(got, Request) and got.method == "INVITE"
        assert bytes(got) == data and len(got.body) == got.content_length
        # really read in pieces: one read per chunk at least (the kernel may split more)
        assert len(arrivals) >= len(cuts) - 1 and sum(arrivals) == len(data)
        transport.close()
        await raw.lost
        await server.close()

    run(body)


def test_tcp_several_messages_in_one_write():
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        server = TcpTransport(iface, on_message=s_in)
        addr = await server.listen()
        transport, raw = await iface.create_connection(RawClient, *addr)
        call_id = uuid.uuid4().hex
        blob = b"".join(bytes(options("TCP", cseq=n, call_id=call_id)) for n in (1, 2, 3))
        blob += invite(900)  # a message with a body in the same write
        transport.write(blob)
        got = [await s_in.get() for _ in range(4)]
        assert [m.cseq.number for m, _, _ in got[:3]] == [1, 2, 3]
        assert got[3][0].method == "INVITE" and len(bytes(got[3][0])) == 900
        assert len({a for _, a, _ in got}) == 1
        assert server.stats.messages_received == 4 and server.stats.malformed == 0
        transport.close()
        await raw.lost
        await server.close()

    run(body)


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO THIS IS NOT SIP\r\n\r\n",
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: 9999999\r\n\r\n",  # over the limit
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # a TLS hello
    ],
    ids=["bad-start-line", "huge-content-length", "binary"],
)
def test_tcp_garbage_closes_only_that_connection(garbage):
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        lost: asyncio.Queue = asyncio.Queue()
        server = TcpTransport(iface, on_message=s_in, on_connection_lost=lambda a, t, e: lost.put_nowait(a))
        addr = await server.listen()
        ta, bad = await iface.create_connection(RawClient, *addr)
        tb, good = await iface.create_connection(RawClient, *addr)
        # make sure both are registered before the bad one dies
        tb.write(bytes(options("TCP", cseq=1)))
        first, good_addr, _ = await s_in.get()
        assert first.cseq.number == 1
        ta.write(garbage)
        await asyncio.wait_for(bad.lost, TIMEOUT)  # the server closed the bad connection
        assert await asyncio.wait_for(lost.get(), TIMEOUT) == ta.get_extra_info("sockname")[:2]
        assert server.stats.malformed == 1
        assert not good.lost.done()
        tb.write(bytes(options("TCP", cseq=2)))
        second, addr2, _ = await s_in.get()
        assert second.cseq.number == 2 and addr2 == good_addr
        await server.send(build_response(second, 200, "OK", to_tag="x"), addr2)  # reply still works
        while b"SIP/2.0 200 OK" not in good.data:
            good.more.clear()
            await asyncio.wait_for(good.more.wait(), TIMEOUT)
        assert server.connections == [good_addr]
        ta.close()
        tb.close()
        await good.lost
        await server.close()

    run(body)


def test_tcp_keepalive_ping_pong():
    iface = LoopbackInterface()

    async def body() -> None:
        server = TcpTransport(iface)
        addr = await server.listen()
        client = TcpTransport(iface)
        await asyncio.wait_for(client.ping(addr), TIMEOUT)
        await asyncio.wait_for(client.ping(addr), TIMEOUT)
        assert server.stats.pings_received == 2 and client.stats.pongs_received == 2
        assert client.stats.pings_sent == 2 and server.stats.malformed == 0
        # the connection still carries SIP after keep-alives
        s_in = Inbox()
        server.on_message = s_in
        await client.send(options("TCP"), addr)
        got, _, _ = await s_in.get()
        assert isinstance(got, Request)
        assert client.stats.connections_opened == 1
        await client.close()
        await server.close()

    run(body)


def test_tcp_connection_refused_is_an_oserror():
    iface = LoopbackInterface()

    async def body() -> None:
        probe = TcpTransport(iface)
        addr = await probe.listen()
        await probe.close()  # nothing listens there now
        client = TcpTransport(iface)
        with pytest.raises(OSError):
            await client.send(options("TCP"), addr)
        assert client.stats.send_errors == 1
        with pytest.raises(ParameterError, match="loopback"):
            await client.send(options("TCP"), ("192.0.2.1", 5060))
        with pytest.raises(ParameterError, match="addr"):
            await client.send(options("TCP"), ("127.0.0.1", "5060"))
        with pytest.raises(ParameterError, match="bytes"):
            await client.send("OPTIONS", ("127.0.0.1", 5060))
        await client.close()
        with pytest.raises(LocalProtocolError, match="closed"):
            await client.send(options("TCP"), addr)

    run(body)


# ---------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------


def test_tls_verifies_with_the_generated_ca_and_fails_without(pki):
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        server = TlsTransport(iface, on_message=s_in, server_ssl=server_ssl_context(pki.cert, pki.key))
        addr = await server.listen()

        no_ca = TlsTransport(iface)  # system trust store: does not know the test CA
        with pytest.raises(ssl.SSLCertVerificationError):
            await no_ca.send(options("TLS"), addr)
        wrong_name = TlsTransport(
            iface, client_ssl=client_ssl_context(ca_file=pki.ca_cert), server_hostname="wrong.example"
        )
        with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname"):
            await wrong_name.send(options("TLS"), addr)
        assert s_in.queue.empty() and server.stats.connections_opened == 0

        good = TlsTransport(iface, client_ssl=client_ssl_context(ca_file=pki.ca_cert), server_hostname="localhost")
        await good.send(options("TLS"), addr)
        got, _, _ = await s_in.get()
        assert isinstance(got, Request)
        for t in (no_ca, wrong_name, good, server):
            await t.close()

    run(body)


def test_tls_listen_needs_a_server_context():
    async def body() -> None:
        t = TlsTransport(LoopbackInterface())
        with pytest.raises(ParameterError, match="server_ssl"):
            await t.listen()
        await t.close()

    run(body)


# ---------------------------------------------------------------------------------------
# WebSocket
# ---------------------------------------------------------------------------------------


def _ws_session(iface):
    from voicelab.net.iface import http_connector

    return aiohttp.ClientSession(connector=http_connector(iface))


@pytest.mark.parametrize("offered", [("chat",), (), ("chat", "xmpp")])
def test_ws_server_refuses_other_subprotocols(offered):
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        server = WsTransport(iface, on_message=s_in)
        host, port = await server.listen()
        async with _ws_session(iface) as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(f"ws://{host}:{port}/", protocols=offered)
            assert err.value.status == 400
            # offering 'sip' among others is accepted, and 'sip' is selected
            ws = await session.ws_connect(f"ws://{host}:{port}/", protocols=("chat", "sip"))
            assert ws.protocol == "sip"
            await ws.send_str("garbage that is not SIP")  # dropped, connection kept
            await ws.send_str(bytes(options("WS")).decode())
            got, _, _ = await s_in.get()
            assert isinstance(got, Request)
            await ws.close()
        assert server.stats.refused == 1 and server.stats.malformed == 1
        await server.close()

    run(body)


def test_ws_client_refuses_server_without_sip_subprotocol():
    iface = LoopbackInterface()

    async def body() -> None:
        async def handler(request):
            ws = web.WebSocketResponse()  # selects no subprotocol
            await ws.prepare(request)
            async for _ in ws:
                pass
            return ws

        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        srv = await iface.create_server(runner.server, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()[:2]
        client = WsTransport(iface)
        with pytest.raises(RemoteProtocolError, match="'sip' subprotocol"):
            await client.send(options("WS"), addr)
        assert client.stats.send_errors == 1 and client.connections == []
        await client.close()
        srv.close()
        await srv.wait_closed()
        await runner.cleanup()

    run(body)


def test_ws_binary_frames_and_path():
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        server = WsTransport(iface, on_message=s_in, path="/sip")
        host, port = await server.listen()
        async with _ws_session(iface) as session:
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(f"ws://{host}:{port}/", protocols=("sip",))  # wrong path: 404
            ws = await session.ws_connect(f"ws://{host}:{port}/sip", protocols=("sip",))
            msg = bytes(options("WS"))
            await ws.send_bytes(msg)
            got, addr, _ = await s_in.get()
            assert bytes(got) == msg
            await server.send(build_response(got, 200, "OK", to_tag="t"), addr)
            reply = await asyncio.wait_for(ws.receive(), TIMEOUT)
            assert reply.type == aiohttp.WSMsgType.TEXT
            assert parse_message(reply.data.encode()).status_code == 200
            await ws.close()
        await server.close()

    run(body)


# ---------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------


def test_transport_for():
    iface = LoopbackInterface()
    expected = {"udp": UdpTransport, "tcp": TcpTransport, "tls": TlsTransport, "ws": WsTransport, "wss": WsTransport}
    for kind in TRANSPORT_KINDS:
        t = transport_for(kind.upper(), iface)
        assert type(t) is expected[kind] and t.kind == kind
    assert transport_for("udp", iface).reliable is False
    with pytest.raises(ParameterError, match="unknown SIP transport"):
        transport_for("sctp", iface)
    with pytest.raises(ParameterError, match="NetworkInterface"):
        transport_for("udp", object())


@pytest.mark.parametrize("kind", ["tcp", "tls", "ws"])
def test_server_close_is_reported_to_the_client(kind, pki):
    iface = LoopbackInterface()

    async def body() -> None:
        s_in, c_in = Inbox(), Inbox()
        server, client = make_pair(kind, pki, iface, s_in, c_in)
        lost: asyncio.Queue = asyncio.Queue()
        client.on_connection_lost = lambda addr, t, exc: lost.put_nowait((addr, t))
        addr = await server.listen()
        await client.send(options(server.via_token), addr)
        await s_in.get()
        await server.close()
        assert await asyncio.wait_for(lost.get(), TIMEOUT) == (addr, client)
        assert client.connections == [] and client.stats.connections_closed == 1
        await client.close()

    run(body)


# ---------------------------------------------------------------------------------------
# tlsutil
# ---------------------------------------------------------------------------------------


def test_generated_pki_files(pki):
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (pki.key, pki.ca_key):
        assert key.stat().st_mode & 0o777 == 0o600


def test_ssl_contexts_reject_bad_files(pki, tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        server_ssl_context(tmp_path / "nope.pem", pki.key)
    other = generate_test_pki(tmp_path / "other")
    with pytest.raises(ParameterError, match="cannot load certificate"):
        server_ssl_context(pki.cert, other.key)  # key of another certificate
    with pytest.raises(ParameterError, match="cannot load CA"):
        client_ssl_context(ca_file=pki.key)  # not a certificate
    with pytest.raises(ParameterError, match="both cert_file and key_file"):
        client_ssl_context(ca_file=pki.ca_cert, cert_file=pki.cert)
    with pytest.raises(ParameterError, match="valid_days"):
        generate_test_pki(tmp_path / "x", valid_days=0)
    with pytest.raises(ParameterError, match="IP literals"):
        generate_test_pki(tmp_path / "y", ip_addresses=("localhost",))


def test_mutual_tls_with_client_certificate(pki):
    iface = LoopbackInterface()

    async def body() -> None:
        s_in = Inbox()
        server_ctx = server_ssl_context(pki.cert, pki.key, client_ca_file=pki.ca_cert)
        server = TlsTransport(iface, on_message=s_in, server_ssl=server_ctx)
        addr = await server.listen()
        client = TlsTransport(
            iface, client_ssl=client_ssl_context(ca_file=pki.ca_cert, cert_file=pki.cert, key_file=pki.key)
        )
        await client.send(options("TLS"), addr)
        got, _, _ = await s_in.get()
        assert isinstance(got, Request)
        await client.close()
        await server.close()

    run(body)
