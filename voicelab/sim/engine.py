"""The offline media simulator: one call, sent through a channel model, as fast as the CPU.

::

    speech -> level (P.56) -> encode -> RTP packetize -> channel (loss, delay, jitter,
    bandwidth) -> jitter buffer -> decode / FEC / PLC -> speech out -> metrics

The simulator knows the exact ground truth of every frame: when it was captured, sent,
received and played. ``mouth_to_ear_true_ms`` is that truth; ``mouth_to_ear_ms`` is what
cross-correlation of sent and received audio measures, exactly as the live modes must
measure it. The two are reported side by side so the measurement can be checked.

Timeline (seconds, 0 = first input sample): frame ``i`` covers input samples
``[i*F, (i+1)*F)`` and is sent when its last sample has been captured,
``(i + 1) * frame_ms``. The playout clock ticks every ``frame_ms`` from the jitter
buffer's start time; slot ``k`` is written at output sample ``round(start * rate) + k*F``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__, audio, codecs, metrics
from ..audio.speechinput import SpeechInput, load_speech  # moved to the audio layer; re-exported  # noqa: F401
from ..errors import AudioError, MetricError, ParameterError
from ..net import Channel
from ..rtp import AdaptiveJitterBuffer, FixedJitterBuffer, Packetizer, overhead_bytes
from ..rtp.playout import render
from .scenario import Scenario, parse_jitter_buffer

__all__ = ["simulate_call", "Result", "load_speech", "talker_speech", "METRIC_NAMES"]

#: Metric names (ARCHITECTURE.md) every Result carries, in table order.
METRIC_NAMES = (
    "pesq_nb",
    "pesq_wb",
    "stoi",
    "mouth_to_ear_ms",
    "mouth_to_ear_true_ms",
    "loss_rate",
    "late_loss_rate",
    "playout_delay_ms",
    "r_factor",
    "mos_cqe",
    "bitrate_kbps_wire",
)

_IP_UDP_RTP = None  # computed lazily from voicelab.rtp.overhead_bytes


@dataclass
class Result:
    """What one simulated call produced.

    Attributes
    ----------
    scenario : Scenario
        What was simulated.
    metrics : dict
        Metric name -> value (see :data:`METRIC_NAMES`), plus bookkeeping such as
        ``codec``, ``speech_source`` and ``synthetic_speech``.
    reference : numpy.ndarray
        The sent speech (float, at ``sample_rate``), level-normalised.
    degraded : numpy.ndarray
        What the receiver played, aligned to ``reference`` by the measured delay.
    sample_rate : int
        Rate of ``reference`` and ``degraded`` in Hz (8000 or 16000).
    trace : pandas.DataFrame
        One row per frame: sequence number, send/arrival/playout times, outcome.
    played : numpy.ndarray or None
        What the receiver played, NOT aligned (its delay still in it), at ``sample_rate``;
        for chaining legs (:mod:`voicelab.sim.paths`).
    """

    scenario: Scenario
    metrics: dict[str, Any]
    reference: np.ndarray = field(repr=False)
    degraded: np.ndarray = field(repr=False)
    sample_rate: int
    trace: pd.DataFrame = field(repr=False)
    warnings: list[str] = field(default_factory=list)
    played: np.ndarray | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        # result.pesq_nb etc.
        m = self.__dict__.get("metrics")
        if m is not None and name in m:
            return m[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """Scenario and metrics as plain data."""
        return {"scenario": self.scenario.to_dict(), "metrics": dict(self.metrics), "warnings": list(self.warnings)}

    def to_json(self, *, indent: int | None = None) -> str:
        """Deterministic JSON: same scenario and seed -> byte-identical text."""
        flat = {"scenario": self.scenario.to_dict(), **self.metrics}
        if self.warnings:
            flat["warnings"] = list(self.warnings)
        return json.dumps(_jsonable(flat), sort_keys=True, indent=indent, allow_nan=False)

    def row(self) -> dict[str, Any]:
        """One tidy row: scenario parameters (flattened) and metrics."""
        row = self.scenario_row(self.scenario)
        row.update(self.metrics)
        return row

    @staticmethod
    def scenario_row(scenario: Scenario) -> dict[str, Any]:
        """A scenario flattened to table columns (``channel.loss_rate``, ...)."""
        row: dict[str, Any] = {}
        for k, v in scenario.to_dict().items():
            if k == "channel":
                row.update({f"channel.{ck}": cv for ck, cv in v.items()})
            elif k == "codec_params":
                row.update({f"codec_params.{ck}": cv for ck, cv in v.items()})
            else:
                row[k] = v
        return row

    def audio_pair(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(reference, degraded, sample_rate) for listening."""
        return self.reference, self.degraded, self.sample_rate


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if not math.isfinite(v) else round(v, 6)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def talker_speech(n: int, *, sample_rate: int = 16000) -> list[str]:
    """``n`` speech specs (``"corpus:ID"``) that take turns over the corpus' talkers.

    Use them as a sweep axis (``{"speech": talker_speech(3)}``) so that repeats differ in
    the talker and the utterance, not only in the network's random seed: PESQ varies
    more between talkers than between loss patterns.

    Parameters
    ----------
    n : int
        How many specs, >= 1. More than the corpus holds repeats it from the start.
    sample_rate : int
        Rate of the corpus to pick from (Hz).

    Returns
    -------
    list of str
        ``"corpus:ID"`` specs (:attr:`voicelab.audio.CorpusItem.speech`), one talker
        after another.

    Raises
    ------
    ParameterError
        ``n`` < 1.
    AudioError
        The corpus is empty.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"talker_speech: n must be an integer >= 1, got {n!r}")
    items = audio.corpus_items(sample_rate=sample_rate)
    if not items:
        raise AudioError("the speech corpus is empty")
    by_talker: dict[str, list] = {}
    for it in items:
        by_talker.setdefault(it.talker, []).append(it.speech)
    order, queues = [], [list(v) for v in by_talker.values()]
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return [order[k % len(order)] for k in range(n)]


# ------------------------------------------------------------------ simulator
def _make_codec(scenario: Scenario, *, loss_rate: float, warnings: list[str]) -> dict[str, Any]:
    """Codec parameters, with FEC planned the way a real sender would plan it."""
    params = dict(scenario.codec_params)
    if scenario.fec:
        probe = codecs.get(scenario.codec, **params)
        if probe.name == "opus":
            params.setdefault("fec", True)
            # Opus spends bits on LBRR only when it expects loss; a sender learns the
            # loss from RTCP. At least 1 % so that asking for FEC always gets FEC.
            params.setdefault("packet_loss_perc", max(1, int(round(100 * loss_rate))))
        else:
            warnings.append(f"fec: codec {probe.name} has no forward error correction; ignored")
    return params


def simulate_call(scenario: Scenario | None = None, /, *, quality: bool = True, **overrides: Any) -> Result:
    """Simulate one call in ``sim`` mode and measure it.

    Parameters
    ----------
    scenario : Scenario, optional
        What to simulate; keyword overrides are applied on top
        (``simulate_call(codec="opus", channel="wifi")``).
    quality : bool
        Compute PESQ and STOI (the costly part). False leaves them None, for
        benchmarks of the media path and for sweeps that only need delay and loss.

    Returns
    -------
    Result
        Metrics, reference and degraded audio, and the per-frame trace.

    Examples
    --------
    >>> from voicelab.sim import simulate_call
    >>> r = simulate_call(codec="pcmu", seed=1)      # doctest: +SKIP
    >>> round(r.pesq_nb, 2)                           # doctest: +SKIP
    4.4
    """
    if scenario is None:
        scenario = Scenario()
    elif not isinstance(scenario, Scenario):
        raise ParameterError(
            f"simulate_call() takes a Scenario (or keyword fields), got {type(scenario).__name__}"
        )
    if overrides:
        scenario = scenario.with_(**overrides)

    channel_cfg = scenario.channel
    warnings: list[str] = []
    codec_params = _make_codec(scenario, loss_rate=channel_cfg.expected_loss_rate, warnings=warnings)
    tx = codecs.get(scenario.codec, **codec_params)
    rx = codecs.get(scenario.codec, **codec_params)
    speech = load_speech(scenario)

    seeds = np.random.SeedSequence(scenario.seed).spawn(2)
    channel = Channel(channel_cfg, seed=np.random.default_rng(seeds[0]))
    rtp_rng = np.random.default_rng(seeds[1])

    rate = tx.sample_rate
    F = tx.frame_samples
    frame_s = tx.frame_ms / 1000.0
    lookahead = tx.lookahead_ms * rate / 1000.0

    # Sent speech at the codec's rate, padded with silence to flush the codec.
    x = audio.resample(speech.samples, speech.sample_rate, rate)
    n_speech = len(x)
    tail = int(math.ceil(lookahead / F)) + 2
    n_frames = int(math.ceil(n_speech / F)) + tail
    pcm = np.zeros(n_frames * F, dtype=np.int16)
    pcm[:n_speech] = audio.to_int16(x)

    pk = Packetizer(
        payload_type=tx.payload_type if tx.payload_type is not None else 96,
        clock_rate=tx.clock_rate,
        timestamp_increment=tx.timestamp_increment,
        rng=rtp_rng,
    )
    overhead = overhead_bytes(ip_version=4, srtp=False)
    dtx = bool(codec_params.get("dtx", False))

    # ---- send: encode, packetize, transmit through the channel
    seq_of = np.zeros(n_frames, dtype=np.int64)
    send_time = np.zeros(n_frames)
    size = np.zeros(n_frames, dtype=np.int64)
    sent = np.zeros(n_frames, dtype=bool)
    first_arrival = np.full(n_frames, np.nan)
    copies = np.zeros(n_frames, dtype=np.int64)
    events: list[tuple[float, int, int, Any]] = []
    skipped = 0
    ts_of_first_packet: int | None = None
    wire_bytes = 0
    for i in range(n_frames):
        payload = tx.encode(pcm[i * F : (i + 1) * F])
        send_time[i] = (i + 1) * frame_s
        if dtx and len(payload) <= 2:
            skipped += 1
            seq_of[i] = -1
            continue
        pkt = pk.packetize(payload, frames_skipped=skipped, marker=(skipped > 0 or i == 0))
        skipped = 0
        seq_of[i] = pkt.sequence_number
        if ts_of_first_packet is None:
            ts_of_first_packet = pkt.timestamp
        wire = pkt.wire_size + overhead - 12  # overhead_bytes includes the RTP header
        size[i] = wire
        sent[i] = True
        wire_bytes += wire
        arrivals = channel.transmit(float(send_time[i]), int(wire))
        copies[i] = len(arrivals)
        if arrivals:
            first_arrival[i] = min(arrivals)
        for j, t in enumerate(arrivals):
            events.append((float(t), i, j, pkt))
    events.sort(key=lambda e: (e[0], e[1], e[2]))

    # ---- receive: jitter buffer, decode, conceal
    kind, jb_params = parse_jitter_buffer(scenario.jitter_buffer)
    jb_cls = FixedJitterBuffer if kind == "fixed" else AdaptiveJitterBuffer
    jb = jb_cls(frame_ms=tx.frame_ms, clock_rate=tx.clock_rate, timestamp_increment=tx.timestamp_increment, **jb_params)

    # Per-frame ground truth: what the listener got in place of each frame.
    outcome = np.array(["dtx" if not s_ else "lost" for s_ in sent], dtype=object)
    played_slot = np.full(n_frames, -1, dtype=np.int64)
    played_time = np.full(n_frames, np.nan)

    if not events:
        raise ParameterError(
            "no packet reached the receiver: the channel lost everything "
            f"(loss_rate={channel_cfg.loss_rate:g}); nothing to measure"
        )
    # Slots are identified by RTP timestamp (the jitter buffer knows a missing slot's
    # timestamp even when it cannot know its sequence number).
    i_first = int(np.nonzero(sent)[0][0])
    inc = tx.timestamp_increment
    ts_to_frame = {(ts_of_first_packet + (i - i_first) * inc) % (1 << 32): i for i in range(n_frames)}
    t0, _, _, p0 = events[0]
    jb.push(p0, t0)
    ptr = 1
    start = jb.start_time()
    base = int(round(start * rate))
    out_chunks: list[np.ndarray] = []
    truth: list[float] = []
    fec_used = concealed = silent_inserted = 0
    last_index = int(np.max(np.nonzero(sent)[0]))
    max_slots = 2 * n_frames + int(4.0 / frame_s)
    k = 0
    done = False
    while not done and k < max_slots:
        t = start + k * frame_s
        # same tolerance as the jitter buffer's own "has it arrived" test
        while ptr < len(events) and events[ptr][0] <= t + 1e-9:
            jb.push(events[ptr][3], events[ptr][0])
            ptr += 1
        p = jb.pop(t)
        idx = ts_to_frame.get(p.timestamp) if p.timestamp is not None else None
        is_dtx = idx is not None and not sent[idx]
        frame, kind = render(p, rx, plc=scenario.plc, fec=scenario.fec, dtx=is_dtx)
        if kind == "fec":
            fec_used += 1
        elif kind == "concealed":
            concealed += 1
        elif kind == "silence" or (kind == "empty" and k > 0 and ptr < len(events)):
            silent_inserted += 1  # PLC off, or the buffer ran dry mid-call
        if idx is not None and kind in ("played", "fec", "concealed", "silence"):
            outcome[idx] = kind
            if p.kind == "skip" and idx > 0 and outcome[idx - 1] == "lost":
                outcome[idx - 1] = "dropped"  # accelerated away by the jitter buffer
        if idx is not None and p.kind in ("frame", "skip", "lost"):
            played_slot[idx] = k
            played_time[idx] = t
            if p.kind != "lost":
                truth.append(base + k * F - idx * F + lookahead)
            if idx >= last_index:
                done = True
        out_chunks.append(frame)
        k += 1
        if ptr >= len(events) and p.kind == "empty" and k > 1:
            done = True

    if k >= max_slots and not done:  # pragma: no cover - a guard against a stuck buffer
        warnings.append(f"jitter buffer: playout stopped after {k} slots with frames still pending")
    y = np.zeros(base + len(out_chunks) * F, dtype=np.float64)
    y[base:] = audio.to_float(np.concatenate(out_chunks))
    # A packet that did arrive, but after its slot was played (or never got a slot).
    late = sent & (copies > 0) & (outcome != "played") & (
        np.isnan(played_time) | (first_arrival > np.nan_to_num(played_time, nan=-np.inf))
    )

    stats = jb.stats
    truth_ms = np.asarray(truth) / rate * 1000.0
    true_delay_ms = float(np.median(truth_ms)) if truth else float("nan")
    true_min_ms = float(truth_ms.min()) if truth else float("nan")
    true_max_ms = float(truth_ms.max()) if truth else float("nan")

    # ---- measure like a live call: delay by cross-correlation, then quality.
    # The search window comes from what a live experimenter also knows (configured
    # delay, jitter, buffer size), never from the simulator's ground truth.
    jb_max_ms = jb_params.get("delay_ms", jb_params.get("max_delay_ms", 400.0))
    spread = 10.0 if channel_cfg.jitter_distribution == "pareto" else 6.0
    search_ms = 1000.0 + 2.0 * (channel_cfg.delay_ms + spread * channel_cfg.jitter_ms + jb_max_ms)
    if channel_cfg.bandwidth_kbps is not None:
        search_ms += 2000.0
    ref_codec_rate = x[:n_speech]
    est = audio.estimate_delay(ref_codec_rate, y, rate, max_delay_ms=search_ms, causal=True)
    deg = audio.compensate(y, est.delay_samples, n_speech)
    if est.confidence < 0.3:
        warnings.append(
            f"delay: low confidence ({est.confidence:.2f}) in the measured mouth-to-ear delay; "
            "PESQ, STOI and the E-model used that alignment"
        )
    if truth and not (true_min_ms - 1.0 <= est.delay_ms <= true_max_ms + 1.0):
        warnings.append(
            f"delay: measured {est.delay_ms:.1f} ms is outside the true range "
            f"{true_min_ms:.1f}..{true_max_ms:.1f} ms of this call"
        )

    if scenario.fec and rx.has_fec and fec_used == 0 and concealed > 0:
        warnings.append(
            "fec: no lost frame could be rebuilt from the next packet; libopus adds in-band FEC "
            "(LBRR) only above a bitrate that falls as packet_loss_perc rises (see docs/codecs.md), "
            "and a frame whose successor is lost too cannot be rebuilt"
        )
    if speech.synthetic:
        warnings.append(audio.SYNTHETIC_WARNING)
    ref_rate = speech.sample_rate
    ref = speech.samples
    deg_ref_rate = audio.resample(deg, rate, ref_rate)[: len(ref)]
    if len(deg_ref_rate) < len(ref):
        deg_ref_rate = np.concatenate([deg_ref_rate, np.zeros(len(ref) - len(deg_ref_rate))])
    pesq_nb = pesq_wb = stoi_v = None
    if quality:
        ref8 = audio.resample(ref, ref_rate, 8000)
        deg8 = audio.resample(deg_ref_rate, ref_rate, 8000)[: len(ref8)]
        pesq_nb = _safe_metric(lambda: metrics.pesq(ref8, deg8, 8000, mode="nb"), warnings, "pesq_nb")
        if ref_rate >= 16000:
            pesq_wb = _safe_metric(lambda: metrics.pesq(ref, deg_ref_rate, ref_rate, mode="wb"), warnings, "pesq_wb")
        stoi_v = _safe_metric(lambda: metrics.stoi(ref, deg_ref_rate, ref_rate), warnings, "stoi")

    n_sent = int(sent.sum())
    n_lost_net = int(np.sum(sent & (copies == 0)))
    loss_rate = n_lost_net / n_sent if n_sent else 0.0
    # What the listener missed: sent frames not played from their own packet and not
    # rebuilt by FEC (lost, late, dropped, concealed, silence). One mask feeds both the
    # E-model's Ppl and its BurstR.
    missed = sent & np.isin(outcome, ["played", "fec"], invert=True)
    eff_loss = float(missed.sum()) / max(n_sent, 1)
    burst_r = _burst_ratio(missed[sent])
    duration_s = n_frames * frame_s
    em = _emodel(tx, scenario, est.delay_ms, eff_loss, burst_r, warnings)

    m: dict[str, Any] = {
        "codec": tx.name,
        "bitrate_kbps": tx.bitrate / 1000.0,
        "wideband": bool(tx.wideband),
        "pesq_nb": pesq_nb,
        "pesq_wb": pesq_wb,
        "stoi": stoi_v,
        "mouth_to_ear_ms": float(est.delay_ms),
        "mouth_to_ear_true_ms": true_delay_ms,
        "mouth_to_ear_true_min_ms": true_min_ms,
        "mouth_to_ear_true_max_ms": true_max_ms,
        "delay_confidence": float(est.confidence),
        "loss_rate": loss_rate,
        "late_loss_rate": float(stats.late_loss_rate),
        "effective_loss_rate": eff_loss,
        "burst_ratio": burst_r,
        "playout_delay_ms": float(stats.playout_delay_ms),
        "concealed_frames": int(concealed),
        "fec_recovered_frames": int(fec_used),
        "silence_inserted_frames": int(silent_inserted),
        "dtx_frames": int(np.sum(~sent)),
        "late_frames": int(late.sum()),
        "r_factor": em[0],
        "mos_cqe": em[1],
        "emodel_ie": em[2],
        "emodel_bpl": em[3],
        "bitrate_kbps_wire": wire_bytes * 8 / duration_s / 1000.0,
        "frames": int(n_frames),
        "packets_sent": n_sent,
        "speech": speech.name,
        "speech_items": list(speech.items),
        "speech_talkers": list(speech.talkers),
        "speech_source": speech.source,
        "synthetic_speech": bool(speech.synthetic),
        "speech_duration_s": len(ref) / ref_rate,
        "voicelab_version": __version__,
    }
    if tx.name == "opus":
        from ..codecs.opus import opus_version

        m["codec_library"] = opus_version()
    if codec_params.get("packet_loss_perc") is not None:
        m["packet_loss_perc"] = codec_params.get("packet_loss_perc")
    trace = pd.DataFrame(
        {
            "frame": np.arange(n_frames),
            "sequence_number": seq_of,
            "send_time_s": send_time,
            "size_bytes": size,
            "sent": sent,
            "copies": copies,
            "arrival_time_s": first_arrival,
            "playout_slot": played_slot,
            "playout_time_s": played_time,
            "outcome": outcome.astype(str),
            "late": late,
        }
    )
    if ref_rate != 8000 and ref_rate != 16000:  # pragma: no cover - load_speech guarantees
        raise AudioError(f"internal: reference rate {ref_rate}")
    played = y if rate == ref_rate else audio.resample(y, rate, ref_rate)
    return Result(scenario, m, np.array(ref), deg_ref_rate, ref_rate, trace, warnings, played=played)


def _safe_metric(fn, warnings: list[str], name: str) -> float | None:
    try:
        return float(fn())
    except MetricError as exc:
        warnings.append(f"{name}: {exc}")
        return None


def _burst_ratio(bad: np.ndarray) -> float:
    """BurstR (G.107) measured from a loss pattern: mean observed burst length divided
    by the mean burst length random loss at the same rate would give, 1/(1-p)."""
    n = len(bad)
    if n == 0 or not bad.any():
        return 1.0
    p = float(bad.mean())
    if p >= 1.0:
        return 1.0
    edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
    bursts = int(np.sum(edges == 1))
    mean_burst = float(bad.sum()) / bursts
    return max(1.0, mean_burst * (1.0 - p))


def _emodel(codec: Any, scenario: Scenario, delay_ms: float, loss: float, burst_r: float, warnings: list[str]):
    try:
        ie, bpl, _source = metrics.ie_bpl(
            codec.name, bitrate=codec.bitrate, plc=scenario.plc, wideband=bool(codec.wideband)
        )
        res = metrics.r_factor(
            delay_ms=delay_ms,
            loss_rate=loss,
            burst_ratio=burst_r,
            ie=ie,
            bpl=bpl,
            wideband=bool(codec.wideband),
        )
    except ParameterError as exc:
        warnings.append(f"e-model: {exc}")
        return None, None, None, None
    return float(res.r_factor), float(res.mos_cqe), float(ie), float(bpl)
