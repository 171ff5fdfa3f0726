"""CPU per signalling-only call inside one process, sans-IO (no sockets, no event loop).

Drives :class:`voicelab.sip.ua.UserAgent` the way ``voicelab agent serve --mode
signalling`` does for a SIPp ``uac`` call: INVITE (with SIPp's SDP offer) in, answer
200 with SDP, ACK in, BYE in, 200 out; every call a fresh Call-ID and branch, a shared
clock that advances 1 ms per message so timers fire as they would. Reports the process
CPU time per call (``time.process_time``: robust to a shared machine) and, with
``--profile``, the top functions of a cProfile run.

    PYTHONPATH=$PWD python benchmarks/bench_sip_cpu.py [--calls 20000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicelab.sip.ua import IncomingCall, UserAgent  # noqa: E402

SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

INVITE = ("INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
          "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1-0\r\n"
          "From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\n"
          "To: service <sip:service@127.0.0.1:5060>\r\n"
          "Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
          "Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
          "Content-Type: application/sdp\r\nContent-Length: {clen}\r\n\r\n{sdp}")
ACK = ("ACK sip:service@127.0.0.1:5060 SIP/2.0\r\n"
       "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1-5\r\n"
       "From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\n"
       "To: service <sip:service@127.0.0.1:5060>;tag={tag}\r\n"
       "Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 ACK\r\n"
       "Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n")
BYE = ("BYE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
       "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1-7\r\n"
       "From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\n"
       "To: service <sip:service@127.0.0.1:5060>;tag={tag}\r\n"
       "Call-ID: {n}-1@127.0.0.1\r\nCSeq: 2 BYE\r\n"
       "Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n")


def run(calls: int) -> tuple[float, int]:
    ua = UserAgent(local_uri="sip:agent@127.0.0.1", local_addr=("127.0.0.1", 5060), rng=1, codecs=["pcmu"],
                   media_address="127.0.0.1", keep_finished_calls=64, trace_limit=0, trying_delay=0.2)
    peer = ("127.0.0.1", 5061)
    now = 1000.0
    sent = 0
    invites = [INVITE.format(n=n, clen=len(SDP), sdp=SDP).encode() for n in range(calls)]
    t0 = time.process_time()
    for n in range(calls):
        now += 0.001
        ua.receive(invites[n], peer, now)
        ev = ua.next_event()
        while ev is not None and not isinstance(ev, IncomingCall):
            ev = ua.next_event()
        call = ev.call
        ua.answer(call, 200, now=now, media_port=5062)
        out = ua.datagrams_to_send(now)
        sent += len(out)
        resp = out[-1][0]
        i = resp.index(b";tag=", resp.index(b"\r\nTo:")) + 5
        tag = resp[i:resp.index(b"\r\n", i)].decode()
        while ua.next_event() is not None:
            pass
        ua.next_timer()
        now += 0.001
        ua.receive(ACK.format(n=n, tag=tag).encode(), peer, now)
        while ua.next_event() is not None:
            pass
        ua.next_timer()
        now += 0.001
        ua.receive(BYE.format(n=n, tag=tag).encode(), peer, now)
        sent += len(ua.datagrams_to_send(now))
        while ua.next_event() is not None:
            pass
        ua.next_timer()
        ua.handle_timer(now)
    return (time.process_time() - t0) / calls, sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    run(200)  # warm up
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(args.calls)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
        return
    per_call, sent = run(args.calls)
    print(f"{args.calls} calls, {sent} messages sent: {per_call * 1e3:.3f} ms CPU per call")


if __name__ == "__main__":
    main()
