"""Soak: one agent under mixed traffic for a long time; memory, descriptors and tasks must stay flat.

The agent (:class:`voicelab.agent.Agent`, SIP over TCP by default, ``echo`` mode) runs in
a child process (this script started with ``--serve``) that prints one JSON sample every
``--sample-s`` seconds: its resident memory (``/proc/self/status`` VmRSS), open
descriptors (``/proc/self/fd``), threads (the native media engine's comes and goes with its
calls; ``VOICELAB_NATIVE_MEDIA=1`` turns it on in the agent's process), asyncio tasks, media streams, calls answered / ended /
refused and its transport's counters. Its log (stderr) goes to a file; at the end the
script counts the tracebacks in it.

This process drives, at the same time:

* a normal call (:func:`voicelab.calls.dial`, 2 s of speech each way) every ``--call-every`` s;
* an OPTIONS on a fresh connection every second (answer expected);
* ``--idle`` idle connections held open (reopened when the agent closes them: its idle
  timeout is ``--idle-timeout``);
* a caller that vanishes every ``--vanish-every`` s: INVITE, ACK after the 200, then the
  connection is dropped and no media or BYE ever comes (the agent must free the call on
  its own: media inactivity timeout / session timer);
* a fuzzed message every ``--fuzz-every`` s: an INVITE or OPTIONS with random bytes
  flipped, cut or repeated, on its own connection;
* a half-sent message every 10 s (headers cut off; the agent's header timeout closes it).

At the end a normal call must still succeed. The report: samples over time, and the
growth from the first sample after warm-up to the last (RSS, descriptors, tasks, streams).

The 30-minute run is by hand (``--minutes 30``, about 31 minutes of wall time); the test
suite does not run this script. A 3-minute run checks the script itself:

    python benchmarks/soak_agent.py [--minutes 30] [--transport tcp|udp] [--idle 50]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


# ------------------------------------------------------------------ the agent process
async def serve(args: argparse.Namespace) -> None:
    from voicelab.agent import Agent
    from voicelab.sip.transport import ConnectionLimits

    limits = ConnectionLimits(max_connections=args.max_connections, idle_timeout=args.idle_timeout,
                              header_timeout=args.header_timeout)
    async with Agent(transport=args.transport, codecs=["pcmu"], mode="echo", speech="harvard",
                     max_calls=args.max_calls, connection_limits=limits) as agent:
        if not args.default_gc:  # as `agent serve` does (voicelab.agent.tune_gc)
            from voicelab.agent import tune_gc

            tune_gc()
        print(json.dumps({"address": list(agent.address), "uri": agent.uri}), flush=True)
        t0 = asyncio.get_running_loop().time()
        while True:
            status = Path("/proc/self/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            sample = {
                "t": round(asyncio.get_running_loop().time() - t0, 1),
                "rss_kb": rss,
                "fds": len(os.listdir("/proc/self/fd")),
                "threads": int(re.search(r"Threads:\s+(\d+)", status).group(1)),
                "tasks": len(asyncio.all_tasks()),
                "streams": len(agent.streams),
                "answered": agent.calls_answered,
                "ended": agent.calls_ended,
                "refused": agent.calls_refused,
                "errors": len(agent.errors),
                "transport": agent.sip.transport.stats.as_dict(),
            }
            print(json.dumps(sample), flush=True)
            await asyncio.sleep(args.sample_s)


# ------------------------------------------------------------------ traffic
class Traffic:
    def __init__(self, host: str, port: int, transport: str, rng: random.Random) -> None:
        self.host, self.port, self.transport, self.rng = host, port, transport, rng
        self.counts = {"calls_ok": 0, "calls_failed": 0, "options_ok": 0, "options_failed": 0, "vanished": 0,
                       "vanish_failed": 0, "fuzzed": 0, "half_sent": 0, "idle_reopened": 0}
        self.n = 0

    def request(self, method: str, *, call_id: str, branch: str, cseq: int = 1, to_tag: str | None = None,
                body: str = "", local_port: int = 5999) -> bytes:
        uri = f"sip:agent@{self.host}:{self.port}"
        tp = "TCP" if self.transport == "tcp" else "UDP"
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (f"{method} {uri};transport={self.transport} SIP/2.0\r\n"
                f"Via: SIP/2.0/{tp} 127.0.0.1:{local_port};branch=z9hG4bK{branch}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:soak@127.0.0.1>;tag=soak{branch}\r\n"
                f"To: <{uri}>{';tag=' + to_tag if to_tag else ''}\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:soak@127.0.0.1:{local_port};transport={self.transport}>\r\n"
                f"{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()

    async def _exchange(self, data: bytes, until: bytes, timeout: float = 5.0) -> bytes:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(data)
            buf = b""
            deadline = asyncio.get_running_loop().time() + timeout
            while until not in buf:
                left = deadline - asyncio.get_running_loop().time()
                chunk = await asyncio.wait_for(reader.read(4096), max(left, 0.01))
                if not chunk:
                    break
                buf += chunk
            return buf
        finally:
            writer.close()

    async def options(self) -> None:
        self.n += 1
        try:
            reply = await self._exchange(self.request("OPTIONS", call_id=f"opt-{self.n}", branch=f"o{self.n}"),
                                         b"\r\n\r\n")
            ok = reply.startswith(b"SIP/2.0 200")
        except (OSError, asyncio.TimeoutError):
            ok = False
        self.counts["options_ok" if ok else "options_failed"] += 1

    async def vanish(self) -> None:
        """INVITE, ACK the 200, drop the connection: no media, no BYE."""
        self.n += 1
        cid, br = f"vanish-{self.n}", f"v{self.n}"
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            local_port = writer.get_extra_info("sockname")[1]
            writer.write(self.request("INVITE", call_id=cid, branch=br, body=SDP.format(port=40000 + self.n % 1000),
                                      local_port=local_port))
            buf = b""
            while not re.search(rb"SIP/2.0 [2-6]\d\d [^\r]*\r\n.*?\r\n\r\n", buf, re.S):  # a final response
                chunk = await asyncio.wait_for(reader.read(4096), 5.0)
                if not chunk:
                    break
                buf += chunk
            m = re.search(rb"SIP/2.0 200.*?\r\nTo: [^\r]*;tag=([^;\r\s]+)", buf, re.S)
            if m is None:
                self.counts["vanish_failed"] += 1
            else:
                writer.write(self.request("ACK", call_id=cid, branch=br + "a", to_tag=m.group(1).decode(),
                                          local_port=local_port))
                await writer.drain()
                self.counts["vanished"] += 1
            writer.transport.abort()  # gone: no BYE, no FIN handshake
        except (OSError, asyncio.TimeoutError):
            self.counts["vanish_failed"] += 1

    async def fuzz(self) -> None:
        self.n += 1
        base = bytearray(self.rng.choice([
            self.request("INVITE", call_id=f"fz-{self.n}", branch=f"f{self.n}", body=SDP.format(port=40000)),
            self.request("OPTIONS", call_id=f"fz-{self.n}", branch=f"f{self.n}"),
        ]))
        for _ in range(self.rng.randint(1, 12)):
            op, i = self.rng.randrange(3), self.rng.randrange(len(base))
            if op == 0:
                base[i] = self.rng.randrange(256)
            elif op == 1:
                del base[i:i + self.rng.randint(1, 40)]
            else:
                base[i:i] = base[i:i + self.rng.randint(1, 200)] * self.rng.randint(1, 20)
        try:
            await self._exchange(bytes(base), b"\r\n\r\n", timeout=0.5)
        except (OSError, asyncio.TimeoutError):
            pass
        self.counts["fuzzed"] += 1

    async def half_sent(self) -> None:
        self.n += 1
        msg = self.request("OPTIONS", call_id=f"half-{self.n}", branch=f"h{self.n}")
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(msg[: len(msg) // 2])
            await asyncio.wait_for(reader.read(1), 120.0)  # the agent's header timeout closes it
            writer.close()
        except (OSError, asyncio.TimeoutError):
            pass
        self.counts["half_sent"] += 1

    async def hold_idle(self, stop: asyncio.Event) -> None:
        """One idle connection, reopened whenever the agent closes it."""
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(1.0)
                continue
            read = asyncio.ensure_future(reader.read(1))
            halt = asyncio.ensure_future(stop.wait())
            await asyncio.wait([read, halt], return_when=asyncio.FIRST_COMPLETED)
            for f in (read, halt):
                f.cancel()
            writer.close()
            if not stop.is_set():
                self.counts["idle_reopened"] += 1

    async def call(self, uri: str) -> bool:
        from voicelab.calls import dial

        try:
            r = await dial(uri, codec="pcmu", seconds=2.0, speech="harvard", transport=self.transport, echo=True)
            ok = r.get("packets_received", 0) > 0
        except Exception as exc:  # noqa: BLE001 - a soak counts failures, it does not stop
            print(f"  call failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            ok = False
        self.counts["calls_ok" if ok else "calls_failed"] += 1
        return ok


async def every(period: float, fn, stop: asyncio.Event) -> None:
    tasks: set[asyncio.Task] = set()
    while not stop.is_set():
        t = asyncio.ensure_future(fn())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        try:
            await asyncio.wait_for(stop.wait(), period)
        except asyncio.TimeoutError:
            pass
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def drive(args: argparse.Namespace) -> dict:
    log_path = Path(args.log)
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--transport", args.transport,
           "--sample-s", str(args.sample_s), "--max-calls", str(args.max_calls),
           "--max-connections", str(args.max_connections), "--idle-timeout", str(args.idle_timeout),
           "--header-timeout", str(args.header_timeout)] + (["--default-gc"] if args.default_gc else [])
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=log)
        samples: list[dict] = []
        try:
            hello = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
            host, port = hello["address"]
            print(f"agent {hello['uri']} (pid {proc.pid}); {args.minutes:g} min of mixed traffic", flush=True)

            async def read_samples() -> None:
                while line := await proc.stdout.readline():
                    s = json.loads(line)
                    samples.append(s)
                    print(f"  t={s['t']:>7.1f} s  rss {s['rss_kb'] / 1024:7.1f} MB  fds {s['fds']:>4}  threads {s.get('threads', 0):>3}  tasks {s['tasks']:>4}  "
                          f"streams {s['streams']:>3}  answered {s['answered']:>4}  refused {s['refused']:>3}  "
                          f"conn refused {s['transport']['refused']:>4}  idle closed {s['transport']['idle_closed']:>4}",
                          flush=True)

            reader = asyncio.ensure_future(read_samples())
            traffic = Traffic(host, port, args.transport, random.Random(args.seed))
            uri = f"sip:agent@{host}:{port};transport={args.transport}"
            stop = asyncio.Event()
            loops = [
                every(args.call_every, lambda: traffic.call(uri), stop),
                every(1.0, traffic.options, stop),
                every(args.vanish_every, traffic.vanish, stop),
                every(args.fuzz_every, traffic.fuzz, stop),
                every(10.0, traffic.half_sent, stop),
            ] + [traffic.hold_idle(stop) for _ in range(args.idle if args.transport != "udp" else 0)]
            runner = asyncio.ensure_future(asyncio.gather(*loops))
            await asyncio.sleep(args.minutes * 60)
            stop.set()
            await asyncio.wait_for(runner, 180)
            final_ok = await traffic.call(uri)
            await asyncio.sleep(args.sample_s * 1.5)  # one more sample after the traffic
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await reader
    text = log_path.read_text(errors="replace")
    warm = next((s for s in samples if s["t"] >= args.warmup_s), samples[0] if samples else None)
    last = samples[-1] if samples else None
    growth = {k: last[k] - warm[k] for k in ("rss_kb", "fds", "threads", "tasks", "streams")} if warm and last else {}
    return {"minutes": args.minutes, "transport": args.transport, "final_call_ok": final_ok,
            "tracebacks_in_agent_log": text.count("Traceback"), "agent_log_lines": len(text.splitlines()),
            "agent_log": str(log_path), "traffic": traffic.counts, "first_after_warmup": warm, "last": last,
            "growth": growth, "samples": samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--transport", default="tcp", choices=["tcp", "udp"])
    ap.add_argument("--idle", type=int, default=50, help="idle connections held open")
    ap.add_argument("--call-every", type=float, default=10.0)
    ap.add_argument("--vanish-every", type=float, default=20.0)
    ap.add_argument("--fuzz-every", type=float, default=0.5)
    ap.add_argument("--sample-s", type=float, default=15.0)
    ap.add_argument("--warmup-s", type=float, default=30.0)
    ap.add_argument("--max-calls", type=int, default=32)
    ap.add_argument("--max-connections", type=int, default=512)
    ap.add_argument("--idle-timeout", type=float, default=60.0)
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default="soak_agent.log", help="the agent's stderr")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--default-gc", action="store_true",
                    help="keep CPython's collector thresholds (default: the agent's, as `agent serve` sets them)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        try:
            asyncio.run(serve(args))
        except KeyboardInterrupt:
            pass
        return 0
    t0 = time.perf_counter()
    rep = asyncio.run(drive(args))
    print(json.dumps({k: v for k, v in rep.items() if k != "samples"}, indent=1))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    ok = rep["final_call_ok"] and rep["tracebacks_in_agent_log"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
