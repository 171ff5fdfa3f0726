"""Robustness of the agent's media and dialogs against real peers (issue 11, "Media and dialogs").

* 30 ms G.711 packets without ``a=ptime`` (SIPp's stock ``g711a.pcap``) are re-cut into
  the receiver's 20 ms frames (RFC 3551 4.5); an error while playing one slot is counted
  and concealed and the playout goes on.
* Callers that vanish after the ACK lose their slot to the media inactivity timeout
  (BYE sent); RFC 4028 session timers (422, expiry -> BYE).
* RTP from a source neither the SDP nor the signalling named is not latched to and is
  counted (``rtp_foreign_packets``).
* In-dialog requests are challenged when the agent requires digest auth.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from voicelab import codecs
from voicelab.agent import Agent
from voicelab.net.iface import free_port
from voicelab.rtp.live import LiveAudioStream
from voicelab.rtp.pacer import MediaPacer
from voicelab.rtp.packet import RtpPacket
from voicelab.rtp.playout import render

from .conftest import need_tool
from .test_interop_sipp import SCENARIOS, _sipp

SIPP_PCAP_DIRS = ("/usr/share/sip-tester", "/usr/share/sipp", "/usr/share/doc/sip-tester", "/usr/local/share/sipp")


def _tone(n: int, rate: int = 8000, f: float = 440.0, k0: int = 0) -> np.ndarray:
    t = (np.arange(n) + k0) / rate
    return (8000 * np.sin(2 * np.pi * f * t)).astype(np.int16)


# -------------------------------------------------------------- 30 ms packets, re-framed
def _stream(codec: str = "pcma") -> LiveAudioStream:
    return LiveAudioStream(None, codec=codec, jitter_buffer="fixed:60")


def _packets(codec: str, ptime_ms: int, n: int, *, seq0: int = 65530, ts0: int = 2**32 - 500):
    enc = codecs.get(codec, frame_ms=ptime_ms)
    samples = enc.frame_samples
    out = []
    for k in range(n):
        pcm = _tone(samples, enc.sample_rate, k0=k * samples)
        out.append(RtpPacket(payload_type=enc.payload_type if enc.payload_type is not None else 96, sequence_number=(seq0 + k) & 0xFFFF,
                             timestamp=(ts0 + k * enc.timestamp_increment) & 0xFFFFFFFF, ssrc=0x1234,
                             payload=enc.encode(pcm)))
    return out


def _play_all(s: LiveAudioStream, packets, arrival_step: float) -> tuple[np.ndarray, dict]:
    for k, p in enumerate(packets):
        s._push(p, k * arrival_step)
    start = s.jb.start_time()
    frames, outcomes = [], {}
    n_slots = int(len(packets) * arrival_step / (s.rx.frame_ms / 1000.0))
    for j in range(n_slots):
        frame, outcome = render(s.jb.pop(start + j * s.rx.frame_ms / 1000.0), s.rx)
        frames.append(frame)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return np.concatenate(frames), outcomes


@pytest.mark.parametrize("codec", ["pcma", "pcmu", "g722"])
@pytest.mark.parametrize("ptime", [10, 30, 40, 60])
def test_other_packet_times_are_recut_into_our_frames(codec, ptime):
    """RFC 3551 4.5: a 20 ms receiver of a sample-based codec plays 10-60 ms packets whole."""
    s = _stream(codec)
    pkts = _packets(codec, ptime, 3000 // ptime)  # 3 s, across sequence and timestamp wrap
    out, outcomes = _play_all(s, pkts, ptime / 1000.0)
    assert outcomes.get("played", 0) >= len(out) / s.rx.frame_samples - 5, outcomes
    assert outcomes.get("concealed", 0) == 0, outcomes
    assert s.stats.reframed_packets == (0 if ptime == 20 else len(pkts))
    # the tone comes out continuous: compare with the same tone (after the codec's delay)
    ref = _tone(len(out), s.rx.sample_rate).astype(float)
    x = out.astype(float)
    lag = int(np.argmax(np.correlate(x[2000:6000], ref[2000:3000], mode="valid")))
    seg = slice(2000 + lag, len(x) - 2000)
    err = x[seg] - ref[2000 : 2000 + seg.stop - seg.start]
    assert np.sqrt(np.mean(err**2)) < 0.1 * np.sqrt(np.mean(ref**2))


def test_lost_30ms_packet_is_a_loss_not_a_stall():
    s = _stream("pcmu")
    pkts = _packets("pcmu", 30, 100)
    del pkts[50]
    _, outcomes = _play_all(s, pkts, 0.03)
    # 30 ms lost: the two slots it touched are incomplete, concealed; the rest plays
    assert 1 <= outcomes.get("concealed", 0) <= 3, outcomes
    assert outcomes.get("played", 0) >= 140, outcomes


def test_unusable_payloads_are_counted_and_dropped():
    s = _stream("l16")
    p = _packets("l16", 20, 1)[0]
    s._push(RtpPacket(payload_type=p.payload_type, sequence_number=1, timestamp=0, ssrc=1, payload=b"\x01\x02\x03"), 0.0)
    big = RtpPacket(payload_type=p.payload_type, sequence_number=2, timestamp=320, ssrc=1, payload=bytes(2 * 16000 // 4))
    s._push(big, 0.02)  # 250 ms: over the 200 ms a receiver must take
    assert s.stats.unusable_payloads == 2


class _FakeLoop:
    def __init__(self):
        self.armed: list[float] = []
        self.now = 0.0

    def time(self):
        return self.now

    def call_at(self, when, fn, *args):
        self.armed.append(when)  # never run: the test calls the slot itself
        return None


class _BrokenDecoder:
    def __init__(self, real):
        self.real = real
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def decode(self, payload):
        self.calls += 1
        if self.calls % 2:
            raise ValueError("decoder exploded")
        return self.real.decode(payload)


def test_an_error_while_playing_a_slot_is_counted_concealed_and_the_timer_survives():
    s = _stream("pcmu")
    s._loop = _FakeLoop()
    s.pacer = MediaPacer(s._loop, early=0.0, tick_s=0.0)  # type: ignore[arg-type]
    s.rx = _BrokenDecoder(s.rx)
    for k, p in enumerate(_packets("pcmu", 20, 20)):
        s._push(p, k * 0.02)
    s._play_start = s.jb.start_time()
    for k in range(10):
        s._play_slot(s._play_start + k * 0.02)
    assert s.stats.playout_errors == 5 and "decoder exploded" in s.stats.last_playout_error
    assert s.stats.outcomes == {"error": 5, "played": 5}
    assert len(s.pacer) == 10  # the next slot was scheduled after every slot, also the failed ones
    assert len(s._played) == 10 and all(f.shape == (160,) for _, f in s._played)


def _sipp_pcap() -> Path:
    for d in SIPP_PCAP_DIRS:
        p = Path(d) / "g711a.pcap"
        if p.exists():
            return p
    need_tool("__sipp_g711a_pcap__", "sip-tester (its g711a.pcap)")
    raise AssertionError("unreachable")


async def _sipp_30ms_call(sipp: str, pcap: Path, tmp_path: Path):
    os.symlink(pcap, tmp_path / "g711a.pcap")
    async with Agent(codecs=["pcma"], mode="echo") as agent:
        host, port = agent.address
        rc, out, errors = await _sipp(sipp, f"{host}:{port}", "-sf", str(SCENARIOS / "uac_pcma_30ms.xml"), "-s", "service",
                                      "-m", "1", "-p", str(free_port(kind="udp")), "-mp", str(free_port(kind="udp")),
                                      cwd=tmp_path)
        await asyncio.wait_for(agent.ended(1), 5)
        return rc, out, errors, dict(agent.recordings), dict(getattr(agent, "media_stats", {}))


@pytest.mark.slow
def test_sipp_30ms_pcma_without_ptime_is_heard_and_echoed(tmp_path):
    sipp = need_tool("sipp", "sip-tester")
    pcap = _sipp_pcap()
    rc, out, errors, recordings, stats = asyncio.run(_sipp_30ms_call(sipp, pcap, tmp_path))
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"
    (sent, received, rate), = recordings.values()
    # ~3 s of the pcap's speech were played out and echoed back (the bug: nothing at all)
    assert len(received) >= 2.5 * rate and np.sqrt(np.mean(received**2)) > 0.01
    assert len(sent) >= 2.0 * rate and np.sqrt(np.mean(sent**2)) > 0.01
    (st,) = stats.values()
    assert st["reframed_packets"] >= 50 and st["playout_errors"] == 0 and st["unusable_payloads"] == 0
    assert st["outcomes"].get("played", 0) >= 100


# ------------------------------------------------------ vanishing callers: media timeout
def test_vanishing_callers_free_their_slots_after_the_media_timeout():
    """4 INVITE+ACK that go silent fill max_calls 4; after the timeout a new call is answered."""
    from voicelab.calls import open_caller
    from voicelab.net.vclock import run_virtual
    from voicelab.sip.ua import CallEnded, CallEstablished, CallFailed
    from voicelab.vnetcall import VirtualHostInterface, build_topology

    async def main():
        loop = asyncio.get_running_loop()
        net, info = build_topology("open", "open", seed=3)
        target = f"sip:agent@{info['agent_sip'][0]}:{info['agent_sip'][1]}"
        agent = Agent(codecs=["pcmu"], mode="echo", max_calls=4, media_timeout=10.0, contact=target,
                      host=info["agent"], port=info["agent_sip"][1], iface=VirtualHostInterface(net, "agent"))
        await agent.start()
        ifc = VirtualHostInterface(net, "caller")
        ua, sip = await open_caller(ifc, codec="pcmu", host=info["caller"], seed=1)
        try:
            calls = []
            for _ in range(4):  # answered, ACKed, then never a packet of media
                calls.append(ua.invite(target, now=loop.time(), media_port=ifc.free_port("udp")))
                sip.flush()
                await sip.wait_for(CallEstablished, timeout=5)
            busy = ua.invite(target, now=loop.time(), media_port=ifc.free_port("udp"))
            sip.flush()
            ev = await sip.wait_for(CallFailed, timeout=5)
            t_full = loop.time()
            assert ev.call is busy and ev.status == 486
            ended = [await sip.wait_for(CallEnded, timeout=15) for _ in range(4)]  # the agent's BYEs
            t_bye = loop.time()
            later = ua.invite(target, now=loop.time(), media_port=ifc.free_port("udp"))
            sip.flush()
            ev = await sip.wait_for(CallEstablished, CallFailed, timeout=5)
            return (t_full, t_bye, ev, later, ended, agent.calls_timed_out, agent.calls_refused, len(agent.streams))
        finally:
            await sip.close()
            await agent.close()

    t_full, t_bye, ev, later, ended, timed_out, refused, open_streams = run_virtual(main(), max_time=120.0)
    assert timed_out == 4 and refused == 1
    assert all(e.by_remote for e in ended)  # the agent hung up (BYE), the caller answered 200
    assert 10.0 <= t_bye - t_full <= 12.5  # the timeout (10 s) plus the watchdog's period
    assert isinstance(ev, CallEstablished) and ev.call is later  # a normal call gets a slot again
    assert open_streams == 1


def test_media_timeout_is_checked():
    for bad in (0, -1, float("nan"), "soon"):
        with pytest.raises(Exception) as ei:
            Agent(media_timeout=bad)
        assert "media_timeout" in str(ei.value)


# ----------------------------------------------------------- RFC 4028 session timers
def _ua_net(**kw_b):
    from .test_sip_ua import A_ADDR, B_ADDR, Net, auto_answer, make_ua

    return A_ADDR, B_ADDR, Net, auto_answer, make_ua


def test_session_timer_422_then_refresh_then_expiry_bye():
    from voicelab.sip.ua import CallEnded, IncomingCall, ReinviteAnswered

    A, B, Net, auto_answer, make_ua = _ua_net()
    a = make_ua(A, "alice", 1, session_expires=120)
    b = make_ua(B, "bob", 2, session_expires=1800, min_se=300)
    net = Net(a, b, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0)
    net.run(2.0)
    sent = [e.first_line for e in b.trace if e.direction == "out" and not e.retransmission]
    assert any(line.startswith("SIP/2.0 422") for line in sent)  # 120 s < Min-SE 300: 422
    assert call.established and call.session_timer == (300, "uac")  # retried with Session-Expires 300
    bcall = net.of(B, IncomingCall)[0].call
    assert bcall.session_timer == (300, "uac")
    # the caller refreshes at half the interval; the callee's expiry timer restarts each time
    net.run(700.0)
    assert len(net.of(A, ReinviteAnswered)) == 4 and bcall.established
    # the caller vanishes (its datagrams are lost): the callee hangs up at 300 - 32 s after the last refresh
    last_refresh = max(t for t, e in net.events[A] if isinstance(e, ReinviteAnswered))
    del net.nodes[A]
    net.run(1200.0)
    (bye_end,) = [(t, e) for t, e in net.events[B] if isinstance(e, CallEnded)]
    sent_bye = [e.time for e in b.trace if e.direction == "out" and e.first_line.startswith("BYE")]
    assert abs(sent_bye[0] - (last_refresh + 300 - 32)) < 1.0
    assert bye_end[1].reason.startswith("BYE failed") or "session expired" in bye_end[1].reason


def test_session_timer_not_refreshed_by_the_caller_ends_with_bye():
    from voicelab.sip.ua import CallEnded

    A, B, Net, auto_answer, make_ua = _ua_net()
    a = make_ua(A, "alice", 1)  # asks for a timer by hand but never refreshes
    b = make_ua(B, "bob", 2, session_expires=1800)
    net = Net(a, b, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0, headers=[("Supported", "timer"), ("Session-Expires", "120")])
    net.run(2.0)
    assert call.established
    net.run(200.0)
    ends = net.of(A, CallEnded)
    assert len(ends) == 1 and ends[0].by_remote  # the callee's BYE
    bye_at = [e.time for e in b.trace if e.direction == "out" and e.first_line.startswith("BYE")]
    assert bye_at and 87.0 < bye_at[0] < 90.0  # 120 - min(32, 120/3)


def test_session_timer_for_a_caller_without_timer_support_is_refreshed_by_the_agent():
    """Session-Expires without Supported: timer (a proxy asked): refresher=uas, no Require."""
    from voicelab.sip.ua import CallEnded, IncomingCall, ReinviteReceived

    A, B, Net, auto_answer, make_ua = _ua_net()
    a = make_ua(A, "alice", 1)
    b = make_ua(B, "bob", 2, session_expires=1800)
    net = Net(a, b, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0, headers=[("Session-Expires", "120")])
    net.run(2.0)
    bcall = net.of(B, IncomingCall)[0].call
    assert call.established and bcall.session_timer == (120, "uas")
    ok = [e for e in b.trace if e.direction == "out" and e.first_line.startswith("SIP/2.0 200")][0]
    resp = [m for m in b.sent if m[0].startswith(b"SIP/2.0 200")][0][0]
    assert b"Session-Expires: 120;refresher=uas" in resp and b"Require: timer" not in resp, ok
    net.run(250.0)
    refreshes = [t for t, e in net.events[A] if isinstance(e, ReinviteReceived)]
    assert [round(t) for t in refreshes] == [60, 120, 180, 240]  # every N/2 from the agent's side
    assert not net.of(A, CallEnded) and call.established


def test_session_timers_off_by_default():
    from .test_sip_ua import A_ADDR, B_ADDR, Net, auto_answer, make_ua

    a, b = make_ua(A_ADDR, "alice", 1), make_ua(B_ADDR, "bob", 2)
    net = Net(a, b, on_event=auto_answer())
    call = a.invite("sip:bob@10.0.0.2", now=0.0, headers=[("Supported", "timer"), ("Session-Expires", "120")])
    net.run(400.0)
    assert call.established and call.session_timer is None


# ------------------------------------------------------------------------ RTP bleed
async def _bleed(latching):
    from voicelab.calls import open_caller
    from voicelab.net.iface import LoopbackInterface
    from voicelab.sip.ua import CallEstablished

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    async with Agent(codecs=["pcmu"], mode="echo", latching=latching, media_timeout=None) as agent:
        ua, sip = await open_caller(iface, codec="pcmu", seed=None)
        attacker = None
        try:
            media_port = iface.free_port("udp")
            call = ua.invite(agent.uri, now=loop.time(), media_port=media_port)
            sip.flush()
            await sip.wait_for(CallEstablished, timeout=5)
            (s,) = agent.streams.values()
            # an attacker on another host (127.0.0.2) sprays RTP at the agent's media port first
            received = []

            class P(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    received.append(data)

            attacker, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.2", 0))
            agent_media = s.local_address
            for k in range(20):
                pkt = RtpPacket(payload_type=0, sequence_number=k, timestamp=160 * k, ssrc=0xBAD, payload=bytes(160))
                attacker.sendto(bytes(pkt), agent_media)
                await asyncio.sleep(0.02)
            deadline = loop.time() + 3.0  # every packet handled (counted, or wrongly latched), bounded
            while s.foreign_packets + len(received) < 20 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            return s.session.remote_addr, (call.media.local_address if hasattr(call.media, "local_address") else None), \
                len(received), s.foreign_packets
        finally:
            if attacker is not None:
                attacker.close()
            await sip.close()


def test_rtp_from_an_unexpected_source_is_not_latched_and_is_counted():
    remote, _, to_attacker, foreign = asyncio.run(_bleed(True))
    assert remote[0] == "127.0.0.1"  # still the caller's SDP address
    assert to_attacker == 0 and foreign == 20


def test_plain_comedia_latches_to_anyone_when_asked():
    remote, _, to_attacker, foreign = asyncio.run(_bleed("any"))
    assert remote[0] == "127.0.0.2" and foreign == 0  # what latching="any" means: documented, asked for


# -------------------------------------------------------- in-dialog requests and auth
def _forged_reinvite(call, agent_addr, atk_port, evil_port) -> bytes:
    dlg = call.dialog
    sdp = (f"v=0\r\no=evil 1 2 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
           f"m=audio {evil_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
    head = (f"INVITE sip:agent@{agent_addr[0]}:{agent_addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.3:{atk_port};branch=z9hG4bKforged{atk_port};rport\r\n"
            f"From: <sip:caller@127.0.0.1>;tag={dlg.id.local_tag}\r\n"
            f"To: <sip:agent@{agent_addr[0]}>;tag={dlg.id.remote_tag}\r\n"
            f"Call-ID: {call.call_id}\r\nCSeq: {dlg.local_cseq + 5} INVITE\r\n"
            f"Contact: <sip:evil@127.0.0.3:{atk_port}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n")
    return head.encode() + sdp


async def _forge(auth):
    from voicelab.calls import open_caller
    from voicelab.net.iface import LoopbackInterface
    from voicelab.sip.ua import CallEstablished, ReinviteAnswered, ReinviteFailed

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    kw = {"auth": ("alice", "secret"), "auth_algorithms": ("MD5",)} if auth else {}
    async with Agent(codecs=["pcmu"], mode="echo", media_timeout=None, **kw) as agent:
        ua, sip = await open_caller(iface, codec="pcmu", seed=None, credentials=("alice", "secret") if auth else None)
        atk = None
        try:
            call = ua.invite(agent.uri, now=loop.time(), media_port=iface.free_port("udp"))
            sip.flush()
            await sip.wait_for(CallEstablished, timeout=5)
            (acall,) = [c for c in agent.ua.calls if c.call_id == call.call_id]
            before = (acall.media.remote_address, acall.media.remote_port)
            answers = []

            class P(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    answers.append(data.split(b"\r\n", 1)[0].decode())

            atk, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.3", 0))
            atk.sendto(_forged_reinvite(call, agent.address, atk.get_extra_info("sockname")[1], 40000), agent.address)
            deadline = loop.time() + 5.0  # until the agent has answered the forged request (bounded)
            while not [a for a in answers if not a.startswith("SIP/2.0 1")] and loop.time() < deadline:
                await asyncio.sleep(0.01)
            after = (acall.media.remote_address, acall.media.remote_port)
            # the real caller's own re-INVITE still works (it answers the challenge)
            ua.reinvite(call, now=loop.time())
            sip.flush()
            ev = await sip.wait_for(ReinviteAnswered, ReinviteFailed, timeout=5)
            return answers, before, after, ev.response.status_code if isinstance(ev, ReinviteAnswered) else ev.status
        finally:
            if atk is not None:
                atk.close()
            await sip.close()


def test_forged_reinvite_is_challenged_when_the_agent_requires_auth():
    answers, before, after, own = asyncio.run(_forge(True))
    final = [a for a in answers if not a.startswith("SIP/2.0 1")]
    assert final == ["SIP/2.0 401 Unauthorized"], answers
    assert after == before and after[0] != "127.0.0.3"  # the media did not move
    assert own == 200


def test_without_auth_a_reinvite_is_answered_as_before():
    answers, before, after, own = asyncio.run(_forge(False))
    assert any(a.startswith("SIP/2.0 200") for a in answers) and after == ("127.0.0.3", 40000)


def test_agent_serve_takes_media_timeout_and_session_expires():
    from voicelab.cli import build_parser

    args = build_parser().parse_args(["agent", "serve", "--media-timeout", "15", "--session-expires", "600"])
    assert args.media_timeout == 15.0 and args.session_expires == 600
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "serve", "--media-timeout", "0"])
    with pytest.raises(Exception, match="session_expires"):
        Agent(session_expires=30)
