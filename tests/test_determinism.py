"""Reproducible across processes: the same command and seed give byte-identical results in
two separate processes (different ``PYTHONHASHSEED``, started in different seconds), for
the natural corpus and for eSpeak NG speech.

eSpeak NG seeds the random generator behind its breath noise (voice ``en-us+f3``) from the
current second; before voicelab set it (``espeak_ng_SetRandSeed``), two processes gave
different ``trace_sha256`` and PESQ values. Each pair below runs one process after the
other (each takes > 1 s), so the two syntheses never share a second.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # eight CLI processes: ~20 s of CPU (about 12 s on an idle 2-core machine)

CALL = ["call", "--transport", "sip", "--codec", "pcmu", "--net", "vnet", "--virtual-time", "--duration", "10",
        "--loss", "0.02", "--jitter-ms", "20", "--seed", "5", "--json"]
SIMULATE = ["simulate", "--codec", "pcmu", "--loss", "0.02", "--jitter-ms", "20", "--seed", "5", "--json"]

#: Fields that may legitimately differ between runs (wall-clock measurements), if any appear.
_WALL_CLOCK = re.compile(r"(^|\.)(wall|cpu)_?(time)?_?(s|ms)?$|_wall_|elapsed")


def _run(args: list[str], hashseed: int, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VOICELAB_DATA"}  # the shipped corpus, as on a fresh clone
    env.update(PYTHONHASHSEED=str(hashseed), PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
               XDG_CACHE_HOME=str(tmp / f"xdg-{hashseed}"))  # no fetched speech either
    p = subprocess.run([sys.executable, "-m", "voicelab", *args], env=env, cwd=tmp, capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, f"voicelab {' '.join(args)} failed:\n{p.stderr[-2000:]}"
    out = json.loads(p.stdout)
    return {k: v for k, v in out.items() if not _WALL_CLOCK.search(k)}


def _pair(args: list[str], tmp: Path) -> tuple[dict, dict]:
    return _run(args, 1, tmp), _run(args, 2, tmp)  # one after the other: different seconds


CASES = {
    "call-natural": CALL,
    "call-espeak": [*CALL, "--speech", "espeak"],
    "simulate-natural": SIMULATE,
    "simulate-espeak": [*SIMULATE, "--speech", "espeak"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    tmp = tmp_path_factory.mktemp("determinism")
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {name: pool.submit(_pair, args, tmp) for name, args in CASES.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_give_identical_json(runs, case):
    a, b = runs[case]
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    assert not differ, f"{case}: fields differ between two processes: " + ", ".join(
        f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in differ[:8])
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("case", ["call-natural", "call-espeak"])
def test_vnet_trace_is_identical(runs, case):
    a, b = runs[case]
    assert a["virtual_time"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", a["trace_sha256"]) and a["trace_sha256"] == b["trace_sha256"]
    assert a["trace_records"] > 0


def test_results_say_what_speech_they_were_measured_on(runs):
    nat, _ = runs["call-natural"]
    assert nat["synthetic_speech"] is False and "warnings" not in nat
    assert nat["speech"].startswith("default[cmu_arctic_aew_a0001,cmu_arctic_axb_a0004")
    syn, _ = runs["call-espeak"]
    assert syn["synthetic_speech"] is True and any("synthetic speech" in w for w in syn["warnings"])
    assert syn["speech"].startswith("espeak[harvard_l1_s01_en-us,")
    sim, _ = runs["simulate-natural"]
    assert sim["speech_source"] == "natural:package" and sim["speech_talkers"][:2] == ["aew", "axb"]
    assert sim["speech_items"][0] == "cmu_arctic_aew_a0001"
    ssim, _ = runs["simulate-espeak"]
    assert ssim["synthetic_speech"] is True and ssim["speech_source"] == "synthetic:espeak-ng"
    assert ssim["speech_talkers"][:2] == ["espeak:en-us", "espeak:en-us+f3"]
    # the two corpora really are different speech, so the espeak pairs test eSpeak
    assert nat["trace_sha256"] != syn["trace_sha256"]
