"""Short-lived HMAC-SHA256 tokens that admit a browser or caller to the signaling server.

Sans-IO: no clock and no randomness are read here. The caller passes ``now`` (seconds
on whatever clock it uses, e.g. the event loop's; the *same* clock must be used to
issue and to verify) and a fresh ``nonce`` (bytes from a :class:`numpy.random.Generator`
or :func:`os.urandom`).

Why our own and not a JWT library: the lab needs one claim set, one algorithm and no
new dependency; a JWT library would add algorithm negotiation (``alg: none`` and
key-confusion pitfalls) that this closed system does not need. The construction is
the standard one: HMAC-SHA256 (RFC 2104) over a domain-separated payload, compared in
constant time (:func:`hmac.compare_digest`), URL-safe base64 without padding
(RFC 4648 section 5) so a token can travel in a query string unescaped.

Wire form
---------
``v1.<payload>.<signature>`` where

- ``payload`` is base64url(JSON ``{"exp", "iat", "nonce", "sub"}``), keys sorted, no
  spaces; ``iat`` / ``exp`` are seconds on the issuer's clock, ``nonce`` is base64url;
- ``signature`` is base64url(HMAC-SHA256(secret, ``"voicelab-signaling-token\\n" +
  "v1." + payload``)) and is always 43 characters.

How a token is refused (all :class:`~voicelab.errors.RemoteProtocolError`, the HTTP
status travels in ``status_code``; the message starts with the word shown):

==============================  ======  ==========================================
case                            status  message starts with
==============================  ======  ==========================================
not a str, too long, bad        401     ``malformed token``
characters, wrong shape
signature does not match        403     ``forged token``
(tampered, other secret)
``now > exp + clock_skew_s``    401     ``expired token``
``iat > now + clock_skew_s``    401     ``token not yet valid``
==============================  ======  ==========================================

401 means "get a new token"; 403 means "this token was never ours". Bad arguments from
our own side (a short secret, a negative TTL) raise
:class:`~voicelab.errors.ParameterError`.

Examples
--------
>>> secret = bytes(range(32))
>>> tok = issue_token(secret, subject="browser", now=100.0, ttl_s=60, nonce=b"12345678")
>>> verify_token(secret, tok, now=130.0).subject
'browser'
>>> verify_token(secret, tok, now=200.0)
Traceback (most recent call last):
...
voicelab.errors.RemoteProtocolError: expired token: ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from dataclasses import dataclass

from ..errors import ParameterError, RemoteProtocolError

__all__ = [
    "TokenClaims",
    "issue_token",
    "verify_token",
    "MIN_SECRET_BYTES",
    "MAX_TOKEN_CHARS",
    "DEFAULT_CLOCK_SKEW_S",
]

#: Shortest secret accepted (bytes); 32 random bytes are recommended.
MIN_SECRET_BYTES = 16
#: Longest token :func:`verify_token` looks at (characters); longer is malformed.
MAX_TOKEN_CHARS = 1024
#: Default tolerance between issuer and verifier clocks (s).
DEFAULT_CLOCK_SKEW_S = 2.0
#: Longest subject (characters).
MAX_SUBJECT_CHARS = 256
#: Nonce length bounds (bytes).
MIN_NONCE_BYTES, MAX_NONCE_BYTES = 8, 64
#: Longest TTL accepted (s): these are short-lived tokens.
MAX_TTL_S = 86400.0

_VERSION = "v1"
_DOMAIN = b"voicelab-signaling-token\n"
_SIG_CHARS = 43  # base64url of 32 bytes, unpadded
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says.

    Attributes
    ----------
    subject : str
        Who the token was issued to (free text chosen by the issuer).
    issued_at : float
        ``now`` at issue (s, issuer's clock).
    expires_at : float
        ``issued_at + ttl_s`` (s, issuer's clock).
    nonce : bytes
        The issuer's nonce; unique per token, usable to refuse replays.
    """

    subject: str
    issued_at: float
    expires_at: float
    nonce: bytes

    @property
    def ttl_s(self) -> float:
        """Lifetime the token was issued with (s)."""
        return self.expires_at - self.issued_at


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    """Strict base64url decode without padding; raises ValueError (internal only)."""
    pad = "=" * (-len(text) % 4)
    raw = base64.urlsafe_b64decode((text + pad).encode("ascii"))
    if _b64e(raw) != text:  # non-canonical encodings (stray low bits) are refused
        raise ValueError("non-canonical base64")
    return raw


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, (bytes, bytearray)):
        raise ParameterError(f"secret must be bytes (e.g. os.urandom(32)), got {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ParameterError(f"secret must be at least {MIN_SECRET_BYTES} bytes (use os.urandom(32)), got {len(secret)}")
    return bytes(secret)


def _check_time(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


def _sign(secret: bytes, signed_part: str) -> str:
    return _b64e(hmac.new(secret, _DOMAIN + signed_part.encode("ascii"), hashlib.sha256).digest())


def issue_token(secret: bytes, *, subject: str, now: float, ttl_s: float = 60, nonce: bytes) -> str:
    """Make a signed token valid from ``now`` to ``now + ttl_s``.

    Parameters
    ----------
    secret : bytes
        HMAC key, at least :data:`MIN_SECRET_BYTES` bytes; keep it in the server.
    subject : str
        Who the token is for (1..256 characters), e.g. the client's address.
    now : float
        Current time (s) on the clock the verifier will use.
    ttl_s : float, optional
        Lifetime (s), 0 < ttl_s <= 86400. Default 60.
    nonce : bytes
        8..64 fresh bytes, so that two tokens issued at the same instant differ.

    Returns
    -------
    str
        ``v1.<payload>.<signature>``, URL-safe (no escaping needed in a query string).

    Raises
    ------
    ParameterError
        Any argument is of the wrong type or out of range.
    """
    key = _check_secret(secret)
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_CHARS:
        raise ParameterError(f"subject must be a str of 1..{MAX_SUBJECT_CHARS} characters, got {subject!r:.80}")
    t = _check_time(now, "now")
    ttl = _check_time(ttl_s, "ttl_s")
    if not 0 < ttl <= MAX_TTL_S:
        raise ParameterError(f"ttl_s must be in (0, {MAX_TTL_S:g}] seconds, got {ttl_s!r}")
    if not isinstance(nonce, (bytes, bytearray)) or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise ParameterError(f"nonce must be {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES} bytes (e.g. rng.bytes(16)), got {nonce!r:.40}")
    body = {"exp": t + ttl, "iat": t, "nonce": _b64e(bytes(nonce)), "sub": subject}
    payload = _b64e(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
    signed = f"{_VERSION}.{payload}"
    token = f"{signed}.{_sign(key, signed)}"
    if len(token) > MAX_TOKEN_CHARS:  # only reachable with a very long non-ASCII subject
        raise ParameterError(f"subject {subject!r:.40} makes the token longer than {MAX_TOKEN_CHARS} characters; shorten it")
    return token


def _malformed(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed token: {why}; request a new one from POST /token", status_code=401)


def verify_token(
    secret: bytes, token: object, *, now: float, clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
) -> TokenClaims:
    """Check a token's signature and lifetime; return its claims.

    The signature is checked (in constant time) before anything in the payload is
    parsed, so nothing an attacker controls is interpreted unless it was signed by us.

    Parameters
    ----------
    secret : bytes
        The key the token was issued with.
    token : str
        As received; anything else is refused as malformed.
    now : float
        Current time (s) on the issuer's clock.
    clock_skew_s : float, optional
        Tolerance (s, >= 0) for expiry and for tokens issued slightly in the future.

    Returns
    -------
    TokenClaims

    Raises
    ------
    RemoteProtocolError
        ``status_code`` 401 for a malformed, expired or not-yet-valid token, 403 for a
        forged one (see the module docstring).
    ParameterError
        ``secret``, ``now`` or ``clock_skew_s`` is unusable (our side's mistake).
    """
    key = _check_secret(secret)
    t = _check_time(now, "now")
    skew = _check_time(clock_skew_s, "clock_skew_s")
    if skew < 0:
        raise ParameterError(f"clock_skew_s must be >= 0 seconds, got {clock_skew_s!r}")
    if not isinstance(token, str):
        raise _malformed(f"expected a str, got {type(token).__name__}")
    if not token:
        raise _malformed("empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise _malformed(f"longer than {MAX_TOKEN_CHARS} characters")
    if not _ALPHABET.issuperset(token):
        raise _malformed("characters outside base64url")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise _malformed(f"expected '{_VERSION}.<payload>.<signature>'")
    _, payload, sig = parts
    if not payload or len(sig) != _SIG_CHARS:
        raise _malformed("payload or signature has the wrong length")
    expected = _sign(key, f"{_VERSION}.{payload}")
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii")):
        raise RemoteProtocolError(
            "forged token: the signature does not match this server's secret; request a new one from POST /token",
            status_code=403,
        )
    # Signed by us from here on; still parsed defensively (another issuer sharing the secret).
    try:
        body = json.loads(_b64d(payload).decode("utf-8"))
        sub, iat, exp = body["sub"], body["iat"], body["exp"]
        nonce = _b64d(body["nonce"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _malformed("payload is not the expected JSON") from None
    if (
        not isinstance(sub, str)
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in (iat, exp))
        or exp < iat
    ):
        raise _malformed("payload has the wrong field types")
    if t > exp + skew:
        raise RemoteProtocolError(
            f"expired token: it expired {t - exp:.3f} s ago; request a new one from POST /token", status_code=401
        )
    if iat > t + skew:
        raise RemoteProtocolError(
            f"token not yet valid: issued {iat - t:.3f} s in the future; check that issuer and verifier share a clock",
            status_code=401,
        )
    return TokenClaims(subject=sub, issued_at=float(iat), expires_at=float(exp), nonce=nonce)
