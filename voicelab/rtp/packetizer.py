"""Turn encoded frames into RTP packets with the right sequence numbers and timestamps.

RFC 3550 section 5.1 asks for random initial values of the sequence number and the
timestamp, and section 8 for a random SSRC; they are drawn from the generator passed in,
so a seeded generator gives the same stream every run.

Discontinuous transmission (DTX, RFC 3551 section 4.1): frames that are not sent still
advance the RTP timestamp but not the sequence number. Pass ``frames_skipped`` to
:meth:`Packetizer.packetize` for the frames not sent since the previous packet; a
receiver then sees a timestamp jump with consecutive sequence numbers, which it can tell
from loss (sequence gap). Set ``marker=True`` on the first packet of each talkspurt.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import ParameterError
from .packet import RtpPacket

__all__ = ["Packetizer"]

_HEADER = struct.Struct("!BBHII")  # RTP fixed header, no CSRC / extension / padding


def _opt_uint(value: int | None, bits: int, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < (1 << bits):
        raise ParameterError(f"{name} must be an integer in 0..{(1 << bits) - 1}, got {value!r}")
    return int(value)


class Packetizer:
    """Stamps payloads with RTP headers for one stream (one SSRC).

    Parameters
    ----------
    payload_type : int
        RTP payload type, 0..127.
    clock_rate : int
        RTP clock rate in Hz (8000 for G.711 and G.722, 48000 for Opus).
    timestamp_increment : int
        Timestamp units per packet (160 for 20 ms at 8000 Hz, 960 for Opus 20 ms).
    ssrc, initial_sequence, initial_timestamp : int, optional
        Fixed values; each one left out is drawn from ``rng``.
    rng : numpy.random.Generator or int, optional
        Source of the random initial values (an int is used as a seed). Without it, fresh
        OS entropy is used (not reproducible).

    Raises
    ------
    ParameterError
        On out-of-range values.

    Examples
    --------
    >>> pk = Packetizer(payload_type=0, clock_rate=8000, timestamp_increment=160,
    ...                 ssrc=1, initial_sequence=65535, initial_timestamp=0)
    >>> [(p.sequence_number, p.timestamp) for p in (pk.packetize(b"a"), pk.packetize(b"b"))]
    [(65535, 0), (0, 160)]
    """

    def __init__(
        self,
        *,
        payload_type: int,
        clock_rate: int,
        timestamp_increment: int,
        ssrc: int | None = None,
        rng: np.random.Generator | int | None = None,
        initial_sequence: int | None = None,
        initial_timestamp: int | None = None,
    ) -> None:
        if payload_type is None:
            raise ParameterError("payload_type is required (0..127)")
        self.payload_type = _opt_uint(payload_type, 7, "payload_type")
        for name, value in (("clock_rate", clock_rate), ("timestamp_increment", timestamp_increment)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        self.clock_rate = int(clock_rate)
        self.timestamp_increment = int(timestamp_increment)
        if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            if rng is not None and rng < 0:
                raise ParameterError(f"rng seed {rng} is negative: use an integer >= 0")
            rng = np.random.default_rng(rng)
        elif not isinstance(rng, np.random.Generator):
            raise ParameterError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")
        # Draw all three in a fixed order so that fixing one does not shift the others.
        drawn_ssrc, drawn_seq, drawn_ts = (int(v) for v in rng.integers(0, [1 << 32, 1 << 16, 1 << 32]))
        ssrc = _opt_uint(ssrc, 32, "ssrc")
        seq = _opt_uint(initial_sequence, 16, "initial_sequence")
        ts = _opt_uint(initial_timestamp, 32, "initial_timestamp")
        self.ssrc = drawn_ssrc if ssrc is None else ssrc
        self.initial_sequence = drawn_seq if seq is None else seq
        self.initial_timestamp = drawn_ts if ts is None else ts
        self._next_seq = self.initial_sequence
        self._next_ts = self.initial_timestamp
        self.packets_sent = 0
        self.octets_sent = 0

    @property
    def next_sequence_number(self) -> int:
        """Sequence number the next packet will carry."""
        return self._next_seq

    @property
    def next_timestamp(self) -> int:
        """Timestamp the next packet will carry if no frame is skipped."""
        return self._next_ts

    def packetize(self, payload: bytes, *, marker: bool = False, frames_skipped: int = 0) -> RtpPacket:
        """Wrap one frame's payload in an RTP packet.

        Parameters
        ----------
        payload : bytes
            Encoded frame(s).
        marker : bool, optional
            Set the M bit (first packet of a talkspurt).
        frames_skipped : int, optional
            Frames not sent (DTX) since the previous packet: the timestamp jumps by
            ``timestamp_increment * (1 + frames_skipped)``, the sequence number by 1.

        Returns
        -------
        RtpPacket

        Raises
        ------
        ParameterError
            If ``payload`` is not bytes or ``frames_skipped`` is negative.
        """
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ParameterError(f"payload must be bytes, got {type(payload).__name__}")
        if isinstance(frames_skipped, bool) or not isinstance(frames_skipped, (int, np.integer)) or frames_skipped < 0:
            raise ParameterError(f"frames_skipped must be an integer >= 0, got {frames_skipped!r}")
        ts = (self._next_ts + self.timestamp_increment * int(frames_skipped)) & 0xFFFFFFFF
        packet = RtpPacket._trusted(  # every field is valid by construction
            marker=bool(marker),
            payload_type=self.payload_type,
            sequence_number=self._next_seq,
            timestamp=ts,
            ssrc=self.ssrc,
            payload=bytes(payload),
        )
        self._next_seq = (self._next_seq + 1) & 0xFFFF
        self._next_ts = (ts + self.timestamp_increment) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(packet.payload)
        return packet

    def packetize_bytes(self, payload: bytes, *, marker: bool = False) -> tuple[bytes, int]:
        """Like :meth:`packetize` (no frame skipped), straight to wire bytes (the hot path).

        Returns
        -------
        (bytes, int)
            The datagram (12-byte header + payload) and its RTP timestamp.
        """
        ts = self._next_ts
        seq = self._next_seq
        data = _HEADER.pack(0x80, (0x80 if marker else 0) | self.payload_type, seq, ts, self.ssrc) + payload
        self._next_seq = (seq + 1) & 0xFFFF
        self._next_ts = (ts + self.timestamp_increment) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data, ts

    def __repr__(self) -> str:
        return (
            f"Packetizer(payload_type={self.payload_type}, clock_rate={self.clock_rate}, "
            f"timestamp_increment={self.timestamp_increment}, ssrc={self.ssrc:#010x})"
        )
