"""WebSocket media streams, live: the agent's server, the platform's client and one call.

The third transport of the lab, next to SIP/RTP and WebRTC: a telephony platform hands
a call to a voice agent by opening a WebSocket to it and streaming 20 ms mu-law frames as
JSON (:mod:`voicelab.wsmedia.protocol`). Here both ends are the lab's:

* :class:`MediaStreamServer` is the agent: it accepts WebSockets (aiohttp, its sockets
  opened through the network interface), reads the platform's messages and, in
  ``"play"`` mode, plays speech back on the same socket, paced on the loop clock; in
  ``"echo"`` mode it sends back what it plays out.
* :class:`MediaStreamClient` is the platform (the caller's side): it connects, sends
  ``connected`` + ``start``, streams the caller's speech, plays what the agent sends and,
  like the platform, returns the agent's marks once the audio before them has played.
* :func:`ws_call` runs one call between them, optionally through the userspace TCP
  impairment relay (:class:`voicelab.net.tcprelay.TcpRelay`), and measures it with the
  same metrics as :func:`voicelab.calls.sip_call`.

Each end uses the lab's shared media pieces, so results compare across transports: the
``pcmu`` codec object, the jitter buffers of :mod:`voicelab.rtp.jitterbuffer` (each
media message becomes an RTP-like packet with sequence number ``chunk - 1`` and
timestamp ``8 * timestamp_ms``, pushed with its arrival time on the loop clock) and
:func:`voicelab.rtp.playout.render` for decoding and concealment. A WebSocket runs over
TCP, so nothing is ever lost in transit: a lost segment comes late instead (and holds
up everything behind it), and a fixed jitter buffer turns that lateness into late loss.

Wire bit rate counts each media message's JSON text, its WebSocket frame header (2 or
4 bytes, plus the 4-byte mask from client to server) and 40 bytes of IPv4 + TCP header,
one segment per message; ACKs are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import numpy as np

import aiohttp
from yarl import URL

from .. import audio, codecs, metrics
from ..errors import ParameterError, RemoteProtocolError, VoicelabError
from ..metrics.rtpstats import ReceiverStats
from ..rtp.jitterbuffer import AdaptiveJitterBuffer, FixedJitterBuffer
from ..rtp.live import StreamStats
from ..rtp.packet import RtpPacket
from ..rtp.playout import render
from ..net.iface import http_connector  # the one aiohttp connector through the interface
from ..realtime import realtime
from . import protocol as P

__all__ = ["MediaStreamServer", "MediaStreamClient", "AgentSession", "ws_call", "CLOSE_CODES"]

log = logging.getLogger(__name__)

#: WebSocket close code (RFC 6455 7.4.1) sent for a :class:`RemoteProtocolError` by its
#: ``status_code``: 400 -> 1007 invalid payload, 413 -> 1009 too big, 415 -> 1003
#: unsupported data; anything else 1008 policy violation.
CLOSE_CODES = {400: 1007, 413: 1009, 415: 1003}
_EARLY_S = 0.0005  # see voicelab.rtp.live: timers are armed half a millisecond early
_IP_TCP_HEADER = 40


def _wire_bytes(text: str, *, masked: bool) -> int:
    n = len(text.encode("utf-8"))
    header = 2 if n < 126 else (4 if n < 65536 else 10)
    return n + header + (4 if masked else 0) + _IP_TCP_HEADER


class _Media:
    """One end's audio: paced sending, jitter buffer, playout and recordings on the loop clock.

    The same shape as :class:`voicelab.rtp.live.LiveAudioStream` where the call metrics
    look (``tx``, ``sent_audio()``, ``received_audio()``, ``jb``, ``stats``), with
    messages instead of datagrams.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, jitter_buffer: str, masked: bool) -> None:
        from ..rtp.jitterbuffer import parse_jitter_buffer

        self.loop = loop
        self.tx = codecs.get("pcmu", frame_ms=P.FRAME_MS)
        self.rx = codecs.get("pcmu", frame_ms=P.FRAME_MS)
        kind, params = parse_jitter_buffer(jitter_buffer)
        cls = FixedJitterBuffer if kind == "fixed" else AdaptiveJitterBuffer
        self.jb = cls(frame_ms=self.tx.frame_ms, clock_rate=8000, timestamp_increment=self.tx.frame_samples, **params)
        self.masked = masked
        self.encoder: P.MediaStreamEncoder | None = None
        self.emit: Any = None  # callable(text), set by the owner
        self.on_played: Any = None  # callable(frame, when), for echo
        self.stats = StreamStats()
        self.rstats = ReceiverStats(8000)
        self.wire_bytes_sent = 0
        self.send_times: dict[int, float] = {}  # chunk -> send time
        self.arrivals: dict[int, float] = {}  # chunk -> arrival time
        self.media_received = 0
        self._source: np.ndarray | None = None
        self._t0 = 0.0
        self._k_send = 0
        self._send_handle: asyncio.TimerHandle | None = None
        self._play_handle: asyncio.TimerHandle | None = None
        self._play_start: float | None = None
        self._k_play = 0
        self._first_chunk: int | None = None
        self._played: list[tuple[float, np.ndarray]] = []
        self._waiters: list[tuple[float, asyncio.Future]] = []
        self._marks_due: list[tuple[int, str]] = []  # (slot index, name): marks to echo once played
        self.sending_done: asyncio.Future = loop.create_future()
        self._live_source: Any = None  # send_live(): callable(now) -> int16 frame or None
        self.played_at: dict[int, float] = {}  # chunk -> playout slot time
        self.last_played_chunk: int | None = None
        self.cleared: list[tuple[float, int]] = []  # (time, frames dropped) per 'clear' from the agent
        self.tapped_at: dict[int, float] = {}  # chunk -> time the arrival tap released it
        self.tap: Any = None
        self._on_tapped: Any = None

    def tap_arrivals(self, on_frames: Any, *, window: int = 2) -> Any:
        """Hand the peer's frames to ``on_frames(frames)`` as they arrive (see
        :meth:`voicelab.rtp.live.LiveAudioStream.tap_arrivals`); returns the tap."""
        from ..rtp.tap import ArrivalTap

        self.tap = ArrivalTap(codecs.get("pcmu", frame_ms=P.FRAME_MS), window=window)
        self._on_tapped = on_frames
        return self.tap

    # -- sending ----------------------------------------------------------------------
    def send(self, samples: np.ndarray, sample_rate: int, *, start_at: float | None = None) -> float:
        """Start streaming ``samples`` (float audio); returns ``t0``, the capture start time."""
        x = audio.resample(np.asarray(samples, dtype=np.float64), sample_rate, P.SAMPLE_RATE)
        F = P.FRAME_BYTES
        n = max(1, int(np.ceil(len(x) / F)))
        pcm = np.zeros(n * F, dtype=np.int16)
        pcm[: len(x)] = audio.to_int16(x)
        self._source = pcm
        self._t0 = self.loop.time() if start_at is None else float(start_at)
        self._k_send = 0
        self._arm_send()
        return self._t0

    def send_live(self, source: Any, *, start_at: float | None = None) -> float:
        """Send ``source(now)`` (one int16 frame at 8 kHz, None: silence) every 20 ms until stopped."""
        self._live_source, self._source = source, None
        self._t0 = self.loop.time() if start_at is None else float(start_at)
        self._k_send = 0
        self._arm_send()
        return self._t0

    def _arm_send(self) -> None:
        when = self._t0 + (self._k_send + 1) * P.FRAME_MS / 1000.0
        self._send_handle = self.loop.call_at(when - _EARLY_S, self._send_frame, when)

    def _send_frame(self, scheduled: float) -> None:
        self._send_handle = None
        now = self.loop.time()
        F = P.FRAME_BYTES
        k = self._k_send
        if self._live_source is not None:
            frame = self._live_source(now)
            self.send_payload(P.mulaw_encode(frame if frame is not None and len(frame) == F else np.zeros(F, np.int16)), now)
            self.stats.send_lateness_s.append(now - scheduled)
            self._k_send += 1
            self._arm_send()
            return
        self.send_payload(P.mulaw_encode(self._source[k * F : (k + 1) * F]), now)  # type: ignore[index]
        self.stats.send_lateness_s.append(now - scheduled)
        self._k_send += 1
        if self._k_send * F < len(self._source):  # type: ignore[arg-type]
            self._arm_send()
        elif not self.sending_done.done():
            self.sending_done.set_result(now)

    def send_payload(self, payload: bytes, now: float) -> int:
        """Send one 160-byte mu-law frame now; returns its ``chunk`` number."""
        text = self.encoder.media(payload)  # type: ignore[union-attr]
        chunk = self.encoder.chunks  # type: ignore[union-attr]
        self.send_times[chunk] = now
        self.stats.frames_sent += 1
        self.wire_bytes_sent += _wire_bytes(text, masked=self.masked)
        self.emit(text)
        return chunk

    def stop_sending(self) -> None:
        if self._send_handle is not None:
            self._send_handle.cancel()
            self._send_handle = None
        if not self.sending_done.done():
            self.sending_done.set_result(self.loop.time())

    # -- receiving --------------------------------------------------------------------
    def on_media(self, ev: P.MediaReceived, now: float) -> None:
        self.media_received += 1
        chunk = ev.chunk if ev.chunk is not None else self.media_received
        ts_ms = ev.timestamp_ms if ev.timestamp_ms is not None else (chunk - 1) * P.FRAME_MS
        seq, ts = (chunk - 1) & 0xFFFF, (ts_ms * 8) & 0xFFFFFFFF
        self.arrivals.setdefault(chunk, now)
        if self._first_chunk is None:
            self._first_chunk = chunk
        self.rstats.update(seq, ts, now)
        if self.tap is not None:
            frames = self.tap.push(seq, ev.payload, now)
            for f in frames:
                if f.seq is not None:
                    self.tapped_at.setdefault(f.seq + 1, f.t)
            if frames:
                self._on_tapped(frames)
        self.jb.push(RtpPacket(payload_type=0, sequence_number=seq, timestamp=ts, payload=ev.payload), now)
        if self._play_start is None and self.jb.start_time() is not None:
            self._play_start = self.jb.start_time()
            self._arm_play()

    def clear(self, now: float) -> int:
        """The agent sent ``clear`` (barge-in): drop its buffered audio, as the platform does.

        Marks still waiting for their audio are echoed at once (the platform returns
        pending marks on a clear). Returns the frames dropped; ``cleared`` keeps
        ``(time, frames)`` per clear.
        """
        n = self.jb.drop_buffered(now)
        self.cleared.append((now, n))
        due, self._marks_due = self._marks_due, []
        for _, name in due:
            self.emit(self.encoder.mark(name))  # type: ignore[union-attr]
        return n

    def mark_after_last(self, name: str) -> None:
        """Echo mark ``name`` once the audio received so far has been played."""
        last = max(self.arrivals) if self.arrivals else 0
        idx = last - (self._first_chunk or last)
        self._marks_due.append((idx, name))
        self._flush_marks()

    def _flush_marks(self) -> None:
        due = [m for m in self._marks_due if m[0] < self._k_play]
        if due:
            self._marks_due = [m for m in self._marks_due if m[0] >= self._k_play]
            for _, name in due:
                self.emit(self.encoder.mark(name))  # type: ignore[union-attr]

    def _arm_play(self) -> None:
        when = self._play_start + self._k_play * P.FRAME_MS / 1000.0  # type: ignore[operator]
        self._play_handle = self.loop.call_at(when, self._play_slot, when)

    def _play_slot(self, when: float) -> None:
        self._play_handle = None
        p = self.jb.pop(when)
        frame, outcome = render(p, self.rx, plc=True)
        self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1
        chunk = None if p.sequence_number is None or p.kind not in ("frame", "skip") else p.sequence_number + 1
        if chunk is not None:
            self.played_at.setdefault(chunk, when)
        self.last_played_chunk = chunk
        self._played.append((when, frame))
        self._k_play += 1
        if self.on_played is not None:
            self.on_played(frame, when)
        self._flush_marks()
        for _, fut in [w for w in self._waiters if w[0] <= when]:
            if not fut.done():
                fut.set_result(when)
        self._waiters = [w for w in self._waiters if w[0] > when]
        self._arm_play()

    def played_through(self, t: float) -> asyncio.Future:
        """A future resolved once the slot playing at loop time ``t`` has been played."""
        fut = self.loop.create_future()
        if self._played and self._played[-1][0] >= t:
            fut.set_result(self._played[-1][0])
        else:
            self._waiters.append((t, fut))
        return fut

    # -- recordings -------------------------------------------------------------------
    def sent_audio(self) -> tuple[np.ndarray, float]:
        """(float samples at 8 kHz, loop time of the first sample) of what was streamed."""
        return (audio.to_float(self._source) if self._source is not None else np.zeros(0)), self._t0

    def received_audio(self) -> tuple[np.ndarray, float]:
        """(float samples at 8 kHz, loop time of the first sample) of what was played."""
        if not self._played:
            return np.zeros(0), 0.0
        return audio.to_float(np.concatenate([f for _, f in self._played])), self._played[0][0]

    def close(self) -> None:
        self.stop_sending()
        if self._play_handle is not None:
            self._play_handle.cancel()
            self._play_handle = None
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()


class _Socket:
    """A WebSocket with one writer task, so timer callbacks can send in order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.queue: asyncio.Queue = asyncio.Queue()
        self.send_errors = 0
        self.task = asyncio.get_running_loop().create_task(self._writer())

    def emit(self, text: str) -> None:
        self.queue.put_nowait(text)

    async def _writer(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None:
                return
            if self.ws.closed:
                continue
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError, OSError):  # peer went away under us
                self.send_errors += 1

    async def flush_and_stop(self) -> None:
        self.queue.put_nowait(None)
        await self.task


async def _close_for(ws: Any, exc: RemoteProtocolError) -> None:
    code = CLOSE_CODES.get(exc.status_code, 1008)
    await ws.close(code=code, message=str(exc)[:120].encode("utf-8", "replace"))


# ---------------------------------------------------------------------------------------
# Agent (server)
# ---------------------------------------------------------------------------------------


class AgentSession:
    """One stream at the agent: what it received, played and measured.

    Attributes
    ----------
    media : object
        Recordings and statistics (``sent_audio()``, ``received_audio()``, ``jb``, ...).
    stream_sid, call_sid : str or None
        From the platform's ``start``.
    started_at, stopped_at : float or None
        Loop times of ``start`` and ``stop``.
    mark_echo_s : dict
        Mark name -> seconds from sending it to the platform's echo (the agent's view of
        how long its audio takes to be heard).
    error : RemoteProtocolError or None
        Why the agent closed the socket, if it did.
    dtmf : list of str
    """

    def __init__(self, server: "MediaStreamServer", ws: Any) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.sock = _Socket(ws)
        self.decoder = P.MediaStreamDecoder(role="agent", max_message_bytes=server.max_message_bytes)
        self.media = _Media(self.loop, jitter_buffer=server.jitter_buffer, masked=False)
        self.media.emit = self.sock.emit
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.mark_sent_at: dict[str, float] = {}
        self.mark_echo_s: dict[str, float] = {}
        self.dtmf: list[str] = []
        self.error: RemoteProtocolError | None = None
        self.ended: asyncio.Future = self.loop.create_future()
        self._end_mark: asyncio.Task | None = None
        self.pipeline: Any = None  # mode "pipeline": this stream's voicelab.pipeline.Pipeline

    def _on_start(self, ev: P.StreamStarted, now: float) -> None:
        self.stream_sid, self.call_sid, self.started_at = ev.stream_sid, ev.call_sid, now
        self.media.encoder = P.MediaStreamEncoder(role="agent", stream_sid=ev.stream_sid)
        srv = self.server
        if srv.mode == "play":
            self.media.send(srv._samples, srv._sample_rate, start_at=now)
            self.media.sending_done.add_done_callback(self._mark_end)
        elif srv.mode == "pipeline":  # the voice agent's turn (voicelab.pipeline)
            pipe = srv.pipeline_factory(8000, clock=self.loop.time, seed=len(srv.sessions))
            self.pipeline = pipe
            from ..rtp.tap import feed_on_arrival  # the pipeline hears frames as they arrive, not after playout

            self.media.tap_arrivals(feed_on_arrival(pipe, active=lambda: self.stopped_at is None))
            # the send clock starts after the pipeline was built (loading the recogniser
            # takes a moment): frames owed for that time would reach the caller in a burst
            self.media.send_live(pipe.next_frame, start_at=self.loop.time())
        else:
            self.media.on_played = self._echo
        srv._started.put_nowait(self)

    def _mark_end(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or self.stopped_at is not None or self.sock.ws.closed:
            return
        self.mark_sent_at["end-of-speech"] = self.loop.time()
        self.sock.emit(self.media.encoder.mark("end-of-speech"))  # type: ignore[union-attr]

    def _echo(self, frame: np.ndarray, when: float) -> None:
        if self.stopped_at is None:
            self.media.send_payload(P.mulaw_encode(frame), when)

    async def run(self) -> None:

        ws = self.sock.ws
        async for msg in ws:
            now = self.loop.time()
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.error = RemoteProtocolError(f"WebSocket error: {msg.data}", status_code=413)
                break
            try:
                ev = self.decoder.receive(msg.data)
            except RemoteProtocolError as exc:
                self.error = exc
                self.server.errors.append(f"{type(exc).__name__}: {exc}")
                log.warning("closing a media stream after a protocol error: %s", exc)
                await _close_for(ws, exc)
                break
            if isinstance(ev, P.StreamStarted):
                self._on_start(ev, now)
            elif isinstance(ev, P.MediaReceived):
                self.media.on_media(ev, now)
            elif isinstance(ev, P.MarkReceived):
                if ev.name in self.mark_sent_at:
                    self.mark_echo_s[ev.name] = now - self.mark_sent_at[ev.name]
            elif isinstance(ev, P.DtmfReceived):
                self.dtmf.append(ev.digit)
            elif isinstance(ev, P.StreamStopped):
                self.stopped_at = now
                self.media.stop_sending()
                break

    async def finish(self) -> None:
        self.media.close()
        if self.pipeline is not None and self.pipeline.state != "closed":
            self.pipeline.close(self.loop.time())
        await self.sock.flush_and_stop()
        if not self.sock.ws.closed:
            await self.sock.ws.close()
        if not self.ended.done():
            self.ended.set_result(self)


class MediaStreamServer:
    """The voice agent's WebSocket endpoint for media streams.

    Parameters
    ----------
    iface : NetworkInterface
        Opens the listening socket (``iface.create_server(runner.server, ...)``).
    mode : {"play", "echo", "pipeline"}
        ``"play"``: on ``start``, stream ``speech`` (or ``samples``) to the caller, then
        send the mark ``"end-of-speech"``. ``"echo"``: send back each frame as it is
        played out of the agent's jitter buffer. ``"pipeline"``: a listen-think-speak
        voice agent: ``pipeline`` is a factory ``(sample_rate, clock=, seed=) -> pipeline``
        (``voicelab.pipeline.PipelineConfig(...).build``: the same pipeline class as the
        SIP agent's; this layer does not import it).
    speech : str
        Named speech (see :func:`voicelab.sim.load_speech`) for ``"play"``.
    samples : numpy.ndarray, optional
        Float audio to play instead of ``speech``, at ``sample_rate`` Hz.
    sample_rate : int
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"``, as elsewhere in the lab.
    host, port : str, int
        Where to listen (port 0: any free port; read :attr:`address`).
    path : str
        HTTP path of the WebSocket.
    max_message_bytes : int
        Larger messages close the socket with 1009.
    reuse_port : bool
        Listen with ``SO_REUSEPORT`` so that several processes share the port (``agent
        serve --workers``): the kernel hands each connection, and so each stream, to one.

    Attributes
    ----------
    sessions : list of AgentSession
        Every accepted stream, in order.
    errors : list of str
        Protocol errors that closed a socket (other sessions are unaffected).
    """

    def __init__(
        self,
        iface: Any,
        *,
        mode: str = "play",
        speech: str = "default",
        samples: np.ndarray | None = None,
        sample_rate: int = 16000,
        jitter_buffer: str = "fixed:60",
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/media",
        max_message_bytes: int = P.MAX_MESSAGE_BYTES,
        pipeline: Any = None,
        reuse_port: bool = False,
    ) -> None:
        from ..rtp.jitterbuffer import parse_jitter_buffer

        if mode not in ("play", "echo", "pipeline"):
            raise ParameterError(f"mode must be 'play', 'echo' or 'pipeline', got {mode!r}")
        if mode == "pipeline" and not callable(pipeline):
            raise ParameterError("mode 'pipeline' needs pipeline=a factory (sample_rate, clock=, seed=) -> pipeline, "
                                 "e.g. voicelab.pipeline.PipelineConfig().build")
        self.pipeline_factory: Any = pipeline
        if not isinstance(path, str) or not path.startswith("/"):
            raise ParameterError(f"path must be an absolute HTTP path such as '/media', got {path!r}")
        parse_jitter_buffer(jitter_buffer)  # validate now
        P.MediaStreamDecoder(max_message_bytes=max_message_bytes)  # validates the limit
        self.iface = iface
        self.mode, self.speech, self.jitter_buffer = mode, speech, jitter_buffer
        self.host, self.port, self.path = host, port, path
        self.max_message_bytes = max_message_bytes
        self.reuse_port = bool(reuse_port)
        self._samples = None if samples is None else np.asarray(samples, dtype=np.float64)
        self._sample_rate = int(sample_rate)
        self.sessions: list[AgentSession] = []
        self.errors: list[str] = []
        self._runner: Any = None
        self._server: Any = None
        self._started: asyncio.Queue | None = None

    async def start(self) -> "MediaStreamServer":
        """Listen; returns self."""
        from aiohttp import web

        if self.mode == "play" and self._samples is None:
            from ..audio import load_speech

            sp = load_speech(speech=self.speech, max_speech_s=30.0)
            self._samples, self._sample_rate = np.asarray(sp.samples, dtype=np.float64), int(sp.sample_rate)
        self._started = asyncio.Queue()
        app = web.Application()
        app.router.add_get(self.path, self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        self._runner = runner
        # runner.server is aiohttp's protocol factory: the interface opens the socket.
        extra = {"reuse_port": True} if self.reuse_port else {}  # agent serve --workers: each connection to one worker
        self._server = await self.iface.create_server(runner.server, self.host, self.port, **extra)
        return self

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        return tuple(self._server.sockets[0].getsockname()[:2])  # type: ignore[return-value]

    async def next_started(self, *, timeout: float = 10.0) -> AgentSession:
        """The next session whose ``start`` arrived (waits up to ``timeout`` seconds)."""
        return await asyncio.wait_for(self._started.get(), timeout)  # type: ignore[union-attr]

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        ws = web.WebSocketResponse(max_msg_size=self.max_message_bytes, compress=False)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade (media streams)\n")
        await ws.prepare(request)
        session = AgentSession(self, ws)
        self.sessions.append(session)
        try:
            await session.run()
        finally:
            await session.finish()
        return ws

    async def close(self) -> None:
        """Close every stream and stop listening (waits for both)."""
        for s in self.sessions:
            s.media.close()
            if not s.sock.ws.closed:
                await s.sock.ws.close(code=1001, message=b"agent shutting down")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> "MediaStreamServer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()


# ---------------------------------------------------------------------------------------
# Platform / caller (client)
# ---------------------------------------------------------------------------------------


class MediaStreamClient:
    """The platform's side of a media stream: connects to an agent and streams a call.

    Parameters
    ----------
    iface : NetworkInterface
        Opens the TCP connection (an aiohttp connector that calls
        ``iface.create_connection``).
    address : (host, port)
        The agent (or a relay in front of it).
    path : str
    jitter_buffer : str
        For the agent's audio.
    seed : int
        Seeds the stream/call/account identifiers.
    max_message_bytes : int

    Attributes
    ----------
    media : object
        Recordings and statistics.
    stream_sid, call_sid, account_sid : str
    connected_at : float or None
        Loop time when ``start`` had been written.
    marks_echoed : list of str
    error : RemoteProtocolError or None
    """

    def __init__(
        self,
        iface: Any,
        address: tuple[str, int],
        *,
        path: str = "/media",
        jitter_buffer: str = "fixed:60",
        seed: int = 0,
        max_message_bytes: int = P.MAX_MESSAGE_BYTES,
    ) -> None:
        if not (isinstance(address, tuple) and len(address) == 2):
            raise ParameterError(f"address must be a (host, port) pair, got {address!r}")
        rng = np.random.default_rng(seed)
        self.iface, self.address, self.path = iface, address, path
        self.jitter_buffer = jitter_buffer
        self.max_message_bytes = max_message_bytes
        self.stream_sid, self.call_sid, self.account_sid = (P.new_sid(p, rng) for p in ("MZ", "CA", "AC"))
        self.encoder = P.MediaStreamEncoder(role="caller", stream_sid=self.stream_sid, call_sid=self.call_sid,
                                            account_sid=self.account_sid)
        self.decoder = P.MediaStreamDecoder(role="caller", stream_sid=self.stream_sid, max_message_bytes=max_message_bytes)
        self.media: _Media | None = None
        self.connected_at: float | None = None
        self.marks_echoed: list[str] = []
        self.error: RemoteProtocolError | None = None
        self._session: Any = None
        self._sock: _Socket | None = None
        self._reader: asyncio.Task | None = None
        self._closed = False

    async def connect(self, *, timeout: float = 10.0) -> "MediaStreamClient":
        """Open the WebSocket and send ``connected`` and ``start``; returns self.

        Raises
        ------
        RemoteProtocolError
            The agent refused the WebSocket upgrade (status from its HTTP answer).
        OSError
            No connection.
        """



        loop = asyncio.get_running_loop()
        self.media = _Media(loop, jitter_buffer=self.jitter_buffer, masked=True)
        self.media.encoder = self.encoder
        self._session = aiohttp.ClientSession(connector=http_connector(self.iface))
        url = URL.build(scheme="ws", host=self.address[0], port=self.address[1], path=self.path)
        try:
            ws = await self._session.ws_connect(url, max_msg_size=self.max_message_bytes,
                                                timeout=aiohttp.ClientWSTimeout(ws_close=timeout))
        except aiohttp.WSServerHandshakeError as exc:
            await self._session.close()
            raise RemoteProtocolError(f"WebSocket upgrade to {url} refused with HTTP {exc.status}", status_code=exc.status or 400) from None
        except aiohttp.ClientConnectorError as exc:
            await self._session.close()
            raise exc.os_error from None
        self._sock = _Socket(ws)
        self.media.emit = self._sock.emit
        self._sock.emit(self.encoder.connected())
        self._sock.emit(self.encoder.start())
        self.connected_at = loop.time()
        self._reader = loop.create_task(self._read())
        return self

    async def _read(self) -> None:

        ws = self._sock.ws  # type: ignore[union-attr]
        async for msg in ws:
            now = asyncio.get_running_loop().time()
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            try:
                ev = self.decoder.receive(msg.data)
            except RemoteProtocolError as exc:
                self.error = exc
                await _close_for(ws, exc)
                break
            if isinstance(ev, P.MediaReceived):
                self.media.on_media(ev, now)  # type: ignore[union-attr]
            elif isinstance(ev, P.MarkReceived):
                self.marks_echoed.append(ev.name)
                self.media.mark_after_last(ev.name)  # type: ignore[union-attr]
            elif isinstance(ev, P.Cleared):
                self.media.clear(now)  # type: ignore[union-attr]

    def send(self, samples: np.ndarray, sample_rate: int, *, start_at: float | None = None) -> float:
        """Start streaming the caller's ``samples``; returns the capture start time ``t0``."""
        if self.media is None:
            raise ParameterError("connect() before send()")
        return self.media.send(samples, sample_rate, start_at=start_at)

    def played_through(self, t: float) -> asyncio.Future:
        """A future resolved once the agent's audio due at loop time ``t`` has been played."""
        if self.media is None:
            raise ParameterError("connect() before played_through()")
        return self.media.played_through(t)

    async def wait_closed(self) -> None:
        """Return once the agent's side of the WebSocket has closed (or :meth:`stop` ran)."""
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def stop(self) -> None:
        """Send ``stop``, close the WebSocket and the HTTP session (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.media is not None:
            self.media.close()
        if self._sock is not None:
            if not self._sock.ws.closed:
                self._sock.emit(self.encoder.stop())
            await self._sock.flush_and_stop()
            await self._sock.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    close = stop


# ---------------------------------------------------------------------------------------
# One call
# ---------------------------------------------------------------------------------------


def _spikes(sender: _Media, receiver: _Media) -> dict[str, float | None]:
    """Per-frame one-way transit (arrival minus send time, loop clock) statistics in ms."""
    d = [receiver.arrivals[c] - t for c, t in sender.send_times.items() if c in receiver.arrivals]
    if not d:
        return {"transit_delay_ms_median": None, "transit_delay_ms_p99": None, "transit_delay_ms_max": None}
    a = np.asarray(d) * 1000.0
    return {
        "transit_delay_ms_median": float(np.median(a)),
        "transit_delay_ms_p99": float(np.percentile(a, 99)),
        "transit_delay_ms_max": float(a.max()),
    }


@realtime
async def ws_call(
    *,
    seconds: float = 4.0,
    speech: str = "default",
    input: str | None = None,
    jitter_buffer: str = "fixed:60",
    net: Any = None,
    seed: int = 0,
    quality: bool = True,
    tcp_options: dict | None = None,
) -> dict[str, Any]:
    """One media-streams call on loopback, platform and agent in this process; its metrics.

    Parameters
    ----------
    seconds : float
        Speech sent in each direction, 1..60 s.
    speech, input : str
        Named speech (``"default"``: the natural corpus when available) or a WAV file.
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"`` at both ends.
    net : ChannelConfig, optional
        Path impairment, applied by :class:`voicelab.net.tcprelay.TcpRelay` in each
        direction: loss there becomes retransmission delay, never lost audio.
    seed : int
    quality : bool
        Compute PESQ.
    tcp_options : dict, optional
        Passed to the relay (``recovery="linux"`` (default) or ``"rto"``,
        ``rto_min_ms``, ...: see :class:`voicelab.net.tcprelay.TcpImpairment`).

    Returns
    -------
    dict
        ``transport`` ("ws"), ``codec`` ("pcmu"), ``setup_ms`` (dial -> the agent has the
        ``start`` message: TCP + WebSocket handshake + ``connected``/``start``),
        ``post_dial_delay_ms`` (None: no ringing), and per direction
        (``caller_to_agent.*``, ``agent_to_caller.*``) the keys of
        :func:`voicelab.calls.sip_call`: ``mouth_to_ear_ms``, ``pesq_nb``, ``pesq_wb``,
        ``delay_confidence``, ``rtt_ms`` (None: not measured on this transport),
        ``jitter_ms``, ``loss_rate``, ``late_loss_rate``, ``playout_delay_ms``,
        ``bitrate_kbps_wire``, ``pacing_error_p99_ms``, ``r_factor``, ``mos_cqe``; plus
        ``transit_delay_ms_median`` / ``_p99`` / ``_max`` (per-frame one-way transit:
        the latency spikes of a lossy TCP path), ``late_frames``, and through the relay
        ``retransmissions``, ``fast_retransmits``, ``tail_loss_probes``, ``timeouts`` and
        ``head_of_line_blocked``, ``tcp_model_delay_ms_max`` (the relay model's largest
        segment delay, free of this machine's scheduling); ``tcp_recovery`` (None without ``net``) says which
        loss-recovery model the relay ran. ``agent_to_caller.mark_echo_ms``
        is how long the agent waited for the platform to confirm its last audio played.
    """
    from ..metrics.direction import direction_metrics as _direction_metrics
    from ..net import ChannelConfig
    from ..net.iface import LoopbackInterface
    from ..net.tcprelay import TcpRelay
    from ..audio import load_speech

    if not 1.0 <= float(seconds) <= 60.0:
        raise ParameterError(f"seconds {seconds:g} is outside 1..60")
    if net is not None and not isinstance(net, ChannelConfig):
        raise ParameterError(f"net must be a voicelab.net.ChannelConfig or None, got {type(net).__name__}")
    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    sp = load_speech(speech=speech, input=input, max_speech_s=float(seconds), codec="pcmu")
    x = np.asarray(sp.samples, dtype=np.float64)
    if sp.sample_rate != 16000:
        x = audio.resample(x, sp.sample_rate, 16000)
    dur = len(x) / 16000
    server = MediaStreamServer(iface, mode="play", samples=x, sample_rate=16000, jitter_buffer=jitter_buffer)
    relay: TcpRelay | None = None
    client: MediaStreamClient | None = None
    try:
        await server.start()
        target = server.address
        if net is not None:
            relay = await TcpRelay(iface, target, uplink=net, downlink=net, seed=seed, **(tcp_options or {})).start()
            target = relay.front_address
        client = MediaStreamClient(iface, target, jitter_buffer=jitter_buffer, seed=seed)
        t_dial = loop.time()
        await client.connect()
        session = await server.next_started(timeout=15.0)
        setup_ms = (session.started_at - t_dial) * 1000.0  # type: ignore[operator]
        t0 = client.send(x, 16000)
        agent_t0 = session.media.sent_audio()[1]
        margin = 0.5 if net is None else 2.0
        await asyncio.wait_for(
            asyncio.gather(client.played_through(agent_t0 + dur + margin), session.media.played_through(t0 + dur + margin)),
            dur + 30.0,
        )
        await client.stop()
        await asyncio.wait_for(asyncio.shield(session.ended), 10.0)
    finally:
        if client is not None:
            await client.stop()
        await server.close()
        if relay is not None:
            await relay.close()

    out: dict[str, Any] = {
        "transport": "ws",
        "net": "loopback",
        "codec": "pcmu",
        "payload_type": None,
        "setup_ms": setup_ms,
        "post_dial_delay_ms": None,
        "speech": sp.name,
        "speech_source": sp.source,
        "synthetic_speech": bool(sp.synthetic),
        "seconds": dur,
        "tcp_recovery": None if relay is None else relay.tcp_options.get("recovery", "linux"),
    }
    cm = client.media
    for name, s, r, rel in (("caller_to_agent", cm, session.media, "up"), ("agent_to_caller", session.media, cm, "down")):
        d = _direction_metrics(s, r, x) if quality else {}  # type: ignore[arg-type]
        jb = r.jb.stats  # type: ignore[union-attr]
        sent_s = max(s.stats.frames_sent * P.FRAME_MS / 1000.0, 1e-9)  # type: ignore[union-attr]
        d.update({
            "rtt_ms": None,
            "jitter_ms": r.rstats.jitter_ms,  # type: ignore[union-attr]
            "loss_rate": max(0.0, r.rstats.loss_rate),  # type: ignore[union-attr]
            "late_loss_rate": float(jb.late_loss_rate),
            "late_frames": int(jb.late),
            "playout_delay_ms": float(jb.playout_delay_ms) if not math.isnan(jb.playout_delay_ms) else None,
            "bitrate_kbps_wire": s.wire_bytes_sent * 8 / sent_s / 1000.0,  # type: ignore[union-attr]
            "pacing_error_p99_ms": s.stats.pacing_error_ms(99),  # type: ignore[union-attr]
        })
        d.update(_spikes(s, r))  # type: ignore[arg-type]
        if relay is not None:
            st = getattr(relay, rel)
            d["retransmissions"] = st.retransmissions
            d["fast_retransmits"] = st.fast_retransmits
            d["tail_loss_probes"] = st.tail_loss_probes
            d["timeouts"] = st.timeouts
            d["tcp_model_delay_ms_max"] = max(st.transit_s, default=0.0) * 1000.0
            d["head_of_line_blocked"] = st.head_of_line_blocked
        if d.get("mouth_to_ear_ms") is not None:
            try:
                ie, bpl, _ = metrics.ie_bpl("pcmu", bitrate=64000, plc=True, wideband=False)
                em = metrics.r_factor(delay_ms=d["mouth_to_ear_ms"], loss_rate=d["loss_rate"] + d["late_loss_rate"], ie=ie, bpl=bpl, wideband=False)
                d["r_factor"], d["mos_cqe"] = em.r_factor, em.mos_cqe
            except VoicelabError:
                d["r_factor"] = d["mos_cqe"] = None
        out.update({f"{name}.{k}": v for k, v in d.items()})
    echo = session.mark_echo_s.get("end-of-speech")
    out["agent_to_caller.mark_echo_ms"] = None if echo is None else echo * 1000.0
    if sp.synthetic:
        out["warnings"] = [audio.SYNTHETIC_WARNING]
    return out
