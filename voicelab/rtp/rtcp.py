"""RTCP packets, compound packets, NTP time and report timing (RFC 3550 section 6), sans-IO.

Every packet class has a ``parse()`` classmethod (one packet, whole input) and
``bytes()``; :func:`parse_compound` splits and checks a compound packet and
:func:`serialize_compound` (or ``b"".join(map(bytes, packets))``) builds one.

Common header of every RTCP packet (RFC 3550 6.4.1)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|  count  |      PT       |     length (32-bit words - 1) |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

``count`` is RC (report blocks) for SR/RR, SC (chunks / sources) for SDES/BYE and the
subtype for APP. Packet types: SR 200, RR 201, SDES 202, BYE 203, APP 204. Other types
(RTPFB/PSFB 205/206 of RFC 4585, XR 207 of RFC 3611, ...) are kept as
:class:`UnknownRtcp` so a receiver can ignore them, as RFC 3550 6.1 asks.

Validity checks of RFC 3550 A.2, applied by :func:`parse_compound`: every packet has
version 2; the first is an SR or RR; only the last may have the padding bit; the length
fields add up to exactly the input length (trailing junk is rejected). Invalid input
raises :class:`~voicelab.errors.RemoteProtocolError`, and nothing else.

Padding: the parser accepts it on the last packet and drops it; ``bytes()`` never pads
(SRTCP does not need it for AES-CM), so padded input does not round-trip byte for byte.

Time: RTCP carries 64-bit NTP timestamps (seconds since 1900-01-01 in 32.32 fixed point).
:func:`ntp_from_seconds` / :func:`seconds_from_ntp` convert; :func:`ntp_middle32` gives the
LSR value; :func:`round_trip_time` is the RFC 3550 6.4.1 ``A - LSR - DLSR`` computation;
:func:`rtcp_interval` is the report interval of RFC 3550 6.3 / A.7.

Why our own: aiortc's ``rtcp`` classes live in its ``rtp.py`` and raise bare
``ValueError``/``struct.error`` on bad input, skip the A.2 checks and lack SDES chunks
with several items; the lab needs a small fuzzed parser with typed errors.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import ParameterError, RemoteProtocolError

__all__ = [
    "RTCP_SR",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_BYE",
    "RTCP_APP",
    "SDES_CNAME",
    "SDES_NAME",
    "SDES_EMAIL",
    "SDES_PHONE",
    "SDES_LOC",
    "SDES_TOOL",
    "SDES_NOTE",
    "SDES_PRIV",
    "NTP_UNIX_OFFSET",
    "ReportBlock",
    "SenderReport",
    "ReceiverReport",
    "SdesChunk",
    "Sdes",
    "Bye",
    "App",
    "UnknownRtcp",
    "RtcpPacket",
    "parse_compound",
    "serialize_compound",
    "is_rtcp",
    "ntp_from_seconds",
    "seconds_from_ntp",
    "ntp_middle32",
    "round_trip_time",
    "rtcp_interval",
    "RTCP_MIN_TIME",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

SDES_CNAME = 1
SDES_NAME = 2
SDES_EMAIL = 3
SDES_PHONE = 4
SDES_LOC = 5
SDES_TOOL = 6
SDES_NOTE = 7
SDES_PRIV = 8

#: Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix epoch).
NTP_UNIX_OFFSET = 2_208_988_800

#: Minimum RTCP interval in seconds (RFC 3550 6.2).
RTCP_MIN_TIME = 5.0

_HEADER = 4
_BLOCK = 24
_MAX_COUNT = 31


# --------------------------------------------------------------------------- helpers
def _uint(value: object, bits: int, name: str) -> int:
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be an integer 0..{(1 << bits) - 1}, got {value!r}")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ParameterError(f"{name} must be an integer 0..{(1 << bits) - 1}, got {value!r}") from None
    if not 0 <= v < (1 << bits):
        raise ParameterError(f"{name} {v} is outside 0..{(1 << bits) - 1}")
    return v


def _bytes(value: object, name: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ParameterError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    # body_len is a multiple of 4 by construction
    return struct.pack("!BBH", 0x80 | count, packet_type, (body_len + _HEADER) // 4 - 1)


def _split_header(data: bytes, expected_type: int | None = None) -> tuple[int, int, bytes]:
    """Check one whole packet's header; return (count, packet_type, body without padding)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError(f"RTCP packet must be bytes, got {type(data).__name__}")
    data = bytes(data)
    n = len(data)
    if n < _HEADER:
        raise RemoteProtocolError(f"RTCP packet is {n} bytes, shorter than the 4-byte common header")
    b0, pt, length = struct.unpack_from("!BBH", data, 0)
    if b0 >> 6 != 2:
        raise RemoteProtocolError(f"RTCP version is {b0 >> 6}, expected 2 (RFC 3550 6.4.1)")
    if expected_type is not None and pt != expected_type:
        raise RemoteProtocolError(f"RTCP packet type is {pt}, expected {expected_type}")
    size = 4 * (length + 1)
    if size != n:
        raise RemoteProtocolError(
            f"RTCP length field says {size} bytes but the packet is {n} bytes (RFC 3550 6.4.1)"
        )
    body = data[_HEADER:]
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or pad % 4 or pad > len(body):
            raise RemoteProtocolError(
                f"RTCP padding count {pad} is invalid for a {len(body)}-byte body "
                "(a multiple of 4 that counts itself and fits in the packet, RFC 3550 6.4.1)"
            )
        body = body[:-pad]
    return b0 & 0x1F, pt, body


# --------------------------------------------------------------------------- report block
@dataclass(frozen=True)
class ReportBlock:
    """One reception report block (RFC 3550 6.4.1), 24 bytes on the wire.

    Parameters
    ----------
    ssrc : int
        Source this block reports on (SSRC_n).
    fraction_lost : int
        Fraction lost since the previous report, 8-bit fixed point 0..255 (/256).
    cumulative_lost : int
        Packets lost since the start, signed 24-bit (-8388608..8388607; negative with
        duplicates).
    highest_sequence : int
        Extended highest sequence number received (wraps in the top 16 bits).
    jitter : int
        Interarrival jitter in RTP timestamp units.
    lsr : int
        Middle 32 bits of the NTP time of the last SR received from SSRC_n (0 = none).
    dlsr : int
        Delay since that SR was received, in units of 1/65536 s (0 = no SR yet).

    See Also
    --------
    voicelab.metrics.rtpstats.ReportBlock : the statistics one of these is built from
        (:meth:`from_stats`).
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "ssrc", _uint(self.ssrc, 32, "ssrc"))
        put(self, "fraction_lost", _uint(self.fraction_lost, 8, "fraction_lost"))
        if isinstance(self.cumulative_lost, bool):
            raise ParameterError(f"cumulative_lost must be an integer, got {self.cumulative_lost!r}")
        try:
            lost = operator.index(self.cumulative_lost)
        except TypeError:
            raise ParameterError(f"cumulative_lost must be an integer, got {self.cumulative_lost!r}") from None
        if not -0x800000 <= lost <= 0x7FFFFF:
            raise ParameterError(f"cumulative_lost {lost} is outside the signed 24-bit range")
        put(self, "cumulative_lost", lost)
        put(self, "highest_sequence", _uint(self.highest_sequence, 32, "highest_sequence"))
        put(self, "jitter", _uint(self.jitter, 32, "jitter"))
        put(self, "lsr", _uint(self.lsr, 32, "lsr"))
        put(self, "dlsr", _uint(self.dlsr, 32, "dlsr"))

    @property
    def fraction(self) -> float:
        """``fraction_lost / 256`` as a float in [0, 1)."""
        return self.fraction_lost / 256.0

    @property
    def dlsr_s(self) -> float:
        """DLSR in seconds."""
        return self.dlsr / 65536.0

    @classmethod
    def from_stats(cls, stats_block, *, ssrc: int, lsr: int = 0, dlsr: int = 0) -> "ReportBlock":
        """Wire block from :meth:`voicelab.metrics.ReceiverStats.report` figures.

        Parameters
        ----------
        stats_block : voicelab.metrics.rtpstats.ReportBlock
            Figures of one reporting interval.
        ssrc : int
            SSRC of the source reported on.
        lsr, dlsr : int, optional
            LSR / DLSR fields (see the class docstring).
        """
        return cls(
            ssrc=ssrc,
            fraction_lost=stats_block.fraction_lost,
            cumulative_lost=stats_block.cumulative_lost,
            highest_sequence=stats_block.extended_highest_sequence & 0xFFFFFFFF,
            jitter=min(int(stats_block.jitter), 0xFFFFFFFF),
            lsr=lsr,
            dlsr=dlsr,
        )

    @classmethod
    def parse(cls, data: bytes) -> "ReportBlock":
        """Parse exactly 24 bytes.

        Raises
        ------
        RemoteProtocolError
            If ``data`` is not 24 bytes.
        """
        if len(data) != _BLOCK:
            raise RemoteProtocolError(f"RTCP report block must be 24 bytes, got {len(data)}")
        ssrc, lost_word, ext, jitter, lsr, dlsr = struct.unpack("!IIIIII", data)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, ext, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost_word = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return struct.pack(
            "!IIIIII", self.ssrc, lost_word, self.highest_sequence, self.jitter, self.lsr, self.dlsr
        )


def _blocks(reports: object) -> tuple[ReportBlock, ...]:
    try:
        blocks = tuple(reports)  # type: ignore[arg-type]
    except TypeError:
        raise ParameterError("reports must be a sequence of ReportBlock") from None
    if len(blocks) > _MAX_COUNT:
        raise ParameterError(f"an SR/RR carries at most 31 report blocks, got {len(blocks)}")
    for b in blocks:
        if not isinstance(b, ReportBlock):
            raise ParameterError(f"reports must hold ReportBlock objects, got {type(b).__name__}")
    return blocks


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[tuple[ReportBlock, ...], bytes]:
    end = offset + count * _BLOCK
    if len(body) < end:
        raise RemoteProtocolError(
            f"RTCP report announces {count} report blocks ({count * _BLOCK} bytes) but only "
            f"{max(0, len(body) - offset)} bytes follow"
        )
    blocks = tuple(ReportBlock.parse(body[i : i + _BLOCK]) for i in range(offset, end, _BLOCK))
    extension = body[end:]
    if len(extension) % 4:
        raise RemoteProtocolError("RTCP report extension is not a multiple of 4 bytes")
    return blocks, extension


def _check_extension(ext: object) -> bytes:
    ext = _bytes(ext, "extension")
    if len(ext) % 4:
        raise ParameterError(f"extension must be a multiple of 4 bytes, got {len(ext)}")
    return ext


# --------------------------------------------------------------------------- SR / RR
@dataclass(frozen=True)
class SenderReport:
    """Sender report, PT 200 (RFC 3550 6.4.1).

    Parameters
    ----------
    ssrc : int
        SSRC of the sender.
    ntp_timestamp : int
        64-bit NTP time of the report (see :func:`ntp_from_seconds`).
    rtp_timestamp : int
        The same instant in RTP timestamp units of the sender's stream.
    packet_count : int
        RTP data packets sent since the start (32-bit, wraps).
    octet_count : int
        RTP payload octets sent since the start (32-bit, wraps).
    reports : tuple of ReportBlock
        Reception reports, at most 31.
    extension : bytes
        Profile-specific extension (multiple of 4 bytes).

    Examples
    --------
    >>> sr = SenderReport(ssrc=1, ntp_timestamp=1 << 32, rtp_timestamp=160,
    ...                   packet_count=1, octet_count=160)
    >>> len(bytes(sr)), SenderReport.parse(bytes(sr)) == sr
    (28, True)
    """

    ssrc: int
    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    packet_type = RTCP_SR

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "ssrc", _uint(self.ssrc, 32, "ssrc"))
        put(self, "ntp_timestamp", _uint(self.ntp_timestamp, 64, "ntp_timestamp"))
        put(self, "rtp_timestamp", _uint(self.rtp_timestamp, 32, "rtp_timestamp"))
        put(self, "packet_count", _uint(self.packet_count, 32, "packet_count"))
        put(self, "octet_count", _uint(self.octet_count, 32, "octet_count"))
        put(self, "reports", _blocks(self.reports))
        put(self, "extension", _check_extension(self.extension))

    @classmethod
    def parse(cls, data: bytes) -> "SenderReport":
        """Parse one SR packet (whole input).

        Raises
        ------
        RemoteProtocolError
            On a malformed packet.
        """
        count, _, body = _split_header(data, RTCP_SR)
        if len(body) < 24:
            raise RemoteProtocolError(f"RTCP SR body is {len(body)} bytes, shorter than the 24-byte sender info")
        ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = struct.unpack_from("!IIIIII", body, 0)
        blocks, ext = _parse_blocks(body, 24, count)
        return cls(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets, blocks, ext)

    def __bytes__(self) -> bytes:
        body = struct.pack(
            "!IQIII", self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        body += b"".join(bytes(b) for b in self.reports) + self.extension
        return _header(len(self.reports), RTCP_SR, len(body)) + body


@dataclass(frozen=True)
class ReceiverReport:
    """Receiver report, PT 201 (RFC 3550 6.4.2).

    Parameters
    ----------
    ssrc : int
        SSRC of the packet's sender (the receiver writing the report).
    reports : tuple of ReportBlock
        Reception reports, at most 31 (an empty RR is valid).
    extension : bytes
        Profile-specific extension (multiple of 4 bytes).
    """

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    packet_type = RTCP_RR

    def __post_init__(self) -> None:
        object.__setattr__(self, "ssrc", _uint(self.ssrc, 32, "ssrc"))
        object.__setattr__(self, "reports", _blocks(self.reports))
        object.__setattr__(self, "extension", _check_extension(self.extension))

    @classmethod
    def parse(cls, data: bytes) -> "ReceiverReport":
        """Parse one RR packet (whole input).

        Raises
        ------
        RemoteProtocolError
            On a malformed packet.
        """
        count, _, body = _split_header(data, RTCP_RR)
        if len(body) < 4:
            raise RemoteProtocolError("RTCP RR has no SSRC field")
        (ssrc,) = struct.unpack_from("!I", body, 0)
        blocks, ext = _parse_blocks(body, 4, count)
        return cls(ssrc, blocks, ext)

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(b) for b in self.reports) + self.extension
        return _header(len(self.reports), RTCP_RR, len(body)) + body


# --------------------------------------------------------------------------- SDES
@dataclass(frozen=True)
class SdesChunk:
    """One SDES chunk: an SSRC and its items (RFC 3550 6.5).

    Parameters
    ----------
    ssrc : int
        SSRC (or CSRC) described.
    items : tuple of (int, bytes)
        ``(item_type, value)`` pairs, item types 1..255 (:data:`SDES_CNAME` = 1, ...),
        values up to 255 bytes (UTF-8 text; for PRIV the prefix-length, prefix and
        value octets as they are on the wire).
    """

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ssrc", _uint(self.ssrc, 32, "ssrc"))
        try:
            items = tuple(tuple(i) for i in self.items)
        except TypeError:
            raise ParameterError("items must be a sequence of (item_type, value) pairs") from None
        checked = []
        for item in items:
            if len(item) != 2:
                raise ParameterError(f"an SDES item is an (item_type, value) pair, got {item!r}")
            kind, value = item
            kind = _uint(kind, 8, "SDES item type")
            if kind == 0:
                raise ParameterError("SDES item type 0 is the END marker, not an item")
            if isinstance(value, str):
                value = value.encode("utf-8")
            value = _bytes(value, "SDES item value")
            if len(value) > 255:
                raise ParameterError(f"SDES item values are at most 255 bytes, got {len(value)}")
            checked.append((kind, value))
        object.__setattr__(self, "items", tuple(checked))

    def get(self, item_type: int) -> bytes | None:
        """Value of the first item of ``item_type``, or None."""
        for kind, value in self.items:
            if kind == item_type:
                return value
        return None

    @property
    def cname(self) -> str | None:
        """CNAME item decoded as UTF-8 (invalid bytes replaced), or None."""
        v = self.get(SDES_CNAME)
        return None if v is None else v.decode("utf-8", errors="replace")

    def __bytes__(self) -> bytes:
        out = bytearray(struct.pack("!I", self.ssrc))
        for kind, value in self.items:
            out += bytes([kind, len(value)]) + value
        # END item plus padding to the next 32-bit boundary: at least one null octet.
        out += bytes(4 - len(out) % 4)
        return bytes(out)


@dataclass(frozen=True)
class Sdes:
    """Source description, PT 202 (RFC 3550 6.5).

    Parameters
    ----------
    chunks : tuple of SdesChunk
        At most 31 chunks.

    Examples
    --------
    >>> p = Sdes.with_cname(0x1234, "alice@host")
    >>> p.chunks[0].cname, Sdes.parse(bytes(p)) == p
    ('alice@host', True)
    """

    chunks: tuple[SdesChunk, ...] = ()

    packet_type = RTCP_SDES

    def __post_init__(self) -> None:
        try:
            chunks = tuple(self.chunks)
        except TypeError:
            raise ParameterError("chunks must be a sequence of SdesChunk") from None
        if len(chunks) > _MAX_COUNT:
            raise ParameterError(f"an SDES packet carries at most 31 chunks, got {len(chunks)}")
        if not all(isinstance(c, SdesChunk) for c in chunks):
            raise ParameterError("chunks must hold SdesChunk objects")
        object.__setattr__(self, "chunks", chunks)

    @classmethod
    def with_cname(cls, ssrc: int, cname: str) -> "Sdes":
        """An SDES packet with one chunk holding just a CNAME item."""
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname.encode("utf-8")),)),))

    @classmethod
    def parse(cls, data: bytes) -> "Sdes":
        """Parse one SDES packet (whole input).

        Raises
        ------
        RemoteProtocolError
            On a malformed packet (item running past the end, missing END item, ...).
        """
        count, _, body = _split_header(data, RTCP_SDES)
        chunks = []
        pos = 0
        n = len(body)
        for _ in range(count):
            if pos + 4 > n:
                raise RemoteProtocolError(f"RTCP SDES announces {count} chunks but the packet ends early")
            (ssrc,) = struct.unpack_from("!I", body, pos)
            pos += 4
            items = []
            while True:
                if pos >= n:
                    raise RemoteProtocolError("RTCP SDES chunk has no END item before the packet ends")
                kind = body[pos]
                if kind == 0:
                    pos += 1
                    pos = (pos + 3) & ~3  # null octets up to the next 32-bit boundary
                    if pos > n:
                        raise RemoteProtocolError("RTCP SDES chunk padding runs past the packet end")
                    break
                if pos + 2 > n:
                    raise RemoteProtocolError("RTCP SDES item header runs past the packet end")
                length = body[pos + 1]
                if pos + 2 + length > n:
                    raise RemoteProtocolError(
                        f"RTCP SDES item of {length} bytes runs past the packet end"
                    )
                items.append((kind, body[pos + 2 : pos + 2 + length]))
                pos += 2 + length
            chunks.append(SdesChunk(ssrc, tuple(items)))
        if pos != n:
            raise RemoteProtocolError(f"RTCP SDES has {n - pos} bytes after its {count} chunks")
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(c) for c in self.chunks)
        return _header(len(self.chunks), RTCP_SDES, len(body)) + body


# --------------------------------------------------------------------------- BYE / APP
@dataclass(frozen=True)
class Bye:
    """Goodbye, PT 203 (RFC 3550 6.6).

    Parameters
    ----------
    ssrcs : tuple of int
        Sources leaving, at most 31.
    reason : bytes or None
        Optional reason for leaving, UTF-8, at most 255 bytes.
    """

    ssrcs: tuple[int, ...] = ()
    reason: bytes | None = None

    packet_type = RTCP_BYE

    def __post_init__(self) -> None:
        try:
            ssrcs = tuple(_uint(s, 32, "ssrc") for s in self.ssrcs)
        except TypeError:
            raise ParameterError("ssrcs must be a sequence of 32-bit integers") from None
        if len(ssrcs) > _MAX_COUNT:
            raise ParameterError(f"a BYE carries at most 31 SSRCs, got {len(ssrcs)}")
        object.__setattr__(self, "ssrcs", ssrcs)
        if self.reason is not None:
            reason = self.reason.encode("utf-8") if isinstance(self.reason, str) else _bytes(self.reason, "reason")
            if len(reason) > 255:
                raise ParameterError(f"BYE reason is at most 255 bytes, got {len(reason)}")
            object.__setattr__(self, "reason", reason)

    @classmethod
    def parse(cls, data: bytes) -> "Bye":
        """Parse one BYE packet (whole input).

        Raises
        ------
        RemoteProtocolError
            On a malformed packet.
        """
        count, _, body = _split_header(data, RTCP_BYE)
        if len(body) < 4 * count:
            raise RemoteProtocolError(f"RTCP BYE announces {count} SSRCs but has {len(body)} bytes")
        ssrcs = struct.unpack_from(f"!{count}I", body, 0)
        rest = body[4 * count :]
        reason = None
        if rest:
            length = rest[0]
            if 1 + length > len(rest):
                raise RemoteProtocolError(f"RTCP BYE reason of {length} bytes runs past the packet end")
            if any(rest[1 + length :]):
                raise RemoteProtocolError("RTCP BYE has non-zero bytes after its reason")
            if len(rest) != ((1 + length + 3) & ~3):
                raise RemoteProtocolError("RTCP BYE reason padding is longer than needed")
            reason = rest[1 : 1 + length]
        return cls(ssrcs, reason)

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason is not None:
            r = bytes([len(self.reason)]) + self.reason
            body += r + bytes(-len(r) % 4)
        return _header(len(self.ssrcs), RTCP_BYE, len(body)) + body


@dataclass(frozen=True)
class App:
    """Application-defined packet, PT 204 (RFC 3550 6.7).

    Parameters
    ----------
    ssrc : int
        SSRC of the sender.
    name : bytes
        Four ASCII characters.
    subtype : int
        0..31.
    data : bytes
        Application data, a multiple of 4 bytes.
    """

    ssrc: int
    name: bytes = b"    "
    subtype: int = 0
    data: bytes = b""

    packet_type = RTCP_APP

    def __post_init__(self) -> None:
        object.__setattr__(self, "ssrc", _uint(self.ssrc, 32, "ssrc"))
        name = self.name.encode("ascii") if isinstance(self.name, str) else _bytes(self.name, "name")
        if len(name) != 4:
            raise ParameterError(f"APP name must be 4 ASCII characters, got {name!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "subtype", _uint(self.subtype, 5, "subtype"))
        data = _bytes(self.data, "data")
        if len(data) % 4:
            raise ParameterError(f"APP data must be a multiple of 4 bytes, got {len(data)}")
        object.__setattr__(self, "data", data)

    @classmethod
    def parse(cls, data: bytes) -> "App":
        """Parse one APP packet (whole input).

        Raises
        ------
        RemoteProtocolError
            On a malformed packet.
        """
        subtype, _, body = _split_header(data, RTCP_APP)
        if len(body) < 8:
            raise RemoteProtocolError("RTCP APP is shorter than its SSRC and name fields")
        if len(body) % 4:
            raise RemoteProtocolError("RTCP APP data is not a multiple of 4 bytes")
        (ssrc,) = struct.unpack_from("!I", body, 0)
        return cls(ssrc, body[4:8], subtype, body[8:])

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + self.name + self.data
        return _header(self.subtype, RTCP_APP, len(body)) + body


@dataclass(frozen=True)
class UnknownRtcp:
    """An RTCP packet of a type this module does not decode (kept to be ignored).

    Parameters
    ----------
    packet_type : int
        PT field (e.g. 205/206 feedback, 207 XR).
    count : int
        The 5-bit count/format field.
    body : bytes
        Everything after the 4-byte header, padding removed (multiple of 4 bytes when
        built here).
    """

    packet_type: int
    count: int = 0
    body: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "packet_type", _uint(self.packet_type, 8, "packet_type"))
        object.__setattr__(self, "count", _uint(self.count, 5, "count"))
        body = _bytes(self.body, "body")
        if len(body) % 4:
            raise ParameterError(f"RTCP body must be a multiple of 4 bytes, got {len(body)}")
        object.__setattr__(self, "body", body)

    @classmethod
    def parse(cls, data: bytes) -> "UnknownRtcp":
        """Parse one packet of any type without decoding its body."""
        count, pt, body = _split_header(data)
        if len(body) % 4:
            raise RemoteProtocolError(f"RTCP packet type {pt}: body without padding is not 32-bit aligned")
        return cls(pt, count, body)

    def __bytes__(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = Union[SenderReport, ReceiverReport, Sdes, Bye, App, UnknownRtcp]

_PARSERS = {
    RTCP_SR: SenderReport.parse,
    RTCP_RR: ReceiverReport.parse,
    RTCP_SDES: Sdes.parse,
    RTCP_BYE: Bye.parse,
    RTCP_APP: App.parse,
}


# --------------------------------------------------------------------------- compound
def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Split and parse a compound RTCP packet, with the checks of RFC 3550 A.2.

    Parameters
    ----------
    data : bytes
        One UDP payload (after SRTCP unprotect, if any).

    Returns
    -------
    list of RtcpPacket
        The packets in order; types other than SR/RR/SDES/BYE/APP as
        :class:`UnknownRtcp`.

    Raises
    ------
    RemoteProtocolError
        If the first packet is not an SR or RR, a packet is not version 2, a packet other
        than the last has padding, a length field runs past the end or the lengths do not
        add up to ``len(data)``, or a packet body is malformed.

    Examples
    --------
    >>> rr = ReceiverReport(ssrc=7)
    >>> parse_compound(bytes(rr) + bytes(Sdes.with_cname(7, "x"))) [0] == rr
    True
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError(f"RTCP compound packet must be bytes, got {type(data).__name__}")
    data = bytes(data)
    n = len(data)
    if n < _HEADER:
        raise RemoteProtocolError(f"RTCP compound packet is {n} bytes, shorter than one header")
    if data[1] not in (RTCP_SR, RTCP_RR):
        raise RemoteProtocolError(
            f"first RTCP packet has type {data[1]}: a compound packet must start with SR (200) "
            "or RR (201) (RFC 3550 6.1)"
        )
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if n - pos < _HEADER:
            raise RemoteProtocolError(f"RTCP compound packet has {n - pos} trailing bytes, less than a header")
        b0, pt, length = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != 2:
            raise RemoteProtocolError(
                f"RTCP packet {len(packets) + 1} has version {b0 >> 6}, expected 2 (RFC 3550 A.2)"
            )
        size = 4 * (length + 1)
        if pos + size > n:
            raise RemoteProtocolError(
                f"RTCP packet {len(packets) + 1} length field says {size} bytes but only "
                f"{n - pos} remain (truncated or lengths do not add up)"
            )
        if b0 & 0x20 and pos + size != n:
            raise RemoteProtocolError(
                f"RTCP packet {len(packets) + 1} has the padding bit but is not the last one (RFC 3550 A.2)"
            )
        chunk = data[pos : pos + size]
        packets.append(_PARSERS.get(pt, UnknownRtcp.parse)(chunk))
        pos += size
    return packets


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound RTCP packet (``bytes`` of each).

    Raises
    ------
    ParameterError
        If the list is empty, does not start with an SR/RR, or holds something that is
        not an RTCP packet object.
    """
    packets = list(packets)
    if not packets:
        raise ParameterError("a compound RTCP packet needs at least one packet (SR or RR first)")
    allowed = (SenderReport, ReceiverReport, Sdes, Bye, App, UnknownRtcp)
    for p in packets:
        if not isinstance(p, allowed):
            raise ParameterError(f"not an RTCP packet object: {type(p).__name__}")
    if not isinstance(packets[0], (SenderReport, ReceiverReport)):
        raise ParameterError(
            f"a compound RTCP packet must start with SenderReport or ReceiverReport, got {type(packets[0]).__name__}"
        )
    return b"".join(bytes(p) for p in packets)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4 demultiplexing on a shared port: True for RTCP.

    The second octet of an RTCP packet is its packet type, 192..223 for every RTCP
    type in use (SR 200 ... XR 207); for RTP that octet is ``M << 7 | PT``, which falls in
    that range only for PT 64..95, the range RFC 5761 forbids for RTP with rtcp-mux.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


# --------------------------------------------------------------------------- NTP time
def ntp_from_seconds(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) from seconds since 1900-01-01.

    Parameters
    ----------
    t : float
        Seconds since the NTP epoch (add :data:`NTP_UNIX_OFFSET` to Unix time). Values
        from era 1 (after 2036-02-07) wrap modulo 2**32 s, as on the wire.

    Returns
    -------
    int
        ``round(t * 2**32) mod 2**64``.

    Raises
    ------
    ParameterError
        If ``t`` is negative or not finite.

    Examples
    --------
    >>> hex(ntp_from_seconds(1.5))
    '0x180000000'
    """
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise ParameterError(f"t must be seconds since 1900, got {t!r}") from None
    if not math.isfinite(t) or t < 0:
        raise ParameterError(f"t must be finite seconds >= 0 since 1900, got {t!r}")
    secs = math.floor(t)
    frac = round((t - secs) * 4294967296.0)
    return ((secs << 32) + frac) & 0xFFFFFFFFFFFFFFFF


def seconds_from_ntp(ntp: int) -> float:
    """Seconds since 1900-01-01 from a 64-bit NTP timestamp (inverse of :func:`ntp_from_seconds`)."""
    ntp = _uint(ntp, 64, "ntp")
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 4294967296.0


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (16.16 fixed point): the LSR field."""
    return (_uint(ntp, 64, "ntp") >> 16) & 0xFFFFFFFF


def round_trip_time(arrival_ntp_middle32: int, lsr: int, dlsr: int) -> float | None:
    """Round-trip time from a report block, RFC 3550 6.4.1: ``A - LSR - DLSR``.

    Parameters
    ----------
    arrival_ntp_middle32 : int
        A: middle 32 bits of our NTP clock when the report block arrived.
    lsr : int
        LSR field of the block (middle 32 bits of our SR's NTP time it echoes).
    dlsr : int
        DLSR field, 1/65536 s units.

    Returns
    -------
    float or None
        Seconds, modulo-2**32 arithmetic on the 16.16 values; None when ``lsr`` is 0
        (the peer has not received an SR yet). A result that comes out negative (clock
        steps, rounding) is returned as 0.0. Resolution 1/65536 s; the three truncated
        inputs make the error up to about 1.5/65536 s.

    Examples
    --------
    >>> a = ntp_middle32(ntp_from_seconds(1000.25))
    >>> lsr = ntp_middle32(ntp_from_seconds(1000.0))
    >>> round_trip_time(a, lsr, dlsr=int(0.2 * 65536))
    0.0500030517578125
    """
    a = _uint(arrival_ntp_middle32, 32, "arrival_ntp_middle32")
    lsr = _uint(lsr, 32, "lsr")
    dlsr = _uint(dlsr, 32, "dlsr")
    if lsr == 0:
        return None
    rtt = (a - lsr - dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:  # negative in two's complement
        return 0.0
    return rtt / 65536.0


# --------------------------------------------------------------------------- interval
def rtcp_interval(
    members: int,
    senders: int,
    rtcp_bw: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    rng: np.random.Generator,
    *,
    reduced_minimum: bool = False,
) -> float:
    """Randomised RTCP transmission interval, RFC 3550 section 6.3.1 and A.7.

    The deterministic interval is ``avg_rtcp_size * n / bw``, where senders share 25 % of
    the RTCP bandwidth when they are at most a quarter of the members (``n`` = senders
    or receivers, ``bw`` their share), floored at the minimum (5 s, halved before the
    first report). It is then multiplied by a uniform factor in [0.5, 1.5) and divided
    by ``e - 3/2`` to compensate for timer reconsideration.

    Parameters
    ----------
    members : int
        Current session members including us (>= 1).
    senders : int
        Members that sent RTP in the last two report intervals (0..members).
    rtcp_bw : float
        RTCP bandwidth of the whole session in octets per second (5 % of the session
        bandwidth, RFC 3550 6.2), > 0.
    we_sent : bool
        Whether we sent RTP in the last two report intervals.
    avg_rtcp_size : float
        Average compound RTCP size in octets including UDP/IP headers, > 0.
    initial : bool
        True before our first report: the minimum is halved.
    rng : numpy.random.Generator
        Source of the randomisation.
    reduced_minimum : bool, optional
        Use the reduced minimum of RFC 3550 6.2, ``360 / session kbit/s`` s, instead of
        5 s, with the session bandwidth taken as ``rtcp_bw / 0.05`` (octets/s).

    Returns
    -------
    float
        Interval in seconds.

    Raises
    ------
    ParameterError
        On out-of-range arguments or a missing generator.

    Examples
    --------
    >>> import numpy as np
    >>> t = rtcp_interval(2, 2, 500.0, True, 120.0, False, np.random.default_rng(0))
    >>> 2.5 / (math.e - 1.5) <= t < 7.5 / (math.e - 1.5)
    True
    """
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    for name, v in (("members", members), ("senders", senders)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ParameterError(f"{name} must be an integer, got {v!r}")
    if members < 1 or not 0 <= senders <= members:
        raise ParameterError(f"need members >= 1 and 0 <= senders <= members, got {members}, {senders}")
    for name, v in (("rtcp_bw", rtcp_bw), ("avg_rtcp_size", avg_rtcp_size)):
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise ParameterError(f"{name} must be a positive number, got {v!r}") from None
        if not math.isfinite(fv) or fv <= 0:
            raise ParameterError(f"{name} must be a positive finite number, got {v!r}")
    rtcp_bw = float(rtcp_bw)
    sender_fraction = 0.25
    compensation = math.e - 1.5
    if reduced_minimum:
        session_kbps = rtcp_bw / 0.05 * 8.0 / 1000.0
        min_time = 360.0 / session_kbps
    else:
        min_time = RTCP_MIN_TIME
    if initial:
        min_time /= 2.0
    n = int(members)
    bw = rtcp_bw
    if senders <= members * sender_fraction:
        if we_sent:
            bw *= sender_fraction
            n = int(senders)
        else:
            bw *= 1.0 - sender_fraction
            n -= int(senders)
    n = max(n, 1)
    t = max(float(avg_rtcp_size) * n / bw, min_time)
    return t * (rng.random() + 0.5) / compensation
