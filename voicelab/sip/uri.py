"""SIP, SIPS and TEL URIs: parse, keep the original text, compare per RFC 3261 19.1.4.

Grammar (RFC 3261 25.1, hosts corrected by RFC 5954, IPv6 references per RFC 5118)::

    SIP-URI          = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    SIPS-URI         = "sips:" [ userinfo ] hostport uri-parameters [ headers ]
    userinfo         = ( user / telephone-subscriber ) [ ":" password ] "@"
    user             = 1*( unreserved / escaped / user-unreserved )
    user-unreserved  = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
    password         = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
    hostport         = host [ ":" port ]
    host             = hostname / IPv4address / IPv6reference
    IPv6reference    = "[" IPv6address "]"
    uri-parameters   = *( ";" uri-parameter )
    other-param      = pname [ "=" pvalue ]
    pname / pvalue   = 1*paramchar
    paramchar        = param-unreserved / unreserved / escaped
    param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
    headers          = "?" header *( "&" header )
    header           = hname "=" hvalue
    hname            = 1*( hnv-unreserved / unreserved / escaped )
    hvalue           = *( hnv-unreserved / unreserved / escaped )
    hnv-unreserved   = "[" / "]" / "/" / "?" / ":" / "+" / "$"

None of ``user``, ``password``, ``paramchar`` or ``hvalue`` may hold an unescaped ``@``,
so the ``@`` that ends ``userinfo`` is the only one in a valid SIP URI.

TEL URIs follow RFC 3966 in its basic form (``tel:+1-201-555-0123;ext=1``; a local
number needs ``phone-context``). Any other scheme is an ``absoluteURI`` (RFC 2396),
checked for its character set and kept opaque.

Every URI object keeps the exact text it was parsed from (``str(uri)``); components are
stored as written (escaped), and comparison works on unescaped values.

Why our own: no maintained Python library parses SIP URIs to RFC 3261 with its
comparison rules; ``urllib.parse`` does not know ``userinfo`` without ``//`` nor
SIP's parameter and header rules.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field

from .abnf import fail, is_hostname, is_ipv4, is_ipv6, unescape

__all__ = [
    "SipUri",
    "TelUri",
    "AbsoluteUri",
    "Uri",
    "parse_uri",
    "uri_equal",
]

_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
_PARAMCHARS_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HNAME_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})+")
_HVALUE_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# absoluteURI = scheme ":" ( hier-part / opaque-part ): at least one uric after ":".
# uric = reserved / unreserved / escaped (plus "[" "]" for RFC 3986 IP literals).
_URIC_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'();/?:@&=+$,\[\]]|%[0-9A-Fa-f]{2})+")
_PORT_RE = re.compile(r"[0-9]{1,5}")

# RFC 3966: global-number-digits = "+" *phonedigit DIGIT *phonedigit
#           local-number-digits  = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
#           phonedigit = DIGIT / visual-separator; visual-separator = "-" / "." / "(" / ")"
_TEL_GLOBAL_RE = re.compile(r"\+[0-9\-.()]*[0-9][0-9\-.()]*")
_TEL_LOCAL_RE = re.compile(r"[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*")
_TEL_PNAME_RE = re.compile(r"[A-Za-z0-9\-]+")
_TEL_VISUAL = str.maketrans("", "", "-.()")

#: Parameters that make two SIP URIs differ when present in only one (RFC 3261 19.1.4).
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


@dataclass(frozen=True, eq=False)
class SipUri:
    """A ``sip:`` or ``sips:`` URI.

    Attributes
    ----------
    scheme : str
        ``"sip"`` or ``"sips"`` (lower case).
    user : str or None
        The user part as written (may hold ``%`` escapes); None when absent.
    password : str or None
        As written; None when absent.
    host : str
        As written: a hostname, dotted IPv4, or ``[IPv6]`` with brackets.
    port : int or None
        None when absent (which is *not* the same as 5060 when comparing).
    params : tuple of (str, str or None)
        ``uri-parameters`` in order, as written; value None for a bare name (``lr``).
    headers : tuple of (str, str)
        ``headers`` (after ``?``) in order, as written.
    text : str
        The exact text parsed; ``str(uri)`` returns it.
    """

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    text: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.text or _format_sip(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (SipUri, TelUri, AbsoluteUri)):
            return NotImplemented
        return uri_equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def host_kind(self) -> str:
        """``"ipv6"``, ``"ipv4"`` or ``"hostname"``."""
        if self.host.startswith("["):
            return "ipv6"
        return "ipv4" if is_ipv4(self.host) else "hostname"

    def param(self, name: str) -> str | None:
        """Value of a URI parameter, unescaped (name case-insensitive).

        Returns ``""`` for a parameter without value (``lr``) and None when absent.
        """
        name = name.lower()
        for key, value in self.params:
            if unescape(key).lower() == name:
                return "" if value is None else unescape(value)
        return None

    def has_param(self, name: str) -> bool:
        """Whether the URI carries parameter *name* (case-insensitive)."""
        return self.param(name) is not None


@dataclass(frozen=True, eq=False)
class TelUri:
    """A ``tel:`` URI (RFC 3966, basic form).

    Attributes
    ----------
    number : str
        The ``telephone-subscriber`` digits as written (``+1-201-555-0123``).
    params : tuple of (str, str or None)
        Parameters in order, as written.
    text : str
        The exact text parsed.
    """

    number: str
    params: tuple[tuple[str, str | None], ...] = ()
    text: str = field(default="", repr=False)

    scheme = "tel"

    def __str__(self) -> str:
        if self.text:
            return self.text
        ps = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"tel:{self.number}{ps}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (SipUri, TelUri, AbsoluteUri)):
            return NotImplemented
        return uri_equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def is_global(self) -> bool:
        """Whether the number is global (starts with ``+``)."""
        return self.number.startswith("+")


@dataclass(frozen=True, eq=False)
class AbsoluteUri:
    """Any other URI (``absoluteURI``, RFC 3261 25.1), kept opaque.

    Attributes
    ----------
    scheme : str
        The scheme, lower case.
    text : str
        The exact text parsed.
    """

    scheme: str
    text: str

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (SipUri, TelUri, AbsoluteUri)):
            return NotImplemented
        return uri_equal(self, other)

    __hash__ = None  # type: ignore[assignment]


Uri = SipUri | TelUri | AbsoluteUri


def _format_sip(u: SipUri) -> str:
    out = [u.scheme, ":"]
    if u.user is not None:
        out.append(u.user)
        if u.password is not None:
            out += [":", u.password]
        out.append("@")
    out.append(u.host)
    if u.port is not None:
        out.append(f":{u.port}")
    for k, v in u.params:
        out.append(f";{k}" if v is None else f";{k}={v}")
    if u.headers:
        out.append("?" + "&".join(f"{k}={v}" for k, v in u.headers))
    return "".join(out)


# Memoised: the Request-URI is the same in most requests an endpoint receives; the
# parsed URIs are frozen and compare by value (uri_equal), errors are never cached.
@functools.lru_cache(maxsize=4096)
def parse_uri(text: str) -> Uri:
    """Parse a URI as it appears in a Request-URI or inside ``<...>``.

    Parameters
    ----------
    text : str
        The URI text (no surrounding white space or angle brackets).

    Returns
    -------
    SipUri or TelUri or AbsoluteUri

    Raises
    ------
    RemoteProtocolError
        Status 400 when the text does not match the grammar of its scheme.

    Examples
    --------
    >>> u = parse_uri("sip:alice@[2001:db8::1]:5070;transport=tcp")
    >>> u.host, u.port, u.param("transport")
    ('[2001:db8::1]', 5070, 'tcp')
    """
    colon = text.find(":")
    if colon <= 0 or _SCHEME_RE.fullmatch(text, 0, colon) is None:
        raise fail("URI", f"no scheme in {text[:60]!r}")
    scheme = text[:colon].lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(text, scheme, text[colon + 1 :])
    if scheme == "tel":
        return _parse_tel(text, text[colon + 1 :])
    if _URIC_RE.fullmatch(text, colon + 1) is None:
        raise fail("URI", f"character not allowed in absoluteURI {text[:60]!r}")
    return AbsoluteUri(scheme, text)


def _parse_params(part: str, what: str, name_re: re.Pattern[str]) -> tuple[tuple[str, str | None], ...]:
    out = []
    for item in part.split(";"):
        name, eq, value = item.partition("=")
        if name_re.fullmatch(name) is None:
            raise fail(what, f"bad parameter name {item[:40]!r}")
        if eq and _PARAMCHARS_RE.fullmatch(value) is None:
            raise fail(what, f"bad value for parameter {name[:40]!r}")
        out.append((name, value if eq else None))
    return tuple(out)


def _parse_sip(text: str, scheme: str, rest: str) -> SipUri:
    what = f"{scheme.upper()} URI"
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        u, colon, p = userinfo.partition(":")
        if _USER_RE.fullmatch(u) is None:
            raise fail(what, f"bad user part {u[:40]!r}")
        if colon and _PASSWORD_RE.fullmatch(p) is None:
            raise fail(what, "bad password")
        user, password = u, (p if colon else None)
    rest, qmark, header_part = rest.partition("?")
    hostport, semi, param_part = rest.partition(";")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not is_ipv6(hostport[1:end]):
            raise fail(what, f"bad IPv6 reference {hostport[:60]!r}")
        host, after = hostport[: end + 1], hostport[end + 1 :]
        if after and not after.startswith(":"):
            raise fail(what, f"junk after IPv6 reference {after[:40]!r}")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        if not (is_hostname(host) or is_ipv4(host)):
            raise fail(what, f"bad host {host[:60]!r}")
    port = None
    if port_text is not None:
        if _PORT_RE.fullmatch(port_text) is None or int(port_text) > 65535:
            raise fail(what, f"bad port {port_text[:20]!r}")
        port = int(port_text)
    params = _parse_params(param_part, what, _PARAMCHARS_RE) if semi else ()
    headers: tuple[tuple[str, str], ...] = ()
    if qmark:
        hs = []
        for item in header_part.split("&"):
            name, eq, value = item.partition("=")
            if not eq or _HNAME_RE.fullmatch(name) is None or _HVALUE_RE.fullmatch(value) is None:
                raise fail(what, f"bad URI header {item[:40]!r}")
            hs.append((name, value))
        headers = tuple(hs)
    return SipUri(scheme, user, password, host, port, params, headers, text)


def _parse_tel(text: str, rest: str) -> TelUri:
    number, semi, param_part = rest.partition(";")
    if _TEL_GLOBAL_RE.fullmatch(number) is None and _TEL_LOCAL_RE.fullmatch(number) is None:
        raise fail("TEL URI", f"bad telephone-subscriber {number[:40]!r}")
    params = _parse_params(param_part, "TEL URI", _TEL_PNAME_RE) if semi else ()
    if not number.startswith("+") and not any(k.lower() == "phone-context" for k, _ in params):
        raise fail("TEL URI", "a local number needs a phone-context parameter (RFC 3966 5.1.4)")
    return TelUri(number, params, text)


# ---------------------------------------------------------------------------------------
# Comparison (RFC 3261 19.1.4, with RFC 5954 section 4 for IP addresses)
# ---------------------------------------------------------------------------------------


def _host_key(host: str) -> tuple[str, object]:
    if host.startswith("["):
        return ("ip", ipaddress.IPv6Address(host[1:-1]))
    if is_ipv4(host):
        return ("ip", ipaddress.IPv4Address(host))
    return ("name", host.lower())


def _param_map(params: tuple[tuple[str, str | None], ...]) -> dict[str, str | None]:
    return {unescape(k).lower(): (None if v is None else unescape(v).lower()) for k, v in params}


def uri_equal(a: Uri, b: Uri) -> bool:
    """Whether two URIs are equivalent under RFC 3261 19.1.4.

    For SIP/SIPS URIs: the schemes must be the same (a SIP URI never equals a SIPS
    URI); ``userinfo`` is compared case-sensitively and everything else
    case-insensitively, all after ``%``-unescaping; an IP address never equals a
    hostname, and IP addresses compare as addresses (``[::1]`` equals ``[0::1]``,
    RFC 5954); a missing port is not the default port; a ``user``, ``ttl``, ``method``,
    ``maddr`` or ``transport`` parameter present in only one URI makes them differ, any
    parameter present in both must match, other parameters present in only one are
    ignored; URI headers must all be present in both and match.

    TEL URIs compare their numbers without visual separators and their parameters as
    case-insensitive sets (RFC 3966 4). Other URIs compare scheme case-insensitively and
    the rest exactly.

    Parameters
    ----------
    a, b : SipUri or TelUri or AbsoluteUri

    Returns
    -------
    bool
    """
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        if a.scheme != b.scheme:
            return False
        if (a.user is None) != (b.user is None) or (a.password is None) != (b.password is None):
            return False
        if a.user is not None and unescape(a.user) != unescape(b.user or ""):
            return False
        if a.password is not None and unescape(a.password) != unescape(b.password or ""):
            return False
        if _host_key(a.host) != _host_key(b.host) or a.port != b.port:
            return False
        pa, pb = _param_map(a.params), _param_map(b.params)
        for name in pa.keys() & pb.keys():
            if pa[name] != pb[name]:
                return False
        for name in _SIGNIFICANT_PARAMS:
            if (name in pa) != (name in pb):
                return False
        ha = sorted((unescape(k).lower(), unescape(v)) for k, v in a.headers)
        hb = sorted((unescape(k).lower(), unescape(v)) for k, v in b.headers)
        return ha == hb
    if isinstance(a, TelUri) and isinstance(b, TelUri):
        if a.number.translate(_TEL_VISUAL).lower() != b.number.translate(_TEL_VISUAL).lower():
            return False
        return _param_map(a.params) == _param_map(b.params)
    if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
        return a.scheme == b.scheme and a.text.partition(":")[2] == b.text.partition(":")[2]
    return False

