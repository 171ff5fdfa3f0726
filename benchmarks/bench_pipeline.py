"""The voice agent's pipeline: recogniser real-time factor and CPU per concurrent pipeline call.

1. ASR: PocketSphinx (the lab's configuration: en-us, no flat-lexicon pass) on the
   CMU ARCTIC items (``VOICELAB_DATA``) fed in 20 ms chunks, at 16 kHz and band-limited to
   8 kHz (G.711) and upsampled again: CPU seconds per second of speech (the real-time
   factor), with the WER beside it.
2. Stages: CPU per second of call audio of each stage alone (VAD webrtc / silero, ASR,
   TTS of one reply).
3. Calls: N concurrent SIP pipeline conversations (caller + agent + virtual network in
   this process, ``run_virtual``): process CPU seconds / call seconds / N = one call's
   share of a core; 1 / that = calls one core holds (caller side included, so an upper
   bound on the agent's cost).

CPU is ``time.process_time`` (this process only: other load on the machine does not count,
though it slows caches). Threads pinned to 1.

    VOICELAB_DATA=... python benchmarks/bench_pipeline.py [--calls 1,2,4] [--turns 3]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import asyncio  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from voicelab import audio  # noqa: E402
from voicelab.net.vclock import run_virtual  # noqa: E402
from voicelab.pipeline.asr import PocketSphinxRecognizer  # noqa: E402
from voicelab.pipeline.vad import SileroVad, WebRtcVad  # noqa: E402
from voicelab.pipeline.wer import word_errors  # noqa: E402
from voicelab.turns import load_utterances, pipeline_call  # noqa: E402


def asr_rtf(utts, rate: int) -> tuple[float, float]:
    cpu = dur = 0.0
    e = n = 0
    r = PocketSphinxRecognizer(16000)
    for u in utts:
        x = u.samples if rate == 16000 else audio.resample(audio.resample(u.samples, 16000, rate), rate, 16000)
        pcm = audio.to_int16(x)
        t0 = time.process_time()
        r.start()
        for i in range(0, len(pcm), 320):
            r.feed(pcm[i : i + 320])
        text = r.final()
        cpu += time.process_time() - t0
        dur += len(pcm) / 16000
        de, dn = word_errors(u.transcript, text)
        e, n = e + de, n + dn
    return cpu / dur, e / n


def vad_rtf(vad, utts) -> float:
    cpu = dur = 0.0
    for u in utts:
        pcm = audio.to_int16(u.samples)
        t0 = time.process_time()
        for i in range(0, len(pcm) - 320, 320):
            vad.probability(pcm[i : i + 320])
        cpu += time.process_time() - t0
        dur += len(pcm) / 16000
    return cpu / dur


def tts_cost() -> tuple[float, float]:
    from voicelab.audio import espeak
    from voicelab.pipeline.tts import EspeakTts

    tts = EspeakTts(8000)
    text = "I see, thank you. Could you tell me a little more about that?"
    espeak._synth_cached.cache_clear()
    espeak._synth_native.cache_clear()
    t0 = time.process_time()
    first = tts.synthesize("I see,", first=True)
    t1 = time.process_time()
    rest = tts.synthesize("thank you.", first=False)
    rest2 = tts.synthesize("Could you tell me a little more about that?", first=False)
    t2 = time.process_time()
    audio_s = (len(first) + len(rest) + len(rest2)) / 8000
    return (t1 - t0) * 1000.0, (t2 - t0) / audio_s


def calls_cpu(n: int, turns: int, utts) -> dict:
    async def many():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        res = await asyncio.gather(*[pipeline_call(transport="sip", turns=turns, utterances=utts[:turns], seed=i,
                                                   network="virtual") for i in range(n)])  # fmt: skip
        return res, loop.time() - t0

    c0 = time.process_time()
    res, call_s = run_virtual(many(), stall_timeout=60.0)
    cpu = time.process_time() - c0
    answered = sum(r["turn.answered"] for r in res)
    share = cpu / call_s / n
    return {"calls": n, "call_s": call_s, "cpu_s": cpu, "core_share_per_call": share, "calls_per_core": 1 / share,
            "answered": answered, "turns": n * turns}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", default="1,2,4")
    ap.add_argument("--turns", type=int, default=3)
    a = ap.parse_args()
    utts = load_utterances(6)
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"natural speech: {not utts[0].synthetic}")
    for rate in (16000, 8000):
        rtf, w = asr_rtf(utts, rate)
        print(f"ASR PocketSphinx at {rate} Hz: real-time factor {rtf:.3f} (CPU s per s of speech), WER {w:.3f}")
    print(f"VAD webrtc: {vad_rtf(WebRtcVad(), utts):.4f} x real time; silero (onnxruntime): {vad_rtf(SileroVad(), utts):.4f}")
    first_ms, tts_rtf = tts_cost()
    print(f"TTS eSpeak NG: first clause {first_ms:.1f} ms CPU, {tts_rtf:.3f} CPU s per s of reply audio")
    print("| concurrent calls | call s (virtual) | CPU s | core share per call | calls per core | turns answered |")
    print("|---|---|---|---|---|---|")
    sorted_utts = sorted(utts, key=lambda u: len(u.samples))
    for n in [int(x) for x in a.calls.split(",")]:
        r = calls_cpu(n, a.turns, sorted_utts)
        print(f"| {r['calls']} | {r['call_s']:.1f} | {r['cpu_s']:.1f} | {r['core_share_per_call']:.3f} | "
              f"{r['calls_per_core']:.1f} | {r['answered']}/{r['turns']} |", flush=True)


if __name__ == "__main__":
    main()
