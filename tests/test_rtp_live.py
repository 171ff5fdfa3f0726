"""Live RTP audio streams on loopback sockets: both directions, measured on one clock.

Real time (about 3 s of speech), real sockets on 127.0.0.1; no sleeps: the test waits on
futures that the streams resolve, with timeouts only as a safety net.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voicelab import audio, metrics
from voicelab.net import ChannelConfig
from voicelab.net.relay import UdpRelay
from voicelab.rtp.live import LiveAudioStream


def _iface(loop):
    try:
        from voicelab.net.iface import LoopbackInterface

        return LoopbackInterface(loop)
    except ImportError:
        return loop


def _on_clock(sent, t_sent, recv, t_recv, rate):
    """Place the received recording on the sender's timeline (shared loop clock)."""
    off = int(round((t_recv - t_sent) * rate))
    return np.concatenate([np.zeros(max(off, 0)), recv]) if off >= 0 else recv[-off:]


async def _call(codec, *, relay_cfg=None, seconds=3.0, jb="fixed:60"):
    loop = asyncio.get_running_loop()
    iface = _iface(loop)
    speech = audio.example("harvard", sample_rate=16000)
    x = np.asarray(speech.samples)[: int(seconds * 16000)]
    a = await LiveAudioStream(iface, codec=codec, jitter_buffer=jb, seed=1, cname="caller").open()
    b = await LiveAudioStream(iface, codec=codec, jitter_buffer=jb, seed=2, cname="agent").open()
    relay = None
    target = b.local_address
    if relay_cfg is not None:
        relay = await UdpRelay(iface, b.local_address, uplink=relay_cfg, downlink=relay_cfg, seed=3).start()
        target = relay.front_address
    a.set_remote(target)
    b.set_remote(relay.back_address if relay is not None else a.local_address)
    t0 = a.send(x, 16000)
    b.send(x, 16000, start_at=t0)
    await _play_through_and_close(a, b, t0 + seconds + 0.4, seconds, relay)
    return a, b


async def _play_through_and_close(a, b, end, seconds, relay=None):
    """Both streams play until ``end`` (loop time, s), then they (and ``relay``) close."""
    try:
        await asyncio.wait_for(asyncio.gather(a.played_through(end), b.played_through(end)), timeout=seconds + 10)
    finally:
        for s in (a, b):
            await s.close()
        if relay is not None:
            await relay.close()


def _measure(sender, receiver):
    rate = sender.tx.sample_rate
    sent, ts = sender.sent_audio()
    recv, tr = receiver.received_audio()
    deg = _on_clock(sent, ts, recv, tr, rate)
    est = audio.estimate_delay(sent, deg, rate, max_delay_ms=1000, causal=True)
    shift = int(round(est.delay_samples))
    d = deg[shift : shift + len(sent)]
    d = np.concatenate([d, np.zeros(len(sent) - len(d))])
    return est.delay_ms, metrics.pesq(audio.resample(sent, rate, 8000), audio.resample(d, rate, 8000), 8000, mode="nb")


@pytest.mark.slow
def test_lossless_pcmu_both_directions_delay_is_the_sum_of_its_parts():
    a, b = asyncio.run(_call("pcmu"))
    for s, r in ((a, b), (b, a)):
        # packetization + jitter buffer + codec + how late the loop sent the first packet
        # (the fixed jitter buffer anchors on its arrival); the network part is loopback
        parts = s.tx.frame_ms + 60.0 + s.tx.lookahead_ms + 1000.0 * s.stats.send_lateness_s[0]
        m2e, pesq_nb = _measure(s, r)
        assert abs(m2e - parts) <= 2.0, (m2e, parts)
        assert pesq_nb >= 3.9  # synthetic or natural harvard; lossless G.711
        # pacing error is reported (benchmarks measure it), not asserted: it is a timing
        assert len(s.stats.send_lateness_s) == s.stats.frames_sent
    assert b.session.stats.packets_sent > 100 and a.session.receiver_stats.received > 100


@pytest.mark.slow
def test_through_the_relay_loss_is_concealed_and_reported():
    cfg = ChannelConfig(delay_ms=20.0, loss_rate=0.05)
    a, b = asyncio.run(_call("pcmu", relay_cfg=cfg))
    m2e, _ = _measure(a, b)
    parts = 20.0 + 20.0 + 60.0  # packetization + relay delay + jitter buffer (G.711: no look-ahead)
    # the buffer anchors on the first packet that arrived; if the relay lost packet 0 it
    # anchors on a later one, whose own send lateness counts instead
    assert min(abs(m2e - parts - 1000.0 * late) for late in a.stats.send_lateness_s[:5]) <= 2.0, m2e
    assert b.stats.outcomes.get("concealed", 0) > 0
    rs = b.session.receiver_stats
    assert 0.0 < rs.loss_rate < 0.15


async def _call_read_in_tick(seconds=2.0):
    """A paced sender 10 ms off the receiver's 20 ms grid; the receiver reads in its ticks."""
    from voicelab.rtp.pacer import pacer_for

    loop = asyncio.get_running_loop()
    pacer = pacer_for(loop)
    pacer.tick_s, pacer.read_in_tick = 0.020, True
    iface = _iface(loop)
    x = np.asarray(audio.example("harvard", sample_rate=16000).samples)[: int(seconds * 16000)]
    a = await LiveAudioStream(iface, codec="pcmu", seed=1, cname="caller", track=True).open()
    b = await LiveAudioStream(iface, codec="pcmu", seed=2, cname="agent", track=True).open()
    a.set_remote(b.local_address)
    b.set_remote(a.local_address)
    t0 = pacer.align(loop.time()) + 0.010  # sends fall 10 ms after the receiver's slots
    a.send(x, 16000, start_at=t0)
    b.send_live("echo")
    await _play_through_and_close(a, b, t0 + seconds + 0.4, seconds)
    return a, b


@pytest.mark.slow
def test_reading_in_the_tick_keeps_true_arrival_times_and_the_delay():
    a, b = asyncio.run(_call_read_in_tick())
    # b read (nearly) every packet in its playout ticks, not on arrival
    assert b.reads_in_tick >= 0.9 * b.session.stats.packets_received > 50
    assert b._rx_sock is None  # closed with the stream
    # arrival times are the kernel's: a packet sent 10 ms before b's tick arrived when it
    # was sent (loopback), not when the tick read it
    gaps = [b.arrivals[q] - a.send_times[q] for q in a.send_times if q in b.arrivals]
    assert len(gaps) > 50
    assert float(np.median(gaps)) < 0.003, float(np.median(gaps))
    # the echo comes back: mouth-to-ear caller -> agent is the sum of its parts plus the
    # wait for b's 20 ms grid (the playout start rounded up)
    m2e, pesq_nb = _measure(a, b)
    grid_wait = b._play_start - b.jb.start_time()
    parts = a.tx.frame_ms + 60.0 + 1000.0 * a.stats.send_lateness_s[0] + 1000.0 * grid_wait
    assert abs(m2e - parts) <= 2.0, (m2e, parts)
    assert pesq_nb >= 3.9
    assert b.stats.outcomes.get("played", 0) > 50 and b.jb.stats.late == 0
    assert a.session.receiver_stats.received > 50  # the echo reached the caller


def test_rtp_goes_straight_to_the_socket_once_the_interface_accepted_its_address():
    """After the first RTP datagram to an address passed the loopback interface's check,
    the rest go to the socket directly (no guarded transport per packet); every one still
    arrives, RTCP still goes through the transport, and close() frees the duplicate."""
    import os

    async def run():
        loop = asyncio.get_running_loop()
        iface = _iface(loop)
        fds0 = len(os.listdir("/proc/self/fd"))
        x = np.asarray(audio.example("harvard", sample_rate=16000).samples)[:16000]  # 1 s
        a = await LiveAudioStream(iface, codec="pcmu", seed=1, cname="caller").open()
        b = await LiveAudioStream(iface, codec="pcmu", seed=2, cname="agent").open()
        a.set_remote(b.local_address)
        b.set_remote(a.local_address)
        tr = a._proto.transport
        through_transport = []
        inner_sendto = tr.sendto
        tr.sendto = lambda data, addr=None: (through_transport.append(data), inner_sendto(data, addr))[1]
        t0 = a.send(x, 16000)
        b.send_live("echo")
        try:
            await asyncio.wait_for(asyncio.gather(a.sending_done, b.played_through(t0 + 1.3)), timeout=10)
            dup_open = a._tx_sock is not None
        finally:
            for s in (a, b):
                await s.close()
        return a, b, through_transport, dup_open, fds0, len(os.listdir("/proc/self/fd"))

    a, b, through, dup_open, fds0, fds1 = asyncio.run(run())
    rtp = [d for d in through if len(d) >= 12 and not 200 <= d[1] <= 204]
    assert a.stats.frames_sent == 50 and dup_open
    assert len(rtp) == 1, len(rtp)  # only the first RTP datagram went through the transport
    assert b.session.stats.packets_received == 50  # every one arrived
    assert a.session.receiver_stats.received > 40  # and the echo (sent direct too) came back
    assert a._tx_sock is None and fds1 <= fds0  # the duplicate descriptor is closed
