"""RTP pieces shared by the offline simulator and the live stacks (sans-IO).

- :mod:`voicelab.rtp.packet`: :class:`RtpPacket` (``parse`` / ``bytes()``),
  :data:`RTP_HEADER_BYTES`, :func:`overhead_bytes`.
- :mod:`voicelab.rtp.packetizer`: :class:`Packetizer` (sequence numbers, timestamps, DTX).
- :mod:`voicelab.rtp.jitterbuffer`: :class:`FixedJitterBuffer`,
  :class:`AdaptiveJitterBuffer`, :class:`Playout`, :class:`JitterBufferStats`.

Nothing here imports ``asyncio``, ``socket``, ``time`` or ``random``.
"""

from __future__ import annotations

from .jitterbuffer import (
    AdaptiveJitterBuffer,
    FixedJitterBuffer,
    JitterBuffer,
    JitterBufferStats,
    Playout,
)
from .packet import RTP_HEADER_BYTES, RtpPacket, overhead_bytes
from .packetizer import Packetizer

__all__ = [
    "RtpPacket",
    "RTP_HEADER_BYTES",
    "overhead_bytes",
    "Packetizer",
    "Playout",
    "JitterBufferStats",
    "JitterBuffer",
    "FixedJitterBuffer",
    "AdaptiveJitterBuffer",
]
