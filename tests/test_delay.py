"""Delay estimation and alignment: sub-millisecond accuracy through realistic channels."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

from voicelab.audio import (
    DelayEstimate,
    align,
    composite_source_signal,
    estimate_delay,
    read_wav,
    resample,
    synthesize,
)
from voicelab.errors import AudioError, ParameterError

TOLERANCE_MS = 0.2


# --- channel building blocks (test-local, independent of the code under test) ---------------

def fractional_delay(x: np.ndarray, delay_samples: float, extra: int) -> np.ndarray:
    """Delay by a (fractional) number of samples: band-limited shift by an FFT phase ramp."""
    n = x.size + extra
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(x, nfft) * np.exp(-2j * np.pi * np.fft.rfftfreq(nfft) * delay_samples)
    return np.fft.irfft(spec, nfft)[:n]


def mu_law(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """G.711-like mu-law companding with 8-bit quantization."""
    y = np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu)
    y = np.round(y * 127) / 127
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def telephone_channel(x, sample_rate, delay_ms, rng, *, gain=0.3, snr_db=20.0, extra_s=0.3):
    """Delay, 300-3400 Hz band-pass (zero phase, so it adds no delay), gain, mu-law, noise."""
    y = fractional_delay(x, delay_ms * sample_rate / 1000.0, int(extra_s * sample_rate))
    sos = butter(4, [300 / (sample_rate / 2), 3400 / (sample_rate / 2)], btype="bandpass", output="sos")
    y = sosfiltfilt(sos, y)
    y = mu_law(gain * y / np.max(np.abs(y)))
    power = np.mean(y ** 2)
    return y + rng.standard_normal(y.size) * np.sqrt(power / 10 ** (snr_db / 10))


DELAYS_MS = [0.0, 20.0, 37.0625, 123.4567, 250.3]


def _check_channel(x, sample_rate, method, rng):
    for delay_ms in DELAYS_MS:
        y = telephone_channel(x, sample_rate, delay_ms, rng)
        est = estimate_delay(x, y, sample_rate, method=method)
        assert isinstance(est, DelayEstimate) and est.method == method
        assert abs(est.delay_ms - delay_ms) < TOLERANCE_MS, (delay_ms, est)
        assert est.delay_samples == pytest.approx(est.delay_ms * sample_rate / 1000)
        assert est.confidence > 0.5


@pytest.mark.natural
@pytest.mark.parametrize("method", ["gcc-phat", "xcorr"])
@pytest.mark.parametrize("name,sample_rate", [("pesq_ref_speech_16k.wav", 16000), ("cmu_arctic_axb_a0005.wav", 16000),
                                              ("pjsip_input_8k.wav", 8000)])
def test_natural_speech_through_telephone_channel(name, sample_rate, method, natural_speech_dir):
    x, sr = read_wav(natural_speech_dir / name, sample_rate=sample_rate)
    _check_channel(x, sr, method, np.random.default_rng(7))


@pytest.mark.parametrize("method", ["gcc-phat", "xcorr"])
@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_css_through_telephone_channel(sample_rate, method):
    x = composite_source_signal(duration_s=3.0, sample_rate=sample_rate, seed=3)
    _check_channel(x, sample_rate, method, np.random.default_rng(11))


@pytest.mark.parametrize("method", ["gcc-phat", "xcorr"])
def test_synthetic_speech_through_telephone_channel(method):
    x = synthesize("The birch canoe slid on the smooth planks.", sample_rate=16000)
    _check_channel(x, 16000, method, np.random.default_rng(5))


def test_fractional_delay_resolution():
    """Sub-sample steps of 0.25 sample are resolved (parabolic interpolation works)."""
    sr = 8000
    x = composite_source_signal(duration_s=2.0, sample_rate=sr, seed=0)
    for frac in (0.0, 0.25, 0.5, 0.75):
        y = fractional_delay(x, 40 + frac, 200)
        est = estimate_delay(x, y, sr)
        assert abs(est.delay_samples - (40 + frac)) < 0.1, (frac, est)


def test_degraded_shorter_and_longer_than_reference():
    sr = 16000
    rng = np.random.default_rng(2)
    x = composite_source_signal(duration_s=3.0, sample_rate=sr, seed=1)
    y = telephone_channel(x, sr, 80.0, rng, extra_s=2.0)  # 2 s longer
    assert abs(estimate_delay(x, y, sr).delay_ms - 80.0) < TOLERANCE_MS
    y_short = y[: int(1.8 * sr)]  # degraded cut before the reference ends
    assert abs(estimate_delay(x, y_short, sr).delay_ms - 80.0) < TOLERANCE_MS
    prefix = np.concatenate([np.zeros(int(0.5 * sr)), y])  # a long lead-in of silence
    assert abs(estimate_delay(x, prefix, sr).delay_ms - 580.0) < TOLERANCE_MS


def test_negative_delay_and_polarity_inversion():
    sr = 8000
    x = composite_source_signal(duration_s=2.0, sample_rate=sr, seed=4)
    lead = 96  # degraded starts 12 ms *earlier* than reference
    ref = np.concatenate([np.zeros(lead), x])
    est = estimate_delay(ref, -0.5 * x, sr)
    assert est.delay_ms == pytest.approx(-12.0, abs=TOLERANCE_MS)


def test_opus_codec_delay():
    """Through libopus (PyAV) the measured lag is the channel delay plus Opus's 6.5 ms look-ahead."""
    av = pytest.importorskip("av")
    try:
        enc = av.CodecContext.create("libopus", "w")
        dec = av.CodecContext.create("libopus", "r")
    except Exception as exc:  # pragma: no cover - depends on the FFmpeg build
        pytest.skip(f"libopus not available in PyAV: {exc}")
    sr = 48000
    x = resample(synthesize("Glue the sheet to the dark blue background.", sample_rate=16000), 16000, sr)
    x = np.concatenate([np.zeros(sr // 4), fractional_delay(x, 0.050 * sr, 0)])  # 300 ms in total
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = sr, "mono", "s16", 24000
    enc.open()
    dec.sample_rate, dec.layout = sr, "mono"
    dec.open()
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    frame = 960
    packets = []
    for i, start in enumerate(range(0, pcm.size, frame)):
        chunk = np.pad(pcm[start:start + frame], (0, max(0, start + frame - pcm.size)))
        f = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = sr, i * frame, fractions.Fraction(1, sr)
        packets += enc.encode(f)
    packets += enc.encode(None)
    out = [f.to_ndarray().reshape(-1) for p in packets for f in dec.decode(p)]
    y = np.concatenate(out).astype(np.float64)
    if np.issubdtype(out[0].dtype, np.integer):
        y /= 32768.0
    reference = np.concatenate([np.zeros(sr // 4), resample(synthesize(
        "Glue the sheet to the dark blue background.", sample_rate=16000), 16000, sr)])
    for method in ("gcc-phat", "xcorr"):
        est = estimate_delay(reference, y, sr, method=method)
        assert est.delay_ms == pytest.approx(50.0 + 6.5, abs=TOLERANCE_MS), (method, est)


def test_confidence_separates_echo_from_unrelated_audio():
    sr = 8000
    rng = np.random.default_rng(9)
    x = composite_source_signal(duration_s=2.0, sample_rate=sr, seed=2)
    echo = telephone_channel(x, sr, 30.0, rng)
    unrelated = composite_source_signal(duration_s=2.0, sample_rate=sr, seed=99)
    noise = rng.standard_normal(2 * sr) * 0.05
    for method in ("gcc-phat", "xcorr"):
        good = estimate_delay(x, echo, sr, method=method).confidence
        bad_css = estimate_delay(x, unrelated, sr, method=method).confidence
        bad_noise = estimate_delay(x, noise, sr, method=method).confidence
        assert 0.0 <= bad_noise < 0.2 and 0.0 <= bad_css < 0.2, (method, bad_noise, bad_css)
        assert 0.8 < good <= 1.0, (method, good)


def test_max_delay_limits_the_search():
    sr = 8000
    x = composite_source_signal(duration_s=2.0, sample_rate=sr, seed=6)
    y = np.concatenate([np.zeros(int(0.4 * sr)), x])  # 400 ms
    assert estimate_delay(x, y, sr, max_delay_ms=500).delay_ms == pytest.approx(400.0, abs=TOLERANCE_MS)
    limited = estimate_delay(x, y, sr, max_delay_ms=200)
    assert abs(limited.delay_ms) <= 200.0 + 1e-9


def test_align_removes_integer_delay():
    sr = 16000
    x = composite_source_signal(duration_s=2.0, sample_rate=sr, seed=8)
    y = 0.5 * np.concatenate([np.zeros(333), x, np.zeros(100)])
    ref, deg, est = align(x, y, sr)
    assert est.delay_samples == pytest.approx(333, abs=0.05)
    assert ref.size == deg.size == x.size
    np.testing.assert_allclose(deg, 0.5 * ref, atol=1e-12)
    # degraded earlier than reference: the reference is trimmed instead
    ref2, deg2, est2 = align(y, x, sr)
    assert est2.delay_samples == pytest.approx(-333, abs=0.05)
    np.testing.assert_allclose(ref2, 0.5 * deg2, atol=1e-12)


def test_errors():
    sr = 8000
    x = composite_source_signal(duration_s=1.0, sample_rate=sr, seed=0)
    with pytest.raises(AudioError, match="too short"):
        estimate_delay(x[:100], x, sr)
    with pytest.raises(AudioError, match="degraded is silent"):
        estimate_delay(x, np.zeros(sr), sr)
    with pytest.raises(AudioError, match="reference is silent"):
        align(np.zeros(sr), x, sr)
    with pytest.raises(AudioError, match="1-D"):
        estimate_delay(x, np.stack([x, x], axis=1), sr)
    with pytest.raises(AudioError, match="NaN"):
        estimate_delay(x, np.full(sr, np.nan), sr)
    with pytest.raises(ParameterError, match="method"):
        estimate_delay(x, x, sr, method="magic")
    with pytest.raises(ParameterError, match="max_delay_ms"):
        estimate_delay(x, x, sr, max_delay_ms=0)
    with pytest.raises(ParameterError):
        estimate_delay(x, x, -1)


def test_compensate_lines_up_and_pads():
    from voicelab.audio import compensate

    deg = np.arange(10, dtype=float)
    assert compensate(deg, 3.4, 5).tolist() == [3, 4, 5, 6, 7]
    assert compensate(deg, 8, 4).tolist() == [8, 9, 0, 0]
    assert compensate(deg, -2, 4).tolist() == [0, 0, 0, 1]
