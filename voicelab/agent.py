"""The lab's SIP voice agent: answers calls on UDP, TCP, TLS or WebSocket and talks back.

``voicelab agent serve`` runs one :class:`Agent`; :func:`voicelab.calls.sip_call` starts
one in-process as the far end of a measured call. Real softphones (baresip), SIPp and the
lab's own caller can call it.

What it does with a call (``mode``):

``play`` / ``play:FILE``
    Plays speech (the natural corpus by default, or a WAV file) to the caller and records
    what arrives: both directions carry a known reference.
``echo``
    Returns the caller's audio *through its own jitter buffer, decoder, PLC and encoder*,
    as a real agent's pipeline would (not by reflecting packets), so an echo round trip
    measures two network legs plus the agent's buffering.
``pipeline``
    A listen-think-speak voice agent (:mod:`voicelab.pipeline`: VAD, endpointing,
    PocketSphinx, a responder, eSpeak NG, barge-in); ``pipeline=`` configures it.
``signalling`` / ``signalling:SECONDS``
    Signalling only, for load studies: answers with an SDP answer but opens no media
    socket; the caller hangs up (or the agent does after ``SECONDS``).
``record:DIR``
    Sends encoded silence (the media path and RTCP stay alive) and writes what arrived to
    ``DIR/<n>-<call-id>.wav`` when the call ends (``record_prefix`` before ``<n>``:
    ``agent serve --workers`` writes worker K's calls as ``w<K>-<n>-<call-id>.wav``).

Each call gets its own RTP port, so calls run concurrently (up to ``max_calls``; more are
refused with 486 Busy Here). With ``overload`` (a
:class:`voicelab.sip.overload.OverloadControl`) the agent measures its event-loop lag and
queue depth and refuses new INVITEs it cannot serve with 503 + Retry-After before they
cost anything; requests within dialogs always get through. ``auth`` challenges every out-of-dialog INVITE with digest
(RFC 7616/8760, realm ``voicelab``; ``auth_algorithms`` picks the challenges); a call
without valid credentials is never set up.
In-dialog INVITEs (re-INVITEs: they can move a call's media) are challenged too.
``media_timeout`` hangs up (BYE) calls from which no RTP or RTCP arrived for that long,
freeing their slot; RFC 4028 session timers (``session_expires``) end calls that are no
longer refreshed. With ``latching`` the agent follows the caller's media only from the
host its SDP names or the host its signalling came from; media from anywhere else is
dropped and counted (``rtp_foreign_packets`` in :attr:`Agent.media_stats`).
``srtp`` requires SDES-keyed SRTP (RFC 4568): plain-RTP offers get 488. The UA forgets
finished calls beyond a bound and keeps a bounded trace, so a long-running agent does not
grow.

Every socket is opened through a network interface object
(:class:`voicelab.net.iface.LoopbackInterface` by default).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from . import audio
from .errors import ParameterError, VoicelabError
from .net.iface import LoopbackInterface
from .rtp.live import LiveAudioStream
from .rtp.pacer import MediaPacer, pacer_for
from .sip.abnf import split_list
from .sip.occ import client_asks, with_feedback
from .sip.shed import SHED_TAG_PREFIX, respond, status_line, triage
from .sip.shed import drain as shed_drain
from .sip.ua import CallCancelled, CallEnded, CallEstablished, CallFailed, IncomingCall, UserAgent

__all__ = ["Agent", "parse_mode", "MODES"]

log = logging.getLogger(__name__)

#: The agent's modes (``play``, ``record`` and ``signalling`` take an argument after a colon).
MODES = ("play", "echo", "record", "signalling", "pipeline")
SIP_TRANSPORTS = ("udp", "tcp", "tls", "ws")


def parse_mode(mode: str) -> tuple[str, str | None]:
    """Split ``"play"``, ``"play:FILE"``, ``"echo"`` or ``"record:DIR"`` into (kind, argument).

    Raises
    ------
    ParameterError
        Unknown mode, ``record`` without a directory, or an argument for ``echo``.
    """
    if not isinstance(mode, str) or not mode:
        raise ParameterError(f"mode must be 'echo', 'play', 'play:FILE' or 'record:DIR', got {mode!r}")
    kind, sep, arg = mode.partition(":")
    kind = kind.strip().lower()
    if kind not in MODES:
        raise ParameterError(f"unknown agent mode {mode!r}; use 'echo', 'play', 'play:FILE', 'record:DIR', "
                             "'signalling[:SECONDS]' or 'pipeline'")
    if kind in ("echo", "pipeline") and sep:
        raise ParameterError(f"mode {kind!r} takes no argument")
    if kind == "record" and not arg:
        raise ParameterError("mode 'record' needs a directory: record:DIR")
    if kind == "signalling" and arg:
        try:
            hold = float(arg)
        except ValueError:
            hold = float("nan")
        if not 0 <= hold < 86400:
            raise ParameterError(f"mode 'signalling:SECONDS' needs seconds 0..86400 before the agent hangs up, got {arg!r}")
    return kind, (arg or None)


def next_lag_due(prev_due: float, now: float, interval: float, pacer: MediaPacer | None = None) -> float:
    """Loop time of the agent's next event-loop lag sample, seconds.

    ``interval`` after the previous one (``prev_due``), but at least ``interval / 2``
    after ``now`` (after a stall the watcher does not sample a backlog of due times), and
    on the media pacer's tick grid, ``early`` before a grid point, where the pacer arms
    its own timer: with a 20 ms grid the sample shares the pacer's wake-up instead of
    waking the process once more every 20 ms.

    Parameters
    ----------
    prev_due, now : float
        Loop times, seconds.
    interval : float
        Seconds between samples.
    pacer : voicelab.rtp.pacer.MediaPacer, optional
        The loop's media pacer (None or a grid of 0: no alignment).
    """
    due = max(prev_due + interval, now + interval / 2.0)
    if pacer is not None and pacer.tick_s > 0:
        due = pacer.align(due + pacer.early) - pacer.early
    return due


def _wake(fut: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
    if not fut.done():
        fut.set_result(loop.time())


def _udp_sockets(port: int, inode: int | None = None) -> list[list[str]] | None:
    """The rows of ``/proc/net/udp`` and ``/proc/net/udp6`` for local port ``port`` (and
    socket ``inode`` when given), split into fields; None where the files are missing."""
    rows: list[list[str]] | None = None
    suffix = f":{port:04X}"
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        rows = rows if rows is not None else []
        for line in lines:
            parts = line.split()
            if len(parts) > 12 and parts[1].endswith(suffix) and (inode is None or parts[9] == str(inode)):
                rows.append(parts)
    return rows


def udp_backlog_bytes(port: int, inode: int | None = None) -> int | None:
    """Bytes waiting in the receive queues of the local UDP sockets bound to ``port``.

    Read from ``/proc/net/udp`` and ``/proc/net/udp6`` (Linux; about 0.3 ms): the queue
    an event loop cannot see, where datagrams wait (and past the buffer, are dropped)
    while the process is busy. None where the files are missing or no such socket is
    open. ``inode`` (the socket's, ``os.fstat(sock.fileno()).st_ino``) counts only that
    socket: with SO_REUSEPORT other processes' sockets share the port.
    """
    rows = _udp_sockets(port, inode)
    return sum(int(parts[4].split(":")[1], 16) for parts in rows) if rows else None


def udp_socket_drops(port: int, inode: int | None = None) -> int | None:
    """Datagrams the kernel dropped at the UDP socket(s) bound to ``port`` (receive buffer
    full): the ``drops`` column of ``/proc/net/udp``; None when no such socket is open."""
    rows = _udp_sockets(port, inode)
    return sum(int(parts[12]) for parts in rows) if rows else None


#: Garbage-collector thresholds of a serving agent (see :func:`tune_gc`).
GC_THRESHOLDS = (50_000, 50, 20)


def tune_gc() -> None:
    """Set the garbage collector up for serving: call once the agent has started.

    A UDP agent keeps every finished transaction (its request and responses) for 64*T1 =
    32 s, so at hundreds of calls/s about a million objects are alive and CPython's
    default thresholds (700, 10, 10) walk them in full collections of 0.3-0.6 s every
    few seconds: late answers, event-loop lag, retransmissions. Start-up objects (NumPy,
    PyAV, the codecs) leave the collector (``gc.freeze``); young collections run every
    50,000 net allocations, so per-message garbage dies before it is ever promoted, and
    full collections become rare (every 50 x 20 young ones) instead of being switched off.
    The objects of a call are freed by reference counting: the signalling path makes no
    cycles per call (``tests/test_sip_fastpath.py`` counts them).
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:64] or "call"


def _check_record_dir(directory: str) -> None:
    """Make ``directory`` and prove a file can be written there (ParameterError if not),
    before the agent listens: a record agent that cannot write finds out now, not when
    its first call ends."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ParameterError(f"record directory {directory!r} cannot be written: {exc.strerror or exc}") from None


def _check_auth_algorithms(algorithms: Any) -> tuple[str, ...]:
    """Digest algorithm names as DigestAuthenticator spells them; ParameterError if bad."""
    from .sip.auth import SUPPORTED_ALGORITHMS

    if not isinstance(algorithms, (tuple, list)) or not algorithms or not all(isinstance(a, str) for a in algorithms):
        raise ParameterError(
            f"auth_algorithms must be a non-empty tuple of digest algorithm names ({', '.join(SUPPORTED_ALGORITHMS)}) "
            f"such as ('MD5',), got {algorithms!r}"
        )
    canonical = {a.lower(): a for a in SUPPORTED_ALGORITHMS}
    out = tuple(canonical.get(a.strip().lower(), a) for a in algorithms)
    unknown = [a for a in out if a not in SUPPORTED_ALGORITHMS]
    if unknown or len(set(out)) != len(out):
        raise ParameterError(
            f"auth_algorithms must be distinct names from {', '.join(SUPPORTED_ALGORITHMS)}, got {tuple(algorithms)!r}"
        )
    return out


_SHED_PREFIX = SHED_TAG_PREFIX.encode()
#: Seconds each generation of remembered stateless refusals lasts (a refusal is kept 8-16 s:
#: longer than a caller's INVITE retransmissions at 0.5, 1.5, 3.5 and 7.5 s after it sent
#: the first copy; later ones, only when the 503 was lost, are decided afresh).
REFUSALS_KEPT_S = 8.0

class Agent:
    """A SIP voice agent that answers calls (see the module docstring for the modes).

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0: any free port; read :attr:`address`).
    transport : {"udp", "tcp", "tls", "ws"}
        SIP transport. ``tls`` uses ``tls_cert``/``tls_key`` or, without them, a test CA
        and certificate generated for this agent (:attr:`ca_file` for clients).
    codecs : list of str
        What the agent accepts, in its order of preference (the caller's order wins, as
        RFC 3264 usually has it).
    mode : str
        ``"play"``, ``"play:FILE"``, ``"echo"`` or ``"record:DIR"``.
    speech : str
        Named speech for ``play`` (see :func:`voicelab.sim.load_speech`).
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"``.
    auth : (str, str), optional
        ``(user, password)``: challenge out-of-dialog INVITEs with digest auth.
    auth_algorithms : tuple of str
        Digest algorithms offered with ``auth``, one challenge each, in this order
        (:data:`voicelab.sip.auth.SUPPORTED_ALGORITHMS`). Default ``("SHA-256", "MD5")``:
        RFC 8760 clients pick SHA-256, older ones find MD5. ``("MD5",)`` serves phones
        that read only the first challenge and know only MD5 (SIPp 3.6, many older
        desk phones).
    srtp : bool
        Require SDES-keyed SRTP.
    max_calls : int
        Concurrent calls; more get 486 Busy Here.
    keep_recordings : int
        Finished calls whose audio :attr:`recordings` keeps (oldest dropped first).
    latching : bool or "any"
        True (default): symmetric RTP, send media to wherever the caller's media comes
        from, but only when it comes from the host the caller's SDP names or the host
        its SIP came from (a NAT maps both to one public address); media from other
        sources is dropped and counted ("RTP bleed"). ``"any"``: latch to the first
        source whatever its address (plain comedia). False: send to the address in the
        caller's SDP (one-way audio behind a NAT), accepting media from any source.
    media_timeout : float or None
        Seconds without any RTP or RTCP from the caller after which the agent hangs up
        (BYE) and frees the call's slot (default 60; None: never).
    session_expires : int or None
        RFC 4028 session interval (s) the agent grants a caller that asks for session
        timers (``Session-Expires``; shorter than ``min_se`` gets 422); the call ends
        with BYE when it is not refreshed in time. None: session timers off.
    min_se : int
        The shortest session interval accepted (``Min-SE``, at least 90 s per RFC 4028).
    contact : str, optional
        The Contact URI the agent advertises (e.g. its public address behind a static
        port forward, as a PBX's external signalling address); default its own address.
    iface : network interface, optional
    seed : int
        Seeds tags, branches and RTP initial values (audio is the same for every seed).
    connection_limits : voicelab.sip.transport.ConnectionLimits, optional
        TCP/TLS/WS only: cap on open connections (more are refused), idle and header
        timeouts. Default ``ConnectionLimits()``: 512 connections, 300 s idle, 30 s for
        a half-sent message.
    deterministic_auth : bool
        Derive the digest nonce secret from ``seed`` too, for a reproducible virtual-time
        run. Default False: the secret comes from the OS CSPRNG
        (:func:`secrets.token_bytes`) for each agent, so agents do not share a
        predictable secret and a restart makes every earlier nonce (and any captured
        Authorization header) worthless.
    overload : OverloadControl, optional
        Admission policy for new calls (:mod:`voicelab.sip.overload`); the agent feeds it
        its event-loop lag (sampled every ``lag_interval`` s), its active calls and the
        depth of its event queue. None (default): every INVITE is taken up to
        ``max_calls``.
    lag_interval : float
        Seconds between event-loop lag samples when ``overload`` is set (default 0.02).
    reuse_port : bool
        Set SO_REUSEPORT on the SIP listener so several agent processes share its port
        (``voicelab agent serve --workers N``; default False).
    record_prefix : str
        Start of every ``record:DIR`` file name (default none; ``agent serve --workers``
        gives worker K ``"w<K>-"``, so workers writing into one folder never collide).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        transport: str = "udp",
        codecs: list[str] | None = None,
        mode: str = "play",
        speech: str = "default",
        jitter_buffer: str = "fixed:60",
        auth: tuple[str, str] | None = None,
        auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        srtp: bool = False,
        max_calls: int = 32,
        keep_recordings: int = 16,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        latching: bool | str = True,
        contact: str | None = None,
        iface: Any = None,
        seed: int = 0,
        media_timeout: float | None = 60.0,
        session_expires: int | None = 1800,
        min_se: int = 90,
        connection_limits: Any = None,
        deterministic_auth: bool = False,
        overload: Any = None,
        lag_interval: float = 0.02,
        pipeline: Any = None,
        reuse_port: bool = False,
        record_prefix: str = "",
    ) -> None:
        self.host, self.port = host, port
        if not isinstance(record_prefix, str) or (record_prefix and _safe_name(record_prefix) != record_prefix):
            raise ParameterError(f"record_prefix must be letters, digits, '.', '_' or '-', got {record_prefix!r}")
        #: Start of every record-mode file name (``agent serve --workers``: ``w<K>-``, worker K's files).
        self.record_prefix = record_prefix
        #: SO_REUSEPORT on the SIP listener: several agent processes share one port (``serve --workers``).
        self.reuse_port = bool(reuse_port)
        if not isinstance(transport, str) or transport.lower() not in SIP_TRANSPORTS:
            raise ParameterError(f"transport must be one of {', '.join(SIP_TRANSPORTS)}, got {transport!r}")
        self.transport = transport.lower()
        self.codecs = list(codecs or ["pcmu", "pcma", "g722", "opus"])
        from .codecs import canonical_name

        for c in self.codecs:
            canonical_name(c)  # unknown codec: ParameterError now, not at the first call
        self.mode, self.mode_arg = parse_mode(mode)
        self.pipeline_config, self.pipelines = None, None
        if self.mode == "pipeline":  # the voice agent's turn (voicelab.pipeline)
            from .pipeline.core import PipelineConfig
            from .pipeline.fronts import PipelineRegistry

            self.pipeline_config = pipeline if isinstance(pipeline, PipelineConfig) else PipelineConfig(**(pipeline or {}))
            self.pipelines = PipelineRegistry(keep=int(keep_recordings))
        if self.mode == "play" and self.mode_arg is not None and not Path(self.mode_arg).is_file():
            raise ParameterError(f"play file {self.mode_arg!r} does not exist")
        self.speech, self.jitter_buffer, self.seed = speech, jitter_buffer, seed
        self.deterministic_auth = bool(deterministic_auth)
        from .sip.transport import ConnectionLimits

        if connection_limits is not None and not isinstance(connection_limits, ConnectionLimits):
            raise ParameterError("connection_limits must be a voicelab.sip.transport.ConnectionLimits")
        self.connection_limits = connection_limits or ConnectionLimits()
        if auth is not None and (not isinstance(auth, tuple) or len(auth) != 2 or not all(isinstance(a, str) and a for a in auth)):
            raise ParameterError("auth must be a (user, password) pair of non-empty strings")
        self.auth = auth
        self.auth_algorithms = _check_auth_algorithms(auth_algorithms)
        self.srtp = bool(srtp)
        if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
            raise ParameterError(f"max_calls must be an int >= 1, got {max_calls!r}")
        self.max_calls = max_calls
        self.keep_recordings = int(keep_recordings)
        if (tls_cert is None) != (tls_key is None):
            raise ParameterError("give both tls_cert and tls_key, or neither (a test certificate is made)")
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.ca_file: str | None = None
        self.iface = iface
        if latching not in (True, False, "any"):
            raise ParameterError(f"latching must be True, False or 'any', got {latching!r}")
        self.latching = latching
        if media_timeout is not None:
            try:
                media_timeout = float(media_timeout)
            except (TypeError, ValueError):
                raise ParameterError(f"media_timeout must be seconds > 0 or None, got {media_timeout!r}") from None
            if not media_timeout > 0 or media_timeout == float("inf"):
                raise ParameterError(f"media_timeout must be seconds > 0 or None, got {media_timeout!r}")
        self.media_timeout = media_timeout
        if isinstance(min_se, bool) or not isinstance(min_se, int) or min_se < 90:
            raise ParameterError(f"min_se must be an int >= 90 s (RFC 4028), got {min_se!r}")
        if session_expires is not None and (isinstance(session_expires, bool) or not isinstance(session_expires, int)
                                            or session_expires < min_se):
            raise ParameterError(f"session_expires must be an int >= min_se ({min_se} s) or None, got {session_expires!r}")
        self.session_expires, self.min_se = session_expires, min_se
        self.calls_timed_out = 0
        #: per finished call (Call-ID): the media counters of its stream (rtp_foreign_packets, playout_errors, ...)
        self.media_stats: OrderedDict[str, dict] = OrderedDict()
        self._calls: dict[str, Any] = {}  # call.id -> Call, while its stream is open
        self._watchdog: asyncio.TimerHandle | None = None
        self._opened_at: dict[str, float] = {}
        self._closing: set[asyncio.Task] = set()
        self.contact = contact
        self.calls_answered = 0
        self.calls_refused = 0
        self.calls_ended = 0
        from .sip.overload import OverloadControl

        if overload is not None and not isinstance(overload, OverloadControl):
            raise ParameterError(f"overload must be an OverloadControl or None, got {type(overload).__name__}")
        self.overload = overload
        if isinstance(lag_interval, bool) or not isinstance(lag_interval, (int, float)) or not 0.001 <= lag_interval <= 1:
            raise ParameterError(f"lag_interval must be 0.001..1 s, got {lag_interval!r}")
        self.lag_interval = float(lag_interval)
        #: New INVITEs refused by the overload policy (503 or 486 before the call existed).
        self.calls_shed = 0
        self._active: set[str] = set()  # calls answered and not over (all modes)
        self._lag_task: asyncio.Task | None = None
        #: Datagrams waiting in the SIP socket's kernel queue (estimate, overload control).
        self.rx_backlog = 0
        #: Their estimated service time (s): backlog x this process's CPU per message.
        self.queue_delay = 0.0
        #: backlog samples that skipped reading /proc (no SIP datagram since the last one, loop on time)
        self.backlog_reads_skipped = 0
        self._admitted: OrderedDict[str, float] = OrderedDict()  # Call-ID -> when admitted (prefilter)
        # Call-ID -> the stateless refusal it got, in two generations of REFUSALS_KEPT_S each: a
        # retransmission of a refused INVITE (sent before the 503 reached the caller) gets the same
        # 503 instead of a new decision, which could admit a call its caller has already ended (an
        # orphan that costs 200 retransmissions for 32 s and counts as no call)
        self._refused: dict[str, tuple[bytes, int | None, bytes]] = {}
        self._refused_old: dict[str, tuple[bytes, int | None, bytes]] = {}
        self._refused_since = float("-inf")
        #: Retransmitted INVITEs given the 503 their first copy got (no new decision).
        self.shed_repeats = 0
        self._shed_n = 0
        self._inner: Any = None  # the UDP transport's on_message behind the prefilter
        self._oc_last = float("-inf")  # the latest time given to the overload policy (s, loop clock)
        self._event_cost = 0.0  # s to handle one queued event, smoothed (see _queue_delay_now)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._status_lines: dict[int, bytes] = {}  # status -> status line of stateless refusals
        #: ACKs of stateless refusals dropped before parsing.
        self.shed_acks = 0
        self._waiters: list[tuple[str, int, asyncio.Future]] = []
        self.errors: list[str] = []
        self.streams: dict[str, LiveAudioStream] = {}
        #: per finished call (Call-ID): (sent float audio, received float audio, sample_rate)
        self.recordings: OrderedDict[str, tuple[np.ndarray, np.ndarray, int]] = OrderedDict()
        #: WAV files written in record mode
        self.recorded_files: list[Path] = []
        self._task: asyncio.Task | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.sip: Any = None
        self.ua: UserAgent | None = None

    # ------------------------------------------------------------------ set-up
    async def start(self) -> "Agent":
        """Listen and start answering; returns self."""
        from .sip.aio import AsyncUserAgent
        from .audio import load_speech
        from .sip.transport import transport_for

        loop = self._loop = asyncio.get_running_loop()
        if self.iface is None:
            self.iface = LoopbackInterface(loop)
        if self.mode == "play" and getattr(self, "_speech_override", None) is not None:
            self._x, self.synthetic_speech = self._speech_override, None
        elif self.mode == "play":
            sp = load_speech(speech=self.speech, input=self.mode_arg, max_speech_s=30.0)
            self._x = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 16000)
            self.synthetic_speech = bool(sp.synthetic)
        if self.mode == "record":
            _check_record_dir(self.mode_arg)  # type: ignore[arg-type]
        from .sdp.negotiate import warm_up

        warm_up(self.codecs)  # codec libraries load now, not inside the first call's answer
        options: dict[str, Any] = {"parse": False, "connection_limits": self.connection_limits}
        if self.reuse_port:
            options["reuse_port"] = True
        if self.transport == "tls":
            from .tlsutil import generate_test_pki, server_ssl_context

            if self.tls_cert is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="voicelab-agent-tls-")
                pki = generate_test_pki(self._tmp.name)
                self.tls_cert, self.tls_key, self.ca_file = str(pki.cert), str(pki.key), str(pki.ca_cert)
            options["server_ssl"] = server_ssl_context(self.tls_cert, self.tls_key)
        t = transport_for(self.transport, self.iface, **options)
        addr = await t.listen(self.host, self.port)
        self.address = tuple(addr[:2])
        rng = np.random.default_rng(self.seed)
        authenticate = None
        if self.auth is not None:
            from .sip.auth import DigestAuthenticator

            seeded = rng.bytes(32)  # drawn either way: tags and branches stay what the seed made them
            # nonce secret: the OS CSPRNG, per process (a restart invalidates every nonce
            # handed out before); the seed fixes it only for a deterministic run
            secret = seeded if self.deterministic_auth else secrets.token_bytes(32)
            authn = DigestAuthenticator("voicelab", {self.auth[0]: self.auth[1]}, secret=secret,
                                        algorithms=self.auth_algorithms)

            def _challenge(request, now):
                # every INVITE, also in a dialog: whoever knows a dialog's identifiers
                # could otherwise move its media with a re-INVITE (BYE, ACK, CANCEL,
                # INFO and OPTIONS are not challenged, as PBXs do)
                if request.method not in ("INVITE", "UPDATE"):
                    return None
                result = authn.verify(request, now)
                return None if result.ok else authn.reject(request, result, now)

            authenticate = _challenge

        self.ua = UserAgent(local_uri=f"sip:agent@{self.address[0]}", local_addr=self.address, rng=rng,
                            contact=self.contact, codecs=self.codecs, media_address=self.address[0], transport=self.transport,
                            authenticate=authenticate, srtp=self.srtp, keep_finished_calls=64,
                            session_expires=self.session_expires, min_se=self.min_se,
                            **self._load_options())  # fmt: skip
        self.sip = AsyncUserAgent(self.ua, t)
        self.sip.timer_slack = 0.01  # transaction deadlines in 10 ms slots: one loop callback per slot
        if self.mode == "signalling":  # nothing to await per call: handle events as they come, no task wake-ups
            self.sip.on_event = self._handle_now
        if self.overload is not None:
            self.ua.admission = self._admit
            self.ua.via_feedback = self._via_feedback  # RFC 7339, for the clients that ask
            if self.transport == "udp":  # refuse on the raw datagram, before parsing
                self._inner = t.on_message
                t.on_message = self._prefilter
                if shed_drain is not None:  # the C accelerator: whole batches refused in C
                    t.shed_hook = (self._shed_decide, self._shed_counted)
            self._lag_task = loop.create_task(self._watch_lag())
        self._task = loop.create_task(self._serve())
        if self.media_timeout is not None:
            self._arm_watchdog()
        return self

    # ------------------------------------------------------- media inactivity
    def _arm_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(min(1.0, self.media_timeout / 4), self._check_media)  # type: ignore[operator]

    def _check_media(self) -> None:
        """Hang up calls whose caller sent no RTP/RTCP for ``media_timeout`` s (then re-arm)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for cid, s in list(self.streams.items()):
            s._native_sync()  # what the native media engine received so far (nothing to do without it)
            last = s.last_received_at if s.last_received_at is not None else self._opened_at.get(cid, now)
            call = self._calls.get(cid)
            if call is None or now - last < self.media_timeout:  # type: ignore[operator]
                continue
            self.calls_timed_out += 1
            log.info("agent: no media from %s for %.0f s: hanging up %s", call.remote_uri, now - last, call.call_id)
            try:
                if not call.over and call.state.value != "ending":
                    self.ua.bye(call, now=now)  # type: ignore[union-attr]
                    self.sip.flush()
            except VoicelabError as exc:
                self.errors.append(f"media timeout of {call.call_id}: {exc}")
            self._free(cid, call.call_id)  # the slot is free now, not when the BYE completes
        self._arm_watchdog()

    def _free(self, cid: str, call_id: str) -> None:
        s = self.streams.pop(cid, None)
        self._calls.pop(cid, None)
        self._opened_at.pop(cid, None)
        if s is None:
            return
        self._keep(call_id, s)
        task = asyncio.get_running_loop().create_task(s.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
    # ------------------------------------------------------------ overload control
    def _oc_time(self, now: float) -> float:
        """``now`` for the overload policy, never before a time it was already given: its
        callers stamp time differently (a datagram's arrival, the lag timer's run, which
        may be a few ms stale when the watcher resumes after datagrams were handled)."""
        if now < self._oc_last:
            return self._oc_last
        self._oc_last = now
        return now

    def _admit(self, request: Any, now: float) -> Any:
        """The UA's admission hook: ask the policy with this agent's load."""
        if request.call_id in self._admitted:  # the prefilter already admitted it
            return None
        refusal = self.overload.admit(self._oc_time(now), active_calls=len(self._active), queue_depth=self._queue_depth(),
                                      queue_delay=self._queue_delay_now())
        if refusal is not None:
            self.calls_shed += 1
        return refusal

    def _queue_depth(self) -> int:
        return self.sip.events.qsize() + self.rx_backlog

    def _prefilter(self, data: Any, addr: Any, tr: Any) -> None:
        """Admit or refuse new INVITEs on the raw datagram; drop the ACKs of our refusals.

        The refusal is built from the datagram's bytes (:func:`voicelab.sip.shed.respond`)
        and sent at once (no task): refusing must cost a small fraction of a call. With the
        C accelerator the UDP transport does the same for whole batches
        (:func:`voicelab.sip.shed.drain` with :meth:`_shed_decide`) and hands only the
        rest to this method.
        """
        inner = self._inner  # the UA's on_message
        kind = triage(data) if data[:1] in (b"I", b"A") else None
        if kind is None:
            return inner(data, addr, tr)
        what, call_id, fields = kind
        if what == "shed-ack":
            self.shed_acks += 1
            return None
        d = self._shed_decide(call_id)
        if d is None:
            return inner(data, addr, tr)
        if fields[0] and b"oc" in fields[0][0].lower():  # RFC 7339: feedback in the client's Via, if it asked
            fields = [self._feedback_vias(fields[0]), *fields[1:]]
        resp = respond(fields, d[0], retry_after=d[1], tag=d[2])
        if resp is None:  # not readable with certainty: the UA's hook decides (and answers)
            return inner(data, addr, tr)
        self.calls_shed += 1
        if not tr.send_now(resp, addr):  # never for a listening socket; kept for safety
            task = self._loop.create_task(tr.send(resp, addr))
            self.sip._sends.add(task)
            task.add_done_callback(self.sip._sends.discard)
        return None

    def _via_feedback(self, via: str) -> str:
        """The UA's RFC 7339 hook: the client's top Via hop with the overload feedback now."""
        now = self._oc_time(self._loop.time())
        percent, validity = self.overload.feedback(now)
        return with_feedback(via, percent=percent, validity_ms=validity, seq=now)

    def _feedback_vias(self, vias: list[bytes]) -> list[bytes]:
        """The Via lines of a stateless refusal, the top hop with feedback if the client asked."""
        try:
            first = vias[0].decode("ascii")
        except UnicodeDecodeError:
            return vias
        hops = split_list(first)
        if not hops or not client_asks(hops[0]):
            return vias
        hops[0] = self._via_feedback(hops[0])
        return [", ".join(hops).encode("ascii"), *vias[1:]]

    def _shed_decide(self, call_id: str) -> tuple[bytes, int | None, bytes] | None:
        """The overload policy on a new INVITE seen on the raw datagram (its Call-ID).

        Returns
        -------
        None or (status_line, retry_after, tag)
            None: admit (the INVITE goes on to the UA); else what the stateless refusal
            says (:func:`voicelab.sip.shed.respond`'s ``line``, ``retry_after``, ``tag``).
        """
        if call_id in self._admitted:  # a retransmission of an admitted INVITE
            return None
        again = self._refused.get(call_id) or self._refused_old.get(call_id)
        if again is not None:  # a retransmission of a refused INVITE: the same 503 (RFC 3261 17.2.1)
            self.shed_repeats += 1
            return again
        now = self._loop.time()  # (self._oc_time and self._queue_delay_now inlined: once per refused INVITE)
        if now < self._oc_last:
            now = self._oc_last
        self._oc_last = now
        waiting = self.sip.events.qsize()
        r = self.overload.admit(now, active_calls=len(self._active), queue_depth=waiting + self.rx_backlog,
                                queue_delay=max(self.queue_delay, waiting * self._event_cost))
        if r is None:
            admitted = self._admitted
            admitted[call_id] = now
            while next(iter(admitted.values())) < now - 64 * 0.5:
                admitted.popitem(last=False)
            return None
        self._shed_n += 1
        line = self._status_lines.get(r.status)
        if line is None:
            line = self._status_lines[r.status] = status_line(r.status, "Busy Here" if r.status == 486 else "Service Unavailable")
        d = self._refused[call_id] = (line, r.retry_after, b"%s%x" % (_SHED_PREFIX, self._shed_n))
        if now - self._refused_since >= REFUSALS_KEPT_S:  # two generations: each refusal kept 8-16 s
            self._refused_old, self._refused, self._refused_since = self._refused, {}, now
        return d

    def _shed_counted(self, shed_acks: int, refused: int) -> None:
        """What a batch of the transport's C shedding did (ACKs dropped, INVITEs refused)."""
        self.shed_acks += shed_acks
        self.calls_shed += refused

    async def _watch_lag(self) -> None:
        """Sample the event-loop lag: how late a sleep of ``lag_interval`` wakes up."""
        import time

        loop = asyncio.get_running_loop()
        port = self.address[1] if self.transport == "udp" else None
        inode = None
        if port is not None and self.reuse_port:  # other workers' sockets share the port: count ours only
            try:
                inode = os.fstat(self.sip.transport._transport.get_extra_info("socket").fileno()).st_ino
            except (AttributeError, OSError):
                port = None
        stats = getattr(self.sip.transport, "stats", None)
        n = 0
        cpu0, msgs0 = time.process_time(), getattr(stats, "messages_received", 0)
        per_msg = 0.0
        pacer = pacer_for(loop)
        due = loop.time()
        while True:
            due = next_lag_due(due, loop.time(), self.lag_interval, pacer)
            woke: asyncio.Future = loop.create_future()
            loop.call_at(due, _wake, woke, loop)
            now = await woke  # the loop time the timer ran at (on the pacer's grid: in its tick's wake-up)
            lag = max(0.0, now - due)
            self.overload.observe_lag(lag, self._oc_time(loop.time()))  # observed now, not when the timer ran
            n += 1
            if port is not None and n % 3 == 0:
                if (stats is not None and getattr(stats, "messages_received", 0) == msgs0
                        and lag < self.lag_interval):  # fmt: skip
                    # no SIP datagram in the window and the loop kept time: nothing waits in the
                    # socket (a responsive loop reads a datagram as it arrives), skip /proc
                    self.rx_backlog, self.queue_delay = 0, 0.0
                    self.backlog_reads_skipped += 1
                    cpu0 = time.process_time()
                    continue
                backlog = udp_backlog_bytes(port, inode)
                if backlog is None:
                    port = None
                else:  # a ~600-byte SIP datagram takes about 1.3 kB of receive buffer (skb truesize)
                    self.rx_backlog = backlog // 1280
                    # CPU per message over the last window (process CPU time: a measurement,
                    # not a clock for the protocol), smoothed; the backlog costs that each
                    cpu1, msgs1 = time.process_time(), getattr(stats, "messages_received", 0)
                    if msgs1 > msgs0:
                        sample = (cpu1 - cpu0) / (msgs1 - msgs0)
                        per_msg = sample if per_msg == 0.0 else 0.7 * per_msg + 0.3 * sample
                    cpu0, msgs0 = cpu1, msgs1
                    self.queue_delay = self.rx_backlog * per_msg

    def _load_options(self) -> dict[str, Any]:
        """UA options: signalling-only mode (load studies) keeps no message trace and sends
        100 Trying only when its answer takes longer than 200 ms (RFC 3261 17.2.1)."""
        if self.mode == "signalling":
            return {"trace_limit": 0, "trying_delay": 0.2}
        return {"trace_limit": 4096}

    @property
    def uri(self) -> str:
        """A URI that reaches this agent (with ``;transport=`` off UDP)."""
        host, port = self.address
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:agent@{host}:{port}{tp}"

    # ----------------------------------------------------------------- serving
    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ev = await self.sip.events.get()
            t0 = loop.time()
            try:
                await self._handle(ev)
            except VoicelabError as exc:  # one bad call must not stop the agent
                self.errors.append(f"{type(ev).__name__}: {exc}")
            # how long an event takes to handle (s, smoothed): what each waiting one costs
            self._event_cost += 0.05 * (loop.time() - t0 - self._event_cost)

    def _queue_delay_now(self) -> float:
        """Queueing delay (s) for overload control: the larger of the SIP socket's (kernel
        backlog x CPU per message) and the agent's own event queue's (waiting events x
        the time one takes to handle). Media modes answer from that queue: when new calls
        come faster than streams can be opened, the socket stays empty and the lag small
        while the answers fall behind; this is the signal that sees it."""
        return max(self.queue_delay, self.sip.events.qsize() * self._event_cost)

    async def _handle(self, ev: Any) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(ev, IncomingCall) and self.mode == "signalling":
            self._answer_signalling(ev.call, loop.time())
        elif isinstance(ev, IncomingCall):
            if len(self.streams) >= self.max_calls:
                self.ua.reject(ev.call, 486, now=loop.time())  # type: ignore[union-attr]
                self.calls_refused += 1
                self.sip.flush()
                return
            port = self.iface.free_port("udp", self.address[0])
            self.ua.answer(ev.call, 200, now=loop.time(), media_port=port)  # type: ignore[union-attr]
            self.sip.flush()
            if ev.call.status == 200:
                self.calls_answered += 1
                self._active.add(ev.call.id)
            if ev.call.media is not None:  # offer in the INVITE: media can start now
                await self._open(ev.call, port)
            self._notify()
        elif (isinstance(ev, CallEstablished) and self.mode != "signalling" and ev.call.media is not None
              and ev.call.id not in self.streams):
            await self._open(ev.call, ev.call._media_port or self.iface.free_port("udp", self.address[0]))  # delayed offer
        elif isinstance(ev, (CallEnded, CallFailed, CallCancelled)):
            self._active.discard(ev.call.id)
            s = self.streams.pop(ev.call.id, None)
            if self.pipelines is not None:
                self.pipelines.close(ev.call.call_id, loop.time())
            self._calls.pop(ev.call.id, None)
            self._opened_at.pop(ev.call.id, None)
            if s is not None:
                # closed in its own task: if the agent closes meanwhile (this handler is
                # cancelled), close() still waits for the stream, and the call's audio is kept
                task = loop.create_task(s.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
                try:
                    await asyncio.shield(task)
                finally:
                    self._keep(ev.call.call_id, s)
            self.calls_ended += 1
            self._notify()

    def _handle_now(self, ev: Any) -> bool:
        """Signalling-only mode: the events of :meth:`_handle`, synchronously (see AsyncUserAgent.on_event)."""
        try:
            if isinstance(ev, IncomingCall):
                self._answer_signalling(ev.call, asyncio.get_running_loop().time())
            elif isinstance(ev, (CallEnded, CallFailed, CallCancelled)):
                self._active.discard(ev.call.id)
                self._calls.pop(ev.call.id, None)
                self._opened_at.pop(ev.call.id, None)
                self.calls_ended += 1
                self._notify()
        except VoicelabError as exc:  # one bad call must not stop the agent
            self.errors.append(f"{type(ev).__name__}: {exc}")
        return True

    def _answer_signalling(self, call: Any, now: float) -> None:
        """Signalling-only mode: answer with SDP, open nothing; hang up after the hold time if set."""
        if len(self._active) >= self.max_calls:
            self.ua.reject(call, 486, now=now)  # type: ignore[union-attr]
            self.calls_refused += 1
            self.sip.flush()
            return
        # The SDP names a port next to the SIP port; nothing listens there (no media).
        self.ua.answer(call, 200, now=now, media_port=self.address[1] + 2 if self.address[1] < 65533 else 9)  # type: ignore[union-attr]
        self.sip.flush()
        if call.status == 200:
            self.calls_answered += 1
            self._active.add(call.id)
            if self.mode_arg is not None:
                asyncio.get_running_loop().call_later(float(self.mode_arg), self._hang_up, call)
        self._notify()

    def _hang_up(self, call: Any) -> None:
        if call.over or call.id not in self._active:
            return
        try:
            self.ua.bye(call, now=asyncio.get_running_loop().time())  # type: ignore[union-attr]
            self.sip.flush()
        except VoicelabError as exc:
            self.errors.append(f"hang up {call.id}: {exc}")

    async def _open(self, call: Any, port: int) -> None:
        latch_hosts = None
        if self.latching is True:  # follow the caller only from where SDP or signalling said it is
            latch_hosts = {call.media.remote_address}
            if call.signalling_addr is not None:
                latch_hosts.add(str(call.signalling_addr[0]))
        s = LiveAudioStream.for_media(self.iface, call.media, local_addr=(self.address[0], port),
                                      jitter_buffer=self.jitter_buffer, latching=bool(self.latching), source_filter=False,
                                      latch_hosts=latch_hosts, seed=self.seed + self.calls_answered,
                                      cname="agent@voicelab")  # fmt: skip
        self.streams[call.id] = s
        self._calls[call.id] = call
        self._opened_at[call.id] = asyncio.get_running_loop().time()
        await s.open()
        if call.over:  # hung up while the socket was opening
            return
        if self.mode == "play":
            s.send(self._x, 16000)
        elif self.mode == "pipeline":
            from .pipeline.fronts import attach_rtp

            loop = asyncio.get_running_loop()
            self.pipelines.add(call.call_id, attach_rtp(s, self.pipeline_config, clock=loop.time,  # type: ignore[union-attr]
                                                        seed=self.seed + self.calls_answered))
        else:
            s.send_live("echo" if self.mode == "echo" else "silence")

    def pipeline_media(self, sample_rate: int, frame_samples: int) -> tuple[Any, Any]:
        """(track, sink) running a new pipeline for a WebRTC call (mode ``pipeline``)."""
        from .pipeline.fronts import webrtc_media

        loop = asyncio.get_running_loop()
        self._webrtc_n = getattr(self, "_webrtc_n", 0) + 1
        key = f"webrtc-{self._webrtc_n}"
        pipe = self.pipelines.add(key, self.pipeline_config.build(sample_rate, clock=loop.time,  # type: ignore[union-attr]
                                                                  seed=self.seed + 1000 + self._webrtc_n))
        return webrtc_media(sample_rate, frame_samples, pipe, on_stop=lambda now: self.pipelines.close(key, now))  # type: ignore[union-attr]

    def _keep(self, call_id: str, s: LiveAudioStream) -> None:
        sent, received = s.sent_audio()[0], s.received_audio()[0]
        if self.mode == "record":
            n = len(self.recorded_files) + 1
            path = Path(self.mode_arg) / f"{self.record_prefix}{n:04d}-{_safe_name(call_id)}.wav"  # type: ignore[arg-type]
            self.recorded_files.append(audio.write_wav(path, received, s.rx.sample_rate))
        self.recordings[call_id] = (sent, received, s.tx.sample_rate)
        while len(self.recordings) > self.keep_recordings:
            self.recordings.popitem(last=False)
        self.media_stats[call_id] = s.media_stats()
        while len(self.media_stats) > max(self.keep_recordings, 64):
            self.media_stats.popitem(last=False)

    @property
    def rtp_foreign_packets(self) -> int:
        """Media packets dropped for coming from an unexpected source, over the kept and open calls."""
        return sum(m["rtp_foreign_packets"] for m in self.media_stats.values()) + sum(
            s.foreign_packets for s in self.streams.values())

    def ended(self, n: int) -> asyncio.Future:
        """A future resolved once ``n`` calls have ended at this agent."""
        return self._wait("calls_ended", n)

    def answered(self, n: int) -> asyncio.Future:
        """A future resolved once ``n`` calls have been answered (200 sent, media open)."""
        return self._wait("calls_answered", n)

    def _wait(self, counter: str, n: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((counter, n, fut))
        self._notify()
        return fut

    def _notify(self) -> None:
        keep = []
        for counter, n, fut in self._waiters:
            if getattr(self, counter) >= n:
                if not fut.done():
                    fut.set_result(getattr(self, counter))
            else:
                keep.append((counter, n, fut))
        self._waiters = keep

    def vital_signs(self) -> dict[str, int]:
        """What a long run must keep flat: the agent's live state, counted.

        Returns
        -------
        dict
            ``calls_active`` (answered, not over), ``streams`` (open media streams),
            ``transactions`` (live SIP transactions, finished ones included until their
            timers end), ``dialogs`` (the UA's calls it still remembers) and the running
            totals ``calls_answered``, ``calls_ended``, ``calls_refused``, ``calls_shed``.
        """
        ua = self.ua
        return {
            "calls_active": len(self._active),
            "streams": len(self.streams),
            "transactions": len(ua.transaction_table) if ua is not None else 0,
            "dialogs": len(ua.calls) if ua is not None else 0,
            "calls_answered": self.calls_answered,
            "calls_ended": self.calls_ended,
            "calls_refused": self.calls_refused,
            "calls_shed": self.calls_shed,
        }

    def overload_state(self) -> dict[str, Any]:
        """The overload controller's inputs and state now, for a trace (``agent serve
        --stats-file``): empty without overload control.

        Returns
        -------
        dict
            ``oc_rate`` (the adaptive admitted-rate limit, calls/s; None before the first
            overload), ``oc_ceiling`` (the rate it was last cut from, calls/s), ``oc_lag_ms``
            (smoothed event-loop lag), ``oc_backlog`` (datagrams estimated waiting in the SIP
            socket), ``oc_queue_delay_ms`` (their estimated service time), ``oc_events``
            (the agent's waiting events), ``oc_admitted`` and ``oc_refused`` (running totals
            of the policy's answers), ``oc_feedback`` (the share of new calls, %, RFC 7339
            callers are asked to shed now), ``shed_acks`` and ``shed_repeats`` (retransmitted
            INVITEs given their first copy's 503).
        """
        oc = self.overload
        if oc is None:
            return {}
        counts = oc.counts
        admitted = counts.get("admitted", 0)
        return {
            "oc_rate": None if oc.adaptive_rate is None else round(oc.adaptive_rate, 1),
            "oc_ceiling": None if oc._ceiling is None else round(oc._ceiling, 1),
            "oc_lag_ms": round(1000.0 * oc.lag, 2),
            "oc_backlog": self.rx_backlog,
            "oc_queue_delay_ms": round(1000.0 * self.queue_delay, 2),
            "oc_events": self.sip.events.qsize() if self.sip is not None else 0,
            "oc_admitted": admitted,
            "oc_refused": sum(counts.values()) - admitted,
            "oc_feedback": oc.feedback(self._oc_time(self._loop.time()))[0],  # RFC 7339: % asked of callers that ask
            "shed_acks": self.shed_acks,
            "shed_repeats": self.shed_repeats,
        }

    async def close(self) -> None:
        """Stop answering, end media, close the socket."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._lag_task is not None:
            self._lag_task.cancel()
            try:
                await self._lag_task
            except asyncio.CancelledError:
                pass
            self._lag_task = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for cid, s in list(self.streams.items()):  # calls still up: their audio is kept too
            await s.close()
            call = self._calls.get(cid)
            self._keep(call.call_id if call is not None else str(cid), s)
        self.streams.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self.pipelines is not None:  # calls still up: their turns end with the agent
            for key in list(self.pipelines.live):
                self.pipelines.close(key, asyncio.get_running_loop().time(), "agent_closed")
        if self.sip is not None:
            await self.sip.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> "Agent":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()
