"""A real browser calls a real softphone through the lab's gateway: Chromium -> gateway -> baresip.

Chromium (Debian ``chromium``) loads the gateway's page, calls it over WebRTC (Opus, WAV as
its microphone, processing off); the gateway bridges the call to baresip (Debian
``baresip-core``, auto-answer, G.711 mu-law, playing natural speech and recording what it
sent and heard). PESQ-NB each way:

* Chromium -> baresip: what baresip heard against the file Chromium played (each complete
  copy of the looped file aligned and scored: :func:`voicelab.webrtc.browser.score_loops`);
* baresip -> browser: what the gateway sent towards Chromium (measured on the lab's side:
  audio recorded inside the page is time-stretched by the browser's own jitter buffer)
  against what baresip sent.

Also: the gateway's own added delay (its streaming resampler, about 1 ms each way) and the
BYE crossing to baresip when the browser hangs up. About 25 s; required in CI.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import need_tool, run_clean
from tests.test_interop_baresip import _baresip_recordings, _baresip_wav, _module_dir, _pesq, _write_config
from voicelab import audio
from voicelab.gateway import Gateway, bridge_delay_ms
from voicelab.net.iface import free_port
from voicelab.webrtc.browser import launch_chromium, score_loops

pytestmark = pytest.mark.slow

WAV = "pjsip_input_16k.wav"
CALL_S = 11.0


async def _browser_gateway_baresip(baresip: str, speech_dir, tmp_path):
    sip_port = free_port(kind="udp")
    bwav = _baresip_wav(speech_dir / "osr_us_000_0034_8k.wav", "pcmu", tmp_path / "baresip-says.wav")
    conf, rec = _write_config(tmp_path, "pcmu", bwav, sip_port,
                              "<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU/8000/1")
    proc = await asyncio.create_subprocess_exec(
        baresip, "-f", str(conf), "-n", "127.0.0.1", "-t", str(int(CALL_S + 15)),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with Gateway(target=f"sip:bob@127.0.0.1:{sip_port}", sip_codec="pcmu", jitter_buffer="fixed:200") as gw:
            url = f"{gw.front.url}/?autostart=1&seconds={CALL_S}"
            async with launch_chromium(url, wav=speech_dir / WAV, user_data_dir=tmp_path / "profile") as page:
                await page.wait_for("window.voicelab && window.voicelab.done", timeout=CALL_S + 25)
                state = await page.state()
            await asyncio.wait_for(gw.front.ended(1), 10.0)
            call = next(iter(gw.front.finished.values()))
            leg = gw.legs[call.id]
            bridge = bridge_delay_ms(leg, call)
            sent_to_browser, _ = call.sent_audio()
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return state, call, leg, bridge, sent_to_browser, out.decode(errors="replace"), rec, bwav


def test_chromium_calls_baresip_through_the_gateway(natural_speech_dir, tmp_path):
    need_tool("chromium", "chromium")
    baresip = need_tool("baresip", "baresip-core")
    _module_dir("pcmu")
    state, call, leg, bridge, to_browser, log, rec, bwav = run_clean(
        lambda: _browser_gateway_baresip(baresip, natural_speech_dir, tmp_path), timeout=CALL_S + 60)
    assert state["error"] is None, state["events"][-10:]
    assert call.codec == "opus" and leg.sip_codec == "pcmu" and leg.errors == [], leg.summary()
    assert "Call established" in log, log[-2000:]
    assert "terminated" in log.lower() or "closed" in log.lower(), log[-1500:]  # the BYE crossed to baresip
    (bs_said, said_rate), (bs_heard, heard_rate) = _baresip_recordings(rec, log)
    # Chromium -> baresip, per complete copy of the looped file
    ref, rate = audio.read_wav(natural_speech_dir / WAV)
    rows = score_loops(audio.resample(ref, rate, 8000), audio.resample(bs_heard, heard_rate, 8000), 8000)
    nb = [r["pesq_nb"] for r in rows if r["pesq_nb"] is not None]
    # baresip -> the browser's side of the gateway
    up = _pesq(bs_said, said_rate, to_browser, call.sample_rate, "nb")
    print(f"\nChromium -> gateway -> baresip PESQ-NB per copy {[round(v, 3) for v in nb]}; "
          f"baresip -> gateway -> browser PESQ-NB {up:.3f}; gateway bridge delay {bridge}")
    assert nb and min(nb) >= 3.6, (rows, len(bs_heard) / heard_rate, leg.summary(), log[-3000:])
    assert up >= 3.8
    assert bridge["browser_to_sip"] == pytest.approx(1.0, abs=0.5)
