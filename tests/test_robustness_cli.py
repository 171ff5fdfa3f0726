"""The command line and the data under damage and misuse (issue #11, "The command line and
the data"): one-line errors (exit 2, no traceback), sweep journals that are damaged or
shared, PESQ on long recordings.
"""

from __future__ import annotations

import fcntl
import json

import pytest

from voicelab.cli import main

from .test_cli import run


# ---------------------------------------------------------------- sweep journals
def _sweep_spec(tmp_path, journal):
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {speech: harvard, max_speech_s: 2}\ngrid: {codec: [pcmu, pcma]}\n"
                    f"repeats: 1\nseed: 2\njournal: {journal}\noutput: {tmp_path / 'out.csv'}\n")
    return spec


def test_sweep_resumes_a_journal_whose_tail_is_not_utf8(capsys, tmp_path):
    journal = tmp_path / "j.jsonl"
    spec = _sweep_spec(tmp_path, journal)
    rc, _, err = run(capsys, "sweep", str(spec))
    assert rc == 0, err
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    # the first record survives; the second is cut and ends in bytes that are not UTF-8
    journal.write_bytes(lines[0] + lines[1][:40] + b"\xff\xfe\x80garbage")
    rc, _, err = run(capsys, "sweep", str(spec))
    assert rc == 0, err
    notes = [l for l in err.splitlines() if "damaged tail" in l]
    assert len(notes) == 1 and "Traceback" not in err, err
    after = journal.read_bytes()
    after.decode("utf-8")  # the damage is gone
    recs = [json.loads(l) for l in after.splitlines()]
    assert len(recs) == 2 and after.startswith(lines[0])  # kept the good trial, reran the damaged one
    assert {r["trial_key"] for r in recs} == {json.loads(lines[0])["trial_key"], json.loads(lines[1])["trial_key"]}


def test_second_sweep_on_a_locked_journal_refuses(capsys, tmp_path):
    journal = tmp_path / "j.jsonl"
    spec = _sweep_spec(tmp_path, journal)
    with open(journal, "a+b") as other:  # a first sweep holds the journal (its lock)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, out, err = run(capsys, "sweep", str(spec))
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and "in use by another sweep" in lines[0], err
    assert journal.read_bytes() == b""  # it ran nothing
    rc, _, err = run(capsys, "sweep", str(spec))  # lock released: it runs
    assert rc == 0, err


def test_two_sweep_calls_on_one_journal_second_refuses(tmp_path):
    from voicelab.errors import ParameterError
    from voicelab.sim import Scenario
    from voicelab.sim.sweep import _prepare_journal

    journal = tmp_path / "j.jsonl"
    fh = _prepare_journal(journal, {})  # what a running sweep holds
    try:
        from voicelab.sim import sweep

        with pytest.raises(ParameterError, match="in use by another sweep"):
            sweep(Scenario(codec="pcmu", speech="harvard", max_speech_s=2.0), {"codec": ["pcmu"]},
                  journal=journal, progress=False)
    finally:
        fh.close()
