"""L16: uncompressed 16-bit linear PCM in network byte order (RFC 3551 section 4.5.11).

The lossless reference in codec comparisons: whatever degrades L16 is the network or
the jitter buffer, never the codec. Lost frames use the generic waveform-substitution
concealment (:mod:`voicelab.codecs.plc`) unless ``plc=False``.
"""

from __future__ import annotations

import numpy as np

from ..errors import CodecError
from .base import Codec
from .plc import GenericPLCMixin, WaveformSubstitutionPLC
from .registry import check_bool, check_frame_ms, check_sample_rate

__all__ = ["L16Codec"]

SAMPLE_RATES = (8000, 16000, 44100, 48000)
PTIME_CHOICES_MS = (10, 20, 30, 40, 50, 60)


class L16Codec(GenericPLCMixin, Codec):
    """Linear PCM, big-endian int16, ``L16/<sample_rate>``.

    Parameters
    ----------
    sample_rate : int
        8000, 16000 (default), 44100 or 48000 Hz; the RTP clock runs at the same rate.
    frame_ms : int or float
        Packet time in ms: 10, 20 (default), 30, 40, 50 or 60.
    plc : bool
        Generic concealment on (default) or silence for lost frames.

    Notes
    -----
    The payload type is dynamic, except mono 44.1 kHz which has the static PT 11 of
    RFC 3551 (``L16/44100/1``).
    """

    name = "l16"
    encoding_name = "L16"
    lookahead_ms = 0.0

    def __init__(self, *, sample_rate: int = 16000, frame_ms: float = 20, plc: bool = True) -> None:
        self._configure(sample_rate=sample_rate, frame_ms=frame_ms, plc=plc)
        self._open()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None: L16 needs only numpy."""
        return None

    def _configure(self, *, sample_rate: int = 16000, frame_ms: float = 20, plc: bool = True) -> None:
        self.sample_rate = check_sample_rate(self.name, sample_rate, SAMPLE_RATES)
        self.clock_rate = self.sample_rate
        self.frame_ms = check_frame_ms(self.name, frame_ms, PTIME_CHOICES_MS)
        self.bitrate = 16 * self.sample_rate
        self.payload_type = 11 if self.sample_rate == 44100 else None
        self.wideband = self.sample_rate >= 16000
        self._use_plc = check_bool(self.name, "plc", plc)
        self.has_plc = self._use_plc

    def _open(self) -> None:
        self._plc = WaveformSubstitutionPLC(self.sample_rate, self.frame_samples) if self._use_plc else None

    def params(self) -> dict:
        return {"sample_rate": self.sample_rate, "frame_ms": self.frame_ms, "plc": self._use_plc}

    def reset(self) -> None:
        if self._plc is not None:
            self._plc.reset()

    def _encode_frame(self, pcm: np.ndarray) -> bytes:
        return pcm.astype(">i2").tobytes()

    def _decode_payload(self, payload: bytes) -> np.ndarray:
        if len(payload) != 2 * self.frame_samples:
            raise CodecError(
                f"l16: payload of {len(payload)} bytes does not match frame_ms={self.frame_ms:g} at "
                f"{self.sample_rate} Hz ({2 * self.frame_samples} bytes); use the sender's ptime and rate"
            )
        return np.frombuffer(payload, dtype=">i2").astype(np.int16)
