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

# the same path as bench_sip_shed.py --accepted (its messages, its driver), with the profile's sort order
from bench_sip_shed import _run_accepted


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
