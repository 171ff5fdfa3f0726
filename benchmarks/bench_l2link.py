"""The lab's userspace L2 link (:mod:`voicelab.net.l2forward`) against the kernel bridge, on the namespace chain.

For each mode, a :class:`~voicelab.net.netns_chain.NetnsChain` (the edge routing) carries
RTP-shaped UDP packets (172 B payload, a PCMU packet) both ways between trunk and agent
at ``--pps`` per direction for ``--seconds``; ``dumpcap`` on both ports of each link
gives every packet's time through the link. Modes:

* ``bridge``: ideal links joined by a Linux bridge (the kernel);
* ``forwarder``: ideal links joined by the lab's forwarder (``ideal_links="forwarder"``):
  the forwarder's own added delay;
* ``delay20``: 20 ms on the carrier link (the lab's forwarder): the error against 20 ms.

Reported per mode and link: median, p90, p99 and max of the per-packet delay (ms), and
for the forwarder its CPU seconds per wall second (``getrusage`` in the forwarder,
between ``ready`` and SIGTERM) and per forwarded frame (µs). One call's media is 50
packets/s each way (20 ms PCMU), so ``--pps 50`` is one call.

    sudo python benchmarks/bench_l2link.py [--pps 50,500] [--seconds 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicelab.net import netns_chain as nc  # noqa: E402

A = nc.CHAIN_ADDRESSES
MODES = {"bridge": ({}, "bridge"), "forwarder": ({}, "forwarder"), "delay20": ({"carrier": {"delay_ms": 20.0}}, "bridge")}


async def _traffic(chain: nc.NetnsChain, pps: float, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    socks = {}
    for host, port in (("trunk", 4000), ("agent", 4002)):
        s = nc.socket_in_namespace(chain.namespaces[host], socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((A[host], port))
        s.setblocking(False)
        loop.add_reader(s.fileno(), lambda s=s: _drain(s))
        socks[host] = s
    for _ in range(25):  # warm-up: ARP, and dumpcap really capturing
        socks["trunk"].sendto(b"warm", (A["agent"], 4002))
        socks["agent"].sendto(b"warm", (A["trunk"], 4000))
        await asyncio.sleep(0.01)
    t0 = loop.time()
    n = int(pps * seconds)
    for seq in range(n):
        await asyncio.sleep(max(0.0, t0 + seq / pps - loop.time()))
        socks["trunk"].sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 1) + b"\xff" * 160, (A["agent"], 4002))
        socks["agent"].sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 2) + b"\xff" * 160, (A["trunk"], 4000))
    await asyncio.sleep(0.3)
    for s in socks.values():
        loop.remove_reader(s.fileno())
        s.close()


def _drain(s: socket.socket) -> None:
    while True:
        try:
            s.recv(2048)
        except BlockingIOError:
            return


def _q(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def run(mode: str, pps: float, seconds: float) -> dict:
    links, ideal = MODES[mode]
    chain = nc.NetnsChain(links=links, forward=True, ideal_links=ideal).start()

    async def go():
        await chain.start_captures()
        await _traffic(chain, pps, seconds)
        return await chain.stop_captures()

    try:
        caps = asyncio.run(go())
    finally:
        chain.close_sync()
    per = nc.rtp_hop_delays(caps)
    out: dict = {"mode": mode, "pps_each_way": pps, "seconds": seconds}
    for d in ("up", "down"):
        for link in nc.CHAIN_LINKS:
            v = per[d][link]
            out[f"{link}.{d}"] = {"n": len(v), "median_ms": statistics.median(v), "p90_ms": _q(v, 0.9),
                                  "p99_ms": _q(v, 0.99), "max_ms": max(v)}
    for link, st in chain.forwarder_stats.items():
        frames = st["up"]["delivered"] + st["down"]["delivered"]
        out[f"{link}.forwarder"] = {"cpu_per_wall": st["cpu_s"] / st["wall_s"], "us_per_frame": 1e6 * st["cpu_s"] / max(1, frames),
                                    "frames": frames, "timer": st["timer"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pps", default="50", help="packets per second each way, comma-separated (50 = one call)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json")
    a = p.parse_args()
    rows = []
    for pps in [float(x) for x in a.pps.split(",")]:
        for mode in a.modes.split(","):
            r = run(mode, pps, a.seconds)
            rows.append(r)
            print(f"{mode:10s} {pps:6.0f} pps", end="")
            for link in nc.CHAIN_LINKS:
                for d in ("up", "down"):
                    s = r[f"{link}.{d}"]
                    print(f" | {link}.{d} med {s['median_ms']:.3f} p99 {s['p99_ms']:.3f} max {s['max_ms']:.2f}", end="")
                f = r.get(f"{link}.forwarder")
                if f:
                    print(f" | {link} fwd cpu {100 * f['cpu_per_wall']:.2f} % ({f['us_per_frame']:.0f} us/frame)", end="")
            print(flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
