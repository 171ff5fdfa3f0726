"""Write calls as pcap files that Wireshark and tshark open.

Sans-IO packet building (IPv4 + UDP headers with correct checksums around a payload) and
a small pcap writer (classic libpcap format, link type ``LINKTYPE_RAW`` = 101: each record
is an IPv4 packet). Timestamps are whatever clock the caller uses (loop time, virtual
time), written as seconds + microseconds.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import BinaryIO, Iterable

from ..errors import ParameterError

__all__ = ["PcapWriter", "udp_ipv4_packet", "write_pcap", "LINKTYPE_RAW"]

LINKTYPE_RAW = 101
_MAGIC = 0xA1B2C3D4


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip4(host: str) -> bytes:
    try:
        return ipaddress.IPv4Address(host).packed
    except ValueError:
        raise ParameterError(f"pcap: {host!r} is not an IPv4 address") from None


def udp_ipv4_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes, *, ident: int = 0, ttl: int = 64) -> bytes:
    """An IPv4/UDP packet carrying ``payload``, with valid IP and UDP checksums.

    Parameters
    ----------
    src, dst : (IPv4 address, port)
    payload : bytes
        At most 65507 bytes.
    ident : int
        IP identification field (0..65535).
    """
    if len(payload) > 65507:
        raise ParameterError(f"pcap: a UDP payload of {len(payload)} bytes does not fit in IPv4")
    s_ip, d_ip = _ip4(src[0]), _ip4(dst[0])
    udp_len = 8 + len(payload)
    pseudo = s_ip + d_ip + struct.pack("!BBH", 0, 17, udp_len)
    udp_head = struct.pack("!HHHH", src[1], dst[1], udp_len, 0)
    csum = _checksum(pseudo + udp_head + payload) or 0xFFFF
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, csum) + payload
    total = 20 + len(udp)
    ip_head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, 17, 0, s_ip, d_ip)
    ip_head = ip_head[:10] + struct.pack("!H", _checksum(ip_head)) + ip_head[12:]
    return ip_head + udp


class PcapWriter:
    """Classic pcap writer (microsecond timestamps, raw IPv4 link type).

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> w = PcapWriter(buf)
    >>> w.write_udp(0.5, ("192.0.2.1", 5060), ("192.0.2.2", 5060), b"OPTIONS ...")
    >>> len(buf.getvalue())  # 24-byte header + 16-byte record header + 20 + 8 + 11
    79
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._ident = 0
        out.write(struct.pack("<IHHiIII", _MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_RAW))

    def write_packet(self, t: float, packet: bytes) -> None:
        """One record: an IPv4 packet captured at time ``t`` (seconds)."""
        if t < 0:
            raise ParameterError(f"pcap: timestamp {t} is negative")
        sec = int(t)
        usec = int(round((t - sec) * 1e6))
        if usec == 1_000_000:
            sec, usec = sec + 1, 0
        self.out.write(struct.pack("<IIII", sec, usec, len(packet), len(packet)) + packet)

    def write_udp(self, t: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        """One UDP datagram as an IPv4 packet."""
        self._ident = (self._ident + 1) & 0xFFFF
        self.write_packet(t, udp_ipv4_packet(src, dst, payload, ident=self._ident))


def write_pcap(path: str | Path, datagrams: Iterable[tuple[float, tuple[str, int], tuple[str, int], bytes]]) -> Path:
    """Write ``(time_s, src, dst, payload)`` datagrams, sorted by time, to ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as fh:
        w = PcapWriter(fh)
        for t, src, dst, payload in sorted(datagrams, key=lambda d: d[0]):
            w.write_udp(t, src, dst, payload)
    return p
