"""Paths real calls take, end to end: a phone through the PSTN, a SIP trunk and an SBC to the agent.

A path is spelled as its parts joined by ``+``:

``PSTN-PRESET+trunk[+sbc|+relay]``
    The phone side (a preset of :data:`voicelab.sim.paths.PSTN_PRESETS`, simulated hop by
    hop up to the carrier's media gateway, see :func:`voicelab.sim.paths.simulate_path`),
    then the **live** SIP trunk leg from the carrier's media gateway (the lab's caller,
    G.711) to the lab's agent on loopback, optionally through a real SBC (``sbc``:
    Kamailio + rtpengine, :class:`voicelab.net.sbc.KamailioSBC`) or the lab's own media
    relay (``relay``: :class:`voicelab.net.relay.UdpRelay` anchoring the media).

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

from .errors import ParameterError

__all__ = ["parse_path", "path_call", "path_call_async", "G114_BUDGET_MS"]

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
    if head.startswith("browser"):
        raise ParameterError("browser paths (browser+gateway+sip) need the SIP<->WebRTC gateway, which is not "
                             "in this version; phone paths are: " + ", ".join(f"{p}+trunk[+sbc|+relay]" for p in PSTN_PRESETS))
    if head not in PSTN_PRESETS:
        raise ParameterError(f"unknown phone-side preset {head!r}; known: {', '.join(sorted(PSTN_PRESETS))}")
    if not rest or rest[0] not in _LIVE:
        raise ParameterError(f"after {head!r} comes the SIP trunk: '{head}+trunk' (then optionally '+sbc' or '+relay')")
    anchor = None
    if len(rest) > 1:
        if rest[1] not in _ANCHORS or len(rest) > 2:
            raise ParameterError(f"after 'trunk' only one of {', '.join(_ANCHORS)} may follow, got {'+'.join(rest[1:])!r}")
        anchor = rest[1]
    return {"pstn": head, "anchor": anchor}


async def path_call_async(path: str, *, seconds: float = 4.0, speech: str = "default", seed: int = 0,
                          jitter_buffer: str = "fixed:60", quality: bool = True) -> dict[str, Any]:
    """Coroutine form of :func:`path_call`."""
    from .calls import sip_call
    from .net import ChannelConfig
    from .sim.paths import simulate_path

    p = parse_path(path)
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
