"""Security and load robustness of the live agent (issue #11: "Security", "Connections and load").

* Digest nonces: the secret comes from the OS CSPRNG per agent, so an Authorization
  header captured from one agent is refused (401) by the same agent restarted on the
  same port with the same seed.
* Connections: idle and half-sent TCP connections are closed after a timeout, more than
  the cap are refused (closed at once, counted, one log line), and the agent still answers
  a normal call while its connection table is full of idle sockets.
"""

from __future__ import annotations

import asyncio

import pytest

from voicelab.calls import Agent
from voicelab.net.iface import free_port
from voicelab.sip.auth import DigestClient, DigestCredentials
from voicelab.sip.message import Request, Response, parse_message

from .test_agent_robustness import SDP, Client

REPLY_TIMEOUT_S = 3.0


async def _final(c: Client, call_id: str) -> Response:
    """The first final (>= 200) response for ``call_id`` (provisional ones skipped)."""
    while True:
        raw = await asyncio.wait_for(c.probe.replies.get(), REPLY_TIMEOUT_S)
        msg = parse_message(raw)
        if isinstance(msg, Response) and msg.call_id == call_id and msg.status_code >= 200:
            return msg


async def _replay_after_restart(deterministic: bool) -> tuple[int, int]:
    port = free_port(kind="udp")
    kw = dict(port=port, codecs=["pcmu"], speech="harvard", auth=("alice", "secret"), seed=7,
              deterministic_auth=deterministic)
    c = await Client.open(("127.0.0.1", port))  # one client socket: the replay's Via still reaches it
    try:
        async with Agent(**kw) as agent:
            raw = c.request("INVITE", call_id="replay-1", branch="replay1",
                            extra="Content-Type: application/sdp\r\n", body=SDP)
            invite = parse_message(raw)
            assert isinstance(invite, Request)
            c.transport.sendto(raw, agent.address)
            challenge = await _final(c, "replay-1")
            assert challenge.status_code == 401
            authorized = DigestClient(DigestCredentials("alice", "secret")).authorize(invite, challenge, branch="z9hG4bKreplay2")
            assert authorized is not None
            captured = bytes(authorized)  # what an eavesdropper keeps
            c.transport.sendto(captured, agent.address)
            first = (await _final(c, "replay-1")).status_code
        async with Agent(**kw) as agent:  # the restart: same port, same seed
            c.transport.sendto(captured, agent.address)
            replayed = (await _final(c, "replay-1")).status_code
    finally:
        c.close()
    return first, replayed


def test_captured_authorization_is_refused_after_a_restart():
    first, replayed = asyncio.run(_replay_after_restart(deterministic=False))
    assert first == 200  # the credentials were good
    assert replayed == 401  # the restarted agent has a new secret: the old nonce is worthless


def test_deterministic_auth_is_what_makes_the_secret_repeatable():
    """The opt-in for reproducible virtual-time runs: the same seed gives the same secret (so the replay passes)."""
    first, replayed = asyncio.run(_replay_after_restart(deterministic=True))
    assert (first, replayed) == (200, 200)


# ---------------------------------------------------------------- connections and load
from voicelab.calls import dial  # noqa: E402
from voicelab.sip.transport import ConnectionLimits  # noqa: E402


async def _closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the agent closed (or reset) this connection within ``timeout`` s."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except asyncio.TimeoutError:
        return False


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_connection_cap_refuses_the_excess_and_a_call_still_gets_through(transport, caplog):
    """40 idle sockets against a cap of 8: 32 refused at once with one log line; once the
    idle timeout (4 s) frees the slots, a normal call over the same transport works."""
    import logging
    import ssl

    # idle_timeout: long enough that 40 TLS handshakes on a loaded machine finish well before it
    limits = ConnectionLimits(max_connections=8, idle_timeout=4.0, header_timeout=0.5)

    async def main():
        async with Agent(transport=transport, codecs=["pcmu"], speech="harvard", mode="echo",
                         connection_limits=limits) as agent:
            host, port = agent.address
            ctx = None
            if transport == "tls":
                ctx = ssl.create_default_context(cafile=agent.ca_file)
                ctx.check_hostname = False
            held = []
            for _ in range(40):
                held.append(await asyncio.open_connection(host, port, ssl=ctx))
                await asyncio.sleep(0)  # let the agent accept in order
            closed = await asyncio.gather(*(_closed_by_peer(r, 0.5) for r, _ in held))
            t = agent.sip.transport
            refused = t.stats.refused
            # the excess was refused at once, the first 8 kept (until idle_timeout)
            assert sum(closed) == 32 and not any(closed[:8]), closed
            assert refused == 32 and len(t.connections) == 8
            # the idle ones go after idle_timeout (loop clock)
            assert all(await asyncio.gather(*(_closed_by_peer(r, 10.0) for r, _ in held[:8])))
            assert t.stats.idle_closed == 8
            for _, w in held:
                w.close()
            uri = f"sip:agent@{host}:{port};transport={transport}"
            r = await dial(uri, codec="pcmu", seconds=1.0, speech="harvard", transport=transport,
                           ca_file=agent.ca_file, echo=True)
            assert r["packets_received"] > 0
            return refused

    with caplog.at_level(logging.WARNING, logger="voicelab.sip.transport"):
        asyncio.run(main())
    cap_lines = [r for r in caplog.records if "max_connections" in r.getMessage()]
    idle_lines = [r for r in caplog.records if "idle_timeout" in r.getMessage()]
    assert len(cap_lines) == 1 and len(idle_lines) == 1, [r.getMessage() for r in caplog.records]
    assert not any(r.exc_info for r in caplog.records)


def test_half_sent_message_is_closed_after_the_header_timeout():
    limits = ConnectionLimits(max_connections=8, idle_timeout=30.0, header_timeout=0.5)

    async def main():
        async with Agent(transport="tcp", codecs=["pcmu"], speech="harvard", connection_limits=limits) as agent:
            host, port = agent.address
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"INVITE sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKslow\r\n")
            quiet_r, quiet_w = await asyncio.open_connection(host, port)  # idle, nothing sent: stays (30 s)
            assert await _closed_by_peer(reader, 3.0)
            assert not await _closed_by_peer(quiet_r, 0.2)
            stats = agent.sip.transport.stats
            writer.close()
            quiet_w.close()
            return stats.header_timeouts, stats.idle_closed

    assert asyncio.run(main()) == (1, 0)


def test_websocket_cap_answers_503():
    import aiohttp

    limits = ConnectionLimits(max_connections=2, idle_timeout=30.0)

    async def main():
        async with Agent(transport="ws", codecs=["pcmu"], speech="harvard", connection_limits=limits) as agent:
            host, port = agent.address
            async with aiohttp.ClientSession() as session:
                held = [await session.ws_connect(f"ws://{host}:{port}/", protocols=("sip",)) for _ in range(2)]
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await session.ws_connect(f"ws://{host}:{port}/", protocols=("sip",))
                for ws in held:
                    await ws.close()
            return err.value.status, agent.sip.transport.stats.refused

    assert asyncio.run(main()) == (503, 1)


def test_connection_limits_are_checked():
    from voicelab.errors import ParameterError

    for bad in (dict(max_connections=0), dict(idle_timeout=0), dict(header_timeout=float("nan")),
                dict(max_connections=True)):
        with pytest.raises(ParameterError):
            ConnectionLimits(**bad)


def test_accept_failures_log_one_line_without_traceback():
    """asyncio's EMFILE accept() errors (a traceback each, several a second) become one line a minute."""
    import logging

    from voicelab.sip.transport import _AcceptErrorFilter

    f = _AcceptErrorFilter()
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        import sys

        exc_info = sys.exc_info()
    passed = []
    for i in range(100):
        rec = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource",
                                None, exc_info)
        rec.created = 1000.0 + i * 0.1  # 10 s of a storm
        if f.filter(rec):
            passed.append(rec)
    assert len(passed) == 1 and passed[0].exc_info is None and "Too many open files" in passed[0].getMessage()
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
    assert f.filter(other)


def test_websocket_half_sent_upgrade_is_closed_after_the_header_timeout():
    """aiohttp has no header timeout: a half-sent HTTP upgrade (or a silent connection) used to stay for ever."""
    limits = ConnectionLimits(max_connections=4, idle_timeout=30.0, header_timeout=0.5)

    async def main():
        async with Agent(transport="ws", codecs=["pcmu"], speech="harvard", connection_limits=limits) as agent:
            host, port = agent.address
            half_r, half_w = await asyncio.open_connection(host, port)
            half_w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
            silent = [await asyncio.open_connection(host, port) for _ in range(6)]  # 4 fit; 2 refused
            closed = [await _closed_by_peer(r, 3.0) for r in [half_r] + [r for r, _ in silent]]
            for w in [half_w] + [w for _, w in silent]:
                w.close()
            s = agent.sip.transport.stats
            # then a normal call over WS still works
            r = await dial(f"sip:agent@{host}:{port};transport=ws", codec="pcmu", seconds=1.0, speech="harvard",
                           transport="ws", echo=True)
            return closed, s.refused, s.header_timeouts, r["packets_received"]

    closed, refused, header_timeouts, packets = asyncio.run(main())
    assert all(closed) and refused == 3 and header_timeouts == 4 and packets > 0, (closed, refused, header_timeouts)
