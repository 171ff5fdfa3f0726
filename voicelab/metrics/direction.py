"""Per-direction measurement of a call: mouth-to-ear delay and PESQ of what one end heard.

Every call engine (SIP on loopback or a virtual network, WebRTC, WebSocket media) measures
a direction the same way: the sender's recording and the receiver's recording, both
stamped on one clock, are aligned by cross-correlation, and the aligned received audio is
scored against the clean 16 kHz source. These functions used to live in
:mod:`voicelab.calls`, which re-exports them; they sit here so that the transports
(``voicelab.webrtc``, ``voicelab.wsmedia``) need not import an endpoint module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import VoicelabError
from .quality import pesq

__all__ = ["measure_direction", "direction_metrics"]


def measure_direction(sent: np.ndarray, t_sent: float, recv: np.ndarray, t_recv: float, rate: int,
                      reference16: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Delay and PESQ of ``recv`` against ``sent``, both stamped on one clock.

    Parameters
    ----------
    sent, recv : ndarray
        Float audio at ``rate`` Hz; ``t_sent`` / ``t_recv`` are the clock times (s) of
        their first samples.
    rate : int
        Hz.
    reference16 : ndarray
        The clean source at 16 kHz (the PESQ reference).

    Returns
    -------
    dict
        ``mouth_to_ear_ms``, ``delay_confidence``, ``pesq_nb``, ``pesq_wb`` (None when
        nothing arrived or PESQ refused the signal).
    """
    from .. import audio  # the audio layer sits below metrics; imported late like metrics.estimate_delay

    out: dict[str, Any] = {"mouth_to_ear_ms": None, "pesq_nb": None, "pesq_wb": None, "delay_confidence": None}
    if len(recv) == 0:
        return out
    off = int(round((t_recv - t_sent) * rate))
    deg = np.concatenate([np.zeros(max(off, 0)), recv]) if off >= 0 else recv[-off:]
    est = audio.estimate_delay(sent, deg, rate, max_delay_ms=2000.0, causal=True)
    d = audio.compensate(deg, est.delay_samples, len(sent))
    out["mouth_to_ear_ms"] = est.delay_ms
    out["delay_confidence"] = est.confidence
    ref16 = reference16[: int(len(sent) * 16000 / rate)]
    d16 = audio.resample(d, rate, 16000)[: len(ref16)]
    try:
        out["pesq_nb"] = pesq(audio.resample(ref16, 16000, 8000), audio.resample(d16, 16000, 8000), 8000, mode="nb")
        out["pesq_wb"] = pesq(ref16, d16, 16000, mode="wb")  # as in sim: NB codecs score low here
    except VoicelabError:
        pass
    return out


def direction_metrics(sender: Any, receiver: Any, reference16: np.ndarray) -> dict[str, Any]:
    """Mouth-to-ear delay and quality of one direction, both recordings on the loop clock.

    Parameters
    ----------
    sender : object
        Has ``sent_audio() -> (samples, t0_s)`` and ``tx.sample_rate`` (Hz), as
        :class:`voicelab.rtp.live.LiveAudioStream` and the WebRTC/WebSocket media
        tracks do.
    receiver : object
        Has ``received_audio() -> (samples, t0_s)`` on the same clock.
    reference16 : ndarray
        The clean source at 16 kHz.

    Returns
    -------
    dict
        As :func:`measure_direction`.
    """
    sent, t_sent = sender.sent_audio()
    recv, t_recv = receiver.received_audio()
    return measure_direction(sent, t_sent, recv, t_recv, sender.tx.sample_rate, reference16)
