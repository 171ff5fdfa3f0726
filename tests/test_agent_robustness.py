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
* 300 header fields, or 10000 tiny ones: over the parser's limit (256). RFC 3261 sets no
  limit; the fields a response copies are still readable, so 400 (a UAS answers what it
  can, 8.2.6.2), and never a call.
* BYE outside any dialog: 481 (RFC 3261 12.2.2); CANCEL matching no transaction: 481
  (RFC 3261 9.2); ACK matching nothing, or with a bad Content-Length: no response ever
  (RFC 3261 17, 17.1.1.3); OPTIONS: 200 with
  Allow (RFC 3261 11.2); SIP/3.0: 505 (RFC 3261 21.5.7); an unknown method: 501
  (RFC 3261 8.2.1).

After all of it, a normal call with :func:`voicelab.calls.dial` still succeeds.

With ``auth``: the 401 carries one challenge per ``auth_algorithms`` entry, in order; an
ACK for the 401 whose CSeq number differs from the INVITE's (SIPp's automatic ACK) still
ends the 401's retransmissions, because RFC 3261 17.2.3 matches it by the top Via branch. SIPp
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
from voicelab.errors import ParameterError
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
        {(400,)}),
    "OPTIONS with 10000 tiny header fields": (
        lambda c: c.request("OPTIONS", call_id="tiny", branch="tiny", extra="x:1\r\n" * 10000),
        {(400,)}),
    "ACK with a bad Content-Length": (
        lambda c: c.request("ACK", call_id="ackcl", branch="ackcl", to_tag="nosuch", content_length="x"), {()}),
    "BYE for an unknown dialog": (lambda c: c.request("BYE", call_id="nodialog", branch="bye1", to_tag="nosuch"), {(481,)}),
    "ACK with no transaction": (lambda c: c.request("ACK", call_id="noack", branch="ack1", to_tag="nosuch"), {()}),
    "CANCEL for nothing": (lambda c: c.request("CANCEL", call_id="nocancel", branch="cancel1"), {(481,)}),
    "OPTIONS": (lambda c: c.request("OPTIONS", call_id="opt", branch="opt1"), {(200,)}),
    "SIP/3.0 request": (lambda c: c.request("OPTIONS", call_id="v3", branch="v3", version="SIP/3.0"), {(505,)}),
    "unknown method": (lambda c: c.request("FROBNICATE", call_id="frob", branch="frob1"), {(501,)}),
}


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


@pytest.mark.parametrize("name", list(CASES))
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


# ------------------------------------------------------------------ digest challenges
def _challenged_algorithms(response: Response) -> list[str]:
    values = [f.value for f in response.headers.fields("www-authenticate")]
    return [re.search(r'algorithm="?([A-Za-z0-9-]+)', v).group(1).upper() for v in values]


async def _challenge_then_ack(**agent_kw):
    """INVITE (CSeq 2) -> 401, then an ACK with CSeq 1 on the INVITE's branch."""
    async with Agent(codecs=["pcmu"], speech="harvard", auth=("alice", "secret"), **agent_kw) as agent:
        c = await Client.open(agent.address)
        try:
            replies = await c.exchange(_invite(c, "auth", body=SDP, cseq=2))
            (final,) = [r for r in replies if r.status_code >= 200]
            ack = c.request("ACK", call_id="inv-auth", branch="invauth", cseq=1, to_tag=final.to.tag)
            after = await c.exchange(ack)
        finally:
            c.close()
        invite_states = [tx.state.name for tx in agent.ua.transaction_table.transactions()
                         if tx.key.role == "server" and tx.key.method == "INVITE"]
        return final, after, invite_states, agent.calls_answered


@pytest.mark.parametrize("algorithms, expected", [(None, ["SHA-256", "MD5"]), (("MD5",), ["MD5"]),
                                                  (("md5", "SHA-256"), ["MD5", "SHA-256"])])
def test_auth_algorithms_choose_the_challenges_and_ack_with_other_cseq_stops_the_401(algorithms, expected):
    kw = {} if algorithms is None else {"auth_algorithms": algorithms}
    final, after, invite_states, answered = asyncio.run(_challenge_then_ack(**kw))
    assert final.status_code == 401 and final.cseq.number == 2
    assert _challenged_algorithms(final) == expected
    # the ACK (CSeq 1 for the CSeq 2 INVITE) matched the INVITE server transaction by its
    # branch (RFC 3261 17.2.3): Confirmed, so Timer G retransmits the 401 no more; without
    # the match it stays Completed and the 401 repeats until Timer H (32 s)
    assert invite_states == ["CONFIRMED"], invite_states
    assert all(r.status_code == 401 for r in after)  # at most a retransmission already on its way
    assert answered == 0


def test_agent_rejects_bad_auth_algorithms():
    for bad in ("MD5", (), ("SHA-1",), ("MD5", "md5"), [3]):
        with pytest.raises(ParameterError, match="auth_algorithms"):
            Agent(auth=("alice", "secret"), auth_algorithms=bad)


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
