"""RFC 7339 overload-control feedback in the Via header (sans-IO): the loss-based scheme.

A client that supports SIP overload control puts a valueless ``oc`` parameter (and the
algorithms it knows in ``oc-algo``) in the topmost Via of its requests::

    Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport;oc;oc-algo="loss"

A server in overload answers in that same Via (the client's own, copied into every
response) with how many of its requests the client should shed before sending them::

    Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport;oc=30;oc-algo="loss";oc-validity=500;oc-seq=1282.125

``oc`` is the percentage of new requests to drop (``"loss"``: RFC 7339 section 6),
``oc-validity`` how long (ms) the value holds (0: the server left overload, stop
shedding), ``oc-seq`` a number that grows with each new value (here the server's
monotonic clock with ms digits), so that a reordered old response cannot undo a newer
value. Only a client that asked gets feedback; a server that does not support it leaves
the Via alone (the client then sheds nothing). Requests within dialogs are never shed
(RFC 7339 section 5.10: they finish calls the server already accepted).

This module does the text: :func:`client_asks` (does a request's top Via ask for feedback,
with the loss algorithm), :func:`with_feedback` (the server's rewrite of that Via),
:func:`parse_feedback` (the client's reading of a response's top Via) and
:class:`LossThrottle` (the client's state per server: which new requests to shed).
The server's percentage comes from :meth:`voicelab.sip.overload.OverloadControl.feedback`.

Examples
--------
>>> via = 'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;oc;oc-algo="loss,A"'
>>> client_asks(via)
True
>>> with_feedback(via, percent=30, validity_ms=500, seq=12.5)
'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;oc=30;oc-algo="loss";oc-validity=500;oc-seq=12.500'
>>> parse_feedback(with_feedback(via, percent=30, validity_ms=500, seq=12.5))
Feedback(percent=30, validity_ms=500, seq=12.5)
>>> t = LossThrottle()
>>> t.update(("192.0.2.2", 5060), Feedback(30, 500, 12.5), now=0.0)
>>> t.shed(("192.0.2.2", 5060), now=0.1, draw=0.2), t.shed(("192.0.2.2", 5060), now=0.1, draw=0.4)
(True, False)
>>> t.shed(("192.0.2.2", 5060), now=0.6, draw=0.2)  # 500 ms later the value has expired
False
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Hashable

from ..errors import ParameterError

__all__ = ["ALGORITHM", "DEFAULT_VALIDITY_MS", "Feedback", "LossThrottle", "client_asks", "feedback_from_params",
           "parse_feedback", "request_params", "with_feedback"]

#: The one algorithm both sides implement (RFC 7339 section 6: loss-based, mandatory).
ALGORITHM = "loss"
#: How long a server's value holds (ms) when it gives one (RFC 7339's examples use 500).
DEFAULT_VALIDITY_MS = 500
#: What a supporting client adds to its Via: ``;oc;oc-algo="loss"``.
request_params = f';oc;oc-algo="{ALGORITHM}"'

# one Via hop's parameters: ;name or ;name=value (value: token or quoted string)
_PARAM = re.compile(r';[ \t]*([A-Za-z0-9.!%*_+`\'~-]+)(?:[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^;,\s]*))?')
_OC_NAMES = ("oc", "oc-algo", "oc-validity", "oc-seq")
# whether a hop may have an "oc" parameter at all (a name "oc", not "oc-algo" or "ocx"): one
# search on every response's Via, before the parameters are read (a false positive only
# costs the full read; there are no false negatives: the same tokenisation as _PARAM)
_MAY_HAVE_OC = re.compile(r";[ \t]*oc(?![A-Za-z0-9.!%*_+`'~-])", re.I)


@dataclass(frozen=True)
class Feedback:
    """A server's overload feedback, as read from a response's top Via.

    Attributes
    ----------
    percent : int
        New requests to shed, 0-100 (%).
    validity_ms : int
        How long the value holds (ms); 0: the server left overload.
    seq : float
        Grows with each new value from one server.
    """

    percent: int
    validity_ms: int
    seq: float


def _params(via: str) -> tuple[str, list[tuple[str, str | None]]]:
    """(sent-protocol and sent-by, [(lower-case name, value or None), ...]) of one Via hop."""
    head, sep, rest = via.partition(";")
    return head, [(m.group(1).lower(), m.group(2)) for m in _PARAM.finditer(sep + rest)]


def client_asks(via: str) -> bool:
    """Whether a request's top Via hop asks for feedback with the loss algorithm.

    True for a valueless ``oc`` parameter with ``oc-algo`` absent (RFC 7339 makes
    ``loss`` the default) or listing ``loss``; False otherwise (no ``oc``, or an ``oc``
    that already has a value: that is a response's, not a request).
    """
    if _MAY_HAVE_OC.search(via) is None:  # the common case: one search
        return False
    ps = dict(_params(via)[1])
    if "oc" not in ps or ps["oc"] is not None:
        return False
    algo = ps.get("oc-algo")
    if algo is None:
        return True
    names = {a.strip().lower() for a in algo.strip('"').split(",")}
    return ALGORITHM in names


def with_feedback(via: str, *, percent: int, validity_ms: int, seq: float) -> str:
    """The top Via hop of a response, with the server's feedback in place of the client's request.

    Parameters
    ----------
    via : str
        The request's top Via hop (as copied into the response).
    percent : int
        New requests the client should shed, 0-100 (%).
    validity_ms : int
        How long it holds (ms), >= 0.
    seq : float
        Grows with each new value (s: the server's monotonic clock; written with ms digits).

    Returns
    -------
    str
        The hop with its ``oc*`` parameters replaced by ``oc=P;oc-algo="loss";
        oc-validity=V;oc-seq=S`` (the others kept, in order); the hop as it was when
        it has an unbalanced quote (its parameters cannot be read with certainty).

    Raises
    ------
    ParameterError
        A percentage outside 0-100, a negative validity or a non-finite seq.
    """
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ParameterError(f"percent must be an int 0..100, got {percent!r}")
    if isinstance(validity_ms, bool) or not isinstance(validity_ms, int) or validity_ms < 0:
        raise ParameterError(f"validity_ms must be an int >= 0, got {validity_ms!r}")
    if not isinstance(seq, (int, float)) or not math.isfinite(seq) or seq < 0:
        raise ParameterError(f"seq must be a finite number >= 0, got {seq!r}")
    if via.count('"') % 2:
        return via
    head, ps = _params(via)
    kept = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in ps if n not in _OC_NAMES)
    return f'{head}{kept};oc={percent};oc-algo="{ALGORITHM}";oc-validity={validity_ms};oc-seq={seq:.3f}'


def parse_feedback(via: str) -> Feedback | None:
    """The server's feedback in a response's top Via hop, or None.

    None when there is none (no ``oc`` value) or when it cannot be used with
    certainty: a value that is not a whole number 0-100, another algorithm, a bad
    ``oc-validity`` or ``oc-seq``. A peer's junk is ignored (the client then sheds
    nothing on its account), never an error.
    """
    if _MAY_HAVE_OC.search(via) is None:
        return None
    return feedback_from_params(_params(via)[1])


def feedback_from_params(params: Any) -> Feedback | None:
    """:func:`parse_feedback` on a parsed Via hop's ``(name, value)`` parameters."""
    ps = {str(n).lower(): v for n, v in params}
    oc = ps.get("oc")
    if oc is None or not oc.isdigit() or len(oc) > 3 or int(oc) > 100:
        return None
    algo = ps.get("oc-algo")
    if algo is not None and algo.strip('"').strip().lower() != ALGORITHM:
        return None
    validity = ps.get("oc-validity")
    if validity is None:
        validity_ms = DEFAULT_VALIDITY_MS
    elif validity.isdigit() and len(validity) <= 9:
        validity_ms = int(validity)
    else:
        return None
    seq_text = ps.get("oc-seq")
    try:
        seq = float(seq_text) if seq_text is not None else 0.0
    except ValueError:
        return None
    if not math.isfinite(seq) or seq < 0:
        return None
    return Feedback(int(oc), validity_ms, seq)


class LossThrottle:
    """A client's overload state per server (RFC 7339 section 6, loss-based), sans-IO.

    :meth:`update` with each response's :class:`Feedback` (a value with a smaller
    ``oc-seq`` than the last one from that server is stale and ignored; ``oc-validity=0``
    ends shedding); :meth:`shed` decides for one new request with a uniform draw in
    [0, 1) that the caller supplies (its seeded generator, so a seed gives one
    schedule).

    Attributes
    ----------
    shed_count : int
        New requests shed so far.
    """

    def __init__(self) -> None:
        self._state: dict[Hashable, tuple[int, float, float]] = {}  # server -> (percent, expires at, seq)
        self.shed_count = 0

    def update(self, server: Hashable, feedback: Feedback, now: float) -> None:
        """Take one response's feedback from ``server`` (any hashable: its address) at ``now`` (s)."""
        old = self._state.get(server)
        if old is not None and feedback.seq < old[2]:
            return  # reordered: an older value
        if feedback.validity_ms == 0 or feedback.percent == 0:
            self._state[server] = (0, now, feedback.seq)
            return
        self._state[server] = (feedback.percent, now + feedback.validity_ms / 1000.0, feedback.seq)

    def percent(self, server: Hashable, now: float) -> int:
        """The share (%) of new requests to ``server`` shed at ``now`` (0 when none applies)."""
        s = self._state.get(server)
        return 0 if s is None or now >= s[1] else s[0]

    def shed(self, server: Hashable, now: float, draw: float) -> bool:
        """Whether to shed a new request to ``server`` at ``now``; ``draw``: uniform in [0, 1)."""
        if not 0.0 <= draw < 1.0:
            raise ParameterError(f"draw must be in [0, 1), got {draw!r}")
        p = self.percent(server, now)
        if p and draw < p / 100.0:
            self.shed_count += 1
            return True
        return False

    def state(self) -> dict[Any, dict[str, float]]:
        """Per server: ``percent``, ``expires_at`` (s) and ``seq``, for traces and tests."""
        return {k: {"percent": v[0], "expires_at": v[1], "seq": v[2]} for k, v in self._state.items()}
