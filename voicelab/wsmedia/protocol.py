"""The "media streams" WebSocket protocol, sans-IO: JSON messages carrying 8 kHz mu-law.

Telephony platforms hand a call to a voice agent by opening a WebSocket to it and
streaming the call's audio as JSON text messages (the pattern of Twilio Media Streams,
which this module follows field for field). One WebSocket message is one JSON object
with an ``"event"``:

``connected``  (platform -> agent, first)
    ``{"event": "connected", "protocol": "Call", "version": "1.0.0"}``
``start``      (platform -> agent, second)
    ``{"event": "start", "sequenceNumber": "1", "streamSid": "MZ..", "start":
    {"accountSid": "AC..", "streamSid": "MZ..", "callSid": "CA..", "tracks": ["inbound"],
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    "customParameters": {}}}``
``media``      (both ways)
    ``{"event": "media", "sequenceNumber": "2", "streamSid": "MZ..", "media": {"track":
    "inbound", "chunk": "1", "timestamp": "0", "payload": BASE64}}``: ``payload`` is
    20 ms of 8 kHz mu-law (160 bytes, 216 base64 characters), ``chunk`` counts from 1
    and ``timestamp`` is the frame's time in ms from the start of the stream. The
    platform sends numbers as decimal strings; plain JSON integers are accepted too. An
    agent's media may carry only ``payload`` (as the platform accepts); the lab's agent
    adds ``track``/``chunk``/``timestamp`` so the caller can place frames on a timeline.
``mark``       (both ways)
    ``{"event": "mark", "streamSid": "MZ..", "mark": {"name": "..."}}``: the agent labels
    a point in its audio; the platform sends the same mark back once the audio before it
    has been played to the caller.
``dtmf``       (platform -> agent) ``{"event": "dtmf", ..., "dtmf": {"track": "inbound_track", "digit": "5"}}``
``clear``      (agent -> platform) ``{"event": "clear", "streamSid": "MZ.."}``: drop buffered agent audio (barge-in).
``stop``       (platform -> agent, last) ``{"event": "stop", ..., "stop": {"accountSid": .., "callSid": ..}}``

Structure (as h11 / aioquic): :class:`MediaStreamEncoder` builds messages and
:class:`MediaStreamDecoder` turns one received message into one event dataclass
(:class:`Connected`, :class:`StreamStarted`, :class:`MediaReceived`,
:class:`MarkReceived`, :class:`DtmfReceived`, :class:`Cleared`, :class:`StreamStopped`).
Which event may come when is a table per role (:data:`PEER_TRANSITIONS`); an event
with no entry is a :class:`~voicelab.errors.RemoteProtocolError`, as is any malformed
message (bad JSON, bad base64, wrong payload size, unknown event, over the size limit).
Its ``status_code`` says what an HTTP server would answer: 400 malformed or out of
order, 413 too large, 415 an unsupported ``mediaFormat``. Nothing here does I/O or
reads a clock.

Why our own: no maintained Python library implements this protocol; it is a handful of
JSON shapes, and the lab needs the strict, typed-error decoder for its fuzz tests.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import codecs
from ..errors import LocalProtocolError, ParameterError, RemoteProtocolError

__all__ = [
    "ENCODING",
    "SAMPLE_RATE",
    "FRAME_MS",
    "FRAME_BYTES",
    "EVENTS",
    "PEER_TRANSITIONS",
    "MAX_MESSAGE_BYTES",
    "MediaFormat",
    "Connected",
    "StreamStarted",
    "MediaReceived",
    "MarkReceived",
    "DtmfReceived",
    "Cleared",
    "StreamStopped",
    "MediaStreamEncoder",
    "MediaStreamDecoder",
    "new_sid",
    "mulaw_encode",
    "mulaw_decode",
]

#: The one media format of the protocol (G.711 mu-law, 8 kHz, mono).
ENCODING = "audio/x-mulaw"
SAMPLE_RATE = 8000
#: Audio per media message in ms and its size in bytes (one mu-law byte per sample).
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000
#: Default limit on one message (a media message is about 330 bytes).
MAX_MESSAGE_BYTES = 16384
#: Every event name of the protocol.
EVENTS = ("connected", "start", "media", "mark", "dtmf", "clear", "stop")
_MAX_COUNTER = 2**31 - 1  # sequence numbers, chunks and timestamps (ms)
_MAX_NAME = 256  # mark names, sids, digits
_DTMF_DIGITS = set("0123456789*#ABCD")

#: Which event the *peer* may send in which state, per our role:
#: ``{role: {(state, event): next_state}}``. ``role="agent"`` decodes what the platform
#: (the caller's side) sends; ``role="caller"`` decodes what the agent sends back on
#: a stream the caller has already started.
PEER_TRANSITIONS: dict[str, dict[tuple[str, str], str]] = {
    "agent": {
        ("idle", "connected"): "connected",
        ("connected", "start"): "streaming",
        ("streaming", "media"): "streaming",
        ("streaming", "mark"): "streaming",
        ("streaming", "dtmf"): "streaming",
        ("streaming", "stop"): "stopped",
    },
    "caller": {
        ("streaming", "media"): "streaming",
        ("streaming", "mark"): "streaming",
        ("streaming", "clear"): "streaming",
    },
}
_INITIAL = {"agent": "idle", "caller": "streaming"}

#: What our own side may send, per role: exactly what the *other* role's decoder
#: accepts from its peer (one table, read from both ends).
_LOCAL_TRANSITIONS: dict[str, dict[tuple[str, str], str]] = {
    "caller": PEER_TRANSITIONS["agent"],
    "agent": PEER_TRANSITIONS["caller"],
}


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaFormat:
    """The ``mediaFormat`` of a ``start`` message.

    Attributes
    ----------
    encoding : str
        MIME-like name, ``"audio/x-mulaw"``.
    sample_rate : int
        Hz.
    channels : int
    """

    encoding: str = ENCODING
    sample_rate: int = SAMPLE_RATE
    channels: int = 1


@dataclass(frozen=True)
class Connected:
    """The platform opened the stream (first message).

    Attributes
    ----------
    protocol : str
        ``"Call"``.
    version : str
        Protocol version string, e.g. ``"1.0.0"``.
    """

    protocol: str
    version: str


@dataclass(frozen=True)
class StreamStarted:
    """The platform started streaming a call.

    Attributes
    ----------
    stream_sid, call_sid, account_sid : str
        Identifiers (``MZ...``, ``CA...``, ``AC...``).
    tracks : tuple of str
        Tracks the platform streams (``"inbound"``, ``"outbound"``).
    media_format : MediaFormat
    custom_parameters : dict
        String key/value pairs given when the stream was set up.
    sequence_number : int or None
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    custom_parameters: dict = field(default_factory=dict)
    sequence_number: int | None = None


@dataclass(frozen=True)
class MediaReceived:
    """One frame of audio arrived.

    Attributes
    ----------
    stream_sid : str
    payload : bytes
        :data:`FRAME_BYTES` bytes of mu-law (decode with :func:`mulaw_decode`).
    track : str or None
        ``"inbound"`` / ``"outbound"``; None when the sender left it out.
    chunk : int or None
        Frame number, from 1; None when left out.
    timestamp_ms : int or None
        Frame time in ms from the start of the stream; None when left out.
    sequence_number : int or None
    """

    stream_sid: str
    payload: bytes
    track: str | None = None
    chunk: int | None = None
    timestamp_ms: int | None = None
    sequence_number: int | None = None


@dataclass(frozen=True)
class MarkReceived:
    """A mark arrived (agent -> platform: a label; platform -> agent: "played up to here").

    Attributes
    ----------
    stream_sid : str
    name : str
    sequence_number : int or None
    """

    stream_sid: str
    name: str
    sequence_number: int | None = None


@dataclass(frozen=True)
class DtmfReceived:
    """The caller pressed a key.

    Attributes
    ----------
    stream_sid : str
    digit : str
        One of ``0-9 * # A-D``.
    track : str
    sequence_number : int or None
    """

    stream_sid: str
    digit: str
    track: str = "inbound_track"
    sequence_number: int | None = None


@dataclass(frozen=True)
class Cleared:
    """The agent asked to drop its audio not yet played (barge-in).

    Attributes
    ----------
    stream_sid : str
    """

    stream_sid: str


@dataclass(frozen=True)
class StreamStopped:
    """The platform ended the stream (last message).

    Attributes
    ----------
    stream_sid, call_sid, account_sid : str
    sequence_number : int or None
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    sequence_number: int | None = None


Event = Connected | StreamStarted | MediaReceived | MarkReceived | DtmfReceived | Cleared | StreamStopped


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def new_sid(prefix: str, rng: np.random.Generator) -> str:
    """A platform-style identifier: two letters and 32 hex digits (``"MZ" + 32 hex``).

    Parameters
    ----------
    prefix : str
        Two letters (``"MZ"`` stream, ``"CA"`` call, ``"AC"`` account).
    rng : numpy.random.Generator
        Source of the digits (seeded: same seed, same sids).
    """
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return prefix + bytes(rng.integers(0, 256, size=16, dtype=np.uint8)).hex()


_PCMU: Any = None


def _pcmu() -> Any:
    global _PCMU
    if _PCMU is None:  # stateless for G.711 (table look-ups), so one object is enough
        _PCMU = codecs.get("pcmu", frame_ms=FRAME_MS)
    return _PCMU


def mulaw_encode(samples: np.ndarray) -> bytes:
    """20 ms of 8 kHz int16 audio (160 samples) as mu-law bytes (``codecs.get("pcmu")``).

    Raises
    ------
    ParameterError
        If ``samples`` is not 160 samples.
    """
    x = np.asarray(samples)
    if x.ndim != 1 or len(x) != FRAME_BYTES:
        raise ParameterError(f"a media frame is {FRAME_BYTES} samples of 8 kHz audio, got shape {x.shape}")
    return bytes(_pcmu().encode(x.astype(np.int16)))


def mulaw_decode(payload: bytes) -> np.ndarray:
    """mu-law bytes (160) back to int16 samples at 8 kHz.

    Raises
    ------
    ParameterError
        If ``payload`` is not :data:`FRAME_BYTES` bytes.
    """
    if not isinstance(payload, (bytes, bytearray)) or len(payload) != FRAME_BYTES:
        raise ParameterError(f"a media payload is {FRAME_BYTES} bytes of mu-law, got {type(payload).__name__} of length {len(payload) if hasattr(payload, '__len__') else '?'}")
    return np.asarray(_pcmu().decode(bytes(payload)), dtype=np.int16)


def _fail(msg: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(msg, status_code=status)


def _obj(parent: dict, key: str, event: str) -> dict:
    v = parent.get(key)
    if not isinstance(v, dict):
        raise _fail(f"'{event}' message needs an object {key!r}, got {type(v).__name__}")
    return v


def _str(parent: dict, key: str, event: str, *, optional: bool = False) -> str | None:
    v = parent.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v or len(v) > _MAX_NAME:
        raise _fail(f"'{event}' message needs a non-empty string {key!r} (at most {_MAX_NAME} characters), got {v!r:.60}")
    return v


def _count(parent: dict, key: str, event: str, *, optional: bool = True, minimum: int = 0) -> int | None:
    """A counter sent as a decimal string (the platform's way) or a JSON integer."""
    v = parent.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool):
        n = None
    elif isinstance(v, int):
        n = v
    elif isinstance(v, str) and 0 < len(v) <= 10 and v.isascii() and v.isdigit():
        n = int(v)
    else:
        n = None
    if n is None or not minimum <= n <= _MAX_COUNTER:
        raise _fail(f"'{event}' field {key!r} must be an integer {minimum}..{_MAX_COUNTER} (number or decimal string), got {v!r:.40}")
    return n


# ---------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------


class MediaStreamDecoder:
    """Turn received messages, one WebSocket message at a time, into events.

    Parameters
    ----------
    role : {"agent", "caller"}
        Our side: ``"agent"`` decodes the platform's stream (``connected``, ``start``,
        ``media``, ``mark``, ``dtmf``, ``stop``); ``"caller"`` decodes what an agent
        sends back (``media``, ``mark``, ``clear``) on the stream ``stream_sid``.
    stream_sid : str, optional
        For ``role="caller"``: the stream we started; the agent's messages must name it.
    max_message_bytes : int
        Larger messages are refused (status 413).
    frame_bytes : int or None
        Required payload size in bytes (default 160 = 20 ms); None accepts any
        non-empty payload up to the message limit.

    Attributes
    ----------
    state : str
        ``"idle"``, ``"connected"``, ``"streaming"`` or ``"stopped"``.
    stream_sid : str or None
    messages : int
        Messages decoded successfully.

    Examples
    --------
    >>> d = MediaStreamDecoder(role="agent")
    >>> d.receive('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
    Connected(protocol='Call', version='1.0.0')
    >>> d.receive('{"event": "media"}')
    Traceback (most recent call last):
    ...
    voicelab.errors.RemoteProtocolError: 'media' is not allowed in state 'connected' (role agent); expected one of: start
    """

    def __init__(
        self,
        *,
        role: str = "agent",
        stream_sid: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        frame_bytes: int | None = FRAME_BYTES,
    ) -> None:
        if role not in PEER_TRANSITIONS:
            raise ParameterError(f"role must be 'agent' or 'caller', got {role!r}")
        if role == "caller" and not isinstance(stream_sid, str):
            raise ParameterError("a caller-side decoder needs the stream_sid of the stream it started")
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int) or max_message_bytes < 64:
            raise ParameterError(f"max_message_bytes must be an integer >= 64, got {max_message_bytes!r}")
        if frame_bytes is not None and (isinstance(frame_bytes, bool) or not isinstance(frame_bytes, int) or frame_bytes <= 0):
            raise ParameterError(f"frame_bytes must be a positive integer or None, got {frame_bytes!r}")
        self.role = role
        self.state = _INITIAL[role]
        self.stream_sid = stream_sid
        self.max_message_bytes = max_message_bytes
        self.frame_bytes = frame_bytes
        self.messages = 0
        self._last_seq: int | None = None
        self._table = PEER_TRANSITIONS[role]

    def receive(self, message: str | bytes) -> Event:
        """Decode one whole WebSocket message (text, or UTF-8 bytes).

        Returns
        -------
        event
            One of the event dataclasses of this module.

        Raises
        ------
        RemoteProtocolError
            Malformed JSON or fields, bad base64, wrong payload size, unknown event, an
            event not allowed now, a wrong ``streamSid`` or out-of-order
            ``sequenceNumber`` (status 400); message too large (413); unsupported media
            format (415). The decoder's state is unchanged after an error.
        """
        if isinstance(message, (bytes, bytearray, memoryview)):
            raw = bytes(message)
            if len(raw) > self.max_message_bytes:
                raise _fail(f"message of {len(raw)} bytes is over the limit of {self.max_message_bytes}", 413)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _fail("message is not UTF-8 text") from None
        elif isinstance(message, str):
            text = message
            if len(text) > self.max_message_bytes or len(text.encode("utf-8", "surrogatepass")) > self.max_message_bytes:
                raise _fail(f"message is over the limit of {self.max_message_bytes} bytes", 413)
        else:
            raise ParameterError(f"receive() takes one message as str or bytes, got {type(message).__name__}")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise _fail("message is not valid JSON") from None
        if not isinstance(msg, dict):
            raise _fail(f"message must be a JSON object, got {type(msg).__name__}")
        event = msg.get("event")
        if not isinstance(event, str):
            raise _fail(f"message has no string 'event' field (got {event!r:.40})")
        if event not in EVENTS:
            raise _fail(f"unknown event {event!r:.40}; known events: {', '.join(EVENTS)}")
        nxt = self._table.get((self.state, event))
        if nxt is None:
            allowed = sorted({e for (s, e) in self._table if s == self.state})
            raise _fail(
                f"{event!r} is not allowed in state {self.state!r} (role {self.role}); expected one of: "
                + (", ".join(allowed) or "nothing (the stream has stopped)")
            )
        seq = _count(msg, "sequenceNumber", event)
        if seq is not None and self._last_seq is not None and seq != self._last_seq + 1:
            raise _fail(f"sequenceNumber {seq} after {self._last_seq}: messages must be numbered consecutively")
        ev, sid = self._parse(event, msg, seq)
        # commit only after the whole message checked out
        if sid is not None:
            self.stream_sid = sid
        if seq is not None:
            self._last_seq = seq
        self.state = nxt
        self.messages += 1
        return ev

    def _check_sid(self, msg: dict, event: str, *, required: bool = True) -> str | None:
        sid = _str(msg, "streamSid", event, optional=not required)
        if sid is not None and self.stream_sid is not None and sid != self.stream_sid:
            raise _fail(f"'{event}' names streamSid {sid!r:.40} but this stream is {self.stream_sid!r}")
        return sid if sid is not None else self.stream_sid

    def _parse(self, event: str, msg: dict, seq: int | None) -> tuple[Event, str | None]:
        if event == "connected":
            proto = _str(msg, "protocol", event)
            version = _str(msg, "version", event)
            return Connected(proto, version), None  # type: ignore[arg-type]
        if event == "start":
            st = _obj(msg, "start", event)
            sid = _str(st, "streamSid", event)
            top = msg.get("streamSid")
            if top is not None and top != sid:
                raise _fail(f"'start' carries two different streamSids ({top!r:.40} and {sid!r:.40})")
            call = _str(st, "callSid", event)
            account = _str(st, "accountSid", event, optional=True) or ""
            tracks = st.get("tracks", ["inbound"])
            if not isinstance(tracks, list) or not tracks or len(tracks) > 2 or not all(t in ("inbound", "outbound") for t in tracks):
                raise _fail(f"'start' tracks must be a list of 'inbound'/'outbound', got {tracks!r:.60}")
            mf = _obj(st, "mediaFormat", event)
            enc, rate, ch = mf.get("encoding"), mf.get("sampleRate"), mf.get("channels")
            if enc != ENCODING or rate not in (SAMPLE_RATE, str(SAMPLE_RATE)) or ch not in (1, "1"):
                raise _fail(
                    f"unsupported mediaFormat {enc!r:.40}/{rate!r:.10}/{ch!r:.10}: only {ENCODING} at {SAMPLE_RATE} Hz, 1 channel",
                    415,
                )
            params = st.get("customParameters", {})
            if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
                raise _fail("'start' customParameters must be an object of strings")
            return StreamStarted(sid, call, account, tuple(tracks), MediaFormat(), dict(params), seq), sid  # type: ignore[arg-type]
        if event == "media":
            sid = self._check_sid(msg, event)
            m = _obj(msg, "media", event)
            payload_b64 = m.get("payload")
            if not isinstance(payload_b64, str) or not payload_b64:
                raise _fail("'media' needs a base64 string 'payload'")
            try:
                payload = base64.b64decode(payload_b64.encode("ascii"), validate=True)
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raise _fail("'media' payload is not valid base64") from None
            if self.frame_bytes is not None and len(payload) != self.frame_bytes:
                raise _fail(
                    f"'media' payload is {len(payload)} bytes; this stream carries {self.frame_bytes} bytes "
                    f"({self.frame_bytes * 1000 // SAMPLE_RATE} ms of mu-law) per message"
                )
            if not payload:
                raise _fail("'media' payload is empty")
            track = m.get("track")
            if track is not None and track not in ("inbound", "outbound"):
                raise _fail(f"'media' track must be 'inbound' or 'outbound', got {track!r:.40}")
            chunk = _count(m, "chunk", event, minimum=1)
            ts = _count(m, "timestamp", event)
            return MediaReceived(sid, payload, track, chunk, ts, seq), None  # type: ignore[arg-type]
        if event == "mark":
            sid = self._check_sid(msg, event)
            name = _str(_obj(msg, "mark", event), "name", event)
            return MarkReceived(sid, name, seq), None  # type: ignore[arg-type]
        if event == "dtmf":
            sid = self._check_sid(msg, event)
            d = _obj(msg, "dtmf", event)
            digit = d.get("digit")
            if not isinstance(digit, str) or digit not in _DTMF_DIGITS:
                raise _fail(f"'dtmf' digit must be one of 0-9 * # A-D, got {digit!r:.20}")
            track = _str(d, "track", event, optional=True) or "inbound_track"
            return DtmfReceived(sid, digit, track, seq), None  # type: ignore[arg-type]
        if event == "clear":
            return Cleared(self._check_sid(msg, event)), None  # type: ignore[arg-type]
        # stop
        sid = self._check_sid(msg, event)
        st = _obj(msg, "stop", event)
        call = _str(st, "callSid", event)
        account = _str(st, "accountSid", event, optional=True) or ""
        return StreamStopped(sid, call, account, seq), None  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------


class MediaStreamEncoder:
    """Build the messages one side sends, numbered and in a legal order.

    Parameters
    ----------
    role : {"caller", "agent"}
        ``"caller"``: the platform's side (``connected``, ``start``, ``media``, ``mark``,
        ``dtmf``, ``stop``, each with a ``sequenceNumber``). ``"agent"``: the agent's
        side of a started stream (``media``, ``mark``, ``clear``; no sequence numbers).
    stream_sid, call_sid, account_sid : str
        Identifiers (see :func:`new_sid`); an agent needs only ``stream_sid``.
    track : str
        ``track`` written into media messages (``"inbound"`` for the caller's audio,
        ``"outbound"`` for the agent's).
    timing : bool
        Write ``chunk`` and ``timestamp`` into media messages (the platform always does;
        for an agent it is the lab's extension, default on).

    Raises
    ------
    LocalProtocolError
        From the builders, when a message is not allowed now (media before start, ...)
        or a payload has the wrong size.

    Examples
    --------
    >>> e = MediaStreamEncoder(role="caller", stream_sid="MZ1", call_sid="CA1", account_sid="AC1")
    >>> e.connected()
    '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
    """

    def __init__(
        self,
        *,
        role: str = "caller",
        stream_sid: str,
        call_sid: str = "",
        account_sid: str = "",
        track: str | None = None,
        timing: bool = True,
    ) -> None:
        if role not in _LOCAL_TRANSITIONS:
            raise ParameterError(f"role must be 'caller' or 'agent', got {role!r}")
        for name, v in (("stream_sid", stream_sid), ("call_sid", call_sid), ("account_sid", account_sid)):
            if not isinstance(v, str) or len(v) > _MAX_NAME:
                raise ParameterError(f"{name} must be a string of at most {_MAX_NAME} characters, got {v!r:.40}")
        if not stream_sid or (role == "caller" and not call_sid):
            raise ParameterError("stream_sid (and, for a caller, call_sid) must not be empty")
        self.role = role
        self.state = "idle" if role == "caller" else "streaming"
        self.stream_sid, self.call_sid, self.account_sid = stream_sid, call_sid, account_sid
        self.track = track or ("inbound" if role == "caller" else "outbound")
        if self.track not in ("inbound", "outbound"):
            raise ParameterError(f"track must be 'inbound' or 'outbound', got {track!r}")
        self.timing = bool(timing)
        self.chunks = 0
        self._seq = 0
        self._table = _LOCAL_TRANSITIONS[role]

    def _advance(self, event: str) -> None:
        nxt = self._table.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"cannot send {event!r} in state {self.state!r} as the {self.role}")
        self.state = nxt

    def _dump(self, msg: dict) -> str:
        return json.dumps(msg, separators=(", ", ": "))

    def _numbered(self, msg: dict) -> dict:
        if self.role == "caller":
            self._seq += 1
            return {"event": msg.pop("event"), "sequenceNumber": str(self._seq), **msg}
        return msg

    def connected(self, *, version: str = "1.0.0") -> str:
        """The first message of a stream (caller)."""
        self._advance("connected")
        return self._dump({"event": "connected", "protocol": "Call", "version": version})

    def start(self, *, tracks: tuple[str, ...] = ("inbound",), custom_parameters: dict | None = None) -> str:
        """The ``start`` message (caller), after :meth:`connected`."""
        self._advance("start")
        account = {"accountSid": self.account_sid} if self.account_sid else {}
        return self._dump(self._numbered({
            "event": "start",
            "start": {
                **account,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": list(tracks),
                "mediaFormat": {"encoding": ENCODING, "sampleRate": SAMPLE_RATE, "channels": 1},
                "customParameters": dict(custom_parameters or {}),
            },
            "streamSid": self.stream_sid,
        }))

    def media(self, payload: bytes, *, timestamp_ms: int | None = None) -> str:
        """One media message for a 160-byte mu-law ``payload`` (see :func:`mulaw_encode`).

        ``timestamp_ms`` defaults to ``(chunk - 1) * 20``.
        """
        if not isinstance(payload, (bytes, bytearray)) or len(payload) != FRAME_BYTES:
            raise LocalProtocolError(f"a media payload must be {FRAME_BYTES} bytes of mu-law (20 ms), got {len(payload) if hasattr(payload, '__len__') else payload!r}")
        self._advance("media")
        self.chunks += 1
        body: dict[str, Any] = {}
        if self.timing:
            ts = (self.chunks - 1) * FRAME_MS if timestamp_ms is None else int(timestamp_ms)
            body = {"track": self.track, "chunk": str(self.chunks), "timestamp": str(ts)}
        body["payload"] = base64.b64encode(bytes(payload)).decode("ascii")
        return self._dump(self._numbered({"event": "media", "streamSid": self.stream_sid, "media": body}))

    def mark(self, name: str) -> str:
        """A ``mark`` message labelled ``name``."""
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
            raise LocalProtocolError(f"a mark name must be a non-empty string of at most {_MAX_NAME} characters, got {name!r:.40}")
        self._advance("mark")
        return self._dump(self._numbered({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}))

    def dtmf(self, digit: str) -> str:
        """A ``dtmf`` message (caller)."""
        if not isinstance(digit, str) or digit not in _DTMF_DIGITS:
            raise LocalProtocolError(f"a DTMF digit is one of 0-9 * # A-D, got {digit!r:.20}")
        self._advance("dtmf")
        return self._dump(self._numbered({"event": "dtmf", "streamSid": self.stream_sid, "dtmf": {"track": "inbound_track", "digit": digit}}))

    def clear(self) -> str:
        """A ``clear`` message (agent): drop my audio not yet played."""
        self._advance("clear")
        return self._dump({"event": "clear", "streamSid": self.stream_sid})

    def stop(self) -> str:
        """The last message of a stream (caller)."""
        self._advance("stop")
        return self._dump(self._numbered({
            "event": "stop",
            "streamSid": self.stream_sid,
            "stop": {**({"accountSid": self.account_sid} if self.account_sid else {}), "callSid": self.call_sid},
        }))
