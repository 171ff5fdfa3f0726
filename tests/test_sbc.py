"""A call through a real SBC: Kamailio (record-routing proxy) + rtpengine (media anchor).

The lab starts both daemons (Debian ``kamailio`` and ``rtpengine-daemon``) with a generated
configuration on private loopback ports; the lab's caller dials the agent through them.
Checked: the call is set up through the proxy, media flows both ways THROUGH rtpengine
(its per-leg packet counters), the echo comes back intelligible, and the BYE is routed
through the proxy along the Record-Route set (Kamailio's log says so), after which
rtpengine has deleted the call.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import need_tool
from voicelab.errors import ParameterError, ToolUnavailableError
from voicelab.net import sbc as sbc_mod
from voicelab.net.sbc import KamailioSBC, kamailio_config, ng_decode, ng_encode


def test_ng_protocol_round_trip_and_junk():
    msg = ng_encode("c1", {"command": "ping", "flags": ["a", "b"], "n": 3})
    assert msg == b"c1 d7:command4:ping5:flagsl1:a1:be1:ni3ee"
    cookie, d = ng_decode(b"c1 d6:result4:ponge")
    assert cookie == "c1" and d == {"result": b"pong"}
    for junk in (b"", b"c1", b"c1 d6:result", b"c1 x", b"c1 d6:result4:ponge trailing"):
        with pytest.raises(Exception) as ei:
            ng_decode(junk)
        assert "ng reply" in str(ei.value)


def test_config_forwards_to_target_and_anchors_media():
    cfg = kamailio_config(host="127.0.0.1", port=5070, ng_port=2223, target_host="127.0.0.1", target_port=5080,
                          module_dir="/m")
    assert 'listen=udp:127.0.0.1:5070' in cfg
    assert '$du = "sip:127.0.0.1:5080"' in cfg
    assert 'rtpengine_sock", "udp:127.0.0.1:2223"' in cfg
    assert "record_route()" in cfg and "loose_route()" in cfg and "rtpengine_delete()" in cfg


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(ParameterError):
        KamailioSBC(target=("127.0.0.1", 0))
    with pytest.raises(ParameterError):
        KamailioSBC(target="nowhere")
    with pytest.raises(ParameterError):
        KamailioSBC(target=("127.0.0.1", 5060), host="10.0.0.1")


def test_missing_daemon_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(sbc_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(sbc_mod.os.path, "exists", lambda p: False)

    async def go():
        await KamailioSBC(target=("127.0.0.1", 5060)).start()

    with pytest.raises(ToolUnavailableError, match="kamailio"):
        asyncio.run(go())


@pytest.mark.slow
def test_call_through_kamailio_and_rtpengine(natural_env):
    need_tool("kamailio", "kamailio")
    need_tool("rtpengine", "rtpengine-daemon")
    from voicelab.agent import Agent
    from voicelab.calls import dial

    async def go():
        async with Agent(codecs=["pcmu"], mode="echo") as agent:
            async with KamailioSBC(target=agent.address) as sbc:
                r = await dial(sbc.uri, seconds=3.0, echo=True)
                kam_log = sbc.log("kamailio")
            return r, sbc, kam_log

    r, sbc, kam_log = asyncio.run(go())
    assert r["codec"] == "pcmu"
    # the echo crossed rtpengine twice (caller -> agent -> caller) and is still good speech
    assert r["echo_pesq_nb"] > 3.6, r["echo_pesq_nb"]
    assert r["packets_received"] >= 140
    # media went THROUGH rtpengine, both legs, from its own port range
    legs = sbc.media_stats()
    assert len(legs) == 2, legs
    lo, hi = sbc.media_range
    for leg in legs:
        port = int(leg["local"].rsplit(":", 1)[1])
        assert lo <= port <= hi
        assert leg["packets"] >= 140, legs
        assert leg["codec"] == "PCMU/8000"
    # the in-dialog requests followed the Record-Route set through the proxy
    assert "in-dialog ACK routed" in kam_log
    assert "in-dialog BYE routed" in kam_log
    assert "Deleting entire call" in sbc._keep_logs["rtpengine"]
