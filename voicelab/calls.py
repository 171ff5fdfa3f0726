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
from .errors import ParameterError, PeerTimeoutError, RemoteProtocolError, VoicelabError
from .metrics.direction import direction_metrics as _direction_metrics  # moved; re-exported
from .metrics.direction import measure_direction  # moved; re-exported
from .net import ChannelConfig
from .net.iface import LoopbackInterface
from .net.relay import UdpRelay
from .realtime import realtime
from .rtp.live import LiveAudioStream
from .sip.aio import AsyncUserAgent, describe_send_error  # moved next to the SIP core; re-exported
from .sip.ua import CallCancelled, CallEnded, CallEstablished, CallFailed, CallRinging, UserAgent

__all__ = ["AsyncUserAgent", "Agent", "sip_call", "dial", "open_caller", "measure_direction", "describe_send_error"]


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
        Collects SIP messages for a pcap (on TCP, TLS and WS as plaintext on a
        synthetic TCP stream, see :func:`voicelab.net.pcap.write_pcap`).
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
    return ua, AsyncUserAgent(ua, t, capture=capture)


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
    sbc: str | None = None,
    agent_speech: np.ndarray | None = None,
    keep_audio: bool = False,
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
        Write the call as the caller's machine would capture it: SIP, RTP, RTCP. SIP
        over TCP, TLS or WebSocket is written as the caller's plaintext on a synthetic
        TCP stream between the same addresses (no TLS or WebSocket framing: what a
        TLS key log would let Wireshark show).
    sip_transport : {"udp", "tcp", "tls", "ws"}
        SIP signalling transport (TLS with a test CA made for the agent).
    srtp : bool
        SDES-keyed SRTP (AES_CM_128_HMAC_SHA1_80) both ways.
    auth : (str, str), optional
        The agent challenges the INVITE with digest; the caller answers with these.
    sbc : {None, "kamailio"}, optional
        Put a real SBC between caller and agent: Kamailio (record-routing proxy) +
        rtpengine (media anchor), started for the call (:class:`voicelab.net.sbc.KamailioSBC`;
        UDP signalling only). The result gains ``sbc`` and ``sbc_media_legs`` (rtpengine's
        per-leg packet counters).
    agent_speech : numpy.ndarray, optional
        What the agent plays (float, 16 kHz); default: the caller's speech.
    keep_audio : bool
        Add ``audio``: per direction ``(sent, t_sent, received, t_received, rate)``, the
        sender's and the receiver's audio at the codec rate (Hz) with the loop times (s) of
        their first samples (one clock), for scoring a longer path end to end.

    Returns
    -------
    dict
        ``setup_ms``, ``post_dial_delay_ms``, ``codec``, and per direction
        (``caller_to_agent.*``, ``agent_to_caller.*``): ``mouth_to_ear_ms``, ``pesq_nb``,
        ``pesq_wb``, ``rtt_ms``, ``jitter_ms``, ``loss_rate``, ``late_loss_rate``,
        ``bitrate_kbps_wire``, ``pacing_error_p99_ms``, ``r_factor``, ``mos_cqe``.
    """
    from .agent import Agent
    from .audio import load_speech

    if not 1.0 <= float(seconds) <= 60.0:
        raise ParameterError(f"seconds {seconds:g} is outside 1..60")
    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    sp = load_speech(speech=speech, input=input, max_speech_s=float(seconds), codec=codec)
    x = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 16000)
    seeds = np.random.SeedSequence(seed).spawn(4)
    capture: list | None = [] if pcap else None
    agent = Agent(codecs=[codec], transport=sip_transport, jitter_buffer=jitter_buffer, auth=auth, srtp=srtp,
                  iface=iface, seed=int(seeds[1].generate_state(1)[0]) % 2**31)  # fmt: skip
    # the agent plays exactly what the caller sends (one reference for both directions), unless told otherwise
    agent._speech_override = x if agent_speech is None else np.asarray(agent_speech, dtype=np.float64)
    if sbc not in (None, "kamailio"):
        raise ParameterError(f"sbc must be None or 'kamailio', got {sbc!r}")
    if sbc and sip_transport != "udp":
        raise ParameterError("the Kamailio SBC is started for SIP over UDP only")
    await agent.start()
    proxy = None
    if sbc == "kamailio":
        from .net.sbc import KamailioSBC

        try:
            proxy = await KamailioSBC(target=agent.address).start()
        except BaseException:
            await agent.close()
            raise
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
        call = ua.invite(proxy.uri if proxy else agent.uri, now=loop.time(),
                         media_port=relay.back_address[1] if relay else media_port)
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
        if proxy is not None:
            await proxy.stop()

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
        ref = x if name == "caller_to_agent" or agent_speech is None else agent._speech_override
        out.update({f"{name}.{k}": v for k, v in direction_report(s, r, ref, quality=quality).items()})
    if keep_audio:
        pairs = (("caller_to_agent", stream, agent_stream), ("agent_to_caller", agent_stream, stream))
        out["audio"] = {name: (*s.sent_audio(), *r.received_audio(), int(s.tx.sample_rate)) for name, s, r in pairs}
    if relay is not None:  # what the userspace relay itself added beyond the configured delay
        for name, d in (("caller_to_agent", relay.up), ("agent_to_caller", relay.down)):
            if d.stats.transit_s:
                out[f"{name}.relay_transit_ms_median"] = float(np.median(d.stats.transit_s) * 1000.0)
    if proxy is not None:
        out["sbc"] = "kamailio+rtpengine"
        out["sbc_media_legs"] = proxy.media_stats()
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
        "rtp_foreign_packets": r.foreign_packets,  # media from a source the receiver did not expect
        "playout_errors": r.stats.playout_errors,
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
    answer_timeout: float = 15.0,
    max_redirects: int = 3,
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

    A peer that rings but does not answer within ``answer_timeout`` s is sent a CANCEL
    (RFC 3261 9.1) before the error. A 3xx is followed to its first Contact, at most
    ``max_redirects`` times (then the error names the targets). A 2xx whose SDP we
    cannot use (or with none) is ACKed and hung up with BYE before the error. Our media
    latches only to the host the answer's SDP names or the host that answered the
    INVITE (``rtp_foreign_packets`` counts packets from anywhere else).

    Raises
    ------
    RemoteProtocolError
        The call failed (final status, unusable answer, redirect limit, transport
        failure such as a refused connection or an untrusted TLS certificate).
    PeerTimeoutError
        The peer did not answer OPTIONS or the INVITE in time.

    Returns
    -------
    dict
        ``setup_ms``, ``post_dial_delay_ms``, ``codec``, ``payload_type``, receive
        statistics, and the recordings ``sent`` / ``received`` (float audio at
        ``sample_rate``) for scoring against the peer's own recordings.
    """
    from .audio import load_speech
    from .sip.ua import OptionsAnswered

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    sp = load_speech(speech=speech, input=input, max_speech_s=float(seconds), codec=codec)
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
                ev = await sip.wait_for(OptionsAnswered, timeout=0.5, what="answer to OPTIONS")
                if ev.response is not None or ev.status != 503 or not sip.last_send_failure:
                    break
                # the transport failed (refused, TLS): a peer still starting, or never
                if "TLS" in sip.last_send_failure or loop.time() > deadline:
                    raise RemoteProtocolError(f"cannot reach {target}: {sip.last_send_failure}", status_code=503)
                await asyncio.sleep(0.2)
            except asyncio.TimeoutError:
                if loop.time() > deadline:
                    raise PeerTimeoutError(f"{target} did not answer OPTIONS within {ready_timeout:g} s") from None
        call, target_now = None, target
        for hop in range(max_redirects + 1):
            call = ua.invite(target_now, now=loop.time(), media_port=media_port)
            sip.flush()
            ev = await _await_final(ua, sip, call, target_now, answer_timeout)
            if isinstance(ev, CallEstablished):
                break
            if 300 <= ev.status < 400:
                contacts = [str(na.uri) for na in (ev.response.contact if ev.response is not None else None) or []
                            if hasattr(na, "uri")]  # fmt: skip
                if not contacts:
                    raise RemoteProtocolError(f"{target_now} redirected ({ev.status} {ev.reason}) without a Contact",
                                              status_code=ev.status)  # fmt: skip
                if hop == max_redirects:
                    raise RemoteProtocolError(
                        f"{target} redirected more than {max_redirects} times; last redirect ({ev.status} {ev.reason}) "
                        f"to {', '.join(contacts)}", status_code=ev.status)
                target_now = contacts[0]
                continue
            raise RemoteProtocolError(f"the call to {target_now} failed: {ev.status} {ev.reason}", status_code=ev.status)
        m = call.media
        latch_hosts = {m.remote_address} | ({str(call.signalling_addr[0])} if call.signalling_addr else set())
        stream = await LiveAudioStream.for_media(iface, m, local_addr=("127.0.0.1", media_port), jitter_buffer=jitter_buffer,
                                                 latching=True, latch_hosts=latch_hosts, cname="caller@voicelab").open()
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
        "rtp_foreign_packets": stream.foreign_packets,
        "playout_errors": stream.stats.playout_errors,
        "sample_rate": stream.tx.sample_rate,
        "sent": stream.sent_audio()[0],
        "received": stream.received_audio()[0],
        "synthetic_speech": bool(sp.synthetic),
    }


async def _await_final(ua: UserAgent, sip: AsyncUserAgent, call: Any, target: str, answer_timeout: float) -> Any:
    """CallEstablished or CallFailed for ``call``; on time-out cancel it (RFC 3261 9.1) and raise."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            ev = await sip.wait_for(CallEstablished, CallFailed, timeout=answer_timeout, what="answer to the INVITE")
            if ev.call is call:
                return ev
    except PeerTimeoutError:
        rang = call.times.first_provisional is not None
        if not call.over:
            try:
                ua.cancel(call, now=loop.time())  # sent now if it rang; else once a provisional comes
            except VoicelabError:  # answered in the meantime: hang that up
                if call.established:
                    ua.bye(call, now=loop.time())
            sip.flush()
        if rang:
            try:  # 487 to the INVITE (or a 2xx that crossed the CANCEL: the UA hangs it up)
                await sip.wait_for(CallCancelled, CallFailed, CallEnded, timeout=5.0, what="answer to our CANCEL")
            except PeerTimeoutError:
                pass
            raise PeerTimeoutError(f"{target} rang but did not answer within {answer_timeout:g} s; "
                                   "the call was cancelled (CANCEL sent)") from None
        raise PeerTimeoutError(f"no response to the INVITE from {target} within {answer_timeout:g} s") from None
