"""The published claims about voice-agent transports, each put to a measured test.

Guidance on voice agents repeats a handful of claims. Each function here runs the
experiment that tests one of them **as a study** (repeats over the corpus's talkers and
utterances, Student-t intervals, paired comparisons where arms are compared) and returns a
:class:`ClaimResult`: the table, the numbers that decide, n, the conditions, and a verdict
in three words: ``holds``, ``holds only when ...`` or ``does not hold here``.

The claims (as they are usually stated):

=====================  =================================================================
``transport_delay``    "WebRTC adds 20-80 ms of transport delay; SIP 50-150 ms depending on
                       carrier and codec"
``transport_delta``    "the transport delta is usually below 50 ms" (against STT/LLM/TTS:
                       the turn-latency part needs the agent pipeline, see chapter 7)
``transcoding``        "transcoding adds latency and can degrade quality"
``opus_bitrate``       "Opus at 16-24 kbit/s is standard" (i.e. enough for voice)
``codec_vs_protocol``  "codec choice matters more than protocol"
``sbc_for_nat``        "SIP needs an SBC or media proxy for NAT at scale"
``cost``               "carrier per-minute vs TURN per-GB costs"
=====================  =================================================================

Quick mode (``n`` small, short calls) is for CI and a first look; a claim's verdict in a
paper should come from the full run (``n`` >= 10 per arm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import ParameterError

__all__ = ["ClaimResult", "CLAIMS", "transport_delay", "transport_delta", "transcoding", "opus_bitrate",
           "codec_vs_protocol", "sbc_for_nat", "cost", "turn_shares", "tandem_wer_summary", "path_turn_latency"]


@dataclass
class ClaimResult:
    """What testing one claim found.

    Attributes
    ----------
    claim : str
        The claim as it is usually stated.
    verdict : str
        ``"holds"``, ``"holds only when ..."`` or ``"does not hold here"`` (with the condition).
    evidence : list of str
        The numbers that decide, one line each (means with intervals, n, paired verdicts).
    table : pandas.DataFrame
        The study's summary (or raw) table.
    n : int
        Trials per arm.
    conditions : str
        Where it was measured (mode, network, codec, machine caveats).
    """

    claim: str
    verdict: str
    evidence: list[str]
    table: pd.DataFrame = field(repr=False)
    n: int
    conditions: str

    def row(self) -> dict[str, Any]:
        return {"claim": self.claim, "verdict": self.verdict, "n": self.n, "evidence": " | ".join(self.evidence),
                "conditions": self.conditions}


def _ci_text(s: pd.DataFrame, unit: str = "", digits: int = 1) -> str:
    r = s.iloc[0]
    if pd.isna(r["ci_low"]):
        return f"{r['mean']:.{digits}f}{unit} (n = {int(r['n'])}, no interval)"
    return f"{r['mean']:.{digits}f}{unit} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}] (n = {int(r['n'])})"


def _iv(low: float | None, high: float | None, fmt: str = ".1f") -> str:
    return "no interval" if low is None or high is None else f"[{low:{fmt}}, {high:{fmt}}]"


def _off_loop(fn: Any, /, *args: Any, **kw: Any) -> Any:
    """Call ``fn`` (which runs its own event loops) from plain code or from a notebook cell."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args, **kw)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(fn, *args, **kw).result()


def _indicative(verdict: str, n: int) -> str:
    """Small studies say so in their verdict."""
    return verdict if n >= 5 else f"{verdict} (indicative only at n = {n}; run n >= 10 for a paper)"


def _n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ParameterError(f"n (trials per arm) must be an integer >= 2, got {n!r}")
    return int(n)


def _speeches(n: int) -> list[str]:
    from .audio import corpus_items

    by_talker: dict[str, list] = {}
    for it in corpus_items(sample_rate=16000):
        by_talker.setdefault(it.talker, []).append(it.speech)
    out, queues = [], [list(v) for v in by_talker.values()]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return [out[i % len(out)] for i in range(n)]


# ---------------------------------------------------------------------------------------
def transport_delay(*, n: int = 3, seconds: float = 3.0, include_pstn: bool = True) -> ClaimResult:
    """"WebRTC 20-80 ms transport, SIP 50-150 ms depending on carrier and codec".

    One-way mouth-to-ear delay of live loopback calls over WebRTC (Opus) and SIP (PCMU) on a
    clean path and on a WAN-like path (20 ms one way, 5 ms jitter), n paired trials each
    (different utterances); and the phone side of SIP calls from the PSTN presets (sim,
    hop by hop) plus the measured trunk leg.
    """
    from .compare import compare_transports, summarize_transports
    from .net import ChannelConfig

    n = _n(n)
    conds = {"clean": None, "wan 20 ms": ChannelConfig(delay_ms=20.0, jitter_ms=5.0)}
    df = compare_transports(transports=("sip", "webrtc"), conditions=conds, codec_for={"sip": "pcmu", "webrtc": "opus"},
                            seconds=seconds, seed=7, repeats=n, speech=_speeches(n))
    summ = summarize_transports(df, metrics=("mouth_to_ear_ms",))
    ev = []
    webrtc_in = True
    for cond in conds:
        for t in ("webrtc", "sip"):
            s = summ[(summ["condition"] == cond) & (summ["transport"] == t) & (summ["direction"] == "caller_to_agent")]
            ev.append(f"{t} {cond}: {_ci_text(s, ' ms')}")
            if t == "webrtc":
                webrtc_in &= bool(20.0 <= s.iloc[0]["mean"] <= 80.0 + 60.0)  # 60 ms of it is the lab's own buffer
    pstn_rows = []
    if include_pstn:
        from .sim.paths import PSTN_PRESETS, simulate_path

        sip_live = float(summ[(summ["condition"] == "clean") & (summ["transport"] == "sip")
                              & (summ["direction"] == "caller_to_agent")]["mean"].iloc[0])
        for name in PSTN_PRESETS:
            r = simulate_path(name, seed=1, max_speech_s=seconds, drop_gateway=True, open_end=True)
            total = r.mouth_to_ear_ms + sip_live
            pstn_rows.append({"path": f"{name} + trunk", "phone_side_ms": r.mouth_to_ear_ms, "total_ms": total})
            ev.append(f"SIP from {name}: {total:.0f} ms (phone side {r.mouth_to_ear_ms:.0f} ms modelled/sim + live leg)")
    totals = [p["total_ms"] for p in pstn_rows]
    in_band = [50.0 <= t <= 150.0 for t in totals]
    if totals and all(in_band):
        verdict = "holds"
    elif totals and any(in_band):
        verdict = ("holds only when the phone side is national: international or tandem-coded paths exceed 150 ms "
                   "(and WebRTC's figure includes the receiver's jitter buffer, which the lab sets)")
    else:
        verdict = "does not hold here"
    table = pd.concat([summ, pd.DataFrame(pstn_rows)], ignore_index=True, sort=False)
    return ClaimResult(CLAIMS["transport_delay"], _indicative(verdict, n), ev, table, n,
                       f"live loopback calls ({seconds:g} s, jitter buffer fixed:60 on both ends) + PSTN presets in sim")


def transport_delta(*, n: int = 3, seconds: float = 3.0, pipeline_ms: float | None = None) -> ClaimResult:
    """"The transport delta is usually below 50 ms": SIP vs WebRTC vs WebSocket, same codec (PCMU),
    clean and with 2 % loss + 30 ms jitter, paired by trial.

    ``pipeline_ms``: a measured STT+LLM+TTS time to compare against (chapter 7's turn
    breakdown); without it the verdict only speaks about the transport delta itself.
    """
    from .compare import compare_transports, summarize_transports, transport_verdicts

    n = _n(n)
    df = compare_transports(seconds=seconds, seed=11, repeats=n, speech=_speeches(n))
    summ = summarize_transports(df, metrics=("mouth_to_ear_ms",))
    ev = transport_verdicts(df, "mouth_to_ear_ms", a="webrtc", b="sip", unit="ms") \
        + transport_verdicts(df, "mouth_to_ear_ms", a="ws", b="sip", unit="ms")
    deltas = []
    for (cond, d), g in df.groupby(["condition", "direction"]):
        m = g.groupby("transport")["mouth_to_ear_ms"].mean()
        deltas.append((cond, float(m.max() - m.min())))
    worst = max(deltas, key=lambda x: x[1])
    clean_max = max(v for c, v in deltas if c == "clean")
    if worst[1] < 50.0:
        verdict = "holds"
    elif clean_max < 50.0:
        verdict = (f"holds only when the network is clean: with loss the WebSocket (TCP) path is "
                   f"{worst[1]:.0f} ms slower on average ({worst[0]})")
    else:
        verdict = "does not hold here"
    ev.append(f"largest mean delta between transports: {worst[1]:.1f} ms ({worst[0]}); clean: {clean_max:.1f} ms")
    if pipeline_ms is not None:
        ev.append(f"against a measured STT+LLM+TTS time of {pipeline_ms:.0f} ms: {100 * worst[1] / pipeline_ms:.0f} %")
    return ClaimResult(CLAIMS["transport_delta"], _indicative(verdict, n), ev, summ, n,
                       f"live loopback, PCMU on every transport, {seconds:g} s calls, fixed:60 buffers")


#: the breakdown parts of a turn (voicelab.turns) that belong to the transport, the rest being the agent
TRANSPORT_PARTS = ("caller_packetization", "network_up", "agent_jitter_buffer", "network_down", "caller_jitter_buffer",
                   "codec_lookahead_down")
AGENT_PARTS = ("endpointing_wait", "asr_final", "llm_first_token", "tts_first_audio", "agent_send_queue")


def turn_shares(*, turns: int = 3, transport: str = "sip", seed: int = 0) -> dict[str, Any]:
    """A conversation with the lab's pipeline agent on the virtual network (virtual clock): how a
    turn splits into transport and agent (endpointing, recognition, response, synthesis).

    Returns
    -------
    dict
        ``table`` (one row per turn: ``total_ms``, ``transport_ms``, ``agent_ms``),
        ``transport_ms`` / ``agent_ms`` / ``total_ms`` medians, ``n``. The language model's
        time is modelled (``llm_modelled``) and recognition costs no virtual time.
    """
    from .experiments.run import run_sync
    from .net.vclock import run_virtual_in_thread
    from .turns import pipeline_call

    # its own virtual-clock loop in a thread: works from plain scripts and from notebook cells alike
    r = run_sync(lambda: run_virtual_in_thread(pipeline_call(transport=transport, turns=int(turns), network="virtual",
                                                             seed=seed)))
    rows = []
    for t in r["turns"]:
        if t.get("total_ms") is None:
            continue
        tr = sum(float(t.get(f"{k}_ms") or 0.0) for k in TRANSPORT_PARTS)
        ag = sum(float(t.get(f"{k}_ms") or 0.0) for k in AGENT_PARTS)
        rows.append({"total_ms": float(t["total_ms"]), "transport_ms": tr, "agent_ms": ag})
    table = pd.DataFrame(rows)
    if table.empty:
        raise ParameterError("no turn was answered: nothing to split")
    return {"table": table, "n": len(table), "total_ms": float(table["total_ms"].median()),
            "transport_ms": float(table["transport_ms"].median()), "agent_ms": float(table["agent_ms"].median()),
            "llm_modelled": bool(r.get("turn.llm_modelled", True))}


def transcoding(*, n: int = 3, seconds: float = 3.0, wer_utterances: int = 0,
                wer_chains: Sequence[str] | None = None) -> ClaimResult:
    """"Transcoding adds latency and can degrade quality": the gateway transcoding (Opus <-> G.711)
    vs passing G.711 through, n calls each; and tandem chains in sim over the corpus.

    ``wer_utterances`` > 0 also measures what the tandems cost the agent's recogniser: its word
    error rate (:func:`voicelab.sim.paths.tandem_wer`, PocketSphinx) on that many utterances
    with transcripts, after each chain of ``wer_chains`` (default
    :data:`voicelab.sim.paths.WER_CHAINS`), paired by utterance against G.711 alone.
    """
    from .experiments.stats import summarize
    from .hybrid import path_call
    from .sim.paths import tandem_table

    n = _n(n)
    rows = []
    for k, sp in enumerate(_speeches(n)):
        for codec in ("opus", "pcmu"):
            g = path_call("browser+gateway+sip", seconds=seconds, codec=codec, speech=sp, jitter_buffer="fixed:60")
            rows.append({"mode": "transcoding" if codec == "opus" else "pass-through", "trial": k,
                         "delay_ms": g["browser_to_agent.total_ms"], "pesq_nb": g["browser_to_agent.pesq_nb"]})
    live = pd.DataFrame(rows)
    summ = summarize(live, by=["mode"], metrics=["delay_ms", "pesq_nb"])
    tan = tandem_table(["G.711", "Opus -> G.711 -> Opus (gateway both ways)", "AMR-NB -> G.711 -> G.729 -> G.711"],
                       n_items=n, max_speech_s=seconds)
    tsum = summarize(tan, by=["chain"], metrics=["pesq_nb"])
    from .experiments.stats import paired_difference

    tr = live[live["mode"] == "transcoding"].set_index("trial")
    pt = live[live["mode"] == "pass-through"].set_index("trial")
    dd = paired_difference(tr["delay_ms"], pt["delay_ms"])
    ev = [f"gateway delay, transcoding - pass-through: {dd.mean:.1f} ms {_iv(dd.low, dd.high)}, n = {dd.n}"]
    for m in ("transcoding", "pass-through"):
        ev.append(f"{m}: PESQ-NB {_ci_text(summ[(summ['mode'] == m) & (summ['metric'] == 'pesq_nb')], '', 2)}")
    for c in tsum["chain"]:
        ev.append(f"sim tandem {c}: PESQ-NB {_ci_text(tsum[tsum['chain'] == c], '', 2)}")
    g711 = float(tsum[tsum["chain"] == "G.711"]["mean"].iloc[0])
    gw = float(tsum[tsum["chain"].str.startswith("Opus")]["mean"].iloc[0])
    worst = float(tsum[tsum["chain"].str.startswith("AMR")]["mean"].iloc[0])
    adds_latency = dd.low is not None and dd.low > 0
    wer_note, wer_table = "", None
    if wer_utterances:
        wer_table = tandem_wer_summary(wer_utterances, wer_chains)
        ev += wer_table.attrs["evidence"]
        wer_note = wer_table.attrs["note"]
    if adds_latency and g711 - worst > 0.3:
        verdict = (f"holds: the transcoding gateway adds {dd.mean:.0f} ms (its jitter buffer and re-packetization, "
                   f"not its 1 ms of processing); quality drops by {g711 - gw:.2f} PESQ-NB for Opus around G.711, "
                   f"by {g711 - worst:.2f} for an AMR/G.729 tandem")
    elif adds_latency:
        verdict = "holds only for latency: the quality cost is within the run-to-run spread here"
    else:
        verdict = "does not hold here"
    verdict += wer_note
    tables = [summ, tsum] + ([wer_table] if wer_table is not None else [])
    return ClaimResult(CLAIMS["transcoding"], _indicative(verdict, n), ev, pd.concat(tables, ignore_index=True, sort=False), n,
                       "live loopback WebRTC -> lab gateway -> SIP agent (fixed:60 buffers); tandem chains in sim"
                       + ("; WER: PocketSphinx (the lab's agent) offline on the CMU ARCTIC items" if wer_utterances else ""))


def tandem_wer_summary(n_utterances: int = 6, chains: Sequence[str] | None = None) -> pd.DataFrame:
    """The agent's WER after each tandem chain, summarised with intervals and paired differences.

    Returns
    -------
    pandas.DataFrame
        One row per chain: ``chain``, ``metric`` (``wer``), ``n``, ``mean``, ``ci_low``,
        ``ci_high``, ``words``, ``word_errors``, ``pooled_wer`` and the paired difference to
        the chain's first codec alone (``baseline``: Opus for Opus chains, else G.711;
        ``vs_baseline``, ``vs_baseline_low``, ``vs_baseline_high``). ``attrs["evidence"]``:
        lines for a verdict; ``attrs["note"]``: the verdict's clause; ``attrs["raw"]``: the
        per-utterance rows.
    """
    from .experiments.stats import paired_difference, summarize
    from .sim.paths import WER_CHAINS, tandem_wer

    if isinstance(n_utterances, bool) or not isinstance(n_utterances, int) or n_utterances < 2:
        raise ParameterError(f"wer_utterances must be an integer >= 2, got {n_utterances!r}")
    names = list(chains or WER_CHAINS)
    if "G.711" not in names:
        names = ["G.711"] + names
    raw = tandem_wer(names, n_utterances=n_utterances, reference=False)
    summ = summarize(raw, by=["chain"], metrics=["wer"])
    rows, ev = [], []
    for c in names:
        g = raw[raw["chain"] == c]
        s = summ[summ["chain"] == c].iloc[0]
        # a chain is compared with its first codec alone: Opus chains with Opus, the others with G.711
        ref = "Opus" if c.startswith("Opus") and "Opus" in names else "G.711"
        d = None
        if c != ref:
            d = paired_difference(g.set_index("utterance")["wer"], raw[raw["chain"] == ref].set_index("utterance")["wer"])
        rows.append({"chain": c, "metric": "wer", "n": int(s["n"]), "mean": float(s["mean"]),
                     "ci_low": s["ci_low"], "ci_high": s["ci_high"], "words": int(g["words"].sum()),
                     "word_errors": int(g["word_errors"].sum()),
                     "pooled_wer": float(g["word_errors"].sum() / max(g["words"].sum(), 1)), "baseline": ref,
                     "vs_baseline": None if d is None else d.mean, "vs_baseline_low": None if d is None else d.low,
                     "vs_baseline_high": None if d is None else d.high})
        line = (f"agent WER after {c}: {s['mean']:.2f} {_iv(s['ci_low'], s['ci_high'], '.2f')} "
                f"(n = {int(s['n'])} utterances, {int(g['word_errors'].sum())}/{int(g['words'].sum())} words)")
        if d is not None:
            line += f"; minus {ref} alone (paired): {d.mean:+.2f} {_iv(d.low, d.high, '+.2f')}"
        ev.append(line)
    out = pd.DataFrame(rows)
    worse = [f"{r['chain']} (+{r['vs_baseline']:.2f} against {r['baseline']} alone)" for r in rows
             if r["vs_baseline_low"] is not None and not pd.isna(r["vs_baseline_low"]) and r["vs_baseline_low"] > 0]
    if worse:
        note = (f"; the agent's recogniser loses words after {', '.join(worse)}, while the other tandems' extra WER "
                "is not resolved at this n (the recogniser is near its floor on any 8 kHz audio)")
    else:
        g711 = next(r for r in rows if r["chain"] == "G.711")["mean"]
        note = (f"; the recogniser (PocketSphinx, a 16 kHz model) is near its floor on any 8 kHz chain (G.711 alone: "
                f"WER {g711:.2f}): no tandem's extra WER is resolved at this n")
    out.attrs.update(evidence=ev, note=note, raw=raw)
    return out


def path_turn_latency(*, turns: int = 6, paths: Sequence[str] = ("sip", "pstn-local-landline+trunk",
                                                                "pstn-national-mobile+trunk", "pstn-international+trunk"),
                      seed: int = 0) -> pd.DataFrame:
    """The agent's turn latency over each path, measured end to end on the virtual clock.

    Each path runs ``turns`` conversation turns with the lab's pipeline agent
    (:func:`voicelab.hybrid.path_turns`: the phone side in sim, its one-way delay on the
    caller's access link, the trunk leg, the agent and the caller's ear on the virtual clock;
    ``"sip"`` is the same call without a phone side).

    Returns
    -------
    pandas.DataFrame
        One row per path: ``path``, ``n`` (answered turns), ``turn_ms`` mean and its 95 %
        interval (``turn_ci_low``, ``turn_ci_high``), ``turn_p50_ms``, ``one_way_ms`` (mouth
        to the agent's ear: caller packetization + network incl. the phone side + the agent's
        buffer, mean), ``within_g114`` (one way <= 150 ms), ``phone_side_ms``, ``wer``
        (pooled), ``deterministic``.
    """
    from .experiments.stats import summarize
    from .hybrid import G114_BUDGET_MS, path_turns

    rows = []
    for p in paths:
        r = path_turns(p, turns=int(turns), seed=seed)
        recs = pd.DataFrame([t for t in r["turns"] if t.get("total_ms") is not None])
        if recs.empty:
            rows.append({"path": p, "n": 0})
            continue
        recs["one_way_ms"] = recs["caller_packetization_ms"] + recs["network_up_ms"] + recs["agent_jitter_buffer_ms"]
        s = summarize(recs.assign(total_ms=recs["total_ms"].astype(float)), metrics=["total_ms"]).iloc[0]
        one_way = float(recs["one_way_ms"].mean())
        rows.append({"path": p, "n": int(s["n"]), "turn_ms": float(s["mean"]), "turn_ci_low": s["ci_low"],
                     "turn_ci_high": s["ci_high"], "turn_p50_ms": float(recs["total_ms"].median()),
                     "one_way_ms": one_way, "g114_budget_ms": G114_BUDGET_MS, "within_g114": one_way <= G114_BUDGET_MS,
                     "phone_side_ms": float(r["phone_side_ms"]), "endpointing_ms": float(recs["endpointing_wait_ms"].mean()),
                     "wer": r["turn.wer"], "deterministic": bool(r["deterministic"])})
    return pd.DataFrame(rows)


def opus_bitrate(*, n: int = 3, seconds: float = 4.0, bitrates: Sequence[int] = (8000, 12000, 16000, 24000, 32000, 48000),
                 loss_rate: float = 0.0) -> ClaimResult:
    """"Opus at 16-24 kbit/s is standard": PESQ-WB against bit rate in sim, n paired trials over talkers."""
    from .experiments import Scenario, Study
    from .experiments.stats import paired_difference

    n = _n(n)
    base = Scenario(mode="sim", codec="opus", seconds=float(seconds), uplink={"loss_rate": float(loss_rate)},
                    downlink={"loss_rate": float(loss_rate)})
    st = Study(base, grid={"codec_params.bitrate": list(bitrates)}, repeats=n, talkers="corpus", seed=3, name="opus-bitrate")
    df = st.run(progress=False)
    d = df[df["direction"] == "caller_to_agent"]
    summ = st.summary(d, metrics=["pesq_wb"])
    col = "grid.codec_params.bitrate"
    ev = []
    for b in bitrates:
        s = summ[summ[col] == b] if col in summ else summ[summ[col.replace("grid.", "")] == b]
        ev.append(f"{b / 1000:g} kbit/s: PESQ-WB {_ci_text(s, '', 2)}")
    top = d[d[col] == max(bitrates)].set_index("repeat")["pesq_wb"]
    verdict_parts = []
    ok = True
    for b in (16000, 24000):
        if b in bitrates:
            x = d[d[col] == b].set_index("repeat")["pesq_wb"]
            pdiff = paired_difference(top, x)
            ev.append(f"{max(bitrates) / 1000:g}k - {b / 1000:g}k: {pdiff.mean:+.2f} PESQ-WB "
                      f"{_iv(pdiff.low, pdiff.high, '+.2f')}, n = {pdiff.n}")
            verdict_parts.append((b, pdiff.mean))
            ok &= pdiff.mean < 0.3
    low = d[d[col] == min(bitrates)].set_index("repeat")["pesq_wb"]
    gap_low = float(top.mean() - low.mean())
    if ok:
        verdict = (f"holds: 16-24 kbit/s is within 0.3 PESQ-WB of {max(bitrates) // 1000} kbit/s on clean speech "
                   f"(while {min(bitrates) // 1000} kbit/s is {gap_low:.2f} below)")
    else:
        verdict = "holds only at 24 kbit/s: 16 kbit/s loses more than 0.3 PESQ-WB here"
    return ClaimResult(CLAIMS["opus_bitrate"], _indicative(verdict, n), ev, summ, n,
                       f"sim, lab Opus (libopus), {seconds:g} s utterances, loss {loss_rate:g}")


def codec_vs_protocol(*, n: int = 3, seconds: float = 3.0) -> ClaimResult:
    """"Codec choice matters more than protocol": the spread of PESQ across codecs (sim, same path)
    against the spread across transports (live, same codec), each with n trials."""
    from .compare import compare_transports
    from .experiments import Scenario, Study
    from .experiments.stats import summarize

    n = _n(n)
    st = Study(Scenario(mode="sim", seconds=float(seconds)),
               grid={"codec": ["pcmu", "amr-nb", "g722", "opus"]}, repeats=n, talkers="corpus", seed=5, name="codecs")
    cdf = st.run(progress=False)
    cdf = cdf[cdf["direction"] == "caller_to_agent"]
    cs = st.summary(cdf, metrics=["pesq_wb"])
    tdf = compare_transports(conditions={"clean": None}, seconds=seconds, seed=5, repeats=n, speech=_speeches(n))
    tdf = tdf[tdf["direction"] == "caller_to_agent"]
    ts = summarize(tdf, by=["transport"], metrics=["pesq_wb"])
    codec_range = float(cs["mean"].max() - cs["mean"].min())
    transport_range = float(ts["mean"].max() - ts["mean"].min())
    ev = [f"PESQ-WB across codecs (sim, clean): range of means {codec_range:.2f}",
          f"PESQ-WB across transports (live, PCMU, clean): range of means {transport_range:.2f}"]
    ev += [f"  {r[cs.columns[0]]}: {r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for _, r in cs.iterrows()]
    ev += [f"  {r['transport']}: {r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for _, r in ts.iterrows()]
    if codec_range > 2 * transport_range:
        verdict = ("holds on a clean network: codecs spread PESQ-WB over "
                   f"{codec_range:.2f}, transports over {transport_range:.2f} (with loss, TCP's delay makes the "
                   "transport matter too: see transport_delta)")
    else:
        verdict = "does not hold here"
    return ClaimResult(CLAIMS["codec_vs_protocol"], _indicative(verdict, n), ev, pd.concat([cs, ts], ignore_index=True, sort=False), n,
                       "codecs in sim, transports live on loopback, clean network")


def sbc_for_nat(*, presets: Sequence[str] = ("open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"),
                seconds: float = 1.0) -> ClaimResult:
    """"SIP needs an SBC or media proxy for NAT": plain SIP vs SIP through a media relay at the agent's
    edge, every caller x agent NAT pair, on the virtual network in virtual time."""
    from .natmatrix import nat_matrix

    cells = _off_loop(nat_matrix, presets=list(presets), methods=["sip", "sip-comedia", "sip-relay"], seconds=seconds)
    df = pd.DataFrame(cells)
    df["both_ways"] = df["caller_to_agent"] & df["agent_to_caller"]
    by = df.groupby("method")["both_ways"].agg(["sum", "count"]).reset_index()
    ev = [f"{r['method']}: audio both ways in {int(r['sum'])} of {int(r['count'])} NAT pairs" for _, r in by.iterrows()]
    plain = by.set_index("method").loc["sip"]
    relay = by.set_index("method").loc["sip-relay"]
    if relay["sum"] == relay["count"] and plain["sum"] < plain["count"]:
        verdict = (f"holds: plain SIP gets audio both ways in {int(plain['sum'])} of {int(plain['count'])} NAT pairs, "
                   "a media relay (SBC-style anchor) in all; comedia latching at a public agent helps only when the "
                   "agent itself is not behind NAT")
    else:
        verdict = "does not hold here"
    return ClaimResult(CLAIMS["sbc_for_nat"], verdict, ev, df, 1,
                       "vnet, RFC 4787 NAT presets, virtual time: deterministic, one call per cell is the whole answer")


def cost(*, prices: Any = None, relay_fraction: float = 0.2) -> ClaimResult:
    """"Carrier per-minute vs TURN per-GB costs": cost per 1,000 minutes per path from wire bit
    rates and prices given as inputs (default: the labelled example prices); the break-even TURN
    price at which relayed WebRTC costs as much as the carrier."""
    from .cost import EXAMPLE_PRICES, PATHS, cost_table

    prices = prices or EXAMPLE_PRICES
    t = cost_table(prices)
    phone = float(t[t["path"].str.startswith("phone: carrier + SIP trunk, G.711")]["total"].iloc[0])
    turn = t[t["path"] == "browser: WebRTC Opus 24k, via TURN"].iloc[0]
    gb = float(turn["gb_per_1000_min"])
    breakeven = (phone - float(turn["egress"])) / gb if gb else float("nan")
    ev = [f"{r['path']}: {r['total']:.3f} per 1,000 min ({r['wire_kbps']:.1f} kbit/s each way)" for _, r in t.iterrows()]
    ev.append(f"TURN price per GB at which relayed Opus 24k costs as much as the G.711 carrier path: {breakeven:.2f}")
    verdict = (f"holds only as a comparison of inputs: with {prices.label}, relayed WebRTC costs "
               f"{float(turn['total']):.3f} vs the carrier's {phone:.3f} per 1,000 min; relayed WebRTC would cost as much "
               f"only at {breakeven:.2f} per GB of TURN traffic")
    return ClaimResult(CLAIMS["cost"], verdict, ev, t, 1, f"prices: {prices.label}; nominal wire bit rates")


CLAIMS = {
    "transport_delay": "WebRTC adds 20-80 ms of transport delay; SIP 50-150 ms depending on carrier and codec",
    "transport_delta": "The transport delta is usually below 50 ms (against STT, LLM and TTS)",
    "transcoding": "Transcoding adds latency and can degrade quality",
    "opus_bitrate": "Opus at 16-24 kbit/s is standard for voice",
    "codec_vs_protocol": "Codec choice matters more than protocol",
    "sbc_for_nat": "SIP needs an SBC or media proxy for NAT at scale",
    "cost": "Carrier per-minute vs TURN per-GB costs decide the economics",
}
