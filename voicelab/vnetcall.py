"""Calls on the virtual network: the lab's caller and agent behind NAT boxes.

:func:`vnet_sip_call` and :func:`vnet_webrtc_call` build one topology on a
:class:`~voicelab.net.vnet.VirtualNetwork`, put the lab's live stacks on it through
:class:`~voicelab.net.vnet_iface.VirtualHostInterface` (nothing of theirs is patched)
and report what a researcher needs to see about NAT traversal: did audio arrive in each
direction, along which path, what did setup cost, how much longer is the path, how many
bytes went through a relay. :func:`vnet_call` dispatches on ``method``.

The topology
------------
::

    caller 192.168.1.10 --5 ms-- [home NAT, preset] --10 ms--+
                                 wan 198.51.100.10            |
                                                          internet --10 ms-- servers 203.0.113.10
                                                              |             (STUN :3478, TURN :3479)
    agent 10.0.0.10 --1 ms-- [cloud NAT, preset] --5 ms------+--1 ms-- sbc 203.0.113.30
                             wan 203.0.113.20                          (media relay, agent's edge)

With the ``open`` preset a side's router is a plain router and its host has a public
address (caller 198.51.100.70, agent 203.0.113.70). The cloud NAT forwards the agent's
SIP port (UDP 5060) statically, as a cloud provider's NAT or load balancer does, and the
agent puts that public address in its Contact (``external_signaling_address`` in
Asterisk's words): SIP signalling always works, which isolates the *media* question.
Link delays are in :data:`DEFAULT_LINKS` (``network=`` overrides any of them);
``uplink`` / ``downlink`` replace the two directions of the caller's access link (the
place a phone's impairment usually is).

SIP methods (run in real time on an ordinary loop, or in virtual time under
:func:`voicelab.net.vclock.run_virtual`)
---------------------------------------------------------------------------------
``sip``
    Plain SIP: each side writes its own host address in SDP (private behind a NAT),
    sends RTP there and never moves; both accept RTP from any source. Audio reaches the
    agent only when the agent's address is public, and the caller only when the
    caller's is: a NATed caller calling a public agent hears nothing (one-way audio).
``sip-comedia``
    As ``sip``, but the agent does symmetric RTP (latching, "comedia"): once the
    caller's media arrives it sends back to the source address it came from. SIP itself
    crosses the caller's NAT thanks to ``rport`` (RFC 3581): the agent answers to the
    ``received``/``rport`` source, not to the private Via.
``sip-relay``
    An SBC-like media anchor on a public host at the agent's edge (as rtpengine does):
    each leg's SDP names the relay, and the relay latches on both legs, so both NAT
    boxes only ever see replies to packets their host sent. Modelling shortcut: the
    SDP rewrite an SBC does on the signalling path is applied at the caller (it offers
    the relay's agent-facing address and sends to the relay's caller-facing one); the
    SIP messages still travel caller <-> agent directly and the media path is the real
    one through the network.

WebRTC methods (aiortc peers on the virtual network, real time: aiortc paces media and
runs DTLS on the wall clock, so these never run under a virtual clock)
---------------------------------------------------------------------------------------
``webrtc-stun``: ICE with the lab's STUN server; ``webrtc-turn``: STUN and the lab's
TURN server (RFC 5766, :mod:`voicelab.net.turn`); ``webrtc-relay-only``: the ``relay``
ICE transport policy. Offer and answer are handed over in-process (a signalling server
reachable by both is assumed, as it always is for WebRTC); only media and ICE cross the
NATs. A cell whose ICE has not connected within ``connect_timeout`` seconds counts as
failed (aioice itself would give up only after about 30 s of check retransmissions).

This module is an asyncio adapter (it imports :mod:`asyncio`); it reads only the event
loop's clock.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from typing import Any, Mapping

import numpy as np

from . import audio
from .agent import Agent
from .errors import ParameterError, VoicelabError
from .net import ChannelConfig
from .net.nat import PRESETS
from .net.relay import UdpRelay
from .net.vnet import INTERNET, LinkConfig, VirtualNetwork
from .net.vnet_iface import VirtualHostInterface
from .rtp.live import LiveAudioStream

__all__ = [
    "vnet_call",
    "vnet_sip_call",
    "vnet_webrtc_call",
    "build_topology",
    "SIP_METHODS",
    "WEBRTC_METHODS",
    "METHODS",
    "DEFAULT_LINKS",
    "ADDRESSES",
]

#: SIP methods (see the module docstring).
SIP_METHODS = ("sip", "sip-comedia", "sip-relay")
#: WebRTC methods (see the module docstring).
WEBRTC_METHODS = ("webrtc-stun", "webrtc-turn", "webrtc-relay-only")
#: Every method, in the matrix's order.
METHODS = SIP_METHODS + WEBRTC_METHODS

#: Base link of each topology element (``network=`` overrides any of them). ``caller``,
#: ``agent``, ``servers``, ``sbc``: the host's access link; ``home``, ``cloud``: the
#: router's WAN link. Delays in ms, one way.
DEFAULT_LINKS: dict[str, dict[str, float]] = {
    "caller": {"delay_ms": 5.0},
    "home": {"delay_ms": 10.0},
    "cloud": {"delay_ms": 5.0},
    "agent": {"delay_ms": 1.0},
    "servers": {"delay_ms": 10.0},
    "sbc": {"delay_ms": 1.0},
}

#: Where everything sits (see the module docstring's drawing).
ADDRESSES = {
    "home_wan": "198.51.100.10",
    "home_subnet": "192.168.1.0/24",
    "caller": "192.168.1.10",
    "home_public_subnet": "198.51.100.64/26",
    "caller_public": "198.51.100.70",
    "cloud_wan": "203.0.113.20",
    "cloud_subnet": "10.0.0.0/24",
    "agent": "10.0.0.10",
    "cloud_public_subnet": "203.0.113.64/26",
    "agent_public": "203.0.113.70",
    "servers": "203.0.113.10",
    "sbc": "203.0.113.30",
}
SIP_PORT = 5060
STUN_PORT = 3478
TURN_PORT = 3479
TURN_USER = ("voicelab", "voicelab")


# ---------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------


def _check_preset(value: Any, what: str) -> str:
    if not isinstance(value, str) or value not in PRESETS:
        raise ParameterError(f"unknown {what} NAT preset {value!r}: use one of " + ", ".join(repr(p) for p in PRESETS))
    return value


def _check_method(value: Any) -> str:
    if value not in METHODS:
        raise ParameterError(f"unknown method {value!r}: use one of " + ", ".join(repr(m) for m in METHODS))
    return value


def _links(network: Mapping[str, Any] | None, uplink: Any, downlink: Any) -> dict[str, LinkConfig]:
    if network is not None and not isinstance(network, Mapping):
        raise ParameterError(f"network must be a dict of link settings by element ({', '.join(DEFAULT_LINKS)}), "
                             f"got {type(network).__name__}")
    unknown = sorted(set(network or {}) - set(DEFAULT_LINKS))
    if unknown:
        raise ParameterError(f"unknown network element(s) {unknown}: valid names are {', '.join(DEFAULT_LINKS)}")
    out = {name: LinkConfig.coerce((network or {}).get(name, base)) for name, base in DEFAULT_LINKS.items()}
    for name, value in (("uplink", uplink), ("downlink", downlink)):
        if value is not None and not isinstance(value, (ChannelConfig, Mapping)):
            raise ParameterError(f"{name} must be a ChannelConfig or a dict of channel settings, got {type(value).__name__}")
    if uplink is not None or downlink is not None:
        c = out["caller"]
        up = c.up if uplink is None else LinkConfig.coerce(uplink).up
        down = c.down if downlink is None else LinkConfig.coerce(downlink).down
        out["caller"] = LinkConfig(up, down)
    return out


def build_topology(caller_nat: str = "open", agent_nat: str = "open", *, seed: int = 0,
                   network: Mapping[str, Any] | None = None, uplink: Any = None, downlink: Any = None,
                   trace: bool = True) -> tuple[VirtualNetwork, dict[str, Any]]:
    """The call topology of the module docstring, with the two NAT presets.

    Parameters
    ----------
    caller_nat, agent_nat : str
        NAT presets (``open``, ``full-cone``, ``restricted-cone``,
        ``port-restricted-cone``, ``symmetric``) of the caller's home router and the
        agent's cloud router.
    seed : int
        Seed of the network (link loss/jitter, NAT ports, ephemeral ports).
    network : dict, optional
        Link settings by element name (keys of :data:`DEFAULT_LINKS`), each anything
        :class:`~voicelab.net.vnet.LinkConfig` accepts.
    uplink, downlink : ChannelConfig or dict, optional
        Replace the caller's access link directions (caller -> network, network -> caller).
    trace : bool
        Keep the packet trace.

    Returns
    -------
    (VirtualNetwork, dict)
        The network and the addresses that matter: ``caller``, ``agent`` (host
        addresses), ``agent_sip`` (the public (ip, port) that reaches the agent's SIP
        port), ``servers``, ``sbc``.

    Raises
    ------
    ParameterError
        Unknown preset, bad link settings or seed (before anything runs).
    """
    caller_nat = _check_preset(caller_nat, "caller")
    agent_nat = _check_preset(agent_nat, "agent")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")
    links = _links(network, uplink, downlink)
    A = ADDRESSES
    net = VirtualNetwork(seed=int(seed), trace=trace)
    info: dict[str, Any] = {"caller_nat": caller_nat, "agent_nat": agent_nat}
    if caller_nat == "open":
        net.add_router("home", nat="open", subnet=A["home_public_subnet"], wan_address=A["home_wan"], link=links["home"])
        info["caller"] = A["caller_public"]
    else:
        net.add_router("home", nat=caller_nat, subnet=A["home_subnet"], wan_address=A["home_wan"], link=links["home"])
        info["caller"] = A["caller"]
    net.add_host("caller", info["caller"], router="home", link=links["caller"])
    if agent_nat == "open":
        net.add_router("cloud", nat="open", subnet=A["cloud_public_subnet"], wan_address=A["cloud_wan"], link=links["cloud"])
        info["agent"] = A["agent_public"]
        info["agent_sip"] = (info["agent"], SIP_PORT)
    else:
        net.add_router("cloud", nat=agent_nat, subnet=A["cloud_subnet"], wan_address=A["cloud_wan"], link=links["cloud"])
        info["agent"] = A["agent"]
        net.add_port_forward("cloud", "udp", SIP_PORT, (info["agent"], SIP_PORT))
        info["agent_sip"] = (A["cloud_wan"], SIP_PORT)
    net.add_host("agent", info["agent"], router="cloud", link=links["agent"])
    net.add_host("servers", A["servers"], link=links["servers"])
    net.add_host("sbc", A["sbc"], link=links["sbc"])
    info["servers"] = A["servers"]
    info["sbc"] = A["sbc"]
    return net, info


def _uplinks(net: VirtualNetwork, host: str) -> list[tuple[str, LinkConfig]]:
    """(segment reached, link) from a host up to the internet."""
    h = net.hosts[host]
    out = [(h.segment, h.link)]
    seg = h.segment
    while seg != INTERNET:
        r = net.routers[seg]
        out.append((r.parent, r.link))
        seg = r.parent
    return out


def route_delay_ms(net: VirtualNetwork, a: str, b: str) -> float:
    """Base one-way delay (sum of the links' ``delay_ms``) from host ``a`` to host ``b``, ms."""
    ua, ub = _uplinks(net, a), _uplinks(net, b)
    segs_b = [s for s, _ in ub]
    total = 0.0
    meet = INTERNET
    for seg, link in ua:
        total += link.up.delay_ms
        if seg in segs_b:
            meet = seg
            break
    for seg, link in ub:
        total += link.down.delay_ms
        if seg == meet:
            break
    return total


def _trace_summary(net: VirtualNetwork) -> dict[str, Any]:
    h = hashlib.sha256()
    drops: Counter = Counter()
    for r in net.trace:
        h.update(repr((round(r.time, 9), r.packet_id, r.hop, r.action, r.src, r.dst, r.out_src, r.out_dst,
                       r.size_bytes, r.reason, r.attempt)).encode())
        h.update(r.payload)
        if r.dropped and r.reason:
            drops[r.reason] += 1
    return {"trace_records": len(net.trace), "trace_sha256": h.hexdigest(), "drops": dict(sorted(drops.items()))}


def _speech(speech: str, seconds: float, codec: str) -> tuple[np.ndarray, Any]:
    from .audio import load_speech

    sp = load_speech(speech=speech, max_speech_s=max(1.0, seconds), codec=codec)
    x = audio.resample(np.asarray(sp.samples, dtype=np.float64), sp.sample_rate, 16000)
    n = int(round(seconds * 16000))
    if 0 < len(x) < n:  # a corpus shorter than the call: play it again (with a 0.3 s pause)
        unit = np.concatenate([x, np.zeros(4800)])
        x = np.tile(unit, int(np.ceil(n / len(unit))))
    return x[:n], sp


def _check_seconds(seconds: Any) -> float:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise ParameterError(f"seconds must be a number, got {seconds!r}") from None
    if not 0.5 <= s <= 60.0:
        raise ParameterError(f"seconds {seconds!r} is outside 0.5..60")
    return s


def _arrived(received: int, sent: int) -> bool:
    """Audio counts as arrived when at least half of the packets sent were received."""
    return sent > 0 and received >= 0.5 * sent


# ---------------------------------------------------------------------------------------
# SIP
# ---------------------------------------------------------------------------------------


class _LatchingRelay(UdpRelay):
    """A media anchor that latches on both legs (rtpengine's default behaviour)."""

    def _from_target(self, data: bytes, addr) -> None:
        self.target = tuple(addr[:2])
        super()._from_target(data, addr)


def _empty_direction() -> dict[str, Any]:
    return {"mouth_to_ear_ms": None, "pesq_nb": None, "pesq_wb": None, "delay_confidence": None, "loss_rate": None,
            "jitter_ms": None, "late_loss_rate": None, "playout_delay_ms": None}


async def vnet_sip_call(
    *,
    caller_nat: str = "open",
    agent_nat: str = "open",
    method: str = "sip",
    codec: str = "pcmu",
    seconds: float = 4.0,
    speech: str = "default",
    uplink: ChannelConfig | Mapping[str, Any] | None = None,
    downlink: ChannelConfig | Mapping[str, Any] | None = None,
    jitter_buffer: str = "fixed:60",
    seed: int = 0,
    quality: bool = True,
    network: Mapping[str, Any] | None = None,
    on_media_done: Any = None,
    keep_network: list | None = None,
) -> dict[str, Any]:
    """One SIP call between the lab's caller and agent on the virtual network.

    Runs on the running event loop: real time on an ordinary loop, virtual time under
    :func:`voicelab.net.vclock.run_virtual` (``run_virtual(vnet_sip_call(...))``; two runs
    with one seed then give identical results, down to the packet trace's digest).

    Parameters
    ----------
    caller_nat, agent_nat : str
        NAT presets of the caller's home router and the agent's cloud router.
    method : {"sip", "sip-comedia", "sip-relay"}
        See the module docstring.
    codec : str
        The one codec the caller offers.
    seconds : float
        Speech sent in each direction, 0.5..60 s.
    speech : str
        Named speech (``"default"``: the natural corpus when available).
    uplink, downlink : ChannelConfig or dict, optional
        Impairment of the caller's access link (caller -> network, network -> caller),
        replacing its base link.
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"`` on both sides.
    seed : int
        Seeds the network (loss, jitter, NAT ports), Call-IDs/tags and RTP initial values.
    quality : bool
        Measure mouth-to-ear delay and PESQ per direction (off: only delivery counts).
    network : dict, optional
        Link overrides by element (see :data:`DEFAULT_LINKS`).
    on_media_done : callable, optional
        Called with no argument when the call has ended, before the recordings are
        scored (e.g. for the CLI to time the call apart from PESQ).
    keep_network : list, optional
        The :class:`~voicelab.net.vnet.VirtualNetwork` the call runs on is appended
        (to draw its packet trace afterwards).

    Returns
    -------
    dict
        ``method``, ``caller_nat``, ``agent_nat``, ``codec``, ``setup_ms``,
        ``post_dial_delay_ms``, ``caller_to_agent`` / ``agent_to_caller`` (bool: at least
        half of the packets sent in that direction were received), ``path``
        (``"direct"``, ``"media-relay"`` or None when no audio flowed), ``route_ms``
        (base one-way delay of the media path, caller -> agent), ``added_delay_ms``
        (``route_ms`` minus the direct route's), ``relay_bytes`` (payload bytes the media
        relay forwarded, both ways), ``sip_via_rport`` (the agent answered to the NAT's
        mapped address), ``trace_sha256``, ``trace_records``, ``drops`` (dropped packets
        by reason), ``virtual_time``, and per direction (``caller_to_agent.*``,
        ``agent_to_caller.*``): ``packets_sent``, ``packets_received``,
        ``mouth_to_ear_ms``, ``pesq_nb``, ``pesq_wb``, ``loss_rate``, ``jitter_ms``,
        ``late_loss_rate``, ``playout_delay_ms``, ... (as :func:`voicelab.calls.sip_call`).

    Raises
    ------
    ParameterError
        Unknown preset or method (WebRTC methods: use :func:`vnet_webrtc_call`), bad
        link settings or seconds, or the call could not be set up.
    """
    from .calls import direction_report, open_caller
    from .net.vclock import is_virtual
    from .sip.ua import CallEnded, CallEstablished, CallFailed

    method = _check_method(method)
    if method not in SIP_METHODS:
        raise ParameterError(f"method {method!r} is a WebRTC method: use vnet_webrtc_call (or vnet_call)")
    seconds = _check_seconds(seconds)
    net, info = build_topology(caller_nat, agent_nat, seed=seed, network=network, uplink=uplink, downlink=downlink)
    if keep_network is not None:  # the caller keeps the network (and its packet trace)
        keep_network.append(net)
    x, sp = _speech(speech, seconds, codec)
    loop = asyncio.get_running_loop()
    ifc, ifa = VirtualHostInterface(net, "caller"), VirtualHostInterface(net, "agent")
    seeds = [int(s.generate_state(1)[0]) % 2**31 for s in np.random.SeedSequence(seed).spawn(4)]
    target = f"sip:agent@{info['agent_sip'][0]}:{info['agent_sip'][1]}"
    # the agent knows its public SIP address (a static forward) and, for plain SIP, sends
    # media where the SDP says (no latching)
    agent = Agent(latching=(method != "sip"), contact=target, host=info["agent"], port=SIP_PORT, codecs=[codec],
                  jitter_buffer=jitter_buffer, iface=ifa, seed=seeds[1])  # fmt: skip
    agent._speech_override = x
    await agent.start()
    ua, sip = await open_caller(ifc, codec=codec, rtcp_mux=True, seed=seeds[0], host=info["caller"])
    stream: LiveAudioStream | None = None
    relay: _LatchingRelay | None = None
    agent_stream: LiveAudioStream | None = None
    try:
        media_port = ifc.free_port("udp")
        offer_port = media_port
        if method == "sip-relay":
            ifs = VirtualHostInterface(net, "sbc")
            relay = await _LatchingRelay(ifs, (info["agent"], 9), listen=(info["sbc"], 0), seed=seeds[3],
                                         client=(info["caller"], media_port)).start()  # fmt: skip
            ua.media_address = info["sbc"]  # the SBC's rewrite of the offer: media to the agent goes via it
            offer_port = relay.back_address[1]
        call = ua.invite(target, now=loop.time(), media_port=offer_port)
        sip.flush()
        ev = await sip.wait_for(CallEstablished, CallFailed, timeout=40.0)
        if isinstance(ev, CallFailed):
            raise ParameterError(f"the call failed: {ev.status} {getattr(ev, 'reason', '')}")
        m = call.media
        stream = LiveAudioStream.for_media(ifc, m, local_addr=(info["caller"], media_port), source_filter=False,
                                           jitter_buffer=jitter_buffer, seed=seeds[2], cname="caller@voicelab")
        await stream.open()
        if relay is not None:
            relay.target = (m.remote_address, m.remote_port)  # until the agent's media latches it
            stream.set_remote(relay.front_address)
        else:
            stream.set_remote((m.remote_address, m.remote_port))
        t0 = loop.time() + 0.02
        stream.send(x, 16000, start_at=t0)
        agent_stream = next(iter(agent.streams.values()), None)
        if agent_stream is None:
            raise ParameterError("the agent has no media stream for the call")
        end = t0 + len(x) / 16000 + 0.5
        await asyncio.sleep(max(0.0, end - loop.time()))
        for s in (stream, agent_stream):  # a stream that plays (audio arrived) plays through
            if s.received_audio()[0].size:
                try:
                    await asyncio.wait_for(s.played_through(end), 10.0)
                except asyncio.TimeoutError:
                    pass
        ua.bye(call, now=loop.time())
        sip.flush()
        await sip.wait_for(CallEnded, timeout=40.0)
        await asyncio.wait_for(agent.ended(1), 40.0)
    finally:
        if stream is not None:
            await stream.close()
        if relay is not None:
            await relay.close()
        await sip.close()
        await agent.close()

    via_rport, seen_as = _agent_saw_rport(agent)
    out: dict[str, Any] = {
        "transport": "sip",
        "net": "vnet",
        "method": method,
        "caller_nat": caller_nat,
        "agent_nat": agent_nat,
        "codec": m.codec,
        "setup_ms": call.times.setup_ms,
        "post_dial_delay_ms": call.times.post_dial_delay_ms,
        "sip_via_rport": via_rport,
        "caller_sip_seen_as": seen_as,
        "virtual_time": is_virtual(loop),
        "speech": sp.name,
        "synthetic_speech": bool(sp.synthetic),
        "seconds": len(x) / 16000,
    }
    if on_media_done is not None:
        on_media_done()
    flags = {}
    for name, s, r in (("caller_to_agent", stream, agent_stream), ("agent_to_caller", agent_stream, stream)):
        sent = int(s.session.stats.packets_sent)
        rs = r.session.receiver_stats
        received = int(rs.received) if rs is not None else 0
        flags[name] = _arrived(received, sent)
        d: dict[str, Any] = {"packets_sent": sent, "packets_received": received}
        if received:
            d.update(direction_report(s, r, x, quality=quality))
        else:
            d.update(_empty_direction())
        out.update({f"{name}.{k}": v for k, v in d.items()})
    out["caller_to_agent"], out["agent_to_caller"] = flags["caller_to_agent"], flags["agent_to_caller"]
    direct = route_delay_ms(net, "caller", "agent")
    if relay is not None:
        route = route_delay_ms(net, "caller", "sbc") + route_delay_ms(net, "sbc", "agent")
        out["relay_bytes"] = int(relay.up.stats.bytes_forwarded + relay.down.stats.bytes_forwarded)
    else:
        route = direct
        out["relay_bytes"] = 0
    any_audio = flags["caller_to_agent"] or flags["agent_to_caller"]
    out["path"] = (("media-relay" if relay is not None else "direct") if any_audio else None)
    out["route_ms"] = route
    out["added_delay_ms"] = route - direct
    out.update(_trace_summary(net))
    if sp.synthetic:
        out["warnings"] = [audio.SYNTHETIC_WARNING]
    return out


def _agent_saw_rport(agent: Any) -> tuple[bool | None, str | None]:
    """Whether the agent answered the INVITE to its source (Via received/rport, RFC 3581),
    and that source as ``"ip:port"`` (the caller's NAT mapping, when NATed)."""
    src = dst = None
    for e in getattr(agent.ua, "trace", []):
        if src is None and e.direction == "in" and e.first_line.startswith("INVITE"):
            src = tuple(e.addr[:2])
        elif (dst is None and e.direction == "out" and e.first_line.startswith("SIP/2.0 200")
              and (e.cseq or "").endswith("INVITE")):
            dst = tuple(e.addr[:2])
    if src is None or dst is None:
        return None, None
    return dst == src, f"{src[0]}:{src[1]}"


# ---------------------------------------------------------------------------------------
# WebRTC
# ---------------------------------------------------------------------------------------


def _path_from_pairs(*pairs: dict | None) -> str | None:
    """The media path from both peers' selected pairs: the least direct candidate type
    either side sees (a symmetric NAT's side is peer-reflexive only to the other side)."""
    pairs = tuple(p for p in pairs if p)
    if not pairs:
        return None
    types = {p[k]["type"] for p in pairs for k in ("local", "remote")}
    for kind in ("relay", "prflx", "srflx"):
        if kind in types:
            return kind
    return "direct"


async def vnet_webrtc_call(
    *,
    caller_nat: str = "open",
    agent_nat: str = "open",
    method: str = "webrtc-stun",
    codec: str = "opus",
    seconds: float = 2.0,
    speech: str = "default",
    uplink: ChannelConfig | Mapping[str, Any] | None = None,
    downlink: ChannelConfig | Mapping[str, Any] | None = None,
    jitter_buffer: str = "fixed:60",
    seed: int = 0,
    quality: bool = True,
    network: Mapping[str, Any] | None = None,
    connect_timeout: float = 5.0,
    keep_network: list | None = None,
) -> dict[str, Any]:
    """One WebRTC call (two aiortc peers with the lab's media) on the virtual network.

    Real time only: run it on an ordinary event loop (``asyncio.run``), not under a
    virtual clock (aiortc paces media and runs DTLS on the wall clock).

    Parameters
    ----------
    method : {"webrtc-stun", "webrtc-turn", "webrtc-relay-only"}
    codec : {"opus", "pcmu", "pcma", "g722"}
    connect_timeout : float
        Seconds from the offer to ``connected`` before the cell counts as failed.
    others
        As for :func:`vnet_sip_call`.

    Returns
    -------
    dict
        As :func:`vnet_sip_call` where it applies: ``setup_ms`` (offer -> caller
        connected; None when ICE failed), ``connected``, ``caller_to_agent`` /
        ``agent_to_caller``, ``path`` (``"direct"`` for a host pair, ``"srflx"``,
        ``"prflx"``, ``"relay"``, or None: the least direct candidate type in either
        peer's selected pair), ``selected_pair`` (``caller``, ``agent``), ``route_ms``,
        ``added_delay_ms``, ``relay_bytes`` (TURN payload bytes, both ways, summed over
        allocations), per-direction metrics, ``drops``.

    Raises
    ------
    ParameterError
        Bad parameters, or called on a virtual-clock loop.
    """
    from .metrics.direction import direction_metrics as _direction_metrics
    from .net.stun import StunServer
    from .net.turn import TurnServer
    from .net.vclock import is_virtual
    from .webrtc.media import AudioSink, SourceTrack
    from .webrtc.peer import WEBRTC_CODECS, make_peer_connection, prefer_codec, selected_pair, stats_summary
    from . import codecs as _codecs
    from types import SimpleNamespace

    method = _check_method(method)
    if method not in WEBRTC_METHODS:
        raise ParameterError(f"method {method!r} is a SIP method: use vnet_sip_call (or vnet_call)")
    if codec not in WEBRTC_CODECS:
        raise ParameterError(f"WebRTC codec must be one of {sorted(WEBRTC_CODECS)}, got {codec!r}")
    seconds = _check_seconds(seconds)
    try:
        connect_timeout = float(connect_timeout)
    except (TypeError, ValueError):
        raise ParameterError(f"connect_timeout must be a number of seconds, got {connect_timeout!r}") from None
    if not 0 < connect_timeout <= 60:
        raise ParameterError(f"connect_timeout must be in (0, 60] s, got {connect_timeout!r}")
    loop = asyncio.get_running_loop()
    if is_virtual(loop):
        raise ParameterError("WebRTC calls run in real time (aiortc uses the wall clock): use asyncio.run, not run_virtual")
    net, info = build_topology(caller_nat, agent_nat, seed=seed, network=network, uplink=uplink, downlink=downlink)
    if keep_network is not None:  # the caller keeps the network (and its packet trace)
        keep_network.append(net)
    x, sp = _speech(speech, seconds, codec)
    facts = _codecs.get(codec)
    rate = int(facts.sample_rate)
    x_codec = audio.resample(x, 16000, rate) if rate != 16000 else x
    ifs = VirtualHostInterface(net, "servers")
    stun = StunServer(ifs)
    turn = TurnServer(ifs, users={TURN_USER[0]: TURN_USER[1]}, seed=seed)
    await stun.start(info["servers"], STUN_PORT)
    await turn.start(info["servers"], TURN_PORT)
    stun_url = f"stun:{info['servers']}:{STUN_PORT}"
    turn_server = {"urls": f"turn:{info['servers']}:{TURN_PORT}?transport=udp", "username": TURN_USER[0],
                   "credential": TURN_USER[1]}
    servers = {"webrtc-stun": [stun_url], "webrtc-turn": [stun_url, turn_server], "webrtc-relay-only": [turn_server]}[method]
    relay_only = method == "webrtc-relay-only"
    ifaces = {"caller": VirtualHostInterface(net, "caller"), "agent": VirtualHostInterface(net, "agent")}
    sinks = {who: AudioSink(rate) for who in ifaces}
    pcs = {who: make_peer_connection(ifaces[who], ice_servers=servers, relay_only=relay_only, codec=codec,
                                     jitter_buffer=jitter_buffer, forward_to_track=False, sink=sinks[who])
           for who in ifaces}  # fmt: skip
    tracks = {who: SourceTrack(x_codec, rate) for who in ifaces}
    caller, agent = pcs["caller"], pcs["agent"]
    connected_ok = False
    stats: dict[str, dict] = {}
    pair = agent_pair = None
    t_offer = loop.time()
    t0 = None
    try:
        connected = {who: pc.connected() for who, pc in pcs.items()}

        async def setup() -> None:
            caller.addTrack(tracks["caller"])
            prefer_codec(caller.getTransceivers()[0], codec)
            await caller.setLocalDescription(await caller.createOffer())
            await agent.setRemoteDescription(caller.localDescription)
            agent.addTrack(tracks["agent"])
            prefer_codec(agent.getTransceivers()[0], codec)
            await agent.setLocalDescription(await agent.createAnswer())
            await caller.setRemoteDescription(agent.localDescription)
            await asyncio.gather(*connected.values())

        try:
            await asyncio.wait_for(setup(), connect_timeout)
            connected_ok = True
        except (asyncio.TimeoutError, VoicelabError):
            connected_ok = False
        finally:
            for fut in connected.values():
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    fut.exception()
        if connected_ok:
            t0 = loop.time() + 0.05
            for tr in tracks.values():
                tr.start(t0)
            end = t0 + tracks["caller"].duration_s + 0.5
            await asyncio.sleep(max(0.0, end - loop.time()))
            for s in sinks.values():
                if s.end_time is not None:
                    try:
                        await asyncio.wait_for(s.played_through(end), 5.0)
                    except asyncio.TimeoutError:
                        pass
            for who, pc in pcs.items():
                stats[who] = stats_summary(await pc.getStats(), clock_rate=int(facts.clock_rate))
            pair, agent_pair = selected_pair(caller), selected_pair(agent)
    finally:
        for pc in pcs.values():
            await pc.close()
        await turn.close()
        await stun.close()

    out: dict[str, Any] = {
        "transport": "webrtc",
        "net": "vnet",
        "method": method,
        "caller_nat": caller_nat,
        "agent_nat": agent_nat,
        "codec": codec,
        "connected": connected_ok,
        "setup_ms": ((caller.event_time("connection:connected") - t_offer) * 1000.0) if connected_ok else None,
        "selected_pair": {"caller": pair, "agent": agent_pair},
        "virtual_time": False,
        "speech": sp.name,
        "synthetic_speech": bool(sp.synthetic),
        "seconds": len(x) / 16000,
    }
    flags = {}
    for name, src, dst in (("caller_to_agent", "caller", "agent"), ("agent_to_caller", "agent", "caller")):
        playout = getattr(pcs[dst].getTransceivers()[0].receiver, "lab_playout", None) if connected_ok else None
        received = len(playout.arrivals) if playout is not None else 0
        sent = tracks[src].frames_sent if connected_ok else 0
        flags[name] = connected_ok and _arrived(received, sent)
        d: dict[str, Any] = {"packets_sent": sent, "packets_received": received}
        if quality and received:
            sender = SimpleNamespace(tx=SimpleNamespace(sample_rate=rate), sent_audio=tracks[src].sent_audio)
            d.update(_direction_metrics(sender, SimpleNamespace(received_audio=sinks[dst].received_audio), x))
        else:
            d.update({"mouth_to_ear_ms": None, "pesq_nb": None, "pesq_wb": None, "delay_confidence": None})
        rs = stats.get(dst, {})
        lost = rs.get("packets_lost")
        got = rs.get("packets_received")
        d["loss_rate"] = (max(0, lost) / (got + max(0, lost))) if got else None
        d["jitter_ms"] = rs.get("jitter_ms")
        out.update({f"{name}.{k}": v for k, v in d.items()})
    out["caller_to_agent"], out["agent_to_caller"] = flags["caller_to_agent"], flags["agent_to_caller"]
    out["path"] = _path_from_pairs(pair, agent_pair) if connected_ok else None
    direct = route_delay_ms(net, "caller", "agent")
    route = direct
    if out["path"] == "relay":
        route = route_delay_ms(net, "caller", "servers") + route_delay_ms(net, "servers", "agent")
    out["route_ms"] = route if connected_ok else None
    out["added_delay_ms"] = (route - direct) if connected_ok else None
    out["relay_bytes"] = int(sum(a.bytes_to_peers + a.bytes_from_peers for a in turn.stats.allocations))
    out["turn_allocations"] = len(turn.stats.allocations)
    out["stun_requests"] = int(getattr(stun.stats, "requests", 0) or 0)
    summary = _trace_summary(net)
    out["drops"] = summary["drops"]
    out["trace_records"] = summary["trace_records"]
    if sp.synthetic:
        out["warnings"] = [audio.SYNTHETIC_WARNING]
    return out


async def vnet_call(*, method: str = "sip", **options: Any) -> dict[str, Any]:
    """:func:`vnet_sip_call` or :func:`vnet_webrtc_call`, by ``method``."""
    method = _check_method(method)
    if method in SIP_METHODS:
        return await vnet_sip_call(method=method, **options)
    return await vnet_webrtc_call(method=method, **options)
