"""The native media engine (voicelab/rtp/native.py, voicelab/rtp/_mediac.c).

A native thread plays the steady state of G.711 echo streams; Python replays its log
through the stream's own objects and checks every datagram the thread built. These tests
run real sockets on loopback: the engine takes over once a stream is steady, every
irregularity (loss, reordering, a duplicate, RTCP, a foreign source, a marker bit, a
packet of another size) hands the slot back to Python, what reached the wire is exactly
what the stream counted, and an engine that builds a wrong datagram is caught.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from voicelab import audio
from voicelab.rtp import native
from voicelab.rtp.live import LiveAudioStream
from voicelab.rtp.pacer import pacer_for

from .conftest import need


@pytest.fixture(autouse=True)
def _engine_built(request):
    """Skips locally, fails in CI, when the engine was not built (tests of its absence run anyway)."""
    if getattr(request.function, "without_engine_too", False):
        return
    if os.environ.get("VOICELAB_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("VOICELAB_NO_EXTENSIONS is set: the pure-Python path is under test")
    need(native.AVAILABLE, "voicelab.rtp._mediac not built (pip install -e . with gcc, libc6-dev and python3-dev)")

PT, SSRC, FRAME = 0, 0x1234ABCD, 160


def _payload(i: int) -> bytes:
    # mu-law codes without 0x7F (negative zero decodes to 0, which encodes as 0xFF): the
    # agent's echo of a played packet is then the packet's own payload, byte for byte
    return bytes([0x80 + i % 100, 0x80 + i // 100] + [((i * 7 + j) % 120) + 0x80 for j in range(FRAME - 2)])


def _rtp(seq: int, *, marker: bool = False, payload: bytes | None = None, ssrc: int = SSRC) -> bytes:
    body = payload if payload is not None else _payload(seq)
    return (bytes([0x80, (0x80 if marker else 0) | PT]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big") + body)  # fmt: skip


def engine_and_caller(loop, tick_s: float, engine: dict):
    """The loop's pacer with the native engine on (``engine``: :class:`NativeMedia` options, none:
    the defaults) and a caller's non-blocking UDP socket on loopback."""
    pacer = pacer_for(loop)
    pacer.tick_s = tick_s
    if engine:
        pacer.native = native.NativeMedia(loop, **engine)
    assert pacer.enable_native()
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    return pacer, caller


async def _scripted_call(script: list, *, tick_s: float = 0.0, **engine: int):
    """A raw caller socket sends ``script`` (one entry per 20 ms: a list of (datagram,
    from_foreign_socket)) to an echo stream played by the native engine; returns the
    stream, the echo datagrams the caller received and the engine's counters."""
    loop = asyncio.get_running_loop()
    pacer, caller = engine_and_caller(loop, tick_s, engine)
    foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    foreign.bind(("127.0.0.1", 0))
    b = await LiveAudioStream(loop, codec="pcmu", seed=2, cname="agent", remote_addr=caller.getsockname()).open()
    b.send_live("echo")
    received: list[bytes] = []
    loop.add_reader(caller.fileno(), lambda: received.append(caller.recv(2048)))
    t0 = loop.time() + 0.05
    done = loop.create_future()

    def send(k: int) -> None:
        for data, from_foreign in script[k]:
            (foreign if from_foreign else caller).sendto(data, b.local_address)
        if k + 1 < len(script):
            loop.call_at(t0 + 0.02 * (k + 1), send, k + 1)
        else:
            loop.call_at(loop.time() + 0.2, done.set_result, None)  # the last packets play out

    loop.call_at(t0, send, 0)
    try:
        await asyncio.wait_for(done, 20.0)
        stats = pacer.native.stats()
    finally:
        await b.close()
        stats["engine_left"] = pacer.native.engine is not None  # the thread ends with its last stream
        loop.remove_reader(caller.fileno())
        pacer.native.close()
        caller.close()
        foreign.close()
    return b, received, stats


def _echo_indices(received: list[bytes]) -> list[int]:
    """Which caller packets came back, in the order they came back (concealed frames: skipped)."""
    known = {_payload(i): i for i in range(140)}
    return [known[d[12:]] for d in received if len(d) == 12 + FRAME and 200 > d[1] and d[12:] in known]


def test_a_steady_echo_stream_is_played_by_the_engine_and_replayed_exactly():
    script = [[(_rtp(i), False)] for i in range(60)]
    b, received, stats = asyncio.run(_scripted_call(script))
    assert b.native_mismatches == 0
    # the engine played (nearly) every slot once the stream was steady; it handed the
    # stream back once, when the caller stopped
    assert b.native_slots >= 52, (b.native_slots, stats)
    assert b.native_bails == 1 and stats["bails"] == 1 and not stats["engine_left"]
    assert b.stats.outcomes["played"] == 60 and b.jb.stats.late == 0
    # every frame the stream counted as sent reached the caller, once, in sequence
    rtp = [d for d in received if not 192 <= d[1] <= 223]
    seqs = [int.from_bytes(d[2:4], "big") for d in rtp]
    assert len(rtp) == b.stats.frames_sent and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # the echo is the caller's own audio, every packet of it, in order
    assert _echo_indices(received) == list(range(60))
    # Python woke a few times to replay, not 50 times a second
    assert stats["python_wakeups"] <= b.native_slots / 10, stats
    # the send times the stream recorded are the engine's, at the slot
    assert float(np.percentile(np.abs(b.stats.send_lateness_s[-40:]), 50)) < 0.002


def test_every_irregularity_hands_the_slot_back_to_python_and_nothing_is_lost_or_sent_twice():
    # events 18 packets apart: after each hand-back the stream is steady again (and handed
    # over) within about 14 packets
    script = [[(_rtp(i), False)] for i in range(130)]
    script[20] = []  # a loss
    rr = bytes([0x80, 201, 0, 1]) + SSRC.to_bytes(4, "big")  # an empty RTCP receiver report
    script[25].append((rr, False))
    script[38], script[39] = [(_rtp(39), False)], [(_rtp(38), False)]  # reordered (within the buffer)
    script[56] = [(_rtp(56, marker=True), False)]  # a talkspurt marker
    script[74].append((_rtp(74), False))  # a duplicate
    script[92].append((_rtp(92, ssrc=SSRC + 1), True))  # another port and stream (host filter: same host)
    script[110] = [(_rtp(110, payload=_payload(110)[:80]), False)]  # 10 ms in a 20 ms stream (re-framed)
    b, received, stats = asyncio.run(_scripted_call(script))
    assert b.native_mismatches == 0
    # loss, reorder, marker, duplicate, foreign, size: each met by the engine (a loaded machine may delay a
    # hand-over past the next event; which datagrams the engine hands back: the Hypothesis test below)
    assert b.native_bails >= 4, (b.native_bails, stats)
    assert b.native_slots >= 40  # and it came back after each
    # Python's objects saw everything: the loss concealed, the duplicate and the foreign
    # datagram counted, RTCP received
    assert b.jb.stats.duplicates == 1 and b.session.stats.foreign_ssrc_drops == 1 and b.session.stats.rtcp_received == 1
    assert b.stats.outcomes["played"] == 128  # 130 - the loss - the half packet (its slot incomplete)
    assert b.stats.outcomes.get("concealed", 0) >= 2
    rtp = [d for d in received if not 192 <= d[1] <= 223]
    seqs = [int.from_bytes(d[2:4], "big") for d in rtp]
    assert len(rtp) == b.stats.frames_sent and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    back = _echo_indices(received)
    assert back == sorted(back) and len(set(back)) == len(back)
    # the loss (20), the frame after it (cross-faded by the PLC), the half packet (110) and
    # the frame after it are not echoed as they were sent; every other one is
    assert set(range(130)) - set(back) <= {20, 21, 110, 111}, sorted(set(range(130)) - set(back))


def test_an_engine_that_builds_a_wrong_datagram_is_caught_and_python_takes_the_stream_back():
    script = [[(_rtp(i), False)] for i in range(60)]
    tables = native._tables

    def wrong():  # an engine whose G.711 encoder is wrong: every datagram it builds differs
        u_dec, u_enc, a_dec, a_enc = tables()
        return u_dec, bytes(len(u_enc)), a_dec, a_enc

    native._tables = wrong
    try:
        b, received, stats = asyncio.run(_scripted_call(script))
    finally:
        native._tables = tables
    assert b.native_mismatches == 1  # caught at the first replay; never handed over again
    assert b.stats.outcomes["played"] == 60
    rtp = [d for d in received if not 192 <= d[1] <= 223]
    assert len(rtp) == b.stats.frames_sent
    # after the replay noticed, Python's own (right) echo went out
    assert _echo_indices(received)[-10:] == list(range(50, 60))


def test_a_stream_whose_log_python_does_not_take_goes_back_to_python():
    """The thread stops playing a stream after ``stale_slots`` slots without a replay (a
    stalled loop, a stream dropped unclosed); Python plays on from the next slot."""
    script = [[(_rtp(i), False)] for i in range(60)]
    b, received, stats = asyncio.run(_scripted_call(script, threshold_slots=10_000, stale_slots=15))
    assert stats["bails"] >= 2 and b.native_mismatches == 0  # handed back, over again, back again...
    assert 15 <= b.native_slots <= 60 - 10
    assert b.stats.outcomes["played"] == 60
    rtp = [d for d in received if not 192 <= d[1] <= 223]
    assert len(rtp) == b.stats.frames_sent and _echo_indices(received) == list(range(60))


async def _speech_to_an_echo(loop):
    """A caller stream sending 3 s of speech to an echo stream, the engine on: (pacer, caller, echo, t0)."""
    pacer = pacer_for(loop)
    assert pacer.enable_native()
    x = np.asarray(audio.example("harvard", sample_rate=16000).samples)[: 3 * 16000]
    a = await LiveAudioStream(loop, codec="pcmu", seed=1, cname="caller").open()
    b = await LiveAudioStream(loop, codec="pcmu", seed=2, cname="agent").open()
    a.set_remote(b.local_address)
    b.set_remote(a.local_address)
    t0 = a.send(x, 16000)
    b.send_live("echo")
    return pacer, a, b, t0


def test_closing_a_stream_mid_call_keeps_everything_the_engine_did():
    async def run():
        loop = asyncio.get_running_loop()
        pacer, a, b, t0 = await _speech_to_an_echo(loop)
        end = loop.create_future()
        loop.call_at(t0 + 1.5, end.set_result, None)  # mid-speech, mid-log
        await end
        in_engine = b._native is not None
        await b.close()
        await a.close()
        pacer.native.close()
        return a, b, in_engine, t0

    a, b, in_engine, t0 = asyncio.run(run())
    assert in_engine and b.native_mismatches == 0 and b.native_slots >= 40
    recv, t_recv = b.received_audio()
    slots = sum(b.stats.outcomes.values())
    assert len(recv) == slots * FRAME  # one frame per slot played, the engine's included
    assert b.stats.frames_sent == len(b.sent_audio()[0]) // FRAME
    assert t_recv + slots * 0.020 >= t0 + 1.5 - 0.1  # played up to the close


def test_a_new_remote_address_mid_call_takes_the_stream_back_and_media_follows_it():
    """set_remote (a re-INVITE moving the media) while the engine plays: nothing more goes to the old address."""
    async def run():
        loop = asyncio.get_running_loop()
        new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        new.bind(("127.0.0.1", 0))
        new.setblocking(False)
        moved: list[bytes] = []
        loop.add_reader(new.fileno(), lambda: moved.append(new.recv(2048)))
        pacer, a, b, t0 = await _speech_to_an_echo(loop)
        mid = loop.create_future()
        loop.call_at(t0 + 1.5, mid.set_result, None)
        await mid
        in_engine = b._native is not None
        b.set_remote(new.getsockname())
        detached = b._native is None
        sent_before = b.stats.frames_sent  # the engine's sends replayed by the hand-back, all to the old address
        end = loop.create_future()
        loop.call_at(loop.time() + 0.5, end.set_result, None)
        await end
        await b.close()
        await a.close()
        pacer.native.close()
        loop.remove_reader(new.fileno())
        new.close()
        return b, in_engine, detached, sent_before, moved

    b, in_engine, detached, sent_before, moved = asyncio.run(run())
    assert in_engine and detached and b.native_mismatches == 0
    rtp = [d for d in moved if not 192 <= d[1] <= 223]
    # every frame sent after the move went to the new address (RTCP follows too), none was lost on the way
    assert len(rtp) == b.stats.frames_sent - sent_before >= 20, (len(rtp), b.stats.frames_sent, sent_before)


def test_the_engine_is_off_where_it_cannot_keep_time_or_is_not_built():
    from voicelab.net.vclock import VirtualClockLoop

    loop = VirtualClockLoop()
    try:
        assert pacer_for(loop).enable_native() is False and pacer_for(loop).native is None
    finally:
        loop.close()
    code = "from voicelab.rtp import native; print(native.AVAILABLE)"
    env = dict(os.environ, VOICELAB_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


test_the_engine_is_off_where_it_cannot_keep_time_or_is_not_built.without_engine_too = True  # type: ignore[attr-defined]


def test_the_engine_refuses_bad_stream_parameters_with_a_clear_error():
    e = native._mediac.Engine(*native._tables())
    try:
        good = dict(rx_fd=0, tx_fd=0, dst=("127.0.0.1", 9), src=("127.0.0.1", 9), payload_type=0, ssrc=1, next_seq=0,
                    next_timestamp=0, timestamp_increment=160, law=0, frame_bytes=160, play_start=0.0, frame_ms=20.0,
                    k=0, prev=bytes(172), queue=[], threshold=25, stamps=True, offset=0.0)
        for bad in (dict(prev=bytes(100)), dict(law=2), dict(frame_bytes=4096), dict(dst=("::1", 9)),
                    dict(queue=[(1, 160, bytes(80), 0.0)]), dict(threshold=0)):
            with pytest.raises(ValueError):
                e.add(**{**good, **bad})
        assert e.drain(12345) == [] and e.remove(12345) == []
        with pytest.raises(ValueError):
            native._mediac.Engine(b"", b"", b"", b"")
    finally:
        e.close()


def test_the_agent_echoes_a_sip_call_through_the_engine_as_it_does_in_python(natural_env):
    """`agent serve --native-media`: the same echo as the Python path (delay, quality), the
    engine playing most slots, every datagram it built matched by the replay."""
    from voicelab.agent import Agent
    from voicelab.calls import dial

    from .conftest import run_clean

    async def main():
        pacer = pacer_for(asyncio.get_running_loop())  # the caller shares the loop; its stream is not an echo
        assert pacer.enable_native()
        try:
            async with Agent(codecs=["pcmu"], mode="echo", jitter_buffer="fixed:60") as agent:
                r = await dial(agent.uri, codec="pcmu", seconds=3.0, echo=True, jitter_buffer="fixed:60")
                await asyncio.wait_for(agent.ended(1), 5.0)
                kept = list(agent.media_stats.values())
        finally:
            pacer.native.close()
        return r, kept

    r, kept = run_clean(main, timeout=60.0)
    # as test_agent.py's echo test: 20 + 60 + 20 + 60 ms (+ the wake-up latency of the caller's clock)
    assert 160.0 - 1.0 <= r["echo_delay_ms"] <= 160.0 + 10.0, r["echo_delay_ms"]
    assert r["echo_pesq_nb"] >= 4.0, r["echo_pesq_nb"]
    assert len(kept) == 1 and kept[0]["native_mismatches"] == 0
    assert kept[0]["native_slots"] >= 120, kept[0]  # of ~150 slots of speech


@pytest.mark.parametrize("flag", [None, "--no-native-media"])
def test_agent_serve_plays_echo_calls_natively_by_default(flag, natural_env):
    """`voicelab agent serve` uses the engine for echo calls unless told not to, and says so;
    a call through it echoes as the Python path does."""
    from voicelab.calls import dial

    banner, r, err = serve_and_dial(["--mode", "echo"] + ([flag] if flag else []), dial, codec="pcmu", seconds=2.0,
                                    echo=True, jitter_buffer="fixed:60")
    assert ("native media engine" in banner) == (flag is None), banner
    assert 160.0 - 1.0 <= r["echo_delay_ms"] <= 160.0 + 10.0, r["echo_delay_ms"]
    assert r["echo_pesq_nb"] >= 4.0, r["echo_pesq_nb"]


def serve_and_dial(options: list, dial, **call) -> tuple[str, dict, str]:
    """Start `voicelab agent serve OPTIONS`, wait until it serves (its banner, no sleeps), make one
    call (``dial(uri, **call)``), stop it with SIGTERM; (banner, the call's result, stderr).
    Fails on a non-zero exit or a traceback."""
    import signal
    from pathlib import Path

    from voicelab.net.iface import free_port

    port = free_port(kind="udp")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-m", "voicelab", "agent", "serve", "--sip", f"127.0.0.1:{port}", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        banner = ""
        for line in proc.stdout:  # wait until it serves (no sleeps)
            banner += line
            if "Ctrl-C stops" in line:
                break
        assert proc.poll() is None, proc.stderr.read()
        r = asyncio.run(dial(f"sip:agent@127.0.0.1:{port}", **call))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err, err
    return banner, r, err


def _steady_rule(d: bytes, seq: int, ts: int) -> bool:
    """The documented hand-over rule for one datagram: the next packet of the sequence, as is."""
    return (len(d) == 12 + FRAME and d[0] == 0x80 and d[1] == PT and int.from_bytes(d[2:4], "big") == seq
            and int.from_bytes(d[4:8], "big") == ts and int.from_bytes(d[8:12], "big") == SSRC)  # fmt: skip


def _engine_verdict(e, rx, tx, peer, datagram: bytes, seq: int, ts: int) -> list:
    """One slot of a fresh stream in the engine with ``datagram`` waiting: the log's kinds."""
    import select

    peer.sendto(datagram, rx.getsockname())  # waiting in the socket before the stream's first slot
    sid = e.add(rx_fd=rx.fileno(), tx_fd=tx.fileno(), dst=peer.getsockname(), src=peer.getsockname(), payload_type=PT,
                ssrc=SSRC, next_seq=seq, next_timestamp=ts, timestamp_increment=160, law=0, frame_bytes=FRAME,
                play_start=e.now() + 0.004, frame_ms=1.0, k=0, prev=_rtp(0), queue=[], threshold=1, stamps=True,
                offset=0.0)  # fmt: skip
    kinds: list = []
    while not kinds or kinds[-1] not in ("p", "b"):
        assert select.select([e.fileno()], [], [], 5.0)[0], "the engine did not play the slot"
        e.ack()
        kinds += [r[0] for r in e.drain(sid)]
    e.remove(sid)  # (1 ms slots: the slots after the first may be in the log too)
    while True:  # what the engine did not read (it stops at a datagram it hands back) is not the next example's
        try:
            rx.recv(65536)
        except BlockingIOError:
            break
    try:  # the echo sent to the peer
        while True:
            peer.recv(65536)
    except BlockingIOError:
        pass
    return kinds


def test_the_engine_plays_exactly_the_datagrams_the_rule_allows():
    """Hypothesis: any datagram, from the expected source, waiting at a slot: the engine plays
    it iff it is the next packet of the sequence as is; anything else is logged and handed back."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    e = native._mediac.Engine(*native._tables())
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    rx, tx, peer = socks
    rx.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS, as the stream sets it

    good = _rtp(7)
    mutated = st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)).map(
        lambda m: good[: m[0]] + bytes([m[1]]) + good[m[0] + 1 :])
    cut = st.integers(0, len(good) + 20).map(lambda n: (good + bytes(20))[:n])
    datagrams = st.one_of(st.just(good), mutated, cut, st.binary(min_size=0, max_size=300))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(datagrams)
    def check(d):
        kinds = _engine_verdict(e, rx, tx, peer, d, 7, 7 * 160)
        assert kinds[:2] == ["s", "a"], kinds  # sent the previous datagram, read this one
        verdict = next(k for k in kinds if k in ("p", "b"))  # on the slot it was read in
        assert verdict == ("p" if _steady_rule(d, 7, 7 * 160) else "b"), (d.hex(), kinds)

    try:
        check()
        assert _engine_verdict(e, rx, tx, peer, good, 7, 7 * 160)[2] == "p"  # the rule's one yes, once more
    finally:
        e.close()
        for s in socks:
            s.close()
