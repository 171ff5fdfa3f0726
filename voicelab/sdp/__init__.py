"""Session descriptions (SDP, RFC 8866) and the offer/answer model (RFC 3264).

>>> from voicelab import sdp
>>> offer = sdp.create_offer(["opus", "pcmu"], address="192.0.2.10", port=4000, session_id=1)
>>> answer, media = sdp.create_answer(offer, ["pcmu"], address="192.0.2.20", port=5000, session_id=2)
>>> media.codec, media.remote_port
('pcmu', 4000)
>>> sdp.apply_answer(offer, answer).remote_port
5000

Modules
-------
:mod:`.model`
    :class:`SessionDescription` / :class:`MediaDescription`: parse, typed helpers, ``bytes()``.
:mod:`.negotiate`
    :func:`create_offer`, :func:`create_answer`, :func:`apply_answer`, :class:`NegotiatedMedia`.
:mod:`.crypto`
    ``a=crypto`` (SDES, RFC 4568) and SRTP key generation.

Malformed SDP raises :class:`~voicelab.errors.RemoteProtocolError` with
``status_code=400``; a well-formed offer with nothing acceptable raises it with 488.
"""

from __future__ import annotations

from .crypto import SUITES, SUPPORTED_SUITES, CryptoAttribute, KeyParam, generate_key_salt, make_crypto
from .model import (
    DIRECTIONS,
    STATIC_PAYLOAD_TYPES,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    Rtcp,
    RtpMap,
    SessionDescription,
    Timing,
    format_fmtp_params,
    parse_fmtp_params,
)
from .negotiate import NegotiatedMedia, SrtpParams, apply_answer, create_answer, create_offer

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
    "CryptoAttribute",
    "KeyParam",
    "SUITES",
    "SUPPORTED_SUITES",
    "generate_key_salt",
    "make_crypto",
    "create_offer",
    "create_answer",
    "apply_answer",
    "NegotiatedMedia",
    "SrtpParams",
]
