"""RFC 7339 overload feedback, live: what callers that listen save the agent, with SIPp in the same run.

One ``voicelab agent serve --mode signalling --workers 1 --max-rate CAP`` (a capacity set
by hand, so that a Python load generator can offer several times it) is offered RATE new
calls/s for SECONDS by three callers in turn, each against a fresh agent:

* ``sipp``: SIPp ``uac`` (``benchmarks/sipp/uac_load.xml``), which does not ask for
  feedback: the anchor, what any caller without RFC 7339 costs the agent;
* ``lab``: the lab's caller (one ``UserAgent`` + ``AsyncUserAgent`` on UDP), not asking;
* ``lab+oc``: the same caller with ``overload_feedback=True``: it asks, and sheds the
  share of its new calls the agent's Via feedback names before sending them.

Per arm, from the agent's ``--stats-file`` (one line every 0.5 s; the load's window):
INVITEs that reached it per second, admitted and refused (503) per second, its CPU (%
of a core); from the lab's caller: calls shed locally, established, ended; the agent's
last feedback value.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_occ.py [--rate 400] [--capacity 100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_sip_load import free_udp_port, run_uac  # noqa: E402

from voicelab.net.iface import LoopbackInterface  # noqa: E402
from voicelab.sip.aio import AsyncUserAgent  # noqa: E402
from voicelab.sip.transport import UdpTransport  # noqa: E402
from voicelab.sip.ua import CallEnded, CallEstablished, CallFailed, UserAgent  # noqa: E402


def start_agent(port: int, capacity: float, stats: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "voicelab", "agent", "serve", "--mode", "signalling", "--workers", "1", "--codecs", "pcmu",
           "--sip", f"127.0.0.1:{port}", "--max-rate", f"{capacity:g}", "--stats-file", str(stats), "--stats-every", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("Ctrl-C stops"):
            return proc
    raise SystemExit(f"agent did not start (exit {proc.wait()})")


def stop_agent(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rows(stats: Path) -> list[dict]:
    out = []
    for line in stats.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


async def lab_caller(port: int, rate: float, seconds: float, feedback: bool) -> Counter:
    """Offer ``rate`` new calls/s for ``seconds`` s (hang up each call at once); counts."""
    loop = asyncio.get_running_loop()
    t = UdpTransport(LoopbackInterface(loop), parse=False)
    addr = await t.listen("127.0.0.1", 0)
    ua = UserAgent(local_uri="sip:caller@127.0.0.1", local_addr=tuple(addr[:2]), rng=1, codecs=["pcmu"],
                   media_address="127.0.0.1", media_port=free_udp_port(), keep_finished_calls=64, trace_limit=0,
                   overload_feedback=feedback)
    caller = AsyncUserAgent(ua, t)
    counts: Counter = Counter()

    def on_event(ev) -> bool:
        if isinstance(ev, CallEstablished):
            counts["established"] += 1
            ua.bye(ev.call, now=loop.time())
            loop.call_soon(caller.flush)  # (events are delivered inside a flush)
        elif isinstance(ev, CallFailed):
            counts["shed" if ev.reason.startswith("shed by us") else f"failed_{ev.status}"] += 1
        elif isinstance(ev, CallEnded):
            counts["ended"] += 1
        return True

    caller.on_event = on_event
    target = f"sip:agent@127.0.0.1:{port}"
    t0 = loop.time() + 0.05
    n = int(rate * seconds)
    for k in range(n):
        d = t0 + k / rate - loop.time()
        if d > 0:
            await asyncio.sleep(d)
        ua.invite(target, now=loop.time())
        caller.flush()
        counts["offered"] += 1
    counts["late_s_x1000"] = int(1000 * max(0.0, loop.time() - (t0 + n / rate)))
    end = loop.time() + 10.0
    while loop.time() < end and counts["ended"] < counts["established"]:
        await asyncio.sleep(0.1)
    counts["percent_at_end"] = ua.overload_throttle.percent(("127.0.0.1", port), loop.time()) if feedback else 0
    await caller.close()
    return counts


def window(trace: list[dict], t_from: float, t_to: float) -> dict:
    """The agent's counters over the load's window (the stats lines nearest its ends)."""
    a = min(trace, key=lambda r: abs(r["t"] - t_from))
    b = min(trace, key=lambda r: abs(r["t"] - t_to))
    dt = max(1e-9, b["t"] - a["t"])
    admitted, refused = b["oc_admitted"] - a["oc_admitted"], b["oc_refused"] - a["oc_refused"]
    return {"window_s": round(dt, 1), "reached_per_s": round((admitted + refused) / dt, 1),
            "admitted_per_s": round(admitted / dt, 1), "refused_per_s": round(refused / dt, 1),
            "agent_cpu_pct": round(100.0 * (b["cpu_s"] - a["cpu_s"]) / dt, 1),
            "feedback_pct": b.get("oc_feedback")}


def arm(name: str, rate: float, capacity: float, seconds: float, work: Path) -> dict:
    port = free_udp_port()
    stats = work / f"{name}.jsonl"
    proc = start_agent(port, capacity, stats)
    try:
        time.sleep(1.0)  # a baseline stats line
        t_start = rows(stats)[-1]["t"] if stats.exists() and rows(stats) else 0.0
        t0 = time.monotonic()
        if name == "sipp":
            run = run_uac(port, "uac_load.xml", rate, int(rate * seconds), hold_ms=0, workdir=work)
            caller = {"offered": int(rate * seconds), "sipp_rc": run["rc"]}
        else:
            caller = dict(asyncio.run(lab_caller(port, rate, seconds, feedback=name == "lab+oc")))
        load_s = min(seconds, time.monotonic() - t0)
        time.sleep(1.0)
    finally:
        stop_agent(proc)
    trace = rows(stats)
    w = window(trace, t_start + 0.5, t_start + 0.5 + load_s - 1.0)  # the steady part of the load
    return {"arm": name, "offered_per_s": rate, **w, "caller": caller}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=400.0, help="new calls/s offered (default 400)")
    ap.add_argument("--capacity", type=float, default=100.0, help="the agent's --max-rate (default 100)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    arms = ["lab", "lab+oc"] + (["sipp"] if shutil.which("sipp") else [])
    if "sipp" not in arms:
        print("note: sipp not found (Debian package sipp): the SIPp anchor is left out", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="voicelab-occ-") as tmp:
        results = [arm(a, args.rate, args.capacity, args.seconds, Path(tmp)) for a in arms]
    print(f"# RFC 7339 feedback: {args.rate:g} new calls/s offered for {args.seconds:g} s to an agent admitting "
          f"{args.capacity:g}/s (--max-rate), one arm after another")
    print("| caller | reached the agent /s | admitted /s | refused (503) /s | shed by the caller /s | agent CPU % of a core | agent's feedback at the end |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        c = r["caller"]
        shed = c.get("shed", 0) / args.seconds
        print(f"| {r['arm']} | {r['reached_per_s']} | {r['admitted_per_s']} | {r['refused_per_s']} | {shed:.1f} | "
              f"{r['agent_cpu_pct']} | {r['feedback_pct']} |")
    for r in results:
        print(f"{r['arm']}: caller {dict(r['caller'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
