"""The voice agent's pipeline: recogniser real-time factor and CPU per concurrent pipeline call.

1. ASR: PocketSphinx (the lab's configuration: en-us, no flat-lexicon pass) on the
   CMU ARCTIC items (``VOICELAB_DATA``) fed in 20 ms chunks, at 16 kHz and band-limited to
   8 kHz (G.711's band) and brought back to 16 kHz either by zero-stuffing ("folded", the
   pipeline's default for 8 kHz calls) or by soxr: CPU seconds per second of speech (the
   real-time factor), with the WER beside it.
2. Stages: CPU per second of call audio of each stage alone (VAD webrtc / silero, ASR,
   TTS of one reply).
3. Calls: N concurrent SIP pipeline conversations, caller and agent in this process.
   ``--mode loopback`` (default): real sockets on 127.0.0.1 in real time, so each call's
   recogniser runs in a worker process of its own (``ProcessRecognizer``), as in a
   deployed agent; the CPU is split into this process (agent + caller + their threads:
   ``time.process_time``) and the recogniser workers (``os.times()``'s children user +
   system delta, read after every worker has been waited for: the kernel adds a child's
   CPU to its parent's children times when it is reaped). ``--mode virtual``: the virtual
   network under the virtual clock, the recogniser inline (the figure before the worker
   process). CPU seconds / call seconds / N = one call's share of a core; 1 / that =
   calls one core holds (caller side included, so an upper bound on the agent's cost).

Other load on the machine does not count in CPU time, though it slows caches: the script
prints the load average beside each figure. Threads pinned to 1.

    VOICELAB_DATA=... python benchmarks/bench_pipeline.py [--calls 1,2,4] [--turns 3] [--mode loopback|virtual]
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


def fold(pcm8: np.ndarray) -> np.ndarray:
    """8 kHz int16 to 16 kHz by zero-stuffing, as ``Pipeline.feed`` does (``asr_upsample="fold"``)."""
    out = np.zeros(2 * len(pcm8), dtype=np.int16)
    out[::2] = np.clip(2 * pcm8.astype(np.int32), -32768, 32767)
    return out


def asr_rtf(utts, how: str) -> tuple[float, float]:
    """Real-time factor and WER of the recogniser; ``how``: "16k", "8k-fold" or "8k-soxr"."""
    cpu = dur = 0.0
    e = n = 0
    r = PocketSphinxRecognizer(16000)
    for u in utts:
        if how == "16k":
            pcm = audio.to_int16(u.samples)
        elif how == "8k-fold":
            pcm = fold(audio.to_int16(audio.resample(u.samples, 16000, 8000)))
        else:
            pcm = audio.to_int16(audio.resample(audio.resample(u.samples, 16000, 8000), 8000, 16000))
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


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _wait_workers_reaped(timeout: float = 10.0) -> int:
    """Wait until no recogniser worker is left unreaped; returns how many were still running."""
    import threading

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(t.name == "voicelab-asr-reap" for t in threading.enumerate()):
            break
        time.sleep(0.1)
    kids = 0
    for task in os.listdir("/proc/self/task"):
        try:
            kids += len(open(f"/proc/self/task/{task}/children").read().split())
        except OSError:
            pass
    return kids


def calls_cpu(n: int, turns: int, utts, mode: str) -> dict:
    network = "virtual" if mode == "virtual" else "loopback"

    async def many():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        res = await asyncio.gather(*[pipeline_call(transport="sip", turns=turns, utterances=utts[:turns], seed=i,
                                                   network=network) for i in range(n)])  # fmt: skip
        return res, loop.time() - t0

    load0 = os.getloadavg()[0]
    c0, k0 = time.process_time(), _children_cpu()
    if mode == "virtual":
        res, call_s = run_virtual(many(), stall_timeout=60.0)
    else:
        res, call_s = asyncio.run(many())
    cpu = time.process_time() - c0
    left = _wait_workers_reaped()
    workers = _children_cpu() - k0
    answered = sum(r["turn.answered"] for r in res)
    outcomes: dict = {}
    for r in res:
        for k, v in (r.get("turn.outcomes") or {}).items():
            outcomes[k] = outcomes.get(k, 0) + v
    speech_s = sum(len(u.samples) / 16000 for u in utts[:turns]) * n
    share = (cpu + workers) / call_s / n
    return {"calls": n, "call_s": call_s, "cpu_s": cpu, "workers_cpu_s": workers, "speech_s": speech_s,
            "core_share_per_call": share, "calls_per_core": 1 / share, "answered": answered, "turns": n * turns,
            "unreaped": left, "load": (load0, os.getloadavg()[0]), "outcomes": outcomes,
            "asr_final_ms_max": max((r.get("turn.asr_final_ms.max") or 0.0) for r in res)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", default="1,2,4")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--mode", choices=("loopback", "virtual"), default="loopback")
    ap.add_argument("--skip-stages", action="store_true", help="only the concurrent calls")
    a = ap.parse_args()
    utts = load_utterances(6)
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"natural speech: {not utts[0].synthetic}")
    if not a.skip_stages:
        for how in ("16k", "8k-fold", "8k-soxr"):
            la = os.getloadavg()[0]
            rtf, w = asr_rtf(utts, how)
            print(f"ASR PocketSphinx {how}: real-time factor {rtf:.3f} (CPU s per s of speech), WER {w:.3f} "
                  f"(load {la:.2f}-{os.getloadavg()[0]:.2f})", flush=True)
        print(f"VAD webrtc: {vad_rtf(WebRtcVad(), utts):.4f} x real time; silero (onnxruntime): {vad_rtf(SileroVad(), utts):.4f}")
        first_ms, tts_rtf = tts_cost()
        print(f"TTS eSpeak NG: first clause {first_ms:.1f} ms CPU, {tts_rtf:.3f} CPU s per s of reply audio")
    print(f"calls: --mode {a.mode}")
    print("| concurrent calls | call s | speech s | CPU s, this process | CPU s, recogniser workers | "
          "CPU s per call | core share per call | calls per core | turns answered | load 1-min (start-end) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    sorted_utts = sorted(utts, key=lambda u: len(u.samples))
    for n in [int(x) for x in a.calls.split(",")]:
        r = calls_cpu(n, a.turns, sorted_utts, a.mode)
        note = f" ({r['unreaped']} workers not reaped: their CPU is missing)" if r["unreaped"] else ""
        if set(r["outcomes"]) - {"ok"}:
            note += f" outcomes {r['outcomes']}, asr_final max {r['asr_final_ms_max']:.0f} ms"
        per_call = (r["cpu_s"] + r["workers_cpu_s"]) / r["calls"]
        print(f"| {r['calls']} | {r['call_s']:.1f} | {r['speech_s']:.1f} | {r['cpu_s']:.1f} | {r['workers_cpu_s']:.1f} | "
              f"{per_call:.2f} | {r['core_share_per_call']:.3f} | {r['calls_per_core']:.1f} | "
              f"{r['answered']}/{r['turns']} | {r['load'][0]:.2f}-{r['load'][1]:.2f} |{note}", flush=True)


if __name__ == "__main__":
    main()
