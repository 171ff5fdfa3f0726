"""The recogniser's narrowband (telephone-band) MLLR adaptation: shipped, applied to 8 kHz
calls only, and it lowers the WER of mu-law audio on held-out natural speech."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from voicelab.errors import ParameterError
from voicelab.pipeline import Pipeline
from voicelab.pipeline.asr import NARROWBAND_DIR, PocketSphinxRecognizer, fold, narrowband_transform
from voicelab.pipeline.core import PipelineConfig

from .conftest import REPO, need


def _read_mllr(path) -> tuple[int, int, list[int], list[np.ndarray]]:
    """PocketSphinx's MLLR text file: n_class, n_stream, lengths, then per stream A (rows), b, (h)."""
    tok = Path(path).read_text().split()
    n_class, n_stream = int(tok[0]), int(tok[1])
    pos, lens, mats = 2, [], []
    for _ in range(n_class):
        for _ in range(n_stream):
            n = int(tok[pos])
            pos += 1
            lens.append(n)
            a = np.array(tok[pos : pos + n * n], float).reshape(n, n)
            pos += n * n
            b = np.array(tok[pos : pos + n], float)
            pos += 2 * n  # shift, then the variance scale (ones)
            mats.append(np.hstack([a, b[:, None]]))
    assert pos == len(tok)
    return n_class, n_stream, lens, mats


@pytest.mark.parametrize("upsample", ["fold", "soxr"])
def test_shipped_transform_is_a_small_global_mllr_of_the_model_s_three_streams(upsample):
    path = Path(narrowband_transform(8000, upsample))  # type: ignore[arg-type]
    assert path.parent == NARROWBAND_DIR and path.is_file() and path.stat().st_size < 20_000
    n_class, n_stream, lens, mats = _read_mllr(path)
    assert (n_class, n_stream, lens) == (1, 3, [13, 13, 13])  # the en-us model's svspec 0-12/13-25/26-38
    for m in mats:  # an adaptation, not the identity and not something wild
        assert 0.0 < np.abs(m[:, :13] - np.eye(13)).max() < 2.0
    assert (NARROWBAND_DIR / "README.md").read_text().count("BSD") >= 1


def test_transform_is_applied_to_narrowband_input_only():
    fold_mllr = narrowband_transform(8000, "fold")
    assert narrowband_transform(8000, "soxr") != fold_mllr
    for rate in (16000, 24000, 48000):
        assert narrowband_transform(rate, "fold") is None
        assert Pipeline(sample_rate=rate).asr.mllr is None  # wideband: the model as it is
        assert PipelineConfig().build(rate).asr.mllr is None
    assert Pipeline(sample_rate=8000).asr.mllr == fold_mllr  # on by default for 8 kHz
    assert PipelineConfig().build(8000).asr.mllr == fold_mllr
    assert PipelineConfig(asr_upsample="soxr").build(8000).asr.mllr == narrowband_transform(8000, "soxr")
    assert PipelineConfig(asr_adapt=False).build(8000).asr.mllr is None  # the setting that turns it off
    assert Pipeline(sample_rate=8000, asr_adapt=False).asr.mllr is None
    assert PipelineConfig(asr_adapt=fold_mllr, asr_upsample="soxr").build(8000).asr.mllr == fold_mllr
    assert PocketSphinxRecognizer(16000, mllr=fold_mllr).mllr == fold_mllr  # PocketSphinx loads it
    with pytest.raises(ParameterError, match="MLLR"):
        PipelineConfig(asr_adapt="/nonexistent/x.mllr")
    with pytest.raises(ParameterError, match="asr_adapt"):
        PipelineConfig(asr_adapt=3)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="MLLR"):
        PocketSphinxRecognizer(16000, mllr="/nonexistent/x.mllr")


def test_fold_zero_stuffs_with_gain_two_and_saturates():
    y = fold(np.array([1, -2, 20000, -20000], dtype=np.int16))
    assert y.dtype == np.int16 and y.tolist() == [2, 0, -4, 0, 32767, 0, -32768, 0]


def _mulaw_folded(x16: np.ndarray) -> np.ndarray:
    """16 kHz speech as a PCMU call hands it to the recogniser: 8 kHz, mu-law, folded to 16 kHz."""
    from voicelab import audio, codecs

    c = codecs.get("pcmu")
    pcm = audio.to_int16(audio.resample(x16, 16000, 8000))
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % c.frame_samples, dtype=np.int16)])
    F = c.frame_samples
    return fold(np.concatenate([c.decode(c.encode(pcm[i : i + F])) for i in range(0, len(pcm), F)]))


@pytest.mark.slow
@pytest.mark.natural
def test_adapted_narrowband_wer_is_lower_than_unadapted_on_the_held_out_arctic_items(natural_env):
    """The six CMU ARCTIC items (never in the adaptation data), through mu-law and folded,
    one recogniser per condition hearing them in turn: the adapted model makes fewer
    word errors (measured: 31 vs 34 of 52 words, one utterance at a time; call-shaped in
    the benchmark 0.558 vs 0.635, docs/agent-turn.md)."""
    from voicelab.pipeline.wer import word_errors
    from voicelab.turns import load_utterances

    utts = [u for u in load_utterances(6) if not u.synthetic]
    need(len(utts) == 6, "the six CMU ARCTIC items (VOICELAB_DATA)")
    audio_in = [_mulaw_folded(u.samples) for u in utts]
    errors = {}
    for name, mllr in (("unadapted", None), ("adapted", narrowband_transform(8000, "fold"))):
        rec = PocketSphinxRecognizer(16000, mllr=mllr)
        e_sum = n_sum = 0
        for u, x in zip(utts, audio_in):
            rec.start()
            for i in range(0, len(x), 320):
                rec.feed(x[i : i + 320])
            e, n = word_errors(u.transcript, rec.final())
            e_sum, n_sum = e_sum + e, n_sum + n
        errors[name] = e_sum
    print(f"ARCTIC mu-law folded, word errors of {n_sum}: {errors}")
    assert errors["adapted"] < errors["unadapted"]


def _tool():
    spec = importlib.util.spec_from_file_location("asr_adapt", REPO / "tools" / "asr_adapt.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["asr_adapt"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_sendump_becomes_the_mixture_weights_bw_reads(tmp_path):
    """PocketSphinx ships the mixture weights quantised (``sendump``: one byte per senone,
    ``-log_1.0001(w) >> 10``); ``bw`` needs an s3 ``mixture_weights`` file: rebuilt, each
    row normalised, and quantising it again gives the bytes back."""
    import pocketsphinx

    tool = _tool()
    sendump = Path(pocketsphinx.get_model_path()) / "en-us" / "en-us" / "sendump"
    out = tmp_path / "mixture_weights"
    tool.sendump_to_mixw(sendump, out)
    d = out.read_bytes()
    end = d.index(b"endhdr\n") + len(b"endhdr\n")
    assert d.startswith(b"s3\n")
    magic, n_sen, n_feat, n_comp, n = struct.unpack_from("<Iiiii", d, end)
    assert magic == 0x11223344 and (n_feat, n_comp) == (3, 128) and n == n_sen * n_feat * n_comp
    w = np.frombuffer(d, dtype="<f4", offset=end + 20).reshape(n_sen, n_feat, n_comp)
    assert np.allclose(w.sum(axis=2), 1.0, atol=1e-4) and (w > 0).all()
    raw = sendump.read_bytes()
    q = np.frombuffer(raw[-n:], dtype=np.uint8).reshape(n_feat, n_comp, n_sen).transpose(2, 0, 1)
    # -log(w) in quanta is the stored byte plus the row's normalisation constant
    back = -np.log(w.astype(float)) / (1024 * np.log(1.0001)) - q
    assert np.ptp(back, axis=2).max() < 1e-3


@pytest.mark.slow
def test_the_tool_regenerates_the_shipped_transform(tmp_path, natural_env):
    """tools/asr_adapt.py with sphinxtrain (Debian ``sphinxtrain``, ``sphinxbase-utils``,
    ``pocketsphinx``, ``pocketsphinx-testdata``) gives the shipped fold transform back."""
    tool = _tool()
    missing = tool.tools_present() + ([] if tool.TESTDATA.is_dir() else ["pocketsphinx-testdata"])
    need(not missing, "regenerating the MLLR transform needs the Debian package(s) " + ", ".join(missing))
    need(shutil.which("sphinx_fe") is not None, "sphinx_fe (Debian sphinxbase-utils)")
    out = tool.adapt(tmp_path / "fold.mllr", upsample="fold", work=tmp_path / "work")
    new, old = _read_mllr(out)[3], _read_mllr(narrowband_transform(8000, "fold"))[3]
    assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(new, old))


def test_the_worker_process_applies_the_transform_it_is_given():
    """A call on a real-time loop recognises in a worker process: it loads the same
    transform (here the adapted and the plain model disagree on the sentence)."""
    import asyncio

    from voicelab.audio.espeak import synthesize
    from voicelab.pipeline.asr import ProcessRecognizer

    x = _mulaw_folded(synthesize("Will we ever forget it?", sample_rate=16000))
    mllr = narrowband_transform(8000, "fold")

    def inline(m):
        r = PocketSphinxRecognizer(16000, mllr=m)
        r.start()
        for i in range(0, len(x), 320):
            r.feed(x[i : i + 320])
        return r.final()

    async def worker():
        loop = asyncio.get_running_loop()
        r = ProcessRecognizer(clock=loop.time, mllr=mllr)
        try:
            r.start()
            for i in range(0, len(x), 320):
                r.feed(x[i : i + 320])
            text, _ = await asyncio.wait_for(asyncio.wrap_future(r.final_async()), 30.0)
            return text
        finally:
            r.close()

    adapted, plain = inline(mllr), inline(None)
    assert adapted != plain
    assert asyncio.run(worker()) == adapted
