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
    s._loop, s._early = _FakeLoop(), 0.0
    s.rx = _BrokenDecoder(s.rx)
    for k, p in enumerate(_packets("pcmu", 20, 20)):
        s._push(p, k * 0.02)
    s._play_start = s.jb.start_time()
    for k in range(10):
        s._play_slot(s._play_start + k * 0.02)
    assert s.stats.playout_errors == 5 and "decoder exploded" in s.stats.last_playout_error
    assert s.stats.outcomes == {"error": 5, "played": 5}
    assert len(s._loop.armed) == 10  # re-armed after every slot, also the failed ones
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
        return rc, out, errors, dict(agent.recordings), dict(agent.media_stats)


@pytest.mark.slow
def test_sipp_30ms_pcma_without_ptime_is_heard_and_echoed(tmp_path):
    sipp = need_tool("sipp", "sip-tester")
    pcap = _sipp_pcap()
    rc, out, errors, recordings, stats = asyncio.run(_sipp_30ms_call(sipp, pcap, tmp_path))
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"
    (sent, received, rate), = recordings.values()
    (st,) = stats.values()
    assert st["reframed_packets"] >= 50 and st["playout_errors"] == 0 and st["unusable_payloads"] == 0
    # ~3 s of the pcap's speech were played out and echoed back (the bug: nothing at all)
    assert len(received) >= 2.5 * rate and np.sqrt(np.mean(received**2)) > 0.01
    assert len(sent) >= 2.0 * rate and np.sqrt(np.mean(sent**2)) > 0.01
    assert st["outcomes"].get("played", 0) >= 100
