"""The SDP offer/answer model (RFC 3264) for voicelab's audio calls, driven by the codec registry.

Three functions cover both roles of a SIP (and later WebRTC) call::

    offer = create_offer(["opus", "pcmu"], address=..., port=..., session_id=...)   # caller
    answer, media = create_answer(offer, ["pcmu", "g722"], address=..., port=..., session_id=...)
    media = apply_answer(offer, answer)                                           # caller again

Each side gets a :class:`NegotiatedMedia`: the lab codec name and the parameters to
create the *sending* codec with (``codecs.get(media.codec, **media.params)``), payload
types, packet time, DTMF payload type, where to send RTP and RTCP, the direction and the
SRTP keys.

Rules followed
--------------
* RFC 3264 section 6: the answer has as many ``m=`` lines as the offer, in the same
  order; a stream is rejected with port 0 (its formats copied, so the line stays valid);
  an offered port 0 stays 0; the answer reuses the offer's payload type numbers; the
  transport (``RTP/AVP``, ``RTP/SAVP``) is the offer's. The lab runs one audio stream:
  the first acceptable audio stream is taken, every other stream is rejected.
* Codecs match on encoding name (case-insensitive), RTP clock rate and channel count
  (1 when not written). The clock rate is the RTP one, so ``G722/8000`` matches the
  16 kHz G.722 codec (RFC 3551 section 4.5.2); ``G722/16000`` is wrong SDP and does not
  match. ``opus`` must be ``/48000/2`` (RFC 7587 section 7).
* Format parameters: AMR ``octet-align`` must equal ours (the lab's AMR packs
  octet-aligned only) and ``crc``/``robust-sorting``/``interleaving`` are refused
  (RFC 4867 section 8.3.1: these must match for the payload format to be the same).
  Opus parameters are declarative (RFC 7587 section 7.1): each side states what it wants
  to *receive*; ``useinbandfec=1`` turns our encoder's FEC on, ``usedtx=1`` DTX,
  ``cbr=1`` constant bit rate, ``maxaveragebitrate`` caps our bit rate,
  ``maxplaybackrate`` caps our sample rate. G.729 ``annexb=no`` turns VAD off.
  ``a=ptime`` of the peer sets our sending packet time when our codec allows it, capped
  by ``a=maxptime``.
* Direction: the answer's direction is the offer's mirrored (sendonly -> recvonly,
  recvonly -> sendonly) and intersected with what the answerer wants; a session-level
  attribute is the default for every stream. The RFC 2543 hold form ``c=0.0.0.0`` is
  read as "the offerer receives nothing" (RFC 3264 section 8.4).
* DTMF (RFC 4733): ``telephone-event`` is offered once per distinct RTP clock rate of
  the offered codecs (8000 for G.711, 48000 for Opus), because RFC 4733 section 2.1
  asks events to use the clock of the audio they interrupt; the answerer takes the one
  whose clock equals the chosen codec's, else the first offered.
* SDES (RFC 4568): the answerer takes the first offered ``a=crypto`` whose suite is in
  its list, whose key has the right length and which uses no MKI or session parameters,
  and answers with the same tag and suite and a key of its own. Malformed crypto lines
  are skipped, as section 7.1.2 asks.
* Re-offers (re-INVITE, RFC 3264 section 8): ``previous=`` keeps the origin's username
  and session id, increments the session version, keeps the number and order of
  ``m=`` lines, the payload type numbers already used and the SRTP keys.

Errors (the SIP layer puts ``status_code`` on the wire)
-------------------------------------------------------
* Malformed SDP, and an answer that breaks RFC 3264 (a different number of ``m=`` lines,
  another media type or transport, payload types that were never offered, a direction
  the offer did not allow, a crypto tag that was not offered):
  :class:`RemoteProtocolError` with ``status_code=400``.
* A well-formed offer that has nothing we can accept (no common codec, only DTLS-SRTP,
  only crypto suites we lack): ``create_answer`` raises :class:`RemoteProtocolError`
  with ``status_code=488`` (Not Acceptable Here, RFC 3261 sections 13.3.1.1 and
  21.4.26; the UAS should add ``Warning: 305 ... "Incompatible media format"``). With
  ``allow_all_rejected=True`` it instead returns the RFC 3264 answer that rejects every
  stream (all ports 0) and ``None``, for callers that must answer anyway (an offer in
  a 2xx, answered in the ACK).
* An answer that rejects every stream, or keeps only codecs we cannot run:
  ``apply_answer`` raises ``status_code=488``; the caller ends the call.
* Bad arguments from our own code: :class:`ParameterError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from .. import codecs as _codecs
from ..codecs.base import Codec
from ..errors import CodecUnavailableError, ParameterError, RemoteProtocolError
from .crypto import SUITES, SUPPORTED_SUITES, CryptoAttribute, make_crypto
from .model import (
    DIRECTIONS,
    Connection,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
    parse_fmtp_params,
)

__all__ = [
    "CodecSpec",
    "NegotiatedMedia",
    "SrtpParams",
    "create_offer",
    "create_answer",
    "apply_answer",
    "warm_up",
    "DEFAULT_DTMF_EVENTS",
]

#: A codec as the negotiation functions take it: a registry name or alias, a
#: ``(name, params)`` pair, or a codec instance (only its facts are read).
CodecSpec = Union[str, tuple, Codec]

#: ``a=fmtp`` of telephone-event we offer: DTMF 0-9 * # A-D and flash (RFC 4733 section 3.2).
DEFAULT_DTMF_EVENTS = "0-16"

_DYNAMIC = range(96, 128)
_PLAIN_PROTOS = ("RTP/AVP",)
_SRTP_PROTOS = ("RTP/SAVP",)
_FLAGS = {"sendrecv": (True, True), "sendonly": (True, False), "recvonly": (False, True), "inactive": (False, False)}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_AMR_MODES = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)
_ASCII_DIGITS = re.compile(r"[0-9]{1,9}", re.ASCII)


def _digits(text: str | None) -> int | None:
    """``int(text)`` for 1-9 ASCII digits, else None (never raises)."""
    return int(text) if text is not None and _ASCII_DIGITS.fullmatch(text) else None


# --------------------------------------------------------------------- results
@dataclass(frozen=True)
class SrtpParams:
    """SRTP keys agreed by SDES (RFC 4568).

    Attributes
    ----------
    suite : str
        Crypto suite, e.g. ``"AES_CM_128_HMAC_SHA1_80"``.
    local_key : bytes
        Our master ``key || salt`` (in our SDP): protects what we send.
    remote_key : bytes
        The peer's master ``key || salt``: unprotects what we receive.
    tag : int
        The ``a=crypto`` tag both sides used.
    """

    suite: str
    local_key: bytes
    remote_key: bytes
    tag: int

    def __repr__(self) -> str:  # keys stay out of logs
        return f"SrtpParams(suite={self.suite!r}, tag={self.tag}, keys=<{len(self.local_key)}+{len(self.remote_key)} bytes>)"


@dataclass(frozen=True)
class NegotiatedMedia:
    """What one side of a call uses after offer/answer, from that side's point of view.

    Attributes
    ----------
    codec : str
        Lab registry name (``"pcmu"``, ``"opus"``, ...).
    params : dict
        Parameters for the *sending* codec, ``codecs.get(codec, **params)``; the peer's
        format parameters are applied (e.g. Opus ``useinbandfec=1`` -> ``fec=True``,
        ``maxaveragebitrate`` -> ``bitrate`` cap) and ``frame_ms`` is :attr:`ptime`.
    payload_type : int
        RTP payload type we send with (the number in the peer's SDP).
    local_payload_type : int
        Payload type we expect to receive (the number in our SDP); equal to
        :attr:`payload_type` unless the answerer renumbered a dynamic codec.
    encoding_name : str
        As written in the SDP.
    clock_rate : int
        RTP clock rate in Hz (8000 for G.722).
    channels : int
        Channels in ``a=rtpmap`` (2 for Opus).
    ptime : float
        Packet time we send, in ms.
    telephone_event_pt : int or None
        Payload type of RFC 4733 events we send, or None when not negotiated.
    telephone_event_clock_rate : int or None
        Its clock rate in Hz.
    remote_address : str
        Where to send RTP (the peer's ``c=``); ``"0.0.0.0"`` for RFC 2543 hold.
    remote_port : int
        Where to send RTP.
    rtcp_address, rtcp_port : str, int
        Where to send RTCP: ``a=rtcp`` (RFC 3605), else the RTP port + 1, else the RTP
        port itself with ``a=rtcp-mux``.
    rtcp_mux : bool
        Both sides asked for RTP/RTCP multiplexing (RFC 5761).
    direction : str
        ``"sendrecv"``, ``"sendonly"``, ``"recvonly"`` or ``"inactive"`` for *us*.
    srtp : SrtpParams or None
        SDES keys, or None for plain RTP.
    media_index : int
        Index of the ``m=`` line that carries the stream.
    mid : str or None
        ``a=mid`` of that stream.
    remote_fmtp : tuple of (str, str or None)
        The peer's format parameters for the codec, as parsed.
    """

    codec: str
    params: dict[str, Any]
    payload_type: int
    local_payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int
    ptime: float
    telephone_event_pt: int | None
    telephone_event_clock_rate: int | None
    remote_address: str
    remote_port: int
    rtcp_address: str
    rtcp_port: int
    rtcp_mux: bool
    direction: str
    srtp: SrtpParams | None
    media_index: int = 0
    mid: str | None = None
    remote_fmtp: tuple[tuple[str, str | None], ...] = field(default=())

    @property
    def sends(self) -> bool:
        """True when we send media (sendrecv or sendonly)."""
        return _FLAGS[self.direction][0]

    @property
    def receives(self) -> bool:
        """True when we expect media (sendrecv or recvonly)."""
        return _FLAGS[self.direction][1]

    def make_codec(self) -> Codec:
        """A new sending codec, ``codecs.get(self.codec, **self.params)``.

        Raises
        ------
        CodecUnavailableError
            If the codec's library is not installed here.
        """
        return _codecs.get(self.codec, **self.params)


# --------------------------------------------------------------------- codec facts
@dataclass(frozen=True)
class _Facts:
    name: str
    params: tuple[tuple[str, Any], ...]
    encoding_name: str
    clock_rate: int
    channels: int
    payload_type: int | None
    fmtp: str | None
    frame_ms: float

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.encoding_name.lower(), self.clock_rate, self.channels)

    def matches(self, r: RtpMap) -> bool:
        return (r.encoding_name.lower(), r.clock_rate, r.channel_count) == self.key


def _facts_of(codec: Codec, name: str) -> _Facts:
    return _Facts(
        name=name,
        params=tuple(codec.params().items()),
        encoding_name=codec.encoding_name,
        clock_rate=int(codec.clock_rate),
        channels=int(codec.channels),
        payload_type=codec.payload_type,
        fmtp=codec.fmtp,
        frame_ms=float(codec.frame_ms),
    )


def _split_spec(spec: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], str)
        and isinstance(spec[1], Mapping)
    ):
        return spec[0], dict(spec[1])
    raise ParameterError(
        f"a codec must be a name such as 'opus', a (name, params) pair or a Codec, got {spec!r:.60}"
    )


def _facts(spec: Any) -> _Facts:
    """Facts of a codec spec; works where the codec's library is missing (facts only)."""
    if isinstance(spec, Codec):
        return _facts_of(spec, spec.name)
    name, params = _split_spec(spec)
    try:
        return _facts_cached(name, tuple(sorted(params.items(), key=lambda kv: kv[0])))
    except TypeError:  # an unhashable parameter value
        raise ParameterError(f"{name}: parameter values must be numbers, strings or bools, got {params!r:.80}") from None


@lru_cache(maxsize=256)
def _facts_cached(name: str, params: tuple[tuple[str, Any], ...]) -> _Facts:
    canon, preset = _codecs.canonical_name(name)
    try:
        codec = _codecs.get(name, **dict(params))
    except CodecUnavailableError:
        # Same probe as registry.available(): facts without opening the library.
        from ..codecs import registry

        cls = registry._class(canon)
        codec = cls.__new__(cls)
        codec._configure(**{**preset, **dict(params)})  # type: ignore[attr-defined]
    return _facts_of(codec, canon)


def warm_up(codecs: Sequence[Any]) -> None:
    """Resolve the facts of ``codecs`` now (importing their libraries, e.g. PyAV for G.722
    and Opus), so the first offer or answer of a process pays nothing for them.

    Call it when an endpoint starts, before its first INVITE. Specs that cannot be
    resolved are skipped here (the offer/answer reports them).
    """
    for spec in codecs:
        _try_facts(spec)


def _try_facts(spec: Any) -> _Facts | None:
    try:
        return _facts(spec)
    except (ParameterError, TypeError):
        return None


@lru_cache(maxsize=1)
def _registry_candidates() -> tuple[_Facts, ...]:
    out = []
    for name in _codecs.names():
        if name == "g726":
            specs: list[Any] = [("g726", {"bitrate": b}) for b in (16000, 24000, 32000, 40000)]
        elif name == "l16":
            continue  # depends on the clock rate; looked up separately
        else:
            specs = [name]
        for s in specs:
            f = _try_facts(s)
            if f is not None:
                out.append(f)
    return tuple(out)


def _lookup_registry(r: RtpMap) -> _Facts | None:
    """The lab codec (default parameters) that an ``a=rtpmap`` names, or None."""
    if r.encoding_name.lower() == "l16" and r.channel_count == 1:
        return _try_facts(("l16", {"sample_rate": r.clock_rate}))
    for f in _registry_candidates():
        if f.matches(r):
            return f
    return None


# --------------------------------------------------------------------- helpers
def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_code=400)


def _unacceptable(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_code=488)


def _as_sdp(sdp: Any, what: str) -> SessionDescription:
    if isinstance(sdp, SessionDescription):
        return sdp
    if isinstance(sdp, (str, bytes, bytearray, memoryview)):
        return SessionDescription.parse(sdp)
    raise ParameterError(f"{what} must be a SessionDescription, str or bytes, got {type(sdp).__name__}")


def _check_port(port: Any, what: str, *, allow_zero: bool = False) -> int:
    lo = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not lo <= int(port) <= 65535:
        raise ParameterError(f"{what} must be an integer port from {lo} to 65535, got {port!r}")
    return int(port)


def _check_address(address: Any) -> tuple[str, str]:
    if not isinstance(address, str) or not address or any(c.isspace() for c in address):
        raise ParameterError(f"address must be an IP address or host name without spaces, got {address!r}")
    return address, ("IP6" if ":" in address else "IP4")


def _check_direction(direction: Any) -> str:
    if direction not in DIRECTIONS:
        raise ParameterError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return direction


def _check_ptime(ptime: Any, what: str = "ptime") -> float | None:
    if ptime is None:
        return None
    if isinstance(ptime, bool) or not isinstance(ptime, (int, float, np.integer, np.floating)) or not 0 < ptime <= 1000:
        raise ParameterError(f"{what} must be a packet time in ms above 0 (e.g. 20), got {ptime!r}")
    return float(ptime)


def _fmt_ms(value: float) -> str:
    return f"{value:g}"


def _origin(
    previous: SessionDescription | None,
    session_id: Any,
    session_version: Any,
    username: Any,
    addrtype: str,
    address: str,
) -> Origin:
    for v, what in ((session_id, "session_id"), (session_version, "session_version")):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise ParameterError(f"{what} must be a non-negative integer, got {v!r}")
    if previous is not None:
        sid = previous.origin.sess_id if session_id is None else int(session_id)
        ver = previous.origin.sess_version + 1 if session_version is None else int(session_version)
        user = previous.origin.username if username is None else username
    else:
        if session_id is None:
            raise ParameterError("session_id is required for a new session (pass an integer, e.g. from your seed)")
        sid = int(session_id)
        ver = 1 if session_version is None else int(session_version)
        user = "-" if username is None else username
    if not isinstance(user, str) or not user or any(c.isspace() for c in user):
        raise ParameterError(f"username must be one word without spaces, got {user!r}")
    return Origin(user, sid, ver, "IN", addrtype, address)


def _dtmf_events(offered: str | None) -> str:
    """Intersect offered telephone-event ranges with the events we handle (0-16)."""
    if offered is None:
        return "0-15"  # RFC 4733 section 2.4.1: absent fmtp means 0-15
    ours = set(range(17))
    events: set[int] = set()
    for part in offered.replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        a = _digits(lo)
        b = _digits(hi) if sep else a
        if a is None or b is None:
            continue
        if a <= b <= 255:
            events.update(range(a, b + 1))
    events &= ours
    if not events:
        return "0-15"
    items = sorted(events)
    out, start, prev = [], items[0], items[0]
    for e in items[1:] + [None]:  # type: ignore[list-item]
        if e is not None and e == prev + 1:
            prev = e
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if e is not None:
            start = prev = e
    return ",".join(out)


def _fmtp_map(pairs: Iterable[tuple[str, str | None]]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for k, v in pairs:
        out.setdefault(k.lower(), v)
    return out


def _compatible(f: _Facts, remote_fmtp: Mapping[str, str | None]) -> bool:
    """Whether the peer's format parameters describe the same payload format as ours."""
    if f.name == "amr-nb":
        ours = _fmtp_map(parse_fmtp_params(f.fmtp or ""))
        if (remote_fmtp.get("octet-align") or "0") != (ours.get("octet-align") or "0"):
            return False
        for p in ("crc", "robust-sorting", "interleaving"):
            if (remote_fmtp.get(p) or "0") not in ("0",):
                return False
        if _amr_modes(remote_fmtp) == ():
            return False
    return True


def _amr_modes(fm: Mapping[str, str | None]) -> tuple[int, ...] | None:
    ms = fm.get("mode-set")
    if ms is None:
        return None
    out = []
    for part in ms.split(","):
        part = part.strip()
        n = _digits(part)
        if n is not None and n < len(_AMR_MODES):
            out.append(_AMR_MODES[n])
    return tuple(out)


def _send_params(
    f: _Facts,
    remote_fmtp: Mapping[str, str | None],
    remote_ptime: float | None,
    remote_maxptime: float | None,
) -> _Facts:
    """Our sending codec: our parameters adjusted to what the peer wants to receive."""
    p = dict(f.params)
    base = dict(p)

    def num(key: str) -> int | None:
        return _digits(remote_fmtp.get(key))

    if f.name == "opus":
        cap = num("maxaveragebitrate")
        if cap is not None and "bitrate" in p:
            p["bitrate"] = int(min(max(min(p["bitrate"], cap), 6000), 510000))
        p["fec"] = remote_fmtp.get("useinbandfec") == "1"
        p["dtx"] = remote_fmtp.get("usedtx") == "1"
        if remote_fmtp.get("cbr") == "1":
            p["vbr"] = False
        rate = num("maxplaybackrate")
        if rate is not None and "sample_rate" in p:
            allowed = [r for r in _OPUS_RATES if r <= min(rate, p["sample_rate"])]
            p["sample_rate"] = max(allowed) if allowed else _OPUS_RATES[0]
    elif f.name == "amr-nb":
        modes = _amr_modes(remote_fmtp)
        if modes and p.get("bitrate") not in modes:
            p["bitrate"] = max(modes)
    elif f.name == "g729":
        if (remote_fmtp.get("annexb") or "yes").lower() == "no":
            p["vad"] = False
    want = remote_ptime if remote_ptime is not None else p.get("frame_ms", f.frame_ms)
    if remote_maxptime is not None and want > remote_maxptime:
        want = remote_maxptime
    p["frame_ms"] = want
    for attempt in (p, {**p, "frame_ms": base.get("frame_ms", f.frame_ms)}, base):
        got = _try_facts((f.name, attempt))
        if got is not None:
            return got
    return f


def _te_candidates(m: MediaDescription) -> list[tuple[int, RtpMap]]:
    out = []
    for pt in _safe_pts(m):
        r = m.rtpmap(pt)
        if r is not None and r.encoding_name.lower() == "telephone-event":
            out.append((pt, r))
    return out


def _safe_pts(m: MediaDescription) -> list[int]:
    return [n for n in (_digits(f) for f in m.formats) if n is not None and n <= 127]


def _rtcp_target(sdp: SessionDescription, m: MediaDescription, address: str) -> tuple[str, int, bool]:
    mux = m.rtcp_mux
    r = m.rtcp
    if r is not None:
        return (r.address if r.address is not None else address), r.port, mux
    if mux:
        return address, m.port, True
    return address, m.port + 1, False


def _negotiated(sdp: SessionDescription, m: MediaDescription, remote_addr: str, *, send: Any, pt: int,
                local_pt: int, rtpmap: Any, te: Any, rtcp_mux: bool, direction: str, srtp: Any, index: int,
                remote_fmtp: Any) -> "NegotiatedMedia":
    """The negotiated stream, from either side of the offer/answer (one constructor)."""
    try:
        rtcp_addr, rtcp_p, offered_mux = _rtcp_target(sdp, m, remote_addr)
        if offered_mux and not rtcp_mux and m.rtcp is None:  # mux offered but not agreed
            rtcp_p = m.port + 1
    except RemoteProtocolError:
        rtcp_addr, rtcp_p = remote_addr, m.port + 1
    return NegotiatedMedia(
        codec=send.name,
        params=dict(send.params),
        payload_type=pt,
        local_payload_type=local_pt,
        encoding_name=rtpmap.encoding_name,
        clock_rate=rtpmap.clock_rate,
        channels=rtpmap.channel_count,
        ptime=send.frame_ms,
        telephone_event_pt=None if te is None else te[0],
        telephone_event_clock_rate=None if te is None else te[1].clock_rate,
        remote_address=remote_addr,
        remote_port=m.port,
        rtcp_address=rtcp_addr,
        rtcp_port=rtcp_p,
        rtcp_mux=rtcp_mux,
        direction=direction,
        srtp=srtp,
        media_index=index,
        mid=m.mid,
        remote_fmtp=remote_fmtp,
    )


# --------------------------------------------------------------------- offer
def create_offer(
    codecs: Sequence[CodecSpec],
    *,
    address: str,
    port: int,
    session_id: int | None = None,
    session_version: int | None = None,
    rtcp_port: int | None = None,
    rtcp_mux: bool = False,
    telephone_event: bool = True,
    ptime: float | None = 20,
    maxptime: float | None = None,
    direction: str = "sendrecv",
    crypto: bool | Sequence[str | CryptoAttribute] | None = None,
    rng: np.random.Generator | None = None,
    previous: SessionDescription | None = None,
    username: str | None = None,
    session_name: str = "-",
) -> SessionDescription:
    """Build an SDP offer for one audio stream.

    Parameters
    ----------
    codecs : sequence of str, (str, dict) or Codec
        Codecs in order of preference, e.g. ``["opus", ("amr-nb", {"bitrate": 7950}), "pcmu"]``.
        Static payload types for PCMU 0, G723 4, PCMA 8, G722 9, G729 18; the others get
        dynamic ones from 96 with ``a=fmtp`` from the codec (Opus
        ``minptime=10;useinbandfec=1`` with ``fec=True``, ``maxaveragebitrate``; AMR
        ``octet-align=1``).
    address : str
        Our media address (IPv4 or IPv6; ``c=`` and ``o=``).
    port : int
        Our RTP port.
    session_id : int, optional
        ``o=`` session id; required unless ``previous`` is given.
    session_version : int, optional
        ``o=`` version; default 1, or ``previous``'s + 1.
    rtcp_port : int, optional
        Written as ``a=rtcp`` (RFC 3605) when given; otherwise RTCP is on ``port + 1``.
    rtcp_mux : bool, optional
        Offer RTCP on the RTP port (``a=rtcp-mux``, RFC 5761); the answer decides.
    telephone_event : bool, optional
        Offer RFC 4733 ``telephone-event`` (``0-16``) at every clock rate offered.
    ptime, maxptime : float or None, optional
        ``a=ptime`` / ``a=maxptime`` in ms (the packet time we want to receive); None omits.
    direction : {"sendrecv", "sendonly", "recvonly", "inactive"}, optional
        ``sendonly`` or ``inactive`` puts the peer on hold (RFC 3264 section 8.4).
    crypto : bool or sequence, optional
        SDES: True offers :data:`~voicelab.sdp.crypto.SUPPORTED_SUITES`; a sequence of
        suite names or :class:`CryptoAttribute` offers those, in order. The transport
        becomes ``RTP/SAVP``. None or False: plain ``RTP/AVP``.
    rng : numpy.random.Generator, optional
        Source of SRTP keys for reproducible tests only; real calls leave it None so keys
        come from :mod:`secrets`.
    previous : SessionDescription, optional
        The last description we sent in this session (re-offer): keeps username,
        session id, m-line count and order, payload type numbers and SRTP keys, and
        increments the version.
    username, session_name : str, optional
        ``o=`` username (default ``"-"``) and ``s=`` text.

    Returns
    -------
    SessionDescription

    Raises
    ------
    ParameterError
        Unknown codec or parameter, a codec listed twice, more than 32 dynamic formats,
        bad address, port, direction, ptime or suite.

    Examples
    --------
    >>> offer = create_offer(["pcmu", "opus"], address="192.0.2.10", port=4000, session_id=1)
    >>> offer.media[0].formats
    ['0', '96', '97', '98']
    """
    address, addrtype = _check_address(address)
    port = _check_port(port, "port")
    direction = _check_direction(direction)
    ptime = _check_ptime(ptime)
    maxptime = _check_ptime(maxptime, "maxptime")
    if rtcp_port is not None:
        rtcp_port = _check_port(rtcp_port, "rtcp_port")
    if isinstance(codecs, (str, Codec)) or not isinstance(codecs, Sequence) or not codecs:
        raise ParameterError("codecs must be a non-empty list of codec names, e.g. ['opus', 'pcmu']")
    if previous is not None and not isinstance(previous, SessionDescription):
        raise ParameterError(f"previous must be the SessionDescription we sent last, got {type(previous).__name__}")
    facts = [_facts(c) for c in codecs]

    # payload types: keep the previous mapping (RFC 3264 section 8.3.2), then allocate
    prev_audio = _previous_audio(previous)
    prev_map: dict[tuple[str, int, int], int] = {}
    used: set[int] = set()
    if prev_audio is not None:
        for pt in _safe_pts(prev_audio):
            r = prev_audio.rtpmap(pt)
            used.add(pt)
            if r is not None:
                prev_map.setdefault((r.encoding_name.lower(), r.clock_rate, r.channel_count), pt)
    entries: list[tuple[int, str, str | None]] = []  # (pt, rtpmap value, fmtp)
    seen: set[tuple[str, int, int, str | None]] = set()

    def allocate(key: tuple[str, int, int, str | None], static: int | None) -> int:
        if static is not None:
            return static
        if key[:3] in prev_map:
            return prev_map.pop(key[:3])
        for pt in _DYNAMIC:
            if pt not in used:
                used.add(pt)
                return pt
        raise ParameterError("more than 32 dynamic payload types requested; offer fewer codecs")

    for f in facts:
        key = (*f.key, f.fmtp)
        if key in seen or (f.payload_type is not None and any(pt == f.payload_type for pt, _, _ in entries)):
            raise ParameterError(f"codec {f.name} ({f.encoding_name}/{f.clock_rate}) is listed twice; list it once")
        seen.add(key)
        if f.payload_type is not None:
            used.add(f.payload_type)
        rtpmap = f"{f.encoding_name}/{f.clock_rate}" + (f"/{f.channels}" if f.channels != 1 else "")
        entries.append((allocate(key, f.payload_type), rtpmap, f.fmtp))
    if telephone_event:
        rates = []
        for f in facts:
            if f.clock_rate not in rates:
                rates.append(f.clock_rate)
        for rate in rates:
            key = ("telephone-event", rate, 1, DEFAULT_DTMF_EVENTS)
            entries.append((allocate(key, None), f"telephone-event/{rate}", DEFAULT_DTMF_EVENTS))

    crypto_attrs = _offer_crypto(crypto, prev_audio, rng)
    m = MediaDescription(
        media="audio",
        port=port,
        proto="RTP/SAVP" if crypto_attrs else "RTP/AVP",
        formats=[str(pt) for pt, _, _ in entries],
    )
    for pt, rtpmap, _ in entries:
        m.add("rtpmap", f"{pt} {rtpmap}")
    for pt, _, fmtp in entries:
        if fmtp:
            m.add("fmtp", f"{pt} {fmtp}")
    if ptime is not None:
        m.add("ptime", _fmt_ms(ptime))
    if maxptime is not None:
        m.add("maxptime", _fmt_ms(maxptime))
    if rtcp_port is not None:
        m.add("rtcp", str(rtcp_port))
    if rtcp_mux:
        m.add("rtcp-mux")
    for c in crypto_attrs:
        m.add("crypto", str(c))
    m.add(direction)

    sdp = SessionDescription(
        origin=_origin(previous, session_id, session_version, username, addrtype, address),
        session_name=session_name,
        connection=Connection("IN", addrtype, address),
        timings=[Timing(0, 0)],
    )
    if previous is None:
        sdp.media = [m]
    else:
        # same number and order of m-lines; the audio stream stays where it was
        out = []
        placed = False
        for old in previous.media:
            if not placed and old is prev_audio:
                out.append(m)
                placed = True
            else:
                out.append(_rejected_copy(old))
        if not placed:
            out.append(m)
        sdp.media = out
    return sdp


def _previous_audio(previous: SessionDescription | None) -> MediaDescription | None:
    if previous is None:
        return None
    for m in previous.media:
        if m.media == "audio" and m.port != 0:
            return m
    for m in previous.media:
        if m.media == "audio":
            return m
    return None


def _rejected_copy(m: MediaDescription) -> MediaDescription:
    out = MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats))
    if m.mid is not None:
        out.add("mid", m.mid)
    return out


def _offer_crypto(
    crypto: Any, prev_audio: MediaDescription | None, rng: np.random.Generator | None
) -> list[CryptoAttribute]:
    if crypto is None or crypto is False:
        return []
    if crypto is True:
        items: list[Any] = list(SUPPORTED_SUITES)
    elif isinstance(crypto, (str, CryptoAttribute)):
        items = [crypto]
    elif isinstance(crypto, Sequence):
        items = list(crypto)
    else:
        raise ParameterError(f"crypto must be True, None or a list of suite names, got {crypto!r:.60}")
    if not items:
        raise ParameterError("crypto is an empty list; pass None for plain RTP or name at least one suite")
    previous: dict[str, CryptoAttribute] = {}
    if prev_audio is not None:
        for v in prev_audio.get_all("crypto"):
            try:
                c = CryptoAttribute.parse(v or "")
            except RemoteProtocolError:
                continue
            previous.setdefault(c.suite, c)
    out: list[CryptoAttribute] = []
    for i, item in enumerate(items, 1):
        if isinstance(item, CryptoAttribute):
            out.append(item)
        elif isinstance(item, str) and item in SUITES:
            keep = previous.get(item)
            out.append(keep if keep is not None else make_crypto(i, item, rng=rng))
        else:
            raise ParameterError(f"unknown SRTP crypto suite {item!r}; use one of {', '.join(SUPPORTED_SUITES)}")
    tags = [c.tag for c in out]
    if len(set(tags)) != len(tags):
        raise ParameterError(f"crypto tags must be unique, got {tags}")
    return out


# --------------------------------------------------------------------- answer
def create_answer(
    offer: SessionDescription | str | bytes,
    supported: Sequence[CodecSpec],
    *,
    address: str,
    port: int,
    session_id: int | None = None,
    session_version: int | None = None,
    rtcp_port: int | None = None,
    rtcp_mux: bool = True,
    telephone_event: bool = True,
    ptime: float | None = None,
    direction: str = "sendrecv",
    crypto: Sequence[str] | None = SUPPORTED_SUITES,
    require_srtp: bool = False,
    rng: np.random.Generator | None = None,
    previous: SessionDescription | None = None,
    username: str | None = None,
    session_name: str = "-",
    prefer: str = "offerer",
    allow_all_rejected: bool = False,
) -> tuple[SessionDescription, NegotiatedMedia | None]:
    """Answer an offer (RFC 3264 section 6) and say what we will send and receive.

    Parameters
    ----------
    offer : SessionDescription, str or bytes
        The peer's offer.
    supported : sequence of str, (str, dict) or Codec
        Codecs we can run, in our order of preference, with the parameters of our
        encoder (e.g. ``("opus", {"bitrate": 32000})``).
    address, port : str, int
        Our media address and RTP port.
    session_id, session_version, username, session_name, rtcp_port, rng, previous
        As in :func:`create_offer` (``previous`` is the last description *we* sent).
    telephone_event : bool, optional
        Accept RFC 4733 events when offered.
    ptime : float, optional
        ``a=ptime`` we write (ms); default our codec's ``frame_ms``.
    direction : str, optional
        What we want; the answer is this intersected with the mirrored offer direction.
    crypto : sequence of str or None, optional
        SRTP suites we accept, in order; None refuses ``RTP/SAVP`` streams.
    require_srtp : bool, optional
        Refuse plain ``RTP/AVP`` streams.
    rtcp_mux : bool, optional
        Accept ``a=rtcp-mux`` (RFC 5761) when the offer has it (default True);
        otherwise RTCP stays on its own port.
    prefer : {"offerer", "answerer"}, optional
        Pick the common codec the offerer listed first (the usual rule), or the one
        first in ``supported``.
    allow_all_rejected : bool, optional
        When nothing is acceptable, return an answer with every port 0 and ``None``
        instead of raising 488.

    Returns
    -------
    answer : SessionDescription
        One ``m=`` line per offered one, in order; only the first acceptable audio
        stream has a port, listing one codec (plus telephone-event when negotiated).
    media : NegotiatedMedia or None
        The accepted stream from our side (None only with ``allow_all_rejected``).

    Raises
    ------
    RemoteProtocolError
        400 if the offer is malformed; 488 if no stream is acceptable (the message
        gives the reason for each stream).
    ParameterError
        Bad arguments.

    Examples
    --------
    >>> offer = create_offer(["opus", "pcmu"], address="192.0.2.10", port=4000, session_id=1)
    >>> answer, media = create_answer(offer, ["pcmu"], address="192.0.2.20", port=5000, session_id=2)
    >>> media.codec, media.payload_type, media.telephone_event_pt
    ('pcmu', 0, 98)
    """
    offer = _as_sdp(offer, "offer")
    address, addrtype = _check_address(address)
    port = _check_port(port, "port")
    direction = _check_direction(direction)
    ptime = _check_ptime(ptime)
    if rtcp_port is not None:
        rtcp_port = _check_port(rtcp_port, "rtcp_port")
    if prefer not in ("offerer", "answerer"):
        raise ParameterError(f"prefer must be 'offerer' or 'answerer', got {prefer!r}")
    if isinstance(supported, (str, Codec)) or not isinstance(supported, Sequence) or not supported:
        raise ParameterError("supported must be a non-empty list of codec names, e.g. ['pcmu', 'opus']")
    ours = [_facts(c) for c in supported]
    if crypto is not None:
        if isinstance(crypto, str):
            crypto = [crypto]
        for s in crypto:
            if s not in SUITES:
                raise ParameterError(f"unknown SRTP crypto suite {s!r}; use one of {', '.join(SUPPORTED_SUITES)}")
    origin = _origin(previous, session_id, session_version, username, addrtype, address)

    answer = SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=Connection("IN", addrtype, address),
        timings=[Timing(0, 0)],
    )
    negotiated: NegotiatedMedia | None = None
    reasons: list[str] = []
    for i, om in enumerate(offer.media):
        if negotiated is not None:
            reasons.append(f"m={i} {om.media}: only one audio stream is used")
            answer.media.append(_rejected_copy(om))
            continue
        result = _answer_stream(
            offer, i, om, ours,
            address=address, port=port, rtcp_port=rtcp_port, rtcp_mux=rtcp_mux, telephone_event=telephone_event,
            ptime=ptime, direction=direction, crypto=crypto, require_srtp=require_srtp,
            rng=rng, prefer=prefer,
        )
        if isinstance(result, str):
            reasons.append(f"m={i} {om.media}: {result}")
            answer.media.append(_rejected_copy(om))
        else:
            am, negotiated = result
            answer.media.append(am)
    if negotiated is None and not allow_all_rejected:
        detail = "; ".join(reasons) if reasons else "the offer has no media streams"
        raise _unacceptable(f"488 Not Acceptable Here: nothing in the offer is acceptable ({detail})")
    return answer, negotiated


def _answer_stream(
    offer: SessionDescription,
    index: int,
    om: MediaDescription,
    ours: list[_Facts],
    *,
    address: str,
    port: int,
    rtcp_port: int | None,
    rtcp_mux: bool,
    telephone_event: bool,
    ptime: float | None,
    direction: str,
    crypto: Sequence[str] | None,
    require_srtp: bool,
    rng: np.random.Generator | None,
    prefer: str,
) -> str | tuple[MediaDescription, NegotiatedMedia]:
    """Accept one offered stream, or say why not."""
    if om.media != "audio":
        return "not an audio stream"
    if om.port == 0:
        return "offered with port 0"
    if om.proto in _SRTP_PROTOS:
        if crypto is None:
            return f"{om.proto} offered but SRTP is off here"
    elif om.proto in _PLAIN_PROTOS:
        if require_srtp:
            return f"{om.proto} offered but SRTP is required here"
    else:
        return f"transport {om.proto} is not supported (only RTP/AVP and RTP/SAVP)"

    # SDES
    chosen_crypto: CryptoAttribute | None = None
    if om.proto in _SRTP_PROTOS:
        assert crypto is not None
        for v in om.get_all("crypto"):
            try:
                c = CryptoAttribute.parse(v or "")
                c.validate()
            except RemoteProtocolError:
                continue  # RFC 4568 section 7.1.2: ignore what we cannot use
            if c.suite in crypto and len(c.keys) == 1 and c.keys[0].mki is None and not c.session_params:
                chosen_crypto = c
                break
        if chosen_crypto is None:
            suites = {(v or "").split(" ")[1] for v in om.get_all("crypto") if len((v or "").split(" ")) > 1}
            offered = ", ".join(sorted(suites)) or "none"
            return f"no usable a=crypto (offered suites: {offered}; supported: {', '.join(crypto)})"

    # codecs
    candidates: list[tuple[int, int, int, RtpMap, _Facts]] = []  # (offer rank, our rank, pt, rtpmap, facts)
    offered_names = []
    for rank, pt in enumerate(_safe_pts(om)):
        r = om.rtpmap(pt)
        if r is None:
            continue
        offered_names.append(r.value)
        fm = _fmtp_map(om.fmtp(pt))
        for our_rank, f in enumerate(ours):
            if f.matches(r) and _compatible(f, fm):
                candidates.append((rank, our_rank, pt, r, f))
                break
    if not candidates:
        return (
            f"no common codec (offered {', '.join(offered_names) or 'nothing known'}; "
            f"supported {', '.join(f'{f.encoding_name}/{f.clock_rate}' for f in ours)})"
        )
    key = (lambda c: (c[0], c[1])) if prefer == "offerer" else (lambda c: (c[1], c[0]))
    _, _, pt, rtpmap, f = min(candidates, key=key)
    remote_fmtp = tuple(om.fmtp(pt))
    send = _send_params(f, _fmtp_map(remote_fmtp), om.ptime, om.maxptime)

    te: tuple[int, RtpMap] | None = None
    if telephone_event:
        tes = _te_candidates(om)
        te = next((t for t in tes if t[1].clock_rate == f.clock_rate), tes[0] if tes else None)

    # direction (RFC 3264 section 6.1), with RFC 2543 hold
    conn = offer.connection_for(om)
    remote_addr = conn.host if conn is not None else "0.0.0.0"
    o_send, o_recv = _FLAGS[offer.effective_direction(om)]
    if conn is not None and conn.is_hold:
        o_recv = False
    w_send, w_recv = _FLAGS[direction]
    a_send, a_recv = w_send and o_recv, w_recv and o_send
    a_dir = next(d for d, fl in _FLAGS.items() if fl == (a_send, a_recv))

    am = MediaDescription(media="audio", port=port, proto=om.proto, formats=[str(pt)])
    am.add("rtpmap", f"{pt} {rtpmap.value}")
    if te is not None:
        am.formats.append(str(te[0]))
        am.add("rtpmap", f"{te[0]} {te[1].value}")
    if f.fmtp:
        am.add("fmtp", f"{pt} {f.fmtp}")
    if te is not None:
        am.add("fmtp", f"{te[0]} {_dtmf_events(om.fmtp_raw(te[0]))}")
    am.add("ptime", _fmt_ms(ptime if ptime is not None else f.frame_ms))
    if rtcp_port is not None:
        am.add("rtcp", str(rtcp_port))
    mux = bool(rtcp_mux and om.rtcp_mux)
    if mux:
        am.add("rtcp-mux")
    srtp = None
    if chosen_crypto is not None:
        mine = make_crypto(chosen_crypto.tag, chosen_crypto.suite, rng=rng)
        am.add("crypto", str(mine))
        srtp = SrtpParams(chosen_crypto.suite, mine.key_salt, chosen_crypto.key_salt, chosen_crypto.tag)
    if om.mid is not None:
        am.add("mid", om.mid)
    am.add(a_dir)

    media = _negotiated(offer, om, remote_addr, send=send, pt=pt, local_pt=pt, rtpmap=rtpmap, te=te,
                        rtcp_mux=mux,
                        direction=a_dir, srtp=srtp, index=index, remote_fmtp=remote_fmtp)
    return am, media


# --------------------------------------------------------------------- offerer side
def apply_answer(
    offer: SessionDescription | str | bytes,
    answer: SessionDescription | str | bytes,
    *,
    codecs: Sequence[CodecSpec] | None = None,
) -> NegotiatedMedia:
    """Check that ``answer`` is a valid RFC 3264 answer to our ``offer`` and read the result.

    Parameters
    ----------
    offer : SessionDescription, str or bytes
        The offer we sent.
    answer : SessionDescription, str or bytes
        The peer's answer.
    codecs : sequence of codec specs, optional
        The list given to :func:`create_offer`, so the chosen codec keeps our parameters
        (e.g. an Opus bit rate); by default the registry's defaults are the base.

    Returns
    -------
    NegotiatedMedia
        The first accepted audio stream, from our side.

    Raises
    ------
    RemoteProtocolError
        400 if either body is malformed or the answer breaks RFC 3264 / RFC 4568 (m-line
        count, media type or transport changed, an offered port 0 answered with a port,
        payload types never offered, a direction the offer did not allow, a missing or
        unknown crypto tag); 488 if the answer rejects every stream or keeps only codecs
        we cannot use.
    ParameterError
        Bad ``codecs``.
    """
    offer = _as_sdp(offer, "offer")
    answer = _as_sdp(answer, "answer")
    ours = None if codecs is None else [_facts(c) for c in codecs]
    if len(answer.media) != len(offer.media):
        raise _bad(
            f"the answer has {len(answer.media)} m= lines but the offer had {len(offer.media)}; "
            "RFC 3264 section 6 requires the same number"
        )
    chosen: NegotiatedMedia | None = None
    problems: list[str] = []
    for i, (om, am) in enumerate(zip(offer.media, answer.media)):
        if am.media != om.media:
            raise _bad(f"answer m={i} is {am.media!r} but the offer's is {om.media!r} (RFC 3264 section 6)")
        if om.port == 0 and am.port != 0:
            raise _bad(f"answer m={i} has port {am.port} for a stream the offer disabled with port 0 (RFC 3264 section 6)")
        if am.port == 0:
            problems.append(f"m={i} rejected")
            continue
        if am.proto != om.proto:
            raise _bad(f"answer m={i} uses transport {am.proto} but the offer used {om.proto} (RFC 3264 section 6)")
        result = _read_answer_stream(offer, answer, i, om, am, ours)
        if isinstance(result, str):
            problems.append(f"m={i} {result}")
        elif chosen is None:
            chosen = result
    if chosen is None:
        raise _unacceptable(f"the answer leaves no usable audio stream ({'; '.join(problems) or 'no streams'})")
    return chosen


def _read_answer_stream(
    offer: SessionDescription,
    answer: SessionDescription,
    index: int,
    om: MediaDescription,
    am: MediaDescription,
    ours: list[_Facts] | None,
) -> str | NegotiatedMedia:
    offered_pts = set(_safe_pts(om))
    offered_maps = {pt: om.rtpmap(pt) for pt in offered_pts}
    if not am.is_rtp:
        return "is not an RTP stream"
    # payload types must come from the offer (RFC 3264 section 6.1); a renumbered
    # dynamic codec is tolerated (the RFC says SHOULD keep the number) when its
    # rtpmap names a codec we offered.
    local_pt: dict[int, int] = {}
    for pt in am.payload_types:
        if pt in offered_pts:
            local_pt[pt] = pt
            continue
        r = am.rtpmap(pt)
        same = [
            opt for opt, orm in offered_maps.items()
            if r is not None and orm is not None
            and (orm.encoding_name.lower(), orm.clock_rate, orm.channel_count)
            == (r.encoding_name.lower(), r.clock_rate, r.channel_count)
        ]
        if not same:
            raise _bad(f"answer m={index} lists payload type {pt}, which the offer did not offer (RFC 3264 section 6.1)")
        local_pt[pt] = min(same)

    # direction
    o_send, o_recv = _FLAGS[offer.effective_direction(om)]
    oc = offer.connection_for(om)
    if oc is not None and oc.is_hold:
        o_recv = False
    a_dir = answer.effective_direction(am)
    a_send, a_recv = _FLAGS[a_dir]
    if (a_send and not o_recv) or (a_recv and not o_send):
        raise _bad(
            f"answer m={index} is {a_dir} but the offer was {offer.effective_direction(om)} (RFC 3264 section 6.1)"
        )
    conn = answer.connection_for(am)
    remote_addr = conn.host if conn is not None else "0.0.0.0"
    if conn is not None and conn.is_hold:
        a_recv = False  # legacy hold in the answer: do not send to 0.0.0.0
    our_dir = next(d for d, fl in _FLAGS.items() if fl == (a_recv, a_send))

    # SDES
    srtp = None
    if om.proto in _SRTP_PROTOS or om.get_all("crypto"):
        offered: dict[int, CryptoAttribute] = {}
        for v in om.get_all("crypto"):
            try:
                c = CryptoAttribute.parse(v or "")
            except RemoteProtocolError:
                continue
            offered.setdefault(c.tag, c)
        answered = am.get_all("crypto")
        if om.proto in _SRTP_PROTOS and len(answered) != 1:
            raise _bad(f"answer m={index} ({am.proto}) must carry exactly one a=crypto, it has {len(answered)} (RFC 4568 7.1.2)")
        if answered:
            c = CryptoAttribute.parse(answered[0] or "")
            mine = offered.get(c.tag)
            if mine is None or mine.suite != c.suite:
                raise _bad(f"answer m={index} a=crypto tag {c.tag} {c.suite} does not match an offered one (RFC 4568 7.1.2)")
            c.validate()
            srtp = SrtpParams(c.suite, mine.key_salt, c.key_salt, c.tag)

    # codec
    chosen = None
    for pt in am.payload_types:
        r = am.rtpmap(pt) or offered_maps.get(local_pt[pt])
        if r is None or r.encoding_name.lower() in ("telephone-event", "cn"):
            continue
        base = None
        if ours is not None:
            base = next((f for f in ours if f.matches(r)), None)
        if base is None:
            base = _lookup_registry(r)
        if base is None:
            continue
        fm = _fmtp_map(am.fmtp(pt))
        if not _compatible(base, fm):
            continue
        chosen = (pt, r, base, fm)
        break
    if chosen is None:
        names = ", ".join(str(am.rtpmap(pt).value if am.rtpmap(pt) else pt) for pt in am.payload_types)
        return f"keeps no codec we can run ({names})"
    pt, r, base, fm = chosen
    send = _send_params(base, fm, am.ptime, am.maxptime)

    tes = [(p, m) for p, m in _te_candidates(am)]
    te = next((t for t in tes if t[1].clock_rate == r.clock_rate), tes[0] if tes else None)
    return _negotiated(answer, am, remote_addr, send=send, pt=pt, local_pt=local_pt[pt], rtpmap=r, te=te,
                       rtcp_mux=am.rtcp_mux and om.rtcp_mux, direction=our_dir, srtp=srtp, index=index,
                       remote_fmtp=tuple(am.fmtp(pt)))
