"""CPU per refused INVITE on the agent's raw-datagram path (no SIPp, no network peer).

An ``agent serve``-like :class:`voicelab.agent.Agent` (signalling mode, overload control
that refuses everything after its first call) is started on a UDP port; SIPp's INVITE
(``benchmarks/sipp/uac_load.xml``, a fresh Call-ID each) and the ACK of its refusal are
fed straight into the UDP transport's datagram handler, as the socket's readiness
callback would, in batches of 100 with an event-loop turn after each batch (so work
that a task would do later is counted too). The 503s go out of the real socket to a
local sink nobody reads.

Prints CPU microseconds per refused call (INVITE + 503 + ACK), best of ``--repeat``,
and Python function calls per refused call (deterministic: does not depend on the
machine's load). ``--profile`` prints a cProfile of one run.

``--socket`` measures the whole path instead, system calls included: a second process
sends the INVITEs and ACKs to the agent's UDP port at ``--rate`` calls/s (the 10x load
of issue #10: 12,000), the agent reads them through its event loop (with the C
accelerator: ``recvmmsg``/``sendmmsg`` batches) and the agent process's CPU is divided
by the calls refused. Every line says which path ran (``voicelab.sip.shed.ACCELERATED``;
``VOICELAB_NO_EXTENSIONS=1`` selects the pure-Python one).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_sip_shed.py [--calls 20000] [--repeat 5] [--profile]

The same script runs against another checkout (``PYTHONPATH=/other/checkout``) for a
before/after comparison; it uses only the agent's public construction and its UDP
transport's datagram entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import socket
import sys
import time

INVITE = (
    "INVITE sip:service@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{src};branch=z9hG4bK-4242-{n}-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:{src}>;tag=4242SIPpTag00{n}\r\n"
    "To: service <sip:service@127.0.0.1:{port}>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:{src}\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length:   129\r\n"
    "\r\n"
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)
ACK = (
    "ACK sip:service@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{src};branch=z9hG4bK-4242-{n}-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:{src}>;tag=4242SIPpTag00{n}\r\n"
    "To: service <sip:service@127.0.0.1:{port}>;tag=ol{n:x}\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 ACK\r\n"
    "Contact: sip:sipp@127.0.0.1:{src}\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


BYE = (
    "BYE sip:service@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{src};branch=z9hG4bK-4242-{n}-7\r\n"
    "From: sipp <sip:sipp@127.0.0.1:{src}>;tag=4242SIPpTag00{n}\r\n"
    "To: service <sip:service@127.0.0.1:{port}>;tag={tag}\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 2 BYE\r\n"
    "Contact: sip:sipp@127.0.0.1:{src}\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


async def _run_accepted(calls: int, repeat: int, profile: bool, sort: str = "tottime", lines: int = 30) -> dict:
    """The agent's whole path for accepted calls: INVITE in, 200 out, ACK in, BYE in, 200 out."""
    from voicelab.agent import Agent, tune_gc
    from voicelab.sip.overload import OverloadControl

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink.setblocking(False)
    src = sink.getsockname()[1]
    oc = OverloadControl(max_lag=None, max_queue_delay=None, adaptive=False)  # admits all: its cost is counted
    agent = Agent(mode="signalling", codecs=["pcmu"], overload=oc, host="127.0.0.1", port=0, max_calls=10**6)
    await agent.start()
    tune_gc()  # as agent serve: no full collections of 0.3-0.6 s (then a 200 OK would be retransmitted)
    try:
        feed = agent.sip.transport._on_datagram
        port = agent.address[1]
        addr = ("127.0.0.1", src)
        base = 0

        async def one(n_calls: int) -> float:
            nonlocal base
            invites = [INVITE.format(port=port, src=src, n=n).encode() for n in range(base, base + n_calls)]
            c0 = time.process_time()
            for k, n in enumerate(range(base, base + n_calls)):
                feed(invites[k], addr)
                cid = b"Call-ID: %d-4242@" % n
                resp = sink.recv(65536)
                while not (resp.startswith(b"SIP/2.0 200") and cid in resp and b"1 INVITE" in resp):
                    resp = sink.recv(65536)  # (skips a retransmission of an earlier call's 200)
                i = resp.index(b";tag=", resp.index(b"\r\nTo:")) + 5
                tag = resp[i:resp.index(b"\r\n", i)].decode()
                feed(ACK.format(port=port, src=src, n=n).replace(f"tag=ol{n:x}", f"tag={tag}").encode(), addr)
                feed(BYE.format(port=port, src=src, n=n, tag=tag).encode(), addr)
                resp = sink.recv(65536)
                while not (cid in resp and b"2 BYE" in resp):
                    resp = sink.recv(65536)
                if k % 50 == 49:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
            base += n_calls
            return time.process_time() - c0

        await one(200)
        results = [await one(calls) for _ in range(repeat)]
        per_call, prof_text = await _python_calls_and_profile(one, calls, profile, lines, time.process_time, sort)
        ended = agent.calls_ended
        return {"calls": ended, "us_best": 1e6 * min(results) / calls, "us_all": [round(1e6 * r / calls, 1) for r in results],
                "python_calls": per_call, "profile": prof_text}
    finally:
        await agent.close()
        sink.close()


async def _run(calls: int, repeat: int, profile: bool) -> dict:
    from voicelab.agent import Agent, tune_gc
    from voicelab.sip.overload import OverloadControl

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    src = sink.getsockname()[1]
    oc = OverloadControl(max_rate=1e-3, burst=1, max_lag=None, max_queue_delay=None, adaptive=False)
    agent = Agent(mode="signalling", codecs=["pcmu"], overload=oc, host="127.0.0.1", port=0)
    await agent.start()
    tune_gc()
    try:
        tr = agent.sip.transport
        feed = tr._on_datagram
        port = agent.address[1]
        addr = ("127.0.0.1", src)
        base = 0
        results = []

        def batch_data(lo: int, hi: int) -> list[bytes]:
            out = []
            for n in range(lo, hi):
                out.append(INVITE.format(port=port, src=src, n=n).encode())
                out.append(ACK.format(port=port, src=src, n=n).encode())
            return out

        async def one(n_calls: int) -> float:
            nonlocal base
            data = batch_data(base, base + n_calls)
            base += n_calls
            c0 = time.process_time()
            for i in range(0, len(data), 200):
                for d in data[i:i + 200]:
                    feed(d, addr)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            return time.process_time() - c0

        await one(200)  # warm-up (the first call is admitted)
        shed0 = agent.calls_shed
        for _ in range(repeat):
            results.append(await one(calls))
        shed = agent.calls_shed - shed0
        per_call, prof_text = await _python_calls_and_profile(one, calls, profile, 18)
        return {
            "refused": shed, "expected": calls * repeat, "acks_dropped": agent.shed_acks,
            "us_per_refused_call_best": 1e6 * min(results) / calls,
            "us_per_refused_call_all": [round(1e6 * r / calls, 2) for r in results],
            "python_calls_per_refused_call": per_call, "profile": prof_text,
        }
    finally:
        await agent.close()
        sink.close()


async def _python_calls_and_profile(one, calls: int, profile: bool, lines: int, timer=None,
                                    sort: str = "tottime") -> tuple[float, str | None]:
    """Python function calls per call of ``one(200)`` (deterministic), and a cProfile of
    ``one(calls)`` (top ``lines`` by own time) when ``profile`` is set."""
    import io

    ncalls = 0

    def counter(frame, event, arg):
        nonlocal ncalls
        if event in ("call", "c_call"):
            ncalls += 1

    sys.setprofile(counter)
    await one(200)
    sys.setprofile(None)
    prof_text = None
    if profile:
        pr = cProfile.Profile(timer) if timer is not None else cProfile.Profile()
        pr.enable()
        await one(calls)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats(sort).print_stats(lines)
        prof_text = s.getvalue()
    return ncalls / 200, prof_text


SENDER = r"""
import socket, sys, time
port, n0, n, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
inv, ack = sys.stdin.read().split("\x00")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
src = s.getsockname()[1]
dst = ("127.0.0.1", port)
data = [(inv.format(port=port, src=src, n=k).encode(), ack.format(port=port, src=src, n=k).encode()) for k in range(n0, n0 + n)]
t0 = time.monotonic()
for k, (i, a) in enumerate(data):
    s.sendto(i, dst)
    s.sendto(a, dst)
    if k % 20 == 19:
        ahead = t0 + (k + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
print(time.monotonic() - t0)
"""


async def _run_socket(calls: int, repeat: int, rate: float) -> dict:
    """The whole refusal path through the agent's event loop and socket (system calls included)."""
    import subprocess

    from voicelab.agent import Agent, tune_gc
    from voicelab.sip.overload import OverloadControl

    oc = OverloadControl(max_rate=1e-3, burst=1, max_lag=None, max_queue_delay=None, adaptive=False)
    agent = Agent(mode="signalling", codecs=["pcmu"], overload=oc, host="127.0.0.1", port=0)
    await agent.start()
    tune_gc()
    loop = asyncio.get_running_loop()
    try:
        port = agent.address[1]
        results, base = [], 0
        for r in range(repeat + 1):  # the first run warms up
            shed0, acks0 = agent.calls_shed, agent.shed_acks
            c0 = time.process_time()
            proc = subprocess.Popen([sys.executable, "-c", SENDER, str(port), str(base), str(calls), str(rate)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            proc.stdin.write(INVITE + "\x00" + ACK)
            proc.stdin.close()
            while proc.poll() is None:
                await asyncio.sleep(0.05)
            t_end = loop.time() + 2.0  # what is still queued
            while agent.calls_shed - shed0 + (1 if r == 0 else 0) < calls and loop.time() < t_end:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            cpu = time.process_time() - c0 - 0.0
            shed, acks = agent.calls_shed - shed0, agent.shed_acks - acks0
            base += calls
            if r:
                results.append((1e6 * cpu / max(1, shed), shed, acks, float(proc.stdout.read() or 0)))
        best = min(results)
        return {"us_best": best[0], "us_all": [round(x[0], 2) for x in results], "refused": [x[1] for x in results],
                "acks": [x[2] for x in results], "send_s": [round(x[3], 2) for x in results],
                "batches": getattr(agent.sip.transport._protocol, "batches", None)}
    finally:
        await agent.close()


def _path() -> str:
    from voicelab.sip import shed

    if not hasattr(shed, "ACCELERATED"):
        return "pure Python (a checkout without the accelerator)"
    return "C accelerator (recvmmsg/sendmmsg)" if shed.ACCELERATED else "pure Python"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--accepted", action="store_true",
                    help="measure accepted calls instead (INVITE, 200, ACK, BYE, 200; timers of finished transactions "
                         "fire 32 s later and are not included)")
    ap.add_argument("--socket", action="store_true",
                    help="send the datagrams from a second process to the agent's socket (system calls counted)")
    ap.add_argument("--rate", type=float, default=12000.0, help="calls/s offered with --socket")
    args = ap.parse_args(argv)
    print(f"shed path: {_path()}")
    if args.socket:
        r = asyncio.run(_run_socket(args.calls, args.repeat, args.rate))
        print(f"CPU per refused call through the socket at {args.rate:.0f} calls/s (agent process, INVITE in, 503 out, "
              f"ACK in): best {r['us_best']:.1f} us (runs: {r['us_all']}); refused {r['refused']}, ACKs dropped "
              f"{r['acks']}, sender took {r['send_s']} s")
        return 0
    if args.accepted:
        r = asyncio.run(_run_accepted(args.calls, args.repeat, args.profile))
        print(f"CPU per accepted call through the agent (no timers): best {r['us_best']:.1f} us (runs: {r['us_all']}); "
              f"Python calls per accepted call: {r['python_calls']:.0f}; calls ended: {r['calls']}")
        if r["profile"]:
            print(r["profile"])
        return 0
    r = asyncio.run(_run(args.calls, args.repeat, args.profile))
    if r["refused"] != r["expected"]:
        print(f"warning: {r['refused']} refused of {r['expected']} offered", file=sys.stderr)
    print(f"CPU per refused call (INVITE in, 503 out, ACK in): best {r['us_per_refused_call_best']:.1f} us "
          f"(runs: {r['us_per_refused_call_all']}); Python calls per refused call: "
          f"{r['python_calls_per_refused_call']:.0f}; ACKs dropped unparsed: {r['acks_dropped']}")
    if r["profile"]:
        print(r["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
