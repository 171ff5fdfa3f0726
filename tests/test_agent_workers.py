"""``voicelab agent serve --workers N``: processes sharing the SIP port with SO_REUSEPORT.

Live tests run the real CLI (a parent and two worker processes) and real SIPp (Debian
package sip-tester) with one UDP socket per call (``-t un``), so the calls come from many
source ports and the kernel spreads them over both workers. Counts are asserted, not speed.
``--workers`` defaults to the cores the process may use (auto): one live test runs
``agent serve`` without it.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voicelab.cli import main
from voicelab.net.iface import LoopbackInterface, free_port
from voicelab.sip.transport import transport_for

from .conftest import need_tool

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "benchmarks" / "sipp" / "uac_load.xml"


# ------------------------------------------------------------------ SO_REUSEPORT listeners
@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_reuse_port_lets_two_transports_share_a_port_and_only_then(kind):
    async def run():
        iface = LoopbackInterface()
        a = transport_for(kind, iface, reuse_port=True)
        b = transport_for(kind, iface, reuse_port=True)
        c = transport_for(kind, iface)
        try:
            host, port = await a.listen("127.0.0.1", 0)
            shared = await b.listen("127.0.0.1", port)
            with pytest.raises(OSError):
                await c.listen("127.0.0.1", port)
            return port, shared[1]
        finally:
            for t in (a, b, c):
                await t.close()

    port, shared = asyncio.run(run())
    assert shared == port


@pytest.mark.parametrize("n", ["0", "65", "-1", "two", "1.5", ""])
def test_workers_out_of_range_is_refused(capsys, n):
    assert main(["agent", "serve", "--workers", n, "--mode", "signalling"]) == 2
    err = capsys.readouterr().err
    assert "--workers must be 1..64 or 'auto'" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_a_port_held_by_another_agents_workers_is_refused_not_shared(capsys, kind):
    """Another ``agent serve``'s workers hold the port with SO_REUSEPORT: ours must not
    join them (the kernel would split the callers between two agents); one line, exit 2."""
    import socket

    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        if kind == "tcp":
            held.listen()
        port = held.getsockname()[1]
        rc = main(["agent", "serve", "--sip", f"127.0.0.1:{port}", "--transport", kind, "--mode", "signalling"])
    finally:
        held.close()
    err = capsys.readouterr().err
    assert rc == 2 and "address already in use" in err and err.count("\n") == 1, err


def test_default_workers_is_the_cores_this_process_may_use(monkeypatch):
    from voicelab import cli_workers as cw

    monkeypatch.setattr(cw.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(cw.os, "cpu_count", lambda: 16)
    assert cw.default_workers() == 3  # taskset / cgroup CPU sets count, not the machine's cores
    assert cw.parse_workers(None) == cw.parse_workers("auto") == cw.parse_workers(" AUTO ") == 3
    assert cw.parse_workers("5") == 5
    monkeypatch.setattr(cw.os, "sched_getaffinity", lambda pid: set(range(200)))
    assert cw.default_workers() == cw.MAX_WORKERS == 64
    monkeypatch.setattr(cw.os, "sched_getaffinity", lambda pid: {0})
    assert cw.default_workers() == 1  # taskset -c 0
    monkeypatch.delattr(cw.os, "sched_getaffinity")  # macOS, Windows: the machine's count
    assert cw.default_workers() == 16
    monkeypatch.setattr(cw.os, "cpu_count", lambda: None)  # unknown: one
    assert cw.default_workers() == 1


def test_max_calls_is_the_total_shared_among_the_workers():
    from voicelab.cli_workers import split_max_calls

    assert split_max_calls(32, 2) == [16, 16]
    assert split_max_calls(33, 2) == [17, 16]
    assert split_max_calls(5, 4) == [2, 1, 1, 1]
    assert split_max_calls(3, 8) == [1, 1, 1]  # fewer calls than workers: that many workers
    assert split_max_calls(1, 2) == [1]  # one process
    for total in range(1, 100, 7):
        for w in range(1, 65, 9):
            shares = split_max_calls(total, w)
            assert sum(shares) == total and len(shares) == min(total, w) and max(shares) - min(shares) <= 1


def test_default_workers_on_one_core_or_one_call_run_one_process_and_say_why(monkeypatch, capsys):
    """No worker processes (this process serves); the banner says why. It stops once it listens."""
    import voicelab.cli as cli
    from voicelab import cli_workers as cw

    monkeypatch.setattr(cw.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(cli, "_stop_on_signals", lambda stop, worker=False: asyncio.get_running_loop().call_soon(stop.set))
    seen = []
    for argv, why in ((["--workers", "auto"], "1 process (one per core: 1 core available; --workers N for more)"),
                      ([], "1 process (one per core: 1 core available; --workers N for more)"),
                      (["--workers", "4", "--max-calls", "1"], "1 process, not 4: --max-calls 1 is one call")):
        assert main(["agent", "serve", "--mode", "signalling", "--sip", "127.0.0.1:0", *argv]) == 0
        out = capsys.readouterr().out
        seen.append(out)
        assert out.startswith("voicelab agent: sip:agent@127.0.0.1:") and why in out.splitlines()[0], out
        assert "worker 1" not in out
    assert len(seen) == 3


# ------------------------------------------------------------------ live: parent + 2 workers
def _start(port: int, *extra: str, mode: str = "signalling", workers: str | None = "2") -> tuple[subprocess.Popen, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "voicelab", "agent", "serve", *(["--workers", workers] if workers else []),
                             "--mode", mode,
                             "--codecs", "pcmu", "--sip", f"127.0.0.1:{port}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops"):
            return proc, lines
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail(f"agent did not start: {lines} {proc.stderr.read()}")


def _worker_pids(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for m in (re.match(r"\s+worker \d+: pid (\d+)", x) for x in lines) if m]


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _counters(out: str) -> dict[int, dict[str, int]]:
    per = {}
    for m in re.finditer(r"^\s+worker (\d+): (calls_answered .*)$", out, re.M):
        per[int(m.group(1))] = {k: int(v) for k, v in (kv.rsplit(" ", 1) for kv in m.group(2).split(", "))}
    return per


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_two_workers_share_the_calls_every_call_completes_and_sigterm_stops_all(tmp_path, transport):
    sipp = need_tool("sipp", "sip-tester")
    port = free_port(kind=transport)
    proc, lines = _start(port, "--transport", transport)
    pids = _worker_pids(lines)
    try:
        assert len(pids) == 2 and lines[0].startswith(f"voicelab agent: sip:agent@127.0.0.1:{port}")
        # -t un: one UDP socket (source port) per call, as 40 different phones
        # TCP (-t tn): one connection per call, each accepted by one worker
        run = subprocess.run([sipp, f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-t", "un" if transport == "udp" else "tn",
                              "-max_socket", "200",
                              "-m", "40", "-r", "40", "-l", "1000", "-d", "0", "-i", "127.0.0.1", "-nostdin",
                              "-timeout", "40s", "-trace_counts"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)  # to the parent only: it stops its workers
        out, err = proc.communicate(timeout=30)
    with open(next(tmp_path.glob("*_counts.csv"))) as f:
        rows = list(csv.reader(f, delimiter=";"))
    counts = {k: int(v) for k, v in zip(rows[0], rows[-1]) if v.isdigit()}
    assert run.returncode == 0 and counts["6_200_Recv"] == 40 and counts["10_200_Recv"] == 40
    per = _counters(out)
    assert sorted(per) == [1, 2], out
    assert all(c["calls_answered"] > 0 for c in per.values()), per  # the kernel spread the callers
    assert sum(c["calls_answered"] for c in per.values()) == 40
    assert sum(c["calls_ended"] for c in per.values()) == 40
    assert "total over 2 of 2 workers: calls_answered 40, calls_ended 40" in out
    assert proc.returncode == 0 and err == ""
    assert _group_gone(proc.pid) and not any(Path(f"/proc/{p}").exists() for p in pids)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _sipp_calls(sipp: str, port: int, calls: int, cwd: Path) -> dict[str, int]:
    """SIPp places ``calls`` short calls, one UDP socket (source port) each; its final counts."""
    run = subprocess.run([sipp, f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-t", "un", "-max_socket", "200",
                          "-m", str(calls), "-r", "40", "-l", "1000", "-d", "0", "-i", "127.0.0.1", "-nostdin",
                          "-timeout", "40s", "-trace_counts"],
                         cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)
    with open(next(cwd.glob("*_counts.csv"))) as f:
        rows = list(csv.reader(f, delimiter=";"))
    assert run.returncode == 0
    return {k: int(v) for k, v in zip(rows[0], rows[-1]) if v.isdigit()}


def test_without_workers_one_worker_per_core_answers_and_every_worker_reports(tmp_path):
    """The default (no --workers): one worker per core this process may use (2 on this
    machine and on CI); on a one-core machine one process, said so in the banner."""
    from voicelab.cli_workers import split_max_calls

    sipp = need_tool("sipp", "sip-tester")
    n = max(1, min(64, _cores()))
    port = free_port(kind="udp")
    proc, lines = _start(port, "--max-calls", "9", workers=None)
    try:
        if n > 1:
            shares = split_max_calls(9, n)
            share = str(shares[0]) if len(set(shares)) == 1 else f"{min(shares)}-{max(shares)}"
            assert (f", {n} workers (one per core: {n} cores available; SO_REUSEPORT; --workers 1 for a single "
                    f"process)," in lines[0] and f"--max-calls 9 in total ({share} per worker)" in lines[0]), lines
            assert len(_worker_pids(lines)) == n
        else:
            assert "1 process (one per core: 1 core available; --workers N for more)" in lines[0], lines
        counts = _sipp_calls(sipp, port, 12, tmp_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert counts["6_200_Recv"] == 12 and counts["10_200_Recv"] == 12
    assert proc.returncode == 0 and err == "", err
    if n > 1:
        per = _counters(out)
        assert sorted(per) == list(range(1, n + 1)), out  # every worker's counters at exit
        assert sum(c["calls_answered"] for c in per.values()) == 12
        assert f"total over {n} of {n} workers: calls_answered 12, calls_ended 12" in out


def test_record_mode_with_the_default_workers_writes_every_call_into_the_one_folder(tmp_path, natural_env):
    """``--mode record:DIR`` without --workers: every worker's calls land in DIR itself,
    named ``w<K>-<n>-<call-id>.wav`` (no name can repeat across workers), counted at exit."""
    from voicelab.calls import dial

    rec = tmp_path / "rec"
    n = max(1, min(64, _cores()))
    port = free_port(kind="udp")
    proc, lines = _start(port, mode=f"record:{rec}", workers=None)
    try:
        async def calls():  # each call from its own socket: the kernel may pick any worker
            return await asyncio.gather(*(dial(f"sip:agent@127.0.0.1:{port}", codec="pcmu", seconds=1.0)
                                          for _ in range(4)))

        results = asyncio.run(calls())
        deadline = time.monotonic() + 10
        while len(list(rec.glob("*.wav"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)  # each worker writes a call's file once its BYE has ended it
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert len(results) == 4 and proc.returncode == 0, err
    names = sorted(p.name for p in rec.iterdir())
    pattern = r"w\d+-\d{4}-.+\.wav" if n > 1 else r"\d{4}-.+\.wav"
    assert len(names) == 4 and all(re.fullmatch(pattern, x) for x in names), names
    if n > 1:
        assert {int(x[1:].split("-")[0]) for x in names} <= set(range(1, n + 1))
        assert re.search(rf"total over {n} of {n} workers: .*recorded_files 4,", out), out


def test_a_dead_worker_is_reported_not_restarted_and_ctrl_c_stops_the_rest(tmp_path):
    rec = tmp_path / "rec"  # missing: the parent makes it, as a single agent does
    proc, lines = _start(free_port(kind="udp"), mode=f"record:{rec}")
    pids = _worker_pids(lines)
    try:
        assert rec.is_dir() and list(rec.iterdir()) == []  # every worker writes into rec itself (w<K>-<n>-<call-id>.wav)
        assert any(x.startswith(f"  recording to {rec} (w<K>-<n>-<call-id>.wav") for x in lines), lines
        os.kill(pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the parent polls its workers every 0.2 s
            report = proc.stderr.readline()
            if "worker 2" in report:
                break
        assert f"worker 2 (pid {pids[1]}) exited with code -9; not restarted, 1 of 2 still serving" in report
        assert proc.poll() is None and Path(f"/proc/{pids[0]}").exists()  # the other one still serves
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole process group
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1  # a worker died while serving
    assert "worker 2: no counters (exit code -9)" in out and "total over 1 of 2 workers" in out
    # the worker ignored the terminal's SIGINT and stopped in order on its parent's SIGTERM
    assert re.search(r"^\s+worker 1: calls_answered 0,", out, re.M), out
    assert _group_gone(proc.pid)


def test_udp_backlog_counts_only_the_given_socket_when_the_port_is_shared():
    import socket

    from voicelab.agent import udp_backlog_bytes

    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        b.bind(("127.0.0.1", port))
        tx.bind(("127.0.0.1", 0))
        for _ in range(5):
            tx.sendto(b"x" * 500, ("127.0.0.1", port))  # one source port: all to a or all to b
        ino_a, ino_b = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        total = udp_backlog_bytes(port)
        if total is None:
            pytest.skip("no /proc/net/udp")
        mine = [udp_backlog_bytes(port, ino_a), udp_backlog_bytes(port, ino_b)]
        assert total > 0 and sorted(mine) == [0, total]
    finally:
        for s in (a, b, tx):
            s.close()


def test_with_webrtc_each_worker_serves_its_own_signaling_port():
    import urllib.request

    proc, lines = _start(free_port(kind="udp"), "--webrtc", "127.0.0.1:0")
    try:
        urls = [m.group(1) for m in (re.search(r"WebRTC (\S+)", x) for x in lines) if m]
        assert len(urls) == 2 and urls[0] != urls[1], lines
        for url in urls:  # each worker's browser page answers
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and _group_gone(proc.pid)
    assert "webrtc_calls_connected 0" in out  # the WebRTC front's counters join the worker's


def test_tls_workers_share_one_test_ca():
    import socket
    import ssl

    port = free_port(kind="tcp")
    proc, lines = _start(port, "--transport", "tls")
    try:
        ca = next(x.split(": ", 1)[1] for x in lines if "TLS test CA for clients" in x)
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        for _ in range(8):  # new connections land on either worker: each must present a cert of that CA
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw) as tls:
                    assert tls.version() is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0 and _group_gone(proc.pid)


def test_with_ws_every_worker_shares_one_media_stream_port_and_every_stream_is_served():
    """--ws with workers: one port (SO_REUSEPORT), each WebSocket stream served by one worker, counted at exit.

    Without SO_REUSEPORT on the WebSocket listener the second worker could not bind the port
    and the agent would not start (the test fails at start-up)."""
    from voicelab.wsmedia.live import MediaStreamClient

    proc, lines = _start(free_port(kind="udp"), "--ws", "127.0.0.1:0", mode="play")
    n = 6
    try:
        ws = [m for m in (re.search(r"WebSocket media streams: ws://127\.0\.0\.1:(\d+)/media", x) for x in lines) if m]
        assert len(ws) == 1 and "SO_REUSEPORT" in next(x for x in lines if "WebSocket media streams" in x), lines
        port = int(ws[0].group(1))

        async def one(seed: int) -> int:
            loop = asyncio.get_running_loop()
            client = MediaStreamClient(LoopbackInterface(loop), ("127.0.0.1", port), seed=seed)
            try:
                await client.connect()
                deadline = loop.time() + 20.0
                while client.media.media_received < 10 and loop.time() < deadline:  # the agent plays its speech
                    await asyncio.sleep(0.05)
                return client.media.media_received
            finally:
                await client.stop()

        async def all_streams() -> list[int]:
            return [await one(k) for k in range(n)]  # new connections: the kernel picks a worker for each

        got = asyncio.run(all_streams())
        assert all(g >= 10 for g in got), got
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and _group_gone(proc.pid)
    per = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"^\s+worker (\d+): .*ws_streams (\d+)", out, re.M)}
    assert len(per) == 2 and sum(per.values()) == n, out  # every stream was served, by one worker each
    assert re.search(rf"total over 2 of 2 workers: .*ws_streams {n}", out), out
