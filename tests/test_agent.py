"""The lab's SIP agent on loopback: transports, digest auth, SRTP, modes, concurrency, RTCP.

Real time on 127.0.0.1 (2-3 s of speech per call); every wait is on a future with a
timeout, never a sleep. Timing numbers are only sanity-checked here (benchmarks measure).
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from voicelab import audio
from voicelab.agent import Agent, parse_mode
from voicelab.calls import dial, sip_call
from voicelab.errors import ParameterError, RemoteProtocolError
from voicelab.net import ChannelConfig

from .conftest import run_clean

pytestmark = pytest.mark.slow


def test_parse_mode():
    assert parse_mode("echo") == ("echo", None)
    assert parse_mode("play") == ("play", None)
    assert parse_mode("play:/tmp/x.wav") == ("play", "/tmp/x.wav")
    assert parse_mode("record:out") == ("record", "out")
    for bad in ("", "shout", "record", "echo:x", None):
        with pytest.raises(ParameterError):
            parse_mode(bad)


def test_agent_rejects_bad_options():
    with pytest.raises(ParameterError, match="transport"):
        Agent(transport="sctp")
    with pytest.raises(ParameterError, match="auth"):
        Agent(auth=("alice",))
    with pytest.raises(ParameterError, match="does not exist"):
        Agent(mode="play:/nonexistent/file.wav")
    with pytest.raises(ParameterError):
        Agent(codecs=["nosuchcodec"])


@pytest.mark.parametrize("sip_transport", ["tcp", "tls", "ws"])
def test_call_over_each_sip_transport(sip_transport, natural_env):
    r = asyncio.run(sip_call(codec="pcmu", seconds=2.0, sip_transport=sip_transport, seed=3))
    assert r["sip_transport"] == sip_transport
    assert 0 < r["setup_ms"] < 1000
    for d in ("caller_to_agent", "agent_to_caller"):
        assert r[f"{d}.pesq_nb"] >= 4.2, r
        assert r[f"{d}.loss_rate"] == 0.0


def test_srtp_call_is_encrypted_and_clean(natural_env):
    r = asyncio.run(sip_call(codec="pcmu", seconds=2.0, srtp=True, seed=4))
    assert r["srtp"] is True
    for d in ("caller_to_agent", "agent_to_caller"):
        assert r[f"{d}.pesq_nb"] >= 4.2, r
        # 160 B payload + 12 RTP + 10 auth tag + 28 IP/UDP, 50 packets/s
        assert r[f"{d}.bitrate_kbps_wire"] == pytest.approx((160 + 12 + 10 + 28) * 8 * 50 / 1000)


def test_digest_auth_call_succeeds_with_the_right_password(natural_env):
    r = asyncio.run(sip_call(codec="pcmu", seconds=2.0, auth=("alice", "secret"), seed=5, quality=False))
    assert r["caller_to_agent.loss_rate"] == 0.0 and r["setup_ms"] > 0


def test_wrong_password_or_plain_rtp_never_sets_up_a_call():
    async def main():
        async with Agent(codecs=["pcmu"], auth=("alice", "secret"), speech="harvard") as agent:
            with pytest.raises(RemoteProtocolError, match="401|403"):
                await dial(agent.uri, seconds=1.0, speech="harvard", credentials=("alice", "wrong"), ready_timeout=3.0)
            with pytest.raises(RemoteProtocolError, match="401"):
                await dial(agent.uri, seconds=1.0, speech="harvard", ready_timeout=3.0)  # no credentials at all
            assert agent.calls_answered == 0 and not agent.streams
            r = await dial(agent.uri, seconds=1.0, speech="harvard", credentials=("alice", "secret"))
            assert r["codec"] == "pcmu" and agent.calls_answered == 1
        async with Agent(codecs=["pcmu"], srtp=True, speech="harvard") as agent:
            with pytest.raises(RemoteProtocolError, match="488"):
                await dial(agent.uri, seconds=1.0, speech="harvard", ready_timeout=3.0)
            assert agent.calls_answered == 0

    run_clean(main, timeout=60.0)


def test_echo_mode_returns_the_callers_audio_through_its_own_pipeline(natural_env):
    async def main():
        async with Agent(codecs=["pcmu"], mode="echo", jitter_buffer="fixed:60") as agent:
            return await dial(agent.uri, codec="pcmu", seconds=3.0, echo=True, jitter_buffer="fixed:60")

    r = run_clean(main, timeout=60.0)
    # caller packetization 20 + agent buffer 60 + agent re-packetization 20 + caller buffer 60
    # (+ timer wake-up latency of the two playout clocks on a busy 2-core machine)
    assert 160.0 - 1.0 <= r["echo_delay_ms"] <= 160.0 + 10.0, r["echo_delay_ms"]
    assert r["echo_pesq_nb"] >= 4.0, r["echo_pesq_nb"]  # G.711 twice (tandem) on a clean path


def test_echo_with_the_capacity_settings_20ms_grid_and_reading_in_the_tick(natural_env):
    """`agent serve --tick-ms 20 --read-in-tick`: the same echo, later by at most the grid waits."""
    from voicelab.rtp.pacer import pacer_for

    async def main():
        pacer = pacer_for(asyncio.get_running_loop())  # the caller shares it (one process, one loop)
        pacer.tick_s, pacer.read_in_tick = 0.020, True
        async with Agent(codecs=["pcmu"], mode="echo", jitter_buffer="fixed:60") as agent:
            r = await dial(agent.uri, codec="pcmu", seconds=3.0, echo=True, jitter_buffer="fixed:60")
        return r, pacer.reads_in_tick

    r, reads = run_clean(main, timeout=60.0)
    assert reads >= 2 * 100  # both ends' streams read (most of) their ~150 packets each in their ticks
    # as above, plus up to 20 ms at each end for its playout clock to start on the grid
    # (and the wake-up latency of a busy machine, here for two 20 ms clocks)
    assert 160.0 - 1.0 <= r["echo_delay_ms"] <= 160.0 + 40.0 + 15.0, r["echo_delay_ms"]
    assert r["echo_pesq_nb"] >= 4.0, r["echo_pesq_nb"]


def test_record_mode_writes_what_arrived(tmp_path, natural_env):
    async def main():
        async with Agent(codecs=["pcma"], mode=f"record:{tmp_path}") as agent:
            r = await dial(agent.uri, codec="pcma", seconds=2.0)
            await asyncio.wait_for(agent.ended(1), 5.0)
            return r, list(agent.recorded_files)

    r, files = run_clean(main, timeout=60.0)
    assert len(files) == 1 and files[0].parent == tmp_path
    x, rate = audio.read_wav(files[0])
    assert rate == 8000
    # what the agent recorded is the caller's speech, starting with its first played frame
    # (the buffering delay is not in the file: it starts when playout did)
    est = audio.estimate_delay(r["sent"], x, 8000, max_delay_ms=500.0, causal=True)
    assert est.confidence > 0.5 and est.delay_ms <= 1.0, est
    assert audio.resample(x, 8000, 16000).size and len(x) >= len(r["sent"]) - 8000 * 0.2
    # and it sent silence back, so the media path stays open
    assert r["received"].size > 0 and float(np.max(np.abs(r["received"]))) < 1e-3


def test_concurrent_calls_each_get_their_own_media(natural_env):
    async def main():
        async with Agent(codecs=["pcmu"], mode="echo", max_calls=3) as agent:
            results = await asyncio.gather(*(
                dial(agent.uri, codec="pcmu", seconds=2.0, seed=i, echo=True) for i in range(3)
            ))
            ports = {s.local_address[1] for s in agent.streams.values()}
            await asyncio.wait_for(agent.ended(3), 5.0)
            return results, agent.calls_answered, ports

    results, answered, _ = run_clean(main, timeout=60.0)
    assert answered == 3
    for r in results:  # each caller got its own audio back, not another caller's
        assert r["echo_pesq_nb"] >= 3.8 and 159.0 <= r["echo_delay_ms"] <= 170.0, r["echo_delay_ms"]


def test_calls_still_up_when_the_agent_closes_keep_their_audio(natural_env):
    """Closing the agent mid-call loses nothing: the open call's audio is kept too
    (as for a call that ended; in CI a call whose BYE was being handled as the agent
    closed lost its recording)."""

    async def main():
        agent = await Agent(codecs=["pcmu"], mode="echo", speech="harvard").start()
        try:
            call = asyncio.create_task(dial(agent.uri, seconds=3.0, speech="harvard"))
            await asyncio.wait_for(agent.answered(1), 10.0)
            (cid,) = [c.call_id for c in agent._calls.values()]
        finally:
            await agent.close()
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        return cid, agent

    cid, agent = run_clean(main, timeout=60.0)
    assert list(agent.recordings) == [cid] and cid in agent.media_stats
    sent, received, rate = agent.recordings[cid]
    assert rate == 8000 and sent.ndim == received.ndim == 1


def test_agent_refuses_calls_beyond_max_calls():
    async def main():
        async with Agent(codecs=["pcmu"], mode="echo", max_calls=1, speech="harvard") as agent:
            first = asyncio.create_task(dial(agent.uri, seconds=2.0, speech="harvard"))
            await asyncio.wait_for(agent.answered(1), 10.0)  # the first call is up
            with pytest.raises(RemoteProtocolError, match="486"):
                await dial(agent.uri, seconds=1.0, speech="harvard")
            await first
            return agent.calls_refused

    assert run_clean(main, timeout=60.0) == 1


def test_rtcp_reports_match_the_configured_channel(natural_env):
    """Acceptance: over the relay, RTCP's loss and jitter match the channel model."""
    loss, sigma = 0.05, 5.0
    cfg = ChannelConfig(delay_ms=20.0, jitter_ms=sigma, loss_rate=loss)
    r = asyncio.run(sip_call(codec="pcmu", seconds=15.0, net=cfg, seed=7, quality=False))
    for d in ("caller_to_agent", "agent_to_caller"):
        assert r[f"{d}.rtcp_reports"] >= 1, r  # RTCP every ~5 s (RFC 3550 minimum), 5 % lost too
        # RFC 3550 cumulative loss over the packets covered, within 4 sigma of binomial
        covered = r[f"{d}.rtcp_packets_covered"]
        assert covered >= 200, r
        tol = 4 * math.sqrt(loss * (1 - loss) / covered)
        assert abs(r[f"{d}.rtcp_loss_rate"] - loss) <= tol, (d, r[f"{d}.rtcp_loss_rate"])
        # the reports agree with what the receiver itself counted
    # interarrival jitter of i.i.d. normal delays: E|D| = 2 sigma / sqrt(pi) = 5.64 ms. One
    # report's value is the RFC's 1/16 running mean (about +-0.8 ms, 1 sd, here) plus the
    # sender's own pacing error on a busy machine: check the mean of both directions.
    expected = 2 * sigma / math.sqrt(math.pi)
    mean_j = (r["caller_to_agent.rtcp_jitter_ms"] + r["agent_to_caller.rtcp_jitter_ms"]) / 2
    assert 0.7 * expected <= mean_j <= 1.35 * expected, (mean_j, expected)
    rtts = [r[f"{d}.rtt_ms"] for d in ("caller_to_agent", "agent_to_caller") if r[f"{d}.rtt_ms"] is not None]
    assert rtts and all(38.0 <= v <= 70.0 for v in rtts), rtts  # 20 ms each way +- jitter
