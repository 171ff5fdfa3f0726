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
``record:DIR``
    Sends encoded silence (the media path and RTCP stay alive) and writes what arrived to
    ``DIR/<n>-<call-id>.wav`` when the call ends.

Each call gets its own RTP port, so calls run concurrently (up to ``max_calls``; more are
refused with 486 Busy Here). ``auth`` challenges every out-of-dialog INVITE with digest
(RFC 7616/8760, realm ``voicelab``; ``auth_algorithms`` picks the challenges); a call
without valid credentials is never set up.
``srtp`` requires SDES-keyed SRTP (RFC 4568): plain-RTP offers get 488. The UA forgets
finished calls beyond a bound and keeps a bounded trace, so a long-running agent does not
grow.

Every socket is opened through a network interface object
(:class:`voicelab.net.iface.LoopbackInterface` by default).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from . import audio
from .errors import ParameterError, VoicelabError
from .net.iface import LoopbackInterface
from .rtp.live import LiveAudioStream
from .sip.ua import CallCancelled, CallEnded, CallEstablished, CallFailed, IncomingCall, UserAgent

__all__ = ["Agent", "parse_mode", "MODES"]

#: The agent's modes (``play`` and ``record`` take an argument after a colon).
MODES = ("play", "echo", "record", "pipeline")
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
        raise ParameterError(f"unknown agent mode {mode!r}; use 'echo', 'play', 'play:FILE' or 'record:DIR'")
    if kind in ("echo", "pipeline") and sep:
        raise ParameterError(f"mode {kind!r} takes no argument")
    if kind == "record" and not arg:
        raise ParameterError("mode 'record' needs a directory: record:DIR")
    return kind, (arg or None)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:64] or "call"


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
    latching : bool
        Symmetric RTP ("comedia", default): send media to wherever the caller's media
        comes from. False sends to the address in the caller's SDP (one-way audio behind
        a NAT); media is accepted from any source either way.
    contact : str, optional
        The Contact URI the agent advertises (e.g. its public address behind a static
        port forward, as a PBX's external signalling address); default its own address.
    iface : network interface, optional
    seed : int
        Seeds tags, branches and RTP initial values (audio is the same for every seed).
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
        latching: bool = True,
        contact: str | None = None,
        iface: Any = None,
        seed: int = 0,
        pipeline: Any = None,
    ) -> None:
        self.host, self.port = host, port
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
        self.latching = bool(latching)
        self.contact = contact
        self.calls_answered = 0
        self.calls_refused = 0
        self.calls_ended = 0
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
        from .calls import AsyncUserAgent
        from .sim import Scenario, load_speech
        from .sip.transport import transport_for

        loop = asyncio.get_running_loop()
        if self.iface is None:
            self.iface = LoopbackInterface(loop)
        if self.mode == "play" and getattr(self, "_speech_override", None) is not None:
            self._x, self.synthetic_speech = self._speech_override, None
        elif self.mode == "play":
            sp = load_speech(Scenario(speech=self.speech, input=self.mode_arg, max_speech_s=30.0))
            self._x = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 16000)
            self.synthetic_speech = bool(sp.synthetic)
        if self.mode == "record":
            Path(self.mode_arg).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        options: dict[str, Any] = {"parse": False}
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

            authn = DigestAuthenticator("voicelab", {self.auth[0]: self.auth[1]}, secret=rng.bytes(32),
                                        algorithms=self.auth_algorithms)

            def _challenge(request, now):  # out-of-dialog INVITEs only, as PBXs do
                if request.method != "INVITE" or request.to.tag is not None:
                    return None
                result = authn.verify(request, now)
                return None if result.ok else authn.reject(request, result, now)

            authenticate = _challenge

        self.ua = UserAgent(local_uri=f"sip:agent@{self.address[0]}", local_addr=self.address, rng=rng,
                            contact=self.contact, codecs=self.codecs, media_address=self.address[0], transport=self.transport,
                            authenticate=authenticate, srtp=self.srtp, keep_finished_calls=64,
                            trace_limit=4096)  # fmt: skip
        self.sip = AsyncUserAgent(self.ua, t)
        self._task = loop.create_task(self._serve())
        return self

    @property
    def uri(self) -> str:
        """A URI that reaches this agent (with ``;transport=`` off UDP)."""
        host, port = self.address
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:agent@{host}:{port}{tp}"

    # ----------------------------------------------------------------- serving
    async def _serve(self) -> None:
        while True:
            ev = await self.sip.events.get()
            try:
                await self._handle(ev)
            except VoicelabError as exc:  # one bad call must not stop the agent
                self.errors.append(f"{type(ev).__name__}: {exc}")

    async def _handle(self, ev: Any) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(ev, IncomingCall):
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
            if ev.call.media is not None:  # offer in the INVITE: media can start now
                await self._open(ev.call, port)
            self._notify()
        elif isinstance(ev, CallEstablished) and ev.call.media is not None and ev.call.id not in self.streams:
            await self._open(ev.call, ev.call._media_port or self.iface.free_port("udp", self.address[0]))  # delayed offer
        elif isinstance(ev, (CallEnded, CallFailed, CallCancelled)):
            s = self.streams.pop(ev.call.id, None)
            if self.pipelines is not None:
                self.pipelines.close(ev.call.call_id, loop.time())
            if s is not None:
                await s.close()
                self._keep(ev.call.call_id, s)
            self.calls_ended += 1
            self._notify()

    async def _open(self, call: Any, port: int) -> None:
        s = LiveAudioStream.for_media(self.iface, call.media, local_addr=(self.address[0], port),
                                      jitter_buffer=self.jitter_buffer, latching=self.latching, source_filter=False,
                                      seed=self.seed + self.calls_answered, cname="agent@voicelab")  # fmt: skip
        self.streams[call.id] = s
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
            path = Path(self.mode_arg) / f"{n:04d}-{_safe_name(call_id)}.wav"  # type: ignore[arg-type]
            self.recorded_files.append(audio.write_wav(path, received, s.rx.sample_rate))
        self.recordings[call_id] = (sent, received, s.tx.sample_rate)
        while len(self.recordings) > self.keep_recordings:
            self.recordings.popitem(last=False)

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

    async def close(self) -> None:
        """Stop answering, end media, close the socket."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for s in list(self.streams.values()):
            await s.close()
        self.streams.clear()
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
