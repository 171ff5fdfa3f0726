"""Regenerate the tutorial notebooks from the cell lists below (no outputs stored).

    python tools/make_notebooks.py

Edit the cells here, not in the .ipynb files, so notebook diffs stay reviewable.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent / "notebooks"

SETUP = '''import os
from pathlib import Path

import pandas as pd
from IPython.display import Audio, Markdown, display

import voicelab
from voicelab import audio, codecs, viz
from voicelab.net import ChannelConfig
from voicelab.sim import Scenario, simulate_call, sweep

QUICK = os.environ.get("VOICELAB_QUICK") == "1"   # CI runs every chapter in quick mode
FIGURES = Path(os.environ.get("VOICELAB_FIGURES", "../figures"))
print(f"voicelab {voicelab.__version__}; speech corpus: {audio.corpus_source()}; quick mode: {QUICK}")
if audio.corpus(sample_rate=16000)[0].synthetic:
    display(Markdown(f"**Note: {audio.SYNTHETIC_WARNING}.** Set `VOICELAB_DATA` to natural speech for calibrated numbers."))'''


def ch1() -> list:
    return [
        new_markdown_cell("""# Chapter 1 - Codecs: hear and measure

A voice codec trades bits for quality and delay. In this chapter you pick a codec, listen
to what it does to speech, and measure it with **PESQ** (ITU-T P.862, narrowband, and
P.862.2, wideband), the standard objective estimate of listening quality (MOS-LQO, 1 to
4.5 or 4.64).

Everything here runs in the lab's `sim` mode: the speech goes through the real encoder
and decoder, frame by frame, as RTP payloads, over a perfect network. Chapter 2 breaks
the network.

**Things to notice**
- Narrowband codecs (G.711, G.726, G.729, AMR-NB) carry 300-3400 Hz: their *wideband*
  PESQ is capped near 3.5 however good they are.
- Bits are not everything: G.722 at 64 kbit/s is wideband; G.711 at 64 kbit/s is not.
- Each codec adds its own delay (framing + look-ahead)."""),
        new_code_cell(SETUP),
        new_markdown_cell("""## The codecs available here

`voicelab codecs` on the command line shows the same table. `rtpmap` and `PT` are what
goes into SDP; note G.722's RTP clock of 8000 although its audio is 16 kHz (RFC 3551)."""),
        new_code_cell('''table = pd.DataFrame(codecs.available())
table[["name", "rtpmap", "payload_type", "sample_rate", "bitrate", "frame_ms", "algorithmic_delay_ms", "available"]]'''),
        new_markdown_cell("""## Listen

Pick a codec and a bitrate; the cell encodes and decodes the speech and plays the
reference and the decoded audio. (In a static rendering of this notebook the controls do
nothing; run it in JupyterLab: `make lab`.)"""),
        new_code_cell('''names = [r["name"] for r in codecs.available() if r.get("available", True)]

def listen(codec="opus", bitrate=16000):
    params = {"bitrate": bitrate} if codec in ("opus", "amr-nb", "g726", "g723") else {}
    r = simulate_call(Scenario(codec=codec, codec_params=params, max_speech_s=4 if QUICK else 8, seed=1))
    m = r.metrics
    wb = "n/a" if m["pesq_wb"] is None else f"{m['pesq_wb']:.2f}"
    display(Markdown(f"**{codec}** PESQ-NB {m['pesq_nb']:.2f}, PESQ-WB {wb}, "
                     f"mouth-to-ear {m['mouth_to_ear_ms']:.1f} ms (60 ms of it the jitter buffer)"))
    ref, deg, rate = r.audio_pair()
    display(Markdown("reference:"), Audio(ref, rate=rate), Markdown("decoded:"), Audio(deg, rate=rate))

viz.interact(listen, codec=names, bitrate=[6300, 8000, 12200, 16000, 24000, 32000, 40000, 64000])'''),
        new_markdown_cell("""## Measure every codec

One lossless call per codec and mode. The published column is plain FFmpeg on natural
speech (`voicelab.reference`): with natural speech the lab should land within a few
tenths of it; with synthetic speech it will be lower (that is why the lab labels it)."""),
        new_code_cell('''from voicelab.reference import PESQ_CLEAN_FFMPEG

modes = [("pcmu", {}), ("pcma", {}), ("g722", {}), ("g726", {"bitrate": 32000}), ("amr-nb", {"bitrate": 12200}),
         ("opus", {"bitrate": 16000}), ("opus", {"bitrate": 24000})]
if not QUICK:
    modes += [("g723", {}), ("g729", {}), ("g726", {"bitrate": 16000}), ("g726", {"bitrate": 24000}),
              ("g726", {"bitrate": 40000}), ("amr-nb", {"bitrate": 4750}), ("opus", {"bitrate": 8000}),
              ("opus", {"bitrate": 12000}), ("opus", {"bitrate": 32000}), ("opus", {"bitrate": 64000}), ("l16", {})]
rows = []
for name, params in modes:
    if not codecs.is_available(name):
        print(f"skipping {name}: not installed here (voicelab doctor)")
        continue
    r = simulate_call(Scenario(codec=name, codec_params=params, max_speech_s=6 if QUICK else 12, seed=1))
    m = r.metrics
    pub = PESQ_CLEAN_FFMPEG.get((name, int(m["bitrate_kbps"] * 1000)), {})
    rows.append({"codec": f"{name} {m['bitrate_kbps']:g}k", "pesq_nb": m["pesq_nb"], "pesq_wb": m["pesq_wb"],
                 "published_nb": pub.get("nb"), "published_wb": pub.get("wb"),
                 "bitrate_kbps_wire": m["bitrate_kbps_wire"], "codec_delay_ms": codecs.get(name, **params).algorithmic_delay_ms,
                 "synthetic_speech": m["synthetic_speech"]})
quality = pd.DataFrame(rows)
quality.round(2)'''),
        new_code_cell('''fig = viz.codec_bars(quality, metrics=("pesq_nb", "pesq_wb"), by="codec", title="Clean-channel PESQ per codec")
viz.export(fig, "ch1_pesq_per_codec", directory=FIGURES)
fig'''),
        new_code_cell('''import plotly.express as px
fig2 = px.scatter(quality, x="bitrate_kbps_wire", y="pesq_wb", text="codec", template="plotly_white",
                  labels={"bitrate_kbps_wire": "bitrate on the wire incl. IPv4/UDP/RTP (kbit/s)", "pesq_wb": "PESQ-WB"},
                  title="Quality per bit on the wire")
fig2.update_traces(textposition="top center")
viz.export(fig2, "ch1_quality_vs_bitrate", directory=FIGURES)
fig2'''),
        new_markdown_cell("""## Exercises
1. Why does Opus at 64 kbit/s on the wire cost about the same as G.711, but score far higher
   on PESQ-WB? (Hint: look at the 40 bytes of IPv4/UDP/RTP header per 20 ms packet.)
2. Change `frame_ms` for G.711 (`codec_params={"frame_ms": 10}`): what happens to the wire
   bitrate and to the delay?
3. Compare `pesq_nb` of G.711 on natural and on synthetic speech (unset `VOICELAB_DATA`)."""),
    ]


def ch2() -> list:
    return [
        new_markdown_cell("""# Chapter 2 - Loss, jitter and the jitter buffer

Packets get lost and arrive late. The receiver hides lost frames (**packet-loss
concealment**, PLC), can rebuild them from redundancy (**Opus in-band FEC**), and waits a
little before playing (**the jitter buffer**) so that late packets are still on time. Each
fix costs something: FEC costs bits, the jitter buffer costs delay.

The **E-model** (ITU-T G.107) predicts call quality from delay, loss and the codec without
listening; we put its prediction next to PESQ."""),
        new_code_cell(SETUP),
        new_markdown_cell("## Listen to a lossy call"),
        new_code_cell('''def lossy_call(codec="pcmu", loss=0.05, mean_burst=1.0, jitter_ms=10.0, plc=True):
    burst = None if mean_burst <= 1.0 else mean_burst
    chan = ChannelConfig(loss_rate=loss, burst_length=burst, delay_ms=20, jitter_ms=jitter_ms)
    r = simulate_call(Scenario(codec=codec, channel=chan, plc=plc, jitter_buffer="adaptive",
                               max_speech_s=4 if QUICK else 8, seed=1))
    m = r.metrics
    display(pd.Series({k: m[k] for k in ("pesq_nb", "pesq_wb", "mos_cqe", "loss_rate", "late_loss_rate",
                                           "playout_delay_ms", "mouth_to_ear_ms")}).round(3).to_frame("value").T)
    ref, deg, rate = r.audio_pair()
    display(Audio(deg, rate=rate))

viz.interact(lossy_call, codec=["pcmu", "g722", "opus"], loss=(0.0, 0.3, 0.01), mean_burst=(1.0, 6.0, 0.5),
             jitter_ms=(0.0, 80.0, 5.0), plc=True)'''),
        new_markdown_cell("""## PESQ vs loss: PLC and FEC

G.711 with its concealment (G.711 Appendix I-like) and without (silence insertion); Opus
24 kbit/s with and without in-band FEC (the encoder is told the expected loss, so it
spends bits on redundancy). Each point is the mean over repeats with 95 % intervals."""),
        new_code_cell('''losses = [0.0, 0.05, 0.10] if QUICK else [0.0, 0.02, 0.05, 0.10, 0.15, 0.20]
repeats = 1 if QUICK else 3
base = Scenario(max_speech_s=6 if QUICK else 10, jitter_buffer="fixed:40")
variants = {
    "G.711 + PLC": dict(codec="pcmu", plc=True),
    "G.711, no PLC": dict(codec="pcmu", plc=False),
    "Opus 24k": dict(codec="opus", codec_params={"bitrate": 24000}),
    "Opus 24k + FEC": dict(codec="opus", codec_params={"bitrate": 24000}, fec=True),
}
frames = []
for label, v in variants.items():
    df = sweep(base.with_(**v), {"channel.loss_rate": losses}, repeats=repeats, seed=2, progress=False)
    df["variant"] = label
    frames.append(df)
loss_df = pd.concat(frames, ignore_index=True)
loss_df.groupby(["variant", "channel.loss_rate"])[["pesq_nb", "pesq_wb", "mos_cqe"]].mean().round(2)'''),
        new_code_cell('''fig = viz.metric_vs_param(loss_df, x="channel.loss_rate", y="pesq_wb", color="variant", title="PESQ-WB vs packet loss")
viz.export(fig, "ch2_pesq_vs_loss", directory=FIGURES)
fig'''),
        new_markdown_cell("""### How much do PLC and FEC buy?"""),
        new_code_cell('''mean = loss_df.groupby(["variant", "channel.loss_rate"])["pesq_nb"].mean().unstack(0)
gain = pd.DataFrame({"PLC gain (G.711, PESQ-NB)": mean["G.711 + PLC"] - mean["G.711, no PLC"],
                     "FEC gain (Opus, PESQ-NB)": mean["Opus 24k + FEC"] - mean["Opus 24k"]})
gain.round(2)'''),
        new_markdown_cell("""## The E-model's prediction next to PESQ

For G.711 with PLC the E-model uses G.113 Appendix I (Ie = 0, Bpl = 25.1); without PLC,
Bpl = 4.3. PESQ-NB and MOS-CQE are both on the 1..4.5 scale, but they do not measure the
same thing: the E-model is a planning tool and includes the delay impairment."""),
        new_code_cell('''import plotly.graph_objects as go
g711 = loss_df[loss_df["variant"].str.startswith("G.711")]
s = g711.groupby(["variant", "channel.loss_rate"])[["pesq_nb", "mos_cqe"]].mean().reset_index()
fig = go.Figure()
for label, part in s.groupby("variant"):
    fig.add_trace(go.Scatter(x=part["channel.loss_rate"] * 100, y=part["pesq_nb"], name=f"{label}: PESQ-NB", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=part["channel.loss_rate"] * 100, y=part["mos_cqe"], name=f"{label}: E-model", mode="lines", line=dict(dash="dash")))
fig.update_layout(title="E-model prediction vs PESQ (G.711)", xaxis_title="packet loss (%)", yaxis_title="MOS", template="plotly_white")
note = viz.synthetic_note(loss_df)
if note:
    fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=-0.2, showarrow=False, font=dict(color="firebrick"))
viz.export(fig, "ch2_emodel_vs_pesq", directory=FIGURES)
fig'''),
        new_markdown_cell("""## Fixed vs adaptive jitter buffer

With 30 ms of jitter, a small fixed buffer loses many packets that arrive *late* (they
are concealed like lost ones); a large one adds delay to every packet. The adaptive
buffer (NetEq-like: target = a percentile of recent arrival delay) looks for the knee."""),
        new_code_cell('''jbs = ["fixed:20", "fixed:40", "fixed:80"] + ([] if QUICK else ["fixed:60", "fixed:120"]) + ["adaptive"]
jb_df = sweep(Scenario(codec="pcmu", channel=ChannelConfig(delay_ms=20, jitter_ms=30), max_speech_s=6 if QUICK else 10),
              {"jitter_buffer": jbs}, repeats=1 if QUICK else 3, seed=3, progress=False)
jb_df.groupby("jitter_buffer", sort=False)[["playout_delay_ms", "late_loss_rate", "mouth_to_ear_ms", "pesq_nb"]].mean().round(3)'''),
        new_code_cell('''fig = viz.jitter_buffer_tradeoff(jb_df)
viz.export(fig, "ch2_jitter_buffer_tradeoff", directory=FIGURES)
fig'''),
        new_markdown_cell("""## Exercises
1. Make the loss bursty (`burst_length=3`) at the same 5 % rate. Which suffers more, PLC or
   FEC? Why does Opus FEC help little against bursts?
2. The E-model's `BurstR` comes from the measured loss pattern (see `burst_ratio` in the
   results). How does it change the prediction?
3. Find the smallest fixed buffer that keeps late loss under 1 % at 30 ms jitter. Compare
   its delay with the adaptive buffer's."""),
    ]


def ch3() -> list:
    return [
        new_markdown_cell("""# Chapter 3 - Anatomy of a SIP call

A phone call over SIP is a conversation between two *user agents*: the caller sends an
INVITE carrying an SDP **offer** (which codecs, which address and port for the audio), the
callee answers with a provisional 180 Ringing and a final 200 OK carrying the SDP
**answer**, and the caller confirms with an ACK. Audio then flows as RTP (chapter 4)
directly between the two media addresses; a BYE ends the call.

Here both agents are the lab's own sans-IO SIP stack running on a virtual clock, so every
message is visible, the same seed always gives the same call, and a 32-second timeout
takes microseconds. The caller is in 192.0.2.0/24 and the agent in 198.51.100.0/24
(documentation address ranges: nothing is sent anywhere)."""),
        new_code_cell(SETUP),
        new_code_cell('''from voicelab.sip.virtual import run_sip_call
from voicelab.sip.timers import TIMER_DESCRIPTIONS, TimerConfig

call = run_sip_call(uplink=ChannelConfig(delay_ms=30), downlink=ChannelConfig(delay_ms=30), ring_s=1.5, talk_s=3.0, seed=1)
call.summary()'''),
        new_markdown_cell("""## The ladder diagram

Time runs downwards. `setup_ms` is INVITE -> ACK sent (it includes the 1.5 s the agent
rang); `post_dial_delay_ms` is INVITE -> first 180/200, what a caller perceives as the
wait before ringing."""),
        new_code_cell('''fig = viz.ladder(call.datagrams, title="A SIP call: INVITE, ringing, answer, ACK, BYE")
viz.export(fig, "ch3_ladder", directory=FIGURES)
fig'''),
        new_markdown_cell("""## The offer and the answer (SDP)

The caller offers PCMU and Opus; the agent supports only PCMU, so its answer keeps the
offer's single audio stream with PCMU (payload type 0) and telephone-event for DTMF. The
offer/answer rules (RFC 3264) keep the m-line order and the offerer's payload type
numbers."""),
        new_code_cell('''print("OFFER (caller)\\n" + call.call.local_sdp.decode())
print("ANSWER (agent)\\n" + call.call.remote_sdp.decode())
call.call.media'''),
        new_markdown_cell("""## A digest challenge

An agent that wants to know who is calling answers the first INVITE with 401 and a
`WWW-Authenticate` challenge (a nonce; SHA-256 offered before MD5, RFC 8760). The caller
acknowledges the 401, computes the response from its password and sends the INVITE again
with an `Authorization` header. The password never crosses the network."""),
        new_code_cell('''auth_call = run_sip_call(agent_credentials={"caller": "s3cret"}, caller_credentials=("caller", "s3cret"), seed=3)
fig = viz.ladder(auth_call.datagrams, title="Digest authentication: 401, then the INVITE again")
viz.export(fig, "ch3_digest", directory=FIGURES)
challenge = next(e for e in auth_call.caller.trace if e.first_line.startswith("SIP/2.0 401"))
print(challenge.first_line)
fig'''),
        new_markdown_cell("""## What each timer does

SIP over UDP must retransmit requests itself. All timers derive from T1 (an RTT
estimate, 500 ms), T2 (4 s) and T4 (5 s)."""),
        new_code_cell('''timers = TimerConfig().values(reliable=False)
pd.DataFrame([{"timer": k, "seconds": getattr(timers, k.lower()), "what": v} for k, v in TIMER_DESCRIPTIONS.items()])'''),
        new_markdown_cell("""## The same call over a 20 % loss link

Lost messages end in a cross; dashed orange arrows are retransmissions. Timer A resends
the INVITE after 0.5, 1, 2 s...; the agent resends its 200 OK until the ACK arrives
(RFC 6026); provisional responses (100, 180) are not retransmitted."""),
        new_code_cell('''lossy = ChannelConfig(delay_ms=30, loss_rate=0.2)
runs = [run_sip_call(uplink=lossy, downlink=lossy, ring_s=1.0, seed=s) for s in range(4 if QUICK else 40)]
worst = max(runs, key=lambda r: r.summary()["retransmissions"])
fig = viz.ladder(worst.datagrams, title="20 % loss: retransmissions recover the call")
viz.export(fig, "ch3_lossy_ladder", directory=FIGURES)
fig'''),
        new_code_cell('''setup = pd.DataFrame([r.summary() for r in runs])
setup[["established", "setup_ms", "post_dial_delay_ms", "lost", "retransmissions"]].describe().round(1)'''),
        new_markdown_cell("""## Exercises
1. Set `transport="tcp"` in `run_sip_call`: what happens to the retransmissions, and why
   does TCP not make lost *packets* disappear (chapter 5 shows the same for WebSocket media)?
2. Make the uplink lose 100 % of packets: after how long does the caller give up, and with
   which status? (Timer B.)
3. With 20 % loss, how is `setup_ms` distributed? Why is its tail so long?"""),
    ]


def ch4() -> list:
    return [
        new_markdown_cell("""# Chapter 4 - RTP and RTCP on the wire

Every 20 ms a voice call sends one RTP packet per direction: a 12-byte header (sequence
number, timestamp, SSRC) and the codec's payload. Every few seconds each side also sends
RTCP: sender and receiver reports that tell the other side what arrived, how much was
lost, how much the arrival times jittered, and (with a little arithmetic on NTP time
stamps) the round-trip time.

Here two real `RtpSession` objects (the same ones the live calls use) talk over two
channel models on a virtual clock, so we know the **ground truth** of every packet and
can check each RTCP report against it."""),
        new_code_cell(SETUP),
        new_code_cell('''from voicelab.rtp.virtual import run_rtp_call

SECONDS = 15 if QUICK else 60
up = ChannelConfig(delay_ms=40, jitter_ms=5, loss_rate=0.05)    # caller -> agent
down = ChannelConfig(delay_ms=25, jitter_ms=5, loss_rate=0.05)  # agent -> caller
call = run_rtp_call(codec="pcmu", seconds=SECONDS, uplink=up, downlink=down, seed=4)
call.packets.head(8)'''),
        new_markdown_cell("""## Sequence numbers and timestamps

The sequence number counts packets (it reveals loss and reordering); the timestamp counts
samples at the codec's RTP clock (8000 Hz for G.711: +160 per 20 ms packet). Both start at
random values (RFC 3550), which is why the first row does not start at 0."""),
        new_code_cell('''a = call.packets[call.packets["direction"] == "a->b"].reset_index(drop=True)
pd.DataFrame({"sequence step": a["sequence_number"].diff().value_counts().to_dict(),
              "timestamp step": a["rtp_timestamp"].diff().value_counts().to_dict()})'''),
        new_markdown_cell("""## Transit time and RFC 3550 jitter

Each packet's transit time is its arrival minus its send time. The receiver cannot know
it (the clocks differ), but it can compute how much it *varies*: the interarrival jitter
of RFC 3550 A.8, a running average J += (|D| - J)/16 of transit differences, in timestamp
units. The dots are packets, the line is the jitter the receiver computes."""),
        new_code_cell('''import plotly.graph_objects as go
from voicelab.rtp.virtual import rfc3550_jitter_ms

rec = a.dropna(subset=["arrival_time_s"]).sort_values("arrival_time_s")
fig = go.Figure()
fig.add_trace(go.Scattergl(x=a["send_time_s"], y=a["transit_ms"], mode="markers", marker=dict(size=3), name="transit (ms)"))
lost = a[a["arrival_time_s"].isna()]
fig.add_trace(go.Scattergl(x=lost["send_time_s"], y=[up.delay_ms] * len(lost), mode="markers",
                           marker=dict(symbol="x", color="firebrick"), name="lost"))
fig.add_trace(go.Scatter(x=rec["arrival_time_s"], y=rfc3550_jitter_ms(rec["transit_ms"].to_numpy() / 1000, 8000),
                         name="RFC 3550 jitter (ms)", yaxis="y2"))
fig.update_layout(title="Caller -> agent: transit time and interarrival jitter", xaxis_title="time (s)",
                  yaxis_title="transit (ms)", yaxis2=dict(title="jitter (ms)", overlaying="y", side="right"),
                  legend=dict(orientation="h", y=1.1),
                  template="plotly_white")
viz.export(fig, "ch4_transit_jitter", directory=FIGURES)
fig'''),
        new_markdown_cell("""## RTCP reports against the ground truth

Each row is one report block as the other side received it, next to what really
happened. The fraction lost is per report interval, the cumulative count since the
start; losses at the very end of an interval are counted in the next one (a loss is
only visible once a later packet has arrived). The reported RTT wobbles around the
configured 40 + 25 ms because the SR and the RR each cross a jittery path."""),
        new_code_cell('''cols = ["time_s", "about", "fraction_lost", "true_fraction_lost", "cumulative_lost", "true_cumulative_lost",
        "jitter_ms", "true_jitter_ms", "rtt_ms", "true_rtt_ms"]
call.reports[cols].round(3)'''),
        new_code_cell('''r = call.reports
fig = go.Figure()
fig.add_trace(go.Scatter(x=r["true_fraction_lost"] * 100, y=r["fraction_lost"] * 100, mode="markers", name="reports"))
fig.add_trace(go.Scatter(x=[0, 12], y=[0, 12], mode="lines", line=dict(dash="dot"), name="perfect"))
fig.update_layout(title="RTCP fraction lost vs ground truth", xaxis_title="true loss in the interval (%)",
                  yaxis_title="reported (%)", template="plotly_white")
viz.export(fig, "ch4_rtcp_vs_truth", directory=FIGURES)
fig'''),
        new_markdown_cell("""## What SRTP and RTCP cost on the wire

IPv4 + UDP + RTP headers are 40 bytes per packet; SRTP with HMAC-SHA1-80 adds a 10-byte
tag. For a 20 ms G.711 packet (160 bytes) that is 25 % + 6 %; for a low-bitrate codec the
headers cost more than the speech."""),
        new_code_cell('''rows = []
for name, params in [("pcmu", {}), ("g722", {}), ("g729", {}), ("opus", {"bitrate": 16000})]:
    if not codecs.is_available(name):
        continue
    plain = run_rtp_call(codec=name, codec_params=params, seconds=5, seed=1)
    srtp = run_rtp_call(codec=name, codec_params=params, seconds=5, seed=1, srtp=True)
    rows.append({"codec": name, "codec kbit/s": codecs.get(name, **params).bitrate / 1000,
                 "RTP on the wire": plain.bitrate_kbps(), "SRTP on the wire": srtp.bitrate_kbps(),
                 "RTCP": plain.bitrate_kbps(what="rtcp")})
overhead = pd.DataFrame(rows).round(2)
overhead'''),
        new_markdown_cell("""## Exercises
1. Make the uplink bursty (`burst_length=4`). How does the reported fraction lost per interval
   change? Does the cumulative count still match the truth?
2. Increase the jitter to 30 ms with `reorder=True`. What happens to the cumulative loss
   count while packets are reordered?
3. Why is the first report's RTT missing? (Hint: LSR is zero until a sender report arrived.)"""),
    ]


def write(name: str, cells: list) -> None:
    stem = name.split("-")[0]
    for i, cell in enumerate(cells):  # stable ids: regenerating changes nothing that did not change
        cell["id"] = f"ch{stem}-{i:03d}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    path = ROOT / name
    nbformat.write(nb, path)
    print("wrote", path)


def chapters() -> list[tuple[str, list]]:
    """(file name, cells) of every chapter: the four above, then any ``tools/nb_chN.py``
    module with ``NAME`` and ``cells()`` (later chapters live in their own files)."""
    import importlib.util

    out = [("01-codecs.ipynb", ch1()), ("02-loss-jitter.ipynb", ch2()),
           ("03-sip-anatomy.ipynb", ch3()), ("04-rtp-rtcp.ipynb", ch4())]
    for path in sorted(Path(__file__).resolve().parent.glob("nb_ch*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out.append((mod.NAME, mod.cells()))
    return sorted(out)


if __name__ == "__main__":
    ROOT.mkdir(exist_ok=True)
    for name, cells in chapters():
        write(name, cells)
