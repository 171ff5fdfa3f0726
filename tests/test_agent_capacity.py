"""The agent under SIPp load, briefly: signalling-only mode and overload control.

Real SIPp (Debian package sip-tester) with benchmarks/sipp/uac_load.xml: a 503 must carry
Retry-After (the scenario fails the call otherwise) and is acknowledged. Counts, not
speed, are asserted (the rates here are far below capacity).
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from voicelab.agent import Agent, parse_mode
from voicelab.errors import ParameterError
from voicelab.net.iface import free_port
from voicelab.sip.overload import OverloadControl

from .conftest import need_tool

SCENARIO = Path(__file__).resolve().parent.parent / "benchmarks" / "sipp" / "uac_load.xml"


async def _load(sipp: str, agent: Agent, calls: int, rate: int, cwd: Path) -> tuple[int, dict[str, int]]:
    host, port = agent.address
    proc = await asyncio.create_subprocess_exec(
        sipp, f"{host}:{port}", "-sf", str(SCENARIO), "-m", str(calls), "-r", str(rate), "-l", "10000",
        "-i", "127.0.0.1", "-p", str(free_port(kind="udp")), "-nostdin", "-timeout", "30s", "-trace_counts",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=str(cwd))
    try:
        rc = await asyncio.wait_for(proc.wait(), 60)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    with open(next(cwd.glob("*_counts.csv"))) as f:
        rows = list(csv.reader(f, delimiter=";"))
    counts = {k: int(v) for k, v in zip(rows[0], rows[-1]) if v.isdigit()}
    for _ in range(50):  # the last BYEs' events reach the agent's task
        if agent.calls_ended >= counts.get("6_200_Recv", 0):
            break
        await asyncio.sleep(0.02)
    return rc, counts


def test_signalling_mode_answers_and_opens_no_media(tmp_path):
    sipp = need_tool("sipp", "sip-tester")

    async def run():
        async with Agent(mode="signalling", max_calls=1000, codecs=["pcmu"]) as agent:
            rc, counts = await _load(sipp, agent, 30, 30, tmp_path)
            return rc, counts, agent.calls_answered, agent.calls_ended, len(agent.streams), list(agent.errors)

    rc, counts, answered, ended, streams, errors = asyncio.run(run())
    assert rc == 0 and counts["10_200_Recv"] == 30 and counts.get("4_503_Recv", 0) == 0
    assert answered == ended == 30 and streams == 0 and errors == []


def test_overload_refuses_with_503_retry_after_and_every_accepted_call_gets_its_bye(tmp_path):
    sipp = need_tool("sipp", "sip-tester")

    async def run():
        oc = OverloadControl(max_rate=5.0, burst=2, max_lag=None)
        async with Agent(mode="signalling", max_calls=1000, codecs=["pcmu"], overload=oc) as agent:
            rc, counts = await _load(sipp, agent, 60, 60, tmp_path)
            return rc, counts, agent, oc

    rc, counts, agent, oc = asyncio.run(run())
    refused, accepted, byed = counts.get("4_503_Recv", 0), counts["6_200_Recv"], counts["10_200_Recv"]
    assert rc == 0, counts  # no failed call: each 503 had Retry-After and was ACKed
    assert refused > 0 and accepted + refused == 60
    assert byed == accepted == agent.calls_answered == agent.calls_ended
    assert agent.calls_shed == refused == oc.counts.get("rate", 0)
    assert agent.shed_acks == counts["12_ACK_Sent"]  # dropped unparsed
    assert oc.counts["admitted"] == accepted


def test_signalling_mode_parsing():
    assert parse_mode("signalling") == ("signalling", None)
    assert parse_mode("signalling:1.5") == ("signalling", "1.5")
    for bad in ("signalling:x", "signalling:-1"):
        with pytest.raises(ParameterError, match="signalling"):
            parse_mode(bad)
    with pytest.raises(ParameterError, match="OverloadControl"):
        Agent(overload={"max_rate": 5})


def test_signalling_mode_with_hold_time_hangs_up_itself():
    from voicelab.calls import open_caller
    from voicelab.net.iface import LoopbackInterface
    from voicelab.sip.ua import CallEnded, CallEstablished

    async def run():
        loop = asyncio.get_running_loop()
        async with Agent(mode="signalling:0.2", codecs=["pcmu"]) as agent:
            ua, sip = await open_caller(LoopbackInterface(loop), codec="pcmu", seed=5)
            try:
                call = ua.invite(agent.uri, now=loop.time(), media_port=free_port(kind="udp"))
                sip.flush()
                await sip.wait_for(CallEstablished, timeout=5.0)
                ended = await sip.wait_for(CallEnded, timeout=5.0)
            finally:
                await sip.close()
            await asyncio.wait_for(agent.ended(1), 5.0)
            return call, ended, agent.calls_answered, len(agent.streams)

    call, ended, answered, streams = asyncio.run(run())
    assert ended.call is call and ended.by_remote and answered == 1 and streams == 0


def test_serve_writes_vital_signs_for_soaks(tmp_path):
    """`agent serve --stats-file`: one JSON line per interval; after SIPp's calls the counts
    say every call was answered and ended and nothing (calls, streams) is left open."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    sipp = need_tool("sipp", "sip-tester")
    port = free_port(kind="udp")
    stats = tmp_path / "vital.jsonl"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    agent = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "voicelab", "agent", "serve", "--sip", f"127.0.0.1:{port}",
                              "--mode", "signalling", "--no-overload-control",  # counts, not admission, here
                              # one process: its stats file counts every call (workers write PATH.K each)
                              "--workers", "1", "--stats-file", str(stats), "--stats-every", "0.1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 20
        while not (stats.exists() and stats.read_text().strip()) and time.monotonic() < deadline:
            assert agent.poll() is None, agent.stderr.read()
            time.sleep(0.05)
        rc = subprocess.run([sipp, f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-m", "20", "-r", "20", "-l", "100",
                             "-i", "127.0.0.1", "-p", str(free_port(kind="udp")), "-nostdin", "-timeout", "30s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, timeout=60).returncode
        assert rc == 0
        rows: list[dict] = []
        while time.monotonic() < deadline + 10:  # the next line after the last BYE
            rows = [json.loads(x) for x in stats.read_text().splitlines() if x.strip()]
            if rows and rows[-1]["calls_ended"] >= 20:
                break
            time.sleep(0.05)
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.communicate(timeout=40)
        except subprocess.TimeoutExpired:  # where is it stuck? faulthandler prints every thread's stack on SIGABRT
            agent.send_signal(signal.SIGABRT)
            try:
                _, err = agent.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
                _, err = agent.communicate()
            raise AssertionError(f"agent serve did not stop within 40 s of SIGINT; its stacks:\n{err[-6000:]}") from None
    last = rows[-1]
    assert last["calls_answered"] == last["calls_ended"] == 20 and last["calls_active"] == 0
    assert last["streams"] == 0 and last["fds"] > 0 and last["rss_kb"] > 0 and last["tasks"] >= 1
    assert last["py_blocks"] > 0 and last["cpu_s"] > 0 and last["gc_n"] >= 0 and last["gc_ms"] >= 0
    assert "oc_rate" not in last  # no overload control, no controller state
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_serve_stops_in_order_on_sigterm_and_sigint(tmp_path, signame):
    """`agent serve` (one process) stops in order on SIGTERM (systemd, docker, kill) as on
    Ctrl-C: the server closes and exits 0, no traceback; a second signal would act at once."""
    import os
    import signal
    import subprocess
    import sys

    port = free_port(kind="udp")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "voicelab", "agent", "serve", "--sip",
                             f"127.0.0.1:{port}", "--mode", "signalling"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # wait until it serves (no sleeps)
            if "Ctrl-C stops" in line:
                break
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
