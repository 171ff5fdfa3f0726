"""Interop with baresip (Debian baresip-core), both directions, PCMU, PCMA, G.722 and Opus.

* baresip calls the lab's agent (``calls.Agent``, offering all four codecs);
* the lab's caller (``calls.dial``, offering one codec) calls baresip (auto-answer,
  accepting all four).

baresip plays a natural-speech WAV into the call (``aufile``: the file must already be at
the codec's rate and channel count, 48 kHz stereo for Opus) and records what it sent and
what it heard (``sndfile``: ``*-enc.wav`` / ``*-dec.wav``); the lab's side plays natural
speech and records what arrives. PESQ of what arrived on each side (NB for G.711, WB for
G.722 and Opus) must meet the foundation's clean-codec floor minus 0.1 (issue #3;
:data:`voicelab.reference.PESQ_FLOORS`). The negotiated codec is checked on both sides:
baresip silently falls back to PCMU when a wideband codec is not named with its rate
(``G722/16000/1``, ``opus/48000/2``), and a PCMU call would still pass a PESQ-NB check.

The two ends do not share a clock, so each recording is aligned to its reference by
cross-correlation before scoring. Skipped locally without baresip, its codec modules or
the natural speech; required in CI.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicelab import audio, metrics
from voicelab.calls import Agent, dial
from voicelab.net.iface import free_port
from voicelab.reference import PESQ_FLOORS

from .conftest import need, need_tool

#: lab codec -> (baresip codec name, rate and channels baresip runs it at, baresip module,
#: RTP payload type (None: dynamic), key of its floor in PESQ_FLOORS)
CODECS = {
    "pcmu": ("PCMU/8000/1", 8000, 1, "g711", 0, ("pcmu", 64000)),
    "pcma": ("PCMA/8000/1", 8000, 1, "g711", 8, ("pcmu", 64000)),  # G.711 A-law: the G.711 floor
    "g722": ("G722/16000/1", 16000, 1, "g722", 9, ("g722", 64000)),
    "opus": ("opus/48000/2", 48000, 2, "opus", None, ("opus", 24000)),  # the lab's Opus runs at 24 kbit/s
}
#: baresip's name for the codec in its "Set audio encoder/decoder: NAME RATEHz" log lines
LOG_NAME = {"pcmu": "PCMU 8000Hz 1ch", "pcma": "PCMA 8000Hz 1ch", "g722": "G722 16000Hz 1ch", "opus": "opus 48000Hz 2ch"}
MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules", "/usr/lib/x86_64-linux-gnu/baresip/modules")
SPEECH_FILE = "pjsip_input_16k.wav"  # 4.2 s of natural speech, baresip's side of the call

CONFIG = """poll_method epoll
sip_listen 127.0.0.1:{sip_port}
audio_player aubridge,nil
audio_source aufile,{wav}
audio_alert aubridge,nil
rtp_ports {rtp_lo}-{rtp_hi}
module_path {module_dir}
module stdio.so
{codec_modules}module aufile.so
module aubridge.so
module sndfile.so
module_app account.so
module_app menu.so
snd_path {rec}
"""


def _floor(codec: str) -> tuple[str, float]:
    mode, value = PESQ_FLOORS[CODECS[codec][5]]
    return mode, value - 0.1


def _module_dir(codec: str) -> Path:
    """baresip's module folder, after checking the codec's module is in it (skip/fail if not)."""
    module = CODECS[codec][3]
    dirs = [Path(d) for d in MODULE_DIRS if (Path(d) / "aufile.so").exists()]
    need(bool(dirs), f"baresip module folder not found in {', '.join(MODULE_DIRS)}")
    for name in ("aufile", "sndfile", "aubridge", "g711", module):
        need((dirs[0] / f"{name}.so").exists(), f"baresip module {name}.so missing in {dirs[0]} (needed for {codec})")
    return dirs[0]


def _baresip_wav(src: Path, codec: str, dest: Path) -> Path:
    """``src`` at the rate and channel count baresip's ``aufile`` demands for ``codec``."""
    rate, channels = CODECS[codec][1], CODECS[codec][2]
    x, r = audio.read_wav(src, sample_rate=rate)
    data = np.repeat(x[:, None], channels, axis=1) if channels > 1 else x
    sf.write(str(dest), audio.to_int16(data), rate, subtype="PCM_16")
    return dest


def _pesq(ref: np.ndarray, ref_rate: int, deg: np.ndarray, deg_rate: int, mode: str) -> float:
    """PESQ (``mode``) of ``deg`` against ``ref`` after removing the delay (no shared clock)."""
    rate = 16000 if mode == "wb" else 8000
    r = audio.resample(np.asarray(ref, dtype=np.float64), ref_rate, rate)
    d = audio.resample(np.asarray(deg, dtype=np.float64), deg_rate, rate)
    est = audio.estimate_delay(r, d, rate, max_delay_ms=1500.0)
    shift = int(round(est.delay_samples))
    d, r = (d[shift:], r) if shift >= 0 else (d, r[-shift:])
    n = min(len(r), len(d))
    return metrics.pesq(r[:n], d[:n], rate, mode=mode)


def _baresip_recordings(rec: Path, log: str) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]]:
    """(what baresip sent, what baresip heard), each (mono audio, rate)."""
    enc, dec = sorted(rec.glob("*-enc.wav")), sorted(rec.glob("*-dec.wav"))
    assert len(enc) == len(dec) == 1, (list(rec.iterdir()), log[-2000:])
    return audio.read_wav(enc[0]), audio.read_wav(dec[0])


def _check_baresip_codec(log: str, codec: str) -> None:
    for side in ("encoder", "decoder"):
        used = re.findall(rf"Set audio {side}: (\S+ \d+Hz \d+ch)", log)
        assert used == [LOG_NAME[codec]], (side, used, log[-2000:])


def _write_config(tmp: Path, codec: str, wav: Path, sip_port: int, account: str) -> tuple[Path, Path]:
    rec, conf = tmp / "rec", tmp / "conf"
    rec.mkdir()
    conf.mkdir()
    lo = free_port(kind="udp") // 2 * 2
    mdir = _module_dir(codec)
    modules = "".join(f"module {m}.so\n" for m in sorted({c[3] for c in CODECS.values()}) if (mdir / f"{m}.so").exists())
    (conf / "config").write_text(CONFIG.format(sip_port=sip_port, wav=wav, rtp_lo=lo, rtp_hi=lo + 10, rec=rec,
                                               module_dir=mdir, codec_modules=modules))
    (conf / "accounts").write_text(account + "\n")
    return conf, rec


async def _baresip_calls_agent(baresip: str, tmp: Path, codec: str, wav: Path):
    conf, rec = _write_config(tmp, codec, wav, free_port(kind="udp"),
                              f"<sip:caller@127.0.0.1>;regint=0;audio_codecs={CODECS[codec][0]}")
    async with Agent(codecs=["pcmu", "pcma", "g722", "opus"], speech="default") as agent:
        proc = await asyncio.create_subprocess_exec(
            baresip, "-f", str(conf), "-n", "127.0.0.1", "-t", "4", "-e", f"/dial sip:agent@127.0.0.1:{agent.address[1]}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        log = out.decode(errors="replace")
        await asyncio.wait_for(agent.ended(1), 5)
        return log, dict(agent.recordings), list(agent.errors), agent.calls_answered, rec


@pytest.mark.slow
@pytest.mark.parametrize("codec", list(CODECS))
def test_baresip_calls_our_agent(codec, tmp_path, natural_env):
    baresip = need_tool("baresip", "baresip-core")
    _module_dir(codec)
    wav = _baresip_wav(natural_env / SPEECH_FILE, codec, tmp_path / "say.wav")
    log, recordings, errors, answered, rec = asyncio.run(_baresip_calls_agent(baresip, tmp_path, codec, wav))
    assert "Call established" in log, log[-2000:]
    assert not errors and answered == 1 and len(recordings) == 1, (errors, log[-2000:])
    _check_baresip_codec(log, codec)
    sent_by_agent, got_by_agent, rate = next(iter(recordings.values()))
    assert rate == {"pcmu": 8000, "pcma": 8000, "g722": 16000, "opus": 48000}[codec]  # the agent's decoder rate
    (bs_said, said_rate), (bs_heard, heard_rate) = _baresip_recordings(rec, log)
    assert said_rate == heard_rate == CODECS[codec][1]
    mode, floor = _floor(codec)
    to_baresip = _pesq(sent_by_agent, rate, bs_heard, heard_rate, mode)
    to_agent = _pesq(bs_said, said_rate, got_by_agent, rate, mode)
    print(f"baresip calls agent, {codec}: PESQ-{mode.upper()} agent->baresip {to_baresip:.3f}, "
          f"baresip->agent {to_agent:.3f} (floor {floor:.2f})")
    assert to_baresip >= floor and to_agent >= floor, (to_baresip, to_agent, floor)


async def _we_call_baresip(baresip: str, tmp: Path, codec: str, wav: Path):
    sip_port = free_port(kind="udp")
    mdir = _module_dir(codec)  # baresip accepts every codec it has, the lab's caller offers one
    all_codecs = ",".join(v[0] for v in CODECS.values() if (mdir / f"{v[3]}.so").exists())
    conf, rec = _write_config(tmp, codec, wav, sip_port,
                              f"<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs={all_codecs}")
    proc = await asyncio.create_subprocess_exec(
        baresip, "-f", str(conf), "-n", "127.0.0.1", "-t", "20",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        result = await dial(f"sip:bob@127.0.0.1:{sip_port}", codec=codec, seconds=3.0, speech="default")
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return result, out.decode(errors="replace"), rec


@pytest.mark.slow
@pytest.mark.parametrize("codec", list(CODECS))
def test_our_caller_calls_baresip(codec, tmp_path, natural_env):
    baresip = need_tool("baresip", "baresip-core")
    _module_dir(codec)
    wav = _baresip_wav(natural_env / SPEECH_FILE, codec, tmp_path / "say.wav")
    r, log, rec = asyncio.run(_we_call_baresip(baresip, tmp_path, codec, wav))
    assert r["codec"] == codec and not r["synthetic_speech"], (r["codec"], r["synthetic_speech"])
    pt = CODECS[codec][4]
    assert r["payload_type"] == pt if pt is not None else 96 <= r["payload_type"] <= 127
    _check_baresip_codec(log, codec)
    assert 0 < r["setup_ms"] < 1000 and r["loss_rate"] == 0.0
    (bs_said, said_rate), (bs_heard, heard_rate) = _baresip_recordings(rec, log)
    mode, floor = _floor(codec)
    to_baresip = _pesq(r["sent"], r["sample_rate"], bs_heard, heard_rate, mode)
    to_us = _pesq(bs_said, said_rate, r["received"], r["sample_rate"], mode)
    print(f"caller calls baresip, {codec}: PESQ-{mode.upper()} caller->baresip {to_baresip:.3f}, "
          f"baresip->caller {to_us:.3f} (floor {floor:.2f})")
    assert to_baresip >= floor and to_us >= floor, (to_baresip, to_us, floor)
