"""Look at one SIP message and say what a UAS would do with it.

:func:`describe` backs ``voicelab sip parse FILE [--json]``. It never raises on any
bytes; it reports two separate verdicts, because RFC 4475 keeps them apart:

``valid``
    Well-formed per the RFC 3261 grammar: framing, start line, header lines, and the
    grammar (including the RFC's numeric ranges, e.g. CSeq < 2**31) of every header
    this package understands. A message can be valid and still be refused.
``reply_status``
    What a UAS answers (None when it would accept the request; always None for
    responses, which are never answered but dropped when broken). Checks run in the
    order of RFC 3261 8.2, first failure wins:

    ====  ===============================================================  ==============
    code  reason                                                           RFC 4475 cases
    ====  ===============================================================  ==============
    400   grammar error (``valid`` is False)                               3.1.2.x, most
    505   SIP version other than 2.0 (grammatically valid)                 3.1.2.16
    501   method not in ``methods`` (8.2.1)                                3.1.1.2, 3.1.2.18
    400   missing/duplicated required header, CSeq method mismatch,        3.3.1, 3.3.8,
          URI headers in the Request-URI (8.2.2, 19.1.1)                   3.3.9, 3.1.2.17,
                                                                           3.1.2.11
    416   Request-URI scheme not sip/sips/tel (8.2.2.1)                    3.3.2, 3.3.3
    400   REGISTER whose To is not a SIP/SIPS URI (10.3)                   3.3.4
    420   Require names an extension not in ``extensions`` (8.2.2.3)       3.3.5
    415   Content-Encoding / Content-Type not understood, or a multipart   3.3.6
          body without boundary (8.2.3)
    406   INVITE whose Accept excludes application/sdp (21.4.7)            3.3.15
    ====  ===============================================================  ==============

    The 501/420/415/406 checks depend on what the UAS implements; they use the
    ``methods``, ``extensions``, ``content_types`` and ``content_encodings`` options
    (pass None to skip a check). Transaction-layer and proxy behaviour (483 for
    Max-Forwards 0 at a proxy, a branch without a transaction id, 401 challenges) is not
    judged here.
"""

from __future__ import annotations

from typing import Any, Collection

from ..errors import RemoteProtocolError
from .headers import parse_media_range_list, parse_token_list
from .message import (
    DEFAULT_LIMITS,
    Limits,
    Request,
    Response,
    check_semantics,
    check_syntax,
    check_version,
    parse_message,
)
from .uri import SipUri, TelUri

__all__ = [
    "describe",
    "STANDARD_METHODS",
    "DEFAULT_CONTENT_TYPES",
    "DEFAULT_CONTENT_ENCODINGS",
]

#: Methods of RFC 3261 and the common extensions (3262 PRACK, 3265 SUBSCRIBE/NOTIFY,
#: 3311 UPDATE, 3428 MESSAGE, 3515 REFER, 3903 PUBLISH, 6086 INFO).
STANDARD_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
     "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}
)
#: Body types voicelab's UA understands.
DEFAULT_CONTENT_TYPES = frozenset(
    {"application/sdp", "multipart/mixed", "multipart/alternative", "multipart/related",
     "text/plain", "message/sipfrag", "application/dtmf-relay"}
)
#: Content codings voicelab's UA understands (RFC 3261 20.12).
DEFAULT_CONTENT_ENCODINGS = frozenset({"identity"})

_URI_SCHEMES_OK = (SipUri, TelUri)


def _sniff_kind(data: bytes) -> str | None:
    first = data.lstrip(b"\r\n").split(b"\r\n", 1)[0]
    if first[:4].upper() == b"SIP/":
        return "response"
    if b" " in first:
        return "request"
    return None


def _uas_checks(
    msg: Request,
    *,
    methods: Collection[str] | None,
    extensions: Collection[str] | None,
    content_types: Collection[str] | None,
    content_encodings: Collection[str] | None,
) -> tuple[int, str] | None:
    """The checks after the grammar, in RFC 3261 8.2 order; first failure wins."""
    if methods is not None and msg.method not in methods:
        return 501, f"method {msg.method} is not implemented"
    try:
        check_semantics(msg)
    except RemoteProtocolError as exc:
        return exc.status_code, str(exc)
    if not isinstance(msg.uri, _URI_SCHEMES_OK):
        return 416, f"unsupported URI scheme {msg.uri.scheme!r} in the Request-URI"
    if msg.method == "REGISTER" and not isinstance(msg.to.uri, SipUri):
        return 400, "REGISTER To must be a SIP or SIPS address-of-record (RFC 3261 10.3)"
    if extensions is not None:
        required = [t for f in msg.headers.fields("require") for t in parse_token_list(f.value, "Require")]
        unknown = [t for t in required if t not in extensions]
        if unknown and msg.method not in ("ACK", "CANCEL"):
            return 420, f"unsupported extension(s) in Require: {', '.join(unknown)}"
    if msg.body or msg.content_type is not None:
        if content_encodings is not None:
            codings = [c.lower() for f in msg.headers.fields("content-encoding")
                       for c in parse_token_list(f.value, "Content-Encoding")]
            bad = [c for c in codings if c not in content_encodings]
            if bad:
                return 415, f"unsupported Content-Encoding {', '.join(bad)}"
        ct = msg.content_type
        if ct is not None and ct.type == "multipart" and not ct.param("boundary"):
            return 415, "multipart body without a boundary parameter"
        if content_types is not None and ct is not None and msg.body and ct.mime not in content_types:
            return 415, f"unsupported Content-Type {ct.mime}"
    if msg.method == "INVITE" and "accept" in msg.headers:
        ranges = [r for f in msg.headers.fields("accept") for r in parse_media_range_list(f.value)]
        if ranges and not any(
            (r.type in ("*", "application")) and (r.subtype in ("*", "sdp")) for r in ranges
        ):
            return 406, "Accept does not allow application/sdp, which an answer to INVITE needs"
    return None


def describe(
    data: bytes,
    *,
    datagram: bool = True,
    methods: Collection[str] | None = STANDARD_METHODS,
    extensions: Collection[str] | None = frozenset(),
    content_types: Collection[str] | None = DEFAULT_CONTENT_TYPES,
    content_encodings: Collection[str] | None = DEFAULT_CONTENT_ENCODINGS,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Parse *data* and report validity, what a UAS would answer, and the main fields.

    Parameters
    ----------
    data : bytes
        One message (a datagram, or a stream message when ``datagram=False``).
    datagram : bool, optional
        Framing rules (see :func:`voicelab.sip.message.parse_message`).
    methods, extensions, content_types, content_encodings : collection of str or None
        What the judged UAS implements: methods (else 501), option tags for Require
        (else 420), body types and content codings (else 415). None skips that check.
    limits : Limits, optional

    Returns
    -------
    dict
        ``valid`` (bool), ``kind`` ("request"/"response"/None), ``error`` (None or one
        line), ``reply_status`` (int or None), ``method``, ``status_code``, ``reason``,
        ``request_uri``, ``version``, ``headers`` (list of [name, value] after
        unfolding), ``body_length`` (bytes). Fields that do not apply are None.

    Examples
    --------
    >>> d = describe(b"OPTIONS http://example.com SIP/2.0\\r\\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\\r\\n"
    ...              b"From: <sip:a@b>;tag=1\\r\\nTo: <sip:c@d>\\r\\nCall-ID: x\\r\\nCSeq: 1 OPTIONS\\r\\n\\r\\n")
    >>> d["valid"], d["reply_status"]
    (True, 416)
    """
    info: dict[str, Any] = {
        "valid": False,
        "kind": None,
        "error": None,
        "reply_status": None,
        "method": None,
        "status_code": None,
        "reason": None,
        "request_uri": None,
        "version": None,
        "headers": [],
        "body_length": None,
    }
    try:
        data = bytes(data)
    except TypeError:
        info["error"] = f"describe needs bytes, got {type(data).__name__}"
        return info
    try:
        msg = parse_message(data, datagram=datagram, validate=False, limits=limits)
    except RemoteProtocolError as exc:
        kind = _sniff_kind(data)
        info.update(kind=kind, error=str(exc), reply_status=exc.status_code if kind == "request" else None)
        return info
    is_request = isinstance(msg, Request)
    info.update(
        kind="request" if is_request else "response",
        version=msg.version,
        headers=[[name, value] for name, value in msg.headers.items()],
        body_length=len(msg.body),
    )
    if isinstance(msg, Request):
        info.update(method=msg.method, request_uri=str(msg.uri))
    elif isinstance(msg, Response):
        info.update(status_code=msg.status_code, reason=msg.reason)

    problem: tuple[int, str] | None = None
    try:
        check_syntax(msg)
        info["valid"] = True
    except RemoteProtocolError as exc:
        problem = (exc.status_code, str(exc))
    try:
        check_version(msg)
    except RemoteProtocolError as exc:
        problem = (exc.status_code, str(exc))  # 505 wins over grammar problems
    if problem is None:
        if isinstance(msg, Request):
            try:
                problem = _uas_checks(
                    msg,
                    methods=methods,
                    extensions=extensions,
                    content_types=content_types,
                    content_encodings=content_encodings,
                )
            except RemoteProtocolError as exc:  # a header read late was malformed
                problem = (exc.status_code, str(exc))
        else:
            try:
                check_semantics(msg)
            except RemoteProtocolError as exc:
                problem = (exc.status_code, str(exc))
    if problem is not None:
        info["error"] = problem[1]
        if is_request:
            info["reply_status"] = problem[0]
    return info
