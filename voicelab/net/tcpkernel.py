"""Cross-check of the TCP relay model against Linux TCP: a media-like stream between two namespaces.

The lab's :class:`~voicelab.net.tcprelay.TcpImpairment` turns packet loss into delay the
way TCP does. This module measures what the kernel really does with the same stream:

- two network namespaces ``a`` and ``b`` joined through a bridge
  (:class:`~voicelab.net.netns.NetnsNetwork`, ideal veths: no netem here);
- in ``b``, ``iptables -A INPUT -p tcp --dport PORT ! --syn -m statistic --mode random
  --probability P -j DROP``: random loss of the data direction only (ACKs from ``b`` and
  the handshake are never dropped);
- a Python sender in ``a`` writes one message of ``size`` bytes (a sequence number and
  its send time, padded: 160 bytes of audio plus framing) every ``interval_s`` on each of
  several connections (``TCP_NODELAY``, as asyncio sets it), then reads the kernel's
  counters (``TCP_INFO``: the ``retrans``, ``rtt`` that ``ss -ti`` prints);
- a Python receiver in ``b`` timestamps each complete message;
- control connections (no drops) carry the same stream, written last in each round:
  their delays are the machine's (a process not scheduled, a paused VM), and
  :func:`shape` leaves out the message indices where they were delayed.

Both read ``CLOCK_MONOTONIC``, which network namespaces share, so ``arrival - send`` is a
one-way transit time. The *extra delay* of a message is its transit minus the
connection's smallest transit (the ~0.1 ms veth path plus scheduling), which is what a
loss adds. :func:`model_stream` runs the same stream through the model on a virtual
clock; :func:`shape` summarises either (fraction of messages delayed, median and p99 of
the extra delay), so the two can be compared.

This is an I/O adapter (processes, real time); it needs Linux, root, ``ip`` (Debian
``iproute2``) and ``iptables`` (Debian ``iptables``): see
:func:`voicelab.net.netns.netns_unavailable_reason`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ParameterError, ToolUnavailableError
from .channel import ChannelConfig

__all__ = ["StreamRun", "kernel_stream", "model_stream", "shape"]

_SENDER = r"""
import socket, struct, sys, time, json
dst, ports, seconds, interval, size = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
socks = []
for p in ports:
    s = socket.create_connection((dst, p), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s)
n_msgs = int(round(seconds / interval))
t0 = time.monotonic() + 0.05
pad = bytes(size - 12)
for n in range(n_msgs):
    due = t0 + n * interval
    d = due - time.monotonic()
    if d > 0:
        time.sleep(d)
    for s in socks:
        s.sendall(struct.pack("!Id", n, time.monotonic()) + pad)
time.sleep(1.5)  # let the last losses be repaired before reading the counters
info = []
for s in socks:
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    u32 = struct.unpack_from("=24I", raw, 8)
    info.append({"rto_us": u32[0], "rtt_us": u32[15], "rttvar_us": u32[16], "total_retrans": u32[23]})
    s.shutdown(socket.SHUT_WR)
for s in socks:
    s.settimeout(5)
    try:
        s.recv(1)
    except OSError:
        pass
    s.close()
print(json.dumps(info), flush=True)
"""

_RECEIVER = r"""
import selectors, socket, struct, sys, time, json
addr, ports, size = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], int(sys.argv[3])
sel = selectors.DefaultSelector()
for p in ports:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, p))
    ls.listen(1)
    sel.register(ls, selectors.EVENT_READ, ("listen", p))
print("ready", flush=True)
bufs, out, open_ = {}, {p: [] for p in ports}, 0
done = 0
while done < len(ports):
    for key, _ in sel.select(timeout=60):
        kind, p = key.data
        if kind == "listen":
            c, _ = key.fileobj.accept()
            key.fileobj.close()
            sel.unregister(key.fileobj)
            sel.register(c, selectors.EVENT_READ, ("conn", p))
            bufs[p] = b""
            continue
        data = key.fileobj.recv(65536)
        now = time.monotonic()
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            done += 1
            continue
        b = bufs[p] + data
        while len(b) >= size:
            n, t = struct.unpack_from("!Id", b, 0)
            out[p].append((n, t, now))
            b = b[size:]
        bufs[p] = b
print(json.dumps({str(p): v for p, v in out.items()}), flush=True)
"""


@dataclass
class StreamRun:
    """Per-message extra delays of one or more streams at one loss rate.

    Attributes
    ----------
    loss : float
        Drop probability of each data segment.
    extra_ms : list of numpy.ndarray
        Per connection, per message (in order): transit minus the connection's smallest
        transit, ms.
    retransmissions : int
        Retransmitted segments, summed over connections (kernel: ``tcpi_total_retrans``).
    rtt_ms : float or None
        The kernel's smoothed RTT at the end (mean over connections), ms.
    control_ms : numpy.ndarray or None
        Kernel runs: per message index, the largest extra delay (ms) of the *control*
        connections, which carry the same stream through the same processes with no
        drops. A delay there is the machine's (a sender or receiver process not
        scheduled, softirq work), not TCP's; :func:`shape` leaves out the message
        indices where it exceeds half its threshold. ``None`` for model runs.
    """

    loss: float
    extra_ms: list
    retransmissions: int
    rtt_ms: float | None = None
    control_ms: Any = None

    @property
    def messages(self) -> int:
        """Messages over all connections."""
        return int(sum(len(x) for x in self.extra_ms))


def shape(run: StreamRun, *, delayed_ms: float = 5.0) -> dict[str, float]:
    """The shape of the extra delay: what the cross-check compares.

    Parameters
    ----------
    run : StreamRun
    delayed_ms : float
        A message counts as delayed when its extra delay exceeds this (ms): above the
        scheduling noise of a loaded machine, below the fastest repair (one message
        interval, 20 ms).

    Returns
    -------
    dict
        ``messages``, ``delayed_fraction``, ``delayed_median_ms`` and ``delayed_p90_ms``
        (over delayed messages; NaN when none), ``p99_ms`` and ``max_ms`` (over all
        messages), ``retransmissions_per_message`` (over all messages, counted ones or
        not), and ``stalled_fraction``: the share of message indices left out because
        the run's control connections were delayed by more than ``delayed_ms / 2`` there
        (the machine, not TCP; 0 for model runs). ``messages`` counts those kept.
    """
    if not run.extra_ms:
        raise ParameterError("no messages in this run")
    rows = [np.asarray(v, dtype=float) for v in run.extra_ms]
    total = int(sum(r.size for r in rows))
    keep = None
    if run.control_ms is not None:
        keep = np.asarray(run.control_ms, dtype=float) <= delayed_ms / 2.0
        if any(r.size != keep.size for r in rows):
            raise ParameterError("control_ms must have one value per message index")
        rows = [r[keep] for r in rows]
    x = np.concatenate(rows) if rows else np.zeros(0)
    if x.size == 0:
        raise ParameterError("no messages in this run" if keep is None else "every message index was stalled")
    d = x[x > delayed_ms]
    return {
        "messages": int(x.size),
        "stalled_fraction": float(1.0 - keep.mean()) if keep is not None else 0.0,
        "delayed_fraction": float(d.size / x.size),
        "delayed_median_ms": float(np.median(d)) if d.size else float("nan"),
        "delayed_p90_ms": float(np.percentile(d, 90)) if d.size else float("nan"),
        "p99_ms": float(np.percentile(x, 99)),
        "max_ms": float(x.max()),
        "retransmissions_per_message": run.retransmissions / total,
    }


def model_stream(loss: float, *, seconds: float, connections: int = 1, interval_s: float = 0.020, size: int = 172,
                 delay_ms: float = 0.05, seed: int = 0, **tcp_options: Any) -> StreamRun:
    """The same stream through :class:`~voicelab.net.tcprelay.TcpImpairment` on a virtual clock.

    Parameters
    ----------
    loss : float
        Per-transmission loss probability (Bernoulli, as the ``statistic`` match).
    seconds, interval_s, size, connections
        As :func:`kernel_stream`.
    delay_ms : float
        One-way delay of the path (ms); the veth path is ~0.05 ms.
    seed : int
        Connection ``i`` uses ``SeedSequence([seed, i])``.
    **tcp_options
        Passed to :class:`~voicelab.net.tcprelay.TcpImpairment` (``recovery``, ...).
    """
    from .tcprelay import TcpImpairment

    n = int(round(seconds / interval_s))
    extra, retx = [], 0
    for c in range(connections):
        tcp = TcpImpairment(ChannelConfig(delay_ms=delay_ms, loss_rate=loss), seed=np.random.SeedSequence([seed, c]),
                            **tcp_options)
        out = []
        for k in range(n):
            out += tcp.submit(bytes(size), k * interval_s)
        out += tcp.flush()
        t = np.array([d.transit_s for d in out]) * 1000.0
        extra.append(t - t.min())
        retx += tcp.stats.retransmissions
    return StreamRun(loss, extra, retx)


def kernel_stream(losses: Sequence[float], *, seconds: float, connections: int = 2, interval_s: float = 0.020,
                  size: int = 172, base_port: int = 7000, timeout: float | None = None,
                  control: int = 1) -> list[StreamRun]:
    """Run the stream over Linux TCP between two namespaces, several loss rates at once.

    Parameters
    ----------
    losses : sequence of float
        Drop probabilities in (0, 0.5); each gets ``connections`` connections, all run
        in parallel (one sender and one receiver process).
    seconds : float
        Length of each stream (s).
    connections : int
        Connections per loss rate (more samples in the same time).
    interval_s : float
        Time between messages (0.02: 50 messages/s, as the media stream).
    size : int
        Bytes per message (>= 12): 172 = 160 bytes of audio + 12 of framing.
    base_port : int
        First receiver port.
    timeout : float, optional
        Seconds before the run is abandoned (default ``seconds + 30``).
    control : int
        Control connections without drops (0..8), written last in each round, so that a
        receiver stall which delays a lossy connection's message delays theirs too; their
        delays become :attr:`StreamRun.control_ms`.

    Returns
    -------
    list of StreamRun
        One per loss rate, in order.

    Raises
    ------
    ToolUnavailableError
        No namespaces/iptables here, or a process failed.
    ParameterError
        Bad arguments.
    """
    from .netns import NetnsNetwork

    losses = [float(p) for p in losses]
    if not losses or any(not 0.0 < p < 0.5 for p in losses):
        raise ParameterError(f"losses must be probabilities in (0, 0.5), got {losses!r}")
    if not 1.0 <= float(seconds) <= 600.0 or size < 12 or connections < 1 or not 0 <= control <= 8:
        raise ParameterError("seconds must be 1..600, size >= 12, connections >= 1 and control 0..8")
    timeout = float(seconds) + 30.0 if timeout is None else float(timeout)
    ports = {p: [base_port + i * connections + c for c in range(connections)] for i, p in enumerate(losses)}
    control_ports = [base_port + len(losses) * connections + c for c in range(control)]  # no rule: no drops
    all_ports = ",".join(str(x) for x in [*(x for v in ports.values() for x in v), *control_ports])
    topo = {"hosts": {"a": {"address": "192.0.2.1"}, "b": {"address": "192.0.2.2"}}}
    with NetnsNetwork(topo) as net:
        rules = ["*filter"]
        for p, plist in ports.items():
            for port in plist:
                rules.append(f"-A INPUT -p tcp --dport {port} ! --syn -m statistic --mode random --probability {p:.6f} -j DROP")
        rules.append("COMMIT")
        r = net.exec("b", ["iptables-restore"], input=("\n".join(rules) + "\n").encode())
        if r.returncode != 0:
            raise ToolUnavailableError(f"iptables statistic match does not load: {r.stderr.decode(errors='replace').strip()[:200]}")
        recv = net.popen("b", [sys.executable, "-u", "-c", _RECEIVER, "192.0.2.2", all_ports, str(size)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = recv.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != b"ready":
            raise ToolUnavailableError(f"receiver did not start: {line!r} {recv.stderr.read()[:300]!r}")  # type: ignore[union-attr]
        send = net.exec("a", [sys.executable, "-u", "-c", _SENDER, "192.0.2.2", all_ports, str(seconds),
                              str(interval_s), str(size)], timeout=timeout)
        if send.returncode != 0:
            raise ToolUnavailableError(f"sender failed: {send.stderr.decode(errors='replace').strip()[-300:]}")
        try:
            out, err = recv.communicate(timeout=30.0)
        except subprocess.TimeoutExpired:
            raise ToolUnavailableError("receiver did not finish") from None
        if recv.returncode != 0:
            raise ToolUnavailableError(f"receiver failed: {err.decode(errors='replace').strip()[-300:]}")
    info = json.loads(send.stdout.decode().strip().splitlines()[-1])
    got = json.loads(out.decode().strip().splitlines()[-1])
    n_expected = int(round(float(seconds) / interval_s))

    def extra_of(port: int) -> np.ndarray:
        rows = got[str(port)]
        if len(rows) != n_expected or [r[0] for r in rows] != list(range(n_expected)):
            raise ToolUnavailableError(f"port {port}: {len(rows)} of {n_expected} messages, or out of order")
        t = np.array([(r[2] - r[1]) * 1000.0 for r in rows])
        return t - t.min()

    control_ms = np.max([extra_of(port) for port in control_ports], axis=0) if control_ports else None
    runs, i = [], 0
    for p, plist in ports.items():
        extra, retx, rtts = [], 0, []
        for port in plist:
            extra.append(extra_of(port))
            retx += info[i]["total_retrans"]
            rtts.append(info[i]["rtt_us"] / 1000.0)
            i += 1
        runs.append(StreamRun(p, extra, retx, float(np.mean(rtts)), control_ms))
    return runs
