"""Paths real calls take, end to end: a phone through the PSTN, a SIP trunk and an SBC to the agent.

A path is spelled as its parts joined by ``+``:

``PSTN-PRESET+trunk[+sbc|+relay]``
    The phone side (a preset of :data:`voicelab.sim.paths.PSTN_PRESETS`, simulated hop by
    hop up to the carrier's media gateway, see :func:`voicelab.sim.paths.simulate_path`),
    then the **live** SIP trunk leg from the carrier's media gateway (the lab's caller,
    G.711) to the lab's agent on loopback, optionally through a real SBC (``sbc``:
    Kamailio + rtpengine, :class:`voicelab.net.sbc.KamailioSBC`) or the lab's own media
    relay (``relay``: :class:`voicelab.net.relay.UdpRelay` anchoring the media).

``browser+gateway+sip``
    A WebRTC caller (the lab's aiortc peer, standing for a browser) calls the lab's
    SIP<->WebRTC gateway (:class:`voicelab.gateway.Gateway`), which bridges it to the lab's
    SIP agent: Opus 48 kHz on the WebRTC leg transcoded to G.711 on the SIP leg, or with
    ``codec="pcmu"`` on both legs, payloads passed through. Every part is live and
    measured on one clock: WebRTC leg, the gateway itself, SIP leg, and the total, each way,
    with PESQ end to end (the tandem-coding cost).

With ``net="vnet"`` (CLI ``--net vnet``) the live trunk leg runs on a chain of Linux network
namespaces, trunk -- carrier link -- edge -- access link -- agent
(:class:`voicelab.net.netns_chain.NetnsChain`, root only), the SBC (or the lab's relay, or
a plain router) inside the edge namespace, and every hop of the leg is measured from
captures of both links (:func:`netns_trunk_call`); ``links=`` impairs the links (the lab's channel models in a userspace L2 link)
where the kernel has it.

:func:`trunk_peer_call` puts a SIP stack that is not the lab's on the trunk: SIPp (a
route-set-honouring scenario playing a G.711 pcap the lab makes from natural speech) or
baresip calls ``voicelab agent serve --mode record:DIR`` through Kamailio + rtpengine, and the
agent's recording is scored against what the trunk sent.

The result carries a per-hop delay table for the phone -> agent direction: the PSTN hops
(modelled, or measured in ``sim``) and the live leg (measured on loopback), adding up to
the path's one-way delay, against the ITU-T G.114 150 ms budget. The agent -> phone
direction reuses the PSTN hops (the phone network is modelled as symmetric) with the live
leg's own measured delay. Live legs are not deterministic; the result says so.

Quality is scored end to end as well (``end_to_end``, :func:`end_to_end_quality`): the
phone's mouth against what the agent received (PESQ, delay by cross-correlation), and the
agent's speech against the phone's ear after the phone side in reverse; R-factor and
MOS-CQE from the E-model over the whole path (:func:`path_emodel`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import numpy as np

from . import audio
from .errors import ParameterError

__all__ = ["parse_path", "path_call", "path_call_async", "browser_gateway_call", "G114_BUDGET_MS", "trunk_peer_call",
           "trunk_peer_call_async", "g711_pcap", "SIPP_TRUNK_SCENARIO", "TRUNK_PEERS", "path_turns", "path_turns_async",
           "browser_gateway_turns", "pstn_phone", "LiveHopChain", "end_to_end_quality", "path_emodel"]

#: ITU-T G.114: one-way mouth-to-ear delay transparent for most uses.
G114_BUDGET_MS = 150.0

_LIVE = ("trunk",)
_ANCHORS = ("sbc", "relay")


def parse_path(spec: str) -> dict[str, Any]:
    """Split ``"pstn-national-mobile+trunk+sbc"`` into its parts.

    Returns
    -------
    dict
        ``pstn`` (preset name), ``anchor`` (None, ``"sbc"`` or ``"relay"``).

    Raises
    ------
    ParameterError
        Unknown preset or part, or parts in an order that cannot connect (the message says
        what is expected).
    """
    from .sim.paths import PSTN_PRESETS

    if not isinstance(spec, str) or not spec.strip():
        raise ParameterError("a path is spelled like 'pstn-national-mobile+trunk+sbc'")
    parts = [p.strip().lower() for p in spec.split("+")]
    head, rest = parts[0], parts[1:]
    if head == "browser":
        if len(rest) == 2 and rest[0] == "gateway" and rest[1] in PSTN_PRESETS:
            return {"browser": True, "pstn": rest[1], "anchor": None}
        if rest != ["gateway", "sip"]:
            raise ParameterError("the browser path is 'browser+gateway+sip' (WebRTC -> gateway -> SIP agent) or "
                                 f"'browser+gateway+PRESET' (-> a phone over the PSTN; presets: {', '.join(sorted(PSTN_PRESETS))})")
        return {"browser": True, "pstn": None, "anchor": None}
    if head.startswith("browser"):
        raise ParameterError("the browser path is spelled 'browser+gateway+sip' or 'browser+gateway+PRESET'")
    if head not in PSTN_PRESETS:
        raise ParameterError(f"unknown phone-side preset {head!r}; known: {', '.join(sorted(PSTN_PRESETS))}")
    if not rest or rest[0] not in _LIVE:
        raise ParameterError(f"after {head!r} comes the SIP trunk: '{head}+trunk' (then optionally '+sbc' or '+relay')")
    anchor = None
    if len(rest) > 1:
        if rest[1] not in _ANCHORS or len(rest) > 2:
            raise ParameterError(f"after 'trunk' only one of {', '.join(_ANCHORS)} may follow, got {'+'.join(rest[1:])!r}")
        anchor = rest[1]
    return {"pstn": head, "anchor": anchor, "browser": False}


NETS = ("loopback", "vnet")


async def path_call_async(path: str, *, seconds: float = 4.0, speech: str = "default", seed: int = 0,
                          jitter_buffer: str = "fixed:60", quality: bool = True, codec: str = "opus",
                          net: str = "loopback", links: dict[str, Any] | None = None) -> dict[str, Any]:
    """Coroutine form of :func:`path_call`."""
    from .calls import sip_call
    from .net import ChannelConfig
    from .sim.paths import simulate_path

    p = parse_path(path)
    if net not in NETS:
        raise ParameterError(f"net must be one of {', '.join(NETS)}, got {net!r}")
    if p["browser"]:
        if net != "loopback":
            raise ParameterError("the browser path runs on loopback (the gateway's legs): no --net vnet yet")
        return await browser_gateway_call(seconds=seconds, speech=speech, jitter_buffer=jitter_buffer, quality=quality,
                                          codec=codec, pstn=p["pstn"])
    if links is not None and net != "vnet":
        raise ParameterError("link impairments of a path need net='vnet' (the namespace chain)")
    if net == "vnet":
        from .net.netns_chain import NetnsChain

        NetnsChain(links=links)  # bad link settings fail here, before the phone side is simulated
    with tempfile.TemporaryDirectory(prefix="voicelab-hybrid-") as tmp:
        wav = os.path.join(tmp, "trunk.wav")
        # the PSTN side runs in sim up to the carrier's media gateway; the live trunk leg takes over there
        pstn = await asyncio.get_running_loop().run_in_executor(None, lambda: simulate_path(
            p["pstn"], speech=speech, seed=seed, max_speech_s=float(seconds), quality=quality,
            open_end=True, out_wav=wav, drop_gateway=True))
        mouth16 = _mouth16(pstn)[: int(float(seconds) * 16000)]  # the speech; the sim's reference runs on 2 s
        if net == "vnet":
            live = await netns_trunk_call(wav, anchor=p["anchor"], seconds=min(60.0, float(seconds) + pstn.mouth_to_ear_ms / 1000.0 + 0.2),
                                          jitter_buffer=jitter_buffer, seed=seed, quality=quality, links=links,
                                          agent_speech=mouth16, keep_audio=True)
        else:
            live = await sip_call(codec="pcmu", seconds=min(60.0, float(seconds) + pstn.mouth_to_ear_ms / 1000.0 + 0.2),
                                  input=wav, jitter_buffer=jitter_buffer, seed=seed, quality=quality,
                                  net=ChannelConfig() if p["anchor"] == "relay" else None,
                                  sbc="kamailio" if p["anchor"] == "sbc" else None,
                                  agent_speech=mouth16, keep_audio=True)
    recordings = live.pop("audio")
    e2e = await asyncio.get_running_loop().run_in_executor(None, lambda: end_to_end_quality(
        p["pstn"], pstn, recordings, live, mouth16, seed=seed, quality=quality))
    return _path_result(path, p, pstn, live, net=net, e2e=e2e)


def _mouth16(pstn: Any) -> np.ndarray:
    """The phone's speech (the mouth) at 16 kHz: what the agent also plays on the way back."""
    x = np.asarray(pstn.reference, dtype=np.float64)
    return audio.resample(x, int(pstn.reference_rate), 16000) if int(pstn.reference_rate) != 16000 else x


def _path_codecs(preset: str) -> list[Any]:
    """The codec hops of a preset's phone side (trailing gateway dropped: the live leg stands for it)."""
    from .sim.paths import path_hops

    hops = path_hops(preset, open_end=True)
    while hops and hops[-1].kind == "gateway":
        hops = hops[:-1]
    return hops


def path_emodel(preset: str, *, delay_ms: float, loss_rate: float, live_codec: str = "pcmu") -> dict[str, Any]:
    """E-model rating (G.107) of a whole PSTN path: phone side + live trunk leg, one direction.

    ``Ta`` is the measured end-to-end delay; ``Ie`` is the sum of the equipment impairments of
    every coding on the path (the phone side's codec legs and the live leg's codec: G.113's
    planning rule, impairments of tandem codings add on the R scale); ``Bpl`` and the loss are
    the live leg's (the phone side is circuit-switched or loss-free in the model).

    Returns
    -------
    dict
        ``r_factor``, ``mos_cqe``, ``ie_sum`` (the summed Ie), ``codings`` (codec names in order).
    """
    from . import metrics

    codings = [(h.codec, h.codec_params.get("bitrate")) for h in _path_codecs(preset) if h.codec] + [(live_codec, None)]
    ie_sum = 0.0
    for codec, bitrate in codings:
        ie, _, _ = metrics.ie_bpl(codec, bitrate=bitrate, plc=True, wideband=False)
        ie_sum += float(ie)
    _, bpl, _ = metrics.ie_bpl(live_codec, plc=True, wideband=False)
    em = metrics.r_factor(delay_ms=float(delay_ms), loss_rate=float(loss_rate), ie=min(ie_sum, 95.0), bpl=bpl)
    return {"r_factor": em.r_factor, "mos_cqe": em.mos_cqe, "ie_sum": ie_sum, "codings": [c for c, _ in codings]}


def end_to_end_quality(preset: str, pstn: Any, recordings: dict[str, Any], live: dict[str, Any], mouth16: np.ndarray,
                       *, seed: int = 0, quality: bool = True) -> dict[str, dict[str, Any]]:
    """Score a PSTN path end to end, both ways: the phone's mouth -> what the agent received, and back.

    Phone -> agent: the phone's speech (``pstn.reference``, sample 0 at the moment the
    caller's stream starts: the phone side's output includes its delay) against the agent's
    recording of the live leg, on the loop clock (:func:`voicelab.metrics.direction.measure_direction`).
    Agent -> phone: the agent played the same speech; what the carrier's media gateway (the
    lab's caller) received crosses the phone side in reverse in ``sim`` (its hops in reverse
    order: G.711 towards the mobile core, AMR-NB to the terminal, the same modelled delays),
    and the phone's ear is scored against what the agent sent. PESQ-WB is given only where
    the reference is wideband (a path without a codec leg before the trunk). R-factor and
    MOS-CQE: :func:`path_emodel` with the measured delay and the live leg's loss.

    Returns
    -------
    dict
        ``caller_to_agent`` / ``agent_to_caller``: ``mouth_to_ear_ms``, ``delay_confidence``,
        ``pesq_nb``, ``pesq_wb``, ``r_factor``, ``mos_cqe``, ``ie_sum``, and
        ``phone_side_pesq_nb`` (the phone side alone on the same speech: the mouth against
        the gateway's audio, or the gateway's audio against the ear).
    """
    from .metrics.direction import measure_direction
    from .sim.paths import simulate_path

    out: dict[str, dict[str, Any]] = {}
    wideband = int(pstn.reference_rate) >= 16000
    # phone -> agent: the mouth, placed at the caller's first sample, against the agent's recording
    sent, t_sent, recv, t_recv, rate = recordings["caller_to_agent"]
    lag = int(round(float(pstn.mouth_to_ear_ms) * rate / 1000.0))
    mouth = audio.resample(mouth16, 16000, rate)[: max(len(sent) - lag, 0)]
    up: dict[str, Any] = {}
    if quality:
        up = measure_direction(mouth, t_sent, np.asarray(recv, dtype=np.float64), t_recv, rate, mouth16)
        # the phone side alone on the same speech: the mouth against what the carrier's media gateway sent
        up["phone_side_pesq_nb"] = measure_direction(mouth, t_sent, np.asarray(sent, dtype=np.float64), t_sent, rate,
                                                     mouth16)["pesq_nb"]
    # agent -> phone: the caller's recording crosses the phone side in reverse
    sent, t_sent, recv, t_recv, rate = recordings["agent_to_caller"]
    down: dict[str, Any] = {}
    if quality and len(recv):
        with tempfile.TemporaryDirectory(prefix="voicelab-e2e-") as tmp:
            src, ear_wav = os.path.join(tmp, "gw.wav"), os.path.join(tmp, "ear.wav")
            audio.write_wav(src, np.asarray(recv, dtype=np.float64), int(rate))
            simulate_path(_path_codecs(preset)[::-1], input=src, seed=seed + 7919, max_speech_s=len(recv) / rate + 1.0,
                          quality=False, open_end=True, out_wav=ear_wav)
            ear, ear_rate = audio.read_wav(ear_wav)
        ear = np.asarray(ear, dtype=np.float64)
        if int(ear_rate) != rate:
            ear = audio.resample(ear, int(ear_rate), rate)
        down = measure_direction(np.asarray(sent, dtype=np.float64), t_sent, ear, t_recv, rate, mouth16)
        gw = np.asarray(recv, dtype=np.float64)  # the phone side alone: the gateway's audio against the ear
        down["phone_side_pesq_nb"] = measure_direction(gw, t_recv, ear, t_recv, rate,
                                                       audio.resample(gw, rate, 16000))["pesq_nb"]
    for name, d in (("caller_to_agent", up), ("agent_to_caller", down)):
        d = dict(d)
        if not wideband:
            d["pesq_wb"] = None  # the reference is the first codec leg's narrowband input
        d["r_factor"] = d["mos_cqe"] = d["ie_sum"] = None
        if d.get("mouth_to_ear_ms") is not None and live.get(f"{name}.loss_rate") is not None:
            em = path_emodel(preset, delay_ms=d["mouth_to_ear_ms"], loss_rate=live[f"{name}.loss_rate"])
            d.update({k: em[k] for k in ("r_factor", "mos_cqe", "ie_sum")})
        out[name] = d
    return out


def _path_result(path: str, p: dict[str, Any], pstn: Any, live: dict[str, Any], *, net: str,
                 e2e: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The per-hop result of a PSTN path: the phone side's hops, then the live leg's."""
    up_live = live.get("caller_to_agent.mouth_to_ear_ms")
    down_live = live.get("agent_to_caller.mouth_to_ear_ms")
    hops = pstn.hops.to_dict(orient="records")
    if net == "vnet":
        table = hops + [dict(h) for h in live["hops_up"]]
        leg_note = "the trunk leg is a live call on the namespace chain (trunk -- carrier edge -- agent)"
    else:
        leg_name = {None: "SIP trunk -> agent (live, loopback, G.711)",
                    "relay": "SIP trunk -> lab media relay -> agent (live, loopback, G.711)",
                    "sbc": "SIP trunk -> Kamailio + rtpengine -> agent (live, loopback, G.711)"}[p["anchor"]]
        table = hops + [{"hop": leg_name, "kind": "gateway", "delay_ms": up_live, "how": "measured (live)",
                         "source": "the lab's caller as the carrier's media gateway: packetization + network + agent jitter buffer"}]
        leg_note = "the trunk leg is a live loopback call"
    pstn_ms = float(pstn.mouth_to_ear_ms)
    one_way = None if up_live is None else pstn_ms + float(up_live)
    back = None if down_live is None else pstn_ms + float(down_live)
    return {
        "path": path,
        "hops": table,
        "pstn_ms": pstn_ms,
        "pstn_parts_ms": float(pstn.parts_ms),
        "phone_to_agent_ms": one_way,
        "agent_to_phone_ms": back,
        "g114_budget_ms": G114_BUDGET_MS,
        "within_g114": None if one_way is None else one_way <= G114_BUDGET_MS,
        "pstn_pesq_nb": pstn.pesq_nb,
        "trunk_pesq_nb": live.get("caller_to_agent.pesq_nb"),
        "end_to_end": e2e,
        "setup_ms": live.get("setup_ms"),
        "sbc": live.get("sbc"),
        "sbc_media_legs": live.get("sbc_media_legs"),
        "speech": pstn.speech,
        "synthetic_speech": pstn.synthetic_speech,
        "deterministic": False,
        "note": "the PSTN side is simulated (sim) and modelled per hop; " + leg_note,
        "net": net,
        "live": {k: v for k, v in live.items() if k not in ("sbc_media_legs", "hops_up", "hops_down")},
        **({"hops_agent_to_phone": hops + [dict(h) for h in live["hops_down"]], "links": live.get("links")}
           if net == "vnet" else {}),
    }


_EDGE_NAMES = {None: "carrier edge router (IP forwarding)", "relay": "carrier edge: the lab's media relay (userspace)",
               "sbc": "carrier edge SBC: rtpengine (userspace relay)"}


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


async def netns_trunk_call(wav: str, *, anchor: str | None, seconds: float, jitter_buffer: str = "fixed:60",
                           seed: int = 0, quality: bool = True, links: dict[str, Any] | None = None,
                           agent_speech: np.ndarray | None = None, keep_audio: bool = False) -> dict[str, Any]:
    """The live trunk leg on the namespace chain: the lab's caller (trunk) -> carrier edge -> the lab's agent.

    Built by :class:`voicelab.net.netns_chain.NetnsChain`: the caller's and the agent's
    sockets live in their own namespaces, the edge is a router (``anchor=None``), the lab's
    media relay (``"relay"``; SIP crosses the edge routed) or Kamailio + rtpengine started
    inside the edge namespace (``"sbc"``; the edge does not forward, so signalling and media
    cross only through the SBC). Both links are captured (dumpcap) so each hop's delay is
    measured per RTP packet on the kernel's clock.

    Parameters
    ----------
    wav : str
        What the trunk sends (the phone side's output).
    anchor : {None, "relay", "sbc"}
    seconds : float
        Call length, s.
    links : dict, optional
        ``{"carrier": ..., "access": ...}`` link impairments (the lab's channel models on a userspace L2 link; see
        :class:`~voicelab.net.netns_chain.NetnsChain`).
    agent_speech, keep_audio
        As for :func:`voicelab.calls.sip_call` (what the agent plays; the recordings in ``audio``).
    others
        As for :func:`voicelab.calls.sip_call`.

    Returns
    -------
    dict
        As :func:`voicelab.calls.sip_call` (``caller_to_agent.*``, ``agent_to_caller.*``),
        plus ``hops_up`` / ``hops_down`` (carrier link, edge, access link: medians of the
        per-packet captures; then the endpoints' part: packetization + jitter buffer, the
        measured mouth-to-ear delay minus the network hops), ``hop_samples`` (packets each
        median is over), ``links`` (the link settings), ``sbc_media_legs`` with ``"sbc"``.
    """
    from .agent import Agent
    from .calls import direction_report, open_caller
    from .net.netns_chain import CHAIN_ADDRESSES as A
    from .net.netns_chain import NetnsChain, rtp_hop_delays
    from .net.relay import UdpRelay
    from .rtp.live import LiveAudioStream
    from .sip.ua import CallEnded, CallEstablished, CallFailed

    if anchor not in (None, "relay", "sbc"):
        raise ParameterError(f"the carrier edge is a router (None), 'relay' or 'sbc', got {anchor!r}")
    sp = audio.load_speech(input=wav, max_speech_s=float(seconds), codec="pcmu")
    x = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 16000)
    loop = asyncio.get_running_loop()
    seeds = [int(q.generate_state(1)[0]) % 2**31 for q in np.random.SeedSequence(seed).spawn(4)]
    chain = NetnsChain(links=links, forward=anchor != "sbc", seed=seeds[3]).start()
    sbc = relay = stream = None
    agent = None
    try:
        ifc, ifa = chain.iface("trunk"), chain.iface("agent")
        agent_uri = f"sip:agent@{A['agent']}:5060"
        agent = Agent(codecs=["pcmu"], host=A["agent"], port=5060, contact=agent_uri, jitter_buffer=jitter_buffer,
                      iface=ifa, seed=seeds[1])
        agent._speech_override = x if agent_speech is None else np.asarray(agent_speech, dtype=np.float64)
        await agent.start()
        if anchor == "sbc":
            from .net.sbc import KamailioSBC

            sbc = KamailioSBC(target=(A["agent"], 5060), host=A["edge"], port=5060, iface=chain.iface("edge"),
                              exec_prefix=chain.prefix("edge"))
            await sbc.start()
        await chain.start_captures()
        ua, sip = await open_caller(ifc, codec="pcmu", rtcp_mux=True, seed=seeds[0], host=A["trunk"])
        try:
            media_port = ifc.free_port("udp")
            offer_port = media_port
            if anchor == "relay":
                relay = await UdpRelay(chain.iface("edge"), (A["agent"], 9), listen=(A["edge"], 0), seed=seeds[3],
                                       client=(A["trunk"], media_port)).start()
                ua.media_address = A["edge"]  # the SBC-like rewrite of the offer: the agent sends via the relay
                offer_port = relay.back_address[1]
            call = ua.invite(sbc.uri if sbc else agent_uri, now=loop.time(),
                             media_port=offer_port)
            sip.flush()
            ev = await sip.wait_for(CallEstablished, CallFailed, timeout=20.0)
            if isinstance(ev, CallFailed):
                raise ParameterError(f"the call over the namespace chain failed: {ev.status} {getattr(ev, 'reason', '')}")
            m = call.media
            # with the relay the agent's media comes from the relay, not from the address its SDP names
            stream = LiveAudioStream.for_media(ifc, m, local_addr=(A["trunk"], media_port), jitter_buffer=jitter_buffer,
                                               seed=seeds[2], cname="trunk@voicelab", source_filter=relay is None)
            await stream.open()
            if relay is not None:
                relay.target = (m.remote_address, m.remote_port)
                stream.set_remote(relay.front_address)
            t0 = loop.time() + 0.02
            stream.send(x, 16000, start_at=t0)
            agent_stream = next(iter(agent.streams.values()), None)
            if agent_stream is None:
                raise ParameterError("the agent has no media stream for the call")
            end = t0 + len(x) / 16000 + 0.5
            await asyncio.wait_for(asyncio.gather(stream.played_through(end), agent_stream.played_through(end)),
                                   seconds + 20)
            ua.bye(call, now=loop.time())
            sip.flush()
            await sip.wait_for(CallEnded, timeout=10.0)
            await asyncio.wait_for(agent.ended(1), 10.0)
        finally:
            if stream is not None:
                await stream.close()
            await sip.close()
        captures = await chain.stop_captures()
    finally:
        if relay is not None:
            await relay.close()
        if agent is not None:
            await agent.close()
        if sbc is not None:
            await sbc.stop()
        await chain.close()

    out: dict[str, Any] = {"transport": "sip", "net": "vnet", "codec": m.codec, "setup_ms": call.times.setup_ms,
                           "post_dial_delay_ms": call.times.post_dial_delay_ms, "speech": sp.name,
                           "synthetic_speech": bool(sp.synthetic), "seconds": len(x) / 16000, "anchor": anchor,
                           "links": {k: {d: c.to_dict() if hasattr(c, "to_dict") else str(c) for d, c in v.items()}
                                     for k, v in chain.links.items()}}
    for name, s_, r_ in (("caller_to_agent", stream, agent_stream), ("agent_to_caller", agent_stream, stream)):
        ref = x if name == "caller_to_agent" or agent_speech is None else agent._speech_override
        out.update({f"{name}.{k}": v for k, v in direction_report(s_, r_, ref, quality=quality).items()})
        if keep_audio:
            out.setdefault("audio", {})[name] = (*s_.sent_audio(), *r_.received_audio(), int(s_.tx.sample_rate))
    per = rtp_hop_delays(captures)
    out["hop_samples"] = {d: {h: len(v) for h, v in per[d].items()} for d in per}
    for d, key in (("up", "caller_to_agent"), ("down", "agent_to_caller")):
        order = ("carrier", "edge", "access") if d == "up" else ("access", "edge", "carrier")
        names = {"carrier": "carrier link trunk -> edge" if d == "up" else "carrier link edge -> trunk",
                 "access": "access link edge -> agent" if d == "up" else "access link agent -> edge",
                 "edge": _EDGE_NAMES[anchor]}
        rows = []
        for h in order:
            cfg = chain.links[h]["up" if d == "up" else "down"] if h != "edge" else None
            src = chain.describe(h, d) if cfg is not None else "leaving the carrier link -> entering the access link"
            rows.append({"hop": names[h], "kind": "network" if h != "edge" else "sbc", "delay_ms": _median(per[d][h]),
                         "how": "measured (capture)", "source": f"dumpcap on both ends, median of {len(per[d][h])} RTP packets; {src}"})
        total = out.get(f"{key}.mouth_to_ear_ms")
        net_ms = sum(r["delay_ms"] for r in rows if r["delay_ms"] is not None)
        ends = None if total is None else float(total) - net_ms
        rows.append({"hop": ("trunk packetization + agent jitter buffer" if d == "up"
                             else "agent packetization + trunk jitter buffer"),
                     "kind": "endpoint", "delay_ms": ends, "how": "measured (live)",
                     "source": "the leg's mouth-to-ear delay (audio, one clock) minus the network hops above"})
        out[f"hops_{d}"] = rows
    if sbc is not None:
        out["sbc"] = "kamailio+rtpengine"
        out["sbc_media_legs"] = sbc.media_stats()
        out["route_set"] = route_set_report(sbc._keep_logs.get("kamailio", ""))
    if relay is not None:
        out["relay_bytes"] = int(relay.up.stats.bytes_forwarded + relay.down.stats.bytes_forwarded)
    return out


async def browser_gateway_call(*, seconds: float = 4.0, speech: str = "default", jitter_buffer: str = "fixed:60",
                               quality: bool = True, codec: str = "opus", sip_codec: str = "pcmu",
                               pstn: str | None = None) -> dict[str, Any]:
    """A WebRTC caller -> the lab's gateway -> the lab's SIP agent (``play`` mode), measured hop by hop.

    With ``pstn`` (a preset of :data:`voicelab.sim.paths.PSTN_PRESETS`) the gateway's SIP
    leg reaches a **phone** instead: a SIP UAS standing for the carrier's media gateway
    (G.711, the preset's media-gateway buffer) whose audio crosses the preset's other hops
    live, frame by frame, both ways (:class:`LiveHopChain`: the codecs in tandem, e.g.
    G.711 <-> AMR-NB, and each modelled hop's delay as a delay line on the loop clock). The
    tables then go on to the phone's ear (browser -> phone) and start at its mouth
    (phone -> browser); the keys keep their names (``browser_to_agent`` is browser -> phone).

    Parameters
    ----------
    codec : {"opus", "pcmu", "pcma", "g722"}
        The WebRTC leg's codec; equal to ``sip_codec`` (G.711/G.722): pass-through.
    sip_codec : str
        The SIP leg's codec.
    others
        As for :func:`path_call`.

    Returns
    -------
    dict
        ``hops`` per direction (``browser_to_agent``, ``agent_to_browser``: WebRTC leg,
        gateway, SIP leg, each measured live), ``*.total_ms``, ``*.parts_ms``,
        ``*.pesq_nb`` / ``*.pesq_wb`` end to end, ``passthrough``, ``webrtc_codec``,
        ``sip_codec``, ``gateway_forward_ms`` (pass-through).
    """
    from . import codecs as codec_registry
    from .agent import Agent
    from .calls import measure_direction
    from .gateway import Gateway, bridge_delay_ms
    from .net.iface import LoopbackInterface
    from .sim import Scenario, load_speech
    from .webrtc.media import AudioSink, SourceTrack
    from .webrtc.peer import make_peer_connection, prefer_codec
    from .webrtc.signaling import SignalingClient

    if codec not in ("opus", "pcmu", "pcma", "g722"):
        raise ParameterError(f"the browser's codec must be opus, pcmu, pcma or g722, got {codec!r}")
    sp = load_speech(Scenario(speech=speech, max_speech_s=float(seconds)))
    x16 = np.asarray(sp.samples, dtype=np.float64)
    if sp.sample_rate != 16000:
        x16 = audio.resample(x16, sp.sample_rate, 16000)
    loop = asyncio.get_running_loop()
    rate = int(codec_registry.get(codec).sample_rate)
    if pstn is not None:
        if sip_codec not in ("pcmu", "pcma"):
            raise ParameterError(f"the PSTN's trunk leg is G.711 (pcmu/pcma), got sip_codec={sip_codec!r}")
        far = pstn_phone(pstn, x16)
    else:
        far = Agent(codecs=[sip_codec], mode="play", speech=speech, jitter_buffer=jitter_buffer)
        far._speech_override = x16  # both ends say the same thing: one reference
    async with far as agent:
        async with Gateway(target=agent.uri, sip_codec=sip_codec, webrtc_codecs=(codec,),
                           jitter_buffer=jitter_buffer) as gw:
            iface = LoopbackInterface()
            sink = AudioSink(rate)
            pc = make_peer_connection(iface, codec=codec, forward_to_track=False, sink=sink, jitter_buffer=jitter_buffer)
            track = SourceTrack(audio.resample(x16, 16000, rate) if rate != 16000 else x16, rate)
            client = SignalingClient(iface, gw.front.url)
            try:
                pc.addTrack(track)
                prefer_codec(pc.getTransceivers()[0], codec)
                t_offer = loop.time()
                t_connected = await client.dial(pc)
                agent_stream = next(iter(agent.streams.values()))
                t0 = track.start(loop.time() + 0.05)
                end = t0 + track.duration_s + 0.6
                await asyncio.wait_for(asyncio.gather(sink.played_through(end), agent_stream.played_through(end)),
                                       track.duration_s + 20.0)
                await client.bye()
            finally:
                await client.close()
                await pc.close()
            await asyncio.wait_for(gw.front.ended(1), 10.0)
            web = next(iter(gw.front.finished.values()))
            leg = gw.legs[web.id]

    def m(sent: tuple, recv: tuple, rate_s: int, rate_r: int) -> dict[str, Any]:
        (a, ta), (b, tb) = sent, recv
        if rate_s != rate_r:
            b = audio.resample(b, rate_r, rate_s)
        return measure_direction(a, ta, b, tb, rate_s, x16)

    out: dict[str, Any] = {"path": "browser+gateway+sip", "webrtc_codec": web.codec, "sip_codec": leg.sip_codec,
                           "passthrough": leg.passthrough, "setup_ms": (t_connected - t_offer) * 1000.0,
                           "sip_setup_ms": leg.setup_ms, "speech": sp.name, "synthetic_speech": bool(sp.synthetic),
                           "deterministic": False}
    sip_rate = int(leg.stream.rx.sample_rate)
    if pstn is not None:
        return _phone_result(out, pstn, agent, agent_stream, leg, web, track, sink, rate, sip_rate, m)
    total_up = m(track.sent_audio(), agent_stream.received_audio(), rate, sip_rate)
    total_down = m(agent_stream.sent_audio(), sink.received_audio(), sip_rate, rate)
    if leg.passthrough:
        fw = leg.forward_delay_ms()
        out["gateway_forward_ms"] = fw
        hops_up = [("browser -> agent, payloads passed through the gateway (one coding)", total_up["mouth_to_ear_ms"],
                    "measured (live)")]
        hops_down = [("agent -> browser, payloads passed through the gateway (one coding)",
                      total_down["mouth_to_ear_ms"], "measured (live)")]
        hops_up.insert(1, ("gateway (pass-through, median per packet)", fw["browser_to_sip_median"], "measured (live)"))
        hops_down.insert(1, ("gateway (pass-through, median per packet)", fw["sip_to_browser_median"], "measured (live)"))
        parts_up, parts_down = total_up["mouth_to_ear_ms"], total_down["mouth_to_ear_ms"]
    else:
        bridge = bridge_delay_ms(leg, web)
        w_up = m(track.sent_audio(), web.received_audio(), rate, rate)
        s_up = m(leg.stream.sent_audio(), agent_stream.received_audio(), sip_rate, sip_rate)
        s_down = m(agent_stream.sent_audio(), leg.stream.received_audio(), sip_rate, sip_rate)
        w_down = m(web.sent_audio(), sink.received_audio(), rate, rate)
        hops_up = [(f"WebRTC leg ({web.codec}): frame + network + gateway buffer + look-ahead", w_up["mouth_to_ear_ms"], "measured (live)"),
                   ("gateway: resampling (streaming FIR)", bridge["browser_to_sip"], "measured (live)"),
                   (f"SIP leg ({leg.sip_codec}): frame + network + agent buffer", s_up["mouth_to_ear_ms"], "measured (live)")]
        hops_down = [(f"SIP leg ({leg.sip_codec}): frame + network + gateway buffer", s_down["mouth_to_ear_ms"], "measured (live)"),
                     ("gateway: resampling (streaming FIR)", bridge["sip_to_browser"], "measured (live)"),
                     (f"WebRTC leg ({web.codec}): frame + network + browser buffer + look-ahead", w_down["mouth_to_ear_ms"], "measured (live)")]
        parts_up = sum(h[1] for h in hops_up if h[1] is not None)
        parts_down = sum(h[1] for h in hops_down if h[1] is not None)
    for name, hops, total, parts in (("browser_to_agent", hops_up, total_up, parts_up),
                                     ("agent_to_browser", hops_down, total_down, parts_down)):
        out[f"{name}.hops"] = [{"hop": h, "delay_ms": d, "how": how} for h, d, how in hops]
        out[f"{name}.total_ms"] = total["mouth_to_ear_ms"]
        out[f"{name}.parts_ms"] = parts
        out[f"{name}.pesq_nb"] = total.get("pesq_nb")
        out[f"{name}.pesq_wb"] = total.get("pesq_wb")
    return out


def path_call(path: str, **kw: Any) -> dict[str, Any]:
    """A call along a real-world path: PSTN preset (sim) + live SIP trunk leg [+ SBC or relay] to the agent.

    Parameters
    ----------
    path : str
        See the module docstring (e.g. ``"pstn-national-mobile+trunk+sbc"``).
    seconds : float
        Speech length.
    speech : str
        Named speech (default: the natural corpus).
    seed : int
    jitter_buffer : str
        The agent's buffer on the trunk leg.
    quality : bool
        Compute PESQ.
    net : {"loopback", "vnet"}
        Where the live trunk leg runs: real sockets on 127.0.0.1, or the namespace chain
        (every hop of the leg measured from captures; root only).
    links : dict, optional
        With ``net="vnet"``: ``{"carrier": ..., "access": ...}`` link impairments (the lab's channel models),
        each a :class:`~voicelab.net.ChannelConfig`, its dict, or ``{"up": ..., "down": ...}``.

    Returns
    -------
    dict
        ``hops`` (per-hop table, each ``measured (sim)``, ``measured (live)``,
        ``measured (capture)`` (``net="vnet"``) or ``modelled`` with its source),
        ``hops_agent_to_phone`` (``net="vnet"``), ``phone_to_agent_ms`` (their sum),
        ``agent_to_phone_ms``, ``within_g114``, ``pstn_pesq_nb``, ``trunk_pesq_nb``,
        ``sbc_media_legs`` (with ``+sbc``), ``live`` (the trunk call's own metrics).
    """
    from .realtime import run_sync

    return run_sync(lambda: path_call_async(path, **kw))


# ---------------------------------------------------------------------------------------
# Real peers as the trunk: SIPp or baresip calling ``voicelab agent serve`` through the SBC
# ---------------------------------------------------------------------------------------

#: A SIPp UAC that honours the route set: the 200's Record-Route becomes the Route set of
#: the ACK and the BYE (``rrs="true"``, ``[routes]``, ``[next_url]``: RFC 3261 12.1.2 / 12.2.1.1),
#: and plays the pcap ``speech.pcap`` (G.711 mu-law RTP, 20 ms) into the call.
SIPP_TRUNK_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="voicelab trunk: INVITE through a proxy, route set, pcap media, BYE">
  <send retrans="500"><![CDATA[

INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: "trunk" <sip:trunk@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:trunk@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=trunk 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=ptime:20

]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[

ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: "trunk" <sip:trunk@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:trunk@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <nop><action><exec play_pcap_audio="speech.pcap"/></action></nop>
  <pause milliseconds="{pause_ms}"/>
  <send retrans="500"><![CDATA[

BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: "trunk" <sip:trunk@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:trunk@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""

TRUNK_PEERS = ("sipp", "baresip")

_BARESIP_MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules",
                        "/usr/lib/x86_64-linux-gnu/baresip/modules", "/usr/lib/aarch64-linux-gnu/baresip/modules")


def g711_pcap(samples: np.ndarray, sample_rate: int, path: str | os.PathLike, *, ptime_ms: int = 20,
              ssrc: int = 0x7E57AB1E) -> str:
    """Write ``samples`` as a G.711 mu-law RTP stream in a pcap that SIPp's ``play_pcap_audio`` plays.

    Parameters
    ----------
    samples : numpy.ndarray
        Mono float audio in [-1, 1].
    sample_rate : int
        Its rate, Hz (resampled to 8 kHz).
    path : path-like
        Output file (classic pcap, Ethernet link type: SIPp strips a 14-byte link header).
    ptime_ms : int
        Packet time, ms (timestamps in the pcap pace SIPp's sending).
    ssrc : int
        RTP SSRC.

    Returns
    -------
    str
        ``path``.
    """
    import struct

    from .codecs.g711 import ulaw_encode
    from .net.pcap import udp_ipv4_packet

    x = np.asarray(samples, dtype=np.float64)
    if sample_rate != 8000:
        x = audio.resample(x, sample_rate, 8000)
    pcm = audio.to_int16(x)
    n = 8 * int(ptime_ms)
    codes = ulaw_encode(np.concatenate([pcm, np.zeros((-len(pcm)) % n, dtype=np.int16)]))
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(len(codes) // n):
            rtp = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0x00, (1000 + i) & 0xFFFF, (i * n) & 0xFFFFFFFF, ssrc)
            pkt = b"\0" * 12 + b"\x08\x00" + udp_ipv4_packet(("192.0.2.1", 6000), ("192.0.2.2", 6000),
                                                              rtp + codes[i * n:(i + 1) * n].tobytes(), ident=i)
            t = i * ptime_ms / 1000.0
            fh.write(struct.pack("<IIII", int(t), int(round((t - int(t)) * 1e6)), len(pkt), len(pkt)) + pkt)
    return str(path)


def aligned_pesq_nb(reference: np.ndarray, ref_rate: int, degraded: np.ndarray, deg_rate: int) -> tuple[float | None, float]:
    """PESQ-NB of ``degraded`` against ``reference`` after removing their offset (no shared clock).

    Returns
    -------
    (float or None, float)
        PESQ-NB (None when too little audio overlaps) and the offset removed, ms.
    """
    from . import metrics

    r = audio.resample(np.asarray(reference, dtype=np.float64), ref_rate, 8000)
    d = audio.resample(np.asarray(degraded, dtype=np.float64), deg_rate, 8000)
    est = audio.estimate_delay(r, d, 8000, max_delay_ms=1500.0)
    shift = int(round(est.delay_samples))
    d, r = (d[shift:], r) if shift >= 0 else (d, r[-shift:])
    n = min(len(r), len(d))
    if n < 8000:
        return None, shift / 8.0
    return float(metrics.pesq(r[:n], d[:n], 8000, mode="nb")), shift / 8.0


async def _start_agent_serve(port: int, record_dir: str, *, host: str = "127.0.0.1") -> asyncio.subprocess.Process:
    """``voicelab agent serve --mode record:DIR`` as a subprocess; returns once it listens."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicelab", "agent", "serve", "--sip", f"{host}:{port}", "--codecs", "pcmu,pcma",
        "--mode", f"record:{record_dir}", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    seen = b""
    try:
        while b"voicelab agent:" not in seen:
            line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
            if not line:
                raise ParameterError(f"voicelab agent serve did not start: {seen.decode(errors='replace')[-500:]}")
            seen += line
    except BaseException:
        await _stop_process(proc)
        raise
    return proc


async def _stop_process(proc: asyncio.subprocess.Process, sig: int | None = None) -> str:
    """Stop ``proc`` (SIGINT, then SIGKILL after 10 s) and return what it printed."""
    import signal

    if proc.returncode is None:
        try:
            os.killpg(proc.pid, sig or signal.SIGINT)
        except ProcessLookupError:
            pass
    try:
        out = await asyncio.wait_for(proc.stdout.read(), 10.0) if proc.stdout is not None else b""
        await asyncio.wait_for(proc.wait(), 10.0)
    except asyncio.TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
        out = b""
    return out.decode(errors="replace")


async def _run_trunk_peer(peer: str, tmp: str, target: tuple[str, int], x8: np.ndarray, seconds: float,
                          *, host: str = "127.0.0.1") -> dict[str, Any]:
    """Run SIPp or baresip calling ``sip:agent@target`` once; its exit status and output."""
    import shutil

    from .errors import ToolUnavailableError
    from .net.iface import free_port

    if peer == "sipp":
        exe = shutil.which("sipp")
        if not exe:
            raise ToolUnavailableError("sipp is not installed (Debian package 'sip-tester')")
        g711_pcap(x8, 8000, os.path.join(tmp, "speech.pcap"))
        scen = os.path.join(tmp, "trunk.xml")
        with open(scen, "w") as fh:
            fh.write(SIPP_TRUNK_SCENARIO.replace("{pause_ms}", str(int(seconds * 1000) + 600)))
        argv = [exe, f"{target[0]}:{target[1]}", "-sf", scen, "-s", "agent", "-m", "1", "-i", host,
                "-p", str(free_port(kind="udp", host=host)), "-mp", str(free_port(kind="udp", host=host)), "-nostdin",
                "-timeout", "30s", "-timeout_error", "-trace_msg", "-message_file", os.path.join(tmp, "sipp_msg.log"),
                "-trace_err", "-error_file", os.path.join(tmp, "sipp_err.log")]
    elif peer == "baresip":
        exe = shutil.which("baresip")
        if not exe:
            raise ToolUnavailableError("baresip is not installed (Debian package 'baresip-core')")
        mdir = next((d for d in _BARESIP_MODULE_DIRS if os.path.exists(os.path.join(d, "aufile.so"))), None)
        if mdir is None:
            raise ToolUnavailableError("baresip's aufile module is missing (Debian package 'baresip-core')")
        conf = os.path.join(tmp, "baresip")
        rec = os.path.join(tmp, "baresip-rec")
        os.makedirs(conf)
        os.makedirs(rec)
        wav = os.path.join(tmp, "trunk-8k.wav")
        audio.write_wav(wav, x8, 8000)
        lo = free_port(kind="udp", host=host) // 2 * 2
        sip_port = free_port(kind="udp", host=host)
        with open(os.path.join(conf, "config"), "w") as fh:
            fh.write(f"poll_method epoll\nsip_listen {host}:{sip_port}\naudio_player aubridge,nil\n"
                     f"audio_source aufile,{wav}\naudio_alert aubridge,nil\nrtp_ports {lo}-{lo + 10}\n"
                     f"module_path {mdir}\nmodule stdio.so\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n"
                     f"module sndfile.so\nmodule_app account.so\nmodule_app menu.so\nsnd_path {rec}\n")
        with open(os.path.join(conf, "accounts"), "w") as fh:
            fh.write(f"<sip:trunk@{host}>;regint=0;audio_codecs=PCMU/8000/1\n")
        argv = [exe, "-f", conf, "-n", host, "-t", str(int(np.ceil(seconds)) + 2),
                "-e", f"/dial sip:agent@{target[0]}:{target[1]}"]
    else:
        raise ParameterError(f"the trunk peer is one of {', '.join(TRUNK_PEERS)}, got {peer!r}")
    proc = await asyncio.create_subprocess_exec(*argv, cwd=tmp, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 40.0)
    except BaseException:
        await _stop_process(proc)
        raise
    res: dict[str, Any] = {"returncode": proc.returncode, "output": out.decode(errors="replace")}
    if peer == "sipp":
        for name in ("sipp_msg.log", "sipp_err.log"):
            p = os.path.join(tmp, name)
            res[name] = open(p, errors="replace").read() if os.path.exists(p) else ""
    else:
        enc = sorted(f for f in os.listdir(os.path.join(tmp, "baresip-rec")) if f.endswith("-enc.wav"))
        res["sent_wav"] = os.path.join(tmp, "baresip-rec", enc[0]) if enc else None
    return res


def route_set_report(kamailio_log: str) -> dict[str, bool]:
    """Which in-dialog requests Kamailio routed along the Record-Route set (its ``voicelab-sbc`` log lines)."""
    return {m: f"in-dialog {m} routed" in kamailio_log for m in ("ACK", "BYE")}


async def trunk_peer_call_async(peer: str = "sipp", *, anchor: str | None = "sbc", seconds: float = 3.0,
                                speech: str = "default") -> dict[str, Any]:
    """Coroutine form of :func:`trunk_peer_call`."""
    from .net.iface import free_port
    from .net.sbc import KamailioSBC
    from .sim import Scenario, load_speech

    if peer not in TRUNK_PEERS:
        raise ParameterError(f"the trunk peer is one of {', '.join(TRUNK_PEERS)}, got {peer!r}")
    if anchor not in (None, "sbc"):
        raise ParameterError(f"a real trunk peer calls the agent directly or through 'sbc', got {anchor!r}")
    sp = load_speech(Scenario(speech=speech, max_speech_s=float(seconds)))
    x8 = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 8000)
    with tempfile.TemporaryDirectory(prefix="voicelab-trunk-") as tmp:
        rec = os.path.join(tmp, "agent-rec")
        os.makedirs(rec)
        port = free_port(kind="udp")
        agent = await _start_agent_serve(port, rec)
        sbc = None
        try:
            target = ("127.0.0.1", port)
            if anchor == "sbc":
                sbc = KamailioSBC(target=target)
                await sbc.start()
                target = (sbc.host, int(sbc.port))
            run = await _run_trunk_peer(peer, tmp, target, x8, float(seconds))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while not any(f.endswith(".wav") for f in os.listdir(rec)) and loop.time() < deadline:
                await asyncio.sleep(0.05)  # the agent writes its recording when the BYE has ended the call
        finally:
            if sbc is not None:
                await sbc.stop()
            agent_out = await _stop_process(agent)
        wavs = sorted(f for f in os.listdir(rec) if f.endswith(".wav"))
        got, got_rate = audio.read_wav(os.path.join(rec, wavs[0])) if wavs else (np.zeros(0), 8000)
        ref, ref_rate = x8, 8000
        if peer == "baresip" and run.get("sent_wav"):
            ref, ref_rate = audio.read_wav(run["sent_wav"])  # what baresip encoded (its aufile loop)
        pesq_nb, offset_ms = aligned_pesq_nb(ref, ref_rate, got, got_rate) if len(got) else (None, None)
    out: dict[str, Any] = {
        "peer": peer, "anchor": anchor, "peer_returncode": run["returncode"],
        "agent_recorded_s": len(got) / float(got_rate) if len(got) else 0.0,
        "pesq_nb": pesq_nb, "offset_ms": offset_ms, "speech": sp.name, "synthetic_speech": bool(sp.synthetic),
        "peer_output": run["output"][-3000:], "agent_output": agent_out[-2000:], "deterministic": False,
    }
    if peer == "sipp":
        out["sipp_messages"] = run.get("sipp_msg.log", "")
    if sbc is not None:
        kam = sbc._keep_logs.get("kamailio", "")
        out.update({"sbc": "kamailio+rtpengine", "sbc_media_legs": sbc.media_stats(), "route_set": route_set_report(kam),
                    "rtpengine_deleted": "Deleting entire call" in sbc._keep_logs.get("rtpengine", ""),
                    "sbc_uri": sbc.uri})
    return out


def trunk_peer_call(peer: str = "sipp", **kw: Any) -> dict[str, Any]:
    """A real SIP peer as the trunk: SIPp or baresip calls ``voicelab agent serve`` through Kamailio + rtpengine.

    SIPp (``uac`` scenario :data:`SIPP_TRUNK_SCENARIO`: route set from the 200's
    Record-Route, a G.711 pcap of natural speech played with ``play_pcap_audio``) or
    baresip (``aufile`` playing the same speech, PCMU) dials ``sip:agent@`` the
    lab-started SBC (:class:`voicelab.net.sbc.KamailioSBC`), which record-routes the dialog
    and anchors the media in rtpengine, towards ``voicelab agent serve --mode record:DIR``
    (a subprocess). The agent's recording of what arrived is scored against what the
    trunk sent.

    Parameters
    ----------
    peer : {"sipp", "baresip"}
    anchor : {"sbc", None}
        Through Kamailio + rtpengine, or straight to the agent.
    seconds : float
        Speech the trunk sends, s.
    speech : str
        Named speech (default: the natural corpus).

    Returns
    -------
    dict
        ``peer_returncode`` (SIPp: 0 when the scenario completed), ``pesq_nb`` (the agent's
        recording against the trunk's speech, offset removed), ``agent_recorded_s``,
        ``route_set`` (``{"ACK": bool, "BYE": bool}``: routed by Kamailio's
        ``loose_route``), ``sbc_media_legs`` (rtpengine's per-leg RTP counters),
        ``rtpengine_deleted``, ``sipp_messages`` (SIPp's message trace).

    Raises
    ------
    ToolUnavailableError
        sipp / baresip / kamailio / rtpengine missing (the Debian package named).
    """
    from .realtime import run_sync

    return run_sync(lambda: trunk_peer_call_async(peer, **kw))


async def path_turns_async(path: str, *, turns: int = 3, seed: int = 0, jitter_buffer: str = "fixed:60",
                           stop_ms: float = 300.0, llm: str | None = None, realtime: bool | None = None) -> dict[str, Any]:
    """Coroutine form of :func:`path_turns` (on the virtual clock: run it under
    :func:`voicelab.net.vclock.run_virtual`; ``realtime``: on the running loop)."""
    from .turns import load_utterances, pipeline_call
    from .vnetcall import DEFAULT_LINKS

    if path == "sip":
        p = {"pstn": None, "anchor": None, "browser": False}
    else:
        p = parse_path(path)
    if p["browser"]:
        raise ParameterError("turns over 'browser+gateway+sip' need WebRTC, which runs in real time on loopback: "
                             "use browser_gateway_turns")
    if realtime is None:
        realtime = p["anchor"] is not None
    if p["anchor"] is not None and not realtime:
        raise ParameterError(f"'+{p['anchor']}' runs real processes (or a loopback relay) in real time: not on the "
                             f"virtual clock (realtime=True, or '{p['pstn']}+trunk' on the virtual clock)")
    utts = load_utterances(turns)
    processed, phone, phone_ms = await _phone_side_utterances(p["pstn"], utts, seed)
    if realtime:
        res = await _anchored_pipeline_call(processed, anchor=p["anchor"], phone_ms=phone_ms, jitter_buffer=jitter_buffer,
                                            seed=seed, stop_ms=stop_ms, llm=llm)
        res["turns_requested"] = turns
    else:
        link = {"delay_ms": float(DEFAULT_LINKS["caller"]["delay_ms"]) + phone_ms}
        res = await pipeline_call(transport="sip", codec="pcmu", turns=len(processed), stop_ms=stop_ms, llm=llm,
                                  jitter_buffer=jitter_buffer, seed=seed, network="virtual", uplink=link, downlink=link,
                                  utterances=processed)
    for rec in res["turns"]:
        rec["phone_side_ms"] = phone_ms
        if rec.get("total_ms") is not None:
            rec["mouth_to_ear_up_ms"] = sum(rec.get(f"{k}_ms") or 0.0 for k in
                                            ("caller_packetization", "network_up", "agent_jitter_buffer"))
    if realtime:
        anchor = {None: "no anchor", "sbc": "Kamailio + rtpengine (started for the call)",
                  "relay": "the lab's media relay"}[p["anchor"]]
        note = ("phone side (codecs in tandem + modelled hops) in sim; its one-way delay is applied each way by a "
                f"loopback relay on the caller's side; trunk leg (G.711) in real time on loopback through {anchor}; "
                "agent pipeline and conversation in real time")
    else:
        note = ("phone side (codecs in tandem + modelled hops) in sim; its one-way delay is the delay of the "
                "caller's access link each way on the virtual network; trunk leg (G.711), agent pipeline and "
                "conversation on the virtual clock")
    res.update({"path": path, "phone_side_ms": phone_ms, "phone_side": phone, "g114_budget_ms": G114_BUDGET_MS,
                "deterministic": not realtime, "realtime": bool(realtime), "note": note})
    return res


async def _phone_side_utterances(preset: str | None, utts: list[Any], seed: int) -> tuple[list[Any], list[dict], float]:
    """The caller's utterances after the phone side's codecs (delay removed: it goes on the network)."""
    from .sim.paths import simulate_path

    if preset is None:
        return list(utts), [], 0.0
    processed, phone = [], []
    with tempfile.TemporaryDirectory(prefix="voicelab-pathturns-") as tmp:
        for i, u in enumerate(utts):
            pad = np.zeros(8000)
            src, out = os.path.join(tmp, f"u{i}.wav"), os.path.join(tmp, f"o{i}.wav")
            audio.write_wav(src, np.concatenate([pad, u.samples, pad]), 16000)
            r = await asyncio.get_running_loop().run_in_executor(None, lambda: simulate_path(
                preset, input=src, seed=seed + i, max_speech_s=60.0, open_end=True, drop_gateway=True,
                out_wav=out, quality=False))
            y, rate = audio.read_wav(out)
            y = audio.resample(np.asarray(y, dtype=np.float64), int(rate), 16000) if rate != 16000 else y
            d = int(round(r.mouth_to_ear_ms * 16.0))  # the phone side's delay goes on the network instead
            y = np.asarray(y[len(pad) + d: len(pad) + d + len(u.samples)], dtype=np.float64)
            y = np.concatenate([y, np.zeros(len(u.samples) - len(y))])
            y *= np.sqrt(np.mean(u.samples ** 2) / max(np.mean(y ** 2), 1e-20))  # the caller's level
            processed.append(_BoundedUtterance(u.name, y, u.transcript, u.synthetic, bounds=u.speech_bounds))
            phone.append({"utterance": u.name, "phone_side_ms": float(r.mouth_to_ear_ms),
                          "phone_parts_ms": float(r.parts_ms)})
    return processed, phone, float(np.mean([x["phone_side_ms"] for x in phone]))


async def _anchored_pipeline_call(utts: list[Any], *, anchor: str | None, phone_ms: float, jitter_buffer: str,
                                  seed: int, stop_ms: float, llm: str | None, vad: str = "webrtc",
                                  reply_timeout_s: float = 8.0) -> dict[str, Any]:
    """A conversation with the pipeline agent in real time on loopback, through the path's anchor.

    caller (the carrier's media gateway) -> a relay holding the phone side's one-way delay
    each way (:class:`voicelab.net.relay.UdpRelay`) -> [the lab's relay | rtpengine] -> the
    agent; SIP straight to the agent or through Kamailio (``"sbc"``: record-routed, ACK and
    BYE by the route set). Turns are analysed as :func:`voicelab.turns.pipeline_call` does.
    """
    from .agent import Agent
    from .calls import open_caller
    from .net import ChannelConfig
    from .net.iface import LoopbackInterface
    from .net.relay import UdpRelay
    from .rtp.live import LiveAudioStream
    from .sip.ua import CallEstablished, CallFailed
    from .turns import converse_over_sip, summarise_turns

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    cfg = {"vad": vad, "stop_ms": float(stop_ms), "llm": llm, "seed": seed}
    agent = Agent(codecs=["pcmu"], mode="pipeline", pipeline=cfg, jitter_buffer=jitter_buffer, iface=iface,
                  seed=seed + 1)
    await agent.start()
    proxy = stream = phone = anchor_relay = None
    ua = sip = None
    try:
        if anchor == "sbc":
            from .net.sbc import KamailioSBC

            proxy = await KamailioSBC(target=agent.address).start()
        ua, sip = await open_caller(iface, codec="pcmu", rtcp_mux=True, seed=seed)
        media_port = iface.free_port("udp")
        delay = ChannelConfig(delay_ms=float(phone_ms))
        # the phone side's delay, both ways, between the caller and the rest of the path
        phone = await UdpRelay(iface, ("127.0.0.1", 9), uplink=delay, downlink=delay, seed=seed,
                               client=("127.0.0.1", media_port)).start()
        offered = phone.back_address
        if anchor == "relay":  # the lab's media relay anchors the trunk leg
            anchor_relay = await UdpRelay(iface, ("127.0.0.1", 9), uplink=ChannelConfig(), downlink=ChannelConfig(),
                                          seed=seed + 3, client=phone.back_address).start()
            offered = anchor_relay.back_address
        call = ua.invite(proxy.uri if proxy else agent.uri, now=loop.time(), media_port=offered[1])
        sip.flush()
        ev = await sip.wait_for(CallEstablished, CallFailed)
        if isinstance(ev, CallFailed):
            raise ParameterError(f"the call to the pipeline agent failed: {ev.status}")
        far = (call.media.remote_address, call.media.remote_port)
        if anchor_relay is not None:
            anchor_relay.target, phone.target = far, anchor_relay.front_address
        else:
            phone.target = far
        stream = LiveAudioStream.for_media(iface, call.media, local_addr=("127.0.0.1", media_port),
                                           jitter_buffer=jitter_buffer, seed=seed + 2, cname="caller@voicelab",
                                           track=True, source_filter=False)
        await stream.open()
        stream.set_remote(phone.front_address)
        records, summary, _ = await converse_over_sip(agent, stream, call, ua, sip, utts,
                                                      driver_opts={"reply_timeout_s": reply_timeout_s})
        out: dict[str, Any] = {"transport": "sip", "codec": call.media.codec, "jitter_buffer": jitter_buffer,
                               "net": "loopback", "agent_errors": list(agent.errors), "vad": vad,
                               "stop_ms": float(stop_ms), "llm": summary.get("responder", {}),
                               "anchor": anchor, "sbc": "kamailio+rtpengine" if proxy else None}
        if proxy is not None:
            out["sbc_media_legs"] = proxy.media_stats()
        out.update(summarise_turns(records))
        out["turns"] = records
        out["agent"] = summary.get("turns", [])
        if any(u.synthetic for u in utts):
            out["warnings"] = ["caller utterances are eSpeak NG speech (no natural corpus found): set VOICELAB_DATA"]
        return out
    finally:
        if stream is not None:
            await stream.close()
        for r in (phone, anchor_relay):
            if r is not None:
                await r.close()
        if sip is not None:
            await sip.close()
        await agent.close()
        if proxy is not None:
            await proxy.stop()


class _BoundedUtterance:
    """An utterance whose speech bounds are its source's (the coded audio's noise must not move T0)."""

    def __init__(self, name: str, samples: np.ndarray, transcript: str, synthetic: bool, *, bounds: tuple[int, int]):
        self.name, self.samples, self.transcript, self.synthetic = name, samples, transcript, synthetic
        self.speech_bounds = bounds


def path_turns(path: str, **kw: Any) -> dict[str, Any]:
    """Conversation turns with the lab's pipeline agent over a phone path (virtual clock or real time).

    The caller's utterances go through the path's phone side (``PSTN-PRESET+trunk``: its
    codecs in tandem in ``sim``, :func:`voicelab.sim.paths.simulate_path`), then the lab's
    caller (as the carrier's media gateway) calls the pipeline agent over a G.711 trunk leg on
    the virtual network; the phone side's one-way delay is added to the caller's access link
    in both directions, so the turn (end of the phone user's speech -> first reply sample at
    their ear) is measured on the virtual clock, deterministic for a seed. ``path="sip"``: the
    same call without a phone side (the baseline).

    ``+sbc`` and ``+relay`` run in **real time** on loopback (Kamailio + rtpengine are real
    processes; the relay is real sockets): the caller's media crosses a loopback relay that
    holds the phone side's one-way delay each way, then the anchor, to the agent
    (``deterministic: false``). ``realtime=True`` runs ``+trunk`` (or ``sip``) the same way
    without the anchor, the baseline to pair them with.

    Parameters
    ----------
    path : str
        ``"PSTN-PRESET+trunk[+sbc|+relay]"`` or ``"sip"``.
    realtime : bool, optional
        Default: True with ``+sbc`` / ``+relay`` (they cannot run on the virtual clock),
        else False.
    turns : int
        Utterances (the corpus's ARCTIC items, cycled).
    seed, jitter_buffer, stop_ms, llm
        As for :func:`voicelab.turns.pipeline_call`.

    Returns
    -------
    dict
        :func:`voicelab.turns.pipeline_call`'s result (``turn.*``, ``turns`` with the
        breakdown and ``wer``) plus ``phone_side_ms`` (mean over utterances), ``phone_side``
        (per utterance), ``g114_budget_ms``.
    """
    from .realtime import run_sync
    from .net.vclock import run_virtual_in_thread

    realtime = kw.get("realtime")
    if realtime is None and path != "sip":
        realtime = kw["realtime"] = parse_path(path)["anchor"] is not None
    if realtime:
        return run_sync(lambda: path_turns_async(path, **kw))
    return run_sync(lambda: run_virtual_in_thread(path_turns_async(path, **kw)))


# ------------------------------------------------------------------ the "phone" behind the gateway
class LiveHopChain:
    """The phone side's hops applied live, one 20 ms frame at a time at 8 kHz, on the loop clock.

    Each codec hop encodes and decodes every frame with the lab's codec (a fresh instance per
    chain: AMR-NB, G.711, G.729) behind one frame of buffering (the coding's framing) plus the
    hop's receive buffer (``fixed:MS``); each modelled hop is a sample delay line of its
    modelled delay. The chain's input and every stage's output are kept, so each hop's
    contribution is measured afterwards (:meth:`hop_rows`).

    Parameters
    ----------
    hops : sequence of voicelab.sim.paths.Hop
        In the phone -> network order; ``reverse=True`` runs them network -> phone.
    reverse : bool
    rate : int
        Hz (the PSTN's 8 kHz).
    """

    FRAME_MS = 20

    def __init__(self, hops: Any, *, reverse: bool = False, rate: int = 8000) -> None:
        from . import codecs
        from .rtp.jitterbuffer import parse_jitter_buffer

        self.rate, self.F = int(rate), int(rate) * self.FRAME_MS // 1000
        self.stages: list[dict[str, Any]] = []
        for h in (list(hops)[::-1] if reverse else list(hops)):
            if h.codec is not None:
                c = codecs.get(h.codec, **dict(h.codec_params))
                if int(c.sample_rate) != self.rate or int(c.frame_samples) != self.F:
                    raise ParameterError(f"hop {h.name!r}: the live phone side runs {self.rate} Hz, "
                                         f"{self.FRAME_MS} ms frames; {h.codec} does not")
                kind, params = parse_jitter_buffer(h.jitter_buffer)
                buf_ms = float(params.get("delay_ms", 0.0)) if kind == "fixed" else 0.0
                hold = self.F + int(round(buf_ms * self.rate / 1000.0))
            else:
                c, hold = None, int(round(float(h.delay_ms) * self.rate / 1000.0))
            self.stages.append({"hop": h, "codec": c, "line": np.zeros(hold, dtype=np.int16), "out": []})
        self.inputs: list[np.ndarray] = []

    def process(self, frame: np.ndarray) -> np.ndarray:
        """One frame (int16, ``F`` samples) in, one out."""
        x = np.asarray(frame, dtype=np.int16)
        self.inputs.append(x)
        for st in self.stages:
            if st["codec"] is not None:
                x = st["codec"].decode(st["codec"].encode(x))
            line = np.concatenate([st["line"], x])
            x, st["line"] = line[: self.F], line[self.F:]
            st["out"].append(x)
        return x

    def hop_rows(self) -> list[dict[str, Any]]:
        """One row per hop: ``hop``, ``kind``, ``delay_ms``, ``how``, ``source``.

        Codec hops: the delay of the stage's output behind its input, measured by
        cross-correlation (``measured (live)``); modelled hops: the delay line's length
        (``modelled (applied live)``).
        """
        rows = []
        prev = np.concatenate(self.inputs) if self.inputs else np.zeros(0, dtype=np.int16)
        for st in self.stages:
            h = st["hop"]
            out = np.concatenate(st["out"]) if st["out"] else np.zeros(0, dtype=np.int16)
            if st["codec"] is None:
                d, how = len(st["line"]) * 1000.0 / self.rate, "modelled (applied live)"
            else:
                d, how = None, "measured (live)"
                if out.size and np.any(prev):
                    est = audio.estimate_delay(audio.to_float(prev), audio.to_float(out), self.rate,
                                               max_delay_ms=500.0, causal=True)
                    d = float(est.delay_ms)
            rows.append({"hop": h.name, "kind": h.kind, "delay_ms": d, "how": how, "source": h.source})
            prev = out
        return rows

    def audio(self, which: str = "out") -> np.ndarray:
        """Float audio of the chain's input (``"in"``) or output (``"out"``)."""
        frames = self.inputs if which == "in" else (self.stages[-1]["out"] if self.stages else self.inputs)
        return audio.to_float(np.concatenate(frames)) if frames else np.zeros(0)


def pstn_phone(preset: str, speech16: np.ndarray, **agent_options: Any) -> Any:
    """A phone behind the PSTN ``preset``, reachable over SIP: an :class:`voicelab.agent.Agent`
    (not started) whose audio crosses the preset's hops live (:class:`LiveHopChain`).

    The preset's trailing ``gateway`` hop (the carrier's media gateway) is the phone's SIP
    side itself: G.711, with that hop's jitter buffer. The phone says ``speech16`` (float,
    16 kHz) from the moment it answers; ``ear_audio()`` is what reached its ear, ``up`` /
    ``down`` the two chains (per-hop rows: ``hop_rows()``).
    """
    from .sim.paths import path_hops

    hops = path_hops(preset, open_end=True)
    gw_hop = hops[-1]
    while hops and hops[-1].kind == "gateway":  # the live SIP leg is the carrier's media gateway
        hops = hops[:-1]
    agent_options.setdefault("jitter_buffer", gw_hop.jitter_buffer)
    return _phone_class()(hops, speech16, **agent_options)


def _phone_class():
    from .agent import Agent

    class PstnPhone(Agent):
        """A phone on the far side of the PSTN: a SIP UAS (the carrier's media gateway, G.711, its
        buffer) whose audio crosses :class:`LiveHopChain` each way, live. It says ``speech16``."""

        def __init__(self, hops: Any, speech16: np.ndarray, **kw: Any) -> None:
            super().__init__(mode="echo", codecs=["pcmu"], **kw)
            self._hops = list(hops)
            warm = LiveHopChain(self._hops)  # codec libraries load now, not on the loop during the call
            warm.process(np.zeros(warm.F, dtype=np.int16))
            self._mouth = audio.to_int16(audio.resample(np.asarray(speech16, dtype=np.float64), 16000, 8000))
            self.up: LiveHopChain | None = None  # mouth -> trunk
            self.down: LiveHopChain | None = None  # trunk -> ear
            self.ear: list[tuple[float, np.ndarray]] = []

        async def _open(self, call: Any, port: int) -> None:
            await super()._open(call, port)  # "echo" arms no send clock: the phone's source replaces it
            s = self.streams.get(call.id)
            if s is None or call.over or self.up is not None:
                return
            self.up, self.down = LiveHopChain(self._hops), LiveHopChain(self._hops, reverse=True)
            F, k = self.up.F, [0]

            def source(now: float) -> np.ndarray:
                i = k[0] * F
                k[0] += 1
                frame = self._mouth[i: i + F]
                frame = np.concatenate([frame, np.zeros(F - len(frame), dtype=np.int16)])
                return self.up.process(frame)  # type: ignore[union-attr]

            def played(when: float, frame: np.ndarray) -> None:
                self.ear.append((when, self.down.process(frame)))  # type: ignore[union-attr]

            s.on_played = played
            s.send_live("source", source=source)

        def ear_audio(self) -> tuple[np.ndarray, float]:
            """(float samples at 8 kHz, loop time of the first) at the phone's ear."""
            if not self.ear:
                return np.zeros(0), 0.0
            return audio.to_float(np.concatenate([f for _, f in self.ear])), self.ear[0][0]

    return PstnPhone


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} ms"


def _phone_result(out: dict[str, Any], pstn: str, phone: Any, stream: Any, leg: Any, web: Any, track: Any, sink: Any,
                  rate: int, sip_rate: int, m: Any) -> dict[str, Any]:
    """The browser -> gateway -> phone result: per-hop tables each way, totals, PESQ."""
    from .gateway import bridge_delay_ms

    out["path"] = f"browser+gateway+{pstn}"
    bridge = bridge_delay_ms(leg, web) if not leg.passthrough else {}
    ear, t_ear = phone.ear_audio()
    _, t_mouth = stream.sent_audio()
    mouth = phone.up.audio("in") if phone.up is not None else np.zeros(0)
    total_up = m(track.sent_audio(), (ear, t_ear), rate, 8000)
    total_down = m((mouth, t_mouth), sink.received_audio(), 8000, rate)
    live = "measured (live)"
    if leg.passthrough:  # G.711 both legs: one coding, the gateway forwards payloads (no playout to measure at it)
        fw = leg.forward_delay_ms()
        out["gateway_forward_ms"] = fw
        a_up = m(track.sent_audio(), stream.received_audio(), rate, sip_rate)
        a_down = m(stream.sent_audio(), sink.received_audio(), sip_rate, rate)
        web_up = [{"hop": f"browser -> carrier media gateway ({leg.sip_codec}, payloads passed through the gateway; "
                          f"gateway {_ms(fw['browser_to_sip_median'])} median per packet)",
                   "delay_ms": a_up["mouth_to_ear_ms"], "how": live}]
        web_down = [{"hop": f"carrier media gateway -> browser ({leg.sip_codec}, payloads passed through the gateway; "
                            f"gateway {_ms(fw['sip_to_browser_median'])} median per packet)",
                     "delay_ms": a_down["mouth_to_ear_ms"], "how": live}]
    else:
        w_up = m(track.sent_audio(), web.received_audio(), rate, rate)
        s_up = m(leg.stream.sent_audio(), stream.received_audio(), sip_rate, sip_rate)
        s_down = m(stream.sent_audio(), leg.stream.received_audio(), sip_rate, sip_rate)
        w_down = m(web.sent_audio(), sink.received_audio(), rate, rate)
        web_up = [{"hop": f"WebRTC leg ({web.codec}): frame + network + gateway buffer + look-ahead",
                   "delay_ms": w_up["mouth_to_ear_ms"], "how": live},
                  {"hop": "gateway: resampling (streaming FIR)", "delay_ms": bridge["browser_to_sip"], "how": live},
                  {"hop": f"SIP trunk leg ({leg.sip_codec}): frame + network + carrier media gateway buffer",
                   "delay_ms": s_up["mouth_to_ear_ms"], "how": live}]
        web_down = [{"hop": f"SIP trunk leg ({leg.sip_codec}): network + gateway buffer",
                     "delay_ms": s_down["mouth_to_ear_ms"], "how": live},
                    {"hop": "gateway: resampling (streaming FIR)", "delay_ms": bridge["sip_to_browser"], "how": live},
                    {"hop": f"WebRTC leg ({web.codec}): frame + network + browser buffer + look-ahead",
                     "delay_ms": w_down["mouth_to_ear_ms"], "how": live}]
    hops_up = web_up + (phone.down.hop_rows() if phone.down is not None else [])
    hops_down = list(phone.up.hop_rows() if phone.up is not None else []) + web_down
    for name, hops, total in (("browser_to_agent", hops_up, total_up), ("agent_to_browser", hops_down, total_down)):
        parts = [h["delay_ms"] for h in hops]
        out[f"{name}.hops"] = hops
        out[f"{name}.total_ms"] = total["mouth_to_ear_ms"]
        out[f"{name}.parts_ms"] = None if any(p is None for p in parts) else float(sum(parts))
        out[f"{name}.pesq_nb"] = total.get("pesq_nb")
        out[f"{name}.pesq_wb"] = total.get("pesq_wb")
        out[f"{name}.within_g114"] = None if total["mouth_to_ear_ms"] is None else total["mouth_to_ear_ms"] <= G114_BUDGET_MS
    out["browser_to_phone.total_ms"], out["phone_to_browser.total_ms"] = total_up["mouth_to_ear_ms"], total_down["mouth_to_ear_ms"]
    out["pstn"] = pstn
    out["g114_budget_ms"] = G114_BUDGET_MS
    out["note"] = ("browser -> gateway -> phone: WebRTC leg, gateway and SIP trunk leg live on loopback; the phone side's "
                   "codecs run live frame by frame (measured), its modelled hops are delay lines applied live")
    return out


# ------------------------------------------------------------------ turns through the gateway
async def browser_gateway_turns(*, turns: int = 3, codec: str = "opus", sip_codec: str = "pcmu", seed: int = 0,
                                jitter_buffer: str = "fixed:60", stop_ms: float = 300.0,
                                llm: str | None = None) -> dict[str, Any]:
    """Conversation turns from a WebRTC caller through the lab's gateway to the pipeline agent over SIP.

    ``browser+gateway+sip`` with the lab's pipeline agent (:mod:`voicelab.pipeline`) as the
    SIP target: the conversation driver (:class:`voicelab.turns.ConversationDriver`) talks
    from the lab's aiortc caller (standing for a browser), the gateway transcodes (Opus <->
    G.711) or passes G.711 through, the agent answers over SIP. Real time on loopback
    (aiortc keeps wall-clock time); the breakdown is lumped as for WebRTC pipeline calls
    (:func:`voicelab.turns.analyse_webrtc_turns`: the agent's stages exactly, the transport
    in two parts), the total measured at the caller's ear.

    Returns
    -------
    dict
        ``turn.*`` (:func:`voicelab.turns.summarise_turns`), ``turns``, ``passthrough``,
        ``path``; ``deterministic: False``.
    """
    from . import codecs
    from .agent import Agent
    from .gateway import Gateway
    from .turns import (ConversationDriver, analyse_webrtc_turns, await_conversation, load_utterances,
                        summarise_turns, webrtc_conversation_caller)

    if codec not in ("opus", "pcmu", "pcma", "g722"):
        raise ParameterError(f"the browser's codec must be opus, pcmu, pcma or g722, got {codec!r}")
    utts = load_utterances(turns)
    c = codecs.get(codec)
    rate = int(c.sample_rate)
    cfg = {"vad": "webrtc", "stop_ms": float(stop_ms), "llm": llm, "seed": seed}
    agent = Agent(codecs=[sip_codec], mode="pipeline", pipeline=cfg, jitter_buffer=jitter_buffer, seed=seed + 1)
    await agent.start()
    try:
        async with Gateway(target=agent.uri, sip_codec=sip_codec, webrtc_codecs=(codec,),
                           jitter_buffer=jitter_buffer) as gw:
            driver = ConversationDriver(utts, sample_rate=rate, frame_ms=20)
            async with webrtc_conversation_caller(gw.front.url, driver, codec=codec, jitter_buffer=jitter_buffer) as (
                    _pc, _track, _sink, client):
                await await_conversation(driver, utts)
                await client.bye()
            await asyncio.wait_for(gw.front.ended(1), 10.0)
            leg = next(iter(gw.legs.values()))
            passthrough = bool(leg.passthrough)
        await asyncio.wait_for(agent.ended(1), 10.0)
        (summary,) = list(agent.pipelines.finished.values())[-1:] or [{}]  # type: ignore[union-attr]
    finally:
        await agent.close()
    records = analyse_webrtc_turns(driver, summary, lookahead_down_ms=c.lookahead_ms)
    out: dict[str, Any] = {"path": "browser+gateway+sip", "webrtc_codec": codec, "sip_codec": sip_codec,
                           "passthrough": passthrough, "jitter_buffer": jitter_buffer, "stop_ms": float(stop_ms),
                           "deterministic": False, "turns_requested": turns}
    out.update(summarise_turns(records))
    out["turns"] = records
    return out
