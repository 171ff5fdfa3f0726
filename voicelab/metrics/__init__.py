"""Quality and transport metrics: PESQ, STOI, SNR, the E-model, RTP receiver statistics.

* :mod:`voicelab.metrics.quality`: ``pesq`` (P.862 / P.862.1 / P.862.2 through the
  ``pesq`` package), ``stoi`` (pystoi), ``snr_db``, ``segmental_snr_db``.
* :mod:`voicelab.metrics.emodel`: the ITU-T G.107 / G.107.1 E-model with the G.113
  codec impairment table.
* :mod:`voicelab.metrics.rtpstats`: RFC 3550 receiver statistics (loss, jitter), sans-IO.
* ``estimate_delay`` / ``DelayEstimate`` are re-exported from :mod:`voicelab.audio.delay`
  (loaded on first use).
"""

from __future__ import annotations

from typing import Any

from .emodel import (
    CODEC_IMPAIRMENTS,
    EModelResult,
    burst_ratio,
    ie_bpl,
    mos_from_r,
    r_factor,
    r_from_mos,
)
from .quality import pesq, pesq_nb, pesq_wb, segmental_snr_db, snr_db, stoi
from .rtpstats import ReceiverStats, ReportBlock

__all__ = [
    "pesq",
    "pesq_nb",
    "pesq_wb",
    "stoi",
    "snr_db",
    "segmental_snr_db",
    "EModelResult",
    "CODEC_IMPAIRMENTS",
    "r_factor",
    "mos_from_r",
    "r_from_mos",
    "burst_ratio",
    "ie_bpl",
    "ReceiverStats",
    "ReportBlock",
    "estimate_delay",
    "DelayEstimate",
]

_LAZY = {"estimate_delay", "DelayEstimate"}


def __getattr__(name: str) -> Any:
    # Delay estimation lives in voicelab.audio.delay; import it on first use so this
    # package does not depend on the audio package at import time.
    if name in _LAZY:
        try:
            from ..audio import delay as _delay
        except ImportError as exc:
            raise AttributeError(
                f"{name} needs voicelab.audio.delay, which cannot be imported: {exc}"
            ) from exc
        value = getattr(_delay, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
