"""The SIP -> media-stream bridge (voicelab.wsbridge) against the lab's own WebSocket agent.

Live, on loopback, a second or two: a SIP call is answered by the bridge, streamed to a
:class:`voicelab.wsmedia.live.MediaStreamServer` in echo mode, and the echo comes back
over RTP; the agent closing its WebSocket hangs up the SIP call. (The Pipecat bot behind
the same bridge: tests/test_pipecat.py.)
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voicelab.errors import ParameterError


def test_bridge_refuses_bad_urls_and_codecs():
    from voicelab.wsbridge import MediaStreamBridge, parse_ws_url

    assert parse_ws_url("ws://127.0.0.1:8765/media") == ("127.0.0.1", 8765, "/media")
    for url in ("http://127.0.0.1:1/x", "ws://", 5, "ws://h:notaport/x"):
        with pytest.raises(ParameterError):
            parse_ws_url(url)
    with pytest.raises(ParameterError, match="pcmu or pcma"):
        MediaStreamBridge("ws://127.0.0.1:9/media", codecs=["opus"])
    with pytest.raises(ParameterError):
        MediaStreamBridge("ws://127.0.0.1:9/media", ws_jitter_buffer="nonsense")
    with pytest.raises(ParameterError, match="no mode"):
        MediaStreamBridge("ws://127.0.0.1:9/media", mode="play")


@pytest.mark.timeout(60)
def test_bridge_streams_a_sip_call_to_a_media_stream_agent_and_back():
    from voicelab.calls import open_caller
    from voicelab.net.iface import LoopbackInterface
    from voicelab.rtp.live import LiveAudioStream
    from voicelab.sip.ua import CallEnded, CallEstablished, CallFailed
    from voicelab.wsbridge import MediaStreamBridge
    from voicelab.wsmedia.live import MediaStreamServer

    async def go():
        loop = asyncio.get_running_loop()
        ifc = LoopbackInterface(loop)
        server = await MediaStreamServer(ifc, mode="echo", jitter_buffer="fixed:40").start()
        h, p = server.address
        bridge = await MediaStreamBridge(f"ws://{h}:{p}/media", iface=ifc, seed=3).start()
        ua, sip = await open_caller(ifc, codec="pcmu", rtcp_mux=True, seed=1)
        stream = None
        try:
            port = ifc.free_port("udp")
            call = ua.invite(bridge.uri, now=loop.time(), media_port=port)
            sip.flush()
            ev = await sip.wait_for(CallEstablished, CallFailed)
            assert isinstance(ev, CallEstablished)
            stream = LiveAudioStream.for_media(ifc, call.media, local_addr=("127.0.0.1", port), jitter_buffer="fixed:40")
            await stream.open()
            t = np.arange(16000) / 16000.0
            x = 0.3 * np.sin(2 * np.pi * 440 * t) * (t < 0.5)  # half a second of tone, then silence
            t0 = loop.time() + 0.02
            stream.send(x, 16000, start_at=t0)
            await asyncio.wait_for(stream.played_through(t0 + 1.0), 10.0)
            await server.close()  # the agent hangs up: the bridge ends the SIP call
            await sip.wait_for(CallEnded, timeout=10.0)
            heard, h0 = stream.received_audio()
            bc = bridge.calls[call.call_id]
            return heard, h0, t0, bc.summary(), list(bridge.errors)
        finally:
            if stream is not None:
                await stream.close()
            await sip.close()
            await bridge.close()
            await server.close()

    heard, h0, t0, summary, errors = asyncio.run(go())
    assert not errors and not summary["errors"]
    assert summary["hung_up_by"] == "agent"
    assert summary["frames_up"] >= 40 and summary["frames_down"] >= 25
    loud = np.flatnonzero(np.abs(heard) > 0.05)
    assert len(loud), "the echo never came back through the bridge"
    onset = h0 + loud[0] / 8000.0 - t0
    # caller packetization + bridge buffer (40) + agent buffer (40) + bridge buffer (40) +
    # caller buffer (40) + frame re-timing on each leg: ~0.2 s on loopback, well under 0.6 s
    assert 0.1 < onset < 0.6, onset
    # about the half second of tone came back (nothing lost on loopback)
    assert 0.4 < (loud[-1] - loud[0]) / 8000.0 < 0.6


@pytest.mark.timeout(60)
def test_bridge_hangs_up_a_call_whose_agent_cannot_be_reached():
    from voicelab.calls import open_caller
    from voicelab.net.iface import LoopbackInterface
    from voicelab.sip.ua import CallEnded, CallEstablished, CallFailed
    from voicelab.wsbridge import MediaStreamBridge

    async def go():
        loop = asyncio.get_running_loop()
        ifc = LoopbackInterface(loop)
        dead = ifc.free_port("tcp")  # nothing listens there
        bridge = await MediaStreamBridge(f"ws://127.0.0.1:{dead}/media", iface=ifc, ws_connect_timeout=2.0).start()
        ua, sip = await open_caller(ifc, codec="pcmu", rtcp_mux=True, seed=1)
        try:
            call = ua.invite(bridge.uri, now=loop.time(), media_port=ifc.free_port("udp"))
            sip.flush()
            ev = await sip.wait_for(CallEstablished, CallFailed)
            assert isinstance(ev, CallEstablished)  # answered first, as a platform does
            await sip.wait_for(CallEnded, timeout=10.0)  # then hung up with a reason
            return bridge.calls[call.call_id].summary(), list(bridge.errors)
        finally:
            await sip.close()
            await bridge.close()

    summary, errors = asyncio.run(go())
    assert summary["hung_up_by"] == "bridge" and summary["setup_ms"] is None
    assert len(errors) == 1 and "WebSocket to ws://127.0.0.1:" in errors[0]
