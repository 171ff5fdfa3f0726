"""The generic waveform-substitution concealment (voicelab.codecs.plc)."""

from __future__ import annotations

import numpy as np
import pytest

from voicelab.codecs.plc import WaveformSubstitutionPLC
from voicelab.errors import CodecError, ParameterError

SR = 8000
N = 80  # 10 ms frames


def tone(n: int, *, freq: float = 1000.0, sample_rate: int = SR, amp: float = 8000.0, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / sample_rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def voiced(n: int, *, f0: float = 160.0, sample_rate: int = SR, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / sample_rate
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return np.round(5000 * x).astype(np.int16)


def run(signal: np.ndarray, lost: set[int], *, frame: int = N, plc: bool = True) -> np.ndarray:
    p = WaveformSubstitutionPLC(SR, frame)
    out = []
    for i in range(len(signal) // frame):
        if i in lost:
            out.append(p.conceal() if plc else np.zeros(frame, dtype=np.int16))
        else:
            out.append(p.update(signal[i * frame:(i + 1) * frame]))
    return np.concatenate(out)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = ref.astype(np.float64) - test.astype(np.float64)
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum(err**2), 1e-9))


def test_good_frames_pass_unchanged():
    x = voiced(40 * N)
    assert np.array_equal(run(x, set()), x)


def test_first_10ms_not_silent_and_close_to_level():
    x = voiced(40 * N)
    y = run(x, {20})
    lost = y[20 * N:21 * N]
    assert rms(lost) > 0.7 * rms(x[20 * N:21 * N])


@pytest.mark.parametrize("frame", [80, 160])
def test_decays_linearly_and_mutes_at_60ms(frame):
    x = voiced(60 * 80)
    k = 8 * 80 // frame  # 80 ms of loss starting at frame 20
    first = 20 * 80 // frame
    y = run(x, set(range(first, first + k)), frame=frame)
    seg = y[20 * 80:28 * 80].astype(np.float64)
    per10 = [rms(seg[i * 80:(i + 1) * 80]) for i in range(8)]
    ref = rms(x[19 * 80:20 * 80])
    # 0-10 ms full level, then falling; nothing after 60 ms
    assert per10[0] > 0.7 * ref
    assert per10[0] > per10[2] > per10[4] > per10[5]
    assert np.all(seg[60 * 8:] == 0)
    # the gain at 30 ms is 60 % of full
    assert 0.45 < per10[3] / per10[0] < 0.75


@pytest.mark.parametrize("freq,margin_db", [(1000.0, 10.0), (440.0, 4.0)])
def test_tone_concealment_beats_zero_insertion(freq, margin_db):
    x = tone(100 * N, freq=freq)
    lost = {30, 31, 55, 70, 71, 72}
    s_plc = snr_db(x, run(x, lost))
    s_zero = snr_db(x, run(x, lost, plc=False))
    assert s_plc > s_zero + margin_db, (s_plc, s_zero)


def test_pitch_estimate_on_voiced_signal():
    p = WaveformSubstitutionPLC(SR, N)
    x = voiced(20 * N, f0=125.0)  # period 8 ms
    for i in range(20):
        p.update(x[i * N:(i + 1) * N])
    p.conceal()
    assert p.pitch_ms == pytest.approx(8.0, abs=0.25)


def test_recovery_is_smooth():
    x = voiced(40 * N)
    y = run(x, {20, 21})
    # no step at the start of the first good frame larger than the signal's own steps
    d = np.abs(np.diff(y.astype(np.int32)))
    d_ref = np.abs(np.diff(x.astype(np.int32))).max()
    assert d[22 * N - 2:22 * N + 40].max() <= 1.5 * d_ref
    assert d[20 * N - 2:20 * N + 40].max() <= 1.5 * d_ref


def test_silence_history_gives_silence():
    p = WaveformSubstitutionPLC(16000, 320)
    p.update(np.zeros(320, dtype=np.int16))
    assert not np.any(p.conceal())


def test_bad_arguments():
    with pytest.raises(ParameterError):
        WaveformSubstitutionPLC(0, 160)
    with pytest.raises(ParameterError):
        WaveformSubstitutionPLC(8000, -1)
    with pytest.raises(CodecError):
        WaveformSubstitutionPLC(8000, 160).update(np.zeros((2, 80), dtype=np.int16))
