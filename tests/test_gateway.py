"""The SIP <-> WebRTC gateway: a WebRTC caller bridged to a SIP agent (and to baresip).

Real time on 127.0.0.1, everything on one event loop (so every recording is stamped on one
clock). Checked: the browser-side call sets up a SIP leg, audio crosses both ways through
the gateway (transcoding Opus 48 kHz <-> G.711 8 kHz per frame), the gateway's own added
delay is its resampler's (about 1 ms), hanging up the WebRTC side sends a BYE on the SIP leg,
and a SIP leg that cannot be set up refuses the offer.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.conftest import run_clean
from tests.test_webrtc_agent import _speech, _webrtc_caller
from voicelab import audio
from voicelab.agent import Agent
from voicelab.audio import StreamResampler
from voicelab.calls import measure_direction
from voicelab.errors import ParameterError, RemoteProtocolError, VoicelabError
from voicelab.gateway import Gateway, bridge_delay_ms


@pytest.mark.parametrize("a,b", [(48000, 8000), (8000, 48000), (16000, 48000), (48000, 16000), (8000, 16000)])
def test_stream_resampler_is_exact_low_latency_and_seamless(a, b):
    r = StreamResampler(a, b)
    t = np.arange(a) / a
    x = np.sin(2 * np.pi * 440 * t)
    frame = a // 50
    y = np.concatenate([r.process(x[i:i + frame]) for i in range(0, len(x), frame)])
    assert len(y) == b  # one second in, one second out, frame by frame
    assert r.delay_s <= 0.0011
    ref = np.sin(2 * np.pi * 440 * (np.arange(len(y)) / b - r.delay_s))
    assert np.max(np.abs(y[200:] - ref[200:])) < 0.002  # no edges between 20 ms chunks
    with pytest.raises(ParameterError):
        StreamResampler(44100, 8001)


def test_gateway_parameters():
    with pytest.raises(ParameterError, match="SIP URI"):
        Gateway(target="127.0.0.1:5060")
    with pytest.raises(ParameterError, match="SIP leg offers"):
        Gateway(target="sip:a@127.0.0.1:5060", sip_codec="amr")
    with pytest.raises(ParameterError, match="webrtc_codecs"):
        Gateway(target="sip:a@127.0.0.1:5060", webrtc_codecs=("g729",))


def test_browser_to_sip_agent_through_the_gateway(natural_env):
    x16 = _speech(3.0)

    async def main():
        async with Agent(codecs=["pcmu"], mode="echo", jitter_buffer="fixed:60") as agent:
            async with Gateway(target=agent.uri, sip_codec="pcmu", jitter_buffer="fixed:60") as gw:
                r = await _webrtc_caller(gw.front, x16, jitter_buffer="fixed:60", tail_s=1.0)
                await asyncio.wait_for(gw.front.ended(1), 10)
                await asyncio.wait_for(agent.ended(1), 10)  # the BYE crossed to the SIP side
                call = list(gw.front.finished.values())[-1]
                leg = gw.legs[call.id]
                return r, call, leg, bridge_delay_ms(leg, call), list(gw.front.errors)

    r, call, leg, bridge, errors = run_clean(main, timeout=90)
    assert errors == [] and leg.errors == []
    assert call.codec == "opus" and leg.sip_codec == "pcmu" and leg.setup_ms < 1000
    # the gateway's own processing: the streaming FIR (1 ms), each way
    assert bridge["browser_to_sip"] == pytest.approx(1.0, abs=0.5)
    assert bridge["sip_to_browser"] == pytest.approx(1.0, abs=0.5)
    # the caller hears its own speech back through Opus -> G.711 -> echo -> G.711 -> Opus
    sent, t_sent = r["track"].sent_audio()
    recv, t_recv = r["sink"].received_audio()
    echo = measure_direction(sent, t_sent, recv, t_recv, 48000, x16)
    assert echo["pesq_nb"] > 3.8, echo
    # narrowband in the middle: the wideband score shows the band limit
    assert echo["pesq_wb"] < echo["pesq_nb"]


def test_a_sip_leg_that_fails_refuses_the_offer(natural_env):
    x16 = _speech(1.0)

    async def main():
        async with Agent(codecs=["pcma"], mode="echo") as agent:  # offers no PCMU: 488
            async with Gateway(target=agent.uri, sip_codec="pcmu") as gw:
                with pytest.raises((RemoteProtocolError, VoicelabError)) as ei:
                    await _webrtc_caller(gw.front, x16)
                return str(ei.value), list(gw.legs.values())

    msg, legs = run_clean(main, timeout=60)
    assert "offer" in msg or "488" in msg or "failed" in msg
    assert legs and all(leg.ended for leg in legs)
