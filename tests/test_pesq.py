"""PESQ, STOI and SNR metrics (voicelab.metrics.quality).

Natural-speech tests use the files in ``$VOICELAB_DATA`` (or its ``speech/``
subfolder), falling back to ``<repo>/../shared/datasets/speech``; they skip with a
reason when the files are absent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from voicelab.errors import MetricError, ParameterError, VoicelabError
from voicelab.metrics import pesq, pesq_nb, pesq_wb, segmental_snr_db, snr_db, stoi
from voicelab.metrics.quality import PESQ_NB_CEILING, PESQ_WB_CEILING

sf = pytest.importorskip("soundfile")
soxr = pytest.importorskip("soxr")


def _speech_dir() -> Path | None:
    candidates = []
    env = os.environ.get("VOICELAB_DATA")
    if env:
        candidates += [Path(env) / "speech", Path(env)]
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "speech")
    for c in candidates:
        if (c / "pesq_ref_speech_16k.wav").is_file():
            return c
    return None


SPEECH = _speech_dir()
needs_speech = pytest.mark.skipif(
    SPEECH is None,
    reason="natural speech not found (set VOICELAB_DATA or provide ../shared/datasets/speech)",
)


def _read(name: str, dtype: str = "float64") -> tuple[np.ndarray, int]:
    assert SPEECH is not None
    x, rate = sf.read(str(SPEECH / name), dtype=dtype)
    if x.ndim == 2:
        x = x[:, 0]
    return x, rate


# ----------------------------------------------------------------------------- PESQ


@needs_speech
@pytest.mark.natural
@pytest.mark.parametrize(
    "name", ["pesq_ref_speech_16k.wav", "pjsip_input_16k.wav", "cmu_arctic_aew_a0001.wav"]
)
def test_identical_speech_reaches_both_ceilings(name):
    x, rate = _read(name)
    assert rate == 16000
    assert pesq_nb(x, x, rate) == pytest.approx(PESQ_NB_CEILING, abs=1e-3)
    assert pesq_wb(x, x, rate) == pytest.approx(PESQ_WB_CEILING, abs=1e-3)


@needs_speech
@pytest.mark.natural
def test_identical_8k_speech_reaches_nb_ceiling():
    x, rate = _read("pjsip_input_8k.wav")
    assert rate == 8000
    assert pesq(x, x, rate, mode="nb") == pytest.approx(PESQ_NB_CEILING, abs=1e-3)


@needs_speech
@pytest.mark.natural
def test_reference_pair_reproduces_published_scores():
    # Published by the pesq package: pesq(16000, ref, deg, 'wb') and pesq(16000, ref,
    # deg, 'nb'), i.e. narrowband run natively on the 16 kHz files. Our NB path does the
    # same for 16 kHz input (see voicelab.metrics.quality module docstring).
    ref, rate = _read("pesq_ref_speech_16k.wav")
    deg, _ = _read("pesq_ref_speech_bab0dB_16k.wav")
    assert pesq(ref, deg, rate, mode="wb") == pytest.approx(1.0832337, abs=1e-4)
    assert pesq(ref, deg, rate, mode="nb") == pytest.approx(1.6072081, abs=1e-4)


@needs_speech
@pytest.mark.natural
def test_nb_rate_rule_16k_path_vs_8k_path():
    ref, rate = _read("pesq_ref_speech_16k.wav")
    deg, _ = _read("pesq_ref_speech_bab0dB_16k.wav")
    native = pesq_nb(ref, deg, rate)
    # Input at 48 kHz is brought to 16 kHz: same path, same score.
    r48 = soxr.resample(ref, rate, 48000, quality="VHQ")
    d48 = soxr.resample(deg, rate, 48000, quality="VHQ")
    assert pesq_nb(r48, d48, 48000) == pytest.approx(native, abs=0.01)
    # Input below 16 kHz runs at 8 kHz, which scores this wideband babble differently.
    r8 = soxr.resample(ref, rate, 8000, quality="VHQ")
    d8 = soxr.resample(deg, rate, 8000, quality="VHQ")
    eight = pesq_nb(r8, d8, 8000)
    assert abs(eight - native) > 0.02
    # 11025 Hz is resampled to 8 kHz: the same 8 kHz path.
    r11 = soxr.resample(ref, rate, 11025, quality="VHQ")
    d11 = soxr.resample(deg, rate, 11025, quality="VHQ")
    assert pesq_nb(r11, d11, 11025) == pytest.approx(eight, abs=0.01)
    assert pesq_nb(r11, r11, 11025) == pytest.approx(PESQ_NB_CEILING, abs=1e-3)


@needs_speech
@pytest.mark.natural
def test_int16_and_float_inputs_agree():
    xf, rate = _read("pjsip_input_16k.wav")
    xi, _ = _read("pjsip_input_16k.wav", dtype="int16")
    rng = np.random.default_rng(1)
    noisy = np.clip(xf + 0.01 * rng.standard_normal(xf.size), -1, 1)
    noisy_i = np.round(noisy * 32767).astype(np.int16)
    a = pesq_wb(xf, noisy, rate)
    b = pesq_wb(xi, noisy_i, rate)
    assert a == pytest.approx(b, abs=0.02)


@needs_speech
@pytest.mark.natural
def test_more_noise_scores_lower():
    x, rate = _read("cmu_arctic_axb_a0004.wav")
    rng = np.random.default_rng(7)
    n = rng.standard_normal(x.size)
    n *= np.sqrt(np.mean(x**2) / np.mean(n**2))
    scores = [pesq_nb(x, x + n * 10 ** (-snr / 20), rate) for snr in (30, 15, 0)]
    assert scores[0] > scores[1] > scores[2]
    assert all(1.0 <= s <= PESQ_NB_CEILING + 1e-3 for s in scores)


@needs_speech
@pytest.mark.natural
def test_lengths_within_20_percent_are_trimmed():
    x, rate = _read("pjsip_input_16k.wav")
    longer = np.concatenate([x, np.zeros(int(0.1 * x.size))])
    assert pesq_wb(x, longer, rate) == pytest.approx(PESQ_WB_CEILING, abs=1e-3)


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))


@pytest.mark.parametrize("which", ["reference", "degraded"])
def test_silence_is_a_metric_error(which):
    x = _tone(2.0, 16000)
    silent = np.zeros_like(x)
    args = (silent, x) if which == "reference" else (x, silent)
    with pytest.raises(MetricError, match="silent") as info:
        pesq(*args, 16000)
    assert which in str(info.value)
    with pytest.raises(MetricError, match="silent"):
        stoi(*args, 16000)


def test_wideband_below_16k_is_refused():
    x = _tone(2.0, 8000)
    with pytest.raises(MetricError, match="wideband PESQ needs >= 16 kHz"):
        pesq(x, x, 8000, mode="wb")
    y = _tone(2.0, 4000)
    with pytest.raises(MetricError, match="16 kHz"):
        pesq_wb(y, y, 4000)


def test_too_short_is_refused():
    x = _tone(0.1, 16000)
    with pytest.raises(MetricError, match="too short"):
        pesq(x, x, 16000)
    with pytest.raises(MetricError, match="too short"):
        stoi(x, x, 16000)


def test_nan_is_refused():
    x = _tone(2.0, 16000)
    y = x.copy()
    y[100] = np.nan
    with pytest.raises(MetricError, match="NaN"):
        pesq(x, y, 16000)
    with pytest.raises(MetricError, match="NaN"):
        snr_db(y, x)


def test_length_mismatch_beyond_20_percent_is_refused():
    x = _tone(2.0, 16000)
    with pytest.raises(MetricError, match="align"):
        pesq(x, x[: int(0.7 * x.size)], 16000)
    with pytest.raises(MetricError, match="align"):
        stoi(x, x[: int(0.7 * x.size)], 16000)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 16000)), np.array([], dtype=float), np.array(["a", "b"]), None, np.ones(3, bool)],
)
def test_bad_arrays_raise_metric_error_only(bad):
    x = _tone(2.0, 16000)
    with pytest.raises(MetricError):
        pesq(x, bad, 16000)


@pytest.mark.parametrize("rate", [0, -8000, 16000.5, "16000", None, True])
def test_bad_sample_rate_is_parameter_error(rate):
    x = _tone(2.0, 16000)
    with pytest.raises(ParameterError):
        pesq(x, x, rate)


def test_bad_mode_is_parameter_error():
    x = _tone(2.0, 16000)
    with pytest.raises(ParameterError, match="mode"):
        pesq(x, x, 16000, mode="fb")


def test_non_speech_failures_stay_voicelab_errors():
    # A pure tone has no speech "utterances" in P.862's sense; whatever PESQ makes of it,
    # the only exceptions allowed out are voicelab's.
    x = _tone(2.0, 16000)
    rng = np.random.default_rng(3)
    y = 1e-4 * rng.standard_normal(x.size)
    try:
        score = pesq(x, y, 16000)
    except VoicelabError:
        return
    assert math.isfinite(score)


# ----------------------------------------------------------------------------- STOI


@needs_speech
@pytest.mark.natural
def test_stoi_identical_is_one_and_noise_lowers_it():
    x, rate = _read("pjsip_input_16k.wav")
    assert stoi(x, x, rate) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(5)
    n = rng.standard_normal(x.size) * np.sqrt(np.mean(x**2))
    mild = stoi(x, x + 0.3 * n, rate)
    harsh = stoi(x, x + 3.0 * n, rate)
    assert 1.0 > mild > harsh
    assert stoi(x, x + 3.0 * n, rate, extended=True) < stoi(x, x, rate, extended=True)


# ----------------------------------------------------------------------------- SNR


def test_snr_identical_is_infinite():
    x = _tone(0.5, 8000)
    assert snr_db(x, x) == math.inf


def test_snr_matches_constructed_value():
    rng = np.random.default_rng(11)
    x = _tone(1.0, 8000)
    e = rng.standard_normal(x.size)
    e *= np.sqrt(np.sum(x**2) / np.sum(e**2)) * 10 ** (-20 / 20)
    assert snr_db(x, x + e) == pytest.approx(20.0, abs=1e-9)


def test_snr_of_silent_reference_is_error():
    with pytest.raises(MetricError, match="silent"):
        snr_db(np.zeros(100), np.ones(100) * 0.1)


def test_segmental_snr_definition():
    rate = 8000
    x = _tone(1.0, rate)
    # Half-amplitude copy: every frame has SNR 10 log10(1 / 0.25) = 6.02 dB.
    assert segmental_snr_db(x, 0.5 * x, rate) == pytest.approx(10 * math.log10(4), abs=1e-9)
    # Identical frames count as the ceiling, hopeless ones as the floor.
    assert segmental_snr_db(x, x, rate) == 35.0
    assert segmental_snr_db(x, -10 * x, rate) == -10.0
    assert segmental_snr_db(x, x, rate, ceiling_db=20.0) == 20.0
    # Half the frames zeroed in the degraded signal: mean of 0 dB and the ceiling.
    frame = int(0.02 * rate)
    y = x.copy()
    n_frames = x.size // frame
    for k in range(0, n_frames, 2):
        y[k * frame : (k + 1) * frame] = 0.0
    expected = (math.ceil(n_frames / 2) * 0.0 + (n_frames // 2) * 35.0) / n_frames
    assert segmental_snr_db(x, y, rate) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs", [{"frame_ms": 0}, {"frame_ms": -5}, {"floor_db": 10, "ceiling_db": 0}]
)
def test_segmental_snr_bad_parameters(kwargs):
    x = _tone(0.5, 8000)
    with pytest.raises(ParameterError):
        segmental_snr_db(x, x, 8000, **kwargs)
