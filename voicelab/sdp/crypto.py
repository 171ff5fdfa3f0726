"""SDP security descriptions for SRTP (SDES, RFC 4568): the ``a=crypto`` attribute.

::

    a=crypto:<tag> <crypto-suite> <key-params> [<session-param> ...]
    key-params = key-param *(";" key-param)
    key-param  = "inline:" <base64(master key || master salt)> ["|" lifetime] ["|" MKI ":" length]
    lifetime   = ["2^"] 1*DIGIT                     ; packets
    MKI        = 1*DIGIT   length = 1..128          ; bytes of the MKI field in each packet

Example (RFC 4568 section 4)::

    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4

Why our own: the lab needs a strict parser that raises only
:class:`~voicelab.errors.RemoteProtocolError`, and key generation from an injected
source of randomness. pylibsrtp (used by the RTP layer) takes the decoded
``key || salt`` bytes this module produces; it has no SDP code.

Keys and randomness
-------------------
Keys for real calls MUST be unpredictable: :func:`generate_key_salt` uses
:func:`secrets.token_bytes` (the operating system's CSPRNG) unless a
:class:`numpy.random.Generator` is passed. The ``rng`` option exists only so that tests
and recorded experiments produce the same SDP bytes on every run; a key drawn from a
seeded generator is public knowledge and gives no confidentiality.

Errors
------
Malformed attribute text and key material of the wrong length for a known suite raise
:class:`~voicelab.errors.RemoteProtocolError` with ``status_code=400`` (the peer sent
something broken). RFC 4568 section 7.1.2 tells an answerer to *ignore* a crypto
attribute it cannot use, so :mod:`voicelab.sdp.negotiate` catches these and moves on
to the next offered attribute; only when none is usable does the stream fail (488).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

import numpy as np

from ..errors import ParameterError, RemoteProtocolError

__all__ = [
    "CryptoAttribute",
    "KeyParam",
    "SuiteInfo",
    "SUITES",
    "SUPPORTED_SUITES",
    "generate_key_salt",
    "make_crypto",
]


@dataclass(frozen=True)
class SuiteInfo:
    """Sizes of one SRTP crypto suite.

    Attributes
    ----------
    key_bytes : int
        Master key length in bytes.
    salt_bytes : int
        Master salt length in bytes.
    auth_tag_bits : int
        Length of the SRTP authentication tag in bits.
    """

    key_bytes: int
    salt_bytes: int
    auth_tag_bits: int

    @property
    def key_salt_bytes(self) -> int:
        """Length of the ``key || salt`` string carried inline, in bytes."""
        return self.key_bytes + self.salt_bytes


#: Suites whose key sizes we know (RFC 4568 section 6.2, RFC 6188 for AES-192/256).
SUITES: dict[str, SuiteInfo] = {
    "AES_CM_128_HMAC_SHA1_80": SuiteInfo(16, 14, 80),
    "AES_CM_128_HMAC_SHA1_32": SuiteInfo(16, 14, 32),
    "F8_128_HMAC_SHA1_80": SuiteInfo(16, 14, 80),
    "AES_192_CM_HMAC_SHA1_80": SuiteInfo(24, 14, 80),
    "AES_192_CM_HMAC_SHA1_32": SuiteInfo(24, 14, 32),
    "AES_256_CM_HMAC_SHA1_80": SuiteInfo(32, 14, 80),
    "AES_256_CM_HMAC_SHA1_32": SuiteInfo(32, 14, 32),
}

#: Suites the lab negotiates, in order of preference (what pylibsrtp's default profiles cover).
SUPPORTED_SUITES: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

_DIGITS = re.compile(r"[0-9]{1,9}", re.ASCII)
_SUITE = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
_LIFETIME = re.compile(r"(2\^)?([0-9]{1,20})", re.ASCII)
_MKI = re.compile(r"([0-9]{1,20}):([0-9]{1,3})", re.ASCII)
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_code=400)


@dataclass(frozen=True)
class KeyParam:
    """One ``inline:`` key parameter of an ``a=crypto`` attribute.

    Attributes
    ----------
    key_salt : bytes
        Master key followed by master salt (decoded from base64).
    lifetime : str or None
        Master key lifetime as written (``"2^20"`` or a decimal count of packets).
    mki : int or None
        Master key identifier value.
    mki_length : int or None
        Length in bytes of the MKI field in SRTP packets (1..128).
    """

    key_salt: bytes
    lifetime: str | None = None
    mki: int | None = None
    mki_length: int | None = None

    @property
    def lifetime_packets(self) -> int | None:
        """The lifetime as a number of packets, or None when not given."""
        if self.lifetime is None:
            return None
        if self.lifetime.startswith("2^"):
            return 2 ** int(self.lifetime[2:])
        return int(self.lifetime)

    @classmethod
    def parse(cls, text: str) -> "KeyParam":
        """Parse ``inline:<key||salt>[|lifetime][|MKI:length]``.

        Raises
        ------
        RemoteProtocolError
            (400) if the text does not follow RFC 4568 section 9.2.
        """
        method, sep, info = text.partition(":")
        if not sep or method != "inline":
            raise _bad(f"a=crypto key parameter {text[:60]!r} is not 'inline:<base64 key||salt>' (RFC 4568 6.1)")
        parts = info.split("|")
        if len(parts) > 3:
            raise _bad(f"a=crypto key parameter {text[:60]!r} has too many '|' fields (RFC 4568 6.1)")
        b64 = parts[0]
        if not _B64.fullmatch(b64):
            raise _bad(f"a=crypto key {b64[:60]!r} is not base64 (RFC 4568 6.1)")
        try:
            key_salt = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"a=crypto key {b64[:60]!r} is not valid base64 (RFC 4568 6.1)") from None
        lifetime = mki = mki_length = None
        for extra in parts[1:]:
            m = _MKI.fullmatch(extra)
            if m is not None and mki is None:
                mki, mki_length = int(m.group(1)), int(m.group(2))
                if not 1 <= mki_length <= 128:
                    raise _bad(f"a=crypto MKI length {mki_length} is outside 1..128 (RFC 4568 6.1)")
                continue
            m = _LIFETIME.fullmatch(extra)
            if m is not None and lifetime is None and mki is None:
                if m.group(1) and int(m.group(2)) > 64:
                    raise _bad(f"a=crypto lifetime {extra!r} is too large (RFC 4568 6.1)")
                lifetime = extra
                continue
            raise _bad(f"a=crypto key field {extra[:40]!r} is neither a lifetime nor MKI:length (RFC 4568 6.1)")
        return cls(key_salt=key_salt, lifetime=lifetime, mki=mki, mki_length=mki_length)

    def __str__(self) -> str:
        out = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            out += "|" + self.lifetime
        if self.mki is not None:
            out += f"|{self.mki}:{self.mki_length}"
        return out


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` attribute value (everything after ``a=crypto:``).

    Attributes
    ----------
    tag : int
        Decimal tag (1..999999999) that the answer repeats.
    suite : str
        Crypto suite name, e.g. ``"AES_CM_128_HMAC_SHA1_80"``.
    keys : tuple of KeyParam
        One or more key parameters (several only with MKIs).
    session_params : tuple of str
        Session parameters (``UNENCRYPTED_SRTCP``, ``KDR=..``), kept as written.
    """

    tag: int
    suite: str
    keys: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, value: str) -> "CryptoAttribute":
        """Parse an ``a=crypto`` value such as ``"1 AES_CM_128_HMAC_SHA1_80 inline:..."``.

        Parameters
        ----------
        value : str
            The attribute value after ``a=crypto:``.

        Returns
        -------
        CryptoAttribute

        Raises
        ------
        RemoteProtocolError
            (400) if the value is malformed. Unknown suites parse (and are skipped by
            negotiation); :meth:`validate` checks key lengths of known suites.
        """
        if not isinstance(value, str):
            raise _bad(f"a=crypto value must be text, got {type(value).__name__}")
        fields = [f for f in value.split(" ") if f]
        if len(fields) < 3:
            raise _bad(f"a=crypto:{value[:60]!r} needs '<tag> <suite> inline:<key>' (RFC 4568 9.1)")
        tag_s, suite, key_s, *session = fields
        if not _DIGITS.fullmatch(tag_s):
            raise _bad(f"a=crypto tag {tag_s[:20]!r} is not a decimal number of 1..9 digits (RFC 4568 9.1)")
        if not _SUITE.fullmatch(suite):
            raise _bad(f"a=crypto suite {suite[:40]!r} is not a suite name (RFC 4568 9.1)")
        keys = tuple(KeyParam.parse(k) for k in key_s.split(";"))
        return cls(tag=int(tag_s), suite=suite, keys=keys, session_params=tuple(session))

    def __str__(self) -> str:
        out = f"{self.tag} {self.suite} " + ";".join(str(k) for k in self.keys)
        if self.session_params:
            out += " " + " ".join(self.session_params)
        return out

    @property
    def key_salt(self) -> bytes:
        """The first key's ``key || salt`` bytes."""
        return self.keys[0].key_salt

    @property
    def known(self) -> bool:
        """True when the suite is one whose key sizes this module knows."""
        return self.suite in SUITES

    def validate(self) -> None:
        """Check every key's length against the suite (known suites only).

        Raises
        ------
        RemoteProtocolError
            (400) if a key is not ``key_bytes + salt_bytes`` long, e.g. 30 bytes for
            ``AES_CM_128_HMAC_SHA1_80``.
        """
        info = SUITES.get(self.suite)
        if info is None:
            return
        for k in self.keys:
            if len(k.key_salt) != info.key_salt_bytes:
                raise _bad(
                    f"a=crypto:{self.tag} {self.suite} carries a {len(k.key_salt)}-byte key||salt; "
                    f"the suite needs {info.key_salt_bytes} bytes ({info.key_bytes} key + {info.salt_bytes} salt)"
                )


def _suite_info(suite: str) -> SuiteInfo:
    info = SUITES.get(suite) if isinstance(suite, str) else None
    if info is None:
        raise ParameterError(f"unknown SRTP crypto suite {suite!r}; use one of {', '.join(SUITES)}")
    return info


def generate_key_salt(suite: str = "AES_CM_128_HMAC_SHA1_80", *, rng: np.random.Generator | None = None) -> bytes:
    """A fresh master ``key || salt`` for ``suite``.

    Parameters
    ----------
    suite : str, optional
        A suite name from :data:`SUITES`.
    rng : numpy.random.Generator, optional
        Draw the bytes from this generator instead of the OS CSPRNG. For tests and
        reproducible experiments only: such a key is predictable (see module docstring).

    Returns
    -------
    bytes
        ``key_bytes + salt_bytes`` random bytes (30 for the AES_CM_128 suites).

    Raises
    ------
    ParameterError
        Unknown suite, or ``rng`` is not a numpy Generator.
    """
    n = _suite_info(suite).key_salt_bytes
    if rng is None:
        return secrets.token_bytes(n)
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng.bytes(n)


def make_crypto(
    tag: int,
    suite: str = "AES_CM_128_HMAC_SHA1_80",
    *,
    key_salt: bytes | None = None,
    rng: np.random.Generator | None = None,
) -> CryptoAttribute:
    """Build an ``a=crypto`` attribute with a new (or given) key.

    Parameters
    ----------
    tag : int
        The attribute tag (1..999999999).
    suite : str, optional
        Crypto suite.
    key_salt : bytes, optional
        Use this ``key || salt`` instead of generating one.
    rng : numpy.random.Generator, optional
        See :func:`generate_key_salt`.

    Returns
    -------
    CryptoAttribute

    Raises
    ------
    ParameterError
        Bad tag, unknown suite, or a ``key_salt`` of the wrong length.
    """
    if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= int(tag) <= 999_999_999:
        raise ParameterError(f"crypto tag must be an integer from 0 to 999999999, got {tag!r}")
    info = _suite_info(suite)
    if key_salt is None:
        key_salt = generate_key_salt(suite, rng=rng)
    elif not isinstance(key_salt, (bytes, bytearray)) or len(key_salt) != info.key_salt_bytes:
        raise ParameterError(f"{suite} needs a {info.key_salt_bytes}-byte key_salt, got {key_salt!r:.40}")
    return CryptoAttribute(tag=int(tag), suite=suite, keys=(KeyParam(bytes(key_salt)),))
