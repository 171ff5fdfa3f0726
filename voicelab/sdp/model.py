"""Session descriptions (SDP, RFC 8866): parse from text, serialize with ``str()``/``bytes()``.

An SDP body is a list of ``<type>=<value>`` lines, session part first, then one
section per ``m=`` line (RFC 8866 section 5)::

    v=0                                              protocol version, always 0
    o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>
    s=<session name>
    [i= u= e=* p=*]                                  free text, kept as written
    [c=<nettype> <addrtype> <connection-address>]    session default for every m=
    b=<bwtype>:<bandwidth>*                          kbit/s
    t=<start> <stop> [r=...*]                        one or more (SIP uses t=0 0)
    [z= k=]
    a=<name>[:<value>]*                              session attributes
    m=<media> <port>[/<count>] <proto> <fmt> ...     then per media: i= c=* b=* k= a=*

Why our own: aiortc's ``sdp.py`` is shaped around WebRTC bundles and raises bare
``ValueError``; the SIP path needs a plain RFC 8866 model whose parser raises only
:class:`~voicelab.errors.RemoteProtocolError`, keeps every attribute in order, and
round-trips exactly.

What "lossless" means here
--------------------------
Lines are written in the order RFC 8866 prescribes, with CRLF endings, fields of
``o=``/``c=``/``m=``/``t=`` separated by one space, and numbers without leading zeros.
An input in that canonical form (every golden SDP in the tests, every SDP real SIP
phones and browsers send) comes back byte for byte: ``bytes(parse(b)) == b``. Other
inputs (LF endings, lines out of order, double spaces, blank lines) are accepted and
come back normalized; ``parse(bytes(parse(b))) == parse(b)`` always holds. Attribute
values, free-text fields, ``k=``, ``r=`` and ``z=`` are kept exactly as written. Bytes
that are not UTF-8 (a legacy ``a=charset``) survive the round trip through
``surrogateescape``.

Leniency versus strictness
--------------------------
Accepted: LF line endings, a missing final line ending, blank lines, session-level
lines in any order, ``m=`` lines without formats when the port is 0 (a common way to
write a rejected stream). Rejected (:class:`RemoteProtocolError`, ``status_code=400``):
a first line other than ``v=0``; a missing ``o=``, ``s=`` or ``t=``; an unknown type
letter (RFC 8866 section 5: a parser must reject a description with a type letter it
does not understand); a repeated single-valued line; malformed ``o=``, ``c=``, ``b=``,
``t=``, ``m=`` lines; malformed ``a=rtpmap``, ``a=fmtp``, ``a=ptime``, ``a=maxptime``,
``a=rtcp``; an RTP ``m=`` format that is not a payload type 0..127; an active media
stream with no ``c=`` at either level; NUL or a lone CR inside a line.

Why 400 for malformed SDP: RFC 3261 section 21.4.1 defines 400 Bad Request as "could not
be understood due to malformed syntax", which covers the body; 488 Not Acceptable Here
(section 21.4.26, and 13.3.1.1 for INVITE offers) is for a description that is well
formed but proposes nothing the UAS can accept. :mod:`voicelab.sdp.negotiate` raises
488 for the latter. ``a=crypto`` is checked only when read (:attr:`MediaDescription.crypto`)
because RFC 4568 asks an answerer to ignore crypto attributes it cannot use rather
than fail the whole body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..errors import ParameterError, RemoteProtocolError
from .crypto import CryptoAttribute

__all__ = [
    "SessionDescription",
    "MediaDescription",
    "Origin",
    "Connection",
    "Bandwidth",
    "Timing",
    "RtpMap",
    "Rtcp",
    "DIRECTIONS",
    "STATIC_PAYLOAD_TYPES",
    "parse_fmtp_params",
    "format_fmtp_params",
]

#: The four direction attributes (RFC 8866 sections 6.7.1-6.7.4).
DIRECTIONS: tuple[str, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+", re.ASCII)
_PROTO = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?", re.ASCII)
_RTPMAP = re.compile(r"([0-9]{1,3}) +([^/ ]+)/([0-9]{1,10})(?:/([0-9]{1,3}))? *", re.ASCII)

_SESSION_SINGLE = {"v", "o", "s", "i", "u", "c", "z", "k"}
_MEDIA_SINGLE = {"i", "k"}
_SESSION_TYPES = set("vosiuepcbtrzka")
_MEDIA_TYPES = set("icbka")


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_code=400)


def _int(text: str, what: str, *, lo: int = 0, hi: int | None = None) -> int:
    if not _DIGITS.fullmatch(text):
        raise _bad(f"SDP {what} {text[:40]!r} is not a decimal number")
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        raise _bad(f"SDP {what} {value} is outside {lo}..{hi}")
    return value


def _fields(value: str) -> list[str]:
    return [f for f in value.split(" ") if f]


# --------------------------------------------------------------------- static PTs
#: RFC 3551 section 6 static payload types: PT -> (encoding name, clock rate Hz, channels).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None),
    28: ("nv", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}


# --------------------------------------------------------------------- small parts
@dataclass
class Origin:
    """The ``o=`` line (RFC 8866 section 5.2).

    Attributes
    ----------
    username : str
        Login name of the originator, ``"-"`` when none.
    sess_id : int
        Numeric session id; together with username and address it names the session.
    sess_version : int
        Version of this description; incremented on every change (RFC 3264 section 8).
    nettype, addrtype : str
        ``"IN"`` and ``"IP4"`` / ``"IP6"``.
    address : str
        Address of the originating host.
    """

    username: str = "-"
    sess_id: int = 0
    sess_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, value: str) -> "Origin":
        """Parse an ``o=`` value; raises :class:`RemoteProtocolError` (400) if malformed."""
        f = _fields(value)
        if len(f) != 6:
            raise _bad(f"SDP o= needs 6 fields '<username> <sess-id> <sess-version> IN IP4 <address>', got {value[:80]!r}")
        return cls(f[0], _int(f[1], "o= sess-id"), _int(f[2], "o= sess-version"), f[3], f[4], f[5])

    def __str__(self) -> str:
        return f"{self.username} {self.sess_id} {self.sess_version} {self.nettype} {self.addrtype} {self.address}"


@dataclass
class Connection:
    """A ``c=`` line (RFC 8866 section 5.7).

    Attributes
    ----------
    nettype, addrtype : str
        ``"IN"`` and ``"IP4"`` / ``"IP6"``.
    address : str
        Connection address as written, possibly with ``/ttl`` or ``/count`` (multicast).
    """

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, value: str) -> "Connection":
        """Parse a ``c=`` value; raises :class:`RemoteProtocolError` (400) if malformed."""
        f = _fields(value)
        if len(f) != 3:
            raise _bad(f"SDP c= needs '<nettype> <addrtype> <address>', got {value[:80]!r}")
        return cls(*f)

    @property
    def host(self) -> str:
        """The address without ``/ttl`` or ``/count``."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """True for the RFC 2543 hold address ``0.0.0.0`` (RFC 3264 section 8.4)."""
        return self.addrtype == "IP4" and self.host == "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass
class Bandwidth:
    """A ``b=`` line (RFC 8866 section 5.8): ``bwtype`` (``AS``, ``CT``, ``TIAS``, ...) and value."""

    bwtype: str
    bandwidth: int

    @classmethod
    def parse(cls, value: str) -> "Bandwidth":
        """Parse a ``b=`` value; raises :class:`RemoteProtocolError` (400) if malformed."""
        bwtype, sep, bw = value.partition(":")
        if not sep or not _TOKEN.fullmatch(bwtype):
            raise _bad(f"SDP b= needs '<bwtype>:<bandwidth>', got {value[:80]!r}")
        return cls(bwtype, _int(bw, "b= bandwidth"))

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass
class Timing:
    """A ``t=`` line and the ``r=`` lines after it (RFC 8866 sections 5.9, 5.10).

    Attributes
    ----------
    start, stop : int
        NTP seconds; ``0 0`` (the SIP usage) means a permanent session.
    repeats : list of str
        ``r=`` values as written.
    """

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, value: str) -> "Timing":
        """Parse a ``t=`` value; raises :class:`RemoteProtocolError` (400) if malformed."""
        f = _fields(value)
        if len(f) != 2:
            raise _bad(f"SDP t= needs '<start> <stop>', got {value[:80]!r}")
        return cls(_int(f[0], "t= start"), _int(f[1], "t= stop"))


@dataclass(frozen=True)
class RtpMap:
    """An ``a=rtpmap`` value (RFC 8866 section 6.6).

    Attributes
    ----------
    payload_type : int
        RTP payload type 0..127.
    encoding_name : str
        As written (compare case-insensitively).
    clock_rate : int
        RTP clock rate in Hz.
    channels : int or None
        Encoding parameters (audio channel count) when written, else None (means 1).
    """

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> "RtpMap":
        """Parse ``"<pt> <name>/<rate>[/<channels>]"``; raises :class:`RemoteProtocolError` (400)."""
        m = _RTPMAP.fullmatch(value)
        if m is None:
            raise _bad(f"a=rtpmap:{value[:80]!r} is not '<payload type> <encoding>/<clock rate>[/<channels>]'")
        pt = int(m.group(1))
        if pt > 127:
            raise _bad(f"a=rtpmap payload type {pt} is outside 0..127")
        rate = int(m.group(3))
        if rate == 0:
            raise _bad("a=rtpmap clock rate must be above 0 Hz")
        ch = None if m.group(4) is None else int(m.group(4))
        if ch == 0:
            raise _bad("a=rtpmap channel count must be at least 1")
        return cls(pt, m.group(2), rate, ch)

    @property
    def channel_count(self) -> int:
        """Channels, 1 when not written (RFC 8866 section 6.6)."""
        return 1 if self.channels is None else self.channels

    @property
    def value(self) -> str:
        """The text after ``<pt> `` (``"opus/48000/2"``)."""
        base = f"{self.encoding_name}/{self.clock_rate}"
        return base if self.channels is None else f"{base}/{self.channels}"

    def __str__(self) -> str:
        return f"{self.payload_type} {self.value}"


@dataclass(frozen=True)
class Rtcp:
    """An ``a=rtcp`` value (RFC 3605): the RTCP port, optionally with its own address.

    Attributes
    ----------
    port : int
        UDP port for RTCP.
    nettype, addrtype, address : str or None
        Given together, or all None (then the media's connection address applies).
    """

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    @classmethod
    def parse(cls, value: str) -> "Rtcp":
        """Parse ``"<port> [IN IP4 <address>]"``; raises :class:`RemoteProtocolError` (400)."""
        f = _fields(value)
        if len(f) not in (1, 4):
            raise _bad(f"a=rtcp:{value[:80]!r} is not '<port> [IN <addrtype> <address>]' (RFC 3605)")
        port = _int(f[0], "a=rtcp port", hi=65535)
        if len(f) == 1:
            return cls(port)
        return cls(port, f[1], f[2], f[3])

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"


def parse_fmtp_params(params: str) -> list[tuple[str, str | None]]:
    """Split format parameters into ordered ``(key, value)`` pairs.

    ``"minptime=10;useinbandfec=1"`` gives ``[("minptime", "10"), ("useinbandfec", "1")]``;
    a part without ``=`` such as telephone-event's ``"0-16"`` gives ``("0-16", None)``.
    Spaces around ``;`` and ``=`` are dropped; empty parts are skipped.

    Parameters
    ----------
    params : str
        The text after ``a=fmtp:<fmt> ``.

    Returns
    -------
    list of (str, str or None)
    """
    out: list[tuple[str, str | None]] = []
    for part in params.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        out.append((key.strip(), val.strip() if sep else None))
    return out


def format_fmtp_params(pairs: Iterable[tuple[str, str | None]]) -> str:
    """Join ``(key, value)`` pairs back into ``"k=v;k2=v2"`` (the inverse of :func:`parse_fmtp_params`)."""
    return ";".join(k if v is None else f"{k}={v}" for k, v in pairs)


# --------------------------------------------------------------------- attributes
def _check_attribute(name: str, value: str | None, *, rtp: bool = True) -> None:
    """Validate the attributes this module gives typed access to (400 when malformed)."""
    if name == "rtpmap":
        if value is None:
            raise _bad("a=rtpmap needs a value '<payload type> <encoding>/<clock rate>'")
        RtpMap.parse(value)
    elif name == "fmtp":
        if value is None or not value.split(" ", 1)[0]:
            raise _bad("a=fmtp needs a value '<format> <parameters>'")
    elif name in ("ptime", "maxptime"):
        if value is None or not _NUMBER.fullmatch(value.strip()):
            raise _bad(f"a={name} needs a packet time in ms, got {value!r:.40}")
    elif name == "rtcp":
        if value is None:
            raise _bad("a=rtcp needs a port (RFC 3605)")
        Rtcp.parse(value)


class _Attributes:
    """Ordered ``(name, value|None)`` attribute access shared by session and media."""

    attributes: list[tuple[str, str | None]]

    def has(self, name: str) -> bool:
        """True when an attribute called ``name`` is present (flag or with a value)."""
        return any(n == name for n, _ in self.attributes)

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first ``a=<name>``; ``default`` when absent or a flag."""
        for n, v in self.attributes:
            if n == name:
                return default if v is None else v
        return default

    def get_all(self, name: str) -> list[str | None]:
        """Values of every ``a=<name>`` in order (None for flags)."""
        return [v for n, v in self.attributes if n == name]

    def add(self, name: str, value: str | None = None) -> None:
        """Append ``a=<name>[:<value>]``.

        Raises
        ------
        ParameterError
            If the name is not an SDP token or the value holds a line break or NUL.
        """
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ParameterError(f"SDP attribute name must be a token such as 'rtpmap', got {name!r}")
        if value is not None and (not isinstance(value, str) or any(c in value for c in "\r\n\x00")):
            raise ParameterError(f"SDP attribute value must be one line of text, got {value!r:.60}")
        self.attributes.append((name, value))

    def remove(self, name: str) -> None:
        """Remove every ``a=<name>``."""
        self.attributes[:] = [(n, v) for n, v in self.attributes if n != name]

    def set(self, name: str, value: str | None = None) -> None:
        """Replace the first ``a=<name>`` (dropping any others), or append it."""
        for i, (n, _) in enumerate(self.attributes):
            if n == name:
                self.attributes[i] = (name, value)
                self.attributes[:] = [a for j, a in enumerate(self.attributes) if j <= i or a[0] != name]
                return
        self.add(name, value)

    @property
    def direction(self) -> str | None:
        """The direction attribute written at this level, or None when there is none."""
        for n, _ in self.attributes:
            if n in DIRECTIONS:
                return n
        return None

    def set_direction(self, direction: str | None) -> None:
        """Replace any direction attribute by ``direction`` (None removes it).

        Raises
        ------
        ParameterError
            If ``direction`` is not one of :data:`DIRECTIONS`.
        """
        if direction is not None and direction not in DIRECTIONS:
            raise ParameterError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        idx = next((i for i, (n, _) in enumerate(self.attributes) if n in DIRECTIONS), None)
        rest = [(n, v) for n, v in self.attributes if n not in DIRECTIONS]
        if direction is not None:
            rest.insert(len(rest) if idx is None else min(idx, len(rest)), (direction, None))
        self.attributes[:] = rest

    @property
    def fingerprint(self) -> str | None:
        """``a=fingerprint`` value as written (DTLS-SRTP, RFC 8122), or None."""
        return self.get("fingerprint")

    @property
    def setup(self) -> str | None:
        """``a=setup`` value (``actpass``/``active``/``passive``, RFC 4145), or None."""
        return self.get("setup")


# --------------------------------------------------------------------- media
@dataclass
class MediaDescription(_Attributes):
    """One media section: the ``m=`` line and the lines after it.

    Attributes
    ----------
    media : str
        ``"audio"``, ``"video"``, ``"application"``, ...
    port : int
        Transport port; 0 rejects or disables the stream (RFC 3264 section 6).
    proto : str
        ``"RTP/AVP"``, ``"RTP/SAVP"``, ``"UDP/TLS/RTP/SAVPF"``, ...
    formats : list of str
        Media formats; RTP payload type numbers for RTP protocols.
    port_count : int or None
        The ``/<count>`` after the port, when written.
    title : str or None
        The media ``i=`` line.
    connections : list of Connection
        Media-level ``c=`` lines (usually zero or one).
    bandwidths : list of Bandwidth
        Media-level ``b=`` lines.
    key : str or None
        The obsolete ``k=`` line, as written.
    attributes : list of (str, str or None)
        ``a=`` lines in order; value None for a flag such as ``a=sendrecv``.

    Examples
    --------
    >>> m = MediaDescription("audio", 49170, "RTP/AVP", ["0", "101"])
    >>> m.add("rtpmap", "101 telephone-event/8000")
    >>> m.add("fmtp", "101 0-16")
    >>> m.rtpmap(0).encoding_name, m.fmtp(101)
    ('PCMU', [('0-16', None)])
    """

    media: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    title: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    # ---------------------------------------------------------------- m= line
    @classmethod
    def _parse_m(cls, value: str) -> "MediaDescription":
        f = _fields(value)
        if len(f) < 3:
            raise _bad(f"SDP m= needs '<media> <port> <proto> <fmt> ...', got {value[:80]!r}")
        media, port_s, proto, *formats = f
        if not _TOKEN.fullmatch(media):
            raise _bad(f"SDP m= media {media[:40]!r} is not a token")
        port_s, slash, count_s = port_s.partition("/")
        port = _int(port_s, "m= port", hi=65535)
        count = _int(count_s, "m= port count", lo=1) if slash else None
        if not _PROTO.fullmatch(proto):
            raise _bad(f"SDP m= proto {proto[:40]!r} is not a protocol name such as RTP/AVP")
        if not formats and port != 0:
            raise _bad(f"SDP m= line {value[:80]!r} lists no media formats")
        md = cls(media=media, port=port, proto=proto, formats=list(formats), port_count=count)
        if md.is_rtp:
            for fmt in formats:
                _int(fmt, "m= RTP payload type", hi=127)
        return md

    @property
    def m_line(self) -> str:
        """The ``m=`` value."""
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join([self.media, str(port), self.proto, *self.formats])

    def lines(self) -> Iterator[str]:
        """The section's lines without line endings, in RFC 8866 order."""
        yield "m=" + self.m_line
        if self.title is not None:
            yield "i=" + self.title
        for c in self.connections:
            yield f"c={c}"
        for b in self.bandwidths:
            yield f"b={b}"
        if self.key is not None:
            yield "k=" + self.key
        for n, v in self.attributes:
            yield f"a={n}" if v is None else f"a={n}:{v}"

    # ---------------------------------------------------------------- typed
    @property
    def is_rtp(self) -> bool:
        """True for RTP transports (``RTP/AVP``, ``RTP/SAVP``, ``UDP/TLS/RTP/SAVPF``, ...)."""
        return "RTP/" in self.proto.upper()

    @property
    def connection(self) -> Connection | None:
        """The first media-level ``c=``, or None (then the session's applies)."""
        return self.connections[0] if self.connections else None

    @property
    def payload_types(self) -> list[int]:
        """The formats as RTP payload type numbers (RTP transports only).

        Raises
        ------
        RemoteProtocolError
            (400) if a format is not a number 0..127.
        """
        return [_int(f, "m= RTP payload type", hi=127) for f in self.formats]

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """Every ``a=rtpmap`` by payload type (the first wins when repeated)."""
        out: dict[int, RtpMap] = {}
        for v in self.get_all("rtpmap"):
            if v is not None:
                r = RtpMap.parse(v)
                out.setdefault(r.payload_type, r)
        return out

    def rtpmap(self, payload_type: int, *, static: bool = True) -> RtpMap | None:
        """The mapping for ``payload_type``.

        Parameters
        ----------
        payload_type : int
            RTP payload type.
        static : bool, optional
            Fall back to the RFC 3551 static table when there is no ``a=rtpmap``.

        Returns
        -------
        RtpMap or None
        """
        r = self.rtpmaps.get(int(payload_type))
        if r is None and static and int(payload_type) in STATIC_PAYLOAD_TYPES:
            name, rate, ch = STATIC_PAYLOAD_TYPES[int(payload_type)]
            r = RtpMap(int(payload_type), name, rate, None if ch == 1 else ch)
        return r

    def fmtp_raw(self, fmt: int | str) -> str | None:
        """The parameter text of ``a=fmtp:<fmt> ...`` for one format, or None."""
        key = str(fmt)
        for v in self.get_all("fmtp"):
            if v is None:
                continue
            f, _, params = v.partition(" ")
            if f == key:
                return params
        return None

    def fmtp(self, fmt: int | str) -> list[tuple[str, str | None]]:
        """Format parameters of one format as ordered ``(key, value)`` pairs (empty if none)."""
        raw = self.fmtp_raw(fmt)
        return [] if raw is None else parse_fmtp_params(raw)

    def _number(self, name: str) -> float | None:
        v = self.get(name)
        if v is None:
            return None
        if not _NUMBER.fullmatch(v.strip()):
            raise _bad(f"a={name} needs a packet time in ms, got {v!r:.40}")
        return float(v.strip())

    @property
    def ptime(self) -> float | None:
        """``a=ptime`` in ms (audio per packet the sender of this SDP wants to receive), or None."""
        return self._number("ptime")

    @property
    def maxptime(self) -> float | None:
        """``a=maxptime`` in ms, or None."""
        return self._number("maxptime")

    @property
    def rtcp(self) -> Rtcp | None:
        """``a=rtcp`` (RFC 3605), or None (then RTCP is on ``port + 1``)."""
        v = self.get("rtcp")
        return None if v is None else Rtcp.parse(v)

    @property
    def rtcp_mux(self) -> bool:
        """True when ``a=rtcp-mux`` (RFC 5761) is present."""
        return self.has("rtcp-mux")

    @property
    def crypto(self) -> list[CryptoAttribute]:
        """Every ``a=crypto`` (RFC 4568), parsed.

        Raises
        ------
        RemoteProtocolError
            (400) if one is malformed; read :meth:`get_all` ``("crypto")`` to skip bad ones.
        """
        return [CryptoAttribute.parse(v or "") for v in self.get_all("crypto")]

    @property
    def candidates(self) -> list[str]:
        """``a=candidate`` values as written (ICE, RFC 8839; parsed by the WebRTC layer)."""
        return [v for v in self.get_all("candidate") if v is not None]

    @property
    def mid(self) -> str | None:
        """``a=mid`` (RFC 5888), or None."""
        return self.get("mid")


# --------------------------------------------------------------------- session
@dataclass
class SessionDescription(_Attributes):
    """A whole SDP body (RFC 8866).

    Attributes
    ----------
    origin : Origin
        The ``o=`` line.
    session_name : str
        The ``s=`` line (``"-"`` when there is no name).
    version : int
        The ``v=`` line, always 0.
    information, uri : str or None
        ``i=`` and ``u=``.
    emails, phones : list of str
        ``e=`` and ``p=`` lines.
    connection : Connection or None
        Session-level ``c=``, the default for every media section.
    bandwidths : list of Bandwidth
        Session-level ``b=``.
    timings : list of Timing
        ``t=`` lines with their ``r=`` lines (at least one).
    zone, key : str or None
        ``z=`` and ``k=`` as written.
    attributes : list of (str, str or None)
        Session-level ``a=`` lines.
    media : list of MediaDescription
        The media sections in order.

    Examples
    --------
    >>> sdp = SessionDescription.parse(
    ...     "v=0\\r\\no=- 1 1 IN IP4 192.0.2.1\\r\\ns=-\\r\\nc=IN IP4 192.0.2.1\\r\\n"
    ...     "t=0 0\\r\\nm=audio 4000 RTP/AVP 0\\r\\na=sendonly\\r\\n")
    >>> sdp.media[0].rtpmap(0).encoding_name, sdp.effective_direction(0)
    ('PCMU', 'sendonly')
    >>> bytes(sdp).endswith(b"a=sendonly\\r\\n")
    True
    """

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    # ---------------------------------------------------------------- parse
    @classmethod
    def parse(cls, data: str | bytes | bytearray | memoryview) -> "SessionDescription":
        """Parse an SDP body.

        Parameters
        ----------
        data : str or bytes
            The body; CRLF or LF line endings. Bytes are decoded as UTF-8, with
            undecodable bytes kept (``surrogateescape``) so they serialize back.

        Returns
        -------
        SessionDescription

        Raises
        ------
        RemoteProtocolError
            (``status_code=400``) for anything malformed; see the module docstring for
            what is accepted. Never another exception type.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            text = bytes(data).decode("utf-8", "surrogateescape")
        elif isinstance(data, str):
            text = data
            try:
                text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise _bad("SDP text holds characters that cannot be encoded (lone surrogates)") from None
        else:
            raise _bad(f"SDP must be str or bytes, got {type(data).__name__}")
        return cls._parse_lines(text)

    @classmethod
    def _parse_lines(cls, text: str) -> "SessionDescription":
        raw = text.split("\n")
        lines: list[tuple[int, str, str]] = []
        for no, line in enumerate(raw, 1):
            if line.endswith("\r"):
                line = line[:-1]
            if not line:
                continue
            if "\r" in line or "\x00" in line:
                raise _bad(f"SDP line {no} holds a CR or NUL character")
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise _bad(f"SDP line {no} {line[:40]!r} is not '<type>=<value>'")
            lines.append((no, line[0], line[2:]))
        if not lines:
            raise _bad("SDP body is empty; expected 'v=0' first")
        if lines[0][1] != "v":
            raise _bad(f"SDP must start with 'v=0', line {lines[0][0]} is {lines[0][1]}=")
        sdp = cls(timings=[])
        seen: set[str] = set()
        current: MediaDescription | None = None
        media_seen: set[str] = set()
        for no, typ, value in lines:
            if typ == "m":
                current = MediaDescription._parse_m(value)
                sdp.media.append(current)
                media_seen = set()
                continue
            if current is None:
                sdp._parse_session_line(no, typ, value, seen)
            else:
                if typ not in _MEDIA_TYPES:
                    raise _bad(f"SDP line {no}: '{typ}=' is not allowed inside a media section (RFC 8866 section 5)")
                if typ in _MEDIA_SINGLE and typ in media_seen:
                    raise _bad(f"SDP line {no}: a second '{typ}=' in one media section")
                media_seen.add(typ)
                if typ == "i":
                    current.title = value
                elif typ == "c":
                    current.connections.append(Connection.parse(value))
                elif typ == "b":
                    current.bandwidths.append(Bandwidth.parse(value))
                elif typ == "k":
                    current.key = value
                else:
                    name, val = _split_attribute(no, value)
                    _check_attribute(name, val)
                    current.attributes.append((name, val))
        for required, what in (("o", "o= (origin)"), ("s", "s= (session name)"), ("t", "t= (timing)")):
            if required not in seen:
                raise _bad(f"SDP has no {what} line (RFC 8866 section 5)")
        if sdp.connection is None:
            for i, m in enumerate(sdp.media):
                if m.port != 0 and not m.connections:
                    raise _bad(f"SDP media {i} ({m.media} port {m.port}) has no c= line and there is no session c=")
        return sdp

    def _parse_session_line(self, no: int, typ: str, value: str, seen: set[str]) -> None:
        if typ not in _SESSION_TYPES:
            raise _bad(f"SDP line {no}: unknown type letter '{typ}=' (RFC 8866 section 5 requires rejecting it)")
        if typ in _SESSION_SINGLE and typ in seen:
            raise _bad(f"SDP line {no}: a second '{typ}=' line at session level")
        seen.add(typ)
        if typ == "v":
            if value != "0":
                raise _bad(f"SDP version must be 'v=0', got 'v={value[:20]}'")
            self.version = 0
        elif typ == "o":
            self.origin = Origin.parse(value)
        elif typ == "s":
            self.session_name = value
        elif typ == "i":
            self.information = value
        elif typ == "u":
            self.uri = value
        elif typ == "e":
            self.emails.append(value)
        elif typ == "p":
            self.phones.append(value)
        elif typ == "c":
            self.connection = Connection.parse(value)
        elif typ == "b":
            self.bandwidths.append(Bandwidth.parse(value))
        elif typ == "t":
            self.timings.append(Timing.parse(value))
        elif typ == "r":
            if not self.timings:
                raise _bad(f"SDP line {no}: 'r=' must follow a 't=' line")
            self.timings[-1].repeats.append(value)
        elif typ == "z":
            self.zone = value
        elif typ == "k":
            self.key = value
        else:  # "a"
            name, val = _split_attribute(no, value)
            _check_attribute(name, val)
            self.attributes.append((name, val))

    # ---------------------------------------------------------------- write
    def lines(self) -> Iterator[str]:
        """Every line without line endings, in RFC 8866 order."""
        yield f"v={self.version}"
        yield f"o={self.origin}"
        yield "s=" + self.session_name
        if self.information is not None:
            yield "i=" + self.information
        if self.uri is not None:
            yield "u=" + self.uri
        for e in self.emails:
            yield "e=" + e
        for p in self.phones:
            yield "p=" + p
        if self.connection is not None:
            yield f"c={self.connection}"
        for b in self.bandwidths:
            yield f"b={b}"
        for t in self.timings:
            yield f"t={t.start} {t.stop}"
            for r in t.repeats:
                yield "r=" + r
        if self.zone is not None:
            yield "z=" + self.zone
        if self.key is not None:
            yield "k=" + self.key
        for n, v in self.attributes:
            yield f"a={n}" if v is None else f"a={n}:{v}"
        for m in self.media:
            yield from m.lines()

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in self.lines())

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8", "surrogateescape")

    # ---------------------------------------------------------------- typed
    def effective_direction(self, media: int | MediaDescription) -> str:
        """Direction of one media section: its own attribute, else the session's, else sendrecv.

        Parameters
        ----------
        media : int or MediaDescription
            Index into :attr:`media`, or the section itself.
        """
        m = self.media[media] if isinstance(media, int) else media
        return m.direction or self.direction or "sendrecv"

    def connection_for(self, media: int | MediaDescription) -> Connection | None:
        """The ``c=`` that applies to a media section (its own, else the session's)."""
        m = self.media[media] if isinstance(media, int) else media
        return m.connection or self.connection

    def fingerprint_for(self, media: int | MediaDescription) -> str | None:
        """``a=fingerprint`` for a media section (media level, else session level)."""
        m = self.media[media] if isinstance(media, int) else media
        return m.fingerprint or self.fingerprint


def _split_attribute(no: int, value: str) -> tuple[str, str | None]:
    name, sep, val = value.partition(":")
    if not _TOKEN.fullmatch(name):
        raise _bad(f"SDP line {no}: attribute name {name[:40]!r} is not a token")
    return name, (val if sep else None)
