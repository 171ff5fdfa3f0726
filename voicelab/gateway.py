"""A SIP <-> WebRTC gateway (B2BUA) on the lab's stacks: browser calls bridged to a SIP target.

Voice agents that take both phone and web calls often put a gateway between the browser
and a SIP world (a PBX, a carrier trunk, a SIP-only agent). This one is a back-to-back
user agent made of two legs the lab already has:

- the **WebRTC leg**: the agent's WebRTC front (:class:`voicelab.webrtc.agent.WebRtcFront`:
  signaling with tokens, aiortc with the lab's codecs, jitter buffer and PLC) answers the
  browser; Opus 48 kHz (or whatever the browser prefers among the gateway's codecs);
- the **SIP leg**: for every WebRTC call the gateway places a SIP call to ``target`` with
  the lab's caller (one UA per leg) and a :class:`voicelab.rtp.live.LiveAudioStream`
  (G.711 or G.722) with its own jitter buffer.

**Transcoding** (the legs negotiated different codecs, e.g. Opus 48 kHz and G.711): audio
crosses per frame on the loop clock: each frame one leg's playout *played* (after its
jitter buffer, decoder and PLC) is resampled (:class:`voicelab.audio.StreamResampler`, a
streaming FIR with 1 ms of delay; soxr's streaming mode holds back over 100 ms at these
ratios) and handed to the other leg's encoder, which sends it when it has finished playing
(:meth:`LiveAudioStream.forward`, :class:`EchoTrack`): the gateway adds its jitter buffer,
one frame of re-packetization and 1 ms to each direction. Both legs share the gateway's
buffer policy (``jitter_buffer``).

**Pass-through** (both legs negotiated the same G.711 or G.722 codec): RTP payloads are
forwarded as they arrive (the WebRTC playout's packet tap -> :meth:`LiveAudioStream.send_payload`;
the SIP stream's packet tap -> a track of ``av.Packet`` that aiortc sends with the lab
encoder's ``pack``): no decoding, no buffer, no re-encoding, so no tandem loss and well
under a millisecond in the gateway (``BridgeLeg.forward_delay_ms``).

Hanging up either side ends the other: a BYE from the browser's signaling (or an ICE
failure) sends a BYE on the SIP leg; a SIP leg that fails to set up refuses the offer (the
browser gets the signaling error ``offer_failed`` with the SIP status).

Measured (``Gateway.legs`` keeps finished legs): what each leg played and sent, on one
clock, so :func:`bridge_delay_ms` gives the gateway's own added delay per direction.

This module is an asyncio adapter (endpoint layer).
"""

from __future__ import annotations

import asyncio
import collections
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import audio
from .errors import ParameterError, VoicelabError

__all__ = ["Gateway", "BridgeLeg", "bridge_delay_ms"]



class _Rechunk:
    """One frame in at one rate, exactly one frame out at another (low-latency streaming FIR)."""

    def __init__(self, rate_in: int, rate_out: int, frame_out: int) -> None:
        self.resampler = audio.StreamResampler(rate_in, rate_out)
        self.frame_out = int(frame_out)
        self.pending = np.zeros(0)

    @property
    def delay_ms(self) -> float:
        return self.resampler.delay_s * 1000.0

    def push(self, frame: np.ndarray) -> np.ndarray:
        y = self.resampler.process(np.asarray(frame, dtype=np.float64).reshape(-1) / 32768.0)
        buf = np.concatenate([self.pending, y]) if self.pending.size else y
        if buf.size < self.frame_out:  # only with ratios that do not divide a frame evenly
            self.pending = buf
            out = np.zeros(self.frame_out)
        else:
            out, self.pending = buf[: self.frame_out], buf[self.frame_out:]
        return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)


def _passthrough_track_class():
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class PassThroughTrack(MediaStreamTrack):
        """An aiortc track of pre-encoded payloads from the SIP leg (``av.Packet``; aiortc calls
        the lab encoder's ``pack``): no decoding, no resampling, no re-encoding, no buffer."""

        kind = "audio"

        def __init__(self, clock_rate: int) -> None:
            super().__init__()
            self.clock_rate = int(clock_rate)
            self._queue: collections.deque = collections.deque()
            self._event = asyncio.Event()
            self._ts = 0
            #: seconds from the packet's arrival on the SIP leg to its hand-over to aiortc
            self.forward_s: list[float] = []
            #: packets dropped because they arrived before the WebRTC sender started
            self.dropped_stale = 0
            self._started = False

        def push(self, payload: bytes, arrival: float) -> None:
            self._queue.append((bytes(payload), arrival))
            self._event.set()

        async def recv(self) -> Any:
            import fractions

            import av

            while not self._queue:
                if self.readyState != "live":
                    raise MediaStreamError
                self._event.clear()
                await self._event.wait()
            if not self._started:  # packets that waited for the WebRTC sender to start are stale:
                self._started = True  # forward only the newest, as a media server joining a stream would
                while len(self._queue) > 1:
                    self._queue.popleft()
                    self.dropped_stale += 1
            payload, arrival = self._queue.popleft()
            packet = av.Packet(payload)
            packet.pts = self._ts
            packet.time_base = fractions.Fraction(1, self.clock_rate)
            self._ts += len(payload)  # G.711/G.722: one RTP clock tick (8 kHz) per byte
            self.forward_s.append(asyncio.get_running_loop().time() - arrival)
            return packet

        def stop(self) -> None:  # noqa: D102
            super().stop()
            self._event.set()

        def sent_audio(self) -> tuple[np.ndarray, float]:
            """Nothing decoded here: payloads pass through (the SIP leg's recording has the audio)."""
            return np.zeros(0), 0.0

    return PassThroughTrack


#: codecs the gateway forwards without decoding when both legs negotiated them
PASSTHROUGH_CODECS = ("pcmu", "pcma", "g722")


@dataclass
class BridgeLeg:
    """One bridged call: the WebRTC session and its SIP leg."""

    session_id: str
    sip_call: Any = None
    stream: Any = None  # LiveAudioStream of the SIP leg
    ua: Any = None
    sip: Any = None
    track: Any = None  # EchoTrack feeding the WebRTC sender
    sink: Any = None  # the WebRTC playout's sink (forwards to SIP)
    webrtc_codec: str = ""
    sip_codec: str = ""
    setup_ms: float | None = None
    ended: bool = False
    #: True when both legs share the codec and payloads are forwarded as they are
    passthrough: bool = False
    #: pass-through: seconds from a WebRTC packet's arrival to its departure on the SIP leg
    forward_to_sip_s: list = field(default_factory=list)
    #: who hung up first: "webrtc" or "sip"
    hung_up_by: str | None = None
    errors: list[str] = field(default_factory=list)
    sip_ended: Any = None  # future: the SIP dialog is over (CallEnded seen)
    watcher: Any = None

    def summary(self) -> dict[str, Any]:
        return {"session": self.session_id, "webrtc_codec": self.webrtc_codec, "sip_codec": self.sip_codec,
                "sip_setup_ms": self.setup_ms, "hung_up_by": self.hung_up_by, "passthrough": self.passthrough,
                "errors": list(self.errors)}

    def forward_delay_ms(self) -> dict[str, float | None]:
        """Pass-through only: median and max time a packet spent in the gateway, per direction (ms)."""
        out: dict[str, float | None] = {}
        to_web = getattr(self.track, "forward_s", None) or []
        for name, xs in (("browser_to_sip", self.forward_to_sip_s), ("sip_to_browser", to_web)):
            out[f"{name}_median"] = float(np.median(xs) * 1000.0) if xs else None
            out[f"{name}_max"] = float(np.max(xs) * 1000.0) if xs else None
        return out


def _bridge_sink_class():
    from .webrtc.media import AudioSink

    class _BridgeSink(AudioSink):
        """The WebRTC playout's recording, which also forwards each played frame to the SIP leg."""

        def __init__(self, sample_rate: int, forward: Any, on_packet: Any = None) -> None:
            super().__init__(sample_rate)
            self._forward = forward
            if on_packet is not None:  # pass-through: the playout hands over every payload on arrival
                self.on_packet = on_packet

        def write(self, frame: np.ndarray, when: float, *, arrival: float | None = None) -> float:  # noqa: D102
            start = super().write(frame, when, arrival=arrival)
            if self._forward is not None:
                self._forward(when, frame)
            return start

    return _BridgeSink


class Gateway:
    """A SIP <-> WebRTC gateway: WebRTC callers are bridged to a SIP URI.

    Parameters
    ----------
    target : str
        SIP URI every WebRTC call is bridged to (UDP on loopback), e.g. an agent's
        ``agent.uri`` or baresip's.
    sip_codec : str
        The codec offered on the SIP leg (``pcmu``, ``pcma``, ``g722``).
    webrtc_codecs : sequence of str
        Codecs the WebRTC leg accepts, in preference order (the browser's offer order
        decides among them).
    jitter_buffer : str
        The gateway's buffer on both legs (``fixed:MS`` or ``adaptive``).
    max_calls : int
        Concurrent bridged calls.
    seed : int or None
        Seeds the SIP legs' identifiers (None: fresh).
    passthrough : bool
        When both legs negotiate the same codec (G.711 or G.722), forward RTP payloads as
        they are, on arrival (no decoding, buffer or re-encoding: no tandem loss, well
        under 1 ms added); False always transcodes through the gateway's buffers.

    Attributes
    ----------
    front : voicelab.webrtc.agent.WebRtcFront
        The WebRTC side (``front.url``: the signaling server and browser page).
    legs : OrderedDict
        Bridged calls in progress and finished ones (the last ``keep_recordings``).
    """

    mode = "bridge"
    mode_arg = None

    def __init__(self, *, target: str, sip_codec: str = "pcmu", webrtc_codecs: tuple[str, ...] = ("opus", "pcmu"),
                 jitter_buffer: str = "fixed:40", max_calls: int = 16, keep_recordings: int = 16,
                 seed: int | None = None, setup_timeout: float = 10.0, passthrough: bool = True) -> None:
        from . import codecs

        if not isinstance(target, str) or not target.startswith("sip:"):
            raise ParameterError(f"target must be a SIP URI such as 'sip:agent@127.0.0.1:5060', got {target!r}")
        sip_codec = codecs.canonical_name(sip_codec)[0]
        if sip_codec not in ("pcmu", "pcma", "g722", "opus"):
            raise ParameterError(f"the SIP leg offers pcmu, pcma, g722 or opus, got {sip_codec!r}")
        from .webrtc.peer import WEBRTC_CODECS

        bad = [c for c in webrtc_codecs if c not in WEBRTC_CODECS]
        if bad or not webrtc_codecs:
            raise ParameterError(f"webrtc_codecs must be some of {sorted(WEBRTC_CODECS)}, got {list(webrtc_codecs)!r}")
        self.target = target
        self.sip_codec = sip_codec
        self.codecs = list(webrtc_codecs)
        self.jitter_buffer = jitter_buffer
        self.max_calls = int(max_calls)
        self.keep_recordings = int(keep_recordings)
        self.seed = seed
        self.setup_timeout = float(setup_timeout)
        self.passthrough = bool(passthrough)
        self.iface: Any = None
        self.ua: Any = None  # the front checks that the "agent" is started
        self.streams: dict[str, Any] = {}  # SIP streams of calls in progress (the front counts them)
        self.recordings: OrderedDict[str, Any] = OrderedDict()
        self.recorded_files: list[str] = []
        self.legs: OrderedDict[str, BridgeLeg] = OrderedDict()
        self.front: Any = None
        self.errors: list[str] = []
        self._n = 0

    async def start(self, *, host: str = "127.0.0.1", port: int = 0, **front_options: Any) -> "Gateway":
        """Start the WebRTC front (signaling server + page) on ``host:port``."""
        from .net.iface import LoopbackInterface
        from .webrtc.agent import serve_webrtc

        loop = asyncio.get_running_loop()
        self.iface = LoopbackInterface(loop)
        self.ua = object()
        self.front = await serve_webrtc(self, host=host, port=port, **front_options)
        return self

    async def close(self) -> None:
        if self.front is not None:
            await self.front.close()
            self.front = None
        for leg in list(self.legs.values()):
            await self.close_leg(leg.session_id)

    async def __aenter__(self) -> "Gateway":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- the hooks the WebRTC front calls ----------------------------------------------
    async def open_leg(self, session_id: str, facts: Any) -> tuple[Any, Any]:
        """Place the SIP call for a WebRTC offer; returns (track, sink) for the WebRTC peer.

        Raises
        ------
        VoicelabError
            The SIP leg could not be set up (the message names the SIP status).
        """
        from .calls import open_caller
        from .rtp.live import LiveAudioStream
        from .sip.ua import CallEstablished, CallFailed
        from .webrtc.agent import EchoTrack

        loop = asyncio.get_running_loop()
        leg = BridgeLeg(session_id, webrtc_codec=str(facts.name))
        self.legs[session_id] = leg
        seed = None if self.seed is None else int(self.seed) + self._n
        self._n += 1
        leg.ua, leg.sip = await open_caller(self.iface, codec=self.sip_codec, seed=seed, rtcp_mux=True)
        try:
            media_port = self.iface.free_port("udp")
            t = loop.time()
            leg.sip_call = leg.ua.invite(self.target, now=t, media_port=media_port)
            leg.sip.flush()
            try:
                ev = await leg.sip.wait_for(CallEstablished, CallFailed, timeout=self.setup_timeout)
            except asyncio.TimeoutError:
                raise VoicelabError(f"the SIP leg to {self.target} got no answer within {self.setup_timeout:g} s") from None
            if isinstance(ev, CallFailed):
                raise VoicelabError(f"the SIP leg to {self.target} failed: {ev.status} {getattr(ev, 'reason', '')}".strip())
            leg.setup_ms = (loop.time() - t) * 1000.0
            m = leg.sip_call.media
            leg.sip_codec = m.codec
            leg.stream = LiveAudioStream.for_media(self.iface, m, local_addr=("127.0.0.1", media_port),
                                                   jitter_buffer=self.jitter_buffer, latching=True,
                                                   cname="gateway@voicelab")
            await leg.stream.open()
            leg.stream.send_live("bridge")
            sip_rate, sip_frame = int(leg.stream.tx.sample_rate), int(leg.stream.tx.frame_samples)
            w_rate, w_frame = int(facts.sample_rate), int(facts.frame_samples)
            self.streams[session_id] = leg.stream
            leg.sip_ended = loop.create_future()
            leg.watcher = asyncio.ensure_future(self._watch(leg))
            if self.passthrough and leg.webrtc_codec == leg.sip_codec and leg.sip_codec in PASSTHROUGH_CODECS:
                leg.passthrough = True
                leg.track = _passthrough_track_class()(int(leg.stream.tx.clock_rate))
                stream_, track_ = leg.stream, leg.track

                def web_packet(payload: bytes, arrival: float, marker: bool) -> None:  # browser -> SIP, as is
                    if not leg.ended:
                        stream_.send_payload(payload, marker=marker)
                        leg.forward_to_sip_s.append(loop.time() - arrival)

                def sip_packet(packet: Any, arrival: float) -> None:  # SIP -> browser, as is
                    if not leg.ended:
                        track_.push(packet.payload, arrival)

                leg.stream.on_packet = sip_packet
                leg.sink = _bridge_sink_class()(w_rate, None, web_packet)
                return leg.track, leg.sink
            leg.track = EchoTrack(w_rate, w_frame)
            to_sip = _Rechunk(w_rate, sip_rate, sip_frame)
            to_web = _Rechunk(sip_rate, w_rate, w_frame)
            stream, track = leg.stream, leg.track

            def web_played(when: float, frame: np.ndarray) -> None:  # browser -> SIP
                if not leg.ended:
                    stream.forward(when, to_sip.push(frame))

            def sip_played(when: float, frame: np.ndarray) -> None:  # SIP -> browser
                if not leg.ended:
                    track.feed(to_web.push(frame), when)

            leg.stream.on_played = sip_played
            leg.sink = _bridge_sink_class()(w_rate, web_played)
            return leg.track, leg.sink
        except BaseException:
            await self.close_leg(session_id)
            raise

    async def _watch(self, leg: BridgeLeg) -> None:
        """Wait for the SIP dialog to end; if the SIP side hung up first, hang up the browser."""
        from .sip.ua import CallEnded

        try:
            await leg.sip.wait_for(CallEnded, timeout=24 * 3600.0)
        except (asyncio.TimeoutError, VoicelabError):
            return
        if not leg.sip_ended.done():
            leg.sip_ended.set_result(True)
        if leg.ended or self.front is None:
            return
        leg.hung_up_by = "sip"
        web = self.front.calls.get(leg.session_id)
        if web is not None:
            web.end_reason = "sip_bye"
            await web.session.bye()  # the front's hang-up (on_bye) then closes this leg

    async def close_leg(self, session_id: str) -> None:
        """Hang up the SIP leg of a WebRTC call (BYE when it was answered and is still up)."""
        leg = self.legs.get(session_id)
        if leg is None or leg.ended:
            return
        leg.ended = True
        leg.hung_up_by = leg.hung_up_by or "webrtc"
        self.streams.pop(session_id, None)
        loop = asyncio.get_running_loop()
        try:
            if leg.sip_ended is not None and not leg.sip_ended.done():
                leg.ua.bye(leg.sip_call, now=loop.time())
                leg.sip.flush()
                try:
                    await asyncio.wait_for(asyncio.shield(leg.sip_ended), 5.0)
                except asyncio.TimeoutError:
                    leg.errors.append("no answer to the BYE on the SIP leg within 5 s")
        except VoicelabError as exc:
            leg.errors.append(f"SIP leg hang-up: {exc}"[:300])
        finally:
            if leg.watcher is not None and not leg.watcher.done() and leg.watcher is not asyncio.current_task():
                leg.watcher.cancel()
            if leg.stream is not None:
                await leg.stream.close()
            if leg.sip is not None:
                await leg.sip.close()
        while len(self.legs) > max(1, self.keep_recordings):
            oldest = next(iter(self.legs))
            if not self.legs[oldest].ended:
                break
            self.legs.popitem(last=False)


def bridge_delay_ms(leg: BridgeLeg, web_call: Any) -> dict[str, float | None]:
    """The gateway's own added delay per direction, from what each leg played and sent.

    ``browser_to_sip``: a sample's playout on the WebRTC leg -> its capture time on the SIP
    leg's sender; ``sip_to_browser``: the reverse. Both include the one frame a bridge waits
    for a frame to finish playing and the resampler's latency (not the legs' own buffers).

    Parameters
    ----------
    leg : BridgeLeg
    web_call : voicelab.webrtc.agent.WebRtcCall
        The front's record of the same call (``front.finished[session_id]``).
    """
    out: dict[str, float | None] = {"browser_to_sip": None, "sip_to_browser": None}
    try:
        w_recv, w_t = web_call.received_audio()
        s_sent, s_t = leg.stream.sent_audio()
        out["browser_to_sip"] = _lag_ms(w_recv, w_t, web_call.sample_rate, s_sent, s_t, leg.stream.tx.sample_rate)
        s_recv, s_rt = leg.stream.received_audio()
        w_sent, w_st = web_call.sent_audio()
        out["sip_to_browser"] = _lag_ms(s_recv, s_rt, leg.stream.rx.sample_rate, w_sent, w_st, web_call.sample_rate)
    except (VoicelabError, ValueError):
        pass
    return out


def _lag_ms(a: np.ndarray, t_a: float, rate_a: int, b: np.ndarray, t_b: float, rate_b: int) -> float | None:
    """Delay of stream ``b`` behind stream ``a`` (both stamped on the loop clock), in ms."""
    if a.size == 0 or b.size == 0:
        return None
    a16 = audio.resample(np.asarray(a, dtype=np.float64), int(rate_a), 16000)
    b16 = audio.resample(np.asarray(b, dtype=np.float64), int(rate_b), 16000)
    shift = int(round((t_b - t_a) * 16000))  # put b on a's time axis (sample 0 of a at t_a)
    b16 = np.concatenate([np.zeros(shift), b16]) if shift >= 0 else b16[-shift:]
    est = audio.estimate_delay(a16, b16, 16000, max_delay_ms=500.0)
    return float(est.delay_ms)
