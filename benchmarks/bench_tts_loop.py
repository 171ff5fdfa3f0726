"""eSpeak NG synthesis and the agent's event loop: timer lateness with synthesis inline vs in a thread.

1. ``clauses``: a loop with a 5 ms ticker (``asyncio.sleep(0.005)`` in a loop; lateness =
   wake-up time - the time asked for) while every clause of the lab's scripted replies
   (:data:`voicelab.pipeline.respond.SCRIPT`, split as the pipeline splits them) is
   synthesised, once inline on the loop (what the pipeline did on every loop) and once in
   the synthesis thread (:class:`voicelab.pipeline.tts.ThreadedTts`, what a real-time
   loop does now), at 8 kHz (PCMU calls) and 48 kHz (Opus). eSpeak's results are cached
   per process (``voicelab.audio.espeak``): the cache is cleared before each clause and
   each call, so every synthesis is a cold one (an LLM's reply is new text).
2. ``calls``: SIP pipeline conversations on loopback in real time (caller and agent in
   this process, the recogniser in its worker process), ``PipelineConfig.tts_thread``
   False / True, alternating; the agent's RTP send-timer lateness (``agent_send_lateness_ms``),
   the caller's, and the ticker's over the whole call.

Run it alone (``flock /work/wt/bench.lock python benchmarks/bench_tts_loop.py``): it measures
timing, and other load on the 2-core machine shows in every figure (the load average is
printed).

    VOICELAB_DATA=... python benchmarks/bench_tts_loop.py [--calls 2] [--turns 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np

from voicelab.audio import espeak
from voicelab.pipeline.respond import SCRIPT
from voicelab.pipeline.tts import EspeakTts, ThreadedTts, split_clauses
from voicelab.turns import load_utterances, pipeline_call


def _cold() -> None:
    """Forget eSpeak's cached syntheses: every clause is synthesised anew (as an LLM's new text is)."""
    espeak._synth_native.cache_clear()
    espeak._synth_cached.cache_clear()


def _clauses() -> list[str]:
    out: list[str] = []
    for _, reply in SCRIPT:
        cl, rest = split_clauses([w + " " for w in reply.split()])
        out += cl + (["".join(rest).strip()] if rest else [])
    return out


class Ticker:
    """Lateness of a 5 ms timer on the running loop (ms)."""

    def __init__(self, period: float = 0.005) -> None:
        self.period, self.late, self._task = period, [], None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            self.late.append((loop.time() - due) * 1000.0)

    def start(self) -> "Ticker":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> dict[str, float]:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        v = np.asarray(self.late or [0.0])
        return {"n": len(v), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


async def clauses_run(rate: int, threaded: bool) -> dict:
    loop = asyncio.get_running_loop()
    tts = EspeakTts(rate)
    tts.synthesize("Warm up.", first=True)
    tt = ThreadedTts(tts, clock=loop.time)
    tick = Ticker().start()
    await asyncio.sleep(0.05)
    durs = []
    for i, c in enumerate(_clauses()):
        _cold()
        t0 = loop.time()
        if threaded:
            await asyncio.wrap_future(tt.synthesize_async(c, first=i == 0))
        else:
            tts.synthesize(c, first=i == 0)  # on the loop, as the pipeline did
        durs.append((loop.time() - t0) * 1000.0)
        await asyncio.sleep(0.02)  # the next send tick
    out = await tick.stop()
    out["clause_ms_p50"], out["clause_ms_max"], out["clauses"] = float(np.median(durs)), float(max(durs)), len(durs)
    return out


async def call_run(threaded: bool, turns: int, seed: int) -> dict:
    _cold()  # the replies are synthesised anew in each call (they would be cached in a long-lived agent)
    tick = Ticker().start()
    res = await pipeline_call(transport="sip", turns=turns, seed=seed, utterances=load_utterances(turns),
                              pipeline={"tts_thread": threaded})  # fmt: skip
    t = await tick.stop()
    return {"ticker": t, "agent_send_late_p99": res["agent_send_lateness_ms.p99"],
            "agent_send_late_max": res["agent_send_lateness_ms.max"], "caller_send_late_p99": res["caller_send_lateness_ms.p99"],
            "caller_send_late_max": res["caller_send_lateness_ms.max"], "answered": f"{res['turn.answered']}/{res['turn.count']}",
            "tts_first_audio_p50": res["turn.tts_first_audio_ms.p50"], "send_queue_p50": res["turn.agent_send_queue_ms.p50"],
            "total_p50": res["turn.total_ms.p50"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2, help="calls per mode (alternating)")
    ap.add_argument("--turns", type=int, default=3)
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}; {len(_clauses())} clauses of the lab's replies")
    for rate in (8000, 48000):
        for threaded in (False, True):
            r = asyncio.run(clauses_run(rate, threaded))
            print(f"clauses {rate} Hz {'thread' if threaded else 'inline'}: ticker late p50 {r['p50']:.2f} p99 {r['p99']:.2f} "
                  f"max {r['max']:.2f} ms (n {r['n']}); clause {r['clause_ms_p50']:.1f} ms median, {r['clause_ms_max']:.1f} max; "
                  f"load {os.getloadavg()[0]:.2f}")
    for k in range(args.calls):
        for threaded in (False, True):
            t0 = time.time()
            r = asyncio.run(call_run(threaded, args.turns, seed=k))
            t = r.pop("ticker")
            print(f"call {k} {'thread' if threaded else 'inline'} ({time.time() - t0:.0f} s): ticker late p99 {t['p99']:.2f} "
                  f"max {t['max']:.2f} ms; " + ", ".join(f"{a} {b:.1f}" if isinstance(b, float) else f"{a} {b}"
                                                        for a, b in r.items()) + f"; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
