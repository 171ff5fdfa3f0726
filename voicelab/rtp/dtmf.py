"""DTMF over RTP: RFC 4733 telephone-event payloads, a sender and a receiver (sans-IO).

Payload (RFC 4733 section 2.3), 4 bytes::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Events 0-9 are the digits, 10 ``*``, 11 ``#``, 12-15 ``A``-``D``, 16 flash
(RFC 4733 section 3.2). ``volume`` is the power level in -dBm0 (0..63); ``duration``
is in RTP timestamp units since the event's (segment's) timestamp.

Sending rules followed by :class:`DtmfSender` (RFC 4733 2.5.1): all packets of an event
carry the event's start timestamp; the first has the RTP marker bit; an update is sent
every packet time with the duration so far (the first one already counts one packet
time, as in the RFC's examples); the final packet has the E bit and is sent three
times, one packet time apart, with the same timestamp and duration. An event longer than
0xFFFF timestamp units is cut into segments (2.5.1.3): a segment ends with a packet of
duration 0xFFFF (no E bit, also sent three times) and the next one starts at timestamp
``previous + 0xFFFF`` without the marker bit.

Receiving rules in :class:`DtmfReceiver` (2.5.2): one :class:`DtmfReceived` per event,
whatever is duplicated, retransmitted or lost. An event is complete when an E-bit packet
arrives, when a packet of a later event arrives, or when no packet arrived for
``timeout_ms`` (:meth:`DtmfReceiver.expire`); the duration is the largest seen, so losing
updates does not matter as long as one end packet gets through.

Why our own: aiortc has no telephone-event support; this is a few dozen lines.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass

from ..errors import ParameterError, RemoteProtocolError
from .packet import RtpPacket

__all__ = [
    "TelephoneEvent",
    "DtmfSender",
    "DtmfReceiver",
    "DtmfReceived",
    "DtmfPacket",
    "DTMF_EVENTS",
    "event_code",
    "event_name",
]

#: Characters for events 0..15 (RFC 4733 3.2); event 16 is flash.
DTMF_EVENTS = "0123456789*#ABCD"
_FLASH = 16
_MAX_DURATION = 0xFFFF
_TS_MOD = 1 << 32


def event_code(digit: str) -> int:
    """RFC 4733 event code of a DTMF character (``"0"``..``"9"``, ``*``, ``#``, ``A``..``D``).

    Raises
    ------
    ParameterError
        For any other character.
    """
    if isinstance(digit, str) and len(digit) == 1 and digit.upper() in DTMF_EVENTS:
        return DTMF_EVENTS.index(digit.upper())
    raise ParameterError(f"{digit!r} is not a DTMF digit: use 0-9, *, #, A-D")


def event_name(event: int) -> str:
    """The character of a DTMF event code, ``"flash"`` for 16, ``"event N"`` otherwise."""
    if 0 <= event < len(DTMF_EVENTS):
        return DTMF_EVENTS[event]
    if event == _FLASH:
        return "flash"
    return f"event {event}"


@dataclass(frozen=True)
class TelephoneEvent:
    """One RFC 4733 telephone-event payload.

    Parameters
    ----------
    event : int
        Event code 0..255.
    end : bool
        E bit: the final packet of the event (or segment end is *not* marked).
    volume : int
        Power level in -dBm0, 0..63.
    duration : int
        Duration so far in RTP timestamp units, 0..65535.

    Examples
    --------
    >>> e = TelephoneEvent.parse(bytes.fromhex("05 8a 03 20"))
    >>> e.event, e.end, e.volume, e.duration
    (5, True, 10, 800)
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def __post_init__(self) -> None:
        for name, bits in (("event", 8), ("volume", 6), ("duration", 16)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < (1 << bits):
                raise ParameterError(f"{name} must be an integer 0..{(1 << bits) - 1}, got {v!r}")
        object.__setattr__(self, "end", bool(self.end))

    @classmethod
    def parse(cls, data: bytes) -> "TelephoneEvent":
        """Parse a 4-byte payload (the R bit is ignored, as RFC 4733 asks).

        Raises
        ------
        RemoteProtocolError
            If ``data`` is not exactly 4 bytes.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) != 4:
            size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else type(data).__name__
            raise RemoteProtocolError(f"telephone-event payload must be 4 bytes, got {size}")
        event, flags, duration = struct.unpack("!BBH", bytes(data))
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True)
class DtmfPacket:
    """One telephone-event packet planned by :class:`DtmfSender`.

    Attributes
    ----------
    send_offset : float
        When to send it, in seconds after the start of the digit string.
    timestamp : int
        RTP timestamp (the event's or segment's start).
    marker : bool
        RTP marker bit (first packet of an event).
    payload : TelephoneEvent
        The payload.
    """

    send_offset: float
    timestamp: int
    marker: bool
    payload: TelephoneEvent


@dataclass(frozen=True)
class DtmfReceived:
    """A DTMF event was received (once per event).

    Attributes
    ----------
    digit : str
        ``"0"``..``"9"``, ``"*"``, ``"#"``, ``"A"``..``"D"``, ``"flash"`` or ``"event N"``.
    duration_ms : float
        Event duration in ms (all segments), from the largest duration seen.
    start_timestamp : int
        RTP timestamp of the event's first segment.
    event : int
        RFC 4733 event code.
    volume : int
        Power level in -dBm0 of the last packet seen.
    end_seen : bool
        True when an E-bit packet arrived; False when the event was closed by a later
        event or by the timeout (its duration may then be short).
    arrival : float
        ``now`` (seconds) of the packet or timer that completed the event.
    """

    digit: str
    duration_ms: float
    start_timestamp: int
    event: int
    volume: int
    end_seen: bool
    arrival: float


def _pos(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ParameterError(f"{name} must be a positive finite number, got {value!r}")
    return v


class DtmfSender:
    """Turns a digit string into the RFC 4733 packet sequence.

    Parameters
    ----------
    clock_rate : int, optional
        RTP clock rate of the telephone-event format in Hz (8000 for ``telephone-event/8000``).
    packet_ms : float, optional
        Update interval in ms (usually the audio packet time).
    duration_ms : float, optional
        Tone duration per digit in ms.
    gap_ms : float, optional
        Pause between the end of one tone and the start of the next, in ms. The next
        event never starts before the previous one's last retransmitted end packet.
    volume : int, optional
        Power level in -dBm0 (0..63).

    Raises
    ------
    ParameterError
        On out-of-range values.

    Examples
    --------
    >>> plan = DtmfSender(duration_ms=100).plan("1", start_timestamp=0)
    >>> [(p.send_offset, p.payload.duration, p.payload.end, p.marker) for p in plan][:2]
    [(0.0, 160, False, True), (0.02, 320, False, False)]
    >>> [p.payload.duration for p in plan if p.payload.end]
    [800, 800, 800]
    """

    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        packet_ms: float = 20.0,
        duration_ms: float = 100.0,
        gap_ms: float = 60.0,
        volume: int = 10,
    ) -> None:
        if isinstance(clock_rate, bool) or not isinstance(clock_rate, int) or clock_rate <= 0:
            raise ParameterError(f"clock_rate must be a positive integer in Hz, got {clock_rate!r}")
        self.clock_rate = clock_rate
        self.packet_ms = _pos(packet_ms, "packet_ms")
        self.duration_ms = _pos(duration_ms, "duration_ms")
        try:
            self.gap_ms = float(gap_ms)
        except (TypeError, ValueError):
            raise ParameterError(f"gap_ms must be a number >= 0, got {gap_ms!r}") from None
        if not math.isfinite(self.gap_ms) or self.gap_ms < 0:
            raise ParameterError(f"gap_ms must be a finite number >= 0, got {gap_ms!r}")
        if isinstance(volume, bool) or not isinstance(volume, int) or not 0 <= volume <= 63:
            raise ParameterError(f"volume must be an integer 0..63 (-dBm0), got {volume!r}")
        self.volume = volume
        self.increment = max(1, round(self.packet_ms * clock_rate / 1000.0))

    def plan(self, digits: str, *, start_timestamp: int = 0) -> list[DtmfPacket]:
        """All packets for ``digits``, in sending order.

        Parameters
        ----------
        digits : str
            DTMF characters (``0-9*#A-D``).
        start_timestamp : int, optional
            RTP timestamp of the first event; later events are placed at their start
            time on the same clock.

        Returns
        -------
        list of DtmfPacket

        Raises
        ------
        ParameterError
            If a character is not a DTMF digit or the timestamp is out of range.
        """
        if not isinstance(digits, str):
            raise ParameterError(f"digits must be a string, got {type(digits).__name__}")
        codes = [event_code(d) for d in digits]
        if isinstance(start_timestamp, bool) or not isinstance(start_timestamp, int) or not 0 <= start_timestamp < _TS_MOD:
            raise ParameterError(f"start_timestamp must be an integer 0..2**32-1, got {start_timestamp!r}")
        ptime = self.packet_ms / 1000.0
        total = max(1, round(self.duration_ms * self.clock_rate / 1000.0))
        n = -(-total // self.increment)
        out: list[DtmfPacket] = []
        t0 = 0.0
        for code in codes:
            ts0 = (start_timestamp + round(t0 * self.clock_rate)) % _TS_MOD
            seg = 0
            for j in range(n):
                t = t0 + j * ptime
                elapsed = min((j + 1) * self.increment, total)
                while elapsed - seg * _MAX_DURATION > _MAX_DURATION:
                    ev = TelephoneEvent(code, False, self.volume, _MAX_DURATION)
                    seg_ts = (ts0 + seg * _MAX_DURATION) % _TS_MOD
                    for r in range(3):
                        out.append(DtmfPacket(t + r * ptime, seg_ts, j == 0 and seg == 0 and r == 0, ev))
                    seg += 1
                final = j == n - 1
                ev = TelephoneEvent(code, final, self.volume, elapsed - seg * _MAX_DURATION)
                seg_ts = (ts0 + seg * _MAX_DURATION) % _TS_MOD
                out.append(DtmfPacket(t, seg_ts, j == 0 and seg == 0, ev))
                if final:
                    out.extend(DtmfPacket(t + r * ptime, seg_ts, False, ev) for r in (1, 2))
            last_end = t0 + (n + 1) * ptime
            t0 = max(t0 + total / self.clock_rate + self.gap_ms / 1000.0, last_end + ptime)
        out.sort(key=lambda p: p.send_offset)  # stable: keeps the order within one instant
        return out

    def packets(
        self,
        digits: str,
        *,
        ssrc: int,
        payload_type: int = 101,
        start_sequence: int = 0,
        start_timestamp: int = 0,
    ) -> list[tuple[float, RtpPacket]]:
        """:meth:`plan` stamped into RTP packets with consecutive sequence numbers.

        Each retransmitted end packet gets its own sequence number (RFC 4733 2.5.1.4).

        Returns
        -------
        list of (float, RtpPacket)
            Send offset in seconds and the packet.
        """
        out = []
        for i, p in enumerate(self.plan(digits, start_timestamp=start_timestamp)):
            out.append(
                (
                    p.send_offset,
                    RtpPacket(
                        marker=p.marker,
                        payload_type=payload_type,
                        sequence_number=(start_sequence + i) % 65536,
                        timestamp=p.timestamp,
                        ssrc=ssrc,
                        payload=bytes(p.payload),
                    ),
                )
            )
        return out


class DtmfReceiver:
    """Turns received telephone-event packets into one :class:`DtmfReceived` per event.

    Parameters
    ----------
    clock_rate : int, optional
        RTP clock rate of the telephone-event format in Hz.
    timeout_ms : float, optional
        An event with no packet for this long is reported as finished by :meth:`expire`.

    Examples
    --------
    >>> tx, rx = DtmfSender(), DtmfReceiver()
    >>> events = []
    >>> for offset, pkt in tx.packets("5#", ssrc=1):
    ...     events += rx.receive(pkt, offset)
    >>> [(e.digit, e.duration_ms) for e in events]
    [('5', 100.0), ('#', 100.0)]
    """

    def __init__(self, *, clock_rate: int = 8000, timeout_ms: float = 250.0) -> None:
        if isinstance(clock_rate, bool) or not isinstance(clock_rate, int) or clock_rate <= 0:
            raise ParameterError(f"clock_rate must be a positive integer in Hz, got {clock_rate!r}")
        self.clock_rate = clock_rate
        self.timeout = _pos(timeout_ms, "timeout_ms") / 1000.0
        self._cur: dict | None = None
        self._done: deque[int] = deque(maxlen=64)  # segment timestamps already reported
        self.malformed = 0

    def receive(self, packet: RtpPacket, now: float) -> list[DtmfReceived]:
        """Account for one telephone-event RTP packet.

        Parameters
        ----------
        packet : RtpPacket
            A packet of the telephone-event payload type.
        now : float
            Arrival time in seconds.

        Returns
        -------
        list of DtmfReceived
            Events completed by this packet (0, 1, or 2 when it also closes an older one).
            A malformed payload is counted in :attr:`malformed` and ignored.
        """
        try:
            ev = TelephoneEvent.parse(packet.payload)
        except RemoteProtocolError:
            self.malformed += 1
            return []
        ts = packet.timestamp
        if ts in self._done:
            return []  # retransmitted end, or a late update of a reported event
        out: list[DtmfReceived] = []
        cur = self._cur
        if cur is not None and ts != cur["seg_ts"]:
            diff = (ts - cur["seg_ts"]) % _TS_MOD
            if ev.event == cur["event"] and diff == _MAX_DURATION:
                # Next segment of a long event (RFC 4733 2.5.1.3).
                self._done.append(cur["seg_ts"])
                cur["accumulated"] += _MAX_DURATION
                cur["seg_ts"] = ts
                cur["duration"] = 0
            elif diff >= _TS_MOD // 2:
                return []  # older than the current event: late packet of a finished one
            else:
                out.append(self._finish(now, end_seen=False))
                cur = None
        if cur is None:
            cur = self._cur = {
                "event": ev.event,
                "start_ts": ts,
                "seg_ts": ts,
                "accumulated": 0,
                "duration": 0,
                "volume": ev.volume,
            }
        elif ev.event != cur["event"]:
            self.malformed += 1  # same timestamp, different event: ignore it
            return out
        cur["duration"] = max(cur["duration"], ev.duration)
        cur["volume"] = ev.volume
        cur["last"] = float(now)
        if ev.end:
            out.append(self._finish(now, end_seen=True))
        return out

    def expire(self, now: float) -> list[DtmfReceived]:
        """Finish an event that has had no packet for ``timeout_ms``.

        Returns
        -------
        list of DtmfReceived
            The timed-out event, if any.
        """
        if self._cur is not None and now - self._cur["last"] >= self.timeout:
            return [self._finish(now, end_seen=False)]
        return []

    def next_timer(self) -> float | None:
        """When :meth:`expire` would finish the open event (seconds), or None."""
        return None if self._cur is None else self._cur["last"] + self.timeout

    def _finish(self, now: float, *, end_seen: bool) -> DtmfReceived:
        cur = self._cur
        assert cur is not None
        self._cur = None
        self._done.append(cur["seg_ts"])
        units = cur["accumulated"] + cur["duration"]
        return DtmfReceived(
            digit=event_name(cur["event"]),
            duration_ms=1000.0 * units / self.clock_rate,
            start_timestamp=cur["start_ts"],
            event=cur["event"],
            volume=cur["volume"],
            end_seen=end_seen,
            arrival=float(now),
        )
