"""What the agent understood over PCMU vs the recogniser on the unprocessed utterances (issue #12).

Issue #12's acceptance: the WER of a clean PCMU call equals the WER of the recogniser on
the unprocessed utterances within 5 points. PocketSphinx's en-us model is a 16 kHz
model; this measures, on every utterance with a transcript (the six CMU ARCTIC items of
``VOICELAB_DATA`` and eSpeak NG's Harvard list 1, reported apart), call-shaped (one
pipeline hears the utterances one after the other with room for the replies, as in a
call):

* ``ref16``: the unprocessed utterances at 16 kHz (the reference);
* ``bl8`` / ``pcmu``: band-limited to 8 kHz / through G.711 mu-law, brought to 16 kHz
  by soxr (``asr_upsample="soxr"``) or by zero-stuffing (``"fold"``);
* ``call``: real PCMU calls on the virtual network (virtual time, SIP), seeds 0..R-1;
* ``+mllr``: the same with the recogniser's shipped narrowband MLLR transform
  (``asr_adapt=True``, the default for 8 kHz calls; the rows without it set
  ``asr_adapt=False``); ``mllr-none``: adapted minus unadapted, paired by utterance.

WER with a 95 % bootstrap interval over utterances, and the paired difference to the
reference (also bootstrapped). Usage::

    VOICELAB_DATA=/work/shared/datasets/speech python benchmarks/bench_wer_narrowband.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from voicelab import audio, codecs
from voicelab.audio.espeak import HARVARD_LIST_1, synthesize
from voicelab.net.vclock import run_virtual
from voicelab.pipeline.core import PipelineConfig
from voicelab.pipeline.wer import word_errors
from voicelab.sim.turns import hear_offline
from voicelab.turns import Utterance, load_utterances, pipeline_call


def corpora() -> dict[str, list[Utterance]]:
    arctic = [u for u in load_utterances(6) if not u.synthetic]
    harvard = [Utterance(f"harvard1_{i + 1:02d}", synthesize(s, sample_rate=16000), s, synthetic=True)
               for i, s in enumerate(HARVARD_LIST_1)]  # fmt: skip
    return {"arctic": arctic, "harvard_espeak": harvard}


def call_shaped(utts: list[Utterance], rate: int, *, mulaw: bool, upsample: str,
                adapt: bool | str = False) -> list[tuple[int, int]]:  # fmt: skip
    """(errors, words) per utterance: one pipeline hears them in sequence at ``rate``."""
    gap = np.zeros(16000 * 6)
    x = np.concatenate([np.zeros(8000)] + [np.concatenate([u.samples, gap]) for u in utts])
    y = audio.resample(x, 16000, rate) if rate != 16000 else x
    if mulaw:
        c = codecs.get("pcmu")
        pcm = audio.to_int16(y)
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % c.frame_samples, dtype=np.int16)])
        F = c.frame_samples
        y = audio.to_float(np.concatenate([c.decode(c.encode(pcm[i : i + F])) for i in range(0, len(pcm), F)]))
    p = hear_offline(y, rate, config=PipelineConfig(asr_upsample=upsample, asr_adapt=adapt))
    # each utterance's words: the agent turns that started while it was being said
    starts = np.cumsum([0.5] + [len(u.samples) / 16000 + 6.0 for u in utts])
    out = []
    for i, u in enumerate(utts):
        text = " ".join(t.text or "" for t in p.turns if starts[i] - 0.05 <= t.speech_from < starts[i + 1] - 5.0)
        out.append(word_errors(u.transcript, text))
    return out


def calls(utts: list[Utterance], *, seed: int, upsample: str, adapt: bool | str = False) -> list[tuple[int, int]]:
    res = run_virtual(pipeline_call(transport="sip", codec="pcmu", turns=len(utts), utterances=utts, seed=seed,
                                    network="virtual", pipeline={"asr_upsample": upsample, "asr_adapt": adapt}),
                      stall_timeout=120.0)  # fmt: skip
    return [(r["word_errors"], r["words"]) for r in res["turns"]]


def boot(ew: list[tuple[int, int]], ref: list[tuple[int, int]] | None = None, n: int = 4000, seed: int = 0) -> dict:
    e, w = np.array([a for a, _ in ew], float), np.array([b for _, b in ew], float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), size=(n, len(e)))
    wer = e.sum() / w.sum()
    bs = e[idx].sum(1) / w[idx].sum(1)
    out = {"wer": wer, "lo": float(np.percentile(bs, 2.5)), "hi": float(np.percentile(bs, 97.5)), "words": int(w.sum()),
           "utterances": len(e)}  # fmt: skip
    if ref is not None:
        er = np.array([a for a, _ in ref], float)
        d = (e[idx].sum(1) - er[idx].sum(1)) / w[idx].sum(1)
        out.update(diff=wer - er.sum() / w.sum(), diff_lo=float(np.percentile(d, 2.5)), diff_hi=float(np.percentile(d, 97.5)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--no-calls", action="store_true")
    ap.add_argument("--corpus", action="append", help="arctic and/or harvard_espeak (default both)")
    a = ap.parse_args()
    results: dict = {}
    for name, utts in corpora().items():
        if a.corpus and name not in a.corpus:
            continue
        rows: dict = {}

        def show(k, v):
            rows[k] = v
            d = f"  diff {100 * v['diff']:+.1f} [{100 * v['diff_lo']:+.1f}, {100 * v['diff_hi']:+.1f}]" if "diff" in v else ""
            print(f"{name:15s} {k:12s} WER {v['wer']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}] n={v['words']}{d}", flush=True)

        ref = call_shaped(utts, 16000, mulaw=False, upsample="soxr")
        show("ref16", boot(ref))
        for up in ("soxr", "fold"):
            show(f"bl8/{up}", boot(call_shaped(utts, 8000, mulaw=False, upsample=up), ref))
            off = call_shaped(utts, 8000, mulaw=True, upsample=up)
            for adapt in (False, True):  # without / with the shipped narrowband MLLR transform
                tag = f"{up}+mllr" if adapt else up
                on = call_shaped(utts, 8000, mulaw=True, upsample=up, adapt=True) if adapt else off
                show(f"pcmu/{tag}", boot(on, ref))
                if adapt:  # the transform's own effect, paired by utterance
                    show(f"pcmu/{up}:mllr-none", boot(on, off))
                if not a.no_calls:
                    pooled_ref, pooled = [], []
                    for s in range(a.repeats):
                        c = calls(utts, seed=s, upsample=up, adapt=adapt)
                        show(f"call{s}/{tag}", boot(c, ref))
                        pooled += c
                        pooled_ref += ref
                    show(f"calls/{tag}", boot(pooled, pooled_ref))
        results[name] = rows
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
