"""The Pipecat bot's turns per path: SIP (through the media-stream bridge), WebSocket, WebRTC;
clean, impaired, and barged into. The numbers of docs/pipecat.md ("Measured, per path").

Each cell is one conversation of ``--turns`` CMU ARCTIC utterances (``VOICELAB_DATA``)
with the bot in its own process (:func:`voicelab.pipecat_turns.pipecat_call`, as
``voicelab call --agent pipecat``): the lab's replies, modelled LLM (median 400 ms),
``stop_ms`` 300. Prints, per cell, n, p50 / p90 / max of the turn latency at the caller's
ear with a bootstrap 95 % interval of the median, Pipecat's own figure, WER, and for the
barge-in cells the stop time; ``--json FILE`` keeps every result.

    VOICELAB_DATA=... python benchmarks/bench_pipecat.py [--turns 12] [--paths sip,ws,webrtc]
        [--cells clean,impaired,barge] [--loss 0.05 --delay-ms 30 --jitter-ms 10] [--barge-after 0.8]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np

from voicelab.net import ChannelConfig
from voicelab.pipecat_turns import pipecat_call


def _ci(vals: list[float]) -> tuple[float, float] | None:
    """Bootstrap 95 % interval of the median (4000 resamples, seed 0)."""
    a = np.asarray(vals, dtype=float)
    if len(a) < 3:
        return None
    meds = np.median(np.random.default_rng(0).choice(a, (4000, len(a))), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def _row(name: str, res: dict) -> str:
    tot = [t["total_ms"] for t in res["turns"] if "total_ms" in t]
    ci = _ci(tot)
    out = (f"{name:22s} answered {res['turn.answered']:2d}/{res['turn.count']:2d}  total p50 {res['turn.total_ms.p50'] or 0:5.0f} "
           f"p90 {res['turn.total_ms.p90'] or 0:5.0f} max {res['turn.total_ms.max'] or 0:5.0f}")
    out += f"  CI95 {ci[0]:.0f}-{ci[1]:.0f}" if ci else "  CI95 -"
    out += f"  pipecat p50 {res.get('turn.pipecat_ms.p50') or float('nan'):5.0f}  WER {res['turn.wer'] or 0:.2f}"
    if res.get("turn.barge_in_stop_ms.p50") is not None:
        b = [t["barge_in_stop_ms"] for t in res["turns"] if "barge_in_stop_ms" in t]
        bci = _ci(b)
        out += (f"  barge-in stop n {len(b)} p50 {res['turn.barge_in_stop_ms.p50']:.0f} p90 "
                f"{res['turn.barge_in_stop_ms.p90']:.0f}" + (f" CI95 {bci[0]:.0f}-{bci[1]:.0f}" if bci else ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--paths", default="sip,ws,webrtc")
    ap.add_argument("--cells", default="clean,impaired,barge")
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--delay-ms", type=float, default=30.0)
    ap.add_argument("--jitter-ms", type=float, default=10.0)
    ap.add_argument("--barge-after", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    net = ChannelConfig(loss_rate=args.loss, delay_ms=args.delay_ms, jitter_ms=args.jitter_ms)
    cells = {"clean": {}, "impaired": {"net": net}, "barge": {"barge_in_after_s": args.barge_after}}
    results = {}
    for path in args.paths.split(","):
        for cell in args.cells.split(","):
            res = asyncio.run(pipecat_call(transport=path, turns=args.turns, seed=args.seed, **cells[cell]))
            results[f"{path}/{cell}"] = res
            print(_row(f"{path}/{cell}", res), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, default=float)


if __name__ == "__main__":
    main()
