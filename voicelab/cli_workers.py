"""``voicelab agent serve --workers N``: N agent processes sharing one SIP port.

``--workers`` defaults to ``auto``: one worker per core this process may use
(:func:`default_workers`); with one, ``agent serve`` is a single process. ``--max-calls``
is the agent's total, shared among the workers (:func:`split_max_calls`); with
``--mode record:DIR`` every worker writes into DIR, worker K's files named
``w<K>-<n>-<call-id>.wav``; ``--ws HOST:PORT`` is one port shared like the SIP port.

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

The parent process checks the options and ports once (one-line errors, exit status 2),
starts the workers, prints one line per worker, stops them on Ctrl-C or SIGTERM with
one SIGTERM each (workers ignore SIGINT, which a terminal sends to the whole process
group, so each stops once and in order), and restarts nothing: a worker that dies is reported (its calls are
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


def default_workers() -> int:
    """Workers ``agent serve`` runs by default: the cores this process may run on.

    ``os.sched_getaffinity(0)`` where the platform has it (so ``taskset -c 0 voicelab
    agent serve`` runs one worker, as does a container limited to one CPU set), else
    ``os.cpu_count()``; at least 1, at most :data:`MAX_WORKERS`.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux (macOS, Windows)
        n = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, n))


def parse_workers(text: Any) -> int:
    """``--workers``: ``"auto"`` (or None: not given) is :func:`default_workers`, else an int 1..MAX_WORKERS.

    Raises
    ------
    ParameterError
        Anything else (0, negative, over :data:`MAX_WORKERS`, not a number).
    """
    if text is None or (isinstance(text, str) and text.strip().lower() == "auto"):
        return default_workers()
    try:
        n = int(str(text).strip()) if not isinstance(text, bool) else None
    except ValueError:
        n = None
    if n is None or not 1 <= n <= MAX_WORKERS:
        raise ParameterError(f"--workers must be 1..{MAX_WORKERS} or 'auto' (one per core: {default_workers()} here), "
                             f"got {text!r}")
    return n


def split_max_calls(max_calls: int, workers: int) -> list[int]:
    """Share ``--max-calls`` (the agent's total) among ``workers``: worker K's limit.

    The limits sum to ``max_calls`` (the first ``max_calls % workers`` workers get one more);
    with fewer calls than workers, only ``max_calls`` workers run (each with 1).
    The kernel spreads callers by hash, not by load, so a worker at its limit refuses
    (486) a call another worker would still have room for.
    """
    n = max(1, min(workers, max_calls))
    base, extra = divmod(max_calls, n)
    return [base + (1 if k < extra else 0) for k in range(n)]


def in_use(exc: OSError, what: str, where: str) -> ParameterError:
    """The one-line error for a listening socket that could not be opened."""
    import errno

    why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return ParameterError(f"cannot listen for {what} on {where}: {why} (another program has it? pick another port)")


def check_port_free(host: str, port: int, transport: str) -> None:
    """Raise OSError (EADDRINUSE) if another socket holds ``host:port`` for ``transport``.

    Binds without SO_REUSEPORT, which fails while any socket has the port, also another
    ``agent serve``'s workers (which would otherwise share the port with ours and take
    part of our callers).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        if kind == socket.SOCK_STREAM:  # as asyncio's servers: TIME_WAIT leftovers do not count
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


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
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.ready = threading.Event()
        self.stats: dict[str, int] | None = None
        self.uri = ""
        self.banner = ""
        self.webrtc = ""
        self.ws = ""
        self.reported = False
        #: stderr lines before the worker served (its start-up notes or its one-line error)
        self.early_err: list[str] = []
        self._err_lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._readers:
            t.start()

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
                with self._err_lock:
                    self.ready.set()
                continue
            if not self.ready.is_set():  # start-up lines: the parent prints its own summary
                if line.startswith("voicelab agent: "):
                    self.banner = line
                    self.uri = line[len("voicelab agent: "):].split(",")[0]
                elif line.strip().startswith("WebRTC: "):
                    self.webrtc = line.strip()[len("WebRTC: "):].split(" ")[0]
                elif line.strip().startswith("WebSocket media streams: "):
                    self.ws = line.strip()[len("WebSocket media streams: "):]
                elif line.strip().startswith("TLS test CA for clients: "):
                    pass  # the parent's CA, printed once by the parent
                else:
                    print(f"  [worker {self.index}] {line}", flush=True)
                continue
            print(f"  [worker {self.index}] {line}", flush=True)
        self.ready.set()  # EOF: dead before (or after) ready; the caller looks at poll()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._err_lock:
                early = not self.ready.is_set()
                if early:  # kept: printed once for all workers, or as the reason it did not start
                    self.early_err.append(line.rstrip("\n"))
            if not early:
                print(line, end="", file=sys.stderr, flush=True)

    def join(self, timeout: float) -> None:
        for t in self._readers:
            t.join(timeout)


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve_workers(args: Any, argv: list[str], host: str, port: int, webrtc: tuple[str, int] | None = None,
                  ws: tuple[str, int] | None = None, why: str = "") -> int:
    """Run ``args.workers`` agent processes on ``host:port``; see the module docstring.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``agent serve`` options (``workers``, ``transport``, ``mode``,
        ``max_calls``, ...). ``max_calls`` is the agent's total: it is shared among the
        workers (:func:`split_max_calls`), and with fewer calls than workers only that
        many workers run.
    argv : list of str
        The original command line after ``voicelab`` (given to each worker, with
        ``--worker-index``, the chosen port and the worker's share of ``--max-calls``
        appended).
    host : str
    port : int
        0 picks a free port for all workers.
    webrtc : (host, port), optional
        ``--webrtc``, parsed: worker K serves WebRTC on port + K - 1 (0: a free one each).
    ws : (host, port), optional
        ``--ws``, parsed: every worker listens on it with SO_REUSEPORT (0: one free port
        for all), so each WebSocket media stream lands on one worker.
    why : str
        Why this many workers (for the banner), e.g. ``"one per core"``.

    Returns
    -------
    int
        0 when every worker stopped on request, 1 when one died while serving, or a
        worker's exit status when it could not start (2: bad option, port in use).
    """
    limits = split_max_calls(args.max_calls, args.workers)
    n = len(limits)
    if n < args.workers:
        why = f"--max-calls {args.max_calls} caps it{'; ' + why if why else ''}"
    if webrtc is not None:  # one signaling server (and page) per worker: PORT, PORT+1, ... (0: each picks a free one)
        if webrtc[1] and webrtc[1] + n - 1 > 65535:
            raise ParameterError(f"--webrtc port {webrtc[1]} + {n} workers runs past 65535")
        for k in range(n if webrtc[1] else 0):  # taken: one line now, not a worker's failure
            try:
                check_port_free(webrtc[0], webrtc[1] + k, "tcp")
            except OSError as exc:
                raise in_use(exc, "WebRTC signaling", _where(webrtc[0], webrtc[1] + k)) from None
    if port == 0:
        port = _free_port(host, args.transport)
    else:  # another program (or another agent serve's workers) on it: say so now, as a single agent does
        try:
            check_port_free(host, port, args.transport)
        except OSError as exc:
            raise in_use(exc, f"SIP over {args.transport.upper()}", _where(host, port)) from None
    where = _where(host, port)
    extra: list[str] = ["--sip", where]
    ws_url = None
    if ws is not None:
        wsh, wsp = ws
        if wsp == 0:
            wsp = _free_port(wsh, "tcp")
        else:
            try:
                check_port_free(wsh, wsp, "tcp")
            except OSError as exc:
                raise in_use(exc, "WebSocket media streams", _where(wsh, wsp)) from None
        extra += ["--ws", _where(wsh, wsp)]
        ws_url = f"ws://{_where(wsh, wsp)}/media"
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
        record_dir = Path(args.mode.partition(":")[2])  # every worker writes there: w<K>-<n>-<call-id>.wav
        from .agent import _check_record_dir

        _check_record_dir(str(record_dir))  # as a single agent does: made if missing, proved writable
    workers: list[_Worker] = []
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    died: list[_Worker] = []
    try:
        for k in range(1, n + 1):
            wargv = list(argv) + extra + ["--worker-index", str(k), "--max-calls", str(limits[k - 1])]
            if webrtc is not None:
                wh, wp = webrtc
                wargv += ["--webrtc", _where(wh, wp + k - 1 if wp else 0)]
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
                if code is not None:
                    w.join(5.0)
                if code == 2 and w.early_err:  # its one-line error (bad option, port taken): once, as one agent
                    for line in w.early_err:
                        print(line, file=sys.stderr, flush=True)
                    return 2
                for line in w.early_err:
                    print(f"  [worker {w.index}] {line}", file=sys.stderr, flush=True)
                raise VoicelabError(f"worker {w.index} did not start (exit code {code}); all workers stopped")
        seen: set[str] = set()
        for w in workers:  # start-up notes (e.g. no native media engine): once, not once per worker
            with w._err_lock:
                lines, w.early_err = w.early_err, []
            for line in lines:
                if line not in seen:
                    seen.add(line)
                    print(line, file=sys.stderr, flush=True)
        extras = [f"mode {args.mode}"] + (["digest auth"] if args.auth else []) + (["SRTP required"] if args.srtp else [])
        if all(", native media engine" in w.banner for w in workers):  # calls played by the native engine
            extras.append("native media engine")
        share = (f"{limits[0]}" if len(set(limits)) == 1 else f"{min(limits)}-{max(limits)}")
        extras.append(f"--max-calls {args.max_calls} in total ({share} per worker)")
        print(f"voicelab agent: {workers[0].uri}, {n} worker{'s' if n > 1 else ''} "
              f"({why + '; ' if why else ''}SO_REUSEPORT; --workers 1 for a single process), "
              f"codecs {args.codecs}, {', '.join(extras)}", flush=True)
        for w in workers:
            print(f"  worker {w.index}: pid {w.proc.pid}" + (f", WebRTC {w.webrtc}" if w.webrtc else ""), flush=True)
        if record_dir is not None:
            print(f"  recording to {record_dir} (w<K>-<n>-<call-id>.wav: worker K's n-th call)", flush=True)
        if ws_url:
            print(f"  WebSocket media streams: {ws_url} (one port, SO_REUSEPORT: each stream on one worker)", flush=True)
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
