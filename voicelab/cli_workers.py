"""``voicelab agent serve --workers N``: N agent processes sharing one SIP port.

Each worker is a full agent (its own process, event loop and SIP stack) whose listener
sets SO_REUSEPORT, so the kernel spreads the traffic over the workers:

- UDP: the kernel picks a worker by hashing the datagram's 4-tuple (source and
  destination address and port). Every datagram of one caller socket reaches the same
  worker, so a dialog and its transactions stay on one worker. A caller that changes
  its source port mid-dialog (a NAT rebinding, a phone that re-opens its socket) may
  land on another worker, which does not know the dialog: an in-dialog request then
  gets ``481 Call/Transaction Does Not Exist`` -- the same as a restarted agent.
- TCP, TLS, WS (SIP over any of them, and ``--ws`` media streams on one shared port):
  the kernel hands each new connection to one worker; everything on that connection
  stays there.
- WebRTC (``--webrtc HOST:PORT``): one signaling server and browser page per worker, on
  PORT, PORT+1, ... (port 0: each picks a free one); a browser picks its worker by URL.

The parent process starts the workers, prints one line per worker, forwards Ctrl-C and
SIGTERM to them, and restarts nothing: a worker that dies is reported (its calls are
lost; its share of new traffic moves to the others as the kernel re-hashes). At exit each
worker reports its counters and the parent prints them per worker and summed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .errors import ParameterError, VoicelabError

#: A worker's stdout line when it serves (after its SIP listener and WebRTC server started).
READY_TAG = "voicelab-worker-ready"
#: A worker's last stdout line: its counters as JSON (not forwarded to the user).
STATS_TAG = "voicelab-worker-stats: "
#: Counters summed over the workers at exit (with ``shed_<reason>``: overload control's refusals by reason).
SUMMED = ("calls_answered", "calls_ended", "calls_refused", "calls_shed", "calls_timed_out", "recorded_files",
          "messages_received")
MAX_WORKERS = 64


def worker_stats(agent: Any, webrtc: Any = None, ws: Any = None) -> dict[str, int]:
    """The counters a worker reports at exit (see :data:`SUMMED`); ``webrtc``, ``ws``: its WebRTC and
    WebSocket media-stream fronts, if any."""
    stats = getattr(getattr(agent.sip, "transport", None), "stats", None) if agent.sip is not None else None
    overload = getattr(agent, "overload", None)
    by_reason = {f"shed_{k}": int(v) for k, v in sorted((overload.counts if overload is not None else {}).items())
                 if k != "admitted"}
    return {
        "pid": os.getpid(),
        "calls_answered": agent.calls_answered,
        "calls_ended": agent.calls_ended,
        "calls_refused": agent.calls_refused,
        "calls_shed": agent.calls_shed,
        "calls_timed_out": agent.calls_timed_out,
        "recorded_files": len(agent.recorded_files),
        "messages_received": int(getattr(stats, "messages_received", 0)),
        **by_reason,  # overload control's refusals by reason (lag, queue, rate, calls)
        **({"webrtc_calls_connected": int(webrtc.calls_connected), "webrtc_calls_ended": int(webrtc.calls_ended)}
           if webrtc is not None else {}),
        **({"ws_streams": len(ws.sessions)} if ws is not None else {}),
    }


def _free_port(host: str, transport: str) -> int:
    """A port free now for ``transport`` on ``host`` (the workers bind it right after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Worker:
    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.proc = subprocess.Popen([sys.executable, "-m", "voicelab.cli", *argv], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.ready = threading.Event()
        self.stats: dict[str, int] | None = None
        self.uri = ""
        self.webrtc = ""
        self.ws = ""
        self.reported = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(STATS_TAG):
                try:
                    self.stats = json.loads(line[len(STATS_TAG):])
                except ValueError:
                    pass
                continue
            if line == READY_TAG:
                self.ready.set()
                continue
            if not self.ready.is_set():  # start-up lines: the parent prints its own summary
                if line.startswith("voicelab agent: "):
                    self.uri = line[len("voicelab agent: "):].split(",")[0]
                elif line.strip().startswith("WebRTC: "):
                    self.webrtc = line.strip()[len("WebRTC: "):].split(" ")[0]
                elif line.strip().startswith("WebSocket media streams: "):
                    self.ws = line.strip()[len("WebSocket media streams: "):]
                else:
                    print(f"  [worker {self.index}] {line}", flush=True)
                continue
            print(f"  [worker {self.index}] {line}", flush=True)
        self.ready.set()  # EOF: dead before (or after) ready; the caller looks at poll()

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)


def serve_workers(args: Any, argv: list[str], host: str, port: int, webrtc: tuple[str, int] | None = None,
                  ws: tuple[str, int] | None = None) -> int:
    """Run ``args.workers`` agent processes on ``host:port``; see the module docstring.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``agent serve`` options (``workers``, ``transport``, ``mode``, ...).
    argv : list of str
        The original command line after ``voicelab`` (given to each worker, with
        ``--worker-index``, the chosen port and per-worker record folders appended).
    host : str
    port : int
        0 picks a free port for all workers.
    webrtc : (host, port), optional
        ``--webrtc``, parsed: worker K serves WebRTC on port + K - 1 (0: a free one each).
    ws : (host, port), optional
        ``--ws``, parsed: every worker listens on this one port (``SO_REUSEPORT``; 0 picks
        a free port for all), the kernel hands each WebSocket connection to one worker.

    Returns
    -------
    int
        0 when every worker stopped on request, 1 when one died while serving.
    """
    n = args.workers
    if webrtc is not None:  # one signaling server (and page) per worker: PORT, PORT+1, ... (0: each picks a free one)
        if webrtc[1] and webrtc[1] + n - 1 > 65535:
            raise ParameterError(f"--webrtc port {webrtc[1]} + {n} workers runs past 65535")
    if port == 0:
        port = _free_port(host, args.transport)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    extra: list[str] = ["--sip", where]
    if ws is not None:  # one WebSocket port shared by all workers, as the SIP port
        wsh, wsp = ws
        wsp = wsp or _free_port(wsh, "tcp")
        extra += ["--ws", f"[{wsh}]:{wsp}" if ":" in wsh else f"{wsh}:{wsp}"]
    tmp = None
    ca_file = None
    if args.transport == "tls" and args.tls_cert is None:  # one test CA for all workers, else clients trust only one
        from .tlsutil import generate_test_pki

        tmp = tempfile.TemporaryDirectory(prefix="voicelab-agent-tls-")
        pki = generate_test_pki(tmp.name)
        extra += ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
        ca_file = str(pki.ca_cert)
    record_dir = None
    if args.mode.partition(":")[0].strip().lower() == "record":
        record_dir = Path(args.mode.partition(":")[2])
        try:  # as a single agent does: the folder is made if missing
            for k in range(1, n + 1):
                (record_dir / f"worker-{k}").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ParameterError(f"cannot make record folders under {str(record_dir)!r}: {exc.strerror or exc}") from None
    workers: list[_Worker] = []
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    died: list[_Worker] = []
    try:
        for k in range(1, n + 1):
            wargv = list(argv) + extra + ["--worker-index", str(k)]
            if webrtc is not None:
                wh, wp = webrtc
                wargv += ["--webrtc", f"{f'[{wh}]' if ':' in wh else wh}:{wp + k - 1 if wp else 0}"]
            if record_dir is not None:
                sub = record_dir / f"worker-{k}"
                wargv += ["--mode", f"record:{sub}"]
            workers.append(_Worker(k, wargv))
        deadline = time.monotonic() + 120.0
        for w in workers:
            while not w.ready.wait(0.1):
                if stopping.is_set() or time.monotonic() > deadline:
                    break
            if w.proc.poll() is not None or not w.ready.is_set():
                if stopping.is_set():
                    return 0
                code = w.proc.poll()
                raise VoicelabError(f"worker {w.index} did not start (exit code {code}); all workers stopped")
        extras = [f"mode {args.mode}"] + (["digest auth"] if args.auth else []) + (["SRTP required"] if args.srtp else [])
        print(f"voicelab agent: {workers[0].uri}, {n} workers (SO_REUSEPORT), codecs {args.codecs}, {', '.join(extras)}",
              flush=True)
        for w in workers:
            print(f"  worker {w.index}: pid {w.proc.pid}" + (f", recording to {record_dir / f'worker-{w.index}'}" if record_dir else "")
                  + (f", WebRTC {w.webrtc}" if w.webrtc else ""), flush=True)
        if workers[0].ws:
            print(f"  WebSocket media streams: {workers[0].ws} (one port, SO_REUSEPORT: each stream on one worker)",
                  flush=True)
        if ca_file:
            print(f"  TLS test CA for clients: {ca_file}", flush=True)
        print("Ctrl-C stops", flush=True)
        while not stopping.wait(0.2):
            for w in workers:
                if not w.reported and w.proc.poll() is not None:
                    w.reported = True
                    died.append(w)
                    alive = sum(x.proc.poll() is None for x in workers)
                    print(f"voicelab agent: worker {w.index} (pid {w.proc.pid}) exited with code {w.proc.returncode}; "
                          f"not restarted, {alive} of {n} still serving", file=sys.stderr, flush=True)
            if all(w.proc.poll() is not None for w in workers):
                break
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 15.0
        for w in workers:
            try:
                w.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.join(5.0)
        for s, h in old.items():
            signal.signal(s, h)
        if tmp is not None:
            tmp.cleanup()
    _print_totals(workers)
    return 1 if died else 0


def _print_totals(workers: list[_Worker]) -> None:
    reported = [w for w in workers if w.stats is not None]
    for w in workers:
        if w.stats is None:
            print(f"  worker {w.index}: no counters (exit code {w.proc.returncode})", flush=True)
        else:
            print(f"  worker {w.index}: " + ", ".join(f"{k} {v}" for k, v in w.stats.items() if k != "pid"), flush=True)
    keys = list(SUMMED) + sorted({k for w in reported for k in w.stats if k.startswith(("shed_", "webrtc_", "ws_"))})  # type: ignore[union-attr]
    total = {k: sum(int(w.stats.get(k, 0)) for w in reported) for k in keys}  # type: ignore[union-attr]
    print(f"voicelab agent: total over {len(reported)} of {len(workers)} workers: "
          + ", ".join(f"{k} {v}" for k, v in total.items()), flush=True)
