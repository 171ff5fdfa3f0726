"""ITU-T G.729 Annex A (CS-ACELP, 8 kbit/s) via ctypes on bcg729.

bcg729 (Belledonne Communications) is the maintained free G.729A implementation; FFmpeg
only decodes G.729, so both directions go through bcg729 for consistency. The library
is ``libbcg729.so.0``: Debian/Ubuntu package ``libbcg729-0`` (Homebrew ``bcg729``).
Without it the registry lists ``g729`` as unavailable with that hint.

API used (bcg729 >= 1.1): ``initBcg729EncoderChannel(enableVAD)``, ``bcg729Encoder``,
``closeBcg729EncoderChannel``, ``initBcg729DecoderChannel``, ``bcg729Decoder(ctx,
bitStream, bitStreamLength, frameErasureFlag, SIDFrameFlag, rfc3389PayloadFlag,
signal)``, ``closeBcg729DecoderChannel``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import numpy as np

from ..errors import CodecError, CodecUnavailableError
from .base import Codec
from .registry import check_bool, check_choice, check_frame_ms

__all__ = ["G729Codec"]

_FRAME = 80  # samples per native 10 ms frame
_SPEECH_BYTES = 10
_SID_BYTES = 2

_LIB: Any = None
_LIB_ERROR: str | None = None
_INSTALL_HINT = "install Debian package libbcg729-0 (bcg729, the G.729A library)"


def _load() -> Any:
    global _LIB, _LIB_ERROR
    if _LIB is not None or _LIB_ERROR is not None:
        return _LIB
    names = ["libbcg729.so.0"]
    found = ctypes.util.find_library("bcg729")
    if found:
        names.append(found)
    names += ["libbcg729.dylib", "bcg729.dll"]
    for n in names:
        try:
            lib = ctypes.CDLL(n)
            lib.bcg729Encoder  # noqa: B018 - symbol check
        except (OSError, AttributeError):
            continue
        vp, u8 = ctypes.c_void_p, ctypes.c_uint8
        lib.initBcg729EncoderChannel.restype = vp
        lib.initBcg729EncoderChannel.argtypes = [u8]
        lib.closeBcg729EncoderChannel.argtypes = [vp]
        lib.bcg729Encoder.restype = None
        lib.bcg729Encoder.argtypes = [vp, ctypes.POINTER(ctypes.c_int16), ctypes.POINTER(u8), ctypes.POINTER(u8)]
        lib.initBcg729DecoderChannel.restype = vp
        lib.initBcg729DecoderChannel.argtypes = []
        lib.closeBcg729DecoderChannel.argtypes = [vp]
        lib.bcg729Decoder.restype = None
        lib.bcg729Decoder.argtypes = [vp, ctypes.POINTER(u8), u8, u8, u8, u8, ctypes.POINTER(ctypes.c_int16)]
        _LIB = lib
        return lib
    _LIB_ERROR = _INSTALL_HINT
    return None


class G729Codec(Codec):
    """G.729 Annex A, 8 kbit/s, RTP PT 18 ``G729/8000``.

    One payload carries ``frame_ms / 10`` native frames of 10 bytes each, concatenated
    (RFC 3551 section 4.5.6); 20 ms = 20 bytes.

    Parameters
    ----------
    frame_ms : int or float
        Packet time: 10, 20 (default), 30, 40, 50 or 60 ms.
    bitrate : int
        8000 (the only G.729A rate).
    vad : bool
        Annex B voice activity detection / DTX (default False, ``annexb=no``). With it,
        silent 10 ms frames become 2-byte SID frames or nothing; a payload may then be
        shorter, and a 0-byte payload is one a real sender would not transmit.

    Notes
    -----
    Concealment is the decoder's own (G.729 section 4.4: repeat the last LSPs, attenuate
    the gains, random fixed-codebook excitation), via ``frameErasureFlag``.

    Measured :attr:`lookahead_ms` 4.875 ms (cross-correlation peak at 39.2 samples),
    against REFERENCE-FACTS' 5 ms look-ahead (40 samples: the LPC window reaching into
    the next frame; 15 ms algorithmic delay with a 10 ms frame). The peak lands a
    fraction of a sample early because the 140 Hz pre-processing high-pass and the
    adaptive post-filter are not linear-phase. :attr:`algorithmic_delay_ms` uses the
    packet time, so 20 ms packets give 24.875 ms.
    """

    name = "g729"
    encoding_name = "G729"
    sample_rate = 8000
    clock_rate = 8000
    payload_type = 18
    bitrate = 8000
    lookahead_ms = 4.875
    has_plc = True

    def __init__(self, *, frame_ms: float = 20, bitrate: int = 8000, vad: bool = False) -> None:
        self._encs: Any = None
        self._decs: Any = None
        self._configure(frame_ms=frame_ms, bitrate=bitrate, vad=vad)
        self._open()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when bcg729 loads, else the package to install."""
        _load()
        return _LIB_ERROR

    def _configure(self, *, frame_ms: float = 20, bitrate: int = 8000, vad: bool = False) -> None:
        self.frame_ms = check_frame_ms(self.name, frame_ms, (10, 20, 30, 40, 50, 60))
        self.bitrate = check_choice(self.name, "bitrate", bitrate, (8000,))
        self.vad = check_bool(self.name, "vad", vad)

    @property
    def fmtp(self) -> str | None:
        return "annexb=yes" if self.vad else "annexb=no"

    def params(self) -> dict:
        return {"frame_ms": self.frame_ms, "bitrate": self.bitrate, "vad": self.vad}

    def _open(self) -> None:
        lib = _load()
        if lib is None:
            raise CodecUnavailableError(f"g729: {_INSTALL_HINT}")
        self._lib = lib
        self._close()
        self._encs = lib.initBcg729EncoderChannel(1 if self.vad else 0)
        self._decs = lib.initBcg729DecoderChannel()
        if not self._encs or not self._decs:
            raise CodecError("g729: bcg729 could not create its channel contexts")
        self._bits = (ctypes.c_uint8 * _SPEECH_BYTES)()
        self._len = ctypes.c_uint8(0)
        self._out = (ctypes.c_int16 * _FRAME)()

    def _close(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_encs", None):
            lib.closeBcg729EncoderChannel(self._encs)
            self._encs = None
        if getattr(self, "_decs", None):
            lib.closeBcg729DecoderChannel(self._decs)
            self._decs = None

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def reset(self) -> None:
        self._open()

    # ------------------------------------------------------------- operations
    def _encode_frame(self, pcm: np.ndarray) -> bytes:
        x = np.ascontiguousarray(pcm, dtype=np.int16)
        out = bytearray()
        for i in range(0, x.shape[0], _FRAME):
            sub = x[i:i + _FRAME]
            self._lib.bcg729Encoder(
                self._encs, sub.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), self._bits, ctypes.byref(self._len)
            )
            out += bytes(self._bits)[: self._len.value]
        return bytes(out)

    def _decode_one(self, data: bytes | None, *, erased: bool = False, sid: bool = False) -> np.ndarray:
        if data:
            buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
            n = len(data)
        else:
            buf = None
            n = 0
        self._lib.bcg729Decoder(self._decs, buf, n, 1 if erased else 0, 1 if sid else 0, 0, self._out)
        return np.frombuffer(self._out, dtype=np.int16).copy()

    def _decode_payload(self, payload: bytes) -> np.ndarray:
        k = int(round(self.frame_ms / 10))
        frames: list[np.ndarray] = []
        i = 0
        while i < len(payload):
            if len(frames) == k:
                raise CodecError(
                    f"g729: payload of {len(payload)} bytes holds more than frame_ms={self.frame_ms:g}; "
                    "create the codec with the sender's ptime"
                )
            left = len(payload) - i
            if left >= _SPEECH_BYTES:
                frames.append(self._decode_one(payload[i:i + _SPEECH_BYTES]))
                i += _SPEECH_BYTES
            elif left == _SID_BYTES:
                frames.append(self._decode_one(payload[i:], sid=True))
                i += _SID_BYTES
            else:
                raise CodecError(
                    f"g729: payload of {len(payload)} bytes is not 10-byte frames plus an optional 2-byte SID"
                )
        while len(frames) < k:  # untransmitted frames (Annex B DTX): comfort noise continues
            frames.append(self._decode_one(None, sid=True))
        return np.concatenate(frames)

    def conceal(self) -> np.ndarray:
        """The decoder's own erasure concealment for every 10 ms frame of the payload."""
        k = int(round(self.frame_ms / 10))
        return self._fit(np.concatenate([self._decode_one(None, erased=True) for _ in range(k)]))
