"""Load shedding on the bytes: refuse a new INVITE without parsing it (sans-IO).

Refusing an INVITE through the full stack (parse, transaction, response, then the ACK
parsed and matched) costs most of what accepting it costs, so past capacity an agent
that refuses "properly" still collapses. A server in overload answers from the raw
datagram instead: :func:`triage` finds out-of-dialog INVITEs and the ACKs of our own
stateless refusals with one regular-expression pass over the header block (C code: no
message object, no per-header parse), and :func:`respond` builds the response
(``503`` + ``Retry-After``, RFC 3261 21.5.4) by copying the Via lines (all, in order),
From, To, Call-ID, CSeq and Timestamp values (RFC 3261 8.2.6), with a To tag that starts
with :data:`SHED_TAG_PREFIX` (never a hex tag of :class:`voicelab.sip.ua.UserAgent`) so
that the ACK is recognised and dropped (RFC 3261 17.2.3 lets a stateless server answer
a retransmission the same way again). :func:`classify` and :func:`refusal` are the
same two steps for callers that need only one of them.

Anything these functions cannot read with certainty (no CRLF CRLF, a lone CR or LF,
folded lines, zero or two To or Call-ID headers, a non-ASCII Call-ID) returns None: the
datagram then goes to the full parser, which answers malformed input properly.

An optional C accelerator (``voicelab/sip/_shedc.c``, built by ``pip install`` when a C
compiler is there, as aiohttp's and yarl's are) does the same byte logic, and
:func:`drain` adds the socket side: one ``recvmmsg`` per batch, refusals sent with one
``sendmmsg``. :data:`ACCELERATED` says whether it is in use; ``VOICELAB_NO_EXTENSIONS=1``
(set before import) or a missing build selects the pure-Python code, which stays the
reference (tests/test_sip_shed.py checks both agree).

Examples
--------
>>> inv = (b"INVITE sip:a@h SIP/2.0\\r\\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\\r\\n"
...        b"From: <sip:b@h>;tag=1\\r\\nTo: <sip:a@h>\\r\\nCall-ID: c1\\r\\nCSeq: 1 INVITE\\r\\n"
...        b"Content-Length: 0\\r\\n\\r\\n")
>>> classify(inv)
('invite', 'c1')
>>> resp = refusal(inv, 503, "Service Unavailable", retry_after=2, tag="olx")
>>> resp.split(b"\\r\\n")[0], b"Retry-After: 2" in resp, b"To: <sip:a@h>;tag=olx" in resp
(b'SIP/2.0 503 Service Unavailable', True, True)
>>> classify(inv.replace(b"INVITE sip", b"ACK sip").replace(b"To: <sip:a@h>", b"To: <sip:a@h>;tag=olx"))
('shed-ack', 'c1')
"""

from __future__ import annotations

import os
import re

__all__ = ["ACCELERATED", "SHED_TAG_PREFIX", "classify", "drain", "refusal", "respond", "status_line", "triage"]

#: To-tag prefix of stateless refusals ("o" and "l" are not hex digits: no UA tag has it).
SHED_TAG_PREFIX = "ol"

# one pass over the header block: (name, value) of each header a refusal copies; every
# line ends in CRLF (checked before), so a value runs to the next CR
_FIELD_RE = re.compile(rb"\n(via|v|from|f|to|t|call-id|i|cseq|timestamp)[ \t]*:[ \t]*([^\r\n]*)", re.I)
_OL_TAG_RE = re.compile(rb"tag[ \t]*=[ \t]*" + SHED_TAG_PREFIX.encode(), re.I)
_TAG_RE = re.compile(rb";[ \t]*tag[ \t]*=[ \t]*([^;, \t>]+)", re.I)
# header name as written (any case, compact form) -> slot in the fields list
_SLOT = {b"via": 0, b"v": 0, b"from": 1, b"f": 1, b"to": 2, b"t": 2, b"call-id": 3, b"i": 3, b"cseq": 4,
         b"timestamp": 5}
_NAMES = (b"Via: ", b"From: ", b"To: ", b"Call-ID: ", b"CSeq: ", b"Timestamp: ")
_PREFIX = SHED_TAG_PREFIX.encode()

#: What :func:`triage` returns: (kind, Call-ID, fields); fields holds, per slot (Via,
#: From, To, Call-ID, CSeq, Timestamp), the list of values in the order they came.
Triage = tuple  # (str, str, list[list[bytes]])


def _fields(data: bytes) -> list[list[bytes]] | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[: end + 2]  # the last header line keeps its CRLF
    n = head.count(b"\n")
    if head.count(b"\r") != n or head.count(b"\r\n") != n:  # a lone CR or LF: the parser decides
        return None
    if b"\n " in head or b"\n\t" in head:  # folded lines: leave it to the parser
        return None
    out: list[list[bytes]] = [[], [], [], [], [], []]
    slot = _SLOT
    for name, value in _FIELD_RE.findall(head):
        out[slot[name.lower()]].append(value.rstrip(b" \t"))
    return out


def _to_tag(to_value: bytes) -> bytes | None:
    # the tag is a header parameter: after the URI (after '>' when the URI is bracketed)
    gt = to_value.rfind(b">")
    m = _TAG_RE.search(to_value, gt + 1 if gt >= 0 else 0)
    return m.group(1) if m else None


def _py_triage(data: bytes) -> Triage | None:
    """What a datagram is, as far as shedding cares, and what a refusal needs of it.

    Parameters
    ----------
    data : bytes
        One datagram as received.

    Returns
    -------
    (kind, call_id, fields) or None
        ``kind`` ``"invite"``: an INVITE without To tag (a new call); ``"shed-ack"``: an
        ACK whose To tag is one of our stateless refusals. ``fields`` is for
        :func:`respond`. None: anything else, or not readable with certainty.
    """
    # (one function, no helper calls: this runs for every INVITE and ACK under overload)
    if data.startswith(b"INVITE "):
        invite = True
    elif data.startswith(b"ACK "):
        if _OL_TAG_RE.search(data) is None:  # no tag of ours anywhere: the ACK of a call (one C search)
            return None
        invite = False
    else:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[: end + 2]  # the last header line keeps its CRLF
    n = head.count(b"\n")
    # a lone CR or LF, or folded lines: the parser decides
    if head.count(b"\r") != n or head.count(b"\r\n") != n or b"\n " in head or b"\n\t" in head:
        return None
    f: list[list[bytes]] = [[], [], [], [], [], []]
    slot = _SLOT
    for name, value in _FIELD_RE.findall(head):
        f[slot[name.lower()]].append(value.rstrip(b" \t"))
    to, call_id = f[2], f[3]
    if len(to) != 1 or len(call_id) != 1 or not f[0]:
        return None
    try:
        cid = call_id[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    to_value = to[0]
    gt = to_value.rfind(b">")  # the tag is a header parameter: after the URI's '>' when bracketed
    m = _TAG_RE.search(to_value, gt + 1 if gt >= 0 else 0)
    if invite:
        return ("invite", cid, f) if m is None else None
    return ("shed-ack", cid, f) if m is not None and m.group(1).startswith(_PREFIX) else None


if os.environ.get("VOICELAB_NO_EXTENSIONS", "") not in ("", "0"):
    _shedc = None
else:
    try:
        from . import _shedc  # type: ignore[attr-defined, no-redef]
    except ImportError:  # not built (no C compiler at install time): the Python code
        _shedc = None

#: Whether the C accelerator is in use (False: pure Python; see the module's docstring).
ACCELERATED: bool = _shedc is not None
#: The socket adapter of the C accelerator (None without it, or off Linux):
#: ``drain(fd, max_n, max_bytes, decide) -> (others, received, consumed_bytes, shed_acks,
#: refused, sent_bytes, unsent)``. It reads up to ``max_n`` (<= 64) datagrams from the
#: non-blocking AF_INET UDP socket ``fd`` with one ``recvmmsg``; in arrival order it drops
#: the ACKs of our refusals, shows each new INVITE from which a refusal can be built to
#: ``decide(call_id)`` (None: admit; ``(status_line, retry_after, tag)``: refuse), and
#: hands back every other datagram (and every admitted INVITE, and anything over
#: ``max_bytes``) as ``(bytes, (host, port))`` in ``others``, in order. The refusals (what
#: :func:`respond` would build) go out in one ``sendmmsg``; those the socket did not take
#: come back in ``unsent``.
drain = getattr(_shedc, "drain", None)

if _shedc is not None:
    _c_triage = _shedc.triage

    def triage(data: bytes) -> Triage | None:  # noqa: D103 - the docstring is _py_triage's
        t = _c_triage(data)
        return _py_triage(data) if t is NotImplemented else t  # (more than 64 header lines of interest)

    triage.__doc__ = _py_triage.__doc__
else:
    triage = _py_triage


def status_line(status: int, reason: str) -> bytes:
    """``SIP/2.0 <status> <reason>\\r\\n`` (status 300-699), for :func:`respond`."""
    return b"SIP/2.0 %d %s\r\n" % (int(status), reason.encode("utf-8"))


def respond(fields: list[list[bytes]], line: bytes, *, retry_after: int | None, tag: bytes) -> bytes | None:
    """A stateless response from :func:`triage`'s ``fields``: bytes operations only.

    Parameters
    ----------
    fields : list of list of bytes
        From :func:`triage` (or the internal scan of :func:`refusal`).
    line : bytes
        The status line with its CRLF (:func:`status_line`).
    retry_after : int or None
        Seconds for ``Retry-After``; None: no header.
    tag : bytes
        To tag to add (should start with :data:`SHED_TAG_PREFIX`).

    Returns
    -------
    bytes or None
        None when the request lacks what a response needs (a Via, From, one To,
        Call-ID, CSeq).
    """
    vias, frm, to, cid, cseq, ts = fields
    if not vias or not frm or len(to) != 1 or not cid or not cseq:
        return None
    parts = [line]
    for v in vias:
        parts += (b"Via: ", v, b"\r\n")
    parts += (b"From: ", frm[0], b"\r\nTo: ", to[0], b";tag=", tag, b"\r\nCall-ID: ", cid[0], b"\r\nCSeq: ",
              cseq[0], b"\r\n")
    if ts:
        parts += (b"Timestamp: ", ts[0], b"\r\n")
    if retry_after is not None:
        parts.append(b"Retry-After: %d\r\n" % retry_after)
    parts.append(b"Server: voicelab\r\nContent-Length: 0\r\n\r\n")
    return b"".join(parts)


def classify(data: bytes) -> tuple[str, str] | None:
    """What a datagram is, as far as shedding cares (:func:`triage` without the fields).

    Returns
    -------
    ("invite", call_id) or ("shed-ack", call_id) or None
        ``"invite"``: an INVITE without To tag (a new call); ``"shed-ack"``: an ACK
        whose To tag is one of our stateless refusals; None: anything else, or not
        readable with certainty.
    """
    t = triage(data)
    return None if t is None else (t[0], t[1])


def refusal(data: bytes, status: int, reason: str, *, retry_after: int | None, tag: str) -> bytes | None:
    """A stateless response to the request in ``data`` (its Via lines, From, To + tag, Call-ID, CSeq).

    Parameters
    ----------
    data : bytes
        The request datagram.
    status : int
        300-699.
    reason : str
        Reason phrase.
    retry_after : int or None
        Seconds for ``Retry-After``; None: no header.
    tag : str
        To tag to add (should start with :data:`SHED_TAG_PREFIX`).

    Returns
    -------
    bytes or None
        None when the request lacks what a response needs.
    """
    f = _fields(data)
    if f is None:
        return None
    return respond(f, status_line(status, reason), retry_after=retry_after, tag=tag.encode())
