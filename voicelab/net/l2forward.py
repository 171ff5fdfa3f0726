"""The userspace L2 link on real interfaces: the asyncio adapter of :class:`~voicelab.net.l2link.L2Link`.

Run inside a link namespace of the chain (:class:`voicelab.net.netns_chain.NetnsChain`
starts and stops it)::

    ip netns exec NS python -m voicelab.net.l2forward --a pa --b pb --up '{"delay_ms": 20}' --down '{}' --seed 1

- One ``AF_PACKET`` raw socket per port, bound to the interface, with ``PACKET_VNET_HDR``:
  each frame comes with its virtio-net header (checksum-offload state), which is handed
  back unchanged when the frame is sent on the other port, so a frame whose checksum the
  sender left to the NIC (veths do) still arrives valid. Frames the socket sees leaving
  its own interface (``PACKET_OUTGOING``: the forwarder's own sends) are ignored.
- Time is the event loop's clock (``loop.time()``, CLOCK_MONOTONIC). A frame's ``now`` is
  when the kernel received it (``SO_TIMESTAMPNS``, a CLOCK_REALTIME stamp moved onto the
  monotonic clock by the two clocks' offset read at that moment; never later than
  ``loop.time()``), so the time the loop takes to wake up for it is part of the link's
  delay, not added to it; it is sent when
  :meth:`~voicelab.net.l2link.L2Link.next_deadline` is reached.
  The wake-up is a ``timerfd`` armed at that absolute CLOCK_MONOTONIC time and watched
  with ``add_reader`` (the loop's own timers round their sleep up to the next
  millisecond: epoll's resolution); ``loop.call_at`` is the fallback without timerfd.
- It asks for ``SCHED_FIFO`` priority 10 (root may; the kernel's RT throttling still leaves
  the rest of the machine 5 %): a link must not wait behind the machine's other work. On a
  2-core VM at load 4 this took the ideal forwarder's p99 from ~6 ms to ~0.3 ms.
  ``--no-realtime`` (``run(..., realtime=False)``) keeps the normal scheduler.
- It prints ``ready`` once both sockets are bound; on SIGTERM or SIGINT it prints one JSON
  line of counters (per direction, the lost ordinals, its CPU seconds and wall seconds
  since ``ready``) and exits 0. A bad argument or a socket it cannot open: one line on
  stderr, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import resource
import signal
import socket
import struct
import sys
import time
from typing import Any

from ..errors import VoicelabError
from .channel import ChannelConfig
from .l2link import L2Link

__all__ = ["run", "main"]

_ETH_P_ALL = 0x0003
_SOL_PACKET = 263
_PACKET_VNET_HDR = 15
_PACKET_OUTGOING = 4
_VNET_HDR_LEN = 10
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CMSG_SPACE = socket.CMSG_SPACE(16)
_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = 0o4000, 0o2000000, 1


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    try:
        s.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
        s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((ifname, _ETH_P_ALL))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


class _TimerFd:
    """A CLOCK_MONOTONIC timerfd armed at absolute times (ctypes: Python 3.11 has no os.timerfd_*)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")

    def arm(self, when: float | None) -> None:
        if when is None:
            sec = nsec = 0  # disarm
        else:
            ns = max(1, int(round(when * 1e9)))  # 0 would disarm it
            sec, nsec = divmod(ns, 1_000_000_000)
        spec = ctypes.create_string_buffer(struct.pack("qqqq", 0, 0, sec, nsec))
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, spec, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _realtime() -> str:
    """Ask for SCHED_FIFO (priority 10): a link must not wait behind the machine's other work."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "fifo"
    except (OSError, AttributeError):
        return "other"


async def run(a: str, b: str, up: ChannelConfig, down: ChannelConfig, seed: int, *, out: Any = sys.stdout,
              realtime: bool = True) -> dict:
    """Forward frames between interfaces ``a`` and ``b`` through the link model until SIGTERM/SIGINT.

    Returns
    -------
    dict
        The counters printed at the end (see the module docstring).
    """
    loop = asyncio.get_running_loop()
    link = L2Link(up, down, seed=seed)
    socks = {"a": _packet_socket(a), "b": _packet_socket(b)}
    try:
        timer: _TimerFd | None = _TimerFd()
    except OSError:
        timer = None
    handle: asyncio.TimerHandle | None = None
    armed: list[float | None] = [None]
    send_errors = [0]
    stamped = [0]  # frames timed by the kernel's stamp (the others by loop.time() at the read)
    stop = asyncio.Event()

    def flush() -> None:
        nonlocal handle
        for port, frame, hdr in link.due(loop.time()):
            try:
                socks[port].send(hdr + frame)
            except OSError:  # ENOBUFS / EAGAIN: a full device queue drops, as a NIC would
                send_errors[0] += 1
        when = link.next_deadline()
        if when == armed[0]:
            return
        armed[0] = when
        if timer is not None:
            timer.arm(when)
        else:
            if handle is not None:
                handle.cancel()
            handle = loop.call_at(when, on_timer) if when is not None else None

    def on_timer() -> None:
        if timer is not None:
            timer.clear()
        armed[0] = None
        flush()

    def on_readable(port: str) -> None:
        s = socks[port]
        now = loop.time()
        # the kernel stamps in CLOCK_REALTIME: its offset to the loop's clock, read now
        offset = time.clock_gettime(time.CLOCK_REALTIME) - now
        for _ in range(64):
            try:
                data, anc, _flags, addr = s.recvmsg(65536 + _VNET_HDR_LEN, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            if addr[2] == _PACKET_OUTGOING or len(data) <= _VNET_HDR_LEN:
                continue
            t = now
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    t = min(now, sec + nsec * 1e-9 - offset)
                    stamped[0] += 1
            link.receive(port, t, data[_VNET_HDR_LEN:], data[:_VNET_HDR_LEN])
        flush()

    for port, s in socks.items():
        loop.add_reader(s.fileno(), on_readable, port)
    if timer is not None:
        loop.add_reader(timer.fd, on_timer)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sched = _realtime() if realtime else "other"
    print("ready", file=out, flush=True)
    cpu0, t0 = _cpu(), loop.time()
    try:
        await stop.wait()
    finally:
        for s in socks.values():
            loop.remove_reader(s.fileno())
            s.close()
        if timer is not None:
            loop.remove_reader(timer.fd)
            timer.close()
        if handle is not None:
            handle.cancel()
    report = {"up": link.stats["a"].to_dict(), "down": link.stats["b"].to_dict(), "send_errors": send_errors[0], "kernel_stamps": stamped[0],
              "waiting": len(link), "cpu_s": _cpu() - cpu0, "wall_s": loop.time() - t0,
              "timer": "timerfd" if timer is not None else "call_at", "sched": sched}
    print(json.dumps(report), file=out, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m voicelab.net.l2forward --a IF --b IF --up JSON --down JSON --seed N``."""
    p = argparse.ArgumentParser(prog="python -m voicelab.net.l2forward",
                                description="forward frames between two interfaces through the lab's channel models")
    p.add_argument("--a", required=True, help="interface of port a (frames read here leave on b via --up)")
    p.add_argument("--b", required=True, help="interface of port b (frames read here leave on a via --down)")
    p.add_argument("--up", default="{}", help="ChannelConfig of a -> b, as JSON")
    p.add_argument("--down", default="{}", help="ChannelConfig of b -> a, as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-realtime", action="store_true", help="stay SCHED_OTHER (default: SCHED_FIFO 10 when allowed)")
    args = p.parse_args(argv)
    try:
        up = ChannelConfig.from_dict(json.loads(args.up))
        down = ChannelConfig.from_dict(json.loads(args.down))
        asyncio.run(run(args.a, args.b, up, down, args.seed, realtime=not args.no_realtime))
    except (VoicelabError, ValueError) as exc:
        print(f"l2forward: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"l2forward: cannot forward between {args.a} and {args.b}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
