"""E-model (ITU-T G.107 / G.107.1) and the G.113 codec table.

Check values are those of REFERENCE-FACTS.md ("E-model"): they are planning figures
with every other input at its G.107 default. The loss check values (G.711+PLC and
G.729A at 2 % random loss) are reproduced with zero delay (Id = 0); any delay above
about 15 ms changes the second decimal.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.metrics import burst_ratio, ie_bpl, mos_from_r, r_factor, r_from_mos
from voicelab.metrics.emodel import (
    CODEC_IMPAIRMENTS,
    EModelResult,
    delay_impairment,
    known_codecs,
)


# ---------------------------------------------------------------- REFERENCE-FACTS checks


def test_r_93_2_gives_mos_4_41():
    assert round(mos_from_r(93.2), 2) == 4.41


@pytest.mark.parametrize("delay_ms, mos", [(150.0, 4.33), (400.0, 3.05)])
def test_delay_only_check_values(delay_ms, mos):
    res = r_factor(delay_ms=delay_ms)
    assert round(res.mos_cqe, 2) == mos
    assert res.ie_eff == 0.0
    assert res.ro_minus_is == 93.2


def test_g711_plc_at_2_percent_random_loss():
    res = r_factor(delay_ms=0.0, loss_rate=0.02, codec="pcmu", plc=True)
    assert res.bpl == 25.1 and res.ie == 0.0
    assert res.ie_eff == pytest.approx(95 * 2 / (2 + 25.1))
    assert round(res.mos_cqe, 2) == 4.23


def test_g729a_at_2_percent_random_loss():
    res = r_factor(delay_ms=0.0, loss_rate=0.02, codec="g729")
    assert (res.ie, res.bpl) == (11.0, 19.0)
    assert res.ie_eff == pytest.approx(19.0)  # 11 + 84 * 2 / 21
    assert round(res.mos_cqe, 2) == 3.79


def test_check_values_need_small_delay():
    # The documented assumption: with a realistic 40 ms of delay the G.711 check value
    # moves, so the table's 4.23 is a zero-delay figure.
    assert round(r_factor(delay_ms=40.0, loss_rate=0.02).mos_cqe, 2) != 4.23


def test_g711_without_plc_is_much_worse():
    with_plc = r_factor(delay_ms=0.0, loss_rate=0.02, plc=True)
    without = r_factor(delay_ms=0.0, loss_rate=0.02, plc=False)
    assert without.bpl == 4.3
    assert without.mos_cqe < with_plc.mos_cqe - 0.5


# ---------------------------------------------------------------- delay models


def test_simplified_delay_formula():
    assert delay_impairment(100.0) == pytest.approx(2.4)
    assert delay_impairment(177.3) == pytest.approx(0.024 * 177.3)
    assert delay_impairment(300.0) == pytest.approx(0.024 * 300 + 0.11 * (300 - 177.3))


def test_g107_defaults_give_r_93_2():
    # G.107's own statement: with all default values R = 93.2.
    res = r_factor(delay_ms=0.0, delay_model="g107")
    assert res.r_factor == pytest.approx(93.2, abs=0.01)
    assert res.id == pytest.approx(0.15, abs=0.01)  # default listener-echo term


def test_g107_idd_formula():
    from voicelab.metrics.emodel import _idd

    assert _idd(100.0) == 0.0
    x = math.log2(3.0)  # Ta = 300 ms
    expected = 25 * ((1 + x**6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)
    assert _idd(300.0) == pytest.approx(expected)


@pytest.mark.parametrize("delay_ms", [0.0, 100.0, 150.0, 250.0, 400.0])
def test_g107_and_simplified_delay_models_agree_roughly(delay_ms):
    a = r_factor(delay_ms=delay_ms, delay_model="g107").r_factor
    b = r_factor(delay_ms=delay_ms).r_factor
    assert abs(a - b) < 4.0


@given(st.floats(0, 1000), st.floats(0, 1000))
def test_r_decreases_with_delay(d1, d2):
    lo, hi = sorted((d1, d2))
    assert r_factor(delay_ms=hi).r_factor <= r_factor(delay_ms=lo).r_factor + 1e-9


@given(st.floats(2, 1000), st.floats(2, 1000))
def test_g107_r_decreases_with_delay_beyond_sidetone_range(d1, d2):
    # Below ~1.5 ms G.107's talker-echo term is slightly negative (echo acts as
    # sidetone), so R rises by 0.06 between 0 and 1 ms; from there on it only falls.
    lo, hi = sorted((d1, d2))
    assert (
        r_factor(delay_ms=hi, delay_model="g107").r_factor
        <= r_factor(delay_ms=lo, delay_model="g107").r_factor + 1e-9
    )


# ---------------------------------------------------------------- MOS mapping


def test_mos_bounds():
    assert mos_from_r(-5) == 1.0
    assert mos_from_r(0) == 1.0
    assert mos_from_r(3.0) == 1.0  # polynomial dips below 1 here; clamped
    assert mos_from_r(100) == 4.5
    assert mos_from_r(120) == 4.5


@given(st.floats(1.0, 4.5))
def test_r_from_mos_inverts_mos_from_r(mos):
    r = r_from_mos(mos)
    assert 0 <= r <= 100
    assert mos_from_r(r) == pytest.approx(mos, abs=1e-9)


@given(st.floats(-10, 110), st.floats(-10, 110))
def test_mos_from_r_is_monotonic(a, b):
    lo, hi = sorted((a, b))
    assert mos_from_r(lo) <= mos_from_r(hi)


@pytest.mark.parametrize("mos", [0.99, 4.51, float("nan"), "x"])
def test_r_from_mos_rejects_bad_input(mos):
    with pytest.raises(ParameterError):
        r_from_mos(mos)


# ---------------------------------------------------------------- wideband


def test_wideband_scale():
    assert mos_from_r(129.0, wideband=True) == 4.5
    res = r_factor(delay_ms=0.0, codec="amr-wb", bitrate=12650, wideband=True)
    assert res.r_factor == pytest.approx(129.0 - 13.0)
    assert res.mos_cqe == pytest.approx(mos_from_r((129.0 - 13.0) / 1.29))
    assert r_from_mos(res.mos_cqe, wideband=True) == pytest.approx(116.0, abs=1e-6)


@pytest.mark.parametrize("bitrate, ie", [(6600, 41), (8850, 26), (12650, 13), (23850, 8)])
def test_amr_wb_reference_values(bitrate, ie):
    assert ie_bpl("amr-wb", bitrate=bitrate, wideband=True)[0] == ie


def test_wideband_loss_uses_95():
    res = r_factor(delay_ms=0.0, loss_rate=0.02, codec="g722", wideband=True)
    assert res.ie_eff == pytest.approx(res.ie + (95 - res.ie) * 2 / (2 + res.bpl))


def test_wideband_codec_on_narrowband_scale_is_refused():
    with pytest.raises(ParameterError, match="wideband=True"):
        r_factor(delay_ms=0.0, codec="g722")


# ---------------------------------------------------------------- burst ratio


def test_burst_ratio_random_loss_is_one():
    for loss in (0.0, 0.01, 0.1, 0.5):
        assert burst_ratio(loss, 1.0 / (1.0 - loss)) == pytest.approx(1.0)


def test_burst_ratio_gilbert_value():
    # q = 1/4, p = q * 0.05 / 0.95 -> BurstR = 1 / (p + q)
    q = 0.25
    p = q * 0.05 / 0.95
    assert burst_ratio(0.05, 4.0) == pytest.approx(1 / (p + q))
    assert burst_ratio(0.05, 4.0) > 1.0


def test_bursty_loss_hurts_more():
    br = burst_ratio(0.05, 4.0)
    random_ = r_factor(delay_ms=0.0, loss_rate=0.05, burst_ratio=1.0)
    bursty = r_factor(delay_ms=0.0, loss_rate=0.05, burst_ratio=br)
    assert bursty.r_factor < random_.r_factor


@pytest.mark.parametrize("args", [(1.0, 2.0), (-0.1, 2.0), (0.1, 0.5), (0.9, 1.0)])
def test_burst_ratio_rejects_impossible(args):
    with pytest.raises(ParameterError):
        burst_ratio(*args)


# ---------------------------------------------------------------- table and lookup


def test_unknown_codec_lists_known_ones():
    with pytest.raises(ParameterError) as info:
        r_factor(delay_ms=0.0, codec="speex")
    for name in ("pcmu", "g729", "opus"):
        assert name in str(info.value)


def test_unknown_codec_with_explicit_values_works():
    res = r_factor(delay_ms=0.0, loss_rate=0.01, codec="speex", ie=10.0, bpl=20.0)
    assert res.source == "explicit"
    assert res.ie_eff == pytest.approx(10 + 85 * 1 / (1 + 20))


def test_explicit_ie_overrides_table():
    res = r_factor(delay_ms=0.0, codec="g729", ie=0.0)
    assert res.ie == 0.0 and res.bpl == 19.0


@pytest.mark.parametrize(
    "codec, bitrate, ie", [("g726", 40000, 2), ("g726", 32000, 7), ("g726", 24000, 25),
                           ("g726", 16000, 50), ("g723", 6300, 15), ("gsm", None, 20),
                           ("amr-nb", 12200, 5), ("pcma", None, 0), ("l16", None, 0)]
)
def test_narrowband_table_values(codec, bitrate, ie):
    assert ie_bpl(codec, bitrate=bitrate)[0] == ie


def test_unknown_bitrate_lists_tabulated_ones():
    with pytest.raises(ParameterError, match="32000"):
        ie_bpl("g726", bitrate=12345)


def test_every_row_has_provenance():
    statuses = {"g113", "g113-secondary", "estimate"}
    for row in CODEC_IMPAIRMENTS:
        assert row.ie_status in statuses and row.bpl_status in statuses
        assert len(row.note) > 20
        assert 0 <= row.ie <= 95 and row.bpl > 0
    assert set(known_codecs()) >= {"pcmu", "pcma", "g722", "g723", "g726", "g729",
                                   "amr-nb", "opus", "l16"}


def test_opus_is_flagged_as_estimate_and_interpolates():
    ie16, _, src = ie_bpl("opus", bitrate=16000, wideband=True)
    ie24, _, _ = ie_bpl("opus", bitrate=24000, wideband=True)
    ie20, _, src20 = ie_bpl("opus", bitrate=20000, wideband=True)
    assert "estimate" in src and "estimate" in src20
    assert min(ie16, ie24) <= ie20 <= max(ie16, ie24)
    assert r_factor(delay_ms=0.0, codec="opus", wideband=True).estimated


def test_result_is_frozen():
    res = r_factor(delay_ms=10.0)
    assert isinstance(res, EModelResult)
    with pytest.raises(AttributeError):
        res.r_factor = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_ms": -1.0},
        {"delay_ms": float("nan")},
        {"delay_ms": 0.0, "loss_rate": 1.5},
        {"delay_ms": 0.0, "loss_rate": -0.1},
        {"delay_ms": 0.0, "burst_ratio": 0.0},
        {"delay_ms": 0.0, "delay_model": "fancy"},
        {"delay_ms": "slow"},
        {"delay_ms": 0.0, "codec": None},
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ParameterError):
        r_factor(**kwargs)


@given(
    st.floats(0, 2000),
    st.floats(0, 1),
    st.floats(0.5, 10),
    st.sampled_from(["pcmu", "g729", "g723", "g726", "amr-nb", "gsm"]),
)
def test_mos_always_in_range(delay_ms, loss_rate, br, codec):
    res = r_factor(delay_ms=delay_ms, loss_rate=loss_rate, burst_ratio=br, codec=codec)
    assert 1.0 <= res.mos_cqe <= 4.5
    # Ie,eff can pass 95 for bursty heavy loss (Ppl / BurstR + Bpl < Ppl): G.107's formula.
    assert res.ie_eff >= res.ie
    if br <= 1.0:
        assert res.ie_eff <= 95.0 + 1e-9
