"""A SIP registrar (RFC 3261 section 10.3). Sans-IO: requests and ``now`` in, responses out.

:meth:`Registrar.handle` runs the steps of RFC 3261 10.3 on one REGISTER and returns
the response to send; :meth:`Registrar.lookup` gives the live bindings of an
address-of-record (what a proxy or the lab's call router forks to);
:meth:`Registrar.expire` drops bindings whose time is up and :meth:`Registrar.next_expiry`
tells an asyncio adapter when to call it. Each binding records the transport source
address the REGISTER came from (``source``), so NAT experiments can send to where the
UA really is rather than to its (private) Contact.

Steps (RFC 3261 10.3), and the status when one fails:

====  ======================================================================  ======
step  check                                                                   status
====  ======================================================================  ======
1     Request-URI host is one of ``domains`` (we do not proxy REGISTER)       404
2     ``Require`` lists no extension (none is supported here)                 420
3     credentials, when an ``authenticator`` is configured                    401/400
4     the authenticated user may register this AOR (``authorize``)            403
5     To is a SIP/SIPS URI with a user part in one of ``domains``             404
6     ``Contact: *`` only alone and with ``Expires: 0``                       400
7     every interval of 0 or at least ``min_expires`` (or an hour)            423 +
                                                                              Min-Expires
7     same Call-ID with a CSeq not above the binding's: update aborted        500
8     200 with every current binding and its remaining ``expires``            200
====  ======================================================================  ======

Notes:

- The address-of-record is canonicalized as RFC 3261 10.3 step 5 says: URI parameters
  and port dropped, escapes decoded, host lower-cased; ``sips:`` is folded into
  ``sip:`` so a UA registered over TLS is found by ``lookup("sip:...")``.
- Intervals above ``max_expires`` are shortened to it (10.3 step 7 allows it); a
  Contact without ``expires`` takes the ``Expires`` header, else ``default_expires``.
- The request is processed atomically: every binding change is computed first and
  applied only when none fails (10.3 step 7).
- RFC 3261 says only that an out-of-order update "fails"; like JAIN-SIP's reference
  registrar we answer 500, with the reason phrase saying why.
- A malformed header the steps need is answered with the status the parser names
  (400); a request too broken to answer at all (no Via, From, To, Call-ID or CSeq)
  raises :class:`~voicelab.errors.RemoteProtocolError`, as there is nothing to copy
  into a response.

Why our own: registrars in Python (e.g. in SIP test tools) bundle sockets and a clock;
the lab needs one that runs on a virtual clock inside the in-process network.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable

from ..errors import LocalProtocolError, ParameterError, RemoteProtocolError
from .abnf import unescape
from .auth import AuthResult, DigestAuthenticator
from .headers import NameAddr, parse_token_list
from .message import Request, Response
from .transaction import build_response
from .uri import SipUri, Uri, parse_uri, uri_equal

__all__ = ["Binding", "Registrar", "canonical_aor"]

#: RFC 3261 10.3 step 7: a too-brief interval may be refused only below one hour.
_ONE_HOUR_S = 3600
_REASONS = {400: "Bad Request", 413: "Request Entity Too Large", 505: "Version Not Supported", 513: "Message Too Large"}


@dataclass(frozen=True)
class Binding:
    """One contact bound to an address-of-record.

    Attributes
    ----------
    aor : str
        Canonical address-of-record (``sip:user@domain``).
    contact : NameAddr
        The Contact value as registered (URI and its header parameters).
    expires_at : float
        Time (s, same clock as ``now``) when the binding lapses.
    call_id : str
        Call-ID of the REGISTER that last refreshed it.
    cseq : int
        Its CSeq number.
    source : tuple of (str, int), or None
        Transport address the REGISTER came from, as given to :meth:`Registrar.handle`.
    registered_at : float
        ``now`` of the last refresh (s).
    """

    aor: str
    contact: NameAddr
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, int] | None = None
    registered_at: float = 0.0

    @property
    def uri(self) -> Uri:
        """The contact URI."""
        return self.contact.uri

    @property
    def q(self) -> float:
        """The ``q`` preference (0..1), 1.0 when absent."""
        q = self.contact.param("q")
        try:
            return float(q) if q else 1.0
        except ValueError:  # parse_contact already checked qvalue; defensive
            return 1.0

    def remaining(self, now: float) -> int:
        """Whole seconds left (0 when expired)."""
        return max(0, int(math.floor(self.expires_at - now + 1e-9)))

    def contact_value(self, now: float) -> str:
        """The Contact value for a 200 response: ``<uri>;params;expires=N``."""
        params = "".join(
            f";{k}" if v is None else f";{k}={v}" for k, v in self.contact.params if k.lower() != "expires"
        )
        return f"<{self.contact.uri}>{params};expires={self.remaining(now)}"


def canonical_aor(uri: str | Uri) -> str:
    """The canonical address-of-record of a SIP/SIPS URI: ``sip:user@host``.

    Parameters
    ----------
    uri : str or SipUri
        An AOR (``sips:Alice@Example.COM;transport=tls`` gives ``sip:Alice@example.com``).

    Returns
    -------
    str

    Raises
    ------
    ParameterError
        Not a SIP/SIPS URI with a user part.
    """
    if isinstance(uri, str):
        try:
            uri = parse_uri(uri)
        except RemoteProtocolError as exc:
            raise ParameterError(f"not a valid AOR URI: {exc}") from None
    if not isinstance(uri, SipUri) or uri.user is None:
        raise ParameterError(f"an AOR must be a sip:/sips: URI with a user part, got {str(uri)[:60]!r}")
    return f"sip:{unescape(uri.user)}@{uri.host.lower()}"


def _same_user(username: str, aor: str) -> bool:
    """Default authorization: the auth username is the AOR's user part (or the AOR)."""
    user_at_host = aor[4:]
    return username in (user_at_host.rsplit("@", 1)[0], user_at_host)


def _check_seconds(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParameterError(f"{name} must be an int number of seconds >= 0, got {value!r}")
    return value


def _check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ParameterError(f"now must be a finite number of seconds, got {now!r}")
    return float(now)


class _Failure(Exception):
    """Internal: stop processing and answer with this response."""

    def __init__(self, status: int, reason: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


class Registrar:
    """Location service fed by REGISTER (RFC 3261 10.3), on an injected clock.

    Parameters
    ----------
    domains : str or iterable of str
        Domains (host names or IP addresses) this registrar is responsible for.
    authenticator : DigestAuthenticator, optional
        When given, every REGISTER must carry valid credentials (401 otherwise). Use a
        non-proxy authenticator (401/``WWW-Authenticate``).
    authorize : callable, optional
        ``(username, aor) -> bool``: may this authenticated user register this AOR?
        Default: the username equals the AOR's user part, or ``user@domain``.
    min_expires : int, optional
        Shortest interval accepted (s); shorter non-zero ones get 423 with Min-Expires.
        Default 60.
    max_expires : int, optional
        Longer intervals are shortened to this (s). Default 3600.
    default_expires : int, optional
        Interval when neither the Contact nor the request says (s). Default 3600.

    Examples
    --------
    >>> reg = Registrar(domains="example.com")
    >>> reg.lookup("sip:alice@example.com", now=0.0)
    []
    """

    def __init__(
        self,
        *,
        domains: str | Iterable[str],
        authenticator: DigestAuthenticator | None = None,
        authorize: Callable[[str, str], bool] | None = None,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
    ) -> None:
        ds = [domains] if isinstance(domains, str) else list(domains)
        if not ds or not all(isinstance(d, str) and d for d in ds):
            raise ParameterError("domains must be a non-empty str or a list of non-empty str")
        self.domains = frozenset(d.lower().strip("[]") for d in ds)
        if authenticator is not None and not isinstance(authenticator, DigestAuthenticator):
            raise ParameterError("authenticator must be a DigestAuthenticator or None")
        if authenticator is not None and authenticator.proxy:
            raise ParameterError("a registrar challenges with 401: give a DigestAuthenticator with proxy=False")
        if authorize is not None and not callable(authorize):
            raise ParameterError("authorize must be a callable (username, aor) -> bool")
        self.min_expires = _check_seconds("min_expires", min_expires)
        self.max_expires = _check_seconds("max_expires", max_expires)
        self.default_expires = _check_seconds("default_expires", default_expires)
        if not 0 < self.min_expires <= self.max_expires:
            raise ParameterError(f"need 0 < min_expires <= max_expires, got {min_expires} and {max_expires}")
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ParameterError("default_expires must lie between min_expires and max_expires")
        self.authenticator = authenticator
        self._authorize = authorize or _same_user
        self._bindings: dict[str, list[Binding]] = {}

    # -- queries -------------------------------------------------------------------------
    def lookup(self, aor: str | Uri, now: float) -> list[Binding]:
        """Live bindings of an AOR, highest ``q`` first, then most recently refreshed.

        Parameters
        ----------
        aor : str or SipUri
            Any form of the AOR (it is canonicalized).
        now : float
            Current time (s); expired bindings are skipped (not removed).

        Returns
        -------
        list of Binding
        """
        now = _check_now(now)
        key = canonical_aor(aor)
        live = [b for b in self._bindings.get(key, []) if b.expires_at > now]
        return sorted(live, key=lambda b: (-b.q, -b.registered_at))

    def aors(self) -> list[str]:
        """Every AOR with at least one stored binding (expired ones included until :meth:`expire`)."""
        return sorted(k for k, v in self._bindings.items() if v)

    def expire(self, now: float) -> list[Binding]:
        """Drop every binding whose time is up; return the dropped ones."""
        now = _check_now(now)
        dropped: list[Binding] = []
        for aor in list(self._bindings):
            keep = []
            for b in self._bindings[aor]:
                (keep if b.expires_at > now else dropped).append(b)
            if keep:
                self._bindings[aor] = keep
            else:
                del self._bindings[aor]
        return dropped

    def next_expiry(self) -> float | None:
        """The earliest ``expires_at`` of any binding (s), or None: when to call :meth:`expire`."""
        times = [b.expires_at for bs in self._bindings.values() for b in bs]
        return min(times) if times else None

    # -- REGISTER ------------------------------------------------------------------------
    def _to_tag(self, request: Request) -> str:
        text = f"{request.headers.get('Call-ID')}\0{request.headers.get('From')}\0voicelab-registrar"
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def _respond(self, request: Request, status: int, reason: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
        try:
            resp = build_response(request, status, reason, to_tag=self._to_tag(request))
        except LocalProtocolError as exc:  # the peer's request lacks what a response copies
            raise RemoteProtocolError(f"cannot answer this request: {exc}", status_code=400) from None
        for name, value in extra:
            resp.headers.add(name, value)
        return resp

    def handle(self, request: Request, now: float, *, source: tuple[str, int] | None = None) -> Response:
        """Process one REGISTER and return the response to send.

        Parameters
        ----------
        request : Request
            A REGISTER (other methods get 405 with ``Allow: REGISTER``).
        now : float
            Current time (s).
        source : tuple of (str, int), optional
            The transport address the request came from, stored in each binding.

        Returns
        -------
        Response
            200 with the AOR's bindings, or the failure status of the table above.

        Raises
        ------
        RemoteProtocolError
            Only when the request lacks what any response must copy (Via, From, To,
            Call-ID, CSeq).
        """
        now = _check_now(now)
        if not isinstance(request, Request):
            raise ParameterError("request must be a Request")
        if request.method != "REGISTER":
            return self._respond(request, 405, "Method Not Allowed", [("Allow", "REGISTER")])
        try:
            return self._register(request, now, source)
        except _ChallengeNeeded as c:
            assert self.authenticator is not None
            return self.authenticator.reject(request, c.result, now)
        except _Failure as f:
            return self._respond(request, f.status, f.reason, f.extra)
        except RemoteProtocolError as exc:
            return self._respond(request, exc.status_code, _REASONS.get(exc.status_code, "Bad Request"))

    def _in_domain(self, host: str) -> bool:
        return host.lower().strip("[]") in self.domains

    def _register(self, request: Request, now: float, source: tuple[str, int] | None) -> Response:
        # 1. Request-URI names a domain we are responsible for
        ruri = request.uri
        if not isinstance(ruri, SipUri) or not self._in_domain(ruri.host):
            raise _Failure(404, "Not Found")
        # 2. Require: no extensions supported
        required = [t for f in request.headers.fields("Require") for t in parse_token_list(f.value, "Require")]
        if required:
            raise _Failure(420, "Bad Extension", (("Unsupported", ", ".join(required)),))
        # 3. authentication
        username = None
        if self.authenticator is not None:
            result = self.authenticator.verify(request, now)
            if not result.ok:
                raise _ChallengeNeeded(result)
            username = result.username
        # 5. the AOR (step 4 needs it)
        to = request.to.uri
        if not isinstance(to, SipUri):
            raise _Failure(400, "To must be a SIP or SIPS URI")
        if to.user is None or not self._in_domain(to.host):
            raise _Failure(404, "Not Found")
        aor = canonical_aor(to)
        # 4. authorization
        if username is not None and not self._authorize(username, aor):
            raise _Failure(403, "Forbidden")
        call_id = request.call_id
        cseq = request.cseq.number
        contacts = request.contact
        header_expires = request.expires
        current = list(self._bindings.get(aor, []))
        # 6. wildcard
        if contacts == "*":
            if header_expires != 0:
                raise _Failure(400, "Contact * needs Expires: 0")
            for b in current:
                if b.call_id == call_id and cseq <= b.cseq:
                    raise _Failure(500, "Out-of-order REGISTER (CSeq not above the binding's)")
            self._bindings.pop(aor, None)
            return self._ok(request, aor, now)
        assert isinstance(contacts, list)
        # 7. each contact, computed first, applied atomically
        plan: list[tuple[NameAddr, int]] = []
        for c in contacts:
            e_text = c.param("expires")
            expires = int(e_text) if e_text else (header_expires if header_expires is not None else self.default_expires)
            if 0 < expires < self.min_expires and expires < _ONE_HOUR_S:
                raise _Failure(423, "Interval Too Brief", (("Min-Expires", str(self.min_expires)),))
            plan.append((c, min(expires, self.max_expires)))
        new = list(current)
        for c, expires in plan:
            idx = next((i for i, b in enumerate(new) if uri_equal(b.contact.uri, c.uri)), None)
            if idx is not None:
                old = new[idx]
                if old.call_id == call_id and cseq <= old.cseq:
                    raise _Failure(500, "Out-of-order REGISTER (CSeq not above the binding's)")
                del new[idx]
            if expires > 0:
                new.append(Binding(aor, c, now + expires, call_id, cseq, source, now))
        if new:
            self._bindings[aor] = new
        else:
            self._bindings.pop(aor, None)
        # 8. 200 with all current bindings
        return self._ok(request, aor, now)

    def _ok(self, request: Request, aor: str, now: float) -> Response:
        extra = [("Contact", b.contact_value(now)) for b in self._bindings.get(aor, []) if b.expires_at > now]
        return self._respond(request, 200, "OK", extra)

    def __len__(self) -> int:
        return sum(len(v) for v in self._bindings.values())

    def __repr__(self) -> str:
        return f"<Registrar domains={sorted(self.domains)} aors={len(self._bindings)} bindings={len(self)}>"


class _ChallengeNeeded(_Failure):
    """Internal: authentication failed; the authenticator builds the answer."""

    def __init__(self, result: AuthResult) -> None:
        super().__init__(result.status_code, result.reason)
        self.result = result
