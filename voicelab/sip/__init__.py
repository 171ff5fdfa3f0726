"""Sans-IO SIP (RFC 3261): messages, URIs, header grammar, framing, inspection.

- :mod:`voicelab.sip.abnf`: the grammar as named pieces (token, hosts, quoted-string, ...).
- :mod:`voicelab.sip.uri`: :class:`SipUri`, :class:`TelUri`, :class:`AbsoluteUri`,
  :func:`parse_uri`, :func:`uri_equal` (RFC 3261 19.1.4).
- :mod:`voicelab.sip.headers`: :class:`Headers` (ordered, case-insensitive, compact
  forms) and typed views :class:`Via`, :class:`NameAddr`, :class:`CSeq`,
  :class:`ContentType`, :class:`Auth`.
- :mod:`voicelab.sip.message`: :class:`Request`, :class:`Response`,
  :func:`parse_message`, :class:`StreamParser`, :class:`Limits`, :func:`validate`.
- :mod:`voicelab.sip.inspect`: :func:`describe` (validity and the status a UAS answers).
- :mod:`voicelab.sip.timers`: :class:`TimerConfig` (T1/T2/T4) and Timers A-M.
- :mod:`voicelab.sip.transaction`: the four RFC 3261 section 17 transactions (with RFC 6026
  Accepted states) as state tables, transaction keys and :class:`TransactionTable`.

- :mod:`voicelab.sip.auth`: digest authentication (RFC 7616 / RFC 8760), client and server.
- :mod:`voicelab.sip.registrar`: an RFC 3261 section 10.3 registrar.
- :mod:`voicelab.sip.transport`: the thin asyncio transports (UDP, TCP, TLS, WebSocket
  per RFC 7118) over an injectable network interface (:mod:`voicelab.net.iface`); test
  certificates come from :mod:`voicelab.tlsutil`.

Every parse error is a :class:`~voicelab.errors.RemoteProtocolError` whose
``status_code`` is what a UAS would answer. The protocol cores (everything but
``transport``) import no ``asyncio``, ``socket``, ``time`` or ``random``:
they take bytes and ``now`` and return bytes, deadlines and events.
"""

from __future__ import annotations

from .headers import (
    Auth,
    ContentType,
    CSeq,
    HeaderField,
    Headers,
    NameAddr,
    Via,
    header_key,
)
from .inspect import describe
from .message import (
    DEFAULT_LIMITS,
    Limits,
    Request,
    Response,
    StreamParser,
    parse_message,
    split_multipart,
    validate,
)
from .timers import TimerConfig, derive_timers
from .transaction import (
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionKey,
    TransactionTable,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    UnmatchedRequest,
    build_ack,
    build_cancel,
    build_response,
    new_branch,
    transaction_key_for_request,
    transaction_key_for_response,
)
from .uri import AbsoluteUri, SipUri, TelUri, parse_uri, uri_equal

__all__ = [
    "parse_message",
    "Request",
    "Response",
    "StreamParser",
    "Limits",
    "DEFAULT_LIMITS",
    "validate",
    "split_multipart",
    "Headers",
    "HeaderField",
    "header_key",
    "Via",
    "NameAddr",
    "CSeq",
    "ContentType",
    "Auth",
    "SipUri",
    "TelUri",
    "AbsoluteUri",
    "parse_uri",
    "uri_equal",
    "describe",
    "TimerConfig",
    "derive_timers",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "TransactionTable",
    "TransactionKey",
    "transaction_key_for_request",
    "transaction_key_for_response",
    "new_branch",
    "build_ack",
    "build_cancel",
    "build_response",
    "RequestReceived",
    "ResponseReceived",
    "TransactionTimedOut",
    "TransactionTerminated",
    "TransportFailed",
    "UnmatchedRequest",
    "StrayResponse",
]
