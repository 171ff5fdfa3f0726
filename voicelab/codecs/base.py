"""The one interface every codec in the lab implements.

A :class:`Codec` object holds one encoder *and* one decoder state. The simulator and the
live stacks create one object per direction and side (the sender encodes with its own
object, the receiver decodes with another), so encoder and decoder state never mix.

Conventions
-----------
* PCM is a 1-D ``numpy.int16`` array at :attr:`Codec.sample_rate`, exactly
  :attr:`Codec.frame_samples` long per call.
* One payload is one RTP packet's worth of audio: :attr:`Codec.frame_ms` is the packet
  time (ptime). Codecs whose native frame is shorter (G.729: 10 ms) put several native
  frames into one payload, as RFC 3551 allows.
* :attr:`Codec.lookahead_ms` is the extra delay of the decoded output beyond framing:
  decoded sample ``n`` corresponds to input sample ``n - lookahead`` of the same stream.
  It is checked against a measurement in the tests. :attr:`Codec.algorithmic_delay_ms`
  is ``frame_ms + lookahead_ms`` (the usual "codec delay" of REFERENCE-FACTS).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError

__all__ = ["Codec"]


class Codec(abc.ABC):
    """Base class of all codecs.

    Subclasses set the class attributes below (or instance attributes in ``__init__``)
    and implement :meth:`_encode_frame` and :meth:`_decode_payload`.

    Attributes
    ----------
    name : str
        Registry name, the same as on the command line (``"pcmu"``, ``"opus"``, ...).
    encoding_name : str
        SDP encoding name in ``a=rtpmap`` (``"PCMU"``, ``"G722"``, ``"opus"``).
    sample_rate : int
        Audio sample rate in Hz of the PCM this codec consumes and produces.
    clock_rate : int
        RTP timestamp clock rate in Hz (G.722: 8000 although audio is 16 kHz).
    channels : int
        Channel count as written in ``a=rtpmap`` (Opus: 2, per RFC 7587); audio is mono.
    payload_type : int or None
        Static RTP payload type (RFC 3551) or None for a dynamic one.
    frame_ms : float
        Audio per payload in ms (ptime).
    bitrate : int
        Nominal payload bit rate in bit/s (without RTP/UDP/IP overhead).
    lookahead_ms : float
        Decoder output lag beyond framing, in ms (see module docstring).
    has_plc : bool
        True when :meth:`conceal` uses the codec's own concealment.
    has_fec : bool
        True when :meth:`decode_fec` can rebuild a lost frame from the next payload.
    wideband : bool
        True when the codec carries 50-7000 Hz or more (use PESQ-WB, G.107.1).
    """

    name: ClassVar[str] = ""
    encoding_name: str = ""
    sample_rate: int = 8000
    clock_rate: int = 8000
    channels: int = 1
    payload_type: int | None = None
    frame_ms: float = 20.0
    bitrate: int = 64000
    lookahead_ms: float = 0.0
    has_plc: bool = False
    has_fec: bool = False
    wideband: bool = False

    # ------------------------------------------------------------------ facts
    @property
    def frame_samples(self) -> int:
        """Samples per payload at :attr:`sample_rate`."""
        return int(round(self.sample_rate * self.frame_ms / 1000.0))

    @property
    def timestamp_increment(self) -> int:
        """RTP timestamp ticks per payload at :attr:`clock_rate`."""
        return int(round(self.clock_rate * self.frame_ms / 1000.0))

    @property
    def algorithmic_delay_ms(self) -> float:
        """Framing plus look-ahead, in ms."""
        return self.frame_ms + self.lookahead_ms

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` value after the payload type, e.g. ``"opus/48000/2"``."""
        base = f"{self.encoding_name}/{self.clock_rate}"
        return f"{base}/{self.channels}" if self.channels != 1 else base

    @property
    def fmtp(self) -> str | None:
        """The ``a=fmtp`` parameters, or None when the codec needs none."""
        return None

    def params(self) -> dict[str, Any]:
        """The parameters this instance was created with (for results tables)."""
        return {}

    def info(self) -> dict[str, Any]:
        """All facts as a JSON-ready dict (``voicelab codecs --json``)."""
        return {
            "name": self.name,
            "encoding_name": self.encoding_name,
            "sample_rate": self.sample_rate,
            "clock_rate": self.clock_rate,
            "payload_type": self.payload_type,
            "rtpmap": self.rtpmap,
            "fmtp": self.fmtp,
            "frame_ms": self.frame_ms,
            "bitrate": self.bitrate,
            "lookahead_ms": self.lookahead_ms,
            "algorithmic_delay_ms": self.algorithmic_delay_ms,
            "has_plc": self.has_plc,
            "has_fec": self.has_fec,
            "wideband": self.wideband,
            **{f"param_{k}": v for k, v in self.params().items()},
        }

    # ------------------------------------------------------------- operations
    def encode(self, pcm: np.ndarray) -> bytes:
        """Encode one frame.

        Parameters
        ----------
        pcm : numpy.ndarray of int16, shape (frame_samples,)
            One frame of mono audio at :attr:`sample_rate`.

        Returns
        -------
        bytes
            The RTP payload for this frame (may be empty or a tiny SID with DTX).
        """
        pcm = np.asarray(pcm)
        if pcm.ndim != 1 or pcm.shape[0] != self.frame_samples:
            raise CodecError(
                f"{self.name}: encode() needs one frame of {self.frame_samples} samples "
                f"({self.frame_ms:g} ms at {self.sample_rate} Hz), got shape {pcm.shape}"
            )
        if pcm.dtype != np.int16:
            raise CodecError(f"{self.name}: encode() needs int16 PCM, got {pcm.dtype}")
        return self._encode_frame(pcm)

    def decode(self, payload: bytes) -> np.ndarray:
        """Decode one payload into ``frame_samples`` int16 samples."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise CodecError(f"{self.name}: decode() needs the payload as bytes, got {type(payload).__name__}")
        out = self._decode_payload(bytes(payload))
        return self._fit(out)

    def conceal(self) -> np.ndarray:
        """Audio for one lost payload (packet-loss concealment), ``frame_samples`` long.

        The default is silence; codecs with concealment of their own (or the generic
        waveform-substitution PLC) override it.
        """
        return np.zeros(self.frame_samples, dtype=np.int16)

    def decode_fec(self, next_payload: bytes) -> np.ndarray | None:
        """Rebuild the lost payload from redundancy carried in the *next* one.

        Returns None when the codec has no FEC or the next payload carries none.
        """
        return None

    def reset(self) -> None:  # pragma: no cover - trivial default
        """Forget encoder and decoder state (a new call)."""

    # -------------------------------------------------------------- internals
    @abc.abstractmethod
    def _encode_frame(self, pcm: np.ndarray) -> bytes: ...

    @abc.abstractmethod
    def _decode_payload(self, payload: bytes) -> np.ndarray: ...

    def _fit(self, out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, dtype=np.int16)
        n = self.frame_samples
        if out.shape[0] == n:
            return out
        if out.shape[0] > n:
            return out[:n]
        return np.concatenate([out, np.zeros(n - out.shape[0], dtype=np.int16)])

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"<{type(self).__name__} {self.name}{' ' + extra if extra else ''}>"
