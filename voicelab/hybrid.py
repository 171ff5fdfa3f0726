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

The result carries a per-hop delay table for the phone -> agent direction: the PSTN hops
(modelled, or measured in ``sim``) and the live leg (measured on loopback), adding up to
the path's one-way delay, against the ITU-T G.114 150 ms budget. The agent -> phone
direction reuses the PSTN hops (the phone network is modelled as symmetric) with the live
leg's own measured delay. Live legs are not deterministic; the result says so.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import numpy as np

from . import audio
from .errors import ParameterError

__all__ = ["parse_path", "path_call", "path_call_async", "browser_gateway_call", "path_turns", "path_turns_async",
           "G114_BUDGET_MS"]

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
        if rest != ["gateway", "sip"]:
            raise ParameterError("the browser path is 'browser+gateway+sip' (WebRTC -> gateway -> SIP agent)")
        return {"browser": True, "pstn": None, "anchor": None}
    if head.startswith("browser"):
        raise ParameterError("the browser path is spelled 'browser+gateway+sip'")
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


async def path_call_async(path: str, *, seconds: float = 4.0, speech: str = "default", seed: int = 0,
                          jitter_buffer: str = "fixed:60", quality: bool = True, codec: str = "opus") -> dict[str, Any]:
    """Coroutine form of :func:`path_call`."""
    from .calls import sip_call
    from .net import ChannelConfig
    from .sim.paths import simulate_path

    p = parse_path(path)
    if p["browser"]:
        return await browser_gateway_call(seconds=seconds, speech=speech, jitter_buffer=jitter_buffer, quality=quality,
                                          codec=codec)
    with tempfile.TemporaryDirectory(prefix="voicelab-hybrid-") as tmp:
        wav = os.path.join(tmp, "trunk.wav")
        # the PSTN side runs in sim up to the carrier's media gateway; the live trunk leg takes over there
        pstn = await asyncio.get_running_loop().run_in_executor(None, lambda: simulate_path(
            p["pstn"], speech=speech, seed=seed, max_speech_s=float(seconds), quality=quality,
            open_end=True, out_wav=wav, drop_gateway=True))
        live = await sip_call(codec="pcmu", seconds=min(60.0, float(seconds) + pstn.mouth_to_ear_ms / 1000.0 + 0.2),
                              input=wav, jitter_buffer=jitter_buffer, seed=seed, quality=quality,
                              net=ChannelConfig() if p["anchor"] == "relay" else None,
                              sbc="kamailio" if p["anchor"] == "sbc" else None)
    leg_name = {None: "SIP trunk -> agent (live, loopback, G.711)",
                "relay": "SIP trunk -> lab media relay -> agent (live, loopback, G.711)",
                "sbc": "SIP trunk -> Kamailio + rtpengine -> agent (live, loopback, G.711)"}[p["anchor"]]
    hops = pstn.hops.to_dict(orient="records")
    up_live = live.get("caller_to_agent.mouth_to_ear_ms")
    down_live = live.get("agent_to_caller.mouth_to_ear_ms")
    table = hops + [{"hop": leg_name, "kind": "gateway", "delay_ms": up_live, "how": "measured (live)",
                     "source": "the lab's caller as the carrier's media gateway: packetization + network + agent jitter buffer"}]
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
        "setup_ms": live.get("setup_ms"),
        "sbc": live.get("sbc"),
        "sbc_media_legs": live.get("sbc_media_legs"),
        "speech": pstn.speech,
        "synthetic_speech": pstn.synthetic_speech,
        "deterministic": False,
        "note": "the PSTN side is simulated (sim) and modelled per hop; the trunk leg is a live loopback call",
        "live": {k: v for k, v in live.items() if k not in ("sbc_media_legs",)},
    }


async def browser_gateway_call(*, seconds: float = 4.0, speech: str = "default", jitter_buffer: str = "fixed:60",
                               quality: bool = True, codec: str = "opus", sip_codec: str = "pcmu") -> dict[str, Any]:
    """A WebRTC caller -> the lab's gateway -> the lab's SIP agent (``play`` mode), measured hop by hop.

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
    async with Agent(codecs=[sip_codec], mode="play", speech=speech, jitter_buffer=jitter_buffer) as agent:
        agent._speech_override = x16  # both ends say the same thing: one reference
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
                await pc.setLocalDescription(await pc.createOffer())
                t_offer = loop.time()
                await client.connect()
                answer = await client.offer(pc.localDescription.sdp)
                await pc.setRemoteDescription(type(pc.localDescription)(sdp=answer, type="answer"))
                t_connected = await asyncio.wait_for(pc.connected(), 10.0)
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

    Returns
    -------
    dict
        ``hops`` (per-hop table, each ``measured (sim)``, ``measured (live)`` or
        ``modelled`` with its source), ``phone_to_agent_ms`` (their sum),
        ``agent_to_phone_ms``, ``within_g114``, ``pstn_pesq_nb``, ``trunk_pesq_nb``,
        ``sbc_media_legs`` (with ``+sbc``), ``live`` (the trunk call's own metrics).
    """
    from .compare import run_sync

    return run_sync(lambda: path_call_async(path, **kw))


async def path_turns_async(path: str, *, turns: int = 3, seed: int = 0, jitter_buffer: str = "fixed:60",
                           stop_ms: float = 300.0, llm: str | None = None) -> dict[str, Any]:
    """Coroutine form of :func:`path_turns` (run it under :func:`voicelab.net.vclock.run_virtual`)."""
    from .net import ChannelConfig
    from .sim.paths import simulate_path
    from .turns import Utterance, load_utterances, pipeline_call
    from .vnetcall import DEFAULT_LINKS

    if path == "sip":
        p = {"pstn": None, "anchor": None, "browser": False}
    else:
        p = parse_path(path)
    if p["browser"]:
        raise ParameterError("turns over 'browser+gateway+sip' need WebRTC, which runs in real time on loopback: "
                             "not on the virtual clock")
    if p["anchor"] is not None:
        raise ParameterError(f"'+{p['anchor']}' runs real processes (or a loopback relay) in real time; on the virtual "
                             f"clock use '{p['pstn']}+trunk' (an SBC on loopback adds no measurable delay: docs/paths.md)")
    utts = load_utterances(turns)
    access = float(DEFAULT_LINKS["caller"]["delay_ms"])
    phone: list[dict[str, Any]] = []
    if p["pstn"] is None:
        processed, phone_ms = utts, 0.0
    else:
        processed = []
        with tempfile.TemporaryDirectory(prefix="voicelab-pathturns-") as tmp:
            for i, u in enumerate(utts):
                pad = np.zeros(8000)
                src, out = os.path.join(tmp, f"u{i}.wav"), os.path.join(tmp, f"o{i}.wav")
                audio.write_wav(src, np.concatenate([pad, u.samples, pad]), 16000)
                r = await asyncio.get_running_loop().run_in_executor(None, lambda: simulate_path(
                    p["pstn"], input=src, seed=seed + i, max_speech_s=60.0, open_end=True, drop_gateway=True,
                    out_wav=out, quality=False))
                y, rate = audio.read_wav(out)
                y = audio.resample(np.asarray(y, dtype=np.float64), int(rate), 16000) if rate != 16000 else y
                d = int(round(r.mouth_to_ear_ms * 16.0))  # the phone side's delay goes on the access link instead
                y = np.asarray(y[len(pad) + d: len(pad) + d + len(u.samples)], dtype=np.float64)
                y = np.concatenate([y, np.zeros(len(u.samples) - len(y))])
                y *= np.sqrt(np.mean(u.samples ** 2) / max(np.mean(y ** 2), 1e-20))  # the caller's level
                processed.append(_BoundedUtterance(u.name, y, u.transcript, u.synthetic, bounds=u.speech_bounds))
                phone.append({"utterance": u.name, "phone_side_ms": float(r.mouth_to_ear_ms),
                              "phone_parts_ms": float(r.parts_ms)})
        phone_ms = float(np.mean([x["phone_side_ms"] for x in phone]))
    link = {"delay_ms": access + phone_ms}
    res = await pipeline_call(transport="sip", codec="pcmu", turns=len(processed), stop_ms=stop_ms, llm=llm,
                              jitter_buffer=jitter_buffer, seed=seed, network="virtual", uplink=link, downlink=link,
                              utterances=processed)
    for rec in res["turns"]:
        rec["phone_side_ms"] = phone_ms
        if rec.get("total_ms") is not None:
            rec["mouth_to_ear_up_ms"] = sum(rec.get(f"{k}_ms") or 0.0 for k in
                                            ("caller_packetization", "network_up", "agent_jitter_buffer"))
    res.update({"path": path, "phone_side_ms": phone_ms, "phone_side": phone, "g114_budget_ms": G114_BUDGET_MS,
                "deterministic": True,
                "note": ("phone side (codecs in tandem + modelled hops) in sim; its one-way delay is the delay of the "
                         "caller's access link each way on the virtual network; trunk leg (G.711), agent pipeline and "
                         "conversation on the virtual clock")})
    return res


class _BoundedUtterance:
    """An utterance whose speech bounds are its source's (the coded audio's noise must not move T0)."""

    def __init__(self, name: str, samples: np.ndarray, transcript: str, synthetic: bool, *, bounds: tuple[int, int]):
        self.name, self.samples, self.transcript, self.synthetic = name, samples, transcript, synthetic
        self.speech_bounds = bounds


def path_turns(path: str, **kw: Any) -> dict[str, Any]:
    """Conversation turns with the lab's pipeline agent over a phone path, on the virtual clock.

    The caller's utterances go through the path's phone side (``PSTN-PRESET+trunk``: its
    codecs in tandem in ``sim``, :func:`voicelab.sim.paths.simulate_path`), then the lab's
    caller (as the carrier's media gateway) calls the pipeline agent over a G.711 trunk leg on
    the virtual network; the phone side's one-way delay is added to the caller's access link
    in both directions, so the turn (end of the phone user's speech -> first reply sample at
    their ear) is measured on the virtual clock, deterministic for a seed. ``path="sip"``: the
    same call without a phone side (the baseline).

    Parameters
    ----------
    path : str
        ``"PSTN-PRESET+trunk"`` or ``"sip"``.
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
    from .compare import run_sync
    from .net.vclock import run_virtual_in_thread

    return run_sync(lambda: run_virtual_in_thread(path_turns_async(path, **kw)))
