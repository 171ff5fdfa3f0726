"""Soak: SIPp calls the agent at a steady rate; does its memory or descriptor count grow?

Usage::

    PYTHONPATH=$PWD python benchmarks/soak_capacity.py --rate 80 --minutes 30 [--mode signalling]

Starts ``voicelab agent serve`` (overload control on), runs SIPp ``uac_load.xml`` at
``--rate`` calls/s for ``--minutes`` and samples the agent's resident memory (VmRSS),
open file descriptors, asyncio tasks, live transactions, remembered dialogs, active calls
and media streams every ``--every`` s (the agent's own ``--stats-file`` lines). Growth is judged after the first third (the
transactions' 32 s lifetime and the bounded caches fill first). Results:
docs/benchmarks.md ("Soak").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sip_load import SIPP_DIR, Target, free_udp_port  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=80.0)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--mode", default="signalling")
    ap.add_argument("--json")
    args = ap.parse_args()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        port = free_udp_port()
        vital = Path(tmp) / "vital.jsonl"
        tgt = Target("agent", port, mode=args.mode, max_rate=None, max_lag_ms=250.0, overload=True, workdir=Path(tmp),
                     extra=["--stats-file", str(vital), "--stats-every", f"{args.every:g}"])
        calls = int(args.rate * seconds)
        sipp = subprocess.Popen(["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "uac_load.xml"), "-r", f"{args.rate:g}",
                                 "-m", str(calls), "-l", "100000", "-i", "127.0.0.1", "-p", str(free_udp_port()),
                                 "-nostdin", "-recv_timeout", "10000", "-trace_stat", "-fd", "3600",
                                 "-timeout", f"{seconds + 60:.0f}s"], cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        samples = []
        t0 = time.monotonic()
        try:
            seen = 0
            while sipp.poll() is None:
                time.sleep(args.every)
                rows = [json.loads(x) for x in vital.read_text().splitlines() if x.strip()] if vital.exists() else []
                for row in rows[seen:]:
                    samples.append(row)
                    print(json.dumps(row, sort_keys=True), flush=True)
                seen = len(rows)
            stats = {}
            for f in Path(tmp).glob("uac_load_*.csv"):
                if not f.name.endswith(("_counts.csv", "_rtt.csv")):
                    rows = [r.split(";") for r in f.read_text().splitlines()]
                    stats = dict(zip(rows[0], rows[-1]))
        finally:
            if sipp.poll() is None:
                sipp.kill()
            tgt.stop()
    settled = [s for s in samples if s["t"] >= seconds / 3]
    keys = ("rss_kb", "py_blocks", "fds", "tasks", "transactions", "dialogs", "calls_active", "streams")
    result = {
        "rate": args.rate, "minutes": args.minutes, "mode": args.mode,
        "successful": stats.get("SuccessfulCall(C)"), "failed": stats.get("FailedCall(C)"),
        "refused_503": samples[-1]["calls_shed"] if samples else None,
        # growth is judged from the end of the first third (the 32 s transaction lifetime and
        # the bounded caches have filled by then) to the end; max over that span too
        **{f"{k}_first_third_end": settled[0][k] if settled else None for k in keys},
        **{f"{k}_end": samples[-1][k] if samples else None for k in keys},
        **{f"{k}_max_settled": max(s[k] for s in settled) if settled else None for k in keys},
    }
    print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"result": result, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
