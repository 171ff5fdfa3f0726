"""SIP dialogs (RFC 3261 section 12): state, creation, in-dialog requests. Sans-IO.

A dialog is the peer-to-peer relationship an INVITE sets up. It is identified by the
Call-ID, the local tag and the remote tag (12), and holds what every later request in it
needs: the local and remote URIs (From/To), the remote target (the peer's Contact), the
two CSeq spaces, and the route set learnt from Record-Route.

=================================  ==========================================
function / method                  RFC 3261
=================================  ==========================================
:meth:`Dialog.from_uac_response`   12.1.2 (UAC: 1xx with To tag or 2xx)
:meth:`Dialog.from_uas_response`   12.1.1 (UAS: INVITE + our 1xx/2xx)
:meth:`Dialog.create_request`      12.2.1.1 (BYE, re-INVITE, INFO, OPTIONS)
:meth:`Dialog.create_ack`          13.2.2.4 (ACK for 2xx: the INVITE's CSeq number)
:meth:`Dialog.check_request`       12.2.2 (CSeq order; lower CSeq -> 500)
:meth:`Dialog.refresh_target`      12.2 target refresh (re-INVITE and its 2xx)
=================================  ==========================================

Routing (12.2.1.1, 16.12.1.1): with an empty route set the Request-URI is the remote
target and there is no Route. When the first route carries ``lr`` (a loose router,
the RFC 3261 way) the Request-URI is the remote target and the route set goes into
Route headers as is. Otherwise the first route is a strict (RFC 2543) router: its URI
becomes the Request-URI (parameters a Request-URI may not hold are removed) and the
remote target is appended as the last Route. :attr:`Dialog.next_hop` says where the
request goes first.

Nothing here does I/O, reads a clock or draws random numbers: tags, branches and the
first CSeq number are passed in by the UA core (:mod:`voicelab.sip.ua`).

Why our own: no maintained sans-IO SIP dialog layer exists for Python (see
:mod:`voicelab.sip.message`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from ..errors import LocalProtocolError, ParameterError, RemoteProtocolError
from .headers import CSEQ_MAX, Headers, NameAddr
from .message import Request, Response
from .uri import SipUri, Uri

__all__ = ["DialogState", "DialogId", "Dialog", "format_name_addr", "parse_route_set"]


class DialogState(enum.Enum):
    """Dialog states (RFC 3261 12): early (1xx with tag), confirmed (2xx), terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class DialogId:
    """What identifies a dialog at one end (RFC 3261 12).

    Attributes
    ----------
    call_id : str
        The Call-ID.
    local_tag : str
        Our tag (From tag of what we send).
    remote_tag : str
        The peer's tag; ``""`` for an RFC 2543 peer that sent no From tag.
    """

    call_id: str
    local_tag: str
    remote_tag: str

    def __str__(self) -> str:
        return f"{self.call_id};{self.local_tag};{self.remote_tag}"

    @classmethod
    def for_incoming(cls, message: Request | Response) -> DialogId | None:
        """The id of the dialog an incoming message belongs to, at our end.

        A request received carries our tag in To and the peer's in From; a response
        received carries our tag in From and the peer's in To. None when our tag is
        missing or a header is malformed.
        """
        try:
            call_id = message.call_id
            to_tag, from_tag = message.to.tag, message.from_.tag
        except RemoteProtocolError:
            return None
        if isinstance(message, Request):
            local, remote = to_tag, from_tag
        else:
            local, remote = from_tag, to_tag
        if not local or (isinstance(message, Response) and not remote):
            return None
        return cls(call_id, local, remote or "")

    @classmethod
    def for_outgoing(cls, message: Request | Response) -> DialogId | None:
        """The id of the dialog a message we send belongs to (None without both tags)."""
        try:
            call_id = message.call_id
            to_tag, from_tag = message.to.tag, message.from_.tag
        except RemoteProtocolError:
            return None
        local, remote = (from_tag, to_tag) if isinstance(message, Request) else (to_tag, from_tag)
        if not local or not remote:
            return None
        return cls(call_id, local, remote)


def format_name_addr(uri: Uri | str, *, display_name: str | None = None, tag: str | None = None) -> str:
    """``["display" ]<uri>[;tag=...]`` as written in From, To, Contact and Route.

    Parameters
    ----------
    uri : SipUri, TelUri, AbsoluteUri or str
    display_name : str, optional
        Written as a quoted string (``"`` and ``\\`` escaped).
    tag : str, optional
        Added as ``;tag=``.

    Examples
    --------
    >>> format_name_addr("sip:a@example.com", display_name="Alice", tag="1")
    '"Alice" <sip:a@example.com>;tag=1'
    """
    out = f"<{uri}>"
    if display_name:
        escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
        out = f'"{escaped}" {out}'
    if tag:
        out += f";tag={tag}"
    return out


def _route_text(na: NameAddr) -> str:
    """A route-set entry as a Route header value (display name dropped, params kept)."""
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in na.params)
    return f"<{na.uri}>{params}"


def _contact_uri(message: Request | Response) -> Uri | None:
    contacts = message.contact
    if isinstance(contacts, str) or not contacts:
        return None
    return contacts[0].uri


_NOT_IN_REQUEST_URI = ("method",)  # RFC 3261 19.1.1 table 1: "method" only outside Request-URI


def _strip_for_request_uri(uri: Uri) -> Uri:
    """A route URI usable as a Request-URI: no URI headers, no ``method`` parameter."""
    if not isinstance(uri, SipUri):
        return uri
    params = tuple((k, v) for k, v in uri.params if k.lower() not in _NOT_IN_REQUEST_URI)
    if params == uri.params and not uri.headers:
        return uri
    return replace(uri, params=params, headers=(), text="")


class Dialog:
    """One end of a SIP dialog (RFC 3261 12).

    Build one with :meth:`from_uac_response` or :meth:`from_uas_response`; the
    constructor takes every field and is meant for tests and restores.

    Parameters
    ----------
    call_id, local_tag, remote_tag : str
        The dialog id parts (``remote_tag`` ``""`` for an RFC 2543 peer).
    local_uri, remote_uri : Uri
        From / To URIs of the requests we send.
    remote_target : Uri
        The peer's Contact: the Request-URI of our requests (unless strict routing).
    local_target : Uri or None
        Our Contact.
    local_cseq, remote_cseq : int or None
        Last CSeq number we sent / received in the dialog; None while empty.
    route_set : list of NameAddr
        In the order requests traverse it.
    secure : bool
        ``sips`` dialog (RFC 3261 12.1.1).
    is_uac : bool
        Whether we sent the INVITE that created it.
    state : DialogState
    local_display_name, remote_display_name : str or None
        Display names written in From / To.
    """

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: Uri,
        remote_uri: Uri,
        remote_target: Uri,
        local_target: Uri | None = None,
        local_cseq: int | None = None,
        remote_cseq: int | None = None,
        route_set: list[NameAddr] | None = None,
        secure: bool = False,
        is_uac: bool = True,
        state: DialogState = DialogState.EARLY,
        local_display_name: str | None = None,
        remote_display_name: str | None = None,
    ) -> None:
        if not call_id or not local_tag:
            raise ParameterError("a dialog needs a Call-ID and a local tag")
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag or ""
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.local_target = local_target
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.route_set: list[NameAddr] = list(route_set or [])
        self.secure = secure
        self.is_uac = is_uac
        self.state = state
        self.local_display_name = local_display_name
        self.remote_display_name = remote_display_name

    # -- identity ------------------------------------------------------------------------
    @property
    def id(self) -> DialogId:
        """Call-ID + local tag + remote tag."""
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def early(self) -> bool:
        """True in the early state."""
        return self.state is DialogState.EARLY

    @property
    def confirmed(self) -> bool:
        """True in the confirmed state."""
        return self.state is DialogState.CONFIRMED

    @property
    def terminated(self) -> bool:
        """True once terminated."""
        return self.state is DialogState.TERMINATED

    def __repr__(self) -> str:
        role = "UAC" if self.is_uac else "UAS"
        return f"<Dialog {role} {self.state.value} {self.id}>"

    # -- creation ------------------------------------------------------------------------
    @classmethod
    def from_uac_response(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a UAC gets from a 101-299 response with a To tag (RFC 3261 12.1.2).

        Parameters
        ----------
        invite : Request
            The INVITE we sent.
        response : Response
            A 1xx (not 100) or 2xx with a To tag.

        Returns
        -------
        Dialog
            Early for a 1xx, confirmed for a 2xx. Route set = Record-Route reversed;
            remote target = the response's Contact (the Request-URI when a 1xx has none).

        Raises
        ------
        RemoteProtocolError
            The response has no To tag, or a 2xx has no Contact, or a header is malformed.
        """
        code = response.status_code
        if not 101 <= code <= 299:
            raise LocalProtocolError(f"only 101-299 responses create dialogs, got {code}")
        remote_tag = response.to.tag
        if not remote_tag:
            raise RemoteProtocolError(f"{code} response has no To tag; it cannot create a dialog", status_code=400)
        target = _contact_uri(response)
        if target is None:
            if code >= 200:
                raise RemoteProtocolError(
                    "2xx response to INVITE has no Contact (RFC 3261 12.1.2)", status_code=400
                )
            target = invite.uri
        frm, to = invite.from_, response.to
        local_tag = frm.tag
        if not local_tag:
            raise LocalProtocolError("our INVITE has no From tag; every request we send needs one (8.1.1.3)")
        local_contact = _contact_uri(invite)
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=frm.uri,
            remote_uri=to.uri,
            remote_target=target,
            local_target=local_contact,
            local_cseq=invite.cseq.number,
            remote_cseq=None,
            route_set=list(reversed(response.record_route)),
            secure=isinstance(invite.uri, SipUri) and invite.uri.scheme == "sips",
            is_uac=True,
            state=DialogState.CONFIRMED if code >= 200 else DialogState.EARLY,
            local_display_name=frm.display_name,
            remote_display_name=to.display_name,
        )

    @classmethod
    def from_uas_response(cls, invite: Request, response: Response) -> Dialog:
        """The dialog a UAS gets when it answers an INVITE with 101-299 (RFC 3261 12.1.1).

        Parameters
        ----------
        invite : Request
            The INVITE received.
        response : Response
            Our 1xx (not 100) or 2xx, with our To tag.

        Returns
        -------
        Dialog
            Route set = Record-Route of the INVITE in order; remote target = its Contact;
            remote CSeq = its CSeq number; local CSeq empty.

        Raises
        ------
        RemoteProtocolError
            The INVITE has no Contact or a malformed header.
        LocalProtocolError
            Our response has no To tag.
        """
        code = response.status_code
        if not 101 <= code <= 299:
            raise LocalProtocolError(f"only 101-299 responses create dialogs, got {code}")
        local_tag = response.to.tag
        if not local_tag:
            raise LocalProtocolError("our response has no To tag; add one (RFC 3261 8.2.6.2)")
        target = _contact_uri(invite)
        if target is None:
            raise RemoteProtocolError("INVITE has no Contact (RFC 3261 8.1.1.8)", status_code=400)
        frm, to = invite.from_, invite.to
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag or "",
            local_uri=to.uri,
            remote_uri=frm.uri,
            remote_target=target,
            local_target=_contact_uri(response),
            local_cseq=None,
            remote_cseq=invite.cseq.number,
            route_set=list(invite.record_route),
            secure=isinstance(invite.uri, SipUri) and invite.uri.scheme == "sips",
            is_uac=False,
            state=DialogState.CONFIRMED if code >= 200 else DialogState.EARLY,
            local_display_name=to.display_name,
            remote_display_name=frm.display_name,
        )

    # -- state changes -------------------------------------------------------------------
    def confirm(self, response: Response | None = None) -> None:
        """Early -> confirmed on a 2xx (RFC 3261 12.1).

        On the UAC side the 2xx refreshes the remote target and fixes the route set
        (12.1.2: the route set is taken from the 2xx, the early one may differ).
        """
        if self.terminated:
            raise LocalProtocolError("cannot confirm a terminated dialog")
        if response is not None and self.is_uac:
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target
            self.route_set = list(reversed(response.record_route))
        self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        """Move to terminated (BYE sent or received, non-2xx final for an early dialog)."""
        self.state = DialogState.TERMINATED

    def refresh_target(self, message: Request | Response) -> None:
        """Take the remote target from a target refresh (re-INVITE or its 2xx; 12.2)."""
        target = _contact_uri(message)
        if target is not None:
            self.remote_target = target

    # -- requests we send ----------------------------------------------------------------
    def routing(self) -> tuple[Uri, list[str]]:
        """Request-URI and Route header values for the next request (RFC 3261 12.2.1.1).

        Returns
        -------
        (Uri, list of str)
        """
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if isinstance(first.uri, SipUri) and first.uri.has_param("lr"):
            return self.remote_target, [_route_text(na) for na in self.route_set]
        # strict router (RFC 2543): it gets the Request-URI, the target goes last
        routes = [_route_text(na) for na in self.route_set[1:]] + [f"<{self.remote_target}>"]
        return _strip_for_request_uri(first.uri), routes

    @property
    def next_hop(self) -> Uri:
        """Where the next request goes first: the first loose route, else the Request-URI."""
        if self.route_set:
            first = self.route_set[0].uri
            if isinstance(first, SipUri) and first.has_param("lr"):
                return first
        return self.routing()[0]

    def _headers(self, via: str, cseq_number: int, method: str, routes: list[str], max_forwards: int) -> Headers:
        h = Headers()
        h.add("Via", via)
        for r in routes:
            h.add("Route", r)
        h.add("Max-Forwards", str(max_forwards))
        h.add("From", format_name_addr(self.local_uri, display_name=self.local_display_name, tag=self.local_tag))
        h.add(
            "To",
            format_name_addr(self.remote_uri, display_name=self.remote_display_name, tag=self.remote_tag or None),
        )
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq_number} {method}")
        return h

    @staticmethod
    def _finish(
        h: Headers,
        body: bytes,
        content_type: str | None,
        contact: str | None,
        extra: list[tuple[str, str]] | None,
    ) -> None:
        if contact is not None:
            h.add("Contact", contact)
        for name, value in extra or ():
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        h.add("Content-Length", str(len(body)))

    def create_request(
        self,
        method: str,
        *,
        via: str,
        contact: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        max_forwards: int = 70,
        initial_cseq: int = 1,
    ) -> Request:
        """A request within the dialog (RFC 3261 12.2.1.1): BYE, re-INVITE, INFO, OPTIONS, ...

        The local CSeq is incremented (set to ``initial_cseq`` when still empty).

        Parameters
        ----------
        method : str
            Not ACK (use :meth:`create_ack`) and not CANCEL (use
            :func:`~voicelab.sip.transaction.build_cancel` on the pending request).
        via : str
            The Via value, with a fresh ``branch``.
        contact : str, optional
            Contact value; required for target refresh requests (re-INVITE; 12.2.1.1).
        body : bytes, optional
        content_type : str, optional
            Default ``application/sdp`` when there is a body.
        headers : list of (str, str), optional
            Extra header fields.
        max_forwards : int, optional
        initial_cseq : int, optional
            CSeq number when the local sequence is empty (8.1.1.5: below 2**31).

        Returns
        -------
        Request

        Raises
        ------
        LocalProtocolError
            For ACK/CANCEL, a terminated dialog, a re-INVITE without Contact, or a CSeq
            that would pass 2**31 - 1.
        """
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"build {method} with create_ack / build_cancel, not create_request")
        if self.terminated and method != "BYE":
            raise LocalProtocolError(f"the dialog {self.id} is terminated; no {method} can be sent in it")
        if method == "INVITE" and contact is None:
            raise LocalProtocolError("a re-INVITE is a target refresh request and needs a Contact (RFC 3261 12.2.1.1)")
        number = initial_cseq if self.local_cseq is None else self.local_cseq + 1
        if not 0 <= number <= CSEQ_MAX:
            raise LocalProtocolError(f"CSeq {number} would exceed 2**31 - 1 (RFC 3261 8.1.1.5)")
        self.local_cseq = number
        uri, routes = self.routing()
        h = self._headers(via, number, method, routes, max_forwards)
        self._finish(h, body, content_type, contact, headers)
        return Request(method, uri, h, body)

    def create_ack(
        self,
        invite_cseq: int,
        *,
        via: str,
        body: bytes = b"",
        content_type: str | None = None,
        contact: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Request:
        """The ACK for a 2xx to an INVITE in this dialog (RFC 3261 13.2.2.4).

        Built like any in-dialog request (12.2.1.1) but the CSeq number is the INVITE's
        and the local CSeq is not changed. It has its own branch (``via``).

        Parameters
        ----------
        invite_cseq : int
            The CSeq number of the INVITE acknowledged.
        via : str
            Via value with a fresh branch.
        body : bytes, optional
            The SDP answer when the 2xx carried the offer.
        """
        uri, routes = self.routing()
        h = self._headers(via, invite_cseq, "ACK", routes, 70)
        self._finish(h, body, content_type, contact, headers)
        return Request("ACK", uri, h, body)

    # -- requests we receive -------------------------------------------------------------
    def check_request(self, request: Request) -> int | None:
        """Apply RFC 3261 12.2.2 to a request that matched this dialog.

        Returns
        -------
        int or None
            500 when its CSeq is lower than the remote CSeq (out of order); None when it
            may be processed (the remote CSeq is then updated). ACK and CANCEL carry the
            CSeq of the request they refer to and are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return None
        number = request.cseq.number
        if self.remote_cseq is not None and number < self.remote_cseq:
            return 500
        self.remote_cseq = number
        return None

    def matches(self, message: Request | Response) -> bool:
        """Whether an incoming message carries this dialog's id."""
        return DialogId.for_incoming(message) == self.id


def parse_route_set(values: list[str]) -> list[NameAddr]:
    """Parse Route/Record-Route values into a route set (helper for tests and tools)."""
    from .headers import parse_name_addr_list

    out: list[NameAddr] = []
    for v in values:
        out.extend(parse_name_addr_list(v, "Route"))
    return out
