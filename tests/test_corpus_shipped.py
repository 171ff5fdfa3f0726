"""The natural corpus shipped inside the package: files, manifest, listing API, and the
default speech of every call being natural on a fresh clone (no VOICELAB_DATA)."""

from __future__ import annotations

import hashlib
import importlib

import numpy as np
import pytest
import soundfile as sf

from voicelab import audio
from voicelab.audio import CorpusItem, corpus, corpus_item, corpus_items, corpus_source, load_manifest, load_speech, shipped_dir
from voicelab.errors import ParameterError
from voicelab.sim import Scenario, simulate_call

corpus_module = importlib.import_module("voicelab.audio.corpus")

# CMU ARCTIC prompts (festvox cmu_arctic etc/txt.done.data), the text of the shipped files.
ARCTIC_PROMPTS = {
    "arctic_a0001": "Author of the danger trail, Philip Steels, etc.",
    "arctic_a0002": "Not at this particular case, Tom, apologized Whittemore.",
    "arctic_a0003": "For the twentieth time that evening the two men shook hands.",
    "arctic_a0004": "Lord, but I'm glad to see you again, Phil.",
    "arctic_a0005": "Will we ever forget it.",
    "arctic_a0006": "God bless 'em, I hope I'll go on seeing them forever.",
}


@pytest.fixture
def fresh_clone(monkeypatch, tmp_path):
    """What a fresh clone sees: no VOICELAB_DATA, an empty cache."""
    monkeypatch.delenv("VOICELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def _shipped_entries() -> list[dict]:
    return [e for e in load_manifest() if e.get("shipped")]


def test_shipped_files_match_their_manifest():
    folder = shipped_dir()
    assert folder is not None and folder.is_dir()
    entries = _shipped_entries()
    assert len(entries) >= 6
    assert sorted(p.name for p in folder.glob("*.wav")) == sorted(e["file"] for e in entries)
    for e in entries:
        p = folder.parent / e["shipped"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"], e["file"]
        info = sf.info(str(p))
        assert info.samplerate == e["sample_rate"] == 16000 and info.channels == 1
        assert info.frames / info.samplerate == pytest.approx(e["duration_s"], abs=0.01)
        assert e["talker"] and e["sex"] in ("male", "female") and e["text"]
        assert "CMU ARCTIC" in e["licence"] and "without restriction" in e["licence"]
        assert e["text"] == ARCTIC_PROMPTS[e["prompt"]]


def test_at_least_two_talkers_both_sexes():
    items = corpus_items(source="shipped")
    talkers = {it.talker for it in items}
    assert talkers == {"aew", "axb"}
    assert {it.sex for it in items} == {"male", "female"}
    assert all(isinstance(it, CorpusItem) and it.natural and it.location == "package" for it in items)


def test_fresh_clone_default_corpus_is_natural(fresh_clone):
    assert corpus_source() == "natural:package"
    items = corpus()
    assert items and not any(s.synthetic for s in items)
    assert [s.name for s in items] == [it.id for it in corpus_items()]
    assert all(s.text == it.transcript for s, it in zip(items, corpus_items()))
    sp = load_speech()  # speech="default"
    assert not sp.synthetic and sp.source == "natural:package"
    assert sp.talkers[:4] == ("aew", "axb", "aew", "axb")  # talkers alternate
    assert sp.name == f"default[{','.join(sp.items)}]"
    assert len(sp.samples) == 12 * 16000  # max_speech_s


def test_listing_api_items_load_and_specs(fresh_clone):
    items = corpus_items()
    it = next(i for i in items if i.talker == "axb")
    assert it.speech == f"corpus:{it.id}"
    s = it.load(sample_rate=8000)
    assert s.name == it.id and s.sample_rate == 8000 and s.talker == "axb" and s.text == it.transcript
    assert s.duration_s == pytest.approx(it.duration_s, abs=0.01)
    one = load_speech(speech=it.speech)
    assert one.items == (it.id,) and one.talkers == ("axb",) and not one.synthetic
    assert load_speech(speech="corpus:0").items == (items[0].id,)
    with pytest.raises(ParameterError, match="known items.*cmu_arctic_aew_a0001"):
        corpus_item("nope")
    with pytest.raises(ParameterError, match="corpus:N"):
        load_speech(speech=f"corpus:{len(items)}")


def test_espeak_is_an_explicit_labelled_choice(fresh_clone):
    items = corpus_items(source="espeak")
    assert items and not any(it.natural for it in items)
    assert {it.talker for it in items} == {"espeak:en-us", "espeak:en-us+f3"}
    sp = load_speech(speech="espeak", max_speech_s=4.0)
    assert sp.synthetic and sp.source == "synthetic:espeak-ng" and sp.name.startswith("espeak[")
    r = simulate_call(Scenario(codec="pcmu", speech="espeak", max_speech_s=4.0, seed=1), quality=False)
    assert r.metrics["synthetic_speech"] is True and audio.SYNTHETIC_WARNING in r.warnings
    assert r.metrics["speech_talkers"][0] == "espeak:en-us"


def test_sim_results_name_items_and_talkers(fresh_clone):
    r = simulate_call(Scenario(codec="pcmu", max_speech_s=6.0, seed=1), quality=False)
    m = r.metrics
    assert m["synthetic_speech"] is False and not r.warnings
    assert m["speech_items"][:2] == ["cmu_arctic_aew_a0001", "cmu_arctic_axb_a0004"]
    assert m["speech_talkers"][:2] == ["aew", "axb"] and m["speech_source"] == "natural:package"
    r1 = simulate_call(Scenario(codec="pcmu", speech="corpus:cmu_arctic_axb_a0006", seed=1), quality=False)
    assert r1.metrics["speech"] == "cmu_arctic_axb_a0006" and r1.metrics["speech_talkers"] == ["axb"]


def test_voicelab_data_adds_items_and_keeps_the_first_seconds(fresh_clone, monkeypatch, tmp_path):
    before = load_speech(max_speech_s=12.0)
    folder = tmp_path / "mine"
    folder.mkdir()
    x = audio.tone(frequency_hz=300.0, duration_s=2.0, sample_rate=16000, level_db=-26.0)
    audio.write_wav(folder / "me_0001.wav", x, 16000)
    # a copy of a shipped file is recognised as the same recording and not listed twice
    (folder / "cmu_arctic_aew_a0001.wav").write_bytes((shipped_dir() / "cmu_arctic_aew_a0001.wav").read_bytes())
    monkeypatch.setenv("VOICELAB_DATA", str(folder))
    ids = [it.id for it in corpus_items()]
    assert ids == [it.id for it in corpus_items(source="shipped")] + ["me_0001"]
    assert corpus_items()[-1].location == "VOICELAB_DATA" and corpus_items()[-1].talker == "me"
    after = load_speech(max_speech_s=12.0)
    assert after.items == before.items and np.array_equal(after.samples, before.samples)
    assert after.source == "natural:package"
    assert load_speech(max_speech_s=60.0).items[-1] == "me_0001"


def test_stripped_install_falls_back_to_labelled_espeak(fresh_clone, monkeypatch):
    monkeypatch.setattr(corpus_module, "shipped_dir", lambda: None)
    assert corpus_source() == "synthetic:espeak-ng"
    sp = load_speech(speech="default", max_speech_s=3.0)
    assert sp.synthetic and sp.source == "synthetic:espeak-ng"


@pytest.mark.parametrize("kwargs", [dict(max_speech_s=0.5), dict(level_db=5.0), dict(speech="")])
def test_load_speech_bad_arguments(kwargs):
    with pytest.raises(ParameterError):
        load_speech(**kwargs)


def test_cli_lists_items_talkers_and_transcripts(fresh_clone, capsys):
    from voicelab.cli import main

    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "natural:package" in out and "synthetic" not in out
    for it in corpus_items():
        assert it.id in out and it.talker in out and it.transcript in out


def test_talker_spec_sends_one_talkers_items(fresh_clone):
    for who in ("aew", "axb"):
        sp = load_speech(speech=f"talker:{who}", max_speech_s=30.0)
        assert set(sp.talkers) == {who} and not sp.synthetic and sp.source == "natural:package"
        assert list(sp.items) == [it.id for it in corpus_items() if it.talker == who]
        assert sp.name.startswith(f"talker:{who}[")
    assert load_speech(speech="talker:espeak:en-us", max_speech_s=3.0).synthetic
    with pytest.raises(ParameterError, match="known talkers: aew, axb"):
        load_speech(speech="talker:nobody")
