"""Opus via ctypes on libopus: controls, PLC, FEC, DTX."""

from __future__ import annotations

import numpy as np
import pytest

from voicelab import codecs
from voicelab.codecs.registry import probe_signal

pytestmark = pytest.mark.skipif(not codecs.is_available("opus"), reason="libopus not found (Debian libopus0)")


def speech(sample_rate: int = 48000, seconds: float = 1.2) -> np.ndarray:
    return probe_signal(sample_rate, seconds=seconds)


def packets(c, x) -> list[bytes]:
    n = c.frame_samples
    return [c.encode(x[i * n:(i + 1) * n]) for i in range(len(x) // n)]


def mean_size(**params) -> float:
    c = codecs.get("opus", **params)
    return float(np.mean([len(p) for p in packets(c, speech(c.sample_rate))]))


def test_higher_bitrate_bigger_packets():
    assert mean_size(bitrate=12000) < mean_size(bitrate=24000) < mean_size(bitrate=64000)


def test_cbr_gives_constant_size():
    c = codecs.get("opus", bitrate=32000, vbr=False)
    sizes = {len(p) for p in packets(c, speech())}
    assert sizes == {32000 * 20 // 1000 // 8}
    assert "cbr=1" in c.fmtp


def test_fec_spends_bits_only_with_expected_loss():
    base = mean_size(bitrate=24000)
    assert mean_size(bitrate=24000, fec=True, packet_loss_perc=0) == pytest.approx(base, rel=0.02)
    assert mean_size(bitrate=24000, fec=True, packet_loss_perc=20) > base * 1.05


def test_decode_fec_rebuilds_lost_frame():
    tx = codecs.get("opus", bitrate=32000, fec=True, packet_loss_perc=20, sample_rate=16000)
    rx = codecs.get("opus", bitrate=32000, fec=True, packet_loss_perc=20, sample_rate=16000)
    assert rx.has_fec
    x = speech(16000)
    ps = packets(tx, x)
    lost = 30
    out = []
    for i, p in enumerate(ps):
        if i == lost:
            continue
        if i == lost + 1:
            rebuilt = rx.decode_fec(p)
            assert rebuilt is not None and rebuilt.shape == (rx.frame_samples,)
            out.append(rebuilt)
        out.append(rx.decode(p))
    y = np.concatenate(out)
    # compare the rebuilt frame with the same frame of a loss-free decode
    clean = codecs.get("opus", bitrate=32000, fec=True, packet_loss_perc=20, sample_rate=16000)
    ref = np.concatenate([clean.decode(p) for p in ps])
    n = rx.frame_samples
    seg_ref = ref[lost * n:(lost + 1) * n].astype(float)
    seg = y[lost * n:(lost + 1) * n].astype(float)
    assert np.abs(seg).mean() > 0.3 * np.abs(seg_ref).mean()
    assert np.corrcoef(seg, seg_ref)[0, 1] > 0.5
    # better than the plain concealment of the same loss
    plc_rx = codecs.get("opus", bitrate=32000, fec=True, packet_loss_perc=20, sample_rate=16000)
    for p in ps[:lost]:
        plc_rx.decode(p)
    concealed = plc_rx.conceal().astype(float)
    assert np.sum((seg - seg_ref) ** 2) < np.sum((concealed - seg_ref) ** 2)


def test_decode_fec_none_without_fec():
    c = codecs.get("opus")
    p = c.encode(speech()[:960])
    assert c.decode_fec(p) is None


def test_conceal_returns_frame():
    c = codecs.get("opus", frame_ms=10, sample_rate=24000)
    for p in packets(c, speech(24000, 0.3)):
        c.decode(p)
    y = c.conceal()
    assert y.dtype == np.int16 and y.shape == (240,)
    assert np.abs(y).max() > 0


def test_dtx_tiny_packets_in_silence():
    c = codecs.get("opus", dtx=True)
    assert "usedtx=1" in c.fmtp
    sizes = [len(c.encode(np.zeros(960, dtype=np.int16))) for _ in range(40)]
    tail = sizes[10:]
    # tiny packets, except one refresh packet every 400 ms (20 frames)
    assert sum(s <= 2 for s in tail) >= len(tail) - 2
    no_dtx = codecs.get("opus")
    assert min(len(no_dtx.encode(np.zeros(960, dtype=np.int16))) for _ in range(40)) > 2


def test_lookahead_from_encoder():
    assert codecs.get("opus").lookahead_ms == pytest.approx(6.5)
    assert codecs.get("opus", sample_rate=8000).lookahead_ms == pytest.approx(6.5)
    assert codecs.get("opus", application="restricted-lowdelay").lookahead_ms == pytest.approx(2.5)
    c = codecs.get("opus")
    assert c.algorithmic_delay_ms == pytest.approx(26.5)


def test_max_bandwidth_is_applied():
    c = codecs.get("opus", bandwidth="nb", bitrate=32000)
    packets(c, speech(seconds=0.3))
    assert c.last_packet_bandwidth == "nb"
    assert not c.wideband
    c = codecs.get("opus", bitrate=32000)
    packets(c, speech(seconds=0.3))
    assert c.last_packet_bandwidth in ("wb", "swb", "fb")


def test_facts_and_fmtp():
    c = codecs.get("opus", sample_rate=16000, fec=True, bitrate=20000)
    assert c.rtpmap == "opus/48000/2"
    assert c.clock_rate == 48000 and c.timestamp_increment == 960
    assert c.frame_samples == 320
    assert c.fmtp == "minptime=10;useinbandfec=1;maxaveragebitrate=20000;maxplaybackrate=16000;sprop-maxcapturerate=16000"
    assert c.params()["complexity"] == 10


@pytest.mark.parametrize("frame_ms,app", [(2.5, "restricted-lowdelay"), (5, "voip"), (40, "voip"), (60, "audio")])
def test_frame_sizes(frame_ms, app):
    c = codecs.get("opus", frame_ms=frame_ms, application=app)
    x = speech(seconds=0.2)
    n = c.frame_samples
    assert n == int(48 * frame_ms)
    assert c.decode(c.encode(x[:n])).shape == (n,)


def test_instances_are_independent_and_freed():
    a = codecs.get("opus")
    b = codecs.get("opus")
    x = speech(seconds=0.2)
    pa = packets(a, x)
    pb = packets(b, x)
    assert pa == pb
    a._close()
    a._close()  # idempotent
    del a
