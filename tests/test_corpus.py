"""Speech corpus: preference order, sample-rate rule, examples, eSpeak NG synthesis, fetching."""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from voicelab.audio import (
    EXAMPLE_NAMES,
    HARVARD_LIST_1,
    SYNTHETIC_WARNING,
    VOICES,
    Speech,
    active_level_db,
    corpus,
    corpus_items,
    corpus_source,
    example,
    fetch_corpus,
    load_manifest,
    read_wav,
    synthesize,
    tone,
    write_wav,
)
from voicelab.audio import espeak as espeak_module
from voicelab.errors import DataUnavailableError, ParameterError

corpus_module = importlib.import_module("voicelab.audio.corpus")  # voicelab.audio.corpus is the function


@pytest.fixture
def no_natural(monkeypatch, tmp_path):
    """No shipped recordings (an installation stripped of its data), no VOICELAB_DATA and an
    empty cache folder."""
    monkeypatch.setattr(corpus_module, "shipped_dir", lambda: None)
    monkeypatch.delenv("VOICELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path


@pytest.fixture
def shipped_only(monkeypatch, tmp_path):
    """A fresh clone: the shipped recordings, no VOICELAB_DATA, an empty cache."""
    monkeypatch.delenv("VOICELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path


def _user_wav(folder: Path, name: str, sample_rate: int, frequency_hz: float = 440.0) -> Path:
    x = tone(frequency_hz=frequency_hz, duration_s=0.5, sample_rate=sample_rate, level_db=-20.0)
    return write_wav(folder / name, x, sample_rate)


# --- eSpeak NG ------------------------------------------------------------------------------

def test_espeak_is_deterministic_and_history_independent():
    text = HARVARD_LIST_1[0]
    raw = espeak_module._synth_native.__wrapped__  # bypass the in-memory cache
    a = raw(text, "en-us", 160, 0)
    raw(HARVARD_LIST_1[5], "en-us+f3", 200, 0)  # something else in between
    b = raw(text, "en-us", 160, 0)
    assert a.size > 0 and np.array_equal(a, b)


def test_espeak_breath_noise_follows_the_seed():
    # en-us+f3 draws breath noise from eSpeak's generator: the seed decides it (it used to
    # be the current second, so two processes differed)
    raw = espeak_module._synth_native.__wrapped__
    a = raw(HARVARD_LIST_1[0], "en-us+f3", 160, 0)
    b = raw(HARVARD_LIST_1[0], "en-us+f3", 160, 0)
    c = raw(HARVARD_LIST_1[0], "en-us+f3", 160, 1)
    assert np.array_equal(a, b)
    assert a.size == c.size and not np.array_equal(a, c)
    with pytest.raises(ParameterError, match="seed"):
        synthesize("hi", seed=-1)


def test_espeak_speech_is_not_silent_and_plausible():
    x = synthesize(HARVARD_LIST_1[1], sample_rate=16000)
    assert x.dtype == np.float64 and x.ndim == 1
    assert 1.5 < x.size / 16000 < 4.5  # eight words at 160 wpm, plus end pause
    assert -35.0 < active_level_db(x, 16000) < -3.0
    assert np.max(np.abs(x)) <= 1.0


def test_espeak_voices_rates_and_sample_rates_differ_as_asked():
    text = HARVARD_LIST_1[2]
    male = synthesize(text, voice=VOICES[0], sample_rate=16000)
    female = synthesize(text, voice=VOICES[1], sample_rate=16000)
    assert not np.array_equal(male[: min(male.size, female.size)], female[: min(male.size, female.size)])
    slow = synthesize(text, rate_wpm=120)
    fast = synthesize(text, rate_wpm=240)
    assert slow.size > 1.4 * fast.size
    n16 = synthesize(text, sample_rate=16000).size
    for sr in (8000, 48000):
        assert abs(synthesize(text, sample_rate=sr).size - n16 * sr / 16000) <= 2


def test_espeak_returns_copies():
    x = synthesize("Hello there.")
    x[:] = 0
    assert np.any(synthesize("Hello there."))


@pytest.mark.parametrize("kwargs", [dict(text=""), dict(text="hi", voice="no-such-voice"),
                                    dict(text="hi", rate_wpm=10), dict(text="hi", sample_rate=0)])
def test_espeak_bad_arguments(kwargs):
    text = kwargs.pop("text")
    with pytest.raises(ParameterError):
        synthesize(text, **kwargs)


# --- corpus preference order ------------------------------------------------------------------

def test_synthetic_when_nothing_natural(no_natural):
    assert corpus_source() == "synthetic:espeak-ng"
    items = corpus(sample_rate=16000)
    assert len(items) == len(HARVARD_LIST_1) == 10
    assert all(s.synthetic and s.source == "synthetic" for s in items)
    assert [s.text for s in items] == list(HARVARD_LIST_1)
    assert {s.origin.split("voice ")[1].split(",")[0] for s in items} == set(VOICES)
    for s in items[:3]:
        assert s.sample_rate == 16000 and s.native_sample_rate == 22050
        assert active_level_db(s, 16000) == pytest.approx(-26.0, abs=0.05)
        assert not np.any(s.samples[: int(0.25 * 16000)])  # leading silence
    assert "not comparable" in SYNTHETIC_WARNING


def test_natural_only_raises_clear_error(no_natural):
    with pytest.raises(DataUnavailableError, match=r"VOICELAB_DATA.*voicelab datasets fetch"):
        corpus(source="natural")


def test_voicelab_data_and_cache_add_items_after_the_shipped_ones(shipped_only, monkeypatch, tmp_path):
    folder = tmp_path / "mine"
    _user_wav(folder, "b_me.wav", 16000)
    _user_wav(folder, "a_me.wav", 16000, frequency_hz=300.0)
    cache = tmp_path / "xdg-cache" / "voicelab" / "speech"
    _user_wav(cache, "cached.wav", 16000)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    assert corpus_source() == "natural:package+VOICELAB_DATA+cache"
    items = corpus(sample_rate=16000)
    shipped = [s.name for s in corpus(source="shipped")]
    assert len(shipped) == 6
    assert [s.name for s in items] == shipped + ["a_me", "b_me", "cached"]  # each folder sorted by file name
    s = items[len(shipped)]
    assert isinstance(s, Speech) and s.source == "natural" and not s.synthetic
    assert "user-supplied" in s.licence and "a_me.wav" in s.origin and s.talker == "a"
    assert np.asarray(s).shape == (8000,) and s.duration_s == pytest.approx(0.5)
    assert len(corpus(sample_rate=16000, limit=1)) == 1
    listed = corpus_items()
    assert [it.id for it in listed] == [s.name for s in items]
    assert [it.location for it in listed][-3:] == ["VOICELAB_DATA", "VOICELAB_DATA", "cache"]
    # source="synthetic" (or "espeak") forces eSpeak even when natural speech exists
    assert all(x.synthetic for x in corpus(source="synthetic", limit=2))
    assert all(x.synthetic for x in corpus(source="espeak", limit=1))


def test_user_files_without_shipped_data(no_natural, monkeypatch, tmp_path):
    folder = tmp_path / "mine"
    _user_wav(folder, "b_me.wav", 16000)
    _user_wav(folder, "a_me.wav", 16000, frequency_hz=300.0)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    assert corpus_source() == "natural:VOICELAB_DATA"
    assert [s.name for s in corpus()] == ["a_me", "b_me"]
    with pytest.raises(DataUnavailableError):
        corpus(source="shipped")


def test_cache_used_when_no_voicelab_data(no_natural, tmp_path):
    cache = tmp_path / "xdg-cache" / "voicelab" / "speech"
    _user_wav(cache, "cached.wav", 16000)
    assert corpus_source() == "natural:cache"
    items = corpus(source="natural")
    assert [s.name for s in items] == ["cached"] and "cache" in items[0].origin


def test_low_rate_files_skipped_for_wideband(no_natural, monkeypatch, tmp_path):
    folder = tmp_path / "narrow"
    _user_wav(folder, "nb.wav", 8000)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    assert corpus_source(sample_rate=8000) == "natural:VOICELAB_DATA"
    assert [s.name for s in corpus(sample_rate=8000)] == ["nb"]
    assert corpus_source(sample_rate=16000) == "synthetic:espeak-ng"
    assert all(s.synthetic for s in corpus(sample_rate=16000))
    with pytest.raises(DataUnavailableError, match="16000 Hz"):
        corpus(sample_rate=16000, source="natural")


def test_wideband_files_serve_fullband_requests(no_natural, monkeypatch, tmp_path):
    folder = tmp_path / "wb"
    _user_wav(folder, "wb.wav", 16000)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    (s,) = corpus(sample_rate=48000)
    assert s.sample_rate == 48000 and s.native_sample_rate == 16000 and s.samples.size == 24000


def test_degraded_pesq_reference_is_not_speech(no_natural, monkeypatch, tmp_path):
    folder = tmp_path / "d"
    _user_wav(folder, "pesq_ref_speech_bab0dB_16k.wav", 16000)
    _user_wav(folder, "clean.wav", 16000)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    assert [s.name for s in corpus()] == ["clean"]


def test_results_are_fresh_copies(no_natural, monkeypatch, tmp_path):
    folder = tmp_path / "c"
    _user_wav(folder, "x.wav", 8000)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    first = corpus(sample_rate=8000)[0]
    first.samples[:] = 0
    assert np.any(corpus(sample_rate=8000)[0].samples)


def test_folder_changes_are_seen(no_natural, monkeypatch, tmp_path):
    folder = tmp_path / "grow"
    _user_wav(folder, "one.wav", 8000)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    assert len(corpus(sample_rate=8000)) == 1
    _user_wav(folder, "two.wav", 8000)
    assert len(corpus(sample_rate=8000)) == 2


def test_bad_voicelab_data_and_arguments(no_natural, monkeypatch, tmp_path):
    monkeypatch.setenv("VOICELAB_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataUnavailableError, match="not a folder"):
        corpus()
    monkeypatch.delenv("VOICELAB_DATA")
    with pytest.raises(ParameterError, match="source"):
        corpus(source="web")
    with pytest.raises(ParameterError, match="limit"):
        corpus(limit=0)


@pytest.mark.natural
def test_manifest_files_recognised(natural_speech_dir, no_natural, monkeypatch, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    for name in ("pjsip_input_8k.wav", "pjsip_input_16k.wav", "cmu_arctic_aew_a0001.wav",
                 "pesq_ref_speech_bab0dB_16k.wav"):
        shutil.copy(natural_speech_dir / name, folder / name)
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    wb = corpus(sample_rate=16000)
    assert [s.name for s in wb] == ["cmu_arctic_aew_a0001", "pjsip_input_16k"]  # one pjsip file only
    nb = corpus(sample_rate=8000)
    assert [s.name for s in nb] == ["cmu_arctic_aew_a0001", "pjsip_input_8k"]
    arctic = wb[0]
    assert "CMU ARCTIC" in arctic.licence and arctic.text.startswith("Author of the danger trail")
    assert "GPL" in wb[1].licence and not wb[1].synthetic


# --- examples ---------------------------------------------------------------------------------

def test_example_unknown_name_lists_names():
    with pytest.raises(ParameterError, match="unknown example 'nope'") as info:
        example("nope")
    assert all(name in str(info.value) for name in EXAMPLE_NAMES)
    assert set(EXAMPLE_NAMES) >= {"harvard", "arctic", "pesq_ref", "pesq_ref_degraded", "pjsip", "css", "tone", "chirp"}


@pytest.mark.parametrize("name", ["css", "tone", "chirp"])
@pytest.mark.parametrize("sample_rate", [8000, 48000])
def test_example_signals(name, sample_rate):
    s = example(name, sample_rate=sample_rate)
    assert s.source == "signal" and s.synthetic and s.sample_rate == sample_rate
    assert s.samples.size == round(s.duration_s * sample_rate) and s.duration_s in (1.0, 3.0)
    assert np.max(np.abs(s.samples)) < 1.0 and np.any(s.samples)


def test_example_without_natural_data(no_natural):
    for name in ("harvard", "arctic"):
        s = example(name)
        assert s.synthetic and s.source == "synthetic" and s.text
    assert example("harvard").text.startswith(HARVARD_LIST_1[0])
    for name in ("pesq_ref", "pesq_ref_degraded", "pjsip"):
        with pytest.raises(DataUnavailableError, match="VOICELAB_DATA"):
            example(name)


@pytest.mark.natural
def test_example_with_natural_data(natural_speech_dir, no_natural, monkeypatch):
    monkeypatch.setenv("VOICELAB_DATA", str(natural_speech_dir))
    for name in ("arctic", "pesq_ref", "pesq_ref_degraded", "pjsip"):
        s = example(name, sample_rate=16000)
        assert s.source == "natural" and not s.synthetic and s.name == name
    ref = example("pesq_ref", sample_rate=16000)
    x, _ = read_wav(natural_speech_dir / "pesq_ref_speech_16k.wav")
    assert np.array_equal(ref.samples, x)
    assert example("pjsip", sample_rate=8000).native_sample_rate == 8000
    # the Harvard recording is 8 kHz: natural at 8 kHz, eSpeak at 16 kHz (sample-rate rule)
    nb = example("harvard", sample_rate=8000)
    assert nb.source == "natural" and 4.0 < nb.duration_s < 12.0
    assert example("harvard", sample_rate=16000).synthetic


# --- manifest and fetching ------------------------------------------------------------------

def test_shipped_manifest_is_complete():
    entries = load_manifest()
    assert len(entries) >= 9
    for e in entries:
        assert e["url"].startswith("https://")
        assert len(e["sha256"]) == 64 and int(e["sha256"], 16) >= 0
        assert e["licence"] and e["origin"] and e["sample_rate"] in (8000, 16000)
        assert e["file"].endswith(".wav")


@pytest.mark.natural
def test_manifest_hashes_match_shared_files(natural_speech_dir):
    for e in load_manifest():
        p = natural_speech_dir / e["file"]
        if p.exists():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"], e["file"]


def _local_manifest(tmp_path, payloads: dict[str, bytes], *, wrong_hash_for=()) -> Path:
    src = tmp_path / "upstream"
    src.mkdir()
    files = []
    for name, data in payloads.items():
        (src / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        if name in wrong_hash_for:
            digest = "0" * 64
        files.append({"file": name, "url": (src / name).as_uri(), "sha256": digest, "licence": "test",
                      "origin": "test", "sample_rate": 8000})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": files}))
    return manifest


def _wav_bytes(tmp_path, name, sample_rate=8000) -> bytes:
    return _user_wav(tmp_path / "gen", name, sample_rate).read_bytes()


def test_fetch_downloads_and_verifies(tmp_path, capsys):
    payloads = {"a.wav": _wav_bytes(tmp_path, "a.wav"), "b.wav": _wav_bytes(tmp_path, "b.wav", 16000)}
    manifest = _local_manifest(tmp_path, payloads)
    dest = tmp_path / "cache"
    paths = fetch_corpus(dest=dest, manifest=manifest, progress=True)
    assert [p.name for p in paths] == ["a.wav", "b.wav"]
    assert all(p.read_bytes() == payloads[p.name] for p in paths)
    assert "fetching" in capsys.readouterr().err
    # already present and valid: no download needed even when upstream is gone
    shutil.rmtree(tmp_path / "upstream")
    again = fetch_corpus(dest=dest, manifest=manifest, progress=False)
    assert again == paths
    assert not list(dest.glob("*.part"))


def test_fetched_cache_feeds_the_corpus(no_natural, tmp_path):
    manifest = _local_manifest(tmp_path, {"s.wav": _wav_bytes(tmp_path, "s.wav", 16000)})
    fetch_corpus(manifest=manifest, progress=False)  # default destination: the cache
    assert corpus_source() == "natural:cache"
    assert [s.name for s in corpus()] == ["s"]


def test_fetch_hash_mismatch_keeps_nothing(tmp_path):
    manifest = _local_manifest(tmp_path, {"bad.wav": _wav_bytes(tmp_path, "bad.wav")}, wrong_hash_for={"bad.wav"})
    dest = tmp_path / "cache"
    with pytest.raises(DataUnavailableError, match=r"bad\.wav.*SHA-256.*not kept"):
        fetch_corpus(dest=dest, manifest=manifest, progress=False)
    assert not any(dest.iterdir())


def test_fetch_offline(tmp_path, monkeypatch):
    manifest = _local_manifest(tmp_path, {"a.wav": b"RIFF"})

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DataUnavailableError, match=r"cannot download a\.wav.*offline"):
        fetch_corpus(dest=tmp_path / "cache", manifest=manifest, progress=False)
    assert not any((tmp_path / "cache").iterdir())


def test_fetch_bad_manifest(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    with pytest.raises(DataUnavailableError, match="manifest"):
        fetch_corpus(dest=tmp_path / "c", manifest=bad, progress=False)
