"""SIP load: SIPp ``uac`` at growing call rates against ``voicelab agent serve`` and SIPp ``uas``.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_sip_load.py                     # the sweep, signalling only
    python benchmarks/bench_sip_load.py --rates 50,100,200 --duration 10 --hold-ms 1000 --mode echo
    python benchmarks/bench_sip_load.py --options-rate 150 --options-duration 60 --rates ''

Each step offers ``rate`` calls/s for ``duration`` s with ``benchmarks/sipp/uac_load.xml``
(SIPp's built-in ``uac`` call that also acknowledges a 503/486) to a fresh agent process
(``voicelab agent serve --mode signalling`` by default: answer, no media; the caller hangs
up after ``--hold-ms``) and, in the same run, to SIPp's own ``uas`` (the anchor). From
SIPp's per-message counts (``-trace_counts``) it reports, per target and rate:

offered, completed (200 to the INVITE and 200 to the BYE), refused (503 or 486, each
acknowledged; a 503 without Retry-After fails the call in the scenario), failed (SIPp's
failed calls: timeouts, unexpected messages), accepted calls whose BYE got no 200,
retransmissions, goodput (completed calls/s over the offered period) and the target's
CPU (ms per completed call, % of a core) and the machine's 1-minute load average at the
end of the step (the machine may be shared: CPU per call is robust to that, capacity is not).

The sustained capacity is the highest rate at which < 1 % of the offered calls failed
and none was refused (a lower bound of the true capacity: try rates close together near
it). Every higher rate of the same run is reported as an overload factor (rate /
capacity) with its goodput as a percentage of that capacity. Each row also gives SIPp
uac's own CPU and the run's length (a uac that cannot offer the rate takes longer than
duration + hold time). ``--options-rate`` adds a steady OPTIONS run (one probe per SIPp
"call"): median and p99 answer time (SIPp's response time 1, ``-trace_rtt``) and the
probes never answered.

``--workers 1,2`` runs the agent as 1 and as 2 worker processes (``agent serve --workers``)
in the same sweep; the agent's CPU is then its whole process group's. With more than one
worker SIPp uses one UDP socket per call (``-t un``, also against the ``uas`` anchor): the
kernel spreads callers over the workers by source port, and one socket for every call
would put them all on one worker.

Every row also has the datagrams dropped at the target's own socket (``/proc/net/udp``),
the machine's UDP ``RcvbufErrors`` over the step, the CPU the machine's *other* processes
took meanwhile (% of a core), the load at its start and SIPp's retransmissions by message.
``--trace-dir DIR`` writes each agent step's overload-control state every 100 ms
(``agent serve --stats-file``: adaptive limit, lag, socket backlog, GC, CPU) to DIR.

Every agent row says which refusal path ran (``shed_accelerated``: the optional C
accelerator of ``voicelab.sip.shed``; ``VOICELAB_NO_EXTENSIONS=1`` selects pure Python).

Needs ``sipp`` (Debian package sip-tester). Runs on loopback; ports are picked free.
Results: docs/benchmarks.md ("SIP load").
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIPP_DIR = HERE / "sipp"
TICK = os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time (s) of a live process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (s) of every live process in process group ``pgid`` (the agent and its workers)."""
    return sum(cpu for group, cpu in process_cpu_table().values() if group == pgid)


try:
    from voicelab.agent import udp_socket_drops
except ImportError:  # an older checkout (A/B runs): no drops column
    def udp_socket_drops(port: int) -> int | None:  # type: ignore[misc]
        return None


def udp_rcvbuf_errors() -> int:
    """The machine's UDP RcvbufErrors (/proc/net/snmp): datagrams dropped at any full receive buffer."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0][1:], rows[1][1:])).get("RcvbufErrors", 0))


def process_cpu_table() -> dict[tuple[int, str], tuple[int, float]]:
    """(pid, start time) -> (process group, CPU s) of every live process (/proc/PID/stat).

    Two tables minus the target's group and SIPp's own CPU give what the other processes
    of the machine took during a step (the machine's /proc/stat is sampled by ticks and
    misses most of an event-driven process's CPU here; per-process times are exact).
    """
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[(int(d), fields[19])] = (int(fields[2]), (int(fields[11]) + int(fields[12])) / TICK)
    return table


def other_cpu_seconds(before: dict, after: dict, exclude_pgid: int) -> float:
    """CPU s taken between two :func:`process_cpu_table` by processes outside ``exclude_pgid``
    (processes that started after ``before`` count from 0; ones that ended are missed)."""
    total = 0.0
    for key, (pgid, cpu) in after.items():
        if pgid == exclude_pgid or key[0] == os.getpid():
            continue
        total += cpu - before.get(key, (pgid, 0.0))[1]
    return total


class Target:
    """A SIP server process to load: our agent or SIPp uas."""

    def __init__(self, kind: str, port: int, *, mode: str, max_rate: float | None, max_lag_ms: float,
                 overload: bool, workdir: Path, options: bool = False, workers: int = 1,
                 extra: list[str] | None = None) -> None:
        self.kind, self.port = kind, port
        if kind == "agent":
            cmd = [sys.executable, "-m", "voicelab", "agent", "serve", "--sip", f"127.0.0.1:{port}",
                   "--mode", mode, "--codecs", "pcmu", "--max-calls", "1000000", "--max-lag-ms", str(max_lag_ms)]
            if max_rate is not None:
                cmd += ["--max-rate", str(max_rate)]
            if not overload:
                cmd += ["--no-overload-control"]
            cmd += ["--workers", str(workers)]  # always explicit: the published rows keep their meaning
            cmd += list(extra or [])
        else:
            scenario = ["-sf", str(SIPP_DIR / "uas_options.xml")] if options else ["-sn", "uas"]
            cmd = ["sipp", *scenario, "-i", "127.0.0.1", "-p", str(port), "-nostdin"]
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        if kind == "agent":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if not line:
                    raise SystemExit(f"agent exited: {self.proc.wait()}")
                if "Ctrl-C stops" in line:
                    break
        else:
            time.sleep(0.5)
        self.cpu0 = group_cpu_seconds(self.proc.pid)

    def cpu(self) -> float:
        return group_cpu_seconds(self.proc.pid) - self.cpu0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_uac(port: int, scenario: str, rate: float, calls: int, *, hold_ms: int, workdir: Path,
            extra: tuple[str, ...] = (), sockets: str = "u1") -> dict:
    """Run SIPp uac to completion; its final message counts and statistics."""
    for f in glob.glob(str(workdir / "*.csv")) + glob.glob(str(workdir / "*.log")):
        os.unlink(f)
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / scenario), "-r", f"{rate:g}", "-m", str(calls),
           "-l", "1000000", "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_udp_port()), "-nostdin",
           "-recv_timeout", "10000", "-max_invite_retrans", "4", "-max_non_invite_retrans", "4",
           "-timeout", f"{calls / rate + 60:.0f}s", "-trace_counts", "-trace_stat", "-fd", "3600",
           "-t", sockets, *(("-max_socket", "10000") if sockets == "un" else ()), *extra]
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the target is reaped later: only this SIPp counts
    proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          timeout=calls / rate + 120)
    elapsed = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    uac_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    counts = _last_row(glob.glob(str(workdir / "*_counts.csv")))
    stats = _last_row([f for f in glob.glob(str(workdir / "*.csv")) if not f.endswith(("_counts.csv", "_rtt.csv"))])
    rtts = []
    for f in glob.glob(str(workdir / "*_rtt.csv")):
        with open(f) as fh:
            for row in csv.reader(fh, delimiter=";"):
                try:
                    rtts.append(float(row[1]))
                except (ValueError, IndexError):
                    pass
    return {"rc": proc.returncode, "elapsed_s": elapsed, "uac_cpu_s": uac_cpu, "counts": counts, "stats": stats, "rtts_ms": rtts,
            "screen": proc.stdout[-3000:]}


def _last_row(paths: list[str]) -> dict:
    if not paths:
        return {}
    with open(paths[0]) as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def _n(d: dict, key: str) -> int:
    try:
        return int(float(d.get(key, 0) or 0))
    except ValueError:
        return 0


def summarise_calls(run: dict, rate: float, duration: float, cpu_s: float) -> dict:
    c, s = run["counts"], run["stats"]
    offered = _n(c, "0_INVITE_Sent")
    accepted = _n(c, "6_200_Recv")
    completed = _n(c, "10_200_Recv")
    refused503, refused486 = _n(c, "4_503_Recv"), _n(c, "5_486_Recv")
    failed = _n(s, "FailedCall(C)")
    retrans = sum(_n(c, k) for k in c if k.endswith("_Retrans"))
    return {
        "rate": rate, "offered": offered, "completed": completed, "refused_503": refused503, "refused_486": refused486,
        "failed": failed, "failed_pct": 100.0 * failed / offered if offered else None,
        "bye_lost": accepted - completed, "retransmissions": retrans,
        # by message: INVITEs SIPp sent again (answered late or not at all), BYEs likewise
        "retrans_by_msg": {k[:-len("_Retrans")]: _n(c, k) for k in c if k.endswith("_Retrans") and _n(c, k)},
        "goodput_cps": completed / duration, "cpu_s": cpu_s,
        "cpu_ms_per_call": 1000.0 * cpu_s / completed if completed else None,
        "cpu_pct_core": 100.0 * cpu_s / run["elapsed_s"], "sipp_rc": run["rc"],
        # SIPp uac's own CPU, and the run's length: a uac that cannot offer the rate takes longer than
        # duration + hold time (then the rate offered was lower than asked)
        "uac_cpu_pct_core": 100.0 * run.get("uac_cpu_s", 0.0) / run["elapsed_s"], "elapsed_s": round(run["elapsed_s"], 1),
    }


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="50,100,200,400,800,1600", help="calls/s, comma-separated ('' for none)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds offered per rate")
    ap.add_argument("--hold-ms", type=int, default=0, help="call length before SIPp's BYE (ms)")
    ap.add_argument("--mode", default="signalling", help="agent mode: signalling, echo, play")
    ap.add_argument("--max-rate", type=float, help="agent --max-rate (overload control)")
    ap.add_argument("--max-lag-ms", type=float, default=250.0, help="agent --max-lag-ms")
    ap.add_argument("--no-overload-control", action="store_true")
    ap.add_argument("--targets", default="uas,agent", help="comma-separated: uas, agent (both: uas,agent)")
    ap.add_argument("--options-rate", type=float, default=0.0, help="OPTIONS/s for the steady OPTIONS run (0: skip)")
    ap.add_argument("--options-duration", type=float, default=60.0)
    ap.add_argument("--workers", default="1",
                    help="agent worker processes, comma-separated to compare (e.g. 1,2: agent serve --workers N)")
    ap.add_argument("--sockets", choices=["u1", "un"], default=None,
                    help="SIPp UDP sockets: u1 one for all calls, un one per call (default: un when a --workers value "
                         "is > 1, so that the kernel can spread the callers over the workers; u1 otherwise)")
    ap.add_argument("--trace-dir", help="write the agent's overload-control state every 100 ms (agent serve "
                                        "--stats-file: adaptive rate, lag, socket backlog, GC, CPU) here, one file per step")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    sockets = args.sockets or ("un" if max(workers_list) > 1 else "u1")
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found: apt-get install sip-tester")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    targets = [t.strip() for t in args.targets.replace("both", "uas,agent").split(",") if t.strip()]
    if not targets or set(targets) - {"uas", "agent"}:
        raise SystemExit(f"--targets: uas, agent or both, got {args.targets!r}")
    shed_path = subprocess.run([sys.executable, "-c", "import voicelab.sip.shed as s; print(s.ACCELERATED)"],
                               capture_output=True, text=True).stdout.strip()  # as the agent's process imports it
    # which refusal path the agent runs: the C accelerator or pure Python (VOICELAB_NO_EXTENSIONS=1)
    results: dict = {"calls": [], "options": [], "args": vars(args), "cpus": os.cpu_count(),
                     "shed_accelerated": shed_path == "True"}
    print(json.dumps({"shed_accelerated": results["shed_accelerated"]}), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sip-load-") as tmp:
        work = Path(tmp)
        for rate in rates:
            for kind, workers in [(k, w) for k in targets for w in (workers_list if k == "agent" else [1])]:
                port = free_udp_port()
                extra, trace = [], None
                if kind == "agent" and args.trace_dir:  # the controller's state every 100 ms (agent serve --stats-file)
                    trace = Path(args.trace_dir) / f"agent-{rate:g}-{time.strftime('%H%M%S')}.jsonl"
                    extra = ["--stats-file", str(trace), "--stats-every", "0.1"]
                tgt = Target(kind, port, mode=args.mode, max_rate=args.max_rate, max_lag_ms=args.max_lag_ms,
                             overload=not args.no_overload_control, workdir=work, workers=workers, extra=extra)
                load0 = os.getloadavg()[0]
                drops0, rcvbuf0, procs0 = udp_socket_drops(port) or 0, udp_rcvbuf_errors(), process_cpu_table()
                try:
                    run = run_uac(port, "uac_load.xml", rate, int(rate * args.duration), hold_ms=args.hold_ms, workdir=work,
                                  sockets=sockets)
                    cpu = tgt.cpu()
                    drops = (udp_socket_drops(port) or 0) - drops0  # before the target closes its socket
                    rcvbuf = udp_rcvbuf_errors() - rcvbuf0
                    other = other_cpu_seconds(procs0, process_cpu_table(), tgt.proc.pid)
                finally:
                    tgt.stop()
                summary = summarise_calls(run, rate, args.duration, cpu)
                row = {"target": kind, "workers": workers, "sockets": sockets,
                       "shed_accelerated": results["shed_accelerated"] if kind == "agent" else None,
                       **summary, "loadavg_1min": round(os.getloadavg()[0], 2),
                       # where datagrams were lost: at the target's socket, anywhere (SIPp's socket too);
                       # what the rest of the machine took (all cores, s of CPU per s of the step)
                       "loadavg_1min_start": round(load0, 2), "target_socket_drops": drops, "udp_rcvbuf_errors": rcvbuf,
                       "other_cpu_pct": round(100.0 * other / run["elapsed_s"], 1),
                       **({"trace": str(trace)} if trace else {})}
                results["calls"].append(row)
                print(json.dumps(row), flush=True)
        if args.options_rate > 0:
            for kind in targets:
                port = free_udp_port()
                tgt = Target(kind, port, mode=args.mode, max_rate=None, max_lag_ms=args.max_lag_ms,
                             overload=not args.no_overload_control, workdir=work, options=True)
                try:
                    n = int(args.options_rate * args.options_duration)
                    run = run_uac(port, "options_load.xml", args.options_rate, n, hold_ms=0, workdir=work,
                                  extra=("-trace_rtt", "-rtt_freq", "1"))
                    cpu = tgt.cpu()
                finally:
                    tgt.stop()
                sent = _n(run["counts"], "0_OPTIONS_Sent")
                answered = _n(run["counts"], "1_200_Recv")
                rtts = run["rtts_ms"]
                row = {"target": kind, "rate": args.options_rate, "duration_s": args.options_duration, "sent": sent,
                       "answered": answered, "unanswered": sent - answered,
                       "median_ms": percentile(rtts, 50), "p99_ms": percentile(rtts, 99), "max_ms": max(rtts) if rtts else None,
                       "rtt_samples": len(rtts), "cpu_pct_core": 100.0 * cpu / run["elapsed_s"],
                       "loadavg_1min": round(os.getloadavg()[0], 2)}
                results["options"].append(row)
                print(json.dumps(row), flush=True)
    for workers in workers_list:
        agent_rows = [r for r in results["calls"] if r["target"] == "agent" and r["workers"] == workers]
        clean = [r["rate"] for r in agent_rows if r["offered"] and r["failed"] <= 0.01 * r["offered"]
                 and not r["refused_503"] and not r["refused_486"] and r["bye_lost"] <= 0]
        key = "agent_capacity_cps" if workers == 1 else f"agent_capacity_cps_{workers}_workers"
        results[key] = cap = max(clean) if clean else None
        print(json.dumps({key: results[key]}), flush=True)
        # overload: goodput against the clean capacity measured in this same run (the highest
        # clean rate tried: a lower bound of the true capacity, so try rates close together)
        for r in agent_rows:
            if cap and r["rate"] > cap:
                r["overload_factor"] = round(r["rate"] / cap, 2)
                r["goodput_pct_of_capacity"] = round(100.0 * r["goodput_cps"] / cap, 1)
                print(json.dumps({"workers": workers, "rate": r["rate"], "overload_factor": r["overload_factor"],
                                  "goodput_cps": r["goodput_cps"], "goodput_pct_of_capacity": r["goodput_pct_of_capacity"],
                                  "refused_503": r["refused_503"], "refused_486": r["refused_486"], "failed": r["failed"],
                                  "bye_lost": r["bye_lost"]}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
