"""CPU of the SIP <-> WebRTC gateway per bridged call: transcoding vs pass-through, beside the anchor.

Three processes, so the CPU measured is the gateway's alone:

* the SIP side: ``voicelab agent serve --mode echo --codecs pcmu`` (a subprocess);
* the gateway (:class:`voicelab.gateway.Gateway`) in THIS process;
* the callers: N lab WebRTC peers (this script with ``--callers``, a subprocess) that
  offer at once, talk ``--seconds`` and hang up; they print the measuring window
  (``WINDOW a b`` on the shared monotonic clock) once every call is connected.

Points: ``transcode`` (callers Opus 24 kbit/s 48 kHz <-> gateway <-> G.711 SIP leg: two
jitter buffers, two decoders, two encoders, two resamplers per call), ``passthrough``
(callers PCMU: payloads forwarded as they arrive), and the **anchor** measured in the
same run: the lab agent's own WebRTC front in echo mode (``anchor``: one WebRTC leg,
Opus decode + encode, no SIP leg), i.e. what the WebRTC half of a bridge costs alone.

Reported per point and N: the process's CPU-seconds per call-second in the window
(``time.process_time``: all threads), and the callers' late/lost frames (a starved
gateway shows up there).

    python benchmarks/bench_gateway.py [--calls 1,2,4] [--seconds 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_concurrent_calls import _speech, machine_facts  # noqa: E402

from voicelab.errors import VoicelabError  # noqa: E402

SCRIPT = Path(__file__).resolve()


# ---------------------------------------------------------------------------------------
# callers (subprocess)
# ---------------------------------------------------------------------------------------
async def _callers(url: str, n: int, seconds: float, codec: str) -> dict[str, Any]:
    from voicelab import audio, codecs
    from voicelab.net.iface import LoopbackInterface
    from voicelab.webrtc.media import AudioSink, SourceTrack
    from voicelab.webrtc.peer import make_peer_connection, prefer_codec
    from voicelab.webrtc.signaling import SignalingClient

    loop = asyncio.get_running_loop()
    iface = LoopbackInterface(loop)
    rate = int(codecs.get(codec).sample_rate)
    x = audio.resample(_speech(seconds), 16000, rate)
    params = {"bitrate": 24000} if codec == "opus" else {}
    calls = []
    for _ in range(n):
        sink = AudioSink(rate)
        pc = make_peer_connection(iface, codec=codec, codec_params=params, forward_to_track=False, sink=sink,
                                  jitter_buffer="fixed:60")
        track = SourceTrack(x, rate)
        pc.addTrack(track)
        prefer_codec(pc.getTransceivers()[0], codec)
        calls.append({"pc": pc, "sink": sink, "track": track, "client": SignalingClient(iface, url)})

    async def connect(c: dict) -> None:
        await c["client"].dial(c["pc"], connect_timeout=30.0)

    out: dict[str, Any] = {}
    try:
        await asyncio.gather(*(connect(c) for c in calls))
        t0 = loop.time() + 0.2
        window = (t0 + min(2.0, 0.25 * seconds), t0 + seconds)
        print(f"WINDOW {window[0]!r} {window[1]!r}", flush=True)
        for i, c in enumerate(calls):
            c["track"].start(t0 + i * 0.020 / n)
        await asyncio.sleep(max(0.0, window[1] - loop.time()) + 0.3)
        late = lost = played = 0
        for c in calls:
            p = c["pc"].getTransceivers()[0].receiver.lab_playout
            if p is not None:
                late += int(p.jb.stats.late)
                lost += int(p.jb.stats.lost)
                played += int(p.jb.stats.played)
        out.update(late=late, lost=lost, played=played)
        for c in calls:
            await c["client"].bye()
    finally:
        for c in calls:
            await c["client"].close()
            await c["pc"].close()
    return out


def _callers_main(url: str, n: int, seconds: float, codec: str) -> None:
    try:
        res = asyncio.run(_callers(url, n, seconds, codec))
    except (VoicelabError, asyncio.TimeoutError, OSError) as exc:
        res = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------
# the process under test
# ---------------------------------------------------------------------------------------
async def _point(kind: str, n: int, seconds: float, sip_uri: str) -> dict[str, Any]:
    from voicelab.agent import Agent
    from voicelab.gateway import Gateway
    from voicelab.webrtc.agent import serve_webrtc

    loop = asyncio.get_running_loop()
    agent = gw = None
    if kind == "anchor":
        agent = await Agent(mode="echo", codecs=["opus"], jitter_buffer="fixed:40", max_calls=64).start()
        front = await serve_webrtc(agent, codec_params={"opus": {"bitrate": 24000}})
        codec = "opus"
    else:
        codec = "opus" if kind == "transcode" else "pcmu"
        gw = await Gateway(target=sip_uri, sip_codec="pcmu", webrtc_codecs=(codec,), jitter_buffer="fixed:40",
                           max_calls=64).start()
        front = gw.front
    marks: dict[str, tuple[float, float]] = {}

    def mark(name: str) -> None:
        marks[name] = (loop.time(), time.process_time())

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "--callers", front.url, "--n", str(n), "--seconds", repr(seconds), "--codec", codec,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    result = None
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), seconds + 120.0)  # type: ignore[union-attr]
            if not line:
                break
            text = line.decode(errors="replace").strip()
            if text.startswith("WINDOW "):
                a, b = (float(v) for v in text.split()[1:3])
                loop.call_at(a, mark, "a")
                loop.call_at(b, mark, "b")
            elif text.startswith("RESULT "):
                result = json.loads(text[7:])
        err = (await proc.stderr.read()).decode(errors="replace")  # type: ignore[union-attr]
        await proc.wait()
        try:
            await asyncio.wait_for(front.ended(n), 10.0)
        except asyncio.TimeoutError:
            pass
        passthrough = None if gw is None else all(leg.passthrough for leg in gw.legs.values())
    finally:
        if gw is not None:
            await gw.close()
        if agent is not None:
            await front.close()
            await agent.close()
    if result is None or "error" in result or "a" not in marks or "b" not in marks:
        raise VoicelabError(f"{kind} x{n}: no measurement ({(result or {}).get('error') or err.strip()[-300:]})")
    (ta, ca), (tb, cb) = marks["a"], marks["b"]
    return {"kind": kind, "calls": n, "passthrough": passthrough, "window_s": tb - ta,
            "cpu_s_per_call_s": (cb - ca) / ((tb - ta) * n), "cpu_pct": 100.0 * (cb - ca) / (tb - ta),
            "callers_late": result["late"], "callers_lost": result["lost"], "callers_played": result["played"]}


async def _run(calls: list[int], seconds: float) -> dict[str, Any]:
    from voicelab.net.iface import free_port

    port = free_port(kind="udp")
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicelab", "agent", "serve", "--sip", f"127.0.0.1:{port}", "--mode", "echo",
        "--codecs", "pcmu", "--max-calls", "64", "--workers", "1", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(agent.stdout.readline(), 30.0)  # type: ignore[union-attr]
        if b"voicelab agent" not in line:
            raise VoicelabError(f"the SIP agent did not start: {line!r}")
        rows = []
        for n in calls:
            for kind in ("anchor", "transcode", "passthrough"):
                r = await _point(kind, n, seconds, f"sip:agent@127.0.0.1:{port}")
                rows.append(r)
                print(f"  {kind:<12} N={n:<3} CPU {r['cpu_s_per_call_s']:.3f} s/call-s ({r['cpu_pct']:.0f} % of a core)"
                      f"  callers late {r['callers_late']} lost {r['callers_lost']} of {r['callers_played']}",
                      flush=True)
        return {"machine": machine_facts(), "seconds": seconds, "rows": rows}
    finally:
        agent.terminate()
        await agent.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--callers", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--codec", default="opus", help=argparse.SUPPRESS)
    ap.add_argument("--calls", default="1,2,4", help="concurrent bridged calls per point, comma-separated")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    if args.callers:
        _callers_main(args.callers, args.n, args.seconds, args.codec)
        return
    res = asyncio.run(_run([int(c) for c in args.calls.split(",")], args.seconds))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
