"""voicelab.experiments.store: atomic parts, resume, damaged parts, the lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from voicelab.errors import ParameterError
from voicelab.experiments.store import ResultStore, StoreBusyError

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _rows(tid: str, value: float) -> list[dict]:
    return [
        {"trial_id": tid, "direction": "caller_to_agent", "pesq_wb": value, "codec_params": {"bitrate": 8000}, "error": None},
        {"trial_id": tid, "direction": "agent_to_caller", "pesq_wb": value + 0.1, "codec_params": {"bitrate": 8000}, "error": None},
    ]


def test_write_load_and_reopen(tmp_path):
    st = ResultStore(tmp_path / "s")
    st.write_trial("t1", _rows("t1", 3.0))
    st.write_trial("t2", _rows("t2", 4.0))
    assert st.done_ids() == {"t1", "t2"}
    again = ResultStore(tmp_path / "s")
    assert again.done_ids() == {"t1", "t2"}
    df = again.load()
    assert len(df) == 4
    assert sorted(df.trial_id.unique()) == ["t1", "t2"]
    assert df.codec_params.iloc[0] == '{"bitrate": 8000}'  # containers stored as JSON text
    assert len(again.load(["t2"])) == 2


def test_rewrite_keeps_one_copy(tmp_path):
    st = ResultStore(tmp_path)
    st.write_trial("t1", _rows("t1", 3.0))
    st.write_trial("t1", _rows("t1", 3.5))
    df = st.load()
    assert len(df) == 2 and set(df.pesq_wb) == {3.5, 3.6}


def test_mixed_types_become_text(tmp_path):
    st = ResultStore(tmp_path)
    st.write_trial("t1", [{"direction": "x", "v": 1}, {"direction": "y", "v": "n/a"}])
    assert list(st.load().v) == ["1", "n/a"]


def test_truncated_part_is_dropped_with_message(tmp_path, capsys):
    st = ResultStore(tmp_path)
    st.write_trial("good", _rows("good", 3.0))
    p = st.write_trial("bad", _rows("bad", 3.0))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # a cut-short file
    (st.parts / ".tmp-x-1234.parquet").write_bytes(b"PAR1")  # left by a kill mid-write
    again = ResultStore(tmp_path)
    err = capsys.readouterr().err
    assert "part bad.parquet is damaged" in err and "will run again" in err
    assert again.done_ids() == {"good"}
    assert not (st.parts / ".tmp-x-1234.parquet").exists()
    assert (st.parts / "bad.parquet.damaged").exists()
    assert set(again.load().trial_id) == {"good"}


def test_lock_refuses_a_second_writer(tmp_path):
    st = ResultStore(tmp_path).lock()
    code = (
        "import sys\n"
        "from voicelab.experiments.store import ResultStore, StoreBusyError\n"
        "try:\n"
        f"    ResultStore({str(tmp_path)!r}).lock()\n"
        "except StoreBusyError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 3, out.stderr
    assert "in use by another study" in out.stdout
    st.unlock()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    assert out.returncode == 0, out.stdout + out.stderr


def test_lock_in_process_and_bad_paths(tmp_path):
    a = ResultStore(tmp_path).lock()
    with pytest.raises(StoreBusyError):
        ResultStore(tmp_path).lock()  # flock is per open file: a second handle is refused too
    a.unlock()
    with ResultStore(tmp_path):
        pass
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ParameterError):
        ResultStore(f)
    with pytest.raises(ParameterError):
        ResultStore(tmp_path / "missing", create=False)
    with pytest.raises(ParameterError):
        a.write_trial("../x", _rows("x", 1.0))


def test_compact_keeps_every_trial_once(tmp_path):
    st = ResultStore(tmp_path)
    for i in range(5):
        st.write_trial(f"t{i}", _rows(f"t{i}", float(i)))
    before = st.load().sort_values(["trial_id", "direction"]).reset_index(drop=True)
    target = st.compact()
    st.unlock()
    assert target is not None and len(list(st.parts.glob("*.parquet"))) == 1
    again = ResultStore(tmp_path)
    assert again.done_ids() == {f"t{i}" for i in range(5)}
    after = again.load().sort_values(["trial_id", "direction"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before[["trial_id", "direction", "pesq_wb"]], after[["trial_id", "direction", "pesq_wb"]])
    again.write_trial("a1", _rows("a1", 9.0)); again.write_trial("t1", _rows("t1", 9.0))  # a rerun after compaction: still one copy per trial
    df = again.load()
    assert len(df) == 12 and df[df.trial_id == "t1"].pesq_wb.min() == 9.0 and (df.trial_id == "t1").sum() == 2
