"""Concurrent WebRTC Opus calls the lab's agent sustains with no late packets, beside plain aiortc.

The agent (:class:`voicelab.agent.Agent` ``mode="echo", codecs=["opus"]`` behind
:func:`voicelab.webrtc.agent.serve_webrtc`, Opus at 24 kbit/s: every call runs aiortc's
ICE/DTLS/SRTP, the lab's jitter buffer, Opus decoder, PLC and Opus encoder) runs in this
process; the callers (the lab's :class:`~voicelab.webrtc.signaling.SignalingClient` and
a lab peer, Opus 24 kbit/s, fixed 60 ms jitter buffer) run in a *second* process (this
script started with ``--callers URL``), so the CPU measured here is the agent's alone.
For N = 1, 2, 4, 8, ... the N callers offer at once, start sending a speech-like signal
spread over one 20 ms frame once every call is connected, talk ``--seconds`` and hang up.
Over a steady-state window (from a warm-up after the media start to the end of the
callers' signal) the benchmark measures:

* the agent process's CPU (``time.process_time``: all threads, aiortc's encoder
  executor and decoder threads included) in CPU-seconds per call-second, and the
  callers' process's the same way (caller + agent = one call's pair);
* late packets: packets the agent's and the callers' jitter buffers dropped as late,
  and slots they played without their packet (lost), within the window; and the send
  pacing (hand-over time minus scheduled time of every frame) of the agent's echo
  tracks and the callers' source tracks;
* offer -> connected per call from the front's timeline (``offer_received`` at the
  signaling server -> the agent's peer ``connection:connected``), median and p90, and
  the callers' own view (offer created -> their peer connected);
* what the rest of the machine used meanwhile (``/proc/stat`` busy time minus both
  processes): other programs compete for the same cores.

The ramp stops after the first N with a late or lost packet on either side (or at
``--max-calls``, default 16); the answer is the largest N such that it and every smaller
N had none.

Baseline, in the same run and at the same N: plain aiortc echo. The callee is an
``RTCPeerConnection`` (made with ``mode="aiortc-defaults"``: only its sockets go through
the lab's loopback interface, because aioice skips 127.0.0.1) behind the same signaling
server that adds each received track back through ``aiortc.contrib.media.MediaRelay``
(aiortc's ``server.py`` example): aiortc's jitter buffer, decoder thread and its own
Opus encoder at its fixed 96 kbit/s. The caller is plain aiortc too: ``MediaPlayer`` on
a WAV of the same signal, the echo consumed by ``MediaBlackhole``. Its CPU per
call-second and offer -> connected are measured the same way; every row gives the ratio
lab / plain for the callee alone and for the caller + callee pair.

    python benchmarks/bench_webrtc.py [--quick] [--max-calls 16] [--seconds 10]
        [--no-baseline] [--keep-going] [--jitter-buffer fixed:60|auto] [--json out.json]

Mouth-to-ear per jitter buffer and frame size, and CPU per single call against plain
aiortc, are measured by ``bench_webrtc_latency.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_concurrent_calls import _machine_busy_s, _percentiles_ms, _speech, machine_facts  # noqa: E402

from voicelab.errors import ParameterError, VoicelabError  # noqa: E402

SCRIPT = Path(__file__).resolve()
#: the lab's Opus bit rate on both sides, bit/s
OPUS_BITRATE = 24000
#: both lab sides' jitter buffer (``--jitter-buffer``, e.g. ``auto``: the self-sizing one)
JITTER_BUFFER = "fixed:60"
RATE = 48000


def _q(values: list[float]) -> dict[str, float | None]:
    """median / p90 / max of ``values`` (ms)."""
    if not values:
        return {"p50": None, "p90": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def _jb_counts(playouts: list) -> dict[str, int]:
    tot = {"received": 0, "played": 0, "late": 0, "lost": 0}
    for p in playouts:
        if p is None:
            continue
        st = p.jb.stats
        for k in tot:
            tot[k] += int(getattr(st, k))
    return tot


def _diff(b: dict[str, int], a: dict[str, int]) -> dict[str, int]:
    return {k: b[k] - a.get(k, 0) for k in b}


# ---------------------------------------------------------------------------------------
# the callers' process
# ---------------------------------------------------------------------------------------


async def _one_lab_caller(iface: Any, url: str, x48: np.ndarray) -> dict[str, Any]:
    from voicelab.webrtc.media import AudioSink, SourceTrack
    from voicelab.webrtc.peer import make_peer_connection, prefer_codec
    from voicelab.webrtc.signaling import SignalingClient

    loop = asyncio.get_running_loop()
    sink = AudioSink(RATE)
    pc = make_peer_connection(iface, codec="opus", codec_params={"bitrate": OPUS_BITRATE}, forward_to_track=False,
                              sink=sink, jitter_buffer=JITTER_BUFFER)  # fmt: skip
    track = SourceTrack(x48, RATE)
    client = SignalingClient(iface, url)
    c = {"pc": pc, "sink": sink, "track": track, "client": client}
    pc.addTrack(track)
    prefer_codec(pc.getTransceivers()[0], "opus")
    t_offer = loop.time()
    c["setup_ms"] = (await client.dial(pc, connect_timeout=30.0) - t_offer) * 1000.0
    return c


async def _one_plain_caller(iface: Any, url: str, wav: str) -> dict[str, Any]:
    from aiortc.contrib.media import MediaBlackhole, MediaPlayer

    from voicelab.webrtc.peer import make_peer_connection
    from voicelab.webrtc.signaling import SignalingClient

    loop = asyncio.get_running_loop()
    pc = make_peer_connection(iface, mode="aiortc-defaults")
    player = MediaPlayer(wav)
    hole = MediaBlackhole()
    client = SignalingClient(iface, url)
    c = {"pc": pc, "player": player, "hole": hole, "client": client}
    pc.on("track", lambda track: hole.addTrack(track))
    pc.addTrack(player.audio)
    t_offer = loop.time()
    c["setup_ms"] = (await client.dial(pc, connect_timeout=30.0) - t_offer) * 1000.0
    await hole.start()
    return c


async def _callers(url: str, n_calls: int, seconds: float, *, plain: bool = False) -> dict[str, Any]:
    """Call ``url`` ``n_calls`` times at once, talk ``seconds``, hang up; the callers' view.

    Prints ``WINDOW t_start t_end`` (``loop.time()``, i.e. CLOCK_MONOTONIC, the same in
    every process) once every call is connected, so the callee's process samples its
    CPU over the same window.
    """
    import soundfile as sf

    from voicelab import audio
    from voicelab.net.iface import LoopbackInterface
    from voicelab.webrtc.peer import stats_summary

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    x16 = _speech(seconds)
    x48 = audio.resample(x16, 16000, RATE)
    out: dict[str, Any] = {"calls": n_calls, "plain": plain}
    tmp = tempfile.TemporaryDirectory(prefix="voicelab-bench-webrtc-")
    wav = str(Path(tmp.name) / "say.wav")
    if plain:  # longer than the call: the player never runs dry
        sf.write(wav, audio.to_int16(audio.resample(_speech(seconds + 10.0), 16000, RATE)), RATE, subtype="PCM_16")
    results = await asyncio.gather(*((_one_plain_caller(iface, url, wav) if plain else _one_lab_caller(iface, url, x48))
                                     for _ in range(n_calls)), return_exceptions=True)  # fmt: skip
    callers = [r for r in results if isinstance(r, dict)]
    out["failed"] = [f"{type(r).__name__}: {r}"[:200] for r in results if not isinstance(r, dict)]
    out["established"] = len(callers)
    try:
        out["setup_ms"] = [c["setup_ms"] for c in callers]
        t0 = loop.time() + 0.2
        warm = min(2.0, 0.25 * seconds)
        window = (t0 + warm, t0 + seconds)
        marks: dict[str, Any] = {}

        def playouts() -> list:
            return [c["pc"].getTransceivers()[0].receiver.lab_playout for c in callers if not plain]

        def mark(name: str) -> None:
            marks[name] = (loop.time(), time.process_time(), _jb_counts(playouts()),
                           [len(c["track"].send_lateness_s) for c in callers if not plain])

        loop.call_at(window[0], mark, "a")
        loop.call_at(window[1], mark, "b")
        print(f"WINDOW {window[0]!r} {window[1]!r}", flush=True)
        if not plain:
            for i, c in enumerate(callers):
                c["track"].start(t0 + i * 0.020 / max(len(callers), 1))
        if callers:
            await asyncio.sleep(max(0.0, window[1] - loop.time()) + 0.05)
        if not plain:  # the echo of the signal's end is played back (or 5 s pass)
            await asyncio.gather(*(asyncio.wait_for(c["sink"].played_through(t0 + seconds + 0.2), 5.0) for c in callers),
                                 return_exceptions=True)  # fmt: skip
        if "a" in marks and "b" in marks:
            (ta, ca, ja, la), (tb, cb, jb, lb) = marks["a"], marks["b"]
            out["window_s"] = tb - ta
            out["cpu_s"] = cb - ca
            out["jb"] = _diff(jb, ja)
            if not plain:
                lat = [v for c, i, j in zip(callers, la, lb) for v in c["track"].send_lateness_s[i:j]]
                out["pacing_ms"] = _percentiles_ms(lat)
        got = []  # aiortc's own counters: media came back on every call (plain ones included)
        for c in callers:
            try:
                got.append(stats_summary(await c["pc"].getStats(), clock_rate=RATE))
            except Exception as exc:  # noqa: BLE001 - a statistic, not the measurement
                got.append({"error": f"{type(exc).__name__}: {exc}"[:200]})
        out["packets_received"] = [g.get("packets_received") for g in got]
        out["packets_lost"] = [g.get("packets_lost") for g in got]
        for c in callers:
            await c["client"].bye()
    finally:
        for c in callers:
            await c["client"].close()
            if "hole" in c:
                await c["hole"].stop()
            await c["pc"].close()
            if "player" in c and c["player"].audio is not None:
                c["player"].audio.stop()
        tmp.cleanup()
    return out


def _callers_main(url: str, n_calls: int, seconds: float, plain: bool) -> None:
    try:
        res = asyncio.run(_callers(url, n_calls, seconds, plain=plain))
    except (VoicelabError, asyncio.TimeoutError, OSError) as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(res), flush=True)


async def _drive_callers(url: str, n_calls: int, seconds: float, on_window, *, plain: bool) -> dict[str, Any]:
    """Run the callers' process against ``url``; ``on_window(a, b)`` when it fixes the window."""
    args = [sys.executable, str(SCRIPT), "--callers", url, "--calls", str(n_calls), "--seconds", repr(float(seconds)),
            "--jitter-buffer", JITTER_BUFFER]
    proc = await asyncio.create_subprocess_exec(*args, *(["--plain"] if plain else []), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    result = None
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), seconds + 120.0)  # type: ignore[union-attr]
            if not line:
                break
            text = line.decode(errors="replace").strip()
            if text.startswith("WINDOW "):
                a, b = (float(v) for v in text.split()[1:3])
                on_window(a, b)
            elif text.startswith("RESULT "):
                result = json.loads(text[7:])
        err = (await proc.stderr.read()).decode(errors="replace")  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
    if result is None:
        raise VoicelabError(f"the callers' process gave no result: {err.strip()[-500:]}")
    if "error" in result:
        raise VoicelabError(f"the callers' process failed: {result['error']}")
    return result


# ---------------------------------------------------------------------------------------
# the process under test: the lab's agent, or plain aiortc echo
# ---------------------------------------------------------------------------------------


async def _plain_front(iface: Any) -> tuple[Any, list]:
    """A signaling server whose offers are answered by plain aiortc echo peers."""
    from aiortc import RTCSessionDescription
    from aiortc.contrib.media import MediaRelay

    from voicelab.webrtc.peer import make_peer_connection
    from voicelab.webrtc.signaling import SignalingServer

    relay = MediaRelay()
    calls: list = []

    async def on_offer(session: Any, sdp: str) -> str:
        pc = make_peer_connection(iface, mode="aiortc-defaults")
        calls.append((session, pc))
        pc.on("track", lambda track: pc.addTrack(relay.subscribe(track)))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())

        async def bye(s: Any) -> None:
            await pc.close()

        session.on_bye = bye
        return pc.localDescription.sdp

    server = SignalingServer(iface, secret=os.urandom(32), on_offer=on_offer)
    await server.start("127.0.0.1", 0)
    return server, calls


async def _point(n_calls: int, seconds: float, plain: bool) -> dict[str, Any]:
    from voicelab.agent import Agent
    from voicelab.webrtc.agent import serve_webrtc

    loop = asyncio.get_running_loop()
    marks: dict[str, Any] = {}
    agent = front = server = None
    plain_calls: list = []
    if plain:
        from voicelab.net.iface import LoopbackInterface
        from voicelab.webrtc.peer import make_peer_connection

        iface = LoopbackInterface(loop)
        await make_peer_connection(iface, mode="aiortc-defaults").close()  # aiortc's imports before the window
        server, plain_calls = await _plain_front(iface)
        url = server.url
    else:
        agent = Agent(mode="echo", codecs=["opus"], jitter_buffer=JITTER_BUFFER, max_calls=max(32, n_calls),
                      keep_recordings=n_calls)  # fmt: skip
        await agent.start()
        front = await serve_webrtc(agent, codec_params={"opus": {"bitrate": OPUS_BITRATE}})
        url = front.url

    def plain_sent() -> int:  # aiortc's own counter of RTP packets sent by the plain echo peers
        return sum(int(getattr(t.sender, "_RTCRtpSender__packet_count", 0)) for _, pc in plain_calls
                   for t in pc.getTransceivers())  # fmt: skip

    def mark(name: str) -> None:
        calls = [] if front is None else list(front.calls.values())
        marks[name] = (loop.time(), time.process_time(), _machine_busy_s(), _jb_counts([c.playout for c in calls]),
                       {c.id: len(c.track.send_lateness_s) for c in calls} if front is not None else plain_sent())

    lag: list[float] = []  # a bare 20 ms timer in this process over the window: how late the loop ran

    def tick(when: float, end: float) -> None:
        lag.append(loop.time() - when)
        if when + 0.020 < end:
            loop.call_at(when + 0.020, tick, when + 0.020, end)

    def on_window(a: float, b: float) -> None:
        loop.call_at(a, mark, "a")
        loop.call_at(b, mark, "b")
        loop.call_at(a, tick, a, b)

    try:
        callers = await _drive_callers(url, n_calls, seconds, on_window, plain=plain)
        if front is not None:
            try:
                await asyncio.wait_for(front.ended(n_calls), 10.0)
            except asyncio.TimeoutError:
                pass
    finally:
        if front is not None:
            await front.close()
        if agent is not None:
            await agent.close()
        if server is not None:
            await server.close()
            for _, pc in plain_calls:
                await pc.close()
    if "a" not in marks or "b" not in marks:
        raise VoicelabError("the measuring window never opened (no call reached media)")
    (ta, ca, ma, ja, la), (tb, cb, mb, jb, lb) = marks["a"], marks["b"]
    win = tb - ta
    n_est = int(callers["established"])
    out: dict[str, Any] = {"calls": n_calls, "established": n_est, "window_s": win, "cpu_s": cb - ca,
                           "cpu_pct": 100.0 * (cb - ca) / win}  # fmt: skip
    out["cpu_s_per_call_s"] = (cb - ca) / (win * max(n_est, 1))
    cc = callers.get("cpu_s")
    out["callers_cpu_s_per_call_s"] = None if cc is None else cc / (callers["window_s"] * max(n_est, 1))
    out["pair_cpu_s_per_call_s"] = None if cc is None else out["cpu_s_per_call_s"] + out["callers_cpu_s_per_call_s"]
    busy = None if ma is None or mb is None else 100.0 * (mb - ma) / win
    out["machine_busy_pct"] = busy
    out["others_cpu_pct"] = None if busy is None or cc is None else busy - out["cpu_pct"] - 100.0 * cc / callers["window_s"]
    out["loop_lag_ms"] = _percentiles_ms(lag)
    out["callers_setup_ms"] = _q(callers.get("setup_ms", []))
    out["callers"] = callers
    if plain:
        # an echo decodes one frame for each it sends: frames handled = 2 x packets sent
        frames = 2 * (lb - la)
        out["frames_in_window"] = frames
        out["cpu_s_per_call_s_full_rate"] = 100.0 * (cb - ca) / frames if frames > 0 else None
        setups = []
        for session, pc in plain_calls:
            t0, t1 = session.first("offer_received"), pc.event_time("connection:connected")
            if t0 is not None and t1 is not None:
                setups.append((t1 - t0) * 1000.0)
        out["setup_ms"] = _q(setups)
        return out
    finished = list(front.finished.values())  # type: ignore[union-attr]
    out["setup_ms"] = _q([c.setup_ms for c in finished if c.setup_ms is not None])
    lat = [v for c in finished if c.id in la and c.id in lb for v in c.track.send_lateness_s[la[c.id]:lb[c.id]]]
    out["agent_pacing_ms"] = _percentiles_ms(lat)
    out["agent_jb"] = _diff(jb, ja)
    # CPU per frame handled (one played + one sent per call every 20 ms) x 100 frames/s: the
    # cost of a call-second even when the process was starved and fell behind
    frames = len(lat) + out["agent_jb"]["played"] + out["agent_jb"]["lost"]
    out["frames_in_window"] = frames
    out["cpu_s_per_call_s_full_rate"] = 100.0 * (cb - ca) / frames if frames > 0 else None
    out["agent_errors"] = list(front.errors)  # type: ignore[union-attr]
    cj = callers.get("jb", {"late": 0, "lost": 0})
    out["late_or_lost"] = out["agent_jb"]["late"] + out["agent_jb"]["lost"] + cj["late"] + cj["lost"]
    return out


def measure(n_calls: int, *, seconds: float = 10.0, plain: bool = False) -> dict[str, Any]:
    """One point of the ramp: ``n_calls`` concurrent WebRTC Opus echo calls.

    Parameters
    ----------
    n_calls : int
        Concurrent calls, >= 1.
    seconds : float
        Signal each caller sends, 1..120 s.
    plain : bool
        Plain aiortc echo (callee and callers) instead of the lab's agent and callers.

    Returns
    -------
    dict
        ``cpu_s_per_call_s`` (callee process, CPU-seconds per call-second),
        ``callers_cpu_s_per_call_s``, ``pair_cpu_s_per_call_s`` (their sum),
        ``setup_ms`` (``p50``/``p90``/``max`` offer -> connected at the callee, ms),
        ``window_s``, ``others_cpu_pct`` (% of one core used by other programs);
        for the lab's agent also ``agent_jb`` / ``callers["jb"]`` (late and lost within
        the window), ``agent_pacing_ms`` / ``callers["pacing_ms"]`` (p50/p99/max ms),
        ``late_or_lost`` (their sum).

    Raises
    ------
    ParameterError
        Bad ``n_calls`` or ``seconds``.
    """
    if isinstance(n_calls, bool) or not isinstance(n_calls, int) or n_calls < 1:
        raise ParameterError(f"n_calls must be an int >= 1, got {n_calls!r}")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise ParameterError(f"seconds must be a number, got {seconds!r}") from None
    if not 1.0 <= seconds <= 120.0:
        raise ParameterError(f"seconds {seconds!r} is outside 1..120")
    return asyncio.run(_point(n_calls, seconds, bool(plain)))


# ---------------------------------------------------------------------------------------
# the ramp
# ---------------------------------------------------------------------------------------


def ramp(*, max_calls: int = 16, seconds: float = 10.0, baseline: bool = True, keep_going: bool = False,
         log=print) -> dict[str, Any]:  # fmt: skip
    """N = 1, 2, 4, ... up to ``max_calls``; stops after the first N with a late or lost
    packet on either side unless ``keep_going``. Plain aiortc echo at every N measured."""
    facts = machine_facts()
    facts.pop("baresip", None)
    import aiortc

    facts["aiortc"] = aiortc.__version__
    rows = []
    n = 1
    while n <= max_calls:
        r = measure(n, seconds=seconds)
        if baseline:
            p = measure(n, seconds=seconds, plain=True)
            r["plain"] = p
            r["ratio_callee"] = r["cpu_s_per_call_s"] / p["cpu_s_per_call_s"] if p["cpu_s_per_call_s"] > 0 else None
            if r["cpu_s_per_call_s_full_rate"] and p.get("cpu_s_per_call_s_full_rate"):
                r["ratio_callee_full_rate"] = r["cpu_s_per_call_s_full_rate"] / p["cpu_s_per_call_s_full_rate"]
            if r["pair_cpu_s_per_call_s"] is not None and p["pair_cpu_s_per_call_s"]:
                r["ratio_pair"] = r["pair_cpu_s_per_call_s"] / p["pair_cpu_s_per_call_s"]
        rows.append(r)
        log(f"# N={n}: agent {r['cpu_s_per_call_s']:.3f} CPU-s/call-s, late+lost {r['late_or_lost']}, setup p50 "
            f"{r['setup_ms']['p50'] or float('nan'):.0f} ms, others {r.get('others_cpu_pct') or float('nan'):.0f} %"
            + (f"; plain {r['plain']['cpu_s_per_call_s']:.3f}" if baseline else ""))
        if not keep_going and (r["late_or_lost"] > 0 or r["established"] < n):
            break
        n *= 2
    ok: list[int] = []
    for r in rows:
        if r["late_or_lost"] > 0 or r["established"] < r["calls"]:
            break
        ok.append(r["calls"])
    return {"facts": facts, "seconds": seconds, "opus_bitrate": OPUS_BITRATE, "jitter_buffer": JITTER_BUFFER,
            "max_calls_tested": max_calls, "sustained_calls": max(ok) if ok else 0,
            "limit_reached": len(ok) < len(rows), "rows": rows}  # fmt: skip


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def print_table(res: dict[str, Any]) -> None:
    f = res["facts"]
    print(f"# Concurrent WebRTC Opus echo calls, {res['seconds']:g} s per call; lab Opus {res['opus_bitrate'] // 1000} "
          f"kbit/s, jitter buffer {res['jitter_buffer']}; plain aiortc {f['aiortc']} Opus 96 kbit/s; {f['cores']} cores, "
          f"{f['cpu_model']}, load {f['loadavg_1m']:.2f} at start")
    print("| calls | agent CPU-s / call-s | at full rate | plain callee at full rate / ratio | lab pair | plain callee | plain pair | ratio callee / pair "
          "| late+lost agent / callers | pacing p99 agent / callers (ms) | loop lag p99 / max (ms) | offer->connected p50 / p90 (ms) "
          "| plain offer->connected p50 / p90 (ms) | others' CPU (%) lab / plain |")
    print("|---:|---:|---:|---|---:|---:|---:|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        p = r.get("plain") or {}
        aj, cj = r["agent_jb"], r["callers"].get("jb", {"late": 0, "lost": 0})
        pp = p.get("setup_ms", {})
        print(f"| {r['calls']} | {r['cpu_s_per_call_s']:.3f} | {_f(r['cpu_s_per_call_s_full_rate'], '.3f')} | "
              f"{_f(p.get('cpu_s_per_call_s_full_rate'), '.3f')} / {_f(r.get('ratio_callee_full_rate'), '.2f')} | "
              f"{_f(r['pair_cpu_s_per_call_s'], '.3f')} | "
              f"{_f(p.get('cpu_s_per_call_s'), '.3f')} | {_f(p.get('pair_cpu_s_per_call_s'), '.3f')} | "
              f"{_f(r.get('ratio_callee'), '.2f')} / {_f(r.get('ratio_pair'), '.2f')} | "
              f"{aj['late']}+{aj['lost']} / {cj['late']}+{cj['lost']} | "
              f"{_f(r['agent_pacing_ms']['p99'], '.1f')} / {_f(r['callers'].get('pacing_ms', {}).get('p99'), '.1f')} | "
              f"{_f(r['loop_lag_ms']['p99'], '.1f')} / {_f(r['loop_lag_ms']['max'], '.0f')} | "
              f"{_f(r['setup_ms']['p50'], '.0f')} / {_f(r['setup_ms']['p90'], '.0f')} | "
              f"{_f(pp.get('p50'), '.0f')} / {_f(pp.get('p90'), '.0f')} | "
              f"{_f(r.get('others_cpu_pct'), '.0f')} / {_f(p.get('others_cpu_pct'), '.0f')} |")
    verdict = "limit reached" if res["limit_reached"] else f"no late packet up to {res['rows'][-1]['calls']}"
    print(f"# largest N with no late or lost packet: {res['sustained_calls']} ({verdict})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: N up to 2, 3 s calls")
    ap.add_argument("--max-calls", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0, help="signal per call, s")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--keep-going", action="store_true", help="measure every N up to --max-calls, past late packets")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--jitter-buffer", default="fixed:60",
                    help="both lab sides' jitter buffer: fixed:MS, adaptive or auto (default %(default)s)")
    ap.add_argument("--callers", help=argparse.SUPPRESS)  # internal: run the callers against this URL
    ap.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global JITTER_BUFFER
    from voicelab.rtp.jitterbuffer import canonical_jitter_buffer

    try:
        JITTER_BUFFER = canonical_jitter_buffer(args.jitter_buffer)
    except ParameterError as exc:
        ap.error(str(exc))
    if args.callers:
        _callers_main(args.callers, args.calls, args.seconds, args.plain)
        return
    max_calls, seconds = (min(args.max_calls, 2), 3.0) if args.quick else (args.max_calls, args.seconds)
    res = ramp(max_calls=max_calls, seconds=seconds, baseline=not args.no_baseline, keep_going=args.keep_going)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
