"""RTP pieces shared by the offline simulator and the live stacks (sans-IO).

- :mod:`voicelab.rtp.packet`: :class:`RtpPacket` (``parse`` / ``bytes()``),
  :data:`RTP_HEADER_BYTES`, :func:`overhead_bytes`.
- :mod:`voicelab.rtp.packetizer`: :class:`Packetizer` (sequence numbers, timestamps, DTX).
- :mod:`voicelab.rtp.jitterbuffer`: :class:`FixedJitterBuffer`,
  :class:`AdaptiveJitterBuffer`, :class:`Playout`, :class:`JitterBufferStats`.
- :mod:`voicelab.rtp.rtcp`: RTCP packets (SR, RR, SDES, BYE, APP), compound packets,
  NTP time, round-trip time, the RFC 3550 transmission interval.
- :mod:`voicelab.rtp.dtmf`: RFC 4733 telephone events, sender and receiver.
- :mod:`voicelab.rtp.srtp`: SRTP/SRTCP via pylibsrtp, keyed from SDES.
- :mod:`voicelab.rtp.session`: :class:`RtpSession`, one media stream's sans-IO core.

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
from .dtmf import DtmfReceived, DtmfReceiver, DtmfSender, TelephoneEvent
from .packet import RTP_HEADER_BYTES, RtpPacket, overhead_bytes
from .packetizer import Packetizer
from .rtcp import (
    App,
    Bye,
    ReceiverReport,
    Sdes,
    SdesChunk,
    SenderReport,
    UnknownRtcp,
    is_rtcp,
    ntp_from_seconds,
    ntp_middle32,
    parse_compound,
    round_trip_time,
    rtcp_interval,
    seconds_from_ntp,
    serialize_compound,
)
from .rtcp import ReportBlock as RtcpReportBlock
from .session import (
    ByeReceived,
    RemoteAddressLatched,
    RemoteReportReceived,
    RtcpReceived,
    RtpReceived,
    RtpSession,
    SessionStats,
    SsrcChanged,
)
from .srtp import SrtpAuthError, SrtpContext, SrtpError, SrtpReplayError, srtp_overhead_bytes

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
    "SenderReport",
    "ReceiverReport",
    "RtcpReportBlock",
    "Sdes",
    "SdesChunk",
    "Bye",
    "App",
    "UnknownRtcp",
    "parse_compound",
    "serialize_compound",
    "is_rtcp",
    "ntp_from_seconds",
    "seconds_from_ntp",
    "ntp_middle32",
    "round_trip_time",
    "rtcp_interval",
    "TelephoneEvent",
    "DtmfSender",
    "DtmfReceiver",
    "DtmfReceived",
    "SrtpContext",
    "SrtpError",
    "SrtpAuthError",
    "SrtpReplayError",
    "srtp_overhead_bytes",
    "RtpSession",
    "SessionStats",
    "RtpReceived",
    "RtcpReceived",
    "RemoteReportReceived",
    "SsrcChanged",
    "RemoteAddressLatched",
    "ByeReceived",
]
