"""RTP data packets (RFC 3550 section 5.1): parse from bytes, serialize with ``bytes()``.

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  defined by profile (X=1)     |           length              |   RFC 3550 5.3.1
    |                        header extension                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  payload ...                  |  padding (P=1), last octet = count  |

Why our own: aiortc has an RTP packet class, but it is tied to aiortc's internals and
raises bare ``ValueError``; the lab needs a small standalone parser that raises only
:class:`~voicelab.errors.RemoteProtocolError` on bad input (fuzzed with Hypothesis).

Padding octets are written as zeros (RFC 3550 leaves their content free, only the last
octet, the count, matters). So ``RtpPacket.parse(bytes(p)) == p`` always, and
``bytes(RtpPacket.parse(b)) == b`` whenever the padding octets of ``b`` are zero.
The parser does not tell RTP from RTCP on a multiplexed port (RFC 5761); do that before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, RemoteProtocolError

__all__ = ["RtpPacket", "RTP_HEADER_BYTES", "overhead_bytes"]

#: Size of the fixed RTP header in bytes (no CSRC, no extension).
RTP_HEADER_BYTES = 12

_IP_HEADER_BYTES = {4: 20, 6: 40}
_UDP_HEADER_BYTES = 8
_SRTP_AUTH_TAG_BYTES = 10  # AES_CM_128_HMAC_SHA1_80 (RFC 3711, RFC 4568)


def overhead_bytes(ip_version: int = 4, srtp: bool = False) -> int:
    """Bytes each RTP packet adds on the wire beyond its payload.

    IPv4 (20) + UDP (8) + RTP fixed header (12) = 40 bytes; IPv6 (40) makes it 60.
    SRTP with the usual ``AES_CM_128_HMAC_SHA1_80`` suite adds a 10-byte authentication
    tag. Link-layer framing (Ethernet, Wi-Fi, PPP) is not included.

    Parameters
    ----------
    ip_version : {4, 6}, optional
        IP version.
    srtp : bool, optional
        Whether the packets are SRTP with an 80-bit HMAC-SHA1 tag.

    Returns
    -------
    int
        Overhead in bytes per packet.

    Raises
    ------
    ParameterError
        If ``ip_version`` is not 4 or 6.

    Examples
    --------
    >>> overhead_bytes()
    40
    >>> overhead_bytes(ip_version=6, srtp=True)
    70
    >>> (160 + overhead_bytes()) * 8 * 50   # G.711 at 20 ms: wire bitrate in bit/s
    80000
    """
    if ip_version not in _IP_HEADER_BYTES or isinstance(ip_version, bool):
        raise ParameterError(f"ip_version must be 4 or 6, got {ip_version!r}")
    total = _IP_HEADER_BYTES[ip_version] + _UDP_HEADER_BYTES + RTP_HEADER_BYTES
    if srtp:
        total += _SRTP_AUTH_TAG_BYTES
    return total


#: the 12-byte fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_FIXED_HEADER = struct.Struct("!BBHII")


def _check_uint(value: int, bits: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not 0 <= value < (1 << bits):
        raise ParameterError(f"{name} {value} is outside 0..{(1 << bits) - 1}")
    return value


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1).

    Parameters
    ----------
    version : int
        Always 2.
    marker : bool
        M bit (for audio: first packet of a talkspurt, RFC 3551 section 4.1).
    payload_type : int
        PT, 0..127.
    sequence_number : int
        16-bit sequence number.
    timestamp : int
        32-bit RTP timestamp, in units of the payload's clock rate.
    ssrc : int
        32-bit synchronization source.
    csrc : tuple of int
        Contributing sources, at most 15.
    extension_profile : int or None
        16-bit "defined by profile" field of the header extension; None = no extension.
    extension_data : bytes
        Extension body, a multiple of 4 bytes (at most 65535 words).
    payload : bytes
        Payload.
    padding_size : int
        Number of padding octets including the final count octet, 0..255 (0 = no padding).

    Attributes
    ----------
    padding : bool
        P bit, derived: ``padding_size > 0``.
    extension : bool
        X bit, derived: ``extension_profile is not None``.

    Raises
    ------
    ParameterError
        When constructed with an out-of-range field.

    Examples
    --------
    >>> data = bytes.fromhex("80 00 00 01 00 00 00 a0 de ad be ef") + b"\\xff" * 160
    >>> p = RtpPacket.parse(data)
    >>> p.payload_type, p.sequence_number, p.timestamp, hex(p.ssrc), len(p.payload)
    (0, 1, 160, '0xdeadbeef', 160)
    >>> bytes(p) == data
    True
    """

    version: int = 2
    marker: bool = False
    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes = b""
    payload: bytes = b""
    padding_size: int = 0

    def __post_init__(self) -> None:
        put = object.__setattr__
        if self.version != 2:
            raise ParameterError(f"RTP version must be 2, got {self.version!r}")
        put(self, "marker", bool(self.marker))
        put(self, "payload_type", _check_uint(self.payload_type, 7, "payload_type"))
        put(self, "sequence_number", _check_uint(self.sequence_number, 16, "sequence_number"))
        put(self, "timestamp", _check_uint(self.timestamp, 32, "timestamp"))
        put(self, "ssrc", _check_uint(self.ssrc, 32, "ssrc"))
        try:
            csrc = tuple(self.csrc)
        except TypeError:
            raise ParameterError(f"csrc must be a sequence of 32-bit integers, got {self.csrc!r}") from None
        if len(csrc) > 15:
            raise ParameterError(f"an RTP packet carries at most 15 CSRCs, got {len(csrc)}")
        put(self, "csrc", tuple(_check_uint(c, 32, "csrc") for c in csrc))
        if self.extension_profile is not None:
            put(self, "extension_profile", _check_uint(self.extension_profile, 16, "extension_profile"))
        for name in ("extension_data", "payload"):
            value = getattr(self, name)
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ParameterError(f"{name} must be bytes, got {type(value).__name__}")
            put(self, name, bytes(value))
        if self.extension_data and self.extension_profile is None:
            raise ParameterError("extension_data given without extension_profile (needed for the X bit)")
        if len(self.extension_data) % 4 or len(self.extension_data) > 4 * 0xFFFF:
            raise ParameterError(
                f"extension_data is {len(self.extension_data)} bytes: it must be a multiple of 4 "
                f"and at most {4 * 0xFFFF}"
            )
        put(self, "padding_size", _check_uint(self.padding_size, 8, "padding_size"))

    @classmethod
    def _trusted(
        cls,
        *,
        marker: bool,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
    ) -> "RtpPacket":
        """Build a packet from fields already known to be valid (no checks).

        For hot paths inside the lab (the packetizer sends tens of thousands of packets
        per simulated minute); everything else uses the checking constructor.
        """
        self = object.__new__(cls)
        put = object.__setattr__
        put(self, "version", 2)
        put(self, "marker", marker)
        put(self, "payload_type", payload_type)
        put(self, "sequence_number", sequence_number)
        put(self, "timestamp", timestamp)
        put(self, "ssrc", ssrc)
        put(self, "csrc", ())
        put(self, "extension_profile", None)
        put(self, "extension_data", b"")
        put(self, "payload", payload)
        put(self, "padding_size", 0)
        return self

    @property
    def wire_size(self) -> int:
        """Bytes of this packet on the wire above UDP (header + payload + padding)."""
        n = RTP_HEADER_BYTES + 4 * len(self.csrc) + len(self.payload) + self.padding_size
        if self.extension_profile is not None:
            n += 4 + len(self.extension_data)
        return n

    @property
    def padding(self) -> bool:
        """P bit: whether the packet carries padding."""
        return self.padding_size > 0

    @property
    def extension(self) -> bool:
        """X bit: whether the packet carries a header extension."""
        return self.extension_profile is not None

    @property
    def header_bytes(self) -> int:
        """Header size in bytes: 12 + 4 per CSRC + the extension (4 + its data)."""
        n = RTP_HEADER_BYTES + 4 * len(self.csrc)
        if self.extension_profile is not None:
            n += 4 + len(self.extension_data)
        return n

    @classmethod
    def parse(cls, data: bytes) -> "RtpPacket":
        """Parse one RTP packet.

        Parameters
        ----------
        data : bytes
            The whole UDP payload. Bytes after the header are the payload (and padding
            when the P bit is set).

        Returns
        -------
        RtpPacket

        Raises
        ------
        RemoteProtocolError
            (status 400) if the input is not bytes, shorter than its header says, not
            version 2, or has an invalid padding count.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise RemoteProtocolError(f"RTP packet must be bytes, got {type(data).__name__}")
        data = bytes(data)
        n = len(data)
        if n < RTP_HEADER_BYTES:
            raise RemoteProtocolError(
                f"RTP packet is {n} bytes, shorter than the {RTP_HEADER_BYTES}-byte fixed header"
            )
        b0, b1, seq, ts, ssrc = _FIXED_HEADER.unpack_from(data, 0)
        version = b0 >> 6
        if version != 2:
            raise RemoteProtocolError(f"RTP version is {version}, expected 2 (RFC 3550 5.1)")
        has_padding = bool(b0 & 0x20)
        has_extension = bool(b0 & 0x10)
        cc = b0 & 0x0F
        pos = RTP_HEADER_BYTES
        if n < pos + 4 * cc:
            raise RemoteProtocolError(
                f"RTP packet is {n} bytes, too short for its {cc} CSRC identifiers "
                f"(header needs {pos + 4 * cc})"
            )
        csrc = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        profile = None
        ext_data = b""
        if has_extension:
            if n < pos + 4:
                raise RemoteProtocolError(
                    f"RTP packet is {n} bytes, too short for the header extension it announces "
                    f"(needs {pos + 4})"
                )
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if n < pos + 4 * words:
                raise RemoteProtocolError(
                    f"RTP header extension announces {words} words ({4 * words} bytes) but only "
                    f"{n - pos} bytes follow"
                )
            ext_data = data[pos : pos + 4 * words]
            pos += 4 * words
        end = n
        padding_size = 0
        if has_padding:
            if n == pos:
                raise RemoteProtocolError("RTP padding bit is set but there is no padding count octet")
            padding_size = data[-1]
            if padding_size == 0:
                raise RemoteProtocolError(
                    "RTP padding count is 0: with the P bit set it must count itself (>= 1)"
                )
            if padding_size > n - pos:
                raise RemoteProtocolError(
                    f"RTP padding count {padding_size} is larger than the {n - pos} bytes after "
                    "the header"
                )
            end = n - padding_size
        # every field is in range by construction: skip the checking constructor (hot path;
        # the instance dict is filled at once, as the frozen dataclass's own __init__ would)
        self = object.__new__(cls)
        self.__dict__.update(version=2, marker=bool(b1 & 0x80), payload_type=b1 & 0x7F, sequence_number=seq,
                             timestamp=ts, ssrc=ssrc, csrc=csrc, extension_profile=profile, extension_data=ext_data,
                             payload=data[pos:end], padding_size=padding_size)
        return self

    def __bytes__(self) -> bytes:
        if not self.csrc and self.extension_profile is None and not self.padding_size:  # the usual packet
            return _FIXED_HEADER.pack(0x80, (0x80 if self.marker else 0) | self.payload_type, self.sequence_number,
                                      self.timestamp, self.ssrc) + self.payload
        b0 = (self.version << 6) | (0x20 if self.padding else 0) | (0x10 if self.extension else 0) | len(self.csrc)
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [struct.pack("!BBHII", b0, b1, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes([self.padding_size]))
        return b"".join(parts)
