"""Phone paths end to end: the PSTN side hop by hop (sim), a live SIP trunk leg, a real SBC."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, need_tool
from voicelab.errors import ParameterError
from voicelab.hybrid import G114_BUDGET_MS, parse_path, path_call


def test_path_spelling():
    assert parse_path("pstn-national-mobile+trunk+sbc") == {"pstn": "pstn-national-mobile", "anchor": "sbc",
                                                             "browser": False}
    assert parse_path("PSTN-local-landline+trunk") == {"pstn": "pstn-local-landline", "anchor": None, "browser": False}
    assert parse_path("browser+gateway+sip")["browser"] is True
    for bad, words in [("pstn-mars+trunk", "unknown phone-side preset"),
                       ("pstn-local-landline", "comes the SIP trunk"),
                       ("pstn-local-landline+sbc", "comes the SIP trunk"),
                       ("pstn-local-landline+trunk+sbc+relay", "only one of"),
                       ("pstn-local-landline+trunk+carrier", "only one of"),
                       ("browser+gateway", "browser+gateway+sip"),
                       ("browsers+gateway+sip", "browser+gateway+sip"),
                       ("", "spelled like")]:
        with pytest.raises(ParameterError, match=re.escape(words)):
            parse_path(bad)


def test_cli_path_errors_are_one_line():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "voicelab", "call", "--path", "pstn-mars+trunk"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 2
    assert "unknown phone-side preset" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_mobile_phone_through_trunk_and_real_sbc(natural_env):
    need_tool("kamailio", "kamailio")
    need_tool("rtpengine", "rtpengine-daemon")
    r = path_call("pstn-national-mobile+trunk+sbc", seconds=3.0, seed=2)
    hows = {h["how"] for h in r["hops"]}
    assert hows == {"modelled", "measured (sim)", "measured (live)"}
    table_sum = sum(h["delay_ms"] for h in r["hops"])
    # the PSTN side measured through the lab equals its hops within 2 ms, so the table adds up to the total
    assert abs(r["phone_to_agent_ms"] - table_sum) <= 2.0
    assert abs(r["pstn_ms"] - r["pstn_parts_ms"]) <= 2.0
    # the live leg: 20 ms packets + the agent's 60 ms buffer + loopback through rtpengine
    live = r["hops"][-1]["delay_ms"]
    assert 78.0 <= live <= 95.0
    assert r["within_g114"] == (r["phone_to_agent_ms"] <= G114_BUDGET_MS)
    # media crossed the real SBC both ways
    assert r["sbc"] == "kamailio+rtpengine"
    assert len(r["sbc_media_legs"]) == 2 and min(leg["packets"] for leg in r["sbc_media_legs"]) > 100
    # tandem AMR-NB -> G.711 costs quality on the phone side; the trunk leg itself is clean
    assert r["pstn_pesq_nb"] < 4.2 and r["trunk_pesq_nb"] > 4.0
    assert r["deterministic"] is False and not r["synthetic_speech"]
    json.dumps(r, default=str)


@pytest.mark.slow
def test_browser_through_gateway_to_sip_agent_adds_up(natural_env):
    r = path_call("browser+gateway+sip", seconds=3.0, codec="opus", jitter_buffer="fixed:200")
    assert r["webrtc_codec"] == "opus" and r["sip_codec"] == "pcmu" and not r["passthrough"]
    for d in ("browser_to_agent", "agent_to_browser"):
        hops = r[f"{d}.hops"]
        assert [h["how"] for h in hops] == ["measured (live)"] * 3
        # WebRTC leg + gateway + SIP leg == measured end to end (all on one clock)
        assert abs(r[f"{d}.total_ms"] - r[f"{d}.parts_ms"]) <= 2.0, hops
        assert hops[1]["delay_ms"] == pytest.approx(1.0, abs=0.5)  # the gateway's own processing
        # Opus -> G.711 -> (agent): narrowband in the middle, still good speech
        assert r[f"{d}.pesq_nb"] > 3.9 and r[f"{d}.pesq_wb"] < r[f"{d}.pesq_nb"]


def test_cli_browser_path_table(natural_env):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "voicelab", "call", "--path", "browser+gateway+sip", "--codec", "pcmu",
                        "--duration", "2", "--jitter-buffer", "fixed:200"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "payloads passed through" in p.stdout and "browser to agent" in p.stdout and "PESQ-NB" in p.stdout
