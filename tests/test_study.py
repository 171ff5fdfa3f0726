"""voicelab.experiments.study: trials, pairing, talkers, resume, Dask (LocalCluster and a real
scheduler with two workers), kill -9 of a worker and of the study process; the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from voicelab.errors import CodecUnavailableError, MetricError, ParameterError
from voicelab.experiments import Scenario
from voicelab.experiments.store import ResultStore, StoreBusyError
from voicelab.experiments.study import Study

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BASE = {"mode": "sim", "seconds": 1.0}


def small(**kw) -> Study:
    args = dict(base=BASE, grid={"codec": ["pcmu", "g722"], "channel.loss_rate": [0.0, 0.05]}, repeats=3,
                talkers="corpus", seed=4, name="t")
    args.update(kw)
    return Study(**args)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _each_once(store: Path, study: Study) -> pd.DataFrame:
    df = ResultStore(store, quiet=True).load()
    want = {t.trial_id for t in study.trials()}
    assert set(df.trial_id) == want
    assert df.groupby(["trial_id", "direction"]).size().eq(1).all()  # every trial exactly once
    assert len(df) == 2 * len(want)
    return df


# ---------------------------------------------------------------------- planning
def test_trials_order_ids_pairing_and_speech(natural_env):
    s = small()
    trials = s.trials()
    assert len(trials) == len(s) == 12
    tid, point, repeat, scn = trials[0]  # unpacks as (trial_id, point, repeat, scenario)
    assert point == {"codec": "pcmu", "channel.loss_rate": 0.0} and repeat == 0 and isinstance(scn, Scenario)
    assert [t.trial_id for t in s.trials()] == [t.trial_id for t in trials]
    assert len({t.trial_id for t in trials}) == 12
    # paired: repeat r has the same seed and utterance in every grid point
    for r in range(3):
        same = [t for t in trials if t.repeat == r]
        assert len({t.scenario.seed for t in same}) == 1
        assert len({t.scenario.speech for t in same}) == 1
    # the speech dimension: repeats rotate over talkers, not only seeds
    first = [t for t in trials if t.point == trials[0].point]
    assert len({t.talker for t in first}) >= 2 and len({t.scenario.seed for t in first}) == 3
    assert all(t.scenario.speech.startswith("corpus:") for t in trials)
    unpaired = small(paired=False).trials()
    assert len({t.scenario.seed for t in unpaired}) == 12


def test_trial_ids_stable_across_processes(natural_env):
    code = "from voicelab.experiments.study import Study; import json, sys; " \
           f"s = Study(base={BASE!r}, grid={{'codec': ['pcmu', 'g722']}}, repeats=2, talkers='corpus', seed=4); " \
           "print(json.dumps([t.trial_id for t in s.trials()]))"
    hs = "12345" if os.environ.get("PYTHONHASHSEED") != "12345" else "1"
    out = subprocess.run([sys.executable, "-c", code], env=_env() | {"PYTHONHASHSEED": hs}, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    here = Study(base=BASE, grid={"codec": ["pcmu", "g722"]}, repeats=2, talkers="corpus", seed=4)
    assert json.loads(out) == [t.trial_id for t in here.trials()]


def test_talker_list_rotates_talkers(natural_env):
    from voicelab.experiments.study import _corpus_items

    talkers = sorted({it[2] for it in _corpus_items() if it[1].startswith("cmu_arctic")})
    assert len(talkers) >= 2
    s = Study(base=BASE, grid={"codec": ["pcmu"]}, repeats=4, talkers=talkers[:2])
    got = [t.talker for t in s.trials()]
    assert got == [talkers[0], talkers[1], talkers[0], talkers[1]]
    assert len({t.speech_item for t in s.trials()}) == 4  # each talker's utterances in turn
    with pytest.raises(ParameterError, match="no talker or corpus item 'nobody'"):
        Study(base=BASE, repeats=2, talkers=["nobody"]).trials()


def test_arms_change_fields_together_and_example_yaml_loads():
    s = Study(base=BASE, grid={"arm": [{"name": "g711", "codec": "pcmu"}, {"name": "opus-fec", "codec": "opus", "fec": True}],
                               "channel": ["lan", "wifi"]}, repeats=2)
    ts = s.trials()
    assert len(ts) == 8
    last = ts[-1]
    assert last.scenario.codec == "opus" and last.scenario.fec and last.scenario.uplink.loss_rate > 0
    assert s._payload(last)["point"] == {"arm": "opus-fec", "channel": "wifi"}
    with pytest.raises(ParameterError, match="arm list"):
        Study(base=BASE, grid={"arm": ["pcmu"]})
    ex = Study.from_yaml(REPO / "examples" / "study.yaml")
    assert len(ex) == 40 and ex.paired and ex.talkers == "corpus"
    assert {t.scenario.transport for t in ex.trials()} == {"sip", "webrtc"}


def test_study_validation_and_yaml_roundtrip(tmp_path):
    s = Study(base=BASE, grid={"codec": ["pcmu", "g722"]}, repeats=2, talkers="corpus", paired=False, seed=3, name="x")
    p = tmp_path / "s.yaml"
    p.write_text(s.to_yaml() + "store: somewhere\nexecutor: local\n")
    again = Study.from_yaml(p)
    assert again == s and again.to_dict() == s.to_dict()
    assert Study.run_settings(p) == {"store": "somewhere", "executor": "local"}
    with pytest.raises(ParameterError, match="codek"):
        Study(base=BASE, grid={"codek": ["pcmu"]})
    with pytest.raises(ParameterError):
        Study(base=BASE, grid={"codec": "pcmu"})
    with pytest.raises(ParameterError, match="repeats"):
        Study(base=BASE, repeats=0)
    with pytest.raises(ParameterError, match="speech"):
        Study(base=BASE, grid={"speech": ["harvard"]}, talkers="corpus")
    p.write_text("base: {mode: sim}\nrepeat: 3\n")
    with pytest.raises(ParameterError, match="unknown study key"):
        Study.from_yaml(p)


# ---------------------------------------------------------------------- serial runs, store
def test_serial_run_store_resume_and_results(natural_env, tmp_path, monkeypatch):
    import voicelab.experiments.study as study_mod

    s = small(grid={"codec": ["pcmu", "g722"]}, repeats=2)
    df = s.run(store=tmp_path / "st", progress=False)
    assert len(df) == 8 and df.error.isna().all()
    prov = [c for c in df.columns if c.startswith("prov_")]
    assert {"prov_voicelab", "prov_python", "prov_numpy", "prov_hostname", "prov_cores"} <= set(prov)
    for col in ("study", "trial_id", "scenario_key", "repeat", "talker", "speech_item", "natural_speech", "seed",
                "wall_s", "error", "grid.codec", "direction", "pesq_wb"):
        assert col in df.columns, col
    assert df.natural_speech.all()
    stored = _each_once(tmp_path / "st", s)
    assert set(stored.columns) >= set(df.columns) - {"grid.codec"}
    # resume: nothing runs again
    calls = []
    monkeypatch.setattr(study_mod, "run_trial", lambda p: calls.append(p) or pytest.fail("ran again"))
    again = s.run(store=tmp_path / "st", progress=False)
    assert calls == [] and len(again) == 8
    pd.testing.assert_series_equal(again.pesq_wb, df.pesq_wb)
    # summary and paired comparison
    summ = s.summary(df, ["pesq_wb"])
    assert set(summ["n"]) == {2} and {"ci_low", "ci_high", "median_ci_low"} <= set(summ.columns)
    line = s.compare(df, "codec", "g722", "pcmu", "pesq_wb")
    assert line.endswith("n = 2 paired trials")


def test_failed_trials_stored_transient_not(natural_env, tmp_path, monkeypatch):
    import importlib

    run_mod = importlib.import_module("voicelab.experiments.run")
    real = run_mod.run

    def flaky(scn, **kw):
        if scn.codec == "g722":
            raise MetricError("speech too short for PESQ")
        if scn.codec_params.get("bitrate") == 16000:
            raise CodecUnavailableError("codec library missing: install libfoo")
        return real(scn, **kw)

    monkeypatch.setattr(run_mod, "run", flaky)
    s = Study(base=BASE, grid={"codec": ["pcmu", "g722"]}, repeats=2)
    df = s.run(store=tmp_path, progress=False)
    g = df[df["grid.codec"] == "g722"]
    assert g.error.str.startswith("MetricError: speech too short").all() and g.pesq_wb.isna().all()
    assert len(ResultStore(tmp_path, quiet=True).done_ids()) == 4  # a failed trial is a finished trial

    s2 = Study(base=BASE | {"codec": "opus"}, grid={"codec_params.bitrate": [16000, 24000]}, repeats=1, name="t2")
    df2 = s2.run(store=tmp_path / "b", progress=False)
    bad = df2[df2["grid.codec_params.bitrate"] == 16000]
    assert bad.error.str.startswith("CodecUnavailableError").all()
    assert len(ResultStore(tmp_path / "b", quiet=True).done_ids()) == 1  # the transient failure is not stored
    monkeypatch.setattr(run_mod, "run", real)
    df3 = s2.run(store=tmp_path / "b", progress=False)  # rerun: only the missing trial runs, now it works
    assert df3.error.isna().all() and len(ResultStore(tmp_path / "b", quiet=True).done_ids()) == 2


def test_second_study_on_a_locked_store_refuses(tmp_path):
    held = ResultStore(tmp_path).lock()
    try:
        with pytest.raises(StoreBusyError, match="in use by another study"):
            small(grid={"codec": ["pcmu"]}, repeats=1, talkers=None).run(store=tmp_path, progress=False)
    finally:
        held.unlock()


# ---------------------------------------------------------------------- Dask
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_local_cluster_matches_serial(natural_env, tmp_path):
    s = small(grid={"codec": ["pcmu", "g722"]}, repeats=2)
    dask_df = s.run(store=tmp_path / "d", executor="local", workers=2, progress=False)
    serial = s.run(progress=False)  # no store: everything in this process
    _each_once(tmp_path / "d", s)
    key = ["trial_id", "direction"]
    a = dask_df.sort_values(key).reset_index(drop=True)
    b = serial.sort_values(key).reset_index(drop=True)
    pd.testing.assert_series_equal(a.pesq_wb, b.pesq_wb)  # sim trials are deterministic in any process
    assert a.trace_sha256.equals(b.trace_sha256) if "trace_sha256" in a else True


def _wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _parts(store: Path) -> int:
    p = store / "parts"
    return len([f for f in p.glob("*.parquet") if not f.name.startswith(".")]) if p.is_dir() else 0


@pytest.fixture
def dask_cluster(tmp_path):
    """A real scheduler and two single-threaded workers, each started as its own command."""
    sched_file = tmp_path / "scheduler.json"
    env = _env()
    procs = []
    logs = []

    def start(args):
        log = open(tmp_path / f"dask-{len(procs)}.log", "w")
        logs.append(log)
        p = subprocess.Popen([str(VENV_BIN / "dask"), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        return p

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)])
        _wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 30, "the scheduler file")
        workers = [start(["worker", "--scheduler-file", str(sched_file), "--nthreads", "1", "--no-nanny",
                          "--no-dashboard", "--host", "127.0.0.1"]) for _ in range(2)]
        addr = json.loads(sched_file.read_text())["address"]
        from dask.distributed import Client

        with Client(addr, timeout="20s") as c:
            c.wait_for_workers(2, timeout=40)
        yield addr, workers
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait(timeout=20)
        for log in logs:
            log.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_real_scheduler_two_workers_kill_one(natural_env, tmp_path, dask_cluster):
    addr, workers = dask_cluster
    s = small(grid={"codec": ["pcmu", "g722"]}, repeats=5)
    store = tmp_path / "st"
    box: dict = {}

    def go():
        try:
            box["df"] = s.run(store=store, executor="dask://" + addr.split("://", 1)[1], progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["exc"] = exc

    t = threading.Thread(target=go)
    t.start()
    _wait_for(lambda: _parts(store) >= 2 or not t.is_alive(), 60, "the first parts")
    done_before = _parts(store)
    workers[0].send_signal(signal.SIGKILL)  # a worker dies mid-study
    t.join(timeout=120)
    assert not t.is_alive()
    assert "exc" not in box, box.get("exc")
    assert done_before < len(s), "the worker was killed after the study ended: the test proves nothing"
    df = _each_once(store, s)
    assert df.error.isna().all()
    assert box["df"].trial_id.nunique() == len(s)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_the_study_process_then_resume(natural_env, tmp_path):
    store = tmp_path / "st"
    yml = tmp_path / "study.yaml"
    s = small(grid={"codec": ["pcmu", "g722"]}, repeats=5)
    yml.write_text(s.to_yaml())
    cmd = [str(VENV_BIN / "voicelab"), "study", "run", str(yml), "--store", str(store), "--quiet"]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_for(lambda: _parts(store) >= 2 or p.poll() is not None, 90, "the first parts")
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=20)
    before = {f.name: f.stat().st_mtime_ns for f in (store / "parts").glob("[!.]*.parquet")}
    assert 2 <= len(before) < len(s), "the study was not interrupted mid-way"
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    _each_once(store, s)
    after = {f.name: f.stat().st_mtime_ns for f in (store / "parts").glob("[!.]*.parquet")}
    assert not list((store / "parts").glob(".tmp-*"))  # a write cut by the kill is cleaned up
    assert all(after[n] == m for n, m in before.items())  # finished trials were kept, not rerun
    assert "mean with 95 % Student-t interval" in out.stdout


# ---------------------------------------------------------------------- CLI
def _cli(capsys, *args):
    from voicelab.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def test_cli_results_commands(natural_env, tmp_path, capsys):
    s = small(grid={"codec": ["pcmu", "g722"]}, repeats=2)
    s.run(store=tmp_path / "st", progress=False)
    ls = _cli(capsys, "results", "ls", tmp_path)
    assert ls.returncode == 0 and "study=t" in ls.stdout and "trials=4" in ls.stdout
    show = _cli(capsys, "results", "show", tmp_path / "st", "--by", "codec", "direction", "--metric", "pesq_wb")
    assert show.returncode == 0, show.stderr
    assert "codec=g722" in show.stdout and "95 % t-interval" in show.stdout
    for fmt in ("csv", "parquet", "html"):
        ex = _cli(capsys, "results", "export", tmp_path / "st", "--format", fmt, "-o", tmp_path / f"out.{fmt}")
        assert ex.returncode == 0, ex.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 8
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 8
    html = (tmp_path / "out.html").read_text()
    assert "mean with 95 % Student-t interval, n = 2" in html
    bad = _cli(capsys, "results", "show", tmp_path / "missing")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no results store" in bad.stderr
    bad = _cli(capsys, "study", "run", tmp_path / "missing.yaml")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("voicelab: error: cannot read study file")
    bad = _cli(capsys, "study", "run", tmp_path / "x.yaml", "--executor", "spark")
    assert bad.returncode == 2 and "executor must be" in bad.stderr
