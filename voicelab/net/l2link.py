"""A two-port layer-2 link as a sans-IO model: Ethernet frames in at ``now``, frames out at their time.

The namespace chain (:mod:`voicelab.net.netns_chain`) impairs a link with the lab's own
channel models by forwarding its frames in userspace (:mod:`voicelab.net.l2forward`, the
asyncio adapter). This is the decision core of that forwarder::

    link = L2Link(ChannelConfig(delay_ms=20), ChannelConfig(loss_rate=0.1), seed=1)
    link.receive("a", now, frame)        # a frame read on port a, leaving on port b
    link.next_deadline()                 # when the next frame is due (s), or None
    link.due(now)                        # [(out port, frame, tag), ...] in delivery order

- A frame read on port ``"a"`` leaves on ``"b"`` through the ``up`` channel; one read on
  ``"b"`` leaves on ``"a"`` through ``down``. Each direction is one
  :class:`~voicelab.net.channel.Channel` (delay, jitter with or without reordering,
  Bernoulli / Gilbert-Elliott / trace loss, capacity and drop-tail queue, duplication),
  the same model the in-process vnet and the simulator use, seeded the same way.
- Only IP frames (IPv4 or IPv6, optionally behind one 802.1Q tag) meet the channel; its
  packet ordinals count IP frames only. Other frames (ARP) pass at once, unimpaired, so
  neighbour discovery never eats into a loss trace.
- The size the capacity model sees is the whole Ethernet frame (as netem's ``rate``).
- Frames due at the same time leave in the order they were decided (a heap keyed by time,
  then arrival ordinal), so ``reorder=False`` keeps the order on the wire too.

It reads no clock and does no I/O.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError
from .channel import Channel, ChannelConfig

__all__ = ["L2Link", "L2LinkStats", "is_ip_frame", "PORTS"]

#: The two ports, and where a frame read on each leaves.
PORTS = {"a": "b", "b": "a"}
_IP_TYPES = (b"\x08\x00", b"\x86\xdd")


def is_ip_frame(frame: bytes) -> bool:
    """Whether an Ethernet frame carries IPv4 or IPv6 (directly or behind one 802.1Q tag)."""
    et = frame[12:14]
    if et in (b"\x81\x00", b"\x88\xa8"):
        et = frame[16:18]
    return et in _IP_TYPES


@dataclass
class L2LinkStats:
    """Counters of one direction of an :class:`L2Link` (frames).

    Attributes
    ----------
    ip_frames : int
        IP frames handed to the channel (its packet ordinals run 0 .. ip_frames - 1).
    other_frames : int
        Non-IP frames (ARP ...) passed through unimpaired.
    lost : list of int
        Ordinals of the IP frames the channel dropped (loss model or queue).
    delivered : int
        Frames handed out by :meth:`L2Link.due` (duplicates counted twice).
    """

    ip_frames: int = 0
    other_frames: int = 0
    lost: list[int] = field(default_factory=list)
    delivered: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"ip_frames": self.ip_frames, "other_frames": self.other_frames, "lost": list(self.lost),
                "delivered": self.delivered}


class L2Link:
    """Two ports, one :class:`~voicelab.net.channel.Channel` per direction.

    Parameters
    ----------
    up : ChannelConfig
        Port ``a`` -> port ``b``.
    down : ChannelConfig
        Port ``b`` -> port ``a``.
    seed : int or numpy.random.SeedSequence
        Split into the two directions' seeds (``SeedSequence.spawn(2)``, as the vnet's
        links do): the same seed and the same frames give the same fates.

    Raises
    ------
    ParameterError
        A config that is not a :class:`ChannelConfig`, a negative seed.
    """

    def __init__(self, up: ChannelConfig, down: ChannelConfig, *, seed: int | np.random.SeedSequence = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
            raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")
        if not isinstance(seed, np.random.SeedSequence):
            if seed < 0:
                raise ParameterError(f"seed {seed} is negative: use an integer >= 0")
            seed = np.random.SeedSequence(int(seed))
        s_up, s_down = seed.spawn(2)
        self.channels = {"a": Channel(up, seed=s_up), "b": Channel(down, seed=s_down)}
        self.stats = {"a": L2LinkStats(), "b": L2LinkStats()}
        self._heap: list[tuple[float, int, str, bytes, Any]] = []
        self._order = itertools.count()
        self._last_now = -float("inf")

    def receive(self, port: str, now: float, frame: bytes, tag: Any = None) -> None:
        """A frame read on ``port`` at ``now`` (s); it leaves on the other port when due.

        Parameters
        ----------
        port : {"a", "b"}
        now : float
            Time it was read, s (nondecreasing over calls).
        frame : bytes
            The Ethernet frame.
        tag : any
            Carried along unchanged and handed back by :meth:`due` (the adapter's
            per-frame metadata, e.g. a virtio-net header).
        """
        if port not in PORTS:
            raise ParameterError(f"port must be 'a' or 'b', got {port!r}")
        now = max(float(now), self._last_now)  # two sockets' reads may interleave by a hair
        self._last_now = now
        st = self.stats[port]
        out = PORTS[port]
        if not is_ip_frame(frame):
            st.other_frames += 1
            heapq.heappush(self._heap, (now, next(self._order), out, frame, tag))
            return
        ch = self.channels[port]
        arrivals = ch.transmit(now, len(frame))
        fate = ch.fates.pop()  # the forwarder runs for a whole call: keep counters, not records
        if fate.lost:
            st.lost.append(fate.index)
        st.ip_frames += 1
        for t in arrivals:
            heapq.heappush(self._heap, (t, next(self._order), out, frame, tag))

    def next_deadline(self) -> float | None:
        """When the next frame is due (s), or None when none is waiting."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[tuple[str, bytes, Any]]:
        """The frames due at or before ``now``: ``(out port, frame, tag)`` in delivery order."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, port, frame, tag = heapq.heappop(self._heap)
            self.stats[PORTS[port]].delivered += 1
            out.append((port, frame, tag))
        return out

    def __len__(self) -> int:
        """Frames waiting."""
        return len(self._heap)
