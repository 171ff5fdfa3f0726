"""The SIP grammar (RFC 3261 section 25) as small named pieces, with the RFC text beside them.

Habit borrowed from h11's ``_abnf.py``: every rule the parsers use is written down once,
here, next to the ABNF it comes from, so a reader can check one against the other. Where
the code is more liberal or more strict than the ABNF, the comment says so and why.

Two tools live here:

- character sets and compiled regular expressions for the flat rules (``token``,
  ``word``, ``hostname``, ``IPv4address``, ``SIP-Version``, ...). Every regex is a run of
  one character class or of alternatives that cannot match the same character, so none
  of them backtracks catastrophically (the fuzz tests feed them long inputs);
- :class:`Scanner`, a cursor over one unfolded header value, for the nested rules
  (``name-addr``, ``via-parm``, ``generic-param``, ``quoted-string``): linear time, and
  every failure is a :class:`~voicelab.errors.RemoteProtocolError` (status 400) naming
  the rule, never a bare ``ValueError``.

Header values reach the scanner *unfolded*: every ``CRLF 1*WSP`` was replaced by one
space (RFC 3261 7.3.1: "a recipient MAY replace any linear white space with a single SP
before interpreting the field value"), so ``LWS`` and ``SWS`` become "spaces and tabs".
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import RemoteProtocolError

__all__ = [
    "TOKEN_CHARS",
    "WORD_CHARS",
    "WSP",
    "Scanner",
    "is_token",
    "is_word",
    "is_hostname",
    "is_ipv4",
    "is_ipv6",
    "check_escapes",
    "unescape",
    "split_list",
    "fail",
]

# ---------------------------------------------------------------------------------------
# Basic rules (RFC 3261 25.1)
# ---------------------------------------------------------------------------------------

#: alphanum = ALPHA / DIGIT
ALPHANUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

#: mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
MARK = "-_.!~*'()"

#: unreserved = alphanum / mark
UNRESERVED = ALPHANUM + MARK

#: reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","
RESERVED = ";/?:@&=+$,"

#: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = frozenset(ALPHANUM + "-.!%*_+`'~")

#: word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#:        "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD_CHARS = frozenset(TOKEN_CHARS | set('()<>:\\"/[]?{}'))

#: WSP = SP / HTAB  (after unfolding, LWS and SWS are runs of these)
WSP = " \t"

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WORD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+")


def is_token(text: str) -> bool:
    """Whether *text* matches ``token`` (RFC 3261 25.1)."""
    return _TOKEN_RE.fullmatch(text) is not None


def is_word(text: str) -> bool:
    """Whether *text* matches ``word`` (RFC 3261 25.1), used by ``callid``."""
    return _WORD_RE.fullmatch(text) is not None


def fail(what: str, detail: str) -> RemoteProtocolError:
    """Build the one kind of error the grammar raises: 400, one line, names the rule.

    Parameters
    ----------
    what : str
        The rule or header being parsed (``"Via"``, ``"SIP URI"``).
    detail : str
        What was wrong.

    Returns
    -------
    RemoteProtocolError
        With ``status_code`` 400. The caller raises it.
    """
    return RemoteProtocolError(f"malformed {what}: {detail}", status_code=400)


# ---------------------------------------------------------------------------------------
# Hosts (RFC 3261 25.1, corrected for IPv6 by RFC 5954)
# ---------------------------------------------------------------------------------------

# hostname    = *( domainlabel "." ) toplabel [ "." ]
# domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
# toplabel    = ALPHA / ALPHA *( alphanum / "-" ) alphanum
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_TOPLABEL = r"[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?:{_LABEL}\.)*{_TOPLABEL}\.?")

# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
# Stricter than RFC 3261 on purpose: each part must be 0..255 (RFC 5954 takes the
# RFC 3986 rule, dec-octet).
_IPV4_RE = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def is_hostname(text: str) -> bool:
    """Whether *text* matches ``hostname`` (RFC 3261 25.1)."""
    return len(text) <= 255 and _HOSTNAME_RE.fullmatch(text) is not None


def is_ipv4(text: str) -> bool:
    """Whether *text* is a dotted-quad IPv4 address with parts 0..255."""
    return _IPV4_RE.fullmatch(text) is not None


def is_ipv6(text: str) -> bool:
    """Whether *text* is an ``IPv6address`` (without brackets).

    RFC 3261's IPv6 ABNF has a bug that accepts three colons before an embedded IPv4
    address (``2001:db8:::192.0.2.1``, RFC 5118 4.10). RFC 5954 replaced it with the
    RFC 3986 rule, which is what we follow: ``::`` stands for one or more zero groups, at
    most once, and there are never three colons in a row. No zone ids (``%eth0``).
    """
    if not text or len(text) > 45 or not set(text) <= _IPV6_CHARS:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Escapes (RFC 3261 25.1: escaped = "%" HEXDIG HEXDIG)
# ---------------------------------------------------------------------------------------

_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def check_escapes(text: str, what: str) -> None:
    """Raise a 400 error if a ``%`` in *text* is not followed by two hex digits."""
    if "%" in text and _BAD_ESCAPE_RE.search(text):
        raise fail(what, f"'%' not followed by two hex digits in {text[:60]!r}")


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 19.1.2) to characters.

    Escaped octets form UTF-8; octets that are not valid UTF-8 are kept as lone
    surrogates (``surrogateescape``) so that comparison stays exact and nothing raises.
    ``%00`` decodes to NUL (RFC 4475 3.1.1.4 says escaped nulls are legal).
    """
    if "%" not in text:
        return text
    raw = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(text):
        raw += text[pos : m.start()].encode("utf-8", "surrogateescape")
        raw.append(int(m.group(1), 16))
        pos = m.end()
    raw += text[pos:].encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------
# Lists (RFC 3261 7.3.1: "field-name: field-value *(,field-value)")
# ---------------------------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Split a header value on the commas that separate list elements.

    A comma inside a ``quoted-string`` (with ``\\`` quoted-pairs honoured) or inside
    ``<...>`` (a URI in a ``name-addr``) does not separate. Elements are stripped of
    surrounding white space; empty elements are kept (``"a,,b"`` gives three) so that the
    typed parsers can reject them. An unterminated quote is a 400 error.

    Parameters
    ----------
    value : str
        An unfolded header value.

    Returns
    -------
    list of str
    """
    if "," not in value:
        return [value.strip(WSP)]
    out: list[str] = []
    start = 0
    i = 0
    n = len(value)
    in_quote = False
    in_angle = False
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif in_angle:
            if c == ">":
                in_angle = False
        elif c == "<":
            in_angle = True
        elif c == ",":
            out.append(value[start:i].strip(WSP))
            start = i + 1
        i += 1
    if in_quote:
        raise fail("header list", "unterminated quoted-string")
    out.append(value[start:].strip(WSP))
    return out


# ---------------------------------------------------------------------------------------
# The scanner for nested rules
# ---------------------------------------------------------------------------------------

# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
_QDTEXT_RE = re.compile(r'[\t !#-\[\]-~\u0080-\U0010ffff]+')
_QUOTED_PAIR_CHARS = frozenset(chr(c) for c in range(0x80) if c not in (0x0A, 0x0D))


class Scanner:
    """A cursor over one unfolded header value.

    Methods consume input and return what they consumed, or raise a 400
    :class:`~voicelab.errors.RemoteProtocolError` that names *what* is being parsed.

    Parameters
    ----------
    text : str
        The unfolded value.
    what : str
        Name used in error messages (``"Via"``, ``"From"``).
    """

    __slots__ = ("text", "pos", "what", "end")

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.pos = 0
        self.what = what
        self.end = len(text)  # the text never changes: its length is looked up once

    def error(self, detail: str) -> RemoteProtocolError:
        """A 400 error for this value, with the column."""
        return fail(self.what, f"{detail} at column {self.pos + 1}")

    def eof(self) -> bool:
        """Whether the whole value was consumed."""
        return self.pos >= self.end

    def peek(self) -> str:
        """The next character, or ``""`` at the end."""
        return self.text[self.pos] if self.pos < self.end else ""

    def skip_ws(self) -> bool:
        """Skip ``SWS`` (``[LWS]``); return whether anything was skipped."""
        pos = start = self.pos
        text, end = self.text, self.end
        while pos < end and text[pos] in WSP:
            pos += 1
        self.pos = pos
        return pos > start

    def accept(self, char: str) -> bool:
        """Consume *char* if it is next (no white space skipped)."""
        if self.pos < self.end and self.text[self.pos] == char:
            self.pos += 1
            return True
        return False

    def expect_sep(self, char: str, name: str) -> None:
        """Consume ``SWS char SWS`` (``SLASH``, ``EQUAL``, ``SEMI``, ``COLON``, ``COMMA``)."""
        self.skip_ws()
        if not self.accept(char):
            raise self.error(f"expected {name} ({char!r})")
        self.skip_ws()

    def token(self, name: str = "token") -> str:
        """Consume a ``token``."""
        m = _TOKEN_RE.match(self.text, self.pos)
        if m is None:
            raise self.error(f"expected {name}")
        self.pos = m.end()
        return m.group(0)

    def take(self, pattern: re.Pattern[str], name: str) -> str:
        """Consume a match of *pattern* (which must match at least one character)."""
        m = pattern.match(self.text, self.pos)
        if m is None or m.end() == self.pos:
            raise self.error(f"expected {name}")
        self.pos = m.end()
        return m.group(0)

    def quoted_string(self) -> tuple[str, str]:
        """Consume a ``quoted-string``; return (as written with quotes, unescaped content).

        quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
        """
        text = self.text
        start = self.pos
        if not self.accept('"'):
            raise self.error("expected '\"'")
        parts: list[str] = []
        n = len(text)
        while True:
            if self.pos >= n:
                raise self.error("unterminated quoted-string")
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return text[start : self.pos], "".join(parts)
            if c == "\\":
                if self.pos + 1 >= n or text[self.pos + 1] not in _QUOTED_PAIR_CHARS:
                    raise self.error("bad quoted-pair in quoted-string")
                parts.append(text[self.pos + 1])
                self.pos += 2
                continue
            m = _QDTEXT_RE.match(text, self.pos)
            if m is None:
                raise self.error(f"control character {c!r} in quoted-string")
            parts.append(m.group(0))
            self.pos = m.end()

    def rest(self) -> str:
        """Consume and return everything left."""
        out = self.text[self.pos :]
        self.pos = self.end
        return out


def quote(text: str) -> str:
    """Write *text* as a ``quoted-string`` (escaping ``"`` and ``\\``)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
