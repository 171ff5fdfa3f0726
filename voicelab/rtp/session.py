"""One RTP media stream with its RTCP, as a sans-IO object (RFC 3550, 5761, 3711, 4733).

:class:`RtpSession` sends one SSRC and receives one remote source. It does no I/O and
reads no clock, in the style of aioquic's connection::

    session = RtpSession(payload_type=0, clock_rate=8000, timestamp_increment=160,
                         cname="agent@lab", epoch_offset=ntp_epoch_offset, rng=1)
    session.start(now)
    datagram = session.send_frame(payload, now)        # -> send to session.remote_addr
    events = session.receive(data, now, addr)          # RtpReceived, RemoteReportReceived, ...
    for datagram in session.handle_timer(now):         # RTCP SR/RR + SDES when due
        ...                                            # -> send to session.remote_rtcp_addr
    deadline = session.next_timer()                    # re-arm one timer at this time

Clock: ``now`` is seconds on the caller's clock (``loop.time()`` or a virtual clock).
NTP times in SR packets are ``now + epoch_offset`` (seconds since 1900), so pass
``epoch_offset = wall-clock NTP seconds at some instant - now at that instant``.

RTCP timing follows RFC 3550 6.3 with :func:`~voicelab.rtp.rtcp.rtcp_interval` and
forward reconsideration (A.7 ``OnExpire``): the first report goes out after a randomised
half-minimum interval, then about every 5 s (or the reduced minimum). Reports are SR
when we sent RTP in the last two intervals, RR otherwise, each followed by SDES CNAME.

Round-trip time: a report block about our SSRC echoes (LSR) the middle 32 bits of the
NTP time of our last SR and the time the peer held it (DLSR). We keep the ``now`` of our
recent SRs, so ``rtt = arrival - our SR send time - DLSR`` is exact up to the DLSR's
1/65536 s resolution; :func:`~voicelab.rtp.rtcp.round_trip_time` is used as a fallback.

RTP/RTCP demultiplexing: with ``rtcp_mux`` (RFC 5761) by the second octet
(:func:`~voicelab.rtp.rtcp.is_rtcp`), else by the ``kind`` the caller passes (which socket
the datagram arrived on). SRTP/SRTCP is applied when an :class:`~voicelab.rtp.srtp.SrtpContext`
is given; packets failing authentication or replay checks are dropped and counted in
:attr:`SessionStats.srtp_auth_failures` / :attr:`SessionStats.srtp_replays`.

Symmetric RTP ("comedia") and its security trade-off
-----------------------------------------------------
Behind a NAT, the address in the peer's SDP is often private and useless; the only
address that reaches the peer is the source address of its packets. So we *latch*:
``remote_addr`` (and ``remote_rtcp_addr``) follow the source of the first valid packet
(it parses, has an expected payload type, and passes SRTP authentication when SRTP is
on). With ``latching=False`` only packets from the SDP host (any port) are accepted and
latched, which copes with NATs that rewrite ports; with ``latching=True`` the first
valid packet from *any* address wins, which is what NATed SIP phones need without ICE.
Once latched, packets from other addresses are dropped and counted
(:attr:`SessionStats.foreign_source_drops`) until :meth:`RtpSession.unlatch`.

The trade-off: an attacker who can guess the port and send a plausible packet before the
real peer (an "RTP bleed"/hijack race) captures the outgoing media and can inject audio.
SRTP closes this hole (forged packets fail authentication before they can latch);
without it, prefer ``latching=False`` when the peer is not behind a NAT, and unlatch only
on signalled changes (re-INVITE).

Remote SSRC: the first valid packet's SSRC is the remote source. A packet from another
SSRC is dropped (:attr:`SessionStats.foreign_ssrc_drops`) unless two sequential packets
of the new SSRC arrive, in which case the session switches (fresh receiver statistics) and
reports :class:`SsrcChanged` (e.g. after a transfer or a B2BUA switching legs).

Telephone events: packets of ``dtmf_payload_type`` go to a
:class:`~voicelab.rtp.dtmf.DtmfReceiver` and come out as
:class:`~voicelab.rtp.dtmf.DtmfReceived`; they count in the RFC 3550 statistics (same
SSRC and sequence space) but are not reported as :class:`RtpReceived`.
:meth:`RtpSession.send_dtmf` sends digits in place of the next audio frames.

Why our own: aiortc's RTP sender/receiver are tied to its asyncio transports and to
WebRTC (ICE, DTLS-SRTP); SIP calls need plain RTP/SRTP-SDES with latching.
"""

from __future__ import annotations

import math
import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from ..errors import ParameterError, RemoteProtocolError
from ..metrics.rtpstats import ReceiverStats
from .dtmf import DtmfPacket, DtmfReceived, DtmfReceiver, DtmfSender
from .packet import RtpPacket
from .packetizer import Packetizer
from .rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SenderReport,
    is_rtcp,
    ntp_from_seconds,
    ntp_middle32,
    parse_compound,
    round_trip_time,
    rtcp_interval,
)
from .srtp import SrtpAuthError, SrtpContext, SrtpError, SrtpReplayError

__all__ = [
    "RtpSession",
    "SessionStats",
    "RtpReceived",
    "RtcpReceived",
    "RemoteReportReceived",
    "SsrcChanged",
    "RemoteAddressLatched",
    "ByeReceived",
    "DtmfReceived",
    "SessionEvent",
]

#: IPv4 + UDP header bytes counted in the average RTCP size (RFC 3550 6.2).
_LOWER_LAYER_BYTES = 28
_RTCP_FRACTION = 0.05


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class RtpReceived:
    """A valid media RTP packet arrived from the remote source.

    Attributes
    ----------
    packet : RtpPacket
        The packet (after SRTP unprotect).
    arrival : float
        ``now`` at arrival, seconds.
    """

    packet: RtpPacket
    arrival: float


@dataclass(frozen=True)
class RtcpReceived:
    """A valid compound RTCP packet arrived.

    Attributes
    ----------
    packets : tuple
        Its RTCP packets (:mod:`voicelab.rtp.rtcp` classes).
    arrival : float
        ``now`` at arrival, seconds.
    """

    packets: tuple
    arrival: float


@dataclass(frozen=True)
class RemoteReportReceived:
    """The peer reported on our stream (a report block about our SSRC in an SR or RR).

    Attributes
    ----------
    ssrc : int
        SSRC of the reporting peer.
    rtt_s : float or None
        Round-trip time in seconds, None when the peer has not received an SR of ours.
    fraction_lost : int
        Loss in the peer's last interval, 8-bit fixed point (0..255, /256).
    fraction : float
        The same as a fraction 0..1.
    cumulative_lost : int
        Packets of ours lost since the start (signed).
    highest_sequence : int
        Extended highest sequence number the peer received.
    jitter_ms : float
        Interarrival jitter the peer measured on our stream, ms.
    arrival : float
        ``now`` at arrival, seconds.
    """

    ssrc: int
    rtt_s: float | None
    fraction_lost: int
    fraction: float
    cumulative_lost: int
    highest_sequence: int
    jitter_ms: float
    arrival: float


@dataclass(frozen=True)
class SsrcChanged:
    """The remote source switched to a new SSRC (statistics restart).

    Attributes
    ----------
    old_ssrc, new_ssrc : int
        Previous and new remote SSRC.
    arrival : float
        ``now`` of the packet that confirmed the switch, seconds.
    """

    old_ssrc: int
    new_ssrc: int
    arrival: float


@dataclass(frozen=True)
class RemoteAddressLatched:
    """Symmetric RTP: the address we send to now follows the peer's source address.

    Attributes
    ----------
    kind : {"rtp", "rtcp"}
        Which address changed.
    old, new : tuple or None
        Previous and new ``(host, port)``.
    arrival : float
        ``now`` of the packet, seconds.
    """

    kind: str
    old: Any
    new: Any
    arrival: float


@dataclass(frozen=True)
class ByeReceived:
    """The peer said goodbye in RTCP (RFC 3550 6.6).

    Attributes
    ----------
    ssrcs : tuple of int
        Sources leaving.
    reason : str or None
        Reason text, if any.
    arrival : float
        ``now`` at arrival, seconds.
    """

    ssrcs: tuple[int, ...]
    reason: str | None
    arrival: float


SessionEvent = Union[
    RtpReceived, RtcpReceived, RemoteReportReceived, SsrcChanged, RemoteAddressLatched, ByeReceived, DtmfReceived
]


@dataclass
class SessionStats:
    """Counters of an :class:`RtpSession` (packets unless stated).

    Attributes
    ----------
    packets_sent, octets_sent : int
        RTP packets and payload octets sent (the SR counts).
    rtcp_sent, rtcp_received : int
        Compound RTCP packets sent / accepted.
    packets_received : int
        RTP packets accepted from the remote source (media and telephone events).
    malformed : int
        Datagrams that failed to parse (RTP or RTCP).
    srtp_auth_failures, srtp_replays : int
        SRTP/SRTCP packets dropped for a bad tag / as replays.
    foreign_source_drops : int
        Packets dropped because they came from an address other than the latched one
        (or, with ``latching=False``, from another host than the SDP one).
    foreign_ssrc_drops : int
        RTP packets from an SSRC other than the remote source's.
    unexpected_payload_drops : int
        RTP packets with a payload type we do not accept.
    rtt_s : float or None
        Last round-trip time measured, seconds.
    rtt_samples : list of float
        Every round-trip time measured, seconds.
    """

    packets_sent: int = 0
    octets_sent: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    packets_received: int = 0
    malformed: int = 0
    srtp_auth_failures: int = 0
    srtp_replays: int = 0
    foreign_source_drops: int = 0
    foreign_ssrc_drops: int = 0
    unexpected_payload_drops: int = 0
    rtt_s: float | None = None
    rtt_samples: list = field(default_factory=list)


def _finite(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a time in seconds, got {value!r}") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name} must be finite seconds, got {value!r}")
    return v


class RtpSession:
    """Sans-IO RTP/RTCP endpoint for one media stream (see the module docstring).

    Parameters
    ----------
    payload_type : int
        Payload type of the media we send (0..127).
    clock_rate : int
        RTP clock rate in Hz of the media, both directions (8000 for PCMU/G.722).
    timestamp_increment : int
        Timestamp units per frame sent (160 for 20 ms at 8000 Hz).
    cname : str
        Our RTCP CNAME (RFC 7022: a per-call random string is fine).
    epoch_offset : float
        Seconds to add to ``now`` to get NTP time (seconds since 1900-01-01).
    rng : numpy.random.Generator or int, optional
        Randomness for the SSRC, initial sequence number and timestamp, and the RTCP
        interval. An int is a seed. None takes OS entropy (not reproducible).
    ssrc : int, optional
        Fixed SSRC instead of a random one.
    remote_addr : tuple, optional
        ``(host, port)`` of the peer's RTP from SDP.
    remote_rtcp_addr : tuple, optional
        Peer's RTCP address; default: ``remote_addr`` with rtcp-mux, else port + 1.
    rtcp_mux : bool, optional
        RTP and RTCP share one port (RFC 5761).
    latching : bool, optional
        Latch onto the first valid source (see the module docstring): from any address,
        or only from ``latch_hosts``.
    latch_hosts : iterable of str, optional
        With ``latching``, the hosts media may come from before latching (e.g. the
        host in the peer's SDP and the signalling peer's address); media from other
        hosts is dropped and counted in ``foreign_source_drops`` instead of moving our
        destination ("RTP bleed"). None (default): any host (comedia).
    source_filter : bool, optional
        Without latching, accept media only from the host of ``remote_addr`` (default
        True). False accepts any source while still sending to ``remote_addr``: a plain
        endpoint behind which a NAT rewrote the caller's address still hears it.
    srtp : SrtpContext, optional
        Protect what we send and verify what we receive.
    accepted_payload_types : iterable of int, optional
        Media payload types accepted from the peer; default: ``{payload_type}``.
    dtmf_payload_type : int, optional
        Payload type of ``telephone-event`` (e.g. 101); None to treat it as unexpected.
    dtmf_clock_rate : int, optional
        Clock rate of the telephone-event format (default ``clock_rate``).
    bitrate : float, optional
        Session bandwidth in bit/s (RFC 3550 6.2); RTCP gets 5 % of it.
    reduced_minimum : bool, optional
        Use the reduced minimum RTCP interval (360 / kbit/s) instead of 5 s.

    Raises
    ------
    ParameterError
        On out-of-range values.
    """

    def __init__(
        self,
        *,
        payload_type: int,
        clock_rate: int,
        timestamp_increment: int,
        cname: str,
        epoch_offset: float,
        rng: np.random.Generator | int | None = None,
        ssrc: int | None = None,
        remote_addr: tuple | None = None,
        remote_rtcp_addr: tuple | None = None,
        rtcp_mux: bool = True,
        latching: bool = False,
        source_filter: bool = True,
        srtp: SrtpContext | None = None,
        accepted_payload_types=None,
        latch_hosts=None,
        dtmf_payload_type: int | None = None,
        dtmf_clock_rate: int | None = None,
        bitrate: float = 64000.0,
        reduced_minimum: bool = False,
    ) -> None:
        if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
            if rng is not None and rng < 0:
                raise ParameterError(f"rng seed {rng} is negative: use an integer >= 0")
            rng = np.random.default_rng(rng)
        elif not isinstance(rng, np.random.Generator):
            raise ParameterError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")
        self._rng = rng
        self.packetizer = Packetizer(
            payload_type=payload_type, clock_rate=clock_rate, timestamp_increment=timestamp_increment, ssrc=ssrc, rng=rng
        )
        self.ssrc = self.packetizer.ssrc
        self.clock_rate = self.packetizer.clock_rate
        if not isinstance(cname, str) or not cname or len(cname.encode("utf-8")) > 255:
            raise ParameterError(f"cname must be a non-empty string of at most 255 UTF-8 bytes, got {cname!r}")
        self.cname = cname
        self.epoch_offset = _finite(epoch_offset, "epoch_offset")
        if srtp is not None and not isinstance(srtp, SrtpContext):
            raise ParameterError(f"srtp must be an SrtpContext or None, got {type(srtp).__name__}")
        self.srtp = srtp
        self.rtcp_mux = bool(rtcp_mux)
        self.latching = bool(latching)
        self.remote_addr = remote_addr
        if remote_rtcp_addr is None and remote_addr is not None:
            remote_rtcp_addr = remote_addr if self.rtcp_mux else (remote_addr[0], remote_addr[1] + 1)
        self.remote_rtcp_addr = remote_rtcp_addr
        self._expected_host = None if remote_addr is None or not source_filter else remote_addr[0]
        self._latched = {"rtp": False, "rtcp": False}
        if latch_hosts is not None and (isinstance(latch_hosts, str) or not all(isinstance(h, str) for h in latch_hosts)):
            raise ParameterError(f"latch_hosts must be an iterable of host strings or None, got {latch_hosts!r}")
        self.latch_hosts = None if latch_hosts is None else frozenset(h.strip("[]").lower() for h in latch_hosts)
        accepted = {payload_type} if accepted_payload_types is None else set(accepted_payload_types)
        for pt in accepted:
            if isinstance(pt, bool) or not isinstance(pt, (int, np.integer)) or not 0 <= pt <= 127:
                raise ParameterError(f"accepted payload types must be integers 0..127, got {pt!r}")
        self.accepted_payload_types = frozenset(int(p) for p in accepted)
        if dtmf_payload_type is not None and (
            isinstance(dtmf_payload_type, bool) or not isinstance(dtmf_payload_type, int) or not 0 <= dtmf_payload_type <= 127
        ):
            raise ParameterError(f"dtmf_payload_type must be an integer 0..127 or None, got {dtmf_payload_type!r}")
        self.dtmf_payload_type = dtmf_payload_type
        self._dtmf = DtmfReceiver(clock_rate=dtmf_clock_rate or self.clock_rate)
        try:
            bitrate = float(bitrate)
        except (TypeError, ValueError):
            raise ParameterError(f"bitrate must be a positive number of bit/s, got {bitrate!r}") from None
        if not math.isfinite(bitrate) or bitrate <= 0:
            raise ParameterError(f"bitrate must be a positive number of bit/s, got {bitrate!r}")
        self.rtcp_bw = _RTCP_FRACTION * bitrate / 8.0  # octets/s
        self.reduced_minimum = bool(reduced_minimum)
        self.stats = SessionStats()

        # receive side
        self.remote_ssrc: int | None = None
        self.receiver_stats: ReceiverStats | None = None
        self._candidate: tuple[int, int, int] | None = None  # (ssrc, last seq, sequential count)
        self._remote_sr: tuple[int, float] | None = None  # (middle32 of its NTP, our arrival now)
        self._remote_sent_intervals = deque([False, False], maxlen=2)
        # send side
        self._last_send: tuple[float, int] | None = None  # (now, RTP timestamp)
        self._we_sent_intervals = deque([False, False], maxlen=2)
        self._our_srs: dict[int, float] = {}
        self._our_sr_order: deque[int] = deque()
        # RTCP timing
        self._started = False
        self._tp = 0.0
        self._tn: float | None = None
        self._initial = True
        self.avg_rtcp_size = float(28 + 24 + 12 + len(cname.encode("utf-8")) + _LOWER_LAYER_BYTES)
        self._pending: list[SessionEvent] = []
        self._closed = False
        self._dtmf_slots: dict[int, DtmfPacket] | None = None
        self._dtmf_slot = 0

    # ------------------------------------------------------------------ timing
    def start(self, now: float) -> None:
        """Start the RTCP clock at ``now`` (done by the first call taking ``now`` otherwise)."""
        if self._started:
            return
        now = _finite(now, "now")
        self._started = True
        self._tp = now
        self._tn = now + self._interval()

    def _members_senders(self) -> tuple[int, int, bool]:
        we_sent = any(self._we_sent_intervals)
        remote_sent = any(self._remote_sent_intervals)
        members = 1 + (self.remote_ssrc is not None)
        return members, int(we_sent) + int(remote_sent), we_sent

    def _interval(self) -> float:
        members, senders, we_sent = self._members_senders()
        return rtcp_interval(
            members, senders, self.rtcp_bw, we_sent, self.avg_rtcp_size, self._initial, self._rng,
            reduced_minimum=self.reduced_minimum,
        )

    def next_timer(self) -> float | None:
        """Earliest time (seconds) :meth:`handle_timer` has work; None before :meth:`start` or after :meth:`close`."""
        if not self._started or self._closed:
            return None
        t = self._tn
        d = self._dtmf.next_timer()
        return t if d is None or (t is not None and t <= d) else d

    def handle_timer(self, now: float) -> list[bytes]:
        """Do what is due at ``now``: RTCP reports (RFC 3550 6.3.6), DTMF timeouts.

        Returns
        -------
        list of bytes
            Datagrams to send to :attr:`remote_rtcp_addr` (zero or one compound RTCP
            packet). Events produced by timers (a DTMF event closed by timeout) are kept
            for :meth:`pop_events` and the next :meth:`receive`.
        """
        now = _finite(now, "now")
        self.start(now)
        if self._closed:
            return []
        self._pending.extend(self._dtmf.expire(now))
        out: list[bytes] = []
        if self._tn is not None and now >= self._tn:
            tn = self._tp + self._interval()  # forward reconsideration (A.7 OnExpire)
            if tn <= now:
                out.append(self._send_report(now))
                self._tp = now
                self._initial = False
                self._tn = now + self._interval()
            else:
                self._tn = tn
        return out

    def media_steady(self) -> bool:
        """True when nothing pending changes the form or destination of the next datagrams.

        No DTMF event queued (it would replace frames) and, for a latching session, the RTP
        source already latched (the remote address will not move). The native media engine
        (:mod:`voicelab.rtp.native`) only plays such a session's stream.
        """
        return self._dtmf_slots is None and (not self.latching or self._latched["rtp"])

    def pop_events(self) -> list[SessionEvent]:
        """Events produced by :meth:`handle_timer` since the last call (and clear them)."""
        events, self._pending = self._pending, []
        return events

    # ------------------------------------------------------------------ sending
    def send_frame(self, payload: bytes, now: float, *, marker: bool = False, frames_skipped: int = 0) -> bytes:
        """One media frame as an RTP (or SRTP) datagram, to send to :attr:`remote_addr`.

        Parameters
        ----------
        payload : bytes
            Encoded frame.
        now : float
            Sending time, seconds.
        marker, frames_skipped
            As in :meth:`voicelab.rtp.Packetizer.packetize`.

        Returns
        -------
        bytes
        """
        now = _finite(now, "now")
        self.start(now)
        data, timestamp, octets = self.prepare_frame(payload, marker=marker, frames_skipped=frames_skipped)
        self.frame_sent(now, timestamp, octets)
        return data

    def prepare_frame(self, payload: bytes, *, marker: bool = False, frames_skipped: int = 0) -> tuple[bytes, int, int]:
        """The next frame's RTP (or SRTP) datagram, built ahead of its send time.

        :meth:`send_frame` is this plus :meth:`frame_sent`. A paced sender may build the
        datagram early (when the frame is ready) and only hand it to the socket when it
        is due, then call :meth:`frame_sent`; the RTCP counters and the RTP/NTP mapping
        of sender reports count it from then on. Datagrams must be sent in the order
        they were prepared (sequence numbers, SRTP index). A DTMF event due in this slot
        replaces the frame, as in :meth:`send_frame`.

        Returns
        -------
        (bytes, int, int)
            The datagram, its RTP timestamp and its payload octets.
        """
        event = self._next_dtmf_packet()
        if event is None and type(frames_skipped) is int and frames_skipped == 0 and type(payload) is bytes:  # the usual frame: no object
            data, ts = self.packetizer.packetize_bytes(payload, marker=marker)
            octets = len(payload)
        else:
            if event is not None:
                # One telephone-event packet replaces this frame: it takes the frame's sequence
                # number and advances the RTP clock by one frame, but carries the event's
                # timestamp (RFC 4733 2.5.1), so the audio timeline stays exact.
                packet = self.packetizer.packetize(bytes(event.payload), marker=event.marker)
                packet = dataclasses.replace(packet, payload_type=self.dtmf_payload_type, timestamp=event.timestamp)
            else:
                packet = self.packetizer.packetize(payload, marker=marker, frames_skipped=frames_skipped)
            data, ts, octets = bytes(packet), packet.timestamp, len(packet.payload)
        return (self.srtp.protect(data) if self.srtp is not None else data), ts, octets

    def frame_sent(self, now: float, timestamp: int, octets: int) -> None:
        """Count a datagram from :meth:`prepare_frame` as sent at ``now`` (seconds)."""
        self._last_send = (now, timestamp)
        self._we_sent_intervals[-1] = True
        self.stats.packets_sent += 1
        self.stats.octets_sent += octets

    def send_dtmf(self, digits: str, *, duration_ms: float = 100.0, gap_ms: float = 60.0, volume: int = 10) -> None:
        """Send DTMF digits as RFC 4733 telephone events in place of the next frames.

        From the next :meth:`send_frame` call on, each frame slot that has a
        telephone-event packet due sends it instead of the audio payload (the audio is
        muted during the tones, RFC 4733 2.5.1.2); slots in the gaps between digits carry
        audio as usual. Updates go out once per frame (the frame time is the update
        interval), the end packet three times.

        Parameters
        ----------
        digits : str
            DTMF characters (``0-9*#A-D``).
        duration_ms : float, optional
            Tone duration per digit, ms.
        gap_ms : float, optional
            Pause between digits, ms.
        volume : int, optional
            Power level in -dBm0 (0..63).

        Raises
        ------
        ParameterError
            If the session has no ``dtmf_payload_type``, its telephone-event clock rate
            differs from the media clock rate, DTMF is already being sent, or a
            parameter is out of range.

        Notes
        -----
        Events longer than 0xFFFF timestamp units (8.19 s at 8 kHz) are segmented; at a
        segment boundary only the three end-of-segment packets are sent in their slots,
        so the new segment's first updates are skipped (receivers cope: it is the same as
        losing them).
        """
        if self.dtmf_payload_type is None:
            raise ParameterError("this session has no dtmf_payload_type: pass one (e.g. 101) to send DTMF")
        if self._dtmf.clock_rate != self.clock_rate:
            raise ParameterError(
                f"telephone-event clock {self._dtmf.clock_rate} Hz differs from the media clock "
                f"{self.clock_rate} Hz: sending needs them equal"
            )
        if self._dtmf_slots is not None:
            raise ParameterError("DTMF is already being sent: wait until dtmf_pending is False")
        frame_s = self.packetizer.timestamp_increment / self.clock_rate
        sender = DtmfSender(
            clock_rate=self.clock_rate, packet_ms=1000.0 * frame_s, duration_ms=duration_ms, gap_ms=gap_ms, volume=volume
        )
        slots: dict[int, DtmfPacket] = {}
        for p in sender.plan(digits, start_timestamp=self.packetizer.next_timestamp):
            slots.setdefault(round(p.send_offset / frame_s), p)
        self._dtmf_slots = slots or None
        self._dtmf_slot = 0

    @property
    def dtmf_pending(self) -> bool:
        """True while telephone-event packets queued by :meth:`send_dtmf` remain to be sent."""
        return self._dtmf_slots is not None

    def _next_dtmf_packet(self) -> DtmfPacket | None:
        if self._dtmf_slots is None:
            return None
        p = self._dtmf_slots.get(self._dtmf_slot)
        self._dtmf_slot += 1
        if self._dtmf_slot > max(self._dtmf_slots):
            self._dtmf_slots = None
        return p

    def _rtp_timestamp_at(self, now: float) -> int:
        if self._last_send is None:
            return self.packetizer.next_timestamp
        t, ts = self._last_send
        return (ts + round((now - t) * self.clock_rate)) % (1 << 32)

    def _report_blocks(self, now: float) -> tuple[ReportBlock, ...]:
        if self.receiver_stats is None or not self.receiver_stats.valid or self.remote_ssrc is None:
            return ()
        lsr = dlsr = 0
        if self._remote_sr is not None:
            lsr = self._remote_sr[0]
            dlsr = min(0xFFFFFFFF, max(0, round((now - self._remote_sr[1]) * 65536)))
        return (ReportBlock.from_stats(self.receiver_stats.report(now), ssrc=self.remote_ssrc, lsr=lsr, dlsr=dlsr),)

    def _report(self, now: float) -> SenderReport | ReceiverReport:
        blocks = self._report_blocks(now)
        if any(self._we_sent_intervals):
            ntp = ntp_from_seconds(now + self.epoch_offset)
            mid = ntp_middle32(ntp)
            self._our_srs[mid] = now
            self._our_sr_order.append(mid)
            while len(self._our_sr_order) > 16:
                self._our_srs.pop(self._our_sr_order.popleft(), None)
            return SenderReport(
                ssrc=self.ssrc,
                ntp_timestamp=ntp,
                rtp_timestamp=self._rtp_timestamp_at(now),
                packet_count=self.stats.packets_sent & 0xFFFFFFFF,
                octet_count=self.stats.octets_sent & 0xFFFFFFFF,
                reports=blocks,
            )
        return ReceiverReport(ssrc=self.ssrc, reports=blocks)

    def _finish_compound(self, packets: list) -> bytes:
        data = b"".join(bytes(p) for p in packets)
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        self.avg_rtcp_size += (len(data) + _LOWER_LAYER_BYTES - self.avg_rtcp_size) / 16.0
        self.stats.rtcp_sent += 1
        return data

    def _send_report(self, now: float) -> bytes:
        data = self._finish_compound([self._report(now), Sdes.with_cname(self.ssrc, self.cname)])
        self._we_sent_intervals.append(False)
        self._remote_sent_intervals.append(False)
        return data

    def close(self, now: float, *, reason: str | None = None) -> bytes:
        """A final compound RTCP packet with BYE (RFC 3550 6.6); stops the RTCP timer.

        Returns
        -------
        bytes
            Datagram to send to :attr:`remote_rtcp_addr`.
        """
        now = _finite(now, "now")
        self.start(now)
        data = self._finish_compound(
            [self._report(now), Sdes.with_cname(self.ssrc, self.cname), Bye((self.ssrc,), reason)]
        )
        self._closed = True
        return data

    # ------------------------------------------------------------------ receiving
    def unlatch(self) -> None:
        """Forget latched addresses: the next valid packet may latch again (after a re-INVITE)."""
        self._latched = {"rtp": False, "rtcp": False}

    def _source_ok(self, kind: str, addr) -> bool:
        if addr is None:
            return True
        if self._latched[kind]:
            current = self.remote_addr if kind == "rtp" else self.remote_rtcp_addr
            return addr == current
        if self.latching and self.latch_hosts is not None:
            return str(addr[0]).lower() in self.latch_hosts
        return self.latching or self._expected_host is None or addr[0] == self._expected_host

    def _latch(self, kind: str, addr, now: float, events: list) -> None:
        # Only a latching ("comedia") endpoint moves its remote address; a plain endpoint
        # keeps sending where signalling told it to (the one-way-audio case behind NAT).
        if not self.latching or addr is None or self._latched[kind]:
            return
        self._latched[kind] = True
        kinds = ("rtp", "rtcp") if self.rtcp_mux else (kind,)
        for k in kinds:
            old = self.remote_addr if k == "rtp" else self.remote_rtcp_addr
            self._latched[k] = True
            if old != addr:
                if k == "rtp":
                    self.remote_addr = addr
                else:
                    self.remote_rtcp_addr = addr
                events.append(RemoteAddressLatched(k, old, addr, now))

    def receive(self, data: bytes, now: float, addr=None, kind: str | None = None) -> list[SessionEvent]:
        """Handle one received datagram.

        Parameters
        ----------
        data : bytes
            UDP payload.
        now : float
            Arrival time, seconds.
        addr : tuple, optional
            ``(host, port)`` it came from (None skips the address checks and latching).
        kind : {"rtp", "rtcp"}, optional
            Which socket it arrived on; None to demultiplex by content, which needs
            ``rtcp_mux``.

        Returns
        -------
        list of SessionEvent
            Timer events not yet popped, then what this datagram caused. Invalid,
            unauthenticated, foreign or replayed datagrams give no event and are counted
            in :attr:`stats`.

        Raises
        ------
        ParameterError
            On a bad ``kind`` or ``now``, or ``kind=None`` without rtcp-mux.
        """
        now = _finite(now, "now")
        self.start(now)
        if kind is None and not self.rtcp_mux:
            raise ParameterError("without rtcp_mux, say which socket the datagram came from: kind='rtp' or 'rtcp'")
        if kind not in (None, "rtp", "rtcp"):
            raise ParameterError(f"kind must be 'rtp', 'rtcp' or None, got {kind!r}")
        events = self.pop_events()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            self.stats.malformed += 1
            return events
        data = bytes(data)
        if kind is None:
            kind = "rtcp" if is_rtcp(data) else "rtp"
        if not self._source_ok(kind, addr):
            self.stats.foreign_source_drops += 1
            return events
        if kind == "rtp":
            self._receive_rtp(data, now, addr, events)
        else:
            self._receive_rtcp(data, now, addr, events)
        return events

    def _unprotect(self, func, data: bytes) -> bytes | None:
        try:
            return func(data)
        except SrtpAuthError:
            self.stats.srtp_auth_failures += 1
        except SrtpReplayError:
            self.stats.srtp_replays += 1
        except SrtpError:
            self.stats.malformed += 1
        return None

    def _receive_rtp(self, data: bytes, now: float, addr, events: list) -> None:
        if self.srtp is not None:
            data = self._unprotect(self.srtp.unprotect, data)
            if data is None:
                return
        try:
            packet = RtpPacket.parse(data)
        except RemoteProtocolError:
            self.stats.malformed += 1
            return
        is_dtmf = packet.payload_type == self.dtmf_payload_type
        if not is_dtmf and packet.payload_type not in self.accepted_payload_types:
            self.stats.unexpected_payload_drops += 1
            return
        if not self._accept_ssrc(packet, now, events):
            self.stats.foreign_ssrc_drops += 1
            return
        self._latch("rtp", addr, now, events)
        self.stats.packets_received += 1
        self._remote_sent_intervals[-1] = True
        assert self.receiver_stats is not None
        self.receiver_stats.update(packet.sequence_number, packet.timestamp, now)
        if is_dtmf:
            events.extend(self._dtmf.receive(packet, now))
        else:
            events.append(RtpReceived(packet, now))

    def _accept_ssrc(self, packet: RtpPacket, now: float, events: list) -> bool:
        ssrc = packet.ssrc
        if self.remote_ssrc is None:
            self.remote_ssrc = ssrc
            self.receiver_stats = ReceiverStats(self.clock_rate)
            return True
        if ssrc == self.remote_ssrc:
            return True
        cand = self._candidate
        if cand is not None and cand[0] == ssrc and packet.sequence_number == (cand[1] + 1) % 65536:
            count = cand[2] + 1
        else:
            count = 1
        self._candidate = (ssrc, packet.sequence_number, count)
        if count < 2:
            return False
        # Two sequential packets: switch sources (RFC 3550 8.2 / A.1 style probation).
        old = self.remote_ssrc
        self.remote_ssrc = ssrc
        self.receiver_stats = ReceiverStats(self.clock_rate)
        self._remote_sr = None
        self._candidate = None
        events.append(SsrcChanged(old, ssrc, now))
        return True

    def _receive_rtcp(self, data: bytes, now: float, addr, events: list) -> None:
        if self.srtp is not None:
            data = self._unprotect(self.srtp.unprotect_rtcp, data)
            if data is None:
                return
        try:
            packets = parse_compound(data)
        except RemoteProtocolError:
            self.stats.malformed += 1
            return
        self._latch("rtcp", addr, now, events)
        self.stats.rtcp_received += 1
        self.avg_rtcp_size += (len(data) + _LOWER_LAYER_BYTES - self.avg_rtcp_size) / 16.0
        events.append(RtcpReceived(tuple(packets), now))
        for p in packets:
            if isinstance(p, SenderReport):
                if self.remote_ssrc is None or p.ssrc == self.remote_ssrc:
                    self._remote_sr = (ntp_middle32(p.ntp_timestamp), now)
            if isinstance(p, (SenderReport, ReceiverReport)):
                for block in p.reports:
                    if block.ssrc == self.ssrc:
                        events.append(self._remote_report(p.ssrc, block, now))
            elif isinstance(p, Bye):
                reason = None if p.reason is None else p.reason.decode("utf-8", errors="replace")
                events.append(ByeReceived(p.ssrcs, reason, now))

    def _remote_report(self, reporter: int, block: ReportBlock, now: float) -> RemoteReportReceived:
        rtt: float | None = None
        if block.lsr:
            sent = self._our_srs.get(block.lsr)
            if sent is not None:
                rtt = max(0.0, now - sent - block.dlsr / 65536.0)
            else:
                arrival = ntp_middle32(ntp_from_seconds(now + self.epoch_offset))
                rtt = round_trip_time(arrival, block.lsr, block.dlsr)
        if rtt is not None:
            self.stats.rtt_s = rtt
            self.stats.rtt_samples.append(rtt)
        return RemoteReportReceived(
            ssrc=reporter,
            rtt_s=rtt,
            fraction_lost=block.fraction_lost,
            fraction=block.fraction,
            cumulative_lost=block.cumulative_lost,
            highest_sequence=block.highest_sequence,
            jitter_ms=1000.0 * block.jitter / self.clock_rate,
            arrival=now,
        )

    def __repr__(self) -> str:
        return f"RtpSession(ssrc={self.ssrc:#010x}, remote_ssrc={self.remote_ssrc!r}, remote_addr={self.remote_addr!r})"
