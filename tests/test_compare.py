"""The same call over SIP, WebRTC and WebSocket, row by row; the Opus bit-rate sweep."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from voicelab.compare import (
    COMPARE_COLUMNS,
    DIRECTIONS,
    SWEEP_COLUMNS,
    compare_transports,
    compare_transports_async,
    opus_bitrate_sweep,
    opus_bitrate_sweep_async,
    run_sync,
)
from voicelab.errors import ParameterError, VoicelabError
from voicelab.net import ChannelConfig

from .conftest import run_clean, speech_dir

# harsher than the chapter's 2 %: "clean beats lossy" must hold for every transport even
# on a short call
LOSSY = ChannelConfig(loss_rate=0.10, jitter_ms=30.0, delay_ms=20.0)
CONDITIONS = {"clean": None, "lossy": LOSSY}


@pytest.fixture(scope="module")
def speech_env():
    """VOICELAB_DATA's extra recordings when they are here (the shipped corpus otherwise)."""
    d = speech_dir()
    mp = pytest.MonkeyPatch()
    if d is not None:
        mp.setenv("VOICELAB_DATA", str(d))
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def cmp(speech_env) -> pd.DataFrame:
    return run_clean(lambda: compare_transports_async(conditions=CONDITIONS, seconds=1.0, seed=3), timeout=120)


def _mean(df: pd.DataFrame, transport: str, condition: str, col: str) -> float:
    part = df[(df["transport"] == transport) & (df["condition"] == condition)]
    return float(pd.to_numeric(part[col]).mean())


def test_one_row_per_transport_condition_direction(cmp):
    assert list(cmp.columns) == COMPARE_COLUMNS
    keys = set(zip(cmp["transport"], cmp["condition"], cmp["direction"]))
    assert keys == {(t, c, d) for t in ("sip", "webrtc", "ws") for c in CONDITIONS for d in DIRECTIONS}
    assert len(cmp) == len(keys)
    assert (cmp["codec"] == "pcmu").all() and (cmp["note"] == "").all()
    assert cmp["synthetic_speech"].dtype == bool
    assert not cmp["synthetic_speech"].any()  # the shipped corpus is natural, with or without VOICELAB_DATA
    # the condition travels with the rows
    lossy = cmp[cmp["condition"] == "lossy"]
    assert (lossy["channel.loss_rate"] == LOSSY.loss_rate).all() and (lossy["channel.jitter_ms"] == LOSSY.jitter_ms).all()
    assert (cmp[cmp["condition"] == "clean"]["channel.loss_rate"] == 0).all()
    # every call's full result is kept, in order
    res = cmp.attrs["results"]
    assert [(r["transport"], r["condition"]) for r in res] == [(t, c) for c in CONDITIONS for t in ("sip", "webrtc", "ws")]
    assert all(r["result"]["transport"] == r["transport"] for r in res)


def test_measured_values_are_sane(cmp):
    for col in ("mouth_to_ear_ms", "pesq_nb", "pesq_wb", "setup_ms", "bitrate_kbps_wire"):
        assert cmp[col].notna().all(), col
    assert ((cmp["pesq_nb"] >= 1.0) & (cmp["pesq_nb"] <= 4.65)).all()
    assert (cmp["mouth_to_ear_ms"] > 0).all() and (cmp["setup_ms"] > 0).all()
    clean = cmp[cmp["condition"] == "clean"]
    assert (clean["loss_rate"] == 0).all()
    for t in ("sip", "webrtc", "ws"):
        assert _mean(cmp, t, "clean", "pesq_nb") > _mean(cmp, t, "lossy", "pesq_nb"), t
    # UDP transports lose packets; the WebSocket's TCP never does, its loss comes late
    assert _mean(cmp, "sip", "lossy", "loss_rate") > 0 and _mean(cmp, "webrtc", "lossy", "loss_rate") > 0
    assert _mean(cmp, "ws", "lossy", "loss_rate") == 0
    assert _mean(cmp, "ws", "lossy", "late_loss_rate") > _mean(cmp, "ws", "clean", "late_loss_rate")
    assert _mean(cmp, "ws", "lossy", "transit_delay_ms_p99") > _mean(cmp, "ws", "clean", "transit_delay_ms_p99")
    # G.711 over RTP: (160 + 40) bytes every 20 ms; SRTP + extensions and JSON + base64 cost more
    sip_wire = _mean(cmp, "sip", "clean", "bitrate_kbps_wire")
    assert sip_wire == pytest.approx((160 + 40) * 8 * 50 / 1000, rel=0.02)
    assert _mean(cmp, "webrtc", "clean", "bitrate_kbps_wire") > sip_wire
    assert _mean(cmp, "ws", "clean", "bitrate_kbps_wire") > _mean(cmp, "webrtc", "clean", "bitrate_kbps_wire")
    assert cmp["bitrate"].eq(64000).all()


@pytest.mark.parametrize("kwargs", [
    {"transports": ("sip", "h323")},
    {"transports": ()},
    {"codec_for": {"ws": "opus"}},
    {"codec_for": {"webrtc": "g729"}},
    {"codec_for": {"rtmp": "pcmu"}},
    {"codec_for": "pcmu"},
    {"conditions": {"clean": "none"}},
    {"conditions": {}},
    {"conditions": [None]},
    {"seconds": 0.5},
    {"seconds": "long"},
    {"seed": "x"},
    {"seed": True},
    {"transports": 5},
    {"codec_for": {"sip": "nonesuch"}},
    {"jitter_buffer": "elastic"},
])
def test_bad_parameters_are_parameter_errors(kwargs):
    with pytest.raises(ParameterError):
        compare_transports(**kwargs)


@pytest.mark.slow
def test_codecs_that_differ_are_noted(speech_env):
    df = run_clean(lambda: compare_transports_async(transports=("sip", "webrtc"), conditions={"clean": None},
                                                    codec_for={"webrtc": "opus"}, seconds=1.0), timeout=60)
    assert dict(zip(df["transport"], df["codec"])) == {"sip": "pcmu", "webrtc": "opus"}
    assert df["note"].str.contains("codecs differ").all()
    assert set(df[df["transport"] == "webrtc"]["bitrate"]) == {24000}


@pytest.mark.parametrize("bitrates", [(1000,), (), "fast", (8000, 600000)])
def test_sweep_bad_bitrates(bitrates):
    with pytest.raises(ParameterError):
        opus_bitrate_sweep(bitrates)


@pytest.mark.parametrize("kwargs", [{"seconds": 0}, {"seed": 1.5}, {"jitter_buffer": "fixed:-3"}])
def test_sweep_bad_options(kwargs):
    with pytest.raises(ParameterError):
        opus_bitrate_sweep((16000,), **kwargs)


def test_sweep_bad_net():
    with pytest.raises(ParameterError):
        opus_bitrate_sweep((16000,), net={"loss_rate": 0.1})


def test_run_sync_from_inside_a_running_loop():
    async def inner():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    async def outer():
        # a notebook kernel's situation: a loop runs in this thread already
        other = run_sync(inner)
        assert other is not asyncio.get_running_loop()
        with pytest.raises(VoicelabError, match="boom"):
            run_sync(lambda: _fail("boom"))
        return True

    assert run_clean(outer, timeout=10)
    assert run_sync(lambda: _value(7)) == 7  # no loop running: plain asyncio.run


async def _value(v):
    return v


async def _fail(msg):
    raise VoicelabError(msg)


@pytest.mark.slow
def test_opus_sweep_quality_and_bits(speech_env):
    df = run_clean(lambda: opus_bitrate_sweep_async((8000, 32000), seconds=1.5, baseline=True, seed=1), timeout=90)
    assert list(df.columns) == SWEEP_COLUMNS
    assert len(df) == 3 * len(DIRECTIONS)
    lab = df[df["mode"] == "lab"].groupby("bitrate").mean(numeric_only=True)
    assert lab.loc[32000, "pesq_wb"] > lab.loc[8000, "pesq_wb"]
    assert lab.loc[32000, "payload_kbps"] > lab.loc[8000, "payload_kbps"]
    # the headers cost the same per packet whatever the payload
    assert (lab["bitrate_kbps_wire"] > lab["payload_kbps"]).all()
    assert lab["overhead_kbps"].max() - lab["overhead_kbps"].min() < 0.2 * lab["overhead_kbps"].mean()
    base = df[df["mode"] == "aiortc-defaults"]
    assert (base["bitrate"] == 96000).all() and base["payload_kbps"].isna().all() and base["pesq_wb"].notna().all()
    assert not df["fec"].any()


def test_loopback_delay_note_explains_from_the_calls():
    import pandas as pd

    from voicelab import codecs
    from voicelab.compare import loopback_delay_note
    from voicelab.errors import ParameterError
    from voicelab.webrtc.call import AIORTC_JB_PREFETCH

    res = {"codec_params": {"bitrate": 12000, "frame_ms": 40}, "jitter_buffer": "fixed:60",
           "caller_to_agent.playout_delay_ms": 50.0, "agent_to_caller.playout_delay_ms": 54.0}
    df = pd.DataFrame({"mode": ["lab", "lab", "aiortc-defaults", "aiortc-defaults"],
                       "mouth_to_ear_ms": [130.0, 134.0, 230.0, 234.0]})
    df.attrs["results"] = [{"mode": "lab", "bitrate": 12000, "result": res}]
    text = loopback_delay_note(df)
    facts = codecs.get("opus", frame_ms=40)
    assert "**132 ms**" in text and "**232 ms**" in text
    assert f"one {facts.frame_ms:g} ms frame" in text and "52 ms of waiting" in text and "(fixed:60)" in text
    assert f"{AIORTC_JB_PREFETCH} packets ({AIORTC_JB_PREFETCH * 40} ms of audio" in text
    assert "0.5-1 s" not in text
    with pytest.raises(ParameterError):
        loopback_delay_note(df[df["mode"] != "lab"])
