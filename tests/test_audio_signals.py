"""Test signals: shapes, levels, spectra, determinism, parameter errors."""

from __future__ import annotations

import numpy as np
import pytest

from voicelab.audio import active_level_db, chirp, click_train, composite_source_signal, silence, tone
from voicelab.audio.signals import CSS_PAUSE_MS, CSS_PN_MS, CSS_VOICED_MS
from voicelab.errors import ParameterError


def _rms_db(x):
    return 20 * np.log10(np.sqrt(np.mean(x ** 2)))


def _peak_frequency(x, sample_rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / sample_rate)[np.argmax(spec)]


@pytest.mark.parametrize("sample_rate", [8000, 16000, 48000])
@pytest.mark.parametrize("level_db", [-3.02, -20.0, -40.0])
def test_tone_shape_level_frequency(sample_rate, level_db):
    x = tone(frequency_hz=440.0, duration_s=0.5, sample_rate=sample_rate, level_db=level_db)
    assert x.dtype == np.float64 and x.shape == (sample_rate // 2,)
    assert _rms_db(x) == pytest.approx(level_db, abs=0.01)
    assert np.max(np.abs(x)) == pytest.approx(np.sqrt(2) * 10 ** (level_db / 20), rel=1e-3)
    assert _peak_frequency(x, sample_rate) == pytest.approx(440.0, abs=2.0)


def test_tone_rejects_clipping_and_aliasing():
    with pytest.raises(ParameterError, match="clips"):
        tone(level_db=0.0)
    with pytest.raises(ParameterError, match="half the sample rate"):
        tone(frequency_hz=4000.0, sample_rate=8000)
    with pytest.raises(ParameterError):
        tone(duration_s=-1.0)
    with pytest.raises(TypeError):
        tone(1000.0)  # keyword-only


def test_silence():
    x = silence(duration_s=0.25, sample_rate=16000)
    assert x.shape == (4000,) and x.dtype == np.float64 and not np.any(x)
    assert silence(duration_s=0.0, sample_rate=8000).size == 0
    with pytest.raises(ParameterError):
        silence(duration_s=1.0, sample_rate=0)


def test_chirp_sweeps_up_at_constant_level():
    sr = 16000
    x = chirp(duration_s=2.0, sample_rate=sr, f0_hz=100.0, f1_hz=4000.0, level_db=-20.0)
    assert x.shape == (2 * sr,)
    assert _rms_db(x) == pytest.approx(-20.0, abs=0.1)
    quarter = x.size // 8
    early = _peak_frequency(x[:quarter], sr)
    late = _peak_frequency(x[-quarter:], sr)
    # log sweep: instantaneous frequency 100 * 40 ** (t / 2 s)
    assert 100 <= early <= 100 * 40 ** (0.125 + 0.05)
    assert 4000 * 40 ** (-0.125 - 0.05) <= late <= 4000


def test_chirp_default_end_frequency():
    sr = 8000
    x = chirp(duration_s=1.0, sample_rate=sr)
    late = _peak_frequency(x[-sr // 40:], sr)
    f1 = 0.45 * sr
    centre = 100.0 * (f1 / 100.0) ** (1 - 1 / 80)  # sweep frequency in the middle of the last 25 ms
    assert late == pytest.approx(centre, rel=0.03)
    with pytest.raises(ParameterError):
        chirp(sample_rate=8000, f1_hz=5000.0)


def test_click_train_positions_and_level():
    sr = 8000
    x = click_train(duration_s=1.0, sample_rate=sr, interval_ms=250.0, level_db=-6.0)
    assert x.shape == (sr,)
    assert np.flatnonzero(x).tolist() == [0, 2000, 4000, 6000]
    assert x[0] == pytest.approx(10 ** (-6 / 20))
    with pytest.raises(ParameterError):
        click_train(duration_s=1.0, sample_rate=sr, level_db=3.0)
    with pytest.raises(ParameterError):
        click_train(duration_s=1.0, sample_rate=sr, interval_ms=0)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 48000])
def test_css_structure_and_level(sample_rate):
    x = composite_source_signal(duration_s=3.0, sample_rate=sample_rate, seed=0)
    assert x.shape == (3 * sample_rate,) and x.dtype == np.float64
    assert active_level_db(x, sample_rate) == pytest.approx(-26.0, abs=0.05)
    assert np.max(np.abs(x)) < 1.0
    period = int(round(CSS_VOICED_MS * sample_rate / 1000)) + int(round(CSS_PN_MS * sample_rate / 1000)) \
        + int(round(CSS_PAUSE_MS * sample_rate / 1000))
    pause_start = int(round((CSS_VOICED_MS + CSS_PN_MS) * sample_rate / 1000))
    for k in range(x.size // period):
        seg = x[k * period: (k + 1) * period]
        assert not np.any(seg[pause_start:]), "pause must be silent"
        assert np.sqrt(np.mean(seg[:pause_start] ** 2)) > 1e-3


def test_css_voiced_part_is_harmonic_and_noise_part_is_broadband():
    sr = 16000
    x = composite_source_signal(duration_s=0.35, sample_rate=sr, seed=5)
    n_voiced = int(round(CSS_VOICED_MS * sr / 1000))
    n_pn = int(round(CSS_PN_MS * sr / 1000))
    voiced = x[:n_voiced]
    pn = x[n_voiced:n_voiced + n_pn]

    def flatness(seg):
        p = np.abs(np.fft.rfft(seg * np.hanning(seg.size), 4096)) ** 2 + 1e-20
        band = p[int(300 / sr * 4096): int(4000 / sr * 4096)]
        return np.exp(np.mean(np.log(band))) / np.mean(band)

    assert flatness(voiced) < 0.1   # line spectrum
    assert flatness(pn) > 0.2       # noise-like


def test_css_seeded():
    a = composite_source_signal(duration_s=1.0, sample_rate=8000, seed=1)
    b = composite_source_signal(duration_s=1.0, sample_rate=8000, seed=1)
    c = composite_source_signal(duration_s=1.0, sample_rate=8000, seed=2)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ParameterError):
        composite_source_signal(seed=1.5)
