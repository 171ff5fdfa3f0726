"""Opus (RFC 6716) with full encoder control, via ctypes on libopus.

Why ctypes and not PyAV: FFmpeg's ``libopus`` wrapper hides the decoder's packet-loss
concealment (``opus_decode(NULL)``) and in-band FEC decoding (``decode_fec=1``) and
adds its own pre-skip handling, and the lab needs all three. The library is the system
``libopus`` (``ctypes.util.find_library("opus")``, Debian ``libopus0``) or the copy
bundled inside the PyAV wheel (``av.libs/libopus*.so*`` or ``av/.dylibs``), which every
voicelab install has. When both load, the first one that is libopus >= 1.5 wins (it
has ``opus_packet_has_lbrr``, which :meth:`OpusCodec.decode_fec` uses to tell whether a
packet carries FEC); :func:`opus_version` says which one is in use.

Encoder controls use ``opus_encoder_ctl`` with the request codes of ``opus_defines.h``
(listed in :data:`CTL`); every return code is checked and a negative one raises
:class:`~voicelab.errors.CodecError` with ``opus_strerror``'s text.

RTP: dynamic PT, ``opus/48000/2`` (RFC 7587: the RTP clock is always 48 kHz and the
rtpmap always says 2 channels, whatever is actually coded); the audio is mono here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from typing import Any

import numpy as np

from ..errors import CodecError, CodecUnavailableError, ParameterError
from .base import Codec
from .registry import check_bool, check_choice, check_frame_ms, check_int_range, check_sample_rate

__all__ = ["OpusCodec", "CTL", "opus_library_path", "opus_version"]

# request codes from opus_defines.h
CTL = {
    "SET_APPLICATION": 4000,
    "SET_BITRATE": 4002,
    "SET_MAX_BANDWIDTH": 4004,
    "SET_VBR": 4006,
    "SET_BANDWIDTH": 4008,
    "SET_COMPLEXITY": 4010,
    "SET_INBAND_FEC": 4012,
    "SET_PACKET_LOSS_PERC": 4014,
    "SET_DTX": 4016,
    "SET_VBR_CONSTRAINT": 4020,
    "SET_SIGNAL": 4024,
    "GET_LOOKAHEAD": 4027,
    "RESET_STATE": 4028,
    "GET_SAMPLE_RATE": 4029,
    "GET_FINAL_RANGE": 4031,
    "GET_IN_DTX": 4049,
}
APPLICATIONS = {"voip": 2048, "audio": 2049, "restricted-lowdelay": 2051}
SIGNAL_VOICE = 3001
BANDWIDTHS = {"nb": 1101, "mb": 1102, "wb": 1103, "swb": 1104, "fb": 1105}
_BANDWIDTH_NAMES = {v: k for k, v in BANDWIDTHS.items()}
SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
FRAME_MS = (2.5, 5, 10, 20, 40, 60)
_MAX_PACKET = 4000  # bytes; libopus' recommended output buffer size

_LIB: Any = None
_LIB_PATH: str | None = None
_LIB_ERROR: str | None = None


def _candidates() -> list[str]:
    out = []
    found = ctypes.util.find_library("opus")
    if found:
        out.append(found)
    out.append("libopus.so.0")
    try:
        import av

        pkg = os.path.dirname(av.__file__)
        base = os.path.dirname(pkg)
        out += sorted(glob.glob(os.path.join(base, "av.libs", "libopus*.so*")))
        out += sorted(glob.glob(os.path.join(pkg, ".dylibs", "libopus*.dylib")))
        out += sorted(glob.glob(os.path.join(base, "av.libs", "opus*.dll")))
    except Exception:  # pragma: no cover - PyAV missing
        pass
    return out


def _load() -> Any:
    global _LIB, _LIB_PATH, _LIB_ERROR
    if _LIB is not None or _LIB_ERROR is not None:
        return _LIB
    loaded = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.opus_get_version_string  # noqa: B018 - check the symbol exists
        except (OSError, AttributeError):
            continue
        loaded.append((path, lib))
    # prefer a libopus >= 1.5 (it has opus_packet_has_lbrr, which decode_fec uses)
    loaded.sort(key=lambda pl: not hasattr(pl[1], "opus_packet_has_lbrr"))
    for path, lib in loaded[:1]:
        vp, i32, cint = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int
        lib.opus_get_version_string.restype = ctypes.c_char_p
        lib.opus_strerror.restype = ctypes.c_char_p
        lib.opus_strerror.argtypes = [cint]
        lib.opus_encoder_create.restype = vp
        lib.opus_encoder_create.argtypes = [i32, cint, cint, ctypes.POINTER(cint)]
        lib.opus_decoder_create.restype = vp
        lib.opus_decoder_create.argtypes = [i32, cint, ctypes.POINTER(cint)]
        lib.opus_encoder_destroy.argtypes = [vp]
        lib.opus_decoder_destroy.argtypes = [vp]
        # variadic: declare the fixed arguments only, so ctypes passes the rest as varargs
        lib.opus_encoder_ctl.argtypes = [vp, cint]
        lib.opus_encoder_ctl.restype = cint
        lib.opus_decoder_ctl.argtypes = [vp, cint]
        lib.opus_decoder_ctl.restype = cint
        lib.opus_encode.restype = i32
        lib.opus_encode.argtypes = [vp, ctypes.POINTER(ctypes.c_int16), cint, ctypes.c_char_p, i32]
        lib.opus_decode.restype = cint
        lib.opus_decode.argtypes = [vp, ctypes.c_char_p, i32, ctypes.POINTER(ctypes.c_int16), cint, cint]
        lib.opus_packet_get_bandwidth.restype = cint
        lib.opus_packet_get_bandwidth.argtypes = [ctypes.c_char_p]
        if hasattr(lib, "opus_packet_has_lbrr"):
            lib.opus_packet_has_lbrr.restype = cint
            lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, i32]
        _LIB, _LIB_PATH = lib, path
        return lib
    _LIB_ERROR = (
        "libopus not found: install the Debian package libopus0 (or reinstall the 'av' "
        "wheel from PyPI, which bundles it)"
    )
    return None


def opus_library_path() -> str | None:
    """Path (or soname) of the libopus in use, None if none was found."""
    _load()
    return _LIB_PATH


def opus_version() -> str | None:
    """libopus version string (e.g. ``"libopus 1.5.2"``), None if not found."""
    lib = _load()
    return lib.opus_get_version_string().decode() if lib is not None else None


def _check(ret: int, what: str) -> int:
    if ret < 0:
        msg = _LIB.opus_strerror(ret).decode(errors="replace")
        raise CodecError(f"opus: {what} failed: {msg} (error {ret})")
    return ret


class OpusCodec(Codec):
    """Opus with every encoder control the lab studies.

    Parameters
    ----------
    bitrate : int
        Target bit rate in bit/s, 6000..510000 (default 24000).
    sample_rate : int
        PCM rate in Hz: 8000, 12000, 16000, 24000 or 48000 (default). The RTP clock is
        48 kHz regardless.
    frame_ms : float
        10, 20 (default), 40 or 60 ms; 2.5 and 5 ms are allowed too (libopus then codes
        CELT-only, as with ``application="restricted-lowdelay"``).
    complexity : int
        0..10 (default 10, libopus' own default).
    application : str
        ``"voip"`` (default), ``"audio"`` or ``"restricted-lowdelay"``.
    bandwidth : str or None
        Maximum coded bandwidth: ``"nb"`` (4 kHz), ``"mb"`` (6), ``"wb"`` (8), ``"swb"``
        (12), ``"fb"`` (20) or None (default: libopus decides).
    vbr : bool
        Variable bit rate (default True); False gives hard CBR.
    cbr : bool or None
        Same as ``vbr=not cbr``; for those who think in CBR (must agree with ``vbr``).
    dtx : bool
        Discontinuous transmission (default False). In silence the encoder returns 1-2
        byte packets (and keeps one every 400 ms); a real sender would not transmit
        those, which the simulator decides.
    fec : bool
        In-band FEC / LBRR (default False). It only spends bits when
        ``packet_loss_perc`` > 0.
    packet_loss_perc : int
        Expected loss in percent, 0..100 (default 0), which tunes FEC and robustness.

    Notes
    -----
    :attr:`lookahead_ms` is ``OPUS_GET_LOOKAHEAD`` (the encoder's delay, the decoder adds
    none): 6.5 ms for ``voip``/``audio`` (2.5 ms CELT look-ahead + 4 ms SILK delay
    compensation), 2.5 ms for ``restricted-lowdelay``, as REFERENCE-FACTS says; the
    tests confirm it by cross-correlation (at 8 kHz the value is 6.5 ms too).
    """

    name = "opus"
    encoding_name = "opus"
    clock_rate = 48000
    channels = 2
    payload_type = None
    wideband = True
    has_plc = True

    def __init__(
        self,
        *,
        bitrate: int = 24000,
        sample_rate: int = 48000,
        frame_ms: float = 20,
        complexity: int = 10,
        application: str = "voip",
        bandwidth: str | None = None,
        vbr: bool = True,
        cbr: bool | None = None,
        dtx: bool = False,
        fec: bool = False,
        packet_loss_perc: int = 0,
    ) -> None:
        self._enc = None
        self._dec = None
        self._configure(
            bitrate=bitrate, sample_rate=sample_rate, frame_ms=frame_ms, complexity=complexity,
            application=application, bandwidth=bandwidth, vbr=vbr, cbr=cbr, dtx=dtx, fec=fec,
            packet_loss_perc=packet_loss_perc,
        )
        self._open()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when libopus could be loaded, else how to install it."""
        _load()
        return _LIB_ERROR

    def _configure(
        self,
        *,
        bitrate: int = 24000,
        sample_rate: int = 48000,
        frame_ms: float = 20,
        complexity: int = 10,
        application: str = "voip",
        bandwidth: str | None = None,
        vbr: bool = True,
        cbr: bool | None = None,
        dtx: bool = False,
        fec: bool = False,
        packet_loss_perc: int = 0,
    ) -> None:
        n = self.name
        self.bitrate = check_int_range(n, "bitrate", bitrate, 6000, 510000)
        self.sample_rate = check_sample_rate(n, sample_rate, SAMPLE_RATES)
        self.frame_ms = check_frame_ms(n, frame_ms, FRAME_MS)
        self.complexity = check_int_range(n, "complexity", complexity, 0, 10)
        self.application = check_choice(n, "application", application, tuple(APPLICATIONS))
        self.bandwidth = check_choice(n, "bandwidth", bandwidth, (None, *BANDWIDTHS))
        vbr = check_bool(n, "vbr", vbr)
        if cbr is not None:
            cbr = check_bool(n, "cbr", cbr)
            if cbr == vbr:
                raise ParameterError(f"opus: cbr={cbr} contradicts vbr={vbr}; give only one of them")
        self.vbr = vbr
        self.dtx = check_bool(n, "dtx", dtx)
        self.fec = check_bool(n, "fec", fec)
        self.packet_loss_perc = check_int_range(n, "packet_loss_perc", packet_loss_perc, 0, 100)
        self.has_fec = self.fec
        self.wideband = self.sample_rate >= 16000 and self.bandwidth not in ("nb", "mb")
        # documented value; replaced by OPUS_GET_LOOKAHEAD when the encoder is opened
        self.lookahead_ms = 2.5 if self.application == "restricted-lowdelay" else 6.5
        self.last_packet_bandwidth: str | None = None

    @property
    def cbr(self) -> bool:
        """True when coding at constant bit rate (``not vbr``)."""
        return not self.vbr

    # ------------------------------------------------------------------ state
    def _open(self) -> None:
        lib = _load()
        if lib is None:
            raise CodecUnavailableError(f"opus: {_LIB_ERROR}")
        self._lib = lib
        err = ctypes.c_int(0)
        enc = lib.opus_encoder_create(self.sample_rate, 1, APPLICATIONS[self.application], ctypes.byref(err))
        _check(err.value, "opus_encoder_create")
        self._enc = enc
        dec = lib.opus_decoder_create(self.sample_rate, 1, ctypes.byref(err))
        _check(err.value, "opus_decoder_create")
        self._dec = dec
        self._apply_ctls()
        self._pcm_out = (ctypes.c_int16 * self.frame_samples)()
        self._buf = ctypes.create_string_buffer(_MAX_PACKET)

    def _ctl(self, request: str, value: int) -> None:
        _check(self._lib.opus_encoder_ctl(self._enc, CTL[request], ctypes.c_int32(value)), f"OPUS_{request}({value})")

    def _apply_ctls(self) -> None:
        self._ctl("SET_BITRATE", self.bitrate)
        self._ctl("SET_COMPLEXITY", self.complexity)
        self._ctl("SET_VBR", 1 if self.vbr else 0)
        self._ctl("SET_MAX_BANDWIDTH", BANDWIDTHS[self.bandwidth] if self.bandwidth else BANDWIDTHS["fb"])
        self._ctl("SET_INBAND_FEC", 1 if self.fec else 0)
        self._ctl("SET_PACKET_LOSS_PERC", self.packet_loss_perc)
        self._ctl("SET_DTX", 1 if self.dtx else 0)
        if self.application == "voip":
            self._ctl("SET_SIGNAL", SIGNAL_VOICE)
        look = ctypes.c_int32(0)
        _check(self._lib.opus_encoder_ctl(self._enc, CTL["GET_LOOKAHEAD"], ctypes.byref(look)), "OPUS_GET_LOOKAHEAD")
        self.lookahead_ms = look.value * 1000.0 / self.sample_rate

    def _close(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_enc", None):
            lib.opus_encoder_destroy(self._enc)
            self._enc = None
        if getattr(self, "_dec", None):
            lib.opus_decoder_destroy(self._dec)
            self._dec = None

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def reset(self) -> None:
        """Forget encoder and decoder state (``OPUS_RESET_STATE`` on both)."""
        _check(self._lib.opus_encoder_ctl(self._enc, CTL["RESET_STATE"]), "OPUS_RESET_STATE")
        _check(self._lib.opus_decoder_ctl(self._dec, CTL["RESET_STATE"]), "OPUS_RESET_STATE")

    # ------------------------------------------------------------------ facts
    @property
    def fmtp(self) -> str | None:
        parts = ["minptime=10"]
        if self.fec:
            parts.append("useinbandfec=1")
        if self.dtx:
            parts.append("usedtx=1")
        if not self.vbr:
            parts.append("cbr=1")
        parts.append(f"maxaveragebitrate={self.bitrate}")
        if self.sample_rate < 48000:
            parts.append(f"maxplaybackrate={self.sample_rate}")
            parts.append(f"sprop-maxcapturerate={self.sample_rate}")
        return ";".join(parts)

    def params(self) -> dict:
        return {
            "bitrate": self.bitrate,
            "sample_rate": self.sample_rate,
            "frame_ms": self.frame_ms,
            "complexity": self.complexity,
            "application": self.application,
            "bandwidth": self.bandwidth,
            "vbr": self.vbr,
            "dtx": self.dtx,
            "fec": self.fec,
            "packet_loss_perc": self.packet_loss_perc,
        }

    # ------------------------------------------------------------- operations
    def _encode_frame(self, pcm: np.ndarray) -> bytes:
        x = np.ascontiguousarray(pcm, dtype=np.int16)
        n = self._lib.opus_encode(
            self._enc, x.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), x.shape[0], self._buf, _MAX_PACKET
        )
        _check(n, "opus_encode")
        data = self._buf.raw[:n]
        if n >= 1:
            bw = self._lib.opus_packet_get_bandwidth(data)
            self.last_packet_bandwidth = _BANDWIDTH_NAMES.get(bw)
        return data

    def _decode(self, data: bytes | None, fec: int) -> np.ndarray:
        n = self.frame_samples
        got = self._lib.opus_decode(self._dec, data, len(data) if data else 0, self._pcm_out, n, fec)
        _check(got, "opus_decode")
        return np.frombuffer(self._pcm_out, dtype=np.int16, count=got).copy()

    def _decode_payload(self, payload: bytes) -> np.ndarray:
        if not payload:
            return self._decode(None, 0)
        return self._decode(payload, 0)

    def conceal(self) -> np.ndarray:
        """libopus packet-loss concealment (``opus_decode`` with no data)."""
        return self._fit(self._decode(None, 0))

    def decode_fec(self, next_payload: bytes) -> np.ndarray | None:
        """Rebuild the lost frame from the LBRR data in the next payload.

        Returns None when FEC is off or the next payload carries no LBRR data (checked
        with ``opus_packet_has_lbrr`` where libopus has it, >= 1.5). Call it *before*
        decoding ``next_payload`` itself, as libopus requires.
        """
        if not self.fec or not next_payload:
            return None
        if hasattr(self._lib, "opus_packet_has_lbrr"):
            has = self._lib.opus_packet_has_lbrr(bytes(next_payload), len(next_payload))
            if has <= 0:
                return None
        return self._fit(self._decode(bytes(next_payload), 1))
