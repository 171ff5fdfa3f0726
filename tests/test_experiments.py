"""voicelab.experiments: Scenario, Result, run() across modes, provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import ParameterError
from voicelab.experiments import RESULT_COLUMNS, Result, Scenario, provenance, run
from voicelab.experiments.result import CALL_METRICS, DIRECTION_METRICS, DIRECTIONS
from voicelab.net import ChannelConfig, preset

ROOT = Path(__file__).resolve().parents[1]
SPEECH = "/work/shared/datasets/speech"


def _natural_env() -> dict[str, str]:
    """VOICELAB_DATA for natural (deterministic) speech: CI sets it; locally the shared copy."""
    data = os.environ.get("VOICELAB_DATA") or (SPEECH if Path(SPEECH).is_dir() else "")
    if not data:
        pytest.skip("natural speech needed (set VOICELAB_DATA to the speech datasets)")
    return {"VOICELAB_DATA": data}


@pytest.fixture
def natural(monkeypatch):
    for k, v in _natural_env().items():
        monkeypatch.setenv(k, v)


# ----------------------------------------------------------------------------- Scenario
def test_scenario_channel_shorthand_sets_both_directions_and_round_trips():
    s = Scenario(mode="sim", channel="wifi", codec="OPUS", jitter_buffer="FIXED:60.0")
    assert s.uplink == s.downlink == preset("wifi")
    assert s.channel is None and s.codec == "opus" and s.jitter_buffer == "fixed:60"
    assert Scenario.from_dict(s.to_dict()) == s
    assert Scenario.from_yaml(s.to_yaml()) == s
    assert json.loads(json.dumps(s.to_dict())) == s.to_dict()
    # equal scenarios spelled differently have one key; any change changes it
    assert Scenario(mode="sim", uplink="wifi", downlink=preset("wifi").to_dict(), codec="opus").key() == s.key()
    assert s.with_(seed=1).key() != s.key()
    assert len({s, Scenario.from_dict(s.to_dict())}) == 1  # hashable despite its codec_params dict


def test_with_dotted_names_reach_channels_and_codec_params():
    s = Scenario(mode="sim", codec="opus", channel="lan")
    t = s.with_(**{"uplink.loss_rate": 0.05, "codec_params.bitrate": 16000})
    assert t.uplink.loss_rate == 0.05 and t.downlink == s.downlink
    assert t.codec_params == {"bitrate": 16000}
    both = Scenario().with_(**{"channel.jitter_ms": 7})
    assert both.uplink.jitter_ms == both.downlink.jitter_ms == 7.0
    assert Scenario().with_(channel="3g").uplink == preset("3g")
    with pytest.raises(ParameterError, match="uplink"):
        s.with_(**{"uplink.nonsense": 1})
    with pytest.raises(ParameterError, match="fields"):
        s.with_(colour="red")


@pytest.mark.parametrize("fields, word", [
    ({"mode": "cloud"}, "mode"),
    ({"transport": "carrier-pigeon"}, "transport"),
    ({"mode": "loopback", "transport": "webrtc", "virtual_time": True}, "virtual_time"),
    ({"mode": "sim", "virtual_time": True}, "virtual_time"),
    ({"mode": "sim", "transport": "webrtc"}, "transport"),
    ({"mode": "loopback", "transport": "ws", "codec": "opus"}, "codec"),
    ({"mode": "loopback", "transport": "webrtc", "codec": "g729"}, "codec"),
    ({"mode": "loopback", "sip_transport": "sctp"}, "sip_transport"),
    ({"mode": "sim", "srtp": True}, "srtp"),
    ({"mode": "loopback", "auth": "nopassword"}, "auth"),
    ({"mode": "vnet", "method": "webrtc-stun"}, "method"),
    ({"mode": "sim", "caller_nat": "symmetric"}, "caller_nat"),
    ({"mode": "vnet", "transport": "ws"}, "ws"),
    ({"mode": "loopback", "seconds": 0.5}, "seconds"),
    ({"seed": -1}, "seed"),
    ({"uplink": "moon"}, "uplink"),
    ({"mode": "loopback", "plc": False}, "plc"),
    ({"mode": "loopback", "codec_params": {"bitrate": 8000}}, "codec_params"),
    ({"mode": "vnet", "input": "x.wav"}, "input"),
    ({"jitter_buffer": "elastic"}, "jitter buffer"),
])
def test_bad_fields_are_parameter_errors_naming_the_field(fields, word):
    with pytest.raises(ParameterError, match=word):
        Scenario(**fields)


def test_from_dict_unknown_keys_lists_the_valid_ones():
    with pytest.raises(ParameterError, match=r"unknown scenario field\(s\) \['colour'\].*valid: mode, transport"):
        Scenario.from_dict({"mode": "sim", "colour": "red"})


def test_vnet_method_defaults_by_transport():
    assert Scenario(mode="vnet").method == "sip"
    assert Scenario(mode="vnet", transport="webrtc", codec="opus").method == "webrtc-stun"


def test_webrtc_codecs_agree_with_the_peer():
    from voicelab.experiments.scenario import WEBRTC_CODECS
    from voicelab.webrtc.peer import WEBRTC_CODECS as PEER

    assert set(WEBRTC_CODECS) == set(PEER)


_channels = st.none() | st.builds(
    ChannelConfig,
    delay_ms=st.floats(0, 500), jitter_ms=st.floats(0, 100), loss_rate=st.floats(0, 0.5),
    burst_length=st.none() | st.floats(1, 10),
)


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(["sim", "loopback"]), up=_channels, down=_channels, seed=st.integers(0, 2**31),
       seconds=st.floats(1, 60), codec=st.sampled_from(["pcmu", "pcma", "g722"]),
       jb=st.sampled_from(["fixed:60", "adaptive", "fixed:20", "adaptive:20:200"]))
def test_scenario_round_trips_and_key_is_a_function_of_the_canonical_form(mode, up, down, seed, seconds, codec, jb):
    s = Scenario(mode=mode, uplink=up, downlink=down, seed=seed, seconds=seconds, codec=codec, jitter_buffer=jb)
    back = Scenario.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.key() == s.key()
    assert Scenario.from_yaml(s.to_yaml()) == s


# ------------------------------------------------------------------------------- Result
def test_sim_run_has_both_directions_and_the_one_column_set(natural):
    s = Scenario(mode="sim", codec="pcmu", uplink=ChannelConfig(loss_rate=0.1, delay_ms=30),
                 downlink=ChannelConfig(delay_ms=10), seconds=2, seed=3)
    r = run(s)
    assert r.deterministic is True
    rows = r.to_rows()
    assert [row["direction"] for row in rows] == list(DIRECTIONS)
    assert all(list(row) == RESULT_COLUMNS for row in rows)
    up, down = rows
    # each direction went through its own channel
    assert up["channel.loss_rate"] == 0.1 and down["channel.loss_rate"] == 0.0
    assert up["loss_rate"] > 0.02 and down["loss_rate"] == 0.0
    assert up["mouth_to_ear_ms"] > down["mouth_to_ear_ms"] + 10
    assert down["pesq_nb"] > up["pesq_nb"]
    assert up["synthetic_speech"] is False and up["scenario_key"] == s.key()
    wide = r.to_row()
    assert wide["caller_to_agent.mouth_to_ear_ms"] == up["mouth_to_ear_ms"]
    assert wide["uplink.loss_rate"] == 0.1 and wide["downlink.loss_rate"] == 0.0
    back = Result.from_dict(json.loads(r.to_json()))
    assert back.to_dict() == r.to_dict()
    assert r.provenance == provenance()


def test_provenance_is_flat_and_cached():
    p = provenance()
    assert all(k.startswith("prov_") for k in p)
    assert all(v is None or isinstance(v, (str, int, float, bool)) for v in p.values())
    assert p["prov_python"] == ".".join(map(str, sys.version_info[:3]))
    assert p["prov_cores"] == os.cpu_count()
    import numpy

    assert p["prov_numpy"] == numpy.__version__
    if (ROOT / ".git").exists():
        assert p["prov_git_commit"] and len(p["prov_git_commit"]) == 40
    assert provenance() == p and provenance() is not provenance()


def test_run_rejects_what_is_not_a_scenario():
    with pytest.raises(ParameterError, match="Scenario"):
        run(42)


def test_result_schema_lists_are_disjoint_and_fixed():
    assert len(RESULT_COLUMNS) == len(set(RESULT_COLUMNS))
    assert set(CALL_METRICS) <= set(RESULT_COLUMNS) and set(DIRECTION_METRICS) <= set(RESULT_COLUMNS)


# ------------------------------------------------------------------- every mode, one schema
LIVE_AND_VNET = [
    pytest.param(dict(mode="loopback", transport="sip"), id="loopback-sip"),
    pytest.param(dict(mode="loopback", transport="webrtc", codec="opus"), id="loopback-webrtc"),
    pytest.param(dict(mode="loopback", transport="ws"), id="loopback-ws"),
    pytest.param(dict(mode="vnet", transport="sip", virtual_time=True, caller_nat="symmetric", method="sip-relay"),
                 id="vnet-sip-virtual"),
    pytest.param(dict(mode="vnet", transport="webrtc", codec="opus"), id="vnet-webrtc"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fields", LIVE_AND_VNET)
def test_every_mode_returns_the_same_column_set(fields, natural):
    sim = run(Scenario(mode="sim", seconds=1))
    r = run(Scenario(seconds=1, **fields))
    rows = r.to_rows()
    assert set(rows[0]) == set(rows[1]) == set(RESULT_COLUMNS) == set(sim.to_rows()[0])
    assert set(r.to_row()) == set(sim.to_row())
    assert r.deterministic is (fields["mode"] == "vnet" and fields.get("virtual_time", False))
    for row in rows:  # media flowed both ways and was measured (loose bounds: live calls on a busy machine)
        assert row["arrived"] is True, row
        assert row["mouth_to_ear_ms"] is not None and 20 < row["mouth_to_ear_ms"] < 2000, row
        assert row["pesq_nb"] is not None and row["pesq_nb"] > 1.5, row
        assert row["codec_negotiated"] == r.scenario.codec
        assert row["setup_ms"] is not None and row["setup_ms"] > 0
    if fields["transport"] == "webrtc" and fields["mode"] == "loopback":
        assert r.call["ice_path"] == "host/host" and r.call["ice_connect_ms"] is not None
    if fields["mode"] == "vnet":
        assert r.call["path"] in ("direct", "media-relay", "srflx", "prflx", "relay")
    if fields.get("virtual_time"):
        assert len(r.call["trace_sha256"]) == 64


_TWIN = r"""
import json, sys
from voicelab.experiments import Scenario, run
out = []
for d in json.loads(sys.argv[1]):
    s = Scenario.from_dict(d)
    r = run(s).to_dict()
    r.pop("provenance"); r.pop("wall_s")
    out.append({"key": s.key(), "result": r})
print(json.dumps(out, sort_keys=True))
"""


@pytest.mark.timeout(120)
def test_sim_and_vnet_virtual_time_results_and_keys_are_identical_across_processes_and_hash_seeds():
    env = {**os.environ, **_natural_env(), "PYTHONPATH": str(ROOT)}
    scenarios = [
        Scenario(mode="sim", codec="opus", uplink=ChannelConfig(loss_rate=0.05, jitter_ms=10, delay_ms=20),
                 seconds=1.5, seed=11),
        Scenario(mode="vnet", transport="sip", virtual_time=True, caller_nat="port-restricted-cone",
                 method="sip-comedia", channel=ChannelConfig(loss_rate=0.03, jitter_ms=10, delay_ms=15), seconds=1.5,
                 seed=5),
    ]
    arg = json.dumps([s.to_dict() for s in scenarios])
    outs = []
    for hs in ("1", "2"):
        p = subprocess.run([sys.executable, "-c", _TWIN, arg], env={**env, "PYTHONHASHSEED": hs}, capture_output=True,
                           text=True, timeout=110)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.append(p.stdout)
    assert outs[0] == outs[1]
    (sim_key, sim), (vnet_key, vnet) = ((o["key"], o["result"]) for o in json.loads(outs[0]))
    # the scenario key is the same in this process as in two others with other hash seeds
    assert [sim_key, vnet_key] == [s.key() for s in scenarios]
    assert sim["deterministic"] and vnet["deterministic"]
    assert vnet["call"]["trace_sha256"] and sim["directions"]["caller_to_agent"]["loss_rate"] > 0


# ----------------------------------------------------------- compare_transports on the one API
@pytest.mark.timeout(90)
def test_compare_transports_repeats_pair_seeds_and_rotate_speech(natural):
    from voicelab.compare import COMPARE_COLUMNS, compare_transports

    df = compare_transports(transports=("ws", "sip"), conditions={"clean": None}, seconds=1.0, seed=4, repeats=2,
                            speech=["corpus:0", "corpus:3"])
    assert list(df.columns) == COMPARE_COLUMNS
    assert len(df) == 2 * 2 * 2  # trials x transports x directions
    by_trial = df.groupby("trial").agg({"seed": "unique", "speech": "unique"})
    # paired: every transport of trial i has seed + i and the same speech
    assert [list(v) for v in by_trial["seed"]] == [[4], [5]]
    assert [list(v) for v in by_trial["speech"]] == [["corpus:0"], ["corpus:3"]]
    keys = df.drop_duplicates(["trial", "transport"])["scenario_key"]
    assert keys.nunique() == 4
    res = df.attrs["results"]
    assert [(r["trial"], r["transport"]) for r in res] == [(0, "ws"), (0, "sip"), (1, "ws"), (1, "sip")]
    assert Scenario.from_dict(res[0]["scenario"]).key() == df["scenario_key"].iloc[0]
    assert df["pesq_nb"].notna().all()


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"repeats": 1.5}, {"repeats": True}, {"speech": []},
                                    {"speech": ["default", 3]}])
def test_compare_transports_bad_repeats_or_speech(kwargs):
    from voicelab.compare import compare_transports

    with pytest.raises(ParameterError):
        compare_transports(transports=("ws",), **kwargs)


# ---------------------------------------------------------------------- voicelab run CLI
def test_cli_run_prints_the_result_json(tmp_path, capsys, natural):
    from voicelab.cli import main

    s = Scenario(mode="sim", codec="pcma", channel={"loss_rate": 0.05}, seconds=1, seed=2)
    f = tmp_path / "s.yaml"
    f.write_text(s.to_yaml())
    assert main(["run", str(f), "--json", "--set", "seed=3", "--set", "uplink.delay_ms=40"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = s.with_(seed=3, **{"uplink.delay_ms": 40})
    assert out["scenario"] == want.to_dict() and out["scenario_key"] == want.key()
    assert Result.from_dict(out).to_rows()[0].keys() == set(RESULT_COLUMNS)
    assert main(["run", str(f)]) == 0
    text = capsys.readouterr().out
    assert "caller->agent" in text and "pesq_nb" in text


def test_cli_run_errors_are_one_line(tmp_path, capsys):
    from voicelab.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text("mode: sim\ncolour: red\n")
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voicelab: error: unknown scenario field(s) ['colour']") and err.count("\n") == 1
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read scenario file" in capsys.readouterr().err


def test_the_example_scenario_file_is_valid():
    s = Scenario.from_yaml(ROOT / "examples" / "scenario.yaml")
    assert s.mode == "vnet" and s.virtual_time and s.deterministic and s.uplink == s.downlink


def test_run_async_and_run_inside_a_running_loop_agree_for_virtual_time(natural):
    import asyncio

    from voicelab.experiments import run_async

    s = Scenario(mode="vnet", virtual_time=True, caller_nat="full-cone", method="sip-comedia", seconds=1, seed=9,
                 channel={"loss_rate": 0.05})

    def strip(r):
        d = r.to_dict()
        d.pop("provenance"), d.pop("wall_s")
        return d

    async def inside_a_loop():  # as in a notebook cell: run() must not need the loop
        return strip(run(s)), strip(await run_async(s))

    plain = strip(run(s))
    assert asyncio.run(inside_a_loop()) == (plain, plain)


def test_exported_functions_stay_functions_after_their_modules_are_imported():
    import types

    import voicelab.experiments as ex

    for name in ("run", "provenance"):
        module = sys.modules[f"voicelab.experiments.{name}"]
        setattr(ex, name, module)  # what the import system does when it (re)binds a submodule
        assert getattr(ex, name) is getattr(module, name) and not isinstance(getattr(ex, name), types.ModuleType)
    from voicelab.experiments import run as run_fn

    assert run_fn is sys.modules["voicelab.experiments.run"].run
    assert isinstance(ex.stats, types.ModuleType)


def test_result_names_the_corpus_item_sent(natural):
    from voicelab import audio

    r = run(Scenario(mode="sim", seconds=1, speech="corpus:1"), quality=False)
    assert r.speech["item"] in {it.name for it in audio.corpus(sample_rate=16000)}
    assert r.speech["synthetic"] is False and r.to_rows()[0]["speech_item"] == r.speech["item"]
    assert r.directions["caller_to_agent"]["pesq_nb"] is None  # quality=False skips PESQ


def test_scenario_and_result_pickle_for_workers(natural):
    import pickle

    s = Scenario(mode="sim", codec="opus", codec_params={"bitrate": 12000}, channel="lte", seconds=1, seed=1)
    assert pickle.loads(pickle.dumps(s)) == s
    r = run(s, quality=False)
    back = pickle.loads(pickle.dumps(r))
    assert back.to_dict() == r.to_dict() and back.bitrate == 12000


def test_rows_keep_the_sip_password_out():
    s = Scenario(mode="loopback", transport="sip", sip_transport="tls", srtp=True, auth="alice:s3cret", seconds=1)
    r = Result(scenario=s, call={}, directions={}, deterministic=s.deterministic)
    rows = r.to_rows()
    assert all("s3cret" not in json.dumps(row) for row in rows) and rows[0]["auth"] is True
    assert "s3cret" not in json.dumps(r.to_row())
    assert Result.from_dict(r.to_dict()).scenario.auth == "alice:s3cret"  # the full result keeps it, to rerun
    assert Scenario(mode="loopback", auth=("alice", "s3cret")).auth == "alice:s3cret"


@pytest.mark.timeout(60)
def test_loopback_sip_options_reach_the_call(natural):
    r = run(Scenario(mode="loopback", transport="sip", sip_transport="tls", srtp=True, auth="alice:secret",
                     seconds=1))
    assert r.raw["sip_transport"] == "tls" and r.raw["srtp"] is True
    assert r.call["setup_ms"] > 0 and r.directions["agent_to_caller"]["arrived"] is True


def test_engine_arguments_come_from_the_scenario(monkeypatch):
    import asyncio

    import voicelab.vnetcall
    import voicelab.webrtc.call
    from voicelab.experiments.run import _engine

    seen = {}

    async def fake(**kw):
        seen.update(kw)
        return {}

    monkeypatch.setattr(voicelab.webrtc.call, "webrtc_call", fake)
    monkeypatch.setattr(voicelab.vnetcall, "vnet_webrtc_call", fake)
    s = Scenario(mode="loopback", transport="webrtc", codec="opus", codec_params={"bitrate": 12000, "dtx": True},
                 fec=True, channel="lte", seconds=2, seed=4, jitter_buffer="adaptive")
    asyncio.run(_engine(s, quality=False)())
    assert seen == dict(codec="opus", bitrate=12000, fec=True, dtx=True, packet_loss_perc=None, net=preset("lte"),
                        seconds=2.0, speech="default", input=None, jitter_buffer="adaptive", seed=4, quality=False)
    seen.clear()
    v = Scenario(mode="vnet", transport="webrtc", codec="pcma", caller_nat="symmetric", agent_nat="full-cone",
                 method="webrtc-turn", uplink="3g", seconds=0.5, seed=2)
    asyncio.run(_engine(v, quality=True)())
    assert seen == dict(caller_nat="symmetric", agent_nat="full-cone", method="webrtc-turn", codec="pcma",
                        seconds=0.5, speech="default", uplink=preset("3g"), downlink=None, jitter_buffer="fixed:60",
                        seed=2, quality=True)
    with pytest.raises(ParameterError, match="both directions"):
        _engine(Scenario(mode="loopback", uplink="lte"), quality=True)
