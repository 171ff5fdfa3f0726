"""The same call over SIP/RTP, WebRTC and a WebSocket, row by row; an Opus bit-rate sweep.

The lab has three live transports that carry one speech signal between its caller and its
agent on loopback: :func:`voicelab.calls.sip_call` (SIP + RTP over UDP),
:func:`voicelab.webrtc.call.webrtc_call` (ICE + DTLS-SRTP, aiortc with the lab's media)
and :func:`voicelab.wsmedia.live.ws_call` (JSON media messages over one WebSocket, i.e.
TCP). All three measure a direction the same way (both ends on one loop clock, PESQ of
what was played against what was sent), so their results fit in one table:

* :func:`compare_transports` runs each transport under each network condition and
  returns one row per (transport, condition, direction);
* :func:`opus_bitrate_sweep` runs WebRTC calls with the lab's Opus encoder at several
  bit rates and returns PESQ next to the payload and wire bit rates.

This is an orchestration layer (like :mod:`voicelab.calls`): it runs live calls on
sockets, so it drives an event loop. Each public function comes in two forms: a
coroutine (``*_async``) for code that already runs in a loop, and a plain function
that runs the coroutine on a fresh loop (in a worker thread when the calling thread
already has a running loop, as a Jupyter kernel does). No library does this
bookkeeping for us; it is a few lines.

The impairment of a condition is applied by the transports' own userspace relays:
:class:`voicelab.net.relay.UdpRelay` for SIP and WebRTC (every datagram, so ICE checks,
DTLS and RTCP too), :class:`voicelab.net.tcprelay.TcpRelay` for the WebSocket (loss
there becomes retransmission delay, never lost audio). The same ``seed`` gives every
transport the same impairment generator.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Any, Mapping, Sequence

import pandas as pd

from .errors import ParameterError, VoicelabError
from .experiments.run import run_sync  # re-exported: the lab's one way to run a coroutine from sync code
from .net import ChannelConfig

__all__ = [
    "summarize_transports",
    "transport_verdicts",
    "TRANSPORTS",
    "DEFAULT_CONDITIONS",
    "DEFAULT_CODECS",
    "COMPARE_COLUMNS",
    "SWEEP_COLUMNS",
    "DIRECTIONS",
    "compare_transports",
    "compare_transports_async",
    "opus_bitrate_sweep",
    "opus_bitrate_sweep_async",
    "loopback_delay_note",
    "run_sync",
]

#: The transports :func:`compare_transports` knows.
TRANSPORTS = ("sip", "webrtc", "ws")

#: The two conditions of chapter 5: a clean loopback, and 2 % random loss with 30 ms of
#: jitter on 20 ms of one-way delay (both directions).
DEFAULT_CONDITIONS: dict[str, ChannelConfig | None] = {
    "clean": None,
    "2% loss + 30 ms jitter": ChannelConfig(loss_rate=0.02, jitter_ms=30.0, delay_ms=20.0),
}

#: G.711 u-law everywhere: the only codec of the WebSocket media-streams protocol, so the
#: comparison is about the transports, not the codecs.
DEFAULT_CODECS = {"sip": "pcmu", "webrtc": "pcmu", "ws": "pcmu"}

#: Directions of a call, as in the call results' key prefixes.
DIRECTIONS = ("caller_to_agent", "agent_to_caller")

#: Columns of :func:`compare_transports`, in order.
COMPARE_COLUMNS = [
    "transport", "condition", "direction", "codec", "bitrate",
    "mouth_to_ear_ms", "pesq_nb", "pesq_wb", "loss_rate", "late_loss_rate",
    "setup_ms", "bitrate_kbps_wire", "jitter_ms", "rtt_ms", "playout_delay_ms",
    "transit_delay_ms_p99", "mos_cqe", "delay_confidence", "pacing_error_p99_ms",
    "channel.loss_rate", "channel.jitter_ms", "channel.delay_ms",
    "jitter_buffer", "seconds", "seed", "synthetic_speech", "speech_source", "note",
    "trial", "speech", "scenario_key",
]

#: Columns of :func:`opus_bitrate_sweep`, in order.
SWEEP_COLUMNS = [
    "mode", "codec", "bitrate", "bitrate_kbps", "fec", "direction",
    "pesq_wb", "pesq_nb", "mouth_to_ear_ms", "payload_kbps", "bitrate_kbps_wire", "overhead_kbps",
    "loss_rate", "late_loss_rate", "concealed_frames", "setup_ms", "pacing_error_p99_ms",
    "channel.loss_rate", "channel.jitter_ms", "channel.delay_ms",
    "seconds", "seed", "synthetic_speech", "speech_source",
]


def _check_seconds(seconds: Any) -> float:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise ParameterError(f"seconds must be a number, got {seconds!r}") from None
    if not 1.0 <= s <= 60.0:
        raise ParameterError(f"seconds {s:g} is outside 1..60 (speech sent in each direction)")
    return s


def _check_conditions(conditions: Any) -> dict[str, ChannelConfig | None]:
    if not isinstance(conditions, Mapping) or not conditions:
        raise ParameterError("conditions must be a non-empty dict {name: ChannelConfig or None}")
    out: dict[str, ChannelConfig | None] = {}
    for name, cfg in conditions.items():
        if not isinstance(name, str) or not name:
            raise ParameterError(f"condition names must be non-empty strings, got {name!r}")
        if cfg is not None and not isinstance(cfg, ChannelConfig):
            raise ParameterError(f"condition {name!r} must be a voicelab.net.ChannelConfig or None, "
                                 f"got {type(cfg).__name__}")
        out[name] = cfg
    return out


def _channel_columns(cfg: ChannelConfig | None) -> dict[str, float]:
    if cfg is None:
        return {"channel.loss_rate": 0.0, "channel.jitter_ms": 0.0, "channel.delay_ms": 0.0}
    return {"channel.loss_rate": float(cfg.loss_rate), "channel.jitter_ms": float(cfg.jitter_ms),
            "channel.delay_ms": float(cfg.delay_ms)}


def _check_codecs(transports: Sequence[str], codec_for: Any) -> dict[str, str]:
    from .webrtc.peer import WEBRTC_CODECS

    if not isinstance(codec_for, Mapping):
        raise ParameterError("codec_for must be a dict {transport: codec name}")
    codec = {**DEFAULT_CODECS, **{str(k): v for k, v in codec_for.items()}}
    unknown = sorted(set(codec) - set(TRANSPORTS))
    if unknown:
        raise ParameterError(f"codec_for names unknown transport(s) {unknown}; use {list(TRANSPORTS)}")
    for t in transports:
        c = codec[t]
        if not isinstance(c, str):
            raise ParameterError(f"codec_for[{t!r}] must be a codec name, got {c!r}")
        if t == "ws" and c != "pcmu":
            raise ParameterError(f"the WebSocket media-streams transport carries only pcmu (8 kHz mu-law), not {c!r}")
        if t == "webrtc" and c not in WEBRTC_CODECS:
            raise ParameterError(f"WebRTC codec must be one of {sorted(WEBRTC_CODECS)}, got {c!r}")
        if t == "sip":
            from . import codecs

            codecs.get(c)  # ParameterError for an unknown name, CodecUnavailableError when not installed
    return codec


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, bool):
        try:
            return operator.index(seed)  # int or numpy integer
        except TypeError:
            pass
    raise ParameterError(f"seed must be an int, got {seed!r}")


def _check_jitter_buffer(spec: Any) -> str:
    from .sim.scenario import parse_jitter_buffer

    parse_jitter_buffer(spec)  # ParameterError with the accepted forms
    return spec


def _scenario(transport: str, *, codec: str, net: ChannelConfig | None, seconds: float, seed: int,
              jitter_buffer: str, speech: str) -> Any:
    """The :class:`voicelab.experiments.Scenario` of one live loopback call of ``transport``."""
    from .experiments.scenario import Scenario

    return Scenario(mode="loopback", transport=transport, codec=codec, channel=net, seconds=seconds, seed=seed,
                    jitter_buffer=jitter_buffer, speech=speech)


async def _one_call(scenario: Any) -> Any:
    """One live call (:func:`voicelab.experiments.run_async`); transport-level failures become VoicelabError."""
    from .experiments.run import run_async

    try:
        return await run_async(scenario)
    except VoicelabError:
        raise
    except (asyncio.TimeoutError, OSError) as exc:
        raise VoicelabError(f"the {scenario.transport} call failed ({type(exc).__name__}: {exc}); "
                            "is the machine overloaded? try fewer or shorter calls") from exc


_DIRECTION_COLUMNS = (
    "mouth_to_ear_ms", "pesq_nb", "pesq_wb", "loss_rate", "late_loss_rate", "bitrate_kbps_wire", "jitter_ms",
    "rtt_ms", "playout_delay_ms", "transit_delay_ms_p99", "mos_cqe", "delay_confidence", "pacing_error_p99_ms",
)


def _direction_row(result: Any, direction: str) -> dict[str, Any]:
    d = result.directions[direction]
    return {k: d.get(k) for k in _DIRECTION_COLUMNS}


def _check_repeats(repeats: Any) -> int:
    if not isinstance(repeats, bool):
        try:
            n = operator.index(repeats)
            if n >= 1:
                return n
        except TypeError:
            pass
    raise ParameterError(f"repeats must be an integer >= 1, got {repeats!r}")


def _check_speech(speech: Any) -> list[str]:
    speeches = [speech] if isinstance(speech, str) else speech
    try:
        speeches = list(speeches)
    except TypeError:
        speeches = []
    if not speeches or not all(isinstance(x, str) and x for x in speeches):
        raise ParameterError(f"speech must be a speech name (e.g. 'default', 'corpus:3') or a list of them, got {speech!r}")
    return speeches


async def compare_transports_async(
    *,
    transports: Sequence[str] = TRANSPORTS,
    conditions: Mapping[str, ChannelConfig | None] | None = None,
    codec_for: Mapping[str, str] | None = None,
    seconds: float = 3.0,
    seed: int = 0,
    jitter_buffer: str = "fixed:60",
    speech: str | Sequence[str] = "default",
    repeats: int = 1,
) -> pd.DataFrame:
    """Coroutine form of :func:`compare_transports` (same parameters and result)."""
    if isinstance(transports, str):
        transports = (transports,)
    try:
        transports = tuple(transports)
    except TypeError:
        raise ParameterError(f"transports must be a sequence of {list(TRANSPORTS)}, got {transports!r}") from None
    if not transports:
        raise ParameterError(f"transports must name at least one of {list(TRANSPORTS)}")
    bad = [t for t in transports if t not in TRANSPORTS]
    if bad:
        raise ParameterError(f"unknown transport(s) {bad}; use some of {list(TRANSPORTS)}")
    conds = _check_conditions(DEFAULT_CONDITIONS if conditions is None else conditions)
    codec = _check_codecs(transports, {} if codec_for is None else codec_for)
    seconds = _check_seconds(seconds)
    seed = _check_seed(seed)
    jitter_buffer = _check_jitter_buffer(jitter_buffer)
    repeats = _check_repeats(repeats)
    speeches = _check_speech(speech)
    used = {codec[t] for t in transports}
    note = "" if len(used) == 1 else (
        "codecs differ between transports (" + ", ".join(f"{t}: {codec[t]}" for t in transports)
        + "): compare delay and loss, not PESQ")

    # every call is a Scenario run by voicelab.experiments.run_async; trial i of every
    # (condition, transport) cell shares its seed and its speech (a paired design), and
    # trials are the outer loop so that a slow spell of the machine touches every arm
    cells: list[tuple[int, str, ChannelConfig | None, str, Any]] = []
    for i in range(repeats):
        for cname, cfg in conds.items():
            for t in transports:
                cells.append((i, cname, cfg, t, _scenario(t, codec=codec[t], net=cfg, seconds=seconds, seed=seed + i,
                                                          jitter_buffer=jitter_buffer, speech=speeches[i % len(speeches)])))
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, cname, cfg, t, scn in cells:
        r = await _one_call(scn)
        results.append({"transport": t, "condition": cname, "trial": i, "result": r.raw, "scenario": scn.to_dict()})
        for d in DIRECTIONS:
            rows.append({
                "transport": t, "condition": cname, "direction": d,
                "codec": r.call["codec_negotiated"] or codec[t], "bitrate": r.call["bitrate"],
                "setup_ms": r.call["setup_ms"],
                **_direction_row(r, d),
                **_channel_columns(cfg),
                "jitter_buffer": jitter_buffer,
                "seconds": r.call["speech_seconds"] if r.call["speech_seconds"] is not None else seconds,
                "seed": scn.seed, "synthetic_speech": bool(r.speech.get("synthetic", False)),
                "speech_source": r.speech.get("source"), "note": note,
                "trial": i, "speech": scn.speech, "scenario_key": scn.key(),
            })
    df = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    df.attrs["results"] = results
    return df


def compare_transports(
    *,
    transports: Sequence[str] = TRANSPORTS,
    conditions: Mapping[str, ChannelConfig | None] | None = None,
    codec_for: Mapping[str, str] | None = None,
    seconds: float = 3.0,
    seed: int = 0,
    jitter_buffer: str = "fixed:60",
    speech: str | Sequence[str] = "default",
    repeats: int = 1,
) -> pd.DataFrame:
    """The same call over SIP/RTP, WebRTC and a WebSocket, under each network condition.

    One live loopback call per (transport, condition, trial), run one after another (never
    concurrently: they share the CPU, and pacing is part of what is measured). Each call
    is a :class:`voicelab.experiments.Scenario` (``mode="loopback"``) run by
    :func:`voicelab.experiments.run_async`.

    Parameters
    ----------
    transports : sequence of {"sip", "webrtc", "ws"}
        Which transports to call over.
    conditions : dict of str to ChannelConfig or None, optional
        Named path impairments applied in both directions (None: a clean loopback).
        Default :data:`DEFAULT_CONDITIONS`: clean, and 2 % loss + 30 ms jitter on
        20 ms of delay.
    codec_for : dict of str to str, optional
        Codec per transport, merged over :data:`DEFAULT_CODECS` (``pcmu`` everywhere).
        The WebSocket carries only ``pcmu``; WebRTC takes ``opus``, ``pcmu``, ``pcma``
        or ``g722`` (``opus`` at the lab's default 24 kbit/s). When the codecs differ,
        every row's ``note`` says so: PESQ then compares codecs as much as transports.
    seconds : float
        Speech sent in each direction of each call, 1..60 s.
    seed : int
        Seed of every call's impairment (the same for every transport).
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"``, at both ends of every call.
    speech : str or sequence of str
        Named speech (``"default"``: the natural corpus when ``VOICELAB_DATA`` points to
        it, else synthetic speech, flagged in ``synthetic_speech``; ``"corpus:N"``: item
        N). A list rotates over trials: trial i sends ``speech[i % len(speech)]``.
    repeats : int
        Trials per (transport, condition), >= 1. Trial i uses seed ``seed + i`` and the
        same speech in every cell (paired across transports and conditions); see
        :mod:`voicelab.experiments.stats` for intervals over the trials.

    Returns
    -------
    pandas.DataFrame
        One row per (transport, condition, trial, direction), columns
        :data:`COMPARE_COLUMNS`: ``mouth_to_ear_ms`` (ms), ``pesq_nb``, ``pesq_wb``
        (MOS-LQO), ``loss_rate`` (0..1, lost in transit; always 0 over the WebSocket's
        TCP), ``late_loss_rate`` (0..1, arrived after its playout time),
        ``setup_ms`` (the transport's own setup: SIP INVITE -> ACK, WebRTC offer ->
        connected, WebSocket dial -> ``start`` received), ``bitrate_kbps_wire`` (kbit/s
        with IP/UDP or IP/TCP headers), ``jitter_ms``, ``rtt_ms`` (None where the
        transport does not measure it), ``playout_delay_ms``,
        ``transit_delay_ms_p99`` (WebSocket only: per-frame one-way transit, where TCP
        turns loss into latency spikes), ``mos_cqe`` (E-model), ``pacing_error_p99_ms``
        (how late the sender's frames left, 99th percentile: tens of ms mean the machine
        was too busy and late packets, not the network, lowered PESQ), the condition as
        ``channel.*``, ``synthetic_speech`` (True when the speech was synthetic),
        ``note``, ``trial`` (0-based), ``speech`` and ``scenario_key``
        (:meth:`voicelab.experiments.Scenario.key`). ``df.attrs["results"]`` keeps each
        call's full engine result dict (``transport``, ``condition``, ``trial``,
        ``result``, ``scenario``), e.g. for the WebRTC timeline.

    Raises
    ------
    ParameterError
        Unknown transport, bad condition, codec not carried by a transport, seconds
        outside 1..60.
    VoicelabError
        A call failed (did not connect, or media did not play through).

    See Also
    --------
    voicelab.calls.sip_call, voicelab.webrtc.call.webrtc_call, voicelab.wsmedia.live.ws_call

    Examples
    --------
    >>> from voicelab.compare import compare_transports
    >>> df = compare_transports(transports=("sip", "ws"), seconds=2.0)  # doctest: +SKIP
    >>> df.groupby(["transport", "condition"])["mouth_to_ear_ms"].mean()  # doctest: +SKIP
    """
    return run_sync(lambda: compare_transports_async(
        transports=transports, conditions=conditions, codec_for=codec_for, seconds=seconds, seed=seed,
        jitter_buffer=jitter_buffer, speech=speech, repeats=repeats))


def _encoder_kbps(params: dict[str, Any], *, speech: str, seconds: float) -> float:
    """Payload rate of the lab's Opus encoder on the call's speech, in kbit/s.

    The same encoder object and speech as the call's sender (Opus is deterministic for a
    given input), counted over the speech frames only, so it is comparable with the
    wire rate (which is measured over the speech too). getStats ``bytesSent`` would also
    count the near-empty frames after the speech.
    """
    import numpy as np

    from . import audio, codecs
    from .audio import load_speech

    sp = load_speech(speech=speech, max_speech_s=seconds, codec="opus")
    x = np.asarray(sp.samples, dtype=np.float64)
    if sp.sample_rate != 16000:
        x = audio.resample(x, sp.sample_rate, 16000)
    enc = codecs.get("opus", **params)
    if enc.sample_rate != 16000:
        x = audio.resample(x, 16000, enc.sample_rate)
    pcm = audio.to_int16(x)
    n = int(np.ceil(len(pcm) / enc.frame_samples))
    pcm = np.concatenate([pcm, np.zeros(n * enc.frame_samples - len(pcm), dtype=np.int16)])
    total = sum(len(enc.encode(pcm[i * enc.frame_samples:(i + 1) * enc.frame_samples])) for i in range(n))
    return total * 8 / (n * enc.frame_ms / 1000.0) / 1000.0


def _concealed(outcomes: Mapping[str, int] | None) -> int | None:
    return None if outcomes is None else int(outcomes.get("concealed", 0))


def _check_bitrates(bitrates: Any) -> list[int]:
    if isinstance(bitrates, (int, float)):
        bitrates = [bitrates]
    try:
        out = [int(b) for b in bitrates]
    except (TypeError, ValueError):
        raise ParameterError(f"bitrates must be a sequence of bit rates in bit/s, got {bitrates!r}") from None
    if not out:
        raise ParameterError("bitrates must name at least one Opus bit rate (bit/s)")
    bad = [b for b in out if not 6000 <= b <= 510000]
    if bad:
        raise ParameterError(f"Opus bit rates {bad} are outside 6000..510000 bit/s")
    return out


async def opus_bitrate_sweep_async(
    bitrates: Sequence[int] = (8000, 12000, 16000, 24000, 32000, 64000),
    *,
    seconds: float = 3.0,
    net: ChannelConfig | None = None,
    fec: bool = False,
    jitter_buffer: str = "fixed:60",
    baseline: bool = False,
    seed: int = 0,
    speech: str = "default",
) -> pd.DataFrame:
    """Coroutine form of :func:`opus_bitrate_sweep` (same parameters and result)."""
    from .webrtc.call import AIORTC_OPUS_BITRATE, webrtc_call

    rates = _check_bitrates(bitrates)
    seconds = _check_seconds(seconds)
    seed = _check_seed(seed)
    jitter_buffer = _check_jitter_buffer(jitter_buffer)
    if net is not None and not isinstance(net, ChannelConfig):
        raise ParameterError(f"net must be a voicelab.net.ChannelConfig or None, got {type(net).__name__}")
    runs: list[tuple[str, int, dict[str, Any]]] = [("lab", b, {"bitrate": b, "fec": bool(fec)}) for b in rates]
    if baseline:
        runs.append(("aiortc-defaults", AIORTC_OPUS_BITRATE, {"mode": "aiortc-defaults"}))
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for mode, b, kw in runs:
        try:
            r = await webrtc_call(codec="opus", seconds=seconds, net=net, seed=seed, jitter_buffer=jitter_buffer,
                                  speech=speech, **kw)
        except (asyncio.TimeoutError, OSError) as exc:
            raise VoicelabError(f"the WebRTC call at {b} bit/s failed ({type(exc).__name__}: {exc})") from exc
        results.append({"mode": mode, "bitrate": b, "result": r})
        # plain aiortc encodes with its own encoder, whose output the lab cannot see
        payload = _encoder_kbps(r.get("codec_params") or {"bitrate": b}, speech=speech, seconds=seconds) \
            if mode == "lab" else None
        for d in DIRECTIONS:
            wire = r.get(f"{d}.bitrate_kbps_wire")
            rows.append({
                "mode": mode, "codec": "opus", "bitrate": b, "bitrate_kbps": b / 1000.0,
                "fec": bool(fec) and mode == "lab", "direction": d,
                "pesq_wb": r.get(f"{d}.pesq_wb"), "pesq_nb": r.get(f"{d}.pesq_nb"),
                "mouth_to_ear_ms": r.get(f"{d}.mouth_to_ear_ms"),
                "payload_kbps": payload, "bitrate_kbps_wire": wire,
                "overhead_kbps": (wire - payload) if (wire is not None and payload is not None) else None,
                "loss_rate": r.get(f"{d}.loss_rate"), "late_loss_rate": r.get(f"{d}.late_loss_rate"),
                "concealed_frames": _concealed(r.get(f"{d}.outcomes")) if mode == "lab" else None,
                "setup_ms": r.get("setup_ms"), "pacing_error_p99_ms": r.get(f"{d}.pacing_error_p99_ms"),
                **_channel_columns(net),
                "seconds": r.get("seconds", seconds), "seed": seed,
                "synthetic_speech": bool(r.get("synthetic_speech", False)), "speech_source": r.get("speech_source"),
            })
    df = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    df.attrs["results"] = results
    return df


def opus_bitrate_sweep(
    bitrates: Sequence[int] = (8000, 12000, 16000, 24000, 32000, 64000),
    *,
    seconds: float = 3.0,
    net: ChannelConfig | None = None,
    fec: bool = False,
    jitter_buffer: str = "fixed:60",
    baseline: bool = False,
    seed: int = 0,
    speech: str = "default",
) -> pd.DataFrame:
    """WebRTC calls with the lab's Opus encoder at several bit rates: quality vs bits.

    Parameters
    ----------
    bitrates : sequence of int
        Opus target bit rates in bit/s (6000..510000), one call each.
    seconds : float
        Speech sent in each direction of each call, 1..60 s.
    net : ChannelConfig, optional
        Impairment of the path (both directions); None: clean loopback.
    fec : bool
        Opus in-band FEC (the encoder is told the channel's loss rate).
    jitter_buffer : str
        ``"fixed:MS"`` or ``"adaptive"``.
    baseline : bool
        Add one call with plain aiortc media (Opus at a fixed 96 kbit/s, its 16-packet
        jitter buffer with 4 prefetched), rows with ``mode == "aiortc-defaults"``.
    seed : int
    speech : str
        Named speech (see :func:`compare_transports`).

    Returns
    -------
    pandas.DataFrame
        One row per (call, direction), columns :data:`SWEEP_COLUMNS`: ``bitrate``
        (bit/s asked for), ``pesq_wb``, ``pesq_nb``, ``mouth_to_ear_ms``,
        ``payload_kbps`` (what the encoder produces from this speech, kbit/s, speech
        frames only; Opus is VBR, so it can differ from the target; None for the
        plain-aiortc baseline, whose encoder the lab does not see),
        ``bitrate_kbps_wire`` (SRTP packets with RTP header extensions and IPv4/UDP
        headers, during the speech), ``overhead_kbps`` (their difference),
        ``concealed_frames`` (frames the receiver had to conceal), ``pacing_error_p99_ms``
        (see :func:`compare_transports`),
        ``synthetic_speech``. ``df.attrs["results"]`` keeps each call's result.

    Raises
    ------
    ParameterError
        Bit rate outside 6000..510000, seconds outside 1..60, ``net`` not a ChannelConfig.
    VoicelabError
        A call failed.
    """
    return run_sync(lambda: opus_bitrate_sweep_async(
        bitrates, seconds=seconds, net=net, fec=fec, jitter_buffer=jitter_buffer, baseline=baseline, seed=seed,
        speech=speech))


def summarize_transports(df: pd.DataFrame, metrics: Sequence[str] = ("mouth_to_ear_ms", "pesq_nb", "late_loss_rate"),
                         *, level: float = 0.95) -> pd.DataFrame:
    """Per condition, direction and transport: n, mean with its Student-t interval, median.

    Parameters
    ----------
    df : pandas.DataFrame
        :func:`compare_transports` output (one row per trial and direction).
    metrics : sequence of str
        Columns to summarise.

    Returns
    -------
    pandas.DataFrame
        :func:`voicelab.experiments.stats.summarize` of the table.
    """
    from .experiments.stats import summarize

    return summarize(df, by=["condition", "direction", "transport"], metrics=list(metrics), level=level)


def transport_verdicts(df: pd.DataFrame, metric: str = "mouth_to_ear_ms", *, a: str = "sip", b: str = "webrtc",
                       unit: str = "") -> list[str]:
    """One verdict line per condition and direction: transport ``a`` against ``b``, paired by trial.

    Trials of :func:`compare_transports` with ``repeats`` are paired: trial ``i`` has the
    same seed and utterance in every transport. Returns lines such as
    ``"impaired, caller_to_agent: sip exceeds webrtc by 12 ms [8, 16], p < 0.01, n = 5 paired trials"``.
    """
    from .experiments.stats import verdict

    if metric not in df or "trial" not in df:
        raise ParameterError(f"the table needs the columns {metric!r} and 'trial' (compare_transports output)")
    out = []
    for (cond, direction), g in df.groupby(["condition", "direction"], sort=False):
        xa = g[g["transport"] == a].set_index("trial")[metric]
        xb = g[g["transport"] == b].set_index("trial")[metric]
        common = xa.index.intersection(xb.index)
        if len(common) < 2:
            out.append(f"{cond}, {direction}: fewer than 2 paired trials of {a} and {b}")
            continue
        line = verdict(xa.loc[common].to_numpy(float), xb.loc[common].to_numpy(float), names=(a, b), unit=unit)
        out.append(f"{cond}, {direction}: {line}")
    return out


def loopback_delay_note(df: pd.DataFrame) -> str:
    """Where the mouth-to-ear delay of an :func:`opus_bitrate_sweep` on loopback comes from.

    The lab's part is explained from the calls themselves: the codec's frame and
    look-ahead (from the negotiated codec parameters), the measured wait in the jitter
    buffer (``playout_delay_ms``) and its setting; plain aiortc's part from its jitter
    buffer's prefetch (:data:`voicelab.webrtc.call.AIORTC_JB_PREFETCH` packets).

    Parameters
    ----------
    df : pandas.DataFrame
        :func:`opus_bitrate_sweep` results (with ``attrs["results"]``).

    Returns
    -------
    str
        A Markdown paragraph with the numbers of these calls.

    Raises
    ------
    ParameterError
        When ``df`` holds no lab call.
    """
    from . import codecs
    from .webrtc.call import AIORTC_JB_PREFETCH

    if "mode" not in df.columns or not (df["mode"] == "lab").any():
        raise ParameterError("loopback_delay_note needs opus_bitrate_sweep results with lab calls")
    runs = [x for x in df.attrs.get("results", []) if x.get("mode") == "lab"]
    if not runs:
        raise ParameterError("loopback_delay_note needs the sweep's attrs['results'] (the calls themselves)")
    first = runs[0]["result"]
    params = {k: v for k, v in (first.get("codec_params") or {}).items() if k in ("frame_ms",)}
    facts = codecs.get("opus", **params)
    waits = [r["result"].get(f"{d}.playout_delay_ms") for r in runs for d in DIRECTIONS]
    waits = [w for w in waits if w is not None]
    wait = sum(waits) / len(waits) if waits else float("nan")
    m2e = df.groupby("mode")["mouth_to_ear_ms"].mean()
    text = (
        f"Mouth-to-ear on loopback: **{m2e['lab']:.0f} ms** with the lab's media: one {facts.frame_ms:g} ms frame "
        f"of capture + {wait:.0f} ms of waiting in the jitter buffer ({first.get('jitter_buffer')}) + "
        f"{facts.lookahead_ms:g} ms of codec look-ahead + a few ms of transit."
    )
    if "aiortc-defaults" in m2e.index:
        text += (
            f" With plain aiortc: **{m2e['aiortc-defaults']:.0f} ms**. aiortc's receiver holds "
            f"{AIORTC_JB_PREFETCH} packets ({AIORTC_JB_PREFETCH * facts.frame_ms:g} ms of audio at "
            f"{facts.frame_ms:g} ms per packet) before it hands the first to its decoder thread, and the lab plays "
            "the decoded audio from the moment the first frame comes out: most of the difference is that prefetch. "
            "aiortc's buffer never adapts and has no concealment, so on a lossy or jittery path its delay and "
            "gaps are set by that fixed buffer (measure it: exercise 2 runs the sweep under loss)."
        )
    return text
