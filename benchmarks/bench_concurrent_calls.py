"""Concurrent PCMU calls the lab's agent sustains with RTP send-pacing error p99 < 2 ms.

The agent (:class:`voicelab.agent.Agent`, PCMU only, ``echo`` mode by default: every
call runs its jitter buffer, decoder, PLC and encoder, as a real agent's pipeline does)
runs in this process; the callers run in a *separate* process (this script started with
``--callers URI``), so the CPU measured here is the agent's alone. For N = 1, 2, 4, 8, ...
N callers dial the agent at once, start sending a speech-like signal within one 20 ms
frame of each other (``--aligned``: at the same instant) and talk for ``--seconds``; then
they hang up. Over a steady-state window (from a warm-up after the media start to the end
of the callers' speech) the benchmark measures:

* the agent's send-pacing error (actual minus scheduled send time of every RTP packet,
  :attr:`voicelab.rtp.live.StreamStats.send_lateness_s`), p50/p99/max over all its
  streams;
* the agent process's CPU time (``time.process_time``: all its threads), as % of one
  core, per frame handled (one sent and one played per call every 20 ms) and per call
  side at the full frame rate (the per-frame cost x 100 frames/s: honest even when the
  process was starved of CPU and fell behind);
* frames lost or late at the agent's and at the callers' jitter buffers, the callers'
  own pacing and CPU, and what the rest of the machine used meanwhile (``/proc/stat``
  busy time minus the two processes): other programs compete for the same 2 cores.

The ramp stops at the first N whose p99 reaches 2 ms (``--keep-going``: measures every
N up to ``--max-calls`` anyway); the result is the largest N such that it and every
smaller N stayed below the limit. A bare 20 ms event-loop timer doing no work is measured
first, in this process: no agent can pace better than that on the same machine.

Baseline, in the same run: baresip (C, Debian ``baresip-core``) answering one PCMU call
from the same caller (``answermode=auto``, playing a WAV with ``aufile``, playing out to
``aubridge``), its CPU read from ``/proc/<pid>`` over the same kind of window (median of
3 calls). Every row's ratio is our CPU per call side (at full rate) / baresip's. Without
baresip the baseline is skipped (and the script says so).

    python benchmarks/bench_concurrent_calls.py [--quick] [--max-calls 64] [--seconds 10]
        [--mode echo|play] [--aligned] [--keep-going] [--no-baseline] [--json out.json]
        [--ns 1,16,70] [--tick-ms 20] [--read-in-tick] [--default-gc] [--baseline-max-calls 70] [--baseline-repeats 3]

The agent's streams are paced by its loop's media pacer (:mod:`voicelab.rtp.pacer`);
``--tick-ms`` sets the pacer's grid (default 1 ms; 20: one wake-up per frame for all
streams). ``VOICELAB_BENCH_PROFILE=FILE`` writes a cProfile of the agent's process per N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voicelab.errors import ParameterError, VoicelabError  # noqa: E402

SCRIPT = Path(__file__).resolve()
#: the issue's limit on the agent's send-pacing error, p99, ms
PACING_LIMIT_MS = 2.0
#: where baresip keeps its modules on Debian and from-source installs
BARESIP_MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules",
                       "/usr/lib/x86_64-linux-gnu/baresip/modules")
BARESIP_CONFIG = """poll_method epoll
sip_listen 127.0.0.1:{sip_port}
audio_player aubridge,nil
audio_source aufile,{wav}
audio_alert aubridge,nil
rtp_ports {rtp_lo}-{rtp_hi}
module_path {module_dir}
module stdio.so
module g711.so
module aufile.so
module aubridge.so
module_app account.so
module_app menu.so
"""


# ---------------------------------------------------------------------------------------
# small measurement helpers
# ---------------------------------------------------------------------------------------


def _percentiles_ms(values: list[float]) -> dict[str, float | None]:
    """p50 / p99 / max of ``|values|`` (seconds) in ms; None when empty."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    a = np.abs(np.asarray(values, dtype=np.float64)) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def _proc_cpu_s(pid: int) -> dict[str, float]:
    """CPU time of process ``pid`` so far, seconds: ``stat`` (utime + stime, clock ticks,
    all threads ever) and ``schedstat`` (ns, summed over the threads alive now)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out = {"stat": (int(fields[11]) + int(fields[12])) / tick}  # fields 14, 15 of proc(5)
    try:
        ns = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                ns += int(f.read().split()[0])
        out["schedstat"] = ns / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return out


def _machine_busy_s() -> float | None:
    """CPU time all cores have been busy so far (``/proc/stat``), seconds; None without /proc."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")


def _jb_totals(streams: list) -> dict[str, int]:
    """Jitter-buffer counters summed over ``streams``."""
    tot = {"received": 0, "played": 0, "late": 0, "lost": 0}
    for s in streams:
        st = s.jb.stats
        for k in tot:
            tot[k] += int(getattr(st, k))
    return tot


def _speech(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """``seconds`` of a speech-like test signal (P.501-like composite source signal).

    G.711's cost does not depend on what it encodes, so the benchmark sends a synthetic
    signal made in 0.1 s rather than loading and level-normalising the speech corpus in
    every process (seconds of start-up that would only slow the ramp down).
    """
    from voicelab.audio import signals

    return signals.composite_source_signal(duration_s=float(seconds), sample_rate=sample_rate, seed=0)


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, load, Python and baresip versions (for the results table)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    baresip = None
    if shutil.which("baresip"):
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "baresip-core"],
                                 capture_output=True, text=True, timeout=5)
            baresip = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return {"cpu_model": model, "cores": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
            "python": platform.python_version(), "machine": platform.machine(), "baresip": baresip}


# ---------------------------------------------------------------------------------------
# the callers' process
# ---------------------------------------------------------------------------------------


async def _callers(target: str, n_calls: int, seconds: float, *, aligned: bool = False,
                   jitter_buffer: str = "fixed:60") -> dict[str, Any]:  # fmt: skip
    """Dial ``target`` ``n_calls`` times at once, talk ``seconds``, hang up; the callers' view.

    Call ``i`` starts its media ``i * 20 ms / n_calls`` after the first (calls that began
    at unrelated moments have unrelated 20 ms phases), or all at once with ``aligned``
    (the worst case: every stream's timers fall due together).

    Prints ``WINDOW t_start t_end`` (``loop.time()``, i.e. CLOCK_MONOTONIC, shared by
    every process on the machine) once the media start is fixed, so the process under
    test can sample its CPU over the same window.
    """
    from voicelab.calls import open_caller
    from voicelab.net.iface import LoopbackInterface
    from voicelab.rtp.live import LiveAudioStream
    from voicelab.sip.ua import CallEnded, CallEstablished, CallFailed, OptionsAnswered

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    x = _speech(seconds)
    callers = [await open_caller(iface, codec="pcmu", rtcp_mux=True, seed=None) for _ in range(n_calls)]
    streams: list[LiveAudioStream] = []
    out: dict[str, Any] = {"calls": n_calls, "established": 0, "failed": [], "ended": 0}
    try:
        ua0, sip0 = callers[0]
        deadline = loop.time() + 15.0
        while True:  # readiness probe: OPTIONS until the peer answers
            ua0.options(target, now=loop.time())
            sip0.flush()
            try:
                await sip0.wait_for(OptionsAnswered, timeout=0.5)
                break
            except asyncio.TimeoutError:
                if loop.time() > deadline:
                    raise ParameterError(f"{target} did not answer OPTIONS within 15 s") from None
        invites = []
        # each media port stays bound (reserved) until its stream opens: a port only looked
        # up (free_port) could be taken meanwhile by the agent's streams or another program
        reserved: dict[int, socket.socket] = {}
        for ua, sip in callers:
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            r.bind(("127.0.0.1", 0))
            port = r.getsockname()[1]
            reserved[port] = r
            invites.append((ua.invite(target, now=loop.time(), media_port=port), port))
            sip.flush()
        t_dial = loop.time()
        evs = await asyncio.gather(*(sip.wait_for(CallEstablished, CallFailed, timeout=30.0) for _, sip in callers))
        out["setup_all_s"] = loop.time() - t_dial
        for ev, (call, port) in zip(evs, invites):
            if isinstance(ev, CallFailed):
                out["failed"].append(f"{ev.status} {ev.reason}")
                continue
            s = LiveAudioStream.for_media(iface, call.media, local_addr=("127.0.0.1", port), jitter_buffer=jitter_buffer,
                                          latching=True, cname="caller@voicelab")  # fmt: skip
            reserved.pop(port).close()
            streams.append(await s.open())
        for r in reserved.values():
            r.close()
        out["established"] = len(streams)
        t0 = loop.time() + 0.2
        warm = min(1.0, 0.25 * seconds)
        window = (t0 + warm, t0 + seconds)
        marks: dict[str, Any] = {}

        def mark(name: str) -> None:
            marks[name] = (loop.time(), time.process_time(), [len(s.stats.send_lateness_s) for s in streams])

        loop.call_at(window[0], mark, "a")
        loop.call_at(window[1], mark, "b")
        print(f"WINDOW {window[0]!r} {window[1]!r}", flush=True)
        for i, s in enumerate(streams):
            s.send(x, 16000, start_at=t0 + (0.0 if aligned else i * 0.020 / len(streams)))
        await asyncio.wait_for(asyncio.gather(*(s.sending_done for s in streams)), seconds + 30)
        heard = await asyncio.gather(*(asyncio.wait_for(s.played_through(t0 + seconds + 0.3), 5.0) for s in streams),
                                     return_exceptions=True)  # fmt: skip
        out["streams_hearing_peer"] = sum(1 for h in heard if not isinstance(h, BaseException))
        for (ua, sip), (call, _) in zip(callers, invites):
            if not call.over:
                ua.bye(call, now=loop.time())
                sip.flush()
        ends = await asyncio.gather(*(sip.wait_for(CallEnded, timeout=10.0) for (_, sip), (c, _) in zip(callers, invites)
                                      if c.media is not None), return_exceptions=True)  # fmt: skip
        out["ended"] = sum(1 for e in ends if not isinstance(e, BaseException))
        if "a" in marks and "b" in marks:
            (ta, ca, la), (tb, cb, lb) = marks["a"], marks["b"]
            lateness = [v for s, i, j in zip(streams, la, lb) for v in s.stats.send_lateness_s[i:j]]
            out["window_s"] = tb - ta
            out["cpu_pct"] = 100.0 * (cb - ca) / (tb - ta)
            out["pacing_ms"] = _percentiles_ms(lateness)
        out["jb"] = _jb_totals(streams)
        out["frames_sent"] = sum(s.stats.frames_sent for s in streams)
    finally:
        for s in streams:
            await s.close()
        for _, sip in callers:
            await sip.close()
    return out


def _callers_main(target: str, n_calls: int, seconds: float, aligned: bool) -> None:
    try:
        res = asyncio.run(_callers(target, n_calls, seconds, aligned=aligned))
    except (VoicelabError, asyncio.TimeoutError, OSError) as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------
# the process under test: the lab's agent, or baresip
# ---------------------------------------------------------------------------------------


async def _drive_callers(target: str, n_calls: int, seconds: float, on_window, *, aligned: bool = False) -> dict[str, Any]:
    """Run the callers' process against ``target``; ``on_window(t_start, t_end)`` is called
    when it fixes the measuring window; returns the callers' result."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "--callers", target, "--calls", str(n_calls), "--seconds", repr(float(seconds)),
        *(["--aligned"] if aligned else []),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        limit=1 << 20)  # fmt: skip
    result: dict[str, Any] | None = None
    # drain stderr all along: a full pipe would stall the callers mid-call
    err_task = asyncio.ensure_future(proc.stderr.read())  # type: ignore[union-attr]
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), seconds + 120)  # type: ignore[union-attr]
            if not line:
                break
            text = line.decode(errors="replace").strip()
            if text.startswith("WINDOW "):
                a, b = (float(v) for v in text.split()[1:3])
                on_window(a, b)
            elif text.startswith("RESULT "):
                result = json.loads(text[len("RESULT "):])
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        err = (await err_task).decode(errors="replace")
    if result is None:
        raise VoicelabError(f"the callers' process gave no result (exit {proc.returncode}): {err.strip()[-500:]}")
    if "error" in result:
        raise VoicelabError(f"the callers' process failed: {result['error']}")
    return result


async def _agent_point(n_calls: int, seconds: float, mode: str, jitter_buffer: str, aligned: bool,
                       tick_ms: float | None = None, read_in_tick: bool = False, serve_gc: bool = True,
                       native: bool = False) -> dict[str, Any]:
    from voicelab.agent import Agent

    loop = asyncio.get_running_loop()
    try:
        from voicelab.rtp.pacer import pacer_for

        pacer: Any = pacer_for(loop)
        if tick_ms is not None:
            pacer.tick_s = tick_ms / 1000.0
        if read_in_tick:
            if not hasattr(pacer, "read_in_tick"):
                raise ParameterError("this checkout's media pacer cannot read in the tick (--read-in-tick)")
            pacer.read_in_tick = True
        if native and not (hasattr(pacer, "enable_native") and pacer.enable_native()):
            raise ParameterError("this checkout has no native media engine (--native): not built, or VOICELAB_NO_EXTENSIONS")
    except ImportError:  # a checkout from before the media pacer (A/B runs of this script)
        pacer = type("NoPacer", (), {"wakeups": 0, "jobs_run": 0, "tick_s": 0.0})()
    load_at_start = os.getloadavg()[0]
    agent = Agent(codecs=["pcmu"], mode=mode, max_calls=n_calls + 8, jitter_buffer=jitter_buffer, seed=1)
    await agent.start()
    if serve_gc:  # as `agent serve` does: start-up objects frozen, young collections every 50,000 allocations
        try:
            from voicelab.agent import tune_gc
        except ImportError:  # pragma: no cover - an older checkout (A/B runs)
            pass
        else:
            tune_gc()
    marks: dict[str, Any] = {}
    streams: list = []
    native_wakeups = 0

    def mark(name: str) -> None:
        if not streams:
            streams.extend(agent.streams.values())
        for s in streams:  # what the native engine did so far, replayed (counts below are then current)
            if hasattr(s, "_native_sync"):
                s._native_sync()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        marks[name] = (loop.time(), time.process_time(), [len(s.stats.send_lateness_s) for s in streams], ru.ru_nivcsw,
                       _machine_busy_s(), sum(sum(s.stats.outcomes.values()) for s in streams),
                       pacer.wakeups, pacer.jobs_run, ru.ru_nvcsw, getattr(pacer, "reads_in_tick", 0))

    def on_window(a: float, b: float) -> None:
        loop.call_at(a, mark, "a")
        loop.call_at(b, mark, "b")

    try:
        callers = await _drive_callers(agent.uri, n_calls, seconds, on_window, aligned=aligned)
        try:
            await asyncio.wait_for(agent.ended(n_calls), 10.0)
        except asyncio.TimeoutError:
            pass
    finally:
        await agent.close()
        if getattr(pacer, "native", None) is not None:
            native_wakeups = pacer.native.wakeups
            pacer.native.close()  # its thread and descriptors (the next N runs on a new loop)
    if "a" not in marks or "b" not in marks:
        raise VoicelabError("the measuring window never opened (no call reached media)")
    (ta, ca, la, va, ma, pa, wa, ja, sa, ra), (tb, cb, lb, vb, mb, pb, wb, jb_, sb, rb) = marks["a"], marks["b"]
    window = [v for s, i, j in zip(streams, la, lb) for v in s.stats.send_lateness_s[i:j]]
    whole = [v for s in streams for v in s.stats.send_lateness_s]
    cpu_pct = 100.0 * (cb - ca) / (tb - ta)
    jb = _jb_totals(streams)
    out = {
        "calls": n_calls,
        "established": callers["established"],
        "agent_streams": len(streams),
        "window_s": tb - ta,
        "pacing_ms": _percentiles_ms(window),
        "pacing_whole_call_ms": _percentiles_ms(whole),
        "frames_in_window": len(window),
        "slots_played_in_window": pb - pa,
        # CPU per frame handled (one sent + one played per 20 ms per call): the cost even
        # when the process was starved of CPU and fell behind
        "cpu_us_per_frame": 1e6 * (cb - ca) / max(len(window) + pb - pa, 1),
        # the same as % of a core for one call side at full rate (50 frames/s each way)
        "cpu_pct_per_call_full_rate": 100.0 * 100 * (cb - ca) / max(len(window) + pb - pa, 1),
        "cpu_pct": cpu_pct,
        "cpu_pct_per_call": cpu_pct / max(len(streams), 1),
        "involuntary_switches": vb - va,
        # voluntary context switches per second: how often the process went to sleep and was woken
        "process_wakeups_per_s": (sb - sa) / (tb - ta),
        "read_in_tick": bool(read_in_tick),
        "native": bool(native),
        "native_slots": sum(getattr(s, "native_slots", 0) for s in streams),
        "native_bails": sum(getattr(s, "native_bails", 0) for s in streams),
        "native_mismatches": sum(getattr(s, "native_mismatches", 0) for s in streams),
        "native_python_wakeups": native_wakeups,
        "slots_played": sum(sum(s.stats.outcomes.values()) for s in streams),
        "serve_gc": bool(serve_gc),
        "reads_in_tick_per_s": (rb - ra) / (tb - ta),
        "machine_busy_pct": None if ma is None or mb is None else 100.0 * (mb - ma) / (tb - ta),
        "agent_jb": jb,
        "agent_lost_rate": jb["lost"] / max(jb["played"] + jb["lost"], 1),
        "agent_errors": list(agent.errors),
        "callers": callers,
        "callers_lost_rate": callers["jb"]["lost"] / max(callers["jb"]["played"] + callers["jb"]["lost"], 1),
        "aligned_starts": aligned,
        # the media pacer (one loop timer for every stream): wake-ups per second and jobs per wake-up
        "pacer_tick_ms": 1000.0 * pacer.tick_s,
        "pacer_wakeups_per_s": (wb - wa) / (tb - ta),
        "pacer_jobs_per_wakeup": (jb_ - ja) / max(wb - wa, 1),
        "loadavg_1m_start": load_at_start,
        "loadavg_1m_end": os.getloadavg()[0],
    }
    busy = out["machine_busy_pct"]
    # what the rest of the machine (other programs) used meanwhile, % of one core
    out["others_cpu_pct"] = None if busy is None else busy - cpu_pct - float(callers.get("cpu_pct", 0.0))
    return out


def measure_agent(n_calls: int, *, seconds: float = 10.0, mode: str = "echo", aligned: bool = False,
                  jitter_buffer: str = "fixed:60", tick_ms: float | None = None,
                  read_in_tick: bool = False, serve_gc: bool = True, native: bool = False) -> dict[str, Any]:  # fmt: skip
    """One point of the ramp: ``n_calls`` concurrent PCMU calls to the lab's agent.

    Parameters
    ----------
    n_calls : int
        Concurrent calls, >= 1.
    seconds : float
        Speech each caller sends, 1..120 s.
    mode : {"echo", "play"}
        The agent's mode.
    aligned : bool
        Start every call's media at the same instant (worst case) instead of spreading
        the starts over one 20 ms frame.
    jitter_buffer : str
        Both sides' jitter buffer.
    tick_ms : float, optional
        The agent's media pacer grid (:attr:`voicelab.rtp.pacer.MediaPacer.tick_s`, ms);
        default: the pacer's own (1 ms).
    read_in_tick : bool
        The agent's streams read their sockets in their playout ticks
        (:attr:`voicelab.rtp.pacer.MediaPacer.read_in_tick`).
    serve_gc : bool
        Tune the garbage collector as ``agent serve`` does (:func:`voicelab.agent.tune_gc`);
        False keeps CPython's defaults.
    native : bool
        Steady echo and play streams are played by the native media engine
        (:meth:`voicelab.rtp.pacer.MediaPacer.enable_native`, ``agent serve --native-media``).

    Returns
    -------
    dict
        ``pacing_ms`` (``p50``/``p99``/``max`` of the agent's send-pacing error over the
        steady-state window, ms), ``cpu_pct`` (agent process, % of one core),
        ``cpu_pct_per_call``, ``agent_lost_rate`` / ``callers_lost_rate`` (jitter-buffer
        slots without their packet, 0..1), ``callers`` (the callers' own view), ...
    """
    if isinstance(n_calls, bool) or not isinstance(n_calls, int) or n_calls < 1:
        raise ParameterError(f"n_calls must be an int >= 1, got {n_calls!r}")
    if not 1.0 <= float(seconds) <= 120.0:
        raise ParameterError(f"seconds {seconds!r} is outside 1..120")
    if mode not in ("echo", "play"):
        raise ParameterError(f"mode must be 'echo' or 'play', got {mode!r}")
    prof_path = os.environ.get("VOICELAB_BENCH_PROFILE")  # cProfile the agent's process (pstats file)
    if prof_path:
        import cProfile

        pr = cProfile.Profile()
        pr.enable()
        try:
            return asyncio.run(_agent_point(n_calls, float(seconds), mode, jitter_buffer, bool(aligned), tick_ms, read_in_tick, serve_gc, native))
        finally:
            pr.disable()
            pr.dump_stats(f"{prof_path}.N{n_calls}")
    return asyncio.run(_agent_point(n_calls, float(seconds), mode, jitter_buffer, bool(aligned), tick_ms, read_in_tick, serve_gc, native))


def _baresip_module_dir() -> Path | None:
    for d in BARESIP_MODULE_DIRS:
        if all((Path(d) / f"{m}.so").exists() for m in ("aufile", "aubridge", "g711")):
            return Path(d)
    return None


async def _baresip_point(baresip: str, module_dir: Path, seconds: float, n_calls: int = 1) -> dict[str, Any]:
    import soundfile as sf

    from voicelab import audio
    from voicelab.net.iface import free_port

    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="voicelab-bench-baresip-") as tmp:
        conf = Path(tmp)
        wav = conf / "say.wav"  # aufile needs the codec's rate; longer than the call
        sf.write(str(wav), audio.to_int16(_speech(seconds + 5.0, 8000)), 8000, subtype="PCM_16")
        sip_port = free_port(kind="udp")
        lo = free_port(kind="udp") // 2 * 2
        config = BARESIP_CONFIG.format(sip_port=sip_port, wav=wav, rtp_lo=lo, rtp_hi=lo + 10 + 4 * n_calls,
                                       module_dir=module_dir)  # fmt: skip
        (conf / "config").write_text(config + f"call_max_calls {max(4, n_calls)}\n")
        (conf / "accounts").write_text("<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU/8000/1\n")
        proc = await asyncio.create_subprocess_exec(
            baresip, "-f", str(conf), "-n", "127.0.0.1", "-t", str(int(seconds + 60)),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        marks: dict[str, Any] = {}

        def mark(name: str) -> None:
            try:
                marks[name] = (loop.time(), _proc_cpu_s(proc.pid))
            except OSError:
                pass

        def on_window(a: float, b: float) -> None:
            loop.call_at(a, mark, "a")
            loop.call_at(b, mark, "b")

        try:
            callers = await _drive_callers(f"sip:bob@127.0.0.1:{sip_port}", n_calls, seconds, on_window)
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
    if "a" not in marks or "b" not in marks:
        raise VoicelabError("baresip's CPU could not be read over the call")
    (ta, a), (tb, b) = marks["a"], marks["b"]
    key = "schedstat" if "schedstat" in a and "schedstat" in b else "stat"
    cpu_pct = 100.0 * (b[key] - a[key]) / (tb - ta)
    return {"calls": n_calls, "window_s": tb - ta, "cpu_pct": cpu_pct, "cpu_pct_per_call": cpu_pct / n_calls, "cpu_source": key,
            "cpu_pct_stat_ticks": 100.0 * (b["stat"] - a["stat"]) / (tb - ta), "callers": callers}


def measure_baresip(*, seconds: float = 10.0, repeats: int = 1, n_calls: int = 1) -> dict[str, Any] | None:
    """baresip's CPU per PCMU call side (the baseline): median of ``repeats`` runs of
    ``n_calls`` concurrent calls answered by one baresip.

    Returns None when baresip or its ``aufile``/``aubridge``/``g711`` modules are missing.
    """
    baresip = shutil.which("baresip")
    mdir = _baresip_module_dir()
    if baresip is None or mdir is None:
        return None
    runs = [asyncio.run(_baresip_point(baresip, mdir, float(seconds), int(n_calls))) for _ in range(max(1, int(repeats)))]
    best = sorted(runs, key=lambda r: r["cpu_pct_per_call"])[len(runs) // 2]
    return best | {"runs_cpu_pct": [r["cpu_pct_per_call"] for r in runs]}


async def _timer_floor(seconds: float, early_s: float, cpu: list[float] | None = None) -> list[float]:
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = loop.create_future()
    t0 = loop.time() + 0.02
    n = int(seconds / 0.02)
    c0 = time.process_time()

    def tick(k: int) -> None:
        late.append(loop.time() - (t0 + k * 0.02))
        if k + 1 < n:
            loop.call_at(t0 + (k + 1) * 0.02 - early_s, tick, k + 1)
        else:
            done.set_result(None)

    loop.call_at(t0 - early_s, tick, 0)
    await done
    if cpu is not None:  # the process's CPU time per wake-up of a timer doing nothing, seconds
        cpu.append((time.process_time() - c0) / max(n, 1))
    return late


def measure_timer_floor(*, seconds: float = 10.0) -> dict[str, Any]:
    """What the event loop's timers alone achieve here: a bare 20 ms ``call_at`` loop.

    Armed at the slot time (as the agent's echo path sends, on its playout timer) and
    0.5 ms early (as :class:`~voicelab.rtp.live.LiveAudioStream` arms a file sender).
    The pacing error of a loop that does nothing else: no agent can pace better than
    this on the same machine at the same moment. Also its CPU (``cpu_us_per_wakeup``,
    ``cpu_pct``: % of a core): the fixed cost of a Python process woken every 20 ms.
    """
    cpu: list[float] = []
    at_slot = _percentiles_ms(asyncio.run(_timer_floor(float(seconds), 0.0, cpu)))
    early = _percentiles_ms(asyncio.run(_timer_floor(float(seconds), 0.0005, cpu)))
    # what one woken Python process costs with no work at all: on a shared VM the
    # interpreter's caches go cold while it sleeps (docs/benchmarks.md, "Concurrent PCMU calls")
    return {"at_slot_ms": at_slot, "early_0.5ms_ms": early, "cpu_us_per_wakeup": 1e6 * float(np.median(cpu)),
            "cpu_pct": 100.0 * float(np.median(cpu)) / 0.02}


# ---------------------------------------------------------------------------------------
# the ramp
# ---------------------------------------------------------------------------------------


def ramp(*, max_calls: int = 64, seconds: float = 10.0, mode: str = "echo", baseline: bool = True,
         baseline_repeats: int = 3, baseline_max_calls: int = 16, keep_going: bool = False, aligned: bool = False,
         ns: list[int] | None = None, tick_ms: float | None = None, read_in_tick: bool = False,
         serve_gc: bool = True, native: str = "off", log=print) -> dict[str, Any]:  # fmt: skip
    """N = 1, 2, 4, ... up to ``max_calls`` (or the list ``ns``); stops after the first N
    with p99 >= 2 ms unless ``keep_going`` (then every N is measured, e.g. to see how CPU
    scales).

    The baseline is baresip answering one call (``baseline_repeats`` runs, median); for
    N up to ``baseline_max_calls`` baresip also answers N concurrent calls, so fixed
    per-process costs are shared alike on both sides.

    ``native``: ``"off"`` (the agent's Python media path), ``"on"`` (steady echo or play streams
    played by the native media engine) or ``"both"`` (each N measured both ways, one
    after the other, against the same baresip run).
    """
    if native not in ("off", "on", "both"):
        raise ParameterError(f"native must be 'off', 'on' or 'both', got {native!r}")
    engines = {"off": [False], "on": [True], "both": [False, True]}[native]
    facts = machine_facts()
    floor = measure_timer_floor(seconds=seconds)
    log(f"# bare event-loop timer: pacing p99 {floor['at_slot_ms']['p99']:.2f} ms armed at the slot, "
        f"{floor['early_0.5ms_ms']['p99']:.2f} ms armed 0.5 ms early, CPU {floor['cpu_pct']:.2f} % of a core")
    base = measure_baresip(seconds=seconds, repeats=baseline_repeats) if baseline else None
    if baseline and base is None:
        log("# baresip (or its aufile/aubridge/g711 modules) not found: the baseline is skipped")
    rows = []
    points = list(ns) if ns else [2 ** k for k in range(64) if 2 ** k <= max_calls]
    for n, use_native in [(n, e) for n in points for e in engines]:
        r = measure_agent(n, seconds=seconds, mode=mode, aligned=aligned, tick_ms=tick_ms, read_in_tick=read_in_tick,
                          serve_gc=serve_gc, native=use_native)
        fl = floor["early_0.5ms_ms"]["p99"]
        r["p99_over_floor_ms"] = None if r["pacing_ms"]["p99"] is None or fl is None else r["pacing_ms"]["p99"] - fl
        if base is not None:
            r["ratio_to_baresip"] = (r["cpu_pct_per_call_full_rate"] / base["cpu_pct_per_call"]
                                     if base["cpu_pct_per_call"] > 0 else None)  # fmt: skip
            if 1 < n <= baseline_max_calls:
                prior = [q for q in rows if q["calls"] == n and q.get("baresip_same_n")]
                same = prior[0]["baresip_same_n"] if prior else measure_baresip(seconds=seconds, n_calls=n)
                r["baresip_same_n"] = same
            elif n == 1:
                r["baresip_same_n"] = base
            if r.get("baresip_same_n") and r["baresip_same_n"]["cpu_pct_per_call"] > 0:
                r["ratio_to_baresip_same_n"] = r["cpu_pct_per_call_full_rate"] / r["baresip_same_n"]["cpu_pct_per_call"]
        rows.append(r)
        log(f"# N={n}{' native' if use_native else ''}: p99 {r['pacing_ms']['p99']:.2f} ms, agent CPU {r['cpu_pct']:.1f} % "
            f"({r['cpu_pct_per_call_full_rate']:.2f} % per call side"
            + (f", baresip {r['baresip_same_n']['cpu_pct_per_call']:.2f} %" if r.get("baresip_same_n") else "")
            + f"), callers CPU {r['callers'].get('cpu_pct', float('nan')):.1f} %, others "
            f"{r.get('others_cpu_pct') or float('nan'):.0f} %, late {r['agent_jb']['late']} / {r['callers']['jb']['late']}, "
            f"load {r['loadavg_1m_start']:.1f}, pacer {r['pacer_wakeups_per_s']:.0f} wake-ups/s x {r['pacer_jobs_per_wakeup']:.1f}, "
            f"process {r['process_wakeups_per_s']:.0f} wake-ups/s")
        if not keep_going and (r["pacing_ms"]["p99"] is None or r["pacing_ms"]["p99"] >= PACING_LIMIT_MS):
            break
    ok: list[int] = []  # the ramp's answer: every N up to it met the limit
    for r in rows:
        if r["pacing_ms"]["p99"] is None or r["pacing_ms"]["p99"] >= PACING_LIMIT_MS or r["established"] != r["calls"]:
            break
        ok.append(r["calls"])
    return {"facts": facts, "mode": mode, "seconds": seconds, "aligned_starts": aligned, "pacing_limit_ms": PACING_LIMIT_MS,
            "tick_ms": tick_ms, "read_in_tick": bool(read_in_tick), "serve_gc": bool(serve_gc), "native": native,
            "max_calls_tested": max_calls, "sustained_calls": max(ok) if ok else 0,
            "limit_reached": len(ok) < len(rows), "timer_floor": floor, "baresip": base, "rows": rows}


def print_table(res: dict[str, Any]) -> None:
    f, base = res["facts"], res["baresip"]
    starts = "all at once" if res["aligned_starts"] else "spread over one 20 ms frame"
    print(f"# Concurrent PCMU calls, agent mode {res['mode']!r}, {res['seconds']:g} s of speech per call, starts {starts}; "
          f"{f['cores']} cores, {f['cpu_model']}, load {f['loadavg_1m']:.2f} at start; pacer grid "
          f"{res.get('tick_ms') or 'default'} ms" + (", sockets read in the tick" if res.get("read_in_tick") else "")
          + ("" if res.get("serve_gc", True) else ", CPython's default GC"))
    if base is not None:
        print(f"# baseline: baresip {f['baresip'] or ''} answering 1 PCMU call: {base['cpu_pct_per_call']:.2f} % of a core "
              f"per call side (runs: {', '.join(f'{v:.2f}' for v in base['runs_cpu_pct'])})")
    else:
        print("# baseline: skipped (no baresip)")
    fl = res["timer_floor"]
    print(f"# bare event-loop 20 ms timer, no work: pacing p50/p99/max {fl['at_slot_ms']['p50']:.2f} / "
          f"{fl['at_slot_ms']['p99']:.2f} / {fl['at_slot_ms']['max']:.1f} ms armed at the slot, "
          f"{fl['early_0.5ms_ms']['p50']:.2f} / {fl['early_0.5ms_ms']['p99']:.2f} / {fl['early_0.5ms_ms']['max']:.1f} ms "
          "armed 0.5 ms early" + (f"; its CPU {fl['cpu_pct']:.2f} % of a core ({fl['cpu_us_per_wakeup']:.0f} us per wake-up)"
                                  if "cpu_pct" in fl else ""))
    print("| calls | engine | pacing p50 / p99 / max (ms) | p99 - floor (ms) | agent CPU (% core) | us per frame | per call side (%) "
          "| ratio to baresip | baresip, N calls: per call side (%) / ratio | lost at agent / callers | late at agent / callers "
          "| callers CPU (%) | callers pacing p99 (ms) | others' CPU (%) | load 1 min | pacer wake-ups/s x jobs "
          "| process wake-ups/s |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---|---:|")
    for r in res["rows"]:
        p, c = r["pacing_ms"], r["callers"]
        ratio = f"{r['ratio_to_baresip']:.1f}" if r.get("ratio_to_baresip") else "-"
        cp = c.get("pacing_ms", {}).get("p99")
        others = r.get("others_cpu_pct")
        same = r.get("baresip_same_n")
        same_txt = "-"
        if same and r.get("ratio_to_baresip_same_n"):
            same_txt = f"{same['cpu_pct_per_call']:.2f} / {r['ratio_to_baresip_same_n']:.1f}"
        over = r.get("p99_over_floor_ms")
        eng = "python" if not r.get("native") else (
            f"native ({100 * r['native_slots'] / max(r['slots_played'], 1):.0f} % of slots, {r['native_bails']} bails, "
            f"{r['native_mismatches']} mismatches, {r['native_python_wakeups']} replays)")
        print(f"| {r['calls']} | {eng} | {p['p50']:.2f} / {p['p99']:.2f} / {p['max']:.1f} | {'-' if over is None else f'{over:+.2f}'} | "
              f"{r['cpu_pct']:.1f} | "
              f"{r['cpu_us_per_frame']:.0f} | {r['cpu_pct_per_call_full_rate']:.2f} | {ratio} | {same_txt} | "
              f"{100 * r['agent_lost_rate']:.2f} % / "
              f"{100 * r['callers_lost_rate']:.2f} % | {r['agent_jb']['late']} / {c['jb']['late']} | "
              f"{c.get('cpu_pct', float('nan')):.1f} | "
              f"{'-' if cp is None else f'{cp:.2f}'} | {'-' if others is None else f'{others:.0f}'} | "
              f"{r['loadavg_1m_start']:.1f} | {r['pacer_wakeups_per_s']:.0f} x {r['pacer_jobs_per_wakeup']:.1f} | "
              f"{r.get('process_wakeups_per_s', float('nan')):.0f} |")
    verdict = "limit reached" if res["limit_reached"] else f"no limit reached up to {res['rows'][-1]['calls']}"
    print(f"# largest N with pacing p99 < {res['pacing_limit_ms']:g} ms: {res['sustained_calls']} ({verdict})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: N up to 4, 3 s calls, one baseline run")
    ap.add_argument("--max-calls", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0, help="speech per call, s")
    ap.add_argument("--mode", choices=("echo", "play"), default="echo")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--aligned", action="store_true", help="start every call's media at the same instant (worst case)")
    ap.add_argument("--keep-going", action="store_true", help="measure every N up to --max-calls, past the limit")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--ns", help="comma-separated N to measure instead of 1, 2, 4, ... (e.g. 1,16,70)")
    ap.add_argument("--tick-ms", type=float, help="the agent's media pacer grid, ms (default: the pacer's, 1 ms)")
    ap.add_argument("--read-in-tick", action="store_true",
                    help="the agent's streams read their sockets in their playout ticks (agent serve --read-in-tick)")
    ap.add_argument("--native", choices=("off", "on", "both"), default="off",
                    help="steady echo or play streams played by the native media engine (agent serve --native-media); "
                         "both: each N measured both ways in the same run")
    ap.add_argument("--default-gc", action="store_true",
                    help="keep CPython's GC thresholds (default: tuned as `agent serve` does, voicelab.agent.tune_gc)")
    ap.add_argument("--baseline-max-calls", type=int, default=16, help="baresip also answers N calls up to this N")
    ap.add_argument("--baseline-repeats", type=int, default=3, help="runs of baresip answering 1 call (median)")
    ap.add_argument("--callers", help=argparse.SUPPRESS)  # internal: run the callers against this URI
    ap.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callers:
        _callers_main(args.callers, args.calls, args.seconds, args.aligned)
        return
    max_calls, seconds = (min(args.max_calls, 4), 3.0) if args.quick else (args.max_calls, args.seconds)
    ns = [int(v) for v in args.ns.split(",")] if args.ns else None
    res = ramp(max_calls=max_calls, seconds=seconds, mode=args.mode, baseline=not args.no_baseline,
               baseline_repeats=1 if args.quick else args.baseline_repeats, keep_going=args.keep_going,
               aligned=args.aligned, ns=ns, tick_ms=args.tick_ms, read_in_tick=args.read_in_tick, serve_gc=not args.default_gc,
               native=args.native, baseline_max_calls=args.baseline_max_calls)  # fmt: skip
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
