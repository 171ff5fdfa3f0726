"""The native media engine in queue mode: the agent's play (a prompt) and record (silence) streams.

Their outgoing frames do not depend on what arrives: Python queues the next datagrams in
the engine, which sends one per send slot while it plays the caller's packets as it does
for an echo; the replay builds each frame again through the stream's own objects and
checks the engine sent exactly that. These tests run real sockets on loopback.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from voicelab import codecs
from voicelab.audio import to_int16
from voicelab.rtp import native
from voicelab.rtp.live import LiveAudioStream
from voicelab.rtp.pacer import pacer_for

from .conftest import need
from .test_rtp_native import FRAME, _rtp, engine_and_caller, serve_and_dial


@pytest.fixture(autouse=True)
def _engine_built():
    """Skips locally, fails in CI, when the engine was not built."""
    if os.environ.get("VOICELAB_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("VOICELAB_NO_EXTENSIONS is set: the pure-Python path is under test")
    need(native.AVAILABLE, "voicelab.rtp._mediac not built (pip install -e . with gcc, libc6-dev and python3-dev)")


def _prompt(seconds: float, seed: int = 5) -> np.ndarray:
    """A prompt at 8 kHz (no resampling): noise shaped so that every frame differs."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    return 0.3 * np.sin(np.arange(n) * 0.05) * rng.uniform(0.2, 1.0, n)


async def _play_call(script: list, *, prompt_s: float | None = 1.0, tail_s: float = 0.2, then: tuple | None = None,
                     **engine: int):
    """A raw caller socket sends ``script`` (one entry per 20 ms: a list of datagrams) to a
    play stream (``prompt_s`` of prompt; None: a recording stream sending silence);
    returns the stream, the datagrams the caller received and the engine's counters."""
    loop = asyncio.get_running_loop()
    pacer, caller = engine_and_caller(loop, 0.0, engine)
    b = await LiveAudioStream(loop, codec="pcmu", seed=2, cname="agent", remote_addr=caller.getsockname()).open()
    if prompt_s is None:
        b.send_live("silence")
    else:
        b.send(_prompt(prompt_s), 8000)
    received: list[bytes] = []
    loop.add_reader(caller.fileno(), lambda: received.append(caller.recv(2048)))
    t0 = loop.time() + 0.03
    done = loop.create_future()

    def send(k: int) -> None:
        for data in script[k]:
            caller.sendto(data, b.local_address)
        if k + 1 < len(script):
            loop.call_at(t0 + 0.02 * (k + 1), send, k + 1)
        else:
            loop.call_at(loop.time() + tail_s, done.set_result, None)  # the last packets play out

    loop.call_at(t0, send, 0)
    if then is not None:  # (seconds after the caller's start, callable(stream))
        loop.call_at(t0 + then[0], then[1], b)
    try:
        await asyncio.wait_for(done, 20.0)
        stats = pacer.native.stats()
    finally:
        await b.close()
        stats["engine_left"] = pacer.native.engine is not None
        loop.remove_reader(caller.fileno())
        pacer.native.close()
        caller.close()
    return b, received, stats


def _media(received: list[bytes]) -> list[bytes]:
    return [d for d in received if not 192 <= d[1] <= 223]


def _expected_prompt(b: LiveAudioStream) -> list[bytes]:
    """The prompt's frames as the Python path encodes them."""
    F = b.tx.frame_samples
    return [b.tx.encode(b._source[k * F:(k + 1) * F]) for k in range(len(b._source) // F)]


def test_a_steady_play_stream_is_served_by_the_engine_and_every_frame_is_sent_once_in_order():
    script = [[_rtp(i)] for i in range(80)]  # 1.6 s of caller; the 1 s prompt ends mid-call
    b, received, stats = asyncio.run(_play_call(script, prompt_s=1.0))
    assert b.native_mismatches == 0
    assert b.native_slots >= 70, (b.native_slots, stats)
    assert b.native_bails == 1 and not stats["engine_left"]  # handed back once: when the caller stopped
    # the prompt: every frame sent once, in order, as the Python path encodes it; nothing after it
    rtp = _media(received)
    assert [d[12:] for d in rtp] == _expected_prompt(b)
    seqs = [int.from_bytes(d[2:4], "big") for d in rtp]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(rtp) == b.stats.frames_sent == 50
    assert b.sending_done.done()  # the prompt's end, seen through the replay
    # the engine sent most of it, at its send slots
    assert stats["sends"] >= 35, stats
    assert float(np.percentile(np.abs(b.stats.send_lateness_s[-30:]), 50)) < 0.002
    # the caller's audio recorded as on the Python path: every packet played, in its slot
    assert b.stats.outcomes["played"] == 80 and b.jb.stats.late == 0
    recv, _ = b.received_audio()
    dec = codecs.get("pcmu")
    expect = np.concatenate([dec.decode(_rtp(i)[12:]) for i in range(80)])
    np.testing.assert_array_equal((recv * 32768).round().astype(np.int16)[: len(expect)], expect)
    assert stats["python_wakeups"] <= b.native_slots / 10, stats


def test_a_recording_stream_sends_silence_through_the_engine():
    script = [[_rtp(i)] for i in range(60)]
    b, received, stats = asyncio.run(_play_call(script, prompt_s=None))
    assert b.native_mismatches == 0 and b.native_slots >= 50
    rtp = _media(received)
    silence = b.tx.encode(np.zeros(FRAME, dtype=np.int16))
    assert len(rtp) == b.stats.frames_sent and all(d[12:] == silence for d in rtp)
    seqs = [int.from_bytes(d[2:4], "big") for d in rtp]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_irregular_arrivals_hand_a_play_stream_back_and_nothing_is_lost_or_sent_twice():
    script = [[_rtp(i)] for i in range(110)]
    script[20] = []  # a loss
    script[40], script[41] = [_rtp(41)], [_rtp(40)]  # reordered
    script[62].append(_rtp(62))  # a duplicate
    script[85] = [_rtp(85, marker=True)]
    b, received, stats = asyncio.run(_play_call(script, prompt_s=2.0))
    assert b.native_mismatches == 0
    assert b.native_bails >= 3 and b.native_slots >= 40, (b.native_bails, b.native_slots, stats)
    rtp = _media(received)
    assert [d[12:] for d in rtp] == _expected_prompt(b) and len(rtp) == b.stats.frames_sent == 100
    seqs = [int.from_bytes(d[2:4], "big") for d in rtp]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert b.jb.stats.duplicates == 1 and b.stats.outcomes["played"] == 109


def test_a_send_queue_that_runs_dry_hands_the_stream_back_and_python_sends_on():
    """Python stalls past the queue (threshold far away, no top-up): the engine stops at the
    first send slot it has nothing for; Python sends the rest, none twice, none lost."""
    import voicelab.rtp.live as live

    script = [[_rtp(i)] for i in range(90)]
    keep = live._NATIVE_TX_QUEUE
    live._NATIVE_TX_QUEUE = 10  # the engine gets 10 datagrams at each hand-over, never more
    try:
        b, received, stats = asyncio.run(_play_call(script, prompt_s=1.6, threshold_slots=10_000))
    finally:
        live._NATIVE_TX_QUEUE = keep
    assert b.native_mismatches == 0 and b.native_bails >= 2 and stats["sends"] >= 20, (b.native_bails, stats)
    rtp = _media(received)
    assert [d[12:] for d in rtp] == _expected_prompt(b) and len(rtp) == b.stats.frames_sent == 80
    seqs = [int.from_bytes(d[2:4], "big") for d in rtp]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert b.stats.outcomes["played"] == 90


def test_an_engine_that_sends_a_wrong_datagram_is_caught_and_python_takes_the_stream_back():
    script = [[_rtp(i)] for i in range(80)]
    frames = LiveAudioStream._native_tx_frames

    def wrong(self, start, stop):  # queued datagrams whose last payload byte is off by one
        return [d[:-1] + bytes([(d[-1] + 1) & 0xFF]) for d in frames(self, start, stop)]

    LiveAudioStream._native_tx_frames = wrong
    try:
        b, received, stats = asyncio.run(_play_call(script, prompt_s=1.4))
    finally:
        LiveAudioStream._native_tx_frames = frames
    assert b.native_mismatches == 1  # caught at the first replay; never handed over again
    rtp = _media(received)
    assert len(rtp) == b.stats.frames_sent == 70
    good = _expected_prompt(b)
    # after the replay noticed, Python's own (right) frames went out
    assert [d[12:] for d in rtp][-20:] == good[-20:]
    assert sum(d[12:] != g for d, g in zip(rtp, good)) >= 1  # (what the wrong engine sent is on the wire)


def _prompt_heard(received: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    """What the caller heard of the agent's prompt, from its first sound on (int16)."""
    x = (np.asarray(received) * 32768).round().astype(np.int16)
    nz = np.flatnonzero(np.abs(x) > 0)
    assert len(nz) and len(x) - nz[0] >= seconds * 8000, "the caller heard too little of the prompt"
    return x[nz[0]: nz[0] + int(seconds * 8000)]


def test_the_agent_plays_its_prompt_through_the_engine_as_it_does_in_python(natural_env):
    """An agent in play mode (the default): the engine serves the call, every datagram
    matched by the replay, and the caller hears the very same prompt as from the Python path."""
    from voicelab.agent import Agent
    from voicelab.calls import dial

    from .conftest import run_clean

    async def main(use_engine: bool):
        pacer = pacer_for(asyncio.get_running_loop())
        if use_engine:
            assert pacer.enable_native()
        else:
            pacer.disable_native()
        try:
            async with Agent(codecs=["pcmu"], mode="play", jitter_buffer="fixed:60") as agent:
                r = await dial(agent.uri, codec="pcmu", seconds=2.0, jitter_buffer="fixed:60")
                await asyncio.wait_for(agent.ended(1), 5.0)
                kept = list(agent.media_stats.values())
        finally:
            if pacer.native is not None:
                pacer.native.close()
        return r, kept

    r_native, kept = run_clean(lambda: main(True), timeout=60.0)
    r_python, kept_py = run_clean(lambda: main(False), timeout=60.0)
    assert len(kept) == 1 and kept[0]["native_mismatches"] == 0
    assert kept[0]["native_slots"] >= 70, kept[0]  # of ~100 slots
    assert kept_py[0]["native_slots"] == 0
    np.testing.assert_array_equal(_prompt_heard(r_native["received"]), _prompt_heard(r_python["received"]))
    # and the agent recorded the caller alike (same speech, every packet played)
    assert kept[0]["outcomes"].get("played", 0) >= 85 and kept_py[0]["outcomes"].get("played", 0) >= 85


def test_agent_serve_plays_its_prompt_natively_unless_told_not_to(natural_env):
    """`voicelab agent serve` (play mode, the default) with and without --no-native-media:
    the banner says which, and the caller hears the same prompt."""
    from voicelab.calls import dial

    heard = {}
    for flag in (None, "--no-native-media"):
        banner, r, _ = serve_and_dial([flag] if flag else [], dial, codec="pcmu", seconds=1.6, jitter_buffer="fixed:60")
        assert "mode play" in banner and ("native media engine" in banner) == (flag is None), banner
        heard[flag] = _prompt_heard(r["received"])
    np.testing.assert_array_equal(heard[None], heard["--no-native-media"])


def test_a_new_prompt_mid_call_takes_the_stream_back_first_and_nothing_is_sent_twice():
    script = [[_rtp(i)] for i in range(80)]
    seen = {}

    def new_prompt(b):
        seen["native"] = b._native is not None
        b.send(_prompt(0.4, seed=9), 8000)

    b, received, stats = asyncio.run(_play_call(script, prompt_s=2.0, then=(1.0, new_prompt)))
    assert seen["native"] and b.native_mismatches == 0
    rtp = _media(received)
    first = [b.tx.encode(f) for f in np.split(to_int16(_prompt(2.0)), 100)]
    second = _expected_prompt(b)  # the new source
    n1 = len(rtp) - len(second)
    assert [d[12:] for d in rtp] == first[:n1] + second and n1 >= 45
    seqs = [int.from_bytes(d[2:4], "big") for d in rtp]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(rtp) == b.stats.frames_sent


def test_the_engine_refuses_a_bad_send_queue_with_a_clear_error():
    e = native._mediac.Engine(*native._tables())
    try:
        good = dict(rx_fd=0, tx_fd=0, dst=("127.0.0.1", 9), src=("127.0.0.1", 9), payload_type=0, ssrc=1, next_seq=0,
                    next_timestamp=0, timestamp_increment=160, law=0, frame_bytes=160, play_start=e.now() + 3600.0,
                    frame_ms=20.0, k=0, prev=bytes(172), queue=[], threshold=25, stamps=True, offset=0.0,
                    send_t0=e.now() + 3600.0, send_k=0, tx_end=False)
        for bad in ([bytes(172)] * 129, [bytes(11)], [bytes(12 + 481)], ["text"], 5):
            with pytest.raises((ValueError, TypeError)):
                e.add(**good, txq=bad)
        sid = e.add(**good, txq=[bytes(172)] * 100)  # due in an hour: nothing is sent here
        assert e.feed(sid, [bytes(172)] * 28, False) is True
        with pytest.raises(ValueError):
            e.feed(sid, [bytes(172)], False)  # 128 queued: no room
        assert e.feed(12345, [], True) is False  # no such stream
        assert e.remove(sid) == [] and e.feed(sid, [], True) is False
    finally:
        e.close()
