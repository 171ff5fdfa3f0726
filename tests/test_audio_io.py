"""WAV I/O, sample conversion, resampling and P.56 active speech level."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import soundfile as sf

from voicelab.audio import (
    active_level_db,
    normalize_level,
    read_wav,
    resample,
    speech_activity,
    to_float,
    to_int16,
    tone,
    write_wav,
)
from voicelab.errors import AudioError, ParameterError, VoicelabError


# --- int16 conversion ---------------------------------------------------------------------

def test_to_int16_clips_and_rounds():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0, 1 / 65536 * 0.9])
    assert to_int16(x).tolist() == [0, 16384, -16384, 32767, -32768, 32767, -32768, 0]
    assert to_int16(x).dtype == np.int16


def test_to_float_inverts_to_int16_within_half_step():
    x = np.random.default_rng(1).uniform(-0.99, 0.99, 1000)
    y = to_float(to_int16(x))
    assert y.dtype == np.float64
    assert np.max(np.abs(y - x)) <= 0.5 / 32768 + 1e-12


def test_to_float_rejects_float_input():
    with pytest.raises(AudioError, match="integer"):
        to_float(np.zeros(3))


# --- read / write ---------------------------------------------------------------------------

def test_write_read_roundtrip(tmp_path):
    x = tone(frequency_hz=440.0, duration_s=0.25, sample_rate=8000, level_db=-12.0)
    path = write_wav(tmp_path / "a" / "b" / "t.wav", x, 8000)  # parents created
    assert path.is_file()
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (8000, 1, "PCM_16", "WAV")
    y, sr = read_wav(path)
    assert sr == 8000 and y.dtype == np.float64 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= 0.5 / 32768 + 1e-12


def test_read_wav_mixes_stereo_down(tmp_path):
    left = np.full(100, 0.5)
    right = np.full(100, -0.25)
    sf.write(str(tmp_path / "st.wav"), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y, sr = read_wav(tmp_path / "st.wav")
    assert sr == 16000 and y.shape == (100,)
    np.testing.assert_allclose(y, 0.125)


def test_read_wav_resamples_on_request(tmp_path):
    x = tone(frequency_hz=300.0, duration_s=0.5, sample_rate=8000, level_db=-10.0)
    write_wav(tmp_path / "t.wav", x, 8000)
    y, sr = read_wav(tmp_path / "t.wav", sample_rate=16000)
    assert sr == 16000 and y.size == 2 * x.size
    ref = tone(frequency_hz=300.0, duration_s=0.5, sample_rate=16000, level_db=-10.0)
    # away from the edges the resampled tone matches the tone made at 16 kHz
    assert np.max(np.abs(y[800:-800] - ref[800:-800])) < 2e-3


def test_read_missing_file_names_it(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav.*no such file"):
        read_wav(tmp_path / "nope.wav")


def test_read_garbage_bytes(tmp_path):
    p = tmp_path / "junk.wav"
    p.write_bytes(b"this is not a RIFF file at all" * 10)
    with pytest.raises(AudioError, match=r"junk\.wav.*not a readable WAV"):
        read_wav(p)


def test_read_truncated_header(tmp_path):
    x = to_int16(tone(duration_s=0.1, sample_rate=8000))
    p = tmp_path / "ok.wav"
    sf.write(str(p), x, 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(p.read_bytes()[:30])
    with pytest.raises(AudioError, match=r"cut\.wav"):
        read_wav(cut)


def test_read_empty_wav(tmp_path):
    p = tmp_path / "empty.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav.*no samples"):
        read_wav(p)


def test_read_zero_byte_file(tmp_path):
    p = tmp_path / "zero.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero\.wav"):
        read_wav(p)


def test_read_flac_content_with_wav_extension(tmp_path):
    p = tmp_path / "really_flac.wav"
    sf.write(str(p), np.zeros(800), 8000, format="FLAC")
    with pytest.raises(AudioError, match=r"really_flac\.wav.*FLAC.*not WAV"):
        read_wav(p)


def test_read_wav_content_with_other_extension(tmp_path):
    # the content decides, not the name
    p = tmp_path / "speech.dat"
    sf.write(str(p), np.full(80, 0.25), 8000, format="WAV", subtype="PCM_16")
    y, sr = read_wav(p)
    assert sr == 8000 and np.allclose(y, 0.25)


def test_read_nan_samples(tmp_path):
    p = tmp_path / "nan.wav"
    x = np.zeros(100)
    x[50] = np.nan
    sf.write(str(p), x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*NaN"):
        read_wav(p)


def test_read_directory(tmp_path):
    with pytest.raises(AudioError, match="directory"):
        read_wav(tmp_path)


@pytest.mark.parametrize("bad", [0, -8000, 8000.5, "8000", None, True])
def test_write_wav_bad_rate(tmp_path, bad):
    with pytest.raises(ParameterError):
        write_wav(tmp_path / "x.wav", np.zeros(10), bad)


@pytest.mark.parametrize("bad", [np.zeros((10, 2)), np.array([0.0, np.inf]), np.array(["a", "b"])])
def test_write_wav_bad_samples(tmp_path, bad):
    with pytest.raises(AudioError):
        write_wav(tmp_path / "x.wav", bad, 8000)


# --- resample -------------------------------------------------------------------------------

@pytest.mark.parametrize("orig,target", [(8000, 16000), (16000, 8000), (48000, 16000), (22050, 16000), (16000, 48000)])
def test_resample_length_and_content(orig, target):
    x = tone(frequency_hz=500.0, duration_s=1.0, sample_rate=orig, level_db=-10.0)
    y = resample(x, orig, target)
    assert y.dtype == np.float64 and y.ndim == 1
    assert abs(y.size - x.size * target / orig) <= 1
    ref = tone(frequency_hz=500.0, duration_s=1.0, sample_rate=target, level_db=-10.0)
    m = target // 20
    assert np.max(np.abs(y[m:-m] - ref[m:y.size - m])) < 1e-3


def test_resample_identity_returns_copy():
    x = np.linspace(-0.5, 0.5, 100)
    y = resample(x, 16000, 16000)
    assert np.array_equal(x, y) and y is not x


@pytest.mark.parametrize("rates", [(0, 8000), (8000, -1), (float("nan"), 8000), ("8k", 8000)])
def test_resample_bad_rates(rates):
    with pytest.raises(ParameterError):
        resample(np.zeros(100), *rates)


def test_resample_bad_shape():
    with pytest.raises(AudioError, match="1-D"):
        resample(np.zeros((100, 2)), 8000, 16000)


# --- P.56 active level -----------------------------------------------------------------------

@pytest.mark.parametrize("amplitude", [0.5, 0.1, 0.01])
def test_active_level_of_tone(amplitude):
    sr = 16000
    x = amplitude * np.sin(2 * np.pi * 1000 * np.arange(3 * sr) / sr)
    expected = 20 * np.log10(amplitude / np.sqrt(2))
    assert active_level_db(x, sr) == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("on_s,off_s", [(0.5, 0.5), (1.0, 1.0), (2.0, 2.0)])
def test_active_level_ignores_pauses(on_s, off_s):
    """A tone on half the time: P.56 counts the active part plus its 0.2 s hangover."""
    sr = 8000
    level = -20.0
    x = tone(frequency_hz=1000.0, duration_s=8.0, sample_rate=sr, level_db=level)
    period = int((on_s + off_s) * sr)
    x = x * ((np.arange(x.size) % period) < on_s * sr)
    long_term = 10 * np.log10(np.mean(x ** 2))
    assert long_term == pytest.approx(level - 3.01, abs=0.01)
    got = active_level_db(x, sr)
    activity = speech_activity(x, sr)
    on_fraction = on_s / (on_s + off_s)
    # activity = tone on + hangover 0.2 s + envelope decay (< 0.1 s) per period
    assert (on_s + 0.2) / (on_s + off_s) <= activity <= (on_s + 0.3) / (on_s + off_s)
    assert got == pytest.approx(level + 10 * np.log10(on_fraction / activity), abs=0.05)
    assert got > long_term + 1.0  # not the long-term level


def test_active_level_gain_invariance():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(16000) * np.repeat(rng.uniform(0, 1, 16) > 0.5, 1000) * 0.05
    a = active_level_db(x, 16000)
    assert active_level_db(0.1 * x, 16000) == pytest.approx(a - 20.0, abs=0.05)


@pytest.mark.parametrize("bad", [np.zeros(8000), np.zeros(0), np.full(100, 0.5)])
def test_active_level_silence_or_too_short(bad):
    with pytest.raises(AudioError, match="silent|empty|too short"):
        active_level_db(bad, 8000)


def test_normalize_level_tone():
    x = tone(duration_s=2.0, sample_rate=8000, level_db=-40.0)
    y = normalize_level(x, 8000, level_db=-26.0)
    assert active_level_db(y, 8000) == pytest.approx(-26.0, abs=0.01)
    assert y.max() / x.max() == pytest.approx(10 ** (14 / 20), rel=0.01)


def test_normalize_level_would_clip():
    x = tone(duration_s=1.0, sample_rate=8000, level_db=-30.0)
    with pytest.raises(AudioError, match="clip"):
        normalize_level(x, 8000, level_db=-1.0)


def test_normalize_level_bad_target():
    with pytest.raises(ParameterError):
        normalize_level(np.ones(100), 8000, level_db=float("nan"))


@pytest.mark.natural
@pytest.mark.parametrize("name", ["pesq_ref_speech_16k.wav", "cmu_arctic_aew_a0001.wav", "osr_us_000_0034_8k.wav"])
def test_normalize_natural_speech(name, natural_speech_dir):
    x, sr = read_wav(natural_speech_dir / name)
    y = normalize_level(x, sr, level_db=-26.0)
    assert active_level_db(y, sr) == pytest.approx(-26.0, abs=0.1)
    # speech has pauses: its activity is well below 1 and its active level above the long-term level
    assert 0.3 < speech_activity(x, sr) < 1.0
    assert active_level_db(x, sr) > 10 * np.log10(np.mean(x ** 2))


def test_errors_share_the_root(tmp_path):
    with pytest.raises(VoicelabError):
        read_wav(tmp_path / "missing.wav")
