"""The agent hears frames as they arrive (ArrivalTap) and recognises off the loop (ThreadedRecognizer)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab import codecs
from voicelab.errors import ParameterError
from voicelab.pipeline import Pipeline
from voicelab.pipeline.respond import LlmLatencyModel, ScriptedResponder
from voicelab.rtp.tap import ArrivalTap, feed_on_arrival

F = 160  # PCMU, 20 ms


def _pcmu():
    return codecs.get("pcmu")


def _payload(k: int) -> bytes:
    """A frame whose samples say which frame it is (k * 100, mu-law encoded)."""
    return _pcmu().encode(np.full(F, (k % 300) * 100, dtype=np.int16))


def _level(frame) -> int:
    return int(round(np.median(frame.pcm) / 100.0))


def test_in_order_frames_are_released_at_their_arrival():
    tap = ArrivalTap(_pcmu(), window=2)
    for k in range(5):
        out = tap.push(1000 + k, _payload(k), 0.02 * k + 0.003)
        assert len(out) == 1 and out[0].seq == 1000 + k and out[0].t == out[0].arrival == 0.02 * k + 0.003
        assert abs(_level(out[0]) - k) <= 1
    assert tap.stats.concealed == 0 and tap.stats.max_wait_s == 0.0


def test_a_reordered_packet_waits_only_for_the_missing_one():
    tap = ArrivalTap(_pcmu(), window=2)
    assert len(tap.push(0, _payload(0), 0.00)) == 1
    assert tap.push(2, _payload(2), 0.02) == []  # 1 is missing: 2 waits
    out = tap.push(1, _payload(1), 0.025)  # 1 arrives 5 ms later: both go
    assert [f.seq for f in out] == [1, 2] and [f.t for f in out] == [0.025, 0.025]
    assert tap.stats.max_wait_s == pytest.approx(0.005)


def test_a_lost_packet_is_concealed_after_the_window_and_a_late_one_dropped():
    tap = ArrivalTap(_pcmu(), window=2)
    tap.push(0, _payload(0), 0.0)
    assert tap.push(2, _payload(2), 0.04) == [] and tap.push(3, _payload(3), 0.06) == []
    out = tap.push(4, _payload(4), 0.08)  # three held > window: 1 is a loss
    assert [f.kind for f in out] == ["concealed", "frame", "frame", "frame"] and [f.seq for f in out] == [None, 2, 3, 4]
    assert all(len(f.pcm) == F for f in out)
    assert tap.push(1, _payload(1), 0.09) == [] and tap.stats.late == 1  # too late: already concealed
    assert tap.push(4, _payload(4), 0.1) == [] and tap.stats.late == 2


def test_a_jump_is_a_resync_not_a_second_of_concealment():
    tap = ArrivalTap(_pcmu(), window=2, max_gap=50)
    tap.push(10, _payload(0), 0.0)
    out = tap.push(10 + 1000, _payload(1), 0.02)
    assert [f.seq for f in out] == [1010] and tap.stats.resyncs == 1 and tap.stats.concealed == 0


def test_sequence_numbers_wrap():
    tap = ArrivalTap(_pcmu(), window=2)
    seqs = [65534, 65535, 0, 1]
    assert [f.seq for k, s in enumerate(seqs) for f in tap.push(s, _payload(k), k * 0.02)] == seqs


def test_bad_window_is_a_one_line_error():
    with pytest.raises(ParameterError, match="reorder window"):
        ArrivalTap(_pcmu(), window=-1)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 65535), st.lists(st.floats(0.0, 2.999), min_size=4, max_size=40))
def test_any_arrival_order_within_the_window_gives_every_frame_once_in_order(first, delays):
    """Packet k arriving at k + d_k frame times (d_k < window + 1: at most ``window`` later
    packets overtake it) comes out complete and in order, nothing concealed."""
    tap = ArrivalTap(_pcmu(), window=2)
    arrivals = sorted([(-1.0, 0)] + [(k + d, k) for k, d in enumerate(delays, start=1)])  # the first sets the start
    got = [f.seq for t, k in arrivals for f in tap.push((first + k) & 0xFFFF, _payload(k), 0.02 * max(t, 0.0))]
    assert got == [(first + k) & 0xFFFF for k in range(len(delays) + 1)]
    assert tap.stats.concealed == 0 and tap.stats.late == 0


class _Listener:
    frame_s = 0.02

    def __init__(self):
        self.fed = []

    def feed(self, frame, now):
        self.fed.append(now)


def test_frames_released_together_are_laid_end_to_end_ending_at_the_release():
    tap, lis = ArrivalTap(_pcmu(), window=2), _Listener()
    on = feed_on_arrival(lis)
    on(tap.push(0, _payload(0), 1.000))
    tap.push(2, _payload(2), 1.040)
    on(tap.push(1, _payload(1), 1.045))  # 1 and 2 released at 1.045
    assert lis.fed == pytest.approx([0.980, 1.005, 1.025])
    stopped = feed_on_arrival(lis, active=lambda: False)
    stopped(tap.push(3, _payload(3), 1.06))
    assert len(lis.fed) == 3


# ----------------------------------------------------------------------------- recognition off the loop
class _PendingRecognizer:
    """A recogniser whose final comes back when the test says (as a worker process's would)."""

    def __init__(self):
        from concurrent.futures import Future

        self.fut = Future()
        self.closed = False

    def start(self):
        pass

    def feed(self, pcm):
        pass

    def partial(self):
        return ""

    def final_async(self):
        return self.fut

    def close(self):
        self.closed = True


class _LevelVad:
    def probability(self, pcm):
        return 1.0 if np.abs(pcm).max() > 0 else 0.0

    def reset(self):
        pass


def _talk(p, pattern, clock=None):
    for k, talking in enumerate(pattern):
        if clock is not None:
            clock[0] = k * 0.02
        p.feed(np.full(320, 500 if talking else 0, np.int16), k * 0.02)
        p.next_frame((k + 1) * 0.02)


def test_the_turn_waits_for_the_worker_s_final_and_stamps_it_when_it_came_back():
    clock = [0.0]
    asr = _PendingRecognizer()
    p = Pipeline(sample_rate=16000, vad=_LevelVad(), recognizer=asr, clock=lambda: clock[0],
                 responder=ScriptedResponder(LlmLatencyModel(0.1, 0.0, 50.0)))  # fmt: skip
    _talk(p, [True] * 20 + [False] * 20, clock)  # 0.4 s of "speech", then the end of utterance
    assert p.state == "thinking" and p.turn.speech_end is not None and p.turn.asr_final is None  # the loop went on
    asr.fut.set_result(("hello there", p.turn.speech_end + 0.25))  # back 250 ms after the end of utterance
    p.next_frame(p.turn.speech_end + 0.26)
    assert p.turn.text == "hello there" and p.turn.asr_final == pytest.approx(p.turn.speech_end + 0.25)
    p.next_frame(p.turn.asr_final + 0.2)
    assert p.turn.llm_first_token == pytest.approx(p.turn.asr_final + 0.1)
    p.close(10.0)
    assert asr.closed


def test_a_barge_in_drops_the_pending_final():
    asr = _PendingRecognizer()
    p = Pipeline(sample_rate=16000, vad=_LevelVad(), recognizer=asr, responder=ScriptedResponder(LlmLatencyModel(0.1, 0.0, 50.0)))
    _talk(p, [True] * 10 + [False] * 16 + [True] * 10)
    assert p.state == "hearing" and p.turns[0].reason == "interrupted_before_reply" and p._final_fut is None
    assert asr.fut.cancelled()
    p.close(1.0)


def test_the_worker_process_recognises_what_the_inline_recogniser_does_without_holding_the_caller():
    import asyncio
    import time

    from voicelab import audio
    from voicelab.audio.espeak import synthesize
    from voicelab.pipeline.asr import PocketSphinxRecognizer, ProcessRecognizer

    x = audio.to_int16(synthesize("Will we ever forget it?", sample_rate=16000))
    t0 = time.perf_counter()
    ref = PocketSphinxRecognizer(16000)
    ref.start()
    for i in range(0, len(x), 320):
        ref.feed(x[i : i + 320])
    want = ref.final()
    inline_s = time.perf_counter() - t0

    async def run():
        loop = asyncio.get_running_loop()
        r = ProcessRecognizer(clock=loop.time)
        try:
            c0 = time.perf_counter()
            r.start()
            for i in range(0, len(x), 320):
                r.feed(x[i : i + 320])
            fut = asyncio.wrap_future(r.final_async())
            held_s = time.perf_counter() - c0  # what the loop spent: queueing only
            t_asked = loop.time()
            text, done_at = await asyncio.wait_for(fut, 30.0)
            return text, done_at - t_asked, held_s
        finally:
            r.close()

    text, waited, held = asyncio.run(run())
    assert text == want and waited > 0
    assert held < inline_s / 2, (held, inline_s)  # the decoding happened elsewhere


def test_build_picks_the_worker_process_on_a_real_loop_and_inline_under_the_virtual_clock():
    import asyncio

    from voicelab.net.vclock import run_virtual
    from voicelab.pipeline.core import PipelineConfig

    async def kinds():
        loop = asyncio.get_running_loop()
        p = PipelineConfig().build(8000, clock=loop.time)
        kind = (type(p.asr).__name__, type(p.tts).__name__)
        p.close(loop.time())
        q = PipelineConfig(asr_process=False, tts_thread=False).build(8000, clock=loop.time)
        forced = (type(q.asr).__name__, type(q.tts).__name__)
        q.close(loop.time())
        return kind, forced

    # real time: recognition in a worker process, synthesis in a thread; the virtual clock:
    # both inline (deterministic); either can be forced inline
    assert asyncio.run(kinds()) == (("ProcessRecognizer", "ThreadedTts"), ("PocketSphinxRecognizer", "EspeakTts"))
    assert run_virtual(kinds()) == (("PocketSphinxRecognizer", "EspeakTts"), ("PocketSphinxRecognizer", "EspeakTts"))


def test_the_recognisers_worker_imports_only_what_it_needs():
    """The worker (``python -m voicelab.pipeline.asr_worker``) imports ``voicelab.pipeline.asr``:
    not the pipeline's core, not ``voicelab.audio`` and scipy (0.75 s of the worker's start-up
    before), while ``from voicelab.pipeline import Pipeline`` still works."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, runpy; import voicelab.pipeline.asr_worker; "
            "print(sorted(m for m in ('voicelab.audio', 'scipy', 'voicelab.pipeline.core', 'soxr') if m in sys.modules)); "
            "from voicelab.pipeline import Pipeline, PipelineConfig, wer; print(Pipeline.__module__, callable(wer))")  # fmt: skip
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=60,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["[]", "voicelab.pipeline.core True"]
