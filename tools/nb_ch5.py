"""Chapter 5 of the tutorial: WebRTC (signaling, ICE, DTLS-SRTP) and the transport comparison.

Imported by ``tools/make_notebooks.py`` (``NAME`` and ``cells()``); run that script to
regenerate ``notebooks/05-webrtc.ipynb``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell

NAME = "05-webrtc.ipynb"


def _setup() -> str:
    """The SETUP cell shared by every chapter (from tools/make_notebooks.py)."""
    spec = importlib.util.spec_from_file_location("_make_notebooks_setup", Path(__file__).with_name("make_notebooks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # defines functions only; chapters() is not called
    return mod.SETUP


def cells() -> list:
    return [
        new_markdown_cell("""# Chapter 5 - WebRTC: signaling, ICE, DTLS-SRTP

A browser (or an app built on a WebRTC stack) makes a call in three steps that a SIP phone
does differently:

1. **Signaling.** The two peers exchange an SDP *offer* and *answer*, as in SIP (chapter 3),
   but WebRTC does not say how: any channel will do. The lab's signaling server is a
   WebSocket with a small JSON protocol and short-lived signed tokens
   (`voicelab.webrtc.signaling`); in this chapter the caller and the agent live in one
   process and hand their descriptions over directly, so only the protocol work is timed.
2. **ICE** (RFC 8445). Each peer *gathers* candidate transport addresses: `host` (its own
   interfaces), `srflx` (its public address as a STUN server sees it), `relay` (an address
   on a TURN server). The SDP carries them; each side then runs STUN *connectivity checks*
   on candidate pairs and the controlling side *nominates* one. A SIP phone just sends RTP
   to the address in the SDP, which fails behind most NATs (chapter 6).
3. **DTLS-SRTP** (RFC 5764). Over the chosen pair the peers run a DTLS handshake; its
   certificates must match the `a=fingerprint` lines of the SDP (so the signaling channel
   vouches for the keys), and the SRTP keys are exported from it. Media is always
   encrypted: there is no plain-RTP WebRTC. (SIP's SDES puts the SRTP key in the SDP itself.)

Both peers here are [aiortc](https://github.com/aiortc/aiortc) peer connections with the
lab's codecs, jitter buffers and concealment plugged in, on 127.0.0.1. No public STUN
server is contacted unless you pass one."""),
        new_code_cell(_setup()),
        new_code_cell('''from voicelab.compare import DEFAULT_CONDITIONS, compare_transports, opus_bitrate_sweep
from voicelab.errors import DataUnavailableError
from voicelab.net.coturn import Coturn
from voicelab.viz import webrtc as vw
from voicelab.webrtc.call import webrtc_call
from voicelab.wsmedia.live import ws_call

SECONDS = 1.0 if QUICK else 6.0   # speech per direction of each live call
LOSSY = DEFAULT_CONDITIONS["2% loss + 30 ms jitter"]
# quick mode (CI) writes HTML only: the PNG/SVG exporter starts a Chromium, ~10 s
EXPORT = dict(directory=FIGURES, formats=("html",) if QUICK else ("html", "png", "svg"))


def busy_check(df, limit_ms=30.0):
    """Live calls run in real time: say so when the senders could not keep their 20 ms pace."""
    worst = df["pacing_error_p99_ms"].max()
    if worst > limit_ms:
        display(Markdown(f"*Note: some frames left their sender up to {worst:.0f} ms late (99th percentile): "
                         "this machine was busy during these calls. Late frames miss the jitter buffer and lower "
                         "PESQ; rerun on an idle machine for the network's effect alone.*"))


LOSSY'''),
        new_markdown_cell("""## One call

A lossless loopback call with the lab's Opus at 24 kbit/s, both directions carrying the
same speech. `await` works at the top level of a notebook cell: the call runs on the
kernel's event loop."""),
        new_code_cell('''call = await webrtc_call(codec="opus", bitrate=24000, seconds=SECONDS, seed=1)
summary = {k: call[k] for k in ("codec", "bitrate", "ice_path", "setup_ms", "ice_gathering_ms", "ice_connect_ms", "dtls_ms")}
for d in ("caller_to_agent", "agent_to_caller"):
    summary.update({f"{d}.{k}": call[f"{d}.{k}"] for k in ("mouth_to_ear_ms", "pesq_wb", "pesq_nb", "bitrate_kbps_wire")})
pd.Series(summary).to_frame("value")'''),
        new_markdown_cell("""## The setup timeline

Time runs from the moment the caller creates its offer. Gathering is almost free here
(only host candidates, no STUN or TURN server to ask); the connectivity checks take most of
the time (aioice paces its checks, about 20 ms apart, and waits for both directions to
succeed); then the DTLS handshake (two round trips plus the key export). The agent starts
its checks as soon as it has the offer, the caller once it has the answer, so the two rows
differ. The lab starts the media 50 ms after both are connected; the last bar is the first
audio's trip to the other side's ear (the direction's mouth-to-ear delay)."""),
        new_code_cell('''vw.setup_phases(call).round(1)'''),
        new_code_cell('''fig = vw.setup_timeline(call)
viz.export(fig, "ch5_setup_timeline", **EXPORT)
fig'''),
        new_markdown_cell("""## The candidate pair ICE chose

Each peer's nominated pair: its own (local) candidate and the other side's (remote). On a
loopback call with no STUN or TURN both are `host` candidates on 127.0.0.1. The byte
counters come from `getStats()`: RTP payload bytes, and the DTLS/SRTP transport's bytes
(payload + RTP and SRTP headers + RTCP + the DTLS handshake)."""),
        new_code_cell('''vw.candidate_frame(call)'''),
        new_code_cell('''fig = vw.candidate_table(call)
viz.export(fig, "ch5_candidates", **EXPORT)
fig'''),
        new_markdown_cell("""## getStats()

What a web page sees of a call: `RTCPeerConnection.getStats()` reports per stream the
packets sent and received, the packets lost, the interarrival jitter (RFC 3550, in
seconds) and, once RTCP reports have come back, the round-trip time. `webrtc_call` takes
one report per peer at the end of the call; here are the receiving side's figures per
direction. (aiortc timestamps arrivals on the wall clock, the lab on the loop clock: the
jitter figures are close but not identical to chapter 4's.) The same figure under loss
follows in the transport comparison below."""),
        new_code_cell('''fig = vw.getstats_figure(call)
viz.export(fig, "ch5_getstats", **EXPORT)
fig'''),
        new_markdown_cell("""### Where the mouth-to-ear delay comes from

The lab's configured path adds up, per direction: one frame of capture (20 ms) + the
trip from the end of the frame to the receiver (pacing, encoding, SRTP, the loopback,
decryption) + the jitter buffer's wait + the codec's look-ahead. `parts_sum_ms` is that
sum; `mouth_to_ear_ms` is measured independently, by cross-correlating what was sent with
what was played."""),
        new_code_cell('''parts = pd.DataFrame([{
    "direction": d,
    "send_to_arrival_ms": call[f"{d}.send_to_arrival_ms"],
    "playout_delay_ms": call[f"{d}.playout_delay_ms"],
    "parts_sum_ms": call[f"{d}.parts_sum_ms"],
    "mouth_to_ear_ms": call[f"{d}.mouth_to_ear_ms"],
} for d in ("caller_to_agent", "agent_to_caller")])
parts["difference_ms"] = parts["mouth_to_ear_ms"] - parts["parts_sum_ms"]
parts.round(2)'''),
        new_markdown_cell("""## Opus: quality against bits

The same call at several Opus bit rates, and once with **plain aiortc media** (what a
Pipecat-style agent on aiortc gets today): aiortc encodes Opus at a fixed 96 kbit/s and
plays out through a 16-packet jitter buffer that waits for 4 packets before it starts.

Each 20 ms packet also carries an IPv4 + UDP header (28 bytes), an RTP header with
WebRTC's header extensions, and the 10-byte SRTP authentication tag: at 50 packets per
second that is a constant overhead of about 25 kbit/s (`overhead_kbps`). At low bit rates
the headers cost more than the speech. (`payload_kbps` is what the lab's encoder makes
of this speech; aiortc's own encoder is not visible to the lab, so its row has none.)"""),
        new_code_cell('''rates = [12000, 32000] if QUICK else [8000, 12000, 16000, 24000, 32000, 64000]
opus_df = opus_bitrate_sweep(rates, seconds=SECONDS, baseline=True, seed=1)
busy_check(opus_df)
opus_df.groupby(["mode", "bitrate"])[["pesq_wb", "pesq_nb", "payload_kbps", "bitrate_kbps_wire", "overhead_kbps",
                                      "mouth_to_ear_ms", "concealed_frames"]].mean().round(2)'''),
        new_code_cell('''fig = vw.opus_sweep_figure(opus_df)
viz.export(fig, "ch5_opus_bitrate", **EXPORT)
fig'''),
        new_code_cell('''m2e = opus_df.groupby("mode")["mouth_to_ear_ms"].mean()
display(Markdown(
    f"Mouth-to-ear on loopback: **{m2e['lab']:.0f} ms** with the lab's media (20 ms frame + 60 ms fixed jitter "
    f"buffer + look-ahead + a few ms of transit), **{m2e['aiortc-defaults']:.0f} ms** with plain aiortc. aiortc's "
    "receiver holds 4 packets (80 ms of audio) before it hands the first to its decoder thread, and the lab plays "
    "the decoded audio from the moment the first frame comes out: most of the difference is that prefetch. The "
    "buffer never adapts and has no concealment; on real networks users report 0.5-1 s one way."))'''),
        new_markdown_cell("""## Through a TURN relay

When no direct pair works (both peers behind symmetric NATs, or a firewall that allows
only one address), the media goes through a TURN server (RFC 8656): each peer allocates a
`relay` candidate on it and sends its packets there, wrapped in TURN ChannelData (4 bytes
of header) or Send indications (36 bytes or more). The *relay-only* ICE policy forces
this path, which is how to test it.

The lab starts a real coturn on 127.0.0.1 when it is installed (Debian package
`coturn`); otherwise this section says so and moves on."""),
        new_code_cell('''relay_call = None
try:
    async with Coturn() as turn:
        server = {"urls": turn.url, "username": turn.user, "credential": turn.password}
        relay_call = await webrtc_call(codec="opus", bitrate=24000, seconds=SECONDS, seed=1,
                                       ice_servers=[server], relay_only=True)
except DataUnavailableError as exc:
    display(Markdown(f"**TURN part skipped:** {exc}. The rest of the chapter does not need it."))

if relay_call is not None:
    keys = ["ice_path", "setup_ms", "ice_gathering_ms", "ice_connect_ms", "dtls_ms"]
    dkeys = ["send_to_arrival_ms", "mouth_to_ear_ms", "bitrate_kbps_wire", "pesq_wb"]
    rows = {}
    for label, r in (("direct (host)", call), ("relay-only (coturn)", relay_call)):
        row = {k: (str(r[k]) if k == "ice_path" else r[k]) for k in keys}
        row.update({k: (r[f"caller_to_agent.{k}"] + r[f"agent_to_caller.{k}"]) / 2 for k in dkeys})
        rows[label] = row
    turn_table = pd.DataFrame(rows)
    display(turn_table)
    extra_bits = rows["relay-only (coturn)"]["bitrate_kbps_wire"] - rows["direct (host)"]["bitrate_kbps_wire"]
    extra_ms = rows["relay-only (coturn)"]["send_to_arrival_ms"] - rows["direct (host)"]["send_to_arrival_ms"]
    display(Markdown(
        f"Through the relay, frame-to-arrival time changes by **{extra_ms:+.1f} ms** (two extra hops through "
        f"coturn, here on loopback: on a real network the detour to the TURN server's location dominates) and the "
        f"sender's link carries **{extra_bits:+.1f} kbit/s** more per direction ({extra_bits * 1000 / 8 / 50:+.1f} "
        "bytes per 20 ms packet: TURN ChannelData framing is 4). Gathering takes longer too: each peer first "
        "allocates its relay address (an authenticated request/response with the server). Every packet crosses the "
        "relay's network twice (in and out): a TURN server's bandwidth bill is twice the media's. Mouth-to-ear "
        "also depends on where the first packet falls relative to the jitter buffer's playout, so it scatters "
        "by a few ms between calls."))'''),
        new_code_cell('''if relay_call is not None:
    display(vw.candidate_frame(relay_call))
    fig = vw.setup_timeline(relay_call, title="WebRTC call setup through coturn (relay-only)")
    viz.export(fig, "ch5_setup_timeline_relay", **EXPORT)
    display(fig)'''),
        new_markdown_cell("""## SIP, WebRTC and WebSocket: the same call

Three ways to bring a phone call to a voice agent, each carrying G.711 u-law (the only
codec of the WebSocket *media streams* pattern that telephony platforms use) with the
same 60 ms jitter buffer at both ends:

- **SIP + RTP** over UDP (chapters 3 and 4);
- **WebRTC**: ICE + DTLS-SRTP over UDP;
- **WebSocket**: base64 mu-law in JSON messages over one TCP connection.

Each runs clean and through a path with 2 % random loss and 30 ms of jitter on 20 ms of
delay, both directions, with the same seed. The UDP paths are impaired by the lab's UDP
relay, the WebSocket by its TCP relay, which retransmits lost segments like a TCP stack
(a lost segment holds up everything behind it). What crosses the impaired path differs:
SIP's relay anchors only the media (the SIP messages go direct), WebRTC's carries
everything (ICE checks, DTLS, RTP, RTCP), the WebSocket's the whole TCP connection."""),
        new_code_cell('''cmp = compare_transports(seconds=SECONDS, seed=2)
busy_check(cmp)
cols = ["mouth_to_ear_ms", "pesq_nb", "loss_rate", "late_loss_rate", "transit_delay_ms_p99", "setup_ms", "bitrate_kbps_wire"]
cmp.groupby(["condition", "transport"], sort=False)[cols].mean().round(2)'''),
        new_code_cell('''fig = vw.transport_comparison(cmp, metrics=("mouth_to_ear_ms", "pesq_nb"))
viz.export(fig, "ch5_transports", **EXPORT)
fig'''),
        new_code_cell('''fig = vw.transport_comparison(cmp, metrics=("late_loss_rate", "bitrate_kbps_wire"),
                              title="Late loss and the cost on the wire")
viz.export(fig, "ch5_transports_cost", **EXPORT)
fig'''),
        new_markdown_cell("""The WebRTC calls of the comparison, as `getStats()` saw them (the whole result of each
call is kept in `cmp.attrs["results"]`):"""),
        new_code_cell('''webrtc_runs = {x["condition"]: x["result"] for x in cmp.attrs["results"] if x["transport"] == "webrtc"}
fig = vw.getstats_figure(webrtc_runs, title="WebRTC getStats(): clean vs 2 % loss + 30 ms jitter")
viz.export(fig, "ch5_getstats_lossy", **EXPORT)
fig'''),
        new_markdown_cell("""## What differs

- **Loss becomes latency on TCP.** The WebSocket never loses audio (`loss_rate` is 0), but
  a lost TCP segment is retransmitted at least one retransmission timeout (200 ms minimum
  on Linux) later, and every message behind it waits (head-of-line blocking): look at
  `transit_delay_ms_p99`. Even jitter alone becomes delay, because TCP delivers in order:
  a message that drew a short delay waits for the one before it. A fixed 60 ms jitter
  buffer turns the waits into *late* loss, bursts of gaps the receiver must conceal,
  worse for PESQ than 2 % of random, isolated losses. An adaptive jitter buffer stretches
  to cover the spikes instead, which moves the cost into the mouth-to-ear delay (below).
- **UDP transports lose packets and conceal them.** SIP and WebRTC lose about the
  configured 2 % (a short call has few packets, so the measured rate scatters) and the
  jitter buffer drops the few packets the 30 ms jitter makes late. With the same codec,
  buffer and PLC their quality is close; the seed is the same, but WebRTC's ICE checks,
  DTLS and RTCP cross the same relay, so the losses do not hit the same audio frames.
- **Setup** measures different things: SIP INVITE -> ACK (here over an unimpaired
  signaling path), WebRTC offer -> connected (ICE checks + DTLS handshake, both over the
  impaired path: a lost check or DTLS flight waits for a retransmission timer), WebSocket
  dial -> `start` (TCP + HTTP upgrade + the first messages, all impaired).
- **Bits on the wire.** RTP: 160 bytes of G.711 + 40 of IP/UDP/RTP per 20 ms (80 kbit/s);
  SRTP adds the tag and WebRTC its header extensions; JSON + base64 nearly doubles it."""),
        new_code_cell('''ws_adaptive = await ws_call(seconds=SECONDS, net=LOSSY, jitter_buffer="adaptive", seed=2)
fixed = cmp[(cmp["transport"] == "ws") & (cmp["condition"] != "clean")]
rows = []
for d in ("caller_to_agent", "agent_to_caller"):
    f = fixed[fixed["direction"] == d].iloc[0]
    rows.append({"direction": d, "jitter buffer": "fixed:60", "mouth_to_ear_ms": f["mouth_to_ear_ms"],
                 "late_loss_rate": f["late_loss_rate"], "pesq_nb": f["pesq_nb"], "transit_delay_ms_p99": f["transit_delay_ms_p99"]})
    rows.append({"direction": d, "jitter buffer": "adaptive", "mouth_to_ear_ms": ws_adaptive[f"{d}.mouth_to_ear_ms"],
                 "late_loss_rate": ws_adaptive[f"{d}.late_loss_rate"], "pesq_nb": ws_adaptive[f"{d}.pesq_nb"],
                 "transit_delay_ms_p99": ws_adaptive[f"{d}.transit_delay_ms_p99"]})
display(Markdown("**WebSocket over 2 % loss: a fixed vs an adaptive jitter buffer**"))
if QUICK:
    display(Markdown(f"*Quick mode: {SECONDS:g} s calls are too short for the adaptive buffer to learn the "
                     "spikes; run the chapter in full mode to see it trade delay for late loss.*"))
pd.DataFrame(rows).round(3)'''),
        new_markdown_cell("""## Exercises
1. Run the comparison with Opus over WebRTC (`codec_for={"webrtc": "opus"}`). What changes,
   and why does the note in every row warn you about comparing PESQ now?
2. Turn on Opus in-band FEC in the sweep under loss (`opus_bitrate_sweep(..., net=LOSSY,
   fec=True)`). At which bit rate does FEC start to pay for itself? Look at the
   `outcomes` of each call in `opus_df.attrs["results"]` (frames played, concealed,
   rebuilt from FEC).
3. Give the WebSocket's TCP relay a smaller minimum retransmission timeout
   (`ws_call(..., tcp_options={"rto_min_ms": 20})`). How much of the latency spike is the
   timer, and how much the head-of-line blocking behind it?
4. Make the relay-only call go through coturn with a 30 ms delay on the path (hint: the
   lab's `net` option cannot be combined with `relay_only`; which one of the two hops
   would you impair, and how?)."""),
    ]
