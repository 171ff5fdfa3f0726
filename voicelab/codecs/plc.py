"""Generic packet-loss concealment by waveform substitution ("G.711 Appendix I-like").

Codecs without concealment of their own (G.711, G.722, G.726, L16) hide a lost payload
with this class. It follows the ideas of ITU-T G.711 Appendix I (pitch waveform
replication) but is **not** a bit-exact implementation of it:

* a history of decoded output is kept;
* on the first lost frame the pitch period is estimated by normalized
  autocorrelation of the last 20 ms against lags of 2.5..15 ms (smallest lag within
  1 % of the best, to avoid octave errors);
* the last pitch period is repeated; every join is smoothed by overlap-adding a quarter
  period of the signal that precedes the copied period, and the very first join gets a
  decaying offset correction so the waveform stays continuous;
* after 10 ms of loss the last two periods are repeated, after 20 ms the last three
  (each switch crossfaded over a quarter period), which avoids the buzzy sound of one
  period repeated for long;
* the output is attenuated linearly by 20 % per 10 ms starting after the first 10 ms,
  so it is muted after 60 ms of consecutive loss;
* on the first good frame after a loss the concealed continuation is crossfaded into
  the real signal over 4 ms (or the frame, if shorter).

Unlike Appendix I, it adds no delay: Appendix I holds back 3.75 ms of output so it can
smooth the join *before* the loss; here the join is smoothed inside the first concealed
frame instead, so codecs keep their look-ahead unchanged.

Why our own: no maintained Python library offers a codec-independent PLC for int16
frames (FFmpeg's decoders only conceal inside some codecs, and libopus/bcg729/AMR have
their own, which the lab uses where they exist).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CodecError, ParameterError

__all__ = ["WaveformSubstitutionPLC", "GenericPLCMixin"]

_MIN_PITCH_MS = 2.5
_MAX_PITCH_MS = 15.0
_CORR_MS = 20.0
_FULL_GAIN_MS = 10.0
_MUTE_MS = 60.0
_RECOVERY_MS = 4.0


class WaveformSubstitutionPLC:
    """Pitch-repetition concealment for any int16 frame stream (G.711 Appendix I-like).

    Parameters
    ----------
    sample_rate : int
        Rate in Hz of the frames.
    frame_samples : int
        Samples per frame (what :meth:`conceal` returns).

    Examples
    --------
    >>> plc = WaveformSubstitutionPLC(8000, 160)
    >>> good = plc.update(np.zeros(160, dtype=np.int16))  # every decoded frame
    >>> lost = plc.conceal()                              # for a lost one
    >>> lost.shape
    (160,)
    """

    def __init__(self, sample_rate: int, frame_samples: int) -> None:
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ParameterError(f"PLC: sample_rate must be a positive integer in Hz, got {sample_rate!r}")
        if not isinstance(frame_samples, (int, np.integer)) or frame_samples <= 0:
            raise ParameterError(f"PLC: frame_samples must be a positive integer, got {frame_samples!r}")
        self.sample_rate = int(sample_rate)
        self.frame_samples = int(frame_samples)
        self._min_lag = max(2, int(round(_MIN_PITCH_MS * sample_rate / 1000)))
        self._max_lag = int(round(_MAX_PITCH_MS * sample_rate / 1000))
        self._corr_len = int(round(_CORR_MS * sample_rate / 1000))
        hist = max(3 * self._max_lag + self._max_lag // 4 + 2, self._corr_len + self._max_lag) + 1
        self._history = np.zeros(hist, dtype=np.float64)
        self._lost = 0  # samples concealed in the current loss episode
        self._pitch = 0
        self._templates: dict[int, np.ndarray] = {}
        self._step = 0.0
        self._episode: np.ndarray | None = None  # the current episode's concealment, to the mute point
        self._mute_n = int(math.ceil(_MUTE_MS * sample_rate / 1000.0))

    # --------------------------------------------------------------- public
    @property
    def pitch_ms(self) -> float:
        """Pitch period (ms) estimated at the start of the last loss episode (0 if none)."""
        return self._pitch * 1000.0 / self.sample_rate

    @property
    def in_loss(self) -> bool:
        """True while frames are being concealed (no good frame since)."""
        return self._lost > 0

    def reset(self) -> None:
        """Forget the history (a new call)."""
        self._history[:] = 0.0
        self._lost = 0
        self._templates = {}

    def update(self, frame: np.ndarray) -> np.ndarray:
        """Record one good decoded frame; returns it, smoothed if it ends a loss.

        Parameters
        ----------
        frame : numpy.ndarray of int16
            The decoded frame (any length; usually ``frame_samples``).

        Returns
        -------
        numpy.ndarray of int16
            The frame to play out: unchanged, or crossfaded from the concealment into
            the real signal when it is the first good frame after a loss.
        """
        x = np.asarray(frame)
        if x.ndim != 1:
            raise CodecError(f"PLC: update() needs a 1-D int16 frame, got shape {x.shape}")
        if self._lost == 0 and x.dtype == np.int16:  # no loss to end: the frame plays as it is
            self._push(x)
            return x
        out = x.astype(np.float64)
        if self._lost > 0 and out.size:
            r = min(out.size, int(round(_RECOVERY_MS * self.sample_rate / 1000)))
            cont = self._synthesize(r)
            w = (np.arange(1, r + 1)) / (r + 1)
            out[:r] = cont * (1.0 - w) + out[:r] * w
            self._lost = 0
            self._templates = {}
        self._push(out)
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)

    def conceal(self) -> np.ndarray:
        """One frame of concealment (``frame_samples`` int16 samples) for a lost frame."""
        n = self.frame_samples
        if self._lost == 0:
            self._start_episode()
        out = self._synthesize(n)
        self._lost += n
        res = np.clip(np.round(out), -32768, 32767)
        self._push(res)
        return res.astype(np.int16)

    # ------------------------------------------------------------- internals
    def _push(self, x: np.ndarray) -> None:
        h = self._history
        if x.size >= h.size:
            h[:] = x[-h.size:]
        else:
            h[:-x.size] = h[x.size:]
            h[-x.size:] = x

    def _estimate_pitch(self) -> int:
        h = self._history
        w = self._corr_len
        lags = np.arange(self._min_lag, self._max_lag + 1)
        seg = h[-w:]
        e0 = float(np.dot(seg, seg))
        if e0 <= 1e-6:
            return self._max_lag
        # windows ending `lag` samples earlier, one row per lag
        from numpy.lib.stride_tricks import sliding_window_view

        region = h[-(w + self._max_lag):]
        win = sliding_window_view(region, w)  # win[i] = region[i:i+w]
        # lag L corresponds to start index max_lag - L
        rows = win[self._max_lag - lags]
        num = rows @ seg
        den = np.sqrt(np.einsum("ij,ij->i", rows, rows) * e0) + 1e-9
        r = num / den
        best = float(np.max(r))
        ok = np.nonzero(r >= best - 0.01 * abs(best))[0]
        return int(lags[ok[0]])

    def _start_episode(self) -> None:
        h = self._history
        p = self._estimate_pitch()
        self._pitch = p
        ola = max(1, p // 4)
        self._ola = ola
        self._templates = {}
        for k in (1, 2, 3):
            kp = k * p
            t = h[-kp:].copy()
            # smooth the wrap: the end of the template fades into what precedes its start
            pre = h[-kp - ola:-kp]
            w = np.arange(1, ola + 1) / (ola + 1)
            t[-ola:] = t[-ola:] * (1.0 - w) + pre * w
            self._templates[k] = t
        # first join: continue from the last played sample
        self._step = float(h[-1] - h[-p - 1])
        self._episode = None

    def _synthesize(self, count: int) -> np.ndarray:
        """Concealment samples for positions ``_lost .. _lost+count`` of the episode.

        The whole episode up to the mute point is computed once, when the first frame is
        concealed (every sample is an element-wise function of its position, so this is
        exactly what computing it frame by frame gave); later frames are slices of it.
        """
        if not self._templates:
            self._start_episode()
        if self._episode is None:
            self._episode = self._synthesize_at(np.arange(self._mute_n))
        lo, ep = self._lost, self._episode
        out = np.zeros(count)
        if lo < ep.size:
            part = ep[lo : lo + count]
            out[: part.size] = part
        return out

    def _synthesize_at(self, pos: np.ndarray) -> np.ndarray:
        """Concealment samples at episode positions ``pos``."""
        count = pos.size
        sr = self.sample_rate
        full = _FULL_GAIN_MS * sr / 1000.0
        seg_len = int(round(10.0 * sr / 1000))
        ola = self._ola

        def ext(k: int, idx: np.ndarray) -> np.ndarray:
            t = self._templates[k]
            return t[idx % t.size]

        k_of = np.minimum(pos // seg_len + 1, 3)
        out = np.empty(count)
        for k in (1, 2, 3):
            m = k_of == k
            if np.any(m):
                out[m] = ext(k, pos[m])
        # crossfade at the switch from k-1 to k periods
        for k in (2, 3):
            start = (k - 1) * seg_len
            m = (pos >= start) & (pos < start + ola)
            if np.any(m):
                w = (pos[m] - start + 1) / (ola + 1)
                out[m] = ext(k - 1, pos[m]) * (1.0 - w) + ext(k, pos[m]) * w
        # continuity at the very first join
        m = pos < ola
        if np.any(m):
            out[m] += self._step * (1.0 - (pos[m] + 1) / (ola + 1))
        # 1 for the first 10 ms, then -20 % per 10 ms: 0 from 60 ms on
        ten_ms = 10.0 * sr / 1000.0
        gain = np.clip(1.0 - 0.2 * (pos - full) / ten_ms, 0.0, 1.0)
        gain = np.where(pos >= _MUTE_MS * sr / 1000.0, 0.0, gain)
        return out * gain


class GenericPLCMixin:
    """Adds :class:`WaveformSubstitutionPLC` to a codec without its own concealment.

    The codec sets ``self._plc`` to a :class:`WaveformSubstitutionPLC` (or None to
    switch concealment off) in its ``_open``; every decoded frame then passes through
    :meth:`WaveformSubstitutionPLC.update` and :meth:`conceal` delegates to it.
    """

    _plc: WaveformSubstitutionPLC | None = None

    def decode(self, payload: bytes) -> np.ndarray:  # type: ignore[override]
        out = super().decode(payload)  # type: ignore[misc]
        return self._plc.update(out) if self._plc is not None else out

    def conceal(self) -> np.ndarray:  # type: ignore[override]
        if self._plc is None:
            return super().conceal()  # type: ignore[misc]
        return self._plc.conceal()
