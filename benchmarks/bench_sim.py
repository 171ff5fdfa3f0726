"""Sim-mode throughput per codec, against the raw codec rate measured in the same run.

For each codec:
* raw: encode + decode of 10 s of speech, frame by frame, nothing else;
* sim: ``simulate_call(..., quality=False)`` on the same speech over a lossless channel
  (level normalisation, resampling, packetizing, channel model, jitter buffer, decode,
  delay estimation), i.e. everything but PESQ/STOI;
* ratio = sim rate / raw rate: the lab's own overhead (issue target: >= 0.5).
PESQ-NB, PESQ-WB and STOI cost on 10 s of speech are reported separately.

Rates are "x real time" on one core (numpy/BLAS threads pinned to 1). Best of N runs.

    python benchmarks/bench_sim.py [--repeats 3] [--markdown]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from voicelab import audio, codecs, metrics  # noqa: E402
from voicelab.sim import Scenario, simulate_call  # noqa: E402

SECONDS = 10.0


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def raw_rate(name: str, speech16: np.ndarray, repeats: int) -> float:
    c = codecs.get(name)
    x = audio.to_int16(audio.resample(speech16, 16000, c.sample_rate))
    F = c.frame_samples
    n = len(x) // F

    def run():
        enc, dec = codecs.get(name), codecs.get(name)
        for i in range(n):
            dec.decode(enc.encode(x[i * F : (i + 1) * F]))

    return (n * F / c.sample_rate) / best_of(run, repeats)


def sim_rate(name: str, repeats: int) -> float:
    scn = Scenario(codec=name, max_speech_s=SECONDS, seed=1)
    simulate_call(scn, quality=False)  # warm caches (speech corpus)
    dur = simulate_call(scn, quality=False).metrics["speech_duration_s"]
    return dur / best_of(lambda: simulate_call(scn, quality=False), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()

    items = audio.corpus(sample_rate=16000)
    speech = np.concatenate([np.asarray(i.samples) for i in items])[: int(SECONDS * 16000)]
    speech = audio.normalize_level(speech, 16000)
    print(f"# voicelab sim benchmark: Python {platform.python_version()}, {platform.machine()}, "
          f"speech {audio.corpus_source()}, {len(speech) / 16000:.1f} s, best of {args.repeats}")
    rows = []
    for info in codecs.available():
        if not info.get("available", True):
            print(f"# {info['name']}: skipped ({info.get('unavailable_reason')})")
            continue
        name = info["name"]
        raw = raw_rate(name, speech, args.repeats)
        sim = sim_rate(name, args.repeats)
        rows.append((name, raw, sim, sim / raw))
    print("| codec | raw encode+decode (x RT) | sim pipeline (x RT) | ratio sim/raw |")
    print("|---|---:|---:|---:|")
    for name, raw, sim, ratio in rows:
        print(f"| {name} | {raw:.0f} | {sim:.0f} | {ratio:.2f} |")

    ref16 = speech
    deg16 = audio.resample(audio.resample(speech, 16000, 8000), 8000, 16000)
    ref8, deg8 = audio.resample(ref16, 16000, 8000), audio.resample(deg16, 16000, 8000)
    costs = {
        "PESQ-NB (8 kHz)": best_of(lambda: metrics.pesq(ref8, deg8, 8000, mode="nb"), args.repeats),
        "PESQ-WB (16 kHz)": best_of(lambda: metrics.pesq(ref16, deg16, 16000, mode="wb"), args.repeats),
        "STOI (16 kHz)": best_of(lambda: metrics.stoi(ref16, deg16, 16000), args.repeats),
    }
    print()
    print(f"| metric on {len(speech) / 16000:.0f} s of speech | seconds | x real time |")
    print("|---|---:|---:|")
    for k, v in costs.items():
        print(f"| {k} | {v:.3f} | {len(speech) / 16000 / v:.0f} |")


if __name__ == "__main__":
    main()
