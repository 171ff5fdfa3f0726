"""Regenerate the recogniser's narrowband (telephone-band) MLLR transforms (CMUSphinx's way).

PocketSphinx's en-us model is a 16 kHz model; a PCMU call reaches it as G.711 mu-law at
8 kHz brought to 16 kHz (``asr_upsample="fold"``: zero-stuffed, or ``"soxr"``). A global
MLLR mean transform adapts the model to that channel, following
https://cmusphinx.github.io/wiki/tutorialadapt/: ``sphinx_fe`` computes the adaptation
audio's features, ``bw`` collects the statistics against the model (forced alignment to
the known transcripts), ``mllr_solve`` estimates the transform. The decoder loads it
with ``mllr=`` (:func:`voicelab.pipeline.asr.narrowband_transform`).

Adaptation data (never the six CMU ARCTIC items the WER benchmarks are measured on):

* ``testdata``: the natural 16 kHz recordings with transcripts of Debian's
  ``pocketsphinx-testdata`` (LibriVox "Sense and Sensibility" x5, "cards" x5,
  goforward, numbers, something; BSD-style, CMU);
* ``espeak``: eSpeak NG speaking :data:`SENTENCES` (written for this file, not the
  Harvard lists) in several voices, rates and pitches;

each passed through the telephone channel exactly as a PCMU call delivers it to the
recogniser: 16 kHz -> 8 kHz (soxr), G.711 mu-law encode/decode in 20 ms frames, then the
pipeline's upsampling to 16 kHz.

The model's mixture weights ship only as PocketSphinx's quantised ``sendump``; ``bw``
needs them as an s3 ``mixture_weights`` file, which this script rebuilds from it.

Needs the Debian packages ``sphinxtrain`` (bw, mllr_solve, map_adapt), ``sphinxbase-utils``
(sphinx_fe), ``pocketsphinx`` (pocketsphinx_mdef_convert) and, for the ``testdata`` set,
``pocketsphinx-testdata``. Usage::

    PYTHONPATH=$PWD python tools/asr_adapt.py [--upsample fold|soxr] [--data testdata,espeak] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
SPHINXTRAIN = Path("/usr/lib/sphinxtrain")

#: Adaptation sentences for eSpeak NG (ordinary English, every word in cmudict; none of the
#: ARCTIC test items' or Harvard list 1's sentences).
SENTENCES = (
    "please call me back when you get this message",
    "the meeting has been moved to thursday afternoon at three",
    "i would like to check the status of my order",
    "can you tell me how much the ticket costs",
    "my account number is four seven two nine",
    "the weather will be cold and windy tomorrow morning",
    "she bought a new car with a bright red roof",
    "we have to leave before the sun goes down",
    "turn left at the second light and keep going straight",
    "the children were playing quietly in the garden",
    "he forgot his keys on the kitchen table again",
    "our flight was delayed by nearly two hours",
    "thank you for waiting your call is important to us",
    "could you spell your last name for me please",
    "the doctor will see you in about ten minutes",
    "they painted the fence white last summer",
    "a cup of hot coffee makes the morning easier",
    "the train to boston leaves from platform six",
    "i think the printer on the third floor is broken",
    "send the report to everyone in the sales team",
    "the old man walked slowly along the river bank",
    "we should be there by half past eight",
    "her brother plays the violin in an orchestra",
    "the price of bread went up again this week",
    "do you want to pay by card or by cash",
    "the museum is closed on mondays and public holidays",
    "he said that he would never do that again",
    "the water in the lake was clear and very cold",
    "you can reach our support team at any time",
    "she read the whole book in a single night",
    "the big dog chased the cat up the tree",
    "please hold while i transfer your call",
    "the package should arrive within five working days",
    "what time does the store open on sunday",
    "a thick fog covered the valley this morning",
    "the engineer checked every wire twice",
    "my phone battery is almost empty",
    "the judge asked the witness to speak louder",
    "they grew tomatoes beans and potatoes in the field",
    "we need three more chairs for the dinner party",
)

#: What ``osr_us_000_0034_8k.wav`` says: Harvard sentences list 30 (IEEE 1969), checked
#: against what the 16 kHz model hears in it (e.g. "a gold ring will please most any girl").
OSR_LIST_30 = (
    "A gold ring will please most any girl.",
    "The long journey home took a year.",
    "She saw a cat in the neighbor's house.",
    "A pink shell was found on the sandy beach.",
    "Small children came to see him.",
    "The grass and bushes were wet with dew.",
    "The blind man counted his old coins.",
    "A severe storm tore down the barn.",
    "She called his name many times.",
    "When you hear the bell, come quickly.",
)
#: Where each sentence of the OSR file starts (s): the pipeline's VAD's speech starts, less 0.15 s.
OSR_STARTS = (1.2, 4.7, 7.7, 10.9, 14.85, 17.8, 21.2, 25.25, 29.3, 32.5)

#: (voice, rate_wpm, pitch variant) for the eSpeak set: male and female, slow to fast.
ESPEAK_VOICES = (("en-us", 150), ("en-us+f3", 170), ("en-us+m3", 140), ("en-us-nyc", 175), ("en-us+f2", 135),
                 ("en-us+m7", 190))  # fmt: skip


def sendump_to_mixw(sendump: Path, out: Path, logbase: float = 1.0001, shift: int = 10) -> None:
    """PocketSphinx's quantised PTM mixture weights (``sendump``) as an s3 ``mixture_weights`` file.

    ``sendump`` stores, per feature stream and codeword, one byte per senone:
    ``-log_b(w) >> shift`` (``b`` = ``logbase``); the s3 file holds float32 weights
    indexed [senone][stream][codeword], each row normalised.
    """
    d = sendump.read_bytes()
    o = 0

    def string() -> bytes | None:
        nonlocal o
        (n,) = struct.unpack_from("<i", d, o)
        o += 4
        if n == 0:
            return None
        s = d[o : o + n]
        o += n
        return s

    string()  # title
    string()  # header
    n_feat = 1
    while (s := string()) is not None:
        if s.startswith(b"feature_count "):
            n_feat = int(s.split()[1].rstrip(b"\0"))
        if s.startswith(b"cluster_count ") and int(s.split()[1].rstrip(b"\0")) != 0:
            raise SystemExit("clustered sendump not supported")
    n_comp, n_sen = struct.unpack_from("<ii", d, o)
    o += 8
    q = np.frombuffer(d, dtype=np.uint8, count=n_feat * n_comp * n_sen, offset=o).reshape(n_feat, n_comp, n_sen)
    w = np.exp(-q.astype(np.float64) * (1 << shift) * math.log(logbase))
    w = w.transpose(2, 0, 1)  # [sen][feat][comp]
    w /= w.sum(axis=2, keepdims=True)
    hdr = b"s3\nversion 1.0\nendhdr\n"
    body = struct.pack("<Iiiii", 0x11223344, n_sen, n_feat, n_comp, w.size) + w.astype("<f4").tobytes()
    out.write_bytes(hdr + body)


def channel(x16: np.ndarray, upsample: str) -> np.ndarray:
    """16 kHz float speech as a PCMU call hands it to the recogniser (int16 at 16 kHz)."""
    import soxr

    from voicelab import audio, codecs

    y = audio.resample(x16, 16000, 8000)
    c = codecs.get("pcmu")
    F = c.frame_samples
    pcm = audio.to_int16(y)
    pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % F, dtype=np.int16)])
    nb = np.concatenate([c.decode(c.encode(pcm[i : i + F])) for i in range(0, len(pcm), F)]).astype(np.int16)
    if upsample == "fold":  # what voicelab.pipeline.core.Pipeline.feed does
        from voicelab.pipeline.asr import fold

        return fold(nb)
    rs = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="HQ")
    return np.concatenate([rs.resample_chunk(nb), rs.resample_chunk(np.zeros(0, dtype=np.int16), last=True)])


def _words(text: str) -> str:
    import re

    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def corpus(sets: list[str]) -> list[tuple[str, np.ndarray, str]]:
    """(id, 16 kHz float audio, transcript) of the adaptation sets."""
    from voicelab import audio
    from voicelab.audio.espeak import HARVARD_LIST_1, synthesize

    items: list[tuple[str, np.ndarray, str]] = []
    if "testdata" in sets:
        if not TESTDATA.is_dir():
            raise SystemExit("the testdata set needs the Debian package pocketsphinx-testdata")
        for tf in (TESTDATA / "librivox" / "transcription", TESTDATA / "cards" / "cards.transcription"):
            for line in tf.read_text().splitlines():
                if "(" not in line:
                    continue
                text, key = line.rsplit("(", 1)
                key = key.strip(" )")
                text = text.replace("<s>", "").replace("</s>", "")
                x, r = audio.read_wav(tf.parent / f"{key}.wav")
                items.append((f"{tf.parent.name}_{key}", audio.resample(np.asarray(x, float), r, 16000), _words(text)))
        for key, text in (("goforward", "go forward ten meters"),
                          ("numbers", "three two one zero nine eight seven six five four three two one"),
                          ("something", "something")):  # fmt: skip
            raw = np.fromfile(TESTDATA / f"{key}.raw", dtype="<i2")
            items.append((f"raw_{key}", audio.to_float(raw), text))
    speech = Path(os.environ.get("VOICELAB_DATA", "/work/shared/datasets/speech"))
    if "osr" in sets:  # natural 8 kHz: already narrowband, given at 16 kHz (the channel resamples it back to 8 kHz)
        x, r = audio.read_wav(speech / "osr_us_000_0034_8k.wav")
        x = audio.resample(np.asarray(x, float), r, 16000)
        cuts = [int(16000 * t) for t in OSR_STARTS] + [len(x)]
        for i, text in enumerate(OSR_LIST_30):
            items.append((f"osr34_{i + 1:02d}", x[cuts[i] : cuts[i + 1]], _words(text)))
    if "pesq" in sets:  # natural 16 kHz, Harvard list 1's first sentence
        x, r = audio.read_wav(speech / "pesq_ref_speech_16k.wav")
        items.append(("pesq_ref", audio.resample(np.asarray(x, float), r, 16000), _words(HARVARD_LIST_1[0])))
    if "espeak" in sets:
        for i, s in enumerate(SENTENCES):
            voice, rate = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
            for j in range(2):  # two voices per sentence
                voice, rate = ESPEAK_VOICES[(i + 3 * j) % len(ESPEAK_VOICES)]
                x = synthesize(s, voice=voice, rate_wpm=rate, sample_rate=16000, seed=i)
                items.append((f"espeak_{i:02d}_{j}", 0.5 * x / max(1e-9, np.abs(x).max()), s))
    return items


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed (exit {r.returncode}); see {log}")


def tools_present() -> list[str]:
    """Debian packages missing for a regeneration (empty: all there)."""
    missing = []
    if not (SPHINXTRAIN / "bw").exists() or not (SPHINXTRAIN / "mllr_solve").exists():
        missing.append("sphinxtrain")
    if shutil.which("sphinx_fe") is None:
        missing.append("sphinxbase-utils")
    if shutil.which("pocketsphinx_mdef_convert") is None:
        missing.append("pocketsphinx")
    return missing


def adapt(out: Path, *, upsample: str = "fold", sets: tuple[str, ...] = ("testdata", "osr"),
          method: str = "mllr", iterations: int = 2, work: Path | None = None, items=None) -> Path:  # fmt: skip
    """Estimate the narrowband transform; writes ``out`` (MLLR) or the adapted means/variances dir (MAP)."""
    import pocketsphinx

    from voicelab import audio

    if missing := tools_present():
        raise SystemExit("adaptation needs the Debian package(s) " + ", ".join(missing))
    base = Path(pocketsphinx.get_model_path())
    hmm_src = base / "en-us" / "en-us"
    work = Path(work or tempfile.mkdtemp(prefix="voicelab-asr-adapt-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    hmm = work / "en-us"
    if hmm.exists():
        shutil.rmtree(hmm)
    shutil.copytree(hmm_src, hmm)
    _run(["pocketsphinx_mdef_convert", "-text", str(hmm / "mdef"), str(hmm / "mdef.txt")], work, log)
    sendump_to_mixw(hmm / "sendump", hmm / "mixture_weights")
    # the dictionary: the model's, reduced to the words used (bw reads it whole otherwise)
    items = items if items is not None else corpus(list(sets))
    wav = work / "wav"
    wav.mkdir(exist_ok=True)
    dic = {}
    for line in (base / "en-us" / "cmudict-en-us.dict").read_text().splitlines():
        w, _, pron = line.partition(" ")
        dic.setdefault(w, pron)
    ids, lsn = [], []
    for key, x, text in items:
        if any(w not in dic for w in text.split()):
            print(f"skipped {key}: out-of-vocabulary word(s)", [w for w in text.split() if w not in dic])
            continue
        audio.write_wav(wav / f"{key}.wav", audio.to_float(channel(x, upsample)), 16000)
        ids.append(key)
        lsn.append(f"<s> {text} </s> ({key})")
    used = sorted({w for _, _, t in items for w in t.split() if w in dic})
    (work / "adapt.dic").write_text("".join(f"{w} {dic[w]}\n" for w in used))
    (work / "adapt.fileids").write_text("\n".join(ids) + "\n")
    (work / "adapt.transcription").write_text("\n".join(lsn) + "\n")
    _run(["sphinx_fe", "-argfile", str(hmm / "feat.params"), "-samprate", "16000", "-c", "adapt.fileids",
          "-di", "wav", "-do", "wav", "-ei", "wav", "-eo", "mfc", "-mswav", "yes"], work, log)  # fmt: skip
    acc = work / "acc"

    def collect(mllr: Path | None) -> None:
        if acc.exists():
            shutil.rmtree(acc)
        acc.mkdir()
        _run([str(SPHINXTRAIN / "bw"), "-hmmdir", str(hmm), "-moddeffn", str(hmm / "mdef.txt"), "-ts2cbfn", ".ptm.",
              "-feat", "1s_c_d_dd", "-svspec", "0-12/13-25/26-38", "-cmn", "current", "-agc", "none",
              "-dictfn", "adapt.dic", "-fdictfn", str(hmm / "noisedict"), "-ctlfn", "adapt.fileids",
              "-lsnfn", "adapt.transcription", "-cepdir", "wav", "-accumdir", str(acc),
              *(["-mllrmat", str(mllr)] if mllr else [])], work, log)  # fmt: skip

    mllr = None
    for it in range(iterations):  # statistics collected under the previous transform, re-solved
        collect(mllr)
        nxt = work / f"mllr_{it}"
        _run([str(SPHINXTRAIN / "mllr_solve"), "-meanfn", str(hmm / "means"), "-varfn", str(hmm / "variances"),
              "-outmllrfn", str(nxt), "-accumdir", str(acc)], work, log)  # fmt: skip
        mllr = nxt
    if method == "mllr":
        shutil.copyfile(mllr, out)  # type: ignore[arg-type]
        return out
    # MAP on top of MLLR: the means transformed, then MAP-updated from statistics under them
    _run([str(SPHINXTRAIN / "mllr_transform"), "-inmeanfn", str(hmm / "means"), "-outmeanfn", str(work / "mllr_means"),
          "-mllrmat", str(mllr)], work, log)  # fmt: skip
    shutil.copyfile(work / "mllr_means", hmm / "means")
    collect(None)
    out.mkdir(parents=True, exist_ok=True)
    _run([str(SPHINXTRAIN / "map_adapt"), "-moddeffn", str(hmm / "mdef.txt"), "-ts2cbfn", ".ptm.",
          "-meanfn", str(hmm / "means"), "-varfn", str(hmm / "variances"), "-mixwfn", str(hmm / "mixture_weights"),
          "-tmatfn", str(hmm / "transition_matrices"), "-accumdir", str(acc),
          "-mapmeanfn", str(out / "means"), "-mapvarfn", str(out / "variances"),
          "-mapmixwfn", str(out / "mixture_weights"), "-maptmatfn", str(out / "transition_matrices")],
         work, log)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upsample", choices=("fold", "soxr"), default="fold")
    ap.add_argument("--data", default="testdata,osr", help="comma-separated: testdata, osr, pesq, espeak")
    ap.add_argument("--method", choices=("mllr", "map"), default="mllr")
    ap.add_argument("--iterations", type=int, default=2, help="MLLR passes (each re-aligns under the last)")
    ap.add_argument("--out", help="default: voicelab/data/asr/en-us-pcmu-<upsample>.mllr")
    ap.add_argument("--work", help="keep the intermediate files here")
    a = ap.parse_args()
    data = Path(__file__).resolve().parents[1] / "voicelab" / "data" / "asr"
    out = Path(a.out or data / f"en-us-pcmu-{a.upsample}.mllr")
    out.parent.mkdir(parents=True, exist_ok=True)
    res = adapt(out, upsample=a.upsample, sets=tuple(a.data.split(",")), method=a.method,
                iterations=a.iterations, work=Path(a.work) if a.work else None)  # fmt: skip
    print(f"wrote {res}")


if __name__ == "__main__":
    main()
