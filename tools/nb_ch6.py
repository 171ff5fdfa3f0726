"""Chapter 6 of the tutorial: NAT traversal (one-way audio, comedia, media relays, ICE).

Imported by ``tools/make_notebooks.py`` (``NAME`` and ``cells()``); run that script to
regenerate ``notebooks/06-nat-traversal.ipynb``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "06-nat-traversal.ipynb"


def _setup() -> str:
    """The SETUP cell shared by every chapter (from tools/make_notebooks.py)."""
    spec = importlib.util.spec_from_file_location("_make_notebooks_setup", Path(__file__).with_name("make_notebooks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # defines functions only; chapters() is not called
    return mod.SETUP


def cells() -> list:
    return [
        new_markdown_cell("""# Chapter 6 - NAT traversal: why one-way audio happens and how ICE fixes it

Most phones, laptops and voice agents do not have a public address. They sit behind a
**NAT** (network address translator): a home router, a mobile carrier's gateway, a cloud
provider's NAT gateway. The NAT rewrites the source address of every packet going out and
only lets packets in that answer something sent out before.

That breaks the way SIP sets up media. The SDP offer says "send my audio to
192.168.1.10:40000": the address the phone has, private, meaningless on the internet. The
far side sends its RTP there and it never arrives, while the phone's own RTP, going out
through the NAT, does: **one-way audio**, the classic VoIP support ticket. WebRTC was
designed with NATs in mind: **ICE** (RFC 8445) gathers every address a peer might be
reached at, asks a **STUN** server what the NAT made of it, tests the pairs with
connectivity checks that open the NAT mappings from both sides at once (hole punching),
and falls back to a **TURN** relay when nothing direct works.

In this chapter the caller and the agent run on the lab's **virtual network**
(`voicelab.net.vnet`): hosts, NAT routers that behave as RFC 4787 describes, links with
delays. Every packet's journey is recorded (each link, each NAT translation, each drop
and why), so you can follow a failing call packet by packet. The SIP calls run in
virtual time (a 2 s call takes a fraction of a second); the WebRTC calls are real aiortc
peers with the lab's STUN and TURN servers, in real time. `docs/nat.md` describes the
model and its limits."""),
        new_code_cell(_setup()),
        new_code_cell('''import asyncio

from voicelab.natmatrix import PRESET_NAMES, nat_matrix
from voicelab.net.netns import KERNEL_PRESETS, netns_unavailable_reason
from voicelab.net.vclock import run_virtual_in_thread
from voicelab.viz import nat as vn
from voicelab.vnetcall import SIP_METHODS, WEBRTC_METHODS, build_topology, vnet_sip_call

SECONDS = 1.0 if QUICK else 2.0   # speech per direction of each call
# quick mode (CI) writes HTML only: the PNG/SVG exporter starts a Chromium, ~10 s
FORMATS = ("html",) if QUICK else ("html", "png", "svg")
PACKET_COLUMNS = ["packet", "t_ms", "what", "sender", "sent_src", "sent_dst", "translations", "arrived_src", "result"]


def save(fig, name):
    """Export a figure at its own size (the heatmaps and step-throughs are larger than the default)."""
    viz.export(fig, name, directory=FIGURES, formats=FORMATS, width=fig.layout.width or 900,
               height=fig.layout.height or 540, scale=1.5)
    return fig'''),
        new_markdown_cell("""## What a NAT does

RFC 4787 describes a NAT's UDP behaviour with two independent properties (the old names
"full cone", "restricted cone", ... mix them up):

- **Mapping**: when a host sends from one private `ip:port` to several destinations, does
  the NAT use the *same* public `ip:port` for all of them (*endpoint-independent*), one
  per destination address (*address-dependent*), or one per destination address and port
  (*address-and-port-dependent*)? Only with endpoint-independent mapping is the answer of
  a STUN server ("I see you as 198.51.100.10:5000") also valid for a peer.
- **Filtering**: once a mapping exists, which packets from outside may use it? Any
  (*endpoint-independent*), those from an address the host has sent to
  (*address-dependent*), or only from an exact `ip:port` it has sent to
  (*address-and-port-dependent*).

| classic name | mapping | filtering |
|---|---|---|
| full cone | endpoint-independent | endpoint-independent |
| restricted cone | endpoint-independent | address-dependent |
| port-restricted cone | endpoint-independent | address-and-port-dependent |
| symmetric | address-and-port-dependent | address-and-port-dependent |

The table below gives each preset's settings and then **measures** them on the virtual
network, the way a STUN-based NAT discovery (RFC 5780) would: a host behind the NAT sends
from port 5000 to two servers A and B; did both see the same public address? Then four
outsiders send to the address A saw: A from another port, a stranger C, A itself from
the port the host sent to, and B. The last column is the question ICE asks: the host has
sent to B, so can B reach it at the address a STUN server (A) reported? Only when the
mapping is endpoint-independent. `open` is a plain router (public addresses, no NAT)."""),
        new_code_cell('''vn.nat_presets_table()'''),
        new_markdown_cell("""## The topology

Every call in this chapter uses the same network (`voicelab.vnetcall.build_topology`): the
caller at home behind the *home* router, the agent in a cloud subnet behind the *cloud*
router, a STUN/TURN server and an SBC-like media relay on the public internet. Each
router takes one of the presets above; with `open` its host gets a public address. The
cloud router forwards UDP port 5060 to the agent (as a cloud load balancer would), so SIP
signalling always reaches the agent and only the **media** question remains. Links are
labelled with their one-way delay."""),
        new_code_cell('''net, info = build_topology("port-restricted-cone", "open")
print(net.describe())
save(vn.topology_figure(net, title="Caller behind a port-restricted-cone NAT, agent public"), "ch6_topology")'''),
        new_markdown_cell("""## One failing call, packet by packet

Plain SIP from the NATed caller to the public agent. The caller writes its own (private)
address in the SDP and sends its RTP to the agent's public address; the agent sends its
RTP to the address in the SDP and never looks at where the caller's packets come from."""),
        new_code_cell('''sip_call, sip_net = await vn.traced_call(method="sip", caller_nat="port-restricted-cone", agent_nat="open",
                                        seconds=SECONDS, seed=1)
pd.Series({k: sip_call[k] for k in ("caller_to_agent", "agent_to_caller", "path", "setup_ms", "sip_via_rport",
                                    "caller_sip_seen_as", "drops", "trace_records")}).to_frame("value")'''),
        new_markdown_cell("""The call's trace holds every step of every packet. `key_packets` keeps the first packet
of each kind, sender and fate: the INVITE and its answers, the first RTP packet each way,
RTCP, the BYE. `sent_dst` is where the sender addressed the packet; `translations` what
each NAT rewrote on the way; `arrived_src` the sender as the receiver saw it."""),
        new_code_cell('''ids = vn.key_packets(sip_net)
vn.packet_table(sip_net, packets=ids)[PACKET_COLUMNS]'''),
        new_markdown_cell("""Step through them on the topology: each slider position is one step (a link, a NAT
translation, a delivery or a drop). Packets that will be dropped are drawn in red. The
agent's RTP is addressed to `192.168.1.10`: the internet has no route to a private
address and drops it at the first router. (A real router would drop it the same way, or
deliver it to some *other* 192.168.1.10 in the agent's own network.)"""),
        new_code_cell('''fig = vn.step_through(sip_net, ids, title="Plain SIP behind a NAT: the agent's RTP goes to the private address")
save(fig, "ch6_sip_step_through")'''),
        new_code_cell('''def show_packet(packet=ids[3]):
    """One packet's steps, and its path on the topology."""
    display(vn.packet_steps(sip_net, [packet]))
    return vn.packet_path_figure(sip_net, packet)

viz.interact(show_packet, packet=ids)'''),
        new_markdown_cell("""Signalling worked although the caller is NATed: its INVITE carries `rport` (RFC 3581),
so the agent sent its responses back to the address and port the INVITE *came from*
(`caller_sip_seen_as`, the NAT's mapping), not to the private address in the `Via`
header. A response to an address the caller has just sent to also passes the NAT's
filter. The media path had no such help.

## The fix on the agent's side: symmetric RTP (comedia)

If the agent does for RTP what `rport` does for SIP, sending its media to the address the
caller's media *comes from* ("latching", or *comedia* after RFC 4145's `a=direction`),
the return path runs through the mapping the caller's own packets opened, and every
filter lets it in. Asterisk calls this `rtp_symmetric`/`force_rport`, FreeSWITCH
`NDLB-force-rport`, rtpengine does it by default."""),
        new_code_cell('''comedia_call, comedia_net = await vn.traced_call(method="sip-comedia", caller_nat="port-restricted-cone",
                                                agent_nat="open", seconds=SECONDS, seed=1)
print("caller->agent:", comedia_call["caller_to_agent"], " agent->caller:", comedia_call["agent_to_caller"],
      " drops:", comedia_call["drops"])
vn.packet_table(comedia_net, packets=vn.key_packets(comedia_net, kinds=("RTP",)))[PACKET_COLUMNS]'''),
        new_markdown_cell("""The agent's first RTP packets still go to the private address (it has not heard the
caller yet) and are dropped; once the caller's first packet arrives, the agent sends to
`198.51.100.10:port`, the NAT's mapping, and the NAT translates it back to the caller.
Comedia needs one side to be *reachable*: with the agent behind a NAT too, the caller's
media goes to the agent's private address and nothing ever arrives to latch on.

## The fix in the network: a media relay

An SBC (session border controller) or a media proxy such as rtpengine anchors the media
on a public address: it rewrites both SDPs to point at itself, and latches on both legs.
Each NAT then only ever sees replies to packets its own host sent, so every combination
works, even two symmetric NATs. The price is a detour through the relay and its
bandwidth (every packet crosses the relay's network twice)."""),
        new_code_cell('''relay_call, relay_net = await vn.traced_call(method="sip-relay", caller_nat="symmetric", agent_nat="symmetric",
                                            seconds=SECONDS, seed=1)
print("caller->agent:", relay_call["caller_to_agent"], " agent->caller:", relay_call["agent_to_caller"],
      f" path: {relay_call['path']}, relay bytes: {relay_call['relay_bytes']}, added one-way delay: "
      f"{relay_call['added_delay_ms']:.1f} ms")
vn.packet_table(relay_net, packets=vn.key_packets(relay_net, kinds=("RTP",)))[PACKET_COLUMNS]'''),
        new_markdown_cell("""## ICE: let the endpoints find a path

WebRTC leaves nothing to the network. Each peer gathers **candidates**:

- `host`: its own address (private behind a NAT);
- `srflx` (server-reflexive): its public address as a **STUN** server saw it;
- `relay`: an address allocated on a **TURN** server (RFC 5766/8656) that relays for it.

Both peers exchange their candidates in the SDP and send STUN **connectivity checks** to
every pair. A check that reaches the other side from an address it did not know makes a
`prflx` (peer-reflexive) candidate there: the address the NAT mapped for this peer, learnt
from the check itself. The first pair where checks succeed both ways is nominated.

The call below has the caller behind a **symmetric** NAT and the agent behind a
**restricted-cone** NAT (STUN only, no TURN). Watch the STUN packets:

1. each peer asks the STUN server for its srflx address;
2. checks to the other side's `host` candidate die on the internet (private addresses);
3. the agent's check to the caller's srflx address is **filtered**: the caller's NAT made
   that mapping for the STUN server, and a symmetric NAT filters by address and port;
4. the caller's check to the agent's srflx address leaves through a **new** mapping (a
   symmetric NAT maps per destination): it passes the agent's restricted-cone filter
   (the agent has already sent to that IP), and the agent learns a `prflx` candidate;
5. the agent answers to that prflx address, and its own checks to it succeed."""),
        new_code_cell('''ice_call, ice_net = await vn.traced_call(method="webrtc-stun", caller_nat="symmetric", agent_nat="restricted-cone",
                                        seconds=SECONDS, quality=False, seed=1)
print(f"path: {ice_call['path']}, setup (offer -> connected): {ice_call['setup_ms']:.0f} ms")
pd.DataFrame(ice_call["selected_pair"]).T'''),
        new_code_cell('''stun_ids = vn.key_packets(ice_net, kinds=("STUN",))
vn.packet_table(ice_net, packets=stun_ids)[PACKET_COLUMNS]'''),
        new_code_cell('''fig = vn.step_through(ice_net, stun_ids, title="ICE between a symmetric and a restricted-cone NAT")
save(fig, "ch6_ice_step_through")'''),
        new_markdown_cell("""### TURN: when no direct pair exists

Two symmetric NATs cannot reach each other directly: each maps a new port per
destination, and each filters by address and port, so no check ever lands on a mapping
opened for it. With a TURN server, each peer *allocates* a relay address (an
authenticated Allocate, a 401 challenge first), installs a permission for the peer
(CreatePermission) and binds a channel (ChannelBind); media then travels as 4-byte
ChannelData frames through the server."""),
        new_code_cell('''turn_call, turn_net = await vn.traced_call(method="webrtc-turn", caller_nat="symmetric", agent_nat="symmetric",
                                          seconds=SECONDS, quality=False, seed=1)
print(f"path: {turn_call['path']}, setup {turn_call['setup_ms']:.0f} ms, TURN allocations: "
      f"{turn_call['turn_allocations']}, relay bytes: {turn_call['relay_bytes']}")
turn_ids = vn.key_packets(turn_net, kinds=("TURN",), limit=14)
vn.packet_table(turn_net, packets=turn_ids)[PACKET_COLUMNS]'''),
        new_markdown_cell("""## The traversal matrix

Every caller NAT x agent NAT x method, one short call each (`voicelab nat-matrix` on the
command line). Each cell also carries the textbook outcome
(`voicelab.natmatrix.reference_outcome`): plain SIP reaches a side only when that side's
SDP address is public; comedia works whenever the agent is public; the media relay and
TURN work everywhere; STUN-only ICE fails exactly for port-restricted <-> symmetric and
symmetric <-> symmetric.

The SIP methods run over all 25 preset pairs in virtual time (seconds of wall time). The
WebRTC cells are real-time aiortc calls, 2-5 s each: quick mode (CI) runs a handful of
telling cells, full mode all 75 (several minutes)."""),
        new_code_cell('''sip_cells = await asyncio.to_thread(nat_matrix, methods=SIP_METHODS, seconds=SECONDS, seed=1)
if QUICK:
    picks = [("webrtc-stun", "port-restricted-cone", "open"), ("webrtc-stun", "full-cone", "symmetric"),
             ("webrtc-stun", "port-restricted-cone", "symmetric"), ("webrtc-turn", "symmetric", "symmetric"),
             ("webrtc-relay-only", "port-restricted-cone", "open")]
    webrtc_cells = []
    for method, caller_nat, agent_nat in picks:
        webrtc_cells += await asyncio.to_thread(nat_matrix, methods=[method], caller_presets=[caller_nat],
                                                agent_presets=[agent_nat], seconds=SECONDS, seed=1, connect_timeout=3.0)
else:
    webrtc_cells = await asyncio.to_thread(nat_matrix, methods=WEBRTC_METHODS, seconds=SECONDS, seed=1)
cells = sip_cells + webrtc_cells
matrix = vn.matrix_frame(cells)
print(f"{int(matrix['matches_reference'].sum())} of {len(matrix)} cells match the textbook outcome")
matrix[~matrix["matches_reference"]]'''),
        new_code_cell('''fig = vn.matrix_heatmap(cells)
save(fig, "ch6_matrix")'''),
        new_markdown_cell("""How to read it: rows are the caller's NAT, columns the agent's. Under each outcome, the
media path (`direct`, `srflx`, `prflx`, `relay`, `media-relay`). A cell that disagreed
with the textbook would say what was expected; blank cells were not run (quick mode).

- **sip**: one-way audio in the first column (NATed caller, public agent: the agent's
  RTP goes to the private address) and in the first row (public caller, NATed agent: the
  caller's RTP goes to the agent's private address); silence when both are NATed.
- **sip-comedia** repairs the first column only.
- **sip-relay** and **webrtc-turn** connect everything; **webrtc-stun** fails only where
  one side maps per destination and the other filters by port.

The setup time per cell, in ms (SIP: INVITE -> ACK; WebRTC: offer -> ICE connected):"""),
        new_code_cell('''matrix.pivot_table(index="method", columns="path", values="setup_ms", aggfunc="mean").round(0)'''),
        new_markdown_cell("""## What the fixes cost

A relayed path is longer: in this topology the SBC sits at the agent's edge (1 ms from
the internet), so the SIP media relay adds 2 ms one way; the TURN server is 10 ms from the
internet, so TURN adds 20 ms. Every relayed byte crosses the relay's network twice, and a
relay's bandwidth is paid for by its operator. ICE also takes longer to set up than a
plain SIP answer: gathering, then paced connectivity checks, then the DTLS handshake.

Below: cells of the matrix where audio flowed, direct and relayed side by side, and two
SIP calls measured end to end with PESQ and mouth-to-ear delay (virtual time)."""),
        new_code_cell('''def cell(method, caller_nat, agent_nat):
    return next(c for c in cells if (c["method"], c["caller_nat"], c["agent_nat"]) == (method, caller_nat, agent_nat))

measured = []
for method in ("sip-comedia", "sip-relay"):
    measured.append(await run_virtual_in_thread(vnet_sip_call(method=method, caller_nat="port-restricted-cone",
                                                              agent_nat="open", seconds=max(SECONDS, 2.0), seed=1)))
chosen = measured + [cell("webrtc-stun", "port-restricted-cone", "open"), cell("webrtc-turn", "symmetric", "symmetric"),
                     cell("webrtc-relay-only", "port-restricted-cone", "open")]
for c in chosen:
    c.setdefault("seconds", SECONDS)   # matrix cells do not carry their length
cost = vn.relay_cost(chosen)
cost.drop(columns=["label"]).round(1)'''),
        new_code_cell('''fig = vn.relay_cost_figure(chosen)
save(fig, "ch6_relay_cost")'''),
        new_markdown_cell("""The two SIP calls differ only in the relay; their mouth-to-ear delays differ by the
relay's detour (the rest is the 20 ms frame, the 60 ms jitter buffer and the path).
Relay traffic is what the relay forwarded (UDP payload bytes, both directions) per
second of speech: for the SIP media relay, 172 bytes of PCMU+RTP 50 times a second each
way is about 138 kbit/s, plus RTCP. The TURN figure is the server's count summed over its
allocations: when both peers use relay candidates (as here) every packet passes two
allocations and counts twice; it also carries DTLS, RTCP and the 4-byte ChannelData
header, and the media of a WebRTC call runs a little past the speech.

## Virtual time

The SIP cells ran under the lab's virtual-clock event loop: when nothing is ready, the
clock jumps to the next timer, so a call takes as long as the CPU needs for its packets,
and the same seed gives the same call, down to the packet trace (`trace_sha256`). aiortc
keeps time on the wall clock and runs threads, so the WebRTC cells run in real time (on
the same virtual network)."""),
        new_code_cell('''timing = pd.DataFrame(cells).groupby("method", sort=False).agg(
    cells=("wall_s", "size"), wall_s_per_cell=("wall_s", "mean"), virtual_time=("virtual_time", "all"))
timing.round(2)'''),
        new_markdown_cell("""## Cross-check against a real kernel

Is the model right? `voicelab.net.netns` builds the same topology from Linux network
namespaces, veth pairs and iptables NAT: `MASQUERADE` behaves as a port-restricted cone
(endpoint-independent mapping, port kept, conntrack filters by address and port) and
`MASQUERADE --random-fully` as a symmetric NAT. The kernel has no stock rule for full or
restricted cones, so the cross-check covers the presets it can express:
`KERNEL_PRESETS`. The test suite runs hole punching (the ICE pattern) and plain SIP's
one-way audio on both the kernel and the vnet and asserts the same outcome cell by cell.
It needs Linux, root, `ip` (iproute2) and `iptables`:

```
sudo -E VOICELAB_DATA=$VOICELAB_DATA python -m pytest tests/test_net_netns.py -v
```

CI runs it as root. In full mode the cell below also probes each kernel NAT the way the
first table of this chapter probed the model."""),
        new_code_cell('''reason = netns_unavailable_reason()
print("kernel presets:", KERNEL_PRESETS, "| netns backend:", reason or "available here")
if reason is None and not QUICK:
    from voicelab.net.netns import NetnsNetwork

    rows = []
    for preset in KERNEL_PRESETS:
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
            b.send(seen_a.src, b"in")  # B answers at the address A saw
            rows.append({"preset": preset, "kernel_seen_by_A": f"{seen_a.src[0]}:{seen_a.src[1]}",
                         "kernel_same_mapping": seen_a.src == seen_b.src,
                         "kernel_B_reaches_A_address": host.recv(timeout=1.0) is not None})
    kernel = pd.DataFrame(rows).merge(
        vn.nat_presets_table(KERNEL_PRESETS)[["preset", "same_mapping_for_A_and_B", "B_reaches_A_address"]], on="preset")
    kernel["agree"] = ((kernel["kernel_same_mapping"] == kernel["same_mapping_for_A_and_B"])
                       & (kernel["kernel_B_reaches_A_address"] == kernel["B_reaches_A_address"]))
    display(kernel)'''),
        new_markdown_cell("""## Limits of the model

- NAT behaviour is RFC 4787's vocabulary, nothing more: no ALGs (SIP-aware routers that
  rewrite SDP, often badly), no port-range exhaustion under load, no per-protocol quirks
  of particular boxes.
- Mapping timeouts are modelled (refreshed by outbound packets only); a call shorter than
  the 120 s default never sees one expire. Keep-alives (RFC 5626, ICE consent freshness)
  are not exercised by these short calls.
- Signalling always works here (a static port forward at the cloud NAT and `rport` at the
  caller): the matrix isolates the media path.

## Exercises
1. Run plain SIP with a public caller and a NATed agent (`caller_nat="open",
   agent_nat="port-restricted-cone"`). Which direction fails now, and where is the drop?
2. In the ICE step-through, why does the caller's check to the agent's **srflx** address
   succeed with a restricted-cone agent, but not with a port-restricted one? (Compare
   `webrtc-stun` for symmetric/restricted-cone and symmetric/port-restricted-cone.)
3. Move the TURN server farther away: `network={"servers": {"delay_ms": 40}}` in
   `vn.traced_call(method="webrtc-relay-only", ...)`. How do `setup_ms` and
   `added_delay_ms` change?
4. Give the caller's access link 5 % loss (`uplink={"loss_rate": 0.05}`) and run
   `sip-comedia`: does latching still work? What happens if the caller's *first* RTP
   packet is lost?"""),
    ]
