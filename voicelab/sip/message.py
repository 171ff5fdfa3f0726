"""SIP messages (RFC 3261 section 7): parse, serialize, frame, validate. Sans-IO.

::

    SIP-message    = Request / Response
    Request        = Request-Line *( message-header ) CRLF [ message-body ]
    Request-Line   = Method SP Request-URI SP SIP-Version CRLF
    Response       = Status-Line *( message-header ) CRLF [ message-body ]
    Status-Line    = SIP-Version SP Status-Code SP Reason-Phrase CRLF
    SIP-Version    = "SIP" "/" 1*DIGIT "." 1*DIGIT
    message-header = header-name HCOLON header-value CRLF    ; HCOLON = *( SP / HTAB ) ":" SWS
    LWS            = [*WSP CRLF] 1*WSP                        ; a fold: CRLF then SP or HTAB

:func:`parse_message` turns one datagram (or one exactly framed stream message) into a
:class:`Request` or :class:`Response`; ``bytes(message)`` writes it back, byte for byte
for anything parsed (original header spelling, compact forms and folds are kept).
:class:`StreamParser` frames messages on TCP/TLS/WebSocket-stream connections by
``Content-Length``. Nothing here does I/O.

Framing (RFC 3261 18.3):

- datagram: the message is the whole datagram. With ``Content-Length``, octets beyond it
  are ignored (RFC 4475 3.1.1.8) and a body shorter than it is a 400 (3.1.2.2); without
  it the body runs to the end of the datagram;
- stream: ``Content-Length`` gives the body size; a message without it has an empty
  body (RFC 3261 requires the header on streams; treating it as 0 is what keeps the
  connection usable). CRLFs before a start line are keep-alives (RFC 5626 3.5.1) and
  are skipped.

Errors are :class:`~voicelab.errors.RemoteProtocolError` with the status a UAS would
answer: 400 malformed, 505 unsupported version, 513 message (header section) too large,
413 body too large for the limits. Validation (:func:`validate`) runs in three steps that
:func:`voicelab.sip.inspect.describe` reports separately: :func:`check_version` (505),
:func:`check_syntax` (400: the grammar of every header we understand) and
:func:`check_semantics` (400: required headers present, single-valued headers single,
CSeq method equal to the request method, no headers in the Request-URI).

Why our own: no maintained sans-IO SIP parser exists for Python (pjsua2 and
PySIPio-style libraries bundle I/O, or are unmaintained), and the lab needs one that
raises only typed errors and can be fuzzed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..errors import ParameterError, RemoteProtocolError
from .abnf import WSP, is_token
from .headers import (
    _SHARED_KEYS,
    _shared_parse,
    HEADER_PARSERS,
    Auth,
    ContentType,
    CSeq,
    HeaderField,
    Headers,
    NameAddr,
    Via,
    parse_auth,
    parse_call_id,
    parse_contact,
    parse_content_length,
    parse_content_type,
    parse_cseq,
    parse_expires,
    parse_max_forwards,
    parse_name_addr,
    parse_name_addr_list,
    header_key,
    parse_via,
)
from .uri import SipUri, Uri, parse_uri

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "Message",
    "Request",
    "Response",
    "parse_message",
    "StreamParser",
    "validate",
    "check_version",
    "check_syntax",
    "check_semantics",
    "split_multipart",
]

SIP_VERSION = "SIP/2.0"
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_STATUS_RE = re.compile(r"[1-6][0-9][0-9]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Limits:
    """Size limits a parser enforces before doing any work on a message.

    Attributes
    ----------
    max_message_bytes : int
        Whole message, header section plus body (bytes). Default 65536: the largest
        UDP datagram, and what most SIP stacks allow on streams.
    max_headers : int
        Header fields per message. Default 256.
    max_header_line : int
        Characters in one header field after unfolding. Default 8192.
    """

    max_message_bytes: int = 65536
    max_headers: int = 256
    max_header_line: int = 8192


#: The limits used unless told otherwise.
DEFAULT_LIMITS = Limits()


# ---------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------


def _to_headers(headers: Headers | Iterable[HeaderField | tuple[str, str]] | None) -> Headers:
    if headers is None:
        return Headers()
    return headers if isinstance(headers, Headers) else Headers(headers)


class Message:
    """What requests and responses share: headers, body, version and typed accessors.

    Typed accessors parse on each call; a broken value raises
    :class:`~voicelab.errors.RemoteProtocolError` (400).
    """

    __slots__ = ("headers", "body", "version")

    headers: Headers
    body: bytes
    version: str

    # -- helpers ---------------------------------------------------------------------
    def _single(self, name: str, *, required: bool = False, key: str | None = None) -> str | None:
        fields = self.headers._lookup(key or header_key(name))
        if len(fields) == 1:  # the common case first
            return fields[0].value
        if not fields:
            if required:
                raise RemoteProtocolError(f"missing {name} header", status_code=400)
            return None
        if len(fields) > 1:
            raise RemoteProtocolError(f"{name} header appears {len(fields)} times; it takes one value", status_code=400)
        return fields[0].value

    # -- typed accessors -------------------------------------------------------------
    @property
    def via(self) -> list[Via]:
        """Every Via hop, topmost first (all Via fields, each split on commas)."""
        h = self.headers
        memo = h._memo
        if memo is not None and "@via" in memo:
            return list(memo["@via"])  # type: ignore[index]
        out: list[Via] = []
        for f in h._lookup("via"):
            out.extend(h.parsed("via", f.value, parse_via))
        memo = h._memo
        if memo is not None:
            memo["@via"] = tuple(out)  # type: ignore[index]  # (dropped with the memo when a header changes)
        return out

    def _typed(self, slot: str, key: str, name: str, parser: Callable[[str], Any]) -> Any:
        """A single-valued header's parsed value, remembered in the header set's memo
        under ``slot`` (dropped with it when a header changes or the message is forgotten)."""
        h = self.headers
        fields = h._lookup(key)
        value = fields[0].value if len(fields) == 1 else self._single(name, required=True, key=key) or ""
        memo = h._memo
        k = (key, value)
        if memo is not None and k in memo:  # Headers.parsed's memo hit, inlined
            v = memo[k]
        else:
            v = h.parsed(key, value, parser)
            memo = h._memo
        if memo is not None:
            memo[slot] = v  # type: ignore[index]
        return v

    @property
    def from_(self) -> NameAddr:
        """The From header (``from`` is a Python keyword)."""
        memo = self.headers._memo
        if memo is not None and "@from" in memo:
            return memo["@from"]  # type: ignore[index]
        return self._typed("@from", "from", "From", _parse_from)

    @property
    def to(self) -> NameAddr:
        """The To header."""
        memo = self.headers._memo
        if memo is not None and "@to" in memo:
            return memo["@to"]  # type: ignore[index]
        return self._typed("@to", "to", "To", _parse_to)

    @property
    def contact(self) -> list[NameAddr] | str:
        """Contact values in order, ``"*"`` for the wildcard, ``[]`` when absent."""
        h = self.headers
        fields = h._lookup("contact")
        if len(fields) == 1 and fields[0].value.strip(WSP) == "*":
            return "*"
        out: list[NameAddr] = []
        for f in fields:
            c = h.parsed("contact", f.value, parse_contact)  # memoised: copied into ``out``
            if isinstance(c, str):
                raise RemoteProtocolError("Contact '*' cannot be combined with other contacts", status_code=400)
            out.extend(c)
        return out

    @property
    def route(self) -> list[NameAddr]:
        """Route values in order (RFC 3261 20.34)."""
        return [na for f in self.headers.fields("route") for na in parse_name_addr_list(f.value, "Route")]

    @property
    def record_route(self) -> list[NameAddr]:
        """Record-Route values in order (RFC 3261 20.30)."""
        return [na for f in self.headers.fields("record-route") for na in parse_name_addr_list(f.value, "Record-Route")]

    @property
    def cseq(self) -> CSeq:
        """The CSeq header."""
        memo = self.headers._memo
        if memo is not None and "@cseq" in memo:
            return memo["@cseq"]  # type: ignore[index]
        return self._typed("@cseq", "cseq", "CSeq", parse_cseq)

    @property
    def call_id(self) -> str:
        """The Call-ID value."""
        memo = self.headers._memo
        if memo is not None and "@call-id" in memo:
            return memo["@call-id"]  # type: ignore[index]
        return self._typed("@call-id", "call-id", "Call-ID", parse_call_id)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0..255), None when absent."""
        v = self._single("Max-Forwards", key="max-forwards")
        return None if v is None else self.headers.parsed("max-forwards", v, parse_max_forwards)

    @property
    def content_length(self) -> int | None:
        """Content-Length in bytes, None when absent."""
        v = self._single("Content-Length", key="content-length")
        return None if v is None else self.headers.parsed("content-length", v, parse_content_length)

    @property
    def content_type(self) -> ContentType | None:
        """Content-Type, None when absent."""
        v = self._single("Content-Type", key="content-type")
        return None if v is None else self.headers.parsed("content-type", v, parse_content_type)

    @property
    def expires(self) -> int | None:
        """Expires in seconds, None when absent."""
        v = self._single("Expires", key="expires")
        return None if v is None else parse_expires(v)

    def auth(self, name: str) -> list[Auth]:
        """Challenges or credentials of one auth header, in order.

        Parameters
        ----------
        name : str
            ``"WWW-Authenticate"``, ``"Proxy-Authenticate"``, ``"Authorization"`` or
            ``"Proxy-Authorization"``.
        """
        return [parse_auth(f.value, name) for f in self.headers.fields(name)]

    # -- serialization ---------------------------------------------------------------
    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        # as b"\r\n".join(bytes(f) for each field), encoded once
        lines = [self.start_line()]
        lines += [f"{f.name}: {f.value}" if f.raw is None else f.raw for f in self.headers._fields]
        return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + bytes(self.body)


class Request(Message):
    """A SIP request.

    Parameters
    ----------
    method : str
        A ``token`` (case-sensitive: ``INVITE`` and ``invite`` differ).
    uri : str or SipUri or TelUri or AbsoluteUri
        The Request-URI; a string is parsed.
    headers : Headers or iterable of (name, value), optional
    body : bytes, optional
    version : str, optional
        ``"SIP/2.0"``.

    Examples
    --------
    >>> r = Request("OPTIONS", "sip:bob@example.com", [("Call-ID", "a@b")])
    >>> bytes(r).split(b"\\r\\n")[0]
    b'OPTIONS sip:bob@example.com SIP/2.0'
    """

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str | Uri,
        headers: Headers | Iterable[HeaderField | tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        if not isinstance(method, str) or not is_token(method):
            raise ParameterError(f"method must be a SIP token such as 'INVITE', got {method!r}")
        self.method = method
        self.uri: Uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.headers = _to_headers(headers)
        self.body = bytes(body)
        self.version = version

    def start_line(self) -> str:
        """``Method SP Request-URI SP SIP-Version``."""
        return f"{self.method} {self.uri} {self.version}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and str(self.uri) == str(other.uri)
            and self.version.upper() == other.version.upper()
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} headers={len(self.headers)} body={len(self.body)}B>"


class Response(Message):
    """A SIP response.

    Parameters
    ----------
    status_code : int
        100..699.
    reason : str
        Reason phrase (may be empty).
    headers : Headers or iterable of (name, value), optional
    body : bytes, optional
    version : str, optional
    """

    __slots__ = ("status_code", "reason")

    def __init__(
        self,
        status_code: int,
        reason: str,
        headers: Headers | Iterable[HeaderField | tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        if not isinstance(status_code, int) or not 100 <= status_code <= 699:
            raise ParameterError(f"status_code must be an int in 100..699, got {status_code!r}")
        self.status_code = status_code
        self.reason = reason
        self.headers = _to_headers(headers)
        self.body = bytes(body)
        self.version = version

    def start_line(self) -> str:
        """``SIP-Version SP Status-Code SP Reason-Phrase``."""
        return f"{self.version} {self.status_code} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status_code == other.status_code
            and self.reason == other.reason
            and self.version.upper() == other.version.upper()
            and self.headers == other.headers
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.reason!r} headers={len(self.headers)} body={len(self.body)}B>"


# ---------------------------------------------------------------------------------------
# Parsing the header section
# ---------------------------------------------------------------------------------------


def _parse_from(value: str) -> NameAddr:
    return parse_name_addr(value, "From")


def _parse_to(value: str) -> NameAddr:
    return parse_name_addr(value, "To")


def _bad(detail: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed message: {detail}", status_code=400)


def _parse_start_line(line: str) -> tuple[str, object, object, str]:
    """Return ("request", method, uri, version) or ("response", code, reason, version)."""
    if line[:4].upper() == "SIP/":
        version, sp, rest = line.partition(" ")
        if _VERSION_RE.fullmatch(version) is None:
            raise _bad(f"bad SIP-Version in status line {line[:80]!r}")
        code, _, reason = rest.partition(" ")
        if _STATUS_RE.fullmatch(code) is None:
            raise _bad(f"Status-Code must be three digits 100..699, got {code[:20]!r}")
        if _CONTROL_RE.search(reason):
            raise _bad("control character in Reason-Phrase")
        return ("response", int(code), reason, version)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise _bad(
            "Request-Line must be 'Method SP Request-URI SP SIP-Version' with single spaces "
            f"(RFC 3261 7.1), got {line[:80]!r}"
        )
    method, uri_text, version = parts
    if not is_token(method):
        raise _bad(f"Method must be a token, got {method[:40]!r}")
    if _VERSION_RE.fullmatch(version) is None:
        raise _bad(f"bad SIP-Version {version[:20]!r}")
    try:
        uri = parse_uri(uri_text)
    except RemoteProtocolError as exc:
        raise _bad(f"bad Request-URI: {exc}") from None
    return ("request", method, uri, version)


def _parse_head(head: bytes, limits: Limits) -> tuple[tuple[str, object, object, str], Headers]:
    """Parse start line and header fields from the bytes before the empty line."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"header section is not UTF-8 (byte {exc.start})") from None
    lines = text.split("\r\n")
    if not lines[0] or "\r" in lines[0] or "\n" in lines[0]:
        raise _bad("empty start line, or bare CR/LF in it")
    start = _parse_start_line(lines[0])
    n = len(lines)
    max_line = limits.max_header_line
    # no CR or LF outside the CRLFs split on: no line needs its own bare CR/LF check
    crlfs = n - 1
    clean = text.count("\r") == crlfs and text.count("\n") == crlfs
    if clean and crlfs <= limits.max_headers and len(text) <= max_line:
        # The common head: every line one "token *WSP : value" field (no fold, none over
        # a limit), matched by one regex pass; anything else takes the line loop below.
        found = _FIELD_RE.findall(text, len(lines[0]) + 2)
        if len(found) == crlfs:
            return start, Headers._of([HeaderField(name, value, raw) for raw, name, value in found])
    fields: list[HeaderField] = []
    i = 1
    good_names = _GOOD_NAMES
    while i < n:
        line = lines[i]
        if not line or line[0] in WSP:
            raise _bad(f"header line {i} starts with white space or is empty")
        j = i + 1
        while j < n and lines[j] and lines[j][0] in WSP:
            j += 1
        colon = line.find(":")
        if colon < 0:
            raise _bad(f"header line without ':' ({line[:60]!r})")
        name = line[:colon].rstrip(WSP)
        if name not in good_names:
            if not is_token(name):
                raise _bad(f"header name must be a token, got {name[:60]!r}")
            if len(good_names) < 1024:
                good_names.add(name)
        if j == i + 1 and clean:  # the common line: one physical line, nothing to unfold
            value = line[colon + 1 :].strip(WSP)
            if len(value) > max_line or len(line) > max_line + 2:
                raise RemoteProtocolError(
                    f"header {name[:40]} is {len(value)} characters after unfolding; the limit is {max_line}",
                    status_code=400,
                )
            fields.append(HeaderField(name, value, line))
            if len(fields) > limits.max_headers:
                raise RemoteProtocolError(f"message has more than {limits.max_headers} header fields", status_code=400)
            i = j
            continue
        if j == i + 1:
            raw = line
            value = line[colon + 1 :].strip(WSP)
        else:
            raw = "\r\n".join(lines[i:j])
            pieces = [line[colon + 1 :].strip(WSP)] + [p.strip(WSP) for p in lines[i + 1 : j]]
            value = " ".join(p for p in pieces if p)
        if len(value) > max_line or len(raw) > max_line + 2 * (j - i):
            raise RemoteProtocolError(
                f"header {name[:40]} is {len(value)} characters after unfolding; the limit is {max_line}",
                status_code=400,
            )
        bare = raw.replace("\r\n", "") if j > i + 1 else raw
        if "\r" in bare or "\n" in bare:
            raise _bad(f"bare CR or LF in header {name[:40]}")
        fields.append(HeaderField(name, value, raw))
        if len(fields) > limits.max_headers:
            raise RemoteProtocolError(
                f"message has more than {limits.max_headers} header fields", status_code=400
            )
        i = j
    return start, Headers(fields)


#: One header field on one line: (whole line, name, value without the WSP around it).
#: ``^`` (MULTILINE) anchors each match at a line start, so a line that is not a field
#: (a fold, a bad name, no colon) makes the count of matches fall short.
_FIELD_RE = re.compile(r"^(([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*)(?=\r\n|\Z)", re.M)

#: Header names already checked to be tokens (bounded: a peer inventing names cannot grow it).
_GOOD_NAMES: set[str] = set()


def _content_lengths(headers: Headers) -> list[int]:
    return [headers.parsed("content-length", f.value, parse_content_length) for f in headers._lookup("content-length")]


def _build(start: tuple[str, object, object, str], headers: Headers, body: bytes) -> Request | Response:
    kind, a, b, version = start
    if kind == "request":
        msg: Request | Response = Request.__new__(Request)
        msg.method, msg.uri = a, b  # type: ignore[union-attr]
    else:
        msg = Response.__new__(Response)
        msg.status_code, msg.reason = a, b  # type: ignore[union-attr]
    msg.headers, msg.body, msg.version = headers, body, version
    return msg


def _skip_crlfs(data: bytes | bytearray, pos: int = 0) -> int:
    while data[pos : pos + 2] == b"\r\n":
        pos += 2
    return pos


def parse_message(
    data: bytes,
    *,
    datagram: bool = True,
    validate: bool = True,
    limits: Limits = DEFAULT_LIMITS,
) -> Request | Response:
    """Parse one SIP message.

    Parameters
    ----------
    data : bytes
        A whole UDP datagram (``datagram=True``), or exactly one message taken off a
        stream (``datagram=False``; use :class:`StreamParser` to cut a stream).
    datagram : bool, optional
        Datagram framing rules (RFC 3261 18.3): octets beyond ``Content-Length`` are
        ignored, a missing ``Content-Length`` means "to the end". With False, the body
        must be exactly ``Content-Length`` octets (0 when absent).
    validate : bool, optional
        Also run :func:`validate` (505 / 400 checks a UAS applies before using a
        message). With False only the framing, start line and header-line syntax are
        checked; typed accessors still check each header when used.
    limits : Limits, optional
        Size limits.

    Returns
    -------
    Request or Response

    Raises
    ------
    RemoteProtocolError
        With ``status_code`` 400 (malformed), 505 (SIP version other than 2.0), 513
        (header section over ``limits.max_message_bytes``) or 413 (body over the limit).

    Examples
    --------
    >>> m = parse_message(b"OPTIONS sip:a@example.com SIP/2.0\\r\\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\\r\\n"
    ...                   b"From: <sip:b@example.com>;tag=1\\r\\nTo: <sip:a@example.com>\\r\\n"
    ...                   b"Call-ID: x\\r\\nCSeq: 1 OPTIONS\\r\\nContent-Length: 0\\r\\n\\r\\n")
    >>> m.method, m.cseq.number, m.via[0].branch
    ('OPTIONS', 1, 'z9hG4bK1')
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ParameterError(f"parse_message needs bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_message_bytes:
        raise RemoteProtocolError(
            f"message is {len(data)} bytes; the limit is {limits.max_message_bytes} (513 Message Too Large)",
            status_code=513,
        )
    begin = _skip_crlfs(data)
    end = data.find(b"\r\n\r\n", begin)
    if end < 0:
        raise _bad("no empty line (CRLF CRLF) ends the header section")
    start, headers = _parse_head(data[begin:end], limits)
    rest = data[end + 4 :]
    lengths = _content_lengths(headers)
    if not lengths:
        body = rest if datagram else b""
        if not datagram and rest:
            raise _bad(f"{len(rest)} bytes after a message without Content-Length on a stream")
    else:
        cl = lengths[0]
        if cl > len(rest):
            raise _bad(f"Content-Length is {cl} but only {len(rest)} body bytes arrived (RFC 3261 18.3)")
        if not datagram and cl < len(rest):
            raise _bad(f"{len(rest) - cl} bytes after the body; use StreamParser to split a stream")
        body = rest[:cl]
    msg = _build(start, headers, body)
    if validate:
        _validate_message(msg)
    return msg


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------

#: Headers a request must carry (RFC 3261 8.1.1). Max-Forwards is left out on purpose:
#: RFC 2543 requests lack it and RFC 4475 3.4.1 says they should be accepted.
REQUIRED_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
#: Headers a response must carry (RFC 3261 8.2.6.2).
REQUIRED_RESPONSE_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
#: Headers that take exactly one value (RFC 3261 7.3.1 and table 2).
SINGLE_VALUED = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type", "Expires")
assert REQUIRED_REQUEST_HEADERS == REQUIRED_RESPONSE_HEADERS
_REQUIRED_KEYS = frozenset(name.lower() for name in REQUIRED_REQUEST_HEADERS)


def check_version(msg: Request | Response) -> None:
    """505 unless the message is SIP/2.0 (RFC 3261 21.5.7; RFC 4475 3.1.2.16)."""
    if msg.version.upper() != SIP_VERSION:
        raise RemoteProtocolError(f"SIP version {msg.version} is not supported; only SIP/2.0", status_code=505)


def check_syntax(msg: Request | Response) -> None:
    """400 if any header this module understands breaks its grammar.

    Checked: Via, From, To, Contact, Route, Record-Route, CSeq, Call-ID, Max-Forwards,
    Content-Length, Content-Type, Expires, Min-Expires, Date, the four auth headers,
    Require, Proxy-Require, Supported, Unsupported, Allow, Content-Encoding, Accept.
    Other headers are kept as opaque text.
    """
    h = msg.headers
    memo = h._memo
    if memo is None:
        memo = h._memo = {}
    parsers = HEADER_PARSERS
    for f in h._fields:  # Headers.parsed inlined: the typed accessors reuse what this parsed
        key = f.key
        if key in parsers:
            k = (key, f.value)
            if k not in memo:
                memo[k] = _shared_parse(key, f.value) if key in _SHARED_KEYS else parsers[key](f.value)


def check_semantics(msg: Request | Response) -> None:
    """400 for messages that parse but that a UAS must still reject (RFC 3261 8.2).

    - a required header is missing (To, From, CSeq, Call-ID, Via; RFC 4475 3.3.1);
    - a single-valued header appears more than once (3.3.8, 3.3.9);
    - the CSeq method differs from the request method (3.1.2.17, 3.1.2.18);
    - the Request-URI carries URI headers (RFC 3261 19.1.1 table 1; RFC 4475 3.1.2.11);
    - ``Contact: *`` outside REGISTER or next to other contacts (RFC 3261 10.2.2).
    """
    h = msg.headers
    h._lookup("")  # builds the index (header key -> fields), shared with the typed accessors
    index = h._index
    assert index is not None
    required = REQUIRED_REQUEST_HEADERS if isinstance(msg, Request) else REQUIRED_RESPONSE_HEADERS
    if not _REQUIRED_KEYS <= index.keys():
        missing = [name for name in required if name.lower() not in index]
        raise RemoteProtocolError(f"missing required header(s): {', '.join(missing)}", status_code=400)
    if len(index) != len(h._fields):  # some header appears more than once
        for name in SINGLE_VALUED:
            n = len(index.get(name.lower(), ()))
            if n > 1:
                raise RemoteProtocolError(f"{name} header appears {n} times; it takes one value", status_code=400)
    cseq = msg.cseq
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise RemoteProtocolError(
                f"CSeq method {cseq.method} does not match request method {msg.method}", status_code=400
            )
        if isinstance(msg.uri, SipUri) and msg.uri.headers:
            raise RemoteProtocolError("Request-URI must not contain URI headers (RFC 3261 19.1.1)", status_code=400)
        contacts = h._lookup("contact")
        if contacts and any(f.value == "*" for f in contacts):
            if len(contacts) > 1:
                raise RemoteProtocolError("Contact '*' cannot be combined with other contacts", status_code=400)
            if msg.method != "REGISTER":
                raise RemoteProtocolError("Contact '*' is only allowed in REGISTER", status_code=400)


def validate(msg: Request | Response) -> None:
    """Run :func:`check_version`, :func:`check_syntax` and :func:`check_semantics`.

    Raises
    ------
    RemoteProtocolError
        The first problem found, with the status a UAS would answer.
    """
    check_version(msg)
    check_syntax(msg)
    check_semantics(msg)


_validate_message = validate  # parse_message's keyword ``validate`` shadows the name


# ---------------------------------------------------------------------------------------
# Stream framing
# ---------------------------------------------------------------------------------------


class StreamParser:
    """Cut SIP messages out of a byte stream (TCP, TLS, WebSocket-as-stream).

    Feed it bytes as they arrive, in chunks of any size; it returns every message that
    became complete. Messages may be split at any byte, and one chunk may hold several.
    CRLFs between messages are keep-alives (RFC 5626 3.5.1: ``CRLF CRLF`` ping,
    ``CRLF`` pong) and are skipped.

    Parameters
    ----------
    validate : bool, optional
        Run :func:`validate` on each message (default True).
    limits : Limits, optional
        Defaults to the class constant :attr:`limits`.

    Notes
    -----
    A framing error (bad start line, broken header line, bad or oversized
    ``Content-Length``) leaves the stream unusable: the parser stays failed and every
    later :meth:`feed` raises again; the connection should be closed. A validation
    error on a well-framed message is not fatal: that message is dropped and parsing
    goes on with the next one. When an error happens after other messages completed in
    the same :meth:`feed`, those messages are returned and the error is raised by the
    next call.

    Examples
    --------
    >>> p = StreamParser(validate=False)
    >>> p.feed(b"\\r\\n\\r\\nSIP/2.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    [<Response 200 'OK' headers=1 body=2B>]
    """

    #: Default limits (class constant; pass ``limits=`` to change per parser).
    limits: Limits = DEFAULT_LIMITS

    def __init__(self, *, validate: bool = True, limits: Limits | None = None) -> None:
        self._validate = validate
        if limits is not None:
            self.limits = limits
        self._buf = bytearray()
        self._scan_from = 0
        self._head: tuple[int, tuple[str, object, object, str], Headers, int] | None = None
        self._pending_error: RemoteProtocolError | None = None
        self._fatal: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf)

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._fatal = exc
        return exc

    def feed(self, data: bytes) -> list[Request | Response]:
        """Add bytes; return the messages completed by them (possibly none).

        Parameters
        ----------
        data : bytes
            The next chunk from the connection (may be empty).

        Returns
        -------
        list of Request or Response

        Raises
        ------
        RemoteProtocolError
            See the class notes for which errors are fatal.
        """
        if self._fatal is not None:
            raise RemoteProtocolError(f"stream already failed: {self._fatal}", status_code=self._fatal.status_code)
        if self._pending_error is not None:
            exc, self._pending_error = self._pending_error, None
            self._buf += data
            raise exc
        self._buf += data
        out: list[Request | Response] = []
        while True:
            try:
                msg = self._next()
            except RemoteProtocolError as exc:
                if out:
                    self._pending_error = exc
                    return out
                raise
            if msg is None:
                return out
            out.append(msg)

    def _next(self) -> Request | Response | None:
        buf = self._buf
        limits = self.limits
        if self._head is None:
            skip = _skip_crlfs(buf)
            if skip:
                del buf[:skip]
                self._scan_from = 0
            if not buf or buf == b"\r":
                return None
            end = buf.find(b"\r\n\r\n", self._scan_from)
            if end < 0:
                if len(buf) > limits.max_message_bytes:
                    raise self._fail(
                        RemoteProtocolError(
                            f"no end of headers within {limits.max_message_bytes} bytes (513 Message Too Large)",
                            status_code=513,
                        )
                    )
                self._scan_from = max(0, len(buf) - 3)
                return None
            if end + 4 > limits.max_message_bytes:
                raise self._fail(
                    RemoteProtocolError(
                        f"header section of {end + 4} bytes exceeds {limits.max_message_bytes}", status_code=513
                    )
                )
            try:
                start, headers = _parse_head(bytes(buf[:end]), limits)
                lengths = _content_lengths(headers)
            except RemoteProtocolError as exc:
                raise self._fail(exc) from None
            cl = lengths[0] if lengths else 0
            if len(set(lengths)) > 1:
                raise self._fail(_bad("conflicting Content-Length values on a stream"))
            if end + 4 + cl > limits.max_message_bytes:
                raise self._fail(
                    RemoteProtocolError(
                        f"Content-Length {cl} makes the message larger than {limits.max_message_bytes} bytes",
                        status_code=413,
                    )
                )
            self._head = (end + 4, start, headers, cl)
        header_len, start, headers, cl = self._head
        if len(buf) < header_len + cl:
            return None
        body = bytes(buf[header_len : header_len + cl])
        del buf[: header_len + cl]
        self._head = None
        self._scan_from = 0
        msg = _build(start, headers, body)
        if self._validate:
            validate(msg)
        return msg


# ---------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------


def split_multipart(body: bytes, boundary: str) -> list[tuple[Headers, bytes]]:
    """Split a ``multipart/*`` body (RFC 2046 5.1) into (part headers, part body).

    Part bodies are returned byte for byte (an SDP part keeps its CRLFs); the CRLF
    before each delimiter belongs to the delimiter, not to the part.

    Parameters
    ----------
    body : bytes
        The message body.
    boundary : str
        The ``boundary`` parameter of Content-Type.

    Returns
    -------
    list of (Headers, bytes)

    Raises
    ------
    RemoteProtocolError
        400 when the first delimiter or the close delimiter is missing.
    """
    delim = b"--" + boundary.encode("utf-8", "surrogateescape")
    if body.startswith(delim):
        pos = len(delim)
    else:
        first = body.find(b"\r\n" + delim)
        if first < 0:
            raise _bad(f"multipart body has no boundary {boundary[:40]!r}")
        pos = first + 2 + len(delim)
    parts: list[tuple[Headers, bytes]] = []
    sep = b"\r\n" + delim
    while True:
        if body[pos : pos + 2] == b"--":
            return parts
        nl = body.find(b"\r\n", pos)
        if nl < 0:
            raise _bad("multipart delimiter line not ended by CRLF")
        nxt = body.find(sep, nl)
        if nxt < 0:
            raise _bad("multipart body has no close delimiter")
        part = body[nl + 2 : nxt]
        if part.startswith(b"\r\n"):
            head, content = b"", part[2:]
        else:
            hend = part.find(b"\r\n\r\n")
            if hend < 0:
                raise _bad("multipart part without an empty line after its headers")
            head, content = part[:hend], part[hend + 4 :]
        fields = []
        if head:
            for line in head.decode("utf-8", "surrogateescape").split("\r\n"):
                name, colon, value = line.partition(":")
                if not colon or not is_token(name.rstrip(WSP)):
                    raise _bad(f"bad header line in multipart part {line[:40]!r}")
                fields.append(HeaderField(name.rstrip(WSP), value.strip(WSP), line))
        parts.append((Headers(fields), content))
        pos = nxt + len(sep)

