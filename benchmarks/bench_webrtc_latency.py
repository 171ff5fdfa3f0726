"""Mouth-to-ear of one WebRTC call on clean loopback: the lab's jitter buffers and frame sizes vs plain aiortc.

Each configuration is one :func:`voicelab.webrtc.webrtc_call` (caller and agent in this
process, Opus, natural speech when ``VOICELAB_DATA`` points at the corpus), repeated
``--calls`` times, the configurations interleaved call by call so that they share the
machine's load:

* ``lab fixed:60 20ms`` -- the lab's encoder (Opus 24 kbit/s), fixed 60 ms buffer (the
  sim/SIP default);
* ``lab auto 20ms`` -- the self-sizing buffer (``jitter_buffer="auto"``);
* ``lab auto 10ms`` -- the self-sizing buffer and 10 ms Opus frames;
* ``lab auto 10ms inline`` -- the same, the lab's encoder run on the event loop
  (``encode_inline=True``) instead of aiortc's thread pool;
* ``aiortc-defaults`` -- plain aiortc (its Opus at 96 kbit/s, 16-packet buffer with 4
  prefetched), the baseline.

Per call: median over both directions of ``mouth_to_ear_ms`` (cross-correlation of
sent and played audio), the reported parts (frame + send-to-arrival + jitter buffer +
look-ahead, lab modes) and their difference from the measured delay, late loss, and the
process CPU time (``time.process_time``: both peers, every thread) per second of call
media. The table gives the median over calls of each figure.

    python benchmarks/bench_webrtc_latency.py [--calls 5] [--seconds 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicelab.webrtc import webrtc_call  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "lab fixed:60 20ms": {"mode": "lab", "bitrate": 24000, "jitter_buffer": "fixed:60"},
    "lab auto 20ms": {"mode": "lab", "bitrate": 24000, "jitter_buffer": "auto"},
    "lab auto 10ms": {"mode": "lab", "bitrate": 24000, "jitter_buffer": "auto", "frame_ms": 10},
    "lab auto 10ms inline": {"mode": "lab", "bitrate": 24000, "jitter_buffer": "auto", "frame_ms": 10,
                             "encode_inline": True},
    "aiortc-defaults": {"mode": "aiortc-defaults"},
}
DIRS = ("caller_to_agent", "agent_to_caller")


def _mean(r: dict, key: str) -> float | None:
    v = [r.get(f"{d}.{key}") for d in DIRS]
    v = [x for x in v if x is not None]
    return float(np.mean(v)) if v else None


async def one(name: str, seconds: float) -> dict[str, Any]:
    """One call of configuration ``name``: its figures (ms, CPU-s per media-s)."""
    c0 = time.process_time()
    r = await webrtc_call(codec="opus", seconds=seconds, stats_interval_s=None, **CONFIGS[name])
    cpu = time.process_time() - c0
    m2e, parts = _mean(r, "mouth_to_ear_ms"), _mean(r, "parts_sum_ms")
    return {
        "config": name,
        "mouth_to_ear_ms": m2e,
        "parts_sum_ms": parts,
        "parts_error_ms": None if m2e is None or parts is None else parts - m2e,
        "playout_delay_ms": _mean(r, "playout_delay_ms"),
        "send_to_arrival_ms": _mean(r, "send_to_arrival_ms"),
        "late_loss_rate": _mean(r, "late_loss_rate"),
        "pesq_wb": _mean(r, "pesq_wb"),
        "cpu_s": cpu,
        "cpu_s_per_media_s": cpu / r["seconds"],
    }


async def run(calls: int, seconds: float, configs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i in range(calls):
        for name in configs:
            row = await one(name, seconds)
            row["call"] = i
            rows.append(row)
            print(f"# {i} {name}: m2e {row['mouth_to_ear_ms']:.1f} ms, jb {row['playout_delay_ms'] or float('nan'):.1f}"
                  f" ms, parts-m2e {row['parts_error_ms'] if row['parts_error_ms'] is not None else float('nan'):+.1f}"
                  f" ms, cpu {row['cpu_s_per_media_s']:.3f} s/s", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict[str, Any]], configs: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in configs:
        mine = [r for r in rows if r["config"] == name]
        s: dict[str, Any] = {"n": len(mine)}
        for k in ("mouth_to_ear_ms", "playout_delay_ms", "send_to_arrival_ms", "parts_error_ms", "late_loss_rate",
                  "pesq_wb", "cpu_s_per_media_s"):
            v = [r[k] for r in mine if r[k] is not None]
            s[k] = float(np.median(v)) if v else None
        v = [r["parts_error_ms"] for r in mine if r["parts_error_ms"] is not None]
        s["parts_error_max_abs_ms"] = float(np.max(np.abs(v))) if v else None
        out[name] = s
    return out


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5, help="calls per configuration")
    ap.add_argument("--seconds", type=float, default=4.0, help="speech per call, s")
    ap.add_argument("--config", action="append", choices=list(CONFIGS), help="only these (repeatable)")
    ap.add_argument("--json", help="write rows and summary here")
    a = ap.parse_args()
    configs = a.config or list(CONFIGS)
    rows = asyncio.run(run(a.calls, a.seconds, configs))
    summ = summary(rows, configs)
    print("| configuration | n | mouth-to-ear p50 (ms) | jitter buffer (ms) | send-to-arrival (ms) | "
          "parts - measured, p50 / max abs (ms) | late loss | PESQ-WB | CPU s per media s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in summ.items():
        print(f"| {name} | {s['n']} | {_f(s['mouth_to_ear_ms'], '.1f')} | {_f(s['playout_delay_ms'], '.1f')} | "
              f"{_f(s['send_to_arrival_ms'], '.1f')} | {_f(s['parts_error_ms'], '+.1f')} / "
              f"{_f(s['parts_error_max_abs_ms'], '.1f')} | {_f(s['late_loss_rate'], '.3f')} | "
              f"{_f(s['pesq_wb'], '.2f')} | {_f(s['cpu_s_per_media_s'], '.3f')} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "summary": summ}, indent=1))


if __name__ == "__main__":
    main()
