"""pcap export of calls, and tshark's verdict on every packet we write.

tshark (Debian ``tshark``) must dissect every SIP, SDP, RTP and RTCP packet and mark none
malformed. Skipped locally without tshark; required in CI.
"""

from __future__ import annotations

import io
import struct
import subprocess

from voicelab.net.pcap import PcapWriter, _checksum, udp_ipv4_packet
from voicelab.rtp.virtual import run_rtp_call
from voicelab.sip.virtual import run_sip_call

from .conftest import need_tool


def test_ipv4_udp_checksums_verify():
    pkt = udp_ipv4_packet(("192.0.2.1", 5060), ("198.51.100.2", 5062), b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert _checksum(pkt[:20]) == 0  # a correct header sums to zero
    udp = pkt[20:]
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert _checksum(pseudo + udp) == 0


def test_pcap_layout():
    buf = io.BytesIO()
    w = PcapWriter(buf)
    w.write_udp(1.25, ("192.0.2.1", 1), ("192.0.2.2", 2), b"x")
    data = buf.getvalue()
    magic, vmaj, vmin, _, _, snap, link = struct.unpack("<IHHiIII", data[:24])
    assert (magic, vmaj, vmin, link) == (0xA1B2C3D4, 2, 4, 101)
    sec, usec, incl, orig = struct.unpack("<IIII", data[24:40])
    assert (sec, usec, incl, orig) == (1, 250000, 29, 29)


def _tshark(tshark, path, *opts):
    return subprocess.run([tshark, "-r", str(path), *opts], capture_output=True, text=True, timeout=60).stdout


def test_tshark_dissects_a_call_cleanly(tmp_path):
    tshark = need_tool("tshark", "tshark")
    sip = run_sip_call(seed=1, ring_s=0.5, agent_credentials={"caller": "pw"}, caller_credentials=("caller", "pw"))
    sip_pcap = sip.write_pcap(tmp_path / "sip.pcap")
    rtp = run_rtp_call(codec="pcmu", seconds=12.0, seed=1, uplink=None, downlink=None)
    rtp_pcap = rtp.write_pcap(tmp_path / "rtp.pcap")
    heur = ["-o", "rtp.heuristic_rtp:TRUE", "-o", "rtcp.heuristic_rtcp:TRUE"]
    for path, expect in ((sip_pcap, {"sip"}), (rtp_pcap, {"rtp", "rtcp"})):
        protos = _tshark(tshark, path, *heur, "-T", "fields", "-e", "frame.protocols").split()
        n_frames = len(sip.datagrams) if path == sip_pcap else len(rtp.wire)
        assert len(protos) == n_frames
        seen = set()
        for p in protos:
            layers = set(p.split(":"))
            assert layers & expect, p  # every frame dissected as SIP / RTP / RTCP
            seen |= layers & expect
        assert seen == expect
        bad = _tshark(tshark, path, *heur, "-Y", "_ws.malformed || _ws.expert.severity == error")
        assert bad.strip() == "", bad
    # SDP bodies were dissected as SDP
    assert "sdp" in _tshark(tshark, sip_pcap, "-T", "fields", "-e", "frame.protocols")


def test_live_call_pcap_dissects_cleanly(tmp_path):
    import asyncio

    from voicelab.calls import sip_call

    tshark = need_tool("tshark", "tshark")
    path = tmp_path / "live.pcap"
    asyncio.run(sip_call(codec="pcmu", seconds=2.0, speech="harvard", quality=False, pcap=str(path)))
    heur = ["-o", "rtp.heuristic_rtp:TRUE", "-o", "rtcp.heuristic_rtcp:TRUE"]
    protos = _tshark(tshark, path, *heur, "-T", "fields", "-e", "frame.protocols").split()
    kinds = {k for p in protos for k in set(p.split(":")) & {"sip", "sdp", "rtp", "rtcp"}}
    assert {"sip", "sdp", "rtp"} <= kinds
    assert all(set(p.split(":")) & {"sip", "rtp", "rtcp"} for p in protos)
    assert _tshark(tshark, path, *heur, "-Y", "_ws.malformed || _ws.expert.severity == error").strip() == ""
