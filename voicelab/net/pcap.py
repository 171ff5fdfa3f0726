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

__all__ = ["PcapWriter", "udp_ipv4_packet", "tcp_ipv4_packet", "write_pcap", "LINKTYPE_RAW"]

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


#: TCP flag bits (RFC 9293 3.1).
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10


def tcp_ipv4_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes, *, seq: int, ack: int,
                    flags: int = TCP_PSH | TCP_ACK, ident: int = 0, ttl: int = 64, window: int = 65535) -> bytes:
    """An IPv4/TCP segment (20-byte TCP header, no options) with valid checksums.

    Parameters
    ----------
    src, dst : (IPv4 address, port)
    payload : bytes
        At most 65495 bytes.
    seq, ack : int
        Sequence and acknowledgement numbers (mod 2**32).
    flags : int
        TCP flag bits (``TCP_SYN``, ``TCP_ACK``, ...).
    """
    if len(payload) > 65495:
        raise ParameterError(f"pcap: a TCP payload of {len(payload)} bytes does not fit in one IPv4 packet")
    s_ip, d_ip = _ip4(src[0]), _ip4(dst[0])
    seg_len = 20 + len(payload)
    head = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, window, 0, 0)
    pseudo = s_ip + d_ip + struct.pack("!BBH", 0, 6, seg_len)
    csum = _checksum(pseudo + head + payload)
    tcp = head[:16] + struct.pack("!H", csum) + head[18:] + payload
    total = 20 + len(tcp)
    ip_head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, 6, 0, s_ip, d_ip)
    ip_head = ip_head[:10] + struct.pack("!H", _checksum(ip_head)) + ip_head[12:]
    return ip_head + tcp


class _TcpFlows:
    """Synthetic TCP streams for messages captured above a stream transport (SIP over
    TCP, and the plaintext inside TLS or WebSocket): a three-way handshake before a
    flow's first message, then one segment per message with consistent sequence numbers."""

    def __init__(self, writer: "PcapWriter") -> None:
        self.w = writer
        self.next_seq: dict[tuple, int] = {}

    def write(self, t: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        a, b = tuple(src), tuple(dst)
        if (a, b) not in self.next_seq:  # the first segment of this connection: handshake
            isn_a, isn_b = 1000, 5000
            self.next_seq[(a, b)], self.next_seq[(b, a)] = isn_a + 1, isn_b + 1
            self.w.write_tcp(t, a, b, b"", seq=isn_a, ack=0, flags=TCP_SYN)
            self.w.write_tcp(t, b, a, b"", seq=isn_b, ack=isn_a + 1, flags=TCP_SYN | TCP_ACK)
            self.w.write_tcp(t, a, b, b"", seq=isn_a + 1, ack=isn_b + 1, flags=TCP_ACK)
        seq, ack = self.next_seq[(a, b)], self.next_seq[(b, a)]
        for i in range(0, len(payload), 65000):
            chunk = payload[i:i + 65000]
            self.w.write_tcp(t, a, b, chunk, seq=seq, ack=ack)
            seq += len(chunk)
        self.next_seq[(a, b)] = seq


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

    def write_tcp(self, t: float, src: tuple[str, int], dst: tuple[str, int], payload: bytes, *, seq: int, ack: int,
                  flags: int = TCP_PSH | TCP_ACK) -> None:
        """One TCP segment as an IPv4 packet (see :func:`tcp_ipv4_packet`)."""
        self._ident = (self._ident + 1) & 0xFFFF
        self.write_packet(t, tcp_ipv4_packet(src, dst, payload, seq=seq, ack=ack, flags=flags, ident=self._ident))


def write_pcap(path: str | Path, datagrams: Iterable[tuple]) -> Path:
    """Write captured packets, sorted by time, to ``path``.

    Each item is ``(time_s, src, dst, payload)`` for a UDP datagram, or
    ``(time_s, src, dst, payload, "tcp")`` for a message that travelled on a stream
    (SIP over TCP, TLS or WebSocket, as the endpoint saw it: plaintext). Stream messages
    are written as one synthetic TCP connection per address pair (handshake, then one
    segment per message), so tshark and Wireshark dissect the SIP in them.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as fh:
        w = PcapWriter(fh)
        flows = _TcpFlows(w)
        for item in sorted(datagrams, key=lambda d: d[0]):
            t, src, dst, payload = item[:4]
            if len(item) > 4 and item[4] == "tcp":
                flows.write(t, src, dst, payload)
            else:
                w.write_udp(t, src, dst, payload)
    return p
