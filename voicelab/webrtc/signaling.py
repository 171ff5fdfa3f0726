"""WebRTC signaling over a WebSocket, admitted by short-lived tokens (aiohttp).

A browser (the page in ``static/``) or the lab's Python caller
(:class:`SignalingClient`) reaches an agent like this::

    POST /token                      -> {"token": "v1....", "expires_in": 60}
    GET  /ws?token=v1....  (upgrade) -> WebSocket, JSON text messages:
      client -> server  {"type": "offer", "sdp": "..."}
      server -> client  {"type": "answer", "sdp": "..."}
      both ways         {"type": "candidate", "candidate": {"candidate": "candidate:...",
                          "sdpMid": "0", "sdpMLineIndex": 0} | null}   (null: end of candidates)
      both ways         {"type": "bye"}
      both ways         {"type": "error", "code": "...", "message": "..."}
    GET  /                           -> the browser client page (client.html, client.js)

One token opens one WebSocket (tokens are single-use and expire after
``token_ttl_s``); one WebSocket carries one call (one offer). The server answers an
offer with whatever the ``on_offer(session, offer_sdp)`` hook returns: that is where the
agent plugs its aiortc peer in. The hook is awaited in the session's reader, so
messages that follow the offer (trickled candidates, bye) are handled after the
answer was sent, in order.

What is refused, and how
------------------------
==========================================  ==========================================
input                                       outcome
==========================================  ==========================================
no ``token`` query parameter                HTTP 401 before the upgrade
malformed / expired / already used token    HTTP 401 before the upgrade
forged token (bad signature)                HTTP 403 before the upgrade
``Origin`` header not allowed               HTTP 403 (``/ws`` and ``/token``)
not a WebSocket upgrade on ``/ws``          HTTP 400
message over ``max_message_bytes``          WebSocket closed with 1009 (message too big)
more than ``max_messages_per_s``            ``{"type":"error","code":"rate_limited"}``,
                                            then close with 1008 (policy violation)
malformed JSON (not JSON, not an object)    ``{"type":"error","code":"malformed"}``,
                                            then close with 1007 (invalid payload)
binary frame                                the same error, then close with 1003
                                            (unsupported data)
unknown ``type``, bad fields, message out   ``{"type":"error", ...}`` reply; the
of order                                    connection stays usable
==========================================  ==========================================

Requests without an ``Origin`` header (non-browser clients such as the Python caller)
pass the origin check; browsers always send one on WebSocket upgrades and POSTs from
scripts. Allowed origins are ``http://127.0.0.1``, ``http://localhost`` (any port, as
an entry without a port matches every port), the server's own origin, and any given.

Every socket is opened through the :class:`~voicelab.net.iface.NetworkInterface`:
the server via ``iface.create_server(runner.server, ...)`` exactly as
:class:`~voicelab.sip.transport.WsTransport`, the client via an aiohttp connector whose
connection step calls ``iface.create_connection``. Times in the per-session event logs
(:attr:`SignalingSession.events`) are ``iface.time()`` (the event loop's clock), the
clock the rest of the call's timeline uses.

This module is an asyncio adapter (it imports :mod:`asyncio`); the token logic is
sans-IO in :mod:`voicelab.webrtc.tokens`, and the rate limiter :class:`TokenBucket`
takes ``now`` as an argument.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Awaitable, Callable, Iterable, Mapping, Union

import numpy as np

from ..errors import LocalProtocolError, ParameterError, RemoteProtocolError
from ..net.iface import NetworkInterface
from .tokens import DEFAULT_CLOCK_SKEW_S, MAX_TTL_S, _check_secret, issue_token, verify_token

__all__ = [
    "SignalingServer",
    "SignalingSession",
    "SignalingClient",
    "SignalingStats",
    "SessionEvent",
    "TokenBucket",
    "MESSAGE_TYPES",
    "DEFAULT_ALLOWED_ORIGINS",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_GOING_AWAY",
]

log = logging.getLogger(__name__)

#: The ``type`` values of the JSON protocol.
MESSAGE_TYPES = ("offer", "answer", "candidate", "bye", "error")
#: Origins always allowed (scheme + host; any port).
DEFAULT_ALLOWED_ORIGINS = ("http://127.0.0.1", "http://localhost")
#: WebSocket close codes used here (RFC 6455 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009

_STATIC = "static"
_STATIC_FILES = {
    "/": ("client.html", "text/html"),
    "/client.html": ("client.html", "text/html"),
    "/client.js": ("client.js", "text/javascript"),
}

Addr = tuple[str, int]
OnOffer = Callable[["SignalingSession", str], Awaitable[str]]


# ---------------------------------------------------------------------------------------
# Small sans-IO pieces
# ---------------------------------------------------------------------------------------


class TokenBucket:
    """A token-bucket rate limiter driven by ``now`` (no clock read here).

    Parameters
    ----------
    rate_per_s : float
        Tokens added per second (> 0): the sustained message rate allowed.
    burst : float, optional
        Bucket size: messages allowed back to back after a quiet period. Default
        ``rate_per_s`` (one second's worth).
    now : float, optional
        Time (s) the bucket starts full.

    Examples
    --------
    >>> b = TokenBucket(2.0, now=0.0)
    >>> [b.allow(0.0), b.allow(0.0), b.allow(0.0), b.allow(0.5)]
    [True, True, False, True]
    """

    def __init__(self, rate_per_s: float, *, burst: float | None = None, now: float = 0.0) -> None:
        if isinstance(rate_per_s, bool) or not isinstance(rate_per_s, (int, float)) or not (
            math.isfinite(rate_per_s) and rate_per_s > 0
        ):
            raise ParameterError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
        burst = float(rate_per_s) if burst is None else burst
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) or not (math.isfinite(burst) and burst >= 1):
            raise ParameterError(f"burst must be a finite number >= 1, got {burst!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._level = self.burst
        self._last = float(now)

    def allow(self, now: float) -> bool:
        """Take one token if there is one; True when the event is within the rate."""
        if now > self._last:
            self._level = min(self.burst, self._level + (now - self._last) * self.rate_per_s)
            self._last = now
        if self._level >= 1.0:
            self._level -= 1.0
            return True
        return False


@dataclass(frozen=True)
class SessionEvent:
    """One entry of a session's event log.

    Attributes
    ----------
    time : float
        ``iface.time()`` when it happened (s, the event loop's clock).
    kind : str
        ``connected``, ``offer_received``, ``answer_sent``, ``candidate_received``,
        ``candidate_sent``, ``bye_received``, ``bye_sent``, ``error_received``,
        ``error_sent``, ``closed`` (server side); ``token_received``, ``connected``,
        ``offer_sent``, ``answer_received``, ... (client side).
    detail : dict
        Small facts about it (``sdp_bytes``, ``code``, ``candidate``, ...).
    """

    time: float
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class SignalingStats:
    """Counters kept by a :class:`SignalingServer` (all start at 0).

    Attributes
    ----------
    tokens_issued : int
        Successful ``POST /token``.
    refused_missing, refused_malformed, refused_forged, refused_expired, refused_reused : int
        WebSocket upgrades refused for that token problem (``refused_expired`` also
        counts tokens not yet valid).
    refused_origin : int
        Requests refused for their ``Origin`` (token endpoint and WebSocket).
    refused_other : int
        Other refusals (not an upgrade, server shutting down).
    sessions_opened, sessions_closed : int
        WebSocket sessions.
    messages_received : int
        WebSocket data frames received (including refused ones).
    errors_sent : int
        ``{"type": "error"}`` replies.
    oversized : int
        Sessions closed with 1009.
    rate_limited : int
        Sessions closed with 1008 for exceeding the message rate.
    malformed_closed : int
        Sessions closed with 1007/1003 for a message that is not a JSON object.
    offers, answers : int
        Offers handed to ``on_offer``; answers sent.
    callback_errors : int
        Exceptions raised by ``on_offer``, ``on_candidate`` or ``on_bye`` (logged).
    """

    tokens_issued: int = 0
    refused_missing: int = 0
    refused_malformed: int = 0
    refused_forged: int = 0
    refused_expired: int = 0
    refused_reused: int = 0
    refused_origin: int = 0
    refused_other: int = 0
    sessions_opened: int = 0
    sessions_closed: int = 0
    messages_received: int = 0
    errors_sent: int = 0
    oversized: int = 0
    rate_limited: int = 0
    malformed_closed: int = 0
    offers: int = 0
    answers: int = 0
    callback_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for results tables)."""
        return asdict(self)


class _BadMessage(Exception):
    """Internal: a message that gets an error reply (code, message), and with
    ``close_code`` the socket is closed after it (the peer does not speak the protocol)."""

    def __init__(self, code: str, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def _check_candidate(value: Any) -> dict[str, Any] | None:
    """Validate an RTCIceCandidateInit-shaped dict (or None = end of candidates)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _BadMessage("bad_message", "'candidate' must be an object {candidate, sdpMid, sdpMLineIndex} or null")
    cand = value.get("candidate")
    mid = value.get("sdpMid")
    index = value.get("sdpMLineIndex")
    if not isinstance(cand, str) or len(cand) > 1024:
        raise _BadMessage("bad_message", "'candidate.candidate' must be a string (RFC 8839 candidate-attribute)")
    if mid is not None and not isinstance(mid, str):
        raise _BadMessage("bad_message", "'candidate.sdpMid' must be a string or null")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024):
        raise _BadMessage("bad_message", "'candidate.sdpMLineIndex' must be a small non-negative integer or null")
    out: dict[str, Any] = {"candidate": cand, "sdpMid": mid, "sdpMLineIndex": index}
    ufrag = value.get("usernameFragment")
    if isinstance(ufrag, str):
        out["usernameFragment"] = ufrag
    return out


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


# ---------------------------------------------------------------------------------------
# Origins
# ---------------------------------------------------------------------------------------


def _parse_origin(text: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port or None)`` of an origin string, None if it is not one."""
    from yarl import URL

    if not isinstance(text, str) or text == "null" or len(text) > 512:
        return None
    try:
        url = URL(text)
    except (ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/") or url.query_string:
        return None
    port = url.explicit_port
    return (url.scheme, url.host.lower(), port)


def _origin_allowed(origin: str, allowed: Iterable[tuple[str, str, int | None]]) -> bool:
    got = _parse_origin(origin)
    if got is None:
        return False
    scheme, host, port = got
    if port is None:
        port = 443 if scheme == "https" else 80
    for a_scheme, a_host, a_port in allowed:
        if a_scheme == scheme and a_host == host and (a_port is None or a_port == port):
            return True
    return False


# ---------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------


class SignalingSession:
    """One WebSocket, one call: what ``on_offer`` receives.

    Attributes
    ----------
    id : str
        Short random hex id (from the server's ``rng``).
    remote : tuple (host, port)
        The client's address as the network interface reports it.
    subject : str
        The token's subject.
    events : list of SessionEvent
        The session's log, times on the loop clock (``iface.time()``).
    remote_candidates : list of dict or None
        Every trickled candidate received, in order (None = end of candidates), also
        those that arrived before :attr:`on_candidate` was set.
    on_candidate : callable or None
        ``on_candidate(session, candidate)`` for each trickled candidate from the
        client (``candidate`` a dict ``{candidate, sdpMid, sdpMLineIndex}`` or None at
        the end). May be a coroutine function. Set it in ``on_offer``.
    on_bye : callable or None
        ``on_bye(session)``, called once when the call ends for any reason: the
        client sent ``bye``, its socket closed or broke, the server sent ``bye`` or
        shut down (:attr:`end_reason` says which). May be a coroutine function. Free
        the peer connection here.
    end_reason : str or None
        ``"bye_received"``, ``"bye_sent"``, ``"socket_closed"``, ``"message_too_big"``,
        ``"rate_limited"`` or ``"server_closed"`` once the call ended.
    """

    def __init__(self, server: "SignalingServer", ws: Any, *, session_id: str, remote: Addr, subject: str) -> None:
        self._server = server
        self._ws = ws
        self.id = session_id
        self.remote = remote
        self.subject = subject
        self.events: list[SessionEvent] = []
        self.remote_candidates: list[dict[str, Any] | None] = []
        self.on_candidate: Callable[["SignalingSession", dict[str, Any] | None], Any] | None = None
        self.on_bye: Callable[["SignalingSession"], Any] | None = None
        self.end_reason: str | None = None
        self.offer_sdp: str | None = None
        self.answer_sdp: str | None = None
        self._state = "open"  # open -> offered -> answered; any -> ended
        self._close_code_sent: int | None = None
        self._offer_task: asyncio.Future[Any] | None = None
        self._offer_abandoned = False
        self._ended = False
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- public ----------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"open"`` (no offer yet), ``"offered"``, ``"answered"`` or ``"ended"``."""
        return "ended" if self._ended else self._state

    @property
    def close_code(self) -> int | None:
        """WebSocket close code once closed, else None.

        The code the server closed with when it closed first (1000 after ``bye``, 1001
        at shutdown, 1008 rate limit, 1009 message too big), else the client's.
        """
        if self._close_code_sent is not None:
            return int(self._close_code_sent)
        code = self._ws.close_code
        return None if code is None else int(code)

    def log(self, kind: str, **detail: Any) -> SessionEvent:
        """Append an event stamped with ``iface.time()`` (the agent may add its own)."""
        ev = SessionEvent(self._server.iface.time(), str(kind), detail)
        self.events.append(ev)
        return ev

    def first(self, kind: str) -> float | None:
        """Time (s, loop clock) of the first event of ``kind``, None if there is none."""
        for ev in self.events:
            if ev.kind == kind:
                return ev.time
        return None

    async def send(self, message: Mapping[str, Any]) -> None:
        """Push one protocol message to the client.

        Parameters
        ----------
        message : dict
            ``{"type": one of MESSAGE_TYPES, ...}``; JSON-serialisable.

        Raises
        ------
        ParameterError
            Not a dict with a known ``type``, or not JSON-serialisable.
        LocalProtocolError
            The WebSocket is closed.
        """
        if not isinstance(message, Mapping) or message.get("type") not in MESSAGE_TYPES:
            raise ParameterError(f"message must be a dict with 'type' in {MESSAGE_TYPES}, got {message!r:.80}")
        try:
            text = json.dumps(dict(message), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"message is not JSON-serialisable ({exc}); send str/int/float/list/dict only") from None
        if self._ws.closed:
            raise LocalProtocolError(f"signaling session {self.id} is closed; the client is gone")
        try:
            await self._ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:  # closed under us
            raise LocalProtocolError(f"signaling session {self.id} is closed ({exc}); the client is gone") from None
        kind = message["type"]
        if kind == "candidate":
            cand = message.get("candidate")
            self.log("candidate_sent", candidate=cand.get("candidate") if isinstance(cand, Mapping) else None)
        elif kind == "error":
            self._server.stats.errors_sent += 1
            self.log("error_sent", code=message.get("code"))
        elif kind == "answer":
            self.log("answer_sent", sdp_bytes=len(str(message.get("sdp", ""))))
        else:
            self.log(f"{kind}_sent")

    async def send_candidate(self, candidate: Mapping[str, Any] | None) -> None:
        """Trickle one local candidate to the client (None = end of candidates)."""
        if candidate is not None and not isinstance(candidate, Mapping):
            raise ParameterError(f"candidate must be a dict {{candidate, sdpMid, sdpMLineIndex}} or None, got {candidate!r:.80}")
        await self.send({"type": "candidate", "candidate": None if candidate is None else dict(candidate)})

    async def bye(self) -> None:
        """Hang up from the server side: send ``bye`` and close the WebSocket (1000)."""
        if not self._ws.closed:
            try:
                await self.send({"type": "bye"})
            except LocalProtocolError:
                pass
        await self._end("bye_sent")
        await self._close(CLOSE_NORMAL, "bye")

    async def wait_closed(self) -> None:
        """Wait until the session's reader has finished."""
        await asyncio.shield(self._done)

    def __repr__(self) -> str:
        return f"<SignalingSession {self.id} remote={self.remote} state={self.state}>"

    # -- internals -------------------------------------------------------------------
    async def _error(self, code: str, message: str) -> None:
        try:
            await self.send({"type": "error", "code": code, "message": message})
        except LocalProtocolError:
            pass

    async def _close(self, code: int, reason: str) -> None:
        if not self._ws.closed:
            self._close_code_sent = code
            try:
                await self._ws.close(code=code, message=reason.encode("utf-8")[:120])
            except (ConnectionError, RuntimeError):
                pass

    def _abandon_offer(self) -> None:
        """Cancel a pending ``on_offer`` (server shutdown)."""
        if self._offer_task is not None and not self._offer_task.done():
            self._offer_abandoned = True
            self._offer_task.cancel()

    async def _end(self, reason: str) -> None:
        """Mark the call over and run ``on_bye`` once."""
        if self._ended:
            return
        self._ended = True
        self.end_reason = reason
        if self.on_bye is not None:
            try:
                await _call(self.on_bye, self)
            except Exception:  # noqa: BLE001 - a broken hook must not break the server
                self._server.stats.callback_errors += 1
                log.exception("signaling: on_bye of session %s raised", self.id)

    async def _handle_text(self, text: str) -> bool:
        """Handle one JSON message; False when the session should stop reading."""
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise _BadMessage("malformed", "message is not valid JSON; send one JSON object per text frame; closing (1007)",
                              close_code=CLOSE_INVALID_PAYLOAD) from None
        if not isinstance(msg, dict):
            raise _BadMessage("malformed", "message must be a JSON object with a 'type'; closing (1007)",
                              close_code=CLOSE_INVALID_PAYLOAD)
        kind = msg.get("type")
        if kind not in MESSAGE_TYPES:
            raise _BadMessage("unknown_type", f"unknown message type {kind!r:.40}; expected one of {list(MESSAGE_TYPES)}")
        if kind == "offer":
            await self._on_offer(msg)
        elif kind == "candidate":
            if "candidate" not in msg:
                raise _BadMessage("bad_message", "a candidate message needs a 'candidate' field (object or null)")
            cand = _check_candidate(msg["candidate"])
            if self._state == "open":
                raise _BadMessage("unexpected", "send the offer before trickling candidates")
            self.remote_candidates.append(cand)
            self.log("candidate_received", candidate=None if cand is None else cand["candidate"])
            if self.on_candidate is not None:
                try:
                    await _call(self.on_candidate, self, cand)
                except Exception:  # noqa: BLE001
                    self._server.stats.callback_errors += 1
                    log.exception("signaling: on_candidate of session %s raised", self.id)
        elif kind == "bye":
            self.log("bye_received")
            await self._end("bye_received")
            await self._close(CLOSE_NORMAL, "bye")
            return False
        elif kind == "error":
            self.log("error_received", code=str(msg.get("code"))[:40], message=str(msg.get("message"))[:200])
        else:  # answer
            raise _BadMessage("unexpected", "the server sends answers; clients send offers")
        return True

    async def _on_offer(self, msg: dict[str, Any]) -> None:
        sdp = msg.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            raise _BadMessage("bad_message", "an offer needs a non-empty 'sdp' string")
        if self._state != "open":
            raise _BadMessage("unexpected", "this session already has an offer; open a new WebSocket for a new call")
        self._state = "offered"
        self.offer_sdp = sdp
        self.log("offer_received", sdp_bytes=len(sdp))
        server = self._server
        server.stats.offers += 1
        # The hook runs in its own task so that a server shutdown can abandon it.
        self._offer_task = task = asyncio.ensure_future(_call(server.on_offer, self, sdp))
        try:
            answer = await task
        except asyncio.CancelledError:
            if self._offer_abandoned:  # cancelled by SignalingServer.close(), not us
                return
            raise
        except Exception as exc:  # noqa: BLE001 - the agent's failure is reported to the client
            server.stats.callback_errors += 1
            log.warning("signaling: on_offer of session %s raised %s: %s", self.id, type(exc).__name__, exc)
            self._state = "open"
            raise _BadMessage("offer_failed", f"the agent could not answer the offer: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            self._offer_task = None
        if not isinstance(answer, str) or not answer.strip():
            server.stats.callback_errors += 1
            self._state = "open"
            raise _BadMessage("offer_failed", "the agent returned no answer SDP")
        if self._ws.closed:
            return
        self.answer_sdp = answer
        try:
            await self.send({"type": "answer", "sdp": answer})
        except LocalProtocolError:
            return
        self._state = "answered"
        server.stats.answers += 1

    async def _run(self) -> None:
        """Read until the socket closes (runs inside aiohttp's request handler)."""
        import aiohttp

        server = self._server
        bucket = TokenBucket(server.max_messages_per_s, now=server.iface.time())
        reason = "socket_closed"
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.ERROR:
                    # aiohttp has closed the socket already, with the error's code
                    code = getattr(msg.data, "code", None)
                    self._close_code_sent = code if isinstance(code, int) else None
                    if code == CLOSE_MESSAGE_TOO_BIG:
                        server.stats.oversized += 1
                        reason = "message_too_big"
                        log.info("signaling: session %s sent a message over %d bytes; closed with 1009",
                                 self.id, server.max_message_bytes)
                    break
                server.stats.messages_received += 1
                if not bucket.allow(server.iface.time()):
                    server.stats.rate_limited += 1
                    reason = "rate_limited"
                    await self._error(
                        "rate_limited",
                        f"more than {server.max_messages_per_s:g} messages per second; closing (1008)",
                    )
                    await self._close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
                    break
                try:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise _BadMessage("malformed", "binary frames are not part of the protocol; send JSON text; closing (1003)",
                                          close_code=CLOSE_UNSUPPORTED_DATA)
                    if not await self._handle_text(msg.data):
                        break
                except _BadMessage as bad:
                    await self._error(bad.code, bad.message)
                    if bad.close_code is not None:
                        server.stats.malformed_closed += 1
                        reason = "malformed"
                        await self._close(bad.close_code, bad.code)
                        break
        finally:
            if server._closing and reason == "socket_closed":
                reason = "server_closed"
            self.log("closed", code=self.close_code, reason=reason)
            try:
                await asyncio.shield(self._end(reason))
            finally:
                if not self._done.done():
                    self._done.set_result(None)


class SignalingServer:
    """The WebSocket signaling server with token endpoint and browser page.

    Parameters
    ----------
    iface : NetworkInterface
        Opens the listening socket.
    secret : bytes
        HMAC key for tokens (at least 16 bytes; ``os.urandom(32)``).
    on_offer : callable
        ``await on_offer(session, offer_sdp) -> answer_sdp`` (str). Raising (any
        exception) sends ``{"type": "error", "code": "offer_failed"}``; the session
        stays open for another offer. :meth:`close` cancels a hook still running.
    allowed_origins : iterable of str, optional
        Origins allowed besides :data:`DEFAULT_ALLOWED_ORIGINS` and the server's own,
        e.g. ``["https://lab.example:8443"]``; an entry without a port matches any port.
    max_message_bytes : int, optional
        Largest WebSocket message (bytes, >= 1024); larger closes with 1009.
        Default 64 KiB (an SDP offer is 1-6 KiB).
    max_messages_per_s : float, optional
        Sustained message rate per session (burst of one second's worth); over it the
        session gets an error and is closed with 1008. Default 50.
    token_ttl_s : float, optional
        Lifetime of issued tokens (s). Default 60.
    rng : numpy.random.Generator, optional
        Source of token nonces and session ids; default a fresh
        ``numpy.random.default_rng()``. (Token security rests on ``secret``, not on
        the nonces.)

    Examples
    --------
    >>> async def main():                                      # doctest: +SKIP
    ...     async def on_offer(session, sdp):
    ...         return await agent.answer(sdp)
    ...     server = SignalingServer(LoopbackInterface(), secret=os.urandom(32), on_offer=on_offer)
    ...     await server.start()
    ...     print("open", server.url)
    """

    def __init__(
        self,
        iface: NetworkInterface,
        *,
        secret: bytes,
        on_offer: OnOffer,
        allowed_origins: Iterable[str] = (),
        max_message_bytes: int = 64 * 1024,
        max_messages_per_s: float = 50,
        token_ttl_s: float = 60,
        rng: np.random.Generator | None = None,
    ) -> None:
        if not isinstance(iface, NetworkInterface):
            raise ParameterError(
                f"iface must be a voicelab.net.iface.NetworkInterface (e.g. LoopbackInterface()), got {type(iface).__name__}"
            )
        self.secret = _check_secret(secret)
        if not callable(on_offer):
            raise ParameterError(f"on_offer must be an async callable (session, offer_sdp) -> answer_sdp, got {on_offer!r:.60}")
        if isinstance(allowed_origins, str):
            allowed_origins = (allowed_origins,)
        origins = []
        for o in (*DEFAULT_ALLOWED_ORIGINS, *allowed_origins):
            parsed = _parse_origin(o)
            if parsed is None:
                raise ParameterError(f"allowed origin {o!r:.80} is not 'http(s)://host[:port]' (no path)")
            origins.append(parsed)
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int) or not 1024 <= max_message_bytes <= 2**24:
            raise ParameterError(f"max_message_bytes must be an int in 1024..16777216, got {max_message_bytes!r}")
        if (
            isinstance(max_messages_per_s, bool)
            or not isinstance(max_messages_per_s, (int, float))
            or not (math.isfinite(max_messages_per_s) and max_messages_per_s >= 1)
        ):
            raise ParameterError(f"max_messages_per_s must be a finite number >= 1, got {max_messages_per_s!r}")
        if (
            isinstance(token_ttl_s, bool)
            or not isinstance(token_ttl_s, (int, float))
            or not (math.isfinite(token_ttl_s) and 0 < token_ttl_s <= MAX_TTL_S)
        ):
            raise ParameterError(f"token_ttl_s must be in (0, {MAX_TTL_S:g}] seconds, got {token_ttl_s!r}")
        if rng is None:
            rng = np.random.default_rng()
        elif not isinstance(rng, np.random.Generator):
            raise ParameterError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
        self.iface = iface
        self.on_offer = on_offer
        self.allowed_origins = tuple(origins)
        self.max_message_bytes = max_message_bytes
        self.max_messages_per_s = float(max_messages_per_s)
        self.token_ttl_s = float(token_ttl_s)
        self.rng = rng
        self.stats = SignalingStats()
        self.sessions: dict[str, SignalingSession] = {}
        self._used_nonces: dict[bytes, float] = {}
        self._runner: Any = None
        self._server: Any = None
        self._local_addr: Addr | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------
    @property
    def local_addr(self) -> Addr | None:
        """``(host, port)`` the server listens on, None before :meth:`start`."""
        return self._local_addr

    @property
    def url(self) -> str:
        """Base URL, e.g. ``"http://127.0.0.1:43615"`` (the page is at ``url + "/"``).

        Raises
        ------
        LocalProtocolError
            Before :meth:`start`.
        """
        if self._local_addr is None:
            raise LocalProtocolError("SignalingServer has no URL before 'await server.start()'")
        host, port = self._local_addr
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def ws_url(self) -> str:
        """WebSocket URL without token, e.g. ``"ws://127.0.0.1:43615/ws"``."""
        return "ws" + self.url[len("http"):] + "/ws"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Addr:
        """Listen (through ``iface.create_server``); return the bound ``(host, port)``.

        Parameters
        ----------
        host : str, optional
            Default ``"127.0.0.1"``.
        port : int, optional
            0 (default) picks a free port.
        """
        from aiohttp import web

        if self._closing:
            raise LocalProtocolError("SignalingServer is closed; create a new one")
        if self._runner is not None:
            raise LocalProtocolError(f"SignalingServer already listens on {self.url}")
        app = web.Application()
        app.router.add_post("/token", self._handle_token)
        app.router.add_get("/ws", self._handle_ws)
        for path in _STATIC_FILES:
            app.router.add_get(path, self._handle_static)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            # runner.server is aiohttp's protocol factory: the interface opens the socket.
            self._server = await self.iface.create_server(runner.server, host, port)
        except BaseException:
            await runner.cleanup()
            self._runner = None
            raise
        name = self._server.sockets[0].getsockname()
        self._local_addr = (str(name[0]), int(name[1]))
        host_, port_ = self._local_addr
        own = _parse_origin(self.url)
        if own is not None:
            self.allowed_origins = (*self.allowed_origins, own)
        log.info("signaling server listening on %s:%d", host_, port_)
        return self._local_addr

    async def close(self) -> None:
        """Stop listening, end every session (close 1001, ``on_bye`` runs), free everything."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        sessions = list(self.sessions.values())
        for s in sessions:
            s._abandon_offer()
        for s in sessions:
            await s._end("server_closed")
        await asyncio.gather(*(s._close(CLOSE_GOING_AWAY, "server shutting down") for s in sessions), return_exceptions=True)
        if sessions:
            await asyncio.wait([s._done for s in sessions], timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> "SignalingServer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        where = self.url if self._local_addr else "not started"
        return f"<SignalingServer {where} sessions={len(self.sessions)}>"

    # -- token and origin checks -----------------------------------------------------
    def issue(self, subject: str) -> str:
        """Issue a token now (what ``POST /token`` does), e.g. for an in-process caller."""
        token = issue_token(
            self.secret, subject=subject, now=self.iface.time(), ttl_s=self.token_ttl_s, nonce=self.rng.bytes(16)
        )
        self.stats.tokens_issued += 1
        return token

    def _admit(self, token: str | None) -> Any:
        """Verify and consume a token; raise RemoteProtocolError (counted) if refused."""
        if not token:
            self.stats.refused_missing += 1
            raise RemoteProtocolError("missing token: pass ?token=... from POST /token", status_code=401)
        now = self.iface.time()
        try:
            claims = verify_token(self.secret, token, now=now)
        except RemoteProtocolError as exc:
            msg = str(exc)
            if msg.startswith("forged"):
                self.stats.refused_forged += 1
            elif msg.startswith(("expired", "token not yet")):
                self.stats.refused_expired += 1
            else:
                self.stats.refused_malformed += 1
            raise
        for nonce in [n for n, exp in self._used_nonces.items() if exp < now]:
            del self._used_nonces[nonce]
        if claims.nonce in self._used_nonces:
            self.stats.refused_reused += 1
            raise RemoteProtocolError("reused token: each token opens one WebSocket; request a new one", status_code=401)
        # Keep the nonce until the token could no longer pass verify_token (expiry + skew).
        self._used_nonces[claims.nonce] = claims.expires_at + DEFAULT_CLOCK_SKEW_S
        return claims

    def _origin_ok(self, request: Any) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if _origin_allowed(origin, self.allowed_origins):
            return True
        self.stats.refused_origin += 1
        log.warning("signaling: refused request from origin %r", origin[:100])
        return False

    @staticmethod
    def _refuse(status: int, code: str, message: str) -> Any:
        from aiohttp import web

        headers = {"Cache-Control": "no-store"}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="voicelab", error="invalid_token"'
        return web.json_response({"type": "error", "code": code, "message": message}, status=status, headers=headers)

    # -- handlers --------------------------------------------------------------------
    async def _handle_token(self, request: Any) -> Any:
        from aiohttp import web

        if not self._origin_ok(request):
            return self._refuse(403, "bad_origin", "this origin may not request tokens")
        if self._closing:
            self.stats.refused_other += 1
            return self._refuse(503, "shutting_down", "the signaling server is shutting down")
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        subject = str(peer[0]) if peer else "unknown"
        token = self.issue(subject)
        return web.json_response(
            {"token": token, "expires_in": self.token_ttl_s}, headers={"Cache-Control": "no-store"}
        )

    async def _handle_static(self, request: Any) -> Any:
        from aiohttp import web

        name, ctype = _STATIC_FILES[request.path]
        try:
            body = resources.files(__package__).joinpath(_STATIC, name).read_bytes()
        except (FileNotFoundError, OSError):
            return web.Response(status=404, text=f"{name} is missing from the installed package\n")
        return web.Response(
            body=body,
            content_type=ctype,
            charset="utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    async def _handle_ws(self, request: Any) -> Any:
        from aiohttp import web

        # No permessage-deflate (signaling messages are small; no decompression bombs);
        # wait at most 2 s for the client's half of a close handshake.
        ws = web.WebSocketResponse(max_msg_size=self.max_message_bytes, autoclose=True, compress=False, timeout=2.0)
        if not ws.can_prepare(request).ok:
            self.stats.refused_other += 1
            return self._refuse(400, "not_websocket", "GET /ws expects a WebSocket upgrade")
        if not self._origin_ok(request):
            return self._refuse(403, "bad_origin", "this origin may not open a signaling WebSocket")
        if self._closing:
            self.stats.refused_other += 1
            return self._refuse(503, "shutting_down", "the signaling server is shutting down")
        try:
            claims = self._admit(request.query.get("token"))
        except RemoteProtocolError as exc:
            kind = str(exc).split(":", 1)[0].replace(" ", "_")
            log.info("signaling: refused WebSocket: %s", exc)
            return self._refuse(exc.status_code, kind, str(exc))
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        remote = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        session = SignalingSession(self, ws, session_id=self.rng.bytes(6).hex(), remote=remote, subject=claims.subject)
        self.sessions[session.id] = session
        self.stats.sessions_opened += 1
        session.log("connected", remote=f"{remote[0]}:{remote[1]}")
        try:
            await session._run()
        finally:
            self.sessions.pop(session.id, None)
            self.stats.sessions_closed += 1
        return ws


# ---------------------------------------------------------------------------------------
# Client (the lab's Python caller, tests)
# ---------------------------------------------------------------------------------------


class SignalingClient:
    """Talk to a :class:`SignalingServer` from Python, through a network interface.

    Parameters
    ----------
    iface : NetworkInterface
        Opens the TCP connections.
    url : str
        The server's base URL (:attr:`SignalingServer.url`).
    origin : str, optional
        ``Origin`` header to send (browsers always send one; default none).
    max_message_bytes : int, optional
        Largest message accepted from the server (bytes).

    Attributes
    ----------
    events : list of SessionEvent
        ``token_received``, ``connected``, ``offer_sent``, ``answer_received``,
        ``candidate_received``, ``bye_sent``, ``closed``; times are ``iface.time()``.
    remote_candidates : list
        Candidates the server trickled (dicts, None = end).
    """

    def __init__(
        self, iface: NetworkInterface, url: str, *, origin: str | None = None, max_message_bytes: int = 64 * 1024
    ) -> None:
        if not isinstance(iface, NetworkInterface):
            raise ParameterError(
                f"iface must be a voicelab.net.iface.NetworkInterface (e.g. LoopbackInterface()), got {type(iface).__name__}"
            )
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ParameterError(f"url must be the server's base URL such as 'http://127.0.0.1:8080', got {url!r:.80}")
        self.iface = iface
        self.url = url.rstrip("/")
        self.origin = origin
        self.max_message_bytes = int(max_message_bytes)
        self.events: list[SessionEvent] = []
        self.remote_candidates: list[dict[str, Any] | None] = []
        self._session: Any = None
        self._ws: Any = None
        self._backlog: list[dict[str, Any]] = []
        self._server_close_code: int | None = None

    def _log(self, kind: str, **detail: Any) -> None:
        self.events.append(SessionEvent(self.iface.time(), kind, detail))

    def _http(self) -> Any:
        import aiohttp

        from ..net.iface import http_connector  # one connector seam for all aiohttp clients

        if self._session is None:
            self._session = aiohttp.ClientSession(connector=http_connector(self.iface))
        return self._session

    def _headers(self) -> dict[str, str]:
        return {"Origin": self.origin} if self.origin is not None else {}

    @property
    def close_code(self) -> int | None:
        """The code the server closed the WebSocket with (from its close frame), else
        aiohttp's code for the closed socket (1006 if it broke), None while open."""
        if self._server_close_code is not None:
            return int(self._server_close_code)
        code = None if self._ws is None else self._ws.close_code
        return None if code is None else int(code)

    @property
    def closed(self) -> bool:
        """True when no WebSocket is open."""
        return self._ws is None or self._ws.closed

    async def fetch_token(self) -> str:
        """``POST /token``; return the token.

        Raises
        ------
        RemoteProtocolError
            The server refused (``status_code`` is its HTTP status).
        """
        async with self._http().post(self.url + "/token", headers=self._headers()) as resp:
            if resp.status != 200:
                raise RemoteProtocolError(
                    f"token endpoint {self.url}/token answered HTTP {resp.status}: {(await resp.text())[:200]}",
                    status_code=resp.status,
                )
            body = await resp.json()
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise RemoteProtocolError(f"token endpoint {self.url}/token answered without a token", status_code=502)
        self._log("token_received")
        return token

    async def connect(self, token: str | None = None) -> None:
        """Open the WebSocket (fetching a token first unless one is given).

        Raises
        ------
        RemoteProtocolError
            The upgrade was refused; ``status_code`` is the HTTP status (401, 403, ...).
        """
        import aiohttp

        if self._ws is not None:
            raise LocalProtocolError("SignalingClient is already connected; use a new client for a new call")
        if token is None:
            token = await self.fetch_token()
        ws_url = "ws" + self.url[len("http"):] + "/ws"
        try:
            self._ws = await self._http().ws_connect(
                ws_url, params={"token": token}, headers=self._headers(), max_msg_size=self.max_message_bytes
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise RemoteProtocolError(
                f"signaling WebSocket {ws_url} refused with HTTP {exc.status}: {exc.message}", status_code=exc.status or 400
            ) from None
        self._log("connected")

    def _need_ws(self) -> Any:
        if self._ws is None:
            raise LocalProtocolError("SignalingClient is not connected; call 'await client.connect()' first")
        return self._ws

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send one protocol message (a dict with ``type``)."""
        if not isinstance(message, Mapping) or message.get("type") not in MESSAGE_TYPES:
            raise ParameterError(f"message must be a dict with 'type' in {MESSAGE_TYPES}, got {message!r:.80}")
        await self.send_raw(json.dumps(dict(message), separators=(",", ":")))
        kind = message["type"]
        self._log(f"{kind}_sent")

    async def send_raw(self, data: Union[str, bytes]) -> None:
        """Send one frame as is (text for str, binary for bytes): for tests of bad input."""
        ws = self._need_ws()
        if ws.closed:
            raise LocalProtocolError("the signaling WebSocket is closed")
        if isinstance(data, str):
            await ws.send_str(data)
        else:
            await ws.send_bytes(bytes(data))

    async def receive(self, *, timeout: float | None = None) -> dict[str, Any] | None:
        """Next message from the server as a dict; None once the socket is closed.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; :class:`asyncio.TimeoutError` when it passes.
        """
        import aiohttp

        if self._backlog:
            return self._backlog.pop(0)
        ws = self._need_ws()
        while True:
            msg = await ws.receive(timeout=timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    raise RemoteProtocolError("signaling server sent a frame that is not JSON") from None
                if not isinstance(data, dict):
                    raise RemoteProtocolError("signaling server sent JSON that is not an object")
                if data.get("type") == "candidate":
                    self.remote_candidates.append(data.get("candidate"))
                    self._log("candidate_received")
                return data
            if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.data, int):
                self._server_close_code = msg.data
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR):
                self._log("closed", code=self.close_code)
                return None

    async def offer(self, sdp: str, *, timeout: float = 10.0) -> str:
        """Send an offer and wait for the answer; return the answer SDP.

        Messages that arrive before the answer (candidates) stay queued for
        :meth:`receive`.

        Raises
        ------
        RemoteProtocolError
            The server sent an error instead, or closed the socket.
        """
        if not isinstance(sdp, str) or not sdp.strip():
            raise ParameterError("sdp must be a non-empty SDP string")
        await self.send({"type": "offer", "sdp": sdp})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        held: list[dict[str, Any]] = []
        try:
            while True:
                msg = await self.receive(timeout=max(0.001, deadline - loop.time()))
                if msg is None:
                    raise RemoteProtocolError(f"signaling server closed the socket (code {self.close_code}) before answering")
                if msg.get("type") == "answer" and isinstance(msg.get("sdp"), str):
                    self._log("answer_received", sdp_bytes=len(msg["sdp"]))
                    return msg["sdp"]
                if msg.get("type") == "error":
                    raise RemoteProtocolError(
                        f"signaling server refused the offer: {msg.get('code')}: {msg.get('message')}", status_code=400
                    )
                held.append(msg)
        finally:
            self._backlog[:0] = held

    async def dial(self, pc: Any, *, connect_timeout: float | None = 10.0, answer_timeout: float = 10.0) -> float:
        """Offer ``pc``'s media to the server, apply the answer and wait for the media path.

        The caller side of one call in one step: ``createOffer`` and
        ``setLocalDescription`` (aiortc gathers its candidates first, so the offer carries
        them), :meth:`connect` when no WebSocket is open yet, :meth:`offer`, then the
        answer as the remote description.

        Parameters
        ----------
        pc : voicelab.webrtc.peer.LabPeerConnection
            A peer connection from :func:`voicelab.webrtc.peer.make_peer_connection`
            with its tracks added.
        connect_timeout : float or None, optional
            Seconds to wait for ICE + DTLS to connect (``pc.connected()``); None returns
            as soon as the answer is applied.
        answer_timeout : float, optional
            Seconds to wait for the answer, s.

        Returns
        -------
        float
            Loop time (s) when the media path connected (or the answer was applied).

        Raises
        ------
        RemoteProtocolError
            The server refused the offer or closed the socket.
        asyncio.TimeoutError
            No answer, or no connection within the timeouts.
        """
        await pc.setLocalDescription(await pc.createOffer())
        if self.closed:
            await self.connect()
        answer = await self.offer(pc.localDescription.sdp, timeout=answer_timeout)
        await pc.setRemoteDescription(type(pc.localDescription)(sdp=answer, type="answer"))
        if connect_timeout is None:
            return asyncio.get_running_loop().time()
        return float(await asyncio.wait_for(pc.connected(), connect_timeout))

    async def send_candidate(self, candidate: Mapping[str, Any] | None) -> None:
        """Trickle one local candidate (dict ``{candidate, sdpMid, sdpMLineIndex}``; None = end)."""
        await self.send({"type": "candidate", "candidate": None if candidate is None else dict(candidate)})

    async def bye(self) -> None:
        """Send ``bye`` and close."""
        if self._ws is not None and not self._ws.closed:
            try:
                await self.send({"type": "bye"})
            except (LocalProtocolError, ConnectionError):
                pass
        await self.close()

    async def close(self) -> None:
        """Close the WebSocket and the HTTP session."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "SignalingClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
