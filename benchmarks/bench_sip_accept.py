"""CPU per accepted signalling-only call on the agent's raw-datagram path (no SIPp, no network peer).

An ``agent serve --mode signalling``-like :class:`voicelab.agent.Agent` (overload control
that admits everything, so its cost is counted) is started on a UDP port; SIPp-shaped
INVITE, ACK and BYE datagrams (``benchmarks/sipp/uac_load.xml``'s, a fresh Call-ID each)
are fed straight into the UDP transport's datagram handler, as the socket's readiness
callback would, with an event-loop turn every 50 calls. The 200s go out of the real
socket to a local sink that the script reads (for the To tag). Timers of finished
transactions (32 s later) are not included.

Prints CPU microseconds per accepted call (INVITE, 200, ACK, BYE, 200), best of
``--repeat``, and Python function calls per accepted call (deterministic: independent of
the machine's load; the primary measure). ``--profile`` prints a cProfile of one run
(``--sort tottime|cumulative``).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_sip_accept.py [--calls 5000] [--repeat 5] [--profile]

The same script runs against another checkout (``PYTHONPATH=/other/checkout``) for a
before/after comparison (it is the same path as ``bench_sip_shed.py --accepted``).
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


async def _run_accepted(calls: int, repeat: int, profile: bool, sort: str = "tottime", lines: int = 40) -> dict:
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


async def _python_calls_and_profile(one, calls: int, profile: bool, lines: int, timer=None, sort: str = "tottime") -> tuple[float, str | None]:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sort", default="tottime", choices=["tottime", "cumulative", "ncalls"])
    ap.add_argument("--lines", type=int, default=40)
    args = ap.parse_args(argv)
    r = asyncio.run(_run_accepted(args.calls, args.repeat, args.profile, args.sort, args.lines))
    print(f"CPU per accepted call through the agent (no timers): best {r['us_best']:.1f} us (runs: {r['us_all']}); "
          f"Python calls per accepted call: {r['python_calls']:.0f}; calls ended: {r['calls']}")
    if r["profile"]:
        print(r["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
