"""Real SIP peers as the carrier's trunk, through the lab-started Kamailio + rtpengine, to
``voicelab agent serve --mode record:DIR``.

* SIPp (Debian ``sip-tester``) runs :data:`voicelab.hybrid.SIPP_TRUNK_SCENARIO`: INVITE to
  the proxy, the 200's Record-Route turned into the Route set of the ACK and the BYE
  (``rrs="true"``), a G.711 pcap of natural speech made by the lab played with
  ``play_pcap_audio``.
* baresip (Debian ``baresip-core``) dials the proxy, plays the same speech (``aufile``)
  and hangs up at its end.

Checked per peer: the call completes (SIPp's exit status 0 / baresip's BYE), rtpengine
counted RTP on both legs from its own port range (media both ways through it), Kamailio
routed the ACK and the BYE with ``loose_route`` (and SIPp's own trace shows the Route
header carrying the proxy's Record-Route URI), rtpengine deleted the call at the BYE, and
the agent's recording of what arrived scores PESQ-NB within 0.1 of one clean G.711 coding
(:data:`voicelab.reference.PESQ_FLOORS`) against what the trunk sent. Skipped locally
without the Debian packages or natural speech; required in CI.
"""

from __future__ import annotations

import asyncio
import re
import struct

import numpy as np
import pytest

from tests.conftest import need_tool
from voicelab.errors import ToolUnavailableError
from voicelab.hybrid import g711_pcap, trunk_peer_call
from voicelab.reference import PESQ_FLOORS

G711_FLOOR = PESQ_FLOORS[("pcmu", 64000)][1] - 0.1


def _pcap_payloads(path):
    data = open(path, "rb").read()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and linktype == 1  # Ethernet: what SIPp's pcap player strips
    i, out, times = 24, [], []
    while i < len(data):
        sec, usec, n, _ = struct.unpack("<IIII", data[i:i + 16])
        frame = data[i + 16:i + 16 + n]
        assert frame[12:14] == b"\x08\x00"
        out.append(frame[14 + 20 + 8:])
        times.append(sec + usec / 1e6)
        i += 16 + n
    return out, times


def test_g711_pcap_carries_the_speech_as_rtp(tmp_path):
    from voicelab import audio
    from voicelab.codecs.g711 import ulaw_decode, ulaw_encode

    rng = np.random.default_rng(3)
    x = 0.3 * rng.standard_normal(8000 * 1 + 37)
    g711_pcap(x, 8000, tmp_path / "s.pcap")
    pkts, times = _pcap_payloads(tmp_path / "s.pcap")
    assert len(pkts) == 51  # 8037 samples -> 51 packets of 160 (the last zero-padded)
    assert np.allclose(np.diff(times), 0.020)
    seqs = [struct.unpack("!H", p[2:4])[0] for p in pkts]
    ts = [struct.unpack("!I", p[4:8])[0] for p in pkts]
    assert np.all(np.diff(seqs) == 1) and np.all(np.diff(ts) == 160)
    assert pkts[0][1] == 0x80 and all(p[1] == 0 for p in pkts[1:])  # marker on the first, PT 0
    codes = b"".join(p[12:] for p in pkts)[: len(x)]
    assert codes == ulaw_encode(audio.to_int16(x)).tobytes()
    assert np.array_equal(ulaw_decode(codes), ulaw_decode(ulaw_encode(audio.to_int16(x))))


def test_missing_rtpengine_names_the_debian_package(monkeypatch):
    from voicelab.net import sbc as sbc_mod

    real = sbc_mod.shutil.which
    monkeypatch.setattr(sbc_mod.shutil, "which", lambda name: None if name == "rtpengine" else real(name))
    real_exists = sbc_mod.os.path.exists
    monkeypatch.setattr(sbc_mod.os.path, "exists", lambda p: False if "rtpengine" in str(p) else real_exists(p))
    if real("kamailio") is None and not real_exists("/usr/sbin/kamailio"):
        monkeypatch.setattr(sbc_mod.shutil, "which", lambda name: "/bin/true" if name == "kamailio" else None)
    with pytest.raises(ToolUnavailableError) as ei:
        asyncio.run(sbc_mod.KamailioSBC(target=("127.0.0.1", 5060)).start())
    msg = str(ei.value)
    assert "rtpengine-daemon" in msg and "\n" not in msg


def _check_through_sbc(r):
    assert r["sbc"] == "kamailio+rtpengine"
    legs = r["sbc_media_legs"]
    assert len(legs) == 2, legs  # one per side of rtpengine: trunk <-> rtpengine <-> agent
    for leg in legs:
        assert leg["codec"] == "PCMU/8000" and leg["errors"] == 0
        assert leg["packets"] >= 0.8 * 3.0 * 50, legs  # 20 ms packets for >= 80 % of the 3 s
    assert r["route_set"] == {"ACK": True, "BYE": True}
    assert r["rtpengine_deleted"]
    assert r["agent_recorded_s"] >= 2.5
    assert r["pesq_nb"] >= G711_FLOOR, r["pesq_nb"]
    assert not r["synthetic_speech"]


@pytest.mark.slow
def test_sipp_trunk_calls_the_agent_through_kamailio_and_rtpengine(natural_env):
    need_tool("sipp", "sip-tester")
    need_tool("kamailio", "kamailio")
    need_tool("rtpengine", "rtpengine-daemon")
    r = trunk_peer_call("sipp", seconds=3.0)
    assert r["peer_returncode"] == 0, r["peer_output"]
    _check_through_sbc(r)
    # SIPp's own trace: ACK and BYE go to the agent's Contact with the proxy's Record-Route as Route
    trace = r["sipp_messages"]
    rr = re.search(r"Record-Route: <(sip:[^>]+;lr[^>]*)>", trace)
    assert rr, trace[-3000:]
    contact = re.search(r"SIP/2.0 200 OK.*?Contact: <(sip:[^>]+)>", trace, re.S).group(1)
    for method in ("ACK", "BYE"):
        msg = re.search(rf"UDP message sent[^\n]*\n\n({method} .*?)\n\n", trace, re.S).group(1)
        assert msg.startswith(f"{method} {contact} SIP/2.0"), msg
        assert f"Route: <{rr.group(1)}>" in msg, msg


@pytest.mark.slow
def test_baresip_trunk_calls_the_agent_through_kamailio_and_rtpengine(natural_env):
    need_tool("baresip", "baresip-core")
    need_tool("kamailio", "kamailio")
    need_tool("rtpengine", "rtpengine-daemon")
    r = trunk_peer_call("baresip", seconds=3.0)
    assert "Call established" in r["peer_output"] and "terminated" in r["peer_output"], r["peer_output"]
    _check_through_sbc(r)
