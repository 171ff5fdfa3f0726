"""A measured WebRTC call on loopback: an aiortc caller calls an aiortc agent in this process.

The WebRTC counterpart of :func:`voicelab.calls.sip_call`, measured the same way so the
two transports compare row by row:

* two :func:`~voicelab.webrtc.peer.make_peer_connection` peers on a
  :class:`~voicelab.net.iface.LoopbackInterface` (127.0.0.1, no STUN unless given)
  exchange SDP directly (non-trickle: each description carries its candidates);
* both send speech from a :class:`~voicelab.webrtc.media.SourceTrack` (the agent in
  ``play`` mode, so both directions carry a known reference) and record what they play
  in an :class:`~voicelab.webrtc.media.AudioSink`, all on the loop clock, so
  mouth-to-ear delay and PESQ of each direction come from
  :func:`voicelab.calls._direction_metrics`, the SIP call's own function;
* setup is timed from the offer: ICE gathering, ICE checks, DTLS handshake,
  ``connected``; ``ice_path`` names the candidate types of the selected pair;
* ``getStats()`` supplies RTP loss, jitter and RTCP round-trip time (aiortc measures
  those on the wall clock); the sockets' own logs give the exact wire bit rate.

Impairment (``net``): the lab's :class:`~voicelab.net.relay.UdpRelay` is put between the
two peers' host candidates by rewriting the candidates each side learns: the caller sees
the agent at the relay's front address, the agent sees the caller at the relay's back
address, so ICE checks, DTLS and media all cross the relay (like an SBC anchoring
media), and ``ice_path`` still says ``host``.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from .. import audio, codecs, metrics
from ..errors import ParameterError, VoicelabError
from ..net import ChannelConfig
from ..net.iface import LoopbackInterface, is_loopback_address
from ..realtime import realtime
from .media import AudioSink, SourceTrack, record_track
from .peer import MODES, WEBRTC_CODECS, make_peer_connection, prefer_codec, selected_pair, stats_summary

__all__ = ["webrtc_call", "AIORTC_OPUS_BITRATE", "AIORTC_JB_CAPACITY", "AIORTC_JB_PREFETCH"]

#: What aiortc's own Opus encoder uses, whatever is asked (``aiortc/codecs/opus.py``).
AIORTC_OPUS_BITRATE = 96000
#: aiortc's audio jitter buffer: 16 packets, and it holds 4 before it hands out the first
#: (``aiortc/rtcrtpreceiver.py``: ``JitterBuffer(capacity=16, prefetch=4)``).
AIORTC_JB_CAPACITY = 16
AIORTC_JB_PREFETCH = 4


def _host_candidate(pc: Any) -> tuple[str, int]:
    for t in pc.getTransceivers():
        for c in t.receiver.transport.transport.iceGatherer.getLocalCandidates():
            if c.type == "host":
                return (c.ip, int(c.port))
    raise VoicelabError("the peer gathered no host candidate; check the network interface's host_addresses()")


def _rewrite_candidate(sdp: str, old: tuple[str, int], new: tuple[str, int]) -> str:
    """Replace one candidate's transport address in the ``a=candidate`` lines."""
    needle = f" {old[0]} {old[1]} typ "
    lines, n = [], 0
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:") and needle in line:
            line = line.replace(needle, f" {new[0]} {new[1]} typ ")
            n += 1
        lines.append(line)
    if n == 0:
        raise VoicelabError(f"candidate {old[0]}:{old[1]} not found in the SDP to rewrite")
    return "\r\n".join(lines)


def _send_to_arrival_s(track: SourceTrack, playout: Any, codec: Any) -> float | None:
    """Mean time from the end of a frame's capture interval to its packet's arrival, in s.

    The packet of frame ``k`` has RTP timestamp ``first + k * timestamp_increment`` (the
    lab's encoder counts frames from the first one, which carries speech and is sent).
    """
    if not playout.arrivals or track.t0 is None:
        return None
    first_ts = playout.arrivals[0][1]
    frame_s = track.frame_samples / track.sample_rate
    n_frames = int(np.ceil(track.duration_s / frame_s))
    out = []
    for arrival, ts in playout.arrivals:
        k = ((ts - first_ts) & 0xFFFFFFFF) // codec.timestamp_increment
        if k < n_frames:
            out.append(arrival - (track.t0 + (k + 1) * frame_s))
    return float(np.mean(out)) if out else None


def _span(pc: Any, start: str, end: str) -> float | None:
    a, b = pc.event_time(start), pc.event_time(end)
    return None if a is None or b is None else (b - a) * 1000.0


_CALL_PARAMETERS = ("codec", "bitrate", "fec", "dtx", "packet_loss_perc", "seconds", "speech", "input",
                    "jitter_buffer", "mode", "ice_servers", "relay_only", "net", "seed", "quality",
                    "connect_timeout", "stats_interval_s")


@realtime
async def webrtc_call(
    *,
    codec: str = "opus",
    bitrate: int | None = None,
    fec: bool = False,
    dtx: bool = False,
    packet_loss_perc: int | None = None,
    seconds: float = 4.0,
    speech: str = "default",
    input: str | None = None,
    jitter_buffer: str = "fixed:60",
    mode: str = "lab",
    ice_servers: Sequence[Any] = (),
    relay_only: bool = False,
    net: ChannelConfig | None = None,
    seed: int = 0,
    quality: bool = True,
    connect_timeout: float = 10.0,
    stats_interval_s: float | None = 0.5,
) -> dict[str, Any]:
    """One WebRTC call on loopback, caller and agent in this process; returns its metrics.

    Parameters
    ----------
    codec : {"opus", "pcmu", "pcma", "g722"}
        The one codec both sides prefer (``setCodecPreferences``).
    bitrate : int, optional
        Opus bit rate in bit/s (lab mode; default: the lab's Opus default, 24000).
    fec, dtx : bool
        Opus in-band FEC (encoder adds it, receiver uses it) and DTX (lab mode).
    packet_loss_perc : int, optional
        Opus expected loss in percent (default with ``fec``: the channel's loss).
    seconds : float
        Speech sent in each direction, 1..60 s.
    speech, input : str
        Named speech (``"default"``: the natural corpus when available) or a WAV file.
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"`` on both sides (lab mode).
    mode : {"lab", "aiortc-defaults"}
        ``"lab"``: the lab's encoder, jitter buffer and PLC plugged into aiortc;
        ``"aiortc-defaults"``: plain aiortc media (Opus at 96 kbps, 16-packet buffer
        with 4 prefetched), the baseline.
    ice_servers : sequence
        STUN/TURN servers for both peers (IP literals); none by default.
    relay_only : bool
        ICE relay-only policy on both peers. Without ``ice_servers`` a real coturn is
        started for the call (:class:`voicelab.net.coturn.Coturn`; ``turn`` in the
        result says so); raises :class:`~voicelab.errors.ToolUnavailableError` naming
        Debian ``coturn`` when it is not installed.
    net : ChannelConfig, optional
        Impairment of every datagram between the peers (both directions), by the
        userspace relay. Not combinable with ``relay_only``.
    seed : int
        Seed of the impairment (aiortc's own SSRCs and ICE credentials are random).
    quality : bool
        Compute PESQ.
    connect_timeout : float
        Seconds allowed from offer to ``connected``. Gathering is not interrupted
        (aioice would leak its STUN/TURN tasks), so a hanging TURN server fails the
        call after at most ``connect_timeout`` + 5 s.
    stats_interval_s : float or None
        Sample both peers' ``getStats()`` this often during the media (result key
        ``getstats_series``: ``t_ms`` from the start of media, ``peer``, ``jitter_ms``,
        ``packets_lost``, ``packets_received``, ``rtt_ms``); None: only at the end.

    Returns
    -------
    dict
        ``transport`` ("webrtc"), ``mode``, ``codec``, ``payload_type``, ``bitrate``,
        ``setup_ms`` (offer -> caller connected), ``ice_gathering_ms``,
        ``ice_connect_ms``, ``dtls_ms`` (caller's; ``agent.*`` for the agent's),
        ``ice_path`` ({"caller": type, "agent": type}), ``selected_pair``,
        ``timeline``, and per direction (``caller_to_agent.*``, ``agent_to_caller.*``):
        ``mouth_to_ear_ms``, ``pesq_nb``, ``pesq_wb``, ``delay_confidence``,
        ``rtt_ms``, ``jitter_ms``, ``loss_rate``, ``late_loss_rate``,
        ``playout_delay_ms``, ``bitrate_kbps_wire`` (SRTP packets sent during the
        speech, with IPv4/UDP headers and TURN framing when relayed),
        ``pacing_error_p99_ms``, ``send_to_arrival_ms`` and ``parts_sum_ms`` (lab
        mode: frame + send-to-arrival + jitter buffer + look-ahead, what
        ``mouth_to_ear_ms`` should equal), ``late_frames`` (aiortc-defaults mode),
        ``packets_sent``, ``packets_received``, ``packets_lost``, ``outcomes``,
        ``r_factor``, ``mos_cqe``; ``getstats`` holds each peer's summary.

    Raises
    ------
    ParameterError
        Bad parameters (range, unknown codec or mode, lab-only options in
        ``aiortc-defaults`` mode).
    VoicelabError
        The peers did not connect in time.
    """
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise ParameterError(f"seconds must be a number, got {seconds!r}") from None
    if not 1.0 <= seconds <= 60.0:
        raise ParameterError(f"seconds {seconds:g} is outside 1..60")
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
    if codec not in WEBRTC_CODECS:
        raise ParameterError(f"WebRTC codec must be one of {sorted(WEBRTC_CODECS)}, got {codec!r}")
    if mode == "aiortc-defaults" and (bitrate is not None or fec or dtx or packet_loss_perc is not None):
        raise ParameterError("bitrate, fec, dtx and packet_loss_perc need mode='lab' (plain aiortc encodes Opus at a "
                             "fixed 96 kbps without FEC or DTX)")
    if codec != "opus" and (bitrate is not None or fec or dtx or packet_loss_perc is not None):
        raise ParameterError(f"bitrate, fec, dtx and packet_loss_perc are Opus options; {codec} has a fixed rate")
    if net is not None and not isinstance(net, ChannelConfig):
        raise ParameterError(f"net must be a voicelab.net.ChannelConfig, got {type(net).__name__}")
    if net is not None and relay_only:
        raise ParameterError("net with relay_only is not supported: the impairment relay sits between host candidates")
    if relay_only and not ice_servers:  # loopback mode: a real TURN server for this call
        from ..net.coturn import Coturn

        args = {k: v for k, v in locals().items() if k in _CALL_PARAMETERS}
        async with Coturn() as turn:
            args["ice_servers"] = [turn.ice_server()]
            result = await webrtc_call(**args)
        result["turn"] = f"coturn started for this call ({turn.url})"
        return result

    params: dict[str, Any] = {}
    if codec == "opus" and mode == "lab":
        if bitrate is not None:
            params["bitrate"] = bitrate
        if fec:
            params["fec"] = True
            params["packet_loss_perc"] = (packet_loss_perc if packet_loss_perc is not None
                                          else int(round(100 * (net.loss_rate if net is not None else 0.0))))
        elif packet_loss_perc is not None:
            params["packet_loss_perc"] = packet_loss_perc
        if dtx:
            params["dtx"] = True
    facts = codecs.get(codec, **params)  # validates the parameters; rate and E-model facts
    nominal_bitrate = AIORTC_OPUS_BITRATE if (codec == "opus" and mode == "aiortc-defaults") else int(facts.bitrate)
    rate = int(facts.sample_rate)

    from ..metrics.direction import direction_metrics as _direction_metrics
    from ..audio import load_speech

    sp = load_speech(speech=speech, input=input, max_speech_s=seconds, codec=codec)
    x = np.asarray(sp.samples, dtype=np.float64)
    if sp.sample_rate != 16000:
        x = audio.resample(x, sp.sample_rate, 16000)
    x_codec = audio.resample(x, 16000, rate) if rate != 16000 else x

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    lab = mode == "lab"
    sinks = {who: AudioSink(rate) for who in ("caller", "agent")}
    pcs = {
        who: make_peer_connection(iface, ice_servers=ice_servers, relay_only=relay_only, mode=mode, codec=codec,
                                  codec_params=params, jitter_buffer=jitter_buffer, fec=fec,
                                  forward_to_track=False, sink=sinks[who] if lab else None)
        for who in ("caller", "agent")
    }
    tracks = {who: SourceTrack(x_codec, rate) for who in ("caller", "agent")}
    recorders: list[asyncio.Task] = []
    relays: list[Any] = []
    stats: dict[str, dict] = {}
    series: list[dict] = []  # getStats samples every stats_interval_s
    pairs: dict[str, Any] = {}
    t0 = t_offer = 0.0
    caller, agent = pcs["caller"], pcs["agent"]
    try:
        connected = {who: pc.connected() for who, pc in pcs.items()}
        t_offer = loop.time()

        async def setup() -> Any:
            caller.addTrack(tracks["caller"])
            prefer_codec(caller.getTransceivers()[0], codec)
            await caller.setLocalDescription(await caller.createOffer())
            offer = caller.localDescription
            offer_sdp = offer.sdp
            relay = None
            if net is not None:
                from ..net.relay import UdpRelay

                c_addr = _host_candidate(caller)
                # the target (the agent's host candidate) is known once the agent has gathered
                relay = await UdpRelay(iface, ("127.0.0.1", 0), uplink=net, downlink=net, seed=seed, client=c_addr).start()
                relays.append(relay)
                offer_sdp = _rewrite_candidate(offer_sdp, c_addr, relay.back_address)
            await agent.setRemoteDescription(type(offer)(sdp=offer_sdp, type="offer"))
            agent.addTrack(tracks["agent"])
            prefer_codec(agent.getTransceivers()[0], codec)
            await agent.setLocalDescription(await agent.createAnswer())
            answer = agent.localDescription
            answer_sdp = answer.sdp
            if relay is not None:
                a_addr = _host_candidate(agent)
                relay.target = a_addr
                answer_sdp = _rewrite_candidate(answer_sdp, a_addr, relay.front_address)
            await caller.setRemoteDescription(type(answer)(sdp=answer_sdp, type="answer"))
            await asyncio.gather(*connected.values())

        try:
            await asyncio.wait_for(setup(), connect_timeout)
        except asyncio.TimeoutError:
            raise VoicelabError(f"the WebRTC peers did not connect within {connect_timeout:g} s "
                                f"(caller {caller.connectionState}, agent {agent.connectionState})") from None
        finally:
            for fut in connected.values():
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    fut.exception()  # retrieved: no "never retrieved" warning when one failed
        if not lab:
            for who, pc in pcs.items():
                recorders.append(record_track(pc.getTransceivers()[0].receiver.track, sinks[who]))
        t0 = loop.time() + 0.05
        for tr in tracks.values():
            tr.start(t0)
        end = t0 + tracks["caller"].duration_s + 0.5
        played = asyncio.ensure_future(asyncio.gather(*(s.played_through(end) for s in sinks.values())))

        async def sample_stats() -> None:  # getStats() over the call, as a browser's stats page polls it
            while True:
                await asyncio.sleep(stats_interval_s)
                for who, pc in pcs.items():
                    st = stats_summary(await pc.getStats(), clock_rate=int(facts.clock_rate))
                    series.append({"t_ms": (loop.time() - t0) * 1000.0, "peer": who, "jitter_ms": st["jitter_ms"],
                                   "packets_lost": st["packets_lost"], "packets_received": st["packets_received"],
                                   "rtt_ms": st["rtt_ms"]})

        sampler = asyncio.ensure_future(sample_stats()) if stats_interval_s else None
        try:
            done, _ = await asyncio.wait([played, *recorders], timeout=seconds + 20, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not played.done():
                played.cancel()
            if sampler is not None:
                sampler.cancel()
                try:
                    await sampler
                except asyncio.CancelledError:
                    pass
        if played not in done:
            for task in done:  # a recorder stopped early: its error is the reason
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            raise VoicelabError("media did not play through within the call's time: a direction carries no audio "
                                f"(played: caller {sinks['caller'].end_time}, agent {sinks['agent'].end_time})")
        for who, pc in pcs.items():
            stats[who] = stats_summary(await pc.getStats(), clock_rate=int(facts.clock_rate))
            pairs[who] = selected_pair(pc)
    finally:
        for task in recorders:
            task.cancel()
        for task in recorders:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # a recorder's error was raised above
                pass
        for pc in pcs.values():
            await pc.close()
        for relay in relays:
            await relay.close()

    negotiated = getattr(caller.getTransceivers()[0], "_codecs", None)
    out: dict[str, Any] = {
        "transport": "webrtc",
        "mode": mode,
        "net": "loopback",
        "codec": codec,
        "payload_type": negotiated[0].payloadType if negotiated else None,
        "bitrate": nominal_bitrate,
        "codec_params": params,
        "jitter_buffer": jitter_buffer if lab else f"aiortc:capacity={AIORTC_JB_CAPACITY},prefetch={AIORTC_JB_PREFETCH}",
        "setup_ms": (caller.event_time("connection:connected") - t_offer) * 1000.0,
        "agent_setup_ms": (agent.event_time("connection:connected") - t_offer) * 1000.0,
        "ice_gathering_ms": _span(caller, "gather:gathering", "gather:completed"),
        "ice_connect_ms": _span(caller, "ice:checking", "ice:completed"),
        "dtls_ms": _span(caller, "dtls:connecting", "dtls:connected"),
        "agent.ice_gathering_ms": _span(agent, "gather:gathering", "gather:completed"),
        "agent.ice_connect_ms": _span(agent, "ice:checking", "ice:completed"),
        "agent.dtls_ms": _span(agent, "dtls:connecting", "dtls:connected"),
        "ice_path": {who: (p["local"]["type"] if p else None) for who, p in pairs.items()},
        "selected_pair": pairs,
        "ice_servers": len(list(ice_servers)) if not isinstance(ice_servers, (str, dict)) else 1,
        "relay_only": bool(relay_only),
        "sockets": {who: [list(r.local_addr) for r in pc.sockets] for who, pc in pcs.items()},
        # every socket bound on loopback, and every datagram sent to / received from loopback
        "sockets_loopback_only": all(
            is_loopback_address(r.local_addr[0]) and all(e[4] is None or is_loopback_address(e[4][0]) for e in r.log)
            for pc in pcs.values() for r in pc.sockets),
        "datagrams": {who: sum(len(r.log) for r in pc.sockets) for who, pc in pcs.items()},
        "timeline": sorted(
            ({"t_ms": (t - t_offer) * 1000.0, "peer": who, "event": e} for who, pc in pcs.items() for t, e in pc.timeline),
            key=lambda d: d["t_ms"],
        ),
        "media_start_ms": (t0 - t_offer) * 1000.0,
        "getstats": stats,
        "getstats_series": series,
        "speech": sp.name,
        "speech_source": sp.source,
        "synthetic_speech": bool(sp.synthetic),
        "seconds": len(x) / 16000,
    }
    for name, src, dst in (("caller_to_agent", "caller", "agent"), ("agent_to_caller", "agent", "caller")):
        tr, sink = tracks[src], sinks[dst]
        sender = SimpleNamespace(tx=SimpleNamespace(sample_rate=rate), sent_audio=tr.sent_audio)
        receiver = SimpleNamespace(received_audio=sink.received_audio)
        d: dict[str, Any] = _direction_metrics(sender, receiver, x) if quality else {}
        rs, ss = stats.get(dst, {}), stats.get(src, {})
        received, lost = rs.get("packets_received"), rs.get("packets_lost")
        playout = getattr(pcs[dst].getTransceivers()[0].receiver, "lab_playout", None)
        jb = playout.jb.stats if playout is not None else None
        bits = sum(rec.wire_bits(direction="tx", kinds=("rtp", "turn-rtp"), start=t0, end=t0 + tr.duration_s)[0]
                   for rec in pcs[src].sockets)
        transit = _send_to_arrival_s(tr, playout, facts) if playout is not None else None
        d.update({
            "send_to_arrival_ms": None if transit is None else transit * 1000.0,
            "late_frames": sink.late_frames if not lab else None,
            "rtt_ms": ss.get("rtt_ms"),
            "jitter_ms": rs.get("jitter_ms"),
            "loss_rate": (max(0, lost) / (received + max(0, lost))) if received else None,
            "late_loss_rate": float(jb.late_loss_rate) if jb is not None else None,
            "playout_delay_ms": (float(jb.playout_delay_ms) if jb is not None and not math.isnan(jb.playout_delay_ms)
                                 else None),
            "bitrate_kbps_wire": bits / max(tr.duration_s, 1e-9) / 1000.0,
            "pacing_error_p99_ms": tr.pacing_error_ms(99),
            "packets_sent": ss.get("packets_sent"),
            "packets_received": received,
            "packets_lost": lost,
            "outcomes": dict(playout.outcomes) if playout is not None else None,
            "underruns": sink.underruns,
        })
        if transit is not None and d["playout_delay_ms"] is not None:
            # frame capture + (pacing, encoding, SRTP, ICE, loopback, DTLS, depacketizing)
            # + jitter buffer + codec look-ahead: what mouth_to_ear_ms should add up to
            d["parts_sum_ms"] = facts.frame_ms + transit * 1000.0 + d["playout_delay_ms"] + facts.lookahead_ms
        if d.get("mouth_to_ear_ms") is not None:
            try:
                ie, bpl, _ = metrics.ie_bpl(codec, bitrate=nominal_bitrate, plc=True, wideband=bool(facts.wideband))
                em = metrics.r_factor(delay_ms=d["mouth_to_ear_ms"], loss_rate=d["loss_rate"] or 0.0, ie=ie, bpl=bpl,
                                      wideband=bool(facts.wideband))
                d["r_factor"], d["mos_cqe"] = em.r_factor, em.mos_cqe
            except VoicelabError:
                d["r_factor"] = d["mos_cqe"] = None
        out.update({f"{name}.{k}": v for k, v in d.items()})
    for relay in relays:
        for name, dd in (("caller_to_agent", relay.up), ("agent_to_caller", relay.down)):
            if dd.stats.transit_s:
                out[f"{name}.relay_transit_ms_median"] = float(np.median(dd.stats.transit_s) * 1000.0)
            out[f"{name}.relay_lost"] = dd.stats.lost
    if sp.synthetic:
        out["warnings"] = [audio.SYNTHETIC_WARNING]
    return out
