"""``voicelab agent serve --workers N``: processes sharing the SIP port with SO_REUSEPORT.

Live tests run the real CLI (a parent and two worker processes) and real SIPp (Debian
package sip-tester) with one UDP socket per call (``-t un``), so the calls come from many
source ports and the kernel spreads them over both workers. Counts are asserted, not speed.
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


@pytest.mark.parametrize("n", ["0", "65"])
def test_workers_out_of_range_is_refused(capsys, n):
    assert main(["agent", "serve", "--workers", n, "--mode", "signalling"]) == 2
    assert "--workers must be 1..64" in capsys.readouterr().err


# ------------------------------------------------------------------ live: parent + 2 workers
def _start(port: int, *extra: str, mode: str = "signalling") -> tuple[subprocess.Popen, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "voicelab", "agent", "serve", "--workers", "2", "--mode", mode,
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


def test_a_dead_worker_is_reported_not_restarted_and_ctrl_c_stops_the_rest(tmp_path):
    rec = tmp_path / "rec"  # missing: the parent makes it, as a single agent does
    proc, lines = _start(free_port(kind="udp"), mode=f"record:{rec}")
    pids = _worker_pids(lines)
    assert [p.name for p in sorted(rec.iterdir())] == ["worker-1", "worker-2"]  # one record folder per worker
    assert f"recording to {rec / 'worker-1'}" in lines[1]
    try:
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
