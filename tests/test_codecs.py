"""Codec registry, facts, payload sizes, look-ahead and quality of every codec."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from voicelab import codecs
from voicelab.codecs import g711, registry
from voicelab.codecs.pyav import amr_rtp_to_storage, amr_storage_to_rtp
from voicelab.errors import CodecError, CodecUnavailableError, ParameterError

G729_SKIP = pytest.mark.skipif(
    not codecs.is_available("g729"), reason="G.729 needs bcg729: install Debian package libbcg729-0"
)


def needs(name: str):
    return pytest.mark.skipif(not codecs.is_available(name), reason=f"{name} unavailable here")


def tone(n: int, sample_rate: int, *, freq: float = 1000.0, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(n) / sample_rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def roundtrip(codec, x: np.ndarray) -> np.ndarray:
    n = codec.frame_samples
    k = len(x) // n
    return np.concatenate([codec.decode(codec.encode(x[i * n:(i + 1) * n])) for i in range(k)])


def aligned_snr_db(codec, x: np.ndarray, y: np.ndarray, *, skip: int = 0) -> float:
    lag = int(round(codec.lookahead_ms * codec.sample_rate / 1000))
    ref = x[skip:len(y) - lag].astype(np.float64)
    out = y[skip + lag:].astype(np.float64)
    return 10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-9))


# ------------------------------------------------------------------ registry
def test_names():
    assert codecs.names() == ["pcmu", "pcma", "g722", "g723", "g726", "g729", "amr-nb", "opus", "l16"]


@pytest.mark.parametrize(
    "alias,name,extra",
    [
        ("G711U", "pcmu", {}),
        ("ulaw", "pcmu", {}),
        ("g711a", "pcma", {}),
        ("ALAW", "pcma", {}),
        ("amr", "amr-nb", {}),
        ("G723.1", "g723", {}),
        ("g726-16", "g726", {"bitrate": 16000}),
        ("g726-40", "g726", {"bitrate": 40000}),
        ("Opus", "opus", {}),
    ],
)
def test_aliases(alias, name, extra):
    canon, preset = codecs.canonical_name(alias)
    assert (canon, preset) == (name, extra)
    if codecs.is_available(name):
        c = codecs.get(alias)
        assert c.name == name
        for k, v in extra.items():
            assert c.params()[k] == v


def test_get_returns_new_instances():
    a, b = codecs.get("pcmu"), codecs.get("pcmu")
    assert a is not b


def test_unknown_name_lists_valid_names():
    with pytest.raises(ParameterError, match="pcmu.*opus"):
        codecs.get("speex")


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("pcmu", {"frame_ms": 25}, "10, 20, 30"),
        ("pcmu", {"bitrate": 64000}, "allowed: frame_ms, plc"),
        ("pcma", {"plc": 1}, "True or False"),
        ("g722", {"bitrate": 56000}, "64000"),
        ("g723", {"bitrate": 5300}, "6.3"),
        ("g723", {"frame_ms": 20}, "30, 60, 90"),
        ("g726", {"bitrate": 33000}, "16000, 24000, 32000, 40000"),
        ("g726-32", {"bitrate": 16000}, "alias fixes"),
        ("amr-nb", {"bitrate": 12000}, "4750.*12200"),
        ("amr-nb", {"frame_ms": 30}, "20, 40, 60"),
        ("opus", {"bitrate": 5000}, "6000 to 510000"),
        ("opus", {"bitrate": 600000}, "6000 to 510000"),
        ("opus", {"frame_ms": 30}, "2.5, 5, 10, 20, 40, 60"),
        ("opus", {"application": "lowdelay"}, "voip, audio, restricted-lowdelay"),
        ("opus", {"bandwidth": "hd"}, "nb, mb, wb, swb, fb"),
        ("opus", {"sample_rate": 44100}, "8000, 12000"),
        ("opus", {"vbr": False, "cbr": False}, "contradicts"),
        ("opus", {"complexity": 11}, "0 to 10"),
        ("opus", {"packet_loss_perc": -1}, "0 to 100"),
        ("g729", {"frame_ms": 15}, "10, 20"),
        ("l16", {"sample_rate": 22050}, "8000, 16000, 44100, 48000"),
    ],
)
def test_bad_parameters(name, params, match):
    with pytest.raises(ParameterError, match=match):
        codecs.get(name, **params)


def test_unavailable_codec_names_package(monkeypatch):
    from voicelab.codecs.g729 import G729Codec

    monkeypatch.setattr(G729Codec, "unavailable_reason", classmethod(lambda cls: "install Debian package libbcg729-0"))
    assert not codecs.is_available("g729")
    with pytest.raises(CodecUnavailableError, match="libbcg729-0"):
        codecs.get("g729")
    row = next(r for r in codecs.available() if r["name"] == "g729")
    assert row["available"] is False
    assert "libbcg729-0" in row["unavailable_reason"]
    assert row["rtpmap"] == "G729/8000" and row["payload_type"] == 18
    # a bad parameter is still reported as such
    with pytest.raises(ParameterError):
        codecs.get("g729", frame_ms=15)


def test_available_rows():
    rows = codecs.available()
    assert [r["name"] for r in rows] == codecs.names()
    for r in rows:
        assert isinstance(r["available"], bool)
        assert (r["unavailable_reason"] is None) == r["available"]
        assert r["algorithmic_delay_ms"] == pytest.approx(r["frame_ms"] + r["lookahead_ms"])


# ------------------------------------------------------------------ facts
# (name, params): (PT, rtpmap, sample_rate, timestamp_increment, payload bytes for speech)
FACTS = [
    ("pcmu", {}, 0, "PCMU/8000", 8000, 160, 160),
    ("pcma", {}, 8, "PCMA/8000", 8000, 160, 160),
    ("pcmu", {"frame_ms": 30}, 0, "PCMU/8000", 8000, 240, 240),
    ("g722", {}, 9, "G722/8000", 16000, 160, 160),
    ("g722", {"frame_ms": 10}, 9, "G722/8000", 16000, 80, 80),
    ("g723", {}, 4, "G723/8000", 8000, 240, 24),
    ("g723", {"frame_ms": 60}, 4, "G723/8000", 8000, 480, 48),
    ("g726", {"bitrate": 16000}, None, "G726-16/8000", 8000, 160, 40),
    ("g726", {"bitrate": 24000}, None, "G726-24/8000", 8000, 160, 60),
    ("g726", {}, None, "G726-32/8000", 8000, 160, 80),
    ("g726", {"bitrate": 40000}, None, "G726-40/8000", 8000, 160, 100),
    ("g729", {}, 18, "G729/8000", 8000, 160, 20),
    ("g729", {"frame_ms": 10}, 18, "G729/8000", 8000, 80, 10),
    # RFC 4867 octet-aligned: CMR + one TOC per frame + speech bits in whole octets
    ("amr-nb", {}, None, "AMR/8000", 8000, 160, 1 + 1 + (244 + 7) // 8),
    ("amr-nb", {"bitrate": 4750}, None, "AMR/8000", 8000, 160, 1 + 1 + (95 + 7) // 8),
    ("amr-nb", {"frame_ms": 40}, None, "AMR/8000", 8000, 320, 1 + 2 + 2 * ((244 + 7) // 8)),
    ("l16", {}, None, "L16/16000", 16000, 320, 640),
    ("l16", {"sample_rate": 44100}, 11, "L16/44100", 44100, 882, 1764),
    ("opus", {}, None, "opus/48000/2", 48000, 960, None),
    ("opus", {"sample_rate": 16000}, None, "opus/48000/2", 16000, 960, None),
]


@pytest.mark.parametrize("name,params,pt,rtpmap,rate,ts_inc,size", FACTS)
def test_facts_and_payload_size(name, params, pt, rtpmap, rate, ts_inc, size):
    if not codecs.is_available(name):
        pytest.skip(f"{name} unavailable here")
    c = codecs.get(name, **params)
    assert c.payload_type == pt
    assert c.rtpmap == rtpmap
    assert c.sample_rate == rate
    assert c.timestamp_increment == ts_inc
    x = registry.probe_signal(rate, seconds=0.5)
    n = c.frame_samples
    sizes = {len(c.encode(x[i * n:(i + 1) * n])) for i in range(len(x) // n)}
    if size is not None:
        assert sizes == {size}
    out = c.decode(c.encode(x[:n]))
    assert out.dtype == np.int16 and out.shape == (n,)


def test_fmtp():
    assert codecs.get("pcmu").fmtp is None
    assert codecs.get("amr-nb").fmtp == "octet-align=1"
    if codecs.is_available("g729"):
        assert codecs.get("g729").fmtp == "annexb=no"
        assert codecs.get("g729", vad=True).fmtp == "annexb=yes"


LAG_CASES = [
    ("pcmu", {}),
    ("pcma", {}),
    ("l16", {}),
    ("g722", {}),
    ("g722", {"frame_ms": 10}),
    ("g723", {}),
    ("g726", {}),
    ("g726", {"bitrate": 16000}),
    ("amr-nb", {}),
    ("amr-nb", {"bitrate": 4750}),
    ("g729", {}),
    ("opus", {}),
    ("opus", {"sample_rate": 8000}),
    ("opus", {"application": "restricted-lowdelay", "frame_ms": 10}),
]


@pytest.mark.parametrize("name,params", LAG_CASES)
def test_measured_lag_matches_lookahead(name, params):
    if not codecs.is_available(name):
        pytest.skip(f"{name} unavailable here")
    c = codecs.get(name, **params)
    measured = codecs.measure_lookahead_ms(c)
    assert abs(measured - c.lookahead_ms) <= 0.125, (measured, c.lookahead_ms)


# ------------------------------------------------------------------ G.711
@pytest.mark.parametrize(
    "av_name,enc,dec",
    [("pcm_mulaw", g711.ulaw_encode, g711.ulaw_decode), ("pcm_alaw", g711.alaw_encode, g711.alaw_decode)],
)
def test_g711_bit_exact_with_ffmpeg(av_name, enc, dec):
    av = pytest.importorskip("av")
    x = np.arange(-32768, 32768, dtype=np.int16)
    e = av.CodecContext.create(av_name, "w")
    e.sample_rate, e.layout, e.format = 8000, "mono", "s16"
    e.open()
    f = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="s16", layout="mono")
    f.sample_rate = 8000
    f.pts = 0
    ref = np.frombuffer(b"".join(bytes(p) for p in e.encode(f)), dtype=np.uint8)
    assert np.array_equal(enc(x), ref)
    d = av.CodecContext.create(av_name, "r")
    d.sample_rate, d.layout = 8000, "mono"
    d.open()
    frames = d.decode(av.Packet(bytes(range(256))))
    ref_dec = np.concatenate([fr.to_ndarray().reshape(-1) for fr in frames])
    assert np.array_equal(dec(np.arange(256, dtype=np.uint8)), ref_dec)


@pytest.mark.parametrize("name", ["pcmu", "pcma"])
def test_g711_tone_snr(name):
    c = codecs.get(name)
    x = tone(8000, 8000)
    y = roundtrip(c, x)
    assert aligned_snr_db(c, x, y) > 30


def test_g711_plc_switch():
    on, off = codecs.get("pcmu"), codecs.get("pcmu", plc=False)
    assert on.has_plc and not off.has_plc
    x = tone(1600, 8000, freq=300.0)
    for c in (on, off):
        roundtrip(c, x)
    assert np.abs(on.conceal()).max() > 1000
    assert not np.any(off.conceal())


def test_l16_is_lossless_big_endian():
    c = codecs.get("l16", sample_rate=8000)
    x = registry.probe_signal(8000, seconds=0.1)[:160]
    p = c.encode(x)
    assert p[:2] == int(x[0]).to_bytes(2, "big", signed=True)
    assert np.array_equal(c.decode(p), x)
    with pytest.raises(CodecError):
        c.decode(b"\x00\x01\x02")


# ------------------------------------------------------------------ PyAV codecs
@pytest.mark.parametrize(
    "name,params,min_snr",
    [("g722", {}, 15.0), ("g726", {"bitrate": 32000}, 15.0), ("g726", {"bitrate": 40000}, 20.0), ("l16", {}, 80.0)],
)
def test_waveform_codecs_tone_snr(name, params, min_snr):
    c = codecs.get(name, **params)
    x = tone(c.sample_rate, c.sample_rate, freq=700.0)
    y = roundtrip(c, x)
    assert aligned_snr_db(c, x, y, skip=c.sample_rate // 10) > min_snr


@pytest.mark.parametrize("name,params", [("g723", {}), ("amr-nb", {}), ("g729", {})])
def test_speech_codecs_follow_waveform(name, params):
    if not codecs.is_available(name):
        pytest.skip(f"{name} unavailable here")
    c = codecs.get(name, **params)
    x = registry.probe_signal(8000)
    y = roundtrip(c, x)
    lag = int(round(c.lookahead_ms * 8))
    r = np.corrcoef(x[800:len(y) - lag].astype(float), y[800 + lag:].astype(float))[0, 1]
    assert r > 0.7


def test_encode_checks_shape_and_dtype():
    c = codecs.get("g722")
    with pytest.raises(CodecError, match="320 samples"):
        c.encode(np.zeros(160, dtype=np.int16))
    with pytest.raises(CodecError, match="int16"):
        c.encode(np.zeros(320, dtype=np.float32))


def test_g723_rejects_truncated_payload():
    c = codecs.get("g723")
    p = c.encode(registry.probe_signal(8000, seconds=0.03)[:240])
    with pytest.raises(CodecError, match="truncated"):
        c.decode(p[:10])


def test_amr_payload_layout_round_trip():
    c = codecs.get("amr-nb", frame_ms=40)
    x = registry.probe_signal(8000, seconds=0.04)[:320]
    p = c.encode(x)
    assert p[0] == 0xF0  # CMR: no mode request
    assert p[1] & 0x80 and not p[2] & 0x80  # F bit: more frames follow, then last
    assert (p[1] >> 3) & 0x0F == 7 and p[1] & 0x04  # FT 12.2, Q = 1
    frames = amr_rtp_to_storage(p)
    assert [len(f) for f in frames] == [32, 32]
    assert amr_storage_to_rtp(frames) == p
    with pytest.raises(CodecError):
        amr_rtp_to_storage(p[:20])
    with pytest.raises(CodecError):
        amr_rtp_to_storage(bytes([0xF0, 0x6C]))  # FT 13: reserved


def test_amr_dtx_sends_tiny_payloads_in_silence():
    c = codecs.get("amr-nb", dtx=True)
    sizes = [len(c.encode(np.zeros(160, dtype=np.int16))) for _ in range(30)]
    assert max(sizes[10:]) <= 1 + 1 + 5  # SID (5 B) or NO_DATA (0 B) after hangover
    assert min(sizes) == 2


@pytest.mark.parametrize("name", ["amr-nb", "g729", "g722", "g723", "g726", "pcmu", "l16", "opus"])
def test_conceal_after_speech(name):
    if not codecs.is_available(name):
        pytest.skip(f"{name} unavailable here")
    c = codecs.get(name)
    x = registry.probe_signal(c.sample_rate, seconds=0.4)
    roundtrip(c, x)
    lost = [c.conceal() for _ in range(int(round(120 / c.frame_ms)))]
    assert all(f.dtype == np.int16 and f.shape == (c.frame_samples,) for f in lost)
    first = np.abs(lost[0].astype(float)).mean()
    last = np.abs(lost[-1].astype(float)).mean()
    assert first > 50  # not silent right after the loss starts
    assert last < first  # and fading
    # decoding continues after the loss
    n = c.frame_samples
    assert c.decode(c.encode(x[:n])).shape == (n,)


def test_reset_gives_repeatable_output():
    c = codecs.get("g726")
    x = registry.probe_signal(8000, seconds=0.2)
    a = roundtrip(c, x)
    c.reset()
    assert np.array_equal(roundtrip(c, x), a)


# ------------------------------------------------------------------ G.729
@G729_SKIP
def test_g729_vad_silence_and_payload_parsing():
    c = codecs.get("g729", vad=True)
    sizes = [len(c.encode(np.zeros(160, dtype=np.int16))) for _ in range(20)]
    assert max(sizes[3:]) <= 2
    dec = codecs.get("g729")
    assert dec.decode(b"").shape == (160,)
    assert dec.decode(b"\x00" * 12).shape == (160,)  # 10-byte frame + SID
    with pytest.raises(CodecError, match="10-byte"):
        dec.decode(b"\x00" * 7)


# ------------------------------------------------------------------ natural speech
def _speech_dir() -> Path | None:
    env = os.environ.get("VOICELAB_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "speech")
    for d in candidates:
        if (d / "cmu_arctic_aew_a0001.wav").exists():
            return d
    return None


# pjproject's loopback thresholds (REFERENCE-FACTS) where given, else 0.4 below the
# clean-channel FFmpeg figure on natural speech
PESQ_FLOORS = [
    ("pcmu", {}, "nb", 3.5),
    ("g722", {}, "wb", 3.7),
    ("g726", {"bitrate": 32000}, "nb", 3.5),
    ("amr-nb", {}, "nb", 3.7),
    ("opus", {"bitrate": 24000, "sample_rate": 16000}, "wb", 3.9),
]


@pytest.mark.natural
@pytest.mark.parametrize("name,params,mode,floor", PESQ_FLOORS)
def test_pesq_on_natural_speech(name, params, mode, floor):
    d = _speech_dir()
    if d is None:
        pytest.skip("natural speech not found: set VOICELAB_DATA or provide ../shared/datasets/speech")
    pesq = pytest.importorskip("pesq")
    sf = pytest.importorskip("soundfile")
    import soxr

    x16, sr = sf.read(d / "cmu_arctic_aew_a0001.wav", dtype="int16")
    c = codecs.get(name, **params)
    x = x16 if c.sample_rate == sr else np.round(soxr.resample(x16.astype(np.float64), sr, c.sample_rate)).astype(np.int16)
    n = c.frame_samples
    x = np.concatenate([x, np.zeros(2 * n, dtype=np.int16)])
    y = roundtrip(c, x)
    lag = int(round(c.lookahead_ms * c.sample_rate / 1000))
    y = y[lag:]
    ref = x[: len(y)]
    rate = 16000 if mode == "wb" else 8000
    if c.sample_rate != rate:
        ref = soxr.resample(ref.astype(np.float64), c.sample_rate, rate)
        y = soxr.resample(y.astype(np.float64), c.sample_rate, rate)
    score = pesq.pesq(rate, ref.astype(np.float64), y.astype(np.float64), mode)
    assert score > floor, score


@pytest.mark.parametrize(
    "name,params,payload",
    [
        ("pcmu", {}, bytes(240)),
        ("l16", {}, bytes(320)),
        ("g722", {}, bytes(80)),
        ("g726", {"bitrate": 24000}, bytes(80)),
        ("g723", {}, bytes(48)),
        ("amr-nb", {}, bytes([0xF0, 0xBC]) + bytes(31) + bytes([0x3C]) + bytes(31)),
        ("g729", {"frame_ms": 10}, bytes(20)),
    ],
)
def test_payload_for_other_ptime_is_refused(name, params, payload):
    if not codecs.is_available(name):
        pytest.skip(f"{name} unavailable here")
    with pytest.raises(CodecError, match="ptime"):
        codecs.get(name, **params).decode(payload)


# ------------------------------------------------------------------ modes (the ch1 widget offers these)
@pytest.mark.parametrize("name", codecs.names())
def test_every_mode_is_valid_and_means_what_it_says(name):
    ms = codecs.modes(name)
    assert ms and len({m["label"] for m in ms}) == len(ms)
    if not codecs.is_available(name):
        pytest.skip(f"{name} not installed here")
    for m in ms:
        c = codecs.get(name, **m["params"])
        assert c.bitrate == m["bitrate"], m


@pytest.mark.parametrize("name", [n for n in codecs.names() if n != "opus"])
def test_modes_are_complete_other_rates_are_refused(name):
    """A rate between or beside the listed modes is an error (Opus codes any rate in 6-510k)."""
    if not codecs.is_available(name):
        pytest.skip(f"{name} not installed here")
    rates = [m["bitrate"] for m in codecs.modes(name)]
    for bad in (min(rates) - 1000, max(rates) + 1000):
        with pytest.raises(ParameterError):
            codecs.get(name, bitrate=bad)


def test_modes_accepts_aliases_and_rejects_unknown_names():
    assert codecs.modes("g711u") == codecs.modes("pcmu")
    with pytest.raises(ParameterError):
        codecs.modes("speex")


@pytest.mark.parametrize("name, ref", [("pcmu", g711.ulaw_encode), ("pcma", g711.alaw_encode)])
def test_g711_frame_encoder_matches_the_reference_for_every_sample_value(name, ref):
    # the codec's hot path looks the int16 bits up as uint16; the module functions index
    # the table with sample + 32768: both must agree on all 65,536 values, strided input too
    c = codecs.get(name, frame_ms=20)
    values = np.arange(-32768, 32768, dtype=np.int16)
    got = b"".join(c.encode(values[i : i + 160]) for i in range(0, 65536 - 160 + 1, 160))
    assert np.array_equal(np.frombuffer(got, dtype=np.uint8), np.asarray(ref(values[: len(got)]), dtype=np.uint8))
    strided = values[::400][:160]
    assert c.encode(strided) == np.asarray(ref(strided), dtype=np.uint8).tobytes()


@pytest.mark.parametrize("name", ["pcmu", "pcma"])
@pytest.mark.parametrize("plc", [True, False])
def test_g711_one_call_decode_and_encode_match_the_generic_path(name, plc):
    """G.711's own decode()/encode() (one call for the live path) give what the generic
    Codec + PLC path gives, frame by frame through a loss episode, and keep its checks."""
    from voicelab.codecs.base import Codec
    from voicelab.codecs.plc import GenericPLCMixin

    rng = np.random.default_rng(7)
    fast, generic = codecs.get(name, plc=plc), codecs.get(name, plc=plc)
    for k in range(12):
        if k in (4, 5):  # a loss: the next good frame is crossfaded out of the concealment
            assert np.array_equal(fast.conceal(), generic.conceal())
            continue
        payload = rng.integers(0, 256, 160, dtype=np.uint8).tobytes()
        got, want = fast.decode(payload), GenericPLCMixin.decode(generic, payload)
        assert got.dtype == np.int16 and np.array_equal(got, want), k
        for frame in (got, got[::-1].copy(), np.asfortranarray(got)):
            assert fast.encode(frame) == Codec.encode(generic, frame)
    assert np.array_equal(fast.decode(bytearray(payload)), GenericPLCMixin.decode(generic, memoryview(payload)))
    with pytest.raises(CodecError):
        fast.decode(payload[:80])  # the wrong packet time
    with pytest.raises(CodecError):
        fast.decode([1, 2, 3])  # not bytes
    with pytest.raises(CodecError):
        fast.encode(np.zeros(160, dtype=np.float32))  # not int16
    with pytest.raises(CodecError):
        fast.encode(np.zeros(80, dtype=np.int16))  # not one frame
