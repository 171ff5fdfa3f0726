"""Paths as scenarios: ``Scenario(path=...)`` -> ``run`` -> ``Result`` (voicelab.experiments + voicelab.hybrid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicelab.errors import ParameterError
from voicelab.experiments import RESULT_COLUMNS, Scenario, Study, run
from voicelab.experiments.result import DIRECTIONS

ROOT = Path(__file__).resolve().parents[1]
SPEECH = "/work/shared/datasets/speech"


@pytest.fixture
def natural(monkeypatch):
    data = os.environ.get("VOICELAB_DATA") or (SPEECH if Path(SPEECH).is_dir() else "")
    if not data:
        pytest.skip("natural speech needed (set VOICELAB_DATA to the speech datasets)")
    monkeypatch.setenv("VOICELAB_DATA", data)


# ----------------------------------------------------------------------------- Scenario
def test_path_is_canonical_round_trips_and_leaves_old_keys_alone():
    s = Scenario(mode="loopback", path=" PSTN-National-Mobile + Trunk+SBC ", seconds=2)
    assert s.path == "pstn-national-mobile+trunk+sbc"
    assert s == Scenario(mode="loopback", path="pstn-national-mobile+trunk+sbc", seconds=2)
    assert s.key() == Scenario(mode="loopback", path="pstn-national-mobile+trunk+sbc", seconds=2).key()
    assert Scenario.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert Scenario.from_yaml(s.to_yaml()) == s and "path: pstn-national-mobile+trunk+sbc" in s.to_yaml()
    assert s.deterministic is False
    plain = Scenario(mode="loopback", seconds=2)
    # no path: the field is not in the canonical form, so keys written before it existed still match
    assert "path" not in plain.to_dict() and plain.key() != s.key()
    assert s.with_(path=None) == plain
    assert plain.with_(path="browser+gateway+sip", codec="opus").path == "browser+gateway+sip"
    assert Scenario(mode="vnet", path="pstn-local-landline+trunk+relay", channel={"delay_ms": 20}).uplink.delay_ms == 20


@pytest.mark.parametrize("fields, words", [
    ({"mode": "loopback", "path": "pstn-mars+trunk"}, "path 'pstn-mars\\+trunk': unknown phone-side preset"),
    ({"mode": "loopback", "path": "pstn-local-landline"}, "path 'pstn-local-landline'.*comes the SIP trunk"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk+sbc+relay"}, "only one of"),
    ({"mode": "loopback", "path": "browser+sip"}, "browser path"),
    ({"mode": "loopback", "path": ""}, "path ''"),
    ({"mode": "loopback", "path": 7}, "path must be"),
    ({"mode": "sim", "path": "pstn-local-landline+trunk"}, "mode='sim'"),
    ({"mode": "vnet", "path": "browser+gateway+sip"}, "loopback only"),
    ({"mode": "loopback", "transport": "webrtc", "codec": "opus", "path": "browser+gateway+sip"}, "transport 'webrtc'"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "codec": "opus"}, "codec 'opus'.*G.711"),
    ({"mode": "loopback", "path": "browser+gateway+sip", "codec": "g729"}, "codec 'g729'.*browser"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "sip_transport": "tcp"}, "sip_transport.*without a path"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "srtp": True}, "srtp.*without a path"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "auth": "u:p"}, "auth.*without a path"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "channel": "wifi"}, "uplink/downlink.*mode='vnet'"),
    ({"mode": "vnet", "path": "pstn-local-landline+trunk", "caller_nat": "symmetric"}, "caller_nat"),
    ({"mode": "vnet", "path": "pstn-local-landline+trunk", "method": "sip-relay"}, "method"),
    ({"mode": "vnet", "path": "pstn-local-landline+trunk", "virtual_time": True}, "virtual_time"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "input": "x.wav"}, "input"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "fec": True}, "fec"),
    ({"mode": "loopback", "path": "pstn-local-landline+trunk", "codec_params": {"bitrate": 8000}}, "codec_params"),
])
def test_bad_path_scenarios_are_one_line_parameter_errors(fields, words):
    with pytest.raises(ParameterError, match=words) as exc:
        Scenario(**fields)
    assert "\n" not in str(exc.value)


_KEYS = r"""
import json, sys
from voicelab.experiments import Scenario
print(json.dumps([Scenario.from_dict(d).key() for d in json.loads(sys.argv[1])]))
"""


def test_path_scenario_keys_are_the_same_in_other_processes_and_hash_seeds():
    scenarios = [Scenario(mode="loopback", path="pstn-national-mobile+trunk+sbc", seconds=3, seed=4),
                 Scenario(mode="loopback", path="browser+gateway+sip", codec="opus"),
                 Scenario(mode="vnet", path="pstn-international+trunk+relay", uplink={"delay_ms": 30})]
    arg = json.dumps([s.to_dict() for s in scenarios])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = [subprocess.run([sys.executable, "-c", _KEYS, arg], env={**env, "PYTHONHASHSEED": hs}, capture_output=True,
                           text=True, timeout=60, check=True).stdout for hs in ("1", "2")]
    assert outs[0] == outs[1]
    assert json.loads(outs[0]) == [s.key() for s in scenarios]
    assert len(set(json.loads(outs[0]))) == 3


# ----------------------------------------------------- Result: the path's result, mapped
def _pstn_result(net: str = "loopback") -> dict:
    """What ``hybrid.path_call`` returns for a PSTN path (shape as in voicelab.hybrid._path_result)."""
    live = {"codec": "pcmu", "setup_ms": 4.0, "post_dial_delay_ms": 3.0, "seconds": 2.0,
            "caller_to_agent.mouth_to_ear_ms": 80.0, "agent_to_caller.mouth_to_ear_ms": 81.0,
            "caller_to_agent.loss_rate": 0.0, "agent_to_caller.loss_rate": 0.01, "caller_to_agent.pesq_nb": 4.4,
            "caller_to_agent.r_factor": 93.0, "caller_to_agent.jitter_ms": 0.3, "caller_to_agent.packets_sent": 100}
    hops = [{"hop": "AMR-NB terminal", "kind": "terminal", "delay_ms": 40.0, "how": "measured (sim)", "source": "lab"},
            {"hop": "propagation", "kind": "propagation", "delay_ms": 4.0, "how": "modelled", "source": "G.114"}]
    out = {"path": "pstn-national-mobile+trunk", "pstn_ms": 44.5, "pstn_parts_ms": 44.0, "phone_to_agent_ms": 124.5,
           "agent_to_phone_ms": 125.5, "pstn_pesq_nb": 3.8, "trunk_pesq_nb": 4.4, "setup_ms": 4.0,
           "synthetic_speech": False, "deterministic": False, "net": net, "live": live}
    if net == "loopback":
        out["hops"] = hops + [{"hop": "SIP trunk -> agent", "kind": "gateway", "delay_ms": 80.0,
                               "how": "measured (live)", "source": "lab"}]
        out["end_to_end"] = {"caller_to_agent": {"mouth_to_ear_ms": 124.6, "pesq_nb": 3.7, "pesq_wb": 2.9, "r_factor": 84.6,
                                                 "mos_cqe": 4.19, "delay_confidence": 0.97, "ie_sum": 5.0},
                             "agent_to_caller": {"mouth_to_ear_ms": 125.4, "pesq_nb": 3.9, "pesq_wb": None,
                                                 "r_factor": 84.5, "mos_cqe": 4.18, "delay_confidence": 0.96}}
    else:
        leg = [{"hop": "carrier link", "kind": "network", "delay_ms": 0.01, "how": "measured (capture)", "source": "x"},
               {"hop": "endpoints", "kind": "endpoint", "delay_ms": 79.99, "how": "measured (live)", "source": "x"}]
        out["hops"], out["hops_agent_to_phone"] = hops + leg, hops + leg
    return out


def _fake_engine(monkeypatch, result: dict, seen: list) -> None:
    import voicelab.hybrid as hybrid

    async def fake(path, **kw):
        seen.append((path, kw))
        return result

    monkeypatch.setattr(hybrid, "path_call_async", fake)


def test_a_pstn_path_result_maps_onto_the_one_column_set(monkeypatch):
    seen: list = []
    _fake_engine(monkeypatch, _pstn_result(), seen)
    s = Scenario(mode="loopback", path="pstn-national-mobile+trunk", seconds=2, seed=3, jitter_buffer="fixed:40",
                 speech="harvard")
    r = run(s, quality=False)
    assert seen == [("pstn-national-mobile+trunk", dict(seconds=2.0, speech="harvard", seed=3, jitter_buffer="fixed:40",
                                                         quality=False, codec="pcmu", net="loopback", links=None))]
    rows = r.to_rows()
    assert all(list(row) == RESULT_COLUMNS for row in rows) and [x["direction"] for x in rows] == list(DIRECTIONS)
    up, down = rows
    assert up["path_spec"] == up["path"] == "pstn-national-mobile+trunk" and up["deterministic"] is False
    assert (up["mouth_to_ear_ms"], down["mouth_to_ear_ms"]) == (124.5, 125.5)  # end to end, not the live leg's 80/81
    assert (up["hops_measured_ms"], up["hops_modelled_ms"]) == (120.0, 4.0)
    assert (down["hops_measured_ms"], down["hops_modelled_ms"]) == (121.0, 4.0)
    # the way back: the live leg's own delay, then the phone side's hops in reverse
    back = json.loads(down["hops"])
    assert [h["delay_ms"] for h in back] == [81.0, 4.0, 40.0] and back[0]["how"] == "measured (live)"
    assert [h["hop"] for h in json.loads(up["hops"])][-1] == "SIP trunk -> agent"
    # packet counters are the live leg's; scores are end to end (the live leg's alone, 4.4 / 93, are not the path's)
    assert (up["loss_rate"], down["loss_rate"], up["jitter_ms"], up["packets_sent"]) == (0.0, 0.01, 0.3, 100)
    assert (up["pesq_nb"], up["pesq_wb"], up["r_factor"], up["mos_cqe"], up["delay_confidence"]) == (3.7, 2.9, 84.6, 4.19, 0.97)
    assert (down["pesq_nb"], down["pesq_wb"], down["r_factor"]) == (3.9, None, 84.5) and r.raw["pstn_pesq_nb"] == 3.8
    assert up["codec_negotiated"] == "pcmu" and up["setup_ms"] == 4.0 and up["connected"] is True
    assert set(r.to_row()) >= {"caller_to_agent.hops", "path_spec"}
    assert isinstance(r.to_row()["caller_to_agent.hops"], str)
    assert r.directions["caller_to_agent"]["hops"][0]["hop"] == "AMR-NB terminal"  # a list in the Result itself
    assert r.provenance and r.provenance.get("prov_python")


def test_a_vnet_pstn_path_passes_the_carrier_link_and_uses_the_measured_way_back(monkeypatch):
    seen: list = []
    _fake_engine(monkeypatch, _pstn_result("vnet"), seen)
    s = Scenario(mode="vnet", path="pstn-national-mobile+trunk+sbc", uplink={"delay_ms": 20}, seconds=2)
    r = run(s, quality=False)
    links = seen[0][1]["links"]
    assert seen[0][1]["net"] == "vnet"
    assert links["carrier"]["up"].delay_ms == 20 and links["carrier"]["down"].delay_ms == 0
    up, down = r.to_rows()
    assert json.loads(down["hops"])[-1]["hop"] == "endpoints"
    assert up["hops_measured_ms"] == pytest.approx(120.0) and up["hops_modelled_ms"] == 4.0
    assert up["channel.delay_ms"] == 20.0


@pytest.mark.parametrize("passthrough", [False, True])
def test_a_browser_path_result_maps_end_to_end(monkeypatch, passthrough):
    if passthrough:  # the gateway's per-packet delay is listed beside the end-to-end hop that contains it
        hops = [{"hop": "browser -> agent (one coding)", "delay_ms": 75.0, "how": "measured (live)"},
                {"hop": "gateway (pass-through)", "delay_ms": 0.2, "how": "measured (live)"}]
        parts = 75.0
    else:
        hops = [{"hop": "WebRTC leg", "delay_ms": 70.0, "how": "measured (live)"},
                {"hop": "gateway", "delay_ms": 2.0, "how": "measured (live)"},
                {"hop": "SIP leg", "delay_ms": 80.0, "how": "measured (live)"}]
        parts = 152.0
    res = {"path": "browser+gateway+sip", "webrtc_codec": "pcmu" if passthrough else "opus", "sip_codec": "pcmu",
           "passthrough": passthrough, "setup_ms": 30.0, "synthetic_speech": True, "deterministic": False}
    for name in ("browser_to_agent", "agent_to_browser"):
        res.update({f"{name}.hops": hops, f"{name}.total_ms": parts + 1.0, f"{name}.parts_ms": parts,
                    f"{name}.pesq_nb": 4.1, f"{name}.pesq_wb": 3.9})
    seen: list = []
    _fake_engine(monkeypatch, res, seen)
    codec = "pcmu" if passthrough else "opus"
    r = run(Scenario(mode="loopback", path="browser+gateway+sip", codec=codec, seconds=2), quality=False)
    assert seen[0][1]["codec"] == codec
    for row in r.to_rows():
        assert list(row) == RESULT_COLUMNS
        assert row["mouth_to_ear_ms"] == parts + 1.0 and row["pesq_wb"] == 3.9 and row["arrived"] is True
        assert row["hops_measured_ms"] == parts and row["hops_modelled_ms"] == 0.0
        assert row["loss_rate"] is None and row["codec_negotiated"] == codec and row["setup_ms"] == 30.0
    assert any("synthetic" in w for w in r.warnings)


def test_calls_without_a_path_leave_the_path_columns_empty(natural):
    rows = run(Scenario(mode="sim", seconds=1), quality=False).to_rows()
    for row in rows:
        assert list(row) == RESULT_COLUMNS
        assert row["path_spec"] is None and row["hops"] is None and row["hops_measured_ms"] is None


# ------------------------------------------------------------------------- live, loopback
@pytest.mark.timeout(90)
def test_a_live_loopback_path_trial(natural):
    s = Scenario(mode="loopback", path="pstn-local-landline+trunk", seconds=2, seed=1)
    r = run(s)
    rows = r.to_rows()
    assert all(list(row) == RESULT_COLUMNS for row in rows)
    assert r.deterministic is False and r.raw["net"] == "loopback"
    for row, total in zip(rows, (r.raw["phone_to_agent_ms"], r.raw["agent_to_phone_ms"])):
        assert row["arrived"] is True and row["path_spec"] == "pstn-local-landline+trunk"
        assert row["mouth_to_ear_ms"] == total and 40 < total < 400, row
        # the hop table adds up to the end-to-end delay (phone side: parts vs measured within 2 ms, docs/paths.md)
        assert abs(row["hops_measured_ms"] + row["hops_modelled_ms"] - total) <= 2.0, row
        assert row["hops_modelled_ms"] > 0 and row["loss_rate"] is not None
        assert row["codec_negotiated"] == "pcmu" and row["setup_ms"] > 0 and row["synthetic_speech"] is False
    assert r.raw["trunk_pesq_nb"] is not None and r.raw["trunk_pesq_nb"] > 3.0


@pytest.mark.timeout(90)
def test_a_mobile_path_is_scored_end_to_end(natural):
    """PESQ / R-factor of the whole path (the phone's mouth -> the agent, the agent -> the phone's ear)."""
    r = run(Scenario(mode="loopback", path="pstn-national-mobile+trunk", seconds=2, seed=1))
    up, down = r.to_rows()
    trunk = r.raw["trunk_pesq_nb"]
    for row in (up, down):
        # the AMR-NB leg costs: end to end is below the clean G.711 trunk leg alone, and still speech
        assert row["pesq_nb"] is not None and 2.5 < row["pesq_nb"] < trunk - 0.1, (row["pesq_nb"], trunk)
        # the E-model over the whole path: AMR-NB 12.2 (Ie 5) + G.711 (0), ~150 ms: R about 84
        assert 75.0 < row["r_factor"] < 93.2 - 5.0 and 3.8 < row["mos_cqe"] < 4.4
        assert row["delay_confidence"] > 0.5
    # the cross-correlated end-to-end delay agrees with the hop table's total within 10 ms
    assert abs(r.raw["end_to_end"]["caller_to_agent"]["mouth_to_ear_ms"] - r.raw["phone_to_agent_ms"]) < 10.0
    assert abs(r.raw["end_to_end"]["agent_to_caller"]["mouth_to_ear_ms"] - r.raw["agent_to_phone_ms"]) < 10.0
    assert r.raw["end_to_end"]["caller_to_agent"]["ie_sum"] == 5.0


@pytest.mark.timeout(120)
def test_a_study_of_two_path_arms_with_repeats_and_talkers(natural, tmp_path):
    """The plain SIP call against a phone path, 2 paired repeats, talkers rotating: one store, intervals, a verdict."""
    study = Study(base=Scenario(mode="loopback", seconds=1, codec="pcmu"),
                  grid={"arm": [{"name": "sip"}, {"name": "landline", "path": "pstn-local-landline+trunk"}]},
                  repeats=2, talkers="corpus", seed=2, name="paths")
    df = study.run(store=tmp_path / "store", progress=False)
    assert df["error"].isna().all(), df["error"].dropna().tolist()
    assert len(df) == 2 * 2 * 2 and df["trial_id"].nunique() == 4
    assert set(df["path_spec"].dropna()) == {"pstn-local-landline+trunk"} and df["path_spec"].isna().sum() == 4
    # paired: repeat r sends the same utterance over both arms
    assert df.groupby("repeat")["speech_item"].nunique().eq(1).all()
    assert df["speech_item"].nunique() == 2
    summary = study.summary(df, metrics=["mouth_to_ear_ms"])
    assert len(summary) == 4 and summary["n"].eq(2).all()
    line = study.compare(df, "arm", "landline", "sip", "mouth_to_ear_ms", unit="ms")
    assert "n = 2" in line
    # the store reads back the same path rows (resume: nothing runs again)
    again = study.run(store=tmp_path / "store", progress=False)
    assert sorted(again["trial_id"]) == sorted(df["trial_id"])
    hop = json.loads(again[(again["path_spec"].notna()) & (again["direction"] == "caller_to_agent")]["hops"].iloc[0])
    assert hop[0]["how"] == "modelled"


def test_cli_run_refuses_a_bad_path_in_one_line(tmp_path, capsys):
    from voicelab.cli import main

    f = tmp_path / "p.yaml"
    f.write_text("mode: loopback\npath: pstn-mars+trunk\n")
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "path 'pstn-mars+trunk': unknown phone-side preset" in err


def test_the_example_paths_study_parses_into_path_arms():
    study = Study.from_yaml(ROOT / "examples" / "paths_study.yaml")
    assert Study.run_settings(ROOT / "examples" / "paths_study.yaml")["store"] == "results/study-paths"
    arms = {t.point["arm"]["name"]: t.scenario for t in study.trials() if t.repeat == 0}
    assert arms["sip"].path is None and arms["mobile-sbc"].path == "pstn-national-mobile+trunk+sbc"
    assert arms["browser-gateway"].path == "browser+gateway+sip" and arms["browser-gateway"].codec == "opus"
    assert len(study.trials()) == 3 * study.repeats
