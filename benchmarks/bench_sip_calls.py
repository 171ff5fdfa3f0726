"""SIP calls per second on loopback, against SIPp measured in the same run.

Each call is INVITE -> 200 -> ACK -> BYE -> 200 over UDP on 127.0.0.1, one at a time
(sequential: the rate is 1 / per-call latency, which is what a test harness sees).

* baseline: SIPp ``uac`` -> SIPp ``uas`` (both C++);
* SIPp ``uac`` -> the lab's agent (``voicelab.calls.Agent``, which also opens and closes an
  RTP stream per call);
* the lab's caller (``AsyncUserAgent``) -> the lab's agent.

    python benchmarks/bench_sip_calls.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_calls_leaks import _calls  # noqa: E402  (the same caller loop the leak test uses)
from voicelab.calls import Agent  # noqa: E402
from voicelab.net.iface import free_port  # noqa: E402


def sipp_uac(target: str, calls: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sipp", target, "-sn", "uac", "-m", str(calls), "-l", "1", "-r", "10000", "-i", "127.0.0.1",
                    "-p", "0", "-d", "0", "-nostdin", "-timeout", "120s", "-timeout_error"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return calls / (time.perf_counter() - t0)


async def sipp_to_agent(calls: int) -> float:
    async with Agent(codecs=["pcmu"], speech="harvard") as agent:
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{agent.address[1]}", "-sn", "uac", "-m", str(calls), "-l", "1", "-r", "10000",
            "-i", "127.0.0.1", "-p", "0", "-d", "0", "-nostdin", "-timeout", "120s", "-timeout_error",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        rc = await proc.wait()
        if rc != 0:
            raise SystemExit(f"sipp -> agent failed (exit {rc})")
        return calls / (time.perf_counter() - t0)


async def ours(calls: int) -> float:
    t0 = time.perf_counter()
    ok, _ = await _calls(calls)
    assert ok == calls
    return calls / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found: apt-get install sip-tester")
    port = free_port(kind="udp")
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # benchmark only: let the SIPp UAS bind before calling it
        base = sipp_uac(f"127.0.0.1:{port}", args.calls)
    finally:
        uas.terminate()
        uas.wait()
    to_agent = asyncio.run(sipp_to_agent(args.calls))
    both = asyncio.run(ours(args.calls))
    print(f"# SIP calls/s, {args.calls} sequential calls each, UDP on 127.0.0.1")
    print("| caller -> callee | calls/s | ratio to SIPp -> SIPp |")
    print("|---|---:|---:|")
    print(f"| SIPp uac -> SIPp uas | {base:.0f} | 1.00 |")
    print(f"| SIPp uac -> voicelab agent | {to_agent:.0f} | {to_agent / base:.2f} |")
    print(f"| voicelab caller -> voicelab agent | {both:.0f} | {both / base:.2f} |")


if __name__ == "__main__":
    main()
