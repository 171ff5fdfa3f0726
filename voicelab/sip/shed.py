"""Load shedding on the bytes: refuse a new INVITE without parsing it (sans-IO).

Refusing an INVITE through the full stack (parse, transaction, response, then the ACK
parsed and matched) costs most of what accepting it costs, so past capacity an agent
that refuses "properly" still collapses. A server in overload answers from the raw
datagram instead: :func:`classify` finds out-of-dialog INVITEs and the ACKs of our own
stateless refusals with a few byte searches, :func:`refusal` builds the response
(``503`` + ``Retry-After``, RFC 3261 21.5.4) by copying the Via, From, To, Call-ID and
CSeq lines, with a To tag that starts with :data:`SHED_TAG_PREFIX` (never a hex tag of
:class:`voicelab.sip.ua.UserAgent`) so that the ACK is recognised and dropped
(RFC 3261 17.2.3 lets a stateless server answer a retransmission the same way again).

Anything these functions cannot read with certainty returns None: the datagram then
goes to the full parser, which answers malformed input properly.

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

import re

__all__ = ["SHED_TAG_PREFIX", "classify", "refusal"]

#: To-tag prefix of stateless refusals ("o" and "l" are not hex digits: no UA tag has it).
SHED_TAG_PREFIX = "ol"

_HEADER_RE = re.compile(rb"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*([^\r\n]*)\r?$", re.I | re.M)
_TAG_RE = re.compile(rb";[ \t]*tag[ \t]*=[ \t]*([^;, \t>]+)", re.I)
_CANON = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}


def _headers(data: bytes) -> dict[bytes, list[bytes]] | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    if b"\r\n " in head or b"\r\n\t" in head:  # folded lines: leave it to the parser
        return None
    out: dict[bytes, list[bytes]] = {}
    for m in _HEADER_RE.finditer(head):
        name = m.group(1).lower()
        out.setdefault(_CANON.get(name, name), []).append(m.group(2).rstrip(b" \t"))
    return out


def _to_tag(to_value: bytes) -> bytes | None:
    # the tag is a header parameter: after the URI (after '>' when the URI is bracketed)
    gt = to_value.rfind(b">")
    m = _TAG_RE.search(to_value, gt + 1 if gt >= 0 else 0)
    return m.group(1) if m else None


def classify(data: bytes) -> tuple[str, str] | None:
    """What a datagram is, as far as shedding cares.

    Returns
    -------
    ("invite", call_id) or ("shed-ack", call_id) or None
        ``"invite"``: an INVITE without To tag (a new call); ``"shed-ack"``: an ACK
        whose To tag is one of our stateless refusals; None: anything else, or not
        readable with certainty.
    """
    if data.startswith(b"INVITE "):
        kind = "invite"
    elif data.startswith(b"ACK "):
        kind = "shed-ack"
    else:
        return None
    h = _headers(data)
    if h is None:
        return None
    to, call_id = h.get(b"to"), h.get(b"call-id")
    if not to or len(to) != 1 or not call_id or len(call_id) != 1 or not h.get(b"via"):
        return None
    tag = _to_tag(to[0])
    try:
        cid = call_id[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    if kind == "invite":
        return ("invite", cid) if tag is None else None
    return ("shed-ack", cid) if tag is not None and tag.startswith(SHED_TAG_PREFIX.encode()) else None


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
    h = _headers(data)
    if h is None:
        return None
    vias, frm, to, cid, cseq = (h.get(k) for k in (b"via", b"from", b"to", b"call-id", b"cseq"))
    if not vias or not frm or not to or not cid or not cseq or len(to) != 1:
        return None
    lines = [f"SIP/2.0 {int(status)} {reason}".encode()]
    lines += [b"Via: " + v for v in vias]
    lines += [b"From: " + frm[0], b"To: " + to[0] + b";tag=" + tag.encode(), b"Call-ID: " + cid[0], b"CSeq: " + cseq[0]]
    if retry_after is not None:
        lines.append(b"Retry-After: %d" % retry_after)
    lines += [b"Server: voicelab", b"Content-Length: 0", b"", b""]
    return b"\r\n".join(lines)
