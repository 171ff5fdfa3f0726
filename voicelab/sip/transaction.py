"""SIP transactions (RFC 3261 section 17, updated by RFC 6026) as sans-IO state tables.

Four machines, each a table ``{(state, input): Transition(effects, timers, next_state)}``
in the style of h11's ``_state.py``: an input with no entry raises
:class:`~voicelab.errors.LocalProtocolError`; nothing falls through silently. Messages a
peer may legitimately repeat or reorder (a 1xx after the final response, a retransmitted
request) have explicit "absorb" entries with no effects.

======================================  =======================================
class                                   RFC figure
======================================  =======================================
:class:`InviteClientTransaction`        3261 fig. 5 + 6026 fig. 5 (Accepted, Timer M)
:class:`NonInviteClientTransaction`     3261 fig. 6
:class:`InviteServerTransaction`        3261 fig. 7 + 6026 fig. 7 (Accepted, Timer L)
:class:`NonInviteServerTransaction`     3261 fig. 8
======================================  =======================================

Driving a transaction (no I/O, like aioquic's ``QuicConnection``)
-----------------------------------------------------------------
Inputs, each taking ``now`` in seconds (any monotonic clock, never read here):

- client: ``start(now)`` sends the request; ``receive(response, now)``;
- server: ``receive(request, now)`` (the first call is the request that created it,
  later calls are retransmissions or the ACK); ``send_response(response, now)`` from the
  TU;
- both: ``handle_timer(now)`` (call it at :meth:`next_timer`; it runs every timer due at
  or before ``now``), ``transport_error(now)``.

Every input returns the list of events it caused (frozen dataclasses named as facts:
:class:`ResponseReceived`, :class:`RequestReceived`, :class:`TransactionTimedOut`,
:class:`TransportFailed`, :class:`TransactionTerminated`). Messages to send are drained
with :meth:`messages_to_send` as :class:`OutgoingMessage` (with a ``retransmission``
flag); the transport serializes them with ``bytes()``. After an input, timers already due
(the zero-length D, I, J, K of reliable transports) run at once, so on TCP a transaction
reaches Terminated in the same call that completes it.

Choices where RFC 3261 leaves room
----------------------------------
- **100 Trying** (17.2.1: "MUST generate a 100 (Trying) response unless it knows that the
  TU will generate a provisional or final response within 200 ms"): the transaction
  cannot know, so it arms a "Trying" timer of ``trying_delay`` = 0.2 s when the INVITE
  arrives and sends 100 Trying when it fires, unless the TU responded first. The
  effect is the RFC's rule with the TU given its 200 ms. ``trying_delay=0`` sends it at
  once, ``None`` never (the TU promises to answer in time). A retransmitted INVITE that
  arrives before any provisional response is answered with 100 Trying at once.
- A second final response from the TU (in Completed, Confirmed, or a non-2xx after
  a 2xx in Accepted) is TU misuse: :class:`~voicelab.errors.LocalProtocolError`
  (RFC 3261 17.2.2 says "discarded"; an error shows the bug). 2xx responses from the TU
  in Accepted are sent (RFC 6026: the TU retransmits its 2xx through the transaction).
- A response whose CSeq number differs from the request's, though its branch matches,
  is the peer's error: :class:`~voicelab.errors.RemoteProtocolError` (400).
- ``transport_error(now)`` moves any live state to Terminated with
  :class:`TransportFailed` (3261 figures 5-8 show it from every state that sends).

Matching (17.1.3, 17.2.3)
-------------------------
:func:`transaction_key_for_request` and :func:`transaction_key_for_response` give a
hashable :class:`TransactionKey`; :class:`TransactionTable` routes by it.

- Responses (client side, 17.1.3): the top Via ``branch`` (compared case-insensitively,
  RFC 3261 7.3.1: tokens are case-insensitive) and the CSeq method. A response without
  a branch has no key (it is a stray).
- Requests whose top Via branch starts with ``z9hG4bK`` (server side, 17.2.3): the
  branch (case-insensitive), the top Via ``sent-by`` (host lower-cased, port as written,
  None when absent) and the request method, with ACK counted as INVITE. CANCEL keeps
  its own method, so it gets its own transaction (9.2). The CSeq is not part of the
  match: an ACK whose CSeq number differs from the INVITE's (SIPp's automatic ACK after
  a 401 does this; 17.1.1.3 says it should not) still confirms the transaction and stops
  the final response's retransmissions. A retransmitted non-ACK request whose CSeq
  number differs is the peer's error (a branch reused for a new request, 8.1.1.7):
  :class:`~voicelab.errors.RemoteProtocolError` (400) rather than an answer with the
  old response.
- Other requests (RFC 2543 peers, 17.2.3 fallback): the Request-URI (its text as
  written), the From tag, the Call-ID, the CSeq number, the method (ACK counted as
  INVITE) and the top Via (protocol, transport, host lower-cased, port, parameters with
  lower-cased names; the whole ``via-parm``). The To tag is left out of the key and
  checked by :meth:`ServerTransaction.matches`: a retransmission must carry the To tag
  of the original request; an ACK must carry the To tag of the final response the
  transaction sent (an INVITE without To tag gets its tag from our response).

Why our own: no maintained sans-IO SIP transaction layer exists for Python; the lab
needs one it can drive on a virtual clock.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from dataclasses import dataclass
from typing import ClassVar, Union

import numpy as np

from ..errors import LocalProtocolError, ParameterError, ProtocolError, RemoteProtocolError
from .abnf import split_list
from .headers import HeaderField, Headers, cached_value
from .message import Request, Response
from .timers import TimerConfig, TimerValues, derive_timers

__all__ = [
    "MAGIC_COOKIE",
    "State",
    "Input",
    "Effect",
    "Transition",
    "TransactionKey",
    "transaction_key_for_request",
    "transaction_key_for_response",
    "new_branch",
    "build_ack",
    "build_cancel",
    "build_response",
    "OutgoingMessage",
    "ResponseReceived",
    "RequestReceived",
    "TransactionTimedOut",
    "TransportFailed",
    "TransactionTerminated",
    "UnmatchedRequest",
    "StrayResponse",
    "Event",
    "ClientTransaction",
    "ServerTransaction",
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "TransactionTable",
]

#: RFC 3261 8.1.1.7: a branch starting with this was made by an RFC 3261 element.
MAGIC_COOKIE = "z9hG4bK"

#: Name of the (non-RFC) timer that sends 100 Trying on the INVITE server side.
TRYING_TIMER = "Trying"


# ---------------------------------------------------------------------------------------
# States, inputs, effects, transitions
# ---------------------------------------------------------------------------------------


class State(enum.Enum):
    """Transaction states (RFC 3261 17 figures 5-8; Accepted from RFC 6026)."""

    INIT = "Init"  #: created, not started (client) / first request not yet fed (server)
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"

    __hash__ = object.__hash__  # members are singletons compared by identity: no Python-level hash per lookup


class Input(enum.Enum):
    """Everything that can happen to a transaction."""

    START = "TU starts the client transaction"
    REQUEST = "request received (the first one, or a retransmission)"
    ACK = "ACK received"
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_3XX_6XX = "300-699 received"
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_3XX_6XX = "300-699 from TU"
    TIMER_A = "Timer A fires"
    TIMER_B = "Timer B fires"
    TIMER_D = "Timer D fires"
    TIMER_E = "Timer E fires"
    TIMER_F = "Timer F fires"
    TIMER_G = "Timer G fires"
    TIMER_H = "Timer H fires"
    TIMER_I = "Timer I fires"
    TIMER_J = "Timer J fires"
    TIMER_K = "Timer K fires"
    TIMER_L = "Timer L fires"
    TIMER_M = "Timer M fires"
    TIMER_TRYING = "Trying timer fires (200 ms without a TU response)"
    TRANSPORT_ERROR = "transport error"

    __hash__ = object.__hash__  # as State's


#: Timer name -> the input its firing produces.
TIMER_INPUTS = {
    **{name: Input[f"TIMER_{name}"] for name in ("A", "B", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M")},
    TRYING_TIMER: Input.TIMER_TRYING,
}
_INPUT_TIMERS = {inp: name for name, inp in TIMER_INPUTS.items()}


class Effect(enum.Enum):
    """What a transition does besides changing state and timers."""

    SEND_REQUEST = "send the request"
    RETRANSMIT_REQUEST = "retransmit the request"
    SEND_ACK = "build and send the ACK for a non-2xx final response (17.1.1.3)"
    RESEND_ACK = "resend that ACK"
    PASS_TO_TU = "pass the received message to the TU"
    SEND_RESPONSE = "send the TU's response"
    RESEND_PROVISIONAL = "resend the last provisional response (100 Trying if none yet)"
    RESEND_FINAL = "resend the final response"
    SEND_TRYING = "send 100 Trying"
    REPORT_TIMEOUT = "tell the TU the transaction timed out"
    REPORT_TRANSPORT_ERROR = "tell the TU the transport failed"


@dataclass(frozen=True)
class Transition:
    """One table entry.

    Attributes
    ----------
    effects : tuple of Effect
        Run in order; empty means the input is absorbed.
    next_state : State
    timers : tuple of (str, str)
        Timer operations ``(op, name)`` run after the effects: ``"start"`` (initial
        value, skipped when the timer is unused on this transport), ``"backoff"``
        (:meth:`TimerValues.backoff` of the last interval), ``"t2"`` (restart at T2)
        and ``"stop"``. On a state change, timers not listed for the new state in
        ``STATE_TIMERS`` are stopped.
    """

    effects: tuple[Effect, ...]
    next_state: State
    timers: tuple[tuple[str, str], ...] = ()


def _t(next_state: State, *effects: Effect, timers: tuple[tuple[str, str], ...] = ()) -> Transition:
    return Transition(tuple(effects), next_state, timers)


_ABSORB = ()
_TERMINATE_ON_TRANSPORT_ERROR = _t(State.TERMINATED, Effect.REPORT_TRANSPORT_ERROR)


# ---------------------------------------------------------------------------------------
# Keys and matching
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransactionKey:
    """What identifies a transaction (RFC 3261 17.1.3 and 17.2.3).

    Attributes
    ----------
    role : {"client", "server"}
        Responses match client transactions, requests match server transactions.
    method : str
        The method of the request that created the transaction (ACK counted as INVITE).
    branch : str or None
        Lower-cased top Via branch; None for RFC 2543 keys.
    sent_by : tuple of (str, int or None) or None
        Server keys with a branch: top Via host (lower case) and port.
    legacy : tuple or None
        RFC 2543 keys: (Request-URI text, From tag, Call-ID, CSeq number, top Via).
    """

    role: str
    method: str
    branch: str | None = None
    sent_by: tuple[str, int | None] | None = None
    legacy: tuple | None = None

    @property
    def rfc2543(self) -> bool:
        """Whether this key uses the RFC 2543 fallback (no magic cookie)."""
        return self.legacy is not None

    @cached_value
    def _hash(self) -> int:
        return hash((self.role, self.method, self.branch, self.sent_by, self.legacy))

    def __hash__(self) -> int:  # the dataclass's hash, computed once per key (keys index every table)
        return self._hash

    def __getstate__(self) -> dict:
        # the cached hash stays behind: another process hashes strings with another seed
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state


def _top_via(msg: Request | Response):
    vias = msg.via
    if not vias:
        raise RemoteProtocolError("message has no Via header; it cannot be matched to a transaction", status_code=400)
    return vias[0]


def _via_identity(via) -> tuple:
    return (
        via.protocol.upper(),
        via.transport.upper(),
        via.host.lower(),
        via.port,
        tuple((k.lower(), v) for k, v in via.params),
    )


def transaction_key_for_request(request: Request) -> TransactionKey:
    """The server-side key of a request (RFC 3261 17.2.3; see the module notes).

    Parameters
    ----------
    request : Request

    Returns
    -------
    TransactionKey
        ``role="server"``. ACK gets ``method="INVITE"`` so it finds the INVITE server
        transaction it acknowledges; CANCEL keeps ``"CANCEL"``.

    Raises
    ------
    RemoteProtocolError
        If the Via, From, To, Call-ID or CSeq header needed is missing or malformed.
    ParameterError
        If ``request`` is not a :class:`~voicelab.sip.Request`.

    Examples
    --------
    >>> from voicelab.sip import parse_message
    >>> r = parse_message(b"ACK sip:b@example.com SIP/2.0\\r\\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bKx\\r\\n"
    ...                   b"From: <sip:a@example.com>;tag=1\\r\\nTo: <sip:b@example.com>;tag=2\\r\\n"
    ...                   b"Call-ID: c\\r\\nCSeq: 1 ACK\\r\\n\\r\\n")
    >>> k = transaction_key_for_request(r)
    >>> k.method, k.branch, k.sent_by
    ('INVITE', 'z9hg4bkx', ('h', 5060))
    """
    if not isinstance(request, Request):
        raise ParameterError(f"transaction_key_for_request needs a Request, got {type(request).__name__}")
    method = "INVITE" if request.method == "ACK" else request.method
    h = request.headers
    memo = h._memo
    if memo is not None:  # the key of this message, remembered until its headers change
        key = memo.get(("@server-key", method))
        if key is not None:
            return key
    vias = h._lookup("via")
    if vias:  # RFC 3261 keys depend only on the method and the top Via: computed once per message
        key = h.parsed("server-key:" + method, vias[0].value, lambda _: _server_key(request, method))
        if key is not None:
            memo = h._memo
            if memo is not None:
                memo[("@server-key", method)] = key
            return key
    return _legacy_server_key(request, method)


def _server_key(request: Request, method: str) -> TransactionKey | None:
    via = _top_via(request)
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return TransactionKey("server", method, branch.lower(), (via.host.lower(), via.port))
    return None


def _legacy_server_key(request: Request, method: str) -> TransactionKey:
    via = _top_via(request)
    legacy = (
        str(request.uri),
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        _via_identity(via),
    )
    return TransactionKey("server", method, None, None, legacy)


def transaction_key_for_response(response: Response) -> TransactionKey | None:
    """The client-side key of a response (RFC 3261 17.1.3), None if it has no branch.

    Parameters
    ----------
    response : Response

    Returns
    -------
    TransactionKey or None
        ``role="client"``, the top Via branch (lower case) and the CSeq method.

    Raises
    ------
    RemoteProtocolError
        If Via or CSeq is missing or malformed.
    ParameterError
        If ``response`` is not a :class:`~voicelab.sip.Response`.
    """
    if not isinstance(response, Response):
        raise ParameterError(f"transaction_key_for_response needs a Response, got {type(response).__name__}")
    branch = _top_via(response).branch
    if not branch:
        return None
    return TransactionKey("client", response.cseq.method, branch.lower())


def new_branch(rng: np.random.Generator) -> str:
    """A fresh Via branch: ``z9hG4bK`` and 24 hex digits (96 random bits).

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness (seed it for reproducible runs).

    Returns
    -------
    str

    Raises
    ------
    ParameterError
        If ``rng`` is not a Generator.

    Examples
    --------
    >>> new_branch(np.random.default_rng(0))[:7]
    'z9hG4bK'
    """
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return MAGIC_COOKIE + rng.bytes(12).hex()


# ---------------------------------------------------------------------------------------
# Building the messages the transaction layer sends by itself
# ---------------------------------------------------------------------------------------


def _first_value(msg: Request | Response, name: str) -> str:
    value = msg.headers.get(name)
    if value is None:
        raise LocalProtocolError(f"the request has no {name} header; build it with one before using a transaction")
    return value


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response, as RFC 3261 17.1.1.3 prescribes.

    Request-URI, Call-ID, From and the CSeq number are the INVITE's (CSeq method ACK);
    To is the response's (with its tag); the only Via is the INVITE's top Via; the
    INVITE's Route headers are copied; ``Max-Forwards: 70`` and ``Content-Length: 0``.

    Parameters
    ----------
    invite : Request
        The INVITE the client transaction sent.
    response : Response
        The 300-699 response being acknowledged.

    Returns
    -------
    Request

    Raises
    ------
    LocalProtocolError
        If the INVITE lacks a header the ACK copies.
    RemoteProtocolError
        If the response has no To header.
    """
    if response.headers.get("To") is None:
        raise RemoteProtocolError("final response has no To header; cannot build the ACK", status_code=400)
    h = Headers()
    h.add("Via", invite.headers.get_all("Via")[0] if invite.headers.get_all("Via") else _first_value(invite, "Via"))
    for value in invite.headers.get_all("Route"):
        h.add("Route", value)
    h.add("Max-Forwards", "70")
    h.add("From", _first_value(invite, "From"))
    h.add("To", response.headers.get("To") or "")
    h.add("Call-ID", _first_value(invite, "Call-ID"))
    h.add("CSeq", f"{invite.cseq.number} ACK")
    h.add("Content-Length", "0")
    return Request("ACK", invite.uri, h)


def build_cancel(invite: Request) -> Request:
    """A CANCEL for a pending INVITE (RFC 3261 9.1).

    Request-URI, Call-ID, To, From and the CSeq number are the INVITE's (CSeq method
    CANCEL); the only Via is the INVITE's top Via (same branch: the CANCEL is matched to
    the INVITE by it, yet has its own transaction); Route headers are copied.

    Parameters
    ----------
    invite : Request

    Returns
    -------
    Request
    """
    h = Headers()
    h.add("Via", invite.headers.get_all("Via")[0] if invite.headers.get_all("Via") else _first_value(invite, "Via"))
    for value in invite.headers.get_all("Route"):
        h.add("Route", value)
    h.add("Max-Forwards", "70")
    h.add("From", _first_value(invite, "From"))
    h.add("To", _first_value(invite, "To"))
    h.add("Call-ID", _first_value(invite, "Call-ID"))
    h.add("CSeq", f"{invite.cseq.number} CANCEL")
    h.add("Content-Length", "0")
    return Request("CANCEL", invite.uri, h)


def build_response(
    request: Request, status_code: int, reason: str, *, to_tag: str | None = None, body: bytes = b""
) -> Response:
    """A response to ``request`` with the headers RFC 3261 8.2.6.2 copies.

    Every Via (in order), From, To (plus ``;tag=to_tag`` when given and the request's
    To has no tag), Call-ID, CSeq and Timestamp (8.2.6.1) are copied; Content-Length is
    set to the body size.

    Parameters
    ----------
    request : Request
    status_code : int
        100..699.
    reason : str
        Reason phrase.
    to_tag : str, optional
        Tag to add to To (RFC 3261 8.2.6.2: every response but 100 Trying needs one).
    body : bytes, optional

    Returns
    -------
    Response
    """
    fields = _response_fields(request, to_tag)
    fields.append(HeaderField("Content-Length", str(len(body))))
    return Response(status_code, reason, Headers._of(fields), body)


def _response_fields(request: Request, to_tag: str | None) -> list[HeaderField]:
    """The fields :func:`build_response` copies from ``request``, in order, without its
    Content-Length (the UA core appends its own fields before that one)."""
    # one pass over the request's fields: the first of each, every Via (split on commas)
    vias: list[str] = []
    first: dict[str, str] = {}
    for f in request.headers._fields:
        key = f.key
        if key == "via":
            vias.append(f.value)
        elif key in _COPIED and key not in first:
            first[key] = f.value
    fields = [HeaderField("Via", hop) for value in vias for hop in split_list(value)]
    if len(first) < 4:
        _check_copied(first, ("from", "to"))
    to = first["to"]
    if to_tag is not None and request.to.tag is None:
        to = f"{to};tag={to_tag}"
    if len(first) < 4:
        _check_copied(first, ("call-id", "cseq"))
    fields.append(HeaderField("From", first["from"]))
    fields.append(HeaderField("To", to))
    fields.append(HeaderField("Call-ID", first["call-id"]))
    fields.append(HeaderField("CSeq", first["cseq"]))
    ts = first.get("timestamp")
    if ts is not None:
        fields.append(HeaderField("Timestamp", ts))
    return fields


def _check_copied(first: dict[str, str], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in first:
            name = _COPIED_NAMES[key]
            raise LocalProtocolError(f"the request has no {name} header; build it with one before using a transaction")


#: What a response copies from its request besides Via (header key -> name in errors).
_COPIED_NAMES = {"from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
_COPIED = frozenset({"from", "to", "call-id", "cseq", "timestamp"})


# ---------------------------------------------------------------------------------------
# Outputs and events
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingMessage:
    """A message the transaction wants sent.

    Attributes
    ----------
    message : Request or Response
        Serialize with ``bytes(message)``.
    retransmission : bool
        True when the same message was sent before by this transaction.
    key : TransactionKey
        The transaction that sent it.
    time : float
        ``now`` of the call that produced it (s).
    """

    message: Request | Response
    retransmission: bool
    key: TransactionKey
    time: float


@dataclass(frozen=True)
class ResponseReceived:
    """A client transaction passed a response to the TU.

    Attributes
    ----------
    response : Response
    key : TransactionKey
    """

    response: Response
    key: TransactionKey


@dataclass(frozen=True)
class RequestReceived:
    """A server transaction passed a request to the TU (the new request, or an ACK to
    a 2xx that matched the transaction in the Accepted state, RFC 6026 8.7).

    Attributes
    ----------
    request : Request
    key : TransactionKey
    """

    request: Request
    key: TransactionKey


@dataclass(frozen=True)
class TransactionTimedOut:
    """A transaction gave up waiting (Timer B, F or H fired).

    Attributes
    ----------
    timer : str
        ``"B"``, ``"F"`` or ``"H"``.
    key : TransactionKey
    """

    timer: str
    key: TransactionKey


@dataclass(frozen=True)
class TransportFailed:
    """The transport reported a fatal error for this transaction's messages.

    Attributes
    ----------
    key : TransactionKey
    """

    key: TransactionKey


@dataclass(frozen=True)
class TransactionTerminated:
    """A transaction reached Terminated and may be destroyed.

    Attributes
    ----------
    reason : str
        ``"Timer X"`` for the timer whose firing ended it (``"Timer B"``, ``"Timer D"``,
        ...) or ``"transport error"``.
    key : TransactionKey
    """

    reason: str
    key: TransactionKey


@dataclass(frozen=True)
class UnmatchedRequest:
    """:class:`TransactionTable`: a request matched no live server transaction.

    The UA core decides: a new request opens a server transaction, an ACK for a 2xx goes
    to its dialog, a stray ACK is dropped.

    Attributes
    ----------
    request : Request
    key : TransactionKey
    """

    request: Request
    key: TransactionKey


@dataclass(frozen=True)
class StrayResponse:
    """:class:`TransactionTable`: a response matched no live client transaction.

    RFC 6026 8.4: such responses are dropped (not passed to the core).

    Attributes
    ----------
    response : Response
    reason : str
        Why it matched nothing.
    """

    response: Response
    reason: str


Event = Union[
    ResponseReceived,
    RequestReceived,
    TransactionTimedOut,
    TransportFailed,
    TransactionTerminated,
    UnmatchedRequest,
    StrayResponse,
]


# ---------------------------------------------------------------------------------------
# The driver shared by the four machines
# ---------------------------------------------------------------------------------------


def _check_now(now: object) -> float:
    if isinstance(now, bool):
        raise ParameterError(f"now must be a time in seconds, got {now!r}")
    try:
        t = float(now)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParameterError(f"now must be a time in seconds, got {now!r}") from None
    if not math.isfinite(t):
        raise ParameterError(f"now must be a finite time in seconds, got {now!r}")
    return t


class _Transaction:
    """State-table driver: timers, outputs, and the effect interpreter."""

    #: ``{(state, input): Transition}``; set by each subclass.
    TABLE: ClassVar[dict[tuple[State, Input], Transition]] = {}
    #: The states this machine uses.
    STATES: ClassVar[tuple[State, ...]] = ()
    #: The inputs this machine understands.
    INPUTS: ClassVar[tuple[Input, ...]] = ()
    #: Timers that may run in each state (others stop on entering it).
    STATE_TIMERS: ClassVar[dict[State, frozenset[str]]] = {}
    #: "client" or "server".
    ROLE: ClassVar[str] = ""

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig | None) -> None:
        if not isinstance(request, Request):
            raise ParameterError(f"a transaction needs a Request, got {type(request).__name__}")
        if not isinstance(reliable, bool):
            raise ParameterError(f"reliable must be True (TCP, TLS, SCTP, WS) or False (UDP), got {reliable!r}")
        self.request = request
        self.reliable = reliable
        self.timer_values: TimerValues = derive_timers(timers, reliable=reliable)
        self._state = State.INIT
        self._timers: dict[str, float] = {}  # name -> deadline (s)
        self._intervals: dict[str, float] = {}  # name -> last interval (s)
        self._outbox: list[OutgoingMessage] = []
        self._last_now = -math.inf
        # Set by the TransactionTable that holds this transaction: every entry point puts
        # the transaction on the table's ready list once (no scan of the table needed).
        self._owner: TransactionTable | None = None
        self._queued = False
        self._heap_deadline: float | None = None  # the deadline the owner's heap holds for it
        try:
            cseq = request.cseq
            self._cseq_number = cseq.number
            self._top = _top_via(request)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot build a transaction on a malformed request: {exc}") from None
        self.key: TransactionKey

    # -- public read-only state ----------------------------------------------------------
    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated."""
        return self._state is State.TERMINATED

    @property
    def armed_timers(self) -> dict[str, float]:
        """Running timers: name -> deadline (s). A copy."""
        return dict(self._timers)

    def next_timer(self) -> float | None:
        """The earliest timer deadline (s), or None when no timer runs."""
        return min(self._timers.values()) if self._timers else None

    def messages_to_send(self) -> list[OutgoingMessage]:
        """Drain the messages produced so far, in order."""
        out, self._outbox = self._outbox, []
        return out

    def handle_timer(self, now: float) -> list[Event]:
        """Run every timer due at or before ``now`` (s), earliest first.

        Calling it when nothing is due (or after Terminated) does nothing.

        Returns
        -------
        list of Event
        """
        now = self._advance(now)
        events: list[Event] = []
        self._fire_due(now, events)
        return events

    def transport_error(self, now: float) -> list[Event]:
        """The transport failed to deliver one of this transaction's messages.

        Returns
        -------
        list of Event
            :class:`TransportFailed` then :class:`TransactionTerminated`.

        Raises
        ------
        LocalProtocolError
            Before the transaction started or after it terminated.
        """
        now = self._advance(now)
        return self._input(Input.TRANSPORT_ERROR, now, None)

    # -- driver --------------------------------------------------------------------------
    def _advance(self, now: float) -> float:
        t = _check_now(now)
        if t < self._last_now:
            raise ParameterError(
                f"time went backwards: now={t!r} s after {self._last_now!r} s; pass a monotonic clock"
            )
        self._last_now = t
        owner = self._owner
        if owner is not None and not self._queued:
            self._queued = True
            owner._ready.append(self)
        return t

    def _lookup(self, inp: Input) -> Transition:
        tr = self.TABLE.get((self._state, inp))
        if tr is None:
            raise LocalProtocolError(
                f"{type(self).__name__} in state {self._state.value} has no transition for "
                f"'{inp.value}' (RFC 3261 17); the caller routed or used it wrongly"
            )
        return tr

    def _input(self, inp: Input, now: float, message: Request | Response | None) -> list[Event]:
        tr = self._lookup(inp)
        events: list[Event] = []
        self._run(tr, inp, now, message, events)
        self._fire_due(now, events)
        return events

    def _run(
        self, tr: Transition, inp: Input, now: float, message: Request | Response | None, events: list[Event]
    ) -> None:
        for effect in tr.effects:
            self._effect(effect, inp, now, message, events)
        for op, name in tr.timers:
            self._timer_op(op, name, now)
        if tr.next_state is not self._state:
            self._state = tr.next_state
            allowed = self.STATE_TIMERS.get(tr.next_state, frozenset())
            for name in [n for n in self._timers if n not in allowed]:
                del self._timers[name]
            if tr.next_state is State.TERMINATED:
                reason = f"Timer {_INPUT_TIMERS[inp]}" if inp in _INPUT_TIMERS else "transport error"
                events.append(TransactionTerminated(reason, self.key))

    def _fire_due(self, now: float, events: list[Event]) -> None:
        timers = self._timers
        while timers:
            deadline = min(timers.values())
            if deadline > now:
                return
            # the earliest (deadline, name), as min(items, key=(deadline, name)) picks it
            name = min([n for n, d in timers.items() if d == deadline])
            del timers[name]
            inp = TIMER_INPUTS[name]
            self._run(self._lookup(inp), inp, now, None, events)

    def _timer_op(self, op: str, name: str, now: float) -> None:
        if op == "stop":
            self._timers.pop(name, None)
            return
        if op == "start":
            interval = self._initial(name)
            if interval is None:
                return
        elif op == "backoff":
            interval = self.timer_values.backoff(name, self._intervals[name])
        elif op == "t2":
            interval = self.timer_values.t2
        else:  # pragma: no cover - table typo
            raise LocalProtocolError(f"unknown timer operation {op!r}")
        self._intervals[name] = interval
        self._timers[name] = now + interval

    def _initial(self, name: str) -> float | None:
        return self.timer_values.initial(name)

    def _send(self, message: Request | Response, retransmission: bool, now: float) -> None:
        self._outbox.append(OutgoingMessage(message, retransmission, self.key, now))

    def _effect(
        self, effect: Effect, inp: Input, now: float, message: Request | Response | None, events: list[Event]
    ) -> None:
        if effect is Effect.REPORT_TIMEOUT:
            events.append(TransactionTimedOut(_INPUT_TIMERS[inp], self.key))
        elif effect is Effect.REPORT_TRANSPORT_ERROR:
            events.append(TransportFailed(self.key))
        else:
            self._role_effect(effect, now, message, events)

    def _role_effect(
        self, effect: Effect, now: float, message: Request | Response | None, events: list[Event]
    ) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self._state.value} reliable={self.reliable}>"


# ---------------------------------------------------------------------------------------
# Client transactions
# ---------------------------------------------------------------------------------------


class ClientTransaction(_Transaction):
    """What both client transactions share: creation, start, response matching."""

    ROLE = "client"
    _METHOD_RULE = ""

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig | None = None) -> None:
        super().__init__(request, reliable=reliable, timers=timers)
        self._check_method(request.method)
        branch = self._top.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError(
                f"the request's top Via needs a branch starting with {MAGIC_COOKIE!r} "
                f"(got {branch!r}); make one with new_branch(rng)"
            )
        if request.cseq.method != request.method:
            raise LocalProtocolError(
                f"CSeq method {request.cseq.method} differs from request method {request.method}"
            )
        self.key = TransactionKey("client", request.method, branch.lower())

    def _check_method(self, method: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self, now: float) -> list[Event]:
        """Send the request and arm the timers (state Init -> Calling/Trying).

        Parameters
        ----------
        now : float
            Current time (s).

        Returns
        -------
        list of Event
            Normally empty; the request is in :meth:`messages_to_send`.

        Raises
        ------
        LocalProtocolError
            If the transaction was already started.
        """
        now = self._advance(now)
        return self._input(Input.START, now, None)

    def matches(self, response: Response) -> bool:
        """Whether ``response`` belongs to this transaction (RFC 3261 17.1.3)."""
        try:
            return transaction_key_for_response(response) == self.key
        except ProtocolError:
            return False

    def receive(self, message: Request | Response, now: float) -> list[Event]:
        """A response from the transport.

        Parameters
        ----------
        message : Response
            A response routed here (use :func:`transaction_key_for_response`).
        now : float
            Current time (s).

        Returns
        -------
        list of Event

        Raises
        ------
        LocalProtocolError
            If it is a request, does not match this transaction, or the input has no
            entry in the current state (e.g. before :meth:`start`).
        RemoteProtocolError
            If its Via/CSeq is malformed, or its CSeq number differs from the request's.
        """
        now = self._advance(now)
        if not isinstance(message, Response):
            raise LocalProtocolError(
                f"{type(self).__name__} receives responses only, got {type(message).__name__}; "
                "route requests to server transactions"
            )
        key = transaction_key_for_response(message)
        if key != self.key:
            raise LocalProtocolError(
                f"response (key {key}) does not belong to this transaction ({self.key}); "
                "route responses with transaction_key_for_response"
            )
        number = message.cseq.number
        if number != self._cseq_number:
            raise RemoteProtocolError(
                f"response CSeq number {number} differs from the request's {self._cseq_number} "
                "although its branch matches",
                status_code=400,
            )
        code = message.status_code
        inp = Input.RECV_1XX if code < 200 else Input.RECV_2XX if code < 300 else Input.RECV_3XX_6XX
        return self._input(inp, now, message)

    def _role_effect(
        self, effect: Effect, now: float, message: Request | Response | None, events: list[Event]
    ) -> None:
        if effect is Effect.SEND_REQUEST:
            self._send(self.request, False, now)
        elif effect is Effect.RETRANSMIT_REQUEST:
            self._send(self.request, True, now)
        elif effect is Effect.PASS_TO_TU:
            assert isinstance(message, Response)
            events.append(ResponseReceived(message, self.key))
        elif effect is Effect.SEND_ACK:
            assert isinstance(message, Response)
            self._ack = build_ack(self.request, message)
            self._send(self._ack, False, now)
        elif effect is Effect.RESEND_ACK:
            self._send(self._ack, True, now)
        else:  # pragma: no cover - table typo
            raise LocalProtocolError(f"{type(self).__name__} cannot perform {effect}")


_C, _P, _X, _A, _T, _I = State.CALLING, State.PROCEEDING, State.COMPLETED, State.ACCEPTED, State.TERMINATED, State.INIT
_TR = State.TRYING
_E = Effect


class InviteClientTransaction(ClientTransaction):
    """INVITE client transaction (RFC 3261 17.1.1, figure 5; RFC 6026 7.2).

    Parameters
    ----------
    request : Request
        The INVITE, with a top Via branch starting with ``z9hG4bK``.
    reliable : bool
        True on TCP/TLS/SCTP/WS: no Timer A, Timer D is 0.
    timers : TimerConfig, optional
        T1/T2/T4 (RFC defaults when None).

    Notes
    -----
    A 300-699 response is acknowledged here (:func:`build_ack`) and passed to the TU;
    its retransmissions are absorbed and re-acknowledged in Completed. A 2xx moves to
    Accepted (RFC 6026) and is passed to the TU, as is every later 2xx (retransmission
    or fork) until Timer M: the TU sends the ACK for 2xx itself.

    Examples
    --------
    >>> from voicelab.sip import parse_message
    >>> inv = parse_message(b"INVITE sip:b@example.com SIP/2.0\\r\\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\\r\\n"
    ...                     b"From: <sip:a@example.com>;tag=1\\r\\nTo: <sip:b@example.com>\\r\\n"
    ...                     b"Call-ID: c1\\r\\nCSeq: 1 INVITE\\r\\nContent-Length: 0\\r\\n\\r\\n")
    >>> tx = InviteClientTransaction(inv, reliable=False)
    >>> tx.start(now=0.0)
    []
    >>> tx.state.value, tx.next_timer()
    ('Calling', 0.5)
    """

    INPUTS = (
        Input.START, Input.RECV_1XX, Input.RECV_2XX, Input.RECV_3XX_6XX,
        Input.TIMER_A, Input.TIMER_B, Input.TIMER_D, Input.TIMER_M, Input.TRANSPORT_ERROR,
    )  # fmt: skip
    STATES = (_I, _C, _P, _X, _A, _T)
    STATE_TIMERS = {_C: frozenset("AB"), _X: frozenset("D"), _A: frozenset("M")}
    TABLE = {
        (_I, Input.START): _t(_C, _E.SEND_REQUEST, timers=(("start", "A"), ("start", "B"))),
        (_C, Input.TIMER_A): _t(_C, _E.RETRANSMIT_REQUEST, timers=(("backoff", "A"),)),
        (_C, Input.TIMER_B): _t(_T, _E.REPORT_TIMEOUT),
        (_C, Input.RECV_1XX): _t(_P, _E.PASS_TO_TU),
        (_P, Input.RECV_1XX): _t(_P, _E.PASS_TO_TU),
        (_C, Input.RECV_2XX): _t(_A, _E.PASS_TO_TU, timers=(("start", "M"),)),
        (_P, Input.RECV_2XX): _t(_A, _E.PASS_TO_TU, timers=(("start", "M"),)),
        (_C, Input.RECV_3XX_6XX): _t(_X, _E.PASS_TO_TU, _E.SEND_ACK, timers=(("start", "D"),)),
        (_P, Input.RECV_3XX_6XX): _t(_X, _E.PASS_TO_TU, _E.SEND_ACK, timers=(("start", "D"),)),
        (_X, Input.RECV_3XX_6XX): _t(_X, _E.RESEND_ACK),
        (_X, Input.RECV_1XX): _t(_X, *_ABSORB),
        (_X, Input.RECV_2XX): _t(_X, *_ABSORB),
        (_X, Input.TIMER_D): _t(_T),
        (_A, Input.RECV_2XX): _t(_A, _E.PASS_TO_TU),
        (_A, Input.RECV_1XX): _t(_A, *_ABSORB),
        (_A, Input.RECV_3XX_6XX): _t(_A, *_ABSORB),
        (_A, Input.TIMER_M): _t(_T),
        (_C, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_P, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_X, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_A, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
    }

    def _check_method(self, method: str) -> None:
        if method != "INVITE":
            raise LocalProtocolError(
                f"InviteClientTransaction is for INVITE, got {method}; use NonInviteClientTransaction"
            )


class NonInviteClientTransaction(ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 17.1.2, figure 6).

    Parameters
    ----------
    request : Request
        Any request but INVITE and ACK (ACK is never sent in a client transaction).
    reliable : bool
        True on TCP/TLS/SCTP/WS: no Timer E, Timer K is 0.
    timers : TimerConfig, optional

    Notes
    -----
    Timer E doubles from T1 up to T2 in Trying; after a 1xx the running Timer E keeps
    its deadline and every later firing restarts it at T2 (17.1.2.2).
    """

    INPUTS = (
        Input.START, Input.RECV_1XX, Input.RECV_2XX, Input.RECV_3XX_6XX,
        Input.TIMER_E, Input.TIMER_F, Input.TIMER_K, Input.TRANSPORT_ERROR,
    )  # fmt: skip
    STATES = (_I, _TR, _P, _X, _T)
    STATE_TIMERS = {_TR: frozenset("EF"), _P: frozenset("EF"), _X: frozenset("K")}
    TABLE = {
        (_I, Input.START): _t(_TR, _E.SEND_REQUEST, timers=(("start", "E"), ("start", "F"))),
        (_TR, Input.TIMER_E): _t(_TR, _E.RETRANSMIT_REQUEST, timers=(("backoff", "E"),)),
        (_P, Input.TIMER_E): _t(_P, _E.RETRANSMIT_REQUEST, timers=(("t2", "E"),)),
        (_TR, Input.TIMER_F): _t(_T, _E.REPORT_TIMEOUT),
        (_P, Input.TIMER_F): _t(_T, _E.REPORT_TIMEOUT),
        (_TR, Input.RECV_1XX): _t(_P, _E.PASS_TO_TU),
        (_P, Input.RECV_1XX): _t(_P, _E.PASS_TO_TU),
        (_TR, Input.RECV_2XX): _t(_X, _E.PASS_TO_TU, timers=(("start", "K"),)),
        (_P, Input.RECV_2XX): _t(_X, _E.PASS_TO_TU, timers=(("start", "K"),)),
        (_TR, Input.RECV_3XX_6XX): _t(_X, _E.PASS_TO_TU, timers=(("start", "K"),)),
        (_P, Input.RECV_3XX_6XX): _t(_X, _E.PASS_TO_TU, timers=(("start", "K"),)),
        (_X, Input.RECV_1XX): _t(_X, *_ABSORB),
        (_X, Input.RECV_2XX): _t(_X, *_ABSORB),
        (_X, Input.RECV_3XX_6XX): _t(_X, *_ABSORB),
        (_X, Input.TIMER_K): _t(_T),
        (_TR, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_P, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_X, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
    }

    def _check_method(self, method: str) -> None:
        if method == "INVITE":
            raise LocalProtocolError("NonInviteClientTransaction cannot send INVITE; use InviteClientTransaction")
        if method == "ACK":
            raise LocalProtocolError(
                "ACK is never sent in a client transaction (RFC 3261 17.1.1.3, 13.2.2.4); send it directly"
            )


# ---------------------------------------------------------------------------------------
# Server transactions
# ---------------------------------------------------------------------------------------


class ServerTransaction(_Transaction):
    """What both server transactions share: request matching and TU responses."""

    ROLE = "server"

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig | None = None) -> None:
        super().__init__(request, reliable=reliable, timers=timers)
        self._check_method(request.method)
        try:
            self.key = transaction_key_for_request(request)
            self._request_to_tag = request.to.tag
            if request.cseq.method != request.method:
                raise RemoteProtocolError(
                    f"CSeq method {request.cseq.method} differs from request method {request.method}"
                )
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot build a transaction on a malformed request: {exc}") from None
        self._last_provisional: Response | None = None
        self._last_final: Response | None = None

    def _check_method(self, method: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def last_response(self) -> Response | None:
        """The last response sent (final if any, else provisional), or None."""
        return self._last_final or self._last_provisional

    def matches(self, request: Request) -> bool:
        """Whether ``request`` belongs to this transaction (RFC 3261 17.2.3).

        With a magic-cookie branch, equal :func:`transaction_key_for_request` keys
        suffice. With RFC 2543 keys the To tag is checked too: a retransmission carries
        the original request's To tag, an ACK the To tag of our final response.
        """
        try:
            if transaction_key_for_request(request) != self.key:
                return False
            if not self.key.rfc2543:
                return True
            tag = request.to.tag
        except ProtocolError:
            return False
        if request.method == "ACK":
            expected = self._last_final.to.tag if self._last_final is not None else None
            return expected is None or tag == expected
        return tag == self._request_to_tag

    def receive(self, message: Request | Response, now: float) -> list[Event]:
        """A request from the transport: the first one (Init), a retransmission or an ACK.

        Parameters
        ----------
        message : Request
            Routed here with :func:`transaction_key_for_request` / :meth:`matches`.
        now : float
            Current time (s).

        Returns
        -------
        list of Event

        Raises
        ------
        LocalProtocolError
            If it is a response, does not match this transaction, or the input has no
            entry in the current state.
        RemoteProtocolError
            If its headers are malformed, or (a retransmission, not an ACK) its CSeq
            number differs from the original request's though the branch matches.
        """
        now = self._advance(now)
        if not isinstance(message, Request):
            raise LocalProtocolError(
                f"{type(self).__name__} receives requests only, got {type(message).__name__}; "
                "route responses to client transactions"
            )
        if not self.matches(message):
            raise LocalProtocolError(
                f"{message.method} request does not belong to this transaction ({self.key}); "
                "route requests with transaction_key_for_request and matches()"
            )
        number = message.cseq.number
        # 17.2.3 matches an ACK by branch, sent-by and method alone; its CSeq number is
        # not compared (RFC 2543 keys hold the number, so it is equal here anyway).
        if number != self._cseq_number and message.method != "ACK":
            raise RemoteProtocolError(
                f"request CSeq number {number} differs from the transaction's {self._cseq_number} "
                "although its branch matches",
                status_code=400,
            )
        inp = Input.ACK if message.method == "ACK" else Input.REQUEST
        return self._input(inp, now, message)

    def send_response(self, response: Response, now: float) -> list[Event]:
        """Send a response from the TU.

        Parameters
        ----------
        response : Response
            Must carry the request's Via (same top branch) and CSeq.
        now : float
            Current time (s).

        Returns
        -------
        list of Event

        Raises
        ------
        LocalProtocolError
            If it is not a response to this request, or the state does not allow it
            (a second final response, a response before the request was received, ...).
        """
        now = self._advance(now)
        if not isinstance(response, Response):
            raise LocalProtocolError(f"send_response needs a Response, got {type(response).__name__}")
        try:
            branch = _top_via(response).branch
            cseq = response.cseq
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"the TU's response is malformed: {exc}") from None
        mine = self._top.branch
        if (branch or "").lower() != (mine or "").lower() or cseq.method != self.request.method or (
            cseq.number != self._cseq_number
        ):
            raise LocalProtocolError(
                f"response (branch {branch!r}, CSeq {cseq.number} {cseq.method}) does not answer this "
                f"transaction's request (branch {mine!r}, CSeq {self._cseq_number} {self.request.method}); "
                "build it with build_response(request, ...)"
            )
        code = response.status_code
        inp = Input.TU_1XX if code < 200 else Input.TU_2XX if code < 300 else Input.TU_3XX_6XX
        return self._input(inp, now, response)

    def _role_effect(
        self, effect: Effect, now: float, message: Request | Response | None, events: list[Event]
    ) -> None:
        if effect is Effect.PASS_TO_TU:
            assert isinstance(message, Request)
            events.append(RequestReceived(message, self.key))
        elif effect is Effect.SEND_RESPONSE:
            assert isinstance(message, Response)
            if message.status_code < 200:
                retransmission = self._last_provisional is not None and message == self._last_provisional
                self._last_provisional = message
                self._timers.pop(TRYING_TIMER, None)
            else:
                retransmission = self._last_final is not None and message == self._last_final
                self._last_final = message
            self._send(message, retransmission, now)
        elif effect is Effect.RESEND_PROVISIONAL:
            if self._last_provisional is None:
                self._role_effect(Effect.SEND_TRYING, now, None, events)
            else:
                self._send(self._last_provisional, True, now)
        elif effect is Effect.RESEND_FINAL:
            assert self._last_final is not None
            self._send(self._last_final, True, now)
        elif effect is Effect.SEND_TRYING:
            self._last_provisional = build_response(self.request, 100, "Trying")
            self._timers.pop(TRYING_TIMER, None)
            self._send(self._last_provisional, False, now)
        else:  # pragma: no cover - table typo
            raise LocalProtocolError(f"{type(self).__name__} cannot perform {effect}")


_CF = State.CONFIRMED


class InviteServerTransaction(ServerTransaction):
    """INVITE server transaction (RFC 3261 17.2.1, figure 7; RFC 6026 7.1).

    Parameters
    ----------
    request : Request
        The INVITE that created it. Feed it with :meth:`receive` first.
    reliable : bool
        True on TCP/TLS/SCTP/WS: no Timer G, Timer I is 0.
    timers : TimerConfig, optional
    trying_delay : float or None, optional
        Seconds without a TU response before 100 Trying is sent (default 0.2, the
        RFC's 200 ms); 0 sends it at once, None never.

    Notes
    -----
    300-699 from the TU: Completed, retransmitted on Timer G (T1 doubling to T2) until
    an ACK (Confirmed, Timer I) or Timer H (timeout). 2xx from the TU: Accepted (RFC 6026)
    until Timer L; INVITE retransmissions are absorbed, later 2xx from the TU are sent,
    an ACK that matches is passed to the TU.
    """

    INPUTS = (
        Input.REQUEST, Input.ACK, Input.TU_1XX, Input.TU_2XX, Input.TU_3XX_6XX,
        Input.TIMER_TRYING, Input.TIMER_G, Input.TIMER_H, Input.TIMER_I, Input.TIMER_L,
        Input.TRANSPORT_ERROR,
    )  # fmt: skip
    STATES = (_I, _P, _X, _CF, _A, _T)
    STATE_TIMERS = {_P: frozenset({TRYING_TIMER}), _X: frozenset("GH"), _CF: frozenset("I"), _A: frozenset("L")}
    TABLE = {
        (_I, Input.REQUEST): _t(_P, _E.PASS_TO_TU, timers=(("start", TRYING_TIMER),)),
        (_P, Input.TIMER_TRYING): _t(_P, _E.SEND_TRYING),
        (_P, Input.REQUEST): _t(_P, _E.RESEND_PROVISIONAL),
        (_P, Input.ACK): _t(_P, *_ABSORB),  # an ACK before any final response: peer's mistake
        (_P, Input.TU_1XX): _t(_P, _E.SEND_RESPONSE),
        (_P, Input.TU_2XX): _t(_A, _E.SEND_RESPONSE, timers=(("start", "L"),)),
        (_P, Input.TU_3XX_6XX): _t(_X, _E.SEND_RESPONSE, timers=(("start", "G"), ("start", "H"))),
        (_X, Input.REQUEST): _t(_X, _E.RESEND_FINAL),
        (_X, Input.ACK): _t(_CF, timers=(("start", "I"),)),
        (_X, Input.TIMER_G): _t(_X, _E.RESEND_FINAL, timers=(("backoff", "G"),)),
        (_X, Input.TIMER_H): _t(_T, _E.REPORT_TIMEOUT),
        (_CF, Input.REQUEST): _t(_CF, *_ABSORB),
        (_CF, Input.ACK): _t(_CF, *_ABSORB),
        (_CF, Input.TIMER_I): _t(_T),
        (_A, Input.REQUEST): _t(_A, *_ABSORB),
        (_A, Input.ACK): _t(_A, _E.PASS_TO_TU),
        (_A, Input.TU_2XX): _t(_A, _E.SEND_RESPONSE),
        (_A, Input.TIMER_L): _t(_T),
        (_P, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_X, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_CF, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_A, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
    }

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        timers: TimerConfig | None = None,
        trying_delay: float | None = 0.2,
    ) -> None:
        super().__init__(request, reliable=reliable, timers=timers)
        if trying_delay is not None:
            trying_delay = _check_now(trying_delay)
            if trying_delay < 0:
                raise ParameterError(f"trying_delay must be >= 0 s or None, got {trying_delay!r}")
        self.trying_delay = trying_delay

    def _check_method(self, method: str) -> None:
        if method != "INVITE":
            raise LocalProtocolError(
                f"InviteServerTransaction is for INVITE, got {method}; use NonInviteServerTransaction"
            )

    def _initial(self, name: str) -> float | None:
        if name == TRYING_TIMER:
            return self.trying_delay
        return super()._initial(name)


class NonInviteServerTransaction(ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 17.2.2, figure 8).

    Parameters
    ----------
    request : Request
        The request that created it (not INVITE, not ACK). Feed it with :meth:`receive`.
    reliable : bool
        True on TCP/TLS/SCTP/WS: Timer J is 0.
    timers : TimerConfig, optional

    Notes
    -----
    Retransmissions are absorbed in Trying, answered with the last provisional in
    Proceeding and with the final response in Completed (until Timer J).
    """

    INPUTS = (
        Input.REQUEST, Input.TU_1XX, Input.TU_2XX, Input.TU_3XX_6XX, Input.TIMER_J, Input.TRANSPORT_ERROR,
    )  # fmt: skip
    STATES = (_I, _TR, _P, _X, _T)
    STATE_TIMERS = {_X: frozenset("J")}
    TABLE = {
        (_I, Input.REQUEST): _t(_TR, _E.PASS_TO_TU),
        (_TR, Input.REQUEST): _t(_TR, *_ABSORB),
        (_TR, Input.TU_1XX): _t(_P, _E.SEND_RESPONSE),
        (_TR, Input.TU_2XX): _t(_X, _E.SEND_RESPONSE, timers=(("start", "J"),)),
        (_TR, Input.TU_3XX_6XX): _t(_X, _E.SEND_RESPONSE, timers=(("start", "J"),)),
        (_P, Input.REQUEST): _t(_P, _E.RESEND_PROVISIONAL),
        (_P, Input.TU_1XX): _t(_P, _E.SEND_RESPONSE),
        (_P, Input.TU_2XX): _t(_X, _E.SEND_RESPONSE, timers=(("start", "J"),)),
        (_P, Input.TU_3XX_6XX): _t(_X, _E.SEND_RESPONSE, timers=(("start", "J"),)),
        (_X, Input.REQUEST): _t(_X, _E.RESEND_FINAL),
        (_X, Input.TIMER_J): _t(_T),
        (_TR, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_P, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
        (_X, Input.TRANSPORT_ERROR): _TERMINATE_ON_TRANSPORT_ERROR,
    }

    def _check_method(self, method: str) -> None:
        if method == "INVITE":
            raise LocalProtocolError("NonInviteServerTransaction cannot serve INVITE; use InviteServerTransaction")
        if method == "ACK":
            raise LocalProtocolError(
                "ACK never creates a server transaction (RFC 3261 17.2.3); pass an unmatched ACK to the dialog"
            )


Transaction = Union[
    InviteClientTransaction, NonInviteClientTransaction, InviteServerTransaction, NonInviteServerTransaction
]


# ---------------------------------------------------------------------------------------
# The table of live transactions
# ---------------------------------------------------------------------------------------


class TransactionTable:
    """Live transactions by key: routes incoming messages, runs timers, drops the dead.

    Sans-IO like the transactions: ``receive(message, now)``, ``handle_timer(now)``,
    ``next_timer()``, ``messages_to_send()``. Terminated transactions are removed at the
    end of every call; the messages they produced first are kept for
    :meth:`messages_to_send`.

    The work per call does not depend on how many transactions are alive (a UDP agent
    keeps every finished transaction for up to 64*T1 = 32 s, so thousands at a few
    hundred calls/s): a transaction that ran (through the table or driven directly) puts
    itself on a *ready list*, and only those are visited to collect output, drop the
    terminated and re-arm their deadline in a *deadline heap* (stale heap entries are
    skipped lazily). :attr:`visits` counts the transactions visited this way, for tests
    that check the per-message work.

    Parameters
    ----------
    reliable : bool, optional
        Default transport kind for :meth:`open_client` / :meth:`open_server`.
    timers : TimerConfig, optional
        Default T1/T2/T4 for transactions opened here.

    Examples
    --------
    >>> table = TransactionTable()
    >>> len(table), table.next_timer() is None
    (0, True)
    """

    def __init__(self, *, reliable: bool = False, timers: TimerConfig | None = None) -> None:
        if not isinstance(reliable, bool):
            raise ParameterError(f"reliable must be True or False, got {reliable!r}")
        self.reliable = reliable
        self.timers = timers
        self._txns: dict[TransactionKey, _Transaction] = {}
        self._outbox: list[OutgoingMessage] = []
        self._ready: list[_Transaction] = []  # transactions that ran since the last _collect
        self._heap: list[tuple[float, int, _Transaction]] = []  # (deadline s, seq, tx), lazily pruned
        self._seq = itertools.count()
        #: Transactions visited by the bookkeeping (ready list + heap pops), cumulative.
        self.visits = 0

    # -- container -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._txns)

    def __contains__(self, key: object) -> bool:
        return key in self._txns

    def get(self, key: TransactionKey) -> _Transaction | None:
        """The live transaction with this key, or None."""
        return self._txns.get(key)

    def transactions(self) -> list[_Transaction]:
        """Live transactions, oldest first."""
        return list(self._txns.values())

    def add(self, transaction: _Transaction) -> None:
        """Register a transaction (created by the caller).

        Raises
        ------
        LocalProtocolError
            If a live transaction already has its key, or it is terminated.
        ParameterError
            If it is not a transaction.
        """
        if not isinstance(transaction, _Transaction):
            raise ParameterError(f"add needs a transaction, got {type(transaction).__name__}")
        if transaction.terminated:
            raise LocalProtocolError("cannot add a terminated transaction")
        if transaction.key in self._txns:
            raise LocalProtocolError(
                f"a live transaction already has key {transaction.key}; use a new branch (new_branch(rng))"
            )
        if transaction._owner is not None and transaction._owner is not self:
            raise LocalProtocolError("this transaction already belongs to another TransactionTable")
        self._txns[transaction.key] = transaction
        transaction._owner = self
        transaction._heap_deadline = None
        if not transaction._queued:
            transaction._queued = True
            self._ready.append(transaction)

    def open_client(
        self, request: Request, now: float, *, reliable: bool | None = None, timers: TimerConfig | None = None
    ) -> tuple[ClientTransaction, list[Event]]:
        """Create, register and start the right client transaction for ``request``.

        Returns
        -------
        (ClientTransaction, list of Event)
        """
        cls = InviteClientTransaction if getattr(request, "method", None) == "INVITE" else NonInviteClientTransaction
        tx = cls(request, reliable=self.reliable if reliable is None else reliable, timers=timers or self.timers)
        self.add(tx)
        events = tx.start(now)
        self._collect()
        return tx, events

    def open_server(
        self,
        request: Request,
        now: float,
        *,
        reliable: bool | None = None,
        timers: TimerConfig | None = None,
        trying_delay: float | None = 0.2,
    ) -> tuple[ServerTransaction, list[Event]]:
        """Create, register and feed the right server transaction for a new ``request``.

        Returns
        -------
        (ServerTransaction, list of Event)
            The events hold :class:`RequestReceived`.
        """
        rel = self.reliable if reliable is None else reliable
        tm = timers or self.timers
        tx: ServerTransaction
        if getattr(request, "method", None) == "INVITE":
            tx = InviteServerTransaction(request, reliable=rel, timers=tm, trying_delay=trying_delay)
        else:
            tx = NonInviteServerTransaction(request, reliable=rel, timers=tm)
        self.add(tx)
        events = tx.receive(request, now)
        self._collect()
        return tx, events

    # -- routing -------------------------------------------------------------------------
    def match(self, message: Request | Response) -> _Transaction | None:
        """The live transaction ``message`` belongs to, or None.

        Raises
        ------
        RemoteProtocolError
            If the headers needed for matching are missing or malformed.
        """
        if isinstance(message, Response):
            key = transaction_key_for_response(message)
            return None if key is None else self._txns.get(key)
        if isinstance(message, Request):
            tx = self._txns.get(transaction_key_for_request(message))
            if isinstance(tx, ServerTransaction) and tx.matches(message):
                return tx
            return None
        raise ParameterError(f"match needs a Request or Response, got {type(message).__name__}")

    def match_cancelled(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2), or None.

        Same matching as for the INVITE's own retransmissions (17.2.3) with the method
        taken as INVITE; the CANCEL itself still gets its own (non-INVITE) transaction.

        Raises
        ------
        LocalProtocolError
            If ``cancel`` is not a CANCEL request.
        RemoteProtocolError
            If its headers needed for matching are malformed.
        """
        if not isinstance(cancel, Request) or cancel.method != "CANCEL":
            raise LocalProtocolError("match_cancelled needs a CANCEL request")
        key = transaction_key_for_request(cancel)
        tx = self._txns.get(TransactionKey(key.role, "INVITE", key.branch, key.sent_by, key.legacy))
        if isinstance(tx, InviteServerTransaction):
            to_tag = cancel.to.tag
            if not key.rfc2543 or to_tag == tx._request_to_tag:
                return tx
        return None

    def receive(self, message: Request | Response, now: float) -> list[Event]:
        """Route a message from the transport.

        Returns
        -------
        list of Event
            The transaction's events, or one :class:`UnmatchedRequest` /
            :class:`StrayResponse`.

        Raises
        ------
        RemoteProtocolError
            A malformed message, or a CSeq number that contradicts its branch.
        """
        try:
            tx = self.match(message)
            if tx is None:
                if isinstance(message, Request):
                    return [UnmatchedRequest(message, transaction_key_for_request(message))]
                key = transaction_key_for_response(message)
                why = "no branch in the top Via" if key is None else "no live client transaction has this branch and method"
                return [StrayResponse(message, why)]
            return tx.receive(message, now)
        finally:
            self._collect()

    def send_response(self, key: TransactionKey, response: Response, now: float) -> list[Event]:
        """Send a TU response on the server transaction ``key``.

        Raises
        ------
        LocalProtocolError
            If no live server transaction has this key, or the transaction refuses it.
        """
        tx = self._txns.get(key)
        if not isinstance(tx, ServerTransaction):
            raise LocalProtocolError(f"no live server transaction has key {key}")
        try:
            return tx.send_response(response, now)
        finally:
            self._collect()

    def transport_error(self, key: TransactionKey, now: float) -> list[Event]:
        """Report a transport failure to transaction ``key`` (nothing if it is gone)."""
        tx = self._txns.get(key)
        if tx is None:
            return []
        try:
            return tx.transport_error(now)
        finally:
            self._collect()

    def handle_timer(self, now: float) -> list[Event]:
        """Run the due timers of every transaction (s); returns their events.

        Pops the deadline heap only: transactions with nothing due are not visited.
        """
        now = _check_now(now)
        events: list[Event] = []
        heap = self._heap
        try:
            self._collect()
            while heap and heap[0][0] <= now:
                deadline, _, tx = heapq.heappop(heap)
                self.visits += 1
                if tx._owner is not self or tx._heap_deadline != deadline:
                    continue  # stale: re-armed, fired or gone since this entry was pushed
                tx._heap_deadline = None
                events.extend(tx.handle_timer(now))  # puts it on the ready list
        finally:
            self._collect()
        return events

    def next_timer(self) -> float | None:
        """Earliest deadline over all live transactions (s), or None."""
        self._collect()
        heap = self._heap
        while heap:
            deadline, _, tx = heap[0]
            if tx._owner is self and tx._heap_deadline == deadline:
                return deadline
            heapq.heappop(heap)
            self.visits += 1
        return None

    def messages_to_send(self) -> list[OutgoingMessage]:
        """Drain the messages of every transaction, in the order they were produced."""
        self._collect()
        out, self._outbox = self._outbox, []
        return out

    def _collect(self) -> None:
        """Visit the transactions that ran: take their output, drop the terminated, re-arm."""
        if not self._ready:
            return
        ready, self._ready = self._ready, []
        heap = self._heap
        self.visits += len(ready)
        for tx in ready:
            tx._queued = False
            if tx._outbox:
                self._outbox.extend(tx.messages_to_send())
            if tx._owner is not self:
                continue
            if tx._state is State.TERMINATED:
                if self._txns.get(tx.key) is tx:
                    del self._txns[tx.key]
                tx._owner = None
                tx._heap_deadline = None
                continue
            nt = min(tx._timers.values()) if tx._timers else None
            if nt != tx._heap_deadline:
                tx._heap_deadline = nt
                if nt is not None:
                    heapq.heappush(heap, (nt, next(self._seq), tx))
        n = len(heap)
        if n > 64 and n > 4 * len(self._txns):
            # Many stale entries (timers re-armed or transactions gone early): rebuild.
            self._heap = [e for e in heap if e[2]._owner is self and e[2]._heap_deadline == e[0]]
            heapq.heapify(self._heap)
