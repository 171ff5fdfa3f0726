"""SIP messages parsed per second, against the standard library's RFC 5322 header parser.

The baseline is :class:`email.parser.BytesHeaderParser` on the same bytes: a generic
header parser that checks no SIP grammar at all. The lab's parser is measured with full
validation (every known header parsed to its typed form, RFC 3261 8.2 checks) and with
``validate=False`` (framing, start line, header syntax only).

    python benchmarks/bench_sip_parse.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import time

from voicelab.sip import parse_message

INVITE = (
    b"INVITE sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:agent@127.0.0.1>\r\n"
    b'From: "Caller" <sip:caller@127.0.0.1>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:caller@127.0.0.1:5062>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 141\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
)


def rate(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(200):
            fn()
        n += 200
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    assert len(INVITE.split(b"\r\n\r\n", 1)[1]) == 141
    hp = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    head = INVITE.split(b"\r\n", 1)[1]
    base = rate(lambda: hp.parsebytes(head), args.seconds)
    full = rate(lambda: parse_message(INVITE), args.seconds)
    fast = rate(lambda: parse_message(INVITE, validate=False), args.seconds)
    print(f"# SIP parse benchmark: {len(INVITE)}-byte INVITE with SDP, {args.seconds:g} s per case")
    print("| parser | messages/s | ratio to stdlib email headers |")
    print("|---|---:|---:|")
    print(f"| stdlib email.parser (headers only, no SIP checks) | {base:,.0f} | 1.00 |")
    print(f"| voicelab, full validation | {full:,.0f} | {full / base:.2f} |")
    print(f"| voicelab, validate=False | {fast:,.0f} | {fast / base:.2f} |")


if __name__ == "__main__":
    main()
