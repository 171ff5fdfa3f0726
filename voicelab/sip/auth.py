"""SIP digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760). Sans-IO.

Client side
    :class:`DigestCredentials` (what the user knows), :func:`parse_challenges` (the
    usable ``Digest`` challenges of a 401/407), :func:`build_authorization` (one
    ``Authorization`` / ``Proxy-Authorization`` value), :func:`authorize` (the retried
    request: credentials added, CSeq incremented as RFC 3261 22.2 requires) and
    :class:`DigestClient`, which keeps the nonce-count per nonce, draws the cnonce
    from a caller-provided generator, and tells a stale nonce (retry silently) from
    rejected credentials (give up, ask the user).
Server side
    :class:`DigestAuthenticator` issues challenges (one ``WWW-Authenticate`` per
    algorithm, strongest first, ``qop="auth"``) and checks credentials with
    :meth:`DigestAuthenticator.verify`, which returns an :class:`AuthResult` and never
    raises on anything a peer sent. :meth:`DigestAuthenticator.reject` turns a failed
    result into the response to send.

The arithmetic (RFC 7616 3.4.1; RFC 2069 when the challenge has no ``qop``)::

    A1       = unq(username) ":" unq(realm) ":" passwd
    A1-sess  = H(unq(username) ":" unq(realm) ":" passwd) ":" unq(nonce) ":" unq(cnonce)
    A2       = Method ":" digest-uri                        ; qop=auth (auth-int unsupported)
    response = H(H(A1) ":" unq(nonce) ":" nc ":" unq(cnonce) ":" unq(qop) ":" H(A2))
    response = H(H(A1) ":" unq(nonce) ":" H(A2))           ; RFC 2069, no qop
    userhash : username = H(unq(username) ":" unq(realm))   ; RFC 7616 3.4.4

``H`` is MD5, SHA-256 or SHA-512/256 (FIPS 180-4 6.7, ``hashlib``'s ``sha512_256``).
Note: the SHA-512-256 example printed in RFC 7616 3.9.2 was computed with SHA-512
truncated to 256 bits (wrong initial values); erratum 4897 gives the FIPS values, which
are what OpenSSL-based SIP stacks (PJSIP, OpenSIPS, Kamailio) compute and what we
compute. The tests check both facts.

Choosing among several challenges (RFC 8760 2.4 lets a server send one per algorithm):
by default the client answers, per realm, the *strongest* algorithm it supports (SHA-256
and SHA-512-256 rank equal, above MD5; ties go to the topmost). RFC 8760 2.4 says a UAC
"SHOULD use the topmost header field that it supports unless a local policy dictates
otherwise"; ranking by strength is that local policy, because challenges are not
integrity-protected and section 3 of the same RFC warns that an on-path attacker can
reorder them to force MD5. ``policy="topmost"`` gives the RFC's default.

Server nonces are stateless and verifiable: ``base64url(ts_ms | seq | HMAC-SHA-256(secret,
realm | ts_ms | seq)[:16])``. The timestamp (``now`` in ms) lets :meth:`verify` tell an
expired nonce (answer ``stale=true`` when the digest was otherwise right, so the client
retries without asking the user) from a forged one; the sequence number makes every
challenge's nonce unique. Replays are stopped by a bounded table of the highest
nonce-count seen per nonce: a nonce-count must strictly increase. When the table evicts
a nonce it raises a floor; a nonce at or below the floor that is no longer in the table
is answered ``stale=true``, so eviction never re-opens a replay window.

Status codes: missing or wrong credentials give 401 (407 for a proxy authenticator) with
a fresh challenge. A malformed credentials header (grammar error, duplicated or missing
required parameter, bad ``nc``) and a ``uri`` that does not match the Request-URI (RFC
7616 3.4.6) give an :class:`AuthResult` with ``status_code`` 400; :meth:`verify` never
raises :class:`~voicelab.errors.RemoteProtocolError` itself.

Why our own: no maintained Python library implements the *server* side of SIP digest
(nonce issue/expiry/replay) without bundling I/O; the client side of ``requests`` /
``httpx`` is HTTP-only (digest-uri, 407 and CSeq rules differ). Nothing here imports
``asyncio``, ``socket``, ``time`` or ``random``; ``now`` is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from ..errors import LocalProtocolError, ParameterError, RemoteProtocolError
from .abnf import quote, split_list
from .headers import CSEQ_MAX, Auth, HeaderField, Headers, parse_auth, parse_cseq
from .message import Request, Response
from .transaction import build_response
from .uri import parse_uri, uri_equal

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "DigestCredentials",
    "DigestChallenge",
    "DigestHA1",
    "AuthResult",
    "DigestClient",
    "DigestAuthenticator",
    "compute_ha1",
    "digest_response",
    "hash_username",
    "parse_challenges",
    "select_challenges",
    "build_authorization",
    "authorize",
]

# ---------------------------------------------------------------------------------------
# Algorithms (IANA "HTTP Digest Hash Algorithms", RFC 7616 3.2 and 6.1)
# ---------------------------------------------------------------------------------------

_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
#: Strength rank used by ``policy="strongest"`` (higher is stronger).
_RANK = {"MD5": 1, "SHA-256": 2, "SHA-512-256": 2}


def _available(base: str) -> bool:
    name = _HASHLIB_NAMES[base]
    if name not in hashlib.algorithms_available:
        return False
    try:
        hashlib.new(name, b"")
    except ValueError:  # pragma: no cover - OpenSSL without the digest
        return False
    return True


#: Algorithm names this build supports (``SHA-512-256`` needs an OpenSSL with
#: SHA-512/256), canonical spelling, ``-sess`` variants included.
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    name
    for base in ("SHA-256", "SHA-512-256", "MD5")
    if _available(base)
    for name in (base, base + "-sess")
)
_CANONICAL = {a.lower(): a for a in SUPPORTED_ALGORITHMS}


def _canonical_algorithm(name: str | None) -> str | None:
    """Canonical spelling of a supported algorithm; ``None`` (absent) means MD5."""
    if name is None:
        return "MD5" if "MD5" in SUPPORTED_ALGORITHMS else None
    return _CANONICAL.get(name.strip().lower())


def _base(algorithm: str) -> str:
    return algorithm[:-5] if algorithm.endswith("-sess") else algorithm


def _check_algorithm(algorithm: str) -> str:
    canon = _canonical_algorithm(algorithm) if isinstance(algorithm, str) else None
    if canon is None:
        raise ParameterError(
            f"algorithm must be one of {', '.join(SUPPORTED_ALGORITHMS)}, got {algorithm!r}"
        )
    return canon


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(_HASHLIB_NAMES[_base(algorithm)], text.encode("utf-8", "surrogatepass")).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username ":" realm ":" password)``: the value a server may store instead of passwords.

    Parameters
    ----------
    algorithm : str
        ``"MD5"``, ``"SHA-256"``, ``"SHA-512-256"`` (a ``-sess`` suffix is ignored: the
        stored value is the same).
    username, realm, password : str
        Hashed as UTF-8.

    Returns
    -------
    str
        Lower-case hex.
    """
    return _h(_check_algorithm(algorithm), f"{username}:{realm}:{password}")


def hash_username(algorithm: str, username: str, realm: str) -> str:
    """The ``userhash`` form of a username (RFC 7616 3.4.4): ``H(username ":" realm)``."""
    return _h(_check_algorithm(algorithm), f"{username}:{realm}")


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    method: str,
    digest_uri: str,
    nonce: str,
    password: str | None = None,
    ha1: str | None = None,
    qop: str | None = None,
    nc: int | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 7616 3.4.1; RFC 2069 when ``qop`` is None).

    Parameters
    ----------
    algorithm : str
        One of :data:`SUPPORTED_ALGORITHMS` (case-insensitive).
    username, realm : str
        Unquoted values (the plain username even when ``userhash`` is used).
    method : str
        The request method (``A2 = method ":" digest-uri``).
    digest_uri : str
        The ``uri`` parameter: the Request-URI text in SIP.
    nonce : str
        The server nonce, unquoted.
    password : str, optional
        The password; give this or ``ha1``.
    ha1 : str, optional
        ``H(username ":" realm ":" password)`` in hex (as :func:`compute_ha1`).
    qop : {"auth", None}
        ``"auth"`` for RFC 7616 / RFC 2617; None for the RFC 2069 form.
    nc : int, optional
        Nonce-count, 1..2**32-1; required with ``qop``.
    cnonce : str, optional
        Client nonce; required with ``qop`` and with ``-sess`` algorithms.

    Returns
    -------
    str
        Lower-case hex digest.

    Raises
    ------
    ParameterError
        Unknown algorithm, ``qop`` other than ``"auth"``, missing ``nc``/``cnonce``,
        neither or both of ``password`` and ``ha1``.

    Examples
    --------
    RFC 7616 3.9.1 (MD5):

    >>> digest_response(algorithm="MD5", username="Mufasa", realm="http-auth@example.org",
    ...     password="Circle of Life", method="GET", digest_uri="/dir/index.html",
    ...     nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", qop="auth", nc=1,
    ...     cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    '8ca523f5e9506fed4657c9700eebdbec'
    """
    alg = _check_algorithm(algorithm)
    if (password is None) == (ha1 is None):
        raise ParameterError("give exactly one of password and ha1")
    if qop is not None and qop != "auth":
        raise ParameterError(f"qop must be 'auth' or None (auth-int is not supported), got {qop!r}")
    if qop is not None and (nc is None or cnonce is None):
        raise ParameterError("qop='auth' needs nc and cnonce")
    if nc is not None and (not isinstance(nc, (int, np.integer)) or not 1 <= int(nc) <= 0xFFFFFFFF):
        raise ParameterError(f"nc must be an int in 1..2**32-1, got {nc!r}")
    h1 = ha1.lower() if ha1 is not None else _h(alg, f"{username}:{realm}:{password}")
    if alg.endswith("-sess"):
        if cnonce is None:
            raise ParameterError(f"{alg} needs a cnonce")
        h1 = _h(alg, f"{h1}:{nonce}:{cnonce}")
    h2 = _h(alg, f"{method}:{digest_uri}")
    if qop is None:
        return _h(alg, f"{h1}:{nonce}:{h2}")
    return _h(alg, f"{h1}:{nonce}:{int(nc):08x}:{cnonce}:{qop}:{h2}")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class DigestCredentials:
    """What a user knows.

    Attributes
    ----------
    username : str
        The authentication user name (often the AOR user part, not always).
    password : str
    realm : str or None
        Answer only challenges of this realm; None answers any realm (fine for a lab
        UA talking to one registrar; a UA that may meet several proxies should set it).
    """

    username: str
    password: str = field(repr=False)
    realm: str | None = None

    def __post_init__(self) -> None:
        for name in ("username", "password"):
            v = getattr(self, name)
            if not isinstance(v, str) or _CONTROL_RE.search(v):
                raise ParameterError(f"{name} must be a str without control characters")
        if not self.username:
            raise ParameterError("username must not be empty")
        if self.realm is not None and (not isinstance(self.realm, str) or _CONTROL_RE.search(self.realm)):
            raise ParameterError("realm must be None or a str without control characters")


@dataclass(frozen=True)
class DigestChallenge:
    """One usable ``Digest`` challenge from a 401/407.

    Attributes
    ----------
    realm, nonce : str
        Unquoted.
    algorithm : str
        Canonical name (``"MD5"`` when the challenge had no ``algorithm``).
    qop : tuple of str
        Offered qop values in lower case; ``()`` for an RFC 2069 challenge.
    opaque : str or None
    stale : bool
        The server says the previous nonce expired but the credentials were right.
    userhash : bool
        The server wants the hashed username (RFC 7616 3.4.4).
    proxy : bool
        True for ``Proxy-Authenticate`` (answer with ``Proxy-Authorization``).
    index : int
        Position among the response's challenges (0 = topmost), for tie-breaking.
    """

    realm: str
    nonce: str
    algorithm: str
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    proxy: bool = False
    index: int = 0

    @property
    def credentials_header(self) -> str:
        """``"Proxy-Authorization"`` or ``"Authorization"``."""
        return "Proxy-Authorization" if self.proxy else "Authorization"


def _challenge_from_auth(auth: Auth, *, proxy: bool, index: int) -> DigestChallenge | None:
    if auth.scheme.lower() != "digest":
        return None
    realm, nonce = auth.param("realm"), auth.param("nonce")
    if realm is None or nonce is None or _CONTROL_RE.search(realm + nonce):
        return None
    algorithm = _canonical_algorithm(auth.param("algorithm"))
    if algorithm is None:
        return None
    qop_text = auth.param("qop")
    qop: tuple[str, ...] = ()
    if qop_text is not None:
        qop = tuple(q.strip().lower() for q in qop_text.split(",") if q.strip())
        if "auth" not in qop:
            return None  # only auth-int (or nothing we know) offered
    elif algorithm.endswith("-sess"):
        return None  # -sess needs a cnonce, which RFC 2069 responses cannot carry
    opaque = auth.param("opaque")
    if opaque is not None and _CONTROL_RE.search(opaque):
        return None
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=opaque,
        stale=(auth.param("stale") or "").lower() == "true",
        userhash=(auth.param("userhash") or "").lower() == "true",
        proxy=proxy,
        index=index,
    )


def parse_challenges(response: Response) -> list[DigestChallenge]:
    """The ``Digest`` challenges of a response that this module can answer, in order.

    ``WWW-Authenticate`` fields come first, then ``Proxy-Authenticate`` (a forking proxy
    may put both in one 401/407, RFC 3261 22.3). Challenges that are malformed, of
    another scheme, with an unsupported algorithm, or offering only ``auth-int`` are
    skipped, not raised.

    Parameters
    ----------
    response : Response

    Returns
    -------
    list of DigestChallenge
    """
    out: list[DigestChallenge] = []
    index = 0
    for name, proxy in (("WWW-Authenticate", False), ("Proxy-Authenticate", True)):
        for f in response.headers.fields(name):
            try:
                auth = parse_auth(f.value, name)
            except RemoteProtocolError:
                index += 1
                continue
            ch = _challenge_from_auth(auth, proxy=proxy, index=index)
            index += 1
            if ch is not None:
                out.append(ch)
    return out


def select_challenges(
    challenges: Iterable[DigestChallenge],
    *,
    realm: str | None = None,
    policy: str = "strongest",
) -> list[DigestChallenge]:
    """Pick one challenge per (header kind, realm).

    Parameters
    ----------
    challenges : iterable of DigestChallenge
    realm : str, optional
        Keep only challenges of this realm.
    policy : {"strongest", "topmost"}
        ``"strongest"`` (default): highest-ranked algorithm, ties to the topmost (see
        the module notes on RFC 8760 2.4 and downgrade); ``"topmost"``: the first
        supported, as RFC 8760 2.4 says by default.

    Returns
    -------
    list of DigestChallenge
        In the order of the first challenge of each group.
    """
    if policy not in ("strongest", "topmost"):
        raise ParameterError(f"policy must be 'strongest' or 'topmost', got {policy!r}")
    groups: dict[tuple[bool, str], DigestChallenge] = {}
    for ch in challenges:
        if realm is not None and ch.realm != realm:
            continue
        key = (ch.proxy, ch.realm)
        best = groups.get(key)
        if best is None or (policy == "strongest" and _RANK[_base(ch.algorithm)] > _RANK[_base(best.algorithm)]):
            groups[key] = ch
    return sorted(groups.values(), key=lambda c: c.index)


def _make_cnonce(rng: np.random.Generator | None) -> str:
    if rng is None:
        return secrets.token_hex(16)
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng.bytes(16).hex()


def build_authorization(
    challenge: DigestChallenge,
    credentials: DigestCredentials,
    *,
    method: str,
    digest_uri: str,
    cnonce: str,
    nc: int,
) -> str:
    """One ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``.

    ``username``, ``realm``, ``nonce``, ``uri``, ``response``, ``cnonce`` and ``opaque``
    are quoted (with ``\\`` escapes); ``algorithm``, ``qop`` and ``nc`` are not (RFC 7616
    3.4: a sender MUST NOT quote them). Without ``qop`` in the challenge the RFC 2069
    form is written (no ``qop``, ``nc`` or ``cnonce``).

    Parameters
    ----------
    challenge : DigestChallenge
    credentials : DigestCredentials
    method : str
        Request method.
    digest_uri : str
        The Request-URI text.
    cnonce : str
        Client nonce (non-empty, no control characters).
    nc : int
        Nonce-count for this nonce, starting at 1.

    Returns
    -------
    str
        The header value (``Digest username="...", ...``).
    """
    if not isinstance(cnonce, str) or not cnonce or _CONTROL_RE.search(cnonce):
        raise ParameterError("cnonce must be a non-empty str without control characters")
    qop = "auth" if challenge.qop else None
    alg = challenge.algorithm
    response = digest_response(
        algorithm=alg,
        username=credentials.username,
        realm=challenge.realm,
        password=credentials.password,
        method=method,
        digest_uri=digest_uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc if qop else None,
        cnonce=cnonce if (qop or alg.endswith("-sess")) else None,
    )
    user = hash_username(alg, credentials.username, challenge.realm) if challenge.userhash else credentials.username
    parts = [
        f"username={quote(user)}",
        f"realm={quote(challenge.realm)}",
        f"nonce={quote(challenge.nonce)}",
        f"uri={quote(digest_uri)}",
        f"response={quote(response)}",
        f"algorithm={alg}",
    ]
    if qop:
        parts += [f"cnonce={quote(cnonce)}", f"qop={qop}", f"nc={int(nc):08x}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={quote(challenge.opaque)}")
    if challenge.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


def _copy_request(request: Request, headers: Headers) -> Request:
    return Request(request.method, request.uri, headers, request.body, request.version)


def _bump_cseq(headers: Headers) -> None:
    value = headers.get("CSeq")
    if value is None:
        raise ParameterError("the request has no CSeq header; build it with one before authorizing")
    try:
        cs = parse_cseq(value)
    except RemoteProtocolError as exc:
        raise ParameterError(f"the request's CSeq is malformed ({exc}); fix it before authorizing") from None
    if cs.number + 1 > CSEQ_MAX:
        raise ParameterError("CSeq would pass 2**31-1; start a new Call-ID")
    headers.set("CSeq", f"{cs.number + 1} {cs.method}")


_BRANCH_RE = re.compile(r";[ \t]*branch[ \t]*=[ \t]*[^;, \t]*", re.IGNORECASE)


def _replace_branch(headers: Headers, branch: str) -> Headers:
    out: list[HeaderField] = []
    done = False
    for f in headers:
        if not done and f.key == "via":
            elems = split_list(f.value)
            first = elems[0]
            if _BRANCH_RE.search(first):
                first = _BRANCH_RE.sub(f";branch={branch}", first, count=1)
            else:
                first = f"{first};branch={branch}"
            out.append(HeaderField(f.name, ", ".join([first, *elems[1:]])))
            done = True
        else:
            out.append(f)
    return Headers(out)


def _remove_credentials(headers: Headers, name: str, realm: str) -> Headers:
    out = []
    for f in headers:
        if f.key == name.lower():
            try:
                if parse_auth(f.value, name).param("realm") == realm:
                    continue
            except RemoteProtocolError:
                pass
        out.append(f)
    return Headers(out)


def _add_credentials(
    request: Request,
    chosen: list[DigestChallenge],
    credentials: DigestCredentials,
    cnonce: str,
    ncs: list[int],
    *,
    bump_cseq: bool,
    branch: str | None,
) -> Request:
    headers = request.headers.copy()
    for ch, nc in zip(chosen, ncs):
        headers = _remove_credentials(headers, ch.credentials_header, ch.realm)
        headers.add(
            ch.credentials_header,
            build_authorization(ch, credentials, method=request.method, digest_uri=str(request.uri), cnonce=cnonce, nc=nc),
        )
    if bump_cseq:
        _bump_cseq(headers)
    if branch is not None:
        if not isinstance(branch, str) or not re.fullmatch(r"[A-Za-z0-9\-.!%*_+`'~]+", branch):
            raise ParameterError(f"branch must be a SIP token, got {branch!r}")
        headers = _replace_branch(headers, branch)
    return _copy_request(request, headers)


def _check_challenge_response(response: Response) -> None:
    if not isinstance(response, Response) or response.status_code not in (401, 407):
        raise ParameterError("challenge_response must be a 401 or 407 Response")


def authorize(
    request: Request,
    challenge_response: Response,
    credentials: DigestCredentials,
    *,
    cnonce: str,
    nc: int = 1,
    policy: str = "strongest",
    branch: str | None = None,
) -> Request:
    """The request to resend after a 401/407: credentials added, CSeq incremented.

    One credentials header is added per challenged realm (``Authorization`` for
    ``WWW-Authenticate``, ``Proxy-Authorization`` for ``Proxy-Authenticate``),
    replacing older credentials for the same realm. The CSeq number is incremented
    (RFC 3261 22.2 and 8.1.3.5); the retry is a new transaction, so pass ``branch`` (a
    fresh Via branch, e.g. :func:`~voicelab.sip.transaction.new_branch`) or set it
    yourself.

    Parameters
    ----------
    request : Request
        The request that was challenged.
    challenge_response : Response
        The 401 or 407.
    credentials : DigestCredentials
    cnonce : str
        Client nonce (use :class:`DigestClient` to draw it from a generator).
    nc : int, optional
        Nonce-count for every answered nonce (1 for a fresh challenge).
    policy : {"strongest", "topmost"}
        See :func:`select_challenges`.
    branch : str, optional
        New branch for the topmost Via.

    Returns
    -------
    Request
        A new request; ``request`` is not modified.

    Raises
    ------
    ParameterError
        ``challenge_response`` is not a 401/407, or the request has no valid CSeq.
    RemoteProtocolError
        No challenge in the response can be answered (no Digest challenge with a
        supported algorithm and ``qop=auth`` or no qop, or none for
        ``credentials.realm``).
    """
    _check_challenge_response(challenge_response)
    chosen = select_challenges(parse_challenges(challenge_response), realm=credentials.realm, policy=policy)
    if not chosen:
        raise RemoteProtocolError(
            f"the {challenge_response.status_code} has no Digest challenge we can answer "
            f"(supported: {', '.join(SUPPORTED_ALGORITHMS)}; qop auth; realm {credentials.realm or 'any'})",
            status_code=400,
        )
    return _add_credentials(request, chosen, credentials, cnonce, [nc] * len(chosen), bump_cseq=True, branch=branch)


class DigestClient:
    """Client-side digest state for one set of credentials.

    Keeps the nonce-count of every nonce it answered (incremented per use, RFC 7616
    3.4), the last challenge per realm (for pre-emptive credentials on later requests,
    e.g. REGISTER refreshes) and draws each cnonce from ``rng``.

    Parameters
    ----------
    credentials : DigestCredentials
    rng : numpy.random.Generator, optional
        Source of cnonces; pass a seeded one for reproducible runs. None uses
        :mod:`secrets`.
    policy : {"strongest", "topmost"}
        See :func:`select_challenges`.

    Examples
    --------
    >>> import numpy as np
    >>> client = DigestClient(DigestCredentials("alice", "secret"), rng=np.random.default_rng(1))
    """

    def __init__(
        self,
        credentials: DigestCredentials,
        *,
        rng: np.random.Generator | None = None,
        policy: str = "strongest",
    ) -> None:
        if not isinstance(credentials, DigestCredentials):
            raise ParameterError("credentials must be a DigestCredentials")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ParameterError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
        select_challenges((), policy=policy)  # validates policy
        self.credentials = credentials
        self._rng = rng
        self._policy = policy
        self._nc: dict[str, int] = {}
        self._cached: dict[tuple[bool, str], DigestChallenge] = {}
        # (Call-ID, CSeq) of the last requests built by authorize(), to spot refusals
        self._answered: deque[tuple[str | None, str | None]] = deque(maxlen=64)

    def _next_nc(self, nonce: str) -> int:
        n = self._nc.get(nonce, 0) + 1
        if n > 0xFFFFFFFF:
            raise ParameterError("nonce-count exhausted for this nonce; wait for a new challenge")
        self._nc[nonce] = n
        return n

    @staticmethod
    def _key(request: Request) -> tuple[str | None, str | None]:
        return (request.headers.get("Call-ID"), request.headers.get("CSeq"))

    def _rejected(self, request: Request, ch: DigestChallenge) -> bool:
        """Whether the server refused credentials we computed for a fresh challenge.

        Only a request this client built in :meth:`authorize` counts: pre-emptive
        credentials (:meth:`preauthorize`) may carry a nonce the server no longer knows
        (e.g. it restarted with a new secret), which deserves one fresh attempt.
        """
        return not ch.stale and self._key(request) in self._answered

    def authorize(self, request: Request, challenge_response: Response, *, branch: str | None = None) -> Request | None:
        """The retried request after a 401/407, or None when retrying is pointless.

        None means: no challenge can be answered, or the challenged request is one this
        method built and the server did not say ``stale=true``, i.e. the credentials
        were refused (ask the user; do not loop). A ``stale=true`` challenge is
        answered with the new nonce without asking, and so is a challenge to
        pre-emptive credentials (the server may have forgotten its nonces).

        Parameters
        ----------
        request : Request
            The request that got the 401/407.
        challenge_response : Response
        branch : str, optional
            New topmost Via branch (see :func:`authorize`).

        Returns
        -------
        Request or None
        """
        _check_challenge_response(challenge_response)
        chosen = select_challenges(
            parse_challenges(challenge_response), realm=self.credentials.realm, policy=self._policy
        )
        if not chosen or any(self._rejected(request, ch) for ch in chosen):
            return None
        for ch in chosen:
            self._cached[(ch.proxy, ch.realm)] = ch
        ncs = [self._next_nc(ch.nonce) for ch in chosen]
        out = _add_credentials(
            request, chosen, self.credentials, _make_cnonce(self._rng), ncs, bump_cseq=True, branch=branch
        )
        self._answered.append(self._key(out))
        return out

    def preauthorize(self, request: Request) -> Request:
        """Add credentials for every realm seen before (next nonce-count, same nonce).

        For a new request (its own CSeq and branch) to a server that challenged us
        before; the CSeq is not touched. A request returned unchanged when nothing is
        cached.
        """
        chosen = sorted(self._cached.values(), key=lambda c: c.index)
        if not chosen:
            return request
        ncs = [self._next_nc(ch.nonce) for ch in chosen]
        return _add_credentials(
            request, chosen, self.credentials, _make_cnonce(self._rng), ncs, bump_cseq=False, branch=None
        )

    def nonce_count(self, nonce: str) -> int:
        """The last nonce-count sent with ``nonce`` (0 if never)."""
        return self._nc.get(nonce, 0)


# ---------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestHA1:
    """Stored ``H(username:realm:password)`` values, one per base algorithm.

    A credentials lookup may return this instead of a password, so the server never
    holds plain passwords.

    Attributes
    ----------
    values : mapping of str to str
        Canonical base algorithm (``"MD5"``, ``"SHA-256"``, ``"SHA-512-256"``) to hex.
    """

    values: Mapping[str, str]

    @classmethod
    def from_password(
        cls, username: str, realm: str, password: str, *, algorithms: Iterable[str] = ("SHA-256", "MD5")
    ) -> DigestHA1:
        """Compute the stored values for ``algorithms``."""
        return cls({_base(_check_algorithm(a)): compute_ha1(a, username, realm, password) for a in algorithms})

    def get(self, algorithm: str) -> str | None:
        """The HA1 for ``algorithm`` (``-sess`` uses the base one), or None."""
        return self.values.get(_base(algorithm))


@dataclass(frozen=True)
class AuthResult:
    """Outcome of :meth:`DigestAuthenticator.verify`.

    Attributes
    ----------
    ok : bool
        The credentials are valid for this request.
    status_code : int
        200 when ok; 401 (407 for a proxy authenticator) when a fresh challenge is the
        answer; 400 for malformed credentials or a ``uri`` that does not match the
        Request-URI.
    reason : str
        One line saying why (for logs; do not send it to the peer verbatim if user
        enumeration matters).
    username : str or None
        The authenticated (ok) or claimed user.
    algorithm : str or None
        The algorithm the credentials used.
    stale : bool
        Challenge again with ``stale=true``: the digest was right but the nonce expired
        (or was forgotten), so the client can retry without asking the user.
    """

    ok: bool
    status_code: int
    reason: str
    username: str | None = None
    algorithm: str | None = None
    stale: bool = False


PasswordLookup = Callable[[str], "str | DigestHA1 | None"] | Mapping[str, "str | DigestHA1"]

_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_\-]{38}")
_NONCE_PAYLOAD = struct.Struct(">qI")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")


def _answer(request: Request, status: int, reason: str, to_tag: str) -> Response:
    try:
        return build_response(request, status, reason, to_tag=to_tag)
    except LocalProtocolError as exc:  # the peer's request lacks what a response copies
        raise RemoteProtocolError(f"cannot answer this request: {exc}", status_code=400) from None


def _check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, (int, float, np.integer, np.floating)) or not math.isfinite(now):
        raise ParameterError(f"now must be a finite number of seconds, got {now!r}")
    return float(now)


class DigestAuthenticator:
    """Server side of SIP digest: challenges, nonces, verification.

    Parameters
    ----------
    realm : str
        The protection realm (RFC 3261 22.1: usually the domain).
    credentials_lookup : callable or mapping
        ``user -> password`` (str) or :class:`DigestHA1`, or None for an unknown user.
        A mapping is used with ``.get``.
    secret : bytes
        Key for the nonce HMAC, at least 16 bytes. Nonces issued under one secret are
        valid on any authenticator with the same secret and realm.
    algorithms : tuple of str, optional
        Offered algorithms, in the order of the challenges. Default ``("SHA-256",
        "MD5")``: RFC 8760 clients pick SHA-256, old ones still find MD5.
    nonce_ttl_s : float, optional
        Nonce lifetime (s). Default 300.
    proxy : bool, optional
        True for a proxy: 407 with ``Proxy-Authenticate``, checks
        ``Proxy-Authorization``. Default False (401, ``WWW-Authenticate``).
    max_nonces : int, optional
        Size of the replay table (nonces remembered with their highest nonce-count).
        Default 4096.
    clock_skew_s : float, optional
        How far in the future a nonce timestamp may be and still be accepted (s).
        Default 1.

    Examples
    --------
    >>> auth = DigestAuthenticator("example.com", {"alice": "secret"}, secret=b"k" * 32)
    >>> auth.challenge_values(0.0)[0].split(", ")[0]
    'Digest realm="example.com"'
    """

    def __init__(
        self,
        realm: str,
        credentials_lookup: PasswordLookup,
        *,
        secret: bytes,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        nonce_ttl_s: float = 300.0,
        proxy: bool = False,
        max_nonces: int = 4096,
        clock_skew_s: float = 1.0,
    ) -> None:
        if not isinstance(realm, str) or not realm or _CONTROL_RE.search(realm):
            raise ParameterError("realm must be a non-empty str without control characters")
        if isinstance(credentials_lookup, Mapping):
            mapping = credentials_lookup
            self._lookup: Callable[[str], object] = lambda user: mapping.get(user)
        elif callable(credentials_lookup):
            self._lookup = credentials_lookup
        else:
            raise ParameterError("credentials_lookup must be a callable user -> password/DigestHA1, or a mapping")
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise ParameterError("secret must be bytes, at least 16 of them (e.g. secrets.token_bytes(32))")
        algs = tuple(_check_algorithm(a) for a in algorithms) if not isinstance(algorithms, str) else ()
        if not algs or len(set(algs)) != len(algs):
            raise ParameterError(f"algorithms must be a non-empty tuple of distinct names from {SUPPORTED_ALGORITHMS}")
        for name, v in (("nonce_ttl_s", nonce_ttl_s), ("clock_skew_s", clock_skew_s)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ParameterError(f"{name} must be a finite number of seconds >= 0, got {v!r}")
        if nonce_ttl_s <= 0:
            raise ParameterError(f"nonce_ttl_s must be > 0, got {nonce_ttl_s!r}")
        if isinstance(max_nonces, bool) or not isinstance(max_nonces, int) or max_nonces < 1:
            raise ParameterError(f"max_nonces must be an int >= 1, got {max_nonces!r}")
        self.realm = realm
        self.algorithms = algs
        self.nonce_ttl_s = float(nonce_ttl_s)
        self.proxy = bool(proxy)
        self.max_nonces = max_nonces
        self.clock_skew_s = float(clock_skew_s)
        self._secret = bytes(secret)
        self._seq = 0
        # nonce -> ((ts_ms, seq), highest nc), in least-recently-used order
        self._seen: dict[str, tuple[tuple[int, int], int]] = {}
        # highest (ts_ms, seq) evicted from _seen: older unknown nonces are answered stale
        self._floor: tuple[int, int] | None = None
        self.opaque = self._hmac(b"voicelab-digest-opaque\0" + realm.encode()).hex()[:24]

    # -- names ---------------------------------------------------------------------------
    @property
    def status_code(self) -> int:
        """401, or 407 for a proxy."""
        return 407 if self.proxy else 401

    @property
    def challenge_header(self) -> str:
        """``WWW-Authenticate`` or ``Proxy-Authenticate``."""
        return "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"

    @property
    def credentials_header(self) -> str:
        """``Authorization`` or ``Proxy-Authorization``."""
        return "Proxy-Authorization" if self.proxy else "Authorization"

    # -- nonces --------------------------------------------------------------------------
    def _hmac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return self._hmac(b"voicelab-digest-nonce\0" + self.realm.encode() + b"\0" + payload)[:16]

    def new_nonce(self, now: float) -> str:
        """A fresh nonce stamped with ``now`` (s); unique per call."""
        ts_ms = int(math.floor(_check_now(now) * 1000.0))
        if not -(2**63) <= ts_ms < 2**63:
            raise ParameterError(f"now is out of range for a nonce timestamp: {now!r}")
        payload = _NONCE_PAYLOAD.pack(ts_ms, self._seq)
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode("ascii").rstrip("=")

    def _nonce_key(self, nonce: str) -> tuple[int, int] | None:
        """(timestamp ms, sequence) of an authentic nonce, None for anything we did not issue."""
        if _NONCE_RE.fullmatch(nonce) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "==")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_PAYLOAD.size + 16:
            return None
        payload, mac = raw[: _NONCE_PAYLOAD.size], raw[_NONCE_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        return _NONCE_PAYLOAD.unpack(payload)

    # -- challenges ----------------------------------------------------------------------
    def challenge_values(self, now: float, *, stale: bool = False) -> list[str]:
        """The challenge header values, one per algorithm in :attr:`algorithms` order.

        Every value carries the same fresh nonce, ``qop="auth"`` and the opaque
        value; ``stale=true`` when asked.
        """
        nonce = self.new_nonce(now)
        tail = ', stale=true' if stale else ""
        return [
            f"Digest realm={quote(self.realm)}, nonce={quote(nonce)}, opaque={quote(self.opaque)}, "
            f'algorithm={alg}, qop="auth"{tail}'
            for alg in self.algorithms
        ]

    def _to_tag(self, request: Request) -> str:
        call_id = request.headers.get("Call-ID") or ""
        from_value = request.headers.get("From") or ""
        return self._hmac(f"to-tag\0{call_id}\0{from_value}".encode("utf-8", "surrogatepass")).hex()[:16]

    def challenge(self, request: Request, now: float, *, stale: bool = False, to_tag: str | None = None) -> Response:
        """The 401 (407 for a proxy) challenging ``request``.

        Parameters
        ----------
        request : Request
        now : float
            Current time (s); stamps the nonce.
        stale : bool, optional
            Add ``stale=true`` (the client's nonce expired; it may retry silently).
        to_tag : str, optional
            To tag for the response; by default derived from Call-ID and From with the
            secret, so a retransmitted request gets the same tag.

        Returns
        -------
        Response

        Raises
        ------
        RemoteProtocolError
            400 when the request lacks the headers a response copies (Via, From, To,
            Call-ID, CSeq).
        """
        reason = "Proxy Authentication Required" if self.proxy else "Unauthorized"
        resp = _answer(request, self.status_code, reason, to_tag or self._to_tag(request))
        for value in self.challenge_values(now, stale=stale):
            resp.headers.add(self.challenge_header, value)
        return resp

    def reject(self, request: Request, result: AuthResult, now: float) -> Response:
        """The response for a failed :class:`AuthResult`: 400, or a (stale) challenge."""
        if result.ok:
            raise ParameterError("reject() needs a failed AuthResult; this one is ok")
        if result.status_code == 400:
            return _answer(request, 400, "Bad Request", self._to_tag(request))
        return self.challenge(request, now, stale=result.stale)

    # -- verification --------------------------------------------------------------------
    def _fail(
        self,
        reason: str,
        *,
        status: int | None = None,
        user: str | None = None,
        alg: str | None = None,
        stale: bool = False,
    ) -> AuthResult:
        return AuthResult(False, status or self.status_code, reason, user, alg, stale)

    def _ha1(self, user: str, algorithm: str) -> str | None:
        stored = self._lookup(user)
        if isinstance(stored, str):
            return compute_ha1(algorithm, user, self.realm, stored)
        if isinstance(stored, DigestHA1):
            return stored.get(algorithm)
        return None

    def verify(self, request: Request, now: float) -> AuthResult:
        """Check the request's credentials for this realm.

        Checks, in order: a ``Digest`` credentials header for :attr:`realm`; its
        grammar and required parameters (400); ``qop=auth`` with ``cnonce`` and an
        8-hex-digit ``nc`` (else 400 / 401); the algorithm was offered (401); the
        ``uri`` equals the Request-URI (400, RFC 7616 3.4.6); the nonce is ours (HMAC)
        and not from the future (401); the user is known (401); the ``response``
        (constant-time compare, 401); the nonce is not expired (401 ``stale``); the
        nonce-count is higher than any seen with this nonce (401). The replay table is
        updated only for fully valid credentials.

        Parameters
        ----------
        request : Request
        now : float
            Current time (s), the clock the nonces were stamped with.

        Returns
        -------
        AuthResult
            Never raises for anything in ``request``.
        """
        now = _check_now(now)
        name = self.credentials_header
        fields = request.headers.fields(name)
        if not fields:
            return self._fail(f"no {name} header")
        mine: list[Auth] = []
        for f in fields:
            try:
                a = parse_auth(f.value, name)
            except RemoteProtocolError as exc:
                return self._fail(f"malformed {name}: {exc}", status=400)
            if a.scheme.lower() == "digest" and a.param("realm") == self.realm:
                mine.append(a)
        if not mine:
            return self._fail(f"no Digest credentials for realm {self.realm!r}")
        cred = mine[0]
        keys = [k.lower() for k, _ in cred.params]
        if len(set(keys)) != len(keys):
            return self._fail(f"{name} repeats a parameter", status=400)
        missing = [k for k in _REQUIRED if cred.param(k) is None]
        if missing:
            return self._fail(f"{name} lacks {', '.join(missing)}", status=400)
        user = cred.param("username") or ""
        nonce = cred.param("nonce") or ""
        digest_uri = cred.param("uri") or ""
        received = cred.param("response") or ""
        qop = cred.param("qop")
        if qop is None:
            return self._fail("credentials without qop (RFC 2069) are not accepted: no replay protection", user=user)
        if qop.lower() != "auth":
            return self._fail(f"qop {qop[:20]!r} was not offered (only auth)", user=user)
        nc_text, cnonce = cred.param("nc"), cred.param("cnonce")
        if nc_text is None or _NC_RE.fullmatch(nc_text) is None:
            return self._fail("nc must be 8 hex digits with qop=auth", status=400, user=user)
        if not cnonce:
            return self._fail("cnonce is required with qop=auth", status=400, user=user)
        nc = int(nc_text, 16)
        if nc == 0:
            return self._fail("nc must start at 00000001", status=400, user=user)
        algorithm = _canonical_algorithm(cred.param("algorithm"))
        if algorithm is None or algorithm not in self.algorithms:
            return self._fail(f"algorithm {cred.param('algorithm')!r} was not offered", user=user)
        if (cred.param("userhash") or "false").lower() != "false":
            return self._fail("userhash was not offered", user=user, alg=algorithm)
        opaque = cred.param("opaque")
        if opaque is not None and not hmac.compare_digest(opaque.encode("utf-8", "surrogatepass"), self.opaque.encode()):
            return self._fail("opaque does not match the challenge", user=user, alg=algorithm)
        if not self._uri_matches(digest_uri, request):
            return self._fail(
                "digest uri does not match the Request-URI (RFC 7616 3.4.6)", status=400, user=user, alg=algorithm
            )
        key = self._nonce_key(nonce)
        if key is None or key[0] > (now + self.clock_skew_s) * 1000.0:
            return self._fail("nonce was not issued here", user=user, alg=algorithm)
        ha1 = self._ha1(user, algorithm)
        if ha1 is None:
            return self._fail("unknown user (or no stored HA1 for this algorithm)", user=user, alg=algorithm)
        expected = digest_response(
            algorithm=algorithm, username=user, realm=self.realm, ha1=ha1, method=request.method,
            digest_uri=digest_uri, nonce=nonce, qop="auth", nc=nc, cnonce=cnonce,
        )
        if not hmac.compare_digest(expected.encode(), received.lower().encode("utf-8", "surrogatepass")):
            return self._fail("wrong response digest (wrong password?)", user=user, alg=algorithm)
        if (now * 1000.0 - key[0]) > self.nonce_ttl_s * 1000.0:
            return self._fail("nonce expired", user=user, alg=algorithm, stale=True)
        seen = self._seen.get(nonce)
        if seen is None and self._floor is not None and key <= self._floor:
            return self._fail("nonce no longer remembered", user=user, alg=algorithm, stale=True)
        if seen is not None and nc <= seen[1]:
            return self._fail(f"replayed nonce-count {nc_text} (last {seen[1]:08x})", user=user, alg=algorithm)
        self._remember(nonce, key, nc, now)
        return AuthResult(True, 200, "ok", user, algorithm, False)

    def _uri_matches(self, digest_uri: str, request: Request) -> bool:
        if digest_uri == str(request.uri):
            return True
        try:
            return uri_equal(parse_uri(digest_uri), request.uri)
        except RemoteProtocolError:
            return False

    def _remember(self, nonce: str, key: tuple[int, int], nc: int, now: float) -> None:
        self._seen.pop(nonce, None)
        self._seen[nonce] = (key, nc)
        if len(self._seen) <= self.max_nonces:
            return
        # drop expired entries first: an expired nonce is answered stale anyway
        limit = now * 1000.0 - self.nonce_ttl_s * 1000.0
        for k in [k for k, (t, _) in self._seen.items() if t[0] < limit]:
            del self._seen[k]
        while len(self._seen) > self.max_nonces:
            old = next(iter(self._seen))
            t, _ = self._seen.pop(old)
            self._floor = t if self._floor is None else max(self._floor, t)

    def __repr__(self) -> str:
        return f"<DigestAuthenticator realm={self.realm!r} algorithms={self.algorithms} proxy={self.proxy}>"
