"""The voice agent's turn in ``sim`` mode: the real pipeline on the simulated channel's audio.

For each utterance, :func:`voicelab.sim.simulate_call` sends it through the codec, the
network model, the jitter buffer and PLC; the agent's :class:`~voicelab.pipeline.Pipeline`
then hears the degraded audio offline on a fake clock (VAD, PocketSphinx, responder, TTS:
the same objects as in live calls). The network is a model: each direction adds the
simulated call's true mouth-to-ear delay (packetization + network + jitter buffer), the
same both ways. No sockets, no real time: sweeps can cover hundreds of conditions.

Per turn: ``wer`` (the recogniser on the degraded audio vs the transcript) and
``total_ms`` = mouth-to-ear up + the agent's own wait (end of speech as heard -> first
reply frame) + mouth-to-ear down, each part reported (``network_model: true``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import audio
from ..net import ChannelConfig
from ..pipeline.core import Pipeline, PipelineConfig
from ..pipeline.wer import wer, word_errors
from ..turns import Utterance, load_utterances

__all__ = ["hear_offline", "sim_turns"]


def hear_offline(x: np.ndarray, rate: int, *, config: PipelineConfig | None = None, seed: int = 0,
                 tail_s: float = 6.0) -> Pipeline:  # fmt: skip
    """Feed float audio at ``rate`` to a fresh pipeline on a fake clock (frame k at k*20 ms); returns it."""
    cfg = config or PipelineConfig()
    p = cfg.build(rate, seed=seed)
    F = rate // 50
    pcm = audio.to_int16(np.concatenate([x, np.zeros(int(tail_s * rate))]))
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % F, dtype=np.int16)])
    for k in range(len(pcm) // F):
        p.feed(pcm[k * F : (k + 1) * F], k * 0.02)
        p.next_frame((k + 1) * 0.02)
        if p.turns and p.turns[-1].reply_start is not None and p.state == "speaking" and k * 0.02 > len(x) / rate:
            break
    return p


def sim_turns(*, codec: str = "pcmu", channel: ChannelConfig | str | None = None, turns: int = 5,
              jitter_buffer: str = "fixed:60", plc: bool = True, vad: str = "webrtc", stop_ms: float = 300.0,
              seed: int = 0, utterances: list[Utterance] | None = None,
              asr_adapt: bool | str = True) -> dict[str, Any]:  # fmt: skip
    """``turns`` utterances through the simulated channel and the agent's pipeline
    (``asr_adapt``: the recogniser's narrowband adaptation, as :class:`PipelineConfig`).

    Returns
    -------
    dict
        ``turn.wer``, ``turn.total_ms.p50``/``p90``/``max``, ``turn.server_ms.*``, and
        ``turns`` (per utterance: ``wer``, ``recognised``, ``network_up_ms``,
        ``agent_ms``, ``network_down_ms``, ``total_ms``, ``outcome``);
        ``network_model: True``, ``llm_modelled: True``.
    """
    from . import Scenario, simulate_call

    from .. import codecs

    utts = list(utterances) if utterances is not None else load_utterances(turns)
    cfg = PipelineConfig(vad=vad, stop_ms=stop_ms, seed=seed, asr_adapt=asr_adapt)
    codec_rate = int(codecs.get(codec).sample_rate)
    records = []
    with tempfile.TemporaryDirectory(prefix="voicelab-simturn-") as tmp:
        for i, u in enumerate(utts):
            pad = np.zeros(8000)
            path = Path(tmp) / f"u{i}.wav"
            audio.write_wav(path, np.concatenate([pad, u.samples, pad]), 16000)
            sc = Scenario(codec=codec, channel=channel if channel is not None else ChannelConfig(),
                          jitter_buffer=jitter_buffer, plc=plc, input=str(path), level_db=-26.0,
                          max_speech_s=60.0, seed=seed + i)  # fmt: skip
            r = simulate_call(sc, quality=False)
            rate = r.sample_rate
            m2e = float(r.metrics["mouth_to_ear_true_ms"])
            heard = np.asarray(r.degraded, dtype=np.float64)
            if codec_rate < rate:  # the agent hears the codec's rate, as in a call (8 kHz for G.711)
                heard, rate = audio.resample(heard, rate, codec_rate), codec_rate
            p = hear_offline(heard, rate, config=cfg, seed=seed + i)
            text = " ".join(t.text or "" for t in p.turns)
            e, n = word_errors(u.transcript, text)
            a, b = u.speech_bounds
            t_end = (len(pad) + b) / 16000.0  # aligned: the source's end of speech
            rec: dict[str, Any] = {"turn": i, "utterance": u.name, "transcript": u.transcript, "recognised": text,
                                   "wer": wer(u.transcript, text), "word_errors": e, "words": n,
                                   "agent_turns": len(p.turns), "network_up_ms": m2e, "network_down_ms": m2e,
                                   "sample_rate": rate}  # fmt: skip
            answered = [t for t in p.turns if t.reply_start is not None and t.reply_start >= t_end]
            if answered:
                t = answered[0]
                rec.update(agent_ms=(t.reply_start - t_end) * 1000.0, server_ms=t.server_ms,
                           endpointing_wait_ms=(t.speech_end - t_end) * 1000.0,
                           llm_first_token_ms=(t.llm_first_token - t.asr_final) * 1000.0, outcome="ok")  # fmt: skip
                rec["total_ms"] = m2e + rec["agent_ms"] + m2e
            else:
                rec["outcome"] = "no_reply"
            records.append(rec)
    tot = [r["total_ms"] for r in records if "total_ms" in r]
    srv = [r["server_ms"] for r in records if r.get("server_ms") is not None]
    E, N = sum(r["word_errors"] for r in records), sum(r["words"] for r in records)
    out: dict[str, Any] = {"mode": "sim", "codec": codec, "network_model": True, "llm_modelled": True,
                           "turn.count": len(records), "turn.answered": len(tot), "turn.wer": E / N if N else None}  # fmt: skip
    for name, v in (("total", tot), ("server", srv)):
        for q, f in (("p50", 50), ("p90", 90)):
            out[f"turn.{name}_ms.{q}"] = float(np.percentile(v, f)) if v else None
        out[f"turn.{name}_ms.max"] = float(max(v)) if v else None
    out["turns"] = records
    return out
