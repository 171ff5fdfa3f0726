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

The far end is a :class:`voicelab.agent.Agent` in ``play`` mode (it plays the same
speech back), so both directions carry a known reference; :func:`dial` calls any other
peer. The caller speaks UDP, TCP, TLS or WebSocket, with digest credentials and SDES-SRTP
when asked. Every socket is opened through a network interface object
(:class:`voicelab.net.iface.LoopbackInterface`).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from . import audio, metrics
from .errors import ParameterError, PeerTimeoutError, VoicelabError
from .net import ChannelConfig
from .net.iface import LoopbackInterface
from .net.relay import UdpRelay
from .realtime import realtime
from .rtp.live import LiveAudioStream
from .sip.ua import CallEnded, CallEstablished, CallFailed, UserAgent

__all__ = ["AsyncUserAgent", "Agent", "sip_call", "dial", "open_caller"]


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
        send_now = getattr(self.transport, "send_now", None)
        for data, addr in self.ua.datagrams_to_send(self.loop.time()):
            if self.capture is not None:
                self.capture.append((self.loop.time(), self.ua.local_addr, tuple(addr[:2]), data))
            try:
                if send_now is not None and send_now(data, tuple(addr[:2])):
                    continue
            except VoicelabError:  # reported by the task path below, as before
                pass
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
        """The next event of one of ``types`` (others are skipped).

        Raises
        ------
        PeerTimeoutError
            None arrived within ``timeout`` seconds.
        """
        async def _get():
            while True:
                ev = await self.events.get()
                if isinstance(ev, types):
                    return ev

        try:
            return await asyncio.wait_for(_get(), timeout)
        except asyncio.TimeoutError:
            names = " or ".join(t.__name__ for t in types)
            raise PeerTimeoutError(f"no {names} within {timeout:g} s: the peer did not answer") from None

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        await self.transport.close()


def _direction_metrics(sender: LiveAudioStream, receiver: LiveAudioStream, reference16: np.ndarray) -> dict[str, Any]:
    """Mouth-to-ear delay and quality of one direction, both recordings on the loop clock."""
    sent, t_sent = sender.sent_audio()
    recv, t_recv = receiver.received_audio()
    return measure_direction(sent, t_sent, recv, t_recv, sender.tx.sample_rate, reference16)


def measure_direction(sent: np.ndarray, t_sent: float, recv: np.ndarray, t_recv: float, rate: int,
                      reference16: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Delay and PESQ of ``recv`` against ``sent``, both stamped on one clock.

    Parameters
    ----------
    sent, recv : ndarray
        Float audio at ``rate`` Hz; ``t_sent`` / ``t_recv`` are the clock times (s) of
        their first samples.
    reference16 : ndarray
        The clean source at 16 kHz (the PESQ reference).

    Returns
    -------
    dict
        ``mouth_to_ear_ms``, ``delay_confidence``, ``pesq_nb``, ``pesq_wb`` (None when
        nothing arrived or PESQ refused the signal).
    """
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


async def open_caller(
    iface: Any,
    *,
    codec: str,
    transport: str = "udp",
    srtp: bool = False,
    credentials: tuple[str, str] | None = None,
    ca_file: str | None = None,
    rtcp_mux: bool = False,
    seed: int | None = 0,
    capture: list | None = None,
    host: str | None = None,
) -> tuple[UserAgent, AsyncUserAgent]:
    """The lab's SIP caller: a UA over ``transport`` and its asyncio driver.

    Parameters
    ----------
    iface : network interface
    codec : str
        The one codec offered (the experiment's variable).
    transport : {"udp", "tcp", "tls", "ws"}
    srtp : bool
        Offer SDES-keyed SRTP only.
    credentials : (str, str), optional
        Digest user and password, sent when challenged.
    ca_file : path, optional
        CA that signed the TLS server's certificate (default: the system's).
    rtcp_mux : bool
        Offer ``a=rtcp-mux``.
    seed : int or None
        Seeds Call-IDs, tags and branches (None: fresh entropy).
    capture : list, optional
        Collects SIP datagrams for a pcap (UDP only).
    host : str, optional
        Address to listen on and advertise (default: the interface's first address,
        127.0.0.1 on loopback).
    """
    from .sip.transport import transport_for

    transport = transport.lower() if isinstance(transport, str) else transport
    host = host or iface.host_addresses()[0]
    options: dict[str, Any] = {"parse": False}
    if transport == "tls":
        from .tlsutil import client_ssl_context

        options["client_ssl"] = client_ssl_context(ca_file=ca_file)
    t = transport_for(transport, iface, **options)
    if transport == "tls":
        # a TLS client does not listen (it has no certificate; a phone behind NAT would
        # not be reachable either): responses come back on its connection, and the
        # caller is the one who hangs up. Contact names a port nobody answers on.
        addr = (host, iface.free_port("tcp", host))
    else:
        addr = await t.listen(host, 0)
    from .sdp.negotiate import warm_up

    warm_up([codec])  # codec libraries load now, not inside the first INVITE's offer
    ua = UserAgent(local_uri=f"sip:caller@{host}", local_addr=tuple(addr[:2]), rng=np.random.default_rng(seed),
                   codecs=[codec], media_address=host, transport=transport, srtp=srtp, rtcp_mux=rtcp_mux,
                   credentials_for=(lambda realm: credentials) if credentials else None)  # fmt: skip
    return ua, AsyncUserAgent(ua, t, capture=capture if transport == "udp" else None)


@realtime
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
    sip_transport: str = "udp",
    srtp: bool = False,
    auth: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """One SIP call on loopback, the lab's caller and agent in this process; returns its metrics.

    Parameters
    ----------
    codec : str
        What the caller offers (one codec: the experiment's variable).
    seconds : float
        Speech sent in each direction, 1..60 s.
    speech, input : str
        Named speech as in the simulator (``"default"``: the natural corpus when
        available) or a WAV file.
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"`` on both sides.
    net : ChannelConfig, optional
        Impairment of the media path, applied by a userspace relay in each direction
        (anchored like an SBC: the caller's SDP names the relay).
    seed : int
    quality : bool
        Compute PESQ.
    pcap : path, optional
        Write the call as the caller's machine would capture it (SIP over UDP, RTP, RTCP).
    sip_transport : {"udp", "tcp", "tls", "ws"}
        SIP signalling transport (TLS with a test CA made for the agent).
    srtp : bool
        SDES-keyed SRTP (AES_CM_128_HMAC_SHA1_80) both ways.
    auth : (str, str), optional
        The agent challenges the INVITE with digest; the caller answers with these.

    Returns
    -------
    dict
        ``setup_ms``, ``post_dial_delay_ms``, ``codec``, and per direction
        (``caller_to_agent.*``, ``agent_to_caller.*``): ``mouth_to_ear_ms``, ``pesq_nb``,
        ``pesq_wb``, ``rtt_ms``, ``jitter_ms``, ``loss_rate``, ``late_loss_rate``,
        ``bitrate_kbps_wire``, ``pacing_error_p99_ms``, ``r_factor``, ``mos_cqe``.
    """
    from .agent import Agent
    from .sim import Scenario, load_speech

    if not 1.0 <= float(seconds) <= 60.0:
        raise ParameterError(f"seconds {seconds:g} is outside 1..60")
    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    sp = load_speech(Scenario(speech=speech, input=input, max_speech_s=float(seconds), codec=codec))
    x = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 16000)
    seeds = np.random.SeedSequence(seed).spawn(4)
    capture: list | None = [] if pcap else None
    agent = Agent(codecs=[codec], transport=sip_transport, jitter_buffer=jitter_buffer, auth=auth, srtp=srtp,
                  iface=iface, seed=int(seeds[1].generate_state(1)[0]) % 2**31)  # fmt: skip
    agent._speech_override = x  # play exactly what the caller sends: one reference for both directions
    await agent.start()
    ua, sip = await open_caller(iface, codec=codec, transport=sip_transport, srtp=srtp, credentials=auth,
                                ca_file=agent.ca_file, rtcp_mux=True, seed=int(seeds[0].generate_state(1)[0]),
                                capture=capture)  # fmt: skip
    stream: LiveAudioStream | None = None
    relay: UdpRelay | None = None
    try:
        media_port = iface.free_port("udp")
        if net is not None:
            # the relay anchors the media like an SBC: the caller's SDP names the relay's
            # back socket, so the agent sends through it from its first packet on
            relay = await UdpRelay(iface, ("127.0.0.1", 9), uplink=net, downlink=net, seed=seed,
                                   client=("127.0.0.1", media_port)).start()  # fmt: skip
        call = ua.invite(agent.uri, now=loop.time(), media_port=relay.back_address[1] if relay else media_port)
        sip.flush()
        ev = await sip.wait_for(CallEstablished, CallFailed)
        if isinstance(ev, CallFailed):
            raise ParameterError(f"the call failed: {ev.status} {getattr(ev, 'reason', '')} ({call.media_error or 'no media error'})")
        stream = LiveAudioStream.for_media(iface, call.media, local_addr=("127.0.0.1", media_port),
                                           jitter_buffer=jitter_buffer, seed=int(seeds[2].generate_state(1)[0]),
                                           cname="caller@voicelab", capture=capture)  # fmt: skip
        await stream.open()
        if relay is not None:
            relay.target = (call.media.remote_address, call.media.remote_port)
            stream.set_remote(relay.front_address)
        t0 = loop.time() + 0.02
        stream.send(x, 16000, start_at=t0)
        agent_stream = agent.streams.get(next(iter(agent.streams), ""))
        if agent_stream is None:
            raise ParameterError("the agent has no media stream for the call")
        end = t0 + len(x) / 16000 + 0.5
        await asyncio.wait_for(asyncio.gather(stream.played_through(end), agent_stream.played_through(end)), seconds + 20)
        ua.bye(call, now=loop.time())
        sip.flush()
        await sip.wait_for(CallEnded, timeout=10.0)
        await asyncio.wait_for(agent.ended(1), 10.0)
    finally:
        if stream is not None:
            await stream.close()
        if relay is not None:
            await relay.close()
        await sip.close()
        await agent.close()

    if pcap:
        from .net.pcap import write_pcap

        write_pcap(pcap, capture or [])
    out: dict[str, Any] = {
        "transport": "sip",
        "sip_transport": sip_transport,
        "srtp": bool(call.media.srtp is not None),
        "net": "loopback",
        "codec": call.media.codec,
        "payload_type": call.media.payload_type,
        "setup_ms": call.times.setup_ms,
        "post_dial_delay_ms": call.times.post_dial_delay_ms,
        "speech": sp.name,
        "speech_source": sp.source,
        "synthetic_speech": bool(sp.synthetic),
        "seconds": len(x) / 16000,
    }
    for name, s, r in (("caller_to_agent", stream, agent_stream), ("agent_to_caller", agent_stream, stream)):
        out.update({f"{name}.{k}": v for k, v in direction_report(s, r, x, quality=quality).items()})
    if relay is not None:  # what the userspace relay itself added beyond the configured delay
        for name, d in (("caller_to_agent", relay.up), ("agent_to_caller", relay.down)):
            if d.stats.transit_s:
                out[f"{name}.relay_transit_ms_median"] = float(np.median(d.stats.transit_s) * 1000.0)
    if sp.synthetic:
        out["warnings"] = [audio.SYNTHETIC_WARNING]
    return out


def direction_report(s: LiveAudioStream, r: LiveAudioStream, reference16: np.ndarray, *, quality: bool = True) -> dict[str, Any]:
    """Metrics of one direction of a live call: sender ``s``, receiver ``r`` (same loop clock)."""
    d = _direction_metrics(s, r, reference16) if quality else {}
    rs = r.session.receiver_stats
    rtt = s.session.stats.rtt_s
    jb = r.jb.stats
    dur = max(s.stats.frames_sent * s.tx.frame_ms / 1000.0, 1e-9)
    overhead = 40 + (s.session.srtp.rtp_overhead if s.session.srtp is not None else 0)  # IPv4 + UDP + RTP (+ SRTP tag)
    d.update({
        "rtt_ms": None if rtt is None else rtt * 1000.0,
        "jitter_ms": rs.jitter_ms,
        "loss_rate": max(0.0, rs.loss_rate),
        "late_loss_rate": float(jb.late_loss_rate),
        "playout_delay_ms": float(jb.playout_delay_ms) if not math.isnan(jb.playout_delay_ms) else None,
        "bitrate_kbps_wire": (s.session.stats.octets_sent + overhead * s.session.stats.packets_sent) * 8 / dur / 1000.0,
        "pacing_error_p99_ms": s.stats.pacing_error_ms(99),
    })
    view = s.rtcp_view()  # what the receiver's RTCP told the sender
    d.update({"rtcp_loss_rate": view["loss_rate"], "rtcp_jitter_ms": view["jitter_ms"], "rtcp_reports": view["reports"],
              "rtcp_packets_covered": view["expected"]})
    if d.get("mouth_to_ear_ms") is not None:
        try:
            ie, bpl, _ = metrics.ie_bpl(s.tx.name, bitrate=s.tx.bitrate, plc=True, wideband=bool(s.tx.wideband))
            em = metrics.r_factor(delay_ms=d["mouth_to_ear_ms"], loss_rate=d["loss_rate"], ie=ie, bpl=bpl, wideband=bool(s.tx.wideband))
            d["r_factor"], d["mos_cqe"] = em.r_factor, em.mos_cqe
        except VoicelabError:
            d["r_factor"] = d["mos_cqe"] = None
    return d


def __getattr__(name: str) -> Any:  # ``voicelab.calls.Agent`` moved to voicelab.agent
    if name == "Agent":
        from .agent import Agent

        return Agent
    raise AttributeError(name)


@realtime
async def dial(
    target: str,
    *,
    codec: str = "pcmu",
    seconds: float = 4.0,
    speech: str = "default",
    input: str | None = None,
    jitter_buffer: str = "fixed:60",
    seed: int | None = None,
    ready_timeout: float = 10.0,
    transport: str = "udp",
    srtp: bool = False,
    credentials: tuple[str, str] | None = None,
    ca_file: str | None = None,
    echo: bool = False,
) -> dict[str, Any]:
    """Call another SIP peer on loopback (a softphone, baresip, SIPp), send speech, hang up.

    The peer is first probed with OPTIONS until it answers (at most ``ready_timeout``
    seconds), so a peer that is still starting is waited for, not raced. ``transport``,
    ``srtp``, ``credentials`` and ``ca_file`` are as for :func:`open_caller`. ``seed``
    None (default) draws fresh Call-IDs and tags, as SIP wants them globally unique (two
    dials with one seed look like a merged request to the peer: 482). With
    ``echo=True`` the peer is expected to return our audio (an echo agent): the result
    gains ``echo_delay_ms`` (the round trip, mouth to ear) and ``echo_pesq_nb`` /
    ``echo_pesq_wb``.

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
    ua, sip = await open_caller(iface, codec=codec, transport=transport, srtp=srtp, credentials=credentials,
                                ca_file=ca_file, seed=seed)  # fmt: skip
    media_port = iface.free_port("udp")
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
        call = ua.invite(target, now=loop.time(), media_port=media_port)
        sip.flush()
        ev = await sip.wait_for(CallEstablished, CallFailed, timeout=15.0)
        if isinstance(ev, CallFailed):
            raise ParameterError(f"the call to {target} failed: {ev.status} {ev.reason}")
        m = call.media
        stream = await LiveAudioStream.for_media(iface, m, local_addr=("127.0.0.1", media_port), jitter_buffer=jitter_buffer,
                                                 latching=True, cname="caller@voicelab").open()
        t0 = stream.send(x, 16000)
        await asyncio.wait_for(stream.sending_done, seconds + 20)
        if stream.received_audio()[0].size:  # the peer sends media: play it out too
            await asyncio.wait_for(stream.played_through(t0 + len(x) / 16000 + 0.5), 10.0)
        ua.bye(call, now=loop.time())
        sip.flush()
        await sip.wait_for(CallEnded, timeout=10.0)
    finally:
        if stream is not None:
            await stream.close()
        await sip.close()
    rs = stream.session.receiver_stats
    extra: dict[str, Any] = {}
    if echo:
        sent, t_sent = stream.sent_audio()
        recv, t_recv = stream.received_audio()
        m_ = measure_direction(sent, t_sent, recv, t_recv, stream.tx.sample_rate, x)
        extra = {"echo_delay_ms": m_["mouth_to_ear_ms"], "echo_pesq_nb": m_["pesq_nb"], "echo_pesq_wb": m_["pesq_wb"]}
    return extra | {
        "target": target,
        "codec": m.codec,
        "payload_type": m.payload_type,
        "setup_ms": call.times.setup_ms,
        "post_dial_delay_ms": call.times.post_dial_delay_ms,
        "loss_rate": None if rs is None else max(0.0, rs.loss_rate),
        "jitter_ms": None if rs is None else rs.jitter_ms,
        "packets_received": 0 if rs is None else int(rs.received),
        "sample_rate": stream.tx.sample_rate,
        "sent": stream.sent_audio()[0],
        "received": stream.received_audio()[0],
        "synthetic_speech": bool(sp.synthetic),
    }
