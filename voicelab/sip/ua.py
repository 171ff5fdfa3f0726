"""A sans-IO SIP user agent core (RFC 3261 sections 8, 9, 11, 12, 13, 14, 15).

:class:`UserAgent` is the "transaction user" of RFC 3261: it owns the calls and their
dialogs, builds requests and responses, and runs on top of the transaction layer
(:class:`~voicelab.sip.transaction.TransactionTable`). Like aioquic's
``QuicConnection`` it does no I/O and never reads a clock::

    ua = UserAgent(local_uri="sip:alice@192.0.2.1", local_addr=("192.0.2.1", 5060), rng=1,
                   codecs=["opus", "pcmu"])
    call = ua.invite("sip:bob@192.0.2.2", now=0.0)
    for data, addr in ua.datagrams_to_send():   # the adapter sends them
        ...
    ua.receive(data, addr, now)                 # bytes from the network
    ua.handle_timer(now)                        # at ua.next_timer()
    while (event := ua.next_event()) is not None:
        ...                                     # IncomingCall, CallAnswered, CallEnded, ...

Inputs: :meth:`UserAgent.receive`, :meth:`UserAgent.handle_timer` and the application
calls (:meth:`~UserAgent.invite`, :meth:`~UserAgent.answer`, :meth:`~UserAgent.reject`,
:meth:`~UserAgent.cancel`, :meth:`~UserAgent.bye`, :meth:`~UserAgent.reinvite`,
:meth:`~UserAgent.info`, :meth:`~UserAgent.options`, :meth:`~UserAgent.register`), each
taking ``now`` in seconds from one monotonic clock. Outputs:
:meth:`~UserAgent.datagrams_to_send` (``(bytes, addr)`` pairs),
:meth:`~UserAgent.next_timer` (absolute deadline in s, or None) and
:meth:`~UserAgent.next_event` (frozen dataclasses named as past-tense facts).
:attr:`UserAgent.trace` records every message sent and received (for ladder diagrams).

What the core does (and where the RFC says so)
----------------------------------------------
- 8.1 / 8.2: builds requests (Via with ``rport``, From tag, Call-ID, CSeq, Max-Forwards,
  Contact), screens incoming requests: 405/501 for methods it does not take, 416 for a
  Request-URI scheme other than sip/sips, 482 for a merged request (8.2.2.2), 420 for an
  unknown ``Require`` option; a malformed request gets a 400 (505/513/413 when that is
  the cause) built from the header lines that could be read (18.3, 8.2.6.2). When the
  framing itself is broken (a Content-Length past the datagram, not 1*DIGIT, too many
  header fields, a message over the size limit) the start line and header lines are
  read leniently for Via, From, To, Call-ID and CSeq; the request is dropped only when
  those cannot be read (then no response can be built), and an ACK is never answered.
  :meth:`~UserAgent.receive` never raises on input bytes.
- RFC 3581 / 18.2.1: the top Via of every incoming request gets ``received`` (source
  address differs from sent-by) and ``rport`` (when asked for); 18.2.2: responses go to
  ``received``:``rport`` (or ``received``:sent-by port); on TCP/TLS/WS to the source.
- 9: CANCEL is sent once a provisional response arrived (9.1 SHOULD NOT before); an
  incoming CANCEL gets 200 and the INVITE 487 (481 when it matches nothing).
- 12: dialogs (:mod:`voicelab.sip.dialog`); an in-dialog request for an unknown dialog
  gets 481, one with a lower CSeq 500.
- 13: 2xx to INVITE is retransmitted by the UAS core (T1 doubling to T2) until the
  ACK comes, for at most 64*T1 (then BYE, 13.3.1.4); the UAC ACKs every 2xx, also
  retransmissions and forked 2xx (a second dialog is ACKed and hung up, 13.2.2.4).
- 14: re-INVITE (hold/resume, codec change); 491 to a re-INVITE while ours is pending,
  500 with Retry-After while an earlier INVITE from the peer is unanswered.
- 15: BYE; a UAS that answered waits for the ACK before sending its BYE; a UAC that has
  no final response yet cancels instead.
- 11: OPTIONS inside and outside dialogs; 10 (client side): REGISTER with refresh of
  Call-ID/CSeq and one retry with Min-Expires on 423.

Offer/answer (RFC 3264) uses :mod:`voicelab.sdp` when the UA is given ``codecs``: it
makes offers, answers offers (also offers in a 2xx: the answer goes in the ACK) and
stores the :class:`~voicelab.sdp.NegotiatedMedia` in :attr:`Call.media`. The
application can pass SDP bytes instead everywhere.

Authentication hooks (kept small on purpose):

- client: ``credentials_for(realm) -> (username, password) | None``. On 401/407 the
  request is sent again by :func:`voicelab.sip.auth.authorize` (imported lazily: new
  branch, CSeq + 1, ``Authorization`` / ``Proxy-Authorization``); when that module is
  missing, no credentials are given, or the retry is challenged again, the request
  fails with the 401/407 (:class:`CallFailed`, :class:`RegistrationResult`, ...).
- server: ``authenticate(request, now) -> Response | None``; a Response (normally a
  401 built with :func:`~voicelab.sip.transaction.build_response`) is sent instead of
  processing the request.

Measurement hooks: :attr:`Call.times` holds when the INVITE was sent, the first 18x and
the 2xx arrived, and the ACK was sent (UAC) / received (UAS);
:attr:`CallTimes.setup_ms` (INVITE -> ACK sent) and
:attr:`CallTimes.post_dial_delay_ms` (INVITE -> first 180/183/2xx).

Addresses are opaque ``(host, port)`` tuples. The next hop of a request is found by
``resolve(uri) -> addr`` (default :func:`default_resolve`: ``maddr`` or host, port or
5060/5061, no DNS); an asyncio adapter that meets host names passes a resolver that
looks them up (RFC 3263) before calling the core, or resolves in its send path.

Why our own: no maintained sans-IO SIP UA exists for Python (pjsua2 and others bundle
their own I/O and threads); the lab needs one it can run on a virtual clock.
"""

from __future__ import annotations

import enum
import heapq
import importlib
import itertools
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import LocalProtocolError, ParameterError, ProtocolError, RemoteProtocolError, VoicelabError
from ..sdp import SessionDescription, apply_answer, create_answer, create_offer
from .abnf import WSP, is_ipv4, is_ipv6, is_token, split_list
from .dialog import Dialog, DialogId, format_name_addr
from .headers import HeaderField, Headers, header_key, parse_call_id, parse_cseq, parse_name_addr, parse_via
from .message import DEFAULT_LIMITS, Request, Response, parse_message
from .occ import LossThrottle, client_asks, feedback_from_params
from .occ import request_params as occ_request_params
from .timers import TimerConfig, derive_timers
from .transaction import (
    OutgoingMessage,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTable,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    UnmatchedRequest,
    build_cancel,
    _response_fields,
    build_response,
    new_branch,
)
from .uri import SipUri, Uri, parse_uri

__all__ = [
    "UserAgent",
    "Call",
    "CallState",
    "CallTimes",
    "RequestHandle",
    "TraceEntry",
    "default_resolve",
    "REASON_PHRASES",
    "IncomingCall",
    "CallRinging",
    "CallAnswered",
    "CallEstablished",
    "CallFailed",
    "CallCancelled",
    "CallEnded",
    "ReinviteReceived",
    "ReinviteAnswered",
    "ReinviteFailed",
    "InfoReceived",
    "RequestAnswered",
    "OptionsAnswered",
    "RegistrationResult",
    "MessageRejected",
    "Event",
]

Addr = tuple  # (host, port) or whatever the adapter uses; opaque here

TRANSPORTS = ("udp", "tcp", "tls", "ws")
#: Methods this UA core handles as a UAS.
ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO")
_ALLOW_VALUE = ", ".join(ALLOWED)
#: Methods it knows but does not take (405 with Allow); others get 501.
KNOWN_NOT_ALLOWED = ("REGISTER", "PRACK", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH")
#: Option tags we support (Supported; anything else in Require gets 420).
SUPPORTED: tuple[str, ...] = ()

#: Reason phrases (RFC 3261 21) for the codes this core sends.
REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    422: "Session Interval Too Small",
    423: "Interval Too Brief", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip

_AUTO = "auto"


# ---------------------------------------------------------------------------------------
# Calls, handles, trace
# ---------------------------------------------------------------------------------------


class CallState(enum.Enum):
    """Where a call stands, from this UA's point of view."""

    CALLING = "calling"  #: UAC: INVITE sent, nothing but 100 yet
    INCOMING = "incoming"  #: UAS: INVITE received, no response from the application yet
    EARLY = "early"  #: a provisional response (101-199) was sent or received
    ANSWERED = "answered"  #: UAS: 2xx sent, waiting for the ACK
    ESTABLISHED = "established"  #: ACK sent (UAC) or received (UAS)
    ENDING = "ending"  #: BYE sent, waiting for its response
    ENDED = "ended"  #: BYE done (either side)
    FAILED = "failed"  #: final non-2xx, timeout, or rejected
    CANCELLED = "cancelled"  #: CANCEL won before an answer


@dataclass
class CallTimes:
    """Measurement hooks: when things happened to a call (s, the UA's clock).

    Attributes
    ----------
    invite_sent, invite_received : float or None
    first_provisional : float or None
        First 101-199 received (UAC) or sent (UAS).
    first_ringing_or_answer : float or None
        First 180/183 or 2xx received (UAC).
    answered : float or None
        2xx received (UAC) or sent (UAS).
    ack_sent, ack_received : float or None
    ended : float or None
        BYE completed, call failed or cancelled.
    """

    invite_sent: float | None = None
    invite_received: float | None = None
    first_provisional: float | None = None
    first_ringing_or_answer: float | None = None
    answered: float | None = None
    ack_sent: float | None = None
    ack_received: float | None = None
    ended: float | None = None

    @property
    def setup_ms(self) -> float | None:
        """INVITE sent -> ACK sent, in ms (UAC); None until both happened."""
        if self.invite_sent is None or self.ack_sent is None:
            return None
        return (self.ack_sent - self.invite_sent) * 1000.0

    @property
    def post_dial_delay_ms(self) -> float | None:
        """INVITE sent -> first 180/183/2xx received, in ms (UAC); None until then."""
        if self.invite_sent is None or self.first_ringing_or_answer is None:
            return None
        return (self.first_ringing_or_answer - self.invite_sent) * 1000.0


class Call:
    """Handle of one call (one INVITE dialog), made by :meth:`UserAgent.invite` or
    delivered in :class:`IncomingCall`. Read its attributes; change it only through the
    :class:`UserAgent` methods.

    Attributes
    ----------
    id : str
        ``"call-N"``, unique within the UA.
    role : {"uac", "uas"}
    call_id : str
        The SIP Call-ID.
    state : CallState
    dialog : Dialog or None
        The confirmed dialog, or the latest early one.
    remote_uri : str
        Who we called / who called us.
    local_sdp, remote_sdp : bytes or None
        The last session description sent / received.
    media : NegotiatedMedia or None
        The negotiated stream from our side (when the UA has ``codecs``).
    media_error : str or None
        Why offer/answer failed, if it did.
    times : CallTimes
    status : int or None
        Final status of the initial INVITE.
    """

    def __init__(self, id: str, role: str, call_id: str, remote_uri: str) -> None:
        self.id = id
        self.role = role
        self.call_id = call_id
        self.remote_uri = remote_uri
        self.state = CallState.CALLING if role == "uac" else CallState.INCOMING
        self.dialog: Dialog | None = None
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        self.media: Any = None
        self.media_error: str | None = None
        self.times = CallTimes()
        self.status: int | None = None
        # -- internal ------------------------------------------------------------------
        self._invite: Request | None = None  # initial INVITE (sent or received)
        self._invite_key: TransactionKey | None = None  # its transaction
        self._invite_dest: Addr | None = None
        self._codecs: Sequence[Any] | None = None
        self._media_port: int | None = None
        self._local_tag: str | None = None  # UAS
        self._early: dict[str, Dialog] = {}  # UAC: remote tag -> early dialog
        self._confirmed_tag: str | None = None
        self._pending_offer: bytes | None = None  # offer we sent, no answer yet
        self._acks: dict[int, tuple[Request, Addr]] = {}  # UAC: INVITE CSeq -> ACK sent
        self._cancel_requested = False
        self._cancel_sent = False
        self._server_invite: tuple[TransactionKey, Request] | None = None  # UAS: unanswered INVITE
        self._awaiting_ack: dict[int, tuple[Response, Addr, TransactionKey]] = {}  # UAS: CSeq -> 2xx
        self._offered_in_2xx: dict[int, bytes] = {}  # UAS: CSeq -> offer we put in the 2xx
        self._reinvite_key: TransactionKey | None = None  # our pending re-INVITE
        self._pending_bye = False
        self._bye_reason = ""
        self._timer_supported = False  # UAS: the caller supports RFC 4028 (Require: timer in our 2xx)
        #: where the initial INVITE came from (UAS) or went to (UAC): the signalling peer
        self.signalling_addr: Addr | None = None
        #: RFC 4028 session timer of the call: (interval s, refresher "uac"/"uas") or None
        self.session_timer: tuple[int, str] | None = None

    @property
    def established(self) -> bool:
        """True in :attr:`CallState.ESTABLISHED`."""
        return self.state is CallState.ESTABLISHED

    @property
    def over(self) -> bool:
        """True once ended, failed or cancelled."""
        return self.state in (CallState.ENDED, CallState.FAILED, CallState.CANCELLED)

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.role} {self.state.value} {self.call_id}>"


@dataclass(frozen=True, eq=False)
class RequestHandle:
    """Handle of a request outside a call's INVITE flow (OPTIONS, REGISTER, INFO).

    Attributes
    ----------
    id : str
        ``"req-N"``.
    method : str
    target : str
        Request-URI (or the call id for in-dialog requests).
    sent_at : float
        ``now`` of the call that sent it (s).
    call : Call or None
        The call for in-dialog requests.
    """

    id: str
    method: str
    target: str
    sent_at: float
    call: Call | None = None


@dataclass(frozen=True)
class TraceEntry:
    """One message sent or received (for ladder diagrams).

    Attributes
    ----------
    time : float
        ``now`` (s).
    direction : {"in", "out"}
    first_line : str
        Request-Line or Status-Line.
    transaction : TransactionKey or None
    dialog : DialogId or None
        From the tags in the message (None without both tags).
    addr : tuple
        Where it came from / went to.
    call_id : str or None
    cseq : str or None
        ``"1 INVITE"``.
    retransmission : bool
        A retransmission we sent.
    """

    time: float
    direction: str
    first_line: str
    transaction: TransactionKey | None
    dialog: DialogId | None
    addr: Any
    call_id: str | None = None
    cseq: str | None = None
    retransmission: bool = False


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IncomingCall:
    """An INVITE arrived; answer it with :meth:`UserAgent.answer` or :meth:`UserAgent.reject`.

    Attributes
    ----------
    call : Call
    request : Request
        The INVITE.
    offer_sdp : bytes or None
        Its SDP offer; None for a delayed offer (we must offer in the 2xx).
    """

    call: Call
    request: Request
    offer_sdp: bytes | None


@dataclass(frozen=True, eq=False)
class CallRinging:
    """A 101-199 response to our INVITE arrived (180 Ringing, 183 Session Progress, ...).

    Attributes
    ----------
    call : Call
    response : Response
    """

    call: Call
    response: Response


@dataclass(frozen=True, eq=False)
class CallAnswered:
    """A 2xx to our INVITE arrived; the ACK was sent in the same step.

    Attributes
    ----------
    call : Call
    response : Response
    answer_sdp : bytes or None
        The SDP in the 2xx (an answer, or an offer when we sent none).
    """

    call: Call
    response: Response
    answer_sdp: bytes | None


@dataclass(frozen=True, eq=False)
class CallEstablished:
    """The call is up: ACK sent (UAC) or received (UAS).

    Attributes
    ----------
    call : Call
    """

    call: Call


@dataclass(frozen=True, eq=False)
class CallFailed:
    """The INVITE ended without a call: a 3xx-6xx, a timeout (408), or our rejection.

    Attributes
    ----------
    call : Call
    status : int
        The final status (408 for a timeout, 503 for a transport failure).
    reason : str
        Reason phrase or what happened, e.g. ``"no final response within 32 s (Timer
        B)"``, ``"transport failed: connection refused"`` or ``"the 2xx carried no SDP
        answer (ACKed and hung up with BYE)"``.
    response : Response or None
    """

    call: Call
    status: int
    reason: str
    #: the final response (None for a timeout or a local failure); a 3xx names its
    #: redirect targets in ``response.contact``
    response: Response | None = None


@dataclass(frozen=True, eq=False)
class CallCancelled:
    """A CANCEL ended the call before it was answered.

    Attributes
    ----------
    call : Call
    by_remote : bool
        True when the peer cancelled (we answered 487), False when we did (487 received).
    """

    call: Call
    by_remote: bool


@dataclass(frozen=True, eq=False)
class CallEnded:
    """An established call ended.

    Attributes
    ----------
    call : Call
    by_remote : bool
        True when the peer sent BYE (or the dialog died on the peer's 408/481).
    reason : str
        ``"BYE"``, ``"BYE timed out"``, ``"no ACK"``, ...
    """

    call: Call
    by_remote: bool
    reason: str = "BYE"


@dataclass(frozen=True, eq=False)
class ReinviteReceived:
    """The peer sent a re-INVITE (hold, resume, codec change, target refresh).

    With ``codecs`` the UA answered it already (:attr:`Call.media` is updated); without,
    answer it with :meth:`UserAgent.answer`.

    Attributes
    ----------
    call : Call
    request : Request
    offer_sdp : bytes or None
    """

    call: Call
    request: Request
    offer_sdp: bytes | None


@dataclass(frozen=True, eq=False)
class ReinviteAnswered:
    """Our re-INVITE got a 2xx (ACK sent); the new session is in effect.

    Attributes
    ----------
    call : Call
    response : Response
    answer_sdp : bytes or None
    """

    call: Call
    response: Response
    answer_sdp: bytes | None


@dataclass(frozen=True, eq=False)
class ReinviteFailed:
    """Our re-INVITE got a non-2xx final response; the old session stays (14.1).

    Attributes
    ----------
    call : Call
    status : int
        491 means glare: try again later (14.1 gives the waiting times).
    reason : str
    """

    call: Call
    status: int
    reason: str


@dataclass(frozen=True, eq=False)
class InfoReceived:
    """An INFO (or other in-dialog non-INVITE request we accept) arrived and got 200.

    Attributes
    ----------
    call : Call
    request : Request
    """

    call: Call
    request: Request


@dataclass(frozen=True, eq=False)
class RequestAnswered:
    """A final response (or timeout) for an in-dialog INFO/OPTIONS we sent.

    Attributes
    ----------
    handle : RequestHandle
    status : int
        408 on timeout.
    response : Response or None
        None on timeout.
    """

    handle: RequestHandle
    status: int
    response: Response | None


@dataclass(frozen=True, eq=False)
class OptionsAnswered:
    """A final response (or timeout) for an out-of-dialog OPTIONS.

    Attributes
    ----------
    handle : RequestHandle
    status : int
        408 on timeout.
    response : Response or None
    rtt_ms : float
        Request sent -> final response, in ms.
    """

    handle: RequestHandle
    status: int
    response: Response | None
    rtt_ms: float


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """The outcome of a REGISTER.

    Attributes
    ----------
    handle : RequestHandle
    status : int
        408 on timeout.
    expires : int or None
        Seconds granted (our Contact's ``expires``, else the Expires header) on 2xx.
    response : Response or None
    """

    handle: RequestHandle
    status: int
    expires: int | None
    response: Response | None


@dataclass(frozen=True, eq=False)
class MessageRejected:
    """Bytes or a message that the UA could not use.

    Attributes
    ----------
    data : bytes
        What arrived (possibly truncated to 2000 bytes).
    addr : tuple
        Where from.
    status : int or None
        The status answered (400, 505, ...), or None when it was dropped.
    reason : str
        One line: what was wrong.
    """

    data: bytes
    addr: Any
    status: int | None
    reason: str


Event = (
    IncomingCall | CallRinging | CallAnswered | CallEstablished | CallFailed | CallCancelled | CallEnded
    | ReinviteReceived | ReinviteAnswered | ReinviteFailed | InfoReceived | RequestAnswered | OptionsAnswered
    | RegistrationResult | MessageRejected
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Pending:
    """What a client transaction is for."""

    kind: str  # invite, reinvite, bye, cancel, options, info, register
    request: Request
    dest: Addr
    call: Call | None = None
    handle: RequestHandle | None = None
    auth_tries: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Timer:
    deadline: float
    seq: int
    kind: str
    call: Call | None = None
    data: Any = None
    cancelled: bool = False

    def __lt__(self, other: "_Timer") -> bool:  # heap order: deadline, then arming order (no tuples built)
        return self.deadline < other.deadline or (self.deadline == other.deadline and self.seq < other.seq)


def default_resolve(uri: Uri, *, transport: str = "udp") -> Addr:
    """Next-hop address of a URI without DNS: ``(maddr or host, port)``.

    The port is the URI's, else 5061 for ``sips`` / TLS and 5060 otherwise. IPv6 hosts
    lose their brackets. A host name is returned as is (the adapter resolves it).

    Raises
    ------
    LocalProtocolError
        For a URI that is not sip/sips (tel: and others need a proxy).
    """
    if not isinstance(uri, SipUri):
        raise LocalProtocolError(f"cannot send to {uri}: only sip/sips URIs can be a next hop; use an outbound proxy")
    host = uri.param("maddr") or uri.host
    secure = uri.scheme == "sips" or transport == "tls" or (uri.param("transport") or "").lower() == "tls"
    port = uri.port if uri.port is not None else (5061 if secure else 5060)
    return (host.strip("[]"), port)


def _reason(status: int) -> str:
    return REASON_PHRASES.get(status, "Unknown")


def _is_sdp(message: Request | Response) -> bool:
    if not message.body:
        return False
    ctype = message.headers.get("Content-Type")
    if ctype is None:
        return True  # RFC 3261 allows the default for INVITE bodies; peers do omit it
    return ctype.split(";")[0].strip().lower() == "application/sdp"


def _session_expires_of(message: Request | Response) -> tuple[int, str | None] | None:
    """``(delta-seconds, refresher or None)`` of a Session-Expires field (RFC 4028 4), or None."""
    value = message.headers.get("Session-Expires") or message.headers.get("x")
    if value is None:
        return None
    parts = [p.strip() for p in value.split(";")]
    if not parts[0].isdigit() or len(parts[0]) > 9:
        return None
    refresher = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "refresher" and v.strip().lower() in ("uac", "uas"):
            refresher = v.strip().lower()
    return int(parts[0]), refresher


def _int_field(message: Request | Response, name: str) -> int | None:
    value = message.headers.get(name)
    if value is None:
        return None
    value = value.split(";")[0].strip()
    return int(value) if value.isdigit() and len(value) <= 9 else None


def _supports(message: Request | Response, tag: str) -> bool:
    fields = message.headers.fields("supported") + message.headers.fields("k") + message.headers.fields("require")
    return any(t.strip().lower() == tag for f in fields for t in split_list(f.value))


def _check_now(now: Any) -> float:
    if isinstance(now, bool):
        raise ParameterError(f"now must be a time in seconds, got {now!r}")
    try:
        t = float(now)
    except (TypeError, ValueError):
        raise ParameterError(f"now must be a time in seconds, got {now!r}") from None
    if not math.isfinite(t):
        raise ParameterError(f"now must be a finite time in seconds, got {now!r}")
    return t


#: The header fields a response copies from its request (RFC 3261 8.2.6.2).
_REPLY_KEYS = ("via", "from", "to", "call-id", "cseq")


def _reply_headers(data: bytes) -> Headers | None:
    """The fields a response needs, read leniently from a request the parser refused.

    RFC 3261 18.3 and 8.2 ask a UAS to answer a malformed request with 400 when it can;
    what it needs is the request's Via, From, To, Call-ID and CSeq (8.2.6.2). This reads
    only the start line and the header lines (a bad Content-Length, a body cut short, too
    many header fields or a broken unrelated header do not matter), and returns those
    fields as written, or None when a response cannot be built: not a request, an ACK
    (never answered, 17.1.1.3), one of the fields missing or not parseable, or more Via
    fields than the parser's header limit. The work is bounded by
    ``DEFAULT_LIMITS.max_message_bytes``: bytes after it are not looked at.
    """
    limits = DEFAULT_LIMITS
    cap = min(len(data), limits.max_message_bytes)
    begin = 0
    while data[begin : begin + 2] == b"\r\n":
        begin += 2
    end = data.find(b"\r\n\r\n", begin, cap)
    if end < 0:  # no end of the header section: use the complete lines only
        end = data.rfind(b"\r\n", begin, cap)
        if end < 0:
            return None
    lines = data[begin:end].split(b"\r\n")
    try:
        parts = lines[0].decode("ascii").split()
    except UnicodeDecodeError:
        return None
    if len(parts) < 3 or not is_token(parts[0]) or parts[0].upper().startswith("SIP/") or parts[0] == "ACK":
        return None
    if not parts[-1].upper().startswith("SIP/"):
        return None
    found: list[list] = []  # [name, [value pieces]] of the fields a response copies
    current: list | None = None
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):  # a folded continuation (RFC 3261 7.3.1)
            if current is not None:
                current[1].append(line)
            continue
        current = None
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        try:
            text_name = name.decode("ascii").rstrip(WSP)
        except UnicodeDecodeError:
            continue
        if header_key(text_name) in _REPLY_KEYS:
            current = [text_name, [value]]
            found.append(current)
    fields: list[HeaderField] = []
    for name, pieces in found:
        try:
            value = " ".join(p.decode("utf-8").strip(WSP) for p in pieces).strip(WSP)
        except UnicodeDecodeError:
            return None
        fields.append(HeaderField(name, value))
    headers = Headers(fields)
    vias = headers.fields("via")
    if not vias or len(vias) > limits.max_headers:
        return None
    try:
        for f in vias:
            parse_via(f.value)
        parse_name_addr(headers.fields("from")[0].value, "From")
        parse_name_addr(headers.fields("to")[0].value, "To")
        parse_call_id(headers.fields("call-id")[0].value)
        parse_cseq(headers.fields("cseq")[0].value)
    except (IndexError, RemoteProtocolError, ParameterError):
        return None
    return headers


def _uri_arg(value: Any, what: str) -> Uri:
    if isinstance(value, str):
        try:
            return parse_uri(value)
        except RemoteProtocolError as exc:
            raise ParameterError(f"{what} is not a valid URI ({exc}); e.g. 'sip:bob@192.0.2.2'") from None
    if isinstance(value, SipUri):
        return value
    raise ParameterError(f"{what} must be a SIP URI string such as 'sip:bob@192.0.2.2', got {type(value).__name__}")


# ---------------------------------------------------------------------------------------
# The user agent
# ---------------------------------------------------------------------------------------


class UserAgent:
    """A SIP user agent core (UAC and UAS) without I/O.

    Parameters
    ----------
    local_uri : str
        Our address of record, written in From (``sip:alice@example.com``).
    local_addr : tuple of (str, int)
        Our transport address: the Via sent-by, and the default Contact host/port.
    rng : numpy.random.Generator or int
        The only randomness (tags, Call-IDs, branches, first CSeq numbers); an int seeds
        a new Generator.
    contact : str, optional
        Contact URI; default ``sip:<user>@<local_addr>`` (plus ``;transport=`` off UDP).
    transport : {"udp", "tcp", "tls", "ws"}, optional
        Written in Via; TCP/TLS/WS are reliable (no retransmissions, RFC 3261 17).
    timers : TimerConfig, optional
        T1/T2/T4 (RFC defaults).
    codecs : sequence of codec specs, optional
        Enables automatic SDP offer/answer (:func:`voicelab.sdp.create_offer` etc.),
        e.g. ``["opus", "pcmu"]``.
    media_address : str, optional
        IP address written in our SDP; default the ``local_addr`` host.
    media_port : int, optional
        RTP port written in our SDP (default 40000).
    display_name : str, optional
        Written in From.
    outbound_proxy : str, optional
        A URI put as a pre-loaded Route (with ``lr``) on out-of-dialog requests
        (RFC 3261 8.1.2).
    credentials_for : callable, optional
        ``credentials_for(realm) -> (username, password) or None`` (client auth; the
        retry is built by :func:`voicelab.sip.auth.authorize`).
    authenticate : callable, optional
        ``authenticate(request, now) -> Response or None`` (server auth).
    resolve : callable, optional
        ``resolve(uri) -> addr`` for next hops; default :func:`default_resolve`.
    trying_delay : float or None, optional
        Seconds before the INVITE server transaction sends 100 Trying (default 0: at
        once; None never; RFC 3261 17.2.1 allows up to 0.2).
    auto_answer_reinvite : bool, optional
        With ``codecs``, answer re-INVITEs automatically (default True).
    user_agent : str, optional
        The User-Agent header (``""`` omits it).
    srtp : bool, optional
        SDES-keyed SRTP (RFC 4568): offers are ``RTP/SAVP`` with ``a=crypto`` lines, and
        offers without crypto are refused with 488 (default False: plain RTP offered,
        SRTP accepted when offered).
    rtcp_mux : bool, optional
        Offer RTCP on the RTP port (``a=rtcp-mux``, RFC 5761). Offers that carry it are
        accepted either way.
    keep_finished_calls : int or None, optional
        How many ended/failed calls the UA remembers (for :attr:`calls`); older ones are
        forgotten so that a long-running agent does not grow. None keeps all.
    trace_limit : int or None, optional
        Keep only the last ``trace_limit`` entries of :attr:`trace` (None: all; 0: no
        trace at all, for load tests).
    session_expires : int or None, optional
        RFC 4028 session timers (s). As UAS: a caller's ``Session-Expires`` below
        ``min_se`` gets 422 with ``Min-SE``; otherwise the 2xx grants at most this
        interval, and the call ends with BYE when it is not refreshed in time (or is
        refreshed by us with a re-INVITE at half the interval when we are the
        refresher). As UAC: INVITEs ask for it (``Supported: timer``), a 422 is retried
        once with the peer's ``Min-SE``, and we refresh when the 2xx makes us the
        refresher. None (default): off (a caller's request is ignored, RFC 4028 9).
    min_se : int, optional
        The shortest session interval accepted, s (RFC 4028: at least 90).
    overload_feedback : bool, optional
        Act as an RFC 7339 overload-control client (:mod:`voicelab.sip.occ`): our Via
        asks for feedback (``;oc;oc-algo="loss"``), each response's is kept per server,
        and a new INVITE to a server that asked for ``oc=P`` is shed locally with
        probability P % (a :class:`CallFailed` 503 ``"shed by us: ..."`` at once, nothing
        sent; the draw is from ``rng``). In-dialog requests are never shed. Default False.

    Raises
    ------
    ParameterError
        On a bad argument (each message says which and what is expected).

    Examples
    --------
    >>> ua = UserAgent(local_uri="sip:alice@192.0.2.1", local_addr=("192.0.2.1", 5060), rng=1)
    >>> call = ua.invite("sip:bob@192.0.2.2", sdp_offer=None, now=0.0)
    >>> [addr for _, addr in ua.datagrams_to_send()], ua.next_timer()
    ([('192.0.2.2', 5060)], 0.5)
    """

    #: Admission hook for new calls (overload control), set after construction:
    #: ``admission(request, now)`` is called for every out-of-dialog INVITE before
    #: anything else is done with it (auth, SDP, the :class:`IncomingCall` event) and
    #: returns None to go on or an object with ``status`` (300-699) and ``headers``
    #: (e.g. :class:`voicelab.sip.overload.Refusal`: 503 + Retry-After), answered at once
    #: on the INVITE's server transaction. In-dialog requests never pass through it.
    admission: Callable[[Request, float], Any] | None = None
    #: RFC 7339 overload feedback (server side), set after construction: called with the
    #: top Via hop of every response whose request asked for it
    #: (:func:`voicelab.sip.occ.client_asks`); returns that hop with the feedback
    #: (:func:`voicelab.sip.occ.with_feedback`). None: such Vias are copied as they are.
    via_feedback: Callable[[str], str] | None = None

    def __init__(
        self,
        *,
        local_uri: str,
        local_addr: tuple[str, int],
        rng: np.random.Generator | int,
        contact: str | None = None,
        transport: str = "udp",
        timers: TimerConfig | None = None,
        codecs: Sequence[Any] | None = None,
        media_address: str | None = None,
        media_port: int = 40000,
        display_name: str | None = None,
        outbound_proxy: str | None = None,
        credentials_for: Callable[[str], tuple[str, str] | None] | None = None,
        authenticate: Callable[[Request, float], Response | None] | None = None,
        resolve: Callable[[Uri], Addr] | None = None,
        trying_delay: float | None = 0.0,
        auto_answer_reinvite: bool = True,
        user_agent: str = "voicelab",
        srtp: bool = False,
        rtcp_mux: bool = False,
        keep_finished_calls: int | None = None,
        trace_limit: int | None = None,
        session_expires: int | None = None,
        min_se: int = 90,
        overload_feedback: bool = False,
    ) -> None:
        if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            rng = np.random.default_rng(int(rng))
        if not isinstance(rng, np.random.Generator):
            raise ParameterError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")
        self.rng = rng
        if not isinstance(transport, str) or transport.lower() not in TRANSPORTS:
            raise ParameterError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        self.transport = transport.lower()
        self.reliable = self.transport != "udp"
        if (
            not isinstance(local_addr, tuple)
            or len(local_addr) < 2
            or not isinstance(local_addr[0], str)
            or not isinstance(local_addr[1], int)
            or not 0 < local_addr[1] < 65536
        ):
            raise ParameterError(f"local_addr must be (host, port) like ('192.0.2.1', 5060), got {local_addr!r}")
        self.local_addr = (local_addr[0], local_addr[1])
        self.local_uri = _uri_arg(local_uri, "local_uri")
        host = self.local_addr[0]
        self._sent_by_host = f"[{host}]" if is_ipv6(host) else host
        if contact is None:
            user = self.local_uri.user if isinstance(self.local_uri, SipUri) and self.local_uri.user else None
            tp = "" if self.transport == "udp" else f";transport={self.transport}"
            contact = f"sip:{user + '@' if user else ''}{self._sent_by_host}:{self.local_addr[1]}{tp}"
        self.contact = _uri_arg(contact, "contact")
        self.timers = timers if timers is not None else TimerConfig()
        if not isinstance(self.timers, TimerConfig):
            raise ParameterError(f"timers must be a TimerConfig, got {type(timers).__name__}")
        self._tv = derive_timers(self.timers, reliable=self.reliable)
        self.codecs = list(codecs) if codecs is not None else None
        if self.codecs is not None and not self.codecs:
            raise ParameterError("codecs must be a non-empty list such as ['opus', 'pcmu'], or None")
        self.media_address = media_address if media_address is not None else host
        if not isinstance(media_port, int) or not 0 < media_port < 65536:
            raise ParameterError(f"media_port must be a port number 1..65535, got {media_port!r}")
        self.media_port = media_port
        self.display_name = display_name
        self.outbound_proxy = None if outbound_proxy is None else _uri_arg(outbound_proxy, "outbound_proxy")
        for name, fn in (("credentials_for", credentials_for), ("authenticate", authenticate), ("resolve", resolve)):
            if fn is not None and not callable(fn):
                raise ParameterError(f"{name} must be callable, got {type(fn).__name__}")
        self.credentials_for = credentials_for
        self.authenticate = authenticate
        self._resolve = resolve
        if trying_delay is not None:
            trying_delay = _check_now(trying_delay)
            if trying_delay < 0:
                raise ParameterError(f"trying_delay must be >= 0 s or None, got {trying_delay!r}")
        self.trying_delay = trying_delay
        self.auto_answer_reinvite = bool(auto_answer_reinvite)
        self.user_agent = user_agent
        self.srtp = bool(srtp)
        self.rtcp_mux = bool(rtcp_mux)
        for name, v in (("keep_finished_calls", keep_finished_calls), ("trace_limit", trace_limit)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ParameterError(f"{name} must be an int >= 0 or None, got {v!r}")
        self.keep_finished_calls = keep_finished_calls
        self._finished: deque[Call] = deque()
        if isinstance(min_se, bool) or not isinstance(min_se, int) or min_se < 90:
            raise ParameterError(f"min_se must be an int >= 90 s (RFC 4028 4), got {min_se!r}")
        if session_expires is not None and (isinstance(session_expires, bool) or not isinstance(session_expires, int)
                                            or session_expires < min_se):
            raise ParameterError(f"session_expires must be an int >= min_se ({min_se} s) or None, got {session_expires!r}")
        self.session_expires, self.min_se = session_expires, min_se
        if not isinstance(overload_feedback, bool):
            raise ParameterError(f"overload_feedback must be True or False, got {overload_feedback!r}")
        #: RFC 7339 client state per server (None: we do not ask for overload feedback).
        self.overload_throttle: LossThrottle | None = LossThrottle() if overload_feedback else None
        self._via_tail = occ_request_params if overload_feedback else ""
        #: responses the adapter could not deliver (see :meth:`transport_error`)
        self.undeliverable_responses = 0
        self._transport_reasons: dict[TransactionKey, str] = {}

        self._table = TransactionTable(reliable=self.reliable, timers=self.timers)
        self._client: dict[TransactionKey, _Pending] = {}
        self._server: dict[TransactionKey, Call | None] = {}
        self._dest: dict[TransactionKey, Addr] = {}
        self._dialogs: dict[DialogId, tuple[Dialog, Call]] = {}
        self._calls: dict[str, Call] = {}
        self._merged: dict[tuple[str, str, int, str], TransactionKey] = {}
        self._merged_rev: dict[TransactionKey, tuple[str, str, int, str]] = {}  # no scan on termination
        self._registrations: dict[str, dict[str, Any]] = {}
        self._timers: list[_Timer] = []
        self._call_timers: dict[str, list[_Timer]] = {}  # call id -> its timers in the heap (no scan to disarm)
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._last_now = -math.inf
        self._src: Addr | None = None
        self.trace: list[TraceEntry] | deque[TraceEntry] = [] if trace_limit is None else deque(maxlen=trace_limit)
        self._no_trace = trace_limit == 0
        # offer bytes (+ codecs, address, port) -> (answer head, answer tail, media): see _initial_answer
        self._answer_templates: dict[tuple, tuple[bytes, bytes, Any]] = {}
        #: initial answers built from a template (the same offer answered before)
        self.answer_template_hits = 0

    # ===================================================================================
    # sans-IO driver API
    # ===================================================================================
    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Feed one datagram (or one framed stream message) that arrived from ``addr``.

        Never raises on the content of ``data``: what cannot be used becomes a
        :class:`MessageRejected` event (and a 400-class response when possible).

        Parameters
        ----------
        data : bytes
        addr : tuple
            Source address ``(host, port)`` (used for ``received``/``rport`` and, on
            reliable transports, as the response destination).
        now : float
            Current time (s).

        Raises
        ------
        ParameterError
            If ``data`` is not bytes, or ``now`` is not finite or goes backwards.
        """
        now = self._tick(now)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ParameterError(f"receive needs bytes, got {type(data).__name__}")
        data = bytes(data)
        self._run_due(now)
        try:
            msg = parse_message(data)
        except RemoteProtocolError as exc:
            self._reject_malformed(data, addr, exc, now)
            self._after(now)
            return
        self._src = addr
        try:
            if isinstance(msg, Request):
                msg = self._stamp_via(msg, addr)
            elif not self._via_is_ours(msg):
                self._record("in", msg, addr, now, None)
                self._events.append(MessageRejected(data[:2000], addr, None, "response whose top Via is not ours (RFC 3261 18.1.2)"))
                return
            self._record("in", msg, addr, now, None)
            events = self._table.receive(msg, now)
            self._flush(now)
            self._process(events, now)
        except VoicelabError as exc:
            status = exc.status_code if isinstance(exc, ProtocolError) else 500
            answered = None
            if isinstance(msg, Request) and msg.method != "ACK":
                answered = self._stateless_reply(msg, status, addr, now)
            self._events.append(MessageRejected(data[:2000], addr, answered, f"{type(exc).__name__}: {exc}"))
        finally:
            self._src = None
            msg.headers.forget_parsed()  # a transaction or call may keep it (up to 64*T1): keep it small
            self._after(now)

    def handle_timer(self, now: float) -> None:
        """Run every timer due at or before ``now`` (s); call it at :meth:`next_timer`.

        Raises
        ------
        ParameterError
            If ``now`` is not finite or goes backwards.
        """
        now = self._tick(now)
        self._after(now)

    def next_timer(self) -> float | None:
        """The earliest deadline (s, absolute) at which :meth:`handle_timer` must run."""
        while self._timers and self._timers[0].cancelled:
            self._pop_timer()
        table = self._table.next_timer()
        own = self._timers[0].deadline if self._timers else None
        if table is None or own is None:
            return own if table is None else table
        return own if own < table else table  # the earlier (min() of the two)

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Addr]]:
        """Drain what must be sent: ``(bytes, addr)`` pairs in order.

        ``now`` is accepted for symmetry with aioquic and ignored.
        """
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def drain_events(self) -> list[Event]:
        """Every pending event, oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    def transport_error(self, data: bytes, addr: Addr, reason: str, now: float) -> str | None:
        """The adapter could not send ``data`` to ``addr`` (RFC 3261 8.1.3.1, 18.4).

        A request fails its client transaction at once with ``reason`` as the cause
        (:class:`CallFailed` 503 ``"transport failed: <reason>"``, ...) instead of
        waiting for Timer B/F; a response is counted in :attr:`undeliverable_responses`
        (the peer retransmits, or its transaction times out).

        Returns
        -------
        str or None
            ``"request"``, ``"response"`` or None (an ACK, unparseable bytes, or a
            transaction already gone).
        """
        now = self._tick(now)
        try:
            msg = parse_message(bytes(data))
        except (RemoteProtocolError, TypeError):
            return None
        if isinstance(msg, Response):
            self.undeliverable_responses += 1
            return "response"
        key = next((k for k, p in self._client.items() if p.request is not None and bytes(p.request) == bytes(data)), None)
        if key is None:
            return None
        self._transport_reasons[key] = str(reason)
        events = self._table.transport_error(key, now)
        self._flush(now)
        self._process(events, now)
        self._transport_reasons.pop(key, None)
        self._after(now)
        return "request"

    @property
    def calls(self) -> list[Call]:
        """Calls known to the UA (also finished ones), oldest first."""
        return list(self._calls.values())

    @property
    def transaction_table(self) -> TransactionTable:
        """The transaction layer under this UA, to inspect (states, timers); do not drive it."""
        return self._table

    # ===================================================================================
    # application API: calls
    # ===================================================================================
    def invite(
        self,
        target_uri: str,
        *,
        sdp_offer: bytes | str | None = _AUTO,
        now: float,
        headers: Sequence[tuple[str, str]] | None = None,
        codecs: Sequence[Any] | None = None,
        media_port: int | None = None,
    ) -> Call:
        """Start a call (RFC 3261 13.2.1).

        Parameters
        ----------
        target_uri : str
            Request-URI and To (``sip:bob@192.0.2.2``).
        sdp_offer : bytes, None or "auto", optional
            The offer to send. ``"auto"`` (default) builds one from the UA's ``codecs``
            (no body without them); None sends no body (delayed offer: the 2xx carries
            the offer and our answer goes in the ACK).
        now : float
            Current time (s).
        headers : sequence of (str, str), optional
            Extra header fields.
        codecs : sequence, optional
            Codecs for this call instead of the UA's.
        media_port : int, optional
            RTP port of this call's SDP instead of the UA's ``media_port`` (an agent
            serving concurrent calls gives each its own).

        Returns
        -------
        Call

        Raises
        ------
        ParameterError
            Bad target, headers or SDP.
        """
        now = self._tick(now)
        target = _uri_arg(target_uri, "target_uri")
        codecs = list(codecs) if codecs is not None else self.codecs
        extra = self._extra_headers(headers)
        call_id = f"{self.rng.bytes(10).hex()}@{self._host_for_ids()}"
        call = Call(f"call-{next(self._ids)}", "uac", call_id, str(target))
        call._codecs = codecs
        call._media_port = self._check_media_port(media_port)
        body = self._offer_body(call, sdp_offer, codecs, direction="sendrecv")
        h = Headers()
        branch = new_branch(self.rng)
        h.add("Via", self._via(branch))
        if self.outbound_proxy is not None:
            h.add("Route", self._proxy_route())
        h.add("Max-Forwards", "70")
        h.add("From", format_name_addr(self.local_uri, display_name=self.display_name, tag=self._tag()))
        h.add("To", format_name_addr(target))
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{self._initial_cseq()} INVITE")
        h.add("Contact", f"<{self.contact}>")
        h.add("Allow", ", ".join(ALLOWED))
        if self.session_expires is not None:
            h.add("Supported", "timer")
            h.add("Session-Expires", str(self.session_expires))
            h.add("Min-SE", str(self.min_se))
        if self.user_agent:
            h.add("User-Agent", self.user_agent)
        for name, value in extra:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        h.add("Content-Length", str(len(body or b"")))
        request = Request("INVITE", target, h, body or b"")
        dest = self._next_hop_addr(self.outbound_proxy or target)
        call.signalling_addr = dest
        self._calls[call.id] = call
        oc = self.overload_throttle
        if oc is not None and oc.percent(dest, now) and oc.shed(dest, now, float(self.rng.random())):
            call._invite, call.times.invite_sent = request, now  # RFC 7339: shed before sending
            self._finish_failed(call, 503, f"shed by us: the server asked for {oc.percent(dest, now)} % less "
                                           f"(RFC 7339 oc); nothing was sent", now, by_us=True)
            self._after(now)
            return call
        call._invite = request
        call._invite_dest = dest
        if body:
            call._pending_offer = body
            call.local_sdp = body
        call.times.invite_sent = now
        call._invite_key = self._start_client(request, dest, _Pending("invite", request, dest, call=call), now)
        self._after(now)
        return call

    def answer(
        self,
        call: Call,
        status: int = 200,
        *,
        sdp: bytes | str | None = _AUTO,
        now: float,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] | None = None,
        media_port: int | None = None,
    ) -> None:
        """Respond to the INVITE (or re-INVITE) of an incoming call.

        Parameters
        ----------
        call : Call
            From :class:`IncomingCall` (or :class:`ReinviteReceived`).
        status : int, optional
            101-199 (180 Ringing, 183 Session Progress), 2xx, or 300-699 to refuse.
        sdp : bytes, None or "auto", optional
            The body. ``"auto"``: on 2xx, answer the offer (or make one for a delayed
            offer) from the UA's ``codecs``, or repeat an answer already sent in a 183;
            on 1xx, no body. None: no body.
        now : float
        reason : str, optional
            Reason phrase (default from RFC 3261 21).
        headers : sequence of (str, str), optional
        media_port : int, optional
            RTP port for this call's SDP (kept for later re-INVITEs of the call).

        Raises
        ------
        LocalProtocolError
            No INVITE of this call is waiting for an answer, or a 2xx would break
            offer/answer (an offer arrived and there is neither ``sdp`` nor ``codecs``).
        ParameterError
            Bad status.
        """
        now = self._tick(now)
        self._check_call(call)
        if isinstance(status, bool) or not isinstance(status, int) or not 101 <= status <= 699:
            raise ParameterError(f"status must be an int 101..699 (100 Trying is sent by the transaction), got {status!r}")
        if media_port is not None:
            call._media_port = self._check_media_port(media_port)
        self._answer(call, status, sdp, now, reason, self._extra_headers(headers))
        self._after(now)

    def _answer(self, call: Call, status: int, sdp: Any, now: float, reason: str | None,
                extra: list[tuple[str, str]]) -> None:  # fmt: skip
        pending = call._server_invite
        if pending is None:
            raise LocalProtocolError(f"{call.id} has no INVITE waiting for an answer (state {call.state.value})")
        key, invite = pending
        reinvite = invite is not call._invite
        offer = invite.body if _is_sdp(invite) else None
        body = b""
        if 200 <= status < 300 and call.session_timer is not None:
            if reinvite and (asked := _session_expires_of(invite)) is not None and asked[0] >= self.min_se:
                call.session_timer = (min(asked[0], self.session_expires or asked[0]), asked[1] or call.session_timer[1])
            interval, refresher = call.session_timer
            extra = [*extra, ("Session-Expires", f"{interval};refresher={refresher}")]
            if call._timer_supported or _supports(invite, "timer"):
                extra.append(("Require", "timer"))
        if 200 <= status < 300:
            try:
                body = self._answer_body(call, offer, sdp, invite.cseq.number)
            except RemoteProtocolError as exc:  # offer not acceptable: refuse it instead
                call.media_error = str(exc)
                status, reason, body = exc.status_code if exc.status_code >= 300 else 488, None, b""
        elif status < 200 and sdp not in (_AUTO, None):
            body = self._sdp_bytes(sdp)
        response = self._response(invite, status, reason, to_tag=call._local_tag, body=body, extra=extra,
                                  dialog_creating=status < 300)  # fmt: skip
        if not reinvite and status < 300 and call.dialog is None:
            dlg = Dialog.from_uas_response(invite, response)
            call.dialog = dlg
            self._dialogs[dlg.id] = (dlg, call)
        if status < 200:
            if not reinvite:
                call.state = CallState.EARLY
                if call.times.first_provisional is None:
                    call.times.first_provisional = now
            if body:
                call.local_sdp = body
            self._send_response(key, response, now)
        elif status < 300:
            call._server_invite = None
            if body:
                call.local_sdp = body
            if reinvite:
                call.dialog.refresh_target(invite)  # type: ignore[union-attr]
            else:
                call.state = CallState.ANSWERED
                call.status = status
                call.times.answered = now
                call.dialog.confirm()  # type: ignore[union-attr]
            self._send_response(key, response, now)
            cseq = invite.cseq.number
            dest = self._dest.get(key, self._src)
            call._awaiting_ack[cseq] = (response, dest, key)
            if self._tv.g is not None:
                self._arm("2xx", self._tv.g, now, call, (cseq, self._tv.g))
            self._arm("ackwait", self._tv.h, now, call, cseq)
            if call.session_timer is not None:
                self._arm_session(call, now)
        else:
            call._server_invite = None
            self._send_response(key, response, now)
            if not reinvite:
                self._finish_failed(call, status, response.reason, now, by_us=True)

    def reject(self, call: Call, status: int = 486, *, now: float, reason: str | None = None) -> None:
        """Refuse an incoming INVITE (486 Busy Here by default); see :meth:`answer`."""
        if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 699:
            raise ParameterError(f"reject needs a status 300..699, got {status!r}")
        self.answer(call, status, sdp=None, now=now, reason=reason)

    def cancel(self, call: Call, now: float) -> None:
        """Cancel our unanswered INVITE (RFC 3261 9.1).

        The CANCEL is sent once a provisional response has arrived (at once if one
        has). The call ends with :class:`CallCancelled` on the 487, or with
        :class:`CallAnswered` + :class:`CallEnded` if a 2xx crossed the CANCEL.

        Raises
        ------
        LocalProtocolError
            If the call is not ours or was already answered.
        """
        now = self._tick(now)
        self._check_call(call)
        if call.role != "uac" or call.state not in (CallState.CALLING, CallState.EARLY):
            raise LocalProtocolError(f"only an unanswered outgoing call can be cancelled; {call.id} is {call.role} {call.state.value}")
        call._cancel_requested = True
        if call.state is CallState.EARLY:
            self._send_cancel(call, now)
        self._after(now)

    def bye(self, call: Call, now: float) -> None:
        """Hang up (RFC 3261 15).

        An outgoing call without final response is cancelled instead; an incoming call
        answered but not yet ACKed sends its BYE when the ACK arrives (15: the callee
        MUST NOT send BYE before).

        Raises
        ------
        LocalProtocolError
            An incoming call not answered yet (use :meth:`reject`), or a call that is over.
        """
        now = self._tick(now)
        self._check_call(call)
        if call.role == "uac" and call.state in (CallState.CALLING, CallState.EARLY):
            self.cancel(call, now)
            return
        if call.state in (CallState.INCOMING, CallState.EARLY):
            raise LocalProtocolError(f"{call.id} was not answered; refuse it with reject()")
        if call.over or call.state is CallState.ENDING:
            raise LocalProtocolError(f"{call.id} is already {call.state.value}")
        if call.state is CallState.ANSWERED:
            call._pending_bye = True
            self._after(now)
            return
        self._send_bye(call, now, "BYE")
        self._after(now)

    def reinvite(
        self,
        call: Call,
        sdp: bytes | str | None = _AUTO,
        *,
        now: float,
        direction: str = "sendrecv",
        codecs: Sequence[Any] | None = None,
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """Send a re-INVITE (RFC 3261 14.1): hold, resume, codec change.

        Parameters
        ----------
        call : Call
            An established call.
        sdp : bytes, None or "auto", optional
            The new offer; ``"auto"`` builds it from ``codecs`` (or the UA's) with
            ``direction`` and the previous description (same session id, version + 1).
        now : float
        direction : {"sendrecv", "sendonly", "recvonly", "inactive"}, optional
            ``"sendonly"`` holds the peer (RFC 3264 8.4), ``"sendrecv"`` resumes.
        codecs : sequence, optional
            New codec list (codec change).

        Raises
        ------
        LocalProtocolError
            The call is not established, or another INVITE is pending in the dialog (14.1).
        """
        now = self._tick(now)
        self._check_call(call)
        if call.state is not CallState.ESTABLISHED or call.dialog is None:
            raise LocalProtocolError(f"re-INVITE needs an established call; {call.id} is {call.state.value}")
        if call._reinvite_key is not None or call._server_invite is not None or call._awaiting_ack:
            raise LocalProtocolError("another INVITE is still pending in this dialog (RFC 3261 14.1); wait for it")
        if codecs is not None:
            call._codecs = list(codecs)
        body = self._offer_body(call, sdp, call._codecs, direction=direction)
        dlg = call.dialog
        extra = self._extra_headers(headers)
        if self.user_agent:
            extra.append(("User-Agent", self.user_agent))
        req = dlg.create_request("INVITE", via=self._via(new_branch(self.rng)), contact=f"<{self.contact}>",
                                 body=body or b"", headers=[("Allow", ", ".join(ALLOWED))] + extra,
                                 initial_cseq=self._initial_cseq())  # fmt: skip
        call._pending_offer = body or None
        dest = self._next_hop_addr(dlg.next_hop)
        call._reinvite_key = self._start_client(req, dest, _Pending("reinvite", req, dest, call=call), now)
        self._after(now)

    def info(
        self,
        call: Call,
        *,
        now: float,
        body: bytes = b"",
        content_type: str | None = None,
        method: str = "INFO",
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> RequestHandle:
        """Send INFO (or OPTIONS) inside a call's dialog; the answer is :class:`RequestAnswered`.

        Raises
        ------
        LocalProtocolError
            The call has no confirmed dialog, or ``method`` is INVITE/BYE/ACK/CANCEL.
        """
        now = self._tick(now)
        self._check_call(call)
        if method not in ("INFO", "OPTIONS"):
            raise LocalProtocolError(f"info() sends INFO or OPTIONS, not {method}; use the call methods")
        dlg = call.dialog
        if dlg is None or not dlg.confirmed or call.over:
            raise LocalProtocolError(f"{call.id} has no confirmed dialog to send {method} in")
        extra = self._extra_headers(headers)
        req = dlg.create_request(method, via=self._via(new_branch(self.rng)), body=bytes(body),
                                 content_type=content_type or "application/octet-stream", headers=extra,
                                 initial_cseq=self._initial_cseq())  # fmt: skip
        handle = RequestHandle(f"req-{next(self._ids)}", method, call.id, now, call)
        dest = self._next_hop_addr(dlg.next_hop)
        self._start_client(req, dest, _Pending("info", req, dest, call=call, handle=handle), now)
        self._after(now)
        return handle

    # ===================================================================================
    # application API: out of dialog
    # ===================================================================================
    def options(self, target: str | Call, now: float) -> RequestHandle:
        """Send OPTIONS (RFC 3261 11): to a URI (result :class:`OptionsAnswered`) or
        inside a call's dialog (result :class:`RequestAnswered`)."""
        if isinstance(target, Call):
            return self.info(target, now=now, method="OPTIONS")
        now = self._tick(now)
        uri = _uri_arg(target, "target")
        req = self._out_of_dialog("OPTIONS", uri, to=format_name_addr(uri), from_tag=self._tag(),
                                  call_id=f"{self.rng.bytes(10).hex()}@{self._host_for_ids()}",
                                  cseq=self._initial_cseq(), extra=[("Accept", "application/sdp")])  # fmt: skip
        handle = RequestHandle(f"req-{next(self._ids)}", "OPTIONS", str(uri), now)
        dest = self._next_hop_addr(self.outbound_proxy or uri)
        self._start_client(req, dest, _Pending("options", req, dest, handle=handle), now)
        self._after(now)
        return handle

    def register(self, registrar_uri: str, now: float, *, expires: int = 3600) -> RequestHandle:
        """Send REGISTER for our Contact (RFC 3261 10.2); result :class:`RegistrationResult`.

        Consecutive registrations to one registrar share Call-ID and From tag and
        increment CSeq (10.2). ``expires=0`` removes the binding.

        Raises
        ------
        ParameterError
            Bad URI or ``expires`` not an int >= 0.
        """
        now = self._tick(now)
        uri = _uri_arg(registrar_uri, "registrar_uri")
        if isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 2**32:
            raise ParameterError(f"expires must be whole seconds >= 0, got {expires!r}")
        handle = RequestHandle(f"req-{next(self._ids)}", "REGISTER", str(uri), now)
        self._send_register(uri, expires, handle, now)
        self._after(now)
        return handle

    # ===================================================================================
    # internals: time, ids, building
    # ===================================================================================
    def _tick(self, now: Any) -> float:
        t = _check_now(now)
        if t < self._last_now:
            raise ParameterError(f"time went backwards: now={t!r} s after {self._last_now!r} s; pass a monotonic clock")
        self._last_now = t
        return t

    @staticmethod
    def _check_media_port(port: Any) -> int | None:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise ParameterError(f"media_port must be a port number 1..65535, got {port!r}")
        return port

    def _port(self, call: Call) -> int:
        return call._media_port or self.media_port

    def _forget_finished(self, call: Call) -> None:
        """Remember ``call`` as finished; forget the oldest beyond ``keep_finished_calls``."""
        if self.keep_finished_calls is None:
            return
        self._finished.append(call)
        while len(self._finished) > self.keep_finished_calls:
            old = self._finished.popleft()
            self._calls.pop(old.id, None)

    def _check_call(self, call: Any) -> None:
        if not isinstance(call, Call) or self._calls.get(call.id) is not call:
            raise ParameterError(f"{call!r} is not a call of this UserAgent")

    def _host_for_ids(self) -> str:
        return self._sent_by_host

    def _tag(self) -> str:
        return self.rng.bytes(6).hex()

    def _initial_cseq(self) -> int:
        return int(self.rng.integers(1, 2**15))

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/{self.transport.upper()} {self._sent_by_host}:{self.local_addr[1]};branch={branch};rport{self._via_tail}"

    def _proxy_route(self) -> str:
        assert self.outbound_proxy is not None
        u = self.outbound_proxy
        lr = "" if isinstance(u, SipUri) and u.has_param("lr") else ";lr"
        return f"<{u}{lr}>"

    def _next_hop_addr(self, uri: Uri) -> Addr:
        if self._resolve is not None:
            return self._resolve(uri)
        return default_resolve(uri, transport=self.transport)

    @staticmethod
    def _extra_headers(headers: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
        if headers is None:
            return []
        out = []
        try:
            for name, value in headers:
                if not isinstance(name, str) or not isinstance(value, str) or "\r" in value or "\n" in value:
                    raise TypeError
                out.append((name, value))
        except (TypeError, ValueError):
            raise ParameterError("headers must be a list of (name, value) strings without CR/LF") from None
        return out

    @staticmethod
    def _sdp_bytes(sdp: Any) -> bytes:
        if isinstance(sdp, str):
            return sdp.encode("utf-8")
        if isinstance(sdp, (bytes, bytearray, memoryview)):
            return bytes(sdp)
        return bytes(sdp)  # a SessionDescription

    def _session_id(self) -> int:
        return int(self.rng.integers(1, 2**31))

    def _initial_answer(self, offer: bytes, codecs: Sequence[Any], port: int) -> tuple[bytes, Any]:
        """The answer to the first offer of a call, from a template when this offer was answered before.

        Load generators (SIPp) and most phones send the same offer bytes call after
        call; the answer to it differs only in its session id (``o=`` line), drawn per
        call as before. Answers with keys (SDES) or to codec objects are never templated.
        """
        sid = self._session_id()
        key = (offer, tuple(codecs), self.media_address, port, self.srtp) if all(isinstance(c, str) for c in codecs) else None
        hit = self._answer_templates.get(key) if key is not None else None
        if hit is not None:
            head, tail, media = hit
            self.answer_template_hits += 1
            return b"%b%d%b" % (head, sid, tail), replace(media, params=dict(media.params))
        answer, media = create_answer(offer, codecs, address=self.media_address, port=port, session_id=sid,
                                      previous=None, require_srtp=self.srtp)  # fmt: skip
        body = bytes(answer)
        head = b"v=0\r\no=- "
        tail_at = len(head) + len(str(sid))
        if (key is not None and media is not None and media.srtp is None and b"a=crypto" not in body
                and body.startswith(head + str(sid).encode() + b" ")):
            if len(self._answer_templates) >= 64:
                self._answer_templates.pop(next(iter(self._answer_templates)))
            self._answer_templates[key] = (head, body[tail_at:], replace(media, params=dict(media.params)))
        return body, media

    def _previous_sdp(self, call: Call) -> Any:
        if call.local_sdp is None:
            return None
        try:
            return SessionDescription.parse(call.local_sdp)
        except RemoteProtocolError:
            return None

    def _offer_body(self, call: Call, sdp: Any, codecs: Sequence[Any] | None, *, direction: str) -> bytes | None:
        if sdp is None:
            return None
        if isinstance(sdp, str) and sdp == _AUTO:
            if not codecs:
                return None
            prev = self._previous_sdp(call)
            offer = create_offer(codecs, address=self.media_address, port=self._port(call),
                                 session_id=None if prev is not None else self._session_id(),
                                 direction=direction, previous=prev, crypto=True if self.srtp else None,
                                 rtcp_mux=self.rtcp_mux)  # fmt: skip
            return bytes(offer)
        return self._sdp_bytes(sdp)

    def _answer_body(self, call: Call, offer: bytes | None, sdp: Any, cseq: int) -> bytes:
        """Body of our 2xx: explicit, or an answer to ``offer``, or an offer (delayed offer)."""
        if sdp is None:
            return b""
        if not (isinstance(sdp, str) and sdp == _AUTO):
            body = self._sdp_bytes(sdp)
            if offer is None and body:
                call._offered_in_2xx[cseq] = body
                call._pending_offer = body
            elif offer is not None:
                call.remote_sdp = offer
            return body
        codecs = call._codecs or self.codecs
        if offer is not None:
            if call.state is CallState.EARLY and call.local_sdp is not None and call.remote_sdp == offer:
                return call.local_sdp  # the answer already sent in a 183
            if not codecs:
                raise LocalProtocolError(
                    "the INVITE carries an SDP offer: pass sdp= to answer() or give the UserAgent codecs="
                )
            prev = self._previous_sdp(call)
            if prev is None:
                body, media = self._initial_answer(offer, codecs, self._port(call))
            else:
                answer, media = create_answer(offer, codecs, address=self.media_address, port=self._port(call),
                                              previous=prev, require_srtp=self.srtp)  # fmt: skip
                body = bytes(answer)
            call.remote_sdp = offer
            call.media = media
            call.media_error = None
            return body
        if not codecs:
            return b""
        body = self._offer_body(call, _AUTO, codecs, direction="sendrecv") or b""
        call._offered_in_2xx[cseq] = body
        call._pending_offer = body
        return body

    def _response(
        self,
        request: Request,
        status: int,
        reason: str | None,
        *,
        to_tag: str | None,
        body: bytes = b"",
        extra: Sequence[tuple[str, str]] = (),
        dialog_creating: bool = False,
    ) -> Response:
        # build_response's fields, then ours, then its Content-Length (one list, one Headers)
        fields = _response_fields(request, to_tag)
        if self.via_feedback is not None and client_asks(fields[0].value):  # RFC 7339: the client's Via
            fields[0] = HeaderField("Via", self.via_feedback(fields[0].value))
        add = fields.append
        if dialog_creating and request.method == "INVITE" and status > 100:
            for value in request.headers.get_all("Record-Route"):
                add(HeaderField("Record-Route", value))
            add(HeaderField("Contact", f"<{self.contact}>"))
        if status == 405 or (request.method in ("INVITE", "OPTIONS") and 200 <= status < 300):
            add(HeaderField("Allow", _ALLOW_VALUE))
        if request.method == "OPTIONS" and 200 <= status < 300:
            add(HeaderField("Accept", "application/sdp"))
        if self.user_agent:
            add(HeaderField("Server", self.user_agent))
        for name, value in extra:
            add(HeaderField(name, value))
        if body:
            add(HeaderField("Content-Type", "application/sdp"))
        add(HeaderField("Content-Length", str(len(body))))
        return Response(status, reason or _reason(status), Headers._of(fields), body)

    def _out_of_dialog(
        self, method: str, uri: Uri, *, to: str, from_tag: str, call_id: str, cseq: int, extra: Sequence[tuple[str, str]] = ()
    ) -> Request:
        h = Headers()
        h.add("Via", self._via(new_branch(self.rng)))
        if self.outbound_proxy is not None:
            h.add("Route", self._proxy_route())
        h.add("Max-Forwards", "70")
        h.add("From", format_name_addr(self.local_uri, display_name=self.display_name, tag=from_tag))
        h.add("To", to)
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("Contact", f"<{self.contact}>")
        if self.user_agent:
            h.add("User-Agent", self.user_agent)
        for name, value in extra:
            h.add(name, value)
        h.add("Content-Length", "0")
        return Request(method, uri, h)

    def _send_register(self, uri: Uri, expires: int, handle: RequestHandle, now: float) -> None:
        reg = self._registrations.setdefault(
            str(uri), {"call_id": f"{self.rng.bytes(10).hex()}@{self._host_for_ids()}", "cseq": self._initial_cseq() - 1,
                       "tag": self._tag()},
        )  # fmt: skip
        reg["cseq"] += 1
        aor = format_name_addr(self.local_uri)
        req = self._out_of_dialog("REGISTER", uri, to=aor, from_tag=reg["tag"], call_id=reg["call_id"], cseq=reg["cseq"],
                                  extra=[("Expires", str(expires))])  # fmt: skip
        dest = self._next_hop_addr(self.outbound_proxy or uri)
        self._start_client(req, dest, _Pending("register", req, dest, handle=handle, extra={"expires": expires}), now)

    # ===================================================================================
    # internals: wire
    # ===================================================================================
    def _start_client(self, request: Request, dest: Addr, pending: _Pending, now: float) -> TransactionKey:
        tx, events = self._table.open_client(request, now)
        self._dest[tx.key] = dest
        self._client[tx.key] = pending
        self._flush(now)
        self._process(events, now)
        return tx.key

    def _send_direct(self, message: Request | Response, addr: Addr, now: float, *, key: TransactionKey | None = None,
                     retransmission: bool = False) -> None:  # fmt: skip
        self._outbox.append((bytes(message), addr))
        self._record("out", message, addr, now, key, retransmission)

    def _flush(self, now: float) -> None:
        for om in self._table.messages_to_send():
            self._emit(om, now)

    def _emit(self, om: OutgoingMessage, now: float) -> None:
        addr = self._dest.get(om.key)
        if addr is None:  # pragma: no cover - every transaction gets a destination when opened
            return
        self._outbox.append((bytes(om.message), addr))
        self._record("out", om.message, addr, now, om.key, om.retransmission)
        om.message.headers.forget_parsed()  # the transaction may keep it 32 s: keep it small

    def _record(self, direction: str, msg: Request | Response, addr: Addr, now: float, key: TransactionKey | None,
                retransmission: bool = False) -> None:  # fmt: skip
        if self._no_trace:  # trace_limit=0: keep no trace and pay nothing for it
            return
        did = DialogId.for_incoming(msg) if direction == "in" else DialogId.for_outgoing(msg)
        call_id = msg.headers.get("Call-ID")
        cseq = msg.headers.get("CSeq")
        if key is None and direction == "in":
            try:
                m = self._table.match(msg)
                key = m.key if m is not None else None
            except (ProtocolError, ParameterError):
                key = None
        self.trace.append(TraceEntry(now, direction, msg.start_line(), key, did, addr, call_id, cseq, retransmission))

    def _after(self, now: float) -> None:
        """Run what is due, then move transaction output to the outbox."""
        self._run_due(now)
        self._flush(now)

    def _run_due(self, now: float) -> None:
        for _ in range(10000):
            progressed = False
            t = self._table.next_timer()
            if t is not None and t <= now:
                events = self._table.handle_timer(now)
                self._flush(now)
                self._process(events, now)
                progressed = True
            while self._timers and (self._timers[0].cancelled or self._timers[0].deadline <= now):
                timer = self._pop_timer()
                if not timer.cancelled:
                    self._fire(timer, now)
                    progressed = True
            if not progressed:
                break
        self._flush(now)

    def _arm(self, kind: str, delay: float, now: float, call: Call | None, data: Any) -> _Timer:
        timer = _Timer(now + delay, next(self._seq), kind, call, data)
        heapq.heappush(self._timers, timer)
        if call is not None:
            self._call_timers.setdefault(call.id, []).append(timer)
        return timer

    def _pop_timer(self) -> _Timer:
        """Pop the earliest UA timer and drop it from its call's index."""
        timer = heapq.heappop(self._timers)
        if timer.call is not None:
            mine = self._call_timers.get(timer.call.id)
            if mine is not None:
                try:
                    mine.remove(timer)
                except ValueError:  # pragma: no cover - every armed timer is indexed
                    pass
                if not mine:
                    del self._call_timers[timer.call.id]
        return timer

    def _disarm(self, call: Call, kinds: tuple[str, ...], cseq: int | None = None) -> None:
        mine = self._call_timers.get(call.id)
        if not mine:
            return
        keep = []
        for t in mine:
            if t.call is call and t.kind in kinds:
                c = t.data[0] if isinstance(t.data, tuple) else t.data
                if cseq is None or c == cseq:
                    t.cancelled = True
                    t.call = t.data = None  # a cancelled timer must not keep a finished call alive
                    continue  # and leaves the call's index now (the heap drops it when it comes due)
            keep.append(t)
        if keep:
            mine[:] = keep
        else:
            del self._call_timers[call.id]  # no entry per finished call: the index stays bounded

    def _arm_session(self, call: Call, now: float) -> None:
        """(Re)start the RFC 4028 timers of ``call``: refresh at half the interval when we
        are the refresher, else BYE at the interval minus min(32 s, interval / 3) (10)."""
        self._disarm(call, ("se-refresh", "se-expire"))
        if call.session_timer is None:
            return
        interval, refresher = call.session_timer
        if (refresher == "uas") == (call.role == "uas"):
            self._arm("se-refresh", interval / 2, now, call, None)
        else:
            self._arm("se-expire", interval - min(32.0, interval / 3), now, call, None)

    def _fire_session(self, timer: _Timer, now: float) -> None:
        call = timer.call
        assert call is not None
        if call.state is not CallState.ESTABLISHED or call.dialog is None or call.session_timer is None:
            return
        if timer.kind == "se-expire":
            self._send_bye(call, now, "session expired (RFC 4028)")
            return
        # se-refresh: a re-INVITE with the same session description (a new version)
        interval = call.session_timer[0]
        if call._reinvite_key is not None or call._server_invite is not None or call._awaiting_ack:
            self._arm("se-refresh", 1.0, now, call, None)  # another INVITE is pending: soon
            return
        self._arm("se-expire", interval / 2 - min(32.0, interval / 3), now, call, None)  # unless the refresh succeeds
        try:
            body = self._offer_body(call, _AUTO if (call._codecs or self.codecs) else call.local_sdp, call._codecs,
                                    direction="sendrecv")  # fmt: skip
        except VoicelabError:
            return
        dlg = call.dialog
        extra = [("Allow", ", ".join(ALLOWED)), ("Supported", "timer"),
                 ("Session-Expires", f"{interval};refresher={call.session_timer[1]}")]  # fmt: skip
        req = dlg.create_request("INVITE", via=self._via(new_branch(self.rng)), contact=f"<{self.contact}>",
                                 body=body or b"", headers=extra, initial_cseq=self._initial_cseq())  # fmt: skip
        call._pending_offer = body or None
        dest = self._next_hop_addr(dlg.next_hop)
        call._reinvite_key = self._start_client(req, dest, _Pending("reinvite", req, dest, call=call), now)

    def _fire(self, timer: _Timer, now: float) -> None:
        call = timer.call
        assert call is not None
        if timer.kind in ("se-refresh", "se-expire"):
            self._fire_session(timer, now)
        elif timer.kind == "2xx":
            cseq, interval = timer.data
            entry = call._awaiting_ack.get(cseq)
            if entry is None:
                return
            resp, dest, key = entry
            self._send_direct(resp, dest, now, key=key, retransmission=True)
            nxt = min(2 * interval, self._tv.t2)
            self._arm("2xx", nxt, now, call, (cseq, nxt))
        elif timer.kind == "ackwait":
            cseq = timer.data
            if call._awaiting_ack.pop(cseq, None) is None:
                return
            self._disarm(call, ("2xx",), cseq)
            # 13.3.1.4: no ACK within 64*T1 -> the dialog is confirmed, the session ends with BYE
            if call.state in (CallState.ANSWERED, CallState.ESTABLISHED):
                self._send_bye(call, now, "no ACK")

    @staticmethod
    def _via_params_text(params: tuple[tuple[str, str | None], ...]) -> str:
        return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)

    def _stamp_via(self, request: Request, addr: Addr) -> Request:
        """RFC 3261 18.2.1 + RFC 3581: add received/rport to the top Via."""
        try:
            src_host, src_port = str(addr[0]), int(addr[1])
        except (TypeError, ValueError, IndexError):
            return request
        if not (is_ipv4(src_host) or is_ipv6(src_host)):
            return request
        h = request.headers
        fields = h._lookup("via")
        if not fields:
            return request
        top = h.parsed("via", fields[0].value, parse_via)[0]  # parsed (all hops) when the request was validated
        params = list(top.params)
        has_rport = any(k.lower() == "rport" for k, _ in params)
        differs = top.host.strip("[]").lower() != src_host.lower()
        if not has_rport and not differs:
            return request
        values = split_list(fields[0].value)
        params = [(k, v) for k, v in params if k.lower() not in ("received",) and not (has_rport and k.lower() == "rport")]
        params.append(("received", src_host))
        if has_rport:
            params.append(("rport", str(src_port)))
        sent_by = top.host + (f":{top.port}" if top.port is not None else "")
        new_top = f"{top.protocol}/{top.transport} {sent_by}{self._via_params_text(tuple(params))}"
        new_fields: list[HeaderField] = []
        done = False
        for f in request.headers:
            if not done and f is fields[0]:
                new_fields.append(HeaderField(f.name, new_top))
                if len(values) > 1:
                    new_fields.append(HeaderField(f.name, ", ".join(values[1:])))
                done = True
            else:
                new_fields.append(f)
        request.headers = Headers(new_fields)
        return request

    def _response_dest(self, request: Request, src: Addr | None) -> Addr:
        """Where responses to ``request`` go (RFC 3261 18.2.2, RFC 3581 4)."""
        if self.reliable and src is not None:
            return src
        via = request.via[0]
        received = via.received
        rport = via.rport
        if received and isinstance(rport, int) and not isinstance(rport, bool):
            return (received, rport)
        if via.maddr:
            return (via.maddr.strip("[]"), via.port or 5060)
        if received:
            return (received, via.port or 5060)
        return (via.host.strip("[]"), via.port or 5060)

    def _via_is_ours(self, response: Response) -> bool:
        try:
            via = response.via[0]
        except (ProtocolError, IndexError):
            return False
        return via.host.lower() == self._sent_by_host.lower() and (via.port or 5060) == self.local_addr[1]

    def _reject_malformed(self, data: bytes, addr: Addr, exc: RemoteProtocolError, now: float) -> None:
        """A message that failed parse/validate: answer it from what could be read, or drop.

        When not even the framing parses (bad Content-Length, body cut short, header
        limits, a broken header line), the fields a response copies are read leniently
        (:func:`_reply_headers`): RFC 3261 18.3 / 8.2 ask for a 400 (513 for the size
        limit) whenever a response can be built.
        """
        try:
            msg = parse_message(data, validate=False)
        except (RemoteProtocolError, ParameterError):
            headers = _reply_headers(data)
            status = None if headers is None else self._reply_from_headers(headers, exc.status_code, addr, now)
            reason = str(exc) if status is not None else (
                f"dropped (no response can be built: not a request, an ACK, or no readable "
                f"Via/From/To/Call-ID/CSeq): {exc}")
            self._events.append(MessageRejected(data[:2000], addr, status, reason))
            return
        status = None
        if isinstance(msg, Request) and msg.method != "ACK":
            status = self._stateless_reply(msg, exc.status_code, addr, now, raw=True)
        self._events.append(MessageRejected(data[:2000], addr, status, str(exc)))

    def _stateless_reply(self, request: Request, status: int, addr: Addr, now: float, *, raw: bool = False) -> int | None:
        """A response built from the request's raw header lines; None when impossible."""
        return self._reply_from_headers(request.headers, status, addr, now)

    def _reply_from_headers(self, headers: Headers, status: int, addr: Addr, now: float) -> int | None:
        """Send a response copying Via, From, To, Call-ID and CSeq from ``headers``."""
        if not 300 <= status <= 699:
            status = 500
        h = Headers()
        vias = headers.fields("via")
        needed = ("from", "to", "call-id", "cseq")
        if not vias or any(not headers.fields(n) for n in needed):
            return None
        for f in vias:
            h.add("Via", f.value)
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = headers.fields(name)[0].value
            if name == "To":  # 8.2.6.2: a response adds a To tag when the request had none
                try:
                    if parse_name_addr(value, "To").tag is None:
                        value += f";tag={self._tag()}"
                except RemoteProtocolError:
                    pass
            h.add(name, value)
        if self.user_agent:
            h.add("Server", self.user_agent)
        h.add("Content-Length", "0")
        resp = Response(status, _reason(status), h)
        self._send_direct(resp, addr, now)
        return status

    # ===================================================================================
    # internals: dispatch
    # ===================================================================================
    def _process(self, events: list, now: float) -> None:
        for ev in events:
            if isinstance(ev, ResponseReceived):
                self._on_response(ev.response, ev.key, now)
            elif isinstance(ev, UnmatchedRequest):
                self._on_new_request(ev.request, ev.key, now)
            elif isinstance(ev, RequestReceived):
                if ev.request.method == "ACK":  # RFC 2543 ACK matched the Accepted transaction
                    self._on_ack(ev.request, now)
            elif isinstance(ev, StrayResponse):
                self._on_stray(ev.response, now)
            elif isinstance(ev, (TransactionTimedOut, TransportFailed)):
                self._on_timeout(ev.key, now, transport=isinstance(ev, TransportFailed))
            elif isinstance(ev, TransactionTerminated):
                self._dest.pop(ev.key, None)
                self._client.pop(ev.key, None)
                self._server.pop(ev.key, None)
                mk = self._merged_rev.pop(ev.key, None)
                if mk is not None and self._merged.get(mk) == ev.key:
                    del self._merged[mk]

    # -- UAS -----------------------------------------------------------------------------
    def _open_server(self, request: Request, now: float, call: Call | None = None) -> TransactionKey:
        tx, _ = self._table.open_server(request, now, trying_delay=self.trying_delay)
        self._dest[tx.key] = self._response_dest(request, self._src)
        self._server[tx.key] = call
        self._flush(now)
        return tx.key

    def _send_response(self, key: TransactionKey, response: Response, now: float) -> None:
        events = self._table.send_response(key, response, now)
        self._flush(now)
        self._process(events, now)

    def _reply(self, key: TransactionKey, request: Request, status: int, now: float, *, reason: str | None = None,
               extra: Sequence[tuple[str, str]] = (), to_tag: str | None = None) -> None:  # fmt: skip
        if to_tag is None and request.to.tag is None and status > 100:
            to_tag = self._tag()
        resp = self._response(request, status, reason, to_tag=to_tag, extra=extra)
        self._send_response(key, resp, now)
        self._flush(now)

    def _on_new_request(self, request: Request, key: TransactionKey, now: float) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request, now)
            return
        if method == "CANCEL":
            self._on_cancel(request, now)
            return
        # merged request (8.2.2.2): same From tag, Call-ID and CSeq, other branch, no To tag
        mkey = None
        if request.to.tag is None:
            mkey = (request.from_.tag or "", request.call_id, request.cseq.number, method)
            other = self._merged.get(mkey)
            if other is not None and other != key and self._table.get(other) is not None:
                skey = self._open_server(request, now)
                self._reply(skey, request, 482, now)
                return
        skey = self._open_server(request, now)
        if mkey is not None:
            self._merged[mkey] = skey
            self._merged_rev[skey] = mkey
        if method == "INVITE" and mkey is not None and self.admission is not None:
            refusal = self.admission(request, now)
            if refusal is not None:  # overloaded: refuse before it costs anything (RFC 3261 21.5.4)
                self._reply(skey, request, refusal.status, now, extra=refusal.headers)
                return
        if method not in ALLOWED:
            if method in KNOWN_NOT_ALLOWED:
                self._reply(skey, request, 405, now)
            else:
                self._reply(skey, request, 501, now, extra=[("Allow", ", ".join(ALLOWED))])
            return
        if not isinstance(request.uri, SipUri):
            self._reply(skey, request, 416, now)
            return
        required = [t for f in request.headers.fields("require") for t in split_list(f.value) if t]
        supported = SUPPORTED + (("timer",) if self.session_expires is not None else ())
        unknown = [t for t in required if t.lower() not in supported]
        if unknown:
            self._reply(skey, request, 420, now, extra=[("Unsupported", ", ".join(unknown))])
            return
        if self.authenticate is not None:
            challenge = self.authenticate(request, now)
            if challenge is not None:
                if not isinstance(challenge, Response):
                    raise LocalProtocolError(f"authenticate() must return a Response or None, got {type(challenge).__name__}")
                self._send_response(skey, challenge, now)
                self._flush(now)
                return
        if request.to.tag is not None:
            self._on_in_dialog(request, skey, now)
            return
        if method == "INVITE":
            self._on_invite(request, skey, now)
        elif method == "OPTIONS":
            self._reply(skey, request, 200, now)
        else:  # BYE / INFO outside any dialog (15.1.2, RFC 6086)
            self._reply(skey, request, 481, now)

    def _on_invite(self, request: Request, key: TransactionKey, now: float) -> None:
        if not request.contact:
            self._reply(key, request, 400, now, reason="Missing Contact")
            return
        session_timer = None
        asked = _session_expires_of(request) if self.session_expires is not None else None
        if asked is not None:  # RFC 4028 9: grant a session timer, or 422 when too brief
            interval, refresher = asked
            if interval < self.min_se:
                self._reply(key, request, 422, now, extra=[("Min-SE", str(self.min_se))])
                return
            interval = max(min(interval, self.session_expires), _int_field(request, "Min-SE") or 90)  # type: ignore[type-var]
            supported = _supports(request, "timer")
            session_timer = (interval, (refresher or "uac") if supported else "uas")
        frm = request.from_
        call = Call(f"call-{next(self._ids)}", "uas", request.call_id, str(frm.uri))
        call._codecs = self.codecs
        call._local_tag = self._tag()
        call._invite = request
        call._invite_key = key
        call._server_invite = (key, request)
        call.times.invite_received = now
        call.signalling_addr = self._src
        call.session_timer = session_timer
        call._timer_supported = session_timer is not None and _supports(request, "timer")
        self._calls[call.id] = call
        self._server[key] = call
        offer = request.body if _is_sdp(request) else None
        if offer is not None:
            call.remote_sdp = offer
        self._events.append(IncomingCall(call, request, offer))

    def _on_cancel(self, request: Request, now: float) -> None:
        invite_tx = self._table.match_cancelled(request)
        call = self._server.get(invite_tx.key) if invite_tx is not None else None
        skey = self._open_server(request, now)
        if invite_tx is None or call is None:
            self._reply(skey, request, 481, now)
            return
        self._reply(skey, request, 200, now, to_tag=call._local_tag)
        if call._server_invite is not None and call._server_invite[0] == invite_tx.key:
            invite = call._server_invite[1]
            call._server_invite = None
            resp = self._response(invite, 487, None, to_tag=call._local_tag)
            self._send_response(invite_tx.key, resp, now)
            self._flush(now)
            self._drop_dialogs(call)
            call.state = CallState.CANCELLED
            call.status = 487
            call.times.ended = now
            self._events.append(CallCancelled(call, by_remote=True))
            self._forget_finished(call)

    def _on_ack(self, request: Request, now: float) -> None:
        did = DialogId.for_incoming(request)
        entry = self._dialogs.get(did) if did is not None else None
        if entry is None:
            return  # an ACK for nothing we know: dropped (17.2.3 / 13.3.1.4)
        dlg, call = entry
        cseq = request.cseq.number
        if call._awaiting_ack.pop(cseq, None) is None:
            return  # ACK retransmission
        self._disarm(call, ("2xx", "ackwait"), cseq)
        offered = call._offered_in_2xx.pop(cseq, None)
        if offered is not None and _is_sdp(request):
            call.remote_sdp = request.body
            self._apply_answer(call, offered, request.body)
        if call.state is CallState.ANSWERED:
            call.state = CallState.ESTABLISHED
            call.times.ack_received = now
            self._events.append(CallEstablished(call))
            if call._pending_bye:
                call._pending_bye = False
                self._send_bye(call, now, "BYE")

    def _on_in_dialog(self, request: Request, key: TransactionKey, now: float) -> None:
        did = DialogId.for_incoming(request)
        entry = self._dialogs.get(did) if did is not None else None
        if entry is None:
            self._reply(key, request, 481, now)
            return
        dlg, call = entry
        self._server[key] = call
        if dlg.check_request(request) is not None:
            self._reply(key, request, 500, now, reason="Out of Order CSeq")
            return
        method = request.method
        if method == "BYE":
            self._reply(key, request, 200, now)
            if call._server_invite is not None:  # 15.1.2: pending INVITE gets 487
                ikey, invite = call._server_invite
                call._server_invite = None
                if self._table.get(ikey) is not None:
                    self._send_response(ikey, self._response(invite, 487, None, to_tag=call._local_tag), now)
                    self._flush(now)
            self._end_call(call, now, by_remote=True, reason="BYE")
        elif method == "INVITE":
            if call._reinvite_key is not None:
                self._reply(key, request, 491, now)
            elif call._server_invite is not None or call._awaiting_ack:
                retry = int(self.rng.integers(0, 11))
                self._reply(key, request, 500, now, extra=[("Retry-After", str(retry))])
            elif not dlg.confirmed or call.state is not CallState.ESTABLISHED:
                self._reply(key, request, 491, now)
            else:
                dlg.refresh_target(request)
                call._server_invite = (key, request)
                offer = request.body if _is_sdp(request) else None
                self._events.append(ReinviteReceived(call, request, offer))
                if self.auto_answer_reinvite and (call._codecs or self.codecs):
                    try:
                        self._answer(call, 200, _AUTO, now, None, [])
                    except VoicelabError as exc:
                        call.media_error = str(exc)
                        if call._server_invite is not None:
                            self._answer(call, 488, None, now, None, [])
        elif method in ("INFO", "OPTIONS"):
            self._reply(key, request, 200, now)
            if method == "INFO":
                self._events.append(InfoReceived(call, request))
        else:
            self._reply(key, request, 405, now)

    # -- UAC -----------------------------------------------------------------------------
    def _send_cancel(self, call: Call, now: float) -> None:
        if call._cancel_sent or call._invite is None or call._invite_key is None:
            return
        if self._table.get(call._invite_key) is None:
            return
        call._cancel_sent = True
        cancel = build_cancel(call._invite)
        dest = call._invite_dest
        self._start_client(cancel, dest, _Pending("cancel", cancel, dest, call=call), now)

    def _send_bye(self, call: Call, now: float, reason: str) -> None:
        dlg = call.dialog
        assert dlg is not None
        self._disarm(call, ("2xx", "ackwait", "se-refresh", "se-expire"))
        call._awaiting_ack.clear()
        extra = [("User-Agent", self.user_agent)] if self.user_agent else []
        req = dlg.create_request("BYE", via=self._via(new_branch(self.rng)), headers=extra,
                                 initial_cseq=self._initial_cseq())  # fmt: skip
        dlg.terminate()
        call.state = CallState.ENDING
        call._bye_reason = reason
        dest = self._next_hop_addr(dlg.next_hop)
        self._start_client(req, dest, _Pending("bye", req, dest, call=call), now)

    def _send_ack(self, call: Call, dlg: Dialog, cseq: int, now: float, body: bytes = b"") -> None:
        ack = dlg.create_ack(cseq, via=self._via(new_branch(self.rng)), body=body)
        dest = self._next_hop_addr(dlg.next_hop)
        call._acks[cseq] = (ack, dest)
        self._send_direct(ack, dest, now)

    def _apply_answer(self, call: Call, offer: bytes, answer: bytes) -> None:
        try:
            call.media = apply_answer(offer, answer, codecs=call._codecs or self.codecs)
            call.media_error = None
        except (RemoteProtocolError, ParameterError) as exc:
            call.media_error = str(exc)

    def _on_response(self, response: Response, key: TransactionKey, now: float) -> None:
        pending = self._client.get(key)
        if pending is None:
            return
        if self.overload_throttle is not None:  # RFC 7339: the server's feedback, in our own Via
            try:
                fb = feedback_from_params(response.via[0].params)
            except (ProtocolError, IndexError):
                fb = None
            if fb is not None:
                self.overload_throttle.update(pending.dest, fb, now)
        code = response.status_code
        if code >= 300 and code in (401, 407) and self._retry_with_auth(pending, key, response, now):
            return
        if code == 422 and pending.kind == "invite" and self._retry_422(pending, key, response, now):
            return
        kind = pending.kind
        if kind == "invite":
            self._on_invite_response(pending, response, now)
        elif kind == "reinvite":
            self._on_reinvite_response(pending, response, now)
        elif code < 200:
            return
        elif kind == "bye":
            self._end_call(pending.call, now, by_remote=False, reason=pending.call._bye_reason)  # type: ignore[arg-type]
        elif kind == "options":
            assert pending.handle is not None
            self._events.append(OptionsAnswered(pending.handle, code, response, (now - pending.handle.sent_at) * 1000.0))
        elif kind == "info":
            assert pending.handle is not None
            self._events.append(RequestAnswered(pending.handle, code, response))
            if code in (408, 481) and pending.call is not None and not pending.call.over:
                self._send_bye_or_end(pending.call, now, f"{code} to {pending.request.method}")
        elif kind == "register":
            self._on_register_response(pending, response, now)

    def _on_invite_response(self, pending: _Pending, response: Response, now: float) -> None:
        call = pending.call
        assert call is not None
        code = response.status_code
        if code == 100:
            return
        if call.over and code < 200:
            return
        invite = pending.request
        if code < 200:
            if call.times.first_provisional is None:
                call.times.first_provisional = now
            if code in (180, 183) and call.times.first_ringing_or_answer is None:
                call.times.first_ringing_or_answer = now
            tag = response.to.tag
            if tag and tag not in call._early and call._confirmed_tag is None:
                try:
                    dlg = Dialog.from_uac_response(invite, response)
                except RemoteProtocolError:
                    dlg = None
                if dlg is not None:
                    call._early[tag] = dlg
                    self._dialogs[dlg.id] = (dlg, call)
                    if call.dialog is None or call.dialog.early:
                        call.dialog = dlg
            if _is_sdp(response) and call._pending_offer is not None:
                call.remote_sdp = response.body
                self._apply_answer(call, call._pending_offer, response.body)
            if call.state is CallState.CALLING:
                call.state = CallState.EARLY
            self._events.append(CallRinging(call, response))
            if call._cancel_requested:
                self._send_cancel(call, now)
            return
        if code < 300:
            tag = response.to.tag or ""
            cseq = invite.cseq.number
            if call._confirmed_tag is not None:
                if tag == call._confirmed_tag:  # retransmitted 2xx: ACK again
                    ack = call._acks.get(cseq)
                    if ack is not None:
                        self._send_direct(ack[0], ack[1], now, retransmission=True)
                    return
                # another fork answered too (13.2.2.4): ACK it, then hang it up
                self._ack_and_bye_fork(call, invite, response, now)
                return
            if call.times.first_ringing_or_answer is None:
                call.times.first_ringing_or_answer = now
            dlg = call._early.get(tag)
            if dlg is not None:
                dlg.confirm(response)
            else:
                try:
                    dlg = Dialog.from_uac_response(invite, response)
                except RemoteProtocolError as exc:  # e.g. no Contact: no dialog can exist
                    if not call.over:
                        self._finish_failed(call, 502, f"unusable {code}: {exc}", now, by_us=False)
                    return
                self._dialogs[dlg.id] = (dlg, call)
            for other_tag, other in list(call._early.items()):
                if other is not dlg:
                    other.terminate()
                    self._dialogs.pop(other.id, None)
            call._early = {tag: dlg}
            call._confirmed_tag = tag
            call.dialog = dlg
            call.status = code
            call.times.answered = now
            body = response.body if _is_sdp(response) else None
            ack_body = b""
            if body is not None:
                call.remote_sdp = body
                if call._pending_offer is not None:
                    self._apply_answer(call, call._pending_offer, body)
                else:  # the 2xx carries the offer (delayed offer): answer in the ACK
                    ack_body = self._answer_in_ack(call, body)
            offered = call._pending_offer
            call._pending_offer = None
            self._send_ack(call, dlg, cseq, now, ack_body)
            call.times.ack_sent = now
            self._events.append(CallAnswered(call, response, body))
            if call._cancel_requested or call.over:  # the 2xx crossed our CANCEL (9.1)
                call.state = CallState.ESTABLISHED
                self._send_bye(call, now, "cancelled after answer")
                return
            call.state = CallState.ESTABLISHED
            if (call._codecs or self.codecs) and call.media is None:
                # 13.2.2.4 / RFC 3264: an answer we cannot use (or none at all) ends the
                # session: the 2xx is ACKed (done above), then the dialog is hung up
                if body is None:
                    why = "the 2xx carried no SDP answer to our offer" if offered else "the 2xx carried no SDP offer"
                else:
                    why = f"the 2xx's SDP is unusable: {call.media_error or 'no common codec'}"
                call.media_error = why
                self._send_bye(call, now, why)
                self._events.append(CallFailed(call, 488, f"{why} (ACKed and hung up with BYE)", response))
                return
            granted = _session_expires_of(response) if self.session_expires is not None else None
            if granted is not None and granted[0] > 0:  # RFC 4028 7.2: the 2xx says who refreshes
                call.session_timer = (granted[0], granted[1] or "uac")
                self._arm_session(call, now)
            self._events.append(CallEstablished(call))
            return
        # 300-699: the transaction sent the ACK
        self._drop_dialogs(call)
        call.status = code
        call.times.ended = now
        if call._cancel_requested and code == 487:
            call.state = CallState.CANCELLED
            self._events.append(CallCancelled(call, by_remote=False))
        else:
            call.state = CallState.FAILED
            self._events.append(CallFailed(call, code, response.reason, response))
        self._forget_finished(call)

    def _answer_in_ack(self, call: Call, offer: bytes) -> bytes:
        codecs = call._codecs or self.codecs
        if not codecs:
            call.media_error = "the 2xx carried an offer but the UA has no codecs to answer it"
            return b""
        try:
            answer, media = create_answer(offer, codecs, address=self.media_address, port=self._port(call),
                                          session_id=self._session_id(), require_srtp=self.srtp)  # fmt: skip
        except RemoteProtocolError as exc:
            call.media_error = str(exc)
            return b""
        call.media = media
        body = bytes(answer)
        call.local_sdp = body
        return body

    def _ack_and_bye_fork(self, call: Call, invite: Request, response: Response, now: float) -> None:
        try:
            dlg = Dialog.from_uac_response(invite, response)
        except RemoteProtocolError:
            return
        if dlg.id in self._dialogs:
            return
        ack = dlg.create_ack(invite.cseq.number, via=self._via(new_branch(self.rng)))
        self._send_direct(ack, self._next_hop_addr(dlg.next_hop), now)
        bye = dlg.create_request("BYE", via=self._via(new_branch(self.rng)), initial_cseq=self._initial_cseq())
        dlg.terminate()
        dest = self._next_hop_addr(dlg.next_hop)
        self._start_client(bye, dest, _Pending("fork-bye", bye, dest, call=None), now)

    def _on_reinvite_response(self, pending: _Pending, response: Response, now: float) -> None:
        call = pending.call
        assert call is not None
        code = response.status_code
        if code < 200:
            return
        cseq = pending.request.cseq.number
        if code < 300:
            if cseq in call._acks:  # retransmitted 2xx
                ack, dest = call._acks[cseq]
                self._send_direct(ack, dest, now, retransmission=True)
                return
            dlg = call.dialog
            if dlg is None or call.over:
                return
            dlg.refresh_target(response)
            body = response.body if _is_sdp(response) else None
            ack_body = b""
            offer = call._pending_offer
            if offer:
                call.local_sdp = offer
                if body is not None:
                    call.remote_sdp = body
                    self._apply_answer(call, offer, body)
            elif body is not None:
                call.remote_sdp = body
                ack_body = self._answer_in_ack(call, body)
            call._pending_offer = None
            call._reinvite_key = None
            self._send_ack(call, dlg, cseq, now, ack_body)
            if call.session_timer is not None:
                granted = _session_expires_of(response)
                if granted is not None:
                    call.session_timer = (granted[0], granted[1] or call.session_timer[1])
                self._arm_session(call, now)
            self._events.append(ReinviteAnswered(call, response, body))
            return
        call._pending_offer = None
        call._reinvite_key = None
        if code in (408, 481):  # 12.2.1.2: the dialog is gone
            self._send_bye_or_end(call, now, f"{code} to re-INVITE")
            return
        self._events.append(ReinviteFailed(call, code, response.reason))

    def _send_bye_or_end(self, call: Call, now: float, reason: str) -> None:
        if call.dialog is not None and not call.dialog.terminated and call.state is CallState.ESTABLISHED:
            self._send_bye(call, now, reason)
        else:
            self._end_call(call, now, by_remote=True, reason=reason)

    def _on_register_response(self, pending: _Pending, response: Response, now: float) -> None:
        handle = pending.handle
        assert handle is not None
        code = response.status_code
        if code == 423 and not pending.extra.get("retried"):
            mn = response.headers.get("Min-Expires")
            if mn is not None and mn.strip().isdigit():
                uri = pending.request.uri
                self._registrations[str(uri)]["cseq"] = pending.request.cseq.number
                self._send_register_retry(pending, int(mn.strip()), now)
                return
        expires = None
        if 200 <= code < 300:
            expires = pending.extra.get("expires")
            contacts = response.contact
            if isinstance(contacts, list):
                for na in contacts:
                    if na.uri == self.contact and na.param("expires") is not None:
                        expires = int(na.param("expires"))  # type: ignore[arg-type]
                        break
                else:
                    hdr = response.headers.get("Expires")
                    if hdr is not None and hdr.strip().isdigit():
                        expires = int(hdr.strip())
        self._events.append(RegistrationResult(handle, code, expires, response))

    def _send_register_retry(self, pending: _Pending, expires: int, now: float) -> None:
        uri = pending.request.uri
        reg = self._registrations[str(uri)]
        reg["cseq"] += 1
        req = self._out_of_dialog("REGISTER", uri, to=format_name_addr(self.local_uri), from_tag=reg["tag"],
                                  call_id=reg["call_id"], cseq=reg["cseq"], extra=[("Expires", str(expires))])  # fmt: skip
        self._start_client(req, pending.dest, _Pending("register", req, pending.dest, handle=pending.handle,
                                                       extra={"expires": expires, "retried": True}), now)  # fmt: skip

    def _retry_with_auth(self, pending: _Pending, key: TransactionKey, response: Response, now: float) -> bool:
        """Resend ``pending.request`` with digest credentials (client auth hook).

        Uses :func:`voicelab.sip.auth.authorize` (imported lazily; without that module
        the challenge ends the request). One retry per request: a second challenge is
        final.
        """
        if self.credentials_for is None or pending.auth_tries >= 1 or pending.kind in ("cancel", "fork-bye"):
            return False
        try:
            auth = importlib.import_module("voicelab.sip.auth")
        except ImportError:
            return False
        header = "WWW-Authenticate" if response.status_code == 401 else "Proxy-Authenticate"
        try:
            challenges = [c for c in response.auth(header) if c.scheme.lower() == "digest"]
        except RemoteProtocolError:
            return False
        if not challenges:
            return False
        realm = challenges[0].param("realm") or ""
        creds = self.credentials_for(realm)
        if creds is None:
            return False
        try:
            credentials = auth.DigestCredentials(creds[0], creds[1], realm=realm or None)
            new = auth.authorize(pending.request, response, credentials, cnonce=self.rng.bytes(16).hex(),
                                 branch=new_branch(self.rng))  # fmt: skip
            new_cseq = new.cseq.number
        except (VoicelabError, AttributeError, TypeError, IndexError):
            return False
        call = pending.call
        if pending.kind == "register":
            self._registrations[str(new.uri)]["cseq"] = new_cseq
        if call is not None and call.dialog is not None and pending.kind in ("reinvite", "bye", "info"):
            call.dialog.local_cseq = max(call.dialog.local_cseq or 0, new_cseq)
        retry = _Pending(pending.kind, new, pending.dest, call=call, handle=pending.handle,
                         auth_tries=pending.auth_tries + 1, extra=pending.extra)  # fmt: skip
        self._client.pop(key, None)
        new_key = self._start_client(new, pending.dest, retry, now)
        if call is not None:
            if pending.kind == "invite":
                call._invite = new
                call._invite_key = new_key
            elif pending.kind == "reinvite":
                call._reinvite_key = new_key
        return True

    def _retry_422(self, pending: _Pending, key: TransactionKey, response: Response, now: float) -> bool:
        """RFC 4028 7.4: INVITE again (once) with the peer's Min-SE as Session-Expires."""
        call = pending.call
        min_se = _int_field(response, "Min-SE")
        if (self.session_expires is None or pending.extra.get("se_retried") or min_se is None or call is None
                or call.over or not 90 <= min_se <= 86400):  # fmt: skip
            return False
        headers = pending.request.headers.copy()
        headers.set("Via", self._via(new_branch(self.rng)))
        headers.set("CSeq", f"{pending.request.cseq.number + 1} INVITE")
        headers.set("Session-Expires", str(min_se))
        headers.set("Min-SE", str(min_se))
        new = Request("INVITE", pending.request.uri, headers, pending.request.body)
        self._client.pop(key, None)
        retry = _Pending("invite", new, pending.dest, call=call, auth_tries=pending.auth_tries,
                         extra={**pending.extra, "se_retried": True})  # fmt: skip
        call._invite = new
        call._invite_key = self._start_client(new, pending.dest, retry, now)
        return True

    def _on_stray(self, response: Response, now: float) -> None:
        """A 2xx to INVITE after its transaction ended: ACK it again (13.2.2.4)."""
        try:
            if response.cseq.method != "INVITE" or not 200 <= response.status_code < 300:
                return
            did = DialogId.for_incoming(response)
        except ProtocolError:
            return
        entry = self._dialogs.get(did) if did is not None else None
        if entry is None:
            return
        _, call = entry
        ack = call._acks.get(response.cseq.number)
        if ack is not None:
            self._send_direct(ack[0], ack[1], now, retransmission=True)

    def _on_timeout(self, key: TransactionKey, now: float, *, transport: bool) -> None:
        pending = self._client.get(key)
        if pending is None:
            return
        if transport:  # 8.1.3.1: a transport error is a 503 from the transaction
            status, why = 503, f"transport failed: {self._transport_reasons.get(key, 'the message could not be sent')}"
        else:
            timer = "B" if pending.request.method == "INVITE" else "F"
            status, why = 408, f"no final response to {pending.request.method} within {64 * self.timers.t1:g} s (Timer {timer})"
        call = pending.call
        kind = pending.kind
        if kind == "invite" and call is not None and not call.over and call._confirmed_tag is None:
            self._drop_dialogs(call)
            call.status = status
            call.times.ended = now
            if call._cancel_requested:
                call.state = CallState.CANCELLED
                self._events.append(CallCancelled(call, by_remote=False))
            else:
                call.state = CallState.FAILED
                self._events.append(CallFailed(call, status, why))
            self._forget_finished(call)
        elif kind == "reinvite" and call is not None:
            call._reinvite_key = None
            call._pending_offer = None
            self._send_bye_or_end(call, now, f"re-INVITE failed: {why}")
        elif kind == "bye" and call is not None:
            self._end_call(call, now, by_remote=False, reason=f"BYE failed: {why}")
        elif kind == "options" and pending.handle is not None:
            self._events.append(OptionsAnswered(pending.handle, status, None, (now - pending.handle.sent_at) * 1000.0))
        elif kind == "info" and pending.handle is not None:
            self._events.append(RequestAnswered(pending.handle, status, None))
        elif kind == "register" and pending.handle is not None:
            self._events.append(RegistrationResult(pending.handle, status, None, None))

    # -- shared --------------------------------------------------------------------------
    def _drop_dialogs(self, call: Call) -> None:
        for dlg in list(call._early.values()) + ([call.dialog] if call.dialog is not None else []):
            dlg.terminate()
            self._dialogs.pop(dlg.id, None)

    def _end_call(self, call: Call, now: float, *, by_remote: bool, reason: str) -> None:
        if call.state in (CallState.ENDED, CallState.FAILED, CallState.CANCELLED):
            return
        self._disarm(call, ("2xx", "ackwait", "se-refresh", "se-expire"))
        call._awaiting_ack.clear()
        self._drop_dialogs(call)
        call.state = CallState.ENDED
        call.times.ended = now
        self._events.append(CallEnded(call, by_remote, reason))
        self._forget_finished(call)

    def _finish_failed(self, call: Call, status: int, reason: str, now: float, *, by_us: bool) -> None:
        self._drop_dialogs(call)
        call.state = CallState.FAILED
        call.status = status
        call.times.ended = now
        self._events.append(CallFailed(call, status, reason))
        self._forget_finished(call)
