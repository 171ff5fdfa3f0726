"""SIP header fields: an ordered multi-map, and typed views parsed on demand.

:class:`Headers` keeps every header line in its original order and spelling (name case,
compact form, folding) so a message re-serializes byte for byte; lookups are
case-insensitive and know the compact forms (RFC 3261 7.3.3 and later RFCs).

The typed views (:class:`Via`, :class:`NameAddr`, :class:`CSeq`, :class:`ContentType`,
:class:`Auth`) are parsed from an unfolded value when asked for; a value that breaks the
grammar raises :class:`~voicelab.errors.RemoteProtocolError` with status 400.

Grammar used here (RFC 3261 25.1; ``SWS``/``LWS`` are runs of SP/HTAB once unfolded)::

    Via            = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
    via-parm       = sent-protocol LWS sent-by *( SEMI via-params )
    sent-protocol  = protocol-name SLASH protocol-version SLASH transport
    sent-by        = host [ COLON port ]
    via-ttl        = "ttl" EQUAL ttl                     ; ttl = 1*3DIGIT ; 0 to 255
    via-maddr      = "maddr" EQUAL host
    via-received   = "received" EQUAL (IPv4address / IPv6address)
    via-branch     = "branch" EQUAL token
    response-port  = "rport" [EQUAL 1*DIGIT]              ; RFC 3581

    name-addr      = [ display-name ] LAQUOT addr-spec RAQUOT
    addr-spec      = SIP-URI / SIPS-URI / absoluteURI
    display-name   = *(token LWS)/ quoted-string
    LAQUOT         = SWS "<"   ;   RAQUOT = ">" SWS
    generic-param  = token [ EQUAL gen-value ]
    gen-value      = token / host / quoted-string

    CSeq           = "CSeq" HCOLON 1*DIGIT LWS Method
    Call-ID        = ( "Call-ID" / "i" ) HCOLON callid   ; callid = word [ "@" word ]
    Max-Forwards   = "Max-Forwards" HCOLON 1*DIGIT
    Content-Length = ( "Content-Length" / "l" ) HCOLON 1*DIGIT
    Content-Type   = ( "Content-Type" / "c" ) HCOLON media-type
    media-type     = m-type SLASH m-subtype *(SEMI m-parameter)
    m-parameter    = m-attribute EQUAL m-value           ; m-value = token / quoted-string
    Expires        = "Expires" HCOLON delta-seconds
    challenge      = ("Digest" LWS digest-cln *(COMMA digest-cln)) / other-challenge
    other-challenge= auth-scheme LWS auth-param *(COMMA auth-param)
    auth-param     = auth-param-name EQUAL ( token / quoted-string )

Two places are more liberal than the ABNF, because RFC 4475 says so:

- ``display-name`` tokens need no LWS before ``<`` (``caller<sip:...>``; RFC 4475
  3.1.1.6 calls the LWS requirement a bug in RFC 3261);
- ``received`` may hold an IPv6 address with or without brackets (RFC 5118 4.5).

One is stricter, because RFC 3261 20 says so: a URI in ``addr-spec`` form (no ``<>``)
may not contain ``,``, ``?`` or ``;`` of its own; ``sip:a@b?Route=...`` without ``<>``
is rejected (RFC 4475 3.1.2.13).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import RemoteProtocolError
from .abnf import (
    WSP,
    Scanner,
    fail,
    is_hostname,
    is_ipv4,
    is_ipv6,
    is_token,
    is_word,
    split_list,
)
from .uri import Uri, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "HeaderField",
    "Headers",
    "header_key",
    "Via",
    "NameAddr",
    "CSeq",
    "ContentType",
    "Auth",
    "parse_via",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_contact",
    "parse_cseq",
    "parse_call_id",
    "parse_max_forwards",
    "parse_content_length",
    "parse_content_type",
    "parse_expires",
    "parse_auth",
    "parse_date",
    "parse_token_list",
    "parse_media_range_list",
    "HEADER_PARSERS",
]

#: Compact forms (RFC 3261 7.3.3 and 20; RFC 3265, 3515, 3892, 4028, 4474, 3841).
COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

#: Headers whose value is a comma-separated list (RFC 3261 7.3.1). Others (Date,
#: WWW-Authenticate, Authorization, Subject, ...) may hold commas inside one value.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "path", "service-route",
        "allow", "supported", "require", "proxy-require", "unsupported",
        "accept", "accept-encoding", "accept-language", "content-encoding",
        "content-language", "allow-events", "in-reply-to", "alert-info",
        "call-info", "error-info", "warning", "accept-contact", "reject-contact",
        "request-disposition", "reason", "p-asserted-identity",
    }
)


class cached_value:
    """:func:`functools.cached_property` without the lock Python 3.11 takes on a first
    access (3.12 dropped it): the value is computed once per instance and stored in its
    ``__dict__``, which then shadows this (non-data) descriptor. For frozen values that are
    shared between messages (a memoised Via's branch, a From's tag, a key's hash)."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


_KEYS: dict[str, str] = {}
_NONE: tuple = ()
#: Names whose keys :func:`header_key` remembers (a peer inventing names cannot grow it further).
_KEYS_MAX = 4096


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact form expanded.

    >>> header_key("v"), header_key("Call-ID"), header_key("X-Foo")
    ('via', 'call-id', 'x-foo')
    """
    key = _KEYS.get(name)
    if key is None:
        low = name.lower()
        key = COMPACT_FORMS.get(low, low)
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[name] = key
    return key


class HeaderField:
    """One header line (immutable).

    Attributes
    ----------
    name : str
        The name as written (``"v"``, ``"MaX-fOrWaRdS"``).
    value : str
        The value after unfolding (each ``CRLF 1*WSP`` replaced by one SP) and with
        leading and trailing white space removed.
    raw : str or None
        The exact original line(s) without the final CRLF, folds included; None for a
        field built in code (then it is written as ``name: value``).
    key : str
        Lookup key (see :func:`header_key`), computed once.
    """

    __slots__ = ("name", "value", "raw", "key")

    def __init__(self, name: str, value: str, raw: str | None = None) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "value", value)
        _set(self, "raw", raw)
        _set(self, "key", _KEYS[name] if name in _KEYS else header_key(name))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HeaderField is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeaderField):
            return NotImplemented
        return self.name == other.name and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.name, self.value))

    def __repr__(self) -> str:
        return f"HeaderField({self.name!r}, {self.value!r})"

    def __bytes__(self) -> bytes:
        return (self.raw if self.raw is not None else f"{self.name}: {self.value}").encode("utf-8")


class Headers:
    """Ordered multi-map of header fields with case-insensitive lookup.

    Parameters
    ----------
    fields : iterable of HeaderField or (name, value) pairs, optional

    Examples
    --------
    >>> h = Headers([("v", "SIP/2.0/UDP a.example.com"), ("Call-ID", "x@y")])
    >>> h["Via"], h.get("i"), "call-id" in h
    ('SIP/2.0/UDP a.example.com', 'x@y', True)
    """

    __slots__ = ("_fields", "_index", "_memo")

    def __init__(self, fields: Iterable[HeaderField | tuple[str, str]] = ()) -> None:
        self._fields: list[HeaderField] = [
            f if isinstance(f, HeaderField) else HeaderField(str(f[0]), str(f[1])) for f in fields
        ]
        # key -> its fields, built on the first lookup; parsed values, filled on first use.
        # Both are dropped by every edit (add, remove, set).
        self._index: dict[str, list[HeaderField]] | None = None
        self._memo: dict[tuple[str, str], Any] | None = None

    @classmethod
    def _of(cls, fields: list[HeaderField]) -> Headers:
        """Headers owning ``fields`` (not copied, not checked): for message builders that
        made every element a :class:`HeaderField` themselves."""
        h = cls.__new__(cls)
        h._fields = fields
        h._index = None
        h._memo = None
        return h

    def _changed(self) -> None:
        self._index = None
        self._memo = None

    def forget_parsed(self) -> None:
        """Drop the lookup index and the parsed values (both are rebuilt on the next read).

        A UA calls it when it is done with a message that a transaction keeps for up to
        64*T1: what was parsed to handle it need not stay alive (nor be walked by the
        garbage collector) for those 32 s.
        """
        self._index = None
        self._memo = None

    def _lookup(self, key: str) -> Sequence[HeaderField]:
        index = self._index
        if index is None:
            index = {}
            for f in self._fields:
                k = f.key
                if k in index:
                    index[k].append(f)
                else:
                    index[k] = [f]
            self._index = index
        return index[key] if key in index else _NONE

    def parsed(self, key: str, value: str, parser: Callable[[str], Any]) -> Any:
        """``parser(value)`` for a field of this header set, parsed once per value.

        The typed accessors of :class:`~voicelab.sip.message.Message` and
        :func:`~voicelab.sip.message.check_syntax` share it, so a message's Via, CSeq,
        From and To are parsed once however often they are read. Only immutable results
        may be memoised (the typed views are frozen; lists must be copied by the
        caller). A value that fails to parse raises again on every call.
        """
        memo = self._memo
        if memo is None:
            memo = self._memo = {}
        k = (key, value)
        try:
            return memo[k]
        except KeyError:
            pass
        if key in _SHARED_KEYS:  # the same value in another message (the ACK and BYE of a call, constant headers)
            out = memo[k] = _shared_parse(key, value)
        else:
            out = memo[k] = parser(value)
        return out

    # -- sequence of fields ------------------------------------------------------------
    def __iter__(self) -> Iterator[HeaderField]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return bool(self._lookup(header_key(name)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(f.key, f.value) for f in self._fields] == [(f.key, f.value) for f in other._fields]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({[(f.name, f.value) for f in self._fields]!r})"

    def items(self) -> list[tuple[str, str]]:
        """All (name as written, unfolded value) pairs in order."""
        return [(f.name, f.value) for f in self._fields]

    # -- lookup --------------------------------------------------------------------------
    def fields(self, name: str) -> list[HeaderField]:
        """Every field with this name (any spelling or compact form), in order."""
        return list(self._lookup(header_key(name)))

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first field with this name, or *default*."""
        fields = self._lookup(header_key(name))
        return fields[0].value if fields else default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise RemoteProtocolError(f"missing {name} header", status_code=400)
        return value

    def get_all(self, name: str) -> list[str]:
        """Every value of this header; list headers (Via, Contact, ...) split on commas.

        Commas inside quotes or ``<>`` do not split (RFC 3261 7.3.1). Non-list headers
        (Date, WWW-Authenticate, ...) give one value per field.
        """
        key = header_key(name)
        values = [f.value for f in self._lookup(key)]
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for v in values:
            out.extend(split_list(v))
        return out

    def count(self, name: str) -> int:
        """How many fields carry this name."""
        return len(self._lookup(header_key(name)))

    # -- editing (for building messages) -------------------------------------------------
    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self._fields.append(HeaderField(name, value))
        if self._index is not None or self._memo is not None:
            self._index = self._memo = None

    def remove(self, name: str) -> None:
        """Remove every field with this name."""
        key = header_key(name)
        self._fields = [f for f in self._fields if f.key != key]
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every field with this name by one field (in the first one's place)."""
        self._changed()
        key = header_key(name)
        for i, f in enumerate(self._fields):
            if f.key == key:
                self._fields[i] = HeaderField(name, value)
                self._fields = [g for j, g in enumerate(self._fields) if j <= i or g.key != key]
                return
        self.add(name, value)

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers(self._fields)


# ---------------------------------------------------------------------------------------
# Parameters (generic-param) shared by Via, name-addr, Content-Type
# ---------------------------------------------------------------------------------------

# gen-value = token / host / quoted-string; host adds "[" IPv6 "]" and ":"-free names.
_GEN_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+|\[[0-9A-Fa-f:.]+\]")
_RECEIVED_RE = re.compile(r"\[?[0-9A-Fa-f:.]+\]?")


def _params(sc: Scanner, *, allow_quoted: bool = True) -> tuple[tuple[str, str | None], ...]:
    """``*( SEMI generic-param )``; values keep quotes as written."""
    out: list[tuple[str, str | None]] = []
    while True:
        sc.skip_ws()
        if not sc.accept(";"):
            return tuple(out)
        sc.skip_ws()
        name = sc.token("parameter name")
        sc.skip_ws()
        if sc.accept("="):
            sc.skip_ws()
            if sc.peek() == '"' and allow_quoted:
                value, _ = sc.quoted_string()
            elif name.lower() == "received":
                value = sc.take(_RECEIVED_RE, "IP address")
            else:
                value = sc.take(_GEN_VALUE_RE, f"value of parameter {name!r}")
            out.append((name, value))
        else:
            out.append((name, None))


def _param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    name = name.lower()
    for k, v in params:
        if k.lower() == name:
            return "" if v is None else _unquote(v)
    return None


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return Scanner(value, "parameter").quoted_string()[1]
    return value


# ---------------------------------------------------------------------------------------
# Via
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Via:
    """One ``via-parm`` (RFC 3261 20.42, RFC 3581 for ``rport``).

    Attributes
    ----------
    protocol : str
        ``protocol-name/protocol-version``, normally ``"SIP/2.0"``.
    transport : str
        ``UDP``, ``TCP``, ``TLS``, ``SCTP``, ``WS``, ``WSS`` or any other token.
    host : str
        ``sent-by`` host as written (``[IPv6]`` keeps its brackets).
    port : int or None
        ``sent-by`` port; None when absent.
    params : tuple of (str, str or None)
        ``via-params`` in order, as written.
    """

    protocol: str
    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        """Parameter value (unquoted), ``""`` for a bare name, None when absent."""
        return _param(self.params, name)

    @cached_value  # a parsed Via is shared (memoised): look its branch up once
    def branch(self) -> str | None:
        """The ``branch`` parameter (transaction id; RFC 3261 8.1.1.7)."""
        return self.param("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (brackets around IPv6 removed)."""
        r = self.param("received")
        return r.strip("[]") if r else r

    @property
    def rport(self) -> int | bool | None:
        """``rport``: None when absent, True when present without value, else the port."""
        r = self.param("rport")
        if r is None:
            return None
        return True if r == "" else int(r)

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter."""
        return self.param("maddr")

    @property
    def ttl(self) -> int | None:
        """The ``ttl`` parameter (0..255)."""
        t = self.param("ttl")
        return None if t is None else int(t)


_PORT_RE = re.compile(r"[0-9]{1,5}")
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-.]+")


def _host(sc: Scanner) -> str:
    host = sc.take(_HOST_RE, "host")
    if host.startswith("["):
        if not is_ipv6(host[1:-1]):
            raise sc.error(f"bad IPv6 reference {host!r}")
    elif not (is_hostname(host) or is_ipv4(host)):
        raise sc.error(f"bad host {host[:60]!r}")
    return host


def _port(sc: Scanner) -> int:
    p = sc.take(_PORT_RE, "port")
    if int(p) > 65535 or sc.peek().isdigit():
        raise sc.error("port out of range")
    return int(p)


# Memoised: a message's Via/From/To are read several times per message (transaction
# key, dialog, trace); the parsed values are frozen, errors are never cached.
# The common Via and name-addr, written without optional white space, quoted strings,
# or a ``received`` parameter, are read by one regular expression (the same token, host
# and parameter-value rules as the scanner's). Anything else, or anything that fails a
# check, goes through the scanner, which gives the answer or the error.
_TOKEN_PAT = r"[A-Za-z0-9\-.!%*_+`'~]+"
_FAST_PARAMS_PAT = rf"(?:;{_TOKEN_PAT}(?:=(?:{_GEN_VALUE_RE.pattern}))?)*"
_FAST_PARAM_RE = re.compile(rf";({_TOKEN_PAT})(?:=({_GEN_VALUE_RE.pattern}))?")
_FAST_VIA_RE = re.compile(
    rf"({_TOKEN_PAT})/({_TOKEN_PAT})/({_TOKEN_PAT}) ({_HOST_RE.pattern})(?::([0-9]{{1,5}}))?({_FAST_PARAMS_PAT})"
)


def _fast_params(text: str) -> tuple[tuple[str, str | None], ...] | None:
    """What :func:`_params` gives for ``text`` (already matched by ``_FAST_PARAMS_PAT``);
    None when a parameter is ``received`` (its value follows another rule there)."""
    if not text:
        return ()
    params = tuple([(k, v or None) for k, v in _FAST_PARAM_RE.findall(text)])  # a value is never empty
    if "received" in text.lower() and any(k.lower() == "received" for k, _ in params):
        return None
    return params


def _fast_via(text: str) -> Via | None:
    m = _FAST_VIA_RE.fullmatch(text)
    if m is None:
        return None
    name, version, transport, host, port_text, params_text = m.groups()
    if host.startswith("["):
        if not is_ipv6(host[1:-1]):
            return None
    elif not (is_hostname(host) or is_ipv4(host)):
        return None
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None
    params = _fast_params(params_text)
    if params is None:
        return None
    _check_via_params(params)
    return Via(f"{name}/{version}", transport, host, port, params)


@functools.lru_cache(maxsize=2048)
def _parse_one_via(text: str) -> Via:
    return _fast_via(text) or _scan_via(text)


def _scan_via(text: str) -> Via:
    sc = Scanner(text, "Via")
    name = sc.token("protocol-name")
    sc.expect_sep("/", "SLASH")
    version = sc.token("protocol-version")
    sc.expect_sep("/", "SLASH")
    transport = sc.token("transport")
    if not sc.skip_ws():
        raise sc.error("expected LWS before sent-by")
    host = _host(sc)
    port = None
    sc.skip_ws()
    if sc.accept(":"):
        sc.skip_ws()
        port = _port(sc)
    params = _params(sc)
    if not sc.eof():
        raise sc.error("unexpected text")
    _check_via_params(params)
    return Via(f"{name}/{version}", transport, host, port, params)


def _check_via_params(params: tuple[tuple[str, str | None], ...]) -> None:
    for k, v in params:
        low = k.lower()
        if low == "ttl" and (v is None or not v.isdigit() or len(v) > 3 or int(v) > 255):
            raise fail("Via", "ttl must be 0..255")
        elif low == "maddr" and (v is None or not (is_hostname(v) or is_ipv4(v) or (v.startswith("[") and is_ipv6(v[1:-1])))):
            raise fail("Via", "maddr must be a host")
        elif low == "received":
            r = (v or "").strip("[]") if v and v.startswith("[") == v.endswith("]") else ""
            if not (is_ipv4(r) or is_ipv6(r)):
                raise fail("Via", f"received must be an IP address, got {v!r}")
        elif low == "branch" and (v is None or not is_token(v)):
            raise fail("Via", "branch must be a token")
        elif low == "rport" and v is not None and (not v.isdigit() or len(v) > 5 or int(v) > 65535):
            raise fail("Via", "rport must be empty or a port number")


def parse_via(value: str) -> list[Via]:
    """Parse one Via header value (which may hold several comma-separated hops).

    Parameters
    ----------
    value : str
        Unfolded header value.

    Returns
    -------
    list of Via
        In the order written (topmost first).

    Raises
    ------
    RemoteProtocolError
        400 on any grammar error (empty element, missing sent-by, bad parameter, ...).
    """
    return [_parse_one_via(v) for v in split_list(value)]


# ---------------------------------------------------------------------------------------
# name-addr / addr-spec (From, To, Contact, Route, Record-Route, Refer-To, ...)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NameAddr:
    """``(name-addr / addr-spec) *(SEMI generic-param)``.

    Attributes
    ----------
    display_name : str or None
        Unquoted and unescaped display name; None when absent.
    uri : SipUri or TelUri or AbsoluteUri
        The address.
    params : tuple of (str, str or None)
        Header parameters (``tag``, ``expires``, ``q``, ...) in order, as written.
    angle : bool
        Whether the URI was written inside ``<>``.
    """

    display_name: str | None
    uri: Uri
    params: tuple[tuple[str, str | None], ...] = ()
    angle: bool = True

    def param(self, name: str) -> str | None:
        """Parameter value (unquoted), ``""`` for a bare name, None when absent."""
        return _param(self.params, name)

    @cached_value  # a parsed From/To is shared (memoised): look its tag up once
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 19.3)."""
        return self.param("tag")


_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")
# addr-spec form ends where header parameters start; ",", "?" and ";" cannot be part of it
# (RFC 3261 20: such URIs MUST be enclosed in angle brackets).
_BARE_URI_RE = re.compile(r"[^;,?<> \t\"]+")
_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


# Memoised: a message's Via/From/To are read several times per message (transaction
# key, dialog, trace); the parsed values are frozen, errors are never cached.
_FAST_NAME_ADDR_RE = re.compile(rf"(?:({_DISPLAY_TOKENS_RE.pattern})[ \t]*)?<([^<>\s\"]+)>({_FAST_PARAMS_PAT})")


def _fast_name_addr(text: str) -> NameAddr | None:
    m = _FAST_NAME_ADDR_RE.fullmatch(text)
    if m is None:
        return None
    display, inner, params_text = m.groups()
    try:
        uri = parse_uri(inner)
    except RemoteProtocolError:
        return None
    params = _fast_params(params_text)
    if params is None:
        return None
    return NameAddr(display, uri, params, True)


@functools.lru_cache(maxsize=2048)
def _parse_one_name_addr(text: str, what: str) -> NameAddr:
    return _fast_name_addr(text) or _scan_name_addr(text, what)


def _scan_name_addr(text: str, what: str) -> NameAddr:
    sc = Scanner(text, what)
    display: str | None = None
    if sc.peek() == '"':
        _, display = sc.quoted_string()
        sc.skip_ws()
        if sc.peek() != "<":
            raise sc.error("expected '<' after display-name")
    elif "<" in text:
        m = _DISPLAY_TOKENS_RE.match(text, sc.pos)
        if m is not None:
            sc.pos = m.end()
            sc.skip_ws()
            if sc.peek() == "<":
                display = m.group(0)
            else:  # not a display name after all: parse as addr-spec from the start
                sc.pos = 0
    if sc.accept("<"):
        end = text.find(">", sc.pos)
        if end < 0:
            raise sc.error("missing '>'")
        inner = text[sc.pos : end]
        if not inner or inner[0] in WSP or inner[-1] in WSP:
            raise sc.error("white space inside <addr-spec>")
        uri = parse_uri(inner)
        sc.pos = end + 1
        angle = True
    else:
        raw = sc.take(_BARE_URI_RE, "URI")
        uri = parse_uri(raw)
        angle = False
    params = _params(sc)
    if not sc.eof():
        nxt = sc.peek()
        if nxt in "?,":
            raise sc.error(f"a URI holding {nxt!r} must be enclosed in <> (RFC 3261 20)")
        raise sc.error("unexpected text")
    return NameAddr(display, uri, params, angle)


def parse_name_addr(value: str, what: str = "name-addr") -> NameAddr:
    """Parse a single ``name-addr`` or ``addr-spec`` with parameters (From, To).

    Parameters
    ----------
    value : str
        Unfolded header value.
    what : str, optional
        Header name used in error messages.

    Returns
    -------
    NameAddr

    Raises
    ------
    RemoteProtocolError
        400 on a grammar error (unterminated quote, spaces inside ``<>``, a comma in an
        unquoted display name, ...).
    """
    return _parse_one_name_addr(value.strip(WSP), what)


def parse_name_addr_list(value: str, what: str = "name-addr") -> list[NameAddr]:
    """Parse a comma-separated list of ``name-addr`` (Route, Record-Route, Path, ...)."""
    return [_parse_one_name_addr(v, what) for v in split_list(value)]


def parse_contact(value: str) -> list[NameAddr] | str:
    """Parse a Contact value: ``"*"`` or a list of ``contact-param``.

    ``contact-params`` checked: ``q`` must be a ``qvalue`` and ``expires`` a
    ``delta-seconds`` (RFC 3261 20.10).

    Returns
    -------
    list of NameAddr, or the string ``"*"``
    """
    if value.strip(WSP) == "*":
        return "*"
    out = parse_name_addr_list(value, "Contact")
    for na in out:
        q = na.param("q")
        if q is not None and _QVALUE_RE.fullmatch(q) is None:
            raise fail("Contact", f"q must be a qvalue 0..1, got {q!r}")
        e = na.param("expires")
        if e is not None and not e.isdigit():
            raise fail("Contact", f"expires must be delta-seconds, got {e!r}")
    return out


# ---------------------------------------------------------------------------------------
# Scalar headers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CSeq:
    """``CSeq`` (RFC 3261 20.16): sequence number (0..2**31-1) and method."""

    number: int
    method: str


_CSEQ_RE = re.compile(r"([0-9]+)[ \t]+([A-Za-z0-9\-.!%*_+`'~]+)")
_DIGITS_RE = re.compile(r"[0-9]+")
#: RFC 3261 8.1.1.5: "The sequence number value MUST be expressible as a 32-bit
#: unsigned integer and MUST be less than 2**31."
CSEQ_MAX = 2**31 - 1
#: RFC 3261 20.19 / 20.10: delta-seconds between 0 and 2**32-1.
DELTA_SECONDS_MAX = 2**32 - 1


def _number(value: str, what: str, maximum: int) -> int:
    v = value.strip(WSP)
    if _DIGITS_RE.fullmatch(v) is None:
        raise fail(what, f"expected 1*DIGIT, got {v[:40]!r}")
    if len(v.lstrip("0")) > len(str(maximum)) or int(v) > maximum:
        raise fail(what, f"value {v[:40]} is above the maximum {maximum}")
    return int(v)


def parse_cseq(value: str) -> CSeq:
    """Parse ``CSeq``: ``1*DIGIT LWS Method``; the number must be below 2**31."""
    m = _CSEQ_RE.fullmatch(value.strip(WSP))
    if m is None:
        raise fail("CSeq", f"expected 'number method', got {value[:60]!r}")
    return CSeq(_number(m.group(1), "CSeq", CSEQ_MAX), m.group(2))


def parse_call_id(value: str) -> str:
    """Parse ``Call-ID``: ``word [ "@" word ]``; returns the value."""
    v = value.strip(WSP)
    left, at, right = v.partition("@")
    if not is_word(left) or (at and not is_word(right)):
        raise fail("Call-ID", f"expected word[@word], got {v[:60]!r}")
    return v


def parse_max_forwards(value: str) -> int:
    """Parse ``Max-Forwards`` (0..255, RFC 3261 20.22)."""
    return _number(value, "Max-Forwards", 255)


def parse_content_length(value: str) -> int:
    """Parse ``Content-Length`` (``1*DIGIT``; a sign or letters are errors)."""
    return _number(value, "Content-Length", 2**63 - 1)


def parse_expires(value: str) -> int:
    """Parse ``Expires`` (``delta-seconds``, 0..2**32-1)."""
    return _number(value, "Expires", DELTA_SECONDS_MAX)


@dataclass(frozen=True)
class ContentType:
    """``media-type`` (RFC 3261 20.15): type, subtype (lower case) and parameters."""

    type: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def mime(self) -> str:
        """``type/subtype`` in lower case."""
        return f"{self.type}/{self.subtype}"

    def param(self, name: str) -> str | None:
        """Parameter value (unquoted), or None."""
        return _param(self.params, name)  # type: ignore[arg-type]


def _media(sc: Scanner, what: str, *, allow_star: bool = False) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    t = "*" if allow_star and sc.accept("*") else sc.token("m-type")
    sc.expect_sep("/", "SLASH")
    s = "*" if allow_star and sc.accept("*") else sc.token("m-subtype")
    params = []
    for k, v in _params(sc):
        if v is None:
            if what == "Accept":  # accept-params may be bare generic-params
                params.append((k, ""))
                continue
            raise sc.error(f"parameter {k!r} needs a value")
        params.append((k, v))
    return t.lower(), s.lower(), tuple(params)


def parse_content_type(value: str) -> ContentType:
    """Parse ``Content-Type``: ``m-type/m-subtype *(; m-attribute=m-value)``."""
    sc = Scanner(value.strip(WSP), "Content-Type")
    t, s, params = _media(sc, "Content-Type")
    if not sc.eof():
        raise sc.error("unexpected text")
    return ContentType(t, s, params)


def parse_media_range_list(value: str) -> list[ContentType]:
    """Parse ``Accept``: a list of media ranges (``*/*``, ``application/*``, ...)."""
    out = []
    for item in split_list(value):
        if not item:
            continue  # Accept = "Accept" HCOLON [ accept-range *(COMMA accept-range) ]
        sc = Scanner(item, "Accept")
        t, s, params = _media(sc, "Accept", allow_star=True)
        if not sc.eof():
            raise sc.error("unexpected text")
        out.append(ContentType(t, s, params))
    return out


def parse_token_list(value: str, what: str = "header") -> list[str]:
    """Parse a list of tokens (Require, Supported, Allow, Content-Encoding, ...)."""
    if not value.strip(WSP):
        return []
    items = split_list(value)
    for item in items:
        if not is_token(item):
            raise fail(what, f"expected a token, got {item[:40]!r}")
    return items


@dataclass(frozen=True)
class Auth:
    """A challenge or credentials (RFC 3261 20.7, 20.27, 20.28, 20.44; RFC 2617).

    Attributes
    ----------
    scheme : str
        ``Digest`` or another ``auth-scheme`` token, as written.
    params : tuple of (str, str)
        ``auth-param`` pairs in order; quoted values are unquoted and unescaped.
    """

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """Parameter value (name case-insensitive), or None."""
        name = name.lower()
        for k, v in self.params:
            if k.lower() == name:
                return v
        return None


_AUTH_TOKEN_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~/:@=]+")


def parse_auth(value: str, what: str = "Authorization") -> Auth:
    """Parse a WWW-/Proxy-Authenticate or (Proxy-)Authorization value.

    ``auth-scheme LWS auth-param *(COMMA auth-param)``, ``auth-param = name EQUAL
    (token / quoted-string)``. Token values also accept ``/ : @ =`` that real peers put
    unquoted in ``uri``, ``nc`` or base64 ``opaque`` values.
    """
    sc = Scanner(value.strip(WSP), what)
    scheme = sc.token("auth-scheme")
    params: list[tuple[str, str]] = []
    if sc.eof():
        return Auth(scheme, ())
    if not sc.skip_ws():
        raise sc.error("expected LWS after auth-scheme")
    while True:
        name = sc.token("auth-param name")
        sc.expect_sep("=", "EQUAL")
        if sc.peek() == '"':
            _, v = sc.quoted_string()
        else:
            v = sc.take(_AUTH_TOKEN_VALUE_RE, f"value of {name!r}")
        params.append((name, v))
        sc.skip_ws()
        if sc.eof():
            return Auth(scheme, tuple(params))
        sc.expect_sep(",", "COMMA")


# rfc1123-date = wkday "," SP date1 SP time SP "GMT"   (RFC 3261 20.17)
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"[0-9]{4} (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] GMT"
)


def parse_date(value: str) -> str:
    """Check ``Date`` (``rfc1123-date``, always ``GMT``); returns the value."""
    v = value.strip(WSP)
    if _DATE_RE.fullmatch(v) is None:
        raise fail("Date", f"expected e.g. 'Sat, 13 Nov 2010 23:29:00 GMT', got {v[:60]!r}")
    return v


#: Parser per header key, used to check the grammar of every header we understand.
HEADER_PARSERS = {
    "via": parse_via,
    "from": lambda v: parse_name_addr(v, "From"),
    "to": lambda v: parse_name_addr(v, "To"),
    "contact": parse_contact,
    "route": lambda v: parse_name_addr_list(v, "Route"),
    "record-route": lambda v: parse_name_addr_list(v, "Record-Route"),
    "cseq": parse_cseq,
    "call-id": parse_call_id,
    "max-forwards": parse_max_forwards,
    "content-length": parse_content_length,
    "content-type": parse_content_type,
    "expires": parse_expires,
    "min-expires": parse_expires,
    "date": parse_date,
    "www-authenticate": lambda v: parse_auth(v, "WWW-Authenticate"),
    "proxy-authenticate": lambda v: parse_auth(v, "Proxy-Authenticate"),
    "authorization": lambda v: parse_auth(v, "Authorization"),
    "proxy-authorization": lambda v: parse_auth(v, "Proxy-Authorization"),
    "require": lambda v: parse_token_list(v, "Require"),
    "proxy-require": lambda v: parse_token_list(v, "Proxy-Require"),
    "supported": lambda v: parse_token_list(v, "Supported"),
    "unsupported": lambda v: parse_token_list(v, "Unsupported"),
    "allow": lambda v: parse_token_list(v, "Allow"),
    "content-encoding": lambda v: parse_token_list(v, "Content-Encoding"),
    "accept": parse_media_range_list,
}



#: Headers whose parsed values are shared between messages (:func:`_shared_parse`): the
#: result depends on the value only, and is immutable or never handed out (lists are copied).
_SHARED_KEYS = frozenset({"via", "from", "to", "cseq", "call-id", "max-forwards", "content-length", "content-type",
                          "contact", "expires"})


@functools.lru_cache(maxsize=8192)
def _shared_parse(key: str, value: str) -> Any:
    """:data:`HEADER_PARSERS` ``[key](value)``, remembered for the last 8192 values (errors are not)."""
    return HEADER_PARSERS[key](value)
