"""The lab's caller against real answers (issue 11, "The caller against real answers").

* A 2xx naming a codec we did not offer, or a 2xx without SDP: ACK, then BYE (the peer
  keeps no dialog: SIPp's uas scenario completes only when the BYE comes), and a one-line
  typed error naming the reason.
* Giving up after a 180 sends CANCEL (RFC 3261 9.1); 3xx Contacts are followed with a
  hop limit; time-outs say what did not happen (Timer B), not event class names.
* ``voicelab call --target`` twice against one agent: fresh Call-ID/tag/branch (no 482).
* Transport failures (connection refused, TLS certificate not trusted) fail the
  transaction with their cause, without "Task exception was never retrieved"; the agent
  counts and logs in one line a response it cannot deliver; a WebSocket server never
  connects back to a client (RFC 7118).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from pathlib import Path

import pytest

from voicelab.agent import Agent
from voicelab.calls import AsyncUserAgent, dial, open_caller
from voicelab.errors import LocalProtocolError, PeerTimeoutError, RemoteProtocolError, VoicelabError
from voicelab.net.iface import LoopbackInterface, free_port
from voicelab.sip.ua import CallFailed, IncomingCall, UserAgent

from .conftest import need_tool
from .test_interop_sipp import SCENARIOS, _sipp


class _Leaks:
    """Collects what the loop's exception handler sees ("Task exception was never retrieved")."""

    def __init__(self):
        self.contexts: list[dict] = []

    def install(self):
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: self.contexts.append(ctx))

    @property
    def messages(self):
        return [c.get("message", "") for c in self.contexts]


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    assert not isinstance(exc, (AttributeError, TypeError, KeyError))
    return text


# ----------------------------------------------------------- SIPp uas: unusable 2xx
async def _dial_sipp(sipp: str, scenario: str, tmp_path: Path, *sipp_args: str, **dial_kw):
    port = free_port(kind="udp")
    proc = asyncio.ensure_future(_sipp(sipp, "-sf", str(SCENARIOS / scenario), "-p", str(port), *sipp_args,
                                       cwd=tmp_path, timeout=45.0))
    leaks = _Leaks()
    leaks.install()
    err: BaseException | None = None
    result = None
    try:
        result = await dial(f"sip:service@127.0.0.1:{port}", codec="pcmu", seconds=1.0, speech="harvard",
                            ready_timeout=10.0, **dial_kw)
    except VoicelabError as exc:
        err = exc
    except BaseException:
        proc.cancel()
        raise
    rc, out, errors = await proc
    gc.collect()
    await asyncio.sleep(0)
    return result, err, rc, out, errors, leaks.messages


@pytest.mark.slow
@pytest.mark.parametrize("scenario, reason", [("uas_2xx_other_codec.xml", "unusable"),
                                              ("uas_2xx_no_sdp.xml", "no SDP answer")])
def test_unusable_2xx_is_acked_then_hung_up_with_a_typed_error(tmp_path, scenario, reason):
    sipp = need_tool("sipp", "sip-tester")
    result, err, rc, out, errors, leaks = asyncio.run(_dial_sipp(sipp, scenario, tmp_path))
    # SIPp's scenario completes (exit 0) only if our ACK and then our BYE came
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"
    assert result is None and isinstance(err, RemoteProtocolError), err
    text = _one_line(err)
    assert reason in text and "BYE" in text, text
    assert not leaks, leaks


@pytest.mark.slow
def test_giving_up_after_180_sends_cancel(tmp_path):
    sipp = need_tool("sipp", "sip-tester")
    t = time.perf_counter()
    result, err, rc, out, errors, leaks = asyncio.run(_dial_sipp(sipp, "uas_ring_no_answer.xml", tmp_path,
                                                                 answer_timeout=1.0))
    # the scenario completes only when our CANCEL came (200, 487, ACK)
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"
    assert isinstance(err, PeerTimeoutError)
    text = _one_line(err)
    assert "rang but did not answer within 1 s" in text and "CANCEL" in text, text
    assert "CallEstablished" not in text and "CallFailed" not in text
    assert not leaks and time.perf_counter() - t < 20


@pytest.mark.slow
def test_302_is_followed_to_its_contact(tmp_path):
    sipp = need_tool("sipp", "sip-tester")

    async def main():
        async with Agent(codecs=["pcmu"], mode="echo") as agent:
            r = await _dial_sipp(sipp, "uas_redirect.xml", tmp_path, "-set", "target", agent.uri)
            return r, agent.calls_answered

    (result, err, rc, out, errors, leaks), answered = asyncio.run(main())
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"
    assert err is None and result["codec"] == "pcmu" and answered == 1


async def _redirector(loop_to_self: bool):
    """An in-process UAS that answers every INVITE with 302 to itself (a redirect loop)."""
    from voicelab.sip.transport import transport_for

    iface = LoopbackInterface(asyncio.get_running_loop())
    t = transport_for("udp", iface, parse=False)
    addr = await t.listen("127.0.0.1", 0)
    ua = UserAgent(local_uri="sip:r@127.0.0.1", local_addr=tuple(addr[:2]), rng=5, codecs=["pcmu"])
    sip = AsyncUserAgent(ua, t)
    me = f"sip:r@127.0.0.1:{addr[1]}"

    async def serve():
        while True:
            ev = await sip.events.get()
            if isinstance(ev, IncomingCall):
                ua.answer(ev.call, 302, now=asyncio.get_running_loop().time(), headers=[("Contact", f"<{me}>")])
                sip.flush()

    task = asyncio.get_running_loop().create_task(serve())
    return me, sip, task


def test_redirect_loop_stops_at_the_hop_limit_and_names_the_target():
    async def main():
        me, sip, task = await _redirector(True)
        try:
            with pytest.raises(RemoteProtocolError) as ei:
                await dial(me, seconds=1.0, speech="harvard", max_redirects=2, ready_timeout=3.0)
            return ei.value, me
        finally:
            task.cancel()
            await sip.close()

    err, me = asyncio.run(main())
    text = _one_line(err)
    assert "more than 2 times" in text and me in text and "302" in text, text
    assert err.status_code == 302


def test_invite_timeout_names_timer_b_not_event_classes():
    """Nobody answers at all: the INVITE's Timer B (64*T1) ends it, said in words."""
    from voicelab.sip.timers import TimerConfig

    async def main():
        from voicelab.sip.transport import transport_for

        iface = LoopbackInterface(asyncio.get_running_loop())
        t = transport_for("udp", iface, parse=False)
        addr = await t.listen("127.0.0.1", 0)
        ua = UserAgent(local_uri="sip:c@127.0.0.1", local_addr=tuple(addr[:2]), rng=3, codecs=["pcmu"],
                       timers=TimerConfig(t1=0.02))  # Timer B = 64*T1 = 1.28 s keeps the test short
        sip = AsyncUserAgent(ua, t)
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dead.bind(("127.0.0.1", 0))  # a port that swallows everything
        try:
            call = ua.invite(f"sip:x@127.0.0.1:{dead.getsockname()[1]}", now=asyncio.get_running_loop().time())
            sip.flush()
            ev = await sip.wait_for(CallFailed, timeout=5)
            with pytest.raises(PeerTimeoutError) as ei:
                await sip.wait_for(CallFailed, timeout=0.05)
            return ev, ei.value
        finally:
            dead.close()
            await sip.close()

    ev, timeout = asyncio.run(main())
    assert ev.status == 408 and ev.reason == "no final response to INVITE within 1.28 s (Timer B)"
    assert "CallFailed" not in str(timeout) and "final response" in str(timeout)


# ---------------------------------------------------------- fresh identifiers (482)
@pytest.mark.slow
def test_voicelab_call_target_twice_against_one_agent(capsys):
    """Two ``voicelab call --target`` runs: two calls at the agent (not a 482, nor a
    second INVITE taken for a retransmission of the first: same Call-ID, tag, branch)."""
    import threading

    from voicelab.cli import main as cli_main

    ready, holder = threading.Event(), {}

    def serve():
        async def run():
            async with Agent(codecs=["pcmu"], mode="echo") as agent:
                holder.update(agent=agent, loop=asyncio.get_running_loop(), stop=asyncio.Event())
                ready.set()
                await holder["stop"].wait()
                # the caller is done once its BYE is answered; the agent ends the call after
                # closing its stream: wait for that before leaving
                await asyncio.wait_for(agent.ended(agent.calls_answered), 10.0)

        asyncio.run(run())

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    assert ready.wait(20)
    agent = holder["agent"]
    try:
        rcs = [cli_main(["call", "--target", agent.uri, "--duration", "1", "--speech", "harvard", "--json"])
               for _ in range(2)]
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        th.join(20)
    out = capsys.readouterr()
    assert rcs == [0, 0], out.err[-2000:]
    assert "482" not in out.out + out.err
    assert agent.calls_answered == 2 and len(agent.recordings) == 2  # two Call-IDs


def test_target_calls_draw_fresh_identifiers_unless_seeded():
    async def ids(seed):
        iface = LoopbackInterface(asyncio.get_running_loop())
        ua, sip = await open_caller(iface, codec="pcmu", seed=seed)
        try:
            call = ua.invite("sip:x@127.0.0.1:9", now=0.0)
            inv = call._invite
            return call.call_id, inv.from_.tag, inv.via[0].branch
        finally:
            await sip.close()

    a, b = asyncio.run(ids(None)), asyncio.run(ids(None))
    assert all(x != y for x, y in zip(a, b))
    assert asyncio.run(ids(7)) == asyncio.run(ids(7))
    from voicelab.cli import build_parser

    args = build_parser().parse_args(["call", "--target", "sip:x@127.0.0.1:9"])
    assert args.seed is None  # the CLI asks for no seed unless --seed is given


# --------------------------------------------------------------- transport failures
def test_connection_refused_fails_with_the_cause_and_no_task_tracebacks():
    async def main():
        leaks = _Leaks()
        leaks.install()
        port = free_port(kind="tcp")  # nobody listens
        with pytest.raises(RemoteProtocolError) as ei:
            await dial(f"sip:x@127.0.0.1:{port};transport=tcp", transport="tcp", ready_timeout=1.0, seconds=1.0,
                       speech="harvard")
        gc.collect()
        await asyncio.sleep(0)
        return ei.value, leaks.messages

    err, leaks = asyncio.run(main())
    text = _one_line(err)
    assert "connection refused" in text and "OPTIONS" not in text.split(":")[0], text
    assert err.status_code == 503
    assert not [m for m in leaks if "never retrieved" in m], leaks


def test_untrusted_tls_certificate_is_named_and_ca_file_fixes_it():
    async def main():
        leaks = _Leaks()
        leaks.install()
        async with Agent(codecs=["pcmu"], transport="tls", mode="echo") as agent:
            with pytest.raises(RemoteProtocolError) as ei:
                await dial(agent.uri, transport="tls", ready_timeout=3.0, seconds=1.0, speech="harvard")
            ok = await dial(agent.uri, transport="tls", ca_file=agent.ca_file, seconds=1.0, speech="harvard")
        gc.collect()
        await asyncio.sleep(0)
        return ei.value, ok, leaks.messages

    err, ok, leaks = asyncio.run(main())
    text = _one_line(err)
    assert "TLS certificate not trusted" in text and "--ca-file" in text, text
    assert ok["codec"] == "pcmu"
    assert not [m for m in leaks if "never retrieved" in m], leaks


def test_cli_has_ca_file_for_target_calls():
    from voicelab.cli import build_parser

    args = build_parser().parse_args(["call", "--target", "sips:x@127.0.0.1:5061", "--sip-transport", "tls",
                                      "--ca-file", "/tmp/ca.pem"])
    assert args.ca_file == "/tmp/ca.pem"


def test_agent_counts_and_logs_an_undeliverable_response_in_one_line(caplog):
    async def main():
        leaks = _Leaks()
        leaks.install()
        async with Agent(codecs=["pcmu"], mode="echo") as agent:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                for k in range(3):  # responses go to maddr (RFC 3261 18.2.2): an address nobody may reach
                    s.sendto((f"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\n"
                              f"Via: SIP/2.0/UDP 127.0.0.1:9;maddr=192.0.2.1;branch=z9hG4bKmaddr{k}\r\n"
                              f"From: <sip:x@127.0.0.1>;tag=a{k}\r\nTo: <sip:agent@127.0.0.1>\r\n"
                              f"Call-ID: maddr{k}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                             agent.address)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5.0  # wait for the condition (bounded), not a fixed time
                while agent.sip.send_failures < 3 and loop.time() < deadline:
                    await asyncio.sleep(0.01)
            finally:
                s.close()
            n = (agent.sip.send_failures, agent.ua.undeliverable_responses)
        gc.collect()
        await asyncio.sleep(0)
        return n, leaks.messages

    with caplog.at_level(logging.WARNING):
        (failures, undeliverable), leaks = asyncio.run(main())
    assert failures == 3 and undeliverable == 3
    lines = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert len(lines) == 3 and all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    assert "192.0.2.1" in lines[0].getMessage()
    assert not [m for m in leaks if "never retrieved" in m], leaks


def test_websocket_server_never_connects_back_to_a_client():
    from voicelab.sip.transport import WsTransport

    async def main():
        iface = LoopbackInterface(asyncio.get_running_loop())
        got = []
        server = WsTransport(iface, parse=False, on_message=lambda data, addr, t: got.append(addr))
        await server.listen("127.0.0.1", 0)
        client = WsTransport(iface, parse=False)
        msg = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS c.invalid;branch=z9hG4bKws1\r\n"
               b"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: ws1\r\nCSeq: 1 OPTIONS\r\n"
               b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        await client.send(msg, server.local_addr)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        await client.close()
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        opened = server.stats.connections_opened
        with pytest.raises(LocalProtocolError) as ei:
            await server.send(b"SIP/2.0 200 OK\r\n\r\n", got[0])
        closed_and_opened = (server.stats.connections_opened, opened)
        await server.close()
        return ei.value, closed_and_opened

    err, (after, before) = asyncio.run(main())
    assert "RFC 7118" in str(err) and after == before  # no new (outgoing) connection was tried
