"""Soak: SIPp calls the agent at a steady rate; does its memory or descriptor count grow?

Usage::

    PYTHONPATH=$PWD python benchmarks/soak_agent.py --rate 80 --minutes 30 [--mode signalling]

Starts ``voicelab agent serve`` (overload control on), runs SIPp ``uac_load.xml`` at
``--rate`` calls/s for ``--minutes`` and samples the agent's resident memory (VmRSS) and
open file descriptors every ``--every`` s. Growth is judged after the first third (the
transactions' 32 s lifetime and the bounded caches fill first). Results:
docs/benchmarks.md ("Soak").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sip_load import SIPP_DIR, Target, free_udp_port  # noqa: E402


def sample(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open file descriptors) of a live process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


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
        tgt = Target("agent", port, mode=args.mode, max_rate=None, max_lag_ms=250.0, overload=True, workdir=Path(tmp))
        calls = int(args.rate * seconds)
        sipp = subprocess.Popen(["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "uac_load.xml"), "-r", f"{args.rate:g}",
                                 "-m", str(calls), "-l", "100000", "-i", "127.0.0.1", "-p", str(free_udp_port()),
                                 "-nostdin", "-recv_timeout", "10000", "-trace_stat", "-fd", "3600",
                                 "-timeout", f"{seconds + 60:.0f}s"], cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        samples = []
        t0 = time.monotonic()
        try:
            while sipp.poll() is None:
                rss, fds = sample(tgt.proc.pid)
                samples.append((round(time.monotonic() - t0, 1), rss, fds))
                print(json.dumps({"t_s": samples[-1][0], "rss_kb": rss, "fds": fds}), flush=True)
                time.sleep(args.every)
            stats = {}
            for f in Path(tmp).glob("uac_load_*.csv"):
                if not f.name.endswith(("_counts.csv", "_rtt.csv")):
                    rows = [r.split(";") for r in f.read_text().splitlines()]
                    stats = dict(zip(rows[0], rows[-1]))
        finally:
            if sipp.poll() is None:
                sipp.kill()
            tgt.stop()
    settled = [s for s in samples if s[0] >= seconds / 3]
    result = {
        "rate": args.rate, "minutes": args.minutes, "mode": args.mode,
        "successful": stats.get("SuccessfulCall(C)"), "failed": stats.get("FailedCall(C)"),
        "rss_kb_first_third_end": settled[0][1] if settled else None, "rss_kb_end": samples[-1][1] if samples else None,
        "rss_kb_max": max(s[1] for s in samples) if samples else None,
        "fds_min": min(s[2] for s in samples) if samples else None, "fds_max": max(s[2] for s in samples) if samples else None,
    }
    print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"result": result, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
