"""Call setup time with any codec: SIPp INVITE -> 200 OK against the agent and baresip.

Usage::

    PYTHONPATH=$PWD python benchmarks/bench_setup.py [--calls 20] [--codecs pcmu,g722,opus]

For each codec a fresh ``voicelab agent serve --mode echo --codecs CODEC`` process and a
fresh auto-answering baresip (the anchor, same run) are called ``--calls`` times, one
call at a time, by SIPp with ``benchmarks/sipp/uac_setup.xml`` offering only that codec.
SIPp's response time 1 (``-trace_rtt``) runs from handing the INVITE to its socket to
receiving the 200 OK. Reported: the first call of the process and the median and p90 of
the rest (ms). Needs sipp (sip-tester) and baresip (baresip-core with its g711, g722
and opus modules). Results: docs/benchmarks.md ("Call setup with any codec").
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sip_load import SIPP_DIR, free_udp_port, percentile  # noqa: E402

#: codec -> (RTP payload type offered, rtpmap, baresip module)
CODECS = {"pcmu": (0, "PCMU/8000", "g711"), "g722": (9, "G722/8000", "g722"), "opus": (111, "opus/48000/2", "opus")}
MODULE_DIRS = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules", "/usr/lib/x86_64-linux-gnu/baresip/modules")
BARESIP_CONFIG = """poll_method epoll
sip_listen 127.0.0.1:{port}
audio_player aubridge,nil
audio_source aufile,{wav}
audio_alert aubridge,nil
module_path {mdir}
module stdio.so
module g711.so
module g722.so
module opus.so
module aufile.so
module aubridge.so
module_app account.so
module_app menu.so
"""


def sipp_setup(port: int, codec: str, calls: int, workdir: Path) -> list[float]:
    for f in glob.glob(str(workdir / "*.csv")):
        os.unlink(f)
    pt, rtpmap, _ = CODECS[codec]
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", str(SIPP_DIR / "uac_setup.xml"), "-s", "bob", "-key", "pt", str(pt),
           "-key", "rtpmap", rtpmap, "-m", str(calls), "-l", "1", "-r", "5", "-d", "200", "-i", "127.0.0.1",
           "-p", str(free_udp_port()), "-nostdin", "-timeout", "120s", "-trace_rtt", "-rtt_freq", "1"]
    subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    out = []
    for f in glob.glob(str(workdir / "*_rtt.csv")):
        for line in Path(f).read_text().splitlines()[1:]:
            parts = line.split(";")
            try:
                out.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                pass
    return [rtt for _, rtt in sorted(out)]  # in call order


def start_agent(port: int, codec: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "voicelab", "agent", "serve", "--sip", f"127.0.0.1:{port}",
                             "--mode", "echo", "--codecs", codec, "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"agent exited {proc.wait()}")
        if "Ctrl-C stops" in line:
            return proc


def start_baresip(port: int, work: Path) -> subprocess.Popen:
    mdir = next((d for d in MODULE_DIRS if Path(d, "g711.so").exists()), None)
    if mdir is None:
        raise SystemExit("baresip modules not found: apt-get install baresip-core")
    conf = work / "baresip"
    conf.mkdir(exist_ok=True)
    wav = conf / "silence.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000 * 5)
    (conf / "config").write_text(BARESIP_CONFIG.format(port=port, wav=wav, mdir=mdir))
    (conf / "accounts").write_text("<sip:bob@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU/8000/1,G722/16000/1,opus/48000/2\n")
    proc = subprocess.Popen(["baresip", "-f", str(conf), "-n", "127.0.0.1"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.5)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def summary(target: str, codec: str, rtts: list[float], calls: int) -> dict:
    rest = rtts[1:]
    return {"target": target, "codec": codec, "answered": len(rtts), "calls": calls,
            "first_ms": rtts[0] if rtts else None, "median_ms": percentile(rest, 50), "p90_ms": percentile(rest, 90)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--codecs", default="pcmu,g722,opus")
    ap.add_argument("--json")
    args = ap.parse_args()
    for tool, pkg in (("sipp", "sip-tester"), ("baresip", "baresip-core")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install {pkg}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-setup-") as tmp:
        work = Path(tmp)
        for codec in [c.strip() for c in args.codecs.split(",") if c.strip()]:
            for target in ("agent", "baresip"):
                port = free_udp_port()
                proc = start_agent(port, codec) if target == "agent" else start_baresip(port, work)
                try:
                    rtts = sipp_setup(port, codec, args.calls, work)
                finally:
                    stop(proc)
                row = summary(target, codec, rtts, args.calls)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
