"""PSTN paths hop by hop (sim) and the cost of a path."""

from __future__ import annotations

import pytest

from voicelab.cost import EXAMPLE_PRICES, Prices, cost_per_1000_min, wire_kbps
from voicelab.errors import ParameterError
from voicelab.sim.paths import HOPS, PSTN_PRESETS, Hop, path_hops, propagation, simulate_path


@pytest.mark.parametrize("preset", sorted(PSTN_PRESETS))
def test_pstn_preset_delay_is_the_sum_of_its_hops(preset, natural_env):
    r = simulate_path(preset, seed=3, max_speech_s=5.0)
    # measured end to end (cross-correlation through the tandem legs) == hop table within 2 ms
    assert abs(r.residual_ms) <= 2.0, r.hops
    assert set(r.hops["how"]) <= {"modelled", "measured (sim)"}
    assert (r.hops["how"] == "measured (sim)").any() and (r.hops["how"] == "modelled").any()
    assert r.hops["source"].str.len().min() > 10  # every figure says where it comes from
    assert not r.synthetic_speech


def test_tandem_coding_costs_quality_and_distance_costs_delay(natural_env):
    local = simulate_path("pstn-local-landline", seed=1, max_speech_s=5.0)
    mobile = simulate_path("pstn-national-mobile", seed=1, max_speech_s=5.0)
    intl = simulate_path("pstn-international", seed=1, max_speech_s=5.0)
    assert local.mouth_to_ear_ms < mobile.mouth_to_ear_ms < intl.mouth_to_ear_ms
    # AMR-NB -> G.711 (and -> G.729 -> G.711) tandems lose quality against a G.711-only path
    assert local.pesq_nb - mobile.pesq_nb > 0.2
    assert mobile.pesq_nb - intl.pesq_nb > 0.2
    # G.114: 9000 km of fibre is 45 ms one way
    assert propagation(9000).delay_ms == pytest.approx(45.0)


def test_bad_paths_are_one_line_errors():
    with pytest.raises(ParameterError, match="unknown path preset"):
        path_hops("pstn-mars")
    with pytest.raises(ParameterError, match="unknown hop"):
        path_hops(["nope", "carrier-media-gateway"])
    with pytest.raises(ParameterError, match="codec leg"):
        path_hops(["radio-umts"])
    with pytest.raises(ParameterError, match="end with a codec leg"):
        path_hops(["carrier-media-gateway", "radio-umts"])
    with pytest.raises(ParameterError):
        Hop("x", "wormhole")
    with pytest.raises(ParameterError):
        propagation(-1)
    assert "carrier-media-gateway" in HOPS


def test_wire_bitrates_match_the_packet_arithmetic():
    assert wire_kbps("pcmu") == pytest.approx(80.0)            # (160 + 40) B * 50/s
    assert wire_kbps("pcmu", srtp=True) == pytest.approx(84.0)
    assert wire_kbps("g729") == pytest.approx(24.0)            # (20 + 40) B * 50/s
    assert wire_kbps("pcmu", transport="turn-channeldata") == pytest.approx(81.6)
    assert wire_kbps("pcmu", transport="turn-send") == pytest.approx(94.4)
    assert wire_kbps("opus", bitrate=16000, srtp=True) == pytest.approx((40 + 40 + 10) * 8 * 50 / 1000)
    assert wire_kbps("pcmu", ptime_ms=30) < wire_kbps("pcmu", ptime_ms=20)
    ws = wire_kbps("pcmu", transport="ws")
    # 160 B of mu-law -> 216 B of base64, ~170 B of JSON around it, 2+4 B WebSocket header, 40 B TCP/IP
    assert 160 < ws < 200, ws
    with pytest.raises(ParameterError):
        wire_kbps("opus", transport="ws")
    with pytest.raises(ParameterError):
        wire_kbps("pcmu", transport="carrier-pigeon")


def test_cost_per_1000_minutes():
    p = Prices(carrier_per_min=0.01, turn_per_gb=1.0, egress_per_gb=0.1, label="test")
    c = cost_per_1000_min(up_kbps=80, down_kbps=80, prices=p, phone_leg=True, relayed=True)
    gb = 2 * 80e3 / 8 * 60000 / 1e9  # 1.2 GB for 1000 min both ways
    assert c["gb_per_1000_min"] == pytest.approx(gb)
    assert c["carrier"] == pytest.approx(10.0)
    assert c["turn"] == pytest.approx(gb)
    assert c["egress"] == pytest.approx(0.1 * gb / 2)
    assert c["total"] == pytest.approx(c["carrier"] + c["turn"] + c["egress"])
    web = cost_per_1000_min(up_kbps=80, down_kbps=80, prices=p)
    assert web["carrier"] == 0 and web["turn"] == 0
    assert "example" in EXAMPLE_PRICES.label
    with pytest.raises(ParameterError):
        Prices(turn_per_gb=-1)
    with pytest.raises(ParameterError):
        cost_per_1000_min(up_kbps="fast", down_kbps=1, prices=p)


def test_tandem_chains_cost_quality(natural_env):
    from voicelab.sim.paths import TANDEM_CHAINS, tandem

    one = tandem("G.711", seed=1, max_speech_s=5.0)
    two = tandem("AMR-NB -> G.711", seed=1, max_speech_s=5.0)
    gw = tandem("Opus -> G.711 -> Opus (gateway both ways)", seed=1, max_speech_s=5.0)
    assert two.pesq_nb < one.pesq_nb - 0.2          # AMR-NB's own loss, kept by the tandem
    assert gw.pesq_nb > one.pesq_nb - 0.3           # Opus around G.711 costs little narrowband quality
    assert abs(two.residual_ms) <= 2.0
    with pytest.raises(ParameterError):
        tandem("nope")
    assert all(TANDEM_CHAINS.values())


def test_cost_table_and_figures():
    from voicelab.cost import PATHS, cost_table
    from voicelab.viz.paths import hop_delays, path_costs

    t = cost_table(EXAMPLE_PRICES, measured_kbps={"app: WebSocket media, mu-law": 150.0})
    assert list(t["path"]) == list(PATHS)
    assert t.loc[t["path"] == "app: WebSocket media, mu-law", "kbps_source"].item() == "measured"
    turn = t[t["path"].str.contains("TURN")]
    assert (turn["turn"] > 0).all() and (t[~t["path"].str.contains("TURN")]["turn"] == 0).all()
    phone = t[t["path"].str.startswith("phone")]
    assert (phone["carrier"] == EXAMPLE_PRICES.carrier_per_min * 1000).all()
    fig = path_costs(t)
    assert "example" in fig.layout.title.text
    hops = {"a": [{"hop": "x", "delay_ms": 10.0, "how": "modelled"}, {"hop": "y", "delay_ms": 20.0, "how": "measured (sim)"}]}
    f2 = hop_delays(hops)
    assert len(f2.data) == 2 and f2.data[0].x[0] == 10.0
    with pytest.raises(ParameterError):
        hop_delays({})


def test_tandem_and_preset_tables_vary_the_talker(natural_env):
    from voicelab.sim.paths import preset_table, tandem_table

    t = tandem_table(["G.711", "AMR-NB -> G.711"], n_items=2, max_speech_s=3.0)
    assert len(t) == 4 and t["talker"].nunique() == 2 and t["natural"].all()
    p = preset_table(["pstn-local-landline"], n_items=2, max_speech_s=3.0)
    assert len(p) == 2 and (p["residual_ms"].abs() <= 2.0).all()
    with pytest.raises(ParameterError):
        tandem_table(n_items=0)
