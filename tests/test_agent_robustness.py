"""The running agent against malformed and unexpected SIP: it answers as the RFC says (or
drops what cannot be answered) and keeps taking calls.

A probe socket on 127.0.0.1 (opened through the network interface) sends one datagram to
a live :class:`~voicelab.agent.Agent` over UDP, then an OPTIONS "barrier" with its own
Call-ID. The agent handles datagrams in arrival order, and UDP on loopback keeps their
order, so everything that arrives before the barrier's 200 is the agent's whole reply to
the probe: an empty list means it was dropped. No sleeps: every wait is a reply with a
timeout.

What is expected, and why:

* bytes that are not SIP (binary junk, a bare CRLF keep-alive, text): dropped; nothing
  in them says where a response would go.
* an INVITE cut off before Call-ID/CSeq: dropped (a response copies those headers,
  RFC 3261 8.2.6.2, so none can be built).
* a request whose datagram ends before the Content-Length says its body does: 400
  (RFC 3261 18.3: "the element SHOULD generate a 400"); a Content-Length that is not
  1*DIGIT (RFC 3261 20.14, RFC 4475 3.1.2.6 "ncl"): 400.
* 300 header fields, or 10000 tiny ones: over the parser's limit (256); RFC 3261 sets no
  limit, so 400/513 or a drop are all acceptable, but never a call.
* BYE outside any dialog: 481 (RFC 3261 12.2.2); CANCEL matching no transaction: 481
  (RFC 3261 9.2); ACK matching nothing: no response ever (RFC 3261 17); OPTIONS: 200 with
  Allow (RFC 3261 11.2); SIP/3.0: 505 (RFC 3261 21.5.7); an unknown method: 501
  (RFC 3261 8.2.1).

After all of it, a normal call with :func:`voicelab.calls.dial` still succeeds. SIPp
drives two unexpected sequences too (``tests/sipp/``): a BYE before the ACK, and
re-INVITEs putting the agent on hold and back.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from voicelab.calls import Agent, dial
from voicelab.net.iface import LoopbackInterface, free_port
from voicelab.sip.message import Response, parse_message

from .conftest import need_tool, run_clean

SCENARIOS = Path(__file__).resolve().parent / "sipp"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
REPLY_TIMEOUT_S = 3.0


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.replies.put_nowait(bytes(data))

    def error_received(self, exc: Exception) -> None:  # ICMP from a closed port: not a reply
        pass


class Client:
    """A raw SIP client socket aimed at one agent."""

    def __init__(self, transport, probe: _Probe, agent_addr: tuple) -> None:
        self.transport, self.probe, self.agent_addr = transport, probe, agent_addr
        self.port = transport.get_extra_info("sockname")[1]
        self.n = 0

    @classmethod
    async def open(cls, agent_addr: tuple) -> "Client":
        iface = LoopbackInterface(asyncio.get_running_loop())
        transport, probe = await iface.create_datagram_endpoint(_Probe, local_addr=("127.0.0.1", 0))
        return cls(transport, probe, agent_addr)

    def close(self) -> None:
        self.transport.close()

    def request(self, method: str, *, call_id: str, branch: str, cseq: int | None = 1, to_tag: str | None = None,
                extra: str = "", body: bytes = b"", content_length: str | None = None, version: str = "SIP/2.0") -> bytes:
        """A request from this client to the agent, with every mandatory header (RFC 3261 8.1.1)."""
        uri = f"sip:agent@{self.agent_addr[0]}:{self.agent_addr[1]}"
        cseq_line = f"CSeq: {cseq} {method}\r\n" if cseq is not None else ""
        head = (f"{method} {uri} {version}\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe{branch}\r\n"
                f"To: <{uri}>{';tag=' + to_tag if to_tag else ''}\r\nCall-ID: {call_id}\r\n{cseq_line}"
                f"Contact: <sip:probe@127.0.0.1:{self.port}>\r\n{extra}"
                f"Content-Length: {len(body) if content_length is None else content_length}\r\n\r\n")
        return head.encode() + body

    async def exchange(self, data: bytes) -> list[Response]:
        """Send ``data``, then a barrier OPTIONS; every response that came before the barrier's."""
        self.n += 1
        barrier = f"barrier-{self.n}-{self.port}"
        self.transport.sendto(data, self.agent_addr)
        self.transport.sendto(self.request("OPTIONS", call_id=barrier, branch=f"barrier{self.n}"), self.agent_addr)
        got: list[Response] = []
        while True:
            raw = await asyncio.wait_for(self.probe.replies.get(), REPLY_TIMEOUT_S)
            msg = parse_message(raw)
            assert isinstance(msg, Response), raw[:200]
            if msg.call_id == barrier:
                assert msg.status_code == 200, raw[:200]
                return got
            got.append(msg)


# ---------------------------------------------------------------- the probe messages
def _invite(c: Client, tag: str, *, extra: str = "", **kw) -> bytes:
    return c.request("INVITE", call_id=f"inv-{tag}", branch=f"inv{tag}", extra=extra + "Content-Type: application/sdp\r\n", **kw)


def _junk(c: Client) -> bytes:
    return np.random.default_rng(3).integers(0, 256, 600, dtype=np.uint8).tobytes()


CASES = {
    # name: (message builder, acceptable replies as tuples of status codes)
    "binary junk": (_junk, {()}),
    "crlf keep-alive": (lambda c: b"\r\n\r\n", {()}),
    "text that is not SIP": (lambda c: b"hello agent\r\n\r\n", {()}),
    "INVITE cut before Call-ID": (lambda c: (lambda m: m[:m.index(b"Call-ID")])(_invite(c, "cut", body=SDP)), {()}),
    "INVITE body shorter than Content-Length": (lambda c: _invite(c, "short", body=SDP)[:-25], {(400,)}),
    "INVITE Content-Length past the datagram": (
        lambda c: _invite(c, "big", body=SDP, content_length=str(len(SDP) + 500)), {(400,)}),
    "INVITE Content-Length not a number": (lambda c: _invite(c, "nan", body=SDP, content_length="twelve"), {(400,)}),
    "INVITE Content-Length negative": (lambda c: _invite(c, "neg", body=SDP, content_length="-999"), {(400,)}),
    "INVITE with 300 header fields": (
        lambda c: _invite(c, "many", body=SDP, extra="".join(f"X-Filler-{i}: {i}\r\n" for i in range(300))),
        {(), (400,), (513,)}),
    "OPTIONS with 10000 tiny header fields": (
        lambda c: c.request("OPTIONS", call_id="tiny", branch="tiny", extra="x:1\r\n" * 10000),
        {(), (400,), (513,)}),
    "BYE for an unknown dialog": (lambda c: c.request("BYE", call_id="nodialog", branch="bye1", to_tag="nosuch"), {(481,)}),
    "ACK with no transaction": (lambda c: c.request("ACK", call_id="noack", branch="ack1", to_tag="nosuch"), {()}),
    "CANCEL for nothing": (lambda c: c.request("CANCEL", call_id="nocancel", branch="cancel1"), {(481,)}),
    "OPTIONS": (lambda c: c.request("OPTIONS", call_id="opt", branch="opt1"), {(200,)}),
    "SIP/3.0 request": (lambda c: c.request("OPTIONS", call_id="v3", branch="v3", version="SIP/3.0"), {(505,)}),
    "unknown method": (lambda c: c.request("FROBNICATE", call_id="frob", branch="frob1"), {(501,)}),
}
#: cases where the agent today drops what RFC 3261 18.3 / 20.14 says to answer with 400
#: (its own ``voicelab sip parse`` reports reply_status 400 for the same bytes)
KNOWN_DROPS = {
    "INVITE body shorter than Content-Length",
    "INVITE Content-Length past the datagram",
    "INVITE Content-Length not a number",
    "INVITE Content-Length negative",
}


def _params():
    for name in CASES:
        marks = ()
        if name in KNOWN_DROPS:
            marks = pytest.mark.xfail(strict=True, raises=AssertionError,
                                      reason="agent drops a request with a bad Content-Length instead of answering 400 "
                                      "(RFC 3261 18.3); UserAgent._reject_malformed cannot re-parse it")
        yield pytest.param(name, id=name, marks=marks)


async def _probe_agent(name: str):
    build, _ = CASES[name]
    async with Agent(codecs=["pcmu"], speech="harvard") as agent:
        c = await Client.open(agent.address)
        try:
            data = build(c)
            replies = await c.exchange(data)
        finally:
            c.close()
        return data, replies, agent.calls_answered, list(agent.streams)


@pytest.mark.parametrize("name", list(_params()))
def test_agent_answers_or_drops_as_the_rfc_says(name):
    data, replies, answered, streams = asyncio.run(_probe_agent(name))
    codes = tuple(r.status_code for r in replies)
    print(f"{name}: {codes or 'dropped'}")
    assert codes in CASES[name][1], (name, [f"{r.status_code} {r.reason}" for r in replies])
    assert answered == 0 and not streams  # nothing here may set up a call
    for r in replies:  # a response copies Call-ID, CSeq and the top Via of its request (RFC 3261 8.2.6.2)
        call_id = re.search(rb"\r\nCall-ID: (\S+)", data).group(1).decode()
        branch = re.search(rb";branch=(\S+)\r\n", data).group(1).decode()
        cseq = int(re.search(rb"\r\nCSeq: (\d+)", data).group(1))
        assert (r.call_id, r.via[0].branch, r.cseq.number) == (call_id, branch, cseq)
    if name == "OPTIONS":
        allow = {m.strip().upper() for f in replies[0].headers.fields("allow") for m in f.value.split(",")}
        assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"} <= allow, allow


def test_agent_keeps_serving_after_abuse():
    """Every probe above on one agent, then a normal call through voicelab.calls.dial."""

    async def main():
        async with Agent(codecs=["pcmu"], speech="harvard") as agent:
            c = await Client.open(agent.address)
            try:
                for name, (build, _) in CASES.items():
                    await c.exchange(build(c))
            finally:
                c.close()
            assert agent.calls_answered == 0
            host, port = agent.address
            r = await dial(f"sip:agent@{host}:{port}", codec="pcmu", seconds=1.0, speech="harvard")
            await asyncio.wait_for(agent.ended(1), 5)
            assert r["codec"] == "pcmu" and r["packets_received"] > 0 and r["received"].size > 0
            assert agent.calls_answered == 1 and agent.calls_ended == 1 and not agent.errors, agent.errors

    run_clean(main, timeout=30)


# ------------------------------------------------------------- SIPp unexpected sequences
async def _sipp_against_agent(sipp: str, scenario: str, tmp_path: Path):
    async with Agent(codecs=["pcmu"], speech="harvard") as agent:
        host, port = agent.address
        err = tmp_path / "sipp_errors.log"
        proc = await asyncio.create_subprocess_exec(
            sipp, f"{host}:{port}", "-sf", str(SCENARIOS / scenario), "-s", "service", "-m", "1",
            "-i", "127.0.0.1", "-p", str(free_port(kind="udp")), "-nostdin", "-timeout", "20s", "-timeout_error",
            "-trace_err", "-error_file", str(err), "-trace_logs", "-log_file", str(tmp_path / "sipp_logs.log"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(tmp_path))
        out, _ = await asyncio.wait_for(proc.communicate(), 40)
        await asyncio.wait_for(agent.ended(1), 5)
        c = await Client.open(agent.address)  # still answering?
        try:
            after = await c.exchange(c.request("OPTIONS", call_id="after", branch="after"))
        finally:
            c.close()
        errors = err.read_text(errors="replace") if err.exists() else ""
        return proc.returncode, out.decode(errors="replace"), errors, agent, [r.status_code for r in after]


@pytest.mark.slow
def test_sipp_bye_before_ack(tmp_path):
    sipp = need_tool("sipp", "sip-tester")
    rc, out, errors, agent, after = asyncio.run(_sipp_against_agent(sipp, "uac_bye_before_ack.xml", tmp_path))
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"  # the BYE got its 200
    assert agent.calls_answered == 1 and agent.calls_ended == 1 and not agent.streams
    assert after == [200] and not agent.errors, (after, agent.errors)


@pytest.mark.slow
def test_sipp_reinvite_hold_and_resume(tmp_path):
    sipp = need_tool("sipp", "sip-tester")
    rc, out, errors, agent, after = asyncio.run(_sipp_against_agent(sipp, "uac_reinvite_hold.xml", tmp_path))
    # exit 0: the hold re-INVITE was answered a=recvonly, the resume one not held, BYE 200
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"
    log = (tmp_path / "sipp_logs.log").read_text()
    assert "hold answered with a=recvonly" in log, log
    assert agent.calls_answered == 1 and agent.calls_ended == 1 and not agent.streams
    assert after == [200] and not agent.errors, (after, agent.errors)
