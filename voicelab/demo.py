"""``voicelab demo``: the flagship comparison.

1. ``sim`` mode: G.711 (PCMU) vs G.722 vs Opus 24 kbit/s (with in-band FEC) at several
   packet-loss rates, with a little jitter, measured with PESQ (NB and WB), the E-model
   and mouth-to-ear delay.
2. Live on loopback: the same speech over SIP/RTP, WebRTC (aiortc) and a WebSocket media
   stream, clean and with 2 % loss + 30 ms jitter (the userspace impairment relay):
   mouth-to-ear delay, PESQ, loss and late loss per transport.

Writes tidy tables, figures (HTML, and PNG/SVG where a Chromium is installed) and a small
self-contained HTML report under ``results/demo/``.
"""

from __future__ import annotations

import datetime as _dt
import html
import platform
from pathlib import Path

import pandas as pd

from . import __version__, audio
from .net import ChannelConfig
from .sim import Scenario, sweep
from . import viz

__all__ = ["run_demo", "DEMO_CODECS"]

#: (label, codec, codec parameters, fec) compared by the demo.
DEMO_CODECS = [
    ("G.711 PCMU", "pcmu", {}, False),
    ("G.722", "g722", {}, False),
    ("Opus 24k FEC", "opus", {"bitrate": 24000}, True),
]


#: repeats of each live cell (paired across transports; each a different utterance/talker)
LIVE_REPEATS = 4
LIVE_REPEATS_QUICK = 2


def run_demo(*, out_dir: str | Path = "results/demo", quick: bool = False, progress: bool = True, workers: int | None = None,
             live: bool = True) -> Path:
    """Run the demo sweep and write the report.

    Parameters
    ----------
    out_dir : path
        Where results, figures and ``index.html`` go.
    quick : bool
        Two loss rates and one repeat (for CI and a first look).
    progress : bool
        Show a progress bar.
    workers : int, optional
        Local processes (default: 2, or 1 in quick mode).
    live : bool
        Also run the live transport comparison: 3 transports x 2 networks x ``LIVE_REPEATS``
        paired trials (``LIVE_REPEATS_QUICK`` in quick mode) on 127.0.0.1.

    Returns
    -------
    Path
        The report's ``index.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    losses = [0.0, 0.05] if quick else [0.0, 0.02, 0.05, 0.10]
    repeats = 1 if quick else 3
    base = Scenario(channel=ChannelConfig(delay_ms=20.0, jitter_ms=5.0), jitter_buffer="fixed:40", max_speech_s=8.0 if quick else 12.0)
    frames = []
    for label, codec, params, fec in DEMO_CODECS:
        df = sweep(
            base.with_(codec=codec, codec_params=params, fec=fec),
            {"channel.loss_rate": losses},
            repeats=repeats,
            seed=1,
            workers=workers or (1 if quick else 2),
            journal=out / f"journal-{codec}.jsonl",
            progress=progress,
            desc=f"{label:<13}",
        )
        df["label"] = label
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if "error" in df and df["error"].notna().any():
        errs = df.loc[df["error"].notna(), "error"].unique()
        raise RuntimeError(f"demo trials failed: {errs}")  # a bug, not user input
    df.to_csv(out / "results.csv", index=False)
    df.to_parquet(out / "results.parquet")

    figs = {
        "pesq_wb_vs_loss": viz.metric_vs_param(df, x="channel.loss_rate", y="pesq_wb", color="label", title="Wideband PESQ vs packet loss"),
        "pesq_nb_vs_loss": viz.metric_vs_param(df, x="channel.loss_rate", y="pesq_nb", color="label", title="Narrowband PESQ vs packet loss"),
        "mos_cqe_vs_loss": viz.metric_vs_param(df, x="channel.loss_rate", y="mos_cqe", color="label", title="E-model MOS-CQE vs packet loss"),
        "bitrate_wire": viz.codec_bars(df[df["channel.loss_rate"] == 0], metrics=("bitrate_kbps_wire",), by="label", title="Bitrate on the wire (IPv4/UDP/RTP)"),
    }
    live_df = None
    if live:
        from .compare import compare_transports
        from .viz import webrtc as vw

        if progress:
            print("live: SIP vs WebRTC vs WebSocket on 127.0.0.1 (clean, then 2 % loss + 30 ms jitter) ...", flush=True)
        from .audio import corpus_items
        from .compare import summarize_transports
        from .viz.study import summary_figure

        # a small study, not one call per cell: repeats rotate over the corpus's talkers and
        # utterances, paired across transports (same seed and utterance in each)
        speech = [it.speech for it in corpus_items()]
        live_df = compare_transports(seconds=3.0 if quick else 4.0, seed=1, repeats=LIVE_REPEATS_QUICK if quick
                                     else LIVE_REPEATS, speech=speech)
        live_df.to_csv(out / "results-live.csv", index=False)
        summary = summarize_transports(live_df)
        summary.to_csv(out / "results-live-summary.csv", index=False)
        for metric, title in (("mouth_to_ear_ms", "Live on loopback: mouth-to-ear delay, SIP/RTP vs WebRTC vs WebSocket (PCMU)"),
                              ("pesq_nb", "Live on loopback: PESQ-NB, SIP/RTP vs WebRTC vs WebSocket (PCMU)")):
            figs[f"live_{metric}"] = summary_figure(summary[summary["metric"] == metric], metric,
                                                    by=["condition", "direction", "transport"], title=title)
    fig_dir = out / "figures"
    for name, fig in figs.items():
        viz.export(fig, name, directory=fig_dir)
    report = out / "index.html"
    report.write_text(_report_html(df, figs, live_df))
    return report


def _report_html(df: pd.DataFrame, figs: dict, live_df: pd.DataFrame | None = None) -> str:
    cols = ["label", "channel.loss_rate", "pesq_nb", "pesq_wb", "mos_cqe", "mouth_to_ear_ms", "mouth_to_ear_true_ms", "bitrate_kbps_wire"]
    table = (
        df[cols].groupby(["label", "channel.loss_rate"], sort=False).mean(numeric_only=True).round(2).reset_index()
    )
    table["channel.loss_rate"] = (table["channel.loss_rate"] * 100).round(1)
    table = table.rename(columns={
        "label": "codec", "channel.loss_rate": "loss %", "pesq_nb": "PESQ-NB", "pesq_wb": "PESQ-WB",
        "mos_cqe": "E-model MOS", "mouth_to_ear_ms": "mouth-to-ear ms", "mouth_to_ear_true_ms": "(true) ms",
        "bitrate_kbps_wire": "kbit/s on the wire",
    })
    synthetic = bool(df.get("synthetic_speech", pd.Series([False])).any())
    src = df["speech_source"].iloc[0] if "speech_source" in df else "?"
    if "speech" in df:  # which corpus items (and so which talkers) were sent
        src = f"{src}, {df['speech'].iloc[0]}"
    note = (
        f'<p class="warn">{html.escape(audio.SYNTHETIC_WARNING)}</p>' if synthetic else ""
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>voicelab demo</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        ".warn{color:#b00;font-weight:bold}</style></head><body>",
        "<h1>voicelab demo: codecs under packet loss (sim mode)</h1>",
        f"<p>voicelab {__version__}, Python {platform.python_version()}, "
        f"{_dt.date.today().isoformat()}. Speech: {html.escape(str(src))}. "
        "Network: 20 ms delay, 5 ms jitter, random loss; fixed 40 ms jitter buffer.</p>",
        note,
        table.to_html(index=False, border=0),
    ]
    if live_df is not None:
        from .compare import summarize_transports, transport_verdicts

        summ = summarize_transports(live_df)
        summ = summ[["condition", "direction", "transport", "metric", "n", "mean", "ci_low", "ci_high"]].round(3)
        n = int(live_df["trial"].nunique()) if "trial" in live_df else 1
        verdicts = (transport_verdicts(live_df, "mouth_to_ear_ms", a="ws", b="sip", unit="ms")
                    + transport_verdicts(live_df, "pesq_nb", a="webrtc", b="sip"))
        parts += [
            "<h2>Live on loopback: the same call over SIP/RTP, WebRTC and a WebSocket</h2>",
            f"<p>Real calls between the lab's caller and agent on 127.0.0.1 (PCMU everywhere), impaired by the "
            f"userspace relay: a small study of <b>n = {n} paired trials per cell</b> (each trial a different "
            "utterance of the corpus, talkers alternating; the same seed and utterance in every transport). "
            "Mean with its 95 % Student-t interval, per direction. Over TCP, loss becomes delay: the WebSocket "
            "loses nothing but its audio arrives late.</p>",
            summ.to_html(index=False, border=0),
            "<p>Paired comparisons (Student-t interval of the mean difference, paired t-test):</p><ul>"
            + "".join(f"<li>{html.escape(v)}</li>" for v in verdicts) + "</ul>",
        ]
    first = True
    for name, fig in figs.items():
        parts.append(f"<h2>{html.escape(fig.layout.title.text or name)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False))
        first = False
    parts.append("</body></html>")
    return "\n".join(parts)
