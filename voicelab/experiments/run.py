"""run(scenario) -> Result: one entry point for every mode and transport.

The engines stay where they are; this module picks one by the scenario's mode and
transport, passes it the scenario's fields and maps its result into the one
:class:`~voicelab.experiments.result.Result` schema:

==========  =========  ===========================================================
mode        transport  engine
==========  =========  ===========================================================
sim         sip        :func:`voicelab.sim.simulate_call`, once per direction (uplink
                       channel for caller_to_agent, downlink for agent_to_caller),
                       each with its own seed derived from the scenario's
loopback    sip        :func:`voicelab.calls.sip_call`
loopback    webrtc     :func:`voicelab.webrtc.call.webrtc_call`
loopback    ws         :func:`voicelab.wsmedia.live.ws_call`
vnet        sip        :func:`voicelab.vnetcall.vnet_sip_call` (under
                       :func:`voicelab.net.vclock.run_virtual` when ``virtual_time``)
vnet        webrtc     :func:`voicelab.vnetcall.vnet_webrtc_call`
loopback,   ``path``   :func:`voicelab.hybrid.path_call` (``net`` = the mode: loopback
vnet                   sockets, or the PSTN trunk leg on the namespace chain); the
                       result's directions are the path's end to end, with its hop
                       tables (:func:`_from_path`)
==========  =========  ===========================================================

:func:`run` is the plain function (no event loop needed; from a notebook whose loop is
running it runs the call on a fresh loop in a worker thread, see :func:`run_sync`);
:func:`run_async` is the coroutine for code that already runs in a loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Mapping

import numpy as np

from ..errors import ParameterError, VoicelabError
from ..realtime import run_sync  # re-exported: the lab's one way to run a coroutine from sync code
from .provenance import provenance
from .result import DIRECTIONS, Result
from .scenario import Scenario

__all__ = ["run", "run_async", "run_sync", "direction_seed"]


def direction_seed(seed: int, direction: str) -> int:
    """The seed of one direction of a sim trial, derived from the scenario's seed.

    ``numpy.random.SeedSequence([seed, i])`` with i = 0 (caller_to_agent) or 1
    (agent_to_caller): the two directions draw independent network fates, and the
    same scenario seed always gives the same pair.
    """
    i = DIRECTIONS.index(direction)
    return int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])


def _check(scenario: Any) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Mapping):
        return Scenario.from_dict(scenario)
    raise ParameterError(f"run() takes a voicelab.experiments.Scenario (or its dict), got {type(scenario).__name__}")


# ----------------------------------------------------------------------------- speech
def _speech_info(s: Scenario) -> dict[str, Any]:
    """Name, corpus item(s), source and natural/synthetic flag of what the scenario sends.

    ``item`` is the corpus item id when one item was sent (``speech="corpus:..."``), the
    ids joined with ``,`` when the corpus was concatenated, None for examples and files.
    """
    from .. import audio
    from ..sim import Scenario as SimScenario, load_speech

    sp = load_speech(SimScenario(speech=s.speech, input=s.input, max_speech_s=max(1.0, s.seconds), codec="pcmu"))
    items = tuple(getattr(sp, "items", ()) or ())  # listed by the speech loader when it knows them
    item = ",".join(items) if items else None
    if item is None and s.input is None and s.speech.startswith("corpus:"):
        spec = s.speech.split(":", 1)[1]
        try:
            item = audio.corpus(sample_rate=16000)[int(spec)].name if spec.isdigit() else spec
        except (IndexError, VoicelabError):
            item = None
    return {"name": sp.name, "item": item, "source": sp.source, "synthetic": bool(sp.synthetic)}


def _merge_warnings(per_direction: Mapping[str, list[str]]) -> list[str]:
    """One list: a warning both directions gave once, a direction's own prefixed by it."""
    lists = list(per_direction.values())
    common = [w for w in lists[0] if all(w in other for other in lists[1:])] if lists else []
    out = list(dict.fromkeys(common))
    for d, ws in per_direction.items():
        out.extend(f"{d}: {w}" for w in dict.fromkeys(ws) if w not in common)
    return out


# -------------------------------------------------------------------------------- sim
def _run_sim(s: Scenario, *, quality: bool) -> tuple[dict, dict, list[str], dict]:
    from ..net import ChannelConfig
    from ..sim import Scenario as SimScenario, simulate_call

    call: dict[str, Any] = {}
    dirs: dict[str, dict[str, Any]] = {}
    warns: dict[str, list[str]] = {}
    raw: dict[str, Any] = {}
    for d in DIRECTIONS:
        cfg = (s.uplink if d == "caller_to_agent" else s.downlink) or ChannelConfig()
        sim = SimScenario(codec=s.codec, codec_params=dict(s.codec_params), channel=cfg, jitter_buffer=s.jitter_buffer,
                          plc=s.plc, fec=s.fec, speech=s.speech, input=s.input, max_speech_s=s.seconds,
                          seed=direction_seed(s.seed, d))
        r = simulate_call(sim, quality=quality)
        m = r.metrics
        trace = r.trace
        sent = int(m.get("packets_sent") or 0)
        received = int((trace["sent"] & (trace["copies"] > 0)).sum())
        dirs[d] = {
            **{k: m.get(k) for k in ("mouth_to_ear_ms", "mouth_to_ear_true_ms", "delay_confidence", "pesq_nb",
                                     "pesq_wb", "stoi", "loss_rate", "late_loss_rate", "playout_delay_ms",
                                     "bitrate_kbps_wire", "r_factor", "mos_cqe", "concealed_frames", "late_frames")},
            "arrived": sent > 0 and received >= 0.5 * sent,
            "packets_sent": sent,
            "packets_received": received,
        }
        call = {"codec_negotiated": m.get("codec"), "bitrate": int(round(float(m["bitrate_kbps"]) * 1000.0)),
                "speech_seconds": m.get("speech_duration_s")}
        warns[d] = list(r.warnings)
        raw[d] = dict(m)
    return call, dirs, _merge_warnings(warns), raw


# ------------------------------------------------------------------------------- live
def _nominal_bitrate(codec: str) -> int | None:
    from .. import codecs

    try:
        return int(codecs.get(codec).bitrate)
    except (VoicelabError, TypeError, ValueError):
        return None


def _engine(s: Scenario, *, quality: bool) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A factory of the engine coroutine for a live (loopback or vnet) scenario."""
    up, down = s.uplink, s.downlink
    if s.path is not None:
        from ..hybrid import path_call_async

        links = None
        if up is not None or down is not None:  # vnet only (Scenario checks): the lab's link model on the carrier link
            from ..net import ChannelConfig

            links = {"carrier": {"up": up or ChannelConfig(), "down": down or ChannelConfig()}}
        return lambda: path_call_async(s.path, seconds=s.seconds, speech=s.speech, seed=s.seed,
                                       jitter_buffer=s.jitter_buffer, quality=quality, codec=s.codec,
                                       net="vnet" if s.mode == "vnet" else "loopback", links=links)
    if s.mode == "loopback":
        common = dict(seconds=s.seconds, speech=s.speech, input=s.input, jitter_buffer=s.jitter_buffer,
                      seed=s.seed, quality=quality)
        if up != down:
            raise ParameterError("loopback calls apply one channel to both directions: set channel (or equal "
                                 "uplink and downlink); per-direction channels need mode='sim' or 'vnet'")
        if s.transport == "sip":
            from ..calls import sip_call

            auth = tuple(s.auth.split(":", 1)) if s.auth else None
            return lambda: sip_call(codec=s.codec, net=up, sip_transport=s.sip_transport, srtp=s.srtp,
                                    auth=auth, **common)  # type: ignore[arg-type]
        if s.transport == "webrtc":
            from ..webrtc.call import webrtc_call

            p = dict(s.codec_params)
            return lambda: webrtc_call(codec=s.codec, bitrate=p.get("bitrate"), fec=bool(s.fec or p.get("fec", False)),
                                       dtx=bool(p.get("dtx", False)), packet_loss_perc=p.get("packet_loss_perc"),
                                       net=up, **common)
        from ..wsmedia.live import ws_call

        return lambda: ws_call(net=up, **common)
    # vnet
    from ..vnetcall import vnet_sip_call, vnet_webrtc_call

    fn = vnet_sip_call if s.transport == "sip" else vnet_webrtc_call
    return lambda: fn(caller_nat=s.caller_nat, agent_nat=s.agent_nat, method=s.method, codec=s.codec,
                      seconds=s.seconds, speech=s.speech, uplink=up, downlink=down, jitter_buffer=s.jitter_buffer,
                      seed=s.seed, quality=quality)


def _ice_path(value: Any) -> str | None:
    if isinstance(value, Mapping):
        if not any(value.values()):
            return None
        return f"{value.get('caller')}/{value.get('agent')}"
    return value


def _from_engine(s: Scenario, raw: Mapping[str, Any]) -> tuple[dict, dict, list[str]]:
    """Map an engine's flat dict (``caller_to_agent.pesq_nb``, ...) into the schema."""
    call = {
        "codec_negotiated": raw.get("codec"),
        "bitrate": raw.get("bitrate") or _nominal_bitrate(raw.get("codec") or s.codec),
        "setup_ms": raw.get("setup_ms"),
        "post_dial_delay_ms": raw.get("post_dial_delay_ms"),
        "ice_gathering_ms": raw.get("ice_gathering_ms"),
        "ice_connect_ms": raw.get("ice_connect_ms"),
        "dtls_ms": raw.get("dtls_ms"),
        "ice_path": _ice_path(raw.get("ice_path")),
        "connected": raw.get("connected", True if raw.get("setup_ms") is not None else None),
        "path": raw.get("path"),
        "route_ms": raw.get("route_ms"),
        "added_delay_ms": raw.get("added_delay_ms"),
        "relay_bytes": raw.get("relay_bytes"),
        "trace_sha256": raw.get("trace_sha256"),
        "trace_records": raw.get("trace_records"),
        "speech_seconds": raw.get("seconds"),
    }
    dirs: dict[str, dict[str, Any]] = {}
    for d in DIRECTIONS:
        def g(k: str, d: str = d) -> Any:
            return raw.get(f"{d}.{k}")

        row = {k: g(k) for k in ("mouth_to_ear_ms", "delay_confidence", "pesq_nb", "pesq_wb", "stoi", "loss_rate",
                                 "late_loss_rate", "jitter_ms", "rtt_ms", "playout_delay_ms", "bitrate_kbps_wire",
                                 "r_factor", "mos_cqe", "pacing_error_p99_ms", "packets_sent", "packets_received",
                                 "late_frames", "transit_delay_ms_p99", "send_to_arrival_ms")}
        outcomes = g("outcomes")
        row["concealed_frames"] = int(outcomes.get("concealed", 0)) if isinstance(outcomes, Mapping) else None
        flag = raw.get(d)
        if isinstance(flag, bool):
            row["arrived"] = flag
        elif row["loss_rate"] is not None:
            row["arrived"] = row["loss_rate"] < 0.5
        else:
            row["arrived"] = None
        dirs[d] = row
    return call, dirs, list(raw.get("warnings") or [])


# ------------------------------------------------------------------------------ paths
def _hop_sums(hops: list[dict[str, Any]] | None, parts_ms: Any = None) -> tuple[float | None, float | None]:
    """(measured, modelled) sums of a hop table, ms: by each hop's ``how``; None if one of them has no value.

    ``parts_ms`` (the engine's own sum of the table, when it gives one) replaces the sum of
    the measured hops plus the modelled ones (a pass-through gateway's table lists the
    gateway's per-packet delay beside the end-to-end hop that contains it).
    """
    if hops is None:
        return None, None
    sums: dict[str, float | None] = {"measured": 0.0, "modelled": 0.0}
    for h in hops:
        kind = "modelled" if str(h.get("how", "")).startswith("modelled") else "measured"
        v = h.get("delay_ms")
        sums[kind] = None if v is None or sums[kind] is None else float(sums[kind]) + float(v)
    if parts_ms is not None and sums["modelled"] is not None:
        sums["measured"] = float(parts_ms) - float(sums["modelled"])
    return sums["measured"], sums["modelled"]


def _from_path(s: Scenario, raw: Mapping[str, Any]) -> tuple[dict, dict, list[str]]:
    """Map :func:`voicelab.hybrid.path_call`'s result into the schema.

    ``caller_to_agent`` is the caller (phone or browser) -> the far end (agent or phone),
    ``agent_to_caller`` the way back. ``mouth_to_ear_ms`` is end to end; ``hops`` is the
    direction's hop table. On PSTN paths the packet counters (loss, jitter, RTT, playout,
    wire bitrate, packets) are the live trunk leg's, the only packet leg; ``pesq_*``,
    ``r_factor``, ``mos_cqe`` and ``delay_confidence`` are end to end (the phone's mouth ->
    the agent, and the agent -> the phone's ear: ``raw["end_to_end"]``,
    :func:`voicelab.hybrid.end_to_end_quality`); ``pesq_wb`` is None where the phone side's
    reference is narrowband. On browser paths PESQ is end to end and there are no
    packet counters (None).
    """
    dirs: dict[str, dict[str, Any]] = {}
    if "browser_to_agent.total_ms" in raw:  # browser+gateway+sip | browser+gateway+PRESET
        for d, name in zip(DIRECTIONS, ("browser_to_agent", "agent_to_browser")):
            hops = [dict(h) for h in raw.get(f"{name}.hops") or []]
            total = raw.get(f"{name}.total_ms")
            measured, modelled = _hop_sums(hops, raw.get(f"{name}.parts_ms"))
            dirs[d] = {"arrived": total is not None, "mouth_to_ear_ms": total, "pesq_nb": raw.get(f"{name}.pesq_nb"),
                       "pesq_wb": raw.get(f"{name}.pesq_wb"), "hops": hops, "hops_measured_ms": measured,
                       "hops_modelled_ms": modelled}
        codec = raw.get("webrtc_codec") or s.codec
        call = {"codec_negotiated": codec, "bitrate": _nominal_bitrate(codec),
                "setup_ms": raw.get("setup_ms"), "connected": raw.get("setup_ms") is not None, "path": raw.get("path")}
        warns = []
    else:  # PSTN-PRESET+trunk[+sbc|+relay]
        live = dict(raw.get("live") or {})
        call, dirs, warns = _from_engine(s, live)
        call["path"] = raw.get("path")
        pstn_hops = [dict(h) for h in raw.get("hops") or []]
        if "hops_agent_to_phone" in raw:  # the namespace chain measured the way back hop by hop
            back = [dict(h) for h in raw["hops_agent_to_phone"]]
        else:  # loopback: the live leg's way back, then the phone side (modelled as symmetric, docs/paths.md)
            phone = [h for h in pstn_hops if not str(h.get("how", "")).endswith("(live)")]
            back = [{"hop": "agent -> SIP trunk -> carrier media gateway (live leg, the way back)", "kind": "gateway",
                     "delay_ms": live.get("agent_to_caller.mouth_to_ear_ms"), "how": "measured (live)",
                     "source": "the live trunk leg's agent -> trunk mouth-to-ear delay"}] + phone[::-1]
        for d, hops, total in ((DIRECTIONS[0], pstn_hops, raw.get("phone_to_agent_ms")),
                               (DIRECTIONS[1], back, raw.get("agent_to_phone_ms"))):
            measured, modelled = _hop_sums(hops)
            e2e = (raw.get("end_to_end") or {}).get(d) or {}
            dirs[d].update({"mouth_to_ear_ms": total, "pesq_nb": e2e.get("pesq_nb"), "pesq_wb": e2e.get("pesq_wb"),
                            "r_factor": e2e.get("r_factor"), "mos_cqe": e2e.get("mos_cqe"),
                            "delay_confidence": e2e.get("delay_confidence"), "hops": hops,
                            "hops_measured_ms": measured, "hops_modelled_ms": modelled})
    if raw.get("synthetic_speech"):
        from .. import audio

        warns = list(dict.fromkeys([*warns, audio.SYNTHETIC_WARNING]))
    return call, dirs, warns


def _map(s: Scenario, raw: Mapping[str, Any]) -> tuple[dict, dict, list[str]]:
    return _from_path(s, raw) if s.path is not None else _from_engine(s, raw)


def _result(s: Scenario, call: dict, dirs: dict, warnings: list[str], raw: dict, t0: float) -> Result:
    return Result(scenario=s, call=call, directions=dirs, deterministic=s.deterministic,
                  warnings=warnings, speech=_speech_info(s), provenance=provenance(),
                  wall_s=time.perf_counter() - t0, raw=raw)


async def run_async(scenario: Scenario | Mapping[str, Any], *, quality: bool = True) -> Result:
    """Coroutine form of :func:`run` (same parameters and result), for code already in a loop.

    A sim trial runs in a worker thread (it is CPU-bound); a vnet virtual-time trial on
    its own virtual-clock loop in a worker thread; live calls on the running loop.
    """
    s = _check(scenario)
    t0 = time.perf_counter()
    if s.mode == "sim":
        call, dirs, warns, raw = await asyncio.to_thread(_run_sim, s, quality=quality)
        return _result(s, call, dirs, warns, raw, t0)
    factory = _engine(s, quality=quality)
    if s.virtual_time:
        from ..net.vclock import run_virtual_in_thread

        raw = await run_virtual_in_thread(factory())
    else:
        raw = await factory()
    call, dirs, warns = _map(s, raw)
    return _result(s, call, dirs, warns, dict(raw), t0)


def run(scenario: Scenario | Mapping[str, Any], *, quality: bool = True) -> Result:
    """Run one trial and measure it, whatever its mode and transport.

    Parameters
    ----------
    scenario : Scenario or dict
        What to run (a dict is read with :meth:`Scenario.from_dict`).
    quality : bool
        Compute PESQ (and STOI in sim), the costly part; False leaves them None.

    Returns
    -------
    Result
        One schema for every mode: :meth:`Result.to_rows` has the columns
        :data:`~voicelab.experiments.result.RESULT_COLUMNS`.

    Raises
    ------
    ParameterError
        The scenario is not valid, or asks for what its engine cannot do.
    VoicelabError
        The call failed (did not connect, media did not play through, a peer is missing).

    Examples
    --------
    >>> from voicelab.experiments import Scenario, run
    >>> r = run(Scenario(mode="sim", codec="opus", channel="wifi", seconds=3))  # doctest: +SKIP
    >>> r.directions["caller_to_agent"]["pesq_wb"]                              # doctest: +SKIP
    """
    s = _check(scenario)
    t0 = time.perf_counter()
    if s.mode == "sim":
        call, dirs, warns, raw = _run_sim(s, quality=quality)
        return _result(s, call, dirs, warns, raw, t0)
    if s.virtual_time:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            from ..net.vclock import run_virtual

            raw = run_virtual(_engine(s, quality=quality)())
            call, dirs, warns = _map(s, raw)
            return _result(s, call, dirs, warns, dict(raw), t0)
    return run_sync(lambda: run_async(s, quality=quality))
