"""Figures and tables for NAT traversal on the virtual network (chapter 6).

Everything here reads real results of :mod:`voicelab.net.vnet`,
:mod:`voicelab.vnetcall` and :mod:`voicelab.natmatrix`; nothing is simulated here.

- What a NAT does: :func:`nat_presets_table` (each preset's RFC 4787 settings next to
  what a STUN-style probe of the model measures).
- The network: :func:`topology_figure` (hosts, routers / NATs and links with their delays).
- One call, packet by packet: :func:`traced_call` runs a call and keeps its network (so
  its trace), :func:`packet_table` lists the packets, :func:`packet_steps` every step
  of some of them (link, NAT translation before/after, delivery or drop),
  :func:`key_packets` picks the first packet of each kind and fate, and
  :func:`step_through` draws them on the topology with a slider (plotly frames: the
  slider works in exported HTML too). :func:`packet_path_figure` draws one packet's
  whole path.
- The matrix: :func:`matrix_frame` (one row per cell, outcome labels) and
  :func:`matrix_heatmap` (one heatmap per method: two-way / one-way each way / none).
- What the fixes cost: :func:`relay_cost` and :func:`relay_cost_figure` (setup time,
  one-way delay added by the path, bytes through the relay; measured mouth-to-ear delay
  when the results carry it).

Payloads are named by :func:`classify_payload` after the RFC 7983 demultiplexing rules
(STUN through aioice's parser, RTP through :class:`voicelab.rtp.packet.RtpPacket`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import ParameterError
from ..natmatrix import PRESET_NAMES, outcome_label, reference_outcome
from ..net.nat import PRESETS
from ..net.vnet import INTERNET, TraceRecord, VirtualNetwork

__all__ = [
    "OUTCOMES",
    "OUTCOME_COLORS",
    "nat_presets_table",
    "topology_figure",
    "classify_payload",
    "packet_table",
    "packet_steps",
    "key_packets",
    "packet_path_figure",
    "step_through",
    "step_storyboard",
    "kernel_presets_table",
    "traced_call",
    "matrix_frame",
    "matrix_heatmap",
    "relay_cost",
    "relay_cost_figure",
]

#: Outcome labels (:func:`voicelab.natmatrix.outcome_label`) in heatmap code order 0..3.
OUTCOMES = ("none", "agent->caller only", "caller->agent only", "two-way")
#: Colour of each outcome in the heatmaps.
OUTCOME_COLORS = {
    "none": "#d62728",
    "agent->caller only": "#bcbd22",
    "caller->agent only": "#ff7f0e",
    "two-way": "#2ca02c",
}
_SHORT_PRESET = {
    "open": "open",
    "full-cone": "full cone",
    "restricted-cone": "restricted",
    "port-restricted-cone": "port-restricted",
    "symmetric": "symmetric",
}
_SHORT_OUTCOME = {"two-way": "two-way", "caller->agent only": "c→a only", "agent->caller only": "a→c only", "none": "none"}
_RELAY_PATHS = ("relay", "media-relay")
_TEMPLATE = "plotly_white"


def _addr(a: Sequence[Any]) -> str:
    return f"{a[0]}:{a[1]}"


# ---------------------------------------------------------------------------------------
# What a NAT does
# ---------------------------------------------------------------------------------------


def nat_presets_table(presets: Sequence[str] = PRESET_NAMES, *, seed: int = 0) -> pd.DataFrame:
    """Each NAT preset in RFC 4787 terms, and what a probe of the model measures.

    For every preset a host behind the NAT (192.168.1.10:5000) sends one datagram to two
    servers, A (203.0.113.10:3478) and B (203.0.113.11:3478), on a
    :class:`~voicelab.net.vnet.VirtualNetwork` (a STUN-style behaviour discovery, as in
    RFC 5780). Then four outsiders send to the address A saw: A itself from another
    port, a stranger C (203.0.113.12), A from its own port, and B (which the host has
    sent to: the hole-punching question "is the address a STUN server reported good
    for a peer?").

    Parameters
    ----------
    presets : sequence of str
        NAT preset names (default: all five, most to least permissive).
    seed : int
        Seed of the network (the NAT's random ports).

    Returns
    -------
    pandas.DataFrame
        One row per preset: the configured ``mapping``, ``filtering``,
        ``port_preservation``, ``hairpinning``, ``mapping_timeout_s``; the measured
        ``seen_by_A``, ``seen_by_B`` (the sender's address as each server saw it),
        ``same_mapping_for_A_and_B`` (endpoint-independent mapping: a STUN answer is
        valid for every peer), ``port_kept``, ``A_other_port_gets_in``,
        ``stranger_gets_in``, ``A_reply_gets_in``, ``B_reaches_A_address``.

    Raises
    ------
    ParameterError
        An unknown preset name.
    """
    if isinstance(presets, str):
        presets = [presets]
    rows = []
    for name in presets:
        if name not in PRESETS:
            raise ParameterError(f"unknown NAT preset {name!r}: use one of " + ", ".join(map(repr, PRESETS)))
        cfg = PRESETS[name]
        net = VirtualNetwork(seed=seed)
        if cfg.translate:
            net.add_router("nat", nat=name, subnet="192.168.1.0/24", wan_address="198.51.100.10")
            inside = "192.168.1.10"
        else:
            net.add_router("nat", nat="open", subnet="198.51.100.64/26", wan_address="198.51.100.10")
            inside = "198.51.100.70"
        net.add_host("host", inside, router="nat")
        servers = {"A": "203.0.113.10", "B": "203.0.113.11", "C": "203.0.113.12"}
        for who, ip in servers.items():
            net.add_host(who, ip)
            net.bind(who, (ip, 3478))
        net.bind("A", (servers["A"], 3479))
        src = net.bind("host", (inside, 5000))
        t = 0.0
        seen = {}
        for who in ("A", "B"):
            net.send_datagram("host", src, (servers[who], 3478), b"probe", now=t)
            t += 0.1
            got = [e for e in net.advance(t) if e.host == who]
            seen[who] = got[0].src if got else None
        mapped = seen["A"]

        def gets_in(sender: str, port: int) -> bool:
            nonlocal t
            if mapped is None:
                return False
            net.send_datagram(sender, (servers[sender], port), mapped, b"in", now=t)
            t += 0.1
            return any(e.host == "host" for e in net.advance(t))

        rows.append({
            "preset": name,
            "mapping": cfg.mapping if cfg.translate else "none (routed)",
            "filtering": cfg.filtering if cfg.translate else "none",
            "port_preservation": cfg.port_preservation if cfg.translate else None,
            "hairpinning": cfg.hairpinning if cfg.translate else None,
            "mapping_timeout_s": cfg.mapping_timeout_s if cfg.translate else None,
            "seen_by_A": _addr(seen["A"]) if seen["A"] else None,
            "seen_by_B": _addr(seen["B"]) if seen["B"] else None,
            "same_mapping_for_A_and_B": seen["A"] == seen["B"],
            "port_kept": seen["A"] is not None and seen["A"][1] == src[1],
            "A_other_port_gets_in": gets_in("A", 3479),
            "stranger_gets_in": gets_in("C", 3478),
            "A_reply_gets_in": gets_in("A", 3478),
            "B_reaches_A_address": gets_in("B", 3478),
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------


def kernel_presets_table(presets: Sequence[str] | None = None) -> pd.DataFrame:
    """Probe the Linux kernel's NATs as :func:`nat_presets_table` probes the model, side by side.

    For each preset the kernel can express (:data:`voicelab.net.netns.KERNEL_PRESETS`):
    build a host behind the NAT and two outside hosts A and B from network namespaces
    and iptables; the host sends from port 5000 to A and to B; did both see the same
    public address (endpoint-independent mapping)? Then B sends to the address A saw:
    does it reach the host (the ICE question)? The model's answers to the same two
    questions sit next to the kernel's, and ``agree`` says whether both match.

    Parameters
    ----------
    presets : sequence of str, optional
        Default: all of ``KERNEL_PRESETS``.

    Returns
    -------
    pandas.DataFrame
        ``preset``, ``kernel_seen_by_A``, ``kernel_same_mapping``,
        ``kernel_B_reaches_A_address``, the model's ``same_mapping_for_A_and_B`` and
        ``B_reaches_A_address``, and ``agree``.

    Raises
    ------
    ToolUnavailableError
        When network namespaces cannot be used here (needs Linux, root, ``ip`` from
        Debian package ``iproute2`` and ``iptables``); the reason says which.
    ParameterError
        A preset the kernel cannot express.
    """
    from ..errors import ToolUnavailableError
    from ..net.netns import KERNEL_PRESETS, NetnsNetwork, netns_unavailable_reason

    presets = list(KERNEL_PRESETS if presets is None else presets)
    bad = [p for p in presets if p not in KERNEL_PRESETS]
    if bad:
        raise ParameterError(f"the kernel cross-check covers {list(KERNEL_PRESETS)}, not {bad}")
    reason = netns_unavailable_reason()
    if reason is not None:
        raise ToolUnavailableError(f"kernel cross-check unavailable: {reason}")
    rows = []
    for preset in presets:
        inside = "192.168.1.10" if preset != "open" else "198.51.100.70"
        subnet = "192.168.1.0/24" if preset != "open" else "198.51.100.64/26"
        topo = {"routers": {"nat": {"nat": preset, "subnet": subnet, "wan_address": "198.51.100.10"}},
                "hosts": {"host": {"address": inside, "router": "nat"}, "A": {"address": "203.0.113.10"},
                          "B": {"address": "203.0.113.11"}}}
        with NetnsNetwork(topo) as knet:
            host, a, b = knet.udp_probe("host", 5000), knet.udp_probe("A", 3478), knet.udp_probe("B", 3478)
            host.send(a.local, b"probe")
            host.send(b.local, b"probe")
            seen_a, seen_b = a.recv(timeout=2.0), b.recv(timeout=2.0)
            if seen_a is None or seen_b is None:
                raise ToolUnavailableError(f"kernel cross-check: the {preset} NAT let no probe out")
            b.send(seen_a.src, b"in")  # B answers at the address A saw
            rows.append({"preset": preset, "kernel_seen_by_A": f"{seen_a.src[0]}:{seen_a.src[1]}",
                         "kernel_same_mapping": seen_a.src == seen_b.src,
                         "kernel_B_reaches_A_address": host.recv(timeout=1.0) is not None})
    kernel = pd.DataFrame(rows).merge(
        nat_presets_table(presets)[["preset", "same_mapping_for_A_and_B", "B_reaches_A_address"]], on="preset")
    kernel["agree"] = ((kernel["kernel_same_mapping"] == kernel["same_mapping_for_A_and_B"])
                       & (kernel["kernel_B_reaches_A_address"] == kernel["B_reaches_A_address"]))
    return kernel


def _check_net(net: Any) -> VirtualNetwork:
    if not isinstance(net, VirtualNetwork):
        raise ParameterError(f"expected a voicelab.net.vnet.VirtualNetwork, got {type(net).__name__}")
    return net


def _layout(net: VirtualNetwork) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str]]]:
    """Node positions (internet on top, a tree below) and edges (child, parent)."""
    routers, hosts = net.routers, net.hosts
    children: dict[str, list[str]] = {INTERNET: []}
    for r in routers.values():
        children.setdefault(r.name, [])
        children.setdefault(r.parent, []).append(r.name)
    for h in hosts.values():
        children.setdefault(h.segment, []).append(h.name)
    top = children[INTERNET]
    top_routers = [n for n in top if n in routers]
    top_hosts = [n for n in top if n in hosts]
    half = (len(top_routers) + 1) // 2
    # routers on the sides, public hosts (servers) between them
    children[INTERNET] = top_routers[:half] + top_hosts + top_routers[half:]
    pos: dict[str, tuple[float, float]] = {}
    next_x = [0.0]

    def place(node: str, depth: int) -> float:
        kids = children.get(node, [])
        if not kids:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            x = float(np.mean([place(k, depth + 1) for k in kids]))
        pos[node] = (x, -float(depth))
        return x

    place(INTERNET, 0)
    edges = [(r.name, r.parent) for r in routers.values()] + [(h.name, h.segment) for h in hosts.values()]
    return pos, edges


def _node_label(net: VirtualNetwork, node: str) -> str:
    if node == INTERNET:
        return "<b>internet</b>"
    routers, hosts = net.routers, net.hosts
    if node in hosts:
        return f"<b>{node}</b><br>{hosts[node].address}"
    r = routers[node]
    kind = "router (no NAT)" if r.nat is None else f"NAT {r.nat.config.classic_name or 'custom'}"
    return f"<b>{node}</b>: {kind}<br>wan {r.wan_address}<br>inside {r.subnet}"


def _link_label(link: Any) -> str:
    up, down = link.up.delay_ms, link.down.delay_ms
    return f"{up:g} ms" if up == down else f"{up:g}/{down:g} ms"


def _base_traces(net: VirtualNetwork, pos: dict, edges: list) -> list[go.Scatter]:
    ex: list[float | None] = []
    ey: list[float | None] = []
    lx, ly, lt = [], [], []
    routers, hosts = net.routers, net.hosts
    for child, parent in edges:
        (x0, y0), (x1, y1) = pos[child], pos[parent]
        ex += [x0, x1, None]
        ey += [y0, y1, None]
        link = hosts[child].link if child in hosts else routers[child].link
        lx.append(x1 + 0.7 * (x0 - x1))  # nearer the child: clear of the parent's label
        ly.append(y1 + 0.7 * (y0 - y1))
        lt.append(_link_label(link))
    names = list(pos)
    styles = []  # (colour, symbol, size) per node
    for n in names:
        if n == INTERNET:
            styles.append(("#9ecae1", "circle", 46))
        elif n in routers:
            styles.append(("#fdae6b" if routers[n].nat is not None else "#bdbdbd", "square", 26))
        else:
            styles.append(("#3182bd", "circle", 18))
    color, symbol, size = (list(v) for v in zip(*styles))
    return [
        go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#969696", width=2), hoverinfo="skip", showlegend=False),
        go.Scatter(x=lx, y=ly, mode="text", text=lt, textfont=dict(size=10, color="#636363"), textposition="middle right",
                   hoverinfo="skip", showlegend=False),
        go.Scatter(x=[pos[n][0] for n in names], y=[pos[n][1] for n in names], mode="markers+text",
                   marker=dict(color=color, symbol=symbol, size=size, line=dict(color="#404040", width=1)),
                   text=[_node_label(net, n) for n in names], textposition="bottom center", textfont=dict(size=10),
                   hovertext=names, hoverinfo="text", showlegend=False, customdata=names),
    ]


def _frame_layout(fig: go.Figure, pos: dict, title: str, *, extra_top: float = 0.0) -> None:
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    fig.update_layout(
        title=title, template=_TEMPLATE, height=460 + 40 * int(extra_top > 0),
        xaxis=dict(visible=False, range=[min(xs) - 0.7, max(xs) + 0.9]),
        yaxis=dict(visible=False, range=[min(ys) - 0.8, max(ys) + 0.4 + extra_top]),
        margin=dict(l=10, r=10, t=50, b=10),
    )


def topology_figure(net: VirtualNetwork, *, title: str | None = None) -> go.Figure:
    """Draw a virtual network: the internet on top, routers (NAT in orange, plain in
    grey) and hosts below, each link labelled with its one-way delay (``up/down`` ms
    when the directions differ).

    Parameters
    ----------
    net : VirtualNetwork
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    net = _check_net(net)
    pos, edges = _layout(net)
    fig = go.Figure(_base_traces(net, pos, edges))
    _frame_layout(fig, pos, title or "The virtual network")
    return fig


# ---------------------------------------------------------------------------------------
# Packets
# ---------------------------------------------------------------------------------------

_STUN_METHODS = {1: "Binding", 3: "Allocate", 4: "Refresh", 6: "Send", 7: "Data", 8: "CreatePermission", 9: "ChannelBind"}
_STUN_CLASSES = {0: "request", 0x10: "indication", 0x100: "success", 0x110: "error"}
_RTCP_TYPES = {200: "SR", 201: "RR", 202: "SDES", 203: "BYE", 204: "APP", 205: "RTPFB", 206: "PSFB", 207: "XR"}
_DTLS_TYPES = {20: "change cipher spec", 21: "alert", 22: "handshake", 23: "application data"}


def classify_payload(payload: bytes, proto: str = "udp") -> str:
    """Name a UDP payload: SIP, RTP, RTCP, STUN/TURN, TURN ChannelData or DTLS.

    Follows RFC 7983's first-byte demultiplexing (0-3 STUN, 20-63 DTLS, 64-79 TURN
    channel, 128-191 RTP/RTCP) and falls back to SIP for a text first line.

    Parameters
    ----------
    payload : bytes
    proto : {"udp", "tcp"}

    Returns
    -------
    str
        e.g. ``"SIP INVITE"``, ``"SIP 200 OK"``, ``"RTP PT 0"``, ``"RTCP SR"``,
        ``"STUN Binding request"``, ``"TURN Allocate success"``, ``"TURN ChannelData"``,
        ``"DTLS handshake"``, ``"TCP"`` (an empty stream segment) or ``"data"``.
    """
    b = bytes(payload)
    if not b:
        return "TCP" if proto == "tcp" else "empty"
    first = b[0]
    if first < 4:
        from ..net.stun import try_parse

        msg = try_parse(b)
        if msg is not None:
            method = _STUN_METHODS.get(int(msg.message_method), f"method {int(msg.message_method)}")
            cls = _STUN_CLASSES.get(int(msg.message_class), "?")
            family = "STUN" if method == "Binding" else "TURN"
            return f"{family} {method} {cls}"
        return "data"
    if 20 <= first <= 63:
        return f"DTLS {_DTLS_TYPES.get(first, 'record')}"
    sip = _sip_first_line(b)
    if sip is not None:  # before ChannelData: 'A'..'O' (ACK, BYE, INVITE) are bytes 65..79
        return sip
    if 64 <= first <= 79 and len(b) >= 4 and 0 <= len(b) - 4 - int.from_bytes(b[2:4], "big") < 4:
        return "TURN ChannelData"
    if 128 <= first <= 191 and len(b) >= 2:
        pt = b[1]
        if 200 <= pt <= 207:
            return f"RTCP {_RTCP_TYPES[pt]}"
        if len(b) >= 12:
            return f"RTP PT {pt & 0x7F}"
    return "data"


def _sip_first_line(b: bytes) -> str | None:
    end = b.find(b"\r\n", 0, 200)
    if end < 0:
        return None
    try:
        text = b[:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("SIP/2.0 "):
        return "SIP " + text[8:].strip()
    parts = text.split(" ")
    if len(parts) == 3 and parts[2] == "SIP/2.0" and parts[0].isalpha() and parts[0].isupper():
        return f"SIP {parts[0]}"
    return None


def _records(trace: Any) -> list[TraceRecord]:
    if isinstance(trace, VirtualNetwork):
        recs = trace.trace
    else:
        try:
            recs = list(trace)
        except TypeError:
            raise ParameterError(f"trace must be a VirtualNetwork or a list of TraceRecord, got {type(trace).__name__}") from None
    if any(not isinstance(r, TraceRecord) for r in recs):
        raise ParameterError("trace must hold voicelab.net.vnet.TraceRecord objects (net.trace), not rows or dicts")
    if not recs:
        raise ParameterError("the trace is empty: was the network built with trace=True and did anything get sent?")
    return list(recs)


def _by_packet(recs: list[TraceRecord]) -> dict[int, list[TraceRecord]]:
    out: dict[int, list[TraceRecord]] = {}
    for r in recs:
        out.setdefault(r.packet_id, []).append(r)
    return out


def _sender(first: TraceRecord) -> str:
    if first.action == "link":
        return first.hop.split("->", 1)[0]
    return first.hop.split(" ", 1)[-1]


def _fate(rec: TraceRecord) -> str:
    where = rec.hop.split(" ", 1)[-1] if rec.action != "link" else rec.hop
    if rec.action == "deliver":
        return f"delivered to {where}"
    if rec.action == "nat" and rec.reason:
        return f"{rec.reason} at NAT {where}"
    if rec.action == "link" and rec.reason:
        return f"lost on {where} ({rec.reason})"
    if rec.dropped or rec.reason:
        return f"dropped at {where}: {rec.reason}"
    return f"still in flight when the trace ends ({rec.hop})"


def _final(recs: list[TraceRecord]) -> TraceRecord:
    for r in recs:
        if r.dropped or r.action == "deliver":
            return r
    return recs[-1]


def _nat_change(r: TraceRecord) -> str:
    name = r.hop.split(" ", 1)[-1]
    parts = []
    if r.src != r.out_src:
        parts.append(f"src {_addr(r.src)} -> {_addr(r.out_src)}")
    if r.dst != r.out_dst:
        parts.append(f"dst {_addr(r.dst)} -> {_addr(r.out_dst)}")
    return f"{name}: " + (", ".join(parts) if parts else "unchanged")


def _start(recs: list[TraceRecord], start: float | None) -> float:
    return recs[0].time if start is None else float(start)


def packet_table(trace: Any, *, packets: Iterable[int] | None = None, start: float | None = None) -> pd.DataFrame:
    """One row per packet of a vnet trace: what it was and what became of it.

    Parameters
    ----------
    trace : VirtualNetwork or list of TraceRecord
    packets : iterable of int, optional
        Packet ids to keep (default: all), listed in time order.
    start : float, optional
        Time zero in seconds (default: the trace's first record).

    Returns
    -------
    pandas.DataFrame
        ``packet``, ``t_ms`` (sent, relative to ``start``), ``what``
        (:func:`classify_payload`), ``sender`` (host), ``sent_src``, ``sent_dst`` (the
        addresses the sender wrote), ``translations`` (each NAT's rewrite, ``;``
        separated), ``arrived_src``, ``arrived_dst`` (as the receiver saw them, or
        None), ``result``, ``delivered``, ``hops`` (links crossed), ``size_bytes``.

    Raises
    ------
    ParameterError
        Not a trace, an empty trace, or a packet id that is not in it.
    """
    recs = _records(trace)
    t0 = _start(recs, start)
    groups = _by_packet(recs)
    ids = list(groups) if packets is None else _check_ids(groups, packets)
    rows = []
    for pid in ids:
        rs = groups[pid]
        first, last = rs[0], _final(rs)
        delivered = last.action == "deliver"
        rows.append({
            "packet": pid,
            "t_ms": (first.time - t0) * 1000.0,
            "what": classify_payload(first.payload, first.proto),
            "sender": _sender(first),
            "sent_src": _addr(first.src),
            "sent_dst": _addr(first.dst),
            "translations": "; ".join(_nat_change(r) for r in rs if r.action == "nat" and not r.dropped) or "",
            "arrived_src": _addr(last.src) if delivered else None,
            "arrived_dst": _addr(last.dst) if delivered else None,
            "result": _fate(last),
            "delivered": delivered,
            "hops": sum(1 for r in rs if r.action == "link"),
            "size_bytes": first.size_bytes,
        })
    df = pd.DataFrame(rows)
    return df.sort_values("t_ms", kind="stable").reset_index(drop=True) if len(df) else df


def _check_ids(groups: Mapping[int, Any], packets: Iterable[int]) -> list[int]:
    try:
        ids = [int(p) for p in packets]
    except (TypeError, ValueError):
        raise ParameterError(f"packets must be packet ids (ints), got {packets!r}") from None
    missing = [p for p in ids if p not in groups]
    if missing:
        raise ParameterError(f"packet id(s) {missing} are not in the trace (ids run from {min(groups)} to {max(groups)})")
    if not ids:
        raise ParameterError("packets is empty: name at least one packet id")
    return ids


def _step_result(r: TraceRecord, t0: float) -> str:
    if r.action == "link":
        if r.reason:
            return f"LOST ({r.reason})" + (", sent again" if not r.dropped else "")
        return f"arrives at {(r.arrival - t0) * 1000.0:.1f} ms" if r.arrival is not None else "in flight"
    if r.action == "nat":
        if r.dropped:
            return f"DROPPED: {r.reason}"
        return "translated" if (r.src, r.dst) != (r.out_src, r.out_dst) else "passed"
    if r.action == "deliver":
        return "delivered"
    return f"DROPPED: {r.reason}"


def packet_steps(trace: Any, packets: Iterable[int] | None = None, *, start: float | None = None) -> pd.DataFrame:
    """Every step of some packets, packet after packet (the rows of :func:`step_through`).

    Parameters
    ----------
    trace : VirtualNetwork or list of TraceRecord
    packets : iterable of int, optional
        Packet ids in the order to show them (default: :func:`key_packets`).
    start : float, optional
        Time zero in seconds (default: the trace's first record).

    Returns
    -------
    pandas.DataFrame
        ``step`` (0, 1, ...), ``packet``, ``what``, ``t_ms``, ``hop`` (``"A->B"`` link,
        ``"nat X"``, ``"host X"``, ``"segment X"``), ``action`` (link, nat, deliver,
        drop), ``src``, ``dst`` (before the step), ``out_src``, ``out_dst`` (after it:
        they differ at a NAT), ``result``, ``dropped``.
    """
    recs = _records(trace)
    t0 = _start(recs, start)
    groups = _by_packet(recs)
    ids = key_packets(recs) if packets is None else _check_ids(groups, packets)
    rows = []
    for pid in ids:
        rs = groups[pid]
        what = classify_payload(rs[0].payload, rs[0].proto)
        for r in rs:
            rows.append({
                "step": len(rows), "packet": pid, "what": what, "t_ms": (r.time - t0) * 1000.0, "hop": r.hop,
                "action": r.action, "src": _addr(r.src), "dst": _addr(r.dst), "out_src": _addr(r.out_src),
                "out_dst": _addr(r.out_dst), "result": _step_result(r, t0), "dropped": bool(r.dropped),
            })
    return pd.DataFrame(rows)


def _kind(label: str) -> str:
    return label.split(" PT ")[0] if label.startswith("RTP") else label


def key_packets(trace: Any, *, kinds: Sequence[str] | None = None, limit: int = 20) -> list[int]:
    """The first packet of each (kind, sender, fate): a short list that tells the story.

    For a plain SIP call behind a NAT that is the INVITE, its responses, the ACK, the
    first RTP packet each way (one delivered, one dropped), RTCP, the BYE...

    Parameters
    ----------
    trace : VirtualNetwork or list of TraceRecord
    kinds : sequence of str, optional
        Keep only packets whose :func:`classify_payload` label starts with one of these
        (``("STUN",)``, ``("SIP", "RTP")``).
    limit : int
        At most this many packets (the earliest).

    Returns
    -------
    list of int
        Packet ids in time order.
    """
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ParameterError(f"limit must be a whole number >= 1, got {limit!r}")
    if kinds is not None and (isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds)):
        raise ParameterError(f"kinds must be a list of label prefixes such as ['STUN', 'RTP'], got {kinds!r}")
    recs = _records(trace)
    seen: set[tuple] = set()
    out: list[int] = []
    for pid, rs in _by_packet(recs).items():
        last = _final(rs)
        if not (last.dropped or last.action == "deliver"):
            continue  # still in flight when the call ended
        label = classify_payload(rs[0].payload, rs[0].proto)
        if kinds is not None and not any(label.startswith(k) for k in kinds):
            continue
        key = (_kind(label), _sender(rs[0]), last.action, last.hop, bool(last.dropped))
        if key in seen:
            continue
        seen.add(key)
        out.append(pid)
        if len(out) >= limit:
            break
    return out


def _hop_points(hop: str, action: str, pos: Mapping[str, tuple[float, float]]) -> list[tuple[float, float]]:
    if action == "link":
        a, b = hop.split("->", 1)
        if a in pos and b in pos:
            return [pos[a], pos[b]]
        return []
    node = hop.split(" ", 1)[-1]
    return [pos[node]] if node in pos else []


def _step_text(row: Mapping[str, Any], n_steps: int) -> str:
    head = f"<b>packet {row['packet']}: {row['what']}</b>   t = {row['t_ms']:.1f} ms   step {row['step'] + 1}/{n_steps}"
    line = f"{row['hop']} ({row['action']}): {row['src']} -> {row['dst']}"
    if (row["src"], row["dst"]) != (row["out_src"], row["out_dst"]) and not row["dropped"]:
        line += f"<br>after the NAT: {row['out_src']} -> {row['out_dst']}"
    res = row["result"]
    if row["dropped"] or res.startswith("LOST"):
        res = f"<span style='color:#d62728'><b>{res}</b></span>"
    return f"{head}<br>{line}<br>{res}"


def _highlight(points_so_far: list[list[tuple[float, float]]], point: list[tuple[float, float]], bad: bool,
               color: str) -> tuple[dict, dict]:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for seg in points_so_far:
        if len(seg) == 2:
            xs += [seg[0][0], seg[1][0], None]
            ys += [seg[0][1], seg[1][1], None]
    line = dict(x=xs, y=ys)
    if len(point) == 2:
        mx, my = [point[1][0]], [point[1][1]]
    elif point:
        mx, my = [point[0][0]], [point[0][1]]
    else:
        mx, my = [], []
    marker = dict(x=mx, y=my, marker=dict(color="#d62728" if bad else color, size=22 if bad else 16,
                                          symbol="x" if bad else "circle-open", line=dict(width=3, color="#d62728" if bad else color)))
    return line, marker


def packet_path_figure(net: VirtualNetwork, packet: int, *, trace: Any = None, start: float | None = None,
                       title: str | None = None) -> go.Figure:
    """One packet's whole path drawn on the topology (green: delivered; red: dropped).

    Parameters
    ----------
    net : VirtualNetwork
        The network (and, unless ``trace`` is given, its trace).
    packet : int
        Packet id.
    trace : list of TraceRecord, optional
    start : float, optional
        Time zero in seconds.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    net = _check_net(net)
    steps = packet_steps(net if trace is None else trace, [packet], start=start)
    pos, edges = _layout(net)
    fig = go.Figure(_base_traces(net, pos, edges))
    bad = bool(steps["dropped"].any())
    color = "#d62728" if bad else "#2ca02c"
    segs = [_hop_points(h, a, pos) for h, a in zip(steps["hop"], steps["action"])]
    last = steps.iloc[-1]
    line, marker = _highlight(segs, segs[-1], bad, color)
    fig.add_trace(go.Scatter(mode="lines", line=dict(color=color, width=6), opacity=0.6, hoverinfo="skip",
                             showlegend=False, **line))
    fig.add_trace(go.Scatter(mode="markers", hoverinfo="skip", showlegend=False, **marker))
    _frame_layout(fig, pos, title or f"packet {packet}: {last['what']} ({steps['result'].iloc[-1]})")
    return fig


def step_storyboard(net: VirtualNetwork, packets: Iterable[int] | None = None, *, trace: Any = None,
                    start: float | None = None, title: str | None = None, cols: int = 3) -> go.Figure:
    """Every packet of a :func:`step_through`, each on its own small topology: a static figure.

    The step-through needs a slider (JavaScript); its static export would show only its
    first step. This storyboard draws each packet's whole path at once (green:
    delivered, red: dropped, an ``x`` where it was dropped), in the order of
    ``packets``, so a PNG/SVG or a page without JavaScript shows every step.

    Parameters
    ----------
    net : VirtualNetwork
    packets : iterable of int, optional
        Packet ids (default: :func:`key_packets`).
    trace : list of TraceRecord, optional
    start : float, optional
        Time zero in seconds.
    title : str, optional
    cols : int
        Panels per row.

    Returns
    -------
    plotly.graph_objects.Figure
        One panel per packet.
    """
    from plotly.subplots import make_subplots

    net = _check_net(net)
    steps = packet_steps(net if trace is None else trace, packets, start=start)
    if steps.empty:
        raise ParameterError("no packet steps to show")
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ParameterError(f"cols must be an integer >= 1, got {cols!r}")
    order = list(dict.fromkeys(steps["packet"]))
    cols = min(cols, len(order))
    rows = -(-len(order) // cols)
    pos, edges = _layout(net)
    titles = []
    for pid in order:
        part = steps[steps["packet"] == pid]
        fate = "dropped" if part["dropped"].any() else "delivered"
        titles.append(f"{part['t_ms'].iloc[0]:.0f} ms: {part['what'].iloc[0]} ({fate})"[:60])
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.02, vertical_spacing=0.08)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    for k, pid in enumerate(order):
        r, c = k // cols + 1, k % cols + 1
        part = steps[steps["packet"] == pid]
        bad = bool(part["dropped"].any())
        color = "#d62728" if bad else "#2ca02c"
        for t in _base_traces(net, pos, edges):
            t.textfont = dict(size=7)
            fig.add_trace(t, row=r, col=c)
        segs = [_hop_points(h, a, pos) for h, a in zip(part["hop"], part["action"])]
        line, marker = _highlight(segs, segs[-1], bad, color)
        fig.add_trace(go.Scatter(mode="lines", line=dict(color=color, width=5), opacity=0.6, hoverinfo="skip",
                                 showlegend=False, **line), row=r, col=c)
        fig.add_trace(go.Scatter(mode="markers", hoverinfo="skip", showlegend=False, **marker), row=r, col=c)
    fig.update_xaxes(visible=False, range=[min(xs) - 0.7, max(xs) + 0.9])
    fig.update_yaxes(visible=False, range=[min(ys) - 0.8, max(ys) + 0.4])
    fig.update_annotations(font_size=10)
    fig.update_layout(title=title or "Packet by packet (every packet's whole path)", template=_TEMPLATE,
                      height=260 * rows + 80, width=1100, margin=dict(l=10, r=10, t=70, b=10), showlegend=False)
    return fig


def step_through(net: VirtualNetwork, packets: Iterable[int] | None = None, *, trace: Any = None,
                 start: float | None = None, title: str | None = None) -> go.Figure:
    """Step through packets hop by hop on the topology, with a slider and a play button.

    Each slider position is one step of :func:`packet_steps` (a link, a NAT
    translation, a delivery or a drop). The packet's path so far is drawn thick, green
    while it is on its way, red for a packet that will be dropped; the text above says
    where it is and its addresses before and after the step. Plotly frames: the slider
    also works in the exported HTML.

    Parameters
    ----------
    net : VirtualNetwork
    packets : iterable of int, optional
        Packet ids in the order to show (default: :func:`key_packets`).
    trace : list of TraceRecord, optional
        Default: ``net.trace``.
    start : float, optional
        Time zero in seconds.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
        ``fig.frames`` has one frame per row of ``packet_steps(...)``.
    """
    net = _check_net(net)
    steps = packet_steps(net if trace is None else trace, packets, start=start)
    if steps.empty:
        raise ParameterError("no packet steps to show")
    pos, edges = _layout(net)
    base = _base_traces(net, pos, edges)
    fates = steps.groupby("packet")["dropped"].any().to_dict()
    ys = [p[1] for p in pos.values()]
    text_y = max(ys) + 0.95
    text_x = min(p[0] for p in pos.values()) - 0.6
    frames = []
    so_far: list[list[tuple[float, float]]] = []
    current = None
    n = len(steps)
    for row in steps.to_dict("records"):
        if row["packet"] != current:
            current, so_far = row["packet"], []
        seg = _hop_points(row["hop"], row["action"], pos)
        so_far.append(seg)
        doomed = bool(fates[row["packet"]])
        color = "#d62728" if doomed else "#2ca02c"
        line, marker = _highlight(so_far, seg, bool(row["dropped"]), color)
        frames.append(go.Frame(
            name=str(row["step"]),
            data=[go.Scatter(line=dict(color=color, width=6), **line), go.Scatter(**marker),
                  go.Scatter(x=[text_x], y=[text_y], text=[_step_text(row, n)])],
            traces=[len(base), len(base) + 1, len(base) + 2],
        ))
    first = frames[0].data
    fig = go.Figure(
        data=base + [
            go.Scatter(mode="lines", opacity=0.6, hoverinfo="skip", showlegend=False, x=first[0].x, y=first[0].y,
                       line=first[0].line),
            go.Scatter(mode="markers", hoverinfo="skip", showlegend=False, x=first[1].x, y=first[1].y, marker=first[1].marker),
            go.Scatter(mode="text", x=[text_x], y=[text_y], text=first[2].text, textposition="bottom right",
                       textfont=dict(size=12), hoverinfo="skip", showlegend=False),
        ],
        frames=frames,
    )
    anim = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    fig.update_layout(
        sliders=[{
            "active": 0, "currentvalue": {"prefix": "step "}, "pad": {"t": 10},
            "steps": [{"label": str(i + 1), "method": "animate", "args": [[str(i)], anim]} for i in range(n)],
        }],
        updatemenus=[{
            "type": "buttons", "showactive": False, "direction": "left", "x": 1.0, "y": 1.06, "xanchor": "right",
            "yanchor": "bottom",
            "buttons": [
                {"label": "play", "method": "animate",
                 "args": [None, {"mode": "immediate", "fromcurrent": True, "frame": {"duration": 700, "redraw": True},
                                 "transition": {"duration": 0}}]},
                {"label": "pause", "method": "animate", "args": [[None], anim]},
            ],
        }],
    )
    _frame_layout(fig, pos, title or "Packet by packet", extra_top=1.0)
    fig.update_layout(height=640, margin=dict(b=40))
    return fig


# ---------------------------------------------------------------------------------------
# Running a call and keeping its network
# ---------------------------------------------------------------------------------------

async def traced_call(*, method: str = "sip", virtual_time: bool | None = None, **options: Any) -> tuple[dict, VirtualNetwork]:
    """Run one call on the virtual network and keep the network, with its packet trace.

    Await it from a notebook cell (or any coroutine). SIP methods run in virtual time by
    default (:func:`voicelab.net.vclock.run_virtual_in_thread`: a 2 s call takes a
    fraction of a second, identically on every run); WebRTC methods run in real time on
    the running loop (aiortc keeps time on the wall clock).

    Parameters
    ----------
    method : str
        One of :data:`voicelab.vnetcall.METHODS`.
    virtual_time : bool, optional
        SIP only: False runs the call in real time on the running loop.
    **options
        Passed to :func:`voicelab.vnetcall.vnet_sip_call` or
        :func:`~voicelab.vnetcall.vnet_webrtc_call` (``caller_nat``, ``agent_nat``,
        ``seconds``, ``seed``, ``quality``, ...).

    Returns
    -------
    (dict, VirtualNetwork)
        The call's result and its network (``net.trace`` holds every packet step).

    Raises
    ------
    ParameterError
        Unknown method, a WebRTC method with ``virtual_time=True``, or the call's own
        parameter errors.

    """
    from ..vnetcall import METHODS, SIP_METHODS, vnet_sip_call, vnet_webrtc_call

    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}: use one of " + ", ".join(map(repr, METHODS)))
    sip = method in SIP_METHODS
    if virtual_time and not sip:
        raise ParameterError("WebRTC calls run in real time (aiortc uses the wall clock): leave virtual_time unset")
    built: list = []
    if sip and virtual_time is not False:
        from ..net.vclock import run_virtual_in_thread

        result = await run_virtual_in_thread(vnet_sip_call(method=method, keep_network=built, **options))
    elif sip:
        result = await vnet_sip_call(method=method, keep_network=built, **options)
    else:
        result = await vnet_webrtc_call(method=method, keep_network=built, **options)
    if not built:
        raise ParameterError("the call built no virtual network")
    return result, built[-1]


# ---------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------

_CELL_NEEDS = ("caller_nat", "agent_nat", "method", "caller_to_agent", "agent_to_caller")


def _cells(cells: Any) -> list[Mapping[str, Any]]:
    if isinstance(cells, pd.DataFrame):
        cells = cells.to_dict("records")
    if isinstance(cells, Mapping) or isinstance(cells, (str, bytes)):
        raise ParameterError("cells must be a list of matrix cells (from nat_matrix), not a single dict or string")
    try:
        out = list(cells)
    except TypeError:
        raise ParameterError(f"cells must be a list of matrix cells (from nat_matrix), got {type(cells).__name__}") from None
    if not out:
        raise ParameterError("no matrix cells given: run nat_matrix first")
    for c in out:
        if not isinstance(c, Mapping):
            raise ParameterError(f"each cell must be a dict from nat_matrix, got {type(c).__name__}")
        missing = [k for k in _CELL_NEEDS if k not in c]
        if missing:
            raise ParameterError(f"a cell lacks {missing}: pass cells from voicelab.natmatrix.nat_matrix")
    return out


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def matrix_frame(cells: Any) -> pd.DataFrame:
    """Matrix cells as a table: measured and textbook outcome side by side.

    Parameters
    ----------
    cells : list of dict or DataFrame
        From :func:`voicelab.natmatrix.nat_matrix` (or loaded from its JSON).

    Returns
    -------
    pandas.DataFrame
        ``method``, ``caller_nat``, ``agent_nat``, ``outcome``, ``expected`` (labels of
        :func:`voicelab.natmatrix.outcome_label`), ``matches_reference``, ``path``,
        ``setup_ms``, ``added_delay_ms``, ``relay_bytes``, ``error``.
    """
    rows = []
    for c in _cells(cells):
        exp = reference_outcome(c["caller_nat"], c["agent_nat"], c["method"])
        outcome = outcome_label(bool(c["caller_to_agent"]), bool(c["agent_to_caller"]))
        expected = outcome_label(*exp)
        rows.append({
            "method": c["method"], "caller_nat": c["caller_nat"], "agent_nat": c["agent_nat"],
            "outcome": outcome, "expected": expected,
            "matches_reference": outcome == expected and not c.get("error"),
            "path": c.get("path"), "setup_ms": _num(c.get("setup_ms")), "added_delay_ms": _num(c.get("added_delay_ms")),
            "relay_bytes": c.get("relay_bytes", 0), "error": c.get("error"),
        })
    return pd.DataFrame(rows)


def _order(values: Iterable[str], reference: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return [v for v in reference if v in vals] + [v for v in vals if v not in reference]


def matrix_heatmap(cells: Any, *, methods: Sequence[str] | None = None, presets: Sequence[str] | None = None,
                   columns: int = 2, title: str | None = None) -> go.Figure:
    """One heatmap per method: caller NAT (rows) x agent NAT (columns), coloured by outcome.

    Colours: two-way green, caller->agent only orange, agent->caller only olive, none
    red; a cell not run is blank. Each cell's text is the outcome and the media path; a
    cell that differs from :func:`voicelab.natmatrix.reference_outcome` (or whose call
    raised an error) is marked ``(expected ...)``.

    Parameters
    ----------
    cells : list of dict or DataFrame
        From :func:`voicelab.natmatrix.nat_matrix`.
    methods : sequence of str, optional
        Which methods, in order (default: those in ``cells``, in the matrix's order).
    presets : sequence of str, optional
        Row and column order (default: the presets in ``cells``, most to least
        permissive).
    columns : int
        Heatmaps per row.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
        One heatmap trace per method; its ``z`` holds the outcome codes (index into
        :data:`OUTCOMES`, None when not run).

    Raises
    ------
    ParameterError
        No cells, malformed cells, or a method not in the cells.
    """
    from ..vnetcall import METHODS

    cs = _cells(cells)
    have = _order((c["method"] for c in cs), METHODS)
    if methods is None:
        methods = have
    else:
        methods = [methods] if isinstance(methods, str) else list(methods)
        bad = [m for m in methods if m not in have]
        if bad:
            raise ParameterError(f"method(s) {bad} not in the cells; the cells have {have}")
    if presets is None:
        presets = _order([c["caller_nat"] for c in cs] + [c["agent_nat"] for c in cs], PRESET_NAMES)
    else:
        presets = list(presets)
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ParameterError(f"columns must be a whole number >= 1, got {columns!r}")
    ncols = min(int(columns), len(methods))
    nrows = math.ceil(len(methods) / ncols)
    by = {(c["method"], c["caller_nat"], c["agent_nat"]): c for c in cs}
    subtitles = []
    for m in methods:
        mine = [c for c in cs if c["method"] == m]
        ok = sum(1 for c in mine if (bool(c["caller_to_agent"]), bool(c["agent_to_caller"]))
                 == reference_outcome(c["caller_nat"], c["agent_nat"], m) and not c.get("error"))
        subtitles.append(f"<b>{m}</b>: {ok}/{len(mine)} as expected")
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=subtitles, horizontal_spacing=0.06,
                        vertical_spacing=0.22 / nrows if nrows > 1 else 0.1)
    edges = np.linspace(0, 1, len(OUTCOMES) + 1)
    scale = []
    for i, o in enumerate(OUTCOMES):
        scale += [[float(edges[i]), OUTCOME_COLORS[o]], [float(edges[i + 1]), OUTCOME_COLORS[o]]]
    labels = [_SHORT_PRESET.get(p, p) for p in presets]
    for k, m in enumerate(methods):
        z: list[list[float | None]] = []
        text: list[list[str]] = []
        for cn in presets:
            zr, tr = [], []
            for an in presets:
                c = by.get((m, cn, an))
                if c is None:
                    zr.append(None)
                    tr.append("")
                    continue
                label = outcome_label(bool(c["caller_to_agent"]), bool(c["agent_to_caller"]))
                zr.append(float(OUTCOMES.index(label)))
                exp = outcome_label(*reference_outcome(cn, an, m))
                t = _SHORT_OUTCOME[label]
                if c.get("path"):
                    t += f"<br>{c['path']}"
                if c.get("error"):
                    t += "<br><b>error</b>"
                elif label != exp:
                    t += f"<br><b>expected {_SHORT_OUTCOME[exp]}</b>"
                tr.append(t)
            z.append(zr)
            text.append(tr)
        row, col = k // ncols + 1, k % ncols + 1
        fig.add_trace(go.Heatmap(
            z=z, x=labels, y=labels, text=text, texttemplate="%{text}", textfont=dict(size=10),
            coloraxis="coloraxis", xgap=2, ygap=2, name=m,
            hovertemplate="caller %{y}<br>agent %{x}<br>%{text}<extra>" + m + "</extra>",
        ), row=row, col=col)
        fig.update_yaxes(autorange="reversed", row=row, col=col, title_text="caller NAT" if col == 1 else None,
                         showticklabels=col == 1)
        fig.update_xaxes(row=row, col=col, title_text="agent NAT" if row == nrows else None, tickangle=30,
                         showticklabels=row == nrows or k + ncols >= len(methods))
    fig.update_layout(
        coloraxis=dict(colorscale=scale, cmin=-0.5, cmax=len(OUTCOMES) - 0.5,
                       colorbar=dict(tickvals=list(range(len(OUTCOMES))), ticktext=list(OUTCOMES), title="audio")),
        title=title or "NAT traversal matrix: which calls carry audio, and which way",
        template=_TEMPLATE, height=330 * nrows + 130, width=430 * ncols + 250,
    )
    return fig


# ---------------------------------------------------------------------------------------
# What relaying costs
# ---------------------------------------------------------------------------------------


def relay_cost(results: Any, *, seconds: float | None = None) -> pd.DataFrame:
    """Setup time, added path delay and relay traffic of calls or matrix cells.

    Parameters
    ----------
    results : list of dict or DataFrame
        Matrix cells (:func:`voicelab.natmatrix.nat_matrix`) or call results
        (:func:`voicelab.vnetcall.vnet_sip_call`, ``vnet_webrtc_call``). Only those
        that carried audio in at least one direction are kept.
    seconds : float, optional
        Call length, to turn relay bytes into a rate; default: each result's own
        ``seconds`` (call results carry it; matrix cells do not).

    Returns
    -------
    pandas.DataFrame
        ``label`` (method, NATs), ``method``, ``caller_nat``, ``agent_nat``, ``path``,
        ``relayed`` (bool), ``setup_ms``, ``route_ms`` (base one-way delay of the media
        path), ``added_delay_ms`` (over the direct route), ``relay_bytes`` (both
        directions), ``relay_kbps`` (None without a length) and, when the results carry
        them, ``mouth_to_ear_ms.caller_to_agent`` / ``.agent_to_caller``.
    """
    cs = _cells(results)
    if seconds is not None:
        s = _num(seconds)
        if s is None or s <= 0:
            raise ParameterError(f"seconds must be a positive number, got {seconds!r}")
    rows = []
    for c in cs:
        if not (c["caller_to_agent"] or c["agent_to_caller"]):
            continue
        length = _num(seconds) if seconds is not None else _num(c.get("seconds"))
        rb = int(c.get("relay_bytes") or 0)
        path = c.get("path")
        row = {
            "label": f"{c['method']}<br>{_SHORT_PRESET.get(c['caller_nat'], c['caller_nat'])} / "
                     f"{_SHORT_PRESET.get(c['agent_nat'], c['agent_nat'])}",
            "method": c["method"], "caller_nat": c["caller_nat"], "agent_nat": c["agent_nat"], "path": path,
            "relayed": path in _RELAY_PATHS, "setup_ms": _num(c.get("setup_ms")), "route_ms": _num(c.get("route_ms")),
            "added_delay_ms": _num(c.get("added_delay_ms")), "relay_bytes": rb,
            "relay_kbps": (rb * 8 / length / 1000.0) if length else None,
        }
        for d in ("caller_to_agent", "agent_to_caller"):
            key = f"{d}.mouth_to_ear_ms"
            if key in c:
                row[f"mouth_to_ear_ms.{d}"] = _num(c[key])
        rows.append(row)
    if not rows:
        raise ParameterError("none of the results carried audio: nothing to compare")
    return pd.DataFrame(rows)


_DIRECT, _RELAYED = "#1f77b4", "#ff7f0e"


def relay_cost_figure(results: Any, *, seconds: float | None = None, title: str | None = None) -> go.Figure:
    """Bars of what each path costs: setup time, one-way delay added by the path, relay
    traffic, and the measured mouth-to-ear delay when the results carry it.

    Relayed paths (TURN ``relay``, SIP ``media-relay``) in orange, direct ones in blue
    (the legend says so). Calls without a mouth-to-ear measurement show "not measured".

    Parameters
    ----------
    results : list of dict or DataFrame
        As for :func:`relay_cost`.
    seconds : float, optional
        Call length for the traffic rate (see :func:`relay_cost`).
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    df = relay_cost(results, seconds=seconds)
    rate = df["relay_kbps"].notna().all()
    panels = [("setup_ms", "setup (ms)"), ("added_delay_ms", "added one-way delay (ms)"),
              ("relay_kbps" if rate else "relay_bytes", "relay traffic (kbit/s)" if rate else "relay traffic (bytes)")]
    m2e = [c for c in ("mouth_to_ear_ms.caller_to_agent", "mouth_to_ear_ms.agent_to_caller") if c in df.columns]
    if m2e and df[m2e].notna().any().any():
        panels.append(("m2e", "mouth-to-ear (ms)"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels], horizontal_spacing=0.07)
    colors = [_RELAYED if r else _DIRECT for r in df["relayed"]]
    # the colour legend: two empty traces, one per path kind
    for color, name in ((_DIRECT, "direct path (host, srflx, prflx)"), (_RELAYED, "relayed path (TURN relay, SIP media relay)")):
        fig.add_trace(go.Bar(x=[None], y=[None], marker_color=color, name=name, showlegend=True), row=1, col=1)
    for i, (col, _) in enumerate(panels, start=1):
        if col == "m2e":
            for name, dash in zip(m2e, ("", "/")):
                vals = df[name]
                fig.add_trace(go.Bar(x=df["label"], y=vals.fillna(0.0), marker_color=colors, marker_pattern_shape=dash,
                                     name="mouth-to-ear, " + name.split(".")[-1].replace("_", " ")
                                     + (" (hatched)" if dash else " (plain)"), showlegend=True,
                                     text=[f"{v:.0f}" if pd.notna(v) else "not measured" for v in vals],
                                     textposition="outside", textangle=-90 if vals.isna().any() else None),
                              row=1, col=i)
            continue
        vals = df[col]
        fig.add_trace(go.Bar(x=df["label"], y=vals, marker_color=colors, showlegend=False,
                             text=[f"{v:.0f}" if pd.notna(v) else "" for v in vals], textposition="outside"), row=1, col=i)
    fig.update_xaxes(tickangle=40, tickfont=dict(size=9))
    fig.update_layout(title=title or "What traversal costs: setup, path delay and relay traffic",
                      template=_TEMPLATE, barmode="group", height=480, width=max(900, 260 * len(panels)),
                      legend=dict(orientation="h", y=-0.45))
    if m2e and df[m2e].isna().any().any():
        fig.add_annotation(text="not measured: calls run without audio analysis (the matrix's WebRTC cells)",
                           xref="paper", yref="paper", x=1, y=-0.62, xanchor="right", showarrow=False,
                           font=dict(size=10))
    return fig
