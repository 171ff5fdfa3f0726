"""Live calls on real sockets (``loopback`` mode): the lab's SIP caller calls its agent.

This is the thin asyncio layer that joins the sans-IO pieces into a phone call:

* :class:`AsyncUserAgent` drives a :class:`voicelab.sip.ua.UserAgent` from a SIP transport
  (datagrams in, datagrams out, one re-armed loop timer, events into a queue);
* :func:`sip_call` starts an agent and a caller in one process, on 127.0.0.1, negotiates
  the codec by SDP offer/answer, runs a :class:`voicelab.rtp.live.LiveAudioStream` in each
  direction (optionally through the userspace impairment relay), hangs up, and measures
  the call the way the architecture card names it: ``setup_ms``,
  ``post_dial_delay_ms``, ``mouth_to_ear_ms`` per direction (both ends share the loop
  clock, so each direction is measured, not half a round trip), PESQ per direction, RTCP
  ``rtt_ms``/``jitter_ms``/``loss_rate``, ``late_loss_rate`` and the E-model.

The agent here plays a speech file back to the caller (``play`` mode), so both
directions carry a known reference. Every socket is opened through a network interface
object (:class:`voicelab.net.iface.LoopbackInterface`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from . import audio, metrics
from .errors import ParameterError, VoicelabError
from .net import ChannelConfig
from .net.iface import LoopbackInterface, free_port
from .net.relay import UdpRelay
from .rtp.live import LiveAudioStream
from .sip.transport import UdpTransport
from .sip.ua import CallEnded, CallEstablished, CallFailed, IncomingCall, UserAgent

__all__ = ["AsyncUserAgent", "Agent", "sip_call", "dial"]


class AsyncUserAgent:
    """Drive a sans-IO :class:`UserAgent` from an asyncio SIP transport.

    Parameters
    ----------
    ua : UserAgent
    transport : voicelab.sip.transport.SipTransport
        Already listening; created with ``parse=False`` (the UA parses).
    """

    def __init__(self, ua: UserAgent, transport: Any, *, capture: list | None = None) -> None:
        self.ua = ua
        self.transport = transport
        self.capture = capture  # (time, src, dst, bytes) of every datagram, for pcap
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None
        self._sends: set[asyncio.Task] = set()
        transport.on_message = self._on_message

    def _on_message(self, data: Any, addr: Any, transport: Any) -> None:
        if self.capture is not None:
            self.capture.append((self.loop.time(), tuple(addr[:2]), self.ua.local_addr, bytes(data)))
        self.ua.receive(bytes(data), tuple(addr[:2]), self.loop.time())
        self.flush()

    def flush(self) -> None:
        """Send what the UA queued, deliver its events, re-arm its timer."""
        for data, addr in self.ua.datagrams_to_send(self.loop.time()):
            if self.capture is not None:
                self.capture.append((self.loop.time(), self.ua.local_addr, tuple(addr[:2]), data))
            task = self.loop.create_task(self.transport.send(data, tuple(addr[:2])))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        while (ev := self.ua.next_event()) is not None:
            self.events.put_nowait(ev)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        nt = self.ua.next_timer()
        if nt is not None:
            self._timer = self.loop.call_at(nt, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.ua.handle_timer(self.loop.time())
        self.flush()

    async def wait_for(self, *types: type, timeout: float = 10.0) -> Any:
        """The next event of one of ``types`` (others are skipped)."""
        async def _get():
            while True:
                ev = await self.events.get()
                if isinstance(ev, types):
                    return ev

        return await asyncio.wait_for(_get(), timeout)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        await self.transport.close()


def _direction_metrics(sender: LiveAudioStream, receiver: LiveAudioStream, reference16: np.ndarray) -> dict[str, Any]:
    """Mouth-to-ear delay and quality of one direction, both recordings on the loop clock."""
    rate = sender.tx.sample_rate
    sent, t_sent = sender.sent_audio()
    recv, t_recv = receiver.received_audio()
    out: dict[str, Any] = {"mouth_to_ear_ms": None, "pesq_nb": None, "pesq_wb": None, "delay_confidence": None}
    if len(recv) == 0:
        return out
    off = int(round((t_recv - t_sent) * rate))
    deg = np.concatenate([np.zeros(max(off, 0)), recv]) if off >= 0 else recv[-off:]
    est = audio.estimate_delay(sent, deg, rate, max_delay_ms=2000.0, causal=True)
    d = audio.compensate(deg, est.delay_samples, len(sent))
    out["mouth_to_ear_ms"] = est.delay_ms
    out["delay_confidence"] = est.confidence
    ref16 = reference16[: int(len(sent) * 16000 / rate)]
    d16 = audio.resample(d, rate, 16000)[: len(ref16)]
    try:
        out["pesq_nb"] = metrics.pesq(audio.resample(ref16, 16000, 8000), audio.resample(d16, 16000, 8000), 8000, mode="nb")
        out["pesq_wb"] = metrics.pesq(ref16, d16, 16000, mode="wb")  # as in sim: NB codecs score low here
    except VoicelabError:
        pass
    return out


async def sip_call(
    *,
    codec: str = "pcmu",
    seconds: float = 4.0,
    speech: str = "default",
    input: str | None = None,
    jitter_buffer: str = "fixed:60",
    net: ChannelConfig | None = None,
    seed: int = 0,
    quality: bool = True,
    pcap: str | None = None,
) -> dict[str, Any]:
    """One SIP call on loopback, caller and agent in this process; returns its metrics.

    Parameters
    ----------
    codec : str
        What both sides offer and accept (one codec: the experiment's variable).
    seconds : float
        Speech sent in each direction, 1..60 s.
    speech, input : str
        Named speech as in the simulator (``"default"``: the natural corpus when
        available) or a WAV file.
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"`` on both sides.
    net : ChannelConfig, optional
        Impairment of the media path, applied by a userspace relay in each direction.
    seed : int
    quality : bool
        Compute PESQ.
    pcap : path, optional
        Write the call as the caller's machine would capture it (SIP, RTP, RTCP).

    Returns
    -------
    dict
        ``setup_ms``, ``post_dial_delay_ms``, ``codec``, and per direction
        (``caller_to_agent.*``, ``agent_to_caller.*``): ``mouth_to_ear_ms``, ``pesq_nb``,
        ``pesq_wb``, ``rtt_ms``, ``jitter_ms``, ``loss_rate``, ``late_loss_rate``,
        ``bitrate_kbps_wire``, ``pacing_error_p99_ms``.
    """
    if not 1.0 <= float(seconds) <= 60.0:
        raise ParameterError(f"seconds {seconds:g} is outside 1..60")
    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    from .sim import Scenario, load_speech

    sp = load_speech(Scenario(speech=speech, input=input, max_speech_s=float(seconds), codec=codec))
    x = np.asarray(sp.samples, dtype=np.float64)
    if sp.sample_rate != 16000:
        x = audio.resample(x, sp.sample_rate, 16000)
    synthetic = bool(sp.synthetic)
    seeds = np.random.SeedSequence(seed).spawn(5)

    ports = {who: free_port(kind="udp") for who in ("caller", "agent")}
    sip = {}
    uas = {}
    capture: list | None = [] if pcap else None
    for i, who in enumerate(("caller", "agent")):
        t = UdpTransport(iface, parse=False)
        addr = await t.listen("127.0.0.1", 0)
        ua = UserAgent(local_uri=f"sip:{who}@127.0.0.1", local_addr=tuple(addr[:2]), rng=np.random.default_rng(seeds[i]),
                       codecs=[codec], media_address="127.0.0.1", media_port=ports[who])
        uas[who] = ua
        sip[who] = AsyncUserAgent(ua, t, capture=capture if who == "caller" else None)
    streams: dict[str, LiveAudioStream] = {}
    relays: list[UdpRelay] = []
    try:
        call = uas["caller"].invite(f"sip:agent@127.0.0.1:{uas['agent'].local_addr[1]}", now=loop.time())
        sip["caller"].flush()
        incoming = await sip["agent"].wait_for(IncomingCall)
        uas["agent"].answer(incoming.call, 200, now=loop.time())
        sip["agent"].flush()
        ev = await sip["caller"].wait_for(CallEstablished, CallFailed)
        if isinstance(ev, CallFailed):
            raise ParameterError(f"the call failed: {ev.status} {getattr(ev, 'reason', '')} ({call.media_error or 'no media error'})")
        await sip["agent"].wait_for(CallEstablished)
        for who, c in (("caller", call), ("agent", incoming.call)):
            # both ends are the lab's and tell RTP from RTCP by payload type: mux RTCP
            # (a lone RTP socket per side also passes through the one-port relay)
            streams[who] = await LiveAudioStream.for_media(
                iface, c.media, local_addr=("127.0.0.1", ports[who]), rtcp_mux=True,
                jitter_buffer=jitter_buffer, seed=int(seeds[2 + (who == "agent")].generate_state(1)[0]),
                cname=f"{who}@voicelab", capture=capture if who == "caller" else None,
            ).open()
        if net is not None:
            # the relay stands between the two media addresses, like an SBC that anchors
            # media: each side sends to it from the first packet on
            relay = await UdpRelay(iface, streams["agent"].local_address, uplink=net, downlink=net, seed=seed,
                                   client=streams["caller"].local_address).start()
            relays.append(relay)
            streams["caller"].set_remote(relay.front_address)
            streams["agent"].set_remote(relay.back_address)
        t0 = loop.time() + 0.05
        streams["caller"].send(x, 16000, start_at=t0)
        streams["agent"].send(x, 16000, start_at=t0)
        end = t0 + len(x) / 16000 + 0.5
        await asyncio.wait_for(asyncio.gather(*(s.played_through(end) for s in streams.values())), seconds + 20)
        uas["caller"].bye(call, now=loop.time())
        sip["caller"].flush()
        await sip["caller"].wait_for(CallEnded, timeout=10.0)
    finally:
        for s in streams.values():
            await s.close()
        for r in relays:
            await r.close()
        for a in sip.values():
            await a.close()

    if pcap:
        from .net.pcap import write_pcap

        write_pcap(pcap, capture or [])
    out: dict[str, Any] = {
        "transport": "sip",
        "net": "loopback",
        "codec": call.media.codec,
        "payload_type": call.media.payload_type,
        "setup_ms": call.times.setup_ms,
        "post_dial_delay_ms": call.times.post_dial_delay_ms,
        "speech": sp.name,
        "speech_source": sp.source,
        "synthetic_speech": synthetic,
        "seconds": len(x) / 16000,
    }
    for name, s, r in (("caller_to_agent", streams["caller"], streams["agent"]), ("agent_to_caller", streams["agent"], streams["caller"])):
        d = _direction_metrics(s, r, x) if quality else {}
        rs = r.session.receiver_stats
        rtt = s.session.stats.rtt_s
        jb = r.jb.stats
        dur = max(s.stats.frames_sent * s.tx.frame_ms / 1000.0, 1e-9)
        d.update({
            "rtt_ms": None if rtt is None else rtt * 1000.0,
            "jitter_ms": rs.jitter_ms,
            "loss_rate": max(0.0, rs.loss_rate),
            "late_loss_rate": float(jb.late_loss_rate),
            "playout_delay_ms": float(jb.playout_delay_ms) if not math.isnan(jb.playout_delay_ms) else None,
            "bitrate_kbps_wire": (s.session.stats.octets_sent + 40 * s.session.stats.packets_sent) * 8 / dur / 1000.0,
            "pacing_error_p99_ms": s.stats.pacing_error_ms(99),
        })
        if d.get("mouth_to_ear_ms") is not None:
            try:
                ie, bpl, _ = metrics.ie_bpl(s.tx.name, bitrate=s.tx.bitrate, plc=True, wideband=bool(s.tx.wideband))
                em = metrics.r_factor(delay_ms=d["mouth_to_ear_ms"], loss_rate=d["loss_rate"], ie=ie, bpl=bpl, wideband=bool(s.tx.wideband))
                d["r_factor"], d["mos_cqe"] = em.r_factor, em.mos_cqe
            except VoicelabError:
                d["r_factor"] = d["mos_cqe"] = None
        out.update({f"{name}.{k}": v for k, v in d.items()})
    for r in relays:  # what the userspace relay itself added beyond the configured delay
        for name, d in (("caller_to_agent", r.up), ("agent_to_caller", r.down)):
            if d.stats.transit_s:
                out[f"{name}.relay_transit_ms_median"] = float(np.median(d.stats.transit_s) * 1000.0)
    if synthetic:
        out["warnings"] = [audio.SYNTHETIC_WARNING]
    return out


class Agent:
    """A SIP voice agent that answers every call and plays speech to the caller.

    The minimal form of ``voicelab agent serve``: UDP on loopback, auto-answer with the
    first of ``codecs`` the caller offers, a :class:`LiveAudioStream` per call that plays
    ``speech`` (and records what arrives), hang-up handling. Real softphones and SIPp can
    call it.

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0: any free port; read :attr:`address`).
    codecs : list of str
    speech : str
        Named speech to play (see :func:`voicelab.sim.load_speech`).
    jitter_buffer : str
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, codecs: list[str] | None = None,
                 speech: str = "default", jitter_buffer: str = "fixed:60", seed: int = 0) -> None:
        self.host, self.port = host, port
        self.codecs = list(codecs or ["pcmu", "pcma", "g722", "opus"])
        self.speech, self.jitter_buffer, self.seed = speech, jitter_buffer, seed
        self.calls_answered = 0
        self.calls_ended = 0
        self._ended_waiters: list[tuple[int, asyncio.Future]] = []
        self.errors: list[str] = []
        self.streams: dict[str, LiveAudioStream] = {}
        #: per finished call: (sent float audio, received float audio, sample_rate)
        self.recordings: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        self._task: asyncio.Task | None = None
        self.sip: AsyncUserAgent | None = None

    async def start(self) -> "Agent":
        """Listen and start answering; returns self."""
        from .sim import Scenario, load_speech

        loop = asyncio.get_running_loop()
        self.iface = LoopbackInterface(loop)
        sp = load_speech(Scenario(speech=self.speech, max_speech_s=30.0))
        self._x = audio.resample(np.asarray(sp.samples), sp.sample_rate, 16000)
        t = UdpTransport(self.iface, parse=False)
        addr = await t.listen(self.host, self.port)
        self.address = tuple(addr[:2])
        self._media_port = free_port(kind="udp")
        ua = UserAgent(local_uri=f"sip:agent@{self.address[0]}", local_addr=self.address,
                       rng=np.random.default_rng(self.seed), codecs=self.codecs,
                       media_address=self.address[0], media_port=self._media_port)
        self.ua = ua
        self.sip = AsyncUserAgent(ua, t)
        self._task = loop.create_task(self._serve())
        return self

    async def _serve(self) -> None:
        while True:
            ev = await self.sip.events.get()  # type: ignore[union-attr]
            try:
                await self._handle(ev)
            except VoicelabError as exc:  # one bad call must not stop the agent
                self.errors.append(f"{type(ev).__name__}: {exc}")

    async def _handle(self, ev: Any) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(ev, IncomingCall):
            if self.streams:  # one media port: one call at a time in this minimal agent
                self.ua.reject(ev.call, 486, now=loop.time())
            else:
                self.ua.answer(ev.call, 200, now=loop.time())
                self.calls_answered += 1
            self.sip.flush()  # type: ignore[union-attr]
        elif isinstance(ev, CallEstablished) and ev.call.media is not None:
            s = await LiveAudioStream.for_media(self.iface, ev.call.media, local_addr=(self.address[0], self._media_port),
                                                jitter_buffer=self.jitter_buffer, latching=True,
                                                cname="agent@voicelab").open()
            s.send(self._x, 16000)
            self.streams[ev.call.id] = s
        elif isinstance(ev, (CallEnded, CallFailed)):
            s = self.streams.pop(ev.call.id, None)
            if s is not None:
                await s.close()
                self.recordings[ev.call.call_id] = (s.sent_audio()[0], s.received_audio()[0], s.tx.sample_rate)
            self.calls_ended += 1
            for n, fut in [w for w in self._ended_waiters if w[0] <= self.calls_ended]:
                if not fut.done():
                    fut.set_result(self.calls_ended)
            self._ended_waiters = [w for w in self._ended_waiters if w[0] > self.calls_ended]

    def ended(self, n: int) -> asyncio.Future:
        """A future resolved once ``n`` calls have ended at this agent."""
        fut = asyncio.get_running_loop().create_future()
        if self.calls_ended >= n:
            fut.set_result(self.calls_ended)
        else:
            self._ended_waiters.append((n, fut))
        return fut

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
        if self.sip is not None:
            await self.sip.close()

    async def __aenter__(self) -> "Agent":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def dial(
    target: str,
    *,
    codec: str = "pcmu",
    seconds: float = 4.0,
    speech: str = "default",
    input: str | None = None,
    jitter_buffer: str = "fixed:60",
    seed: int = 0,
    ready_timeout: float = 10.0,
) -> dict[str, Any]:
    """Call another SIP peer on loopback (a softphone, baresip, SIPp), send speech, hang up.

    The peer is first probed with OPTIONS until it answers (at most ``ready_timeout``
    seconds), so a peer that is still starting is waited for, not raced.

    Returns
    -------
    dict
        ``setup_ms``, ``post_dial_delay_ms``, ``codec``, ``payload_type``, receive
        statistics, and the recordings ``sent`` / ``received`` (float audio at
        ``sample_rate``) for scoring against the peer's own recordings.
    """
    from .sim import Scenario, load_speech
    from .sip.ua import OptionsAnswered

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    sp = load_speech(Scenario(speech=speech, input=input, max_speech_s=float(seconds), codec=codec))
    x = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 16000)
    t = UdpTransport(iface, parse=False)
    addr = await t.listen("127.0.0.1", 0)
    media_port = free_port(kind="udp")
    ua = UserAgent(local_uri="sip:caller@127.0.0.1", local_addr=tuple(addr[:2]), rng=np.random.default_rng(seed),
                   codecs=[codec], media_address="127.0.0.1", media_port=media_port)
    sip = AsyncUserAgent(ua, t)
    stream: LiveAudioStream | None = None
    try:
        deadline = loop.time() + ready_timeout
        while True:  # readiness probe: OPTIONS until the peer answers
            ua.options(target, now=loop.time())
            sip.flush()
            try:
                await sip.wait_for(OptionsAnswered, timeout=0.5)
                break
            except asyncio.TimeoutError:
                if loop.time() > deadline:
                    raise ParameterError(f"{target} did not answer OPTIONS within {ready_timeout:g} s") from None
        call = ua.invite(target, now=loop.time())
        sip.flush()
        ev = await sip.wait_for(CallEstablished, CallFailed, timeout=15.0)
        if isinstance(ev, CallFailed):
            raise ParameterError(f"the call to {target} failed: {ev.status} {ev.reason}")
        m = call.media
        stream = await LiveAudioStream.for_media(iface, m, local_addr=("127.0.0.1", media_port), jitter_buffer=jitter_buffer,
                                                 latching=True, cname="caller@voicelab").open()
        t0 = stream.send(x, 16000)
        await asyncio.wait_for(stream.played_through(t0 + len(x) / 16000 + 0.5), seconds + 20)
        ua.bye(call, now=loop.time())
        sip.flush()
        await sip.wait_for(CallEnded, timeout=10.0)
    finally:
        if stream is not None:
            await stream.close()
        await sip.close()
    rs = stream.session.receiver_stats
    return {
        "target": target,
        "codec": m.codec,
        "payload_type": m.payload_type,
        "setup_ms": call.times.setup_ms,
        "post_dial_delay_ms": call.times.post_dial_delay_ms,
        "loss_rate": max(0.0, rs.loss_rate),
        "jitter_ms": rs.jitter_ms,
        "sample_rate": stream.tx.sample_rate,
        "sent": stream.sent_audio()[0],
        "received": stream.received_audio()[0],
        "synthetic_speech": bool(sp.synthetic),
    }
