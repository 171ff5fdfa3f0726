"""aiortc made measurable: offline ICE on the lab's interface, lab codecs/playout, calls.

Unit tests run without sockets; the call tests run two aiortc peers on 127.0.0.1 in
one process (real time: a few seconds of speech each).
"""

from __future__ import annotations

import asyncio
import contextvars

import aioice.ice
import numpy as np
import pytest

from tests.conftest import need_tool, run_clean
from voicelab import codecs
from voicelab.errors import ParameterError, VoicelabError
from voicelab.net import ChannelConfig
from voicelab.net.iface import LoopbackInterface, is_loopback_address
from voicelab.webrtc.call import webrtc_call
from voicelab.webrtc.media import AudioSink, SourceTrack
from voicelab.webrtc.peer import (
    LabEncoder,
    classify_datagram,
    ice_scope,
    make_peer_connection,
    patches_active,
)


# ------------------------------------------------------------------ the ICE scope


class _FakeIface:
    """Records what is asked of it and delegates sockets to a LoopbackInterface."""

    def __init__(self, addresses):
        self.addresses = addresses
        self.calls = []
        self.inner = LoopbackInterface()

    def host_addresses(self):
        return list(self.addresses)

    def time(self):
        return asyncio.get_running_loop().time()

    async def create_datagram_endpoint(self, factory, local_addr=None, remote_addr=None):
        self.calls.append(("udp", local_addr, remote_addr))
        return await self.inner.create_datagram_endpoint(factory, local_addr=local_addr, remote_addr=remote_addr)


def test_ice_scope_answers_host_addresses_and_restores():
    original = aioice.ice.get_host_addresses

    async def main():
        loop = asyncio.get_running_loop()
        assert not patches_active()
        # outside a scope aioice drops loopback: that is why plain aiortc cannot call itself here
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
        iface = _FakeIface(["127.0.0.1", "::1"])
        with ice_scope(iface):
            assert patches_active()
            assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
            assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
            with ice_scope(_FakeIface(["127.0.0.2"])):  # nested: the inner interface answers
                assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.2"]
            assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]

            # another task started outside the scope sees the originals
            async def outside():
                return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)

            task = asyncio.get_running_loop().create_task(outside(), context=contextvars.Context())
            assert "127.0.0.1" not in await task
        assert not patches_active(loop)
        assert "create_datagram_endpoint" not in vars(loop)

    run_clean(main, timeout=10)
    assert aioice.ice.get_host_addresses is original


def test_ice_scope_routes_sockets_through_the_interface():
    class Proto(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = asyncio.get_running_loop().create_future()
            self.lost = asyncio.get_running_loop().create_future()

        def datagram_received(self, data, addr):
            if not self.got.done():
                self.got.set_result((data, addr))

        def connection_lost(self, exc):
            self.lost.set_result(None)

    async def main():
        loop = asyncio.get_running_loop()
        iface = _FakeIface(["127.0.0.1"])
        with ice_scope(iface) as sockets:
            ta, pa = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
            tb, pb = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
            with pytest.raises(ParameterError):  # the loopback interface refuses other addresses
                await loop.create_datagram_endpoint(Proto, local_addr=("10.0.0.1", 0))
        assert [c[0] for c in iface.calls] == ["udp", "udp", "udp"]
        assert len(sockets) == 2 and all(is_loopback_address(s.local_addr[0]) for s in sockets)
        ta.sendto(b"\x00\x01hello", tb.get_extra_info("sockname"))
        data, _ = await pb.got
        assert data == b"\x00\x01hello"
        assert sockets[0].log[0][1:4] == ("tx", "stun", 7) and sockets[1].log[0][1:4] == ("rx", "stun", 7)
        for t, p in ((ta, pa), (tb, pb)):
            t.close()
            await p.lost
        assert all(s.closed for s in sockets)
        assert not patches_active(loop)

    run_clean(main, timeout=10)


def test_classify_datagram():
    rtp = bytes([0x80, 96]) + bytes(10)
    rtcp = bytes([0x80, 200]) + bytes(6)
    assert classify_datagram(bytes([0x00, 0x01]) + bytes(18)) == "stun"
    assert classify_datagram(bytes([22, 0xFE, 0xFD])) == "dtls"
    assert classify_datagram(rtp) == "rtp"
    assert classify_datagram(rtcp) == "rtcp"
    assert classify_datagram(bytes([0x40, 0x00, 0x00, len(rtp)]) + rtp) == "turn-rtp"
    assert classify_datagram(b"") == "other"


# ------------------------------------------------------------- peer construction


def test_peer_is_offline_by_default_and_validates_servers():
    from aiortc import RTCPeerConnection

    async def main():
        iface = LoopbackInterface()
        pc = make_peer_connection(iface)
        plain = RTCPeerConnection()
        try:
            pc.addTransceiver("audio")
            plain.addTransceiver("audio")
            conn = pc.getTransceivers()[0].receiver.transport.transport._connection
            plain_conn = plain.getTransceivers()[0].receiver.transport.transport._connection
            assert conn.stun_server is None and conn.turn_server is None
            assert plain_conn.stun_server is not None  # what the lab avoids: aiortc's public default
            pc2 = make_peer_connection(iface, ice_servers=["stun:127.0.0.1:3478"])
            pc2.addTransceiver("audio")
            assert pc2.getTransceivers()[0].receiver.transport.transport._connection.stun_server == ("127.0.0.1", 3478)
            await pc2.close()
        finally:
            await pc.close()
            await plain.close()

    run_clean(main, timeout=10)
    iface = LoopbackInterface()
    with pytest.raises(ParameterError, match="IP literal"):
        make_peer_connection(iface, ice_servers=["stun:stun.example.org:3478"])
    with pytest.raises(ParameterError, match="TURN"):
        make_peer_connection(iface, relay_only=True)
    with pytest.raises(ParameterError, match="username"):
        make_peer_connection(iface, ice_servers=["turn:127.0.0.1:3478"])
    with pytest.raises(ParameterError):
        make_peer_connection(iface, ice_servers=["http://127.0.0.1"])
    with pytest.raises(ParameterError, match="mode"):
        make_peer_connection(iface, mode="plain")
    with pytest.raises(ParameterError):
        make_peer_connection(iface, codec="g729")
    with pytest.raises(ParameterError):
        make_peer_connection(iface, codec="opus", codec_params={"bitrate": 1000})
    with pytest.raises(ParameterError):
        make_peer_connection(iface, jitter_buffer="elastic")


# ---------------------------------------------------------------- codec bridge


def _frame(pcm: np.ndarray, rate: int, pts: int):
    import av

    f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
    f.sample_rate = rate
    f.pts = pts
    return f


def test_lab_encoder_frames_timestamps_and_dtx():
    rng = np.random.default_rng(0)
    t = np.arange(960 * 10) / 48000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    enc = LabEncoder(codecs.get("opus", bitrate=24000, dtx=True))
    dec = codecs.get("opus")
    out = []
    for k in range(10):
        payloads, ts = enc.encode(_frame(tone[k * 960 : (k + 1) * 960], 48000, k * 960))
        assert len(payloads) == 1 and ts == k * 960
        out.append(dec.decode(payloads[0]))
    y = np.concatenate(out).astype(float)
    assert np.sqrt(np.mean(y[2000:] ** 2)) > 0.5 * np.sqrt(np.mean(tone.astype(float) ** 2))
    # digital silence with DTX: the encoder's 1-2 byte frames are not sent, timestamps go on
    sent = [enc.encode(_frame(np.zeros(960, np.int16), 48000, (10 + k) * 960)) for k in range(40)]
    assert enc.frames_suppressed > 0 and any(p == [] for p, _ in sent)
    # another rate goes through PyAV's resampler, still one payload per 20 ms on average
    enc8 = LabEncoder(codecs.get("pcmu"))
    n = sum(len(enc8.encode(_frame((rng.standard_normal(320) * 3000).astype(np.int16), 16000, k * 320))[0]) for k in range(20))
    assert 17 <= n <= 20


def test_audio_level_matches_aiortcs():
    import av
    from aiortc.rtp import compute_audio_level_dbov

    from voicelab.webrtc.peer import audio_level_dbov

    rng = np.random.default_rng(0)
    for amp in (0, 1, 30, 3000, 40000):
        x = (rng.standard_normal((1, 480)) * amp).clip(-32768, 32767).astype(np.int16)
        f = av.AudioFrame.from_ndarray(x, format="s16", layout="mono")
        f.sample_rate = 48000
        assert audio_level_dbov(f) == compute_audio_level_dbov(f), amp


def test_source_track_and_sink_on_the_loop_clock():
    async def main():
        loop = asyncio.get_running_loop()
        x = np.linspace(-0.5, 0.5, 16000 // 10)  # 100 ms at 16 kHz
        track = SourceTrack(x, 16000, frame_ms=20)
        t0 = track.start(loop.time() - 1.0)  # in the past: every frame is due, nothing waits
        frames = [await track.recv() for _ in range(7)]
        assert [f.pts for f in frames] == [k * 320 for k in range(7)]
        assert all(f.samples == 320 and f.sample_rate == 16000 for f in frames)
        got = np.concatenate([f.to_ndarray()[0] for f in frames[:5]])
        sent, ts = track.sent_audio()
        assert ts == t0 and np.allclose(got / 32768.0, sent, atol=1 / 32768.0)
        assert not frames[6].to_ndarray().any()  # after the signal: silence, like a live microphone
        assert all(late > 0.5 for late in track.send_lateness_s)  # handed over ~1 s after schedule
        with pytest.raises(ParameterError):
            track.start()
        track.stop()

        sink = AudioSink(8000)
        done = sink.played_through(10.06)
        sink.write(np.ones(160, np.int16), 10.0)
        sink.write(np.ones(160, np.int16), 10.02, arrival=10.025)  # late frame: counted
        assert not done.done()
        sink.write(np.ones(160, np.int16), 10.05)  # 10 ms gap: silence inserted
        assert done.done() and sink.underruns == 1 and sink.late_frames == 1
        y, t_first = sink.received_audio()
        assert t_first == 10.0 and len(y) == 160 * 3 + 80 and not y[320:400].any()

    run_clean(main, timeout=10)
    with pytest.raises(ParameterError):
        SourceTrack(np.zeros(100), 16000, frame_ms=0.01)
    with pytest.raises(ParameterError):
        SourceTrack(np.zeros((2, 100)), 16000)
    with pytest.raises(ParameterError):
        AudioSink(0)


def test_live_source_track_and_listening_sink():
    """``SourceTrack(source=...)`` asks the source for each frame at hand-over time (None:
    silence); ``AudioSink(on_played=...)`` reports each frame with its start time."""

    async def main():
        loop = asyncio.get_running_loop()
        asked: list[float] = []

        def source(now):
            asked.append(now)
            return None if len(asked) == 2 else np.full(320, len(asked), np.int16)

        track = SourceTrack(np.zeros(320), 16000, source=source)
        track.start(loop.time() - 1.0)
        frames = [await track.recv() for _ in range(3)]
        assert [int(f.to_ndarray()[0][0]) for f in frames] == [1, 0, 3] and asked == track.send_times
        heard: list[tuple[int, float]] = []
        sink = AudioSink(8000, on_played=lambda frame, start: heard.append((int(frame[0]), start)))
        sink.write(np.full(160, 7, np.int16), 5.0)
        sink.write(np.full(160, 8, np.int16), 5.03)  # after a 10 ms gap: starts when it arrives
        assert heard == [(7, 5.0), (8, pytest.approx(5.03))]
        track.stop()

    run_clean(main, timeout=10)


def test_webrtc_call_rejects_bad_parameters():
    async def main():
        for kwargs in (
            {"seconds": 0.5},
            {"mode": "plain"},
            {"codec": "g729"},
            {"mode": "aiortc-defaults", "bitrate": 24000},
            {"mode": "aiortc-defaults", "frame_ms": 10},
            {"frame_ms": 7},
            {"jitter_buffer": "auto:5"},
            {"codec": "pcmu", "bitrate": 24000},
            {"net": ChannelConfig(), "relay_only": True, "ice_servers": ["turn:127.0.0.1:3478"]},
            {"net": "lossy"},
        ):
            with pytest.raises(ParameterError):
                await webrtc_call(**kwargs)

    run_clean(main, timeout=10)


# ----------------------------------------------------------------------- calls


def _payload_kbps(r, who):
    return r["getstats"][who]["bytes_sent"] * 8 / (r["getstats"][who]["packets_sent"] * 0.020) / 1000.0


def test_lab_opus_24k_call_on_loopback(natural_env):
    results = {}

    async def main():
        results["r"] = await webrtc_call(codec="opus", bitrate=24000, seconds=3.0)
        assert not patches_active()

    run_clean(main, timeout=60)
    r = results["r"]
    assert aioice.ice.get_host_addresses.__module__ == "aioice.ice"  # nothing left patched
    for d in ("caller_to_agent", "agent_to_caller"):
        assert r[f"{d}.pesq_wb"] >= 4.2, r
        assert r[f"{d}.loss_rate"] == 0.0
        assert r[f"{d}.outcomes"].get("played", 0) >= 140  # the lab's playout played the stream
        # the lab's encoder, not aiortc's 96 kbps one: payload rate near the asked 24 kbps (VBR)
        assert 12 < _payload_kbps(r, d.split("_")[0]) < 32
    # getStats sampled during the call: packets received grow for each peer
    series = r["getstats_series"]
    for peer in ("caller", "agent"):
        got = [row["packets_received"] or 0 for row in series if row["peer"] == peer]
        assert len(got) >= 3 and got == sorted(got) and got[-1] > got[0], got
        assert r[f"{d}.bitrate_kbps_wire"] > _payload_kbps(r, d.split("_")[0]) + 15  # + SRTP/RTP/UDP/IP
        # mouth-to-ear adds up: frame + transit + jitter buffer (60 ms) + look-ahead
        assert abs(r[f"{d}.mouth_to_ear_ms"] - r[f"{d}.parts_sum_ms"]) < 3.0, r
        assert r[f"{d}.playout_delay_ms"] >= 59.0
    assert r["ice_path"] == {"caller": "host", "agent": "host"}
    assert r["selected_pair"]["caller"]["remote"]["port"] == r["selected_pair"]["agent"]["local"]["port"]
    assert r["ice_servers"] == 0 and r["sockets_loopback_only"] and r["datagrams"]["caller"] > 100
    assert [len(v) for v in r["sockets"].values()] == [1, 1]  # one bundled, rtcp-muxed socket per peer
    parts = [r["ice_gathering_ms"], r["ice_connect_ms"], r["dtls_ms"]]
    assert all(p is not None and p > 0 for p in parts)
    assert r["setup_ms"] >= r["ice_connect_ms"] + r["dtls_ms"]
    events = [e["event"] for e in r["timeline"] if e["peer"] == "caller"]
    assert events.index("gather:completed") < events.index("ice:completed") < events.index("dtls:connected")


def test_self_sizing_buffer_and_10_ms_frames_cut_mouth_to_ear(natural_env):
    # Same run: the fixed 60 ms buffer with 20 ms frames, then the self-sizing buffer with
    # 10 ms Opus frames encoded on the loop. The latter is far quicker and its reported
    # parts still add up.
    results = {}

    async def main():
        results["fixed"] = await webrtc_call(codec="opus", bitrate=24000, seconds=2.0, stats_interval_s=None)
        results["auto"] = await webrtc_call(codec="opus", bitrate=24000, seconds=2.0, stats_interval_s=None,
                                            jitter_buffer="auto", frame_ms=10, encode_inline=True)

    run_clean(main, timeout=90)
    fixed, auto = results["fixed"], results["auto"]
    assert (fixed["frame_ms"], auto["frame_ms"]) == (20.0, 10.0)
    for d in ("caller_to_agent", "agent_to_caller"):
        # 10 ms frames end to end: twice the packets, every slot a 10 ms frame
        assert auto[f"{d}.outcomes"].get("played", 0) >= 170, auto[f"{d}.outcomes"]
        assert auto[f"{d}.packets_received"] > 1.7 * fixed[f"{d}.packets_received"]
        assert auto[f"{d}.pesq_wb"] >= 2.5, auto  # decoded right (a broken 10 ms path scores ~1)
        assert auto[f"{d}.mouth_to_ear_ms"] < fixed[f"{d}.mouth_to_ear_ms"] - 25.0, (auto, fixed)
        assert auto[f"{d}.playout_delay_ms"] < fixed[f"{d}.playout_delay_ms"] - 25.0
        # frame + send-to-arrival + jitter buffer + look-ahead = the measured delay
        assert abs(auto[f"{d}.mouth_to_ear_ms"] - auto[f"{d}.parts_sum_ms"]) < 2.0, auto
        assert abs(fixed[f"{d}.mouth_to_ear_ms"] - fixed[f"{d}.parts_sum_ms"]) < 2.0, fixed


def test_pcmu_call_on_loopback(natural_env):
    results = {}

    async def main():
        results["r"] = await webrtc_call(codec="pcmu", seconds=3.0)

    run_clean(main, timeout=60)
    r = results["r"]
    assert r["payload_type"] == 0
    for d in ("caller_to_agent", "agent_to_caller"):
        assert r[f"{d}.pesq_nb"] >= 4.3, r
        assert abs(_payload_kbps(r, d.split("_")[0]) - 64.0) < 0.5


def test_aiortc_defaults_and_two_calls_in_a_row(natural_env):
    results = []

    async def main():
        results.append(await webrtc_call(codec="g722", seconds=1.5, quality=False))
        assert not patches_active()
        results.append(await webrtc_call(codec="opus", mode="aiortc-defaults", seconds=2.0))
        assert not patches_active()

    run_clean(main, timeout=60)
    lab, plain = results
    assert lab["mode"] == "lab" and lab["payload_type"] == 9 and lab["caller_to_agent.outcomes"]["played"] > 50
    assert plain["mode"] == "aiortc-defaults" and plain["caller_to_agent.outcomes"] is None
    for d in ("caller_to_agent", "agent_to_caller"):
        assert _payload_kbps(plain, d.split("_")[0]) > 60  # aiortc's fixed 96 kbps Opus
        assert plain[f"{d}.pesq_wb"] > 4.0
        # aiortc's buffer holds 4 packets before releasing one: at least 80 ms + a frame
        assert plain[f"{d}.mouth_to_ear_ms"] > 100
    assert plain["ice_path"] == {"caller": "host", "agent": "host"} and plain["sockets_loopback_only"]


def test_impaired_call_through_the_relay(natural_env):
    results = {}
    net = ChannelConfig(delay_ms=30, loss_rate=0.05)

    async def main():
        results["r"] = await webrtc_call(codec="opus", fec=True, seconds=2.0, net=net, seed=3, quality=False)

    run_clean(main, timeout=60)
    r = results["r"]
    assert r["ice_path"] == {"caller": "host", "agent": "host"}
    lost = fec = 0
    for d in ("caller_to_agent", "agent_to_caller"):
        assert r[f"{d}.relay_transit_ms_median"] >= 29.0  # media crossed the relay
        assert r[f"{d}.send_to_arrival_ms"] > 30.0
        assert r[f"{d}.rtt_ms"] is None or r[f"{d}.rtt_ms"] > 55.0
        lost += r[f"{d}.packets_lost"]
        fec += r[f"{d}.outcomes"].get("fec", 0)
        assert r[f"{d}.relay_lost"] >= r[f"{d}.packets_lost"]  # the relay also drops STUN/DTLS/RTCP
    assert lost > 0 and fec > 0  # the lab's Opus FEC rebuilt lost frames on the receive side


@pytest.mark.slow
def test_relay_only_call_through_coturn(natural_env):
    need_tool("turnserver", "coturn")
    coturn = pytest.importorskip("voicelab.net.coturn")
    results = {}

    async def main():
        async with coturn.Coturn() as turn:
            server = {"urls": turn.url, "username": turn.user, "credential": turn.password}
            results["r"] = await webrtc_call(codec="opus", seconds=2.0, ice_servers=[server], relay_only=True,
                                             quality=False)

    run_clean(main, timeout=60)
    r = results["r"]
    assert r["ice_path"] == {"caller": "relay", "agent": "relay"}
    assert r["caller_to_agent.bitrate_kbps_wire"] > 0 and r["sockets_loopback_only"]


def test_relay_only_without_servers_starts_coturn_itself():
    need_tool("turnserver", "coturn")
    results = {}

    async def main():
        results["r"] = await webrtc_call(codec="pcmu", seconds=1.0, relay_only=True, quality=False)

    run_clean(main, timeout=60)
    r = results["r"]
    assert r["ice_path"] == {"caller": "relay", "agent": "relay"} and r["turn"].startswith("coturn started")


@pytest.mark.slow
def test_connect_failure_is_a_voicelab_error():
    # a TURN-only policy towards a TURN port where nothing listens: ICE cannot succeed
    async def main():
        from voicelab.net.iface import free_port

        port = free_port(kind="udp")
        with pytest.raises(VoicelabError):
            await webrtc_call(codec="pcmu", seconds=1.0, relay_only=True, connect_timeout=3.0, quality=False,
                              ice_servers=[{"urls": f"turn:127.0.0.1:{port}", "username": "u", "credential": "p"}])
        assert not patches_active()

    run_clean(main, timeout=30)
